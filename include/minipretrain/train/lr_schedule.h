// Linear warm-up for round(warmup_ratio * max_steps) steps, then cosine decay
// from the peak to min_lr, reached at max_steps. Steps count from 1: lr(1) is
// the rate of the first update.
#pragma once

#include <cstdint>

namespace minipretrain {

class LRSchedule {
 public:
  LRSchedule(double peak, double min_lr, double warmup_ratio, int64_t max_steps);
  double at(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }

 private:
  double peak_, min_lr_;
  int64_t warmup_, max_steps_;
};

}  // namespace minipretrain
