#include "minipretrain/model/stage.h"

#include <algorithm>
#include <cmath>

#include "minipretrain/model/normal_stream.h"
#include "minipretrain/model/recompute.h"
#include "minipretrain/parallel/cross_entropy.h"

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
double initial_std(const std::string& name, const ModelConfig& c) {
  double std = c.init_std;
  if (ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight"))
    std /= std::sqrt(2.0 * static_cast<double>(c.num_layers));
  return std;
}

// A full random matrix is drawn in lines: rows, or columns when it is
// sharded by columns (the other dimension is never sharded). Each line is its
// own NormalStream seeded by (seed, name, line index), so the full tensor
// depends on (seed, name) only, yet a rank draws just its shard's lines,
// straight into its slot: start-up shrinks with TP and PP.
constexpr int64_t kLinesPerJob = 64;

struct LineJob {
  torch::Tensor out;    // this rank's slot
  int64_t along;        // the dimension lines are counted along
  int64_t first_line;   // the slot's first line in the full tensor
  int64_t begin, end;   // the slot's lines this job draws
  uint64_t seed;        // of the tensor; the line index is mixed in
  float scale;          // the standard deviation
};

void draw_lines(const LineJob& job) {
  float* data = job.out.data_ptr<float>();
  const int64_t line_stride = job.out.stride(job.along), step = job.out.stride(1 - job.along);
  const int64_t width = job.out.size(1 - job.along);
  for (int64_t line = job.begin; line < job.end; ++line) {
    NormalStream normal(mix64(job.seed ^ mix64(static_cast<uint64_t>(job.first_line + line))));
    float* out = data + line * line_stride;
    for (int64_t i = 0; i < width; ++i) out[i * step] = job.scale * normal.next();
  }
}

}  // namespace

StagePosition StagePosition::of(const std::vector<int64_t>& split, int64_t stage, int64_t num_stages) {
  StagePosition p{stage, num_stages, {}};
  int64_t first_layer = 0;
  for (size_t v = 0; v < split.size(); first_layer += split[v++])
    if (static_cast<int64_t>(v) % num_stages == stage) p.chunks.push_back({first_layer, split[v]});
  return p;
}

StagePosition StagePosition::of(const std::vector<int64_t>& split, int64_t stage) {
  return of(split, stage, static_cast<int64_t>(split.size()));
}

StageImpl::StageImpl(const ModelConfig& c, StagePosition position, TensorParallel tp)
    : config_(c),
      position_(position),
      tp_(std::move(tp)),
      rope_(c.head_dim(), c.max_seq_length, c.rope_theta) {
  if (position_.chunks.empty()) position_.chunks.push_back({0, c.num_layers});

  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  if (position_.first())
    embed_tokens_ = model->register_module("embed_tokens", VocabParallelEmbedding(c.vocab_size, c.hidden_size, tp_));
  auto layers = model->register_module("layers", std::make_shared<torch::nn::Module>());
  for (const StagePosition::Chunk& chunk : position_.chunks) {
    chunk_layers_.emplace_back();
    for (int64_t i = chunk.first_layer; i < chunk.first_layer + chunk.num_layers; ++i)
      chunk_layers_.back().push_back(layers->register_module(std::to_string(i), DecoderLayer(c, tp_)));
  }
  if (position_.last()) {
    norm_ = model->register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
    lm_head_ = register_module("lm_head", ColumnParallelLinear(c.hidden_size, c.vocab_size, tp_));
  }

  // A fused module "a.qkv_proj" holds "a.q_proj.weight", "a.k_proj.weight", ...
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    const auto* sharded = dynamic_cast<const ShardedWeight*>(item.value().get());
    if (!sharded) continue;
    const std::string& module = item.key();
    const std::string parent = module.substr(0, module.rfind('.') + 1);
    for (const WeightPart& part : sharded->weight_parts()) {
      const std::string name = (part.name.empty() ? module : parent + part.name) + ".weight";
      tensors_[name] = TensorSlot{module + ".weight", part.spec, part.row, part.rows};
    }
  }
  for (const auto& p : named_parameters())
    if (!tensors_.count(p.key()) && p.value().dim() == 1)  // norm weights: replicated
      tensors_[p.key()] = TensorSlot{p.key(), ShardSpec{-1, p.value().sizes().vec(), 0}, 0, p.value().size(0)};
}

void StageImpl::initialize(int64_t seed) {
  torch::NoGradGuard no_grad;
  const auto parameters = named_parameters();
  std::vector<LineJob> jobs;
  for (const auto& [name, slot] : tensors_) {
    torch::Tensor out = slot.of(parameters[slot.parameter]);
    if (ends_with(name, "norm.weight")) {
      out.fill_(1.0);
      continue;
    }
    const int64_t along = slot.spec.dim == 1 ? 1 : 0;
    TORCH_CHECK(out.scalar_type() == torch::kFloat && out.device().is_cpu() && out.dim() == 2 &&
                    out.size(1 - along) == slot.spec.full_shape[1 - along],
                "initialize: ", name, " is not an fp32 CPU matrix holding whole lines");
    const int64_t first_line = slot.spec.dim == along ? slot.spec.offset : 0;
    const int64_t lines = out.size(along);
    const int64_t drawn = std::clamp<int64_t>(slot.spec.full_shape[along] - first_line, 0, lines);
    if (drawn < lines) out.narrow(along, drawn, lines - drawn).zero_();  // TP padding stays zero
    const uint64_t tensor_seed = mix64(static_cast<uint64_t>(seed) ^ hash_name(name));
    const auto scale = static_cast<float>(initial_std(name, config_));
    for (int64_t begin = 0; begin < drawn; begin += kLinesPerJob)
      jobs.push_back({out, along, first_line, begin, std::min(begin + kLinesPerJob, drawn), tensor_seed, scale});
  }
  at::parallel_for(0, static_cast<int64_t>(jobs.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) draw_lines(jobs[i]);
  });
}

void StageImpl::to_device(const torch::Device& device) {
  torch::nn::Module::to(device);
  rope_.to(device);
}

torch::TensorOptions StageImpl::activation_options() const {
  return parameters().front().options().requires_grad(false);
}

torch::Tensor StageImpl::forward(const torch::Tensor& input, int64_t chunk) {
  torch::Tensor x = position_.first() && chunk == 0 ? embed_tokens_(input) : input;
  for (auto& layer : chunk_layers_.at(chunk))
    x = recompute_ && torch::GradMode::is_enabled() ? recomputed_layer(*layer, x, rope_) : layer(x, rope_);
  if (!position_.last() || chunk != num_chunks() - 1) return x;
  return lm_head_(norm_(x));
}

torch::Tensor StageImpl::forward(const torch::Tensor& input) {
  torch::Tensor x = input;
  for (int64_t chunk = 0; chunk < num_chunks(); ++chunk) x = forward(x, chunk);
  return x;
}

torch::Tensor StageImpl::loss(const torch::Tensor& logits_local, const torch::Tensor& targets) {
  const int64_t local = logits_local.size(-1);
  torch::Tensor per_token =
      vocab_parallel_cross_entropy(logits_local.reshape({-1, local}), targets.reshape({-1}),
                                   lm_head_->weight_parts()[0].spec.offset, config_.vocab_size, *tp_.group);
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
