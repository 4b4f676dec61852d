#include "minipretrain/data/indexed_dataset.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace minipretrain {
namespace {

int64_t token_at(const char* data, uint8_t code, int64_t i) {
  switch (code) {
    case 1: return reinterpret_cast<const uint8_t*>(data)[i];
    case 2: return reinterpret_cast<const int8_t*>(data)[i];
    case 3: return reinterpret_cast<const int16_t*>(data)[i];
    case 4: return reinterpret_cast<const int32_t*>(data)[i];
    case 5: return reinterpret_cast<const int64_t*>(data)[i];
    case 8: return reinterpret_cast<const uint16_t*>(data)[i];
    default: throw ConfigError("indexed dataset: token dtype code " + std::to_string(code) + " is not an integer type");
  }
}

}  // namespace

IndexedDataset::IndexedDataset(const std::string& prefix) : prefix_(prefix) {
  const std::string idx_path = prefix + ".idx";
  auto fail = [&](const std::string& why) { throw ConfigError("indexed dataset " + idx_path + ": " + why); };
  MappedFile idx(idx_path);
  const char* p = idx.data();
  constexpr size_t kHeader = 9 + 8 + 1 + 8 + 8;
  if (idx.size() < kHeader) fail("too short for the header (" + std::to_string(idx.size()) + " bytes)");
  if (std::memcmp(p, kIndexMagic, 9) != 0) fail("wrong magic (not a Megatron MMIDIDX index)");
  uint64_t version, sequences, documents;
  std::memcpy(&version, p + 9, 8);
  if (version != 1) fail("unsupported version " + std::to_string(version));
  dtype_code_ = static_cast<uint8_t>(p[17]);
  item_size_ = indexed_item_size(dtype_code_);
  if (item_size_ == 0) fail("unknown dtype code " + std::to_string(dtype_code_));
  std::memcpy(&sequences, p + 18, 8);
  std::memcpy(&documents, p + 26, 8);
  const uint64_t expected = kHeader + sequences * (4 + 8) + documents * 8;
  if (sequences > idx.size() || documents > idx.size() || idx.size() != expected)
    fail("size " + std::to_string(idx.size()) + " does not match " + std::to_string(sequences) + " sequences and " +
         std::to_string(documents) + " document indices (truncated?)");
  lengths_.resize(sequences);
  pointers_.resize(sequences);
  document_indices_.resize(documents);
  // An empty vector's data() may be null, which memcpy must not get even for 0 bytes.
  if (sequences > 0) {
    std::memcpy(lengths_.data(), p + kHeader, sequences * 4);
    std::memcpy(pointers_.data(), p + kHeader + sequences * 4, sequences * 8);
  }
  if (documents > 0) std::memcpy(document_indices_.data(), p + kHeader + sequences * 12, documents * 8);

  bin_ = std::make_unique<MappedFile>(prefix + ".bin");
  const int64_t bin_bytes = static_cast<int64_t>(bin_->size());
  int64_t expected_pointer = 0;
  for (uint64_t i = 0; i < sequences; ++i) {
    if (lengths_[i] < 0 || pointers_[i] != expected_pointer)
      fail("sequence " + std::to_string(i) + " has pointer " + std::to_string(pointers_[i]) + ", expected " +
           std::to_string(expected_pointer));
    expected_pointer += static_cast<int64_t>(lengths_[i]) * item_size_;  // at most 2^34 a step
    if (expected_pointer > bin_bytes)
      fail("pointers run past the end of " + prefix + ".bin (" + std::to_string(expected_pointer) + " > " +
           std::to_string(bin_bytes) + " bytes)");
  }
  // Megatron writes the .bin back to back: any other size means the dtype or
  // the lengths do not describe it.
  if (expected_pointer != bin_bytes)
    fail("its lengths at " + std::to_string(item_size_) + " bytes a token (dtype code " + std::to_string(dtype_code_) +
         ") make " + std::to_string(expected_pointer) + " bytes, but " + prefix + ".bin has " +
         std::to_string(bin_bytes));
  if (document_indices_.empty() || document_indices_.front() != 0 ||
      document_indices_.back() != static_cast<int64_t>(sequences))
    fail("document indices must run from 0 to the sequence count");
  for (size_t i = 1; i < document_indices_.size(); ++i)
    if (document_indices_[i] < document_indices_[i - 1])
      fail("document indices must not decrease (index " + std::to_string(i) + ")");
  num_tokens_ = expected_pointer / item_size_;
}

torch::Tensor IndexedDataset::tokens(int64_t begin, int64_t count) const {
  torch::Tensor out = torch::empty({count}, torch::kLong);
  int64_t* dst = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) dst[i] = token_at(bin_->data(), dtype_code_, begin + i);
  return out;
}

std::vector<int64_t> IndexedDataset::sequence(int64_t index) const {
  torch::Tensor t = tokens(pointers_.at(index) / item_size_, lengths_.at(index));
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

IndexedTokenDataset::IndexedTokenDataset(const std::vector<Part>& parts, int64_t vocab_size, int64_t seq_length)
    : seq_length_(seq_length), vocab_size_(vocab_size) {
  std::vector<double> weights;
  for (const Part& part : parts) {
    auto data = std::make_unique<IndexedDataset>(part.prefix);
    const int64_t samples = std::max<int64_t>(0, (data->num_tokens() - 1) / seq_length);
    if (samples == 0)
      throw ConfigError("data path " + part.prefix + ": " + std::to_string(data->num_tokens()) +
                        " tokens are fewer than one sample of max_seq_length + 1 = " + std::to_string(seq_length + 1));
    sources_.push_back({std::move(data), samples});
    weights.push_back(part.weight);
  }
  // Megatron's blending: sample i comes from the source whose count lags its
  // weighted share the most. Size: every sample of every source once.
  int64_t total = 0;
  for (const Source& s : sources_) total += s.num_samples;
  std::vector<int64_t> taken(sources_.size(), 0);
  for (int64_t i = 0; i < total; ++i) {
    size_t best = 0;
    double best_lag = -1e300;
    for (size_t s = 0; s < sources_.size(); ++s) {
      const double lag = weights[s] * static_cast<double>(i + 1) - static_cast<double>(taken[s]);
      if (lag > best_lag) best_lag = lag, best = s;
    }
    blend_.emplace_back(static_cast<int32_t>(best), taken[best]++ % sources_[best].num_samples);
  }
}

torch::Tensor IndexedTokenDataset::sample(int64_t index) const {
  const auto& [source, local] = blend_.at(index);
  const Source& s = sources_[source];
  torch::Tensor tokens = s.data->tokens(local * seq_length_, seq_length_ + 1);
  const int64_t max_id = tokens.max().item<int64_t>();
  if (max_id >= vocab_size_ || tokens.min().item<int64_t>() < 0)
    throw ConfigError("data: token id " + std::to_string(max_id) + " in sample " + std::to_string(index) +
                      " is not below vocab_size " + std::to_string(vocab_size_));
  return tokens;
}

std::string IndexedTokenDataset::describe() const {
  std::string out = "indexed dataset (Megatron format), " + std::to_string(num_samples()) + " samples from";
  for (const Source& s : sources_) out += " " + std::to_string(s.num_samples);
  return out;
}

std::vector<IndexedTokenDataset::Part> parse_data_path(const std::vector<std::string>& words) {
  std::vector<IndexedTokenDataset::Part> parts;
  auto is_number = [](const std::string& w) {
    char* end = nullptr;
    std::strtod(w.c_str(), &end);
    return !w.empty() && end == w.c_str() + w.size();
  };
  const bool weighted = !words.empty() && is_number(words.front());
  if (weighted && words.size() % 2 != 0)
    throw ConfigError("data_path: weights and prefixes must come in pairs, got " + std::to_string(words.size()) + " words");
  double sum = 0;
  for (size_t i = 0; i < words.size(); i += weighted ? 2 : 1) {
    IndexedTokenDataset::Part part;
    part.prefix = words[weighted ? i + 1 : i];
    part.weight = weighted ? std::stod(words[i]) : 1.0;
    if (!(part.weight > 0)) throw ConfigError("data_path: weight " + words[i] + " must be positive");
    sum += part.weight;
    parts.push_back(part);
  }
  for (auto& part : parts) part.weight /= sum;
  return parts;
}

}  // namespace minipretrain
