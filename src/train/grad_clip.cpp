#include "minipretrain/train/grad_clip.h"

#include <algorithm>
#include <cmath>

namespace minipretrain {
namespace {

// Elements per partial sum: the chunks, not the threads, fix the order of the additions.
constexpr int64_t kGrain = 1 << 15;

}  // namespace

double global_grad_norm(const std::vector<torch::Tensor>& grads, const std::vector<bool>& counted, Communicator& tp,
                        Communicator& pp, Communicator* dp) {
  torch::NoGradGuard no_grad;
  double total = 0.0;
  std::vector<torch::Tensor> on_device;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!counted[i]) continue;
    const torch::Tensor& grad = grads[i];
    if (!grad.device().is_cpu()) {  // normed together on the device below
      on_device.push_back(grad);
      continue;
    }
    TORCH_CHECK(grad.scalar_type() == torch::kFloat && grad.is_contiguous(), "gradient norm: gradients must be contiguous fp32");
    const float* g = grad.data_ptr<float>();
    // One partial sum per fixed chunk, added in chunk order: the same result for any thread count.
    const int64_t n = grad.numel(), chunks = (n + kGrain - 1) / kGrain;
    std::vector<double> partial(chunks, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        double sum = 0.0;
        for (int64_t j = c * kGrain; j < std::min(n, (c + 1) * kGrain); ++j) sum += static_cast<double>(g[j]) * g[j];
        partial[c] = sum;
      }
    });
    for (double p : partial) total += p;
  }
  torch::Tensor sum_sq = torch::tensor({total}, torch::kDouble);
  if (!grads.empty()) sum_sq = sum_sq.to(grads.front().device());
  if (!on_device.empty()) sum_sq.add_(torch::stack(at::_foreach_norm(on_device)).to(torch::kDouble).pow(2).sum());
  tp.all_reduce(sum_sq, ReduceOp::Sum);
  pp.all_reduce(sum_sq, ReduceOp::Sum);
  if (dp) dp->all_reduce(sum_sq, ReduceOp::Sum);
  return std::sqrt(sum_sq.item<double>());
}

double clip_factor(double norm, double max_norm) {
  return max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
}

}  // namespace minipretrain
