// Rotary position embedding in the Hugging Face Llama convention: the two
// halves of each head form the (real, imaginary) pairs, rotate_half(x) =
// cat(-x2, x1), and frequency i is theta^(-2i / head_dim).
#pragma once

#include <torch/torch.h>

namespace minipretrain {

class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, int64_t max_positions, double theta);

  // x [batch, heads, seq, head_dim] -> x rotated by its positions 0..seq-1.
  torch::Tensor apply(const torch::Tensor& x) const;
  void to(const torch::Device& device);

 private:
  torch::Tensor cos_, sin_;  // [max_positions, head_dim]
};

}  // namespace minipretrain
