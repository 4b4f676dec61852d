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

// A whole number that fits int64 (the library reads 2^64-1 as -1).
bool is_int64(const nlohmann::json& value);

// `value`, named `name` in errors, as an integer in [min, max]: not a
// fraction, not a string, not a number past int64.
int64_t whole_number(const nlohmann::json& value, const std::string& name, int64_t min, int64_t max,
                     const std::string& where);
// object[key] as whole_number does.
int64_t json_integer(const nlohmann::json& object, const std::string& key, int64_t min, int64_t max,
                     const std::string& where);

// `value` as JSON for a message, cut to about 60 characters.
std::string json_excerpt(const nlohmann::json& value);

}  // namespace minipretrain
