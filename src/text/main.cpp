// minipretrain-text: the tokenizer work, in a program of its own that links
// SentencePiece and not LibTorch (see text/tokenizer.h). `minipretrain
// tokenizer|preprocess ...` runs it; `minipretrain generate` and `export` ask
// it to encode, decode and describe a tokenizer. Exit codes: 0 done, 2 bad
// input, 1 anything else.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "minipretrain/config/cli.h"
#include "minipretrain/config/config.h"
#include "minipretrain/text/preprocess.h"
#include "minipretrain/text/tokenizer.h"

using namespace minipretrain;

namespace {

std::string read_stdin() { return std::string(std::istreambuf_iterator<char>(std::cin), {}); }

// The description that `minipretrain --help` shows as well (config/cli.h).
std::string description(std::string_view command) {
  for (const TextToolCommand& c : kTextToolCommands)
    if (command == c.name) return c.description;
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  // Named as it was called: `minipretrain tokenizer --help` shows the usage
  // of `minipretrain tokenizer`, which hands its command line over to us.
  std::string name = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "";
  if (name.empty()) name = "minipretrain-text";
  CLI::App app{"minipretrain-text: SentencePiece tokenizers and Megatron-format preprocessing", name};
  app.require_subcommand(1);

  std::vector<std::string> inputs;
  int64_t vocab_size = 32000;
  std::string output = "tokenizer.model", model;
  CLI::App* train = app.add_subcommand("tokenizer", description("tokenizer"));
  train->add_option("--input", inputs, "text files")->required()->expected(1, -1)->type_name("PATH");
  train->add_option("--vocab-size", vocab_size, "pieces")->capture_default_str();
  train->add_option("--output", output, "the .model file to write")->capture_default_str()->type_name("PATH");

  PreprocessOptions pre;
  CLI::App* preprocess_cmd = app.add_subcommand("preprocess", description("preprocess"));
  preprocess_cmd->add_option("--tokenizer", pre.tokenizer, "SentencePiece .model")->required()->type_name("PATH");
  preprocess_cmd->add_option("--input", pre.inputs, "text files (a document per line) or .jsonl files")
      ->required()->expected(1, -1)->type_name("PATH");
  preprocess_cmd->add_option("--output-prefix", pre.output_prefix, "writes PREFIX.bin and PREFIX.idx")
      ->required()->type_name("PREFIX");
  preprocess_cmd->add_option("--json-key", pre.json_key, "the text's key in JSON Lines")->capture_default_str();
  preprocess_cmd->add_flag("--blank-line-documents", pre.blank_line_documents,
                           "text: documents are separated by blank lines");
  preprocess_cmd->add_option("--workers", pre.workers, "tokenizer threads (0: every core)")->capture_default_str();
  bool quiet = false;
  preprocess_cmd->add_flag("--no-progress", quiet, "no progress line");

  CLI::App* encode = app.add_subcommand("encode", "stdin text -> token ids on stdout");
  CLI::App* decode = app.add_subcommand("decode", "token ids on stdin -> text on stdout");
  CLI::App* info = app.add_subcommand("info", "vocab_size, bos_id and eos_id as JSON");
  for (CLI::App* sub : {encode, decode, info})
    sub->add_option("--tokenizer", model, "SentencePiece .model")->required()->type_name("PATH");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*train) {
      Tokenizer::train(inputs, vocab_size, output);
      std::printf("wrote %s (%lld pieces)\n", output.c_str(), static_cast<long long>(Tokenizer(output).vocab_size()));
    } else if (*preprocess_cmd) {
      pre.progress = !quiet;
      const PreprocessStats s = preprocess(pre);
      std::printf("wrote %s.bin / .idx: %lld documents, %lld tokens in %.2f s (%.0f tokens/s)\n",
                  pre.output_prefix.c_str(), static_cast<long long>(s.documents), static_cast<long long>(s.tokens),
                  s.seconds, s.tokens / std::max(s.seconds, 1e-9));
    } else if (*encode) {
      for (int64_t id : Tokenizer(model).encode(read_stdin())) std::printf("%lld ", static_cast<long long>(id));
      std::printf("\n");
    } else if (*decode) {
      std::istringstream in(read_stdin());
      std::vector<int64_t> ids{std::istream_iterator<int64_t>(in), {}};
      std::fputs(Tokenizer(model).decode(ids).c_str(), stdout);
    } else if (*info) {
      const Tokenizer t(model);
      std::printf("%s\n", nlohmann::json{{"vocab_size", t.vocab_size()}, {"bos_id", t.bos_id()}, {"eos_id", t.eos_id()}}
                              .dump().c_str());
    }
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
