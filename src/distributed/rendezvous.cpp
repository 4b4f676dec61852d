#include "minipretrain/distributed/rendezvous.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace minipretrain {
namespace {

// c10d's messages span several lines with a C++ backtrace; keep the first.
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace

c10::intrusive_ptr<c10d::Store> rendezvous(const std::string& master_addr, int port, int rank, int world_size,
                                           std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = rank == 0;
  options.numWorkers = world_size;
  options.waitWorkers = true;
  options.timeout = timeout;
  const std::string where = master_addr + ":" + std::to_string(port);
  try {
    return c10::make_intrusive<c10d::TCPStore>(master_addr, options);
  } catch (const std::exception& e) {
    const std::string reason = first_line(e.what());
    if (rank == 0)
      throw std::runtime_error("rank 0 cannot serve the rendezvous on " + where + " (is the port in use?): " + reason);
    throw std::runtime_error("rank " + std::to_string(rank) + " cannot reach the rendezvous at " + where + ": " + reason);
  }
}

}  // namespace minipretrain
