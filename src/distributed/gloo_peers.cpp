#include "minipretrain/distributed/gloo_peers.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <utility>
#include <vector>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "minipretrain/distributed/sockets.h"

namespace minipretrain {
namespace {

using Clock = std::chrono::steady_clock;

// Probes in flight at once: each holds a descriptor, and the usual limit is
// 1024 per process.
constexpr size_t kMaxInFlight = 128;
// How often a waiting rank looks at the store, answering probes in between.
constexpr int kPollMs = 50;

// c10d's messages span several lines with a C++ backtrace; keep the first.
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string in_seconds(std::chrono::milliseconds d) { return std::to_string(d.count() / 1000) + " s"; }

// A probe needs only the handshake, which the kernel completes; accepting and
// closing keeps the backlog from filling up.
void drain(int listener) {
  for (int fd; (fd = ::accept(listener, nullptr, nullptr)) >= 0;) ::close(fd);
}

// Waits until `done()` holds or `deadline` passes, answering probes meanwhile.
bool wait_until(Clock::time_point deadline, int listener, const std::function<bool()>& done) {
  while (!done()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd fd{listener, POLLIN, 0};  // a negative descriptor (no listener) is ignored: a plain sleep
    ::poll(&fd, 1, static_cast<int>(std::min<int64_t>(left, kPollMs)));
    drain(listener);
  }
  return true;
}

struct Peer {
  int rank;
  std::string host, port;

  std::string describe() const {
    const std::string endpoint = host.find(':') == std::string::npos ? host + ":" + port : "[" + host + "]:" + port;
    return "rank " + std::to_string(rank) + "'s Gloo address " + endpoint;
  }
};

// A connection to `peer` under way; poll reports POLLOUT once it is made or
// has failed (at once when connect() finished right away).
Socket start_connect(const Peer& peer) {
  const AddrInfo ai = resolve_numeric(peer.host, peer.port);
  Socket s(::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (s.fd() < 0 || (::connect(s.fd(), ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS))
    throw std::runtime_error(std::strerror(errno));
  return s;
}

// Connects to every peer, at most kMaxInFlight at once, answering probes on
// `listener` meanwhile. Returns a phrase per peer not reached by `deadline`.
std::vector<std::string> probe(const std::vector<Peer>& peers, int listener, Clock::time_point deadline) {
  struct Attempt {
    const Peer* peer;
    Socket socket;
  };
  const auto budget = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  const std::string too_late = ": no answer within " + in_seconds(budget);
  std::vector<Attempt> pending;
  std::vector<std::string> failures;
  for (size_t next = 0; next < peers.size() || !pending.empty();) {
    for (; next < peers.size() && pending.size() < kMaxInFlight; ++next) {
      try {
        pending.push_back(Attempt{&peers[next], start_connect(peers[next])});
      } catch (const std::exception& e) {
        failures.push_back(peers[next].describe() + ": " + e.what());
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      for (const Attempt& a : pending) failures.push_back(a.peer->describe() + too_late);
      break;
    }
    std::vector<pollfd> fds;
    for (const Attempt& a : pending) fds.push_back({a.socket.fd(), POLLOUT, 0});
    fds.push_back({listener, POLLIN, 0});
    ::poll(fds.data(), fds.size(), static_cast<int>(std::min<int64_t>(left, kPollMs)));
    drain(listener);
    for (size_t i = pending.size(); i-- > 0;) {  // from the back, so that erasing keeps fds[i] in step
      if (fds[i].revents == 0) continue;
      int error = 0;
      socklen_t length = sizeof(error);
      if (::getsockopt(pending[i].socket.fd(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
      if (error != 0) failures.push_back(pending[i].peer->describe() + ": " + std::strerror(error));
      pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  return failures;
}

// The store under "gloo_peers/". Its operations fail when rank 0, which
// serves it, has exited; that becomes one line naming the rendezvous.
class Board {
 public:
  Board(const c10::intrusive_ptr<c10d::Store>& store, std::string where, int rank)
      : store_(c10::make_intrusive<c10d::PrefixStore>("gloo_peers", store)), where_(std::move(where)), rank_(rank) {}

  void set(const std::string& key, const std::string& value) {
    guarded([&] { store_->set(key, std::vector<uint8_t>(value.begin(), value.end())); });
  }
  std::string get(const std::string& key) {
    std::vector<uint8_t> value;
    guarded([&] { value = store_->get(key); });
    return std::string(value.begin(), value.end());
  }
  bool has(const std::vector<std::string>& keys) {
    bool found = false;
    guarded([&] { found = store_->check(keys); });
    return found;
  }
  int64_t add(const std::string& key, int64_t value) {
    int64_t sum = 0;
    guarded([&] { sum = store_->add(key, value); });
    return sum;
  }

 private:
  void guarded(const std::function<void()>& op) {
    try {
      op();
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(rank_) + " lost the rendezvous at " + where_ +
                               " while settling Gloo addresses (has rank 0 exited?): " + first_line(e.what()));
    }
  }

  c10::intrusive_ptr<c10d::Store> store_;
  std::string where_;
  int rank_;
};

std::string address_key(int rank) { return "address/" + std::to_string(rank); }

std::string waited_in_vain(int rank, std::chrono::milliseconds timeout, const std::string& store_where) {
  return "rank " + std::to_string(rank) + " waited " + in_seconds(timeout) + " in vain for the other ranks' Gloo " +
         "addresses at the rendezvous " + store_where + " (has a rank died?)";
}

}  // namespace

GlooAddress settle_gloo_address(const c10::intrusive_ptr<c10d::Store>& store, const std::string& store_where,
                                int rank, int world_size, const GlooAddress& chosen,
                                std::chrono::milliseconds timeout) {
  Board board(store, store_where, rank);
  const bool loopback = is_loopback(chosen.address);
  if (!loopback) board.set("outside", std::to_string(rank) + " " + chosen.address);  // any one of them will do
  board.add("chosen", 1);
  if (!loopback || chosen.by_interface) return chosen;
  if (!wait_until(Clock::now() + timeout, -1, [&] { return board.add("chosen", 0) >= world_size; }))
    throw std::runtime_error(waited_in_vain(rank, timeout, store_where));
  if (!board.has({"outside"})) return chosen;  // every rank is on this host
  const std::string outside = board.get("outside");
  const size_t cut = outside.find(' ');
  const std::string peer = "rank " + outside.substr(0, cut), peer_address = outside.substr(cut + 1);
  const std::string address = local_address_towards(peer_address, peer);
  return {address, interface_of(address),
          "the local address that routes to " + peer + " at " + peer_address + ", not " + chosen.address +
              " on the loopback, which no other node reaches (GLOO_SOCKET_IFNAME overrides it)",
          false};
}

void check_peers_reachable(const c10::intrusive_ptr<c10d::Store>& store, const std::string& store_where, int rank,
                           int world_size, const std::string& address, std::chrono::milliseconds timeout) {
  Board board(store, store_where, rank);
  const std::string me = "rank " + std::to_string(rank);
  const Clock::time_point deadline = Clock::now() + timeout;
  std::string failure;  // this rank's own, as one sentence

  Socket listener;
  std::string port;
  try {
    listener = listen_on(address, "0");
    port = port_of(listener.fd());
  } catch (const std::exception& e) {
    failure = me + " cannot listen on its Gloo address " + address + ": " + e.what();
  }
  if (failure.empty()) {
    board.set(address_key(rank), address + " " + port);
    board.add("published", 1);
  }
  // A rank that could not listen publishes no address, but its failure.
  if (failure.empty() && !wait_until(deadline, listener.fd(), [&] {
        return board.add("published", 0) >= world_size || board.has({"failed"});
      }))
    failure = waited_in_vain(rank, timeout, store_where);

  if (failure.empty() && !board.has({"failed"})) {
    std::vector<Peer> peers;
    for (int p = 0; p < world_size; ++p) {
      if (p == rank) continue;
      const std::string value = board.get(address_key(p));  // "host port"; an IPv6 host has no space either
      const size_t cut = value.rfind(' ');
      peers.push_back({p, value.substr(0, cut), value.substr(cut + 1)});
    }
    // Half the time for the probes leaves the other half for every rank to
    // hear of a failure before the deadline.
    const std::vector<std::string> failed =
        probe(peers, listener.fd(), std::min(deadline, Clock::now() + timeout / 2));
    if (!failed.empty())
      failure = me + " (Gloo address " + address + ") cannot reach " + failed.front() +
                (failed.size() > 1 ? " (and " + std::to_string(failed.size() - 1) + " more)" : "") +
                "; every rank's Gloo address must be reachable from every node (GLOO_SOCKET_IFNAME picks the "
                "interface)";
  }

  if (!failure.empty()) board.set("failed", failure);
  board.add("done", 1);
  int64_t done = 0;
  const bool all_done =
      wait_until(deadline, listener.fd(), [&] { return (done = board.add("done", 0)) >= world_size; });
  if (failure.empty() && board.has({"failed"})) failure = me + " stops: " + board.get("failed");
  if (failure.empty() && !all_done)
    failure = me + ": only " + std::to_string(done) + " of " + std::to_string(world_size) +
              " ranks finished checking their peers' Gloo addresses within " + in_seconds(timeout);
  if (failure.empty()) return;
  // Rank 0 serves the store: leaving before the others have read the failure
  // would leave them with a lost store instead of the reason.
  board.add("read", 1);
  if (rank == 0) wait_until(deadline, listener.fd(), [&] { return board.add("read", 0) >= world_size; });
  throw std::runtime_error(failure);
}

}  // namespace minipretrain
