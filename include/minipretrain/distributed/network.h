// Which local address Gloo listens on and connects from. Gloo's default, the
// address this host's name resolves to, is often the loopback (Debian maps
// the host name to 127.0.1.1), where no other node can reach it. The address
// that routes to MASTER_ADDR is one the other nodes reach: they meet there.
#pragma once

#include <string>
#include <vector>

namespace minipretrain {

struct GlooAddress {
  std::string address;        // numeric IPv4 or IPv6 address, for Gloo to bind
  std::string interface;      // the network interface holding it; empty if none is found
  std::string reason;         // why this address, for the log
  bool by_interface = false;  // GLOO_SOCKET_IFNAME chose it, and nothing may move it
};

// The first address of the interface GLOO_SOCKET_IFNAME names (as Gloo reads
// it) when that is set; otherwise the local address of the route to
// master_addr. Throws std::runtime_error naming the interface or the host.
GlooAddress choose_gloo_address(const std::string& master_addr);

// The local address of the route to `host` (a name or a numeric address),
// found with a UDP connect(), which sends nothing. `what` names the host in
// errors ("MASTER_ADDR").
std::string local_address_towards(const std::string& host, const std::string& what);

// The numeric addresses `host` (a name or a numeric address) resolves to, in
// the resolver's order. Throws std::runtime_error naming `what` and `host`.
std::vector<std::string> addresses_of(const std::string& host, const std::string& what);

// 127.0.0.0/8 or ::1: an address no other host reaches.
bool is_loopback(const std::string& address);

// The network interface that holds `address`; empty if none does.
std::string interface_of(const std::string& address);

}  // namespace minipretrain
