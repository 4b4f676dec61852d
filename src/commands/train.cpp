#include "minipretrain/commands/train.h"

#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/checkpoint_policy.h"
#include "minipretrain/distributed/launch_env.h"
#include "minipretrain/distributed/parallel_state.h"
#include "minipretrain/model/stage.h"
#include "minipretrain/plan/estimate.h"
#include "minipretrain/train/faults.h"
#include "minipretrain/train/log_sinks.h"
#include "minipretrain/train/main_params.h"
#include "minipretrain/train/metrics.h"
#include "minipretrain/train/stop_signals.h"
#include "minipretrain/train/trainer.h"

namespace minipretrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Every step allocates and frees the same large activation tensors. glibc
// would hand each one back to the kernel (mmap/munmap) and fault its pages in
// again next time, zero-filled: a second per Small step. Keeping freed memory
// in the heap makes the next step reuse it.
void keep_freed_memory() {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
}

int threads_per_process(const Config& config, const LaunchEnv& env) {
  if (config.train.num_threads > 0) return static_cast<int>(config.train.num_threads);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / static_cast<int>(env.local_world_size));
}

// On CUDA it also makes that GPU current, before any other CUDA call would
// make a context on GPU 0 of every rank.
torch::Device pick_device(DeviceChoice wanted, const LaunchEnv& env) {
  const bool cuda = torch::cuda::is_available();
  if (wanted == DeviceChoice::Cuda && !cuda)
    throw ConfigError("device cuda was asked for, but no CUDA device is available");
  if (wanted == DeviceChoice::Cpu || !cuda) return torch::kCPU;
  const char* visible_devices = std::getenv("CUDA_VISIBLE_DEVICES");
  const int gpu = gpu_of_local_rank(env, static_cast<int>(torch::cuda::device_count()),
                                    visible_devices && std::string(visible_devices).find(',') == std::string::npos);
  if (cudaSetDevice(gpu) != cudaSuccess) throw std::runtime_error("cannot use GPU " + std::to_string(gpu));
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(gpu));
}

// The memory one rank of this device may use: the GPU's, or on CPU the
// machine's shared by its local processes. 0 when unknown.
double device_memory_per_rank(const torch::Device& device, const LaunchEnv& env) {
  if (device.is_cuda()) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) return static_cast<double>(total_bytes);
    return 0;
  }
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    double kb = 0;
    meminfo >> kb;
    if (key == "MemTotal:") return kb * 1024.0 / static_cast<double>(std::max<int64_t>(1, env.local_world_size));
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

// The planner's estimate of this layout (plan/estimate.h) with the precision
// the trainer will pick, for --print-config and the banner.
LayoutEstimate estimate_of(const Config& config, const torch::Device& device, const LaunchEnv& env, int64_t world) {
  Config resolved = config;
  resolved.train.precision =
      resolve_precision(config.train.precision, device) == torch::kFloat ? Precision::Fp32 : Precision::Bf16;
  Cluster cluster;
  cluster.world_size = world;
  cluster.gpus_per_node = std::max<int64_t>(1, env.local_world_size);
  cluster.device_memory = device_memory_per_rank(device, env);
  cluster.cpu = !device.is_cuda();
  return estimate_layout(resolved, cluster);
}

void print_resolved_config(const Config& config) {
  std::printf("%s\n", to_json(config).dump(2).c_str());
  const ParameterCount n = count_parameters(config.model);
  std::printf("parameters: %lld total\n", static_cast<long long>(n.total()));
  std::printf("  embedding  %14lld\n  attention  %14lld  (%lld per layer)\n  mlp        %14lld  (%lld per layer)\n"
              "  norms      %14lld  (%lld per layer + final)\n  lm_head    %14lld\n",
              static_cast<long long>(n.embedding), static_cast<long long>(n.attention),
              static_cast<long long>(n.per_layer_attention), static_cast<long long>(n.mlp),
              static_cast<long long>(n.per_layer_mlp), static_cast<long long>(n.norms),
              static_cast<long long>(n.per_layer_norms), static_cast<long long>(n.lm_head));
}

// The "Training Configuration" block of the Python original, on the logging rank.
void log_banner(const Config& config, const ParallelState& parallel, const Trainer& trainer, int threads,
                const LayoutEstimate& estimate) {
  const ParameterCount n = count_parameters(config.model);
  const Layout& layout = parallel.layout();
  std::string split;
  for (int64_t k : config.parallel.pipeline_layer_split) {
    if (!split.empty()) split += ',';
    split += std::to_string(k);
  }
  spdlog::info("Training Configuration:");
  spdlog::info("  Model: {:.2f}M parameters | {} layers, hidden {}, intermediate {}, heads {} (kv {}), vocab {}, seq {}",
               n.total() / 1e6, config.model.num_layers, config.model.hidden_size, config.model.intermediate_size,
               config.model.num_attention_heads, config.model.kv_heads(), config.model.vocab_size,
               config.model.max_seq_length);
  spdlog::info("  World size: {} | Data parallel: {}{} | Tensor parallel: {} | Pipeline parallel: {} | {} threads per "
               "process",
               layout.world(), layout.dp,
               config.parallel.use_distributed_optimizer && layout.dp > 1 ? " (distributed optimizer)" : "", layout.tp,
               layout.pp, threads);
  spdlog::info("  Micro batch size: {} | Microbatches: {} | Global batch size: {} ({} tokens per step)",
               config.train.micro_batch_size, config.microbatches(), config.global_batch(),
               config.global_batch() * config.model.max_seq_length);
  const int64_t virtual_stages = config.parallel.virtual_pipeline_stages;
  if (virtual_stages == 1)
    spdlog::info("  Pipeline schedule: {} | Layers per stage: {}", name_of(config.parallel.pipeline_schedule), split);
  else
    spdlog::info("  Pipeline schedule: {}, {} virtual stages per rank | Layers per virtual stage: {}",
                 name_of(config.parallel.pipeline_schedule), virtual_stages, split);
  spdlog::info("  Steps: {} | LR {:.2e} -> {:.2e}, warm-up {:.0f}% | Weight decay: {} | Grad clip: {}",
               config.train.max_steps, config.train.learning_rate, config.train.min_lr,
               100 * config.train.warmup_ratio, config.train.weight_decay, config.train.grad_clip);
  spdlog::info("  Precision {} (--precision {}) | Recompute: {} | Seed: {}", trainer.precision_name(),
               name_of(config.train.precision), name_of(config.train.recompute), config.train.seed);
  spdlog::info("  Memory estimate: {}", estimate.describe());
  if (trainer.dataset()) spdlog::info("  Data: {}", trainer.dataset()->describe());
  spdlog::info("  Output: {} (checkpoint every {} steps{}){}", config.log.output_dir, config.log.save_interval,
               config.log.save_keep > 0 ? ", newest " + std::to_string(config.log.save_keep) + " kept" : "",
               config.log.tensorboard_dir.empty() ? "" : " | TensorBoard: " + config.log.tensorboard_dir);
}

nlohmann::json comm_stats(const ParallelState& parallel) {
  const std::pair<const char*, const Communicator*> groups[] = {
      {"tp", &parallel.tp()}, {"dp", &parallel.dp()}, {"pp", &parallel.pp()}};
  nlohmann::json out;
  for (const auto& [group, comm] : groups) {
    nlohmann::json ops = nlohmann::json::object();
    for (const auto& [op, s] : comm->stats())
      ops[op] = {{"calls", s.calls},
                 {"bytes", s.bytes},
                 {"ring_bytes", ring_bytes(op, s, comm->size())},
                 {"seconds", s.seconds}};
    out[group] = ops;
  }
  return out;
}

// Why the run stops after `step` ("" to go on): --exit-interval, a signal, or
// --exit-duration-mins. Every rank decides alike: the last two come from the
// boundary's all-reduce.
std::string why_stop(const Config& config, int64_t step, const Boundary& boundary) {
  if (boundary.stop_signals > 0) {
    if (const int signal = stop_signal(); signal != 0)
      spdlog::warn("Got SIG{}: stopping with a checkpoint after step {}", sigabbrev_np(signal), step);
    return fmt::format("a stop signal reached {} rank(s); resume with --resume auto", boundary.stop_signals);
  }
  if (boundary.out_of_time)
    return fmt::format("the run has taken --exit-duration-mins {}; resume with --resume auto",
                       config.log.exit_duration_mins);
  if (config.log.exit_interval > 0 && step % config.log.exit_interval == 0)
    return fmt::format("step {} is a multiple of --exit-interval", step);
  return "";
}

// --dump-first-step: step 1's gradients and (last stage) logits of
// microbatch 0, one shard per (TP, PP) position, for the layout tests.
void dump_first_step(const Config& config, const ParallelState& parallel, Trainer& trainer) {
  if (parallel.coords().dp != 0) return;
  const std::filesystem::path dir = config.train.dump_first_step;
  std::filesystem::create_directories(dir);
  const std::string where = "tp" + std::to_string(parallel.coords().tp) + "-pp" + std::to_string(parallel.coords().pp);
  auto write = [&](const std::string& file, const NamedState& state) {
    std::map<std::string, torch::Tensor> tensors;
    std::map<std::string, ShardSpec> specs;
    for (const auto& [name, entry] : state) {
      tensors[name] = entry.tensor;
      specs[name] = *entry.spec;
    }
    write_named_shard((dir / (file + "-" + where)).string(), tensors, specs);
  };
  write("grads", trainer.gradients());
  if (parallel.is_last_stage()) write("logits", {{"logits", trainer.first_logits()}});
}

// The figures of `step`, with rates over the `interval_steps` steps since the last record.
StepRecord record_of(const Config& config, const ParallelState& parallel, const Trainer& trainer, int64_t step,
                     const StepStats& s, double interval_seconds, int64_t interval_steps) {
  StepRecord r;
  r.step = step;
  r.max_steps = config.train.max_steps;
  r.loss = s.boundary.loss;
  r.skipped = s.boundary.non_finite;
  r.skipped_total = trainer.skipped_total();
  r.lr = s.lr;
  r.grad_norm = s.grad_norm;
  r.samples_per_s = static_cast<double>(config.global_batch() * interval_steps) / interval_seconds;
  r.tokens_per_s = r.samples_per_s * static_cast<double>(config.model.max_seq_length);
  r.ms_per_step = 1000.0 * interval_seconds / static_cast<double>(interval_steps);
  r.tokens_seen = step * config.global_batch() * config.model.max_seq_length;
  r.peak_rss_mb = static_cast<double>(peak_resident_kb()) / 1024.0;
  r.pipelined = parallel.layout().pp > 1;
  r.schedule = config.parallel.pipeline_schedule;
  r.bubble = s.bubble;
  r.bubble_theory = trainer.bubble_theory();
  r.forward_ms = 1000.0 * s.forward_seconds;
  r.backward_ms = 1000.0 * s.backward_seconds;
  r.dp_ms = 1000.0 * s.dp_seconds;
  r.optimizer_ms = 1000.0 * s.optimizer_seconds;
  r.comm = comm_stats(parallel);
  return r;
}

// The step loop. True at --max-steps, false after a stop (with a checkpoint).
bool train_loop(const Config& config, ParallelState& parallel, Trainer& trainer) {
  std::filesystem::create_directories(config.log.output_dir);
  CheckpointPolicy checkpoints(config, parallel, trainer);
  const int64_t first_step = checkpoints.resume();
  LogSinks sinks = parallel.is_logging_rank() ? LogSinks(config, first_step) : LogSinks();
  if (!config.train.dump_first_step.empty())
    trainer.on_gradients = [&](int64_t step) {
      if (step == 1) dump_first_step(config, parallel, trainer);
    };
  install_stop_handlers();
  const auto run_start = Clock::now();
  // --exit-duration-mins, capped at 30 years so that the time point cannot overflow.
  const double limit_s = std::min(60.0 * config.log.exit_duration_mins, 1e9);
  const auto deadline = limit_s > 0 ? run_start + std::chrono::duration_cast<Clock::duration>(
                                                      std::chrono::duration<double>(limit_s))
                                    : Clock::time_point::max();
  const int64_t max_steps = config.train.max_steps;
  double elapsed = 0, interval_seconds = 0;
  int64_t interval_steps = 0;
  for (int64_t step = first_step; step <= max_steps; ++step) {
    try {
      for (Communicator* c : {&parallel.tp(), &parallel.dp(), &parallel.pp()}) c->reset_stats();
      set_current_step(step);
      const StepStats stats = trainer.step(step, deadline);
      elapsed += stats.seconds;
      interval_seconds += stats.seconds;
      ++interval_steps;
      if (step % config.log.log_interval == 0 || step == max_steps || stats.boundary.non_finite) {
        if (parallel.is_logging_rank()) {
          StepRecord record = record_of(config, parallel, trainer, step, stats, interval_seconds, interval_steps);
          record.elapsed_s = elapsed;
          record.wall_s = seconds_since(run_start);
          sinks.step(record);
        }
        interval_seconds = 0;
        interval_steps = 0;
      }
      if (trainer.has_validation() && (step % config.data.eval_interval == 0 || step == max_steps))
        sinks.validation(step, trainer.evaluate());
      const std::string stop_reason = why_stop(config, step, stats.boundary);
      if (checkpoints.due(step, !stop_reason.empty())) checkpoints.save(step);
      if (!stop_reason.empty() && step < max_steps) {
        checkpoints.wait();
        if (parallel.is_logging_rank()) spdlog::info("Stopping after step {}: {}", step, stop_reason);
        return false;
      }
    } catch (const CommunicationError& e) {
      throw CommunicationError("at step " + std::to_string(step) + ": " + e.what());
    } catch (const DivergedError& e) {
      throw DivergedError(std::string(e.what()) + "; the newest checkpoint (" + checkpoints.newest() +
                          ") is untouched");
    }
  }
  checkpoints.wait();
  return true;
}

}  // namespace

void run_train(Config config, bool print_config) {
  const auto launched = Clock::now();
  keep_freed_memory();
  const LaunchEnv env = detect_launch_env();
  if (print_config) {
    // Outside a launcher, show the smallest job of this layout (DP = 1).
    const int64_t world = env.launcher == "none"
                              ? config.parallel.tensor_parallel_size * config.parallel.pipeline_parallel_size
                              : env.world_size;
    config.resolve(world);
    print_resolved_config(config);
    const LayoutEstimate estimate = estimate_of(config, pick_device(config.train.device, env), env, world);
    std::printf("memory estimate: %s\n", estimate.describe().c_str());
    return;
  }
  config.resolve(env.world_size);
  FaultPlan::from_environment();  // a malformed MINIPRETRAIN_FAULT fails here, before any peer waits
  spdlog::set_pattern(env.world_size > 1 ? "[%H:%M:%S] [rank " + std::to_string(env.rank) + "] %^%l%$ %v"
                                         : "[%H:%M:%S] %^%l%$ %v");
  if (const char* level = std::getenv("MINIPRETRAIN_LOG_LEVEL")) spdlog::set_level(spdlog::level::from_str(level));
  const int threads = threads_per_process(config, env);
  torch::set_num_threads(threads);
  const torch::Device device = pick_device(config.train.device, env);
  // Before any work starts: a layout that will not fit is said so now.
  const LayoutEstimate estimate = estimate_of(config, device, env, env.world_size);
  if (!estimate.fits && estimate.device_memory > 0 && env.rank == 0)
    spdlog::warn("This layout is predicted not to fit: {:.2f} GB on the largest rank (stage {}), the device has "
                 "{:.2f} GB per rank; 'minipretrain plan' lists layouts that fit",
                 estimate.peak_memory() / 1e9, estimate.largest_stage, estimate.device_memory / 1e9);

  ParallelState parallel(env, config, device);
  spdlog::info("{}", parallel.describe());
  Trainer trainer(config, parallel, device);
  if (parallel.is_logging_rank()) {
    log_banner(config, parallel, trainer, threads, estimate);
    spdlog::info("Start-up took {:.2f} s", seconds_since(launched));
  }
  const bool finished = train_loop(config, parallel, trainer);
  spdlog::info("Peak resident memory of rank {}: {:.1f} MB", parallel.rank(), peak_resident_kb() / 1024.0);
  if (parallel.is_logging_rank() && finished) spdlog::info("Training finished");
}

}  // namespace minipretrain
