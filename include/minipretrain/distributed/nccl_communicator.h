// Communicator over c10d's ProcessGroupNCCL, for CUDA tensors: the process
// group every PyTorch multi-GPU job runs on, with its watchdog (an operation
// that outlives the timeout, or an NCCL error, takes the process down with a
// line naming the group and the operation), its bounded communicator
// creation and its abort.
//
// Operations run on the group's NCCL streams after the kernels queued before
// them; waiting for one makes LibTorch's later kernels wait for it, not the
// host (except barrier). NCCL runs one communicator's operations in the order
// posted and a send ends only once the peer's matching receive runs, so every
// transfer goes out as an NCCL group (batch_isend_irecv; a single send is a
// group of one), on the group's own communicator.
#pragma once

#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

class NcclCommunicator : public Communicator {
 public:
  // Joins the group named `name` on GPU `device`; fails within `timeout`
  // when a member never comes. Throws std::runtime_error with the CUDA reason
  // when no GPU can be used, for example on a machine without one.
  NcclCommunicator(std::string name, const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                   int device, std::chrono::milliseconds timeout);
  // Aborts the NCCL communicators when an error unwinds through it (waiting
  // for kernels stuck on a dead peer would never end); shuts down otherwise.
  ~NcclCommunicator() override;
  bool receives_post_ahead() const override { return false; }

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
  struct State;  // the process group, kept out of this header
  std::unique_ptr<State> state_;
};

}  // namespace minipretrain
