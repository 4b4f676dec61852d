#include "minipretrain/checkpoint/hf_export.h"

#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/safetensors.h"
#include "minipretrain/checkpoint/tensor_source.h"
#include "minipretrain/data/progress.h"
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
  if (!fs::exists(path)) throw CheckpointError(checkpoint_dir + " is not a checkpoint: " + path.string() + " is missing");
  Config config;
  try {
    const nlohmann::json meta = read_json_file(path.string());
    apply_json(config, meta.at("config"), path.string());
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(path.string() + " is corrupt: " + e.what());
  }
  return config;
}

std::map<std::string, torch::Tensor> load_model_tensors(const std::string& checkpoint_dir, const ModelConfig& config,
                                                        bool show_progress) {
  TensorSource source = TensorSource::from_checkpoint(checkpoint_dir);
  // The model itself says which tensors it has and their full shapes; its
  // parameters are allocated but never touched.
  Stage model(config, StagePosition{}, TensorParallel{std::make_shared<SoloCommunicator>("tp")});
  const auto& slots = model->tensors();
  Progress progress("reading " + checkpoint_dir, static_cast<double>(slots.size()), "tensors", show_progress);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, slot] : slots) {
    torch::Tensor full = torch::empty(slot.spec.full_shape, torch::kFloat);
    source.read_into("model/" + name, full, std::nullopt);
    tensors[name] = full;
    progress.update(static_cast<double>(tensors.size()));
  }
  progress.finish(static_cast<double>(tensors.size()));
  return tensors;
}

void export_hugging_face(const std::string& checkpoint_dir, const std::string& output_dir,
                         const HfExportOptions& options) {
  if (!options.tokenizer_model.empty() && !fs::is_regular_file(options.tokenizer_model))
    throw std::runtime_error("tokenizer model " + options.tokenizer_model + " does not exist");
  const ModelConfig model = read_checkpoint_config(checkpoint_dir).model;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, t] : load_model_tensors(checkpoint_dir, model, options.progress)) tensors.emplace_back(name, t);

  const fs::path out(output_dir);
  fs::create_directories(out);
  Progress writing("writing " + (out / "model.safetensors").string(), 0, "MB", options.progress);
  uint64_t bytes = 0;
  write_atomically(out / "model.safetensors",
                   [&](const std::string& tmp) { bytes = write_safetensors(tmp, tensors, {{"format", "pt"}}).first; });
  writing.finish(bytes / 1e6);
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
