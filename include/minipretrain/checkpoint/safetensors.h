// The safetensors file format (Hugging Face): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {string: string}}, then the raw little-endian tensor bytes. Tensors stream
// to and from disk one at a time, so saving needs no second copy in memory.
// Both directions compute an FNV-1a hash of the whole file for corruption checks.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace minipretrain {

struct SafetensorsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t bytes = 0;
  uint64_t fnv1a = 0;
};

// Writes the tensors (CPU copies are made one at a time when needed) and
// returns the file's size and hash. Throws std::runtime_error on I/O errors.
std::pair<uint64_t, uint64_t> write_safetensors(const std::string& path,
                                                const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                                const std::map<std::string, std::string>& metadata = {});

// Reads every tensor; throws SafetensorsError naming the file for a bad
// header, offsets past the end or an unsupported dtype.
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace minipretrain
