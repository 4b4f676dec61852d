// SentencePiece tokenizers: training a BPE model with BOS and EOS, and using
// any existing SentencePiece .model (Llama 2's included) as it is.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace minipretrain {

class Tokenizer {
 public:
  // Throws ConfigError when the file is missing or not a SentencePiece model.
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();

  // Trains a BPE model of `vocab_size` pieces (unk 0, bos 1, eos 2) on the
  // text files and writes it to `output_model`. Throws ConfigError naming the
  // files when they cannot be read or hold no text.
  static void train(const std::vector<std::string>& inputs, int64_t vocab_size, const std::string& output_model);

  std::vector<int64_t> encode(const std::string& text) const;  // thread-safe
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace minipretrain
