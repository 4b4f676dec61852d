#include "minipretrain/distributed/socket_store.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <utility>

#include "minipretrain/distributed/store_server.h"

namespace minipretrain {
namespace {

using Clock = std::chrono::steady_clock;

// How often get() and wait() ask again: short next to any timeout, and a few
// hundred small requests a second cost the server next to nothing.
constexpr std::chrono::milliseconds kPollInterval(5);
// How often a connection is tried again while nothing listens yet.
constexpr std::chrono::milliseconds kConnectRetry(100);

std::string in_seconds(std::chrono::milliseconds d) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g s", static_cast<double>(d.count()) / 1000);
  return text;
}

std::string text(const std::vector<uint8_t>& bytes) { return std::string(bytes.begin(), bytes.end()); }
std::vector<uint8_t> bytes(const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); }

StoreMessage make(StoreOp op, std::vector<std::string> fields) {
  return {static_cast<uint8_t>(op), std::move(fields)};
}

int milliseconds_until(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
}

// From here on, requests block, for at most `timeout` each (the server
// answers at once: waiting longer means it is gone).
void make_blocking(int fd, std::chrono::milliseconds timeout) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  const int on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));  // a request waits for its answer: no Nagle delay
  timeval limit{};
  limit.tv_sec = timeout.count() / 1000;
  limit.tv_usec = (timeout.count() % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
}

// One try at each address of `host`; no socket if none answered, and `error`
// says why the last one did not.
Socket try_connect(const std::string& host, const std::string& port, Clock::time_point deadline,
                   std::chrono::milliseconds timeout, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    error = "cannot resolve " + host + ": " + ::gai_strerror(rc);
    return Socket();
  }
  const AddrInfo owned(found, &::freeaddrinfo);
  for (const addrinfo* a = found; a; a = a->ai_next) {
    Socket s(::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (s.fd() < 0) {
      error = std::strerror(errno);
      continue;
    }
    // Non-blocking, so that a host that never answers costs no more than the timeout.
    if (::connect(s.fd(), a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        error = std::strerror(errno);
        continue;
      }
      pollfd fd{s.fd(), POLLOUT, 0};
      if (::poll(&fd, 1, milliseconds_until(deadline)) <= 0) {
        error = "no answer";
        continue;
      }
      int failure = 0;
      socklen_t length = sizeof(failure);
      ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &failure, &length);
      if (failure != 0) {
        error = std::strerror(failure);
        continue;
      }
    }
    make_blocking(s.fd(), timeout);
    return s;
  }
  return Socket();
}

}  // namespace

SocketStore::SocketStore(const std::string& host, int port, std::chrono::milliseconds timeout,
                         std::unique_ptr<StoreServer> server)
    : Store(timeout), server_(std::move(server)), host_(host), port_(port), where_(host + ":" + std::to_string(port)) {
  const Clock::time_point deadline = Clock::now() + timeout;
  std::string error;
  for (;;) {
    socket_ = try_connect(host, std::to_string(port), deadline, timeout, error);
    if (socket_.fd() >= 0) return;
    if (Clock::now() >= deadline) throw std::runtime_error(error);
    std::this_thread::sleep_for(std::min<Clock::duration>(kConnectRetry, deadline - Clock::now()));
  }
}

SocketStore::~SocketStore() = default;

c10::intrusive_ptr<c10d::Store> SocketStore::clone() {
  return c10::make_intrusive<SocketStore>(host_, port_, timeout_);
}

StoreMessage SocketStore::request(const StoreMessage& message) {
  const std::string out = encode(message);
  std::lock_guard<std::mutex> lock(mutex_);
  if (!broken_.empty()) throw std::runtime_error(broken_);
  const auto fail = [&](const std::string& why) {
    broken_ = "the rendezvous store at " + where_ + " " + why;
    throw std::runtime_error(broken_);
  };
  const auto failed_io = [&](ssize_t n) {
    if (n == 0) fail("closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK) fail("did not answer within " + in_seconds(timeout_));
    fail("failed: " + std::string(std::strerror(errno)));
  };
  for (size_t sent = 0; sent < out.size();) {
    const ssize_t n = ::send(socket_.fd(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) failed_io(n);
    sent += static_cast<size_t>(n);
  }
  const auto receive = [&](char* into, size_t size) {
    for (size_t got = 0; got < size;) {
      const ssize_t n = ::recv(socket_.fd(), into + got, size - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) failed_io(n);
      got += static_cast<size_t>(n);
    }
  };
  char head[4];
  receive(head, sizeof(head));
  const uint32_t length = read_length(head);
  if (length > kMaxStoreMessage) fail("sent a message of " + std::to_string(length) + " bytes");
  std::string body(length, '\0');
  receive(body.data(), body.size());
  StoreMessage answer = decode(body);
  if (answer.code == static_cast<uint8_t>(StoreStatus::Failed))
    throw std::runtime_error("the rendezvous store at " + where_ + " refused: " + answer.fields.at(0));
  return answer;
}

void SocketStore::poll_until(const std::vector<std::string>& keys, std::chrono::milliseconds timeout,
                             const std::function<bool()>& done) {
  const Clock::time_point start = Clock::now();
  while (!done()) {
    if (timeout == kNoTimeout || Clock::now() - start < timeout) {
      std::this_thread::sleep_for(kPollInterval);
      continue;
    }
    std::string missing;
    size_t count = 0;
    for (const std::string& key : keys) {
      if (check({key})) continue;
      if (++count <= 3) missing += (missing.empty() ? "'" : ", '") + key + "'";
    }
    if (count == 0) continue;  // set in the meantime
    if (count > 3) missing += " (and " + std::to_string(count - 3) + " more)";
    throw std::runtime_error("waited " + in_seconds(timeout) + " at the rendezvous store " + where_ + " for " +
                             (count == 1 ? "key " : "keys ") + missing +
                             ", which no process set (has a rank died? --dist-timeout sets the wait)");
  }
}

void SocketStore::set(const std::string& key, const std::vector<uint8_t>& value) {
  request(make(StoreOp::Set, {key, text(value)}));
}

std::vector<uint8_t> SocketStore::compareSet(const std::string& key, const std::vector<uint8_t>& expected,
                                             const std::vector<uint8_t>& desired) {
  return bytes(request(make(StoreOp::CompareSet, {key, text(expected), text(desired)})).fields.at(0));
}

std::vector<uint8_t> SocketStore::get(const std::string& key) {
  std::vector<uint8_t> value;
  poll_until({key}, timeout_, [&] {
    const StoreMessage answer = request(make(StoreOp::TryGet, {key}));
    if (answer.code == static_cast<uint8_t>(StoreStatus::Missing)) return false;
    value = bytes(answer.fields.at(0));
    return true;
  });
  return value;
}

int64_t SocketStore::add(const std::string& key, int64_t value) {
  return std::stoll(request(make(StoreOp::Add, {key, std::to_string(value)})).fields.at(0));
}

bool SocketStore::deleteKey(const std::string& key) {
  return request(make(StoreOp::Delete, {key})).fields.at(0) == "1";
}

bool SocketStore::check(const std::vector<std::string>& keys) {
  return request(make(StoreOp::Check, keys)).fields.at(0) == "1";
}

int64_t SocketStore::getNumKeys() { return std::stoll(request(make(StoreOp::NumKeys, {})).fields.at(0)); }

void SocketStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void SocketStore::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  poll_until(keys, timeout, [&] { return check(keys); });
}

}  // namespace minipretrain
