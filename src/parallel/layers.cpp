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

}  // namespace

ColumnParallelLinearImpl::ColumnParallelLinearImpl(int64_t in_features, int64_t out_features, const Communicator& tp)
    : ColumnParallelLinearImpl(in_features, {{"", out_features}}, tp) {}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(int64_t in_features,
                                                   const FusedOutputs& outputs,
                                                   const Communicator& tp) {
  int64_t rows = 0;
  for (const auto& [name, out_features] : outputs) {
    WeightPart part = whole(0, {out_features, in_features}, tp);
    part.name = name;
    part.row = rows;
    rows += part.rows;
    parts_.push_back(part);
  }
  weight = register_parameter("weight", torch::empty({rows, in_features}));
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& x) { return deferrable_linear(x, weight); }

// One split op: its backward concatenates the parts' gradients once, where
// a narrow per part would each scatter into a zeroed full-size gradient.
std::vector<torch::Tensor> ColumnParallelLinearImpl::split(const torch::Tensor& y) const {
  std::vector<int64_t> sizes;
  for (const WeightPart& part : parts_) sizes.push_back(part.rows);
  return y.split_with_sizes(sizes, -1);
}

RowParallelLinearImpl::RowParallelLinearImpl(int64_t in_features, int64_t out_features, const Communicator& tp) {
  parts_.push_back(whole(1, {out_features, in_features}, tp));
  weight = register_parameter("weight", torch::empty(local_shape(parts_[0].spec, tp.size())));
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& x_local) { return deferrable_linear(x_local, weight); }

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(int64_t vocab_size, int64_t hidden_size,
                                                       std::shared_ptr<Communicator> tp)
    : tp_(std::move(tp)) {
  parts_.push_back(whole(0, {vocab_size, hidden_size}, *tp_));
  weight = register_parameter("weight", torch::empty(local_shape(parts_[0].spec, tp_->size())));
}

torch::Tensor VocabParallelEmbeddingImpl::forward(const torch::Tensor& ids) {
  if (tp_->size() == 1) return torch::embedding(weight, ids);
  // Rows outside this rank's slice look up row 0 and are zeroed; the sum over
  // ranks then holds exactly one real row per token.
  const int64_t start = parts_[0].spec.offset, rows = weight.size(0);
  torch::Tensor outside = (ids < start) | (ids >= start + rows);
  torch::Tensor local_ids = (ids - start).masked_fill(outside, 0);
  torch::Tensor partial = torch::embedding(weight, local_ids).masked_fill(outside.unsqueeze(-1), 0.0);
  return reduce_from_tp(partial, *tp_);
}

}  // namespace minipretrain
