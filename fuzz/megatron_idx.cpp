// libFuzzer harness: a Megatron .idx with a .bin beside it. The first two
// bytes give the .bin's size (zeros), the rest is the .idx; every sequence is
// then read.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "minipretrain/data/indexed_dataset.h"

// Files in memory where there is /dev/shm: a disk's temp folder runs 6x slower.
static std::filesystem::path scratch() {
  return std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minipretrain;
  if (size < 2) return 0;
  static const std::string prefix =
      (scratch() / ("minipretrain-fuzz-" + std::to_string(::getpid()))).string();
  const size_t bin_bytes = data[0] | (data[1] & 0x0f) << 8;
  std::ofstream(prefix + ".bin", std::ios::binary | std::ios::trunc) << std::string(bin_bytes, '\0');
  std::ofstream(prefix + ".idx", std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data + 2), static_cast<std::streamsize>(size - 2));
  try {
    IndexedDataset dataset(prefix);
    for (int64_t i = 0; i < dataset.num_sequences(); ++i) dataset.sequence(i);
  } catch (const ConfigError&) {
  }
  return 0;
}
