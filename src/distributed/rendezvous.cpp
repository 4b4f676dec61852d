#include "minipretrain/distributed/rendezvous.h"

#include <cstdio>
#include <thread>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

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

// Every process counts itself in, then waits for the count to reach the
// world size. (LibTorch 1.13's TCPStore gives up waiting for workers without
// a word, and the first process group then fails with "Socket Timeout".)
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
                                           std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = rank == 0;
  options.numWorkers = world_size;
  options.waitWorkers = false;  // wait_for_everyone() does, and says who is missing
  options.timeout = timeout;
  const std::string where = master_addr + ":" + std::to_string(port);
  const auto start = std::chrono::steady_clock::now();
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(master_addr, options);
  } catch (const std::exception& e) {
    const std::string reason = first_line(e.what());
    if (rank == 0)
      throw std::runtime_error("rank 0 cannot serve the rendezvous on " + where + " (is the port in use?): " + reason);
    throw std::runtime_error("rank " + std::to_string(rank) + " cannot reach the rendezvous at " + where +
                             " (tried for " + seconds_since(start) + "; is rank 0 running there?): " + reason);
  }
  wait_for_everyone(*store, rank, world_size, timeout, where);
  return store;
}

}  // namespace minipretrain
