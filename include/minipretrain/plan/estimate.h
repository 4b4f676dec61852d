// The planner's cost model: what one layout (one resolved Config) would cost
// on a cluster, before any work starts. It predicts, per pipeline stage and
// for one rank of it:
//   - memory: weights, gradients, optimizer state, activations (the schedule's
//     peak microbatches in flight, from its action lists) and communication
//     buffers, plus on CPU the process baseline (LibTorch runtime, the
//     synthetic corpus);
//   - the bytes each of the TP, DP and PP communicators count in one step,
//     exactly as distributed/communicator.h counts them (as sent);
//   - the step time, by playing the schedule out with each stage's compute
//     and transfer times (parallel/schedule.h), hence tokens/s and MFU.
// The model follows the code: what each layer saves for backward is listed
// in estimate.cpp next to the line of model/layers.cpp that saves it.
// `minipretrain plan` ranks every layout with it (commands/plan.h); the
// training banner shows the estimate of the layout it runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "minipretrain/config/config.h"

namespace minipretrain {

// The machines a plan is for. On CPU (Gloo) bf16 travels as fp32 and the
// process baseline counts; on GPU (NCCL) bf16 travels as bf16 and the
// baseline (the CUDA context, outside the device memory budget) does not.
struct Cluster {
  int64_t world_size = 1;
  int64_t gpus_per_node = 8;
  double device_memory = 80e9;  // bytes per rank
  double flops = 400e12;        // sustained bf16 matmul FLOP/s per rank; fp32 runs at half
  double intra_node_bw = 450e9;  // bytes/s per rank, within a node
  double inter_node_bw = 50e9;   // bytes/s per rank, between nodes
  bool cpu = false;
};

// The resident memory of a CPU process whose model is negligible (LibTorch
// and its thread pools, Gloo): 173 MiB measured with Debian's LibTorch 1.13.1
// on 2026-11-25, plus what the pinned LibTorch 2.15.0 (its CUDA libraries
// mapped) adds to the same process: a 4-layer, hidden-64, vocabulary-256 run
// peaks at 442 against 228 MiB, side by side on 2026-12-07.
inline constexpr double kCpuProcessBaseline = (173.0 + 214.0) * 1024 * 1024;

struct MemoryEstimate {
  double weights = 0, gradients = 0, optimizer = 0, activations = 0, comm_buffers = 0, baseline = 0;
  double activations_without_recompute = 0, activations_with_recompute = 0;  // what either choice would hold
  int64_t in_flight = 0;  // the schedule's peak microbatches awaiting their backward on this stage
  // --async-save's copy of the state (checkpoint/checkpoint_policy.h), in
  // host memory: counted in the total on CPU, where host memory is the memory.
  double snapshot = 0;
  bool snapshot_counted = false;
  double total() const {
    return weights + gradients + optimizer + activations + comm_buffers + baseline + (snapshot_counted ? snapshot : 0);
  }
};

// Bytes one step moves through each communicator of one rank (as counted).
struct CommBytes {
  int64_t tp = 0, dp = 0, pp = 0;
};

struct StageEstimate {
  int64_t parameters = 0;  // this rank's share of the stage (its TP shard)
  MemoryEstimate memory;
  CommBytes comm;
  double forward_seconds = 0, backward_seconds = 0;  // one microbatch, TP transfers included
};

struct LayoutEstimate {
  Config config;  // resolved
  std::vector<StageEstimate> stages;
  int64_t largest_stage = 0;  // the stage whose rank needs the most memory
  double bubble_theory = 0;   // parallel/schedule.h
  double bubble = 0;          // of the busiest stage, with the stages' real costs and transfers
  double step_seconds = 0, tokens_per_s = 0, mfu = 0;
  double device_memory = 0;  // the cluster's, per rank
  bool fits = true;           // peak_memory() <= device_memory

  double peak_memory() const { return stages.at(largest_stage).memory.total(); }
  std::string describe() const;  // one line: the layout and its memory and speed
};

// `config` must be resolved (Config::resolve) for cluster.world_size.
LayoutEstimate estimate_layout(const Config& config, const Cluster& cluster);

// Every (TP, PP, micro batch, schedule, recompute, precision) that
// Config::resolve accepts for the config's model and global batch, with TP
// inside one node; fitting layouts first, by estimated tokens/s.
std::vector<LayoutEstimate> plan_layouts(const Config& config, const Cluster& cluster);

nlohmann::json to_json(const LayoutEstimate& layout);

// Bytes as GB with two decimals: describe() and the plan table print alike.
std::string gigabytes(double bytes);

}  // namespace minipretrain
