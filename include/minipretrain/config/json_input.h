// JSON this process did not write (configs, checkpoints' indexes and
// meta.json, Hugging Face files, safetensors headers), read so that a hostile
// file gets one line naming it and the field: nesting is capped (the library
// prints and frees values recursively), integers must be whole and in range,
// and values quoted in messages are cut short.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace minipretrain {

struct JsonInputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Deeper than any file we read needs.
constexpr int kMaxJsonDepth = 32;

// `text` parsed; `where` names it in errors ("config file 'x.json'").
nlohmann::json parse_json(std::string_view text, const std::string& where);
// The file at `path`, at most `max_bytes` long.
nlohmann::json read_json(const std::string& path, uint64_t max_bytes = uint64_t{64} << 20);

// object[key] as an integer in [min, max]: not a fraction, not a string, not
// a number past int64 (2^64-1 read as -1).
int64_t json_integer(const nlohmann::json& object, const std::string& key, int64_t min, int64_t max,
                     const std::string& where);

// `value` as JSON for a message, cut to about 60 characters.
std::string json_excerpt(const nlohmann::json& value);

}  // namespace minipretrain
