// A Gloo group that keeps NCCL's rules, so that CPU runs hang where GPU runs
// would, and tests catch it without GPUs:
//  - one group's operations run one at a time, in the order posted (NCCL
//    runs one communicator's kernels in order, whatever the stream);
//  - a send ends only once the peer's matching receive has run (past NCCL's
//    small per-peer buffer a send waits for its receive); a batch of
//    transfers is one operation, as an NCCL group is.
// Operations run on a thread of the group's own; the caller waits as it
// would on Gloo. Chosen for the tp, dp and pp groups (the ones that are NCCL
// on GPUs) when MINIPRETRAIN_NCCL_RULES=1; the test harness sets it for every
// multi-process run.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "minipretrain/distributed/gloo_communicator.h"

namespace minipretrain {

class NcclRulesCommunicator : public GlooCommunicator {
 public:
  NcclRulesCommunicator(std::string name, const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                        std::chrono::milliseconds timeout, const std::string& address);
  ~NcclRulesCommunicator() override;
  bool receives_post_ahead() const override { return false; }

  // Whether MINIPRETRAIN_NCCL_RULES asks for this communicator.
  static bool requested();

 protected:
  void do_all_reduce(torch::Tensor& tensor, ReduceOp op) override;
  std::unique_ptr<PendingOp> do_all_reduce_async(torch::Tensor& tensor, ReduceOp op) override;
  torch::Tensor do_all_gather(const torch::Tensor& tensor, int64_t dim) override;
  torch::Tensor do_reduce_scatter(const torch::Tensor& tensor) override;
  void do_broadcast(torch::Tensor& tensor, int root) override;
  std::unique_ptr<PendingOp> do_reduce_scatter_async(torch::Tensor& flat, ReduceOp op) override;
  std::unique_ptr<PendingOp> do_all_gather_async(torch::Tensor& flat) override;
  std::unique_ptr<PendingOp> do_isend(const torch::Tensor& tensor, int dst, int tag) override;
  std::unique_ptr<PendingOp> do_irecv(torch::Tensor& tensor, int src, int tag) override;
  std::vector<std::unique_ptr<PendingOp>> do_batch_isend_irecv(const std::vector<P2POp>& ops) override;
  void do_barrier() override;

 private:
  // Queues `job` behind the group's earlier operations; the future is ready
  // once it has run, and holds what it threw.
  std::shared_future<void> post(std::function<void()> job);
  // The transfers as one operation: each send ends when its receiver
  // acknowledges, each receive acknowledges once its data is in.
  void transfer(const std::vector<P2POp>& ops);

  struct Queue;  // the jobs and the thread that runs them
  std::shared_ptr<Queue> queue_;
};

}  // namespace minipretrain
