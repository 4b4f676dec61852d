// The server side of the rendezvous store (socket_store.h is the client): one
// listening socket on one address, served by a background thread (written
// when LibTorch's TCPStore could only listen on every interface).
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
  StoreServer(const std::string& address, int port);
  // Stops the thread and closes every connection.
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  int port() const { return port_; }

 private:
  struct Connection {
    Socket socket;
    std::string in, out;  // bytes received and not yet a whole request; answers not yet sent
  };

  void run();
  bool serve(Connection& connection, short events);
  StoreMessage answer(const StoreMessage& request);

  Socket listener_;
  Socket wake_read_, wake_write_;  // a pipe: a byte on it stops run()
  int port_ = 0;
  // Only the server thread touches the keys.
  std::map<std::string, std::vector<uint8_t>> keys_;
  std::thread thread_;
};

}  // namespace minipretrain
