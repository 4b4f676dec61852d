// Megatron-LM's memory-mapped indexed dataset, read and written byte for byte
// as Megatron does, so that either tool reads the other's files.
//
// PREFIX.bin: the token ids of every sequence, back to back.
// PREFIX.idx: magic "MMIDIDX\0\0" (9 bytes), version uint64 = 1, dtype code
//   uint8 (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32,
//   8 uint16), sequence count uint64, document count uint64, then int32
//   sequence lengths, int64 byte pointers into .bin, int64 document indices
//   (0, then the end of each document, so document count = documents + 1).
// Every integer is little-endian.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/data/dataset.h"
#include "minipretrain/data/indexed_writer.h"
#include "minipretrain/data/mapped_file.h"

namespace minipretrain {

class IndexedDataset {
 public:
  // Maps PREFIX.idx and PREFIX.bin and checks the header, the sizes and every
  // pointer; throws ConfigError naming the file and the problem.
  explicit IndexedDataset(const std::string& prefix);

  int64_t num_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_documents() const { return static_cast<int64_t>(document_indices_.size()) - 1; }
  int64_t num_tokens() const { return num_tokens_; }
  const std::vector<int32_t>& lengths() const { return lengths_; }
  const std::vector<int64_t>& document_indices() const { return document_indices_; }
  uint8_t dtype_code() const { return dtype_code_; }

  // Tokens [begin, begin + count) of the concatenated sequences, as int64.
  torch::Tensor tokens(int64_t begin, int64_t count) const;
  std::vector<int64_t> sequence(int64_t index) const;

 private:
  std::string prefix_;
  uint8_t dtype_code_ = 0;
  int64_t item_size_ = 0, num_tokens_ = 0;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> pointers_, document_indices_;
  std::unique_ptr<MappedFile> bin_;
};

// Training samples from one or more indexed datasets: windows of seq + 1
// tokens across document boundaries. With several prefixes, samples are
// interleaved by weight as Megatron's blending does (each next sample comes
// from the dataset furthest behind its share).
class IndexedTokenDataset : public TokenDataset {
 public:
  struct Part {
    std::string prefix;
    double weight = 1.0;
  };
  IndexedTokenDataset(const std::vector<Part>& parts, int64_t vocab_size, int64_t seq_length);
  int64_t num_samples() const override { return static_cast<int64_t>(blend_.size()); }
  torch::Tensor sample(int64_t index) const override;
  std::string describe() const override;

 private:
  struct Source {
    std::unique_ptr<IndexedDataset> data;
    int64_t num_samples;
  };
  std::vector<Source> sources_;
  std::vector<std::pair<int32_t, int64_t>> blend_;  // (source, sample within it)
  int64_t seq_length_, vocab_size_;
};

// "--data-path A B" or "--data-path 0.3 A 0.7 B" into parts (weights normalized).
std::vector<IndexedTokenDataset::Part> parse_data_path(const std::vector<std::string>& words);

}  // namespace minipretrain
