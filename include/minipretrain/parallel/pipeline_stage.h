// What the pipeline executor needs of a stage: run it forward, score the
// last stage's output, and the shape of what travels between stages. The
// model's Stage implements it, so the parallel layer does not know the model.
#pragma once

#include <torch/torch.h>

namespace minipretrain {

class PipelineStage {
 public:
  virtual ~PipelineStage() = default;
  virtual bool is_first() const = 0;
  virtual bool is_last() const = 0;
  virtual int64_t index() const = 0;
  // The first stage takes token ids; the others the previous stage's output.
  virtual torch::Tensor forward(const torch::Tensor& input) = 0;
  // Last stage: the mean loss of its output against `targets`.
  virtual torch::Tensor loss(const torch::Tensor& output, const torch::Tensor& targets) = 0;
  // dtype and device of the activations sent between stages.
  virtual torch::TensorOptions activation_options() const = 0;
};

}  // namespace minipretrain
