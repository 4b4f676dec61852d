#include "minipretrain/parallel/schedule.h"

#include <algorithm>
#include <numeric>
#include <map>
#include <stdexcept>
#include <tuple>

namespace minipretrain {

std::vector<Action> gpipe_schedule(int64_t, int64_t, int64_t num_microbatches) {
  std::vector<Action> actions;
  for (int64_t m = 0; m < num_microbatches; ++m) actions.push_back({Action::Forward, m});
  for (int64_t m = 0; m < num_microbatches; ++m) actions.push_back({Action::Backward, m});
  return actions;
}

std::vector<Action> one_f_one_b_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches) {
  const int64_t warmup = std::min(num_stages - stage - 1, num_microbatches);
  std::vector<Action> actions;
  int64_t next_forward = 0, next_backward = 0;
  for (int64_t i = 0; i < warmup; ++i) actions.push_back({Action::Forward, next_forward++});
  while (next_forward < num_microbatches) {
    actions.push_back({Action::Forward, next_forward++});
    actions.push_back({Action::Backward, next_backward++});
  }
  while (next_backward < num_microbatches) actions.push_back({Action::Backward, next_backward++});
  return actions;
}

std::vector<Action> interleaved_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches,
                                         int64_t num_chunks) {
  const int64_t p = num_stages, m = num_microbatches, v = num_chunks;
  if (p < 2 || v < 2 || (m > p && m % p != 0))
    throw std::invalid_argument("interleaved-1f1b needs PP >= 2, V >= 2 and M <= PP or a multiple of PP");
  // The k-th chunk forward (or backward) of this rank: groups of `group`
  // microbatches go through every chunk in turn, backwards in reverse chunk order.
  const int64_t group = std::min(p, m), total = m * v;
  auto at = [&](Action::Kind kind, int64_t k) {
    const int64_t chunk = k % (group * v) / group;
    return Action{kind, k / (group * v) * group + k % group, kind == Action::Forward ? chunk : v - 1 - chunk};
  };
  // With no more microbatches than stages the backward of the first one
  // cannot start before every forward has run: all are warm-up.
  const int64_t warmup = m <= p ? total : std::min((p - stage - 1) * 2 + (v - 1) * p, total);
  std::vector<Action> actions;
  for (int64_t k = 0; k < warmup; ++k) actions.push_back(at(Action::Forward, k));
  for (int64_t k = warmup; k < total; ++k) {
    actions.push_back(at(Action::Forward, k));
    actions.push_back(at(Action::Backward, k - warmup));
  }
  for (int64_t k = total - warmup; k < total; ++k) actions.push_back(at(Action::Backward, k));
  return actions;
}

std::vector<Action> zb_h1_schedule(int64_t num_stages, int64_t stage, int64_t num_microbatches) {
  // Stage 0 sends no gradient upstream and defers no W: each W would follow
  // its own B, so they run as one backward, without holding the linear
  // layers' output gradients until W. That is 1F1B's list.
  if (stage == 0) return one_f_one_b_schedule(num_stages, stage, num_microbatches);
  const int64_t warmup = std::min(num_stages - stage - 1, num_microbatches);
  std::vector<Action> actions;
  int64_t next_forward = 0, next_b = 0, next_w = 0;
  // A W runs once `stage` of them wait: stage s gets its first B s slots
  // later than the last stage, and so has the room to defer s of them.
  auto b_then_maybe_w = [&] {
    actions.push_back({Action::BackwardInput, next_b++});
    if (next_b - next_w > stage) actions.push_back({Action::BackwardWeight, next_w++});
  };
  for (int64_t i = 0; i < warmup; ++i) actions.push_back({Action::Forward, next_forward++});
  while (next_forward < num_microbatches) {
    actions.push_back({Action::Forward, next_forward++});
    b_then_maybe_w();
  }
  while (next_b < num_microbatches) b_then_maybe_w();
  while (next_w < num_microbatches) actions.push_back({Action::BackwardWeight, next_w++});
  return actions;
}

std::vector<Action> forward_only_schedule(int64_t num_stages, int64_t num_microbatches, int64_t num_chunks) {
  const int64_t group = std::max<int64_t>(1, std::min(num_stages, num_microbatches));
  std::vector<Action> actions;
  for (int64_t start = 0; start < num_microbatches; start += group)
    for (int64_t c = 0; c < num_chunks; ++c)
      for (int64_t m = start; m < std::min(start + group, num_microbatches); ++m)
        actions.push_back({Action::Forward, m, c});
  return actions;
}

std::vector<Action> make_schedule(PipelineSchedule schedule, int64_t num_stages, int64_t stage,
                                  int64_t num_microbatches, int64_t num_chunks) {
  if (schedule == PipelineSchedule::Interleaved1F1B)
    return interleaved_schedule(num_stages, stage, num_microbatches, num_chunks);
  if (num_chunks != 1) throw std::invalid_argument("only interleaved-1f1b has virtual pipeline stages");
  switch (schedule) {
    case PipelineSchedule::GPipe: return gpipe_schedule(num_stages, stage, num_microbatches);
    case PipelineSchedule::OneFOneB: return one_f_one_b_schedule(num_stages, stage, num_microbatches);
    case PipelineSchedule::ZeroBubbleH1: return zb_h1_schedule(num_stages, stage, num_microbatches);
    case PipelineSchedule::Interleaved1F1B: break;
  }
  throw std::invalid_argument("unknown pipeline schedule");
}

int64_t peak_in_flight(const std::vector<Action>& actions) {
  int64_t live = 0, peak = 0;
  for (const Action& a : actions) {
    if (a.kind == Action::Forward) ++live;
    if (a.kind == Action::Backward || a.kind == Action::BackwardWeight) --live;
    peak = std::max(peak, live);
  }
  return peak;
}

namespace {

const char* kind_name(Action::Kind kind) {
  switch (kind) {
    case Action::Forward: return "F";
    case Action::Backward: return "backward";
    case Action::BackwardInput: return "B";
    case Action::BackwardWeight: return "W";
  }
  return "?";
}

std::string describe(int64_t stage, const Action& a) {
  return "stage " + std::to_string(stage) + " " + kind_name(a.kind) + "(microbatch " + std::to_string(a.microbatch) +
         ", chunk " + std::to_string(a.chunk) + ")";
}

// One stage's list on its own: every action once, in an order whose local
// dependencies hold and whose transfers match in order.
void check_stage(int64_t stage, const std::vector<Action>& actions, int64_t num_microbatches, int64_t num_chunks) {
  auto fail = [&](const std::string& what) { throw std::logic_error("schedule: " + what); };
  std::map<std::tuple<int64_t, int, int64_t>, size_t> position;  // (chunk, kind, microbatch) -> index
  std::map<std::pair<int64_t, int>, int64_t> last;                // (chunk, kind) -> microbatch
  for (size_t i = 0; i < actions.size(); ++i) {
    const Action& a = actions[i];
    if (a.chunk < 0 || a.chunk >= num_chunks || a.microbatch < 0 || a.microbatch >= num_microbatches)
      fail(describe(stage, a) + " is out of range");
    if (!position.emplace(std::make_tuple(a.chunk, static_cast<int>(a.kind), a.microbatch), i).second)
      fail(describe(stage, a) + " runs twice");
    auto [it, first] = last.emplace(std::make_pair(a.chunk, static_cast<int>(a.kind)), a.microbatch);
    if (!first && it->second > a.microbatch)
      fail(describe(stage, a) + " comes after microbatch " + std::to_string(it->second) +
           ": transfers would not match in order");
    it->second = a.microbatch;
  }
  auto at = [&](int64_t c, Action::Kind k, int64_t m) {
    auto it = position.find({c, static_cast<int>(k), m});
    return it == position.end() ? -1 : static_cast<int64_t>(it->second);
  };
  for (int64_t c = 0; c < num_chunks; ++c)
    for (int64_t m = 0; m < num_microbatches; ++m) {
      const Action f{Action::Forward, m, c};
      const int64_t fwd = at(c, Action::Forward, m), whole = at(c, Action::Backward, m);
      const int64_t b = at(c, Action::BackwardInput, m), w = at(c, Action::BackwardWeight, m);
      if (fwd < 0) fail(describe(stage, f) + " never runs");
      if (whole >= 0 && (b >= 0 || w >= 0)) fail(describe(stage, f) + ": both a whole backward and B/W");
      if (whole < 0 && (b < 0 || w < 0)) fail(describe(stage, f) + ": its backward (or B and W) never runs");
      if ((whole >= 0 ? whole : b) < fwd) fail(describe(stage, f) + ": its backward runs before it");
      if (whole < 0 && w < b) fail(describe(stage, f) + ": its W runs before its B");
    }
}

// Between each ordered pair of stages, what one sends arrives in the order
// the other receives it, so transfers match even where the backend ignores
// tags (NCCL): with PP 2 and interleaving, activations and gradients share
// both directions.
void check_transfer_order(const std::vector<std::vector<Action>>& stages, int64_t num_chunks) {
  const int64_t p = static_cast<int64_t>(stages.size()), last_virtual = p * num_chunks - 1;
  using Transfer = std::tuple<bool, int64_t, int64_t>;  // (gradient?, receiving virtual stage, microbatch)
  std::map<std::pair<int64_t, int64_t>, std::vector<Transfer>> sent, received;  // (from, to)
  for (int64_t s = 0; s < p; ++s)
    for (const Action& a : stages[s]) {
      const int64_t v = a.chunk * p + s, m = a.microbatch;
      if (a.kind == Action::Forward) {
        if (v > 0) received[{(v - 1) % p, s}].emplace_back(false, v, m);
        if (v < last_virtual) sent[{s, (v + 1) % p}].emplace_back(false, v + 1, m);
      } else if (a.kind != Action::BackwardWeight) {
        if (v < last_virtual) received[{(v + 1) % p, s}].emplace_back(true, v, m);
        if (v > 0) sent[{s, (v - 1) % p}].emplace_back(true, v - 1, m);
      }
    }
  for (const auto& [pair, transfers] : sent)
    if (received[pair] != transfers)
      throw std::logic_error("schedule: stage " + std::to_string(pair.first) + " sends to stage " +
                             std::to_string(pair.second) + " in another order than it receives");
}

}  // namespace

PipelineSimulation simulate_pipeline(const std::vector<std::vector<Action>>& stages, int64_t num_microbatches,
                                     int64_t num_chunks, const StageCosts* costs) {
  const int64_t p = static_cast<int64_t>(stages.size()), last_virtual = p * num_chunks - 1;
  for (int64_t s = 0; s < p; ++s) check_stage(s, stages[s], num_microbatches, num_chunks);
  check_transfer_order(stages, num_chunks);
  // Finish times of (virtual stage, kind, microbatch); a whole backward
  // also counts as B, which is what the previous stage waits for.
  std::map<std::tuple<int64_t, int, int64_t>, double> done;
  auto finished = [&](int64_t v, Action::Kind k, int64_t m, double& at_least) {
    auto it = done.find({v, static_cast<int>(k), m});
    if (it == done.end()) return false;
    at_least = std::max(at_least, it->second);
    return true;
  };
  const double chunks = static_cast<double>(num_chunks);
  const auto cost_of = [&](int64_t s, Action::Kind kind) {
    const double forward = costs ? costs->forward.at(s) : 1.0, backward = costs ? costs->backward.at(s) : 2.0;
    if (kind == Action::Forward) return forward / chunks;
    return (kind == Action::Backward ? backward : backward / 2) / chunks;
  };
  const double transfer = costs ? costs->transfer : 0.0;
  // When a neighbour's result can be used here: it crosses to another rank.
  const auto arrived = [&](int64_t v, Action::Kind k, int64_t m, int64_t s, double& at_least) {
    double when = 0;
    if (!finished(v, k, m, when)) return false;
    at_least = std::max(at_least, when + (v % p == s ? 0.0 : transfer));
    return true;
  };
  std::vector<size_t> next(p, 0);
  std::vector<double> clock(p, 0.0), busy(p, 0.0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int64_t s = 0; s < p; ++s)
      while (next[s] < stages[s].size()) {
        const Action& a = stages[s][next[s]];
        const int64_t v = a.chunk * p + s, m = a.microbatch;
        double start = clock[s];
        bool ready = true;
        if (a.kind == Action::Forward) {
          ready = v == 0 || arrived(v - 1, Action::Forward, m, s, start);
        } else if (a.kind == Action::BackwardWeight) {
          ready = finished(v, Action::BackwardInput, m, start);
        } else {
          ready = finished(v, Action::Forward, m, start) &&
                  (v == last_virtual || arrived(v + 1, Action::BackwardInput, m, s, start));
        }
        if (!ready) break;
        const double cost = cost_of(s, a.kind);
        clock[s] = start + cost;
        busy[s] += cost;
        done[{v, static_cast<int>(a.kind == Action::Backward ? Action::BackwardInput : a.kind), m}] = clock[s];
        ++next[s];
        progress = true;
      }
  }
  std::string stuck;
  for (int64_t s = 0; s < p; ++s)
    if (next[s] < stages[s].size()) stuck += (stuck.empty() ? "" : "; ") + describe(s, stages[s][next[s]]);
  if (!stuck.empty()) throw std::logic_error("schedule: deadlock, every stage waits: " + stuck);

  PipelineSimulation result;
  result.makespan = *std::max_element(clock.begin(), clock.end());
  const double total = std::accumulate(busy.begin(), busy.end(), 0.0);
  result.bubble = result.makespan > 0 ? 1.0 - total / (static_cast<double>(p) * result.makespan) : 0.0;
  result.busy = busy;
  for (const auto& actions : stages) result.peak_in_flight.push_back(peak_in_flight(actions));
  return result;
}

PipelineSimulation simulate_schedule(PipelineSchedule schedule, int64_t num_stages, int64_t num_microbatches,
                                     int64_t num_chunks, const StageCosts* costs) {
  std::vector<std::vector<Action>> stages;
  for (int64_t s = 0; s < num_stages; ++s)
    stages.push_back(make_schedule(schedule, num_stages, s, num_microbatches, num_chunks));
  return simulate_pipeline(stages, num_microbatches, num_chunks, costs);
}

}  // namespace minipretrain
