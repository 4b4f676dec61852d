// The tensor-parallel regions (Megatron's mappings): tiny autograd functions
// that say where a layer communicates. With a TP group of one they are the
// identity and move nothing.
//
//   copy_to_tp      forward: identity          backward: all-reduce (sum)
//   reduce_from_tp  forward: all-reduce (sum)  backward: identity
//   gather_from_tp  forward: all-gather on the last dim  backward: keep own chunk
#pragma once

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

torch::Tensor copy_to_tp(const torch::Tensor& x, Communicator& tp);
torch::Tensor reduce_from_tp(const torch::Tensor& x, Communicator& tp);
torch::Tensor gather_from_tp(const torch::Tensor& x, Communicator& tp);

}  // namespace minipretrain
