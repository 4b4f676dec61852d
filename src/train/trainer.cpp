#include "minipretrain/train/trainer.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/hf_import.h"
#include "minipretrain/config/faults.h"
#include "minipretrain/distributed/stopwatch.h"
#include "minipretrain/train/grad_clip.h"
#include "minipretrain/train/stop_signals.h"
#include "minipretrain/train/tensorboard.h"

namespace minipretrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// 3725 s -> "1:02:05".
std::string clock_time(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
}

nlohmann::json stats_json(const Communicator& comm) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [op, s] : comm.stats()) out[op] = {{"calls", s.calls}, {"bytes", s.bytes}, {"seconds", s.seconds}};
  return out;
}

}  // namespace

Trainer::Trainer(Config config, ParallelState& parallel, torch::Device device)
    : config_(std::move(config)),
      parallel_(parallel),
      device_(device),
      schedule_(config_.train.learning_rate, config_.train.min_lr, config_.train.warmup_ratio, config_.train.max_steps) {
  const Layout& layout = parallel_.layout();
  const auto start = Clock::now();
  stage_ = Stage(config_.model,
                 StagePosition::of(config_.parallel.pipeline_layer_split, parallel_.coords().pp, layout.pp),
                 parallel_.tp_ptr());
  stage_->initialize(config_.train.seed);
  stage_->to_device(device_);
  stage_->set_recompute(config_.train.recompute == "full");
  spdlog::debug("start-up: model built and drawn in {:.2f} s", seconds_since(start));

  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  for (const auto& p : stage_->named_parameters()) parameters.emplace_back(p.key(), p.value());
  main_ = std::make_unique<MainParams>(parameters, resolve_precision(config_.train.precision, device_));
  std::map<std::string, bool> sharded;
  for (const auto& [name, slot] : stage_->tensors()) sharded[slot.parameter] = slot.spec.sharded();
  std::vector<torch::Tensor> masters;
  std::vector<int64_t> sizes;
  for (const MainParams::Entry& e : main_->entries()) {
    entry_of_[e.name] = masters.size();
    masters.push_back(e.master);
    grads_.push_back(e.grad);
    sizes.push_back(e.grad.numel());
    counted_in_norm_.push_back(sharded.at(e.name) || parallel_.coords().tp == 0);
  }
  AdamWOptions options;
  options.weight_decay = config_.train.weight_decay;
  optimizer_ = std::make_unique<AdamW>(masters, options);
  buckets_ = std::make_unique<GradientBuckets>(main_->flat_grad(), sizes, config_.parallel.ddp_bucket_mb << 20);
  spdlog::debug("start-up: gradient buffer and optimizer state after {:.2f} s", seconds_since(start));

  data_ = make_datasets(config_);
  sampler_ = std::make_unique<GlobalBatchSampler>(data_.train->num_samples(), config_.global_batch(), config_.train.seed);
  spdlog::debug("start-up: data after {:.2f} s", seconds_since(start));

  const ParallelConfig& p = config_.parallel;
  actions_ = make_schedule(p.pipeline_schedule, layout.pp, parallel_.coords().pp, config_.microbatches(),
                           p.virtual_pipeline_stages);
  bubble_theory_ =
      simulate_schedule(p.pipeline_schedule, layout.pp, config_.microbatches(), p.virtual_pipeline_stages).bubble;
  executor_ = std::make_unique<PipelineExecutor>(
      stage_.ptr(), parallel_.pp(),
      std::vector<int64_t>{config_.train.micro_batch_size, config_.model.max_seq_length, config_.model.hidden_size});
  if (!config_.train.dump_first_step.empty())
    executor_->on_logits = [this](int64_t m, const torch::Tensor& logits) {
      if (m == 0 && !first_logits_.defined()) first_logits_ = logits.to(torch::kFloat);
    };
}

const char* Trainer::precision_name() const { return main_->compute_dtype() == torch::kFloat ? "fp32" : "bf16"; }

std::vector<Microbatch> Trainer::microbatches(const TokenDataset& data, const std::vector<int64_t>& indices) const {
  const int64_t rows_per_rank = config_.global_batch() / parallel_.layout().dp;
  torch::Tensor batch = gather_samples(data, indices);
  torch::Tensor local = batch.narrow(0, parallel_.coords().dp * rows_per_rank, rows_per_rank);
  const int64_t micro = config_.train.micro_batch_size, seq = config_.model.max_seq_length;
  std::vector<Microbatch> out;
  for (int64_t m = 0; m < config_.microbatches(); ++m) {
    torch::Tensor rows = local.narrow(0, m * micro, micro).to(device_);
    out.push_back({rows.narrow(1, 0, seq), rows.narrow(1, 1, seq)});
  }
  return out;
}

Trainer::StepStats Trainer::train_step(int64_t step) {
  const FaultPlan& faults = FaultPlan::from_environment();
  faults.strike(FaultKind::Die, step, parallel_.rank());
  faults.strike(FaultKind::Hang, step, parallel_.rank());
  const Stopwatch step_time(device_);
  const bool inject_nan = faults.fires(FaultKind::Nan, step, parallel_.rank());
  // As each gradient becomes final, its DP bucket may start (overlapping the
  // rest of backward); an injected NaN goes in before its bucket does.
  main_->on_final = [this, inject_nan](size_t i) {
    if (inject_nan && i == 0) main_->flat_grad().index_put_({0}, std::numeric_limits<float>::quiet_NaN());
    buckets_->ready(i, parallel_.dp());
  };
  main_->zero_grad(config_.microbatches());
  buckets_->begin();
  StepResult result = executor_->run(actions_, microbatches(*data_.train, sampler_->indices(step)));
  main_->finish_accumulation();
  const Stopwatch dp_time(device_);
  buckets_->finish(parallel_.dp());  // what the overlap did not hide
  const double dp_seconds = dp_time.seconds();
  if (step == 1 && !config_.train.dump_first_step.empty()) dump_first_step();
  const Stopwatch optimizer_time(device_);
  const double grad_norm = global_grad_norm(grads_, counted_in_norm_, parallel_.tp(), parallel_.pp());
  const Boundary boundary = agree_at_boundary(result.loss, grad_norm);
  const double lr = schedule_.at(step);
  if (boundary.non_finite) {
    report_non_finite(step, result.loss);
  } else {
    optimizer_->step(lr, grads_, clip_factor(grad_norm, config_.train.grad_clip));
    main_->copy_to_model();
  }
  const double optimizer_seconds = optimizer_time.seconds();

  const double seconds = step_time.seconds();
  const double bubble = result.total_seconds > 0 ? 1.0 - result.busy_seconds() / result.total_seconds : 0.0;
  return {boundary, grad_norm, lr, seconds, bubble, result.forward_seconds, result.backward_seconds, dp_seconds,
          optimizer_seconds};
}

// One small all-reduce over the world at every step boundary carries the loss
// of the global batch, whether any rank saw a non-finite loss or gradient
// norm, and whether any rank was asked to stop: a signal that reached one rank
// stops every rank after the same step, and a NaN on one rank skips the
// update everywhere.
Trainer::Boundary Trainer::agree_at_boundary(double last_stage_loss, double grad_norm) {
  const bool reports = parallel_.is_last_stage() && parallel_.coords().tp == 0;
  const bool non_finite = !std::isfinite(grad_norm) || (parallel_.is_last_stage() && !std::isfinite(last_stage_loss));
  const double minutes = seconds_since(run_start_) / 60.0;
  const bool out_of_time = config_.log.exit_duration_mins > 0 && minutes >= config_.log.exit_duration_mins;
  torch::Tensor votes = torch::tensor({reports ? last_stage_loss / parallel_.layout().dp : 0.0, non_finite ? 1.0 : 0.0,
                                       stop_signal() != 0 ? 1.0 : 0.0, out_of_time ? 1.0 : 0.0},
                                      torch::kDouble);
  parallel_.world().all_reduce(votes, ReduceOp::Sum);
  const auto v = votes.accessor<double, 1>();
  return {v[0], v[1] > 0, static_cast<int64_t>(v[2]), v[3] > 0};
}

// Which ranks see the problem, for the log: their loss, or their gradients
// after the data-parallel average (so every DP replica of the rank that made
// a NaN shows it too). A second all-reduce, on skipped steps only.
void Trainer::report_non_finite(int64_t step, double last_stage_loss) {
  const int64_t world = parallel_.world().size();
  torch::Tensor flags = torch::zeros({world}, torch::kDouble);
  const bool loss = parallel_.is_last_stage() && !std::isfinite(last_stage_loss);
  const bool grads = !torch::isfinite(main_->flat_grad()).all().item<bool>();
  flags[parallel_.rank()] = (loss ? 1.0 : 0.0) + (grads ? 2.0 : 0.0);
  parallel_.world().all_reduce(flags, ReduceOp::Sum);
  skipped_in_a_row_ += 1;
  skipped_total_ += 1;
  if (parallel_.is_logging_rank()) {
    std::string where;
    for (int64_t r = 0; r < world; ++r) {
      const int64_t f = static_cast<int64_t>(flags[r].item<double>());
      if (f == 0) continue;
      const Coordinates c = parallel_.layout().coordinates(r);
      where += fmt::format("{}rank {} (stage {}, tp {}, dp {}): {}", where.empty() ? "" : "; ", r, c.pp, c.tp, c.dp,
                           f == 3 ? "loss and gradients" : f == 1 ? "loss" : "gradients");
    }
    spdlog::warn("Step {} skipped: non-finite loss or gradients on {} | {} in a row (the run stops at {}, "
                 "--max-skipped-steps), {} in all",
                 step, where.empty() ? "no single rank" : where, skipped_in_a_row_, config_.train.max_skipped_steps,
                 skipped_total_);
  }
  if (skipped_in_a_row_ >= config_.train.max_skipped_steps) {
    const std::string latest = find_latest_checkpoint(config_.log.output_dir);
    throw DivergedError(fmt::format(
        "steps {} to {} all had a non-finite loss or gradients (--max-skipped-steps {}): training diverged; "
        "the newest checkpoint ({}) is untouched; try a lower --learning-rate",
        step - skipped_in_a_row_ + 1, step, config_.train.max_skipped_steps, latest.empty() ? "none" : latest));
  }
}

NamedState Trainer::checkpoint_state() {
  NamedState state;
  for (const auto& [name, slot] : stage_->tensors()) {
    const size_t i = entry_of_.at(slot.parameter);
    state["model/" + name] = {slot.of(main_->entries()[i].master), slot.spec};
    state["optim/exp_avg." + name] = {slot.of(optimizer_->exp_avg(i)), slot.spec};
    state["optim/exp_avg_sq." + name] = {slot.of(optimizer_->exp_avg_sq(i)), slot.spec};
  }
  state["optim/step"] = {step_count_, std::nullopt};
  return state;
}

// The last stage knows the loss of its DP rank's rows; one tiny all-reduce
// over the world gives every rank the mean over the global batch.
double Trainer::global_loss(double last_stage_loss) {
  const bool reports = parallel_.is_last_stage() && parallel_.coords().tp == 0;
  torch::Tensor loss = torch::tensor({reports ? last_stage_loss / parallel_.layout().dp : 0.0}, torch::kDouble);
  parallel_.world().all_reduce(loss, ReduceOp::Sum);
  return loss.item<double>();
}

// The same eval_iters global batches every time: samples k*B .. (k+1)*B-1 of
// the validation set, wrapping around.
double Trainer::evaluate(int64_t step) {
  const int64_t batch = config_.global_batch(), n = data_.valid->num_samples();
  double total = 0;
  for (int64_t k = 0; k < config_.data.eval_iters; ++k) {
    std::vector<int64_t> indices;
    for (int64_t j = 0; j < batch; ++j) indices.push_back((k * batch + j) % n);
    total += global_loss(executor_->evaluate(microbatches(*data_.valid, indices)).loss);
  }
  const double loss = total / static_cast<double>(config_.data.eval_iters);
  if (parallel_.is_logging_rank()) {
    spdlog::info("Validation at step {} | Loss: {:.4f} | PPL: {:.2f}", step, loss, std::exp(loss));
    metrics_->write({{"step", step}, {"val_loss", loss}, {"val_ppl", std::exp(loss)}});
    if (tensorboard_) {
      tensorboard_->add_scalar("val/loss", loss, step);
      tensorboard_->add_scalar("val/ppl", std::exp(loss), step);
      tensorboard_->flush();
    }
  }
  return loss;
}

bool Trainer::run() {
  std::filesystem::create_directories(config_.log.output_dir);
  resume();
  if (parallel_.is_logging_rank()) metrics_ = std::make_unique<MetricsLog>(config_.log.output_dir, start_step_ - 1);
  if (parallel_.is_logging_rank() && !config_.log.tensorboard_dir.empty())
    tensorboard_ = std::make_unique<TensorBoardWriter>(config_.log.tensorboard_dir, start_step_);
  install_stop_handlers();
  run_start_ = Clock::now();
  const int64_t max_steps = config_.train.max_steps;
  double interval_seconds = 0;
  int64_t interval_steps = 0;
  for (int64_t step = start_step_; step <= max_steps; ++step) {
    try {
      for (Communicator* c : {&parallel_.tp(), &parallel_.dp(), &parallel_.pp()}) c->reset_stats();
      set_current_step(step);
      StepStats stats = train_step(step);
      if (!stats.boundary.non_finite) skipped_in_a_row_ = 0;
      elapsed_ += stats.seconds;
      interval_seconds += stats.seconds;
      ++interval_steps;
      if (step % config_.log.log_interval == 0 || step == max_steps || stats.boundary.non_finite) {
        log_step(step, stats, interval_seconds, interval_steps);
        interval_seconds = 0;
        interval_steps = 0;
      }
      if (data_.valid && (step % config_.data.eval_interval == 0 || step == max_steps)) evaluate(step);
      const std::string stop_reason = why_stop(step, stats.boundary);
      if (step % config_.log.save_interval == 0 || step == max_steps || !stop_reason.empty()) save(step);
      if (!stop_reason.empty() && step < max_steps) {
        if (parallel_.is_logging_rank()) spdlog::info("Stopping after step {}: {}", step, stop_reason);
        return false;
      }
    } catch (const CommunicationError& e) {
      throw CommunicationError("at step " + std::to_string(step) + ": " + e.what());
    }
  }
  return true;
}

// Why the run stops after `step` ("" to go on): --exit-interval, a signal, or
// --exit-duration-mins. Every rank decides alike: the last two come from the
// boundary's all-reduce.
std::string Trainer::why_stop(int64_t step, const Boundary& boundary) const {
  if (boundary.stop_signals > 0) {
    if (const int signal = stop_signal(); signal != 0)
      spdlog::warn("Got SIG{}: stopping with a checkpoint after step {}", sigabbrev_np(signal), step);
    return fmt::format("a stop signal reached {} rank(s); resume with --resume auto", boundary.stop_signals);
  }
  if (boundary.out_of_time)
    return fmt::format("the run has taken --exit-duration-mins {}; resume with --resume auto",
                       config_.log.exit_duration_mins);
  if (config_.log.exit_interval > 0 && step % config_.log.exit_interval == 0)
    return fmt::format("step {} is a multiple of --exit-interval", step);
  return "";
}

// Never writes weights that are not finite. Skipped steps leave the weights
// as they were, so this only fires when an update itself overflowed.
void Trainer::save(int64_t step) {
  bool finite = true;
  for (const MainParams::Entry& e : main_->entries()) finite = finite && torch::isfinite(e.master).all().item<bool>();
  torch::Tensor bad = torch::tensor({finite ? 0.0 : 1.0}, torch::kDouble);
  parallel_.world().all_reduce(bad, ReduceOp::Sum);
  if (bad.item<double>() > 0) {
    const std::string latest = find_latest_checkpoint(config_.log.output_dir);
    throw DivergedError(fmt::format("the weights after step {} are not finite on {} rank(s): not saving them; the "
                                         "newest checkpoint ({}) is untouched",
                                         step, bad.item<double>(), latest.empty() ? "none" : latest));
  }
  step_count_.fill_(optimizer_->steps_taken());
  const auto start = Clock::now();
  const std::string dir =
      save_checkpoint(config_.log.output_dir, {step, step * config_.global_batch(), ""}, checkpoint_state(), config_, parallel_);
  if (parallel_.is_logging_rank()) spdlog::info("Saved checkpoint {} in {:.1f} s", dir, seconds_since(start));
}

void Trainer::resume() {
  std::string dir = config_.train.resume;
  if (dir == "auto") {
    dir = find_latest_checkpoint(config_.log.output_dir);
    // Every rank looked for itself: a lagging shared file system must not
    // make them start at different steps.
    const double step = dir.empty() ? -1.0 : static_cast<double>(checkpoint_step(dir));
    torch::Tensor seen = torch::tensor({step, -step}, torch::kDouble);
    parallel_.world().all_reduce(seen, ReduceOp::Max);
    if (seen[0].item<double>() != -seen[1].item<double>())
      throw std::runtime_error(fmt::format("--resume auto: the ranks see different newest checkpoints under {} (steps "
                                           "{} to {}); is --output-dir a shared file system that lags?",
                                           config_.log.output_dir, -seen[1].item<double>(), seen[0].item<double>()));
    if (dir.empty() && parallel_.is_logging_rank())
      spdlog::info("--resume auto: no checkpoint under {}, starting from step 1", config_.log.output_dir);
  }
  if (!dir.empty()) {
    TrainingProgress progress = load_checkpoint(dir, checkpoint_state(), config_);
    optimizer_->set_steps_taken(step_count_.item<int64_t>());
    main_->copy_to_model();
    start_step_ = progress.step + 1;
    if (parallel_.is_logging_rank())
      spdlog::info("Resumed from {} at step {} (written by {}, now TP {} x PP {} x DP {})", dir, progress.step,
                   progress.layout, parallel_.layout().tp, parallel_.layout().pp, parallel_.layout().dp);
    return;
  }
  if (config_.train.init_from.empty()) return;
  NamedState weights;
  for (const auto& [name, entry] : checkpoint_state())
    if (name.rfind("model/", 0) == 0) weights[name] = entry;
  load_weights(config_.train.init_from, weights, config_);
  main_->copy_to_model();
  if (parallel_.is_logging_rank())
    spdlog::info("Initialized the weights from {}; optimizer state is fresh, training starts at step 1",
                 config_.train.init_from);
}

void Trainer::log_step(int64_t step, const StepStats& s, double interval_seconds, int64_t interval_steps) {
  if (!parallel_.is_logging_rank()) return;
  const double samples_per_s = config_.global_batch() * interval_steps / interval_seconds;
  const double tokens_per_s = samples_per_s * config_.model.max_seq_length;
  const double step_seconds = interval_seconds / interval_steps;
  std::string line = fmt::format("Step {} | Loss: {:.4f} | LR: {:.2e} | Throughput: {:.2f} samples/s | {:.0f} tokens/s | "
                                 "Grad norm: {:.3f} | {:.1f} ms/step | Elapsed: {} | ETA: {}",
                                 step, s.boundary.loss, s.lr, samples_per_s, tokens_per_s, s.grad_norm,
                                 1000.0 * step_seconds, clock_time(seconds_since(run_start_)),
                                 clock_time(step_seconds * static_cast<double>(config_.train.max_steps - step)));
  const int64_t pp = parallel_.layout().pp;
  if (pp > 1)
    line += fmt::format(" | Bubble: {:.2f} ({} theory {:.2f})", s.bubble, config_.parallel.pipeline_schedule,
                        bubble_theory_);
  if (skipped_total_ > 0) line += fmt::format(" | Skipped: {}", skipped_total_);
  spdlog::info(line);
  // A skipped step's loss may be NaN, which JSON writes as null.
  nlohmann::json record = {{"step", step},
                           {"loss", s.boundary.loss},
                           {"skipped", s.boundary.non_finite},
                           {"skipped_total", skipped_total_},
                           {"peak_rss_mb", peak_resident_kb() / 1024.0},
                           {"tokens_seen", step * config_.global_batch() * config_.model.max_seq_length},
                           {"lr", s.lr},
                           {"grad_norm", s.grad_norm},
                           {"tokens_per_s", tokens_per_s},
                           {"samples_per_s", samples_per_s},
                           {"elapsed_s", elapsed_},
                           {"ms_per_step", 1000.0 * interval_seconds / interval_steps},
                           {"bubble", s.bubble},
                           {"forward_ms", 1000.0 * s.forward_seconds},
                           {"backward_ms", 1000.0 * s.backward_seconds},
                           {"dp_ms", 1000.0 * s.dp_seconds},
                           {"optimizer_ms", 1000.0 * s.optimizer_seconds},
                           {"bubble_theory", bubble_theory_},
                           {"comm", comm_stats()}};
  spdlog::debug("communication this step: {}", record["comm"].dump());
  metrics_->write(record);
  if (tensorboard_) {
    for (const char* key : {"loss", "lr", "grad_norm", "tokens_per_s", "skipped_total", "peak_rss_mb"})
      tensorboard_->add_scalar(std::string("train/") + key, record[key].is_number() ? record[key].get<double>() : NAN, step);
    if (pp > 1) tensorboard_->add_scalar("train/bubble", s.bubble, step);
    tensorboard_->flush();
  }
}

nlohmann::json Trainer::comm_stats() const {
  return {{"tp", stats_json(parallel_.tp())}, {"dp", stats_json(parallel_.dp())}, {"pp", stats_json(parallel_.pp())}};
}

void Trainer::dump_first_step() const {
  if (parallel_.coords().dp != 0) return;
  namespace fs = std::filesystem;
  const fs::path dir = config_.train.dump_first_step;
  fs::create_directories(dir);
  const std::string where = "tp" + std::to_string(parallel_.coords().tp) + "-pp" + std::to_string(parallel_.coords().pp);
  std::map<std::string, torch::Tensor> grads;
  std::map<std::string, ShardSpec> specs;
  for (const auto& [name, slot] : stage_->tensors()) {
    grads[name] = slot.of(grads_[entry_of_.at(slot.parameter)]);
    specs[name] = slot.spec;
  }
  write_named_shard((dir / ("grads-" + where)).string(), grads, specs);
  if (parallel_.is_last_stage()) {
    const ShardSpec& head = stage_->tensors().at("lm_head.weight").spec;
    const std::vector<int64_t> full{first_logits_.size(0), first_logits_.size(1), config_.model.vocab_size};
    write_named_shard((dir / ("logits-" + where)).string(), {{"logits", first_logits_}},
                      {{"logits", ShardSpec{2, full, head.offset}}});
  }
}

}  // namespace minipretrain
