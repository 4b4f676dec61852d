#include "minipretrain/config/hf_config.h"

#include "minipretrain/config/json_input.h"

namespace minipretrain {
namespace {

ModelConfig parse(const nlohmann::json& c, const std::string& file) {
  auto refuse = [&](const std::string& why) { throw JsonInputError(file + ": " + why); };
  // 'gelu' for a short string, an excerpt of anything else.
  auto shown = [](const nlohmann::json& v) {
    return v.is_string() && v.get<std::string>().size() <= 60 ? "'" + v.get<std::string>() + "'" : json_excerpt(v);
  };
  if (c.value("model_type", std::string("llama")) != "llama")
    refuse("model_type is " + shown(c.at("model_type")) + "; only llama (LlamaForCausalLM) is supported");
  if (c.contains("rope_scaling") && !c.at("rope_scaling").is_null())
    refuse("rope_scaling " + json_excerpt(c.at("rope_scaling")) + " is not supported (plain RoPE only)");
  // transformers 5 writes RoPE's settings here, with no top-level rope_theta.
  const nlohmann::json rope = c.value("rope_parameters", nlohmann::json::object());
  if (!rope.is_object()) refuse("rope_parameters " + json_excerpt(rope) + " is not an object");
  if (rope.value("rope_type", std::string("default")) != "default")
    refuse("rope_parameters " + json_excerpt(rope) + " is not supported (plain RoPE only: rope_type default)");
  if (c.value("tie_word_embeddings", false)) refuse("tie_word_embeddings true is not supported (untied LM head only)");
  for (const char* bias : {"attention_bias", "mlp_bias"})
    if (c.value(bias, false)) refuse(std::string(bias) + " true is not supported (no biases)");
  if (c.value("hidden_act", std::string("silu")) != "silu")
    refuse("hidden_act " + shown(c.at("hidden_act")) + " is not supported (SwiGLU with silu only)");
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
  if (c.contains("head_dim") && !c.at("head_dim").is_null() && size("head_dim") != m.head_dim())
    refuse("head_dim " + json_excerpt(c.at("head_dim")) + " is not hidden_size / num_attention_heads = " +
           std::to_string(m.head_dim()) + " (not supported)");
  return m;
}

}  // namespace

ModelConfig model_config_from_hf(const nlohmann::json& config, const std::string& file) {
  try {
    return parse(config, file);
  } catch (const nlohmann::json::exception& e) {
    throw JsonInputError(file + ": " + e.what());
  }
}

}  // namespace minipretrain
