#include "minipretrain/text/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <thread>

#include "minipretrain/config/config.h"
#include "minipretrain/data/progress.h"

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

// SentencePiece tells how far its training is only in its log on stderr: the
// meta pieces it adds, the alphabet's size, then every 20th merged piece
// ("Added: freq=... size=K ..."). While it trains, stderr goes through a pipe
// and a thread turns those lines into progress of the merges, which number
// vocab_size - meta pieces - alphabet; warnings and errors pass through, the
// rest of its log (the options it was given, each phase) does not.
// Without a pipe, training goes on without progress.
class TrainingLog {
 public:
  explicit TrainingLog(int64_t vocab_size) : vocab_size_(vocab_size) {
    int fds[2];
    std::fflush(stderr);
    saved_ = ::dup(STDERR_FILENO);
    if (saved_ < 0 || ::pipe(fds) != 0) return;
    out_ = ::fdopen(::dup(saved_), "w");
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] { read(fd); });
  }

  ~TrainingLog() {
    finish(false);
    if (out_) std::fclose(out_);
    if (saved_ >= 0) ::close(saved_);
  }

  // Gives stderr back, then reports the merges: all of them where training
  // succeeded (the log names only every 20th).
  void finish(bool succeeded) {
    if (finished_) return;
    finished_ = true;
    std::fflush(stderr);
    if (saved_ >= 0) ::dup2(saved_, STDERR_FILENO);  // closes the pipe's last write end: the reader sees its end
    if (reader_.joinable()) reader_.join();
    if (progress_ && (succeeded || merged_ > 0))
      progress_->finish(succeeded ? merges_ : static_cast<double>(merged_));
  }

 private:
  void read(int fd) {
    std::string pending;
    char buffer[4096];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof(buffer))) > 0;) {
      pending.append(buffer, static_cast<size_t>(n));
      for (size_t end; (end = pending.find('\n')) != std::string::npos; pending.erase(0, end + 1))
        line(pending.substr(0, end + 1));
    }
    if (!pending.empty()) line(pending);
    ::close(fd);
  }

  void line(const std::string& text) {
    static const std::regex added(" Added: .* size=([0-9]+) "), alphabet(" Alphabet size=([0-9]+)");
    std::smatch m;
    if (text.find(" LOG(INFO) ") == std::string::npos) {
      if (text.find(" LOG(") != std::string::npos) std::fputs(text.c_str(), out_);  // warnings and errors
    } else if (text.find(" Adding meta_piece: ") != std::string::npos) {
      ++meta_pieces_;
    } else if (std::regex_search(text, m, alphabet)) {
      merges_ = static_cast<double>(std::max<int64_t>(vocab_size_ - meta_pieces_ - std::stoll(m[1]), 0));
    } else if (!progress_ && text.find(" Updating active symbols") != std::string::npos) {
      progress_.emplace("tokenizer: merged", merges_, "pieces", true, 10, out_);  // the merges begin: the clock starts
    } else if (progress_ && std::regex_search(text, m, added)) {
      merged_ = std::stoll(m[1]);
      progress_->update(static_cast<double>(merged_));
    }
  }

  int64_t vocab_size_;
  int saved_ = -1;
  std::FILE* out_ = nullptr;
  std::thread reader_;
  bool finished_ = false;
  int64_t meta_pieces_ = 0, merged_ = 0;
  double merges_ = 0;  // vocab_size - meta pieces - alphabet, once the alphabet is known
  std::optional<Progress> progress_;
};

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
                           " --byte_fallback=true --minloglevel=0 --num_threads=" +
                           std::to_string(std::max(1u, std::thread::hardware_concurrency()));
  uint64_t bytes = 0;
  for (const auto& f : inputs) {
    std::error_code ec;
    bytes += fs::file_size(f, ec);
  }
  std::fprintf(stderr, "tokenizer: training a BPE vocabulary of %lld on %.1f MB of text...\n",
               static_cast<long long>(vocab_size), bytes / 1e6);
  const auto start = std::chrono::steady_clock::now();
  TrainingLog log(vocab_size);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  log.finish(status.ok());
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
