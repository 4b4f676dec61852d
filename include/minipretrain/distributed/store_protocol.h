// The wire format between SocketStore (client) and StoreServer. Both ends are
// ours, so it is the simplest that carries any bytes: a message is its length,
// a code, and a list of fields, each its length and its bytes; lengths are
// 4-byte big-endian. Integers travel as decimal text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minipretrain {

// What a request asks; the fields it carries follow each name.
enum class StoreOp : uint8_t {
  Set = 1,     // key, value
  TryGet,      // key: Found (value) or Missing at once; get() and wait() poll it
  Add,         // key, increment: Found (the new value)
  CompareSet,  // key, expected, desired: Found (the value now)
  Delete,      // key: Found ("1" if it was there, else "0")
  Check,       // keys...: Found ("1" if all are there, else "0")
  NumKeys,     // Found (the count)
};

// How an answer starts.
enum class StoreStatus : uint8_t { Found = 1, Missing, Failed /* one field: why */ };

struct StoreMessage {
  uint8_t code = 0;
  std::vector<std::string> fields;
};

// Larger lengths mean garbage (something else connected), and the connection
// is dropped rather than buffering it.
constexpr uint32_t kMaxStoreMessage = 64u << 20;

// The length prefix, then the body.
std::string encode(const StoreMessage& message);

// The body (the bytes after the length prefix). Throws std::runtime_error if
// the fields do not add up to it.
StoreMessage decode(const std::string& body);

// A length prefix at `bytes` (4 bytes).
uint32_t read_length(const char* bytes);

}  // namespace minipretrain
