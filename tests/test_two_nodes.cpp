// Two nodes on one machine (two_namespaces.h), each running the launch
// script. The host name resolves to the loopback inside them, so without
// GLOO_SOCKET_IFNAME these runs work only if Gloo binds the address that
// reaches MASTER_ADDR. A node that cannot join fails with one line naming the
// address, within the timeout. Needs root (ip netns).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "test_support.h"
#include "two_namespaces.h"

using namespace minipretrain::test;

namespace {

constexpr int kSteps = 4;
const std::string kMasterAddr = "10.77.0.1";

size_t occurrences(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

class TwoNodes : public TwoNamespaces {
 protected:
  // scripts/launch_pretrain.sh as node `node` of two, inside its namespace,
  // with GLOO_SOCKET_IFNAME unset unless `settings` sets it (`settings` come
  // last: they override MASTER_ADDR too).
  std::unique_ptr<Process> launch(int node, const std::string& port, const std::vector<std::string>& settings,
                                  const std::vector<std::string>& args) const {
    std::vector<std::string> argv = in_node(node);
    argv.insert(argv.end(), {"env", "-u", "GLOO_SOCKET_IFNAME", "NNODES=2", "NODE_RANK=" + std::to_string(node),
                             "MASTER_ADDR=" + kMasterAddr, "MASTER_PORT=" + port, "MINIPRETRAIN_BIN=" + binary()});
    argv.insert(argv.end(), settings.begin(), settings.end());
    argv.insert(argv.end(), {"timeout", "-k", "10", "120", "/bin/bash",
                             std::string(MINIPRETRAIN_SOURCE_DIR) + "/scripts/launch_pretrain.sh"});
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_unique<Process>(argv, std::map<std::string, std::string>{});
  }
};

TEST_F(TwoNodes, TensorParallelInsideANodePipelineAcrossNodesEqualsOneProcess) {
  const std::string base = fresh_dir("two_nodes_base"), out = fresh_dir("two_nodes");
  expect_all_succeeded(run_ranks(1, tiny_args(base, kSteps)));
  // 2 processes per node, TP 2 x PP 2: ranks 0 and 1 (stage 0) on node 0, ranks 2 and 3 (stage 1) on node 1.
  const std::string port = std::to_string(free_port());
  const std::vector<std::string> settings{"NPROC_PER_NODE=2", "TP_SIZE=2", "PP_SIZE=2"};
  auto node0 = launch(0, port, settings, tiny_args(out, kSteps));
  auto node1 = launch(1, port, settings, tiny_args(out, kSteps));
  const ProcessResult r0 = node0->wait(150), r1 = node1->wait(150);
  ASSERT_EQ(r0.exit_code, 0) << "node 0:\n" << r0.output << "\nnode 1:\n" << r1.output;
  ASSERT_EQ(r1.exit_code, 0) << "node 1:\n" << r1.output << "\nnode 0:\n" << r0.output;
  // Said once per node, by its local rank 0.
  EXPECT_EQ(occurrences(r0.output, "Gloo binds to "), 1u) << r0.output;
  EXPECT_EQ(occurrences(r1.output, "Gloo binds to "), 1u) << r1.output;
  EXPECT_NE(r0.output.find("Gloo binds to 10.77.0.1 on " + veth_[0]), std::string::npos) << r0.output;
  EXPECT_NE(r1.output.find("Gloo binds to 10.77.0.2 on " + veth_[1]), std::string::npos) << r1.output;
  // Rank 0 serves the rendezvous on MASTER_ADDR alone.
  EXPECT_EQ(occurrences(r0.output, "Rendezvous listens on " + kMasterAddr + ":" + port), 1u) << r0.output;
  EXPECT_EQ(occurrences(r1.output, "Rendezvous listens"), 0u) << r1.output;
  expect_same_losses(base, out, kSteps, 1e-5);
  expect_same_weights(base, out, 1e-4);
}

TEST_F(TwoNodes, AMasterAddressThatIsTheLoopbackOnTheMastersNodeStillJoinsTheNodes) {
  // As MASTER_ADDR=node0 where node0 maps its own name to 127.0.1.1: node 0
  // reaches the master over the loopback, node 1 over the veth pair.
  const std::string out = fresh_dir("two_nodes_loopback_master");
  const std::string port = std::to_string(free_port());
  auto node0 = launch(0, port, {"NPROC_PER_NODE=1", "PP_SIZE=2", "MASTER_ADDR=127.0.0.1"}, tiny_args(out, 2));
  auto node1 = launch(1, port, {"NPROC_PER_NODE=1", "PP_SIZE=2"}, tiny_args(out, 2));
  const ProcessResult r0 = node0->wait(150), r1 = node1->wait(150);
  ASSERT_EQ(r0.exit_code, 0) << "node 0:\n" << r0.output << "\nnode 1:\n" << r1.output;
  ASSERT_EQ(r1.exit_code, 0) << "node 1:\n" << r1.output << "\nnode 0:\n" << r0.output;
  EXPECT_NE(r0.output.find("Gloo binds to 10.77.0.1 on " + veth_[0] +
                           ": the local address that routes to rank 1 at 10.77.0.2"),
            std::string::npos)
      << r0.output;
  // Node 0's ranks reach it on the loopback, node 1's on the veth pair: only every interface serves both.
  EXPECT_NE(r0.output.find("Rendezvous listens on every interface, 0.0.0.0:" + port + ": MASTER_ADDR 127.0.0.1 is the "
                           "loopback here"),
            std::string::npos)
      << r0.output;
}

TEST_F(TwoNodes, ANodeWhoseMasterNeverAnswersFailsNamingItWithinTheTimeout) {
  std::vector<std::string> args = tiny_args(fresh_dir("two_nodes_no_master"), kSteps);
  args.insert(args.end(), {"--dist-timeout", "5"});
  const std::string port = std::to_string(free_port());
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult r = launch(1, port, {"NPROC_PER_NODE=2", "TP_SIZE=2", "PP_SIZE=2"}, args)->wait(60);
  EXPECT_NE(r.exit_code, -1) << "still running after 60 s:\n" << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(seconds_since(start), 30) << r.output;
  EXPECT_NE(r.output.find("cannot reach the rendezvous at " + kMasterAddr + ":" + port), std::string::npos)
      << r.output;
}

TEST_F(TwoNodes, AGlooAddressTheOtherNodeCannotReachStopsEveryRankWithinTheTimeout) {
  // The rendezvous works, but GLOO_SOCKET_IFNAME=lo gives each rank the
  // loopback of its own node as its Gloo address.
  std::vector<std::string> args = tiny_args(fresh_dir("two_nodes_loopback"), kSteps);
  args.insert(args.end(), {"--dist-timeout", "10"});
  const std::string port = std::to_string(free_port());
  const std::vector<std::string> settings{"NPROC_PER_NODE=1", "PP_SIZE=2", "GLOO_SOCKET_IFNAME=lo"};
  const auto start = std::chrono::steady_clock::now();
  auto node0 = launch(0, port, settings, args);
  auto node1 = launch(1, port, settings, args);
  for (const ProcessResult& r : {node0->wait(60), node1->wait(60)}) {
    EXPECT_NE(r.exit_code, -1) << "still running after 60 s:\n" << r.output;
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("(Gloo address 127.0.0.1) cannot reach rank "), std::string::npos) << r.output;
  }
  EXPECT_LT(seconds_since(start), 25);
}
