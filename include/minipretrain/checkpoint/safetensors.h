// The safetensors file format (Hugging Face): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {string: string}}, then the raw little-endian tensor bytes. Tensors stream
// to and from disk one at a time, so saving needs no second copy in memory.
// Both directions hash the whole file for corruption checks.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace minipretrain {

struct SafetensorsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Whole-file hashes: XXH3 (64-bit, xxHash) for files written now; FNV-1a in
// checkpoints written before 2026-11-26. FNV-1a goes a byte at a time (1.3 s
// per GB on the 2-core VM: a quarter of saving Small), XXH3 at memory speed.
enum class FileHash { kXxh3, kFnv1a };
// The key a checkpoint's shard .json records the hash under.
const char* hash_key(FileHash kind);
// The kind and value of the hash a shard's index records for its .safetensors
// (XXH3, or FNV-1a in checkpoints written before 2026-11-26).
std::pair<FileHash, uint64_t> recorded_hash(const nlohmann::json& shard_index);

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t bytes = 0;
  uint64_t hash = 0;  // of the kind read_safetensors was asked for
};

// Writes the tensors (CPU copies are made one at a time when needed) and
// returns the file's size and XXH3 hash. Throws std::runtime_error on I/O errors.
std::pair<uint64_t, uint64_t> write_safetensors(const std::string& path,
                                                const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                                const std::map<std::string, std::string>& metadata = {});

// Reads every tensor; throws SafetensorsError naming the file for a bad
// header, offsets past the end or an unsupported dtype.
SafetensorsFile read_safetensors(const std::string& path, FileHash hash = FileHash::kXxh3);

// A file's table of contents, checked like read_safetensors does, for
// reading only the tensors one needs.
struct SafetensorsIndex {
  struct Entry {
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // of the bytes, after the header
  };
  std::string path;
  std::map<std::string, Entry> entries;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + the header's length
};
SafetensorsIndex read_safetensors_index(const std::string& path);
torch::Tensor read_safetensors_tensor(const SafetensorsIndex& index, const std::string& name);
// The hash of the whole file, streamed (no tensor is kept).
uint64_t hash_file(const std::string& path, FileHash kind);

}  // namespace minipretrain
