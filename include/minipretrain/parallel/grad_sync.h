// Data-parallel gradient averaging over one flat gradient buffer, in buckets
// that are contiguous ranges of it, each averaged in place with one
// collective and no copy:
//   - an all-reduce per bucket, buckets of up to `bucket_bytes` cut only
//     between tensors (every rank then holds the whole average);
//   - with the distributed optimizer (`shards` = the DP size), a
//     reduce-scatter per bucket, buckets cut anywhere into lengths that
//     divide by `shards`: rank r then holds the average of chunk r of each
//     bucket, the part of the buffer it updates (Megatron's layout). The
//     buffer is padded so that its length divides too.
//
// The collectives overlap the last backward, as DDP's do: ready(i) says that
// tensor i's gradient is final for the step, and a bucket starts once all of
// the tensors in it are. Buckets start in buffer order (a ready bucket waits
// for the ones before it), so every DP rank issues the same collectives in
// the same order; finish() starts what is left and waits for all.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

class GradientBuckets {
 public:
  // One bucket: elements [offset, offset + elements) of the buffer.
  struct Range {
    int64_t offset = 0, elements = 0;
  };

  // The buffer's length for tensors of `sizes` split over `shards` ranks.
  static int64_t padded_length(const std::vector<int64_t>& sizes, int64_t shards);
  // The buckets of a sharded fp32 buffer of `length` elements.
  static std::vector<Range> sharded_ranges(int64_t length, int64_t bucket_bytes, int64_t shards);

  // `sizes`: the elements of each tensor in the buffer, in buffer order;
  // `flat` is padded_length(sizes, shards) long. bucket_bytes 0: one
  // all-reduce per tensor, or one reduce-scatter for the whole buffer.
  GradientBuckets(torch::Tensor flat, const std::vector<int64_t>& sizes, int64_t bucket_bytes, int64_t shards = 1);

  // Before a step's first backward.
  void begin();
  // Tensor `tensor` (its index in `sizes`) has its final gradient.
  void ready(size_t tensor, Communicator& dp);
  // Averages what is left over `dp` and waits for every bucket.
  void finish(Communicator& dp);
  // The whole buffer at once, for gradients made without ready() calls.
  void reduce(Communicator& dp);

  size_t num_buckets() const { return buckets_.size(); }
  std::vector<Range> ranges() const;

 private:
  struct Bucket {
    Range range;
    size_t tensors = 0;  // how many tensors lie (partly) in it
    size_t waiting = 0;  // of those, not ready yet this step
    std::unique_ptr<PendingOp> pending;
  };
  void start(Bucket& bucket, Communicator& dp);

  torch::Tensor flat_;
  int64_t shards_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> buckets_of_;  // per tensor: its first and last bucket
  size_t next_ = 0;                                    // the first bucket not started this step
};

// Sequence parallelism: a weight replicated over TP (the norms) has seen only
// this rank's positions, so its gradient is the sum over the TP group. One
// all-reduce for all of `grads`, in place.
void sum_over_tp(const std::vector<torch::Tensor>& grads, Communicator& tp);

}  // namespace minipretrain
