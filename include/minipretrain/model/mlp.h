// SwiGLU MLP: down(silu(gate(x)) * up(x)), tensor parallel over the
// intermediate dimension: gate and up as one fused column-parallel GEMM
// (gate_up_proj; checkpoints still name them gate_proj and up_proj) behind one
// copy_to_tp, down row-parallel followed by one reduce_from_tp.
#pragma once

#include <memory>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/parallel/layers.h"

namespace minipretrain {

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const ModelConfig& config, std::shared_ptr<Communicator> tp);
  torch::Tensor forward(const torch::Tensor& x);

  ColumnParallelLinear gate_up_proj{nullptr};
  RowParallelLinear down_proj{nullptr};

 private:
  std::shared_ptr<Communicator> tp_;
};
TORCH_MODULE(MLP);

}  // namespace minipretrain
