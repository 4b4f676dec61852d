// --async-save: checkpoints written by a thread from a snapshot are the same
// files as synchronous saves, resume the same, and a kill during one leaves
// the previous checkpoint for --resume auto.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "minipretrain/checkpoint/checkpoint.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

constexpr int kSteps = 6;

// DP 2 x TP 2 over four processes, a checkpoint every two steps.
std::vector<std::string> args_of(const std::string& out, bool async) {
  std::vector<std::string> args = tiny_args(out, kSteps);
  for (const char* a : {"--tensor-parallel-size", "2", "--save-interval", "2"}) args.push_back(a);
  if (async) args.push_back("--async-save");
  return args;
}

void expect_same_checkpoint(const std::string& a, const std::string& b) {
  const auto x = load_full_tensors(a), y = load_full_tensors(b);
  ASSERT_EQ(x.size(), y.size()) << a << " vs " << b;
  for (const auto& [name, tensor] : x) {
    ASSERT_TRUE(y.count(name)) << name << " missing from " << b;
    EXPECT_TRUE(torch::equal(tensor, y.at(name))) << name << ": " << a << " vs " << b;
  }
}

// --resume auto in the background again: from checkpoint `from`, the
// uninterrupted run `sync`'s remaining steps and final weights.
void expect_resume_equals(const std::string& sync, const std::string& out, int from) {
  std::vector<std::string> resume = args_of(out, true);
  for (const char* a : {"--resume", "auto"}) resume.push_back(a);
  const std::vector<ProcessResult> resumed = run_ranks(4, resume);
  expect_all_succeeded(resumed);
  EXPECT_NE(resumed[0].output.find(fmt::format("checkpoint-{:08d} at step {}", from, from)), std::string::npos)
      << resumed[0].output;
  expect_same_losses(sync, out, kSteps, 0.0);
  expect_same_weights(sync, out, 0.0);
}

}  // namespace

TEST(AsyncSave, WritesWhatSyncSavesWriteAndResumesExactly) {
  const std::string sync = fresh_dir("async_ref"), async = fresh_dir("async_run");
  expect_all_succeeded(run_ranks(4, args_of(sync, false)));
  const std::vector<ProcessResult> ranks = run_ranks(4, args_of(async, true));
  expect_all_succeeded(ranks);
  EXPECT_NE(ranks[0].output.find("beside the next step"), std::string::npos) << ranks[0].output;
  expect_same_losses(sync, async, kSteps, 0.0);
  for (int step : {2, 4, 6}) {
    const std::string name = fmt::format("/checkpoint-{:08d}", step);
    ASSERT_TRUE(fs::exists(async + name + "/meta.json")) << name;
    expect_same_checkpoint(sync + name, async + name);
  }

  fs::remove_all(async + "/checkpoint-00000006");
  expect_resume_equals(sync, async, 4);
}

// Rank 1 is killed (SIGKILL) in the background save of step 4, after its
// shard: the others fail within --dist-timeout, step 2's checkpoint is the
// newest complete one, and --resume auto finishes the run as if unbroken.
TEST(AsyncSave, AKillDuringABackgroundSaveLeavesThePreviousCheckpoint) {
  const std::string sync = fresh_dir("async_kill_ref"), out = fresh_dir("async_kill");
  expect_all_succeeded(run_ranks(4, args_of(sync, false)));
  std::vector<std::unique_ptr<Process>> ranks = start_ranks(4, args_of(out, true), {{"MINIPRETRAIN_FAULT", "die-in-save@4:1"}});
  std::vector<ProcessResult> killed;
  for (auto& p : ranks) killed.push_back(p->wait(300));
  EXPECT_EQ(killed[1].exit_code, 128 + SIGKILL) << killed[1].output;
  for (int r : {0, 2, 3}) EXPECT_NE(killed[r].exit_code, 0) << killed[r].output;
  EXPECT_FALSE(fs::exists(out + "/checkpoint-00000004/meta.json"));
  EXPECT_EQ(find_latest_checkpoint(out), out + "/checkpoint-00000002");
  expect_resume_equals(sync, out, 2);
}

// The output directory fills up during the background save of step 4: one
// error line naming the checkpoint, a non-zero exit, and step 2's checkpoint
// (the only one that fits) untouched.
TEST(AsyncSave, AFullDiskIsOneLineAndThePreviousCheckpointStays) {
  const std::string out = fresh_dir("async_full_disk");
  // About 1.9 MB a checkpoint of this model: room for one.
  if (std::system(("mount -t tmpfs -o size=3m tmpfs " + out).c_str()) != 0)
    GTEST_SKIP() << "cannot mount a small tmpfs (needs root)";
  std::vector<std::string> args = tiny_args(out, 4);
  for (const char* a : {"--save-interval", "2", "--async-save"}) args.push_back(a);
  const std::vector<ProcessResult> r = run_ranks(1, args);
  const bool complete = fs::exists(out + "/checkpoint-00000002/meta.json");
  const std::string latest = find_latest_checkpoint(out);
  std::map<std::string, torch::Tensor> kept;
  if (complete) kept = load_full_tensors(out + "/checkpoint-00000002");
  std::system(("umount -l " + out).c_str());
  EXPECT_EQ(r[0].exit_code, 1) << r[0].output;
  const size_t error = r[0].output.find("] error ");
  ASSERT_NE(error, std::string::npos) << r[0].output;
  EXPECT_EQ(r[0].output.find("] error ", error + 1), std::string::npos) << "more than one error line:\n" << r[0].output;
  EXPECT_NE(r[0].output.find("checkpoint-00000004"), std::string::npos) << r[0].output;
  EXPECT_TRUE(complete) << r[0].output;
  EXPECT_EQ(latest, out + "/checkpoint-00000002");
  EXPECT_FALSE(kept.empty());
}
