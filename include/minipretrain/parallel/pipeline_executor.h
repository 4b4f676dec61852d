// Runs one stage's schedule for one optimizer step. It alone talks to the
// neighbouring stages: activations go forward and their gradients backward
// through the PP communicator (tag 0 forward, 1 backward). Shapes follow from
// the config ([micro_batch, seq, hidden]), so no handshake precedes a transfer.
// Sends are asynchronous and awaited at the end of the step, so a stage never
// waits on a neighbour that is itself waiting to send: with receives as the
// only blocking points, both schedules are deadlock-free.
#pragma once

#include <functional>
#include <map>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"
#include "minipretrain/parallel/pipeline_stage.h"
#include "minipretrain/parallel/schedule.h"

namespace minipretrain {

struct Microbatch {
  torch::Tensor input_ids;  // [micro_batch, seq]
  torch::Tensor targets;    // [micro_batch, seq]
};

struct StepResult {
  double loss = 0.0;          // last stage: mean loss over the microbatches; else 0
  double forward_seconds = 0.0;   // computing forwards (the loss included)
  double backward_seconds = 0.0;  // computing backwards (gradient accumulation included)
  double total_seconds = 0.0;     // the rest is waiting for neighbours: the bubble
  double busy_seconds() const { return forward_seconds + backward_seconds; }
  int64_t peak_in_flight = 0;
};

class PipelineExecutor {
 public:
  PipelineExecutor(std::shared_ptr<PipelineStage> stage, Communicator& pp, std::vector<int64_t> activation_shape);

  // Forwards and backwards every microbatch by `actions`; gradients accumulate
  // in the stage's parameters, each microbatch's loss scaled by 1/M.
  StepResult run(const std::vector<Action>& actions, const std::vector<Microbatch>& microbatches);
  // Forwards only, without gradients (validation); the loss as in run().
  StepResult evaluate(const std::vector<Microbatch>& microbatches);

  // Called on the last stage with each microbatch's local logits.
  std::function<void(int64_t microbatch, const torch::Tensor& logits_local)> on_logits;

 private:
  void forward(int64_t m, const std::vector<Microbatch>& microbatches, StepResult& result);
  void backward(int64_t m, StepResult& result);

  std::shared_ptr<PipelineStage> stage_;
  Communicator& pp_;
  std::vector<int64_t> activation_shape_;
  // Per microbatch in flight: the stage's input (for its gradient) and output.
  std::map<int64_t, std::pair<torch::Tensor, torch::Tensor>> in_flight_;
  std::vector<std::unique_ptr<PendingOp>> sends_;
};

}  // namespace minipretrain
