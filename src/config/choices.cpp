#include "minipretrain/config/choices.h"

#include "minipretrain/config/config.h"

namespace minipretrain {

template <>
const std::vector<std::pair<DeviceChoice, std::string>>& choice_table() {
  static const std::vector<std::pair<DeviceChoice, std::string>> table{
      {DeviceChoice::Auto, "auto"}, {DeviceChoice::Cpu, "cpu"}, {DeviceChoice::Cuda, "cuda"}};
  return table;
}

template <>
const std::vector<std::pair<Precision, std::string>>& choice_table() {
  static const std::vector<std::pair<Precision, std::string>> table{
      {Precision::Auto, "auto"}, {Precision::Fp32, "fp32"}, {Precision::Bf16, "bf16"}};
  return table;
}

template <>
const std::vector<std::pair<Recompute, std::string>>& choice_table() {
  static const std::vector<std::pair<Recompute, std::string>> table{{Recompute::None, "none"},
                                                                     {Recompute::Full, "full"}};
  return table;
}

template <>
const std::vector<std::pair<PipelineSchedule, std::string>>& choice_table() {
  static const std::vector<std::pair<PipelineSchedule, std::string>> table{
      {PipelineSchedule::GPipe, "gpipe"},
      {PipelineSchedule::OneFOneB, "1f1b"},
      {PipelineSchedule::Interleaved1F1B, "interleaved-1f1b"},
      {PipelineSchedule::ZeroBubbleH1, "zb-h1"}};
  return table;
}

template <typename Choice>
Choice parse_choice(const std::string& key, const std::string& text) {
  for (const auto& [value, name] : choice_table<Choice>())
    if (name == text) return value;
  const std::string shown = text.size() <= 60 ? text : text.substr(0, 60) + "...";  // a huge value is not echoed
  throw ConfigError(key + " must be " + choice_list<Choice>() + ", got '" + shown + "'");
}

template DeviceChoice parse_choice(const std::string&, const std::string&);
template Precision parse_choice(const std::string&, const std::string&);
template Recompute parse_choice(const std::string&, const std::string&);
template PipelineSchedule parse_choice(const std::string&, const std::string&);

}  // namespace minipretrain
