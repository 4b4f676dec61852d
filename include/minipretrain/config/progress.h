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

  void report(double done, const std::string& detail, bool last) {
    const double elapsed = seconds();
    if (!enabled_ || (!last && elapsed - last_line_ < (terminal_ ? 0.2 : interval_))) return;
    last_line_ = elapsed;
    const double rate = done / std::max(elapsed, 1e-9);
    std::string eta;
    if (total_ > 0) {
      const long long left = last ? 0 : static_cast<long long>(rate > 0 ? (total_ - done) / rate : 0);
      char text[64];
      std::snprintf(text, sizeof(text), " (%.0f%%) | ETA %lld:%02lld:%02lld", std::min(100.0, 100 * done / total_),
                    left / 3600, left / 60 % 60, left % 60);
      eta = text;
    }
    std::fprintf(out_, "%s%s: %.1f %s%s | %.1f %s/s%s%s%s", terminal_ ? "\r" : "", what_.c_str(), done,
                 unit_.c_str(), eta.c_str(), rate, unit_.c_str(), detail.empty() ? "" : " | ", detail.c_str(),
                 terminal_ && !last ? "" : "\n");
    std::fflush(out_);
  }

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
