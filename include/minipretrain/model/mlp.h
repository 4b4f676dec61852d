// SwiGLU MLP: down(silu(gate(x)) * up(x)), tensor parallel over the
// intermediate dimension: gate and up as one fused column-parallel GEMM
// (gate_up_proj; checkpoints still name them gate_proj and up_proj) entering
// the TP region once, down row-parallel leaving it (parallel/layers.h).
#pragma once

#include <memory>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/parallel/layers.h"

namespace minipretrain {

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const ModelConfig& config, const TensorParallel& tp);
  torch::Tensor forward(const torch::Tensor& x);

  ColumnParallelLinear gate_up_proj{nullptr};
  RowParallelLinear down_proj{nullptr};
};
TORCH_MODULE(MLP);

}  // namespace minipretrain
