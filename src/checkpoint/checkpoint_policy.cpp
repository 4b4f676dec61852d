#include "minipretrain/checkpoint/checkpoint_policy.h"

#include <chrono>
#include <utility>

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
  if (!config_.log.async_save) {
    write(step, trainer_.state(), parallel_.world());
    return;
  }
  wait();
  std::promise<void> copied;
  trainer_.before_update = [done = copied.get_future().share()] { done.wait(); };
  writer_ = std::thread([this, step, state = trainer_.state(), copied = std::move(copied)]() mutable {
    try {
      const auto start = std::chrono::steady_clock::now();
      torch::NoGradGuard no_grad;
      for (const auto& [name, entry] : state) {
        auto [slot, fresh] = snapshot_.try_emplace(name);
        if (fresh) slot->second = {torch::empty_like(entry.tensor, entry.tensor.options().device(torch::kCPU)), entry.spec};
        slot->second.tensor.copy_(entry.tensor);
      }
      copied.set_value();
      if (parallel_.is_logging_rank())
        spdlog::info("Checkpoint of step {}: state copied in {:.2f} s beside the next step, writing it", step,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      write(step, snapshot_, parallel_.saves());
    } catch (...) {
      failure_ = std::current_exception();
      // Unless the copy was done: the step goes on, wait() reports the failure.
      try {
        copied.set_value();
      } catch (const std::future_error&) {
      }
    }
  });
}

void CheckpointPolicy::write(int64_t step, const NamedState& state, Communicator& group) {
  const auto start = std::chrono::steady_clock::now();
  const std::string dir =
      save_checkpoint(config_.log.output_dir, {step, step * config_.global_batch(), ""}, state, config_, parallel_, group);
  if (parallel_.is_logging_rank())
    spdlog::info("Saved checkpoint {} in {:.1f} s", dir,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

void CheckpointPolicy::wait() {
  if (writer_.joinable()) writer_.join();
  if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
}

// On an error path: the writer uses this object and the run's config, so it
// is joined; a peer that died fails its barriers within --dist-timeout.
CheckpointPolicy::~CheckpointPolicy() {
  if (writer_.joinable()) writer_.join();
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
