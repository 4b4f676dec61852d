// Fault injection, for the tests that prove a run survives what kills real
// ones (docs/survival.md, "For developers"). The environment variable
//
//   MINIPRETRAIN_FAULT="nan@3:1,die@5:0,hang@4:2,die-in-save@6:1"
//
// makes rank 1 produce NaN gradients at step 3, rank 0 die (SIGKILL) at the
// start of step 5, rank 2 stop itself (SIGSTOP) at the start of step 4, and
// rank 1 die half-way through writing the checkpoint of step 6, after its own
// shard is on disk. `nan@3-6:1` covers steps 3 to 6. Faults fire only in a
// job's first attempt (MINIPRETRAIN_RESTART_COUNT, set by the launchers when
// they restart a job, unset or 0), so that a restarted job runs clean.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minipretrain {

enum class FaultKind { Nan, Die, Hang, DieInSave };

class FaultPlan {
 public:
  // Throws ConfigError naming the entry that does not parse.
  static FaultPlan parse(const std::string& spec);
  // MINIPRETRAIN_FAULT, parsed on first use; empty outside tests.
  static const FaultPlan& from_environment();

  bool fires(FaultKind kind, int64_t step, int64_t rank) const;
  // For Die, Hang and DieInSave: says so on stderr, then kills or stops this
  // process when the fault fires here.
  void strike(FaultKind kind, int64_t step, int64_t rank) const;

 private:
  struct Fault {
    FaultKind kind;
    int64_t first_step, last_step, rank;
  };
  std::vector<Fault> faults_;
  bool armed_ = true;  // false in a restarted job
};

}  // namespace minipretrain
