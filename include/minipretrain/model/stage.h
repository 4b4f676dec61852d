// The part of the Llama model one rank holds: one contiguous slice of decoder
// layers, or with interleaved pipeline schedules V of them (its chunks, one
// per virtual stage), plus the embedding on the first pipeline stage and the
// final norm, LM head and loss on the last. With PP = TP = 1 it is the whole
// model.
//
// Tensors are named as in Hugging Face Llama with global layer indices
// (model.layers.7.mlp.up_proj.weight) whatever chunks hold them, so
// checkpoints and exports do not depend on the layout. Some live inside a
// fused parameter (qkv_proj, gate_up_proj): tensors() says where each one is.
// initialize() makes every full tensor a function of (seed, name) only and
// keeps this rank's shard, so every layout starts from the same weights
// (DESIGN.md invariant 2).
#pragma once

#include <map>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/model/decoder_layer.h"
#include "minipretrain/parallel/layers.h"
#include "minipretrain/parallel/pipeline_stage.h"
#include "minipretrain/parallel/shard.h"

namespace minipretrain {

struct StagePosition {
  struct Chunk {
    int64_t first_layer = 0;
    int64_t num_layers = 0;
  };
  int64_t stage = 0;
  int64_t num_stages = 1;
  std::vector<Chunk> chunks;  // empty: one chunk of every layer
  bool first() const { return stage == 0; }
  bool last() const { return stage == num_stages - 1; }
  // Pipeline rank `stage` of `num_stages` in a model cut by `split` (layers
  // per virtual stage, in pipeline order): with V = split.size() / num_stages
  // chunks per rank, rank r holds virtual stages r, r + PP, ... (Megatron's
  // interleaved layout). Without num_stages, one chunk per stage.
  static StagePosition of(const std::vector<int64_t>& split, int64_t stage, int64_t num_stages);
  static StagePosition of(const std::vector<int64_t>& split, int64_t stage);
};

// Where a named full tensor's shard lives on this rank: rows [row, row +
// rows) of `parameter`.
struct TensorSlot {
  std::string parameter;
  ShardSpec spec;
  int64_t row = 0;
  int64_t rows = 0;
  // This slot's slice of `physical`: the parameter itself, its gradient, or
  // anything else shaped like it (the AdamW moments).
  torch::Tensor of(const torch::Tensor& physical) const { return physical.narrow(0, row, rows); }
};

class StageImpl : public torch::nn::Module, public PipelineStage {
 public:
  StageImpl(const ModelConfig& config, StagePosition position, TensorParallel tp);

  void initialize(int64_t seed);
  void to_device(const torch::Device& device);
  // Recompute each decoder layer in backward instead of keeping its activations.
  void set_recompute(bool recompute) { recompute_ = recompute; }

  // Chunk 0 of the first stage: token ids [batch, seq]; other chunks: hidden
  // [batch, seq, H] ([batch, seq / TP, H] with sequence parallelism). Returns
  // hidden states, or from the last chunk of the last stage this rank's
  // logits [batch, seq, V_pad / TP].
  torch::Tensor forward(const torch::Tensor& input, int64_t chunk) override;
  // Every chunk in turn: the whole model when this rank holds all of it.
  torch::Tensor forward(const torch::Tensor& input);
  // Mean per-token cross-entropy of the last stage's local logits.
  torch::Tensor loss(const torch::Tensor& logits_local, const torch::Tensor& targets) override;
  bool is_first() const override { return position_.first(); }
  bool is_last() const override { return position_.last(); }
  int64_t index() const override { return position_.stage; }
  int64_t num_chunks() const override { return static_cast<int64_t>(chunk_layers_.size()); }
  torch::TensorOptions activation_options() const override;

  // Every named full tensor this rank holds a shard of (replicated ones included).
  const std::map<std::string, TensorSlot>& tensors() const { return tensors_; }
  const StagePosition& position() const { return position_; }

 private:
  ModelConfig config_;
  StagePosition position_;
  TensorParallel tp_;
  RotaryEmbedding rope_;
  VocabParallelEmbedding embed_tokens_{nullptr};
  std::vector<std::vector<DecoderLayer>> chunk_layers_;
  RMSNorm norm_{nullptr};
  ColumnParallelLinear lm_head_{nullptr};
  std::map<std::string, TensorSlot> tensors_;
  bool recompute_ = false;
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
