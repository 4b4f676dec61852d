// The launch scripts start the same job as torchrun's contract: the bash
// launcher and mpirun give the losses of processes started by hand.
#include <gtest/gtest.h>

#include <unistd.h>

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
