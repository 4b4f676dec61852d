#include "minipretrain/parallel/weight_gradients.h"

#include <mutex>

namespace minipretrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

std::mutex queue_mutex;
std::vector<std::function<void()>>* queue = nullptr;  // set while a deferring backward runs

// What autograd's mm backward computes for x.mm(W.t()): dY^T X, [out, in].
torch::Tensor weight_gradient(const torch::Tensor& x, const torch::Tensor& grad) {
  return grad.reshape({-1, grad.size(-1)}).t().mm(x.reshape({-1, x.size(-1)}));
}

// Through the weight's own AccumulateGrad node (a backward rooted at the
// leaf), so the gradient lands exactly as in an undivided backward and the
// hooks on that node see it.
void accumulate(const torch::Tensor& weight, const torch::Tensor& grad) {
  torch::autograd::backward({weight}, {grad});
}

struct DeferrableLinear : torch::autograd::Function<DeferrableLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight) {
    ctx->save_for_backward({x, weight});
    return torch::matmul(x, weight.t());
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor x = saved[0], weight = saved[1], grad = grads[0];
    const torch::Tensor grad_x = ctx->needs_input_grad(0) ? grad.matmul(weight) : torch::Tensor();
    if (!ctx->needs_input_grad(1)) return {grad_x, torch::Tensor()};
    {
      std::lock_guard<std::mutex> lock(queue_mutex);
      if (queue) {
        queue->push_back([x, weight, grad] { accumulate(weight, weight_gradient(x, grad)); });
        return {grad_x, torch::Tensor()};
      }
    }
    return {grad_x, weight_gradient(x, grad)};
  }
};

}  // namespace

void WeightGradients::compute() {
  for (auto& job : jobs_) job();
  jobs_.clear();
}

WeightGradients defer_weight_gradients(const std::function<void()>& backward) {
  WeightGradients deferred;
  struct Scope {  // the queue is unset however the backward ends
    explicit Scope(std::vector<std::function<void()>>* jobs) {
      std::lock_guard<std::mutex> lock(queue_mutex);
      queue = jobs;
    }
    ~Scope() {
      std::lock_guard<std::mutex> lock(queue_mutex);
      queue = nullptr;
    }
  } scope(&deferred.jobs_);
  backward();
  return deferred;
}

torch::Tensor deferrable_linear(const torch::Tensor& x, const torch::Tensor& weight) {
  return DeferrableLinear::apply(x, weight);
}

}  // namespace minipretrain
