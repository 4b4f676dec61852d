// Runs one stage's schedule for one optimizer step. It alone talks to the
// neighbouring stages: activations go forward and their gradients backward
// through the PP communicator, in the batches and order plan_transfers()
// gives for the backend (pipeline_transfers.h says who talks to whom, with
// which tags, and why each backend's order cannot deadlock). Shapes follow
// from the config ([micro_batch, seq, hidden]), so no handshake precedes a
// transfer. Sends are awaited at the end of the step, receives by the action
// that takes their data.
//
// A B action runs the backward with the linear layers' weight gradients
// deferred (weight_gradients.h) and sends the input's gradient at once; its
// W computes them.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"
#include "minipretrain/parallel/pipeline_stage.h"
#include "minipretrain/parallel/pipeline_transfers.h"
#include "minipretrain/parallel/schedule.h"
#include "minipretrain/parallel/weight_gradients.h"

namespace minipretrain {

struct Microbatch {
  torch::Tensor input_ids;  // [micro_batch, seq]
  torch::Tensor targets;    // [micro_batch, seq]
};

struct StepResult {
  double loss = 0.0;          // last stage: mean loss over the microbatches; else 0
  double forward_seconds = 0.0;   // computing forwards (the loss included)
  double backward_seconds = 0.0;  // computing backwards, B and W (gradient accumulation included)
  double total_seconds = 0.0;     // the rest is waiting for neighbours: the bubble
  double busy_seconds() const { return forward_seconds + backward_seconds; }
  int64_t peak_in_flight = 0;  // chunk activations held, until their backward or W
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
  using Key = std::pair<int64_t, int64_t>;  // (chunk, microbatch)
  bool first_chunk(int64_t chunk) const { return stage_->is_first() && chunk == 0; }
  bool last_chunk(int64_t chunk) const { return stage_->is_last() && chunk == stage_->num_chunks() - 1; }
  // Posts the planned batches due before action `before` computes.
  void post_batches(size_t before);
  // Waits for action `index`'s receive and returns its buffer, or nothing
  // if the action receives nothing.
  torch::Tensor take_receive(size_t index);
  // Each returns what the action sends, if anything.
  torch::Tensor forward(const Action& a, const std::vector<Microbatch>& microbatches, torch::Tensor received,
                        StepResult& result);
  // A whole backward, or B (which defers the weight gradients).
  torch::Tensor backward(const Action& a, torch::Tensor received, StepResult& result);
  void backward_weights(const Action& a, StepResult& result);

  std::shared_ptr<PipelineStage> stage_;
  Communicator& pp_;
  std::vector<int64_t> activation_shape_;
  torch::Device device_;  // the stage's, read once: asking the stage walks its parameters
  // Per chunk and microbatch in flight: the chunk's input (for its gradient)
  // and output; after B, the weight gradients it deferred.
  std::map<Key, std::pair<torch::Tensor, torch::Tensor>> in_flight_;
  std::map<Key, WeightGradients> deferred_;
  std::vector<TransferBatch> batches_;  // this step's, in order
  size_t next_batch_ = 0;
  std::map<size_t, torch::Tensor> unsent_;  // per action: its result, until its batch goes out
  std::vector<std::unique_ptr<PendingOp>> sends_;
  struct PostedReceive {
    size_t action;  // index in the step's actions
    torch::Tensor buffer;
    std::unique_ptr<PendingOp> op;
  };
  std::deque<PostedReceive> receives_;  // in action order
};

}  // namespace minipretrain
