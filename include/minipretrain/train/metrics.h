// OUTPUT_DIR/metrics.jsonl: one JSON object per logged step (step, loss, lr,
// grad_norm, tokens_per_s, samples_per_s, elapsed_s, ...). Written by the
// logging rank only.
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace minipretrain {

// VmHWM of /proc/self/status: the most resident memory this process has held.
int64_t peak_resident_kb();

class MetricsLog {
 public:
  // Keeps the lines of steps <= `resume_step` (0: starts afresh), so a resumed
  // run's file reads as one uninterrupted run.
  MetricsLog(const std::string& output_dir, int64_t resume_step);
  void write(const nlohmann::json& record);

 private:
  std::ofstream out_;
};

}  // namespace minipretrain
