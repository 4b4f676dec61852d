// minipretrain: the command line, a table of commands, and exit codes: 0 done
// (or stopped with a checkpoint), 2 bad configuration or layout, 3 training
// diverged, 1 any other failure (data, checkpoint, a peer process that died).
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include <spdlog/spdlog.h>

#include "minipretrain/commands/cli.h"
#include "minipretrain/commands/commands.h"
#include "minipretrain/commands/plan.h"
#include "minipretrain/commands/text_commands.h"
#include "minipretrain/commands/train.h"

using namespace minipretrain;

namespace {

struct Command {
  const char* name;
  std::function<void(const CommandLine&)> run;
};

const Command kCommands[] = {
    {"train", [](const CommandLine& c) { run_train(c.config, c.print_config); }},
    {"plan", [](const CommandLine& c) { run_plan(c.plan, c.config); }},
    {"generate", [](const CommandLine& c) { run_generate(c.generate); }},
    {"export", [](const CommandLine& c) { run_export(c.export_model); }},
    {"import", [](const CommandLine& c) { run_import(c.import_model); }},
    {"tokenizer", [](const CommandLine& c) { run_tokenizer(c.tokenizer); }},
    {"preprocess", [](const CommandLine& c) { run_preprocess(c.preprocess); }},
};

// Ends the process without destructors: a process group whose peer died can
// block in them. Exceptions from c10d carry a backtrace over many lines: the
// first is enough.
[[noreturn]] void exit_now(int code, const std::string& error = "") {
  if (!error.empty()) spdlog::error("{}", error.substr(0, error.find('\n')));
  spdlog::shutdown();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto command_line = parse_command_line(argc, argv);
    if (!command_line) return 0;  // --help
    for (const Command& command : kCommands)
      if (command_line->command == command.name) command.run(*command_line);
    exit_now(0);
  } catch (const ConfigError& e) {
    exit_now(2, e.what());
  } catch (const DivergedError& e) {
    exit_now(3, e.what());
  } catch (const c10::Error& e) {
    exit_now(1, e.what_without_backtrace());
  } catch (const std::exception& e) {
    exit_now(1, e.what());
  }
}
