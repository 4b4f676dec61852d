// torchrun, from the project's pinned PyTorch (.venv), starts the same job as
// one process: directly, through our launch script, after it restarted a
// killed rank, and across two nodes met through its c10d rendezvous. A missing
// torchrun fails (it is part of the install), it does not skip.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>

#include "test_support.h"
#include "two_namespaces.h"

using namespace minipretrain::test;

namespace {

constexpr int kSteps = 5;

std::string torchrun() { return venv_program("torchrun"); }

// Empty where torchrun is installed; else what to do about it.
std::string missing_torchrun() {
  if (::access(torchrun().c_str(), X_OK) == 0) return "";
  return "no torchrun at " + torchrun() + ": run scripts/install_deps.sh (or set MINIPRETRAIN_VENV)";
}

// The uninterrupted one-process run, once per test binary.
std::string one_process(int steps) {
  static std::map<int, std::string> done;
  if (!done.count(steps)) {
    const std::string out = fresh_dir("torchrun_one_process_" + std::to_string(steps));
    expect_all_succeeded(run_ranks(1, tiny_args(out, steps)));
    done[steps] = out;
  }
  return done[steps];
}

// torchrun's own flags, then the binary with `args`. `timeout` ends it with
// SIGTERM first, so that torchrun stops the workers (each in a session of its
// own) rather than leaving them behind.
std::vector<std::string> torchrun_argv(const std::vector<std::string>& flags, const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/usr/bin/timeout", "-k", "10", "240", torchrun()};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.insert(argv.end(), {"--no_python", binary()});
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// Two processes within these tolerances of one: sums in another order.
void expect_equals_one_process(const std::string& out, int steps) {
  expect_same_losses(one_process(steps), out, steps, 1e-5);
  expect_same_weights(one_process(steps), out, 1e-4);
}

}  // namespace

class Torchrun : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = missing_torchrun(); !why.empty()) FAIL() << why;
  }
};

TEST_F(Torchrun, TwoProcessesEqualOneProcess) {
  const std::string out = fresh_dir("torchrun_dp2");
  const int port = free_port();
  const ProcessResult r = run(torchrun_argv({"--nproc_per_node", "2", "--master_port", std::to_string(port)},
                                            tiny_args(out, kSteps)),
                              {}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Rendezvous listens on 127.0.0.1:" + std::to_string(port + 1)), std::string::npos)
      << r.output;
  expect_equals_one_process(out, kSteps);
}

// With no torchrun on PATH, the script takes the project's.
TEST_F(Torchrun, OurLaunchScriptUnderTorchrunEqualsOneProcess) {
  const std::string out = fresh_dir("torchrun_script_tp2");
  std::vector<std::string> argv{"/bin/bash", std::string(MINIPRETRAIN_SOURCE_DIR) + "/scripts/launch_pretrain.sh"};
  for (const auto& a : tiny_args(out, kSteps)) argv.push_back(a);
  std::map<std::string, std::string> env{{"LAUNCHER", "torchrun"}, {"NPROC_PER_NODE", "2"}, {"TP_SIZE", "2"},
                                         {"MINIPRETRAIN_BIN", binary()}, {"MASTER_ADDR", "127.0.0.1"},
                                         {"MASTER_PORT", std::to_string(free_port())},
                                         {"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}};
  if (std::getenv("MINIPRETRAIN_VENV")) env["TORCHRUN"] = torchrun();
  const ProcessResult r = run(argv, env, 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("via torchrun"), std::string::npos) << r.output;
  expect_equals_one_process(out, kSteps);
}

// Rank 1 of TP 2 dies (SIGKILL) at step 5; torchrun's --max-restarts 1 starts
// both again, they resume from step 4's checkpoint (faults fire only in the
// first attempt, TORCHELASTIC_RESTART_COUNT 0), and the job ends as the
// uninterrupted one does.
TEST_F(Torchrun, ARankKilledMidRunIsRestartedAndTheJobEqualsOneProcess) {
  constexpr int kRestartSteps = 8;
  const std::string out = fresh_dir("torchrun_restart");
  const std::vector<std::string> args = with(
      tiny_args(out, kRestartSteps), {"--tensor-parallel-size", "2", "--save-interval", "2", "--resume", "auto"});
  const std::vector<std::string> argv = torchrun_argv(
      {"--nproc_per_node", "2", "--max-restarts", "1", "--master_port", std::to_string(free_port())}, args);
  const ProcessResult r = run(argv, {{"MINIPRETRAIN_FAULT", "die@5:1"}}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("MINIPRETRAIN_FAULT: rank 1 dies (SIGKILL) at step 5"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("checkpoint-00000004 at step 4"), std::string::npos) << r.output;
  expect_equals_one_process(out, kRestartSteps);
}

// Two nodes (network namespaces), one torchrun each, meeting at node 0's c10d
// rendezvous store; TP 2 inside a node, PP 2 across. Node 0 is told it hosts
// the store (is_host=1) and each node its address (--local-addr): the host
// name resolves to the loopback in both, so torchrun cannot tell by itself.
class TorchrunTwoNodes : public TwoNamespaces {
 protected:
  void SetUp() override {
    if (const std::string why = missing_torchrun(); !why.empty()) FAIL() << why;
    TwoNamespaces::SetUp();
  }
};

TEST_F(TorchrunTwoNodes, TensorParallelInsideANodePipelineAcrossNodesEqualsOneProcess) {
  const std::string out = fresh_dir("torchrun_two_nodes");
  const std::string endpoint = address(0) + ":" + std::to_string(free_port());
  const std::vector<std::string> args =
      with(tiny_args(out, kSteps), {"--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"});
  std::vector<std::unique_ptr<Process>> nodes;
  for (int node = 0; node < 2; ++node) {
    std::vector<std::string> argv = with(in_node(node), {"/usr/bin/env", "-u", "GLOO_SOCKET_IFNAME"});
    const std::vector<std::string> launch = torchrun_argv(
        {"--nnodes", "2", "--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
         "--rdzv-id", "two_nodes", "--rdzv-conf", node == 0 ? "is_host=1" : "is_host=0", "--local-addr",
         address(node)},
        args);
    argv.insert(argv.end(), launch.begin(), launch.end());
    nodes.push_back(std::make_unique<Process>(argv, std::map<std::string, std::string>{}));
  }
  const ProcessResult r0 = nodes[0]->wait(270), r1 = nodes[1]->wait(270);
  ASSERT_EQ(r0.exit_code, 0) << "node 0:\n" << r0.output << "\nnode 1:\n" << r1.output;
  ASSERT_EQ(r1.exit_code, 0) << "node 1:\n" << r1.output << "\nnode 0:\n" << r0.output;
  // Rank 0 serves ours on node 0's address (on the port after torchrun's store, which torchrun picks).
  EXPECT_NE(r0.output.find("Rendezvous listens on " + address(0) + ":"), std::string::npos) << r0.output;
  EXPECT_NE(r0.output.find("Gloo binds to " + address(0) + " on " + veth_[0]), std::string::npos) << r0.output;
  EXPECT_NE(r1.output.find("Gloo binds to " + address(1) + " on " + veth_[1]), std::string::npos) << r1.output;
  expect_equals_one_process(out, kSteps);
}
