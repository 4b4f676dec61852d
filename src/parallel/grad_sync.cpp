#include "minipretrain/parallel/grad_sync.h"

#include <algorithm>
#include <numeric>

namespace minipretrain {

int64_t GradientBuckets::padded_length(const std::vector<int64_t>& sizes, int64_t shards) {
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  return (total + shards - 1) / shards * shards;
}

std::vector<GradientBuckets::Range> GradientBuckets::sharded_ranges(int64_t length, int64_t bucket_bytes,
                                                                    int64_t shards) {
  const int64_t per = bucket_bytes > 0 ? std::max(shards, bucket_bytes / 4 / shards * shards) : length;
  std::vector<Range> out;
  for (int64_t offset = 0; offset < length; offset += per) out.push_back({offset, std::min(per, length - offset)});
  return out;
}

GradientBuckets::GradientBuckets(torch::Tensor flat, const std::vector<int64_t>& sizes, int64_t bucket_bytes,
                                 int64_t shards)
    : flat_(std::move(flat)), shards_(shards) {
  TORCH_CHECK(flat_.numel() == padded_length(sizes, shards), "GradientBuckets: a buffer of ", flat_.numel(),
              " elements for ", padded_length(sizes, shards));
  const int64_t element = static_cast<int64_t>(flat_.element_size());
  if (shards_ == 1) {
    int64_t offset = 0;
    for (int64_t n : sizes) {
      const bool full = !buckets_.empty() && (buckets_.back().range.elements + n) * element > bucket_bytes;
      if (buckets_.empty() || full) {
        buckets_.emplace_back();
        buckets_.back().range.offset = offset;
      }
      buckets_.back().range.elements += n;
      buckets_of_.emplace_back(buckets_.size() - 1, buckets_.size() - 1);
      offset += n;
    }
  } else {
    TORCH_CHECK(element == 4, "GradientBuckets: a sharded buffer holds fp32");
    const std::vector<Range> ranges = sharded_ranges(flat_.numel(), bucket_bytes, shards_);
    for (const Range& r : ranges) {
      buckets_.emplace_back();
      buckets_.back().range = r;
    }
    const int64_t per = ranges.front().elements;  // all but the last are as long
    int64_t offset = 0;
    for (int64_t n : sizes) {
      const size_t first = static_cast<size_t>(offset / per);
      buckets_of_.emplace_back(first, std::max(first, static_cast<size_t>((offset + n - 1) / per)));
      offset += n;
    }
  }
  for (const auto& [first, last] : buckets_of_)
    for (size_t b = first; b <= last; ++b) buckets_[b].tensors += 1;
  begin();
}

std::vector<GradientBuckets::Range> GradientBuckets::ranges() const {
  std::vector<Range> out;
  for (const Bucket& b : buckets_) out.push_back(b.range);
  return out;
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
  torch::Tensor range = flat_.narrow(0, bucket.range.offset, bucket.range.elements);
  bucket.pending = shards_ == 1 ? dp.all_reduce_async(range, ReduceOp::Avg) : dp.reduce_scatter_async(range, ReduceOp::Avg);
}

void GradientBuckets::ready(size_t tensor, Communicator& dp) {
  if (dp.size() == 1) return;
  const auto [first, last] = buckets_of_.at(tensor);
  for (size_t b = first; b <= last; ++b)
    if (buckets_[b].waiting > 0) buckets_[b].waiting -= 1;
  while (next_ < buckets_.size() && buckets_[next_].waiting == 0) start(buckets_[next_++], dp);
}

void GradientBuckets::finish(Communicator& dp) {
  if (dp.size() == 1) return;
  while (next_ < buckets_.size()) start(buckets_[next_++], dp);
  for (Bucket& b : buckets_) b.pending->wait();
  begin();
}

void GradientBuckets::reduce(Communicator& dp) {
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
