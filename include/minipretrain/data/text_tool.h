// The tokenizer as seen from minipretrain: every call runs the torch-free
// `minipretrain-text` program (text/tokenizer.h says why), found beside this
// binary or where the build put it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minipretrain {

// The path of minipretrain-text.
std::string text_tool_path();

// Runs minipretrain-text with `args`, `input` on its stdin; returns its
// stdout. Throws ConfigError with its error line when it fails.
std::string run_text_tool(const std::vector<std::string>& args, const std::string& input = "");

class ExternalTokenizer {
 public:
  explicit ExternalTokenizer(std::string model_path);  // reads vocab size, BOS and EOS
  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const { return vocab_size_; }
  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }

 private:
  std::string model_;
  int64_t vocab_size_ = 0, bos_id_ = -1, eos_id_ = -1;
};

}  // namespace minipretrain
