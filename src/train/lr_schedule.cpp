#include "minipretrain/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace minipretrain {

LRSchedule::LRSchedule(double peak, double min_lr, double warmup_ratio, int64_t max_steps)
    : peak_(peak), min_lr_(min_lr), warmup_(std::llround(warmup_ratio * max_steps)), max_steps_(max_steps) {}

double LRSchedule::at(int64_t step) const {
  if (step <= warmup_) return peak_ * static_cast<double>(step) / static_cast<double>(warmup_);
  const double progress = static_cast<double>(step - warmup_) / static_cast<double>(max_steps_ - warmup_);
  return min_lr_ + 0.5 * (peak_ - min_lr_) * (1.0 + std::cos(M_PI * std::min(progress, 1.0)));
}

}  // namespace minipretrain
