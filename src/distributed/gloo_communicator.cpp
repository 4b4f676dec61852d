#include "minipretrain/distributed/gloo_communicator.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

namespace minipretrain {
namespace {

void require_cpu_contiguous(const torch::Tensor& t, const char* op) {
  TORCH_CHECK(t.device().is_cpu(), "Gloo communicator: ", op, " needs a CPU tensor, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "Gloo communicator: ", op, " needs a contiguous tensor");
}

// Gloo sums; an average divides once the sum is in (divisor 1: nothing to do).
class GlooPendingOp : public PendingOp {
 public:
  GlooPendingOp(c10::intrusive_ptr<c10d::Work> work, torch::Tensor tensor, int divisor = 1)
      : work_(std::move(work)), tensor_(std::move(tensor)), divisor_(divisor) {}
  void wait() override {
    work_->wait();
    if (divisor_ != 1) tensor_.div_(divisor_);
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  torch::Tensor tensor_;
  int divisor_;
};

c10d::AllreduceOptions reduce_options(ReduceOp op) {
  c10d::AllreduceOptions options;
  options.reduceOp = op == ReduceOp::Max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
  return options;
}

}  // namespace

GlooCommunicator::GlooCommunicator(std::string name, const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                   int size, std::chrono::milliseconds timeout, const std::string& address)
    : Communicator(name, rank, size) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(address));
  options->threads = 2;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(name, store);
  group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, options);
}

// Calls between this class's operations name the class: a subclass that
// queues its operations (NcclRulesCommunicator) runs these from its queue.
void GlooCommunicator::do_all_reduce(torch::Tensor& tensor, ReduceOp op) {
  GlooCommunicator::do_all_reduce_async(tensor, op)->wait();
}

std::unique_ptr<PendingOp> GlooCommunicator::do_all_reduce_async(torch::Tensor& tensor, ReduceOp op) {
  require_cpu_contiguous(tensor, "all_reduce");
  std::vector<torch::Tensor> tensors{tensor};
  return std::make_unique<GlooPendingOp>(group_->allreduce(tensors, reduce_options(op)), tensor,
                                         op == ReduceOp::Avg ? size() : 1);
}

torch::Tensor GlooCommunicator::do_all_gather(const torch::Tensor& tensor, int64_t dim) {
  torch::Tensor input = tensor.contiguous();
  require_cpu_contiguous(input, "all_gather");
  std::vector<torch::Tensor> inputs{input};
  std::vector<std::vector<torch::Tensor>> outputs(1);
  for (int r = 0; r < size(); ++r) outputs[0].push_back(torch::empty_like(input));
  group_->allgather(outputs, inputs)->wait();
  return torch::cat(outputs[0], dim);
}

torch::Tensor GlooCommunicator::do_reduce_scatter(const torch::Tensor& tensor) {
  torch::Tensor sum = tensor.contiguous().clone();
  GlooCommunicator::do_all_reduce(sum, ReduceOp::Sum);
  return sum.chunk(size(), 0)[rank()].clone();
}

void GlooCommunicator::do_broadcast(torch::Tensor& tensor, int root) {
  require_cpu_contiguous(tensor, "broadcast");
  c10d::BroadcastOptions options;
  options.rootRank = root;
  std::vector<torch::Tensor> tensors{tensor};
  group_->broadcast(tensors, options)->wait();
}

// Gloo's own reduce_scatter all-reduces a copy of its input: all-reducing
// the buffer in place moves the same bytes without the copy (the other
// chunks come out reduced too; nobody reads them).
std::unique_ptr<PendingOp> GlooCommunicator::do_reduce_scatter_async(torch::Tensor& flat, ReduceOp op) {
  return GlooCommunicator::do_all_reduce_async(flat, op);
}

// Gloo gathers through a temporary as large as its output: one at a time,
// so that a step's buckets never hold a second copy of the weights.
std::unique_ptr<PendingOp> GlooCommunicator::do_all_gather_async(torch::Tensor& flat) {
  require_cpu_contiguous(flat, "all_gather");
  torch::Tensor mine = flat.chunk(size())[rank()].clone();
  c10::intrusive_ptr<c10d::Work> work = group_->all_gather_single(flat, mine);
  work->wait();
  return std::make_unique<GlooPendingOp>(work, mine);
}

std::unique_ptr<PendingOp> GlooCommunicator::do_isend(const torch::Tensor& tensor, int dst, int tag) {
  torch::Tensor payload = tensor.contiguous();
  require_cpu_contiguous(payload, "send");
  std::vector<torch::Tensor> tensors{payload};
  return std::make_unique<GlooPendingOp>(group_->send(tensors, dst, tag), payload);
}

std::unique_ptr<PendingOp> GlooCommunicator::do_irecv(torch::Tensor& tensor, int src, int tag) {
  require_cpu_contiguous(tensor, "recv");
  std::vector<torch::Tensor> tensors{tensor};
  return std::make_unique<GlooPendingOp>(group_->recv(tensors, src, tag), tensor);
}

void GlooCommunicator::do_barrier() { group_->barrier()->wait(); }

}  // namespace minipretrain
