// The part of the Llama model one rank holds: a contiguous slice of decoder
// layers, plus the embedding on the first pipeline stage and the final norm,
// LM head and loss on the last. With PP = TP = 1 it is the whole model.
//
// Parameter names are Hugging Face Llama's with global layer indices
// (model.layers.7.mlp.up_proj.weight). initialize() makes every full tensor a
// function of (seed, name) only and keeps this rank's shard, so every layout
// starts from the same weights (DESIGN.md invariant 2).
#pragma once

#include <map>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/model/decoder_layer.h"
#include "minipretrain/parallel/layers.h"
#include "minipretrain/parallel/shard.h"

namespace minipretrain {

struct StagePosition {
  int64_t stage = 0;
  int64_t num_stages = 1;
  bool first() const { return stage == 0; }
  bool last() const { return stage == num_stages - 1; }
};

class StageImpl : public torch::nn::Module {
 public:
  StageImpl(const ModelConfig& config, StagePosition position, std::shared_ptr<Communicator> tp);

  void initialize(int64_t seed);
  void to_device(const torch::Device& device);

  // First stage: token ids [batch, seq]; other stages: hidden [batch, seq, H].
  // Returns hidden states, or on the last stage this rank's logits
  // [batch, seq, V_pad / TP].
  torch::Tensor forward(const torch::Tensor& input);
  // Mean per-token cross-entropy of the last stage's local logits.
  torch::Tensor loss(const torch::Tensor& logits_local, const torch::Tensor& targets);

  // Every parameter's place in its full tensor (replicated ones included).
  const std::map<std::string, ShardSpec>& shard_specs() const { return specs_; }
  const StagePosition& position() const { return position_; }
  int64_t first_layer() const { return first_layer_; }
  int64_t num_local_layers() const { return static_cast<int64_t>(layers_.size()); }

 private:
  ModelConfig config_;
  StagePosition position_;
  std::shared_ptr<Communicator> tp_;
  int64_t first_layer_ = 0;
  RotaryEmbedding rope_;
  VocabParallelEmbedding embed_tokens_{nullptr};
  std::vector<DecoderLayer> layers_;
  RMSNorm norm_{nullptr};
  ColumnParallelLinear lm_head_{nullptr};
  std::map<std::string, ShardSpec> specs_;
};
TORCH_MODULE(Stage);

// Exact parameter counts of the full model, by kind, from the config alone.
struct ParameterCount {
  int64_t embedding = 0, attention = 0, mlp = 0, norms = 0, lm_head = 0;
  int64_t total() const { return embedding + attention + mlp + norms + lm_head; }
  int64_t per_layer_attention = 0, per_layer_mlp = 0, per_layer_norms = 0;
};
ParameterCount count_parameters(const ModelConfig& config);

}  // namespace minipretrain
