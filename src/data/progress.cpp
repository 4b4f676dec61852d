#include "minipretrain/data/progress.h"

#include <algorithm>

namespace minipretrain {

void Progress::report(double done, const std::string& detail, bool last) {
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

}  // namespace minipretrain
