// The rendezvous store every process of a job shares: a c10d::Store (what
// ProcessGroupGloo and NCCL build on) over one TCP connection to the
// StoreServer that rank 0 runs (store_server.h). The server answers every
// request at once; get() and wait() block by asking again every few ms.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/version.h>

#include "minipretrain/distributed/sockets.h"
#include "minipretrain/distributed/store_protocol.h"

namespace minipretrain {

class StoreServer;

class SocketStore : public c10d::Store {
 public:
  // Connects to `host` (a name or a numeric address) at `port`, trying again
  // until `timeout` passes (the server may start later than this process);
  // `timeout` is also how long get() and wait() block. `server`, where this
  // process runs it, lives as long as the store. Throws std::runtime_error
  // with the last reason a connection failed.
  SocketStore(const std::string& host, int port, std::chrono::milliseconds timeout,
              std::unique_ptr<StoreServer> server = nullptr);
  ~SocketStore() override;

  void set(const std::string& key, const std::vector<uint8_t>& value) override;
  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>& expected,
                                  const std::vector<uint8_t>& desired) override;
  std::vector<uint8_t> get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t value) override;
  bool deleteKey(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t getNumKeys() override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;
  // Another connection to the same server, for a caller's own thread.
  c10::intrusive_ptr<c10d::Store> clone() override;

 private:
  // One request and its answer; throws std::runtime_error for a lost
  // connection or a request the server refused.
  StoreMessage request(const StoreMessage& message);
  // Calls `done` until it returns true; after `timeout` (unless kNoTimeout),
  // throws naming those of `keys` still missing.
  void poll_until(const std::vector<std::string>& keys, std::chrono::milliseconds timeout,
                  const std::function<bool()>& done);

  std::unique_ptr<StoreServer> server_;  // first in, last out: it outlives the connection
  std::string host_;
  int port_;
  std::string where_;                    // host:port, for errors
  std::mutex mutex_;                     // one request at a time on the connection
  Socket socket_;
  std::string broken_;  // why the connection is unusable, once a request failed halfway
};

}  // namespace minipretrain
