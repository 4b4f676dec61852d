// The rendezvous every process of a job meets at: a c10d::TCPStore served by
// rank 0 at MASTER_ADDR:MASTER_PORT. All process groups are built over it.
#pragma once

#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

namespace minipretrain {

// Blocks until all `world_size` processes have connected or `timeout` passes.
// Throws std::runtime_error with a one-line reason (port in use, no server, a
// process that never came) that names the address, the port and the wait.
c10::intrusive_ptr<c10d::Store> rendezvous(const std::string& master_addr, int port, int rank, int world_size,
                                           std::chrono::milliseconds timeout);

}  // namespace minipretrain
