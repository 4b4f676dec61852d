// Two nodes on one machine: two network namespaces joined by a veth pair,
// node 0 at 10.77.0.1 and node 1 at 10.77.0.2. The host name still resolves
// to the loopback inside them, as on a Debian host. The fixture skips where
// it cannot make them (no ip(8), not root), except in CI (CI=true) as root on
// a kernel that lets it: there it fails. Shared by the two-node tests of our
// launcher and of torchrun.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace minipretrain::test {

class TwoNamespaces : public ::testing::Test {
 protected:
  void SetUp() override;
  // Runs after a failed or skipped SetUp too.
  void TearDown() override;

  static std::string address(int node) { return node == 0 ? "10.77.0.1" : "10.77.0.2"; }
  // The start of a command line that runs the rest inside node `node`.
  std::vector<std::string> in_node(int node) const { return {ip_, "netns", "exec", ns_[node]}; }

  std::string ip_;
  std::string ns_[2], veth_[2];

 private:
  std::string make_nodes();
  std::string node_setup(int node) const;
};

}  // namespace minipretrain::test
