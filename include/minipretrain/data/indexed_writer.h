// The writing half of Megatron's indexed dataset (format in
// indexed_dataset.h). Free of LibTorch, so the text tools link it too.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace minipretrain {

// The .idx magic and the dtype codes both halves use.
inline constexpr char kIndexMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
inline constexpr uint8_t kDtypeUint16 = 8, kDtypeInt32 = 4;
int64_t indexed_item_size(uint8_t dtype_code);  // 0 for an unknown code

// Writes PREFIX.bin / PREFIX.idx under temporary names and renames them in
// finish(): an interrupted run leaves nothing under the final names.
class IndexedDatasetWriter {
 public:
  // uint16 when the vocabulary fits, else int32 (Megatron's choice).
  IndexedDatasetWriter(const std::string& prefix, int64_t vocab_size);
  ~IndexedDatasetWriter();
  void add_document(const std::vector<int64_t>& tokens);
  void finish();

 private:
  std::string prefix_;
  uint8_t dtype_code_;
  std::unique_ptr<std::ofstream> bin_;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> document_indices_{0};
  bool finished_ = false;
};

}  // namespace minipretrain
