// Gradient norm of the whole model across TP and PP (DESIGN.md invariant 5):
// a sharded tensor's shards each add their squares once; a replicated tensor
// (norm weights) is counted by TP rank 0 only; stages add up over PP. DP
// replicas hold equal gradients after averaging, so DP does not take part.
#pragma once

#include <map>
#include <string>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"
#include "minipretrain/parallel/shard.h"

namespace minipretrain {

// Returns the norm before clipping; scales the gradients down to `max_norm`
// when it is exceeded (max_norm <= 0: no clipping).
double clip_grad_norm(const std::vector<std::pair<std::string, torch::Tensor>>& parameters,
                      const std::map<std::string, ShardSpec>& specs, double max_norm, Communicator& tp,
                      Communicator& pp);

}  // namespace minipretrain
