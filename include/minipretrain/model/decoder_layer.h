// One Llama decoder layer: x + attn(norm(x)), then h + mlp(norm(h)). With
// sequence parallelism the norms and residuals see [batch, seq / TP, hidden].
#pragma once

#include <memory>

#include <torch/torch.h>

#include "minipretrain/model/attention.h"
#include "minipretrain/model/mlp.h"
#include "minipretrain/model/rms_norm.h"

namespace minipretrain {

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, const TensorParallel& tp);
  torch::Tensor forward(const torch::Tensor& x, const RotaryEmbedding& rope);

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

}  // namespace minipretrain
