#include "minipretrain/train/log_sinks.h"

#include <cmath>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "minipretrain/train/metrics.h"
#include "minipretrain/train/tensorboard.h"

namespace minipretrain {
namespace {

// 3725 s -> "1:02:05".
std::string clock_time(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
}

class ConsoleSink : public LogSink {
 public:
  void step(const StepRecord& r) override {
    const double eta = r.ms_per_step / 1000.0 * static_cast<double>(r.max_steps - r.step);
    std::string line =
        fmt::format("Step {} | Loss: {:.4f} | LR: {:.2e} | Throughput: {:.2f} samples/s | {:.0f} tokens/s | "
                    "Grad norm: {:.3f} | {:.1f} ms/step | Elapsed: {} | ETA: {}",
                    r.step, r.loss, r.lr, r.samples_per_s, r.tokens_per_s, r.grad_norm, r.ms_per_step,
                    clock_time(r.wall_s), clock_time(eta));
    if (r.pipelined)
      line += fmt::format(" | Bubble: {:.2f} ({} theory {:.2f})", r.bubble, name_of(r.schedule), r.bubble_theory);
    if (r.skipped_total > 0) line += fmt::format(" | Skipped: {}", r.skipped_total);
    spdlog::info(line);
    spdlog::debug("communication this step: {}", r.comm.dump());
  }
  void validation(int64_t step, double loss) override {
    spdlog::info("Validation at step {} | Loss: {:.4f} | PPL: {:.2f}", step, loss, std::exp(loss));
  }
};

class JsonLinesSink : public LogSink {
 public:
  JsonLinesSink(const std::string& output_dir, int64_t first_step) : log_(output_dir, first_step - 1) {}
  // A skipped step's loss may be NaN, which JSON writes as null.
  void step(const StepRecord& r) override {
    log_.write({{"step", r.step},
                {"loss", r.loss},
                {"skipped", r.skipped},
                {"skipped_total", r.skipped_total},
                {"peak_rss_mb", r.peak_rss_mb},
                {"tokens_seen", r.tokens_seen},
                {"lr", r.lr},
                {"grad_norm", r.grad_norm},
                {"tokens_per_s", r.tokens_per_s},
                {"samples_per_s", r.samples_per_s},
                {"elapsed_s", r.elapsed_s},
                {"ms_per_step", r.ms_per_step},
                {"bubble", r.bubble},
                {"forward_ms", r.forward_ms},
                {"backward_ms", r.backward_ms},
                {"dp_ms", r.dp_ms},
                {"optimizer_ms", r.optimizer_ms},
                {"bubble_theory", r.bubble_theory},
                {"comm", r.comm}});
  }
  void validation(int64_t step, double loss) override {
    log_.write({{"step", step}, {"val_loss", loss}, {"val_ppl", std::exp(loss)}});
  }

 private:
  MetricsLog log_;
};

class TensorBoardSink : public LogSink {
 public:
  TensorBoardSink(const std::string& dir, int64_t first_step) : writer_(dir, first_step) {}
  void step(const StepRecord& r) override {
    const std::pair<const char*, double> scalars[] = {
        {"loss", r.loss},
        {"lr", r.lr},
        {"grad_norm", r.grad_norm},
        {"tokens_per_s", r.tokens_per_s},
        {"skipped_total", static_cast<double>(r.skipped_total)},
        {"peak_rss_mb", r.peak_rss_mb}};
    for (const auto& [key, value] : scalars) writer_.add_scalar(std::string("train/") + key, value, r.step);
    if (r.pipelined) writer_.add_scalar("train/bubble", r.bubble, r.step);
    writer_.flush();
  }
  void validation(int64_t step, double loss) override {
    writer_.add_scalar("val/loss", loss, step);
    writer_.add_scalar("val/ppl", std::exp(loss), step);
    writer_.flush();
  }

 private:
  TensorBoardWriter writer_;
};

}  // namespace

LogSinks::LogSinks(const Config& config, int64_t first_step) {
  sinks_.push_back(std::make_unique<ConsoleSink>());
  sinks_.push_back(std::make_unique<JsonLinesSink>(config.log.output_dir, first_step));
  if (!config.log.tensorboard_dir.empty())
    sinks_.push_back(std::make_unique<TensorBoardSink>(config.log.tensorboard_dir, first_step));
}

void LogSinks::step(const StepRecord& record) {
  for (auto& sink : sinks_) sink->step(record);
}

void LogSinks::validation(int64_t step, double loss) {
  for (auto& sink : sinks_) sink->validation(step, loss);
}

}  // namespace minipretrain
