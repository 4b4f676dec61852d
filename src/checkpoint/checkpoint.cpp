#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/safetensors.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>


namespace minipretrain {
namespace fs = std::filesystem;
namespace {

constexpr const char* kModelPrefix = "model/";
constexpr const char* kOptimPrefix = "optim/";

std::string step_dir_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "checkpoint-%08lld", static_cast<long long>(step));
  return name;
}

std::string shard_name(const Coordinates& c) {
  return "shard-tp" + std::to_string(c.tp) + "-pp" + std::to_string(c.pp);
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw CheckpointError("cannot read " + path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(path.string() + " is corrupt: " + e.what());
  }
}

// The fields a checkpoint must agree on to be loaded into this run.
void check_compatible(const nlohmann::json& saved, const Config& config, const std::string& dir) {
  const nlohmann::json now = to_json(config);
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_attention_heads",
                          "num_key_value_heads", "tensor_parallel_size", "pipeline_parallel_size"}) {
    if (saved.value(key, nlohmann::json()) != now.at(key))
      throw CheckpointError("checkpoint " + dir + " has " + key + "=" + saved.value(key, nlohmann::json()).dump() +
                            " but this run has " + now.at(key).dump());
  }
  // Checkpoints from before the split existed cut the layers evenly.
  const int64_t stages = saved.at("pipeline_parallel_size").get<int64_t>();
  const std::vector<int64_t> split =
      saved.contains("pipeline_layer_split")
          ? saved.at("pipeline_layer_split").get<std::vector<int64_t>>()
          : std::vector<int64_t>(stages, saved.at("num_layers").get<int64_t>() / stages);
  if (split != config.parallel.pipeline_layer_split) {
    std::string text;
    for (int64_t n : split) text += (text.empty() ? "" : ",") + std::to_string(n);
    throw CheckpointError("checkpoint " + dir + " was written with pipeline_layer_split " + text + " but this run has " +
                          now.at("pipeline_layer_split").dump() + ": pass --pipeline-layer-split " + text +
                          " to resume it");
  }
}

}  // namespace

void write_named_shard(const std::string& path_prefix, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, ShardSpec>& specs) {
  std::vector<std::pair<std::string, torch::Tensor>> ordered(tensors.begin(), tensors.end());
  const auto [bytes, hash] = write_safetensors(path_prefix + ".safetensors", ordered);
  nlohmann::json index = {{"bytes", bytes}, {"fnv1a", hash}, {"specs", nlohmann::json::object()}};
  for (const auto& [name, spec] : specs) index["specs"][name] = to_json(spec);
  std::ofstream(path_prefix + ".json") << index.dump() << "\n";
}

std::map<std::string, torch::Tensor> read_named_shard(const std::string& path_prefix,
                                                      std::map<std::string, ShardSpec>* specs) {
  const nlohmann::json index = read_json(path_prefix + ".json");
  SafetensorsFile file;
  try {
    file = read_safetensors(path_prefix + ".safetensors");
  } catch (const SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
  if (file.bytes != index.value("bytes", uint64_t{0}) || file.fnv1a != index.value("fnv1a", uint64_t{0}))
    throw CheckpointError(path_prefix + ".safetensors is corrupt: its size or hash does not match " + path_prefix +
                          ".json");
  if (specs)
    for (const auto& [name, spec] : index.at("specs").items()) (*specs)[name] = shard_spec_from_json(spec);
  return file.tensors;
}

std::string save_checkpoint(const std::string& output_dir, const TrainingProgress& progress, const NamedState& state,
                            const Config& config, const ParallelState& parallel) {
  const fs::path final_dir = fs::path(output_dir) / step_dir_name(progress.step);
  const fs::path tmp_dir = final_dir.string() + ".tmp";
  if (parallel.rank() == 0) {
    fs::remove_all(tmp_dir);  // a save that died earlier
    fs::create_directories(tmp_dir);
  }
  parallel.world().barrier();

  if (parallel.coords().dp == 0) {
    std::map<std::string, torch::Tensor> tensors;
    std::map<std::string, ShardSpec> specs;
    for (const auto& [name, entry] : state) {
      tensors[name] = entry.tensor;
      if (entry.spec) specs[name] = *entry.spec;
    }
    write_named_shard((tmp_dir / shard_name(parallel.coords())).string(), tensors, specs);
  }
  parallel.world().barrier();

  if (parallel.rank() == 0) {
    nlohmann::json meta = {{"step", progress.step},
                           {"consumed_samples", progress.consumed_samples},
                           {"config", to_json(config)},
                           {"layout", {{"tp", parallel.layout().tp}, {"dp", parallel.layout().dp}, {"pp", parallel.layout().pp}}}};
    std::ofstream(tmp_dir / "meta.json") << meta.dump(2) << "\n";
    fs::remove_all(final_dir);
    fs::rename(tmp_dir, final_dir);
  }
  parallel.world().barrier();
  return final_dir.string();
}

std::string find_latest_checkpoint(const std::string& output_dir) {
  static const std::regex pattern("checkpoint-(\\d+)");
  std::string best;
  int64_t best_step = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    std::smatch match;
    const std::string name = entry.path().filename().string();
    if (!std::regex_match(name, match, pattern) || !fs::exists(entry.path() / "meta.json")) continue;
    const int64_t step = std::stoll(match[1]);
    if (step > best_step) {
      best_step = step;
      best = entry.path().string();
    }
  }
  return best;
}

TrainingProgress load_checkpoint(const std::string& dir, const NamedState& state, const Config& config,
                                 const ParallelState& parallel) {
  const nlohmann::json meta = read_json(fs::path(dir) / "meta.json");
  if (!meta.contains("config") || !meta.contains("step"))
    throw CheckpointError(dir + "/meta.json is incomplete");
  check_compatible(meta.at("config"), config, dir);

  Coordinates saved = parallel.coords();
  saved.dp = 0;
  std::map<std::string, torch::Tensor> tensors = read_named_shard((fs::path(dir) / shard_name(saved)).string());
  torch::NoGradGuard no_grad;
  for (const auto& [name, entry] : state) {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw CheckpointError("checkpoint " + dir + " has no tensor " + name);
    if (!it->second.sizes().equals(entry.tensor.sizes()))
      throw CheckpointError("checkpoint " + dir + ": " + name + " has shape " + c10::str(it->second.sizes()) +
                            ", the model expects " + c10::str(entry.tensor.sizes()));
    entry.tensor.copy_(it->second);
  }
  return {meta.at("step").get<int64_t>(), meta.value("consumed_samples", int64_t{0})};
}

std::map<std::string, torch::Tensor> load_full_tensors(const std::string& dir, const std::string& file_prefix) {
  std::map<std::string, std::vector<std::pair<ShardSpec, torch::Tensor>>> pieces;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(file_prefix, 0) != 0 || entry.path().extension() != ".safetensors") continue;
    std::map<std::string, ShardSpec> specs;
    const std::string prefix = (entry.path().parent_path() / entry.path().stem()).string();
    for (auto& [key, tensor] : read_named_shard(prefix, &specs)) {
      auto spec = specs.find(key);
      if (spec == specs.end()) continue;
      if (key.rfind(kOptimPrefix, 0) == 0) continue;
      pieces[key].emplace_back(spec->second, tensor);
    }
  }
  std::map<std::string, torch::Tensor> full;
  for (auto& [key, shards] : pieces) {
    // Replicated tensors appear once per TP rank; any copy will do.
    std::string name = key.rfind(kModelPrefix, 0) == 0 ? key.substr(std::strlen(kModelPrefix)) : key;
    if (!shards.front().first.sharded()) shards.resize(1);
    full[name] = join_shards(shards);
  }
  return full;
}

}  // namespace minipretrain
