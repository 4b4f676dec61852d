#include "minipretrain/parallel/pipeline_executor.h"

#include "minipretrain/distributed/stopwatch.h"

namespace minipretrain {

PipelineExecutor::PipelineExecutor(std::shared_ptr<PipelineStage> stage, Communicator& pp, std::vector<int64_t> activation_shape)
    : stage_(std::move(stage)),
      pp_(pp),
      activation_shape_(std::move(activation_shape)),
      device_(stage_->activation_options().device()) {}

StepResult PipelineExecutor::run(const std::vector<Action>& actions, const std::vector<Microbatch>& microbatches) {
  const Stopwatch step(device_);
  StepResult result;
  batches_ = plan_transfers(actions, {stage_->index(), pp_.size(), stage_->num_chunks()}, !pp_.receives_post_ahead());
  next_batch_ = 0;
  unsent_.clear();  // none are left but by a step that failed half-way
  receives_.clear();
  for (size_t i = 0; i < actions.size(); ++i) {
    const Action& a = actions[i];
    post_batches(i);
    const torch::Tensor received = take_receive(i);
    torch::Tensor outgoing;
    if (a.kind == Action::Forward)
      outgoing = forward(a, microbatches, received, result);
    else if (a.kind == Action::BackwardWeight)
      backward_weights(a, result);
    else
      outgoing = backward(a, received, result);
    if (outgoing.defined()) unsent_[i] = outgoing;
    result.peak_in_flight =
        std::max<int64_t>(result.peak_in_flight, static_cast<int64_t>(in_flight_.size() + deferred_.size()));
  }
  post_batches(actions.size());
  for (auto& send : sends_) send->wait();
  sends_.clear();
  result.total_seconds = step.seconds();
  return result;
}

StepResult PipelineExecutor::evaluate(const std::vector<Microbatch>& microbatches) {
  torch::NoGradGuard no_grad;
  StepResult result = run(
      forward_only_schedule(pp_.size(), static_cast<int64_t>(microbatches.size()), stage_->num_chunks()), microbatches);
  in_flight_.clear();
  return result;
}

void PipelineExecutor::post_batches(size_t before) {
  for (; next_batch_ < batches_.size() && batches_[next_batch_].before == before; ++next_batch_) {
    const TransferBatch& batch = batches_[next_batch_];
    std::vector<P2POp> ops;
    for (const Transfer& to : batch.sends) {
      ops.push_back({P2POp::Send, unsent_.at(to.action), to.peer, to.tag});
      unsent_.erase(to.action);
    }
    // Activations and their gradients share one shape and dtype.
    for (const Transfer& from : batch.receives)
      ops.push_back(
          {P2POp::Receive, torch::empty(activation_shape_, stage_->activation_options()), from.peer, from.tag});
    std::vector<std::unique_ptr<PendingOp>> handles = pp_.batch_isend_irecv(ops);
    for (size_t k = 0; k < ops.size(); ++k)
      if (k < batch.sends.size())
        sends_.push_back(std::move(handles[k]));
      else
        receives_.push_back({batch.receives[k - batch.sends.size()].action, ops[k].tensor, std::move(handles[k])});
  }
}

torch::Tensor PipelineExecutor::take_receive(size_t index) {
  if (receives_.empty() || receives_.front().action != index) return {};
  PostedReceive posted = std::move(receives_.front());
  receives_.pop_front();
  posted.op->wait();
  return posted.buffer;
}

torch::Tensor PipelineExecutor::forward(const Action& a, const std::vector<Microbatch>& microbatches,
                                        torch::Tensor received, StepResult& result) {
  const int64_t m = a.microbatch, c = a.chunk;
  torch::Tensor input = microbatches.at(m).input_ids;
  if (!first_chunk(c)) input = received.requires_grad_(torch::GradMode::is_enabled());
  const Stopwatch compute(device_);
  torch::Tensor output = stage_->forward(input, c);
  if (last_chunk(c)) {
    if (on_logits) on_logits(m, output.detach());
    output = stage_->loss(output, microbatches.at(m).targets) / static_cast<double>(microbatches.size());
    result.loss += output.item<double>();
  }
  result.forward_seconds += compute.seconds();
  in_flight_[{c, m}] = {input, output};
  return last_chunk(c) ? torch::Tensor() : output.detach();
}

torch::Tensor PipelineExecutor::backward(const Action& a, torch::Tensor received, StepResult& result) {
  const Key key{a.chunk, a.microbatch};
  auto [input, output] = in_flight_.at(key);
  in_flight_.erase(key);
  const Stopwatch compute(device_);
  if (a.kind == Action::Backward)
    output.backward(received);
  else
    // Named, not captured: clang 14 lambdas cannot capture bindings.
    deferred_[key] = defer_weight_gradients([&, &out = output] { out.backward(received); });
  result.backward_seconds += compute.seconds();
  return first_chunk(a.chunk) ? torch::Tensor() : input.grad();
}

void PipelineExecutor::backward_weights(const Action& a, StepResult& result) {
  const Key key{a.chunk, a.microbatch};
  const Stopwatch compute(device_);
  deferred_.at(key).compute();
  deferred_.erase(key);
  result.backward_seconds += compute.seconds();
}

}  // namespace minipretrain
