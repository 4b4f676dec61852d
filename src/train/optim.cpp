// The optimizer, its learning-rate schedule and gradient clipping.
#include <cmath>

#include "minipretrain/train/adamw.h"
#include "minipretrain/train/grad_clip.h"
#include "minipretrain/train/lr_schedule.h"

namespace minipretrain {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> parameters, AdamWOptions options)
    : options_(options) {
  for (auto& [name, p] : parameters)
    slots_.push_back({name, p, torch::zeros_like(p), torch::zeros_like(p), p.dim() >= 2});
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(steps_));
  const double correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
  for (Slot& s : slots_) {
    torch::Tensor grad = s.param.grad();
    if (!grad.defined()) continue;
    if (s.decay && options_.weight_decay > 0) s.param.mul_(1.0 - lr * options_.weight_decay);
    s.exp_avg.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
    s.exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    torch::Tensor denom = (s.exp_avg_sq / correction2).sqrt_().add_(options_.eps);
    s.param.addcdiv_(s.exp_avg, denom, -lr / correction1);
  }
}

void AdamW::zero_grad() {
  for (Slot& s : slots_)
    if (s.param.grad().defined()) s.param.mutable_grad().zero_();
}

std::map<std::string, torch::Tensor> AdamW::state() const {
  std::map<std::string, torch::Tensor> out;
  for (const Slot& s : slots_) {
    out["exp_avg." + s.name] = s.exp_avg;
    out["exp_avg_sq." + s.name] = s.exp_avg_sq;
  }
  out["step"] = torch::tensor(steps_, torch::kLong);
  return out;
}

void AdamW::load_state(const std::map<std::string, torch::Tensor>& state) {
  torch::NoGradGuard no_grad;
  auto get = [&](const std::string& key) -> const torch::Tensor& {
    auto it = state.find(key);
    if (it == state.end()) throw std::runtime_error("optimizer state has no '" + key + "'");
    return it->second;
  };
  for (Slot& s : slots_) {
    s.exp_avg.copy_(get("exp_avg." + s.name));
    s.exp_avg_sq.copy_(get("exp_avg_sq." + s.name));
  }
  steps_ = get("step").item<int64_t>();
}

LRSchedule::LRSchedule(double peak, double min_lr, double warmup_ratio, int64_t max_steps)
    : peak_(peak), min_lr_(min_lr), warmup_(std::llround(warmup_ratio * max_steps)), max_steps_(max_steps) {}

double LRSchedule::at(int64_t step) const {
  if (step <= warmup_) return peak_ * static_cast<double>(step) / static_cast<double>(warmup_);
  const double progress = static_cast<double>(step - warmup_) / static_cast<double>(max_steps_ - warmup_);
  return min_lr_ + 0.5 * (peak_ - min_lr_) * (1.0 + std::cos(M_PI * std::min(progress, 1.0)));
}

double clip_grad_norm(const std::vector<std::pair<std::string, torch::Tensor>>& parameters,
                      const std::map<std::string, ShardSpec>& specs, double max_norm, Communicator& tp,
                      Communicator& pp) {
  torch::NoGradGuard no_grad;
  torch::Tensor sum_sq = torch::zeros({1}, torch::TensorOptions().dtype(torch::kDouble));
  for (const auto& [name, p] : parameters) {
    if (!p.grad().defined()) continue;
    if (!specs.at(name).sharded() && tp.rank() != 0) continue;
    sum_sq += p.grad().to(torch::kDouble).pow(2).sum().cpu();
  }
  sum_sq = sum_sq.to(parameters.front().second.device());
  tp.all_reduce(sum_sq, ReduceOp::Sum);
  pp.all_reduce(sum_sq, ReduceOp::Sum);
  const double norm = std::sqrt(sum_sq.item<double>());
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& entry : parameters)
      if (entry.second.grad().defined()) entry.second.grad().mul_(scale);
  }
  return norm;
}

}  // namespace minipretrain
