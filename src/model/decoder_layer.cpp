#include "minipretrain/model/decoder_layer.h"

namespace minipretrain {

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, const TensorParallel& tp) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  self_attn = register_module("self_attn", Attention(c, tp));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  mlp = register_module("mlp", MLP(c, tp));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const RotaryEmbedding& rope) {
  torch::Tensor h = x + self_attn(input_layernorm(x), rope);
  return h + mlp(post_attention_layernorm(h));
}

}  // namespace minipretrain
