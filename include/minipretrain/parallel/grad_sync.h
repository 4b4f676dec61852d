// Data-parallel gradient averaging. Gradients are copied into flat buckets of
// up to `bucket_bytes` (parameters in a fixed order), each bucket is averaged
// over the DP group with one all-reduce, and the result is copied back. Called
// once per step, after the last microbatch's backward.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

class GradientBuckets {
 public:
  // bucket_bytes 0: one all-reduce per tensor.
  GradientBuckets(std::vector<torch::Tensor> parameters, int64_t bucket_bytes);

  // Averages every parameter's gradient over `dp`; nothing moves for DP = 1.
  void all_reduce_mean(Communicator& dp);
  size_t num_buckets() const { return buckets_.size(); }

 private:
  std::vector<torch::Tensor> parameters_;
  std::vector<std::vector<size_t>> buckets_;  // indices into parameters_
};

}  // namespace minipretrain
