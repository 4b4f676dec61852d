// TensorBoard event files, written without TensorFlow: DIR/events.out.tfevents.
// <seconds>.<host>.<pid> holds TFRecord records (a little-endian uint64
// length, its masked CRC-32C, the bytes, their masked CRC-32C), each an
// `Event` protobuf encoded by hand: the first carries the file version, the
// others one scalar summary each (tag, value, step, wall time). A resumed run
// opens a new file that starts with a SessionLog START at its first step, so
// TensorBoard drops what the interrupted run wrote from that step on (and
// keeps the checkpoint's own step).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace minipretrain {

class TensorBoardWriter {
 public:
  // Creates `dir`. `first_step` > 1: a run resumed at that step.
  TensorBoardWriter(const std::string& dir, int64_t first_step);
  void add_scalar(const std::string& tag, double value, int64_t step);
  // Called at every log interval: a crash loses at most one interval.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_event(int64_t step, const std::string& payload);
  std::string path_;
  std::ofstream out_;
};

// CRC-32C (Castagnoli), as TFRecord framing uses it before masking.
uint32_t crc32c(const char* data, size_t n);

}  // namespace minipretrain
