// Run configuration: the five structs of DESIGN.md, their JSON form and their
// validation. Every field has one name, used for the JSON key (hidden_size) and
// for the flag (--hidden-size); see config/fields.h.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "minipretrain/config/choices.h"

namespace minipretrain {

// A bad configuration. The message is one line naming the field and the value;
// the binary prints it and exits with code 2.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The largest step a run may reach or a checkpoint may name: far past any run,
// and small enough that steps times any valid global batch fit in int64.
constexpr int64_t kMaxStep = int64_t{1} << 32;
// The largest global batch, in samples (kMaxStep x this fits in int64).
constexpr int64_t kMaxGlobalBatch = int64_t{1} << 30;

struct ModelConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_layers = 12;
  int64_t num_attention_heads = 12;
  std::optional<int64_t> num_key_value_heads;  // unset: equal to the heads
  int64_t max_seq_length = 512;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  double init_std = 0.02;

  int64_t kv_heads() const { return num_key_value_heads.value_or(num_attention_heads); }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

struct TrainConfig {
  int64_t micro_batch_size = 4;
  std::optional<int64_t> global_batch_size;  // unset: 32, or derived from microbatches
  int64_t max_steps = 10000;
  double learning_rate = 3e-4;
  double min_lr = 3e-5;
  double weight_decay = 0.01;
  double grad_clip = 1.0;
  double warmup_ratio = 0.05;
  int64_t seed = 1234;
  DeviceChoice device = DeviceChoice::Auto;
  int64_t num_threads = 0;  // 0: cores on this node / processes on this node
  std::string resume;       // "", a checkpoint directory, or "auto"
  std::string init_from;    // weights to start from (a checkpoint or an HF directory), when not resuming
  std::string dump_first_step;  // directory: write step 1's logits and gradients
  Precision precision = Precision::Auto;
  Recompute recompute = Recompute::None;
  int64_t max_skipped_steps = 5;   // consecutive non-finite steps before the run gives up
};

struct ParallelConfig {
  int64_t tensor_parallel_size = 1;
  bool sequence_parallel = false;  // split the activations outside the TP regions along the sequence
  int64_t pipeline_parallel_size = 1;
  std::optional<int64_t> num_microbatches;  // unset: global / (micro x DP)
  PipelineSchedule pipeline_schedule = PipelineSchedule::OneFOneB;
  int64_t virtual_pipeline_stages = 1;     // model chunks per stage (interleaved-1f1b)
  // Decoder layers per virtual stage (per stage without interleaving), in
  // pipeline order; empty: balanced by compute, counting the embedding on
  // the first and the LM head and loss on the last. Filled by resolve().
  std::vector<int64_t> pipeline_layer_split;
  int64_t dist_timeout = 600;  // seconds
  int64_t ddp_bucket_mb = 25;  // DP gradient all-reduce bucket size; 0: one per tensor
  bool use_distributed_optimizer = false;  // ZeRO-1: master weights and AdamW state sharded over DP
  std::string master_addr;     // empty: MASTER_ADDR from the environment
  int64_t master_port = 0;     // 0: MASTER_PORT from the environment
};

struct DataConfig {
  std::vector<std::string> data_path;  // Megatron indexed datasets: [weight] prefix ...
  std::string data_dir;                // our packed format; neither: the synthetic corpus
  int64_t num_train_samples = 10000;
  std::vector<std::string> valid_data_path;
  std::string split = "100,0";  // train,valid shares of the training data
  int64_t eval_interval = 1000;
  int64_t eval_iters = 10;
};

struct LogConfig {
  std::string output_dir = "./checkpoints";
  int64_t log_interval = 10;
  int64_t save_interval = 1000;
  int64_t exit_interval = 0;  // >0: save and exit after a step divisible by it
  double exit_duration_mins = 0;  // >0: save and exit once the run has taken this long
  int64_t save_keep = 0;          // >0: keep only the newest N checkpoints
  std::string tensorboard_dir;    // non-empty: rank 0 writes TensorBoard event files here
  bool async_save = false;        // write checkpoints on a thread from a snapshot while training goes on
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  ParallelConfig parallel;
  DataConfig data;
  LogConfig log;

  // Filled by resolve(): the data-parallel size and the batch arithmetic.
  int64_t data_parallel_size = 1;

  // Checks every field and the layout for `world_size` processes, then fills
  // the derived values (DP, microbatches, global batch, kv heads). Throws
  // ConfigError on the first problem found.
  void resolve(int64_t world_size);

  int64_t microbatches() const { return *parallel.num_microbatches; }
  int64_t global_batch() const { return *train.global_batch_size; }
};

// JSON <-> Config. from_json rejects unknown keys and wrong types by name.
nlohmann::json to_json(const Config& config);
void apply_json(Config& config, const nlohmann::json& json, const std::string& origin);
Config load_config_file(const std::string& path);

// "98,2" -> {98, 2}; throws ConfigError for anything else.
std::pair<double, double> parse_split(const std::string& split);

// Decoder layers per stage that balance the stages' compute: the last stage
// also runs the final norm, the LM head and the loss (DESIGN.md invariant 10).
std::vector<int64_t> balanced_layer_split(const ModelConfig& model, int64_t stages);

// Vocabulary rows padded so that every tensor-parallel rank holds the same
// number; padded rows never win and never count in the loss.
int64_t padded_vocab_size(int64_t vocab_size, int64_t tensor_parallel_size);

}  // namespace minipretrain
