// The model a Hugging Face LlamaForCausalLM config.json describes, read as
// outside input: only what our model computes is accepted (plain RoPE, SwiGLU,
// no biases, an untied head), and every size is a whole number in range
// before anything is sized by it.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "minipretrain/config/config.h"

namespace minipretrain {

// Throws JsonInputError naming `file` and the field.
ModelConfig model_config_from_hf(const nlohmann::json& config, const std::string& file);

}  // namespace minipretrain
