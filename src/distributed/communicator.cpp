#include "minipretrain/distributed/communicator.h"

#include <atomic>
#include <chrono>
#include <cstdio>

namespace minipretrain {

namespace {

std::atomic<int64_t> step_now{-1};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Backend exceptions (c10d's carry a backtrace) in one line.
std::string first_line(const std::exception& e) {
  const std::string text = e.what();
  return text.substr(0, text.find('\n'));
}

std::string failure(const std::string& what, double seconds, const std::exception& e) {
  char waited[32];
  std::snprintf(waited, sizeof(waited), "%.1f", seconds);
  return what + " failed after " + waited + " s: " + first_line(e);
}

// A send whose completion, when waited for, fails with the group and peer.
class GuardedPendingOp : public PendingOp {
 public:
  GuardedPendingOp(std::unique_ptr<PendingOp> inner, std::string what)
      : inner_(std::move(inner)), what_(std::move(what)) {}
  void wait() override {
    const auto start = Clock::now();
    try {
      inner_->wait();
    } catch (const std::exception& e) {
      throw CommunicationError(failure(what_, seconds_since(start), e));
    }
  }

 private:
  std::unique_ptr<PendingOp> inner_;
  std::string what_;
};

// A receive in flight: waiting completes it, brings what travelled as fp32
// back to bf16, and adds the wait to the receive's time.
class PendingReceive : public PendingOp {
 public:
  PendingReceive(std::unique_ptr<PendingOp> inner, std::string what, torch::Tensor wire, torch::Tensor target,
                 OpStats& stats)
      : guarded_(std::move(inner), std::move(what)), wire_(std::move(wire)), target_(std::move(target)), stats_(stats) {}
  void wait() override {
    const auto start = Clock::now();
    guarded_.wait();
    if (!wire_.is_same(target_)) target_.copy_(wire_);
    stats_.seconds += seconds_since(start);
  }

 private:
  GuardedPendingOp guarded_;
  torch::Tensor wire_, target_;
  OpStats& stats_;
};

class CompletedOp : public PendingOp {
 public:
  void wait() override {}
};

std::string peer_of(const char* direction, int peer, int size) {
  return std::string(direction) + " rank " + std::to_string(peer) + " of " + std::to_string(size);
}

}  // namespace

void set_current_step(int64_t step) { step_now.store(step, std::memory_order_relaxed); }
int64_t current_step() { return step_now.load(std::memory_order_relaxed); }

template <typename Call>
auto Communicator::guarded(const char* op, const std::string& peer, Call&& call) {
  const auto start = Clock::now();
  try {
    return call();
  } catch (const CommunicationError&) {
    throw;
  } catch (const std::exception& e) {
    throw CommunicationError(failure(name_ + " " + op + (peer.empty() ? "" : " " + peer), seconds_since(start), e));
  }
}

torch::Tensor Communicator::wire(const torch::Tensor& tensor) const {
  return tensor.scalar_type() == torch::kBFloat16 && !has_bf16() ? tensor.to(torch::kFloat) : tensor;
}

double ring_bytes(const std::string& op, const OpStats& stats, int group_size) {
  const double share = static_cast<double>(group_size - 1) / static_cast<double>(group_size);
  const double factor = op == "all_reduce" ? 2 * share : op == "all_gather" || op == "reduce_scatter" ? share : 1.0;
  return factor * static_cast<double>(stats.bytes);
}

void Communicator::count(const std::string& op, const torch::Tensor& wire, double seconds) {
  OpStats& s = stats_[op];
  s.calls += 1;
  // A group of one moves nothing: its calls count, its bytes do not, so the
  // counters read as traffic (and equal the planner's prediction).
  if (size_ > 1) s.bytes += wire.numel() * static_cast<int64_t>(wire.element_size());
  s.seconds += seconds;
}

void Communicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  const auto start = Clock::now();
  torch::Tensor sent = wire(tensor);
  guarded("all_reduce", "", [&] { do_all_reduce(sent, op); });
  if (!sent.is_same(tensor)) tensor.copy_(sent);
  count("all_reduce", sent, seconds_since(start));
}

std::vector<double> Communicator::all_reduce(std::vector<double> values, ReduceOp op) {
  torch::Tensor tensor = torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kDouble);
  all_reduce(tensor, op);
  return values;
}

std::unique_ptr<PendingOp> Communicator::all_reduce_async(torch::Tensor& tensor, ReduceOp op) {
  TORCH_CHECK(wire(tensor).is_same(tensor), name_, ": all_reduce_async of a ", tensor.scalar_type(),
              " tensor, which this backend does not send as it is");
  const auto start = Clock::now();
  auto pending = guarded("all_reduce", "", [&] { return do_all_reduce_async(tensor, op); });
  count("all_reduce", tensor, seconds_since(start));
  return std::make_unique<GuardedPendingOp>(std::move(pending), name_ + " all_reduce");
}

std::unique_ptr<PendingOp> Communicator::do_all_reduce_async(torch::Tensor& tensor, ReduceOp op) {
  do_all_reduce(tensor, op);
  return std::make_unique<CompletedOp>();
}

torch::Tensor Communicator::all_gather(const torch::Tensor& tensor, int64_t dim) {
  const auto start = Clock::now();
  const torch::Tensor sent = wire(tensor);
  torch::Tensor gathered = guarded("all_gather", "", [&] { return do_all_gather(sent, dim); });
  count("all_gather", gathered, seconds_since(start));
  return gathered.to(tensor.scalar_type());
}

torch::Tensor Communicator::reduce_scatter(const torch::Tensor& tensor) {
  TORCH_CHECK(tensor.size(0) % size_ == 0, "reduce_scatter: dim 0 of size ", tensor.size(0),
              " does not divide over ", size_, " ranks");
  const auto start = Clock::now();
  const torch::Tensor sent = wire(tensor);
  torch::Tensor out = guarded("reduce_scatter", "", [&] { return do_reduce_scatter(sent); }).to(tensor.scalar_type());
  count("reduce_scatter", sent, seconds_since(start));
  return out;
}

std::unique_ptr<PendingOp> Communicator::reduce_scatter_async(torch::Tensor& flat, ReduceOp op) {
  TORCH_CHECK(wire(flat).is_same(flat), name_, ": reduce_scatter_async of a ", flat.scalar_type(),
              " tensor, which this backend does not send as it is");
  TORCH_CHECK(flat.dim() == 1 && flat.numel() % size_ == 0, name_, ": reduce_scatter_async of ", flat.numel(),
              " elements over ", size_, " ranks");
  const auto start = Clock::now();
  const char* name = has_reduce_scatter() ? "reduce_scatter" : "all_reduce";
  auto pending = guarded(name, "", [&] { return do_reduce_scatter_async(flat, op); });
  count(name, flat, seconds_since(start));
  return std::make_unique<GuardedPendingOp>(std::move(pending), name_ + " " + name);
}

std::unique_ptr<PendingOp> Communicator::all_gather_async(torch::Tensor& flat) {
  TORCH_CHECK(flat.dim() == 1 && flat.numel() % size_ == 0, name_, ": all_gather_async of ", flat.numel(),
              " elements over ", size_, " ranks");
  const auto start = Clock::now();
  auto pending = guarded("all_gather", "", [&] { return do_all_gather_async(flat); });
  count("all_gather", flat, seconds_since(start));
  return std::make_unique<GuardedPendingOp>(std::move(pending), name_ + " all_gather");
}

void Communicator::broadcast(torch::Tensor& tensor, int root) {
  const auto start = Clock::now();
  torch::Tensor sent = wire(tensor);
  guarded("broadcast", "", [&] { do_broadcast(sent, root); });
  if (!sent.is_same(tensor)) tensor.copy_(sent);
  count("broadcast", sent, seconds_since(start));
}

torch::Tensor Communicator::receive_wire(const torch::Tensor& tensor) const {
  return tensor.scalar_type() == torch::kBFloat16 && !has_bf16()
             ? torch::empty(tensor.sizes(), tensor.options().dtype(torch::kFloat))
             : tensor;
}

std::unique_ptr<PendingOp> Communicator::sent(std::unique_ptr<PendingOp> op, int dst) {
  return std::make_unique<GuardedPendingOp>(std::move(op), name_ + " send " + peer_of("to", dst, size_));
}

std::unique_ptr<PendingOp> Communicator::received(std::unique_ptr<PendingOp> op, int src, torch::Tensor wire,
                                                  torch::Tensor target) {
  return std::make_unique<PendingReceive>(std::move(op), name_ + " recv " + peer_of("from", src, size_),
                                          std::move(wire), std::move(target), stats_["recv"]);
}

std::unique_ptr<PendingOp> Communicator::isend(const torch::Tensor& tensor, int dst, int tag) {
  const auto start = Clock::now();
  const torch::Tensor payload = wire(tensor);
  auto handle = guarded("send", peer_of("to", dst, size_), [&] { return do_isend(payload, dst, tag); });
  count("send", payload, seconds_since(start));
  return sent(std::move(handle), dst);
}

std::unique_ptr<PendingOp> Communicator::irecv(const torch::Tensor& tensor, int src, int tag) {
  const auto start = Clock::now();
  torch::Tensor buffer = receive_wire(tensor);
  auto handle = guarded("recv", peer_of("from", src, size_), [&] { return do_irecv(buffer, src, tag); });
  count("recv", buffer, seconds_since(start));
  return received(std::move(handle), src, buffer, tensor);
}

std::vector<std::unique_ptr<PendingOp>> Communicator::batch_isend_irecv(const std::vector<P2POp>& ops) {
  std::vector<std::unique_ptr<PendingOp>> handles;
  if (ops.size() == 1) {
    const P2POp& op = ops.front();
    handles.push_back(op.kind == P2POp::Send ? isend(op.tensor, op.peer, op.tag) : irecv(op.tensor, op.peer, op.tag));
    return handles;
  }
  const auto start = Clock::now();
  std::vector<P2POp> wired;
  std::string peers;
  for (const P2POp& op : ops) {
    const bool send = op.kind == P2POp::Send;
    wired.push_back({op.kind, send ? wire(op.tensor) : receive_wire(op.tensor), op.peer, op.tag});
    peers += (peers.empty() ? "" : ", ") + peer_of(send ? "to" : "from", op.peer, size_);
  }
  auto posted = guarded("batch_isend_irecv", peers, [&] { return do_batch_isend_irecv(wired); });
  // Posting is one call: each transfer counts its share.
  const double share = seconds_since(start) / static_cast<double>(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const bool send = ops[i].kind == P2POp::Send;
    count(send ? "send" : "recv", wired[i].tensor, share);
    handles.push_back(send ? sent(std::move(posted.at(i)), ops[i].peer)
                           : received(std::move(posted.at(i)), ops[i].peer, wired[i].tensor, ops[i].tensor));
  }
  return handles;
}

std::vector<std::unique_ptr<PendingOp>> Communicator::do_batch_isend_irecv(const std::vector<P2POp>& ops) {
  std::vector<std::unique_ptr<PendingOp>> handles;
  for (P2POp op : ops)
    handles.push_back(op.kind == P2POp::Send ? do_isend(op.tensor, op.peer, op.tag)
                                             : do_irecv(op.tensor, op.peer, op.tag));
  return handles;
}

void Communicator::barrier() {
  stats_["barrier"].calls += 1;
  guarded("barrier", "", [&] { do_barrier(); });
}

std::unique_ptr<PendingOp> SoloCommunicator::do_reduce_scatter_async(torch::Tensor&, ReduceOp) {
  return std::make_unique<CompletedOp>();
}

std::unique_ptr<PendingOp> SoloCommunicator::do_all_gather_async(torch::Tensor&) {
  return std::make_unique<CompletedOp>();
}

std::unique_ptr<PendingOp> SoloCommunicator::do_isend(const torch::Tensor&, int dst, int) {
  TORCH_CHECK(false, name(), ": a group of one cannot send to rank ", dst);
}

std::unique_ptr<PendingOp> SoloCommunicator::do_irecv(torch::Tensor&, int src, int) {
  TORCH_CHECK(false, name(), ": a group of one cannot receive from rank ", src);
}

}  // namespace minipretrain
