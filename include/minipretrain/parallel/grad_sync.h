// Data-parallel gradient averaging over one flat gradient buffer. Buckets are
// contiguous ranges of it, up to `bucket_bytes` each and cut only between
// tensors, so each bucket is averaged in place with one all-reduce and no
// copy.
//
// The all-reduces overlap the last backward, as DDP's do: ready(i) says that
// tensor i's gradient is final for the step, and a bucket starts once all of
// its tensors are. Buckets start in buffer order (a ready bucket waits for
// the ones before it), so every DP rank issues the same collectives in the
// same order; finish() starts what is left and waits for all.
#pragma once

#include <memory>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

class GradientBuckets {
 public:
  // `sizes`: the elements of each tensor in the buffer, in buffer order.
  // bucket_bytes 0: one all-reduce per tensor.
  GradientBuckets(torch::Tensor flat, const std::vector<int64_t>& sizes, int64_t bucket_bytes);

  // Before a step's first backward.
  void begin();
  // Tensor `tensor` (its index in `sizes`) has its final gradient.
  void ready(size_t tensor, Communicator& dp);
  // Averages what is left over `dp` and waits for every bucket.
  void finish(Communicator& dp);
  // The whole buffer at once, for gradients made without ready() calls.
  void all_reduce_mean(Communicator& dp);

  size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    int64_t offset = 0, elements = 0;
    size_t tensors = 0;  // how many tensors it holds
    size_t waiting = 0;  // of those, not ready yet this step
    std::unique_ptr<PendingOp> pending;
  };
  void start(Bucket& bucket, Communicator& dp);

  torch::Tensor flat_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // per tensor
  size_t next_ = 0;                // the first bucket not started this step
};

// Sequence parallelism: a weight replicated over TP (the norms) has seen only
// this rank's positions, so its gradient is the sum over the TP group. One
// all-reduce for all of `grads`, in place.
void sum_over_tp(const std::vector<torch::Tensor>& grads, Communicator& tp);

}  // namespace minipretrain
