// Data parallelism across real processes: DP = 2 and 4 compute the run of one
// process with the same global batch; a dead rank stops the others.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "test_support.h"

using namespace minipretrain::test;

namespace {

constexpr int kSteps = 20;

std::string baseline() {
  static const std::string dir = [] {
    const std::string out = fresh_dir("dp_baseline");
    expect_all_succeeded(run_ranks(1, tiny_args(out, kSteps)));
    return out;
  }();
  return dir;
}

}  // namespace

TEST(DataParallel, TwoAndFourRanksEqualOneProcess) {
  for (int dp : {2, 4}) {
    const std::string out = fresh_dir("dp" + std::to_string(dp));
    expect_all_succeeded(run_ranks(dp, tiny_args(out, kSteps)));
    expect_same_losses(baseline(), out, kSteps, 1e-5);
    expect_same_weights(baseline(), out, 1e-4);
    // Gradients travel in buckets: one all-reduce per step for this model.
    EXPECT_EQ(read_metrics(out)[kSteps]["comm"]["dp"]["all_reduce"]["calls"], 1);
  }
}

TEST(DataParallel, ADeadRankStopsTheOthers) {
  const std::string out = fresh_dir("dp_kill");
  std::vector<std::unique_ptr<Process>> ranks = start_ranks(2, tiny_args(out, 100000));
  // Let it train a few steps, then kill rank 1 as an OOM killer would.
  for (int i = 0; i < 600 && read_metrics(out).size() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_GE(read_metrics(out).size(), 3u);
  ranks[1]->kill(SIGKILL);
  ProcessResult survivor = ranks[0]->wait(60);
  EXPECT_NE(survivor.exit_code, 0);
  EXPECT_NE(survivor.exit_code, -1) << "rank 0 hung after its peer died";
  EXPECT_NE(survivor.output.find("error"), std::string::npos) << survivor.output;
}
