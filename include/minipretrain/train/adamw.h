// AdamW with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:
//   p <- p * (1 - lr * wd)                         (matrices only, not norms)
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// Its state is a set of named tensors, so checkpoints store it by name.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace minipretrain {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

class AdamW {
 public:
  // Decay applies to parameters of rank >= 2 (weights), not to norm vectors.
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> parameters, AdamWOptions options);

  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const { return steps_; }

  // "exp_avg.<name>", "exp_avg_sq.<name>" and "step".
  std::map<std::string, torch::Tensor> state() const;
  void load_state(const std::map<std::string, torch::Tensor>& state);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq;
    bool decay;
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t steps_ = 0;
};

}  // namespace minipretrain
