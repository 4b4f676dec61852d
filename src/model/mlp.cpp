#include "minipretrain/model/mlp.h"

namespace minipretrain {

MLPImpl::MLPImpl(const ModelConfig& c, const TensorParallel& tp) {
  gate_up_proj = register_module(
      "gate_up_proj",
      ColumnParallelLinear(c.hidden_size, FusedOutputs{{"gate_proj", c.intermediate_size}, {"up_proj", c.intermediate_size}},
                           tp));
  down_proj = register_module("down_proj", RowParallelLinear(c.intermediate_size, c.hidden_size, tp));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  const std::vector<torch::Tensor> gate_up = gate_up_proj->split(gate_up_proj(x));
  return down_proj(torch::silu(gate_up[0]) * gate_up[1]);
}

}  // namespace minipretrain
