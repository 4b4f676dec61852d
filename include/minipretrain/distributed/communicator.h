// The collective and point-to-point operations the parallel code needs, over
// one group of ranks. Backends: Gloo for CPU tensors, NCCL for CUDA tensors.
//
// Every operation blocks until its result is in place, except isend, irecv,
// batch_isend_irecv and all_reduce_async, which return a handle to wait on (a
// pipeline stage sends while its peer is still busy, and posts a receive
// before it computes so that the transfer runs meanwhile). Ranks are ranks
// within this group. Every call is counted with its payload bytes as sent and
// its time, per operation, for tests, the step breakdown and debug logs. A
// collective counts its whole tensor, as nccl-tests does: an all-reduce its
// input, a reduce-scatter its input, an all-gather its output. A ring moves
// 2(n-1)/n of that per rank for an all-reduce, (n-1)/n for the other two, so
// an all-gather plus a reduce-scatter of one tensor move what its all-reduce
// does (ring_bytes).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace minipretrain {

enum class ReduceOp { Sum, Avg, Max };

// A collective or transfer that failed or timed out (a peer died, hung or
// cannot be reached). The message names the group, the operation, the peer
// where the operation has one, and how long this rank waited.
struct CommunicationError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The training step now running, which failures that no caller sees (NCCL's
// watchdog ending the process) name; -1 outside training.
void set_current_step(int64_t step);
int64_t current_step();

// An operation in flight (a send, an asynchronous all-reduce); wait()
// returns once its tensor may be reused, or read for a result.
class PendingOp {
 public:
  virtual ~PendingOp() = default;
  virtual void wait() = 0;
};

// One transfer of a batch_isend_irecv: `tensor` goes to `peer`, or arrives
// from it into `tensor`.
struct P2POp {
  enum Kind { Send, Receive } kind;
  torch::Tensor tensor;
  int peer;
  int tag;
};

struct OpStats {
  int64_t calls = 0;
  int64_t bytes = 0;      // as sent: bf16 travels as fp32 where the backend has no bf16
  double seconds = 0.0;   // in the call (isend: posting it; irecv: posting and waiting)
};

// The bytes one rank puts on a ring's links for `stats` of operation `op` in
// a group of `group_size` (a point-to-point transfer: its payload).
double ring_bytes(const std::string& op, const OpStats& stats, int group_size);

class Communicator {
 public:
  virtual ~Communicator() = default;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }

  void all_reduce(torch::Tensor& tensor, ReduceOp op = ReduceOp::Sum);
  // A few host numbers reduced over the group (votes and losses at a step
  // boundary), as fp64 on the CPU.
  std::vector<double> all_reduce(std::vector<double> values, ReduceOp op = ReduceOp::Sum);
  // Starts an all-reduce and returns at once; `tensor` holds the result after
  // wait(). Only for tensors this backend sends as they are (not bf16 on Gloo).
  std::unique_ptr<PendingOp> all_reduce_async(torch::Tensor& tensor, ReduceOp op = ReduceOp::Sum);
  // Concatenates every rank's `tensor` along `dim`, in rank order.
  torch::Tensor all_gather(const torch::Tensor& tensor, int64_t dim);
  // Sums `tensor` over the group and returns this rank's 1/size chunk of dim 0.
  torch::Tensor reduce_scatter(const torch::Tensor& tensor);
  void broadcast(torch::Tensor& tensor, int root);
  // The distributed optimizer's collectives, in place on a 1-D buffer whose
  // length divides by the group's size, chunk r being rank r's:
  // reduce_scatter_async leaves the sum (or mean) of every rank's chunk r in
  // rank r's (the rest of `flat` is undefined after it); all_gather_async
  // fills each chunk with its rank's. Counted by the whole buffer, as
  // nccl-tests size them; a gather sends bf16 as it is (it adds nothing).
  std::unique_ptr<PendingOp> reduce_scatter_async(torch::Tensor& flat, ReduceOp op);
  std::unique_ptr<PendingOp> all_gather_async(torch::Tensor& flat);
  std::unique_ptr<PendingOp> isend(const torch::Tensor& tensor, int dst, int tag);
  // `tensor` holds the data after wait(); until then it must stay untouched.
  std::unique_ptr<PendingOp> irecv(const torch::Tensor& tensor, int src, int tag);
  void recv(const torch::Tensor& tensor, int src, int tag) { irecv(tensor, src, tag)->wait(); }
  // Posts the transfers as one operation and returns a handle per transfer,
  // in order; counted as the separate sends and receives. NCCL runs this
  // group's operations one at a time in the order posted, a send ending only
  // once the peer's matching receive runs; a batch is one operation, so a
  // send and the receive posted with it wait for neither (Megatron's
  // batch_isend_irecv). A batch of one is isend or irecv.
  std::vector<std::unique_ptr<PendingOp>> batch_isend_irecv(const std::vector<P2POp>& ops);
  void barrier();
  // Whether a receive posted early never holds up this rank's later
  // operations on the group. Gloo runs each on its own; NCCL promises no
  // concurrent progress, so there a receive posted before a send that the
  // peer waits for could deadlock.
  virtual bool receives_post_ahead() const { return true; }

  // Calls and bytes per operation name ("all_reduce", "send", ...).
  const std::map<std::string, OpStats>& stats() const { return stats_; }
  void reset_stats() { stats_.clear(); }

 protected:
  Communicator(std::string name, int rank, int size) : name_(std::move(name)), rank_(rank), size_(size) {}

  virtual void do_all_reduce(torch::Tensor& tensor, ReduceOp op) = 0;
  // Backends without asynchronous collectives complete it before returning.
  virtual std::unique_ptr<PendingOp> do_all_reduce_async(torch::Tensor& tensor, ReduceOp op);
  virtual torch::Tensor do_all_gather(const torch::Tensor& tensor, int64_t dim) = 0;
  virtual torch::Tensor do_reduce_scatter(const torch::Tensor& tensor) = 0;
  virtual void do_broadcast(torch::Tensor& tensor, int root) = 0;
  virtual std::unique_ptr<PendingOp> do_reduce_scatter_async(torch::Tensor& flat, ReduceOp op) = 0;
  virtual std::unique_ptr<PendingOp> do_all_gather_async(torch::Tensor& flat) = 0;
  virtual std::unique_ptr<PendingOp> do_isend(const torch::Tensor& tensor, int dst, int tag) = 0;
  virtual std::unique_ptr<PendingOp> do_irecv(torch::Tensor& tensor, int src, int tag) = 0;
  // Backends whose transfers progress on their own (Gloo) post each alone.
  virtual std::vector<std::unique_ptr<PendingOp>> do_batch_isend_irecv(const std::vector<P2POp>& ops);
  virtual void do_barrier() = 0;
  // Gloo reduces no bf16: such tensors then travel as fp32.
  virtual bool has_bf16() const { return true; }
  // Whether reduce_scatter_async is one (NCCL), or an all-reduce (Gloo),
  // which it then counts as.
  virtual bool has_reduce_scatter() const { return true; }

 private:
  // The tensor as it goes over the wire for this backend, and the buffer a
  // receive into `tensor` lands in.
  torch::Tensor wire(const torch::Tensor& tensor) const;
  torch::Tensor receive_wire(const torch::Tensor& tensor) const;
  // The handles callers wait on: failures name the group and peer; a
  // receive's brings its wire buffer into `target`.
  std::unique_ptr<PendingOp> sent(std::unique_ptr<PendingOp> op, int dst);
  std::unique_ptr<PendingOp> received(std::unique_ptr<PendingOp> op, int src, torch::Tensor wire,
                                      torch::Tensor target);
  // Runs a backend call; its failure becomes a CommunicationError that says
  // which group, operation and peer ("" for collectives) it was.
  template <typename Call>
  auto guarded(const char* op, const std::string& peer, Call&& call);
  void count(const std::string& op, const torch::Tensor& wire, double seconds);

  std::string name_;
  int rank_;
  int size_;
  std::map<std::string, OpStats> stats_;
};

// A group of one: collectives return their input. Used where a dimension of
// the layout has size 1, so layers never test for a missing group.
class SoloCommunicator : public Communicator {
 public:
  explicit SoloCommunicator(std::string name) : Communicator(std::move(name), 0, 1) {}

 protected:
  void do_all_reduce(torch::Tensor&, ReduceOp) override {}
  torch::Tensor do_all_gather(const torch::Tensor& t, int64_t) override { return t; }
  torch::Tensor do_reduce_scatter(const torch::Tensor& t) override { return t; }
  void do_broadcast(torch::Tensor&, int) override {}
  std::unique_ptr<PendingOp> do_reduce_scatter_async(torch::Tensor&, ReduceOp) override;
  std::unique_ptr<PendingOp> do_all_gather_async(torch::Tensor&) override;
  std::unique_ptr<PendingOp> do_isend(const torch::Tensor&, int, int) override;
  std::unique_ptr<PendingOp> do_irecv(torch::Tensor&, int, int) override;
  void do_barrier() override {}
};

// Rank `rank` of a group of `size` that is never asked to communicate: every
// operation throws. Building and drawing a stage asks only rank() and size(),
// so tools that build one rank's share of a layout in a single process (the
// start-up benchmark, tests) stand it in for the real group.
class ShapeOnlyCommunicator : public Communicator {
 public:
  ShapeOnlyCommunicator(std::string name, int rank, int size) : Communicator(std::move(name), rank, size) {}

 protected:
  void do_all_reduce(torch::Tensor&, ReduceOp) override { refuse(); }
  torch::Tensor do_all_gather(const torch::Tensor&, int64_t) override { refuse(); }
  torch::Tensor do_reduce_scatter(const torch::Tensor&) override { refuse(); }
  void do_broadcast(torch::Tensor&, int) override { refuse(); }
  std::unique_ptr<PendingOp> do_reduce_scatter_async(torch::Tensor&, ReduceOp) override { refuse(); }
  std::unique_ptr<PendingOp> do_all_gather_async(torch::Tensor&) override { refuse(); }
  std::unique_ptr<PendingOp> do_isend(const torch::Tensor&, int, int) override { refuse(); }
  std::unique_ptr<PendingOp> do_irecv(torch::Tensor&, int, int) override { refuse(); }
  void do_barrier() override { refuse(); }

 private:
  [[noreturn]] void refuse() const { throw std::logic_error(name() + ": a shape-only group cannot communicate"); }
};

}  // namespace minipretrain
