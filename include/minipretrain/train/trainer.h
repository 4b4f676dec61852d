// The training loop: for each step, the global batch of that step (DESIGN.md
// invariant 3), this DP rank's rows split into microbatches, the pipeline
// schedule over them, DP gradient averaging, clipping over TP and PP, AdamW
// with the scheduled LR, then logging and checkpoints. With bf16 the model
// computes in bf16 over fp32 master weights and gradients (MainParams).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/config/config.h"
#include "minipretrain/data/dataset.h"
#include "minipretrain/distributed/parallel_state.h"
#include "minipretrain/model/stage.h"
#include "minipretrain/parallel/grad_sync.h"
#include "minipretrain/parallel/pipeline_executor.h"
#include "minipretrain/train/adamw.h"
#include "minipretrain/train/lr_schedule.h"
#include "minipretrain/train/main_params.h"
#include "minipretrain/train/metrics.h"
#include "minipretrain/train/tensorboard.h"

namespace minipretrain {

// Training diverged: too many non-finite steps in a row, or weights that are
// no longer finite. The binary exits with 3, which the launchers do not
// restart on (the same checkpoint and settings would diverge again).
struct DivergedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Trainer {
 public:
  Trainer(Config config, ParallelState& parallel, torch::Device device);
  // Trains to max_steps (true), or until a stop (--exit-interval, a signal,
  // --exit-duration-mins) after a checkpoint (false).
  bool run();
  const TokenDataset* dataset() const { return data_.train.get(); }
  const char* precision_name() const;

 private:
  // What every rank agrees on at the end of a step (agree_at_boundary).
  struct Boundary {
    double loss;           // of the global batch
    bool non_finite;       // on some rank: the update was skipped
    int64_t stop_signals;  // ranks that got SIGTERM, SIGINT or SIGUSR1
    bool out_of_time;      // --exit-duration-mins passed on some rank
  };
  struct StepStats {
    Boundary boundary;
    double grad_norm, lr, seconds, bubble;
    double forward_seconds, backward_seconds, dp_seconds, optimizer_seconds;
  };
  StepStats train_step(int64_t step);
  Boundary agree_at_boundary(double last_stage_loss, double grad_norm);
  void report_non_finite(int64_t step, double last_stage_loss);
  std::string why_stop(int64_t step, const Boundary& boundary) const;
  void save(int64_t step);
  // This DP rank's rows of the global batch `indices` of `data`, as microbatches.
  std::vector<Microbatch> microbatches(const TokenDataset& data, const std::vector<int64_t>& indices) const;
  double evaluate(int64_t step);
  double global_loss(double last_stage_loss);
  void resume();
  void log_step(int64_t step, const StepStats& stats, double interval_seconds, int64_t interval_steps);
  void dump_first_step() const;
  // Every tensor a checkpoint holds for this rank, by name: views of the fp32
  // weights and of the AdamW moments, and the step count.
  NamedState checkpoint_state();
  nlohmann::json comm_stats() const;

  Config config_;
  ParallelState& parallel_;
  torch::Device device_;
  Stage stage_{nullptr};
  std::unique_ptr<MainParams> main_;
  std::unique_ptr<AdamW> optimizer_;
  std::vector<torch::Tensor> grads_;   // main_'s fp32 gradients, in its order
  std::vector<bool> counted_in_norm_;  // false: a replicated tensor on a TP rank other than 0
  std::map<std::string, size_t> entry_of_;  // parameter name -> index in main_
  LRSchedule schedule_;
  Datasets data_;
  std::unique_ptr<GlobalBatchSampler> sampler_;
  std::unique_ptr<GradientBuckets> buckets_;
  std::unique_ptr<PipelineExecutor> executor_;
  std::vector<Action> actions_;
  // The schedule's bubble with F, B and W of equal cost (simulate_schedule).
  double bubble_theory_ = 0.0;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // logging rank, with --tensorboard-dir
  int64_t start_step_ = 1;
  double elapsed_ = 0.0;
  std::chrono::steady_clock::time_point run_start_;  // for --exit-duration-mins
  int64_t skipped_in_a_row_ = 0;
  int64_t skipped_total_ = 0;
  torch::Tensor step_count_ = torch::zeros({}, torch::kLong);  // AdamW's steps, as checkpoints hold it
  torch::Tensor first_logits_;  // microbatch 0 of step 1, for --dump-first-step
};

}  // namespace minipretrain
