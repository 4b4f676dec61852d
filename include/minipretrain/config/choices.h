// The configuration's multiple-choice fields as enums, each with one table of
// names: parsing, JSON, --help, logs and the planner all go through it.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace minipretrain {

enum class DeviceChoice { Auto, Cpu, Cuda };
// Auto: bf16 where the hardware computes it natively (train/main_params.h).
enum class Precision { Auto, Fp32, Bf16 };
// Full: each decoder layer recomputed in backward.
enum class Recompute { None, Full };
enum class PipelineSchedule { GPipe, OneFOneB, Interleaved1F1B, ZeroBubbleH1 };

// Every value of `Choice` with its name, in the order --help lists them.
template <typename Choice>
const std::vector<std::pair<Choice, std::string>>& choice_table();

template <typename Choice>
const std::string& name_of(Choice value) {
  for (const auto& [v, name] : choice_table<Choice>())
    if (v == value) return name;
  static const std::string unknown = "?";
  return unknown;
}

// "a, b or c": the choices for an error message.
template <typename Choice>
std::string choice_list() {
  const auto& table = choice_table<Choice>();
  std::string out;
  for (size_t i = 0; i < table.size(); ++i)
    out += (i == 0 ? "" : i + 1 == table.size() ? " or " : ", ") + table[i].second;
  return out;
}

// The value named `text`; ConfigError "<key> must be a, b or c, got 'text'".
template <typename Choice>
Choice parse_choice(const std::string& key, const std::string& text);

}  // namespace minipretrain
