// Where a step's figures go: the console line, OUTPUT_DIR/metrics.jsonl and
// TensorBoard are sinks of one record, written by the logging rank.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "minipretrain/config/config.h"

namespace minipretrain {

// One logged step: the last step's figures, rates over the steps since the
// previous record.
struct StepRecord {
  int64_t step = 0, max_steps = 0;
  double loss = 0;  // NaN on a skipped step
  bool skipped = false;
  int64_t skipped_total = 0;
  double lr = 0, grad_norm = 0;
  double samples_per_s = 0, tokens_per_s = 0, ms_per_step = 0;
  double elapsed_s = 0;  // time in steps since step 1, summed over runs (resumes included)
  double wall_s = 0;     // since this run started
  int64_t tokens_seen = 0;
  double peak_rss_mb = 0;
  // Pipeline: the measured bubble and the schedule's (pipelined false: PP 1).
  bool pipelined = false;
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;
  double bubble = 0, bubble_theory = 0;
  double forward_ms = 0, backward_ms = 0, dp_ms = 0, optimizer_ms = 0;
  nlohmann::json comm;  // per group and operation: calls, bytes, seconds
};

class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void step(const StepRecord& record) = 0;
  virtual void validation(int64_t step, double loss) = 0;
};

// Every sink this config asks for, for a run that starts at `first_step`.
class LogSinks {
 public:
  LogSinks() = default;  // none: ranks other than the logging rank
  LogSinks(const Config& config, int64_t first_step);
  void step(const StepRecord& record);
  void validation(int64_t step, double loss);

 private:
  std::vector<std::unique_ptr<LogSink>> sinks_;
};

}  // namespace minipretrain
