// Zero-bubble schedules split a backward into B, the gradient of the stage's
// input, and W, the gradients of its weights (Qi et al. 2024). Linear layers
// compute x W^T through deferrable_linear(): its backward computes both
// gradients as autograd's matmul would, except inside
// defer_weight_gradients(), where it computes the input's gradient only and
// queues the weight's (dW = dY^T X from the saved input and the incoming
// gradient) for WeightGradients::compute(). So W costs exactly the weight
// GEMMs, about half of a layer's backward GEMM FLOPs, and B does not redo
// them; B keeps the rest (attention, activations, norms and the embedding,
// whose weight gradients are element-wise and cheap). Until W runs, the
// queue holds each linear layer's input and output gradient.
//
// The queue is process-wide, because autograd calls a node's backward with
// no context of who started it; one backward at a time may defer (the
// pipeline executor's), and nested backwards (recompute) defer with it.
#pragma once

#include <functional>
#include <vector>

#include <torch/torch.h>

namespace minipretrain {

// The weight-gradient work one backward deferred.
class WeightGradients {
 public:
  // Computes every queued gradient and accumulates it into its weight's
  // .grad through the weight's AccumulateGrad, as the backward would have
  // (hooks on it fire).
  void compute();

 private:
  friend WeightGradients defer_weight_gradients(const std::function<void()>& backward);
  std::vector<std::function<void()>> jobs_;
};

// Runs `backward` (which calls autograd) with the linear layers' weight
// gradients deferred, and returns them.
WeightGradients defer_weight_gradients(const std::function<void()>& backward);

// x [..., in] times weight [out, in] transposed: [..., out].
torch::Tensor deferrable_linear(const torch::Tensor& x, const torch::Tensor& weight);

}  // namespace minipretrain
