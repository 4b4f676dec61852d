#include "minipretrain/distributed/network.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace minipretrain {
namespace {

// The numeric form getaddrinfo reads back, so Gloo binds exactly this address;
// an IPv6 link-local address keeps its %interface scope.
std::string numeric_host(const sockaddr* addr, socklen_t length) {
  char host[NI_MAXHOST];
  const int rc = ::getnameinfo(addr, length, host, sizeof(host), nullptr, 0, NI_NUMERICHOST);
  if (rc != 0) throw std::runtime_error(std::string("getnameinfo: ") + ::gai_strerror(rc));
  return host;
}

socklen_t length_of(const sockaddr* addr) {
  return addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

bool is_ip(const sockaddr* addr) { return addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6); }

using Interfaces = std::unique_ptr<ifaddrs, decltype(&::freeifaddrs)>;

Interfaces list_interfaces() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) throw std::runtime_error(std::string("getifaddrs: ") + std::strerror(errno));
  return Interfaces(list, &::freeifaddrs);
}

// Gloo's own rule for an interface: its first IPv4 or IPv6 address.
std::string address_of_interface(const std::string& name) {
  const Interfaces list = list_interfaces();
  for (const ifaddrs* i = list.get(); i; i = i->ifa_next)
    if (name == i->ifa_name && is_ip(i->ifa_addr)) return numeric_host(i->ifa_addr, length_of(i->ifa_addr));
  throw std::runtime_error("GLOO_SOCKET_IFNAME=" + name + ": this host has no network interface of that name "
                           "with an IPv4 or IPv6 address");
}

}  // namespace

GlooAddress choose_gloo_address(const std::string& master_addr) {
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname && *ifname)
    return {address_of_interface(ifname), ifname, "the first address of GLOO_SOCKET_IFNAME", true};
  const std::string address = local_address_towards(master_addr, "MASTER_ADDR");
  return {address, interface_of(address),
          "the local address that routes to MASTER_ADDR " + master_addr + " (GLOO_SOCKET_IFNAME overrides it)", false};
}

// connect() on a UDP socket only picks the route, and with it the source
// address the kernel would use; no packet leaves the host, so any port does.
std::string local_address_towards(const std::string& host, const std::string& what) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), "9", &hints, &found);
  if (rc != 0) throw std::runtime_error("cannot resolve " + what + " " + host + ": " + ::gai_strerror(rc));
  const std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, &::freeaddrinfo);
  std::string error = "no address";
  for (const addrinfo* a = found; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    sockaddr_storage local{};
    socklen_t length = sizeof(local);
    const bool routed = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
                        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0;
    if (!routed) error = std::strerror(errno);
    ::close(fd);
    if (routed) return numeric_host(reinterpret_cast<const sockaddr*>(&local), length);
  }
  throw std::runtime_error("no route from this host to " + what + " " + host + ": " + error +
                           " (GLOO_SOCKET_IFNAME picks Gloo's interface by hand)");
}

std::vector<std::string> addresses_of(const std::string& host, const std::string& what) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0) throw std::runtime_error("cannot resolve " + what + " " + host + ": " + ::gai_strerror(rc));
  const std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, &::freeaddrinfo);
  std::vector<std::string> addresses;
  for (const addrinfo* a = found; a; a = a->ai_next) addresses.push_back(numeric_host(a->ai_addr, a->ai_addrlen));
  return addresses;
}

bool is_loopback(const std::string& address) {
  in_addr v4{};
  if (::inet_pton(AF_INET, address.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return ::inet_pton(AF_INET6, address.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

std::string interface_of(const std::string& address) {
  const Interfaces list = list_interfaces();
  for (const ifaddrs* i = list.get(); i; i = i->ifa_next)
    if (is_ip(i->ifa_addr) && numeric_host(i->ifa_addr, length_of(i->ifa_addr)) == address) return i->ifa_name;
  return "";
}

}  // namespace minipretrain
