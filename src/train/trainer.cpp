#include "minipretrain/train/trainer.h"

#include <chrono>
#include <limits>

#include "minipretrain/distributed/stopwatch.h"
#include "minipretrain/train/faults.h"
#include "minipretrain/train/grad_clip.h"
#include "minipretrain/train/stop_signals.h"

namespace minipretrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

Trainer::Trainer(Config config, ParallelState& parallel, torch::Device device)
    : config_(std::move(config)),
      parallel_(parallel),
      device_(device),
      schedule_(config_.train.learning_rate, config_.train.min_lr, config_.train.warmup_ratio, config_.train.max_steps) {
  const Layout& layout = parallel_.layout();
  const auto start = Clock::now();
  const bool sequence_parallel = config_.parallel.sequence_parallel;
  stage_ = Stage(config_.model,
                 StagePosition::of(config_.parallel.pipeline_layer_split, parallel_.coords().pp, layout.pp),
                 TensorParallel{parallel_.tp_ptr(), sequence_parallel});
  stage_->initialize(config_.train.seed);
  stage_->to_device(device_);
  stage_->set_recompute(config_.train.recompute == Recompute::Full);
  spdlog::debug("start-up: model built and drawn in {:.2f} s", seconds_since(start));

  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  std::vector<std::vector<int64_t>> shapes;  // in buffer order: the parameters reversed (main_params.h)
  for (const auto& p : stage_->named_parameters()) {
    parameters.emplace_back(p.key(), p.value());
    shapes.insert(shapes.begin(), p.value().sizes().vec());
  }
  const torch::ScalarType dtype = resolve_precision(config_.train.precision, device_);
  // Without DP there is nothing to shard: the distributed optimizer is then the usual one.
  const int64_t shards = config_.parallel.use_distributed_optimizer ? layout.dp : 1;
  if (config_.parallel.use_distributed_optimizer && shards == 1 && parallel_.is_logging_rank())
    spdlog::info("--use-distributed-optimizer has no effect without data parallelism");
  const int64_t bucket_bytes = config_.parallel.ddp_bucket_mb << 20;
  AdamWOptions options;
  options.weight_decay = config_.train.weight_decay;
  std::vector<int64_t> sizes;
  for (const auto& shape : shapes) sizes.push_back(c10::multiply_integers(shape));
  if (shards > 1)
    sharded_ = std::make_unique<ShardedOptimizer>(
        shapes, GradientBuckets::sharded_ranges(GradientBuckets::padded_length(sizes, shards), bucket_bytes, shards),
        parallel_.coords().dp, shards, dtype, options);
  main_ = std::make_unique<MainParams>(parameters, dtype, shards, [this](size_t i, const torch::Tensor& weight) {
    if (sharded_) sharded_->see_fp32(i, weight);
  });
  std::map<std::string, bool> sharded;
  for (const auto& [name, slot] : stage_->tensors()) sharded[slot.parameter] = slot.spec.sharded();
  std::vector<torch::Tensor> masters;
  for (const MainParams::Entry& e : main_->entries()) {
    entry_of_[e.name] = masters.size();
    masters.push_back(e.master);
    grads_.push_back(e.grad);
    counted_in_norm_.push_back(sharded.at(e.name) || parallel_.coords().tp == 0);
    if (sequence_parallel && !sharded.at(e.name)) replicated_grads_.push_back(e.grad);
  }
  buckets_ = std::make_unique<GradientBuckets>(main_->flat_grad(), sizes, bucket_bytes, shards);
  if (sharded_) {
    sharded_->attach(main_->flat_model(), main_->flat_grad());
    sharded_->gradient_pieces(counted_in_norm_, norm_grads_, norm_counted_);
  } else {
    optimizer_ = std::make_unique<AdamW>(masters, options);
    norm_grads_ = grads_;
    norm_counted_ = counted_in_norm_;
  }
  spdlog::debug("start-up: gradient buffer and optimizer state after {:.2f} s", seconds_since(start));

  data_ = make_datasets(config_);
  sampler_ = std::make_unique<GlobalBatchSampler>(data_.train->num_samples(), config_.global_batch(), config_.train.seed);
  spdlog::debug("start-up: data after {:.2f} s", seconds_since(start));

  const ParallelConfig& p = config_.parallel;
  actions_ = make_schedule(p.pipeline_schedule, layout.pp, parallel_.coords().pp, config_.microbatches(),
                           p.virtual_pipeline_stages);
  bubble_theory_ =
      simulate_schedule(p.pipeline_schedule, layout.pp, config_.microbatches(), p.virtual_pipeline_stages).bubble;
  const int64_t seq = config_.model.max_seq_length / (sequence_parallel ? layout.tp : 1);
  executor_ = std::make_unique<PipelineExecutor>(
      stage_.ptr(), parallel_.pp(),
      std::vector<int64_t>{config_.train.micro_batch_size, seq, config_.model.hidden_size});
  if (!config_.train.dump_first_step.empty() && parallel_.is_last_stage())
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

StepStats Trainer::step(int64_t step, Clock::time_point deadline) {
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
  sum_over_tp(replicated_grads_, parallel_.tp());
  // --dump-first-step writes step 1's averaged gradients, which only their owners hold.
  if (sharded_ && step == 1 && !config_.train.dump_first_step.empty()) sharded_->gather_gradients(parallel_.dp());
  if (on_gradients) on_gradients(step);
  const Stopwatch optimizer_time(device_);
  const double grad_norm = global_grad_norm(norm_grads_, norm_counted_, parallel_.tp(), parallel_.pp(),
                                            sharded_ ? &parallel_.dp() : nullptr);
  const Boundary boundary = agree_at_boundary(result.loss, grad_norm, Clock::now() >= deadline);
  const double lr = schedule_.at(step);
  if (boundary.non_finite) {
    report_non_finite(step, result.loss);
  } else {
    skipped_in_a_row_ = 0;
    if (before_update) before_update();
    const double scale = clip_factor(grad_norm, config_.train.grad_clip);
    if (sharded_) {
      sharded_->step(lr, scale, parallel_.dp());
    } else {
      optimizer_->step(lr, grads_, scale);
      main_->copy_to_model();
    }
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
Boundary Trainer::agree_at_boundary(double last_stage_loss, double grad_norm, bool out_of_time) {
  const bool reports = parallel_.is_last_stage() && parallel_.coords().tp == 0;
  const bool non_finite = !std::isfinite(grad_norm) || (parallel_.is_last_stage() && !std::isfinite(last_stage_loss));
  const std::vector<double> v = parallel_.world().all_reduce(
      {reports ? last_stage_loss / parallel_.layout().dp : 0.0, non_finite ? 1.0 : 0.0, stop_signal() != 0 ? 1.0 : 0.0,
       out_of_time ? 1.0 : 0.0});
  return {v[0], v[1] > 0, static_cast<int64_t>(v[2]), v[3] > 0};
}

// Which ranks see the problem, for the log: their loss, or their gradients
// after the data-parallel average (so every DP replica of the rank that made
// a NaN shows it too). A second all-reduce, on skipped steps only.
void Trainer::report_non_finite(int64_t step, double last_stage_loss) {
  const int64_t world = parallel_.world().size();
  std::vector<double> flags(static_cast<size_t>(world), 0.0);
  const bool loss = parallel_.is_last_stage() && !std::isfinite(last_stage_loss);
  const bool grads = !torch::isfinite(main_->flat_grad()).all().item<bool>();
  flags[static_cast<size_t>(parallel_.rank())] = (loss ? 1.0 : 0.0) + (grads ? 2.0 : 0.0);
  flags = parallel_.world().all_reduce(flags);
  skipped_in_a_row_ += 1;
  skipped_total_ += 1;
  if (parallel_.is_logging_rank()) {
    std::string where;
    for (int64_t r = 0; r < world; ++r) {
      const int64_t f = static_cast<int64_t>(flags[static_cast<size_t>(r)]);
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
  if (skipped_in_a_row_ >= config_.train.max_skipped_steps)
    throw DivergedError(fmt::format(
        "steps {} to {} all had a non-finite loss or gradients (--max-skipped-steps {}): training diverged; try a "
        "lower --learning-rate",
        step - skipped_in_a_row_ + 1, step, config_.train.max_skipped_steps));
}

NamedState Trainer::state() {
  NamedState state;
  for (const auto& [name, slot] : stage_->tensors()) {
    const size_t i = entry_of_.at(slot.parameter);
    const torch::Tensor& master = main_->entries()[i].master;
    if (master.defined()) state["model/" + name] = {slot.of(master), slot.spec};
    if (sharded_) {
      sharded_->add_state(state, name, i, slot.row, slot.rows, slot.spec);
      continue;
    }
    state["optim/exp_avg." + name] = {slot.of(optimizer_->exp_avg(i)), slot.spec};
    state["optim/exp_avg_sq." + name] = {slot.of(optimizer_->exp_avg_sq(i)), slot.spec};
  }
  step_count_.fill_(sharded_ ? sharded_->steps_taken() : optimizer_->steps_taken());
  state["optim/step"] = {step_count_, std::nullopt};
  return state;
}

void Trainer::loaded() {
  if (sharded_) {
    sharded_->set_steps_taken(step_count_.item<int64_t>());
    sharded_->publish(parallel_.dp());
    return;
  }
  optimizer_->set_steps_taken(step_count_.item<int64_t>());
  main_->copy_to_model();
}

// Skipped steps leave the weights as they were, so this only fails when an
// update itself overflowed.
int64_t Trainer::ranks_with_non_finite_weights() {
  bool finite = !sharded_ || sharded_->masters_finite();
  for (const MainParams::Entry& e : main_->entries())
    finite = finite && (!e.master.defined() || torch::isfinite(e.master).all().item<bool>());
  return static_cast<int64_t>(parallel_.world().all_reduce({finite ? 0.0 : 1.0})[0]);
}

// The last stage knows the loss of its DP rank's rows; one tiny all-reduce
// over the world gives every rank the mean over the global batch.
double Trainer::global_loss(double last_stage_loss) {
  const bool reports = parallel_.is_last_stage() && parallel_.coords().tp == 0;
  return parallel_.world().all_reduce({reports ? last_stage_loss / parallel_.layout().dp : 0.0})[0];
}

// The same eval_iters global batches every time: samples k*B .. (k+1)*B-1 of
// the validation set, wrapping around.
double Trainer::evaluate() {
  const int64_t batch = config_.global_batch(), n = data_.valid->num_samples();
  double total = 0;
  for (int64_t k = 0; k < config_.data.eval_iters; ++k) {
    std::vector<int64_t> indices;
    for (int64_t j = 0; j < batch; ++j) indices.push_back((k * batch + j) % n);
    total += global_loss(executor_->evaluate(microbatches(*data_.valid, indices)).loss);
  }
  return total / static_cast<double>(config_.data.eval_iters);
}

NamedState Trainer::gradients() {
  NamedState out;
  for (const auto& [name, slot] : stage_->tensors()) out[name] = {slot.of(grads_[entry_of_.at(slot.parameter)]), slot.spec};
  return out;
}

StateTensor Trainer::first_logits() const {
  const ShardSpec& head = stage_->tensors().at("lm_head.weight").spec;
  const std::vector<int64_t> full{first_logits_.size(0), first_logits_.size(1), config_.model.vocab_size};
  return {first_logits_, ShardSpec{2, full, head.offset}};
}

}  // namespace minipretrain
