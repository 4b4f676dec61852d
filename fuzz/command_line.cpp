// libFuzzer harness: a command line as main() parses it, then the validation
// a run applies. The input is argv after the program's name, one argument
// per line. Errors of the input are ConfigError (JsonInputError from a
// --config file); anything else escaping, a crash or a sanitizer report is a
// finding. --help prints and returns, as it does for a user.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "minipretrain/commands/cli.h"
#include "minipretrain/config/json_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minipretrain;
  std::vector<std::string> arguments{"minipretrain"};
  std::string argument;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] != '\n') {
      argument += static_cast<char>(data[i]);
      continue;
    }
    arguments.push_back(argument);
    argument.clear();
  }
  if (!argument.empty()) arguments.push_back(argument);
  std::vector<const char*> argv;
  for (const std::string& a : arguments) argv.push_back(a.c_str());
  try {
    auto command_line = parse_command_line(static_cast<int>(argv.size()), argv.data());
    if (command_line && command_line->command == "train") command_line->config.resolve(8);
  } catch (const ConfigError&) {
  } catch (const JsonInputError&) {
  }
  return 0;
}
