#include "two_namespaces.h"

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "test_support.h"

namespace minipretrain::test {
namespace {

std::string ip_tool() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(path, X_OK) == 0) return path;
  return "";
}

ProcessResult sh(const std::string& script) { return run({"/bin/sh", "-c", script}, {}, 30); }

// Whether this process may make a network namespace: a child tries.
bool kernel_lets_us_make_namespaces() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(::unshare(CLONE_NEWNET) == 0 ? 0 : 1);
  int status = 0;
  return child > 0 && ::waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool in_ci_as_root_with_namespaces() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true" && ::geteuid() == 0 && kernel_lets_us_make_namespaces();
}

}  // namespace

// Empty once both nodes are up; else why not.
std::string TwoNamespaces::make_nodes() {
  ip_ = ip_tool();
  if (ip_.empty()) return "no ip(8) from iproute2 on this machine";
  // Named after this process, so that test processes running side by side do not collide.
  const std::string tag = "mp" + std::to_string(::getpid());
  ns_[0] = tag + "a";
  ns_[1] = tag + "b";
  veth_[0] = tag + "va";
  veth_[1] = tag + "vb";
  const ProcessResult added = sh(ip_ + " netns add " + ns_[0]);
  if (added.exit_code != 0) return "cannot create a network namespace (needs root): " + added.output;
  const ProcessResult joined = sh("set -e\n" + ip_ + " netns add " + ns_[1] + "\n" + ip_ + " link add " + veth_[0] +
                                  " type veth peer name " + veth_[1] + "\n" + node_setup(0) + node_setup(1));
  if (joined.exit_code != 0) return "cannot join two network namespaces by a veth pair: " + joined.output;
  return "";
}

void TwoNamespaces::SetUp() {
  const std::string why = make_nodes();
  if (why.empty()) return;
  // CI runs as root where namespaces can be made: a skip there would hide a
  // broken two-node path (or a lost iproute2) behind a green suite.
  if (in_ci_as_root_with_namespaces()) FAIL() << why << " (CI=true, root, and this kernel makes network namespaces)";
  GTEST_SKIP() << why;
}

// Deleting a namespace deletes the veth end inside it, and with it the pair.
void TwoNamespaces::TearDown() {
  if (ns_[0].empty()) return;
  sh(ip_ + " netns del " + ns_[0] + " 2>/dev/null; " + ip_ + " netns del " + ns_[1] + " 2>/dev/null; " + ip_ +
     " link del " + veth_[0] + " 2>/dev/null; true");
}

std::string TwoNamespaces::node_setup(int node) const {
  const std::string in_ns = ip_ + " -n " + ns_[node];
  return ip_ + " link set " + veth_[node] + " netns " + ns_[node] + "\n" + in_ns + " addr add " + address(node) +
         "/24 dev " + veth_[node] + "\n" + in_ns + " link set " + veth_[node] + " up\n" + in_ns + " link set lo up\n";
}

}  // namespace minipretrain::test
