#include "minipretrain/config/json_input.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace minipretrain {

nlohmann::json parse_json(std::string_view text, const std::string& where) {
  const auto depth_cap = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth)
      throw JsonInputError(where + " nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), depth_cap);
  } catch (const nlohmann::json::exception& e) {
    throw JsonInputError(where + " is not valid JSON: " + e.what());
  }
}

nlohmann::json read_json(const std::string& path, uint64_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw JsonInputError("cannot read " + path + " (not a file)");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw JsonInputError("cannot read " + path + ": " + ec.message());
  if (size > max_bytes)
    throw JsonInputError(path + " is " + std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) +
                         " a JSON file here may have");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (!(in && text << in.rdbuf()) && size > 0) throw JsonInputError("cannot read " + path);
  return parse_json(text.str(), path);
}

bool is_int64(const nlohmann::json& value) {
  return value.is_number_integer() &&
         !(value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX));
}

int64_t whole_number(const nlohmann::json& value, const std::string& name, int64_t min, int64_t max,
                     const std::string& where) {
  if (!is_int64(value)) throw JsonInputError(where + ": " + name + " must be a whole number, got " + json_excerpt(value));
  const int64_t n = value.get<int64_t>();
  if (n < min || n > max)
    throw JsonInputError(where + ": " + name + " " + std::to_string(n) + " is outside " + std::to_string(min) + ".." +
                         std::to_string(max));
  return n;
}

int64_t json_integer(const nlohmann::json& object, const std::string& key, int64_t min, int64_t max,
                     const std::string& where) {
  if (!object.is_object() || !object.contains(key)) throw JsonInputError(where + ": no " + key);
  return whole_number(object.at(key), key, min, max, where);
}

std::string json_excerpt(const nlohmann::json& value) {
  constexpr size_t kShown = 60;
  const std::string text = value.dump();
  return text.size() <= kShown ? text : text.substr(0, kShown) + "... (" + std::to_string(text.size()) + " characters)";
}

}  // namespace minipretrain
