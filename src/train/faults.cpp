#include "minipretrain/train/faults.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <regex>

#include "minipretrain/config/config.h"

namespace minipretrain {

FaultPlan FaultPlan::parse(const std::string& spec) {
  static const std::map<std::string, FaultKind> kinds = {
      {"nan", FaultKind::Nan}, {"die", FaultKind::Die}, {"hang", FaultKind::Hang}, {"die-in-save", FaultKind::DieInSave}};
  static const std::regex entry("([a-z-]+)@([0-9]{1,9})(?:-([0-9]{1,9}))?:([0-9]{1,9})");
  FaultPlan plan;
  size_t begin = 0;
  while (begin <= spec.size()) {
    const size_t end = std::min(spec.find(',', begin), spec.size());
    const std::string text = spec.substr(begin, end - begin);
    std::smatch m;
    if (!std::regex_match(text, m, entry) || !kinds.count(m[1]))
      throw ConfigError("MINIPRETRAIN_FAULT entry '" + text +
                        "' is not KIND@STEP[-LAST]:RANK with KIND one of nan, die, hang, die-in-save");
    const int64_t first = std::stoll(m[2]), last = m[3].matched ? std::stoll(m[3]) : first;
    if (last < first) throw ConfigError("MINIPRETRAIN_FAULT entry '" + text + "' ends before it starts");
    plan.faults_.push_back({kinds.at(m[1]), first, last, std::stoll(m[4])});
    begin = end + 1;
  }
  return plan;
}

const FaultPlan& FaultPlan::from_environment() {
  static const FaultPlan plan = [] {
    const char* spec = std::getenv("MINIPRETRAIN_FAULT");
    FaultPlan p = spec && *spec ? parse(spec) : FaultPlan();
    // Our launchers' count, or torchrun's.
    const char* restarts = std::getenv("MINIPRETRAIN_RESTART_COUNT");
    if (!restarts) restarts = std::getenv("TORCHELASTIC_RESTART_COUNT");
    p.armed_ = !restarts || std::string(restarts) == "0" || std::string(restarts).empty();
    return p;
  }();
  return plan;
}

bool FaultPlan::fires(FaultKind kind, int64_t step, int64_t rank) const {
  if (!armed_) return false;
  for (const Fault& f : faults_)
    if (f.kind == kind && f.rank == rank && step >= f.first_step && step <= f.last_step) return true;
  return false;
}

void FaultPlan::strike(FaultKind kind, int64_t step, int64_t rank) const {
  if (kind == FaultKind::Nan || !fires(kind, step, rank)) return;
  const char* what = kind == FaultKind::Hang ? "stops itself (SIGSTOP)" : "dies (SIGKILL)";
  const char* where = kind == FaultKind::DieInSave ? " while saving the checkpoint of step " : " at step ";
  std::fprintf(stderr, "MINIPRETRAIN_FAULT: rank %lld %s%s%lld\n", static_cast<long long>(rank), what, where,
               static_cast<long long>(step));
  std::fflush(stderr);
  std::raise(kind == FaultKind::Hang ? SIGSTOP : SIGKILL);
}

}  // namespace minipretrain
