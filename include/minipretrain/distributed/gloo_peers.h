// What the ranks settle among themselves, through the rendezvous store, before
// Gloo connects its full mesh: which addresses they listen on, and that every
// rank reaches every other's. Gloo alone would wait five times the timeout for
// a peer that cannot reach it, and its error would not say which one.
#pragma once

#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "minipretrain/distributed/network.h"

namespace minipretrain {

// Every rank calls this with its chosen address. A rank whose choice is a
// loopback address while some peer's is not moves to its local address that
// routes to that peer: MASTER_ADDR named its own node, whose host name Debian
// maps to 127.0.1.1, and on the loopback no other node could reach it. A job
// on one host keeps the loopback; GLOO_SOCKET_IFNAME's choice never moves.
// `store_where` (host:port) names the rendezvous in errors, which are
// std::runtime_error with a one-line reason.
GlooAddress settle_gloo_address(const c10::intrusive_ptr<c10d::Store>& store, const std::string& store_where,
                                int rank, int world_size, const GlooAddress& chosen,
                                std::chrono::milliseconds timeout);

// Every rank opens a TCP connection to every other rank's Gloo address (on a
// listener of this call's own, closed when it returns). The first failure goes
// through the store to every rank, and each throws within `timeout`, with one
// line naming the address that failed.
void check_peers_reachable(const c10::intrusive_ptr<c10d::Store>& store, const std::string& store_where, int rank,
                           int world_size, const std::string& address, std::chrono::milliseconds timeout);

}  // namespace minipretrain
