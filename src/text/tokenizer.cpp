#include "minipretrain/text/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "minipretrain/config/config.h"

namespace minipretrain {

Tokenizer::Tokenizer(const std::string& model_path)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const auto status = processor_->Load(model_path);
  if (!status.ok()) throw ConfigError("cannot load tokenizer '" + model_path + "': " + status.ToString());
}

Tokenizer::~Tokenizer() = default;

void Tokenizer::train(const std::vector<std::string>& inputs, int64_t vocab_size, const std::string& output_model) {
  if (inputs.empty()) throw ConfigError("tokenizer: no --input file");
  std::string files;
  for (const auto& f : inputs) {
    if (!std::ifstream(f)) throw ConfigError("tokenizer: cannot read input '" + f + "'");
    files += (files.empty() ? "" : ",") + f;
  }
  std::string prefix = output_model;
  if (prefix.size() > 6 && prefix.compare(prefix.size() - 6, 6, ".model") == 0) prefix.resize(prefix.size() - 6);
  const std::string args = "--input=" + files + " --model_prefix=" + prefix + " --vocab_size=" +
                           std::to_string(vocab_size) +
                           " --model_type=bpe --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --character_coverage=1.0"
                           // As Llama's: no normalization, so text (newlines too) decodes as it was.
                           " --normalization_rule_name=identity --remove_extra_whitespaces=false"
                           " --byte_fallback=true --minloglevel=1 --num_threads=" +
                           std::to_string(std::max(1u, std::thread::hardware_concurrency()));
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) throw ConfigError("tokenizer training failed: " + status.ToString());
  if (prefix + ".model" != output_model) std::filesystem::rename(prefix + ".model", output_model);
}

std::vector<int64_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  processor_->Encode(text, &ids);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  processor_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  return text;
}

int64_t Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }
int64_t Tokenizer::bos_id() const { return processor_->bos_id(); }
int64_t Tokenizer::eos_id() const { return processor_->eos_id(); }

}  // namespace minipretrain
