#include "minipretrain/config/fields.h"

#include <algorithm>
#include <type_traits>

#include "minipretrain/config/json_input.h"

namespace minipretrain {
namespace {

using nlohmann::json;

std::string type_name(const json& value) { return value.type_name(); }


// Binders: one per member type. Each knows how to read JSON, write JSON and
// parse command-line text for a member, and names the key in its errors.
Field field_for(std::string key, std::string help, int64_t& member) {
  Field f{key, std::move(help), nullptr, nullptr, nullptr};
  f.type_name = "INT";
  f.get = [&member] { return json(member); };
  f.set = [key, &member](const json& v) {
    if (!is_int64(v))
      throw ConfigError(key + " must be an integer, got " + type_name(v) + " " + json_excerpt(v));
    member = v.get<int64_t>();
  };
  f.parse = [key, &member](const std::string& text) {
    size_t used = 0;
    try {
      member = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size())
      throw ConfigError("--" + key + " must be an integer, got '" + text + "'");
  };
  return f;
}

Field field_for(std::string key, std::string help, bool& member) {
  Field f{key, std::move(help), nullptr, nullptr, nullptr};
  f.on_off = true;
  f.get = [&member] { return json(member); };
  f.set = [key, &member](const json& v) {
    if (!v.is_boolean()) throw ConfigError(key + " must be true or false, got " + type_name(v) + " " + json_excerpt(v));
    member = v.get<bool>();
  };
  f.parse = [&member](const std::string&) { member = true; };
  return f;
}

Field field_for(std::string key, std::string help, std::optional<int64_t>& member) {
  Field f{key, std::move(help), nullptr, nullptr, nullptr};
  f.type_name = "INT";
  f.get = [&member] { return member ? json(*member) : json(nullptr); };
  f.set = [key, &member](const json& v) {
    if (v.is_null()) { member.reset(); return; }
    if (!is_int64(v))
      throw ConfigError(key + " must be an integer, got " + type_name(v) + " " + json_excerpt(v));
    member = v.get<int64_t>();
  };
  f.parse = [key, &member](const std::string& text) {
    int64_t value = 0;
    field_for(key, "", value).parse(text);  // the integer checks of the plain field_for
    member = value;
  };
  return f;
}

Field field_for(std::string key, std::string help, double& member) {
  Field f{key, std::move(help), nullptr, nullptr, nullptr};
  f.type_name = "FLOAT";
  f.get = [&member] { return json(member); };
  f.set = [key, &member](const json& v) {
    if (!v.is_number())
      throw ConfigError(key + " must be a number, got " + type_name(v) + " " + json_excerpt(v));
    member = v.get<double>();
  };
  f.parse = [key, &member](const std::string& text) {
    size_t used = 0;
    try {
      member = std::stod(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size())
      throw ConfigError("--" + key + " must be a number, got '" + text + "'");
  };
  return f;
}

Field field_for(std::string key, std::string help, std::string& member) {
  Field f{key, std::move(help), nullptr, nullptr, nullptr};
  f.type_name = "TEXT";
  f.get = [&member] { return json(member); };
  f.set = [key, &member](const json& v) {
    if (!v.is_string())
      throw ConfigError(key + " must be a string, got " + type_name(v) + " " + json_excerpt(v));
    member = v.get<std::string>();
  };
  f.parse = [&member](const std::string& text) { member = text; };
  return f;
}

Field field_for(std::string key, std::string help, std::vector<std::string>& member) {
  Field f{key, std::move(help), nullptr, nullptr, nullptr};
  f.type_name = "TEXT";
  f.list = true;
  f.get = [&member] { return json(member); };
  f.set = [key, &member](const json& v) {
    const bool strings = v.is_array() && std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_string(); });
    if (!strings) throw ConfigError(key + " must be a list of strings, got " + type_name(v) + " " + json_excerpt(v));
    member = v.get<std::vector<std::string>>();
  };
  f.parse = [&member](const std::string& text) { member = {text}; };
  return f;
}

// Integers separated by commas on the command line ("7,5"), an array in JSON.
Field field_for(std::string key, std::string help, std::vector<int64_t>& member) {
  Field f{key, std::move(help), nullptr, nullptr, nullptr};
  f.type_name = "INT,...";
  f.get = [&member] { return json(member); };
  f.set = [key, &member](const json& v) {
    const bool ints = v.is_array() && std::all_of(v.begin(), v.end(), [](const json& e) { return is_int64(e); });
    if (!ints) throw ConfigError(key + " must be a list of integers, got " + type_name(v) + " " + json_excerpt(v));
    member = v.get<std::vector<int64_t>>();
  };
  f.parse = [key, &member](const std::string& text) {
    std::vector<int64_t> values;
    size_t start = 0;
    while (start <= text.size()) {
      const size_t comma = std::min(text.find(',', start), text.size());
      int64_t value = 0;
      try {
        field_for(key, "", value).parse(text.substr(start, comma - start));
      } catch (const ConfigError&) {
        std::string flag = "--" + key;
        std::replace(flag.begin(), flag.end(), '_', '-');
        throw ConfigError(flag + " must be integers separated by commas, e.g. 7,5, got '" + text + "'");
      }
      values.push_back(value);
      start = comma + 1;
    }
    member = values;
  };
  return f;
}

// A text field whose value is a file or directory, or one of a few words: so
// that --help can say so.
Field path(Field f) {
  f.type_name = "PATH";
  return f;
}

// A multiple-choice field (config/choices.h): a name in JSON and on the
// command line, {a,b,c} in --help.
template <typename Choice, typename = std::enable_if_t<std::is_enum_v<Choice>>>
Field field_for(std::string key, std::string help, Choice& member) {
  Field f{key, std::move(help), nullptr, nullptr, nullptr};
  f.type_name = "{";
  for (const auto& [value, name] : choice_table<Choice>()) f.type_name += (f.type_name.size() > 1 ? "," : "") + name;
  f.type_name += "}";
  f.get = [&member] { return json(name_of(member)); };
  f.set = [key, &member](const json& v) {
    if (!v.is_string())
      throw ConfigError(key + " must be " + choice_list<Choice>() + ", got " + type_name(v) + " " + json_excerpt(v));
    member = parse_choice<Choice>(key, v.get<std::string>());
  };
  f.parse = [key, &member](const std::string& text) { member = parse_choice<Choice>(key, text); };
  return f;
}

}  // namespace

std::string Field::flag() const {
  std::string name = key;
  std::replace(name.begin(), name.end(), '_', '-');
  return "--" + name;
}

std::vector<Field> config_fields(Config& c) {
  ModelConfig& m = c.model;
  TrainConfig& t = c.train;
  ParallelConfig& p = c.parallel;
  return {
      field_for("vocab_size", "vocabulary size", m.vocab_size),
      field_for("hidden_size", "model width", m.hidden_size),
      field_for("intermediate_size", "SwiGLU MLP width", m.intermediate_size),
      field_for("num_layers", "decoder layers", m.num_layers),
      field_for("num_attention_heads", "query heads", m.num_attention_heads),
      field_for("num_key_value_heads", "key/value heads (GQA); default: the query heads", m.num_key_value_heads),
      field_for("max_seq_length", "tokens per sample", m.max_seq_length),
      field_for("rope_theta", "RoPE base", m.rope_theta),
      field_for("rms_norm_eps", "RMSNorm epsilon", m.rms_norm_eps),
      field_for("init_std", "standard deviation of the initial weights", m.init_std),
      field_for("micro_batch_size", "samples per microbatch per data-parallel rank", t.micro_batch_size),
      field_for("global_batch_size", "samples per optimizer step over all ranks (default 32)", t.global_batch_size),
      field_for("max_steps", "optimizer steps", t.max_steps),
      field_for("learning_rate", "peak learning rate", t.learning_rate),
      field_for("min_lr", "learning rate at the end of the cosine decay", t.min_lr),
      field_for("weight_decay", "AdamW weight decay (not applied to norm weights)", t.weight_decay),
      field_for("grad_clip", "clip the global gradient norm to this (0: off)", t.grad_clip),
      field_for("warmup_ratio", "fraction of max_steps spent in linear warm-up", t.warmup_ratio),
      field_for("seed", "seed of the weights and the data order", t.seed),
      field_for("device", "auto, cpu or cuda", t.device),
      field_for("num_threads", "intra-op threads per process (0: cores / local processes)", t.num_threads),
      path(field_for("resume", "checkpoint directory to resume from, or 'auto' for the newest", t.resume)),
      path(field_for("init_from",
                     "start from these weights (a checkpoint of any layout, or a Hugging Face Llama directory) with "
                     "fresh optimizer state at step 1; a checkpoint found by --resume wins",
                     t.init_from)),
      field_for("precision", "fp32, bf16 (fp32 master weights and gradients), or auto: bf16 where the hardware has it",
                t.precision),
      field_for("recompute", "none, or full: recompute each decoder layer in backward to save activation memory",
                t.recompute),
      field_for("max_skipped_steps",
                "stop with an error after this many consecutive steps skipped for a non-finite loss or gradient",
                t.max_skipped_steps),
      path(field_for("dump_first_step", "directory to write step 1's logits and gradients (for layout checks)",
                     t.dump_first_step)),
      field_for("tensor_parallel_size", "tensor-parallel ranks", p.tensor_parallel_size),
      field_for("sequence_parallel",
                "split the activations outside the tensor-parallel layers (norms, residuals) along the sequence over "
                "the TP ranks (Megatron's sequence parallelism; needs tensor_parallel_size 2 or more)",
                p.sequence_parallel),
      field_for("pipeline_parallel_size", "pipeline stages", p.pipeline_parallel_size),
      field_for("num_microbatches", "microbatches per step per data-parallel rank", p.num_microbatches),
      field_for("pipeline_schedule", "gpipe, 1f1b, interleaved-1f1b or zb-h1 (zero-bubble H1)", p.pipeline_schedule),
      field_for("virtual_pipeline_stages", "model chunks per pipeline stage, for interleaved-1f1b",
                p.virtual_pipeline_stages),
      field_for("pipeline_layer_split",
                "decoder layers per stage (per virtual stage with interleaving), e.g. 7,5 (default: balanced by compute)",
                p.pipeline_layer_split),
      field_for("dist_timeout", "seconds before the rendezvous, the peer check or a stuck collective fails",
                p.dist_timeout),
      field_for("ddp_bucket_mb",
                "MiB of gradients per data-parallel all-reduce or reduce-scatter (0: one all-reduce per tensor, one "
                "reduce-scatter in all)",
                p.ddp_bucket_mb),
      field_for("use_distributed_optimizer",
                "shard the fp32 master weights and AdamW state over data-parallel ranks (ZeRO-1): gradients are "
                "reduce-scattered, weights all-gathered (without DP: no effect)",
                p.use_distributed_optimizer),
      field_for("master_addr", "rendezvous host (default: MASTER_ADDR)", p.master_addr),
      field_for("master_port", "rendezvous port (default: MASTER_PORT)", p.master_port),
      field_for("data_path", "Megatron indexed datasets: PREFIX ... or WEIGHT PREFIX ... (blended)", c.data.data_path),
      path(field_for("data_dir", "packed token directory (default: synthetic Markov data)", c.data.data_dir)),
      field_for("num_train_samples", "samples in the synthetic corpus", c.data.num_train_samples),
      field_for("valid_data_path", "validation indexed datasets (instead of --split)", c.data.valid_data_path),
      field_for("split", "train,valid shares of the training data, e.g. 98,2", c.data.split),
      field_for("eval_interval", "steps between validation runs (and one at the end)", c.data.eval_interval),
      field_for("eval_iters", "global batches per validation run", c.data.eval_iters),
      path(field_for("output_dir", "checkpoints and metrics.jsonl go here", c.log.output_dir)),
      field_for("log_interval", "steps between log lines", c.log.log_interval),
      field_for("save_interval", "steps between checkpoints", c.log.save_interval),
      field_for("exit_interval", "save a checkpoint and exit after a step divisible by this (0: never)",
                c.log.exit_interval),
      field_for("exit_duration_mins", "save a checkpoint and exit once the run has taken this many minutes (0: never)",
                c.log.exit_duration_mins),
      field_for("save_keep", "keep only the newest N checkpoints, deleting older ones after each save (0: keep all)",
                c.log.save_keep),
      path(field_for("tensorboard_dir", "write TensorBoard event files (loss, LR, grad norm, throughput, ...) here",
                     c.log.tensorboard_dir)),
      field_for("async_save",
                "write checkpoints in the background from a snapshot of the state while training goes on (at most "
                "one in flight)",
                c.log.async_save),
  };
}

}  // namespace minipretrain
