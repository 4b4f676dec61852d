// The launch scripts start the same job as torchrun's contract: the bash
// launcher and mpirun give the losses of processes started by hand.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "test_support.h"

using namespace minipretrain::test;

namespace {

constexpr int kSteps = 5;

std::string script(const std::string& name) { return std::string(MINIPRETRAIN_SOURCE_DIR) + "/scripts/" + name; }

std::string reference() {
  static const std::string dir = [] {
    const std::string out = fresh_dir("launch_reference");
    expect_all_succeeded(run_ranks(2, tiny_args(out, kSteps)));
    return out;
  }();
  return dir;
}

ProcessResult launch(const std::string& launcher, const std::string& out, std::map<std::string, std::string> env) {
  std::vector<std::string> argv{"/bin/bash", script(launcher)};
  for (const auto& a : tiny_args(out, kSteps)) argv.push_back(a);
  env["MINIPRETRAIN_BIN"] = binary();
  env["MASTER_ADDR"] = "127.0.0.1";
  env["MASTER_PORT"] = std::to_string(free_port());
  return run(argv, env, 300);
}

}  // namespace

TEST(Launchers, BashLauncherEqualsHandStartedRanks) {
  const std::string out = fresh_dir("launch_bash");
  ProcessResult r = launch("launch_pretrain.sh", out, {{"NPROC_PER_NODE", "2"}});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same_losses(reference(), out, kSteps, 0.0);
}

// Settings become flags only when set: a --config file's max_steps and micro
// batch stand, TP_SIZE (set) still applies. Before, the launcher's defaults
// (micro batch 4, 10000 steps) silently replaced the file's.
TEST(Launchers, AConfigFilesValuesStandUnlessASettingIsSet) {
  const std::string out = fresh_dir("launch_config");
  const std::string config = out + "/job.json";
  std::ofstream(config) << R"({"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2,
    "num_attention_heads": 8, "max_seq_length": 16, "micro_batch_size": 2, "global_batch_size": 8,
    "max_steps": 3, "log_interval": 1, "num_train_samples": 512, "num_threads": 1, "precision": "fp32"})";
  std::vector<std::string> argv{"/bin/bash", script("launch_pretrain.sh"), "--config", config, "--output-dir", out};
  const ProcessResult r = run(argv,
                              {{"NPROC_PER_NODE", "2"},
                               {"TP_SIZE", "2"},
                               {"MINIPRETRAIN_BIN", binary()},
                               {"MASTER_ADDR", "127.0.0.1"},
                               {"MASTER_PORT", std::to_string(free_port())}},
                              300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Tensor parallel: 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Micro batch size: 2 | Microbatches: 4"), std::string::npos) << r.output;
  const auto losses = read_metrics(out);
  ASSERT_FALSE(losses.empty()) << r.output;
  EXPECT_EQ(losses.rbegin()->first, 3) << r.output;
}

TEST(Launchers, BashLauncherStopsTheJobWhenARankFails) {
  const std::string out = fresh_dir("launch_fail");
  // TP 3 over 2 processes: every rank rejects the layout with exit code 2.
  ProcessResult r = launch("launch_pretrain.sh", out, {{"NPROC_PER_NODE", "2"}, {"TP_SIZE", "3"}});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("world size 2 is not divisible by tensor_parallel_size 3"), std::string::npos) << r.output;
}

TEST(Launchers, MpirunEqualsHandStartedRanks) {
  if (::access("/usr/bin/mpirun", X_OK) != 0) GTEST_SKIP() << "mpirun is not installed (scripts/install_deps.sh installs it)";
  const std::string out = fresh_dir("launch_mpi");
  ProcessResult r = launch("launch_mpi.sh", out, {{"NP", "2"}});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same_losses(reference(), out, kSteps, 0.0);
}

// Every bad launcher setting is one line naming it, exit code 2, and no rank
// started (so no output directory).
TEST(Launchers, BadSettingsAreOneLineAndStartNothing) {
  const std::string out = fresh_dir("launch_bad");
  struct Case {
    std::string launcher;
    std::map<std::string, std::string> env;
    std::string message;
  };
  std::vector<Case> cases = {
      {"launch_pretrain.sh", {{"NPROC_PER_NODE", "0"}}, "NPROC_PER_NODE must be a positive integer, got '0'"},
      {"launch_pretrain.sh", {{"NNODES", "2"}, {"NODE_RANK", "2"}}, "NODE_RANK=2 must be below NNODES=2"},
      {"launch_pretrain.sh", {{"MASTER_PORT", "70000"}}, "MASTER_PORT must be at most 65535, got 70000"},
      {"launch_pretrain.sh", {{"LAUNCHER", "slurm"}}, "LAUNCHER must be 'builtin' or 'torchrun', got 'slurm'"},
      {"launch_pretrain.sh", {{"MINIPRETRAIN_BIN", "/nonexistent/minipretrain"}},
       "MINIPRETRAIN_BIN '/nonexistent/minipretrain' is not an executable file"},
      {"launch_pretrain.sh", {{"MAX_RESTARTS", "-1"}}, "MAX_RESTARTS must be a non-negative integer, got '-1'"},
      {"launch_pretrain.sh", {{"KILL_GRACE_SECONDS", "soon"}}, "KILL_GRACE_SECONDS must be a positive integer"},
  };
  if (::access("/usr/bin/mpirun", X_OK) == 0) {
    cases.push_back({"launch_mpi.sh", {{"MAX_RESTARTS", "x"}}, "MAX_RESTARTS must be a non-negative integer, got 'x'"});
    cases.push_back({"launch_mpi.sh", {{"HOSTFILE", out + "/hosts"}}, "HOSTFILE '" + out + "/hosts' is not a readable file"});
    cases.push_back({"launch_mpi.sh", {{"NP", "08"}}, "NP must be a positive integer, got '08'"});
  }
  for (const Case& c : cases) {
    std::map<std::string, std::string> env = c.env;
    std::vector<std::string> argv{"/bin/bash", script(c.launcher)};
    for (const auto& a : tiny_args(out + "/run", kSteps)) argv.push_back(a);
    if (!env.count("MINIPRETRAIN_BIN")) env["MINIPRETRAIN_BIN"] = binary();
    ProcessResult r = run(argv, env, 60);
    EXPECT_EQ(r.exit_code, 2) << c.message << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
    EXPECT_FALSE(std::filesystem::exists(out + "/run")) << c.message;
  }
}
