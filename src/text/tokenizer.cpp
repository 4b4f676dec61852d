#include "minipretrain/text/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "minipretrain/config/config.h"

namespace minipretrain {
namespace fs = std::filesystem;
namespace {

// Whether the file holds a line with something besides whitespace: what
// SentencePiece needs to find at least one sentence.
bool has_text(const std::string& path) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r\f\v") != std::string::npos) return true;
  return false;
}

// 'a', 'b' and 'c'
std::string quoted_list(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + ("'" + names[i] + "'");
  return out;
}

}  // namespace

Tokenizer::Tokenizer(const std::string& model_path)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  // SentencePiece's own messages name its source lines, not the problem.
  const std::string cannot = "cannot load tokenizer '" + model_path + "': ";
  std::error_code ec;
  if (!fs::exists(model_path, ec)) throw ConfigError(cannot + "no such file");
  if (fs::is_directory(model_path, ec))
    throw ConfigError(cannot + "it is a directory, not a SentencePiece .model file");
  const auto status = processor_->Load(model_path);
  using sentencepiece::util::StatusCode;
  if (status.code() == StatusCode::kNotFound || status.code() == StatusCode::kPermissionDenied)
    throw ConfigError(cannot + "cannot read the file (" + status.message() + ")");
  if (!status.ok() || processor_->GetPieceSize() == 0)
    throw ConfigError(cannot + "not a SentencePiece model file (such as `minipretrain tokenizer` writes)");
}

Tokenizer::~Tokenizer() = default;

void Tokenizer::train(const std::vector<std::string>& inputs, int64_t vocab_size, const std::string& output_model) {
  if (inputs.empty()) throw ConfigError("tokenizer: no --input file");
  std::string files;
  for (const auto& f : inputs) {
    std::error_code ec;
    if (fs::is_directory(f, ec)) throw ConfigError("tokenizer: input '" + f + "' is a directory, not a text file");
    if (!std::ifstream(f)) throw ConfigError("tokenizer: cannot read input '" + f + "'");
    files += (files.empty() ? "" : ",") + f;
  }
  const std::string named = quoted_list(inputs) + (inputs.size() == 1 ? " holds" : " hold");
  if (std::none_of(inputs.begin(), inputs.end(), has_text))
    throw ConfigError("tokenizer: the input has no text: " + named + " only empty or blank lines");
  std::string prefix = output_model;
  if (prefix.size() > 6 && prefix.compare(prefix.size() - 6, 6, ".model") == 0) prefix.resize(prefix.size() - 6);
  const std::string args = "--input=" + files + " --model_prefix=" + prefix + " --vocab_size=" +
                           std::to_string(vocab_size) +
                           " --model_type=bpe --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --character_coverage=1.0"
                           // As Llama's: no normalization, so text (newlines too) decodes as it was.
                           " --normalization_rule_name=identity --remove_extra_whitespaces=false"
                           " --byte_fallback=true --minloglevel=1 --num_threads=" +
                           std::to_string(std::max(1u, std::thread::hardware_concurrency()));
  // SentencePiece reports no progress we could turn into an ETA: say what it
  // is doing and, after, how long it took.
  uint64_t bytes = 0;
  for (const auto& f : inputs) {
    std::error_code ec;
    bytes += fs::file_size(f, ec);
  }
  std::fprintf(stderr, "tokenizer: training a BPE vocabulary of %lld on %.1f MB of text...\n",
               static_cast<long long>(vocab_size), bytes / 1e6);
  const auto start = std::chrono::steady_clock::now();
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (status.ok())
    std::fprintf(stderr, "tokenizer: trained in %.1f s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  // SentencePiece also skips the lines longer than its max_sentence_length.
  if (!status.ok() && std::string(status.message()).find("sentences_.empty()") != std::string::npos)
    throw ConfigError("tokenizer: the input has no usable text: " + named +
                      " no line of text of at most 4192 bytes (SentencePiece skips longer lines)");
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
