#include "minipretrain/parallel/pipeline_executor.h"

#include <chrono>

namespace minipretrain {
namespace {

constexpr int kForwardTag = 0;
constexpr int kBackwardTag = 1;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

PipelineExecutor::PipelineExecutor(std::shared_ptr<PipelineStage> stage, Communicator& pp, std::vector<int64_t> activation_shape)
    : stage_(std::move(stage)), pp_(pp), activation_shape_(std::move(activation_shape)) {}

StepResult PipelineExecutor::run(const std::vector<Action>& actions, const std::vector<Microbatch>& microbatches) {
  const auto start = Clock::now();
  StepResult result;
  for (const Action& a : actions) {
    if (a.kind == Action::Forward)
      forward(a.microbatch, microbatches, result);
    else
      backward(a.microbatch, result);
    result.peak_in_flight = std::max<int64_t>(result.peak_in_flight, static_cast<int64_t>(in_flight_.size()));
  }
  for (auto& send : sends_) send->wait();
  sends_.clear();
  result.total_seconds = seconds_since(start);
  return result;
}

StepResult PipelineExecutor::evaluate(const std::vector<Microbatch>& microbatches) {
  torch::NoGradGuard no_grad;
  std::vector<Action> forwards;
  for (int64_t m = 0; m < static_cast<int64_t>(microbatches.size()); ++m) forwards.push_back({Action::Forward, m});
  StepResult result = run(forwards, microbatches);
  in_flight_.clear();
  return result;
}

void PipelineExecutor::forward(int64_t m, const std::vector<Microbatch>& microbatches, StepResult& result) {
  torch::Tensor input = microbatches.at(m).input_ids;
  if (!stage_->is_first()) {
    input = torch::empty(activation_shape_, stage_->activation_options());
    pp_.recv(input, static_cast<int>(stage_->index() - 1), kForwardTag);
    input.requires_grad_(torch::GradMode::is_enabled());
  }
  const auto start = Clock::now();
  torch::Tensor output = stage_->forward(input);
  if (stage_->is_last()) {
    if (on_logits) on_logits(m, output.detach());
    output = stage_->loss(output, microbatches.at(m).targets) / static_cast<double>(microbatches.size());
    result.loss += output.item<double>();
  }
  result.forward_seconds += seconds_since(start);
  if (!stage_->is_last()) sends_.push_back(pp_.isend(output.detach(), static_cast<int>(stage_->index() + 1), kForwardTag));
  in_flight_[m] = {input, output};
}

void PipelineExecutor::backward(int64_t m, StepResult& result) {
  auto [input, output] = in_flight_.at(m);
  in_flight_.erase(m);
  torch::Tensor grad;
  if (!stage_->is_last()) {
    grad = torch::empty_like(output);
    pp_.recv(grad, static_cast<int>(stage_->index() + 1), kBackwardTag);
  }
  const auto start = Clock::now();
  output.backward(grad);
  result.backward_seconds += seconds_since(start);
  if (!stage_->is_first()) sends_.push_back(pp_.isend(input.grad(), static_cast<int>(stage_->index() - 1), kBackwardTag));
}

}  // namespace minipretrain
