#include "minipretrain/parallel/grad_sync.h"

namespace minipretrain {

GradientBuckets::GradientBuckets(torch::Tensor flat, const std::vector<int64_t>& sizes, int64_t bucket_bytes)
    : flat_(std::move(flat)) {
  const int64_t element = static_cast<int64_t>(flat_.element_size());
  int64_t offset = 0;
  for (int64_t n : sizes) {
    const bool full = !buckets_.empty() && (buckets_.back().elements + n) * element > bucket_bytes;
    if (buckets_.empty() || full) {
      buckets_.emplace_back();
      buckets_.back().offset = offset;
    }
    buckets_.back().elements += n;
    buckets_.back().tensors += 1;
    bucket_of_.push_back(buckets_.size() - 1);
    offset += n;
  }
  begin();
}

void GradientBuckets::begin() {
  for (Bucket& b : buckets_) {
    b.waiting = b.tensors;
    b.pending.reset();
  }
  next_ = 0;
}

void GradientBuckets::start(Bucket& bucket, Communicator& dp) {
  torch::NoGradGuard no_grad;
  torch::Tensor range = flat_.narrow(0, bucket.offset, bucket.elements);
  bucket.pending = dp.all_reduce_async(range, ReduceOp::Avg);
}

void GradientBuckets::ready(size_t tensor, Communicator& dp) {
  if (dp.size() == 1) return;
  Bucket& bucket = buckets_.at(bucket_of_.at(tensor));
  if (bucket.waiting > 0) bucket.waiting -= 1;
  while (next_ < buckets_.size() && buckets_[next_].waiting == 0) start(buckets_[next_++], dp);
}

void GradientBuckets::finish(Communicator& dp) {
  if (dp.size() == 1) return;
  while (next_ < buckets_.size()) start(buckets_[next_++], dp);
  for (Bucket& b : buckets_) b.pending->wait();
  begin();
}

void GradientBuckets::all_reduce_mean(Communicator& dp) {
  begin();
  finish(dp);
}

void sum_over_tp(const std::vector<torch::Tensor>& grads, Communicator& tp) {
  if (grads.empty() || tp.size() == 1) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& g : grads) flat.push_back(g.reshape({-1}));
  torch::Tensor joined = torch::cat(flat);
  tp.all_reduce(joined, ReduceOp::Sum);
  int64_t offset = 0;
  for (const torch::Tensor& g : grads) {
    g.copy_(joined.narrow(0, offset, g.numel()).view_as(g));
    offset += g.numel();
  }
}

}  // namespace minipretrain
