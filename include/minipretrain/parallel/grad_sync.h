// Data-parallel gradient averaging over one flat gradient buffer. Buckets are
// contiguous ranges of it, up to `bucket_bytes` each and cut only between
// tensors, so each bucket is averaged in place with one all-reduce and no
// copy. Called once per step, after the last microbatch's backward.
#pragma once

#include <utility>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

class GradientBuckets {
 public:
  // `sizes`: the elements of each tensor in the buffer, in buffer order.
  // bucket_bytes 0: one all-reduce per tensor.
  GradientBuckets(torch::Tensor flat, const std::vector<int64_t>& sizes, int64_t bucket_bytes);

  // Averages the buffer over `dp`; nothing moves for DP = 1.
  void all_reduce_mean(Communicator& dp);
  size_t num_buckets() const { return buckets_.size(); }

 private:
  torch::Tensor flat_;
  std::vector<std::pair<int64_t, int64_t>> buckets_;  // (offset, elements)
};

}  // namespace minipretrain
