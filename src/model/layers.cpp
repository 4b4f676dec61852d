// The building blocks of a decoder layer: RMSNorm, RoPE, attention, MLP.
#include <cmath>

#include "minipretrain/model/decoder_layer.h"
#include "minipretrain/parallel/regions.h"

namespace minipretrain {

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

torch::Tensor RotaryEmbedding::apply(const torch::Tensor& x) const {
  const int64_t seq = x.size(2), half = x.size(3) / 2;
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos_.narrow(0, 0, seq) + rotated * sin_.narrow(0, 0, seq);
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#else
  const int64_t seq = q.size(2);
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor future = torch::ones({seq, seq}, q.options().dtype(torch::kBool)).triu(1);
  scores = scores.masked_fill(future, -INFINITY);
  return torch::matmul(torch::softmax(scores, -1, torch::kFloat).to(q.scalar_type()), v);
#endif
}

AttentionImpl::AttentionImpl(const ModelConfig& c, std::shared_ptr<Communicator> tp)
    : tp_(std::move(tp)),
      local_heads_(c.num_attention_heads / tp_->size()),
      local_kv_heads_(c.kv_heads() / tp_->size()),
      head_dim_(c.head_dim()) {
  const int64_t h = c.hidden_size, d = head_dim_;
  q_proj = register_module("q_proj", ColumnParallelLinear(h, c.num_attention_heads * d, *tp_));
  k_proj = register_module("k_proj", ColumnParallelLinear(h, c.kv_heads() * d, *tp_));
  v_proj = register_module("v_proj", ColumnParallelLinear(h, c.kv_heads() * d, *tp_));
  o_proj = register_module("o_proj", RowParallelLinear(c.num_attention_heads * d, h, *tp_));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const RotaryEmbedding& rope) {
  const int64_t batch = x.size(0), seq = x.size(1);
  torch::Tensor shared = copy_to_tp(x, *tp_);
  auto heads = [&](const torch::Tensor& t, int64_t n) { return t.view({batch, seq, n, head_dim_}).transpose(1, 2); };
  torch::Tensor q = rope.apply(heads(q_proj(shared), local_heads_));
  torch::Tensor k = rope.apply(heads(k_proj(shared), local_kv_heads_));
  torch::Tensor v = heads(v_proj(shared), local_kv_heads_);
  const int64_t group = local_heads_ / local_kv_heads_;
  if (group > 1) {
    k = k.repeat_interleave(group, 1);
    v = v.repeat_interleave(group, 1);
  }
  torch::Tensor out = causal_attention(q, k, v).transpose(1, 2).reshape({batch, seq, local_heads_ * head_dim_});
  return reduce_from_tp(o_proj(out), *tp_);
}

MLPImpl::MLPImpl(const ModelConfig& c, std::shared_ptr<Communicator> tp) : tp_(std::move(tp)) {
  gate_proj = register_module("gate_proj", ColumnParallelLinear(c.hidden_size, c.intermediate_size, *tp_));
  up_proj = register_module("up_proj", ColumnParallelLinear(c.hidden_size, c.intermediate_size, *tp_));
  down_proj = register_module("down_proj", RowParallelLinear(c.intermediate_size, c.hidden_size, *tp_));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  torch::Tensor shared = copy_to_tp(x, *tp_);
  return reduce_from_tp(down_proj(torch::silu(gate_proj(shared)) * up_proj(shared)), *tp_);
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
