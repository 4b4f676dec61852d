#include "minipretrain/train/adamw.h"

#include <cmath>

namespace minipretrain {

namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per task: large enough to amortize, small enough to balance

float* floats(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat && t.is_contiguous() && t.device().is_cpu(), "AdamW: ", what,
              " must be a contiguous fp32 CPU tensor");
  return t.data_ptr<float>();
}

}  // namespace

AdamW::AdamW(std::vector<torch::Tensor> parameters, AdamWOptions options, std::vector<bool> decay)
    : options_(options) {
  TORCH_CHECK(decay.empty() || decay.size() == parameters.size(), "AdamW: ", decay.size(), " decay flags for ",
              parameters.size(), " parameters");
  for (size_t i = 0; i < parameters.size(); ++i) {
    const torch::Tensor& p = parameters[i];
    slots_.push_back({p, torch::zeros_like(p), torch::zeros_like(p), decay.empty() ? p.dim() >= 2 : decay[i]});
  }
}

void AdamW::step(double lr, const std::vector<torch::Tensor>& grads, double grad_scale) {
  TORCH_CHECK(grads.size() == slots_.size(), "AdamW: ", grads.size(), " gradients for ", slots_.size(), " parameters");
  torch::NoGradGuard no_grad;
  ++steps_;
  const double correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(steps_));
  const double correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
  const float b1 = static_cast<float>(options_.beta1), b2 = static_cast<float>(options_.beta2);
  const float scale = static_cast<float>(grad_scale), step_size = static_cast<float>(lr / correction1);
  const float inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(correction2)), eps = static_cast<float>(options_.eps);
  if (!slots_.empty() && slots_.front().param.device().is_cuda()) {
    step_on_device(lr, grads, grad_scale);
    return;
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    float* p = floats(s.param, "a parameter");
    float* m = floats(s.exp_avg, "exp_avg");
    float* v = floats(s.exp_avg_sq, "exp_avg_sq");
    const float* g = floats(grads[i], "a gradient");
    const float decay = s.decay ? static_cast<float>(1.0 - lr * options_.weight_decay) : 1.0f;
    at::parallel_for(0, s.param.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const float grad = g[j] * scale;
        const float mj = b1 * m[j] + (1.0f - b1) * grad;
        const float vj = b2 * v[j] + (1.0f - b2) * grad * grad;
        m[j] = mj;
        v[j] = vj;
        p[j] = p[j] * decay - step_size * mj / (std::sqrt(vj) * inv_sqrt_c2 + eps);
      }
    });
  }
}

// The same update on CUDA: PyTorch's fused AdamW kernel
// (torch.optim.AdamW(fused=True)), one pass per tensor group, which corrects
// its moments itself and applies the clipping factor as its gradient scale
// (it writes the clipped gradients back; nothing reads them before the next
// zero_grad).
void AdamW::step_on_device(double lr, const std::vector<torch::Tensor>& grads, double grad_scale) {
  std::vector<torch::Tensor> params[2], exp_avg[2], exp_avg_sq[2], grad[2];  // [0]: decayed, [1]: not
  for (size_t i = 0; i < slots_.size(); ++i) {
    const int group = slots_[i].decay ? 0 : 1;
    params[group].push_back(slots_[i].param);
    exp_avg[group].push_back(slots_[i].exp_avg);
    exp_avg_sq[group].push_back(slots_[i].exp_avg_sq);
    grad[group].push_back(grads[i]);
  }
  const torch::TensorOptions fp32 = slots_.front().param.options().dtype(torch::kFloat);
  const torch::Tensor step = torch::full({}, static_cast<float>(steps_), fp32);
  c10::optional<torch::Tensor> unscale;  // the kernel divides each gradient by it
  if (grad_scale != 1.0) unscale = torch::full({}, static_cast<float>(1.0 / grad_scale), fp32);
  for (int group = 0; group < 2; ++group) {
    if (params[group].empty()) continue;
    const std::vector<torch::Tensor> steps(params[group].size(), step);
    at::_fused_adamw_(params[group], grad[group], exp_avg[group], exp_avg_sq[group], {}, steps, lr, options_.beta1,
                      options_.beta2, group == 0 ? options_.weight_decay : 0.0, options_.eps, /*amsgrad=*/false,
                      /*maximize=*/false, unscale, c10::nullopt);
  }
}

}  // namespace minipretrain
