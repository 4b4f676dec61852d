#include "minipretrain/data/dataset.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "minipretrain/config/json_input.h"
#include "minipretrain/data/indexed_dataset.h"

namespace minipretrain {
namespace {

constexpr double kSuccessorProbs[] = {0.6, 0.25, 0.1, 0.05};
constexpr int kSuccessors = 4;

// Uniform in [0, 1) from 53 random bits: std::uniform_real_distribution is
// implementation-defined, this is the same everywhere.
double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

MarkovDataset::MarkovDataset(int64_t vocab_size, int64_t seq_length, int64_t num_samples, int64_t seed)
    : seq_length_(seq_length), num_samples_(num_samples) {
  std::mt19937_64 rng(static_cast<uint64_t>(seed) ^ 0x6D61726B6F76ULL);
  const int successors = static_cast<int>(std::min<int64_t>(kSuccessors, vocab_size));
  std::vector<int32_t> next(vocab_size * successors);
  for (int64_t token = 0; token < vocab_size; ++token)
    for (int k = 0; k < successors; ++k) {
      int32_t candidate;
      bool taken;
      do {  // distinct successors, so the row's entropy is exactly the table's
        candidate = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab_size));
        taken = std::find(&next[token * successors], &next[token * successors + k], candidate) !=
                &next[token * successors + k];
      } while (taken);
      next[token * successors + k] = candidate;
    }
  tokens_.resize(num_samples * seq_length + 1);
  tokens_[0] = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab_size));
  for (size_t i = 1; i < tokens_.size(); ++i) {
    double u = uniform(rng);
    int k = 0;
    while (k < successors - 1 && u >= kSuccessorProbs[k]) u -= kSuccessorProbs[k++];
    tokens_[i] = next[tokens_[i - 1] * successors + k];
  }
}

torch::Tensor MarkovDataset::sample(int64_t index) const { return window(tokens_.data(), index, seq_length_); }

double MarkovDataset::entropy_rate() const {
  double h = 0;
  for (double p : kSuccessorProbs) h -= p * std::log(p);
  return h;
}

std::string MarkovDataset::describe() const {
  char line[160];
  std::snprintf(line, sizeof(line), "synthetic Markov corpus: %lld samples, loss floor (entropy rate) %.4f nats",
                static_cast<long long>(num_samples_), entropy_rate());
  return line;
}

PackedDataset::PackedDataset(const std::string& dir, int64_t model_vocab_size, int64_t seq_length)
    : dir_(dir), seq_length_(seq_length) {
  namespace fs = std::filesystem;
  const fs::path meta_path = fs::path(dir) / "metadata.json", bin_path = fs::path(dir) / "tokens.bin";
  nlohmann::json meta;
  try {
    meta = read_json(meta_path.string());
    const std::string dtype = meta.at("dtype").get<std::string>();
    if (dtype != "uint16" && dtype != "uint32")
      throw ConfigError("data_dir '" + dir + "': dtype must be uint16 or uint32, got '" + dtype + "'");
    item_size_ = dtype == "uint16" ? 2 : 4;
    num_tokens_ = json_integer(meta, "num_tokens", 0, int64_t{1} << 50, meta_path.string());
  } catch (const JsonInputError& e) {
    throw ConfigError("data_dir '" + dir + "': " + e.what());
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError("data_dir '" + dir + "': bad metadata.json: " + e.what());
  }
  std::error_code ec;
  const auto bytes = fs::file_size(bin_path, ec);
  if (ec) throw ConfigError("data_dir '" + dir + "': cannot read " + bin_path.string());
  if (bytes % item_size_ != 0)
    throw ConfigError("data_dir '" + dir + "': tokens.bin has " + std::to_string(bytes) +
                      " bytes, not a multiple of the dtype size " + std::to_string(item_size_) + " (truncated?)");
  if (static_cast<int64_t>(bytes / item_size_) != num_tokens_)
    throw ConfigError("data_dir '" + dir + "': tokens.bin holds " + std::to_string(bytes / item_size_) +
                      " tokens, metadata.json says " + std::to_string(num_tokens_) + " (truncated?)");
  if (num_tokens_ < seq_length + 1)
    throw ConfigError("data_dir '" + dir + "': " + std::to_string(num_tokens_) +
                      " tokens are fewer than one sample of max_seq_length + 1 = " + std::to_string(seq_length + 1));
  num_samples_ = (num_tokens_ - 1) / seq_length;

  tokens_ = std::make_unique<MappedFile>(bin_path.string());
  int64_t max_id = 0;
  for (int64_t i = 0; i < num_tokens_; ++i)
    max_id = std::max<int64_t>(max_id, item_size_ == 2 ? reinterpret_cast<const uint16_t*>(tokens_->data())[i]
                                                       : reinterpret_cast<const uint32_t*>(tokens_->data())[i]);
  if (max_id >= model_vocab_size)
    throw ConfigError("data_dir '" + dir + "': token id " + std::to_string(max_id) + " is not below vocab_size " +
                      std::to_string(model_vocab_size));
}

torch::Tensor PackedDataset::sample(int64_t index) const {
  if (item_size_ == 2) return window(reinterpret_cast<const uint16_t*>(tokens_->data()), index, seq_length_);
  return window(reinterpret_cast<const uint32_t*>(tokens_->data()), index, seq_length_);
}

std::string PackedDataset::describe() const {
  return "packed tokens from " + dir_ + ": " + std::to_string(num_tokens_) + " tokens, " +
         std::to_string(num_samples_) + " samples";
}

void PackedDataset::write(const std::string& dir, const std::vector<int64_t>& tokens, int64_t vocab_size) {
  std::filesystem::create_directories(dir);
  const bool small = vocab_size <= 65536;
  std::ofstream bin(std::filesystem::path(dir) / "tokens.bin", std::ios::binary);
  for (int64_t t : tokens) {
    if (small) {
      const uint16_t v = static_cast<uint16_t>(t);
      bin.write(reinterpret_cast<const char*>(&v), sizeof(v));
    } else {
      const uint32_t v = static_cast<uint32_t>(t);
      bin.write(reinterpret_cast<const char*>(&v), sizeof(v));
    }
  }
  nlohmann::json meta = {{"format", "minipretrain-packed"}, {"version", 1}, {"dtype", small ? "uint16" : "uint32"},
                         {"vocab_size", vocab_size}, {"num_tokens", static_cast<int64_t>(tokens.size())}};
  std::ofstream(std::filesystem::path(dir) / "metadata.json") << meta.dump(2) << "\n";
}

SubsetDataset::SubsetDataset(std::shared_ptr<const TokenDataset> base, int64_t begin, int64_t end)
    : base_(std::move(base)), begin_(begin), end_(end) {}

std::string SubsetDataset::describe() const {
  return base_->describe() + " (samples " + std::to_string(begin_) + " to " + std::to_string(end_) + ")";
}

namespace {

std::shared_ptr<const TokenDataset> make_base(const Config& c) {
  const int64_t vocab = c.model.vocab_size, seq = c.model.max_seq_length;
  if (!c.data.data_path.empty())
    return std::make_shared<IndexedTokenDataset>(parse_data_path(c.data.data_path), vocab, seq);
  if (!c.data.data_dir.empty()) return std::make_shared<PackedDataset>(c.data.data_dir, vocab, seq);
  return std::make_shared<MarkovDataset>(vocab, seq, c.data.num_train_samples, c.train.seed);
}

}  // namespace

Datasets make_datasets(const Config& c) {
  auto base = make_base(c);
  if (!c.data.valid_data_path.empty())
    return {base, std::make_shared<IndexedTokenDataset>(parse_data_path(c.data.valid_data_path), c.model.vocab_size,
                                                        c.model.max_seq_length)};
  const auto [train_share, valid_share] = parse_split(c.data.split);
  if (valid_share == 0) return {base, nullptr};
  const int64_t n = base->num_samples();
  const int64_t cut = static_cast<int64_t>(static_cast<double>(n) * train_share / (train_share + valid_share));
  if (cut == 0 || cut == n)
    throw ConfigError("split " + c.data.split + " leaves an empty part of " + std::to_string(n) + " samples");
  return {std::make_shared<SubsetDataset>(base, 0, cut), std::make_shared<SubsetDataset>(base, cut, n)};
}

GlobalBatchSampler::GlobalBatchSampler(int64_t num_samples, int64_t global_batch, int64_t seed)
    : num_samples_(num_samples), global_batch_(global_batch), seed_(seed) {}

const std::vector<int64_t>& GlobalBatchSampler::permutation(int64_t epoch) const {
  if (epoch != cached_epoch_) {
    cached_.resize(num_samples_);
    std::iota(cached_.begin(), cached_.end(), 0);
    std::mt19937_64 rng(static_cast<uint64_t>(seed_) * 1000003ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = num_samples_ - 1; i > 0; --i)  // Fisher-Yates with our own draw: portable
      std::swap(cached_[i], cached_[rng() % static_cast<uint64_t>(i + 1)]);
    cached_epoch_ = epoch;
  }
  return cached_;
}

std::vector<int64_t> GlobalBatchSampler::indices(int64_t step) const {
  std::vector<int64_t> out;
  for (int64_t position = (step - 1) * global_batch_; position < step * global_batch_; ++position)
    out.push_back(permutation(position / num_samples_)[position % num_samples_]);
  return out;
}

torch::Tensor gather_samples(const TokenDataset& dataset, const std::vector<int64_t>& indices) {
  std::vector<torch::Tensor> rows;
  for (int64_t i : indices) rows.push_back(dataset.sample(i));
  return torch::stack(rows);
}

}  // namespace minipretrain
