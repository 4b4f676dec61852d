#include "minipretrain/parallel/shard.h"

#include <algorithm>

#include "minipretrain/config/json_input.h"

namespace minipretrain {

ShardSpec shard_along(int64_t dim, std::vector<int64_t> full_shape, int64_t rank, int64_t world) {
  const int64_t length = (full_shape.at(dim) + world - 1) / world;
  return ShardSpec{dim, std::move(full_shape), rank * length};
}

std::vector<int64_t> local_shape(const ShardSpec& spec, int64_t world) {
  std::vector<int64_t> shape = spec.full_shape;
  if (spec.sharded()) shape[spec.dim] = (shape[spec.dim] + world - 1) / world;
  return shape;
}

torch::Tensor take_shard(const torch::Tensor& full, const ShardSpec& spec, int64_t local_length) {
  if (!spec.sharded()) return full.clone();
  const int64_t available = std::max<int64_t>(0, std::min(local_length, full.size(spec.dim) - spec.offset));
  std::vector<int64_t> shape = full.sizes().vec();
  shape[spec.dim] = local_length;
  torch::Tensor shard = torch::zeros(shape, full.options());
  if (available > 0) shard.narrow(spec.dim, 0, available).copy_(full.narrow(spec.dim, spec.offset, available));
  return shard;
}

std::string box_name(const std::string& name, int64_t first) { return name + "@" + std::to_string(first); }

std::string tensor_name(const std::string& stored) { return stored.substr(0, stored.find('@')); }

nlohmann::json to_json(const ShardSpec& spec) {
  nlohmann::json json = {{"dim", spec.dim}, {"full_shape", spec.full_shape}, {"offset", spec.offset}};
  if (spec.box()) json["start"] = spec.start;
  return json;
}

ShardSpec shard_spec_from_json(const nlohmann::json& json) {
  constexpr int64_t kMaxLength = int64_t{1} << 40;
  const nlohmann::json& full = json.at("full_shape");
  if (!full.is_array() || full.size() > 8)
    throw JsonInputError("full_shape must be a list of at most 8 sizes, got " + json_excerpt(full));
  ShardSpec spec;
  for (size_t d = 0; d < full.size(); ++d)
    spec.full_shape.push_back(whole_number(full[d], "full_shape", 0, kMaxLength, "shard spec"));
  spec.dim = json_integer(json, "dim", -1, static_cast<int64_t>(full.size()) - 1, "shard spec");
  // A padded dimension's last shards may start past its end.
  spec.offset = json_integer(json, "offset", 0, spec.sharded() ? kMaxLength : 0, "shard spec");
  if (json.contains("start")) {
    const nlohmann::json& start = json.at("start");
    if (!start.is_array() || start.size() != full.size())
      throw JsonInputError("start must list one index per dimension of full_shape, got " + json_excerpt(start));
    // A box may start in a padded vocabulary's extra rows, past the end.
    for (size_t d = 0; d < start.size(); ++d)
      spec.start.push_back(whole_number(start[d], "start", 0, kMaxLength, "shard spec"));
  }
  return spec;
}

}  // namespace minipretrain
