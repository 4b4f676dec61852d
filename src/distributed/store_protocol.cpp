#include "minipretrain/distributed/store_protocol.h"

#include <stdexcept>

namespace minipretrain {
namespace {

void append_length(std::string& out, size_t length) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((length >> shift) & 0xff));
}

}  // namespace

std::string encode(const StoreMessage& message) {
  std::string body(1, static_cast<char>(message.code));
  for (const std::string& field : message.fields) {
    append_length(body, field.size());
    body += field;
  }
  std::string out;
  append_length(out, body.size());
  return out + body;
}

StoreMessage decode(const std::string& body) {
  if (body.empty()) throw std::runtime_error("empty store message");
  StoreMessage message;
  message.code = static_cast<uint8_t>(body[0]);
  for (size_t at = 1; at < body.size();) {
    if (body.size() - at < 4) throw std::runtime_error("truncated store message");
    const uint32_t length = read_length(body.data() + at);
    at += 4;
    if (body.size() - at < length) throw std::runtime_error("truncated store message");
    message.fields.push_back(body.substr(at, length));
    at += length;
  }
  return message;
}

uint32_t read_length(const char* bytes) {
  uint32_t length = 0;
  for (int i = 0; i < 4; ++i) length = (length << 8) | static_cast<unsigned char>(bytes[i]);
  return length;
}

}  // namespace minipretrain
