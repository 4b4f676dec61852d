#include "minipretrain/distributed/rendezvous.h"

#include <cstdio>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "minipretrain/distributed/network.h"
#include "minipretrain/distributed/socket_store.h"
#include "minipretrain/distributed/store_server.h"

namespace minipretrain {
namespace {

// c10d's messages span several lines with a C++ backtrace; keep the first.
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string seconds_since(std::chrono::steady_clock::time_point start) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.0f s",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return text;
}

std::string endpoint(const std::string& address, int port) {
  const std::string host = address.find(':') == std::string::npos ? address : "[" + address + "]";
  return host + ":" + std::to_string(port);
}

// Where rank 0 serves the store, and the line it logs about it.
struct Serving {
  std::string bind;     // numeric; "0.0.0.0" or "::" for every interface
  std::string connect;  // where rank 0 itself connects
  std::string log;
};

// MASTER_ADDR's own address, so that the store is open there and nowhere
// else. The exception is a loopback MASTER_ADDR in a job that spans nodes: it
// named this node (Debian maps the host name to 127.0.1.1), so this node's
// ranks come over the loopback and the other nodes' over the network, and no
// one address serves both.
Serving choose_serving(const std::string& master_addr, int port, bool one_host) {
  const std::vector<std::string> addresses = addresses_of(master_addr, "MASTER_ADDR");
  std::string address = addresses.front();  // none of them this host's: binding it fails, and says so
  for (const std::string& a : addresses)
    if (is_loopback(a) || !interface_of(a).empty()) {
      address = a;
      break;
    }
  if (!is_loopback(address) || one_host) return {address, address, "Rendezvous listens on " + endpoint(address, port)};
  const std::string every = address.find(':') == std::string::npos ? "0.0.0.0" : "::";
  return {every, address,
          "Rendezvous listens on every interface, " + endpoint(every, port) + ": MASTER_ADDR " + master_addr +
              (master_addr == address ? "" : " (" + address + ")") +
              " is the loopback here, which the ranks of other nodes cannot reach (WORLD_SIZE > LOCAL_WORLD_SIZE)"};
}

// Rank 0's server, on the address choose_serving() picks; `connect` gets the
// address rank 0 reaches it at.
std::unique_ptr<StoreServer> serve(const std::string& master_addr, int port, bool one_host, std::string& connect) {
  const std::string where = master_addr + ":" + std::to_string(port);
  Serving serving;
  try {
    serving = choose_serving(master_addr, port, one_host);
    auto server = std::make_unique<StoreServer>(serving.bind, port);
    spdlog::info(serving.log);
    connect = serving.connect;
    return server;
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::address_not_available)
      throw std::runtime_error("rank 0 cannot serve the rendezvous on " + where + ": " + serving.bind +
                               " is not an address of this host (start rank 0 on MASTER_ADDR's host)");
    throw std::runtime_error("rank 0 cannot serve the rendezvous on " + where +
                             (e.code() == std::errc::address_in_use ? " (is the port in use?): " : ": ") + e.what());
  } catch (const std::exception& e) {
    throw std::runtime_error("rank 0 cannot serve the rendezvous on " + where + ": " + e.what());
  }
}

// Every process counts itself in, then waits for the count to reach the
// world size, so that a missing process is named here, as missing, and not
// later by the first process group as a timeout.
void wait_for_everyone(c10d::Store& store, int rank, int world_size, std::chrono::milliseconds timeout,
                       const std::string& where) {
  const auto start = std::chrono::steady_clock::now();
  const std::string key = "minipretrain/joined";
  int64_t joined = 0;
  try {
    joined = store.add(key, 1);
    while (joined < world_size && std::chrono::steady_clock::now() - start < timeout) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      joined = store.add(key, 0);
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(rank) + " lost the rendezvous at " + where + " after " +
                             seconds_since(start) + ": " + first_line(e.what()));
  }
  if (joined < world_size)
    throw std::runtime_error("rank " + std::to_string(rank) + " waited " + seconds_since(start) +
                             " at the rendezvous " + where + " for all " + std::to_string(world_size) +
                             " processes, and only " + std::to_string(joined) +
                             " arrived: start every rank with this address and port (--dist-timeout sets the wait)");
}

}  // namespace

c10::intrusive_ptr<c10d::Store> rendezvous(const std::string& master_addr, int port, int rank, int world_size,
                                           bool one_host, std::chrono::milliseconds timeout) {
  const std::string where = master_addr + ":" + std::to_string(port);
  std::string connect = master_addr;
  std::unique_ptr<StoreServer> server = rank == 0 ? serve(master_addr, port, one_host, connect) : nullptr;
  const auto start = std::chrono::steady_clock::now();
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<SocketStore>(connect, port, timeout, std::move(server));
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(rank) + " cannot reach the rendezvous at " + where +
                             " (tried for " + seconds_since(start) + "; is rank 0 running there?): " +
                             first_line(e.what()));
  }
  wait_for_everyone(*store, rank, world_size, timeout, where);
  return store;
}

}  // namespace minipretrain
