#include "minipretrain/commands/plan.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace minipretrain {

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
              gigabytes(cluster.device_memory).c_str(), cluster.flops, command.intra_node_bw.c_str(),
              command.inter_node_bw.c_str(), cluster.cpu ? " (CPU: Gloo, process baseline)" : "");
  std::printf("Global batch %lld x %lld tokens%s; %zu valid layouts, %lld fit; best first:\n",
              static_cast<long long>(layouts.front().config.global_batch()), static_cast<long long>(m.max_seq_length),
              config.parallel.sequence_parallel ? ", sequence parallel where TP > 1" : "", layouts.size(),
              static_cast<long long>(fitting));
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
                gigabytes(mem.total()).c_str(), static_cast<long long>(l.largest_stage),
                gigabytes(mem.weights).c_str(), gigabytes(mem.gradients).c_str(), gigabytes(mem.optimizer).c_str(),
                gigabytes(mem.activations).c_str(), gigabytes(mem.comm_buffers + mem.baseline).c_str(), most.tp / 1e6,
                most.dp / 1e6, most.pp / 1e6, l.bubble, l.bubble_theory, l.step_seconds, l.tokens_per_s, 100 * l.mfu,
                l.fits ? "" : "  does not fit");
  }
  if (rows < layouts.size()) std::printf("(%zu more; --top 0 shows all, --json gives every figure)\n", layouts.size() - rows);
}

}  // namespace minipretrain
