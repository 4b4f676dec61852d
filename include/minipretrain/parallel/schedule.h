// Pipeline schedules as explicit lists of actions per stage, so that they can
// be tested without processes. An action's communication is implied: a
// forward on a non-first stage first receives its input from the previous
// stage, a backward on a non-last stage first receives its output gradient
// from the next stage; results are sent on without waiting.
//
//   GPipe: all M forwards, then all M backwards (holds M activations).
//   1F1B:  warm-up of min(PP - stage - 1, M) forwards, then one forward / one
//          backward, then the remaining backwards (holds <= PP - stage).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minipretrain {

struct Action {
  enum Kind { Forward, Backward } kind;
  int64_t microbatch;
  bool operator==(const Action& o) const { return kind == o.kind && microbatch == o.microbatch; }
};

std::vector<Action> gpipe_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches);
std::vector<Action> one_f_one_b_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches);
// `name` is "gpipe" or "1f1b".
std::vector<Action> make_schedule(const std::string& name, int64_t num_stages, int64_t stage, int64_t num_microbatches);

// The most forwards whose backward has not run yet, at any point of the list.
int64_t peak_in_flight(const std::vector<Action>& actions);

// Every name make_schedule knows, for the planner to enumerate (a new schedule
// is added here and in make_schedule; config validation decides what is valid).
const std::vector<std::string>& pipeline_schedule_names();

// The schedule played out in time: every stage runs its action list in order;
// a forward waits for the previous stage's forward of that microbatch, a
// backward for the next stage's backward, each plus `p2p_seconds` on the wire.
// forward/backward_seconds are per stage and per microbatch.
struct PipelineTimeline {
  double makespan = 0.0;
  std::vector<double> busy;  // per stage: seconds computing
  double bubble(int64_t stage) const { return 1.0 - busy.at(stage) / makespan; }
};
PipelineTimeline simulate_schedule(const std::string& name, int64_t num_stages, int64_t num_microbatches,
                                   const std::vector<double>& forward_seconds,
                                   const std::vector<double>& backward_seconds, double p2p_seconds);

// The idle fraction of the first stage's step with equal stages, a backward
// twice a forward and free transfers: (PP - 1) / (M + PP - 1) for GPipe and
// 1F1B. The trainer logs it beside the measured bubble; the planner reports it.
double bubble_theory(const std::string& name, int64_t num_stages, int64_t num_microbatches);

}  // namespace minipretrain
