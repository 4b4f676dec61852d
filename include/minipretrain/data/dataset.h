// Token datasets: a sample is a window of max_seq_length + 1 tokens (inputs
// are its first seq tokens, targets its last seq). Windows start every seq
// tokens, so consecutive samples share one token and every token is a target.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/data/mapped_file.h"

namespace minipretrain {

class TokenDataset {
 public:
  virtual ~TokenDataset() = default;
  virtual int64_t num_samples() const = 0;
  // int64 tensor of seq + 1 token ids.
  virtual torch::Tensor sample(int64_t index) const = 0;
  // One line for the banner: what the data is, and its loss floor if known.
  virtual std::string describe() const = 0;
};

// Windows of a token sequence held in memory or mapped from a file.
template <typename Token>
torch::Tensor window(const Token* tokens, int64_t index, int64_t seq_length) {
  torch::Tensor out = torch::empty({seq_length + 1}, torch::kLong);
  int64_t* dst = out.data_ptr<int64_t>();
  const Token* src = tokens + index * seq_length;
  for (int64_t i = 0; i <= seq_length; ++i) dst[i] = static_cast<int64_t>(src[i]);
  return out;
}

// The synthetic corpus of DESIGN.md: one long seeded order-1 Markov chain in
// which every token has four possible successors with probabilities 0.6,
// 0.25, 0.1, 0.05. Its entropy rate, the best loss any model can reach, is the
// entropy of that distribution: 1.0331 nats.
class MarkovDataset : public TokenDataset {
 public:
  MarkovDataset(int64_t vocab_size, int64_t seq_length, int64_t num_samples, int64_t seed);
  int64_t num_samples() const override { return num_samples_; }
  torch::Tensor sample(int64_t index) const override;
  std::string describe() const override;
  double entropy_rate() const;

 private:
  int64_t seq_length_, num_samples_;
  std::vector<int32_t> tokens_;
};

// Our packed format: DIR/tokens.bin holds little-endian token ids (uint16
// when the vocabulary fits, else uint32) and DIR/metadata.json says
// {"format": "minipretrain-packed", "version": 1, "dtype": "uint16",
//  "vocab_size": V, "num_tokens": N}. The file is memory-mapped; opening it
// checks the size, the dtype and every token id against the model's vocab.
class PackedDataset : public TokenDataset {
 public:
  PackedDataset(const std::string& dir, int64_t model_vocab_size, int64_t seq_length);
  int64_t num_samples() const override { return num_samples_; }
  torch::Tensor sample(int64_t index) const override;
  std::string describe() const override;

  // Writes `tokens` in this format (tests, converters).
  static void write(const std::string& dir, const std::vector<int64_t>& tokens, int64_t vocab_size);

 private:
  std::string dir_;
  int64_t seq_length_, num_samples_ = 0, num_tokens_ = 0, item_size_ = 2;
  std::unique_ptr<MappedFile> tokens_;
};

// A contiguous range of another dataset's samples (train / validation split).
class SubsetDataset : public TokenDataset {
 public:
  SubsetDataset(std::shared_ptr<const TokenDataset> base, int64_t begin, int64_t end);
  int64_t num_samples() const override { return end_ - begin_; }
  torch::Tensor sample(int64_t index) const override { return base_->sample(begin_ + index); }
  std::string describe() const override;

 private:
  std::shared_ptr<const TokenDataset> base_;
  int64_t begin_, end_;
};

struct Datasets {
  std::shared_ptr<const TokenDataset> train;
  std::shared_ptr<const TokenDataset> valid;  // null: no validation
};

// --data-path (indexed, blended), else --data-dir (packed), else synthetic;
// validation from --valid-data-path or the --split of the training data.
Datasets make_datasets(const Config& config);

// DESIGN.md invariant 3: the global batch of step s (from 1) is a function of
// (seed, s) only. Sample order is a seeded permutation per epoch, so every
// sample is seen once per epoch; step s reads positions (s-1)*B .. s*B-1.
class GlobalBatchSampler {
 public:
  GlobalBatchSampler(int64_t num_samples, int64_t global_batch, int64_t seed);
  std::vector<int64_t> indices(int64_t step) const;

 private:
  const std::vector<int64_t>& permutation(int64_t epoch) const;
  int64_t num_samples_, global_batch_, seed_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_;
};

// [B, seq + 1] for `indices`.
torch::Tensor gather_samples(const TokenDataset& dataset, const std::vector<int64_t>& indices);

}  // namespace minipretrain
