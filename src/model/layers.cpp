// The building blocks of a decoder layer: RMSNorm, RoPE, attention, MLP.
#include <cmath>

#include <torch/version.h>

#include "minipretrain/model/decoder_layer.h"
#include "minipretrain/parallel/regions.h"

namespace minipretrain {

using Outputs = std::vector<std::pair<std::string, int64_t>>;  // the parts of a fused column-parallel GEMM

RMSNormImpl::RMSNormImpl(int64_t hidden_size, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({hidden_size}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  torch::Tensor xf = x.to(torch::kFloat);
  torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return normed.to(x.scalar_type()) * weight;
}

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

// LibTorch fuses attention (flash and memory-efficient kernels
// on GPUs): the scores are never materialized, and enable_gqa broadcasts each
// kv head over its consecutive query heads, the grouping used below.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt, /*enable_gqa=*/true);
}

AttentionImpl::AttentionImpl(const ModelConfig& c, std::shared_ptr<Communicator> tp)
    : tp_(std::move(tp)),
      local_heads_(c.num_attention_heads / tp_->size()),
      local_kv_heads_(c.kv_heads() / tp_->size()),
      head_dim_(c.head_dim()) {
  const int64_t h = c.hidden_size, d = head_dim_;
  qkv_proj = register_module(
      "qkv_proj",
      ColumnParallelLinear(h, Outputs{{"q_proj", c.num_attention_heads * d}, {"k_proj", c.kv_heads() * d},
                                      {"v_proj", c.kv_heads() * d}},
                           *tp_));
  o_proj = register_module("o_proj", RowParallelLinear(c.num_attention_heads * d, h, *tp_));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const RotaryEmbedding& rope) {
  const int64_t batch = x.size(0), seq = x.size(1);
  const std::vector<torch::Tensor> qkv = qkv_proj->split(qkv_proj(copy_to_tp(x, *tp_)));
  auto heads = [&](const torch::Tensor& t, int64_t n) { return t.reshape({batch, seq, n, head_dim_}).transpose(1, 2); };
  torch::Tensor q = rope.apply(heads(qkv[0], local_heads_));
  torch::Tensor k = rope.apply(heads(qkv[1], local_kv_heads_));
  torch::Tensor v = heads(qkv[2], local_kv_heads_);
  torch::Tensor out = causal_attention(q, k, v).transpose(1, 2).reshape({batch, seq, local_heads_ * head_dim_});
  return reduce_from_tp(o_proj(out), *tp_);
}

MLPImpl::MLPImpl(const ModelConfig& c, std::shared_ptr<Communicator> tp) : tp_(std::move(tp)) {
  gate_up_proj = register_module(
      "gate_up_proj",
      ColumnParallelLinear(c.hidden_size, Outputs{{"gate_proj", c.intermediate_size}, {"up_proj", c.intermediate_size}},
                           *tp_));
  down_proj = register_module("down_proj", RowParallelLinear(c.intermediate_size, c.hidden_size, *tp_));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  const std::vector<torch::Tensor> gate_up = gate_up_proj->split(gate_up_proj(copy_to_tp(x, *tp_)));
  return reduce_from_tp(down_proj(torch::silu(gate_up[0]) * gate_up[1]), *tp_);
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, std::shared_ptr<Communicator> tp) {
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
