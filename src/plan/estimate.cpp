#include "minipretrain/plan/estimate.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include <fmt/format.h>

#include "minipretrain/model/stage.h"
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
  double layer_weights;           // one decoder layer's GEMM weights on this rank (fused QKV, O, gate/up, down)
  double layer_norms;             // its two norm weights, replicated
  int64_t tp;
  bool sequence_parallel;
  double shard;                   // the sequence's split outside the TP layers: TP with sequence parallelism, else 1

  Shapes(const Config& config, bool cpu) {
    const ModelConfig& m = config.model;
    tp = config.parallel.tensor_parallel_size;
    sequence_parallel = config.parallel.sequence_parallel;
    shard = sequence_parallel ? static_cast<double>(tp) : 1.0;
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
    // TP divides the heads, the kv heads and the MLP width (Config::resolve):
    // the weights split evenly.
    const ParameterCount n = count_parameters(m);
    layer_weights = static_cast<double>((n.per_layer_attention + n.per_layer_mlp) / tp);
    layer_norms = static_cast<double>(n.per_layer_norms);
  }

  double layer_parameters() const { return layer_weights + layer_norms; }

  // Bytes of one microbatch's [tokens, hidden] activation, in memory and on the wire.
  double hidden_bytes() const { return c * h * tokens; }
  double wire_hidden_bytes() const { return wire * h * tokens; }
  // The same outside the TP layers (the residual stream, the pipeline's transfers).
  double outside_hidden_bytes() const { return hidden_bytes() / shard; }
  double outside_wire_hidden_bytes() const { return wire_hidden_bytes() / shard; }

  // Bytes one RMSNorm keeps for backward: its fp32 input (the input itself in
  // fp32) and the normalized fp32 values cast to the compute dtype (saved by
  // * weight), on this rank's positions; and its output, saved by the next
  // GEMM, which with sequence parallelism keeps the gathered whole sequence.
  double norm_bytes() const { return ((4 + c) / shard + c) * h * tokens; }

  // Bytes one decoder layer keeps for backward per microbatch, tensor by
  // tensor as model/layers.cpp makes them:
  //   each RMSNorm (norm_bytes);
  //   the fused QKV output (RoPE's halves are views of it), RoPE's q and k,
  //   v made contiguous for bmm, the attention output reshaped for o_proj;
  //   the fp32 softmax and, in bf16, its bf16 copy saved by bmm;
  //   the fused gate/up output (silu saves a view of it), silu's output and
  //   the product saved by down_proj.
  double layer_activations() const {
    const double norms = 2 * norm_bytes();
    const double attention = c * (3 * q + 4 * kv) * tokens + b * heads * s * s * (c == 4 ? 4 : 6);
    const double mlp = 4 * c * inter * tokens;
    return norms + attention + mlp;
  }

  // Forward FLOPs of one decoder layer for one microbatch: the GEMMs and the
  // two attention products (the causal mask is applied, not skipped).
  double layer_flops() const { return 2 * tokens * layer_weights + 4 * b * heads * s * s * (q / heads); }
};

double ring(int64_t size) { return size > 1 ? 2.0 * static_cast<double>(size - 1) / static_cast<double>(size) : 0.0; }

// The DP group's seconds a step: an all-reduce crosses a ring twice, a
// reduce-scatter or an all-gather once; Gloo reduce-scatters by all-reducing.
double dp_traffic_seconds(const Config& config, const Cluster& cluster, int64_t parameters, double bandwidth) {
  const int64_t dp = config.data_parallel_size;
  const double r = ring(dp), params = static_cast<double>(parameters);
  if (!config.parallel.use_distributed_optimizer) return params * 4 * r / bandwidth;
  const double padded = static_cast<double>((parameters + dp - 1) / dp * dp);
  const double gathered = computes_in_fp32(config.train.precision, cluster.cpu) ? 4 : 2;
  return padded * (4 * (cluster.cpu ? r : r / 2) + gathered * r / 2) / bandwidth;
}

// Matmul FLOP/s of one rank at the config's precision.
double compute_rate(const Cluster& cluster, const Shapes& x) { return cluster.flops * (x.c == 4 ? 0.5 : 1.0); }

// The decoder layers a pipeline rank holds, in all its chunks.
int64_t layers_of(const StagePosition& position) {
  int64_t layers = 0;
  for (const StagePosition::Chunk& chunk : position.chunks) layers += chunk.num_layers;
  return layers;
}

// One rank of pipeline stage `stage`: its shapes and what of the model it
// holds (with interleaving, the layers of all its chunks).
struct StageSlice {
  const Config& config;
  Shapes x;
  StagePosition position;
  double layers;
  double microbatches;
  bool recompute;
  int64_t dp;
  int64_t shards;  // DP ranks the optimizer state is split over (train/sharded_optimizer.h)

  StageSlice(const Config& config, bool cpu, int64_t stage, int64_t num_stages)
      : config(config),
        x(config, cpu),
        position(StagePosition::of(config.parallel.pipeline_layer_split, stage, num_stages)),
        layers(static_cast<double>(layers_of(position))),
        microbatches(static_cast<double>(config.microbatches())),
        recompute(config.train.recompute == Recompute::Full),
        dp(config.data_parallel_size),
        shards(config.parallel.use_distributed_optimizer ? dp : 1) {}

  bool first() const { return position.first(); }
  bool last() const { return position.last(); }

  // Its decoder layers, the embedding on the first stage, the final norm and
  // the LM head on the last.
  double parameters() const {
    return layers * x.layer_parameters() + (first() ? x.vocab * x.h : 0) + (last() ? x.h + x.vocab * x.h : 0);
  }

  double forward_flops() const { return layers * x.layer_flops() + (last() ? 2 * x.tokens * x.h * x.vocab : 0); }
};

// Activation bytes with `in_flight` microbatches awaiting their backward.
double activation_bytes(const StageSlice& s, double in_flight, bool with_recompute) {
  const Shapes& x = s.x;
  const double hidden = x.outside_hidden_bytes();
  // Held per microbatch in flight: the layers' saved tensors, the stage's
  // input (a bf16 input is not what the first layer saves; in fp32 and under
  // recompute it is) and output (kept by the executor for its backward), and
  // on the last stage the final norm and the cross-entropy's fp32 softmax.
  double held = s.layers * (with_recompute ? hidden : x.layer_activations());
  if (!s.first() && x.c == 2 && !with_recompute) held += hidden;
  if (!s.last()) held += hidden;
  if (s.last()) held += x.norm_bytes() + 4 * x.vocab * x.tokens;
  // Alive once, on top: the backward of one layer (its gradients are about
  // the size of what it saved; recomputed, the layer's saved tensors too),
  // or the cross-entropy's forward (the logits and its fp32 temporaries).
  const double layer = (with_recompute ? 2 : 1) * x.layer_activations();
  const double working = std::max(layer, s.last() ? (x.c + 8) * x.vocab * x.tokens : 0.0);
  return in_flight * held + working;
}

// Communication buffers. Sends are awaited at the end of the step
// (parallel/pipeline_executor.cpp), so every microbatch's outgoing
// activation and gradient stays alive until then; in fp32 the in-flight
// outputs are those already counted as activations. A TP all-reduce works on
// a copy of its [tokens, hidden] input; Gloo's DP all-reduce on one bucket.
double comm_buffer_bytes(const StageSlice& s, double in_flight, double parameters) {
  const Shapes& x = s.x;
  const double wire_hidden = x.outside_wire_hidden_bytes();
  double bytes = 0;
  if (!s.last()) bytes += (s.microbatches - (x.wire == x.c ? in_flight : 0.0)) * wire_hidden;
  if (!s.first()) bytes += s.microbatches * wire_hidden;
  if (x.tp > 1) bytes += x.wire_hidden_bytes();
  if (s.dp > 1) bytes += std::min(parameters * 4, static_cast<double>(s.config.parallel.ddp_bucket_mb << 20));
  return bytes;
}

// On CPU: the process itself, and the synthetic corpus (int32 tokens) when no data is given.
double cpu_process_bytes(const Config& config) {
  double bytes = kCpuProcessBaseline;
  if (config.data.data_path.empty() && config.data.data_dir.empty())
    bytes += 4.0 * static_cast<double>(config.data.num_train_samples * config.model.max_seq_length);
  return bytes;
}

MemoryEstimate estimate_memory(const StageSlice& s, const Cluster& cluster) {
  const Config& config = s.config;
  const double params = s.parameters();
  MemoryEstimate mem;
  // train/main_params.cpp: fp32 trains the parameters themselves into one flat
  // fp32 gradient; bf16 adds bf16 copies whose bf16 gradients each backward
  // hands over before they are added into the flat fp32 one. AdamW: two fp32
  // moments. The distributed optimizer keeps the fp32 masters of bf16 and the
  // moments for 1/DP of the parameters.
  const double share = 1.0 / static_cast<double>(s.shards);
  mem.weights = params * (s.x.c == 4 ? 4 : 2 + 4 * share);
  mem.gradients = params * (s.x.c == 4 ? 4 : 6);
  mem.optimizer = params * 8 * share;

  const int64_t chunks = config.parallel.virtual_pipeline_stages;
  mem.in_flight = peak_in_flight(make_schedule(config.parallel.pipeline_schedule, s.position.num_stages,
                                               s.position.stage, config.microbatches(), chunks));
  // Interleaved: what is held is counted in chunks, each 1/V of the stage's layers.
  const double in_flight = static_cast<double>(mem.in_flight) / static_cast<double>(chunks);
  mem.activations_without_recompute = activation_bytes(s, in_flight, false);
  mem.activations_with_recompute = activation_bytes(s, in_flight, true);
  mem.activations = s.recompute ? mem.activations_with_recompute : mem.activations_without_recompute;
  mem.comm_buffers = comm_buffer_bytes(s, in_flight, params);
  if (cluster.cpu) mem.baseline = cpu_process_bytes(config);
  // The saved state: the fp32 weights (under the distributed optimizer in
  // bf16, its share of the masters) and the moments.
  if (config.log.async_save) mem.snapshot = params * ((s.x.c == 2 ? 4 * share : 4) + 8 * share);
  mem.snapshot_counted = cluster.cpu;
  return mem;
}

// TP transfers of one microbatch in one direction: all-reduces and
// all-gathers or reduce-scatters of a whole [tokens, hidden] activation,
// and other bytes all-reduced. Counted, each is its whole tensor
// (distributed/communicator.h); on a ring a gather or a reduce-scatter moves
// half what an all-reduce does.
struct TpPass {
  double reduces = 0, gathers = 0, other = 0;
  double counted(const Shapes& x) const { return (reduces + gathers) * x.wire_hidden_bytes() + other; }
  double all_reduced(const Shapes& x) const { return (reduces + gathers / 2) * x.wire_hidden_bytes() + other; }
};

// Each layer all-reduces its attention and MLP outputs forward and their
// inputs' gradients backward, again forward when recomputed; the embedding its
// output; the LM head its input's gradient; the cross-entropy three fp32
// values per token (max, target logit, sum of exponentials). With sequence
// parallelism each all-reduce is a reduce-scatter and an all-gather, and the
// embedding and the LM head communicate both ways. A group of one counts no
// bytes.
struct TpTraffic {
  TpPass forward, backward;
};

TpTraffic tp_traffic(const StageSlice& s) {
  TpTraffic t;
  if (s.x.tp <= 1) return t;
  const double recomputed = s.recompute ? 2 : 1;
  t.forward.other = s.last() ? 3 * 4 * s.x.tokens : 0;
  if (s.x.sequence_parallel) {
    const double ends = (s.first() ? 1 : 0) + (s.last() ? 1 : 0);
    t.forward.gathers = s.layers * 4 + ends;
    t.backward.gathers = s.layers * 4 * recomputed + ends;
  } else {
    t.forward.reduces = s.layers * 2 + (s.first() ? 1 : 0);
    t.backward.reduces = s.layers * 2 * recomputed + (s.last() ? 1 : 0);
  }
  return t;
}

// Bytes each communicator counts in one step (distributed/communicator.h).
CommBytes estimate_comm(const StageSlice& s, int64_t parameters) {
  const TpTraffic tp = tp_traffic(s);
  const int64_t norm_bytes = 8;  // the gradient norm adds one fp64 value over TP and over PP
  // Sequence parallelism sums the replicated norm weights' fp32 gradients over TP.
  const double norm_grads = s.x.sequence_parallel ? 4 * (s.layers * s.x.layer_norms + (s.last() ? s.x.h : 0)) : 0;
  CommBytes comm;
  comm.tp = s.x.tp > 1 ? std::llround(s.microbatches * (tp.forward.counted(s.x) + tp.backward.counted(s.x)) +
                                      norm_grads) + norm_bytes
                       : 0;
  if (s.shards > 1) {
    // The flat fp32 gradient reduce-scattered, the weights gathered (bf16
    // as bf16: nothing is added), both padded to divide over DP, and the
    // gradient norm's one fp64 value.
    const int64_t padded = (parameters + s.shards - 1) / s.shards * s.shards;
    comm.dp = padded * 4 + padded * static_cast<int64_t>(s.x.c) + norm_bytes;
  } else {
    comm.dp = s.dp > 1 ? parameters * 4 : 0;  // the flat fp32 gradient, averaged in buckets
  }
  const int64_t neighbours = (s.first() ? 0 : 1) + (s.last() ? 0 : 1);
  comm.pp = s.position.num_stages > 1
                ? std::llround(s.microbatches * 2 * neighbours * s.x.outside_wire_hidden_bytes()) + norm_bytes
                : 0;
  return comm;
}

// One microbatch's forward and backward seconds: its FLOPs (the backward's
// twice the forward's, plus the forward again when recomputed) at the
// precision's rate, and its TP transfers within the node.
std::pair<double, double> estimate_seconds(const StageSlice& s, const Cluster& cluster) {
  const TpTraffic tp = tp_traffic(s);
  const double rate = compute_rate(cluster, s.x);
  const double forward_flops = s.forward_flops();
  const double tp_seconds = ring(s.x.tp) / cluster.intra_node_bw;
  return {forward_flops / rate + tp.forward.all_reduced(s.x) * tp_seconds,
          (2 * forward_flops + (s.recompute ? s.layers * s.x.layer_flops() : 0)) / rate +
              tp.backward.all_reduced(s.x) * tp_seconds};
}

// One stage of `config` on one rank.
StageEstimate estimate_stage(const Config& config, const Cluster& cluster, int64_t stage, int64_t num_stages) {
  const StageSlice s(config, cluster.cpu, stage, num_stages);
  StageEstimate e;
  e.parameters = std::llround(s.parameters());
  e.memory = estimate_memory(s, cluster);
  e.comm = estimate_comm(s, e.parameters);
  std::tie(e.forward_seconds, e.backward_seconds) = estimate_seconds(s, cluster);
  return e;
}

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
  const double p2p_seconds = x.outside_wire_hidden_bytes() / pp_bw;
  const int64_t chunks = config.parallel.virtual_pipeline_stages;
  const StageCosts costs{forward, backward, p2p_seconds};
  const PipelineSimulation timeline = simulate_schedule(config.parallel.pipeline_schedule, pp, m, chunks, &costs);
  double dp_seconds = 0;
  for (const StageEstimate& s : out.stages)
    dp_seconds = std::max(dp_seconds, dp_traffic_seconds(config, cluster, s.parameters, dp_bw));
  out.step_seconds = timeline.makespan + dp_seconds;
  // The pipeline's bubble is the busiest stage's idle time; a lighter stage
  // idles longer, but for want of work, not for the schedule.
  out.bubble = 1.0 - *std::max_element(timeline.busy.begin(), timeline.busy.end()) / timeline.makespan;
  out.bubble_theory = simulate_schedule(config.parallel.pipeline_schedule, pp, m, chunks).bubble;
  out.tokens_per_s = static_cast<double>(config.global_batch() * config.model.max_seq_length) / out.step_seconds;
  // Model FLOPs (3x the forward, recomputation not counted) over what the ranks could do.
  double model_flops = 0;
  for (int64_t s = 0; s < pp; ++s) model_flops += 3 * StageSlice(config, cluster.cpu, s, pp).forward_flops();
  model_flops *= static_cast<double>(m * dp * tp);
  out.mfu = model_flops / (out.step_seconds * static_cast<double>(cluster.world_size) * compute_rate(cluster, x));
  out.device_memory = cluster.device_memory;
  out.fits = out.peak_memory() <= cluster.device_memory;
  return out;
}

std::string gigabytes(double bytes) { return fmt::format("{:.2f}", bytes / 1e9); }

std::string LayoutEstimate::describe() const {
  const MemoryEstimate& m = stages.at(largest_stage).memory;
  std::string text = fmt::format(
      "{} GB per rank on stage {} of {} (weights {}, gradients {}, optimizer {}, activations {} for {} "
      "microbatch(es) in flight [{} without recompute, {} with], communication buffers {}",
      gigabytes(m.total()), largest_stage, stages.size(), gigabytes(m.weights), gigabytes(m.gradients),
      gigabytes(m.optimizer), gigabytes(m.activations), m.in_flight, gigabytes(m.activations_without_recompute),
      gigabytes(m.activations_with_recompute), gigabytes(m.comm_buffers));
  if (m.baseline > 0) text += fmt::format(", CPU process {}", gigabytes(m.baseline));
  if (m.snapshot > 0) text += fmt::format(", --async-save snapshot {}{}", gigabytes(m.snapshot),
                                          m.snapshot_counted ? "" : " of host memory");
  return text + ")";
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
              c.parallel.sequence_parallel = config.parallel.sequence_parallel && tp > 1;  // where there is TP
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
    const StagePosition position = StagePosition::of(c.parallel.pipeline_layer_split,
                                                     static_cast<int64_t>(stages.size()),
                                                     c.parallel.pipeline_parallel_size);
    stages.push_back({{"parameters", s.parameters},
                      {"layers", layers_of(position)},
                      {"memory_bytes",
                       {{"total", m.total()},
                        {"weights", m.weights},
                        {"gradients", m.gradients},
                        {"optimizer", m.optimizer},
                        {"activations", m.activations},
                        {"activations_without_recompute", m.activations_without_recompute},
                        {"activations_with_recompute", m.activations_with_recompute},
                        {"comm_buffers", m.comm_buffers},
                        {"cpu_process", m.baseline},
                        {"async_save_snapshot", m.snapshot}}},
                      {"in_flight", m.in_flight},
                      {"comm_bytes_per_step", {{"tp", s.comm.tp}, {"dp", s.comm.dp}, {"pp", s.comm.pp}}},
                      {"forward_seconds", s.forward_seconds},
                      {"backward_seconds", s.backward_seconds}});
  }
  return {{"tensor_parallel_size", c.parallel.tensor_parallel_size},
          {"sequence_parallel", c.parallel.sequence_parallel},
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

}  // namespace minipretrain
