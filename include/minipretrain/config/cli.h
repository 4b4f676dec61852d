// The command line: every config field as a flag (config/fields.h), plus
// --config FILE.json (flags given on the command line win over the file) and
// --print-config (show the resolved configuration and parameter counts, then
// exit without training).
#pragma once

#include <optional>

#include "minipretrain/config/config.h"

namespace minipretrain {

struct CommandLine {
  Config config;
  bool print_config = false;
};

// nullopt when --help was asked for (the help is printed). Throws ConfigError
// for an unknown flag, a bad value or an unreadable config file.
std::optional<CommandLine> parse_command_line(int argc, const char* const* argv);

}  // namespace minipretrain
