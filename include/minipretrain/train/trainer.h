// The training loop: for each step, the global batch of that step (DESIGN.md
// invariant 3), this DP rank's rows split into microbatches, the pipeline
// schedule over them, DP gradient averaging, clipping over TP and PP, AdamW
// with the scheduled LR, then logging and checkpoints.
#pragma once

#include <memory>

#include <torch/torch.h>

#include "minipretrain/config/config.h"
#include "minipretrain/data/dataset.h"
#include "minipretrain/distributed/parallel_state.h"
#include "minipretrain/model/stage.h"
#include "minipretrain/parallel/grad_sync.h"
#include "minipretrain/parallel/pipeline_executor.h"
#include "minipretrain/train/adamw.h"
#include "minipretrain/train/lr_schedule.h"
#include "minipretrain/train/metrics.h"

namespace minipretrain {

class Trainer {
 public:
  Trainer(Config config, ParallelState& parallel, torch::Device device);
  void run();
  const TokenDataset* dataset() const { return dataset_.get(); }

 private:
  struct StepStats {
    double loss, grad_norm, lr, seconds, bubble;
  };
  StepStats train_step(int64_t step);
  std::vector<Microbatch> microbatches(int64_t step) const;
  void resume();
  void log_step(int64_t step, const StepStats& stats, double interval_seconds, int64_t interval_steps);
  void dump_first_step() const;
  nlohmann::json comm_stats() const;

  Config config_;
  ParallelState& parallel_;
  torch::Device device_;
  Stage stage_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  LRSchedule schedule_;
  std::unique_ptr<TokenDataset> dataset_;
  std::unique_ptr<GlobalBatchSampler> sampler_;
  std::unique_ptr<GradientBuckets> buckets_;
  std::unique_ptr<PipelineExecutor> executor_;
  std::vector<Action> actions_;
  std::unique_ptr<MetricsLog> metrics_;
  int64_t start_step_ = 1;
  double elapsed_ = 0.0;
  torch::Tensor first_logits_;  // microbatch 0 of step 1, for --dump-first-step
};

}  // namespace minipretrain
