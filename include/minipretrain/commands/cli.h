// The command line. Without a subcommand, minipretrain trains: every config
// field is a flag (config/fields.h), plus --config FILE.json (flags given on
// the command line win over the file) and --print-config. Subcommands:
//   generate    sample text from a checkpoint
//   export      checkpoint -> Hugging Face Llama directory
//   import      Hugging Face Llama directory -> checkpoint
//   plan        every valid layout of the config for a cluster: memory, traffic, speed
//   tokenizer   train a SentencePiece tokenizer
//   preprocess  text or JSON Lines -> Megatron indexed dataset
// `minipretrain --help` lists them all, one line each, and every
// `minipretrain SUBCOMMAND --help` describes its options.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "minipretrain/config/config.h"
#include "minipretrain/text/preprocess.h"

namespace minipretrain {

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

// The cluster to plan for; the config (file and flags) gives the model and
// the global batch. Memory and bandwidth are text ("80GB", "450GB/s"),
// parsed by commands/plan.h.
struct PlanCommand {
  int64_t world_size = 0;
  int64_t gpus_per_node = 8;
  std::string device_memory = "80GB";
  double flops = 400e12;
  std::string intra_node_bw = "450GB/s";
  std::string inter_node_bw = "50GB/s";
  int64_t top = 10;
  bool json = false;
};

struct TokenizerCommand {
  std::vector<std::string> inputs;
  int64_t vocab_size = 32000;
  std::string output = "tokenizer.model";
};

struct CommandLine {
  std::string command = "train";  // or the subcommand's name
  Config config;
  bool print_config = false;
  GenerateCommand generate;
  ExportCommand export_model;
  ImportCommand import_model;
  PlanCommand plan;
  TokenizerCommand tokenizer;
  PreprocessOptions preprocess;
};

// nullopt when --help was asked for (the help is printed). Throws ConfigError
// for an unknown flag, a bad value or an unreadable config file.
std::optional<CommandLine> parse_command_line(int argc, const char* const* argv);

}  // namespace minipretrain
