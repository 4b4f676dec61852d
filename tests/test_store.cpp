// The rendezvous store (SocketStore and StoreServer) in one process: clients
// on threads, a server on the loopback, and where that server listens.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "minipretrain/distributed/gloo_communicator.h"
#include "minipretrain/distributed/socket_store.h"
#include "minipretrain/distributed/store_protocol.h"
#include "minipretrain/distributed/store_server.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

std::vector<uint8_t> bytes(const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); }
std::string text(const std::vector<uint8_t>& bytes) { return std::string(bytes.begin(), bytes.end()); }

c10::intrusive_ptr<SocketStore> client(int port, std::chrono::milliseconds timeout = 10s) {
  return c10::make_intrusive<SocketStore>("127.0.0.1", port, timeout);
}

// Whether a plain TCP connection to address:port is accepted.
bool accepts(const std::string& address, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, address.c_str(), &addr.sin_addr);
  const bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return connected;
}

// The local addresses of the IPv4 sockets listening on `port`, as
// /proc/net/tcp writes them ("0100007F" is 127.0.0.1, "00000000" every interface).
std::vector<std::string> listening_addresses(int port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // the header
  char wanted[8];
  std::snprintf(wanted, sizeof(wanted), "%04X", port);
  std::vector<std::string> found;
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    const size_t colon = local.find(':');
    if (state == "0A" && local.substr(colon + 1) == wanted) found.push_back(local.substr(0, colon));  // 0A: LISTEN
  }
  return found;
}

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST(Store, EveryOperationIsSharedBetweenClients) {
  StoreServer server("127.0.0.1", 0);
  auto a = client(server.port()), b = client(server.port());

  a->set("k", bytes("v"));
  EXPECT_EQ(text(b->get("k")), "v");
  const std::string binary("\0\1\2 with a zero byte", 20), large(1 << 20, 'x');
  a->set("binary", bytes(binary));
  a->set("large", bytes(large));
  EXPECT_EQ(text(b->get("binary")), binary);
  EXPECT_EQ(text(b->get("large")), large);

  EXPECT_EQ(a->add("n", 2), 2);
  EXPECT_EQ(b->add("n", 3), 5);
  EXPECT_EQ(b->add("n", -1), 4);
  EXPECT_EQ(text(a->get("n")), "4");
  EXPECT_NE(message_of([&] { a->add("k", 1); }).find("refused: add(): key 'k' holds a value that is not an integer"),
            std::string::npos);

  EXPECT_TRUE(a->check({"k", "n"}));
  EXPECT_FALSE(b->check({"k", "absent"}));

  // As c10d::TCPStore: a missing key holds the empty value, and the answer is the value now.
  EXPECT_EQ(text(a->compareSet("c", {}, bytes("1"))), "1");
  EXPECT_EQ(text(b->compareSet("c", bytes("0"), bytes("2"))), "1");
  EXPECT_EQ(text(b->compareSet("c", bytes("1"), bytes("2"))), "2");
  EXPECT_EQ(text(a->get("c")), "2");
  EXPECT_EQ(text(a->compareSet("unset", bytes("x"), bytes("y"))), "x");
  EXPECT_FALSE(a->check({"unset"}));

  EXPECT_EQ(a->getNumKeys(), 5);  // k, binary, large, n, c
  EXPECT_TRUE(a->deleteKey("k"));
  EXPECT_FALSE(b->deleteKey("k"));
  EXPECT_FALSE(b->check({"k"}));
  EXPECT_EQ(b->getNumKeys(), 4);
}

TEST(Store, GetAndWaitBlockUntilAnotherClientSetsTheKeys) {
  StoreServer server("127.0.0.1", 0);
  auto waiter = client(server.port()), setter = client(server.port());
  std::thread later([&] {
    std::this_thread::sleep_for(100ms);
    setter->set("first", bytes("1"));
    std::this_thread::sleep_for(100ms);
    setter->set("second", bytes("2"));
  });
  const auto start = Clock::now();
  EXPECT_EQ(text(waiter->get("first")), "1");
  waiter->wait({"first", "second"});
  EXPECT_GE(Clock::now() - start, 200ms);
  later.join();
  // As ProcessGroupGloo sees it: through a PrefixStore.
  c10d::PrefixStore prefixed("group", waiter);
  prefixed.set("key", bytes("value"));
  EXPECT_EQ(text(setter->get("group/key")), "value");
  prefixed.wait({"key"}, 1s);
}

TEST(Store, AKeyNoOneSetsTimesOutNamingItTheStoreAndTheWait) {
  StoreServer server("127.0.0.1", 0);
  auto store = client(server.port(), 200ms);
  const std::string where = "127.0.0.1:" + std::to_string(server.port());
  const auto start = Clock::now();
  const std::string got = message_of([&] { store->get("nobody"); });
  EXPECT_GE(Clock::now() - start, 200ms);
  EXPECT_LT(Clock::now() - start, 5s);
  EXPECT_NE(got.find("waited 0.2 s at the rendezvous store " + where + " for key 'nobody', which no process set"),
            std::string::npos)
      << got;
  EXPECT_EQ(got.find('\n'), std::string::npos) << got;

  store->set("here", bytes("1"));
  const std::string waited = message_of([&] { store->wait({"here", "missing"}, 100ms); });
  EXPECT_NE(waited.find("waited 0.1 s at the rendezvous store " + where + " for key 'missing',"), std::string::npos)
      << waited;
}

TEST(Store, AClientKeepsTryingUntilTheServerStarts) {
  const int port = test::free_port();
  c10::intrusive_ptr<SocketStore> early;
  std::thread connecting([&] { early = client(port, 10s); });
  std::this_thread::sleep_for(300ms);  // the client has been refused a few times by now
  StoreServer server("127.0.0.1", port);
  connecting.join();
  ASSERT_TRUE(early);
  early->set("k", bytes("v"));
  EXPECT_EQ(text(client(port)->get("k")), "v");
}

TEST(Store, AClientWithNoServerGivesUpAfterTheTimeout) {
  const int port = test::free_port();
  const auto start = Clock::now();
  const std::string got = message_of([&] { client(port, 300ms); });
  EXPECT_GE(Clock::now() - start, 300ms);
  EXPECT_LT(Clock::now() - start, 5s);
  EXPECT_NE(got.find("Connection refused"), std::string::npos) << got;
}

TEST(Store, AServerThatIsGoneIsAClearError) {
  auto server = std::make_unique<StoreServer>("127.0.0.1", 0);
  auto store = client(server->port());
  store->set("k", bytes("v"));
  server.reset();
  const std::string got = message_of([&] { store->get("k"); });
  EXPECT_NE(got.find("the rendezvous store at 127.0.0.1:"), std::string::npos) << got;
  // The connection is not used again once a request failed halfway.
  EXPECT_EQ(message_of([&] { store->set("k", bytes("v")); }), got);
}

// The point of StoreServer: c10d::TCPStore listens on every interface.
TEST(Store, TheServerListensOnTheAddressItIsGivenAndNoOther) {
  StoreServer one("127.0.0.1", 0);
  EXPECT_EQ(listening_addresses(one.port()), std::vector<std::string>{"0100007F"});
  EXPECT_TRUE(accepts("127.0.0.1", one.port()));
  // 127.0.0.2 is this host's too (all of 127.0.0.0/8 is), but not the address bound.
  EXPECT_FALSE(accepts("127.0.0.2", one.port()));

  // The same probe does tell a server on every interface.
  StoreServer every("0.0.0.0", 0);
  EXPECT_EQ(listening_addresses(every.port()), std::vector<std::string>{"00000000"});
  EXPECT_TRUE(accepts("127.0.0.2", every.port()));
}

TEST(Store, TheServerRefusesAnAddressThatIsNotThisHosts) {
  // 203.0.113.0/24 is reserved for documentation: no host holds it (and binding sends nothing).
  const std::string got = message_of([] { StoreServer("203.0.113.7", 0); });
  EXPECT_NE(got.find("Cannot assign requested address"), std::string::npos) << got;
}

TEST(Store, GlooBuildsItsGroupOverIt) {
  StoreServer server("127.0.0.1", 0);
  std::vector<std::thread> ranks;
  std::vector<float> sums(2);
  for (int rank = 0; rank < 2; ++rank)
    ranks.emplace_back([&, rank] {
      GlooCommunicator comm("world", client(server.port()), rank, 2, 30s, "127.0.0.1");
      torch::Tensor t = torch::full({3}, static_cast<float>(rank + 1));
      comm.all_reduce(t, ReduceOp::Sum);
      sums[rank] = t[0].item<float>();
    });
  for (std::thread& t : ranks) t.join();
  EXPECT_EQ(sums, (std::vector<float>{3, 3}));
}

namespace {

int64_t resident_mb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) / 1024;
  return -1;
}

}  // namespace

// Hostile clients on the loopback while the job's client works: random bytes,
// a huge length prefix, a half message, a thousand idle connections, one that
// never sends, and one that asks for a 1 MB value a thousand times without
// reading (a gigabyte of answers unbounded). The server neither crashes nor
// grows past its bounds, and keeps serving the job's client.
TEST(Store, HostileClientsNeitherCrashTheServerNorGrowItPastItsBounds) {
  // Both ends of a thousand connections live in this process.
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < 4096) {
    files.rlim_cur = std::min<rlim_t>(4096, files.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  if (files.rlim_cur < 2400) GTEST_SKIP() << "needs 2400 file descriptors; the hard limit is " << files.rlim_max;
  StoreServer server("127.0.0.1", 0);
  auto store = client(server.port());
  store->set("job", bytes("value"));
  store->set("big", std::vector<uint8_t>(1 << 20, 'x'));
  const int64_t before = resident_mb();
  std::vector<int> held;

  int fd = connect_loopback(server.port());
  std::string junk(1 << 20, '\0');
  std::mt19937 random(7);
  for (char& c : junk) c = static_cast<char>(random());
  send_some(fd, junk);
  held.push_back(fd);

  fd = connect_loopback(server.port());
  send_some(fd, std::string("\x40\x00\x00\x00\x00\x00\x00\x00", 8));  // 2^62 as 8 bytes; 1 GiB as our 4
  held.push_back(fd);

  fd = connect_loopback(server.port());
  send_some(fd, encode({static_cast<uint8_t>(StoreOp::Set), {"half", std::string(1000, 'h')}}).substr(0, 500));
  ::close(fd);

  for (int i = 0; i < 1000; ++i) held.push_back(connect_loopback(server.port()));

  fd = connect_loopback(server.port());
  std::string requests;
  for (int i = 0; i < 1000; ++i) requests += encode({static_cast<uint8_t>(StoreOp::TryGet), {"big"}});
  send_some(fd, requests);
  held.push_back(fd);

  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(text(store->get("job")), "value");
  store->set("after", bytes("1"));
  EXPECT_EQ(text(store->get("after")), "1");
  EXPECT_FALSE(store->check({"half"}));
  const int64_t grown = resident_mb() - before;
  // The bound: the buffers (256 MiB) and one more message; here one
  // connection's share, about 2 MiB, is all it takes.
  EXPECT_LT(grown, 64) << "MB";
  for (int f : held) ::close(f);
}

// The cap on connections (here 8, given to the constructor; 16384 in a run,
// half the descriptor limit under a low one): those past it are closed at
// once, the job's client, connected before them, is still served, and a
// place given up is taken again.
TEST(Store, ConnectionsPastTheCapAreClosedAndTheJobIsStillServed) {
  StoreServer server("127.0.0.1", 0, 8);
  auto store = client(server.port());
  store->set("job", bytes("value"));
  std::vector<int> held;
  for (int i = 0; i < 20; ++i) held.push_back(connect_loopback(server.port()));
  std::this_thread::sleep_for(500ms);
  std::vector<bool> closed;
  for (int fd : held) closed.push_back(closed_by_peer(fd));
  // The job's client and the first 7 fill the 8 places.
  EXPECT_EQ(std::vector<bool>(closed.begin(), closed.begin() + 7), std::vector<bool>(7, false));
  EXPECT_EQ(std::vector<bool>(closed.begin() + 7, closed.end()), std::vector<bool>(13, true));
  EXPECT_EQ(text(store->get("job")), "value");
  ::close(held.front());
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(text(client(server.port())->get("job")), "value");
  for (size_t i = 1; i < held.size(); ++i) ::close(held[i]);
}
