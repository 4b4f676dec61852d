#include "minipretrain/checkpoint/hf_import.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "minipretrain/checkpoint/hf_export.h"
#include "minipretrain/checkpoint/tensor_source.h"
#include "minipretrain/config/json_input.h"
#include "minipretrain/distributed/communicator.h"
#include "minipretrain/model/stage.h"

namespace minipretrain {
namespace fs = std::filesystem;
namespace {

constexpr const char* kModelPrefix = "model/";

// The model fields of our config, as JSON, for check_same_model.
nlohmann::json model_json(const ModelConfig& model) {
  Config config;
  config.model = model;
  return to_json(config);
}

}  // namespace

ModelConfig read_hf_config(const std::string& hf_dir) {
  const fs::path path = fs::path(hf_dir) / "config.json";
  const nlohmann::json c = read_json_file(path.string());
  const std::string file = path.string();
  auto refuse = [&](const std::string& why) { throw CheckpointError(file + ": " + why); };
  try {
    if (c.value("model_type", std::string("llama")) != "llama")
      refuse("model_type is '" + c.at("model_type").get<std::string>() + "'; only llama (LlamaForCausalLM) is supported");
    if (c.contains("rope_scaling") && !c.at("rope_scaling").is_null())
      refuse("rope_scaling " + c.at("rope_scaling").dump() + " is not supported (plain RoPE only)");
    // transformers 5 writes RoPE's settings here, with no top-level rope_theta.
    const nlohmann::json rope = c.value("rope_parameters", nlohmann::json::object());
    if (!rope.is_object()) refuse("rope_parameters " + rope.dump() + " is not an object");
    if (rope.value("rope_type", std::string("default")) != "default")
      refuse("rope_parameters " + rope.dump() + " is not supported (plain RoPE only: rope_type default)");
    if (c.value("tie_word_embeddings", false)) refuse("tie_word_embeddings true is not supported (untied LM head only)");
    for (const char* bias : {"attention_bias", "mlp_bias"})
      if (c.value(bias, false)) refuse(std::string(bias) + " true is not supported (no biases)");
    if (c.value("hidden_act", std::string("silu")) != "silu")
      refuse("hidden_act '" + c.at("hidden_act").get<std::string>() + "' is not supported (SwiGLU with silu only)");
    // Whole numbers in range before anything is sized by them; config
    // validation then applies the model's own rules.
    const auto size = [&](const char* key) { return json_integer(c, key, 1, int64_t{1} << 24, file); };
    ModelConfig m;
    m.vocab_size = size("vocab_size");
    m.hidden_size = size("hidden_size");
    m.intermediate_size = size("intermediate_size");
    m.num_layers = size("num_hidden_layers");
    m.num_attention_heads = size("num_attention_heads");
    m.num_key_value_heads = c.contains("num_key_value_heads") && !c.at("num_key_value_heads").is_null()
                                ? size("num_key_value_heads")
                                : m.num_attention_heads;
    if (c.contains("max_position_embeddings")) m.max_seq_length = size("max_position_embeddings");
    m.rope_theta = rope.value("rope_theta", c.value("rope_theta", 10000.0));
    m.rms_norm_eps = c.value("rms_norm_eps", 1e-6);  // LlamaConfig's default
    m.init_std = c.value("initializer_range", m.init_std);
    if (c.contains("head_dim") && !c.at("head_dim").is_null() && c.at("head_dim").get<int64_t>() != m.head_dim())
      refuse("head_dim " + c.at("head_dim").dump() + " is not hidden_size / num_attention_heads = " +
             std::to_string(m.head_dim()) + " (not supported)");
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(file + ": " + e.what());
  } catch (const JsonInputError& e) {
    throw CheckpointError(e.what());
  }
}

void import_hugging_face(const std::string& hf_dir, const std::string& checkpoint_dir) {
  Config config;
  config.model = read_hf_config(hf_dir);
  try {
    config.resolve(1);
  } catch (const ConfigError& e) {
    throw CheckpointError(hf_dir + "/config.json: " + e.what());
  }
  TensorSource source = TensorSource::from_hugging_face(hf_dir, kModelPrefix);
  // Sizes from config.json against what the files hold, before anything is
  // allocated by them.
  const int64_t described = count_parameters(config.model).total(), held = source.elements();
  if (described != held)
    throw CheckpointError(hf_dir + ": config.json describes " + std::to_string(described) +
                          " parameters but the weight files hold " + std::to_string(held) + " values");
  // The model says which tensors it has and their full shapes; its
  // parameters are allocated but never touched.
  Stage model(config.model, StagePosition{}, std::make_shared<SoloCommunicator>("tp"));
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, ShardSpec> specs;
  for (const auto& [name, slot] : model->tensors()) {
    const std::string key = kModelPrefix + name;
    torch::Tensor full = torch::empty(slot.spec.full_shape, torch::kFloat);
    source.read_into(key, full, std::nullopt);
    if (!torch::isfinite(full).all().item<bool>())
      throw CheckpointError(hf_dir + ": " + name + " holds NaN or infinite values; refusing to import it");
    tensors[key] = full;
    specs[key] = slot.spec;
  }
  for (const std::string& name : source.names())
    if (!tensors.count(name))
      throw CheckpointError(hf_dir + " holds " + name.substr(std::strlen(kModelPrefix)) +
                            ", which the model config.json describes has not (more layers than num_hidden_layers?)");
  const fs::path final_dir(checkpoint_dir), tmp_dir = checkpoint_dir + ".tmp";
  if (fs::exists(final_dir)) throw CheckpointError(checkpoint_dir + " already exists; import writes a new directory");
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  write_named_shard((tmp_dir / "shard-tp0-pp0").string(), tensors, specs);
  const nlohmann::json meta = {{"step", 0},
                               {"consumed_samples", 0},
                               {"config", to_json(config)},
                               {"layout", {{"tp", 1}, {"dp", 1}, {"pp", 1}}},
                               {"imported_from", fs::absolute(hf_dir).string()}};
  write_file_durably((tmp_dir / "meta.json").string(), meta.dump(2) + "\n");
  fs::rename(tmp_dir, final_dir);
}

void load_weights(const std::string& path, const NamedState& weights, const Config& config) {
  const fs::path dir(path);
  const bool ours = fs::exists(dir / "meta.json");
  if (!ours && !fs::exists(dir / "config.json"))
    throw CheckpointError(path + " is neither a checkpoint (no meta.json) nor a Hugging Face model (no config.json)");
  TensorSource source = ours ? TensorSource::from_checkpoint(path) : TensorSource::from_hugging_face(path, kModelPrefix);
  if (ours)
    check_same_model(model_json(read_checkpoint_config(path).model), config, "checkpoint " + path);
  else
    check_same_model(model_json(read_hf_config(path)), config, "Hugging Face model " + path);
  for (const auto& [name, entry] : weights) source.read_into(name, entry.tensor, entry.spec);
}

}  // namespace minipretrain
