// Communicator over plain NCCL, for CUDA tensors. Rank 0 creates the NCCL unique id and passes it through the store.
//
// Every operation runs on a stream of its own, ordered by CUDA events after
// the kernels LibTorch queued before it (they produce its data); LibTorch's
// later kernels wait for a blocking operation's result, and for an
// asynchronous one's once it is waited for. The host never waits for the
// device (except in barrier), so collectives and transfers overlap compute
// queued around them. Single sends run on a stream of their own; still, NCCL
// runs one communicator's operations in the order they were posted, whatever
// the stream, and a send ends only once the peer's matching receive runs, so
// transfers that must progress together go as one NCCL group
// (batch_isend_irecv).
#pragma once

#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

class NcclCommunicator : public Communicator {
 public:
  // Throws std::runtime_error with the CUDA or NCCL reason when no GPU can be
  // used, for example on a machine without one.
  NcclCommunicator(std::string name, const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                   int device, std::chrono::milliseconds timeout);
  ~NcclCommunicator() override;
  bool receives_post_ahead() const override { return false; }

 protected:
  void do_all_reduce(torch::Tensor& tensor, ReduceOp op) override;
  std::unique_ptr<PendingOp> do_all_reduce_async(torch::Tensor& tensor, ReduceOp op) override;
  torch::Tensor do_all_gather(const torch::Tensor& tensor, int64_t dim) override;
  torch::Tensor do_reduce_scatter(const torch::Tensor& tensor) override;
  void do_broadcast(torch::Tensor& tensor, int root) override;
  std::unique_ptr<PendingOp> do_isend(const torch::Tensor& tensor, int dst, int tag) override;
  std::unique_ptr<PendingOp> do_irecv(torch::Tensor& tensor, int src, int tag) override;
  std::vector<std::unique_ptr<PendingOp>> do_batch_isend_irecv(const std::vector<P2POp>& ops) override;
  void do_barrier() override;

 private:
  struct State;  // NCCL and CUDA handles, kept out of this header
  std::unique_ptr<State> state_;
};

}  // namespace minipretrain
