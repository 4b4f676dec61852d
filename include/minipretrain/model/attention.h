// Grouped-query causal self-attention with RoPE, tensor parallel by heads.
// Each TP rank holds heads/TP query heads and kv_heads/TP key/value heads;
// query head i attends with kv head i / (heads / kv_heads), as in HF's repeat_kv.
// Q, K and V come from one fused GEMM (qkv_proj; checkpoints still name them
// q_proj, k_proj, v_proj). Communication: the layers' own, where the fused
// QKV GEMM enters the TP region and o_proj leaves it (parallel/layers.h).
#pragma once

#include <memory>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/model/rotary.h"
#include "minipretrain/parallel/layers.h"

namespace minipretrain {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, const TensorParallel& tp);
  // x [batch, seq, hidden] -> [batch, seq, hidden], replicated over TP; with
  // sequence parallelism both [batch, seq / TP, hidden].
  torch::Tensor forward(const torch::Tensor& x, const RotaryEmbedding& rope);

  ColumnParallelLinear qkv_proj{nullptr};
  RowParallelLinear o_proj{nullptr};

 private:
  int64_t local_heads_, local_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

// Causal attention of q [batch, heads, seq, head_dim] over k and v [batch,
// kv_heads, seq, head_dim]: query head i reads kv head i / (heads / kv_heads)
// without copying K and V per query head. Softmax in fp32.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

}  // namespace minipretrain
