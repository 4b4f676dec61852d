// The fp32 truth behind the model's parameters (DESIGN.md invariant 7).
//
// fp32: the model's parameters are the master weights, and their gradients
// are views into one flat fp32 buffer that autograd accumulates into over
// the microbatches.
// bf16: the model computes with bf16 parameters; the master weights are fp32
// copies. As each microbatch's backward produces a parameter's bf16 gradient,
// it is added into the flat fp32 buffer, so accumulation over microbatches is
// fp32. After the optimizer step, copy_to_model() casts the master weights to
// bf16 once per step, not once per microbatch.
//
// A hook after each parameter's gradient accumulation counts the backwards
// that reached it; after the step's last one, on_final(i) runs, so the DP
// all-reduce of its bucket can start while backward goes on. The buffer
// holds the parameters in reverse order (the order backward finishes them),
// so DP buckets are contiguous ranges of it.
//
// For the distributed optimizer (train/sharded_optimizer.h) the parameters
// themselves live in one flat buffer laid out like the gradients', which its
// all-gather fills, and the fp32 masters of bf16 are not kept here: each
// weight is shown in fp32 to the optimizer, which keeps its part, before it
// is cast. The cast happens weight by weight and the gradient buffer comes
// after, so that building it never holds more than the run itself will.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/config/choices.h"

namespace minipretrain {

class MainParams {
 public:
  struct Entry {
    std::string name;
    torch::Tensor model;   // what forward uses (bf16 or fp32)
    torch::Tensor master;  // fp32; the same tensor as `model` in fp32; none for the distributed optimizer in bf16
    torch::Tensor grad;    // fp32 view into the flat buffer
    int64_t offset = 0;    // of `grad` in the flat buffer
    bool fresh = true;     // bf16: nothing accumulated since zero_grad
    int64_t arrived = 0;   // backwards that reached it this step
  };

  // `parameters` are the model's, still fp32; with bf16 they are cast here.
  // `shards` > 1: for the distributed optimizer over that many DP ranks;
  // `see_fp32(i, weight)` then sees entry i's weight before its cast.
  MainParams(std::vector<std::pair<std::string, torch::Tensor>> parameters, torch::ScalarType compute_dtype,
             int64_t shards = 1, const std::function<void(size_t, const torch::Tensor&)>& see_fp32 = {});
  MainParams(const MainParams&) = delete;  // the hooks hold `this`
  MainParams& operator=(const MainParams&) = delete;

  // Before a step's first backward, which will run `backwards` times.
  void zero_grad(int64_t backwards);
  // Before the gradients are read: entries no microbatch reached are zero.
  void finish_accumulation();

  // Called with an entry's index once its gradient is final for the step.
  std::function<void(size_t)> on_final;
  // After the optimizer changed the master weights (a no-op in fp32).
  void copy_to_model();

  std::vector<Entry>& entries() { return entries_; }
  const std::vector<Entry>& entries() const { return entries_; }
  torch::Tensor flat_grad() const { return flat_grad_; }
  // The parameters as one buffer (distributed optimizer only).
  torch::Tensor flat_model() const { return flat_model_; }
  torch::ScalarType compute_dtype() const { return dtype_; }

 private:
  // After autograd accumulated entry i's gradient.
  void accumulated(size_t i);

  std::vector<Entry> entries_;
  torch::Tensor flat_grad_;
  torch::Tensor flat_model_;
  torch::ScalarType dtype_;
  int64_t backwards_ = 1;
  // The parameters' gradient accumulators, which hold the hooks: autograd
  // makes a new one (without them) once nothing holds the old.
  std::vector<c10::intrusive_ptr<torch::autograd::Node>> accumulators_;
};

// fp32 or bf16 for Fp32, Bf16 or Auto (bf16 where the device computes
// it natively: CUDA from compute capability 8.0, CPUs with AVX512-BF16 or AMX).
torch::ScalarType resolve_precision(Precision precision, const torch::Device& device);

}  // namespace minipretrain
