// Text to Megatron indexed dataset: reads plain text (one document per line,
// or documents separated by blank lines) and JSON Lines (one object per line,
// its text under `json_key`), tokenizes with `workers` threads, appends EOS to
// each document and writes PREFIX.bin / PREFIX.idx (see indexed_dataset.h).
// Errors name the file and line; nothing is left under the final names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minipretrain {

struct PreprocessOptions {
  std::vector<std::string> inputs;  // *.jsonl / *.json are JSON Lines, anything else text
  std::string tokenizer;
  std::string output_prefix;
  std::string json_key = "text";
  bool blank_line_documents = false;  // text: blank lines separate documents
  int workers = 0;                    // 0: every core
  bool progress = true;               // a progress line on stderr
};

struct PreprocessStats {
  int64_t documents = 0;
  int64_t tokens = 0;
  double seconds = 0;
};

PreprocessStats preprocess(const PreprocessOptions& options);

// Whether `text` is well-formed UTF-8.
bool is_valid_utf8(const std::string& text);

}  // namespace minipretrain
