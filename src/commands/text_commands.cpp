#include "minipretrain/commands/text_commands.h"

#include <algorithm>
#include <cstdio>

#include "minipretrain/text/tokenizer.h"

namespace minipretrain {

void run_tokenizer(const TokenizerCommand& c) {
  Tokenizer::train(c.inputs, c.vocab_size, c.output);
  std::printf("wrote %s (%lld pieces)\n", c.output.c_str(), static_cast<long long>(Tokenizer(c.output).vocab_size()));
}

void run_preprocess(const PreprocessOptions& options) {
  const PreprocessStats s = preprocess(options);
  std::printf("wrote %s.bin / .idx: %lld documents, %lld tokens in %.2f s (%.0f tokens/s)\n",
              options.output_prefix.c_str(), static_cast<long long>(s.documents), static_cast<long long>(s.tokens),
              s.seconds, s.tokens / std::max(s.seconds, 1e-9));
}

}  // namespace minipretrain
