#include "minipretrain/parallel/grad_sync.h"

namespace minipretrain {

GradientBuckets::GradientBuckets(torch::Tensor flat, const std::vector<int64_t>& sizes, int64_t bucket_bytes)
    : flat_(std::move(flat)) {
  const int64_t element = static_cast<int64_t>(flat_.element_size());
  int64_t offset = 0;
  for (int64_t n : sizes) {
    const bool full = !buckets_.empty() && (buckets_.back().second + n) * element > bucket_bytes;
    if (buckets_.empty() || full) buckets_.emplace_back(offset, 0);
    buckets_.back().second += n;
    offset += n;
  }
}

void GradientBuckets::all_reduce_mean(Communicator& dp) {
  if (dp.size() == 1) return;
  torch::NoGradGuard no_grad;
  for (const auto& [offset, elements] : buckets_) {
    torch::Tensor bucket = flat_.narrow(0, offset, elements);
    dp.all_reduce(bucket, ReduceOp::Avg);
  }
}

}  // namespace minipretrain
