// When a run saves and where it starts: --save-interval, the last step and
// stops; --resume (a directory, or auto: the newest every rank agrees on) and
// --init-from. With --async-save a thread copies the state into a snapshot,
// while the next step's forward and backward run (its update waits for the
// copy), then writes it as a normal save would. The trainer only lends its
// state.
#pragma once

#include <exception>
#include <future>
#include <string>
#include <thread>

#include "minipretrain/config/config.h"
#include "minipretrain/distributed/parallel_state.h"
#include "minipretrain/train/trainer.h"

namespace minipretrain {

class CheckpointPolicy {
 public:
  CheckpointPolicy(const Config& config, ParallelState& parallel, Trainer& trainer);
  // Joins a save still running (its errors are dropped: an error is already on its way).
  ~CheckpointPolicy();

  // Loads what --resume or --init-from name; returns the first step to train.
  int64_t resume();
  // Whether `step` ends with a save: every --save-interval, the last step, a stop.
  bool due(int64_t step, bool stopping) const;
  // Collective. Refuses (DivergedError) weights that are not finite. With
  // --async-save it waits for the save before, starts this one and returns.
  void save(int64_t step);
  // Until the save in flight (if any) is on disk; throws what it failed with.
  void wait();
  // The newest complete checkpoint, "none" when there is none: for messages.
  std::string newest() const;

 private:
  void write(int64_t step, const NamedState& state, Communicator& group);

  const Config& config_;
  ParallelState& parallel_;
  Trainer& trainer_;
  NamedState snapshot_;  // --async-save: host copies of the state, kept from save to save
  std::thread writer_;
  std::exception_ptr failure_;  // of the writer, rethrown by wait()
};

}  // namespace minipretrain
