#include "minipretrain/data/indexed_writer.h"

#include <filesystem>
#include <stdexcept>

namespace minipretrain {
namespace {

template <typename T>
void write_pod(std::ostream& out, const T& value) {
  out.write(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <typename T>
void write_array(std::ostream& out, const std::vector<T>& values) {
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
}

}  // namespace

int64_t indexed_item_size(uint8_t code) {
  switch (code) {
    case 1: case 2: return 1;
    case 3: case 8: return 2;
    case 4: case 7: return 4;
    case 5: case 6: return 8;
    default: return 0;
  }
}

IndexedDatasetWriter::IndexedDatasetWriter(const std::string& prefix, int64_t vocab_size)
    : prefix_(prefix), dtype_code_(vocab_size <= 65536 ? kDtypeUint16 : kDtypeInt32) {
  bin_ = std::make_unique<std::ofstream>(prefix + ".bin.tmp", std::ios::binary | std::ios::trunc);
  if (!*bin_) throw std::runtime_error("cannot write " + prefix + ".bin.tmp");
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (finished_) return;
  bin_.reset();
  std::filesystem::remove(prefix_ + ".bin.tmp");
  std::filesystem::remove(prefix_ + ".idx.tmp");
}

void IndexedDatasetWriter::add_document(const std::vector<int64_t>& tokens) {
  for (int64_t t : tokens) {
    if (dtype_code_ == kDtypeUint16) write_pod(*bin_, static_cast<uint16_t>(t));
    else write_pod(*bin_, static_cast<int32_t>(t));
  }
  lengths_.push_back(static_cast<int32_t>(tokens.size()));
  document_indices_.push_back(static_cast<int64_t>(lengths_.size()));
}

void IndexedDatasetWriter::finish() {
  bin_->flush();
  if (!*bin_) throw std::runtime_error("cannot write " + prefix_ + ".bin.tmp (disk full?)");
  bin_.reset();
  std::vector<int64_t> pointers(lengths_.size());
  int64_t offset = 0;
  for (size_t i = 0; i < lengths_.size(); ++i) {
    pointers[i] = offset;
    offset += static_cast<int64_t>(lengths_[i]) * indexed_item_size(dtype_code_);
  }
  {
    std::ofstream idx(prefix_ + ".idx.tmp", std::ios::binary | std::ios::trunc);
    idx.write(kIndexMagic, 9);
    write_pod(idx, uint64_t{1});
    write_pod(idx, dtype_code_);
    write_pod(idx, static_cast<uint64_t>(lengths_.size()));
    write_pod(idx, static_cast<uint64_t>(document_indices_.size()));
    write_array(idx, lengths_);
    write_array(idx, pointers);
    write_array(idx, document_indices_);
    if (!idx) throw std::runtime_error("cannot write " + prefix_ + ".idx.tmp");
  }
  std::filesystem::rename(prefix_ + ".bin.tmp", prefix_ + ".bin");
  std::filesystem::rename(prefix_ + ".idx.tmp", prefix_ + ".idx");
  finished_ = true;
}

}  // namespace minipretrain
