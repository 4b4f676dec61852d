// RMSNorm (Llama): x / sqrt(mean(x^2) + eps) * weight, computed in fp32.
#pragma once

#include <torch/torch.h>

namespace minipretrain {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t hidden_size, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace minipretrain
