#include "minipretrain/parallel/schedule.h"

#include <algorithm>
#include <stdexcept>

namespace minipretrain {

std::vector<Action> gpipe_schedule(int64_t, int64_t, int64_t num_microbatches) {
  std::vector<Action> actions;
  for (int64_t m = 0; m < num_microbatches; ++m) actions.push_back({Action::Forward, m});
  for (int64_t m = 0; m < num_microbatches; ++m) actions.push_back({Action::Backward, m});
  return actions;
}

std::vector<Action> one_f_one_b_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches) {
  const int64_t warmup = std::min(num_stages - stage - 1, num_microbatches);
  std::vector<Action> actions;
  int64_t next_forward = 0, next_backward = 0;
  for (int64_t i = 0; i < warmup; ++i) actions.push_back({Action::Forward, next_forward++});
  while (next_forward < num_microbatches) {
    actions.push_back({Action::Forward, next_forward++});
    actions.push_back({Action::Backward, next_backward++});
  }
  while (next_backward < num_microbatches) actions.push_back({Action::Backward, next_backward++});
  return actions;
}

std::vector<Action> make_schedule(const std::string& name, int64_t num_stages, int64_t stage, int64_t num_microbatches) {
  if (name == "gpipe") return gpipe_schedule(num_stages, stage, num_microbatches);
  if (name == "1f1b") return one_f_one_b_schedule(num_stages, stage, num_microbatches);
  throw std::invalid_argument("unknown pipeline schedule '" + name + "'");
}

int64_t peak_in_flight(const std::vector<Action>& actions) {
  int64_t live = 0, peak = 0;
  for (const Action& a : actions) {
    live += a.kind == Action::Forward ? 1 : -1;
    peak = std::max(peak, live);
  }
  return peak;
}

}  // namespace minipretrain
