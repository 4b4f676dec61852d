#include "minipretrain/model/attention.h"

namespace minipretrain {

// LibTorch fuses attention (flash and memory-efficient kernels
// on GPUs): the scores are never materialized, and enable_gqa broadcasts each
// kv head over its consecutive query heads, the grouping used below.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt, /*enable_gqa=*/true);
}

AttentionImpl::AttentionImpl(const ModelConfig& c, const TensorParallel& tp)
    : local_heads_(c.num_attention_heads / tp.group->size()),
      local_kv_heads_(c.kv_heads() / tp.group->size()),
      head_dim_(c.head_dim()) {
  const int64_t h = c.hidden_size, d = head_dim_;
  qkv_proj = register_module(
      "qkv_proj",
      ColumnParallelLinear(h, FusedOutputs{{"q_proj", c.num_attention_heads * d}, {"k_proj", c.kv_heads() * d},
                                      {"v_proj", c.kv_heads() * d}},
                           tp));
  o_proj = register_module("o_proj", RowParallelLinear(c.num_attention_heads * d, h, tp));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const RotaryEmbedding& rope) {
  const std::vector<torch::Tensor> qkv = qkv_proj->split(qkv_proj(x));
  const int64_t batch = qkv[0].size(0), seq = qkv[0].size(1);  // the whole sequence
  auto heads = [&](const torch::Tensor& t, int64_t n) { return t.reshape({batch, seq, n, head_dim_}).transpose(1, 2); };
  torch::Tensor q = rope.apply(heads(qkv[0], local_heads_));
  torch::Tensor k = rope.apply(heads(qkv[1], local_kv_heads_));
  torch::Tensor v = heads(qkv[2], local_kv_heads_);
  torch::Tensor out = causal_attention(q, k, v).transpose(1, 2).reshape({batch, seq, local_heads_ * head_dim_});
  return o_proj(out);
}

}  // namespace minipretrain
