// When a run saves and where it starts: --save-interval, the last step and
// stops; --resume (a directory, or auto: the newest every rank agrees on) and
// --init-from. The trainer only lends its state.
#pragma once

#include <string>

#include "minipretrain/config/config.h"
#include "minipretrain/distributed/parallel_state.h"
#include "minipretrain/train/trainer.h"

namespace minipretrain {

class CheckpointPolicy {
 public:
  CheckpointPolicy(const Config& config, ParallelState& parallel, Trainer& trainer);

  // Loads what --resume or --init-from name; returns the first step to train.
  int64_t resume();
  // Whether `step` ends with a save: every --save-interval, the last step, a stop.
  bool due(int64_t step, bool stopping) const;
  // Collective. Refuses (DivergedError) weights that are not finite.
  void save(int64_t step);
  // The newest complete checkpoint, "none" when there is none: for messages.
  std::string newest() const;

 private:
  const Config& config_;
  ParallelState& parallel_;
  Trainer& trainer_;
};

}  // namespace minipretrain
