// The distributed optimizer (ZeRO-1, Megatron-LM's --use-distributed-optimizer).
// The gradient buffer's buckets are reduce-scattered over DP
// (parallel/grad_sync.h), so DP rank r holds the averaged gradient of chunk
// r of every bucket; for those elements only it keeps the fp32 master
// weights (in bf16; in fp32 the parameters are the masters) and the AdamW
// moments: 12/DP bytes per parameter instead of 12 in bf16, 8/DP instead of
// 8 in fp32. A step updates them, writes them (cast) into its chunks of the
// flat parameter buffer, and one all-gather per bucket gives every rank
// every weight.
//
// A piece is where an owned chunk meets one tensor. Checkpoints see the
// pieces as boxes of the full tensors (parallel/shard.h), so a checkpoint
// written with the distributed optimizer loads without it and the other
// way round, on any layout (DESIGN.md invariant 11).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/distributed/communicator.h"
#include "minipretrain/parallel/grad_sync.h"
#include "minipretrain/parallel/shard.h"
#include "minipretrain/train/adamw.h"

namespace minipretrain {

class ShardedOptimizer {
 public:
  // `shapes`: of MainParams' entries, in buffer order; `buckets`: the
  // gradient buckets, each split into `shards` chunks, chunk `rank` ours.
  ShardedOptimizer(std::vector<std::vector<int64_t>> shapes, std::vector<GradientBuckets::Range> buckets,
                   int64_t rank, int64_t shards, torch::ScalarType compute_dtype, AdamWOptions options);
  ShardedOptimizer(const ShardedOptimizer&) = delete;
  ShardedOptimizer& operator=(const ShardedOptimizer&) = delete;

  // While MainParams is built: entry i's weight in fp32, before its cast.
  void see_fp32(size_t entry, const torch::Tensor& weight);
  // Then: MainParams' flat parameter and gradient buffers.
  void attach(torch::Tensor flat_model, torch::Tensor flat_grad);

  // This rank's gradient pieces, each with whether it counts in the norm
  // (as its entry does in `counted`).
  void gradient_pieces(const std::vector<bool>& counted, std::vector<torch::Tensor>& grads,
                       std::vector<bool>& counted_pieces) const;
  // AdamW on this rank's pieces, then every rank's weights to every rank.
  void step(double lr, double grad_scale, Communicator& dp);
  // The masters into the parameters, gathered (after a checkpoint was loaded).
  void publish(Communicator& dp);
  // Every rank's averaged gradients to every rank (--dump-first-step).
  void gather_gradients(Communicator& dp);
  bool masters_finite() const;

  int64_t steps_taken() const { return adamw_->steps_taken(); }
  void set_steps_taken(int64_t steps) { adamw_->set_steps_taken(steps); }

  // The checkpoint boxes of tensor `name`, rows [row, row + rows) of entry
  // `entry` and shard `spec` of its full tensor: AdamW's moments and, in
  // bf16, the fp32 master weights.
  void add_state(NamedState& state, const std::string& name, size_t entry, int64_t row, int64_t rows,
                 const ShardSpec& spec) const;

 private:
  struct Piece {
    size_t entry;
    int64_t flat = 0;      // its first element in the buffer
    int64_t elements = 0;
    int64_t master = 0;    // its first element in masters_ (bf16)
  };
  void gather(const torch::Tensor& flat, Communicator& dp) const;

  std::vector<std::vector<int64_t>> shapes_;
  std::vector<int64_t> offsets_;  // per entry, in the buffer
  std::vector<GradientBuckets::Range> buckets_;
  torch::ScalarType dtype_;
  AdamWOptions options_;
  std::vector<Piece> pieces_;
  torch::Tensor masters_;  // bf16: this rank's fp32 master weights, piece after piece
  torch::Tensor flat_model_, flat_grad_;
  std::unique_ptr<AdamW> adamw_;
};

}  // namespace minipretrain
