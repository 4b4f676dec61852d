// POSIX TCP socket helpers shared by the rendezvous store and the Gloo peer
// check, both of which need sockets bound to one chosen address.
#pragma once

#include <netdb.h>

#include <memory>
#include <string>
#include <utility>

namespace minipretrain {

// A descriptor, closed on every path.
class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Socket& operator=(Socket&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket();
  int fd() const { return fd_; }

 private:
  int fd_;
};

using AddrInfo = std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>;

// Numeric host and port only: nothing is looked up.
AddrInfo resolve_numeric(const std::string& host, const std::string& port);

// A non-blocking socket listening on the numeric `address` at `port` ("0":
// the kernel picks one, see port_of). Throws std::system_error (its what() is
// strerror's text, its code() tells a port in use from an address that is
// not this host's) or, for an address that is not numeric, std::runtime_error.
Socket listen_on(const std::string& address, const std::string& port);

// The port the socket `fd` is bound to.
std::string port_of(int fd);

}  // namespace minipretrain
