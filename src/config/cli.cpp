#include "minipretrain/config/cli.h"

#include <iostream>
#include <map>

#include <CLI/CLI.hpp>

#include "minipretrain/config/fields.h"

namespace minipretrain {

std::optional<CommandLine> parse_command_line(int argc, const char* const* argv) {
  CLI::App app{"minipretrain: pretrain a Llama-style model with data, tensor and pipeline parallelism", "minipretrain"};
  std::string config_path;
  CommandLine result;
  app.add_option("--config", config_path, "JSON file of settings; flags given here override it");
  app.add_flag("--print-config", result.print_config,
               "print the resolved configuration and the parameter counts, then exit");

  // Flags are read as text first, so that they can be applied after the file.
  Config defaults;
  std::vector<Field> fields = config_fields(defaults);
  std::map<std::string, std::string> given;
  for (const Field& f : fields) {
    const nlohmann::json value = f.get();
    const std::string shown = value.is_null() ? "" : (value.is_string() ? value.get<std::string>() : value.dump());
    // The last occurrence wins, so a launcher's flags can be overridden after it.
    app.add_option(f.flag(), given[f.key], f.help + (shown.empty() ? "" : " [default: " + shown + "]"))
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    throw ConfigError(e.what());
  }

  result.config = config_path.empty() ? Config{} : load_config_file(config_path);
  std::vector<Field> targets = config_fields(result.config);
  for (Field& f : targets)
    if (app.count(f.flag()) > 0) f.parse(given[f.key]);
  return result;
}

}  // namespace minipretrain
