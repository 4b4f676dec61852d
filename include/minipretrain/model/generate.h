// Text generation, in one process on the CPU (commands/commands.h loads the
// model from a checkpoint). generate() is plain autoregressive decoding without a KV cache:
// every new token runs the model over the last max_seq_length tokens (RoPE
// tables end there). Deterministic: the same model, prompt and options give
// the same tokens, since sampling draws from a CPU generator seeded by
// options.seed and the forward pass has nothing random in it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "minipretrain/config/config.h"
#include "minipretrain/model/stage.h"

namespace minipretrain {

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 1.0;  // 0: greedy (argmax)
  int64_t top_k = 0;         // > 0: sample among the k largest logits only
  int64_t seed = 0;
  std::optional<int64_t> stop_token;  // generation ends after emitting it
};

// Returns the new tokens only (the stop token included when it was drawn).
// `config` is the model's (for the context length and the vocabulary). Throws
// std::invalid_argument for an empty prompt, a token outside the vocabulary or
// a negative temperature, top_k or max_new_tokens.
std::vector<int64_t> generate(Stage& model, const ModelConfig& config, const std::vector<int64_t>& prompt,
                              const SamplingOptions& options);

}  // namespace minipretrain
