// Gradient norm of the whole model across TP and PP (DESIGN.md invariant 5):
// a sharded tensor's shards each add their squares once; a replicated tensor
// (norm weights) is counted by TP rank 0 only; stages add up over PP. DP
// replicas hold equal gradients after averaging, so DP does not take part,
// except under the distributed optimizer, whose DP ranks each hold a part.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

// The norm of the gradients `grads`; `counted[i]` false leaves grads[i] out
// (a replicated tensor on TP ranks other than 0). Squares add up in fp64 per
// chunk, in a fixed order, without an fp64 copy of any tensor.
// `dp`: the group whose ranks hold the other parts (distributed optimizer).
double global_grad_norm(const std::vector<torch::Tensor>& grads, const std::vector<bool>& counted, Communicator& tp,
                        Communicator& pp, Communicator* dp = nullptr);

// The factor that brings `norm` down to `max_norm` (1 when within it or when max_norm <= 0).
double clip_factor(double norm, double max_norm);

}  // namespace minipretrain
