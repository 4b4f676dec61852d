// Vocabulary-parallel cross-entropy (Megatron's cross_entropy.py): each TP rank
// holds logits for a slice of the vocabulary; the maximum, the target's logit
// and the sum of exponentials are all-reduced, so the full logits are never
// gathered. Columns at or past `vocab_size` (TP padding) are masked out: they
// never win and never count.
#pragma once

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

// logits_local [N, V_local] (this rank's columns start at vocab_start),
// targets [N] global ids. Returns the per-token loss [N].
torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits_local, const torch::Tensor& targets,
                                           int64_t vocab_start, int64_t vocab_size, Communicator& tp);

}  // namespace minipretrain
