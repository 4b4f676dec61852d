// Runs that survive what ends real ones (issue 10): a stop signal, a kill in
// the middle of a save, NaNs, a dead rank under a restarting launcher, a hung
// rank. Faults are injected with MINIPRETRAIN_FAULT (train/faults.h); every
// test compares with an uninterrupted run of the same layout, bit for bit.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "minipretrain/checkpoint/checkpoint.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> tp2_pp2(const std::string& out, int steps) {
  return with(tiny_args(out, steps), {"--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"});
}

std::vector<std::string> tp2(const std::string& out, int steps) {
  return with(tiny_args(out, steps), {"--tensor-parallel-size", "2"});
}

std::vector<ProcessResult> wait_all(std::vector<std::unique_ptr<Process>>& ranks, double timeout_seconds) {
  std::vector<ProcessResult> results;
  for (auto& p : ranks) results.push_back(p->wait(timeout_seconds));
  return results;
}


ProcessResult launch(const std::string& launcher, const std::vector<std::string>& args,
                     std::map<std::string, std::string> env) {
  std::vector<std::string> argv{"/bin/bash", std::string(MINIPRETRAIN_SOURCE_DIR) + "/scripts/" + launcher};
  argv.insert(argv.end(), args.begin(), args.end());
  env["MINIPRETRAIN_BIN"] = binary();
  env["MASTER_ADDR"] = "127.0.0.1";
  env["MASTER_PORT"] = std::to_string(free_port());
  return run(argv, env, 300);
}

// The uninterrupted run of `args(out, steps)` on `world` ranks, once per test binary.
std::string reference(const std::string& name, int world, const std::vector<std::string>& args) {
  static std::map<std::string, std::string> done;
  if (!done.count(name)) {
    const std::string out = fresh_dir(name);
    std::vector<std::string> a = args;
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == "--output-dir") a[i + 1] = out;
    expect_all_succeeded(run_ranks(world, a));
    done[name] = out;
  }
  return done[name];
}

}  // namespace

// SIGTERM reaches one rank of four mid-run: every rank stops after the same
// step with exit 0, the checkpoint of that step is there, and resuming it
// gives the uninterrupted run's losses and weights bit for bit.
TEST(Survival, SigtermToOneRankStopsEveryRankWithACheckpointThatResumesExactly) {
  constexpr int kSteps = 80;
  const std::string ref = reference("survive_ref_tp2pp2", 4, tp2_pp2("", kSteps));
  const std::string out = fresh_dir("survive_sigterm");
  auto ranks = start_ranks(4, tp2_pp2(out, kSteps));
  for (int i = 0; i < 600 && read_metrics(out).size() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_GE(read_metrics(out).size(), 3u);
  ranks[2]->kill(SIGTERM);
  std::vector<ProcessResult> results = wait_all(ranks, 120);
  expect_all_succeeded(results);
  const std::string checkpoint = find_latest_checkpoint(out);
  const int64_t stopped_at = checkpoint_step(checkpoint);
  ASSERT_GT(stopped_at, 0) << results[0].output;
  ASSERT_LT(stopped_at, kSteps) << "the run ended before the signal arrived";
  EXPECT_NE(results[0].output.find("Stopping after step " + std::to_string(stopped_at) +
                                   ": a stop signal reached 1 rank(s)"),
            std::string::npos)
      << results[0].output;
  EXPECT_NE(results[2].output.find("Got SIGTERM"), std::string::npos) << results[2].output;
  EXPECT_EQ(read_metrics(out).rbegin()->first, stopped_at);

  expect_all_succeeded(run_ranks(4, with(tp2_pp2(out, kSteps), {"--resume", "auto"})));
  expect_same_losses(ref, out, kSteps, 0.0);
  expect_same_weights(ref, out, 0.0);
}

// One rank is killed (SIGKILL) after writing its shard of step 6: the launcher
// stops the job, the half-written .tmp is no checkpoint, --resume auto takes
// step 3's, the next save removes the .tmp, and the losses are the
// uninterrupted run's.
TEST(Survival, AKillInTheMiddleOfASaveLeavesThePreviousCheckpointForResumeAuto) {
  constexpr int kSteps = 9;
  const std::string ref = reference("survive_ref_tp2", 2, tp2("", kSteps));
  const std::string out = fresh_dir("survive_kill_in_save");
  const std::vector<std::string> args = with(tp2(out, kSteps), {"--save-interval", "3"});
  ProcessResult killed = launch("launch_pretrain.sh", args, {{"NPROC_PER_NODE", "2"}, {"MINIPRETRAIN_FAULT", "die-in-save@6:1"}});
  EXPECT_NE(killed.exit_code, 0) << killed.output;
  EXPECT_NE(killed.output.find("MINIPRETRAIN_FAULT: rank 1 dies (SIGKILL) while saving the checkpoint of step 6"),
            std::string::npos)
      << killed.output;
  EXPECT_TRUE(fs::exists(out + "/checkpoint-00000006.tmp/shard-tp1-pp0.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-00000006.tmp/meta.json"));
  EXPECT_EQ(find_latest_checkpoint(out), out + "/checkpoint-00000003");

  ProcessResult resumed = launch("launch_pretrain.sh", with(args, {"--resume", "auto"}), {{"NPROC_PER_NODE", "2"}});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("checkpoint-00000003 at step 3"), std::string::npos) << resumed.output;
  EXPECT_FALSE(fs::exists(out + "/checkpoint-00000006.tmp"));
  EXPECT_TRUE(fs::exists(out + "/checkpoint-00000006/meta.json"));
  expect_same_losses(ref, out, kSteps, 0.0);
  expect_same_weights(ref, out, 0.0);
}

// A NaN in one rank's gradients at step 3: every rank skips that update, the
// log names the rank and its stage, the run finishes, and the layout still
// equals one process given the same NaN.
TEST(Survival, ANanOnOneRankSkipsThatStepEverywhere) {
  constexpr int kSteps = 6;
  const std::string one = fresh_dir("survive_nan_one"), four = fresh_dir("survive_nan_four");
  auto solo = start_ranks(1, tiny_args(one, kSteps), {{"MINIPRETRAIN_FAULT", "nan@3:0"}});
  expect_all_succeeded(wait_all(solo, 120));
  auto ranks = start_ranks(4, tp2_pp2(four, kSteps), {{"MINIPRETRAIN_FAULT", "nan@3:1"}});
  std::vector<ProcessResult> results = wait_all(ranks, 120);
  expect_all_succeeded(results);
  EXPECT_NE(results[0].output.find("Step 3 skipped: non-finite loss or gradients on rank 1 (stage 0, tp 1, dp 0): "
                                   "gradients | 1 in a row"),
            std::string::npos)
      << results[0].output;
  for (const std::string& dir : {one, four}) {
    auto metrics = read_metrics(dir);
    ASSERT_EQ(metrics.size(), static_cast<size_t>(kSteps));
    for (const auto& [step, record] : metrics) EXPECT_EQ(record["skipped"].get<bool>(), step == 3) << dir << " " << step;
    EXPECT_EQ(metrics[kSteps]["skipped_total"].get<int64_t>(), 1);
    // AdamW took one step fewer than the run.
    auto shard = read_named_shard(find_latest_checkpoint(dir) + "/shard-tp0-pp0");
    EXPECT_EQ(shard.at("optim/step").item<int64_t>(), kSteps - 1) << dir;
  }
  for (int64_t step : {1, 2, 4, 5, 6}) {
    const double a = read_metrics(one)[step]["loss"].get<double>(), b = read_metrics(four)[step]["loss"].get<double>();
    EXPECT_NEAR(a, b, 1e-5 * std::abs(a)) << "step " << step;
  }
  expect_same_weights(one, four, 1e-4);
}

// NaNs at every step from 4 on: after --max-skipped-steps 3 the run stops with
// an error, and the newest checkpoint holds finite weights.
TEST(Survival, ConsecutiveNansStopTheRunAndTheNewestCheckpointIsFinite) {
  const std::string out = fresh_dir("survive_nans");
  auto solo = start_ranks(1, with(tiny_args(out, 12), {"--save-interval", "2", "--max-skipped-steps", "3"}),
                          {{"MINIPRETRAIN_FAULT", "nan@4-12:0"}});
  ProcessResult r = solo[0]->wait(120);
  EXPECT_EQ(r.exit_code, 3) << r.output;  // diverged: the launchers do not restart it
  EXPECT_NE(r.output.find("steps 4 to 6 all had a non-finite loss or gradients (--max-skipped-steps 3)"),
            std::string::npos)
      << r.output;
  const std::string newest = find_latest_checkpoint(out);
  EXPECT_EQ(newest, out + "/checkpoint-00000004");
  for (const auto& [name, tensor] : load_full_tensors(newest))
    EXPECT_TRUE(torch::isfinite(tensor).all().item<bool>()) << name;
}

// A rank dies at step 5 under MAX_RESTARTS=1: the launcher restarts every
// rank from the newest checkpoint and the job ends as if nothing happened.
TEST(Survival, ARankKilledAtStep5IsRestartedAndTheJobEndsAsIfUninterrupted) {
  constexpr int kSteps = 9;
  const std::string ref = reference("survive_ref_tp2", 2, tp2("", kSteps));
  std::vector<std::string> launchers{"launch_pretrain.sh"};
  if (::access("/usr/bin/mpirun", X_OK) == 0) launchers.push_back("launch_mpi.sh");
  for (const std::string& launcher : launchers) {
    SCOPED_TRACE(launcher);
    const std::string out = fresh_dir("survive_restart_" + launcher);
    ProcessResult r = launch(launcher, with(tp2(out, kSteps), {"--save-interval", "2"}),
                             {{"NPROC_PER_NODE", "2"}, {"NP", "2"}, {"MAX_RESTARTS", "1"},
                              {"MINIPRETRAIN_FAULT", "die@5:1"}});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("MINIPRETRAIN_FAULT: rank 1 dies (SIGKILL) at step 5"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("restart 1 of 1"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("checkpoint-00000004 at step 4"), std::string::npos) << r.output;
    expect_same_losses(ref, out, kSteps, 0.0);
    expect_same_weights(ref, out, 0.0);
  }
}

// Without restarts, the same death ends the job with a failing code (of the
// first rank the launcher finds dead: the killed one, or its peer that
// failed at once).
TEST(Survival, WithoutRestartsADeadRankEndsTheJob) {
  const std::string out = fresh_dir("survive_no_restart");
  ProcessResult r = launch("launch_pretrain.sh", tp2(out, 9),
                           {{"NPROC_PER_NODE", "2"}, {"MINIPRETRAIN_FAULT", "die@5:1"}});
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("launch_pretrain: exiting with code " + std::to_string(r.exit_code)), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("restart 1"), std::string::npos) << r.output;
}

// A rank that stops (SIGSTOP, as a hung GPU or a swapped-out host looks from
// outside) at step 3 of four: the other three exit non-zero within
// --dist-timeout + 10 s, each naming the step, the group and the operation.
TEST(Survival, AStoppedRankMakesTheOthersFailInTimeNamingGroupAndOperation) {
  constexpr double kTimeout = 5;
  const std::string out = fresh_dir("survive_hang");
  auto ranks = start_ranks(4, with(tp2_pp2(out, 100000), {"--dist-timeout", "5"}), {{"MINIPRETRAIN_FAULT", "hang@3:3"}});
  // Wait for rank 3 to stop itself.
  Clock::time_point stopped;
  for (int i = 0;; ++i) {
    ASSERT_LT(i, 1200) << "rank 3 never stopped";
    std::ifstream stat("/proc/" + std::to_string(ranks[3]->pid()) + "/stat");
    std::string pid, comm, state;
    stat >> pid >> comm >> state;
    if (state == "T") {
      stopped = Clock::now();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::regex named("at step 3: (tp|pp|dp|world)[.a-z0-9]* (all_reduce|all_gather|reduce_scatter|broadcast|send|recv|barrier)"
                         "[a-z0-9 ]* failed after [0-9.]+ s");
  for (int r = 0; r < 3; ++r) {
    ProcessResult result = ranks[r]->wait(kTimeout + 30);
    const double waited = std::chrono::duration<double>(Clock::now() - stopped).count();
    EXPECT_NE(result.exit_code, 0) << "rank " << r;
    EXPECT_NE(result.exit_code, -1) << "rank " << r << " hung";
    EXPECT_LE(waited, kTimeout + 10) << "rank " << r;
    EXPECT_TRUE(std::regex_search(result.output, named)) << "rank " << r << ":\n" << result.output;
  }
}

// --save-keep 2 leaves the newest two checkpoints; a .tmp left by a killed
// save goes with the next save; --exit-duration-mins stops with a checkpoint.
TEST(Survival, SaveKeepAndExitDuration) {
  const std::string out = fresh_dir("survive_keep");
  fs::create_directories(out + "/checkpoint-00000001.tmp");
  ProcessResult r = run_binary(with(tiny_args(out, 10), {"--save-interval", "2", "--save-keep", "2"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(out))
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"checkpoint-00000008", "checkpoint-00000010"}));

  // Rolled back to step 8 and saved at 9: step 10 belongs to the abandoned
  // run, kept aside where --resume auto never takes it.
  r = run_binary(with(tiny_args(out, 9), {"--save-interval", "1", "--resume", out + "/checkpoint-00000008"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("checkpoint-00000010 is later than the step just saved"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out + "/checkpoint-00000010.abandoned/meta.json"));
  EXPECT_EQ(find_latest_checkpoint(out), out + "/checkpoint-00000009");

  const std::string timed = fresh_dir("survive_duration");
  r = run_binary(with(tiny_args(timed, 1000), {"--exit-duration-mins", "0.00001"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Stopping after step 1: the run has taken --exit-duration-mins"), std::string::npos)
      << r.output;
  EXPECT_EQ(find_latest_checkpoint(timed), timed + "/checkpoint-00000001");
}

// SIGTERM to the bash launcher: it passes the signal on, the ranks save and
// stop, and the launcher exits 0.
TEST(Survival, SigtermToTheLauncherSavesAndExitsZero) {
  const std::string out = fresh_dir("survive_launcher_term");
  std::vector<std::string> argv{"/bin/bash", std::string(MINIPRETRAIN_SOURCE_DIR) + "/scripts/launch_pretrain.sh"};
  for (const auto& a : tp2(out, 100000)) argv.push_back(a);
  Process launcher(argv, {{"NPROC_PER_NODE", "2"}, {"MINIPRETRAIN_BIN", binary()}, {"MASTER_ADDR", "127.0.0.1"},
                          {"MASTER_PORT", std::to_string(free_port())}});
  for (int i = 0; i < 600 && read_metrics(out).size() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_GE(read_metrics(out).size(), 3u);
  launcher.kill(SIGTERM);
  ProcessResult r = launcher.wait(120);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("every rank stopped cleanly"), std::string::npos) << r.output;
  EXPECT_EQ(checkpoint_step(find_latest_checkpoint(out)), read_metrics(out).rbegin()->first);
}
