// The rendezvous every process of a job meets at: a SocketStore served by
// rank 0 at MASTER_ADDR:MASTER_PORT. All process groups are built over it.
#pragma once

#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

namespace minipretrain {

// Rank 0 serves the store at the address MASTER_ADDR resolves to on its node,
// and logs it; only a loopback MASTER_ADDR in a job that is not `one_host`
// (WORLD_SIZE > LOCAL_WORLD_SIZE) is served on every interface, since it
// names rank 0's node, which the other nodes reach by another address.
// Blocks until all `world_size` processes have connected or `timeout` passes.
// Throws std::runtime_error with a one-line reason (port in use, no server, a
// process that never came) that names the address, the port and the wait.
c10::intrusive_ptr<c10d::Store> rendezvous(const std::string& master_addr, int port, int rank, int world_size,
                                           bool one_host, std::chrono::milliseconds timeout);

}  // namespace minipretrain
