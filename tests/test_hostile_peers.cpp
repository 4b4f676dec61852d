// A hostile client of a real run's rendezvous. While a DP 2 run trains, a
// client on the loopback sends rank 0's store server random bytes, a length
// prefix of 2^62 and half a message, and holds more connections than the
// server's cap. The server drops the garbage and closes what is past its
// cap; the connections the ranks made at the rendezvous keep their places,
// so the run ends as it would have without the client: exit 0, the same
// losses and weights bit for bit, rank 0 not grown past the server's bound.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "minipretrain/distributed/store_protocol.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
using namespace std::chrono_literals;

namespace {

constexpr int kSteps = 40;

int64_t resident_mb(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) / 1024;
  return -1;
}

}  // namespace

TEST(HostilePeers, ARunWhoseRendezvousIsAttackedEndsAsOneThatIsNot) {
  const std::string quiet = fresh_dir("quiet"), attacked = fresh_dir("attacked");
  expect_all_succeeded(run_ranks(2, tiny_args(quiet, kSteps)));

  // Ranks started under a descriptor limit of 512 cap the server at half of
  // it, 256 connections (store_server.h); this process keeps its own limit.
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < 1024) GTEST_SKIP() << "needs 1024 file descriptors; the limit is " << files.rlim_cur;
  rlimit low = files;
  low.rlim_cur = 512;
  ::setrlimit(RLIMIT_NOFILE, &low);
  const int port = free_port();
  std::vector<std::unique_ptr<Process>> ranks =
      start_ranks(2, tiny_args(attacked, kSteps), {{"MASTER_PORT", std::to_string(port)}});
  ::setrlimit(RLIMIT_NOFILE, &files);

  // Mid-run: rank 1 stopped holds rank 0 in a step until the attack is over.
  for (int i = 0; i < 12000 && read_metrics(attacked).size() < 2; ++i) std::this_thread::sleep_for(10ms);
  ranks[1]->kill(SIGSTOP);
  const size_t steps_before = read_metrics(attacked).size();
  ASSERT_GE(steps_before, 2u) << "the run did not start training";
  ASSERT_LT(steps_before, static_cast<size_t>(kSteps)) << "the run ended before the attack";
  const int64_t before = resident_mb(ranks[0]->pid());

  std::vector<int> garbage;
  std::string junk(1 << 20, '\0');
  std::mt19937 random(7);
  for (char& c : junk) c = static_cast<char>(random());
  garbage.push_back(connect_loopback(port));
  send_some(garbage.back(), junk);
  garbage.push_back(connect_loopback(port));
  send_some(garbage.back(), std::string("\x40\x00\x00\x00\x00\x00\x00\x00", 8));  // 2^62 as 8 bytes, 1 GiB as our 4
  const int half = connect_loopback(port);
  send_some(half, encode({static_cast<uint8_t>(StoreOp::Set), {"half", std::string(1000, 'h')}}).substr(0, 500));
  ::close(half);
  constexpr int kIdle = 400;  // silent ones, most of them past the cap
  std::vector<int> idle;
  for (int i = 0; i < kIdle; ++i) idle.push_back(connect_loopback(port));
  std::this_thread::sleep_for(1s);
  // Rank 0 may end the step rank 1 had sent its part of, no later one.
  EXPECT_LE(read_metrics(attacked).size(), steps_before + 1) << "the run went on without rank 1";
  ASSERT_GE(*std::min_element(idle.begin(), idle.end()), 0) << "rank 0's server refused a connection";

  for (int fd : garbage) EXPECT_TRUE(closed_by_peer(fd)) << "the server kept a connection that sent garbage";
  int closed = 0;
  for (int fd : idle) closed += closed_by_peer(fd);
  // 256 places, of which the ranks' own connections hold a few.
  EXPECT_GE(closed, kIdle - 256);
  EXPECT_LE(closed, kIdle - 256 + 8);
  EXPECT_LT(resident_mb(ranks[0]->pid()) - before, 64) << "MB";

  // The silent connections stay open until the run ends, its save included.
  ranks[1]->kill(SIGCONT);
  std::vector<ProcessResult> results;
  for (auto& rank : ranks) results.push_back(rank->wait(300));
  for (int fd : garbage) ::close(fd);
  for (int fd : idle) ::close(fd);
  expect_all_succeeded(results);
  expect_same_losses(quiet, attacked, kSteps, 0);
  expect_same_weights(quiet, attacked, 0);
}
