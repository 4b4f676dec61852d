#include "minipretrain/distributed/communicator.h"

namespace minipretrain {

void Communicator::count(const std::string& op, const torch::Tensor& tensor) {
  OpStats& s = stats_[op];
  s.calls += 1;
  s.bytes += tensor.numel() * static_cast<int64_t>(tensor.element_size());
}

void Communicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  count("all_reduce", tensor);
  do_all_reduce(tensor, op);
}

torch::Tensor Communicator::all_gather(const torch::Tensor& tensor, int64_t dim) {
  count("all_gather", tensor);
  return do_all_gather(tensor, dim);
}

torch::Tensor Communicator::reduce_scatter(const torch::Tensor& tensor) {
  TORCH_CHECK(tensor.size(0) % size_ == 0, "reduce_scatter: dim 0 of size ", tensor.size(0),
              " does not divide over ", size_, " ranks");
  count("reduce_scatter", tensor);
  return do_reduce_scatter(tensor);
}

void Communicator::broadcast(torch::Tensor& tensor, int root) {
  count("broadcast", tensor);
  do_broadcast(tensor, root);
}

std::unique_ptr<SendHandle> Communicator::isend(const torch::Tensor& tensor, int dst, int tag) {
  count("send", tensor);
  return do_isend(tensor, dst, tag);
}

void Communicator::recv(torch::Tensor& tensor, int src, int tag) {
  count("recv", tensor);
  do_recv(tensor, src, tag);
}

void Communicator::barrier() {
  stats_["barrier"].calls += 1;
  do_barrier();
}

std::unique_ptr<SendHandle> SoloCommunicator::do_isend(const torch::Tensor&, int dst, int) {
  TORCH_CHECK(false, name(), ": a group of one cannot send to rank ", dst);
}

void SoloCommunicator::do_recv(torch::Tensor&, int src, int) {
  TORCH_CHECK(false, name(), ": a group of one cannot receive from rank ", src);
}

}  // namespace minipretrain
