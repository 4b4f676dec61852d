#include "minipretrain/parallel/schedule.h"

#include <algorithm>
#include <map>
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

const std::vector<std::string>& pipeline_schedule_names() {
  static const std::vector<std::string> names{"gpipe", "1f1b"};
  return names;
}

PipelineTimeline simulate_schedule(const std::string& name, int64_t num_stages, int64_t num_microbatches,
                                   const std::vector<double>& forward_seconds,
                                   const std::vector<double>& backward_seconds, double p2p_seconds) {
  std::vector<std::vector<Action>> lists;
  for (int64_t s = 0; s < num_stages; ++s) lists.push_back(make_schedule(name, num_stages, s, num_microbatches));
  // done[s][{kind, m}]: when stage s finished that action.
  std::vector<std::map<std::pair<int, int64_t>, double>> done(num_stages);
  std::vector<size_t> next(num_stages, 0);
  std::vector<double> free_at(num_stages, 0.0);
  PipelineTimeline timeline;
  timeline.busy.assign(num_stages, 0.0);
  // Sweep the stages until every list is played; an action whose input is not
  // there yet waits for a later sweep. A sweep without progress is a deadlock.
  for (bool progress = true; progress;) {
    progress = false;
    for (int64_t s = 0; s < num_stages; ++s) {
      while (next[s] < lists[s].size()) {
        const Action& a = lists[s][next[s]];
        const bool forward = a.kind == Action::Forward;
        const int64_t from = forward ? s - 1 : s + 1;  // the stage this action's input comes from
        double ready = free_at[s];
        if (from >= 0 && from < num_stages) {
          auto it = done[from].find({a.kind, a.microbatch});
          if (it == done[from].end()) break;
          ready = std::max(ready, it->second + p2p_seconds);
        }
        const double cost = forward ? forward_seconds.at(s) : backward_seconds.at(s);
        free_at[s] = ready + cost;
        timeline.busy[s] += cost;
        done[s][{a.kind, a.microbatch}] = free_at[s];
        timeline.makespan = std::max(timeline.makespan, free_at[s]);
        ++next[s];
        progress = true;
      }
    }
  }
  for (int64_t s = 0; s < num_stages; ++s)
    if (next[s] < lists[s].size())
      throw std::logic_error("pipeline schedule '" + name + "' deadlocks at stage " + std::to_string(s));
  return timeline;
}

double bubble_theory(const std::string& name, int64_t num_stages, int64_t num_microbatches) {
  return simulate_schedule(name, num_stages, num_microbatches, std::vector<double>(num_stages, 1.0),
                           std::vector<double>(num_stages, 2.0), 0.0)
      .bubble(0);
}

}  // namespace minipretrain
