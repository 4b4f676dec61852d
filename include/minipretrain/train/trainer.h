// One training step and its set-up: the global batch of that step (DESIGN.md
// invariant 3), this DP rank's rows split into microbatches, the pipeline
// schedule over them, DP gradient averaging, clipping over TP and PP, AdamW
// with the scheduled LR. With bf16 the model computes in bf16 over fp32
// master weights and gradients (MainParams). The loop around it, logging and
// checkpoints live in commands/train.cpp.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/data/dataset.h"
#include "minipretrain/distributed/parallel_state.h"
#include "minipretrain/model/stage.h"
#include "minipretrain/parallel/grad_sync.h"
#include "minipretrain/parallel/pipeline_executor.h"
#include "minipretrain/parallel/shard.h"
#include "minipretrain/train/adamw.h"
#include "minipretrain/train/lr_schedule.h"
#include "minipretrain/train/main_params.h"
#include "minipretrain/train/sharded_optimizer.h"

namespace minipretrain {

// Training diverged: too many non-finite steps in a row, or weights that are
// no longer finite. The binary exits with 3, which the launchers do not
// restart on (the same checkpoint and settings would diverge again).
struct DivergedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What every rank agrees on at the end of a step, in one small all-reduce.
struct Boundary {
  double loss = 0;           // of the global batch
  bool non_finite = false;   // on some rank: the update was skipped
  int64_t stop_signals = 0;  // ranks that got SIGTERM, SIGINT or SIGUSR1
  bool out_of_time = false;  // --exit-duration-mins passed on some rank
};

struct StepStats {
  Boundary boundary;
  double grad_norm = 0, lr = 0, seconds = 0, bubble = 0;
  double forward_seconds = 0, backward_seconds = 0, dp_seconds = 0, optimizer_seconds = 0;
};

class Trainer {
 public:
  Trainer(Config config, ParallelState& parallel, torch::Device device);

  // One optimizer step. A rank past `deadline` (--exit-duration-mins) at
  // the step's end says so in the boundary vote. A non-finite step is
  // skipped on every rank; too many in a row throw DivergedError.
  StepStats step(int64_t step, std::chrono::steady_clock::time_point deadline);
  // The mean loss of --eval-iters fixed global batches of the validation set.
  double evaluate();

  // Every tensor a checkpoint holds for this rank, by name: views of the fp32
  // weights and of the AdamW moments, and the step count.
  NamedState state();
  // After `state()` was loaded into: the optimizer's step count and the model's weights follow.
  void loaded();
  // How many ranks hold weights that are not finite (collective over the world).
  int64_t ranks_with_non_finite_weights();

  // Called after the gradients of `step` are final, before the update.
  std::function<void(int64_t step)> on_gradients;
  // Called right before the optimizer changes the state (a background save
  // waits there for its copy of the state).
  std::function<void()> before_update;
  // This rank's fp32 gradients by tensor name, and microbatch 0's logits of
  // step 1 (last stage, when --dump-first-step is set) with their place in
  // the full logits.
  NamedState gradients();
  StateTensor first_logits() const;

  const TokenDataset* dataset() const { return data_.train.get(); }
  bool has_validation() const { return data_.valid != nullptr; }
  const char* precision_name() const;
  double bubble_theory() const { return bubble_theory_; }  // F, B and W of equal cost (simulate_schedule)
  int64_t skipped_total() const { return skipped_total_; }

 private:
  Boundary agree_at_boundary(double last_stage_loss, double grad_norm, bool out_of_time);
  void report_non_finite(int64_t step, double last_stage_loss);
  // This DP rank's rows of the global batch `indices` of `data`, as microbatches.
  std::vector<Microbatch> microbatches(const TokenDataset& data, const std::vector<int64_t>& indices) const;
  double global_loss(double last_stage_loss);

  Config config_;
  ParallelState& parallel_;
  torch::Device device_;
  Stage stage_{nullptr};
  std::unique_ptr<MainParams> main_;
  std::unique_ptr<AdamW> optimizer_;              // all of this rank's weights, or
  std::unique_ptr<ShardedOptimizer> sharded_;     // its DP share (--use-distributed-optimizer)
  std::vector<torch::Tensor> grads_;        // main_'s fp32 gradients, in its order
  std::vector<bool> counted_in_norm_;       // false: a replicated tensor on a TP rank other than 0
  std::vector<torch::Tensor> norm_grads_;   // what this rank adds to the gradient norm: grads_, or its pieces
  std::vector<bool> norm_counted_;
  std::vector<torch::Tensor> replicated_grads_;  // summed over TP with sequence parallelism
  std::map<std::string, size_t> entry_of_;  // parameter name -> index in main_
  LRSchedule schedule_;
  Datasets data_;
  std::unique_ptr<GlobalBatchSampler> sampler_;
  std::unique_ptr<GradientBuckets> buckets_;
  std::unique_ptr<PipelineExecutor> executor_;
  std::vector<Action> actions_;
  double bubble_theory_ = 0.0;
  int64_t skipped_in_a_row_ = 0;
  int64_t skipped_total_ = 0;
  torch::Tensor step_count_ = torch::zeros({}, torch::kLong);  // AdamW's steps, as checkpoints hold it
  torch::Tensor first_logits_;
};

}  // namespace minipretrain
