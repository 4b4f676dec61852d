// Progress of long work that is not training (preprocess, export): done,
// rate and ETA on stderr, rewritten in place on a terminal, else one line
// per interval (a batch job's log gets lines, not carriage returns).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

namespace minipretrain {

class Progress {
 public:
  // `total` units of work (0: unknown, no ETA), named `unit` ("MB", "tensors"),
  // reported on `out`.
  Progress(std::string what, double total, std::string unit, bool enabled = true, double interval_seconds = 10,
           std::FILE* out = stderr)
      : what_(std::move(what)),
        unit_(std::move(unit)),
        total_(total),
        enabled_(enabled),
        out_(out),
        terminal_(::isatty(::fileno(out)) == 1),
        interval_(interval_seconds) {}

  void set_total(double total) { total_ = total; }

  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  // `done` units so far; `detail` goes after the figures.
  void update(double done, const std::string& detail = "") { report(done, detail, false); }
  void finish(double done, const std::string& detail = "") { report(done, detail, true); }

 private:
  using Clock = std::chrono::steady_clock;

  void report(double done, const std::string& detail, bool last);

  std::string what_, unit_;
  double total_;
  bool enabled_;
  std::FILE* out_;
  bool terminal_;
  double interval_;
  Clock::time_point start_ = Clock::now();
  double last_line_ = -1e9;
};

}  // namespace minipretrain
