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

PipelineExecutor::PipelineExecutor(Stage stage, Communicator& pp, std::vector<int64_t> activation_shape)
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
  const StagePosition& pos = stage_->position();
  const auto& parameters = stage_->parameters();
  torch::Tensor input = microbatches.at(m).input_ids;
  if (!pos.first()) {
    input = torch::empty(activation_shape_, parameters.front().options());
    pp_.recv(input, static_cast<int>(pos.stage - 1), kForwardTag);
    input.requires_grad_(true);
  }
  const auto start = Clock::now();
  torch::Tensor output = stage_->forward(input);
  if (pos.last()) {
    if (on_logits) on_logits(m, output.detach());
    output = stage_->loss(output, microbatches.at(m).targets) / static_cast<double>(microbatches.size());
    result.loss += output.item<double>();
  }
  result.busy_seconds += seconds_since(start);
  if (!pos.last()) sends_.push_back(pp_.isend(output.detach(), static_cast<int>(pos.stage + 1), kForwardTag));
  in_flight_[m] = {input, output};
}

void PipelineExecutor::backward(int64_t m, StepResult& result) {
  const StagePosition& pos = stage_->position();
  auto [input, output] = in_flight_.at(m);
  in_flight_.erase(m);
  torch::Tensor grad;
  if (!pos.last()) {
    grad = torch::empty_like(output);
    pp_.recv(grad, static_cast<int>(pos.stage + 1), kBackwardTag);
  }
  const auto start = Clock::now();
  output.backward(grad);
  result.busy_seconds += seconds_since(start);
  if (!pos.first()) sends_.push_back(pp_.isend(input.grad(), static_cast<int>(pos.stage - 1), kBackwardTag));
}

}  // namespace minipretrain
