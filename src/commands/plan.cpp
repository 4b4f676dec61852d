#include "minipretrain/commands/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <fmt/format.h>

#include "minipretrain/parallel/schedule.h"
#include "minipretrain/train/main_params.h"

namespace minipretrain {
namespace {

// Auto as training resolves it: bf16 on the GPUs plans are for, on a CPU
// what this machine computes natively.
bool computes_in_fp32(Precision precision, bool cpu) {
  if (precision == Precision::Auto && cpu) return resolve_precision(precision, torch::kCPU) == torch::kFloat;
  return precision == Precision::Fp32;
}

// The shapes one rank of one stage works with: its TP shard of the model.
struct Shapes {
  double h, q, kv, inter, vocab;  // hidden; local query, kv and MLP widths; local (padded) vocabulary rows
  double heads;                   // local query heads
  double b, s, tokens;            // micro batch, sequence, tokens per microbatch
  double c;                       // bytes of a compute element (4 fp32, 2 bf16)
  double wire;                    // bytes of a compute element on the wire (Gloo sends bf16 as fp32)
  int64_t tp;

  Shapes(const Config& config, bool cpu) {
    const ModelConfig& m = config.model;
    tp = config.parallel.tensor_parallel_size;
    h = static_cast<double>(m.hidden_size);
    heads = static_cast<double>(m.num_attention_heads / tp);
    q = heads * static_cast<double>(m.head_dim());
    kv = static_cast<double>(m.kv_heads() / tp * m.head_dim());
    inter = static_cast<double>(m.intermediate_size / tp);
    vocab = static_cast<double>(padded_vocab_size(m.vocab_size, tp) / tp);
    b = static_cast<double>(config.train.micro_batch_size);
    s = static_cast<double>(m.max_seq_length);
    tokens = b * s;
    c = computes_in_fp32(config.train.precision, cpu) ? 4.0 : 2.0;
    wire = cpu ? 4.0 : c;
  }

  // Parameters of one decoder layer on this rank: fused QKV, O, fused
  // gate/up and down (sharded), two norm weights (replicated).
  double layer_parameters() const { return h * (q + 2 * kv) + q * h + 3 * h * inter + 2 * h; }

  // Bytes one decoder layer keeps for backward per microbatch, tensor by
  // tensor as model/layers.cpp makes them:
  //   each RMSNorm: its fp32 input (the input itself in fp32), the normalized
  //     fp32 values cast to the compute dtype (saved by * weight) and its
  //     output (saved by the next GEMM): (4 + 2c) per element;
  //   the fused QKV output (RoPE's halves are views of it), RoPE's q and k,
  //   v made contiguous for bmm, the attention output reshaped for o_proj;
  //   the fp32 softmax and, in bf16, its bf16 copy saved by bmm;
  //   the fused gate/up output (silu saves a view of it), silu's output and
  //   the product saved by down_proj.
  double layer_activations() const {
    const double norms = 2 * (4 + 2 * c) * h * tokens;
    const double attention = c * (3 * q + 4 * kv) * tokens + b * heads * s * s * (c == 4 ? 4 : 6);
    const double mlp = 4 * c * inter * tokens;
    return norms + attention + mlp;
  }

  // Forward FLOPs of one decoder layer for one microbatch: the GEMMs and the
  // two attention products (the causal mask is applied, not skipped).
  double layer_flops() const {
    return 2 * tokens * (h * (q + 2 * kv) + q * h + 3 * h * inter) + 4 * b * heads * s * s * (q / heads);
  }
};

double ring(int64_t size) { return size > 1 ? 2.0 * static_cast<double>(size - 1) / static_cast<double>(size) : 0.0; }

// The layers rank `stage` holds: with interleaving, those of its chunks
// (virtual stages stage, stage + PP, ...).
int64_t stage_layers(const Config& config, int64_t stage) {
  const auto& split = config.parallel.pipeline_layer_split;
  const int64_t pp = config.parallel.pipeline_parallel_size;
  int64_t layers = 0;
  for (size_t v = static_cast<size_t>(stage); v < split.size(); v += static_cast<size_t>(pp)) layers += split[v];
  return layers;
}

// One stage of `config` on one rank.
StageEstimate estimate_stage(const Config& config, const Cluster& cluster, int64_t stage, int64_t num_stages) {
  const Shapes x(config, cluster.cpu);
  const bool first = stage == 0, last = stage == num_stages - 1;
  const bool recompute = config.train.recompute == Recompute::Full;
  const double layers = static_cast<double>(stage_layers(config, stage));
  const double microbatches = static_cast<double>(config.microbatches());
  const int64_t tp = x.tp, dp = config.data_parallel_size;
  StageEstimate e;

  const double params = layers * x.layer_parameters() + (first ? x.vocab * x.h : 0) + (last ? x.h + x.vocab * x.h : 0);
  e.parameters = std::llround(params);
  MemoryEstimate& mem = e.memory;
  // train/main_params.cpp: fp32 trains the parameters themselves into one flat
  // fp32 gradient; bf16 adds bf16 copies whose bf16 gradients each backward
  // hands over before they are added into the flat fp32 one. AdamW: two fp32 moments.
  mem.weights = params * (x.c == 4 ? 4 : 6);
  mem.gradients = params * (x.c == 4 ? 4 : 6);
  mem.optimizer = params * 8;

  // Held per microbatch in flight: the layers' saved tensors, the stage's
  // input (a bf16 input is not what the first layer saves; in fp32 and under
  // recompute it is) and output (kept by the executor for its backward), and
  // on the last stage the final norm and the cross-entropy's fp32 softmax.
  const double hidden = x.c * x.h * x.tokens;
  auto held = [&](bool with_recompute) {
    double bytes = layers * (with_recompute ? hidden : x.layer_activations());
    if (!first && x.c == 2 && !with_recompute) bytes += hidden;
    if (!last) bytes += hidden;
    if (last) bytes += (4 + 2 * x.c) * x.h * x.tokens + 4 * x.vocab * x.tokens;
    return bytes;
  };
  // Alive once, on top: the backward of one layer (its gradients are about
  // the size of what it saved; recomputed, the layer's saved tensors too),
  // or the cross-entropy's forward (the logits and its fp32 temporaries).
  auto working = [&](bool with_recompute) {
    const double layer = (with_recompute ? 2 : 1) * x.layer_activations();
    return std::max(layer, last ? (x.c + 8) * x.vocab * x.tokens : 0.0);
  };
  const int64_t chunks = config.parallel.virtual_pipeline_stages;
  mem.in_flight = peak_in_flight(
      make_schedule(config.parallel.pipeline_schedule, num_stages, stage, config.microbatches(), chunks));
  // Interleaved: what is held is counted in chunks, each 1/V of the stage's layers.
  const double in_flight = static_cast<double>(mem.in_flight) / static_cast<double>(chunks);
  mem.activations_without_recompute = in_flight * held(false) + working(false);
  mem.activations_with_recompute = in_flight * held(true) + working(true);
  mem.activations = recompute ? mem.activations_with_recompute : mem.activations_without_recompute;

  // Communication buffers. Sends are awaited at the end of the step
  // (parallel/pipeline_executor.cpp), so every microbatch's outgoing
  // activation and gradient stays alive until then; in fp32 the in-flight
  // outputs are those already counted above. A TP all-reduce works on a copy
  // of its [tokens, hidden] input; Gloo's DP all-reduce on one bucket.
  const double wire_hidden = x.wire * x.h * x.tokens;
  if (!last) mem.comm_buffers += (microbatches - (x.wire == x.c ? in_flight : 0.0)) * wire_hidden;
  if (!first) mem.comm_buffers += microbatches * wire_hidden;
  if (tp > 1) mem.comm_buffers += wire_hidden;
  if (dp > 1) mem.comm_buffers += std::min(params * 4, static_cast<double>(config.parallel.ddp_bucket_mb << 20));
  if (cluster.cpu) {
    // The process itself, and the synthetic corpus (int32 tokens) when no data is given.
    mem.baseline = kCpuProcessBaseline;
    if (config.data.data_path.empty() && config.data.data_dir.empty())
      mem.baseline += 4.0 * static_cast<double>(config.data.num_train_samples * config.model.max_seq_length);
  }

  // Bytes counted per step (distributed/communicator.h), forward and backward
  // apart for the timing. TP: each layer all-reduces its attention and MLP
  // outputs forward and their inputs' gradients backward, again forward when
  // recomputed; the embedding its output; the LM head its input's gradient;
  // the cross-entropy three fp32 values per token (max, target logit, sum of
  // exponentials). A group of one counts no bytes.
  double tp_forward = 0, tp_backward = 0;
  if (tp > 1) {
    tp_forward = layers * 2 * wire_hidden + (first ? wire_hidden : 0) + (last ? 3 * 4 * x.tokens : 0);
    tp_backward = layers * (recompute ? 4 : 2) * wire_hidden + (last ? wire_hidden : 0);
  }
  // The gradient norm adds one fp64 value over TP and over PP.
  const int64_t norm_bytes = 8;
  e.comm.tp = std::llround(microbatches * (tp_forward + tp_backward)) + (tp > 1 ? norm_bytes : 0);
  e.comm.dp = dp > 1 ? e.parameters * 4 : 0;  // the flat fp32 gradient, averaged in buckets
  const int64_t neighbours = (first ? 0 : 1) + (last ? 0 : 1);
  e.comm.pp = num_stages > 1 ? std::llround(microbatches * 2 * neighbours * wire_hidden) + norm_bytes : 0;

  const double rate = cluster.flops * (x.c == 4 ? 0.5 : 1.0);
  const double forward_flops =
      layers * x.layer_flops() + (last ? 2 * x.tokens * x.h * x.vocab : 0);
  const double tp_seconds = ring(tp) / cluster.intra_node_bw;
  e.forward_seconds = forward_flops / rate + tp_forward * tp_seconds;
  e.backward_seconds = (2 * forward_flops + (recompute ? layers * x.layer_flops() : 0)) / rate + tp_backward * tp_seconds;
  return e;
}

std::string gb(double bytes) { return fmt::format("{:.2f}", bytes / 1e9); }

}  // namespace

LayoutEstimate estimate_layout(const Config& config, const Cluster& cluster) {
  LayoutEstimate out;
  out.config = config;
  const int64_t pp = config.parallel.pipeline_parallel_size, tp = config.parallel.tensor_parallel_size;
  const int64_t dp = config.data_parallel_size, m = config.microbatches();
  std::vector<double> forward, backward;
  for (int64_t s = 0; s < pp; ++s) {
    out.stages.push_back(estimate_stage(config, cluster, s, pp));
    forward.push_back(out.stages.back().forward_seconds);
    backward.push_back(out.stages.back().backward_seconds);
    if (out.stages.back().memory.total() > out.stages[out.largest_stage].memory.total()) out.largest_stage = s;
  }
  // Rank r = pp * (TP * DP) + dp * TP + tp (DESIGN.md): a DP group spans
  // TP * DP consecutive ranks, neighbouring stages lie TP * DP apart.
  const int64_t node = cluster.gpus_per_node;
  const double dp_bw = tp * dp > node ? cluster.inter_node_bw : cluster.intra_node_bw;
  const double pp_bw = tp * dp * pp > node ? cluster.inter_node_bw : cluster.intra_node_bw;
  const Shapes x(config, cluster.cpu);
  const double p2p_seconds = x.wire * x.h * x.tokens / pp_bw;
  const int64_t chunks = config.parallel.virtual_pipeline_stages;
  const StageCosts costs{forward, backward, p2p_seconds};
  const PipelineSimulation timeline = simulate_schedule(config.parallel.pipeline_schedule, pp, m, chunks, &costs);
  double dp_seconds = 0;
  for (const StageEstimate& s : out.stages)
    dp_seconds = std::max(dp_seconds, static_cast<double>(s.comm.dp) * ring(dp) / dp_bw);
  out.step_seconds = timeline.makespan + dp_seconds;
  // The pipeline's bubble is the busiest stage's idle time; a lighter stage
  // idles longer, but for want of work, not for the schedule.
  out.bubble = 1.0 - *std::max_element(timeline.busy.begin(), timeline.busy.end()) / timeline.makespan;
  out.bubble_theory = simulate_schedule(config.parallel.pipeline_schedule, pp, m, chunks).bubble;
  out.tokens_per_s = static_cast<double>(config.global_batch() * config.model.max_seq_length) / out.step_seconds;
  // Model FLOPs (3x the forward, recomputation not counted) over what the ranks could do.
  double model_flops = 0;
  for (int64_t s = 0; s < pp; ++s) {
    const double layers = static_cast<double>(stage_layers(config, s));
    model_flops += 3 * (layers * x.layer_flops() + (s == pp - 1 ? 2 * x.tokens * x.h * x.vocab : 0));
  }
  model_flops *= static_cast<double>(m * dp * tp);
  const double rate = cluster.flops * (x.c == 4 ? 0.5 : 1.0);
  out.mfu = model_flops / (out.step_seconds * static_cast<double>(cluster.world_size) * rate);
  out.device_memory = cluster.device_memory;
  out.fits = out.peak_memory() <= cluster.device_memory;
  return out;
}

std::string LayoutEstimate::describe() const {
  const MemoryEstimate& m = stages.at(largest_stage).memory;
  std::string text = fmt::format(
      "{} GB per rank on stage {} of {} (weights {}, gradients {}, optimizer {}, activations {} for {} "
      "microbatch(es) in flight [{} without recompute, {} with], communication buffers {}",
      gb(m.total()), largest_stage, stages.size(), gb(m.weights), gb(m.gradients), gb(m.optimizer), gb(m.activations),
      m.in_flight, gb(m.activations_without_recompute), gb(m.activations_with_recompute), gb(m.comm_buffers));
  if (m.baseline > 0) text += fmt::format(", CPU process {}", gb(m.baseline));
  return text + ")";
}

// e.g. "80GB", "80 GiB", "1.5TB", "512MB", "4e9".
double parse_bytes(const std::string& text, const std::string& flag) {
  std::istringstream in(text);
  double value = -1;
  std::string unit;
  in >> value;
  const bool number = static_cast<bool>(in);
  in.clear();
  std::getline(in >> std::ws, unit);
  static const std::vector<std::pair<std::string, double>> units = {
      {"", 1},     {"B", 1},           {"KB", 1e3},        {"MB", 1e6},        {"GB", 1e9},
      {"TB", 1e12}, {"KiB", 1024.0},   {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  for (const auto& [name, scale] : units)
    if (number && value > 0 && unit == name) return value * scale;
  throw ConfigError(flag + " must be a positive size such as 80GB or 24GiB, got '" + text + "'");
}

double parse_bandwidth(const std::string& text, const std::string& flag) {
  const size_t slash = text.rfind("/s");
  if (slash == std::string::npos || slash + 2 != text.size())
    throw ConfigError(flag + " must be a rate such as 450GB/s, got '" + text + "'");
  return parse_bytes(text.substr(0, slash), flag);
}

Cluster cluster_of(const PlanCommand& command, const Config& config) {
  Cluster cluster;
  if (command.world_size <= 0)
    throw ConfigError("--world-size must be positive, got " + std::to_string(command.world_size));
  if (command.gpus_per_node <= 0)
    throw ConfigError("--gpus-per-node must be positive, got " + std::to_string(command.gpus_per_node));
  if (!(command.flops > 0)) throw ConfigError("--flops must be positive, got " + std::to_string(command.flops));
  cluster.world_size = command.world_size;
  cluster.gpus_per_node = command.gpus_per_node;
  cluster.device_memory = parse_bytes(command.device_memory, "--device-memory");
  cluster.flops = command.flops;
  cluster.intra_node_bw = parse_bandwidth(command.intra_node_bw, "--intra-node-bw");
  cluster.inter_node_bw = parse_bandwidth(command.inter_node_bw, "--inter-node-bw");
  cluster.cpu = config.train.device == DeviceChoice::Cpu;
  return cluster;
}

std::vector<LayoutEstimate> plan_layouts(const Config& config, const Cluster& cluster) {
  const int64_t world = cluster.world_size;
  // The global batch is the config's, as training would resolve it.
  Config own = config;
  std::string own_error;
  int64_t global = config.train.global_batch_size.value_or(32);
  try {
    own.resolve(world);
    global = own.global_batch();
  } catch (const ConfigError& e) {
    own_error = e.what();
  }
  std::vector<LayoutEstimate> layouts;
  for (int64_t tp = 1; tp <= std::min(world, cluster.gpus_per_node); ++tp) {
    if (world % tp != 0) continue;
    for (int64_t pp = 1; pp <= world / tp; ++pp) {
      if (world / tp % pp != 0) continue;
      const int64_t dp = world / (tp * pp);
      if (global % dp != 0) continue;
      for (int64_t micro = 1; micro <= global / dp; ++micro) {
        if (global / dp % micro != 0) continue;
        for (const auto& [schedule, name] : choice_table<PipelineSchedule>())
          for (Recompute recompute : {Recompute::None, Recompute::Full})
            for (Precision precision : {Precision::Bf16, Precision::Fp32}) {
              Config c = config;
              c.parallel.tensor_parallel_size = tp;
              c.parallel.pipeline_parallel_size = pp;
              c.parallel.num_microbatches.reset();
              c.parallel.pipeline_schedule = schedule;
              c.train.global_batch_size = global;
              c.train.micro_batch_size = micro;
              c.train.recompute = recompute;
              c.train.precision = precision;
              try {
                c.resolve(world);  // training's own validation decides what is valid
              } catch (const ConfigError&) {
                continue;
              }
              layouts.push_back(estimate_layout(c, cluster));
            }
      }
    }
  }
  if (layouts.empty())
    throw ConfigError("no valid layout for world size " + std::to_string(world) + " and global batch " +
                      std::to_string(global) + (own_error.empty() ? "" : ": " + own_error));
  // Speeds within 0.5% of each other are a tie (the estimate is not finer
  // than that), which the smaller memory wins.
  auto speed = [](const LayoutEstimate& l) { return std::llround(std::log(l.tokens_per_s) / std::log(1.005)); };
  std::stable_sort(layouts.begin(), layouts.end(), [&](const LayoutEstimate& a, const LayoutEstimate& b) {
    if (a.fits != b.fits) return a.fits;
    if (speed(a) != speed(b)) return speed(a) > speed(b);
    return a.peak_memory() < b.peak_memory();
  });
  return layouts;
}

nlohmann::json to_json(const LayoutEstimate& layout) {
  const Config& c = layout.config;
  nlohmann::json stages = nlohmann::json::array();
  for (const StageEstimate& s : layout.stages) {
    const MemoryEstimate& m = s.memory;
    stages.push_back({{"parameters", s.parameters},
                      {"layers", stage_layers(c, static_cast<int64_t>(stages.size()))},
                      {"memory_bytes",
                       {{"total", m.total()},
                        {"weights", m.weights},
                        {"gradients", m.gradients},
                        {"optimizer", m.optimizer},
                        {"activations", m.activations},
                        {"activations_without_recompute", m.activations_without_recompute},
                        {"activations_with_recompute", m.activations_with_recompute},
                        {"comm_buffers", m.comm_buffers},
                        {"cpu_process", m.baseline}}},
                      {"in_flight", m.in_flight},
                      {"comm_bytes_per_step", {{"tp", s.comm.tp}, {"dp", s.comm.dp}, {"pp", s.comm.pp}}},
                      {"forward_seconds", s.forward_seconds},
                      {"backward_seconds", s.backward_seconds}});
  }
  return {{"tensor_parallel_size", c.parallel.tensor_parallel_size},
          {"pipeline_parallel_size", c.parallel.pipeline_parallel_size},
          {"data_parallel_size", c.data_parallel_size},
          {"micro_batch_size", c.train.micro_batch_size},
          {"num_microbatches", c.microbatches()},
          {"global_batch_size", c.global_batch()},
          {"pipeline_schedule", name_of(c.parallel.pipeline_schedule)},
          {"pipeline_layer_split", c.parallel.pipeline_layer_split},
          {"recompute", name_of(c.train.recompute)},
          {"precision", name_of(c.train.precision)},
          {"peak_memory_bytes", layout.peak_memory()},
          {"largest_stage", layout.largest_stage},
          {"fits", layout.fits},
          {"bubble_theory", layout.bubble_theory},
          {"bubble", layout.bubble},
          {"step_seconds", layout.step_seconds},
          {"tokens_per_s", layout.tokens_per_s},
          {"mfu", layout.mfu},
          {"stages", stages}};
}

void run_plan(const PlanCommand& command, const Config& config) {
  const Cluster cluster = cluster_of(command, config);
  const std::vector<LayoutEstimate> layouts = plan_layouts(config, cluster);
  if (command.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const LayoutEstimate& l : layouts) out.push_back(to_json(l));
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  const int64_t fitting = std::count_if(layouts.begin(), layouts.end(), [](const LayoutEstimate& l) { return l.fits; });
  const ModelConfig& m = config.model;
  std::printf("Plan: %lld layers, hidden %lld, %lld ranks (%lld per node), %s GB per rank, %.3g FLOP/s, "
              "%s / %s within / between nodes%s\n",
              static_cast<long long>(m.num_layers), static_cast<long long>(m.hidden_size),
              static_cast<long long>(cluster.world_size), static_cast<long long>(cluster.gpus_per_node),
              gb(cluster.device_memory).c_str(), cluster.flops, command.intra_node_bw.c_str(),
              command.inter_node_bw.c_str(), cluster.cpu ? " (CPU: Gloo, process baseline)" : "");
  std::printf("Global batch %lld x %lld tokens; %zu valid layouts, %lld fit; best first:\n",
              static_cast<long long>(layouts.front().config.global_batch()), static_cast<long long>(m.max_seq_length),
              layouts.size(), static_cast<long long>(fitting));
  std::printf("%3s %3s %3s %3s %4s %4s %-6s %-4s %-5s | %8s %5s %6s %6s %6s %6s %5s | %9s %9s %9s | %6s %6s | %8s %9s %5s\n", "#",
              "TP", "PP", "DP", "mbs", "M", "sched", "rec", "prec", "mem GB", "stage", "weight", "grad", "optim", "activ",
              "comm", "TP MB", "DP MB", "PP MB", "bubble", "theory", "step s", "tokens/s", "MFU");
  const size_t rows = command.top > 0 ? std::min(layouts.size(), static_cast<size_t>(command.top)) : layouts.size();
  for (size_t i = 0; i < rows; ++i) {
    const LayoutEstimate& l = layouts[i];
    const Config& c = l.config;
    const StageEstimate& big = l.stages[l.largest_stage];
    const MemoryEstimate& mem = big.memory;
    // Traffic of the rank with the most of each kind.
    CommBytes most;
    for (const StageEstimate& s : l.stages) {
      most.tp = std::max(most.tp, s.comm.tp);
      most.dp = std::max(most.dp, s.comm.dp);
      most.pp = std::max(most.pp, s.comm.pp);
    }
    std::printf("%3zu %3lld %3lld %3lld %4lld %4lld %-6s %-4s %-5s | %8s %5lld %6s %6s %6s %6s %5s | %9.1f %9.1f %9.1f | "
                "%6.3f %6.3f | %8.3f %9.0f %4.0f%%%s\n",
                i + 1, static_cast<long long>(c.parallel.tensor_parallel_size),
                static_cast<long long>(c.parallel.pipeline_parallel_size), static_cast<long long>(c.data_parallel_size),
                static_cast<long long>(c.train.micro_batch_size), static_cast<long long>(c.microbatches()),
                name_of(c.parallel.pipeline_schedule).c_str(), name_of(c.train.recompute).c_str(),
                name_of(c.train.precision).c_str(),
                gb(mem.total()).c_str(), static_cast<long long>(l.largest_stage), gb(mem.weights).c_str(),
                gb(mem.gradients).c_str(), gb(mem.optimizer).c_str(), gb(mem.activations).c_str(),
                gb(mem.comm_buffers + mem.baseline).c_str(), most.tp / 1e6, most.dp / 1e6, most.pp / 1e6, l.bubble,
                l.bubble_theory, l.step_seconds, l.tokens_per_s, 100 * l.mfu, l.fits ? "" : "  does not fit");
  }
  if (rows < layouts.size()) std::printf("(%zu more; --top 0 shows all, --json gives every figure)\n", layouts.size() - rows);
}

}  // namespace minipretrain
