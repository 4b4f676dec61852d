// The server side of the rendezvous store (socket_store.h is the client): one
// listening socket on one address, served by a background thread. Written
// when LibTorch's TCPStore could only listen on every interface; kept for the
// bounds below, which TCPStore lacks (docs/parallelism.md says why).
//
// Anyone who reaches the port can connect; nothing tells a rank of the job
// from another client. What clients can cost rank 0 is bounded instead: all
// connections together buffer at most kMaxBuffered bytes of requests and
// answers, give or take one message (past it the server reads nothing until
// answers drain), one connection at most one request and about
// kMaxBufferedAnswers of answers; the keys hold at most kMaxStoredBytes; at
// most kMaxConnections are open, fewer under a low descriptor limit so that
// rank 0 can still open files (later ones are closed at once); garbage drops
// the connection. A client that holds the buffers starves the job, which then
// fails at --dist-timeout naming the store.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "minipretrain/distributed/sockets.h"
#include "minipretrain/distributed/store_protocol.h"

namespace minipretrain {

class StoreServer {
 public:
  // Listens on the numeric `address` ("0.0.0.0" or "::" for every interface)
  // at `port` (0: the kernel picks one). Throws as listen_on() does.
  // `max_connections` (lowered further under a low descriptor limit) is for
  // tests, which show the cap without opening thousands of sockets.
  StoreServer(const std::string& address, int port, size_t max_connections = kMaxConnections);
  // Stops the thread and closes every connection.
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  int port() const { return port_; }

  static constexpr size_t kMaxBuffered = size_t{256} << 20;
  static constexpr size_t kMaxBufferedAnswers = size_t{1} << 20;
  static constexpr size_t kMaxStoredBytes = size_t{1} << 30;
  static constexpr size_t kMaxConnections = 16384;

 private:
  struct Connection {
    Socket socket;
    std::string in, out;  // bytes received and not yet a whole request; answers not yet sent
  };

  void run();
  // `buffered`: the bytes all connections hold, kept up to date.
  bool serve(Connection& connection, short events, size_t& buffered);
  StoreMessage answer(const StoreMessage& request);
  bool store(const std::string& key, const std::string& value);

  Socket listener_;
  Socket wake_read_, wake_write_;  // a pipe: a byte on it stops run()
  int port_ = 0;
  // Only the server thread touches the keys.
  std::map<std::string, std::vector<uint8_t>> keys_;
  size_t stored_bytes_ = 0;  // of keys_'s keys and values
  size_t max_connections_;  // see the constructor
  std::thread thread_;
};

}  // namespace minipretrain
