// libFuzzer harness: bytes a client sends the rendezvous server. Each input
// goes over a fresh loopback connection to one server; afterwards a client of
// the job must still get its answer, or the run is a finding (a hang shows as
// libFuzzer's timeout, a crash or sanitizer report in the server thread as
// itself).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "minipretrain/distributed/store_protocol.h"
#include "minipretrain/distributed/store_server.h"

namespace {

// Each connection from the next of 127.0.0.2-254: the server closes most
// fuzzed connections first, and each close holds its pair of ports in
// TIME_WAIT for a minute; one source address would run out of ports.
int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  static uint32_t next = 0;
  sockaddr_in source{};
  source.sin_family = AF_INET;
  source.sin_addr.s_addr = htonl((127u << 24) | (2 + next++ % 253));
  ::bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof(source));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("fuzz store_server: connect");
    std::abort();
  }
  return fd;
}

// Sends `bytes` and reads one whole answer within a second; false otherwise.
bool ask(int fd, const std::string& bytes) {
  if (::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) return false;
  std::string in;
  while (in.size() < 4 || in.size() < 4 + minipretrain::read_length(in.data())) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) != 1) return false;
    char buffer[4096];
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) return false;
    in.append(buffer, static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minipretrain;
  static StoreServer server("127.0.0.1", 0);
  static const int job = connect_to(server.port());
  const int fd = connect_to(server.port());
  ::send(fd, data, size, MSG_NOSIGNAL);
  // Read what comes back for a moment, so that answers are sent too.
  pollfd p{fd, POLLIN, 0};
  char buffer[4096];
  while (::poll(&p, 1, 5) == 1 && ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT) > 0) {
  }
  // Reset, not closed: a closed socket waits a minute in TIME_WAIT, and at
  // hundreds of inputs a second the loopback runs out of ports.
  const linger reset{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  ::close(fd);
  if (!ask(job, encode({static_cast<uint8_t>(StoreOp::NumKeys), {}}))) std::abort();
  return 0;
}
