#include "minipretrain/train/metrics.h"

#include <filesystem>
#include <vector>

namespace minipretrain {

int64_t peak_resident_kb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  return 0;
}

MetricsLog::MetricsLog(const std::string& output_dir, int64_t resume_step) {
  const std::filesystem::path path = std::filesystem::path(output_dir) / "metrics.jsonl";
  std::vector<std::string> kept;
  if (resume_step > 0) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!record.is_discarded() && record.value("step", int64_t{0}) <= resume_step) kept.push_back(line);
    }
  }
  out_.open(path, std::ios::trunc);
  if (!out_) throw std::runtime_error("cannot write " + path.string());
  for (const auto& line : kept) out_ << line << "\n";
  out_.flush();
}

void MetricsLog::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
}

}  // namespace minipretrain
