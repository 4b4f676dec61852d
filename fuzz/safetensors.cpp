// libFuzzer harness: a .safetensors file (header and data) as checkpoints
// and Hugging Face directories are read: the index, then every tensor.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "minipretrain/checkpoint/safetensors.h"

// Files in memory where there is /dev/shm: a disk's temp folder runs 6x slower.
static std::filesystem::path scratch() {
  return std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minipretrain;
  static const std::string path =
      (scratch() / ("minipretrain-fuzz-" + std::to_string(::getpid()) + ".safetensors")).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                 static_cast<std::streamsize>(size));
  try {
    const SafetensorsIndex index = read_safetensors_index(path);
    for (const auto& [name, entry] : index.entries) read_safetensors_tensor(index, name);
  } catch (const SafetensorsError&) {
  }
  return 0;
}
