// `minipretrain tokenizer` and `minipretrain preprocess`: the text's way into
// training (text/tokenizer.h, text/preprocess.h), each reporting what it
// wrote on stdout. Bad input throws ConfigError.
#pragma once

#include "minipretrain/commands/cli.h"

namespace minipretrain {

void run_tokenizer(const TokenizerCommand& command);
void run_preprocess(const PreprocessOptions& options);

}  // namespace minipretrain
