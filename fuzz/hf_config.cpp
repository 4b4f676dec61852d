// libFuzzer harness: a Hugging Face config.json as `import` and --init-from
// read it, then the config validation the import applies. Errors of the input
// are JsonInputError or ConfigError; anything else escaping, a crash or a
// sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "minipretrain/config/hf_config.h"
#include "minipretrain/config/json_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minipretrain;
  try {
    const nlohmann::json json = parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "config.json");
    Config config;
    config.model = model_config_from_hf(json, "config.json");
    config.resolve(1);
  } catch (const ConfigError&) {
  } catch (const JsonInputError&) {
  }
  return 0;
}
