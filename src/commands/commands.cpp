#include "minipretrain/commands/commands.h"

#include <cstdio>
#include <filesystem>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/hf_export.h"
#include "minipretrain/checkpoint/hf_import.h"
#include "minipretrain/distributed/communicator.h"
#include "minipretrain/model/generate.h"
#include "minipretrain/text/tokenizer.h"

namespace minipretrain {
namespace {

// A checkpoint directory, or an output directory standing for its newest one.
std::string checkpoint_dir(const std::string& path) {
  if (std::filesystem::exists(std::filesystem::path(path) / "meta.json")) return path;
  const std::string latest = find_latest_checkpoint(path);
  if (latest.empty()) throw ConfigError("no checkpoint at or under '" + path + "'");
  return latest;
}

}  // namespace

void run_generate(const GenerateCommand& c) {
  const Tokenizer tokenizer(c.tokenizer);
  ModelConfig model_config;
  Stage model = load_for_inference(checkpoint_dir(c.checkpoint), &model_config);
  // Preprocessing ends every document with EOS, so a document begins after one.
  std::vector<int64_t> prompt = tokenizer.encode(c.prompt);
  prompt.insert(prompt.begin(), tokenizer.eos_id());
  SamplingOptions options;
  options.max_new_tokens = c.max_new_tokens;
  options.temperature = c.temperature;
  options.top_k = c.top_k;
  options.seed = c.seed;
  options.stop_token = tokenizer.eos_id();
  std::vector<int64_t> tokens(prompt.begin() + 1, prompt.end());
  for (int64_t t : generate(model, model_config, prompt, options))
    if (t != tokenizer.eos_id()) tokens.push_back(t);
  std::printf("%s\n", tokenizer.decode(tokens).c_str());
}

void run_export(const ExportCommand& c) {
  const std::string dir = checkpoint_dir(c.checkpoint);
  HfExportOptions options;
  options.tokenizer_model = c.tokenizer;
  options.progress = true;
  if (!c.tokenizer.empty()) {
    const Tokenizer tokenizer(c.tokenizer);
    options.bos_token_id = tokenizer.bos_id();
    options.eos_token_id = tokenizer.eos_id();
  }
  export_hugging_face(dir, c.output, options);
  std::printf("exported %s to %s\n", dir.c_str(), c.output.c_str());
}

void run_import(const ImportCommand& c) {
  import_hugging_face(c.hf_dir, c.output);
  std::printf("imported %s to %s (weights only: train from it with --init-from %s)\n", c.hf_dir.c_str(),
              c.output.c_str(), c.output.c_str());
}

Stage load_for_inference(const std::string& checkpoint_dir, ModelConfig* config_out) {
  const ModelConfig config = read_checkpoint_config(checkpoint_dir).model;
  const std::map<std::string, torch::Tensor> tensors = load_model_tensors(checkpoint_dir, config);
  Stage model(config, StagePosition{}, TensorParallel{std::make_shared<SoloCommunicator>("tp")});
  torch::NoGradGuard no_grad;
  // With TP = 1 every slot is a full tensor, whose shape load_model_tensors
  // has checked.
  const auto parameters = model->named_parameters();
  for (const auto& [name, slot] : model->tensors()) slot.of(parameters[slot.parameter]).copy_(tensors.at(name));
  if (config_out) *config_out = config;
  return model;
}

}  // namespace minipretrain
