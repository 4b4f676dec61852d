#include "minipretrain/train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace minipretrain {
namespace {

// Protobuf wire format: a field's key is (number << 3 | wire type).
constexpr char kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

char key(int field, char wire_type) { return static_cast<char>(field << 3 | wire_type); }

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

template <typename T>
void put_little_endian(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // x86-64 and aarch64 Linux are little-endian
  out.append(bytes, sizeof(T));
}

void put_bytes(std::string& out, int field, const std::string& bytes) {
  out += key(field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(const char* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ static_cast<unsigned char>(data[i])) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t first_step) {
  std::filesystem::create_directories(dir);
  char host[256] = "localhost";
  ::gethostname(host, sizeof(host) - 1);
  path_ = (std::filesystem::path(dir) / ("events.out.tfevents." + std::to_string(static_cast<int64_t>(now_seconds())) +
                                         "." + host + "." + std::to_string(::getpid())))
              .string();
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw std::runtime_error("cannot write " + path_);
  std::string version;
  put_bytes(version, 3, "brain.Event:2");  // Event.file_version
  write_event(0, version);
  if (first_step > 1) {
    std::string session_log;
    session_log += key(1, kVarint);  // SessionLog.status = START
    put_varint(session_log, 1);
    std::string payload;
    put_bytes(payload, 7, session_log);  // Event.session_log
    write_event(first_step, payload);
  }
  flush();
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  std::string summary_value;
  put_bytes(summary_value, 1, tag);  // Summary.Value.tag
  summary_value += key(2, kFixed32);  // Summary.Value.simple_value
  put_little_endian(summary_value, static_cast<float>(value));
  std::string summary;
  put_bytes(summary, 1, summary_value);  // Summary.value
  std::string payload;
  put_bytes(payload, 5, summary);  // Event.summary
  write_event(step, payload);
}

// Event: wall_time = 1 (double), step = 2 (int64), then the payload's fields.
void TensorBoardWriter::write_event(int64_t step, const std::string& payload) {
  std::string event;
  event += key(1, kFixed64);
  put_little_endian(event, now_seconds());
  event += key(2, kVarint);
  put_varint(event, static_cast<uint64_t>(step));
  event += payload;
  std::string header;
  put_little_endian(header, static_cast<uint64_t>(event.size()));
  std::string record = header;
  put_little_endian(record, masked(crc32c(header.data(), header.size())));
  record += event;
  put_little_endian(record, masked(crc32c(event.data(), event.size())));
  out_.write(record.data(), static_cast<std::streamsize>(record.size()));
}

void TensorBoardWriter::flush() {
  out_.flush();
  if (!out_) throw std::runtime_error("cannot write " + path_ + " (disk full?)");
}

}  // namespace minipretrain
