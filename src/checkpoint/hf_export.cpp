#include "minipretrain/checkpoint/hf_export.h"

#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/safetensors.h"
#include "minipretrain/distributed/communicator.h"
#include "minipretrain/model/stage.h"

namespace minipretrain {
namespace fs = std::filesystem;
namespace {

// `write` fills a temporary file next to `path`, which then replaces `path`.
void write_atomically(const fs::path& path, const std::function<void(const std::string&)>& write) {
  const std::string tmp = path.string() + ".tmp";
  write(tmp);
  fs::rename(tmp, path);
}

void write_json(const fs::path& path, const nlohmann::json& json) {
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::trunc);
    out << json.dump(2) << "\n";
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  });
}

nlohmann::json hf_config(const ModelConfig& m, const HfExportOptions& options) {
  nlohmann::json config = {
      {"architectures", nlohmann::json::array({"LlamaForCausalLM"})},
      {"model_type", "llama"},
      {"vocab_size", m.vocab_size},  // unpadded: exports drop the TP padding rows
      {"hidden_size", m.hidden_size},
      {"intermediate_size", m.intermediate_size},
      {"num_hidden_layers", m.num_layers},
      {"num_attention_heads", m.num_attention_heads},
      {"num_key_value_heads", m.kv_heads()},
      {"max_position_embeddings", m.max_seq_length},
      {"rope_theta", m.rope_theta},
      {"rms_norm_eps", m.rms_norm_eps},
      {"initializer_range", m.init_std},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"tie_word_embeddings", false},
      {"torch_dtype", "float32"},
  };
  if (options.bos_token_id) config["bos_token_id"] = *options.bos_token_id;
  if (options.eos_token_id) config["eos_token_id"] = *options.eos_token_id;
  return config;
}

// LlamaTokenizer's defaults (<s>, </s>, <unk>) are SentencePiece's, so the
// model file carries the rest.
nlohmann::json hf_tokenizer_config(const ModelConfig& m, const HfExportOptions& options) {
  return {{"tokenizer_class", "LlamaTokenizer"},
          {"model_max_length", m.max_seq_length},
          {"add_bos_token", options.bos_token_id.has_value()},
          {"add_eos_token", false},
          {"clean_up_tokenization_spaces", false}};
}

}  // namespace

Config read_checkpoint_config(const std::string& checkpoint_dir) {
  const fs::path path = fs::path(checkpoint_dir) / "meta.json";
  std::ifstream in(path);
  if (!in) throw CheckpointError(checkpoint_dir + " is not a checkpoint: " + path.string() + " is missing");
  Config config;
  try {
    const nlohmann::json meta = nlohmann::json::parse(in);
    apply_json(config, meta.at("config"), path.string());
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(path.string() + " is corrupt: " + e.what());
  }
  return config;
}

std::map<std::string, torch::Tensor> load_model_tensors(const std::string& checkpoint_dir,
                                                        const ModelConfig& config) {
  std::map<std::string, torch::Tensor> saved;
  try {
    saved = load_full_tensors(checkpoint_dir);
  } catch (const c10::Error& e) {  // shards that do not join: a TP rank's file is missing
    throw CheckpointError("checkpoint " + checkpoint_dir + ": " + e.what_without_backtrace());
  }
  // The model itself says which tensors it has and their full shapes; its
  // parameters are allocated but never touched.
  Stage model(config, StagePosition{}, std::make_shared<SoloCommunicator>("tp"));
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, slot] : model->tensors()) {
    const ShardSpec& spec = slot.spec;
    auto it = saved.find(name);
    if (it == saved.end()) throw CheckpointError("checkpoint " + checkpoint_dir + " has no tensor " + name);
    if (it->second.sizes().vec() != spec.full_shape)
      throw CheckpointError("checkpoint " + checkpoint_dir + ": " + name + " has shape " +
                            c10::str(it->second.sizes()) + ", the model expects " + c10::str(spec.full_shape));
    tensors[name] = it->second;
  }
  return tensors;
}

void export_hugging_face(const std::string& checkpoint_dir, const std::string& output_dir,
                         const HfExportOptions& options) {
  if (!options.tokenizer_model.empty() && !fs::is_regular_file(options.tokenizer_model))
    throw std::runtime_error("tokenizer model " + options.tokenizer_model + " does not exist");
  const ModelConfig model = read_checkpoint_config(checkpoint_dir).model;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, t] : load_model_tensors(checkpoint_dir, model))
    tensors.emplace_back(name, t.to(torch::kFloat));

  const fs::path out(output_dir);
  fs::create_directories(out);
  write_atomically(out / "model.safetensors",
                   [&](const std::string& tmp) { write_safetensors(tmp, tensors, {{"format", "pt"}}); });
  write_json(out / "config.json", hf_config(model, options));
  if (!options.tokenizer_model.empty()) {
    write_atomically(out / "tokenizer.model", [&](const std::string& tmp) {
      fs::copy_file(options.tokenizer_model, tmp, fs::copy_options::overwrite_existing);
    });
    write_json(out / "tokenizer_config.json", hf_tokenizer_config(model, options));
  }
}

void export_hugging_face(const std::string& checkpoint_dir, const std::string& output_dir,
                         const std::string& tokenizer_model) {
  HfExportOptions options;
  options.tokenizer_model = tokenizer_model;
  export_hugging_face(checkpoint_dir, output_dir, options);
}

}  // namespace minipretrain
