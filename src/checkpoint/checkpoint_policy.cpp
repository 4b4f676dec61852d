#include "minipretrain/checkpoint/checkpoint_policy.h"

#include <chrono>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/hf_import.h"

namespace minipretrain {

CheckpointPolicy::CheckpointPolicy(const Config& config, ParallelState& parallel, Trainer& trainer)
    : config_(config), parallel_(parallel), trainer_(trainer) {}

bool CheckpointPolicy::due(int64_t step, bool stopping) const {
  return step % config_.log.save_interval == 0 || step == config_.train.max_steps || stopping;
}

std::string CheckpointPolicy::newest() const {
  const std::string latest = find_latest_checkpoint(config_.log.output_dir);
  return latest.empty() ? "none" : latest;
}

void CheckpointPolicy::save(int64_t step) {
  if (const int64_t bad = trainer_.ranks_with_non_finite_weights(); bad > 0)
    throw DivergedError(
        fmt::format("the weights after step {} are not finite on {} rank(s): not saving them", step, bad));
  const auto start = std::chrono::steady_clock::now();
  const std::string dir = save_checkpoint(config_.log.output_dir, {step, step * config_.global_batch(), ""},
                                          trainer_.state(), config_, parallel_);
  if (parallel_.is_logging_rank())
    spdlog::info("Saved checkpoint {} in {:.1f} s", dir,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

int64_t CheckpointPolicy::resume() {
  std::string dir = config_.train.resume;
  if (dir == "auto") {
    dir = find_latest_checkpoint(config_.log.output_dir);
    // Every rank looked for itself: a lagging shared file system must not
    // make them start at different steps.
    const double step = dir.empty() ? -1.0 : static_cast<double>(checkpoint_step(dir));
    const std::vector<double> seen = parallel_.world().all_reduce({step, -step}, ReduceOp::Max);
    if (seen[0] != -seen[1])
      throw std::runtime_error(fmt::format("--resume auto: the ranks see different newest checkpoints under {} (steps "
                                           "{} to {}); is --output-dir a shared file system that lags?",
                                           config_.log.output_dir, -seen[1], seen[0]));
    if (dir.empty() && parallel_.is_logging_rank())
      spdlog::info("--resume auto: no checkpoint under {}, starting from step 1", config_.log.output_dir);
  }
  if (!dir.empty()) {
    const TrainingProgress progress = load_checkpoint(dir, trainer_.state(), config_);
    trainer_.loaded();
    if (parallel_.is_logging_rank())
      spdlog::info("Resumed from {} at step {} (written by {}, now TP {} x PP {} x DP {})", dir, progress.step,
                   progress.layout, parallel_.layout().tp, parallel_.layout().pp, parallel_.layout().dp);
    return progress.step + 1;
  }
  if (config_.train.init_from.empty()) return 1;
  NamedState weights;
  for (const auto& [name, entry] : trainer_.state())
    if (name.rfind("model/", 0) == 0) weights[name] = entry;
  load_weights(config_.train.init_from, weights, config_);
  trainer_.loaded();
  if (parallel_.is_logging_rank())
    spdlog::info("Initialized the weights from {}; optimizer state is fresh, training starts at step 1",
                 config_.train.init_from);
  return 1;
}

}  // namespace minipretrain
