// The tensor-parallel regions (Megatron's mappings): tiny autograd functions
// that say where a layer communicates. With a TP group of one they are the
// identity and move nothing.
//
//   copy_to_tp      forward: identity          backward: all-reduce (sum)
//   reduce_from_tp  forward: all-reduce (sum)  backward: identity
//   gather_from_tp  forward: all-gather on the last dim  backward: keep own chunk
//
// Sequence parallelism (Korthikanti et al. 2022): activations outside the TP
// layers are [batch, seq / TP, hidden], rank r holding positions [r seq/TP,
// (r + 1) seq/TP). The TP layers then enter and leave through
//
//   gather_sequence          forward: all-gather on dim 1  backward: reduce-scatter on dim 1
//   reduce_scatter_sequence  forward: reduce-scatter on dim 1  backward: all-gather on dim 1
//
// in place of copy_to_tp and reduce_from_tp: the same bytes on a ring.
#pragma once

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

torch::Tensor copy_to_tp(const torch::Tensor& x, Communicator& tp);
torch::Tensor reduce_from_tp(const torch::Tensor& x, Communicator& tp);
torch::Tensor gather_from_tp(const torch::Tensor& x, Communicator& tp);
torch::Tensor gather_sequence(const torch::Tensor& x, Communicator& tp);
torch::Tensor reduce_scatter_sequence(const torch::Tensor& x, Communicator& tp);

}  // namespace minipretrain
