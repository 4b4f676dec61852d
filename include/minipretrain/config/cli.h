// The command line. Without a subcommand, minipretrain trains: every config
// field is a flag (config/fields.h), plus --config FILE.json (flags given on
// the command line win over the file) and --print-config. Subcommand:
//   export      checkpoint -> Hugging Face Llama directory
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "minipretrain/config/config.h"

namespace minipretrain {

struct ExportCommand {
  std::string checkpoint;
  std::string output;
  std::string tokenizer;
};

struct CommandLine {
  std::string command = "train";  // or the subcommand's name
  Config config;
  bool print_config = false;
  ExportCommand export_model;
};

// nullopt when --help was asked for (the help is printed). Throws ConfigError
// for an unknown flag, a bad value or an unreadable config file.
std::optional<CommandLine> parse_command_line(int argc, const char* const* argv);

}  // namespace minipretrain
