// Megatron-style tensor-parallel layers (no bias: Llama has none). Each holds
// one shard of a full weight and says which (ShardSpec). Linear layers do not
// communicate: the regions around them do, at the call site (see
// model/attention.h), so that Q, K and V share one copy_to_tp.
//
//   ColumnParallelLinear  weight [out / TP, in]   y_local = x W_local^T
//   RowParallelLinear     weight [out, in / TP]   partial sums, reduce after
//   VocabParallelEmbedding weight [V_pad / TP, H] masked lookup + all-reduce
#pragma once

#include <memory>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"
#include "minipretrain/parallel/shard.h"

namespace minipretrain {

// A module whose `weight` is a shard of a full tensor.
class ShardedWeight {
 public:
  virtual ~ShardedWeight() = default;
  const ShardSpec& weight_spec() const { return spec_; }

 protected:
  ShardSpec spec_;
};

class ColumnParallelLinearImpl : public torch::nn::Module, public ShardedWeight {
 public:
  // `out_features` is padded up to a multiple of the TP size (the LM head).
  ColumnParallelLinearImpl(int64_t in_features, int64_t out_features, const Communicator& tp);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
};
TORCH_MODULE(ColumnParallelLinear);

class RowParallelLinearImpl : public torch::nn::Module, public ShardedWeight {
 public:
  RowParallelLinearImpl(int64_t in_features, int64_t out_features, const Communicator& tp);
  // Returns this rank's partial sum; the caller reduces it over TP.
  torch::Tensor forward(const torch::Tensor& x_local);
  torch::Tensor weight;
};
TORCH_MODULE(RowParallelLinear);

class VocabParallelEmbeddingImpl : public torch::nn::Module, public ShardedWeight {
 public:
  VocabParallelEmbeddingImpl(int64_t vocab_size, int64_t hidden_size, std::shared_ptr<Communicator> tp);
  torch::Tensor forward(const torch::Tensor& ids);
  torch::Tensor weight;

 private:
  std::shared_ptr<Communicator> tp_;
};
TORCH_MODULE(VocabParallelEmbedding);

}  // namespace minipretrain
