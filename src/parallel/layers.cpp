#include "minipretrain/parallel/layers.h"

#include "minipretrain/parallel/regions.h"

namespace minipretrain {

ColumnParallelLinearImpl::ColumnParallelLinearImpl(int64_t in_features, int64_t out_features, const Communicator& tp) {
  spec_ = shard_along(0, {out_features, in_features}, tp.rank(), tp.size());
  weight = register_parameter("weight", torch::empty(local_shape(spec_, tp.size())));
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& x) { return torch::matmul(x, weight.t()); }

RowParallelLinearImpl::RowParallelLinearImpl(int64_t in_features, int64_t out_features, const Communicator& tp) {
  spec_ = shard_along(1, {out_features, in_features}, tp.rank(), tp.size());
  weight = register_parameter("weight", torch::empty(local_shape(spec_, tp.size())));
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& x_local) { return torch::matmul(x_local, weight.t()); }

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(int64_t vocab_size, int64_t hidden_size,
                                                       std::shared_ptr<Communicator> tp)
    : tp_(std::move(tp)) {
  spec_ = shard_along(0, {vocab_size, hidden_size}, tp_->rank(), tp_->size());
  weight = register_parameter("weight", torch::empty(local_shape(spec_, tp_->size())));
}

torch::Tensor VocabParallelEmbeddingImpl::forward(const torch::Tensor& ids) {
  if (tp_->size() == 1) return torch::embedding(weight, ids);
  // Rows outside this rank's slice look up row 0 and are zeroed; the sum over
  // ranks then holds exactly one real row per token.
  const int64_t start = spec_.offset, rows = weight.size(0);
  torch::Tensor outside = (ids < start) | (ids >= start + rows);
  torch::Tensor local_ids = (ids - start).masked_fill(outside, 0);
  torch::Tensor partial = torch::embedding(weight, local_ids).masked_fill(outside.unsqueeze(-1), 0.0);
  return reduce_from_tp(partial, *tp_);
}

}  // namespace minipretrain
