// minipretrain: wires the command line to the trainer. Exit codes: 0 done
// (or stopped with a checkpoint), 2 bad configuration or layout, 3 training
// diverged, 1 any other failure (data, checkpoint, a peer process that died).
#include <chrono>
#include <malloc.h>

#include <limits>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cuda_runtime_api.h>

#include "minipretrain/commands/commands.h"
#include "minipretrain/commands/plan.h"
#include "minipretrain/commands/text_commands.h"
#include "minipretrain/config/cli.h"
#include "minipretrain/config/faults.h"
#include "minipretrain/distributed/launch_env.h"
#include "minipretrain/distributed/parallel_state.h"
#include "minipretrain/model/stage.h"
#include "minipretrain/plan/estimate.h"
#include "minipretrain/train/main_params.h"
#include "minipretrain/train/trainer.h"

using namespace minipretrain;

namespace {

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
torch::Device pick_device(const std::string& wanted, const LaunchEnv& env) {
  const bool cuda = torch::cuda::is_available();
  if (wanted == "cuda" && !cuda) throw ConfigError("device cuda was asked for, but no CUDA device is available");
  if (wanted == "cpu" || !cuda) return torch::kCPU;
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

// The planner's estimate of this layout (commands/plan.h) with the precision
// the trainer will pick, for --print-config and the banner.
LayoutEstimate estimate_of(const Config& config, const torch::Device& device, const LaunchEnv& env, int64_t world) {
  Config resolved = config;
  resolved.train.precision = resolve_precision(config.train.precision, device) == torch::kFloat ? "fp32" : "bf16";
  Cluster cluster;
  cluster.world_size = world;
  cluster.gpus_per_node = std::max<int64_t>(1, env.local_world_size);
  cluster.device_memory = device_memory_per_rank(device, env);
  cluster.cpu = !device.is_cuda();
  return estimate_layout(resolved, cluster);
}

void print_config(const Config& config) {
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
  for (int64_t k : config.parallel.pipeline_layer_split) split += (split.empty() ? "" : ",") + std::to_string(k);
  spdlog::info("Training Configuration:");
  spdlog::info("  Model: {:.2f}M parameters | {} layers, hidden {}, intermediate {}, heads {} (kv {}), vocab {}, seq {}",
               n.total() / 1e6, config.model.num_layers, config.model.hidden_size, config.model.intermediate_size,
               config.model.num_attention_heads, config.model.kv_heads(), config.model.vocab_size,
               config.model.max_seq_length);
  spdlog::info("  World size: {} | Data parallel: {} | Tensor parallel: {} | Pipeline parallel: {} | {} threads per process",
               layout.world(), layout.dp, layout.tp, layout.pp, threads);
  spdlog::info("  Micro batch size: {} | Microbatches: {} | Global batch size: {} ({} tokens per step)",
               config.train.micro_batch_size, config.microbatches(), config.global_batch(),
               config.global_batch() * config.model.max_seq_length);
  const int64_t virtual_stages = config.parallel.virtual_pipeline_stages;
  if (virtual_stages == 1)
    spdlog::info("  Pipeline schedule: {} | Layers per stage: {}", config.parallel.pipeline_schedule, split);
  else
    spdlog::info("  Pipeline schedule: {}, {} virtual stages per rank | Layers per virtual stage: {}",
                 config.parallel.pipeline_schedule, virtual_stages, split);
  spdlog::info("  Steps: {} | LR {:.2e} -> {:.2e}, warm-up {:.0f}% | Weight decay: {} | Grad clip: {}",
               config.train.max_steps, config.train.learning_rate, config.train.min_lr,
               100 * config.train.warmup_ratio, config.train.weight_decay, config.train.grad_clip);
  spdlog::info("  Precision {} (--precision {}) | Recompute: {} | Seed: {}", trainer.precision_name(),
               config.train.precision, config.train.recompute, config.train.seed);
  spdlog::info("  Memory estimate: {}", estimate.describe());
  if (trainer.dataset()) spdlog::info("  Data: {}", trainer.dataset()->describe());
  spdlog::info("  Output: {} (checkpoint every {} steps{}){}", config.log.output_dir, config.log.save_interval,
               config.log.save_keep > 0 ? ", newest " + std::to_string(config.log.save_keep) + " kept" : "",
               config.log.tensorboard_dir.empty() ? "" : " | TensorBoard: " + config.log.tensorboard_dir);
}

// Exceptions from c10d carry a backtrace over many lines: one line is enough.
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

[[noreturn]] void fail(int code, const std::string& message) {
  spdlog::error("{}", first_line(message));
  spdlog::shutdown();
  std::fflush(stdout);
  std::fflush(stderr);
  // Skip destructors: a process group whose peer died can block in them.
  std::_Exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  const auto launched = std::chrono::steady_clock::now();
  keep_freed_memory();
  try {
    auto command_line = parse_command_line(argc, argv);
    if (!command_line) return 0;
    const std::string& command = command_line->command;
    if (command != "train") {
      if (command == "plan") run_plan(command_line->plan, command_line->config);
      if (command == "generate") run_generate(command_line->generate);
      if (command == "export") run_export(command_line->export_model);
      if (command == "import") run_import(command_line->import_model);
      if (command == "tokenizer") run_tokenizer(command_line->tokenizer);
      if (command == "preprocess") run_preprocess(command_line->preprocess);
      return 0;
    }
    Config config = command_line->config;
    const LaunchEnv env = detect_launch_env();
    if (command_line->print_config) {
      // Outside a launcher, show the smallest job of this layout (DP = 1).
      const int64_t world = env.launcher == "none" ? config.parallel.tensor_parallel_size *
                                                         config.parallel.pipeline_parallel_size
                                                   : env.world_size;
      config.resolve(world);
      print_config(config);
      const LayoutEstimate estimate =
          estimate_of(config, pick_device(config.train.device, env), env, world);
      std::printf("memory estimate: %s\n", estimate.describe().c_str());
      return 0;
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
      spdlog::info("Start-up took {:.2f} s",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - launched).count());
    }
    const bool finished = trainer.run();
    spdlog::info("Peak resident memory of rank {}: {:.1f} MB", parallel.rank(), peak_resident_kb() / 1024.0);
    if (parallel.is_logging_rank() && finished) spdlog::info("Training finished");
    spdlog::shutdown();
    std::fflush(stdout);
    std::_Exit(0);
  } catch (const ConfigError& e) {
    fail(2, e.what());
  } catch (const DivergedError& e) {
    fail(3, e.what());
  } catch (const c10::Error& e) {
    fail(1, e.what_without_backtrace());
  } catch (const std::exception& e) {
    fail(1, e.what());
  }
}
