// The command line. Without a subcommand, minipretrain trains: every config
// field is a flag (config/fields.h), plus --config FILE.json (flags given on
// the command line win over the file) and --print-config. Subcommands:
//   generate    sample text from a checkpoint
//   export      checkpoint -> Hugging Face Llama directory
//   import      Hugging Face Llama directory -> checkpoint
//   tokenizer, preprocess: run by minipretrain-text (kTextToolCommands)
// `minipretrain --help` lists them all, one line each, and every
// `minipretrain SUBCOMMAND --help` describes its options.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "minipretrain/config/config.h"

namespace minipretrain {

// The subcommands that the torch-free minipretrain-text runs (text/tokenizer.h
// says why it is a program of its own). Given one as its first argument,
// minipretrain hands the whole command line over to it; its --help lists them
// with the others. Both programs take the descriptions from here.
struct TextToolCommand {
  const char* name;
  const char* description;
};
inline constexpr TextToolCommand kTextToolCommands[] = {
    {"tokenizer", "train a SentencePiece BPE tokenizer (unk 0, bos 1, eos 2)"},
    {"preprocess", "text or JSON Lines -> Megatron indexed dataset"},
};

// Whether `name` is one of kTextToolCommands.
inline bool is_text_tool_command(std::string_view name) {
  for (const TextToolCommand& c : kTextToolCommands)
    if (name == c.name) return true;
  return false;
}

struct GenerateCommand {
  std::string checkpoint;  // a checkpoint, or an output dir (its newest checkpoint)
  std::string tokenizer;
  std::string prompt;
  int64_t max_new_tokens = 64;
  double temperature = 0.8;
  int64_t top_k = 50;
  int64_t seed = 0;
};

struct ExportCommand {
  std::string checkpoint;
  std::string output;
  std::string tokenizer;
};

struct ImportCommand {
  std::string hf_dir;
  std::string output;
};

struct CommandLine {
  std::string command = "train";  // or the subcommand's name
  Config config;
  bool print_config = false;
  GenerateCommand generate;
  ExportCommand export_model;
  ImportCommand import_model;
};

// nullopt when --help was asked for (the help is printed). Throws ConfigError
// for an unknown flag, a bad value or an unreadable config file.
std::optional<CommandLine> parse_command_line(int argc, const char* const* argv);

}  // namespace minipretrain
