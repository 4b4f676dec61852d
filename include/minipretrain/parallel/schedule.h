// Pipeline schedules as explicit lists of actions per stage, so that they can
// be checked without processes. An action's communication is implied: a
// forward of any but the pipeline's first chunk first receives its input from
// the previous chunk, a backward (or B) of any but the last chunk first
// receives its output gradient from the next chunk; results are sent on
// without waiting.
//
// With V virtual stages (interleaved), pipeline rank r holds the model chunks
// c = 0..V-1, which are virtual stages c * PP + r (Megatron's layout): chunk c
// of the last rank feeds chunk c + 1 of rank 0.
//
//   GPipe: all M forwards, then all M backwards (holds M activations).
//   1F1B:  warm-up of min(PP - stage - 1, M) forwards, then one forward / one
//          backward, then the remaining backwards (holds <= PP - stage).
//   Interleaved 1F1B (Narayanan et al. 2021, Megatron's order): microbatches
//          in groups of PP, each group through chunk 0, then chunk 1, ...;
//          warm-up of (PP - stage - 1) * 2 + (V - 1) * PP chunk forwards. The
//          bubble shrinks V-fold, for V times as many transfers.
//   ZB-H1 (Qi et al. 2024): each backward split into B (the gradient of the
//          stage's input, sent upstream at once) and W (the weight
//          gradients). 1F1B's order of F and B; stage s defers its W by s
//          microbatches into what were idle slots, so every stage holds at
//          most PP microbatches, 1F1B's peak (that of its stage 0). Stage 0,
//          with no stage upstream, runs B and W as one backward: 1F1B's list.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "minipretrain/config/choices.h"

namespace minipretrain {

struct Action {
  // Backward is B and W together; a schedule uses either it or the split pair.
  enum Kind { Forward, Backward, BackwardInput, BackwardWeight } kind;
  int64_t microbatch;
  int64_t chunk = 0;  // which of this rank's model chunks (virtual stages)
  bool operator==(const Action& o) const {
    return kind == o.kind && microbatch == o.microbatch && chunk == o.chunk;
  }
};

std::vector<Action> gpipe_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches);
std::vector<Action> one_f_one_b_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches);
// Needs num_microbatches <= num_stages or a multiple of it (refused otherwise).
std::vector<Action> interleaved_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches,
                                         int64_t num_chunks);
std::vector<Action> zb_h1_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches);
// Forwards only (validation): microbatches in groups of PP through every
// chunk in turn, as interleaved-1f1b runs its forwards. Chunk by chunk, rank
// 0 would send a whole chunk's activations before taking any back, which
// NCCL's in-order progress deadlocks (pipeline_transfers.h).
std::vector<Action> forward_only_schedule(int64_t num_stages, int64_t num_microbatches, int64_t num_chunks);
// Interleaved 1F1B takes `num_chunks` >= 2 virtual stages (PP >= 2), the
// others num_chunks 1. Config validation refuses the rest with a message per
// rule; here they throw std::invalid_argument.
std::vector<Action> make_schedule(PipelineSchedule schedule, int64_t num_stages, int64_t stage, int64_t num_microbatches,
                                  int64_t num_chunks = 1);
// The most chunk activations held at any point of the list: forwards whose
// backward (or W) has not run yet. A chunk holds 1/V of a stage's layers.
int64_t peak_in_flight(const std::vector<Action>& actions);

// What one microbatch costs each stage (all its chunks together): a forward,
// a whole backward (B and W are half of it each), and a transfer between
// stages. Without it, the simulation takes a forward as 1, a backward as 2
// and transfers as free.
struct StageCosts {
  std::vector<double> forward, backward;  // per stage
  double transfer = 0;
};

// Every stage's list run together the way the executor runs them (sends
// never block, a receive waits for its sender), each action taking its
// chunk's share (1/V) of the stage's costs.
struct PipelineSimulation {
  double makespan = 0;                  // in the costs' unit
  double bubble = 0;                    // idle share of PP x makespan
  std::vector<double> busy;             // per stage: time computing
  std::vector<int64_t> peak_in_flight;  // per stage
};
// Checks that every stage runs each (chunk, microbatch)'s F once and either
// one backward or one B and one W, each chunk's actions of a kind in
// microbatch order, every pair of stages receives its transfers in the order
// they were sent (so they match with or without tags), every dependency
// across stages holds and no stage waits forever; throws std::logic_error
// saying what is wrong otherwise.
PipelineSimulation simulate_pipeline(const std::vector<std::vector<Action>>& stages, int64_t num_microbatches,
                                     int64_t num_chunks, const StageCosts* costs = nullptr);
// make_schedule's lists for every stage, simulated. With unit costs, the
// bubble is what the step line calls the theory (for GPipe and 1F1B it is
// (PP - 1) / (M + PP - 1)); the planner gives each stage its own costs.
PipelineSimulation simulate_schedule(PipelineSchedule schedule, int64_t num_stages, int64_t num_microbatches,
                                     int64_t num_chunks = 1, const StageCosts* costs = nullptr);

}  // namespace minipretrain
