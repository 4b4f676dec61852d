// Megatron-style tensor-parallel layers (no bias: Llama has none). Each holds
// one shard of its weights and says which (WeightPart). Linear layers do not
// communicate: the regions around them do, at the call site (see
// model/attention.h), so that Q, K and V share one copy_to_tp. Their GEMM
// can defer its weight gradient (weight_gradients.h, for zero-bubble schedules).
//
//   ColumnParallelLinear  weight [out / TP, in]   y_local = x W_local^T
//   RowParallelLinear     weight [out, in / TP]   partial sums, reduce after
//   VocabParallelEmbedding weight [V_pad / TP, H] masked lookup + all-reduce
//
// A column-parallel layer may fuse several logical weights into one GEMM
// (Q, K and V; gate and up): each is sharded over TP on its own, and the
// local weight stacks this rank's shard of each, so a rank holds its own
// heads' q, k and v. Checkpoints and exports see the logical weights.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"
#include "minipretrain/parallel/shard.h"

namespace minipretrain {

// One logical weight inside a module's local `weight`: rows [row, row + rows)
// hold this rank's shard of the full tensor described by `spec`.
struct WeightPart {
  std::string name;  // sibling module name ("q_proj"); "" for the module's own weight
  ShardSpec spec;
  int64_t row = 0;
  int64_t rows = 0;
};

// A module whose `weight` holds shards of full tensors.
class ShardedWeight {
 public:
  virtual ~ShardedWeight() = default;
  const std::vector<WeightPart>& weight_parts() const { return parts_; }

 protected:
  std::vector<WeightPart> parts_;
};

// The (name, out_features) parts of a fused column-parallel GEMM.
using FusedOutputs = std::vector<std::pair<std::string, int64_t>>;

class ColumnParallelLinearImpl : public torch::nn::Module, public ShardedWeight {
 public:
  // `out_features` is padded up to a multiple of the TP size (the LM head).
  ColumnParallelLinearImpl(int64_t in_features, int64_t out_features, const Communicator& tp);
  // Fused: one (name, out_features) per logical weight, stacked in this order.
  ColumnParallelLinearImpl(int64_t in_features, const FusedOutputs& outputs, const Communicator& tp);
  // [..., in] -> [..., sum of local rows]; split() cuts it into the parts.
  torch::Tensor forward(const torch::Tensor& x);
  std::vector<torch::Tensor> split(const torch::Tensor& y) const;
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
