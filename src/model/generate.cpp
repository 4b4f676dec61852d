#include "minipretrain/model/generate.h"

#include <algorithm>
#include <limits>
#include <stdexcept>


namespace minipretrain {
namespace {

void check_arguments(const ModelConfig& config, const std::vector<int64_t>& prompt, const SamplingOptions& o) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt is empty");
  for (int64_t token : prompt)
    if (token < 0 || token >= config.vocab_size)
      throw std::invalid_argument("generate: prompt token " + std::to_string(token) +
                                  " is outside the vocabulary [0, " + std::to_string(config.vocab_size) + ")");
  if (o.max_new_tokens < 0) throw std::invalid_argument("generate: max_new_tokens must not be negative");
  if (o.temperature < 0) throw std::invalid_argument("generate: temperature must not be negative");
  if (o.top_k < 0) throw std::invalid_argument("generate: top_k must not be negative");
}

// The next token from the logits [vocab] of the last position.
int64_t pick(torch::Tensor logits, const SamplingOptions& o, at::Generator& generator) {
  if (o.temperature == 0) return logits.argmax().item<int64_t>();
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(0)) {
    const torch::Tensor kth = std::get<0>(logits.topk(o.top_k)).min();
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  const torch::Tensor probs = torch::softmax(logits, /*dim=*/0);
  return torch::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

}  // namespace

std::vector<int64_t> generate(Stage& model, const ModelConfig& config, const std::vector<int64_t>& prompt,
                              const SamplingOptions& options) {
  check_arguments(config, prompt, options);
  torch::NoGradGuard no_grad;
  const torch::Device device = model->parameters().front().device();
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(options.seed));
  std::vector<int64_t> context = prompt, generated;
  while (static_cast<int64_t>(generated.size()) < options.max_new_tokens) {
    const int64_t length = std::min<int64_t>(static_cast<int64_t>(context.size()), config.max_seq_length);
    const std::vector<int64_t> tail(context.end() - length, context.end());
    const torch::Tensor window = torch::tensor(tail, torch::kLong).view({1, length}).to(device);
    // Logits of the last position, padding columns (if any) dropped.
    const torch::Tensor logits =
        model->forward(window)[0][length - 1].narrow(0, 0, config.vocab_size).to(torch::kCPU, torch::kFloat);
    const int64_t token = pick(logits, options, generator);
    generated.push_back(token);
    context.push_back(token);
    if (options.stop_token && token == *options.stop_token) break;
  }
  return generated;
}

}  // namespace minipretrain
