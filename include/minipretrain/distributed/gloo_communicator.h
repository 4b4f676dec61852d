// Communicator over c10d::ProcessGroupGloo, for CPU tensors. Gloo has no AVG
// reduction: AVG is a SUM then a division. Its reduce-scatters are
// all-reduces (c10d's Gloo reduce_scatter is one, of a copy), and count as
// such.
#pragma once

#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

class GlooCommunicator : public Communicator {
 public:
  // Joins the group named `name` (its members' keys live under that prefix of
  // `store`); blocks until every member has joined or `timeout` passes. Gloo
  // listens on and connects from `address`, a numeric local address (see
  // choose_gloo_address).
  GlooCommunicator(std::string name, const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                   std::chrono::milliseconds timeout, const std::string& address);

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
  void do_barrier() override;
  bool has_bf16() const override { return false; }
  bool has_reduce_scatter() const override { return false; }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};

}  // namespace minipretrain
