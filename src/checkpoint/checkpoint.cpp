#include "minipretrain/checkpoint/checkpoint.h"

#include "minipretrain/checkpoint/safetensors.h"
#include "minipretrain/checkpoint/tensor_source.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "minipretrain/train/faults.h"
#include "minipretrain/config/json_input.h"

#include <spdlog/spdlog.h>

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
  return "shard-tp" + std::to_string(c.tp) + "-pp" + std::to_string(c.pp) + (c.dp > 0 ? "-dp" + std::to_string(c.dp) : "");
}

// A complete checkpoint is named exactly checkpoint-<step> and holds meta.json;
// anything else under the output directory (checkpoint-<step>.tmp) is not one.
std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    const int64_t step = checkpoint_step(entry.path().string());
    if (step >= 0 && fs::exists(entry.path() / "meta.json")) found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

// fsync(2) on a file or a directory: its bytes, or its entries, reach the disk.
void sync_to_disk(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError("cannot open " + path.string() + " to flush it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) throw CheckpointError("cannot flush " + path.string() + " to disk: " + std::strerror(error));
}


// Puts `tmp` in the place of `final_dir` in one step: rename(2) when nothing
// is there, else an atomic exchange (the old one then sits at `tmp`, to be
// removed), so that no moment exists without a checkpoint of that step.
void publish(const fs::path& tmp, const fs::path& final_dir) {
  if (::rename(tmp.c_str(), final_dir.c_str()) == 0) return;
  if ((errno == ENOTEMPTY || errno == EEXIST) &&
      ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp);
    return;
  }
  throw CheckpointError("cannot rename " + tmp.string() + " to " + final_dir.string() + ": " + std::strerror(errno));
}

// Removes what a killed save left behind, and all but the newest `keep`
// complete checkpoints (never `just_saved`). A checkpoint is renamed to .tmp
// before its files go, so a kill half-way leaves nothing --resume could pick.
void clean_output_dir(const fs::path& output_dir, int64_t keep, const fs::path& just_saved) {
  static const std::regex leftover("checkpoint-\\d+\\.tmp");
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output_dir, ec))
    if (std::regex_match(entry.path().filename().string(), leftover))
      fs::remove_all(entry.path(), ec);
  if (just_saved.empty()) return;
  auto found = complete_checkpoints(output_dir.string());
  const int64_t saved_step = checkpoint_step(just_saved.string());
  while (!found.empty() && found.back().first > saved_step) {
    const fs::path abandoned = found.back().second.string() + ".abandoned";
    spdlog::warn("{} is later than the step just saved, from a run this one replaced: renamed to {}",
                 found.back().second.string(), abandoned.string());
    fs::remove_all(abandoned, ec);
    fs::rename(found.back().second, abandoned, ec);
    found.pop_back();
  }
  if (keep <= 0) return;
  int64_t kept = 0;
  for (auto it = found.rbegin(); it != found.rend(); ++it) {
    if (it->second == just_saved || kept < keep) {
      kept += 1;
      continue;
    }
    const fs::path doomed = it->second.string() + ".tmp";
    fs::rename(it->second, doomed, ec);
    if (!ec) fs::remove_all(doomed, ec);
  }
}


}  // namespace

void check_same_model(const nlohmann::json& saved, const Config& config, const std::string& what) {
  const nlohmann::json now = to_json(config);
  if (!saved.is_object()) throw CheckpointError(what + " has a config that is not a JSON object");
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_attention_heads",
                          "num_key_value_heads", "rope_theta", "rms_norm_eps"}) {
    if (saved.value(key, nlohmann::json()) != now.at(key))
      throw CheckpointError(what + " has " + key + "=" + json_excerpt(saved.value(key, nlohmann::json())) +
                            " but this run has " + now.at(key).dump());
  }
}

namespace {

// What a checkpoint must agree on to be resumed by this run: the model, and
// the global batch (steps count global batches: the data position and the LR
// schedule go on from the step). The layout may differ.
void check_compatible(const nlohmann::json& saved, const Config& config, const std::string& dir) {
  check_same_model(saved, config, "checkpoint " + dir);
  const nlohmann::json batch = saved.value("global_batch_size", nlohmann::json());
  if (!batch.is_null() && batch != nlohmann::json(config.global_batch()))
    throw CheckpointError("checkpoint " + dir + " was trained with global_batch_size " + batch.dump() +
                          " but this run has " + std::to_string(config.global_batch()) +
                          ": steps count global batches, so pass --global-batch-size " + batch.dump() + " to resume it");
}

}  // namespace

void write_file_durably(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw CheckpointError("cannot write " + path + " (disk full?)");
  }
  sync_to_disk(path);
}

void write_named_shard(const std::string& path_prefix, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, ShardSpec>& specs) {
  std::vector<std::pair<std::string, torch::Tensor>> ordered(tensors.begin(), tensors.end());
  const auto [bytes, hash] = write_safetensors(path_prefix + ".safetensors", ordered);
  sync_to_disk(path_prefix + ".safetensors");
  nlohmann::json index = {{"bytes", bytes}, {hash_key(FileHash::kXxh3), hash}, {"specs", nlohmann::json::object()}};
  for (const auto& [name, spec] : specs) index["specs"][name] = to_json(spec);
  write_file_durably(path_prefix + ".json", index.dump() + "\n");
}

std::map<std::string, torch::Tensor> read_named_shard(const std::string& path_prefix,
                                                      std::map<std::string, ShardSpec>* specs) {
  const nlohmann::json index = read_json_file(path_prefix + ".json");
  const auto [kind, hash] = recorded_hash(index);
  SafetensorsFile file;
  try {
    file = read_safetensors(path_prefix + ".safetensors", kind);
  } catch (const SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
  if (file.bytes != index.value("bytes", uint64_t{0}) || file.hash != hash)
    throw CheckpointError(path_prefix + ".safetensors is corrupt: its size or hash does not match " + path_prefix +
                          ".json");
  if (specs) {
    try {
      for (const auto& [name, spec] : index.at("specs").items()) (*specs)[name] = shard_spec_from_json(spec);
    } catch (const std::exception& e) {  // JSON types and ranges alike
      throw CheckpointError(path_prefix + ".json is corrupt: " + e.what());
    }
  }
  return file.tensors;
}

std::string save_checkpoint(const std::string& output_dir, const TrainingProgress& progress, const NamedState& state,
                            const Config& config, const ParallelState& parallel, Communicator& group) {
  const fs::path final_dir = fs::path(output_dir) / step_dir_name(progress.step);
  const fs::path tmp_dir = final_dir.string() + ".tmp";
  if (parallel.rank() == 0) {
    clean_output_dir(output_dir, 0, {});  // what saves killed earlier left
    fs::create_directories(tmp_dir);
  }
  group.barrier();

  // DP replicas hold equal state, so DP rank 0 writes it, but for the
  // distributed optimizer's boxes, which each DP rank holds for itself (those
  // of a tensor replicated over TP: TP rank 0's).
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, ShardSpec> specs;
  for (const auto& [name, entry] : state) {
    const bool box = entry.spec && entry.spec->box();
    if (box ? entry.spec->dim < 0 && parallel.coords().tp != 0 : parallel.coords().dp != 0) continue;
    tensors[name] = entry.tensor;
    if (entry.spec) specs[name] = *entry.spec;
  }
  if (!tensors.empty()) write_named_shard((tmp_dir / shard_name(parallel.coords())).string(), tensors, specs);
  FaultPlan::from_environment().strike(FaultKind::DieInSave, progress.step, parallel.rank());
  group.barrier();

  // Every shard is on disk. meta.json last, then the directory's entries,
  // then the rename and the entry it made in the output directory.
  if (parallel.rank() == 0) {
    nlohmann::json meta = {{"step", progress.step},
                           {"consumed_samples", progress.consumed_samples},
                           {"config", to_json(config)},
                           {"layout", {{"tp", parallel.layout().tp}, {"dp", parallel.layout().dp}, {"pp", parallel.layout().pp}}}};
    write_file_durably(tmp_dir / "meta.json", meta.dump(2) + "\n");
    sync_to_disk(tmp_dir);
    publish(tmp_dir, final_dir);
    sync_to_disk(output_dir);
    clean_output_dir(output_dir, config.log.save_keep, final_dir);
  }
  group.barrier();
  return final_dir.string();
}

int64_t checkpoint_step(const std::string& checkpoint_dir) {
  static const std::regex pattern("checkpoint-(\\d+)");
  std::smatch match;
  const std::string name = fs::path(checkpoint_dir).filename().string();
  if (!std::regex_match(name, match, pattern)) return -1;
  // A stray name with a number no run reaches is not a checkpoint.
  int64_t step = -1;
  const std::string digits = match[1];
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  return error == std::errc() && end == digits.data() + digits.size() && step <= kMaxStep ? step : -1;
}

std::string find_latest_checkpoint(const std::string& output_dir) {
  const auto found = complete_checkpoints(output_dir);
  return found.empty() ? std::string() : found.back().second.string();
}

TrainingProgress load_checkpoint(const std::string& dir, const NamedState& state, const Config& config) {
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  const nlohmann::json meta = read_json_file(meta_path);
  if (!meta.is_object() || !meta.contains("config") || !meta.contains("step"))
    throw CheckpointError(meta_path + " is incomplete");
  TrainingProgress progress;
  try {
    progress.step = json_integer(meta, "step", 0, kMaxStep, meta_path);
    progress.consumed_samples =
        meta.contains("consumed_samples") ? json_integer(meta, "consumed_samples", 0, int64_t{1} << 62, meta_path) : 0;
  } catch (const JsonInputError& e) {
    throw CheckpointError(e.what());
  }
  if (const int64_t named = checkpoint_step(dir); named >= 0 && named != progress.step)
    throw CheckpointError(meta_path + " says step " + std::to_string(progress.step) + " but the directory is step " +
                          std::to_string(named));
  check_compatible(meta.at("config"), config, dir);
  TensorSource source = TensorSource::from_checkpoint(dir);
  if (!source.has("optim/step"))
    throw CheckpointError("checkpoint " + dir + " holds weights only (made by import): start from it with --init-from");
  for (const auto& [name, entry] : state) source.read_into(tensor_name(name), entry.tensor, entry.spec);
  const nlohmann::json layout = meta.value("layout", nlohmann::json::object());
  const auto size = [&](const char* key) {
    return layout.is_object() && layout.contains(key) ? json_excerpt(layout.at(key)) : std::string("1");
  };
  progress.layout = "TP " + size("tp") + " x PP " + size("pp") + " x DP " + size("dp");
  return progress;
}

std::map<std::string, torch::Tensor> load_full_tensors(const std::string& dir, const std::string& file_prefix) {
  TensorSource source = TensorSource::from_checkpoint(dir, file_prefix);
  std::map<std::string, torch::Tensor> full;
  for (const std::string& name : source.names()) {
    if (name.rfind(kOptimPrefix, 0) == 0) continue;
    const bool model = name.rfind(kModelPrefix, 0) == 0;
    full[model ? name.substr(std::strlen(kModelPrefix)) : name] = source.read_full(name);
  }
  return full;
}

}  // namespace minipretrain
