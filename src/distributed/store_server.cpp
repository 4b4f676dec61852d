#include "minipretrain/distributed/store_server.h"

#include <chrono>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace minipretrain {
namespace {

StoreMessage found(std::string value) { return {static_cast<uint8_t>(StoreStatus::Found), {std::move(value)}}; }
StoreMessage failed(std::string why) { return {static_cast<uint8_t>(StoreStatus::Failed), {std::move(why)}}; }

std::string text(const std::vector<uint8_t>& bytes) { return std::string(bytes.begin(), bytes.end()); }
std::vector<uint8_t> bytes(const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); }

// std::stoll accepts a prefix ("12abc"); a counter must be all digits.
bool parse_integer(const std::string& text, int64_t& value) {
  size_t used = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used == text.size();
}

}  // namespace

StoreServer::StoreServer(const std::string& address, int port, size_t max_connections)
    : listener_(listen_on(address, std::to_string(port))),
      port_(std::stoi(port_of(listener_.fd()))),
      max_connections_(max_connections) {
  int pipe[2];
  if (::pipe2(pipe, O_CLOEXEC | O_NONBLOCK) != 0) throw std::system_error(errno, std::generic_category());
  wake_read_ = Socket(pipe[0]);
  wake_write_ = Socket(pipe[1]);
  // Room for the job's ranks under the descriptor limit, with 256 left for
  // rank 0's own files.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY)
    max_connections_ = std::min<size_t>(max_connections_, files.rlim_cur > 512 ? files.rlim_cur - 256 : files.rlim_cur / 2);
  thread_ = std::thread([this] { run(); });
}

StoreServer::~StoreServer() {
  // The pipe is empty, so the byte fits at once.
  const char stop = 0;
  while (::write(wake_write_.fd(), &stop, 1) < 0 && errno == EINTR) {
  }
  thread_.join();
}

void StoreServer::run() {
  std::vector<Connection> connections;
  std::vector<pollfd> fds;
  for (;;) {
    fds.assign({{wake_read_.fd(), POLLIN, 0}, {listener_.fd(), POLLIN, 0}});
    size_t buffered = 0;
    for (const Connection& c : connections) buffered += c.in.size() + c.out.size();
    // A client that does not read its answers is not read from either, nor
    // is anyone while the buffers are full.
    for (const Connection& c : connections) {
      const bool read = buffered < kMaxBuffered && c.out.size() < kMaxBufferedAnswers;
      fds.push_back({c.socket.fd(), static_cast<short>((read ? POLLIN : 0) | (c.out.empty() ? 0 : POLLOUT)), 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;  // only for bad arguments, which we never pass
    }
    if (fds[0].revents != 0) return;
    // Served before accepting, while fds[i + 2] still lines up with connections[i];
    // from the back, so that erasing keeps it so.
    for (size_t i = connections.size(); i-- > 0;)
      // A request held back while the buffers were full is answered now.
      if ((fds[i + 2].revents != 0 || !connections[i].in.empty()) &&
          !serve(connections[i], fds[i + 2].revents, buffered)) {
        buffered -= connections[i].in.size() + connections[i].out.size();
        connections.erase(connections.begin() + static_cast<std::ptrdiff_t>(i));
      }
    if (fds[1].revents & POLLIN)
      for (int fd; (fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
        // Each request waits for its answer: Nagle's delay would add up.
        Socket accepted(fd);
        if (connections.size() >= max_connections_) continue;  // closed: the job's ranks hold far fewer
        const int on = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
        connections.push_back({std::move(accepted), {}, {}});
      }
    // Out of file descriptors, the listener stays readable: poll would return
    // at once forever. Give the clients that hold descriptors time to finish.
    if ((fds[1].revents & POLLIN) && (errno == EMFILE || errno == ENFILE))
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Reads what has come, answers every whole request, sends what it can.
// False when the connection is to be dropped: closed, broken, or garbage.
bool StoreServer::serve(Connection& c, short events, size_t& buffered) {
  if (events & (POLLIN | POLLHUP | POLLERR)) {
    char buffer[65536];
    // At most one whole request waits here; the rest stays in the kernel.
    while (c.in.size() < 4 + kMaxStoreMessage && buffered < kMaxBuffered) {
      const ssize_t n = ::recv(c.socket.fd(), buffer, sizeof(buffer), 0);
      if (n == 0) return false;
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        return false;
      }
      c.in.append(buffer, static_cast<size_t>(n));
      buffered += static_cast<size_t>(n);
    }
  }
  while (c.in.size() >= 4 && c.out.size() < kMaxBufferedAnswers && buffered < kMaxBuffered) {
    const uint32_t length = read_length(c.in.data());
    if (length > kMaxStoreMessage) return false;
    if (c.in.size() - 4 < length) break;
    try {
      const std::string reply = encode(answer(decode(c.in.substr(4, length))));
      c.out += reply;
      buffered += reply.size();
    } catch (const std::exception&) {  // garbage, or a request that cannot be met (bad_alloc)
      return false;
    }
    c.in.erase(0, 4 + static_cast<size_t>(length));
    buffered -= 4 + static_cast<size_t>(length);
  }
  while (!c.out.empty()) {
    const ssize_t n = ::send(c.socket.fd(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      return false;
    }
    c.out.erase(0, static_cast<size_t>(n));
    buffered -= static_cast<size_t>(n);
  }
  return true;
}

// Sets `key`, unless that would take the keys past kMaxStoredBytes.
bool StoreServer::store(const std::string& key, const std::string& value) {
  const auto it = keys_.find(key);
  const size_t old = it == keys_.end() ? 0 : key.size() + it->second.size();
  if (stored_bytes_ - old + key.size() + value.size() > kMaxStoredBytes) return false;
  stored_bytes_ += key.size() + value.size() - old;
  keys_[key] = bytes(value);
  return true;
}

// Semantics follow c10d::TCPStore's, which ProcessGroupGloo and NCCL expect.
StoreMessage StoreServer::answer(const StoreMessage& request) {
  const auto& f = request.fields;
  const auto op = static_cast<StoreOp>(request.code);
  const auto needs = [&](size_t n) {
    if (f.size() != n) throw std::runtime_error("malformed store request");
  };
  switch (op) {
    case StoreOp::Set:
      needs(2);
      if (!store(f[0], f[1])) return failed("the store is full");
      return found("");
    case StoreOp::TryGet: {
      needs(1);
      const auto it = keys_.find(f[0]);
      if (it == keys_.end()) return {static_cast<uint8_t>(StoreStatus::Missing), {}};
      return found(text(it->second));
    }
    case StoreOp::Add: {
      needs(2);
      int64_t increment = 0, value = 0;
      if (!parse_integer(f[1], increment)) return failed("add(): '" + f[1] + "' is not an integer");
      const auto it = keys_.find(f[0]);
      if (it != keys_.end() && !parse_integer(text(it->second), value))
        return failed("add(): key '" + f[0] + "' holds a value that is not an integer");
      if (__builtin_add_overflow(value, increment, &value)) return failed("add(): the sum overflows");
      const std::string sum = std::to_string(value);
      if (!store(f[0], sum)) return failed("the store is full");
      return found(sum);
    }
    case StoreOp::CompareSet: {
      needs(3);
      const auto it = keys_.find(f[0]);
      // A missing key counts as holding the empty value.
      if (it == keys_.end() || text(it->second) == f[1]) {
        if (it == keys_.end() && !f[1].empty()) return found(f[1]);
        if (!store(f[0], f[2])) return failed("the store is full");
        return found(f[2]);
      }
      return found(text(it->second));
    }
    case StoreOp::Delete: {
      needs(1);
      const auto it = keys_.find(f[0]);
      if (it == keys_.end()) return found("0");
      stored_bytes_ -= it->first.size() + it->second.size();
      keys_.erase(it);
      return found("1");
    }
    case StoreOp::Check:
      for (const std::string& key : f)
        if (!keys_.count(key)) return found("0");
      return found("1");
    case StoreOp::NumKeys:
      needs(0);
      return found(std::to_string(keys_.size()));
  }
  return failed("unknown store request " + std::to_string(request.code));
}

}  // namespace minipretrain
