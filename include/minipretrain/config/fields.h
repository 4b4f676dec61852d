// One table of every configurable field, shared by the JSON reader, the JSON
// writer and the command line, so a field is named in exactly one place.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "minipretrain/config/config.h"

namespace minipretrain {

struct Field {
  std::string key;   // JSON key; the flag is "--" + key with '_' -> '-'
  std::string help;
  std::function<nlohmann::json()> get;            // null when unset
  std::function<void(const nlohmann::json&)> set;  // throws ConfigError on a wrong type
  std::function<void(const std::string&)> parse;   // from command-line text
  bool list = false;  // a list of strings: several words after the flag, set() with an array
  bool on_off = false;  // a bare flag on the command line, true or false in JSON
  std::string type_name;  // the value as --help shows it: INT, FLOAT, TEXT, PATH or {choice,...}

  std::string flag() const;
};

// The fields of `config`, bound to its members (valid while `config` lives).
std::vector<Field> config_fields(Config& config);

}  // namespace minipretrain
