// Megatron-style tensor-parallel layers (no bias: Llama has none). Each holds
// one shard of its weights and says which (WeightPart), and does its own
// communication (regions.h), as Megatron's do: a column-parallel layer enters
// the TP region, a row-parallel one leaves it. Their GEMM can defer its
// weight gradient (weight_gradients.h, for zero-bubble schedules).
//
//                          weight             enters / leaves the TP region
//   ColumnParallelLinear   [out / TP, in]     copy_to_tp, or gather_sequence
//   RowParallelLinear      [out, in / TP]     reduce_from_tp, or reduce_scatter_sequence
//   VocabParallelEmbedding [V_pad / TP, H]    masked lookup, then as a row-parallel layer
//
// Activations outside the TP layers are [batch, seq, H] on every rank, or
// with sequence parallelism [batch, seq / TP, H]; inside, [batch, seq, width / TP].
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

// The group a TP layer communicates over, and whether the activations
// outside the TP layers are split along the sequence over it.
struct TensorParallel {
  std::shared_ptr<Communicator> group;
  bool sequence_parallel = false;
};

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
  ColumnParallelLinearImpl(int64_t in_features, int64_t out_features, TensorParallel tp);
  // Fused: one (name, out_features) per logical weight, stacked in this order.
  ColumnParallelLinearImpl(int64_t in_features, const FusedOutputs& outputs, TensorParallel tp);
  // [batch, seq (/ TP), in] -> [batch, seq, sum of local rows]; split() cuts
  // it into the parts.
  torch::Tensor forward(const torch::Tensor& x);
  std::vector<torch::Tensor> split(const torch::Tensor& y) const;
  torch::Tensor weight;

 private:
  TensorParallel tp_;
};
TORCH_MODULE(ColumnParallelLinear);

class RowParallelLinearImpl : public torch::nn::Module, public ShardedWeight {
 public:
  RowParallelLinearImpl(int64_t in_features, int64_t out_features, TensorParallel tp);
  // [batch, seq, in / TP] -> [batch, seq (/ TP), out]: the sum over TP.
  torch::Tensor forward(const torch::Tensor& x_local);
  torch::Tensor weight;

 private:
  TensorParallel tp_;
};
TORCH_MODULE(RowParallelLinear);

class VocabParallelEmbeddingImpl : public torch::nn::Module, public ShardedWeight {
 public:
  VocabParallelEmbeddingImpl(int64_t vocab_size, int64_t hidden_size, TensorParallel tp);
  // ids [batch, seq] -> [batch, seq (/ TP), H].
  torch::Tensor forward(const torch::Tensor& ids);
  torch::Tensor weight;

 private:
  TensorParallel tp_;
};
TORCH_MODULE(VocabParallelEmbedding);

}  // namespace minipretrain
