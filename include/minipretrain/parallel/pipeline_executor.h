// Runs one stage's schedule for one optimizer step. It alone talks to the
// neighbouring stages: activations go forward and their gradients backward
// through the PP communicator, tagged 2c for activations into chunk c and
// 2c + 1 for gradients into chunk c (every schedule runs each chunk's
// transfers of a kind in microbatch order, so they match). Chunk c of the
// last rank feeds chunk c + 1 of rank 0. Shapes follow from the config
// ([micro_batch, seq, hidden]), so no handshake precedes a transfer.
// Sends are asynchronous and awaited at the end of the step, so a stage never
// waits on a neighbour that is itself waiting to send: with receives as the
// only blocking points, every schedule that simulate_pipeline() accepts is
// deadlock-free. Receives are posted in action order, each as soon as the
// action before its consumer starts, so a transfer runs while this stage
// computes the action before; posting earlier changes no order of matching,
// and at most two receive buffers exist at once. Where the backend does not
// let a posted receive wait alongside later sends (NCCL), each is posted by
// the action that needs it.
//
// A B action runs the backward with the linear layers' weight gradients
// deferred (weight_gradients.h) and sends the input's gradient at once; its
// W computes them.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"
#include "minipretrain/parallel/pipeline_stage.h"
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
  struct Peer {
    int rank;
    int64_t chunk;
  };
  Peer previous(int64_t chunk) const;
  Peer next(int64_t chunk) const;
  bool first_chunk(int64_t chunk) const { return stage_->is_first() && chunk == 0; }
  bool last_chunk(int64_t chunk) const { return stage_->is_last() && chunk == stage_->num_chunks() - 1; }
  struct Transfer {
    int peer;
    int tag;
  };
  // What action `a` receives before it computes, if anything.
  std::optional<Transfer> receive_of(const Action& a) const;
  // Posts the receives of the actions up to `current` and of the next one
  // after it that receives.
  void post_receives(const std::vector<Action>& actions, size_t current);
  // Waits for action `index`'s receive and returns its buffer.
  torch::Tensor take_receive(size_t index);
  void forward(const Action& a, const std::vector<Microbatch>& microbatches, torch::Tensor received,
               StepResult& result);
  // A whole backward, or B (which defers the weight gradients).
  void backward(const Action& a, torch::Tensor received, StepResult& result);
  void backward_weights(const Action& a, StepResult& result);

  std::shared_ptr<PipelineStage> stage_;
  Communicator& pp_;
  std::vector<int64_t> activation_shape_;
  torch::Device device_;  // the stage's, read once: asking the stage walks its parameters
  // Per chunk and microbatch in flight: the chunk's input (for its gradient)
  // and output; after B, the weight gradients it deferred.
  std::map<Key, std::pair<torch::Tensor, torch::Tensor>> in_flight_;
  std::map<Key, WeightGradients> deferred_;
  std::vector<std::unique_ptr<PendingOp>> sends_;
  struct PostedReceive {
    size_t action;  // index in the step's actions
    torch::Tensor buffer;
    std::unique_ptr<PendingOp> op;
  };
  std::deque<PostedReceive> receives_;  // in action order
  size_t unposted_ = 0;                  // the first action not yet looked at for a receive
};

}  // namespace minipretrain
