#include "minipretrain/distributed/rendezvous.h"

#include <thread>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace minipretrain {
namespace {

// c10d's messages span several lines with a C++ backtrace; keep the first.
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// c10d 1.13's own wait for the workers (TCPStoreOptions::waitWorkers) gives up
// silently at the timeout and lets rank 0 go on alone; counting the processes
// here makes a node that never came an error, on every rank that came.
void wait_for_everyone(c10d::Store& store, int rank, int world_size, const std::string& where,
                       std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto count = [&](int64_t joining) {
    try {
      return store.add("rendezvous/joined", joining);
    } catch (const std::exception& e) {
      // Rank 0 serves the store: it has exited, most likely at its own timeout.
      throw std::runtime_error("rank " + std::to_string(rank) + " lost the rendezvous at " + where +
                               " while waiting for the other processes: " + first_line(e.what()));
    }
  };
  for (int64_t joined = count(1); joined < world_size; joined = count(0)) {
    if (std::chrono::steady_clock::now() >= deadline)
      throw std::runtime_error("only " + std::to_string(joined) + " of " + std::to_string(world_size) +
                               " processes joined the rendezvous at " + where + " within " +
                               std::to_string(timeout.count() / 1000) + " s (rank " + std::to_string(rank) +
                               " waited; are all nodes started, with the same MASTER_ADDR and MASTER_PORT?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

c10::intrusive_ptr<c10d::Store> rendezvous(const std::string& master_addr, int port, int rank, int world_size,
                                           std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = rank == 0;
  options.numWorkers = world_size;
  options.waitWorkers = false;  // wait_for_everyone does it, and says so when someone is missing
  options.timeout = timeout;
  const std::string where = master_addr + ":" + std::to_string(port);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(master_addr, options);
  } catch (const std::exception& e) {
    const std::string reason = first_line(e.what());
    if (rank == 0)
      throw std::runtime_error("rank 0 cannot serve the rendezvous on " + where + " (is the port in use?): " + reason);
    throw std::runtime_error("rank " + std::to_string(rank) + " cannot reach the rendezvous at " + where + ": " + reason);
  }
  wait_for_everyone(*store, rank, world_size, where, timeout);
  return store;
}

}  // namespace minipretrain
