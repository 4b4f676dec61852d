#include "minipretrain/model/stage.h"

#include <cmath>

#include "minipretrain/parallel/cross_entropy.h"
#include "minipretrain/parallel/regions.h"

namespace minipretrain {
namespace {

// FNV-1a: a stable hash of the name, the same on every platform and run.
uint64_t hash_name(const std::string& name) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Llama-style init: N(0, std) everywhere, the projections that write into the
// residual stream scaled by 1/sqrt(2 * layers) (GPT-2), norm weights one.
torch::Tensor full_initial_value(const std::string& name, const std::vector<int64_t>& shape, int64_t seed,
                                 const ModelConfig& c) {
  if (ends_with(name, "norm.weight")) return torch::ones(shape);
  double std = c.init_std;
  if (ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight"))
    std /= std::sqrt(2.0 * static_cast<double>(c.num_layers));
  auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ULL ^ hash_name(name));
  return torch::randn(shape, generator) * std;
}

}  // namespace

StageImpl::StageImpl(const ModelConfig& c, StagePosition position, std::shared_ptr<Communicator> tp)
    : config_(c),
      position_(position),
      tp_(std::move(tp)),
      rope_(c.head_dim(), c.max_seq_length, c.rope_theta) {
  const int64_t per_stage = c.num_layers / position.num_stages;
  first_layer_ = position.stage * per_stage;

  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  if (position.first())
    embed_tokens_ = model->register_module("embed_tokens", VocabParallelEmbedding(c.vocab_size, c.hidden_size, tp_));
  auto layers = model->register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t i = first_layer_; i < first_layer_ + per_stage; ++i)
    layers_.push_back(layers->register_module(std::to_string(i), DecoderLayer(c, tp_)));
  if (position.last()) {
    norm_ = model->register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
    lm_head_ = register_module("lm_head", ColumnParallelLinear(c.hidden_size, c.vocab_size, *tp_));
  }

  for (const auto& item : named_modules("", /*include_self=*/false)) {
    auto* sharded = dynamic_cast<ShardedWeight*>(item.value().get());
    if (sharded) specs_[item.key() + ".weight"] = sharded->weight_spec();
  }
  for (const auto& p : named_parameters())
    if (!specs_.count(p.key())) specs_[p.key()] = ShardSpec{-1, p.value().sizes().vec(), 0};
}

void StageImpl::initialize(int64_t seed) {
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    const ShardSpec& spec = specs_.at(p.key());
    torch::Tensor full = full_initial_value(p.key(), spec.full_shape, seed, config_);
    const int64_t length = spec.sharded() ? p.value().size(spec.dim) : 0;
    p.value().copy_(take_shard(full, spec, length));
  }
}

void StageImpl::to_device(const torch::Device& device) {
  torch::nn::Module::to(device);
  rope_.to(device);
}

torch::Tensor StageImpl::forward(const torch::Tensor& input) {
  torch::Tensor x = position_.first() ? embed_tokens_(input) : input;
  for (auto& layer : layers_) x = layer(x, rope_);
  if (!position_.last()) return x;
  return lm_head_(copy_to_tp(norm_(x), *tp_));
}

torch::Tensor StageImpl::loss(const torch::Tensor& logits_local, const torch::Tensor& targets) {
  const int64_t local = logits_local.size(-1);
  torch::Tensor per_token = vocab_parallel_cross_entropy(logits_local.reshape({-1, local}), targets.reshape({-1}),
                                                         lm_head_->weight_spec().offset, config_.vocab_size, *tp_);
  return per_token.mean();
}

ParameterCount count_parameters(const ModelConfig& c) {
  ParameterCount n;
  const int64_t h = c.hidden_size, d = c.head_dim();
  n.per_layer_attention = h * c.num_attention_heads * d * 2 + h * c.kv_heads() * d * 2;
  n.per_layer_mlp = 3 * h * c.intermediate_size;
  n.per_layer_norms = 2 * h;
  n.embedding = c.vocab_size * h;
  n.lm_head = c.vocab_size * h;
  n.attention = n.per_layer_attention * c.num_layers;
  n.mlp = n.per_layer_mlp * c.num_layers;
  n.norms = n.per_layer_norms * c.num_layers + h;
  return n;
}

}  // namespace minipretrain
