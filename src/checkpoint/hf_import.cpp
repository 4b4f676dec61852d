#include "minipretrain/checkpoint/hf_import.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "minipretrain/checkpoint/hf_export.h"
#include "minipretrain/checkpoint/tensor_source.h"
#include "minipretrain/config/hf_config.h"
#include "minipretrain/config/json_input.h"
#include "minipretrain/distributed/communicator.h"
#include "minipretrain/model/stage.h"

namespace minipretrain {
namespace fs = std::filesystem;
namespace {

constexpr const char* kModelPrefix = "model/";

// The model fields of our config, as JSON, for check_same_model.
nlohmann::json model_json(const ModelConfig& model) {
  Config config;
  config.model = model;
  return to_json(config);
}

}  // namespace

ModelConfig read_hf_config(const std::string& hf_dir) {
  const std::string file = (fs::path(hf_dir) / "config.json").string();
  try {
    return model_config_from_hf(read_json_file(file), file);
  } catch (const JsonInputError& e) {
    throw CheckpointError(e.what());
  }
}

void import_hugging_face(const std::string& hf_dir, const std::string& checkpoint_dir) {
  Config config;
  config.model = read_hf_config(hf_dir);
  try {
    config.resolve(1);
  } catch (const ConfigError& e) {
    throw CheckpointError(hf_dir + "/config.json: " + e.what());
  }
  TensorSource source = TensorSource::from_hugging_face(hf_dir, kModelPrefix);
  // Sizes from config.json against what the files hold, before anything is
  // allocated by them.
  const int64_t described = count_parameters(config.model).total(), held = source.elements();
  if (described != held)
    throw CheckpointError(hf_dir + ": config.json describes " + std::to_string(described) +
                          " parameters but the weight files hold " + std::to_string(held) + " values");
  // The model says which tensors it has and their full shapes; its
  // parameters are allocated but never touched.
  Stage model(config.model, StagePosition{}, TensorParallel{std::make_shared<SoloCommunicator>("tp")});
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, ShardSpec> specs;
  for (const auto& [name, slot] : model->tensors()) {
    const std::string key = kModelPrefix + name;
    torch::Tensor full = torch::empty(slot.spec.full_shape, torch::kFloat);
    source.read_into(key, full, std::nullopt);
    if (!torch::isfinite(full).all().item<bool>())
      throw CheckpointError(hf_dir + ": " + name + " holds NaN or infinite values; refusing to import it");
    tensors[key] = full;
    specs[key] = slot.spec;
  }
  for (const std::string& name : source.names())
    if (!tensors.count(name))
      throw CheckpointError(hf_dir + " holds " + name.substr(std::strlen(kModelPrefix)) +
                            ", which the model config.json describes has not (more layers than num_hidden_layers?)");
  const fs::path final_dir(checkpoint_dir), tmp_dir = checkpoint_dir + ".tmp";
  if (fs::exists(final_dir)) throw CheckpointError(checkpoint_dir + " already exists; import writes a new directory");
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  write_named_shard((tmp_dir / "shard-tp0-pp0").string(), tensors, specs);
  const nlohmann::json meta = {{"step", 0},
                               {"consumed_samples", 0},
                               {"config", to_json(config)},
                               {"layout", {{"tp", 1}, {"dp", 1}, {"pp", 1}}},
                               {"imported_from", fs::absolute(hf_dir).string()}};
  write_file_durably((tmp_dir / "meta.json").string(), meta.dump(2) + "\n");
  fs::rename(tmp_dir, final_dir);
}

void load_weights(const std::string& path, const NamedState& weights, const Config& config) {
  const fs::path dir(path);
  const bool ours = fs::exists(dir / "meta.json");
  if (!ours && !fs::exists(dir / "config.json"))
    throw CheckpointError(path + " is neither a checkpoint (no meta.json) nor a Hugging Face model (no config.json)");
  TensorSource source = ours ? TensorSource::from_checkpoint(path) : TensorSource::from_hugging_face(path, kModelPrefix);
  if (ours)
    check_same_model(model_json(read_checkpoint_config(path).model), config, "checkpoint " + path);
  else
    check_same_model(model_json(read_hf_config(path)), config, "Hugging Face model " + path);
  for (const auto& [name, entry] : weights) source.read_into(name, entry.tensor, entry.spec);
}

}  // namespace minipretrain
