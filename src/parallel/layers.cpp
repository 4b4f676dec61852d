#include "minipretrain/parallel/layers.h"

#include "minipretrain/parallel/regions.h"
#include "minipretrain/parallel/weight_gradients.h"

namespace minipretrain {
namespace {

// The one part of a layer whose weight is a single shard along `dim`.
WeightPart whole(int64_t dim, std::vector<int64_t> full_shape, const Communicator& tp) {
  WeightPart part{"", shard_along(dim, std::move(full_shape), tp.rank(), tp.size()), 0, 0};
  part.rows = local_shape(part.spec, tp.size())[0];
  return part;
}

// Into a column-parallel GEMM: every rank needs the whole sequence.
torch::Tensor enter(const torch::Tensor& x, const TensorParallel& tp) {
  return tp.sequence_parallel ? gather_sequence(x, *tp.group) : copy_to_tp(x, *tp.group);
}

// Out of a row-parallel GEMM's partial sums.
torch::Tensor leave(const torch::Tensor& partial, const TensorParallel& tp) {
  return tp.sequence_parallel ? reduce_scatter_sequence(partial, *tp.group) : reduce_from_tp(partial, *tp.group);
}

}  // namespace

ColumnParallelLinearImpl::ColumnParallelLinearImpl(int64_t in_features, int64_t out_features, TensorParallel tp)
    : ColumnParallelLinearImpl(in_features, {{"", out_features}}, std::move(tp)) {}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(int64_t in_features,
                                                   const FusedOutputs& outputs,
                                                   TensorParallel tp)
    : tp_(std::move(tp)) {
  int64_t rows = 0;
  for (const auto& [name, out_features] : outputs) {
    WeightPart part = whole(0, {out_features, in_features}, *tp_.group);
    part.name = name;
    part.row = rows;
    rows += part.rows;
    parts_.push_back(part);
  }
  weight = register_parameter("weight", torch::empty({rows, in_features}));
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& x) {
  return deferrable_linear(enter(x, tp_), weight);
}

// One split op: its backward concatenates the parts' gradients once, where
// a narrow per part would each scatter into a zeroed full-size gradient.
std::vector<torch::Tensor> ColumnParallelLinearImpl::split(const torch::Tensor& y) const {
  std::vector<int64_t> sizes;
  for (const WeightPart& part : parts_) sizes.push_back(part.rows);
  return y.split_with_sizes(sizes, -1);
}

RowParallelLinearImpl::RowParallelLinearImpl(int64_t in_features, int64_t out_features, TensorParallel tp)
    : tp_(std::move(tp)) {
  parts_.push_back(whole(1, {out_features, in_features}, *tp_.group));
  weight = register_parameter("weight", torch::empty(local_shape(parts_[0].spec, tp_.group->size())));
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& x_local) {
  return leave(deferrable_linear(x_local, weight), tp_);
}

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(int64_t vocab_size, int64_t hidden_size, TensorParallel tp)
    : tp_(std::move(tp)) {
  parts_.push_back(whole(0, {vocab_size, hidden_size}, *tp_.group));
  weight = register_parameter("weight", torch::empty(local_shape(parts_[0].spec, tp_.group->size())));
}

torch::Tensor VocabParallelEmbeddingImpl::forward(const torch::Tensor& ids) {
  if (tp_.group->size() == 1) return torch::embedding(weight, ids);
  // Rows outside this rank's slice look up row 0 and are zeroed; the sum over
  // ranks then holds exactly one real row per token.
  const int64_t start = parts_[0].spec.offset, rows = weight.size(0);
  torch::Tensor outside = (ids < start) | (ids >= start + rows);
  torch::Tensor local_ids = (ids - start).masked_fill(outside, 0);
  torch::Tensor partial = torch::embedding(weight, local_ids).masked_fill(outside.unsqueeze(-1), 0.0);
  return leave(partial, tp_);
}

}  // namespace minipretrain
