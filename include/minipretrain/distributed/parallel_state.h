// The DP x TP x PP layout of this rank and the communicators of its groups.
// Rank layout (DESIGN.md invariant 1): tp = r % TP, dp = (r / TP) % DP,
// pp = r / (TP * DP). Layers ask this object for their group; nothing else
// builds groups. A dimension of size 1 gets a SoloCommunicator.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/distributed/communicator.h"
#include "minipretrain/distributed/launch_env.h"

namespace minipretrain {

struct Coordinates {
  int64_t tp = 0, dp = 0, pp = 0;
};

struct Layout {
  int64_t tp = 1, dp = 1, pp = 1;

  int64_t world() const { return tp * dp * pp; }
  Coordinates coordinates(int64_t rank) const { return {rank % tp, (rank / tp) % dp, rank / (tp * dp)}; }
  int64_t rank_of(const Coordinates& c) const { return c.pp * tp * dp + c.dp * tp + c.tp; }
};

class ParallelState {
 public:
  // A single process: every group is a group of one.
  ParallelState();
  // Meets the other processes at the rendezvous of `env` and joins this rank's
  // TP, DP and PP groups on the backend that serves `device`, and the world
  // group, which carries host values, on Gloo whatever the device. The ranks
  // first settle their Gloo addresses and check that each reaches every other
  // (gloo_peers.h); local rank 0 logs where this node's ranks bind.
  ParallelState(const LaunchEnv& env, const Config& config, const torch::Device& device);

  int64_t rank() const { return rank_; }
  const Layout& layout() const { return layout_; }
  const Coordinates& coords() const { return coords_; }
  bool is_first_stage() const { return coords_.pp == 0; }
  bool is_last_stage() const { return coords_.pp == layout_.pp - 1; }
  // The rank that prints step lines and writes metrics: global rank 0.
  bool is_logging_rank() const { return rank_ == 0; }

  Communicator& world() const { return *world_; }
  Communicator& tp() const { return *tp_; }
  Communicator& dp() const { return *dp_; }
  Communicator& pp() const { return *pp_; }
  // The world again, for a checkpoint written on a background thread
  // (--async-save) while training uses `world`; `world` itself otherwise.
  Communicator& saves() const { return saves_ ? *saves_ : *world_; }
  std::shared_ptr<Communicator> tp_ptr() const { return tp_; }

  // "Rank r | DP: d/D | TP: t/T | PP: p/P"
  std::string describe() const;

 private:
  int64_t rank_ = 0;
  Layout layout_;
  Coordinates coords_;
  std::shared_ptr<Communicator> world_, tp_, dp_, pp_, saves_;
};

}  // namespace minipretrain
