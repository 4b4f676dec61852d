// What the pipeline executor needs of a stage: run one of its model chunks
// forward, score the last stage's output, and the shape of what travels
// between stages. The model's Stage implements it, so the parallel layer does
// not know the model.
//
// A stage holds num_chunks() chunks (virtual stages, schedule.h): chunk c of
// pipeline rank r is virtual stage c * PP + r. Without interleaving it holds one.
#pragma once

#include <torch/torch.h>

namespace minipretrain {

class PipelineStage {
 public:
  virtual ~PipelineStage() = default;
  // Pipeline rank 0, whose chunk 0 takes token ids; the last rank, whose
  // last chunk makes the logits.
  virtual bool is_first() const = 0;
  virtual bool is_last() const = 0;
  virtual int64_t index() const = 0;
  virtual int64_t num_chunks() const = 0;
  // The first chunk takes token ids; the others the previous chunk's output.
  virtual torch::Tensor forward(const torch::Tensor& input, int64_t chunk) = 0;
  // Last stage: the mean loss of its output against `targets`.
  virtual torch::Tensor loss(const torch::Tensor& output, const torch::Tensor& targets) = 0;
  // dtype and device of the activations sent between stages.
  virtual torch::TensorOptions activation_options() const = 0;
};

}  // namespace minipretrain
