#include "minipretrain/distributed/sockets.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

namespace minipretrain {

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

AddrInfo resolve_numeric(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) throw std::runtime_error(std::string("getaddrinfo: ") + ::gai_strerror(rc));
  return AddrInfo(found, &::freeaddrinfo);
}

Socket listen_on(const std::string& address, const std::string& port) {
  const AddrInfo ai = resolve_numeric(address, port);
  Socket s(::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  // A fixed port is free again at once after the last job, despite its
  // connections in TIME_WAIT; a socket still listening on it keeps it taken.
  const int on = 1;
  if (s.fd() < 0 || ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
      ::bind(s.fd(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(s.fd(), SOMAXCONN) != 0)
    throw std::system_error(errno, std::generic_category());
  return s;
}

std::string port_of(int fd) {
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  char service[NI_MAXSERV];
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0 ||
      ::getnameinfo(reinterpret_cast<sockaddr*>(&bound), length, nullptr, 0, service, sizeof(service),
                    NI_NUMERICSERV) != 0)
    throw std::runtime_error("cannot read the port it listens on");
  return service;
}

}  // namespace minipretrain
