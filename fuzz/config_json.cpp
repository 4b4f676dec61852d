// libFuzzer harness: a --config file (JSON) as the trainer reads it. Errors
// of the input are ConfigError or JsonInputError; anything else escaping,
// a crash or a sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "minipretrain/config/config.h"
#include "minipretrain/config/json_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minipretrain;
  try {
    const nlohmann::json json = parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
    Config config;
    apply_json(config, json, "fuzz.json");
    config.resolve(8);
  } catch (const ConfigError&) {
  } catch (const JsonInputError&) {
  }
  return 0;
}
