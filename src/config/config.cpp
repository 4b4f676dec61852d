#include "minipretrain/config/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "minipretrain/config/fields.h"
#include "minipretrain/config/json_input.h"

namespace minipretrain {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

void require_positive(const std::string& key, int64_t value) {
  require(value > 0, key + " must be positive, got " + std::to_string(value));
}

// Positive and at most `max`: sizes far past any model this tool trains are
// refused before anything is allocated or split by them, and products of
// them (batch x microbatches x DP, tokens per step) stay inside int64.
void require_size(const std::string& key, int64_t value, int64_t max) {
  require_positive(key, value);
  require(value <= max, key + " " + std::to_string(value) + " is more than " + std::to_string(max) + " (the most allowed)");
}

std::string str(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

void validate_model(const ModelConfig& m) {
  require_size("vocab_size", m.vocab_size, int64_t{1} << 24);
  require_size("hidden_size", m.hidden_size, int64_t{1} << 17);
  require_size("intermediate_size", m.intermediate_size, int64_t{1} << 19);
  require_size("num_layers", m.num_layers, 4096);
  require_size("num_attention_heads", m.num_attention_heads, 4096);
  require_size("max_seq_length", m.max_seq_length, int64_t{1} << 20);
  if (m.num_key_value_heads) require_size("num_key_value_heads", *m.num_key_value_heads, 4096);
  require(m.hidden_size % m.num_attention_heads == 0,
          "hidden_size " + std::to_string(m.hidden_size) + " is not divisible by num_attention_heads " +
              std::to_string(m.num_attention_heads));
  require(m.head_dim() % 2 == 0, "head dimension hidden_size / num_attention_heads = " +
                                     std::to_string(m.head_dim()) + " must be even for RoPE");
  require(m.num_attention_heads % m.kv_heads() == 0,
          "num_attention_heads " + std::to_string(m.num_attention_heads) +
              " is not divisible by num_key_value_heads " + std::to_string(m.kv_heads()));
  require(m.rope_theta > 0, "rope_theta must be positive, got " + str(m.rope_theta));
  require(m.rms_norm_eps > 0, "rms_norm_eps must be positive, got " + str(m.rms_norm_eps));
  require(m.init_std > 0, "init_std must be positive, got " + str(m.init_std));
}

void validate_train(const TrainConfig& t) {
  require_size("micro_batch_size", t.micro_batch_size, int64_t{1} << 20);
  if (t.global_batch_size) require_size("global_batch_size", *t.global_batch_size, kMaxGlobalBatch);
  require_size("max_steps", t.max_steps, kMaxStep);
  require(t.learning_rate > 0, "learning_rate must be positive, got " + str(t.learning_rate));
  require(t.min_lr >= 0, "min_lr must not be negative, got " + str(t.min_lr));
  require(t.min_lr <= t.learning_rate,
          "min_lr " + str(t.min_lr) + " is greater than learning_rate " + str(t.learning_rate));
  require(t.weight_decay >= 0, "weight_decay must not be negative, got " + str(t.weight_decay));
  require(t.grad_clip >= 0, "grad_clip must not be negative, got " + str(t.grad_clip));
  require(t.warmup_ratio >= 0 && t.warmup_ratio <= 1,
          "warmup_ratio must be in [0, 1], got " + str(t.warmup_ratio));
  require_positive("max_skipped_steps", t.max_skipped_steps);
  require(t.num_threads >= 0, "num_threads must not be negative, got " + std::to_string(t.num_threads));
}

void validate_layout(const Config& c, int64_t world_size) {
  const ParallelConfig& p = c.parallel;
  const ModelConfig& m = c.model;
  require_size("tensor_parallel_size", p.tensor_parallel_size, 4096);
  require_size("pipeline_parallel_size", p.pipeline_parallel_size, 4096);
  require_positive("dist_timeout", p.dist_timeout);
  require(p.ddp_bucket_mb >= 0, "ddp_bucket_mb must not be negative, got " + std::to_string(p.ddp_bucket_mb));
  require_positive("virtual_pipeline_stages", p.virtual_pipeline_stages);
  const int64_t tp = p.tensor_parallel_size, pp = p.pipeline_parallel_size, v = p.virtual_pipeline_stages;
  if (p.pipeline_schedule == PipelineSchedule::Interleaved1F1B) {
    require(pp >= 2, "pipeline_schedule interleaved-1f1b needs pipeline_parallel_size 2 or more, got " +
                         std::to_string(pp));
    require(v >= 2, "pipeline_schedule interleaved-1f1b needs virtual_pipeline_stages 2 or more (with 1 it is 1f1b), "
                    "got " + std::to_string(v));
  } else {
    require(v == 1, "virtual_pipeline_stages " + std::to_string(v) + " needs pipeline_schedule interleaved-1f1b, got " +
                        name_of(p.pipeline_schedule));
  }
  require(world_size % (tp * pp) == 0,
          "world size " + std::to_string(world_size) + " is not divisible by tensor_parallel_size " +
              std::to_string(tp) + " x pipeline_parallel_size " + std::to_string(pp));
  require(m.num_attention_heads % tp == 0,
          "num_attention_heads " + std::to_string(m.num_attention_heads) +
              " is not divisible by tensor_parallel_size " + std::to_string(tp));
  require(m.kv_heads() % tp == 0, "num_key_value_heads " + std::to_string(m.kv_heads()) +
                                      " is not divisible by tensor_parallel_size " + std::to_string(tp));
  require(m.intermediate_size % tp == 0,
          "intermediate_size " + std::to_string(m.intermediate_size) +
              " is not divisible by tensor_parallel_size " + std::to_string(tp));
  if (p.sequence_parallel) {
    require(tp >= 2, "sequence_parallel needs tensor_parallel_size 2 or more, got " + std::to_string(tp));
    require(m.max_seq_length % tp == 0, "sequence_parallel: max_seq_length " + std::to_string(m.max_seq_length) +
                                            " is not divisible by tensor_parallel_size " + std::to_string(tp));
  }
  const std::vector<int64_t>& split = p.pipeline_layer_split;
  const std::string stages = v == 1 ? std::to_string(pp) + " pipeline stages"
                                    : std::to_string(pp * v) + " virtual pipeline stages (" + std::to_string(pp) +
                                          " stages x virtual_pipeline_stages " + std::to_string(v) + ")";
  if (split.empty()) {
    require(m.num_layers >= pp * v, "num_layers " + std::to_string(m.num_layers) + " is fewer than " +
                                        (v == 1 ? "pipeline_parallel_size " + std::to_string(pp) : "the " + stages) +
                                        ": every stage needs a layer");
    return;
  }
  std::string text;
  int64_t total = 0;
  for (int64_t n : split) {
    text += (text.empty() ? "" : ",") + std::to_string(n);
    total += n;
  }
  require(static_cast<int64_t>(split.size()) == pp * v,
          "pipeline_layer_split " + text + " has " + std::to_string(split.size()) + " entries for " + stages);
  require(std::all_of(split.begin(), split.end(), [](int64_t n) { return n > 0; }),
          "pipeline_layer_split " + text + ": every stage needs at least one layer");
  require(total == m.num_layers, "pipeline_layer_split " + text + " adds up to " + std::to_string(total) +
                                     " layers, the model has num_layers " + std::to_string(m.num_layers));
}

// DESIGN.md: global = micro x microbatches x DP; an explicit microbatch count
// wins and a global batch that contradicts it is an error.
void resolve_batch(Config& c) {
  const int64_t micro = c.train.micro_batch_size, dp = c.data_parallel_size;
  auto& global = c.train.global_batch_size;
  auto& microbatches = c.parallel.num_microbatches;
  if (microbatches) {
    require_size("num_microbatches", *microbatches, int64_t{1} << 20);
    const int64_t implied = micro * *microbatches * dp;  // each factor is at most 2^20
    require(implied <= kMaxGlobalBatch, "micro_batch_size " + std::to_string(micro) + " x num_microbatches " +
                                            std::to_string(*microbatches) + " x data-parallel size " +
                                            std::to_string(dp) + " is more than " + std::to_string(kMaxGlobalBatch) +
                                            " samples per step");
    require(!global || *global == implied,
            "global_batch_size " + std::to_string(global.value_or(0)) + " contradicts micro_batch_size " +
                std::to_string(micro) + " x num_microbatches " + std::to_string(*microbatches) +
                " x data-parallel size " + std::to_string(dp) + " = " + std::to_string(implied));
    global = implied;
    return;
  }
  if (!global) global = 32;
  require(*global % (micro * dp) == 0,
          "global_batch_size " + std::to_string(*global) + " is not divisible by micro_batch_size " +
              std::to_string(micro) + " x data-parallel size " + std::to_string(dp));
  microbatches = *global / (micro * dp);
}

}  // namespace

void Config::resolve(int64_t world_size) {
  require(world_size > 0, "world size must be positive, got " + std::to_string(world_size));
  validate_model(model);
  validate_train(train);
  require_positive("num_train_samples", data.num_train_samples);
  require_positive("eval_interval", data.eval_interval);
  require_positive("eval_iters", data.eval_iters);
  parse_split(data.split);
  require(data.data_path.empty() || data.data_dir.empty(), "data_path and data_dir cannot both be given");
  require_positive("log_interval", log.log_interval);
  require_positive("save_interval", log.save_interval);
  require(log.exit_interval >= 0, "exit_interval must not be negative, got " + std::to_string(log.exit_interval));
  require(log.exit_duration_mins >= 0, "exit_duration_mins must not be negative, got " + str(log.exit_duration_mins));
  require(log.save_keep >= 0, "save_keep must not be negative, got " + std::to_string(log.save_keep));
  require_size("the world size (ranks)", world_size, int64_t{1} << 20);
  validate_layout(*this, world_size);
  data_parallel_size = world_size / (parallel.tensor_parallel_size * parallel.pipeline_parallel_size);
  resolve_batch(*this);
  // Megatron's rule for the interleaved order (microbatches go through the
  // chunks in groups of PP); with no more microbatches than stages all are warm-up.
  const int64_t pp = parallel.pipeline_parallel_size, m = microbatches();
  require(parallel.pipeline_schedule != PipelineSchedule::Interleaved1F1B || m <= pp || m % pp == 0,
          "pipeline_schedule interleaved-1f1b needs num_microbatches no more than pipeline_parallel_size or a "
          "multiple of it, got " + std::to_string(m) + " microbatches for " + std::to_string(pp) + " stages");
  model.num_key_value_heads = model.kv_heads();
  if (parallel.pipeline_layer_split.empty())
    // Interleaved: each virtual stage balanced, as each is a link of the chain
    // every microbatch runs through (a split per rank then spread over its
    // chunks measured twice the bubble on Small: 0.12 against 0.06).
    parallel.pipeline_layer_split = balanced_layer_split(model, pp * parallel.virtual_pipeline_stages);
}

// Forward FLOPs per token: a decoder layer's projections and attention
// against the LM head's GEMM plus a few passes over the logits (softmax and
// cross-entropy are memory-bound, so each element counts as several FLOPs).
// The contiguous split that minimizes the costliest stage, by trying every
// split point in turn (stages and layers are few).
std::vector<int64_t> balanced_layer_split(const ModelConfig& m, int64_t stages) {
  const double h = static_cast<double>(m.hidden_size), d = static_cast<double>(m.head_dim());
  const double layer = 2.0 * (h * (m.num_attention_heads + 2 * m.kv_heads()) * d + m.num_attention_heads * d * h +
                              3.0 * h * m.intermediate_size) +
                       4.0 * m.max_seq_length * h;
  const double head = 2.0 * h * m.vocab_size + 20.0 * m.vocab_size;
  const int64_t layers = m.num_layers;
  // best[s][n]: the least possible maximum cost when stages s.. hold the last n layers.
  std::vector<std::vector<double>> best(stages + 1, std::vector<double>(layers + 1, 1e300));
  std::vector<std::vector<int64_t>> take(stages + 1, std::vector<int64_t>(layers + 1, 0));
  best[stages][0] = 0;
  for (int64_t s = stages - 1; s >= 0; --s)
    for (int64_t n = 1; n <= layers; ++n)
      for (int64_t k = 1; k <= n - (stages - 1 - s); ++k) {
        const double cost = k * layer + (s == stages - 1 ? head : 0.0);
        const double worst = std::max(cost, best[s + 1][n - k]);
        if (worst < best[s][n] - 1e-9) {  // ties keep the earlier stages lighter
          best[s][n] = worst;
          take[s][n] = k;
        }
      }
  std::vector<int64_t> split;
  for (int64_t s = 0, n = layers; s < stages; n -= split.back(), ++s) split.push_back(take[s][n]);
  return split;
}

nlohmann::json to_json(const Config& config) {
  nlohmann::json out = nlohmann::json::object();
  for (const Field& f : config_fields(const_cast<Config&>(config))) out[f.key] = f.get();
  return out;
}

void apply_json(Config& config, const nlohmann::json& json, const std::string& origin) {
  if (!json.is_object()) throw ConfigError(origin + ": expected a JSON object, got " + json.type_name());
  std::vector<Field> fields = config_fields(config);
  for (const auto& item : json.items()) {
    const std::string& key = item.key();
    auto it = std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.key == key; });
    if (it == fields.end()) throw ConfigError(origin + ": unknown key '" + (key.size() <= 60 ? key : key.substr(0, 60) + "...") + "'");
    try {
      it->set(item.value());
    } catch (const ConfigError& e) {
      throw ConfigError(origin + ": " + e.what());
    }
  }
}

Config load_config_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("config file '" + path + "' is a directory, not a JSON file");
  if (!std::filesystem::exists(path, ec)) throw ConfigError("cannot read config file '" + path + "'");
  nlohmann::json json;
  try {
    json = read_json(path);
  } catch (const JsonInputError& e) {
    throw ConfigError("config file: " + std::string(e.what()));
  }
  Config config;
  apply_json(config, json, path);
  return config;
}

std::pair<double, double> parse_split(const std::string& split) {
  double train = -1, valid = -1;
  char comma = 0, extra = 0;
  std::istringstream in(split);
  in >> train >> comma >> valid;
  const bool ok = in && comma == ',' && !(in >> extra) && train > 0 && valid >= 0;
  if (!ok) throw ConfigError("split must be 'train,valid' shares such as 98,2, got '" + split + "'");
  return {train, valid};
}

int64_t padded_vocab_size(int64_t vocab_size, int64_t tensor_parallel_size) {
  return (vocab_size + tensor_parallel_size - 1) / tensor_parallel_size * tensor_parallel_size;
}

}  // namespace minipretrain
