#include "minipretrain/parallel/pipeline_transfers.h"

#include <algorithm>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace minipretrain {
namespace {

bool is_backward(const Action& a) { return a.kind == Action::Backward || a.kind == Action::BackwardInput; }

// The neighbours of chunk c of a stage: the last rank's chunk c feeds chunk
// c + 1 of rank 0.
struct Links {
  PipelineRank at;
  bool first_chunk(int64_t c) const { return at.stage == 0 && c == 0; }
  bool last_chunk(int64_t c) const { return at.stage == at.num_stages - 1 && c == at.num_chunks - 1; }
  std::pair<int64_t, int64_t> previous(int64_t c) const {  // (rank, chunk)
    return at.stage > 0 ? std::make_pair(at.stage - 1, c) : std::make_pair(at.num_stages - 1, c - 1);
  }
  std::pair<int64_t, int64_t> next(int64_t c) const {
    return at.stage < at.num_stages - 1 ? std::make_pair(at.stage + 1, c) : std::make_pair(int64_t{0}, c + 1);
  }
  std::optional<Transfer> receive(const std::vector<Action>& actions, size_t i) const {
    const Action& a = actions[i];
    if (a.kind == Action::Forward && !first_chunk(a.chunk))
      return Transfer{i, static_cast<int>(previous(a.chunk).first), static_cast<int>(2 * a.chunk)};
    if (is_backward(a) && !last_chunk(a.chunk))
      return Transfer{i, static_cast<int>(next(a.chunk).first), static_cast<int>(2 * a.chunk + 1)};
    return std::nullopt;
  }
  std::optional<Transfer> send(const std::vector<Action>& actions, size_t i) const {
    const Action& a = actions[i];
    if (a.kind == Action::Forward && !last_chunk(a.chunk)) {
      const auto [rank, chunk] = next(a.chunk);
      return Transfer{i, static_cast<int>(rank), static_cast<int>(2 * chunk)};
    }
    if (is_backward(a) && !first_chunk(a.chunk)) {
      const auto [rank, chunk] = previous(a.chunk);
      return Transfer{i, static_cast<int>(rank), static_cast<int>(2 * chunk + 1)};
    }
    return std::nullopt;
  }
};

std::vector<TransferBatch> independent_order(const std::vector<Action>& actions, const Links& links) {
  std::vector<TransferBatch> batches;
  size_t unposted = 0;                // the first action not yet looked at for a receive
  std::optional<size_t> last_posted;  // the action of the latest receive posted
  for (size_t i = 0; i < actions.size(); ++i) {
    // This action's receive, and the next one after it unless already posted.
    for (; unposted < actions.size() && (unposted <= i || !last_posted || *last_posted <= i); ++unposted)
      if (const auto from = links.receive(actions, unposted)) {
        batches.push_back({i, {}, {*from}});
        last_posted = unposted;
      }
    if (const auto to = links.send(actions, i)) batches.push_back({i + 1, {*to}, {}});
  }
  return batches;
}

std::vector<TransferBatch> in_order(const std::vector<Action>& actions, const Links& links) {
  const size_t n = actions.size();
  const auto communicates = [&](size_t i) { return links.receive(actions, i) || links.send(actions, i); };
  // An interleaved steady-state forward communicates with the backward after it.
  const auto joins_next = [&](size_t i) {
    return links.at.num_chunks > 1 && actions[i].kind == Action::Forward && i + 1 < n && is_backward(actions[i + 1]) &&
           std::any_of(actions.begin() + static_cast<std::ptrdiff_t>(i) + 2, actions.end(),
                       [](const Action& a) { return a.kind == Action::Forward; });
  };
  // The actions after which a batch goes out.
  std::vector<size_t> points;
  for (size_t i = 0; i < n; ++i)
    if (communicates(i) && !joins_next(i)) points.push_back(i);
  std::vector<TransferBatch> batches;
  TransferBatch batch{0, {}, {}};
  size_t unposted = 0;  // the first action whose receive is not posted yet
  // Posts what waits to be sent and the receives of the actions up to `through`.
  const auto post = [&](size_t before, size_t through) {
    batch.before = before;
    for (; unposted <= through && unposted < n; ++unposted)
      if (const auto from = links.receive(actions, unposted)) batch.receives.push_back(*from);
    if (!batch.sends.empty() || !batch.receives.empty()) batches.push_back(batch);
    batch = {};
  };
  post(0, points.empty() ? n : points.front());
  for (size_t i = 0, k = 0; i < n; ++i) {
    if (const auto to = links.send(actions, i)) batch.sends.push_back(*to);
    if (k < points.size() && points[k] == i) post(i + 1, ++k < points.size() ? points[k] : n);
  }
  return batches;
}

}  // namespace

std::vector<TransferBatch> plan_transfers(const std::vector<Action>& actions, const PipelineRank& at,
                                          bool in_order_progress) {
  const Links links{at};
  return in_order_progress ? in_order(actions, links) : independent_order(actions, links);
}

void check_in_order_progress(const std::vector<std::vector<TransferBatch>>& stages) {
  const int p = static_cast<int>(stages.size());
  auto fail = [](const std::string& what) { throw std::logic_error("transfers: " + what); };
  // Each transfer as the n-th of its kind between its pair of stages.
  struct Half {
    bool send;
    int peer;
    int64_t n;
    size_t action;
    std::string text() const {
      return std::string(send ? "send" : "receive") + " of action " + std::to_string(action) +
             (send ? " to stage " : " from stage ") + std::to_string(peer);
    }
  };
  std::vector<std::vector<std::vector<Half>>> queues(p);
  for (int s = 0; s < p; ++s) {
    std::map<std::pair<bool, int>, int64_t> count;
    for (const TransferBatch& batch : stages[s]) {
      std::vector<Half> halves;
      for (const bool send : {true, false})
        for (const Transfer& t : send ? batch.sends : batch.receives) {
          if (t.peer < 0 || t.peer >= p || t.peer == s)
            fail("stage " + std::to_string(s) + " has a transfer with stage " + std::to_string(t.peer));
          if (send ? t.action >= batch.before : t.action < batch.before)
            fail("stage " + std::to_string(s) + (send ? " sends action " : " receives for action ") +
                 std::to_string(t.action) + (send ? "'s result before it computes" : " after it computes"));
          halves.push_back({send, t.peer, count[{send, t.peer}]++, t.action});
        }
      queues[s].push_back(halves);
    }
  }
  std::vector<size_t> head(p, 0);
  std::vector<std::vector<bool>> done(p);  // per transfer of the running batch
  for (int s = 0; s < p; ++s)
    if (!queues[s].empty()) done[s].assign(queues[s][0].size(), false);
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      if (head[s] == queues[s].size()) continue;
      const std::vector<Half>& running = queues[s][head[s]];
      for (size_t k = 0; k < running.size(); ++k) {
        const Half& h = running[k];
        if (done[s][k] || head[h.peer] == queues[h.peer].size()) continue;
        const std::vector<Half>& theirs = queues[h.peer][head[h.peer]];
        for (size_t j = 0; j < theirs.size(); ++j)
          if (!done[h.peer][j] && theirs[j].send != h.send && theirs[j].peer == s && theirs[j].n == h.n) {
            done[s][k] = true;
            done[h.peer][j] = true;
            progress = true;
            break;
          }
      }
      if (std::all_of(done[s].begin(), done[s].end(), [](bool d) { return d; })) {
        if (++head[s] < queues[s].size()) done[s].assign(queues[s][head[s]].size(), false);
        progress = true;
      }
    }
  }
  std::string stuck;
  for (int s = 0; s < p; ++s) {
    if (head[s] == queues[s].size()) continue;
    std::string waits;
    for (size_t k = 0; k < queues[s][head[s]].size(); ++k)
      if (!done[s][k]) waits += (waits.empty() ? "" : ", ") + queues[s][head[s]][k].text();
    stuck += (stuck.empty() ? "" : "; ") + ("stage " + std::to_string(s) + " waits on its " + waits);
  }
  if (!stuck.empty()) fail("deadlock under in-order progress: " + stuck);
}

}  // namespace minipretrain
