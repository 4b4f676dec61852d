#include "minipretrain/parallel/pipeline_executor.h"

#include "minipretrain/distributed/stopwatch.h"

namespace minipretrain {

PipelineExecutor::PipelineExecutor(std::shared_ptr<PipelineStage> stage, Communicator& pp, std::vector<int64_t> activation_shape)
    : stage_(std::move(stage)),
      pp_(pp),
      activation_shape_(std::move(activation_shape)),
      device_(stage_->activation_options().device()) {}

PipelineExecutor::Peer PipelineExecutor::previous(int64_t chunk) const {
  const int rank = static_cast<int>(stage_->index());
  return rank > 0 ? Peer{rank - 1, chunk} : Peer{pp_.size() - 1, chunk - 1};
}

PipelineExecutor::Peer PipelineExecutor::next(int64_t chunk) const {
  const int rank = static_cast<int>(stage_->index());
  return rank < pp_.size() - 1 ? Peer{rank + 1, chunk} : Peer{0, chunk + 1};
}

StepResult PipelineExecutor::run(const std::vector<Action>& actions, const std::vector<Microbatch>& microbatches) {
  const Stopwatch step(device_);
  StepResult result;
  receives_.clear();  // none are left but by a step that failed half-way
  unposted_ = 0;
  for (size_t i = 0; i < actions.size(); ++i) {
    const Action& a = actions[i];
    post_receives(actions, i);
    const torch::Tensor received = receive_of(a) ? take_receive(i) : torch::Tensor();
    if (a.kind == Action::Forward)
      forward(a, microbatches, received, result);
    else if (a.kind == Action::BackwardWeight)
      backward_weights(a, result);
    else
      backward(a, received, result);
    result.peak_in_flight =
        std::max<int64_t>(result.peak_in_flight, static_cast<int64_t>(in_flight_.size() + deferred_.size()));
  }
  for (auto& send : sends_) send->wait();
  sends_.clear();
  result.total_seconds = step.seconds();
  return result;
}

StepResult PipelineExecutor::evaluate(const std::vector<Microbatch>& microbatches) {
  torch::NoGradGuard no_grad;
  // Chunk by chunk: every rank's order follows the virtual stages, so no
  // receive waits on a forward that waits on it.
  std::vector<Action> forwards;
  for (int64_t c = 0; c < stage_->num_chunks(); ++c)
    for (int64_t m = 0; m < static_cast<int64_t>(microbatches.size()); ++m) forwards.push_back({Action::Forward, m, c});
  StepResult result = run(forwards, microbatches);
  in_flight_.clear();
  return result;
}

std::optional<PipelineExecutor::Transfer> PipelineExecutor::receive_of(const Action& a) const {
  const int64_t c = a.chunk;
  if (a.kind == Action::Forward && !first_chunk(c)) return Transfer{previous(c).rank, static_cast<int>(2 * c)};
  if ((a.kind == Action::Backward || a.kind == Action::BackwardInput) && !last_chunk(c))
    return Transfer{next(c).rank, static_cast<int>(2 * c + 1)};
  return std::nullopt;
}

void PipelineExecutor::post_receives(const std::vector<Action>& actions, size_t current) {
  const auto ahead = [&] {
    return !pp_.receives_post_ahead() || (!receives_.empty() && receives_.back().action > current);
  };
  for (; unposted_ < actions.size() && (unposted_ <= current || !ahead()); ++unposted_) {
    const std::optional<Transfer> from = receive_of(actions[unposted_]);
    if (!from) continue;
    // Activations and their gradients share one shape and dtype.
    torch::Tensor buffer = torch::empty(activation_shape_, stage_->activation_options());
    receives_.push_back({unposted_, buffer, pp_.irecv(buffer, from->peer, from->tag)});
  }
}

torch::Tensor PipelineExecutor::take_receive(size_t index) {
  PostedReceive posted = std::move(receives_.front());
  receives_.pop_front();
  TORCH_CHECK(posted.action == index, "pipeline: receive posted for action ", posted.action, ", taken by ", index);
  posted.op->wait();
  return posted.buffer;
}

void PipelineExecutor::forward(const Action& a, const std::vector<Microbatch>& microbatches, torch::Tensor received,
                               StepResult& result) {
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
  if (!last_chunk(c)) {
    const Peer to = next(c);
    sends_.push_back(pp_.isend(output.detach(), to.rank, static_cast<int>(2 * to.chunk)));
  }
  in_flight_[{c, m}] = {input, output};
}

void PipelineExecutor::backward(const Action& a, torch::Tensor received, StepResult& result) {
  const Key key{a.chunk, a.microbatch};
  auto [input, output] = in_flight_.at(key);
  in_flight_.erase(key);
  const Stopwatch compute(device_);
  if (a.kind == Action::Backward)
    output.backward(received);
  else
    deferred_[key] = defer_weight_gradients([&] { output.backward(received); });
  result.backward_seconds += compute.seconds();
  if (!first_chunk(a.chunk)) {
    const Peer to = previous(a.chunk);
    sends_.push_back(pp_.isend(input.grad(), to.rank, static_cast<int>(2 * to.chunk + 1)));
  }
}

void PipelineExecutor::backward_weights(const Action& a, StepResult& result) {
  const Key key{a.chunk, a.microbatch};
  const Stopwatch compute(device_);
  deferred_.at(key).compute();
  deferred_.erase(key);
  result.backward_seconds += compute.seconds();
}

}  // namespace minipretrain
