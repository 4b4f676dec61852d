// Grouped-query causal self-attention with RoPE, tensor parallel by heads.
// Each TP rank holds heads/TP query heads and kv_heads/TP key/value heads;
// query head i attends with kv head i / (heads / kv_heads), as in HF's repeat_kv.
// Communication: one copy_to_tp before Q, K, V (all-reduce in backward) and one
// reduce_from_tp after the output projection (all-reduce in forward).
#pragma once

#include <memory>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/model/rotary.h"
#include "minipretrain/parallel/layers.h"

namespace minipretrain {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, std::shared_ptr<Communicator> tp);
  // x [batch, seq, hidden] -> [batch, seq, hidden], replicated over TP.
  torch::Tensor forward(const torch::Tensor& x, const RotaryEmbedding& rope);

  ColumnParallelLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr};
  RowParallelLinear o_proj{nullptr};

 private:
  std::shared_ptr<Communicator> tp_;
  int64_t local_heads_, local_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

// Causal attention over [batch, heads, seq, head_dim]; k and v already
// repeated to the query heads. The fused kernel where LibTorch has it (>= 2.0).
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

}  // namespace minipretrain
