// AdamW with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:
//   p <- p * (1 - lr * wd)                         (matrices only, not norms)
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// The moments are fp32 tensors shaped like the parameters; the trainer names
// them for checkpoints.
#pragma once

#include <vector>

#include <torch/torch.h>

namespace minipretrain {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

// On the CPU, one pass over memory per parameter, multi-threaded: each
// element's update reads its weight, gradient and moments once and writes
// them back once. On CUDA, multi-tensor (foreach) ops over all parameters.
class AdamW {
 public:
  // fp32 contiguous parameters (the master weights). Decay applies to those of
  // rank >= 2 (weights), not to norm vectors; or where `decay` says, when
  // given (the distributed optimizer's flat pieces of either).
  AdamW(std::vector<torch::Tensor> parameters, AdamWOptions options, std::vector<bool> decay = {});

  // grads[i] belongs to parameters[i]; each is multiplied by `grad_scale`
  // on the way in (gradient clipping costs no pass of its own).
  void step(double lr, const std::vector<torch::Tensor>& grads, double grad_scale = 1.0);

  int64_t steps_taken() const { return steps_; }
  void set_steps_taken(int64_t steps) { steps_ = steps; }
  // The moments of parameter i, shaped like it: checkpoints save and load them in place.
  const torch::Tensor& exp_avg(size_t i) const { return slots_.at(i).exp_avg; }
  const torch::Tensor& exp_avg_sq(size_t i) const { return slots_.at(i).exp_avg_sq; }

 private:
  // CUDA parameters: the same update by PyTorch's fused AdamW kernel.
  void step_on_device(double lr, const std::vector<torch::Tensor>& grads, double grad_scale);

  struct Slot {
    torch::Tensor param, exp_avg, exp_avg_sq;
    bool decay;
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t steps_ = 0;
};

}  // namespace minipretrain
