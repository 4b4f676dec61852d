#include "minipretrain/parallel/pipeline_executor.h"

#include <chrono>

namespace minipretrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

PipelineExecutor::PipelineExecutor(std::shared_ptr<PipelineStage> stage, Communicator& pp, std::vector<int64_t> activation_shape)
    : stage_(std::move(stage)), pp_(pp), activation_shape_(std::move(activation_shape)) {}

PipelineExecutor::Peer PipelineExecutor::previous(int64_t chunk) const {
  const int rank = static_cast<int>(stage_->index());
  return rank > 0 ? Peer{rank - 1, chunk} : Peer{pp_.size() - 1, chunk - 1};
}

PipelineExecutor::Peer PipelineExecutor::next(int64_t chunk) const {
  const int rank = static_cast<int>(stage_->index());
  return rank < pp_.size() - 1 ? Peer{rank + 1, chunk} : Peer{0, chunk + 1};
}

StepResult PipelineExecutor::run(const std::vector<Action>& actions, const std::vector<Microbatch>& microbatches) {
  const auto start = Clock::now();
  StepResult result;
  for (const Action& a : actions) {
    if (a.kind == Action::Forward)
      forward(a, microbatches, result);
    else if (a.kind == Action::BackwardWeight)
      backward_weights(a, result);
    else
      backward(a, result);
    result.peak_in_flight =
        std::max<int64_t>(result.peak_in_flight, static_cast<int64_t>(in_flight_.size() + deferred_.size()));
  }
  for (auto& send : sends_) send->wait();
  sends_.clear();
  result.total_seconds = seconds_since(start);
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

void PipelineExecutor::forward(const Action& a, const std::vector<Microbatch>& microbatches, StepResult& result) {
  const int64_t m = a.microbatch, c = a.chunk;
  torch::Tensor input = microbatches.at(m).input_ids;
  if (!first_chunk(c)) {
    input = torch::empty(activation_shape_, stage_->activation_options());
    pp_.recv(input, previous(c).rank, static_cast<int>(2 * c));
    input.requires_grad_(torch::GradMode::is_enabled());
  }
  const auto start = Clock::now();
  torch::Tensor output = stage_->forward(input, c);
  if (last_chunk(c)) {
    if (on_logits) on_logits(m, output.detach());
    output = stage_->loss(output, microbatches.at(m).targets) / static_cast<double>(microbatches.size());
    result.loss += output.item<double>();
  }
  result.forward_seconds += seconds_since(start);
  if (!last_chunk(c)) {
    const Peer to = next(c);
    sends_.push_back(pp_.isend(output.detach(), to.rank, static_cast<int>(2 * to.chunk)));
  }
  in_flight_[{c, m}] = {input, output};
}

void PipelineExecutor::backward(const Action& a, StepResult& result) {
  const Key key{a.chunk, a.microbatch};
  auto [input, output] = in_flight_.at(key);
  in_flight_.erase(key);
  torch::Tensor grad;
  if (!last_chunk(a.chunk)) {
    grad = torch::empty_like(output);
    pp_.recv(grad, next(a.chunk).rank, static_cast<int>(2 * a.chunk + 1));
  }
  const auto start = Clock::now();
  if (a.kind == Action::Backward)
    output.backward(grad);
  else
    deferred_[key] = defer_weight_gradients([&] { output.backward(grad); });
  result.backward_seconds += seconds_since(start);
  if (!first_chunk(a.chunk)) {
    const Peer to = previous(a.chunk);
    sends_.push_back(pp_.isend(input.grad(), to.rank, static_cast<int>(2 * to.chunk + 1)));
  }
}

void PipelineExecutor::backward_weights(const Action& a, StepResult& result) {
  const Key key{a.chunk, a.microbatch};
  const auto start = Clock::now();
  deferred_.at(key).compute();
  deferred_.erase(key);
  result.backward_seconds += seconds_since(start);
}

}  // namespace minipretrain
