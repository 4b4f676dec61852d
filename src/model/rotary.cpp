#include "minipretrain/model/rotary.h"

namespace minipretrain {

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, int64_t max_positions, double theta) {
  auto options = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor inv_freq = 1.0 / torch::pow(theta, torch::arange(0, head_dim, 2, options) / head_dim);
  torch::Tensor angles = torch::outer(torch::arange(max_positions, options), inv_freq);
  torch::Tensor both = torch::cat({angles, angles}, -1);
  cos_ = both.cos().to(torch::kFloat);
  sin_ = both.sin().to(torch::kFloat);
}

void RotaryEmbedding::to(const torch::Device& device) {
  cos_ = cos_.to(device);
  sin_ = sin_.to(device);
}

// The tables follow x's dtype, as in HF: bf16 activations stay bf16. The two
// halves come from unbind, not narrow, so backward stacks them instead of
// scattering each into a zeroed full-size gradient.
torch::Tensor RotaryEmbedding::apply(const torch::Tensor& x) const {
  const int64_t seq = x.size(2), half = x.size(3) / 2;
  const torch::Tensor cos = cos_.narrow(0, 0, seq).narrow(1, 0, half).to(x.scalar_type());
  const torch::Tensor sin = sin_.narrow(0, 0, seq).narrow(1, 0, half).to(x.scalar_type());
  const std::vector<torch::Tensor> halves = x.unflatten(-1, {2, half}).unbind(-2);
  const torch::Tensor& x1 = halves[0];
  const torch::Tensor& x2 = halves[1];
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

}  // namespace minipretrain
