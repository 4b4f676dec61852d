// Which slice of which full tensor a rank holds. Sharded tensors split one
// dimension into equal contiguous pieces, one per tensor-parallel rank; the
// vocabulary is padded first so that it divides (padding rows are zero).
// The distributed optimizer's pieces are boxes: a flat range of a rank's
// shard cut into rows (see train/sharded_optimizer.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace minipretrain {

struct ShardSpec {
  int64_t dim = -1;                // -1: replicated on every TP rank
  std::vector<int64_t> full_shape;  // the logical (unpadded) full tensor
  int64_t offset = 0;              // where this shard starts along dim
  // Set for a box: where it starts in every dimension of the full tensor
  // (its extent is the stored shape); `dim` and `offset` then say nothing.
  std::vector<int64_t> start;

  bool sharded() const { return dim >= 0; }
  bool box() const { return !start.empty(); }
};

// Shard `rank` of `world` along `dim` of a tensor of `full_shape`, with the
// dimension padded up to a multiple of `world`.
ShardSpec shard_along(int64_t dim, std::vector<int64_t> full_shape, int64_t rank, int64_t world);

// The local shape a spec describes (padded length along dim).
std::vector<int64_t> local_shape(const ShardSpec& spec, int64_t world);

// This rank's slice of `full`, zero-padded where it runs past the end.
torch::Tensor take_shard(const torch::Tensor& full, const ShardSpec& spec, int64_t local_length);

// One tensor of a rank's state (checkpoints, the first-step dump), with its
// place in the full tensor when it is a shard of one. Saving reads `tensor`;
// loading copies into it.
struct StateTensor {
  torch::Tensor tensor;
  std::optional<ShardSpec> spec;
};
using NamedState = std::map<std::string, StateTensor>;

// A rank may hold several boxes of one tensor: each is stored as
// "<name>@<where it starts in the rank's flat buffer>".
std::string box_name(const std::string& name, int64_t first);
// The tensor a stored name belongs to: the name without its "@...".
std::string tensor_name(const std::string& stored);

nlohmann::json to_json(const ShardSpec& spec);
ShardSpec shard_spec_from_json(const nlohmann::json& json);

}  // namespace minipretrain
