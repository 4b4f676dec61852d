#include "minipretrain/distributed/nccl_communicator.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <exception>
#include <mutex>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

namespace minipretrain {
namespace {

void require_cuda_contiguous(const torch::Tensor& t, const char* op) {
  TORCH_CHECK(t.is_cuda(), "NCCL communicator: ", op, " needs a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "NCCL communicator: ", op, " needs a contiguous tensor");
}

c10d::ReduceOp reduce_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return c10d::ReduceOp::SUM;
    case ReduceOp::Avg: return c10d::ReduceOp::AVG;
    case ReduceOp::Max: return c10d::ReduceOp::MAX;
  }
  throw std::logic_error("unknown ReduceOp");
}

// Waiting orders LibTorch's later kernels after the operation; the host goes
// on. The process group keeps the tensors alive until the operation ends, so
// a handle dropped unawaited frees nothing a kernel still uses.
class NcclPendingOp : public PendingOp {
 public:
  explicit NcclPendingOp(c10::intrusive_ptr<c10d::Work> work) : work_(std::move(work)) {}
  void wait() override { work_->wait(); }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
};

// The watchdog ends the process by throwing from its thread, after logging
// the group and the operation; this adds the step.
void name_the_step_when_the_watchdog_ends_us() {
  static std::once_flag once;
  static std::terminate_handler previous = nullptr;
  std::call_once(once, [] {
    previous = std::set_terminate([] {
      std::fprintf(stderr, "minipretrain: this rank ends at step %lld: an NCCL operation failed or outlived "
                   "--dist-timeout (the lines above name the group and the operation)\n",
                   static_cast<long long>(current_step()));
      std::fflush(stderr);
      if (previous) previous();
      std::abort();
    });
  });
}

}  // namespace

struct NcclCommunicator::State {
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> group;
  int device = 0;
};

NcclCommunicator::NcclCommunicator(std::string name, const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                   int size, int device, std::chrono::milliseconds timeout)
    : Communicator(name, rank, size), state_(std::make_unique<State>()) {
  int count = 0;
  const cudaError_t found = cudaGetDeviceCount(&count);
  if (found != cudaSuccess)
    throw std::runtime_error(std::string("NCCL communicator: no usable CUDA device: ") + cudaGetErrorString(found));
  if (device >= count)
    throw std::runtime_error("NCCL communicator: local device " + std::to_string(device) + " but only " +
                             std::to_string(count) + " CUDA devices are visible");
  state_->device = device;
  name_the_step_when_the_watchdog_ends_us();

  auto options = c10d::ProcessGroupNCCL::Options::create();
  // The watchdog ends the process when an operation outlives this; its line
  // names the group (group_desc) and the operation.
  options->timeout = timeout;
  options->group_name = name;
  options->group_desc = name;
  // Non-blocking NCCL communicators: creation that a missing member would
  // block forever fails at the timeout instead, and abort never waits.
  options->config.blocking = 0;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(name, store);
  state_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, size, options);
  // Created now, all members together, rather than inside the first step.
  state_->group->eagerConnectSingleDevice(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device)));
}

NcclCommunicator::~NcclCommunicator() {
  if (!state_->group) return;
  try {
    if (std::uncaught_exceptions() > 0) {
      state_->group->abort();
    } else {
      state_->group->shutdown();
    }
  } catch (const std::exception&) {  // tearing down after a failure: nothing better to do here
  }
}

void NcclCommunicator::do_all_reduce(torch::Tensor& tensor, ReduceOp op) { do_all_reduce_async(tensor, op)->wait(); }

std::unique_ptr<PendingOp> NcclCommunicator::do_all_reduce_async(torch::Tensor& tensor, ReduceOp op) {
  require_cuda_contiguous(tensor, "all_reduce");
  std::vector<torch::Tensor> tensors{tensor};
  c10d::AllreduceOptions options;
  options.reduceOp = reduce_op(op);
  return std::make_unique<NcclPendingOp>(state_->group->allreduce(tensors, options));
}

torch::Tensor NcclCommunicator::do_all_gather(const torch::Tensor& tensor, int64_t dim) {
  torch::Tensor input = tensor.contiguous();
  require_cuda_contiguous(input, "all_gather");
  std::vector<int64_t> shape = input.sizes().vec();
  shape.insert(shape.begin(), size());
  torch::Tensor out = torch::empty(shape, input.options());
  state_->group->all_gather_single(out, input)->wait();
  return torch::cat(out.unbind(0), dim);
}

torch::Tensor NcclCommunicator::do_reduce_scatter(const torch::Tensor& tensor) {
  torch::Tensor input = tensor.contiguous();
  require_cuda_contiguous(input, "reduce_scatter");
  torch::Tensor out = torch::empty_like(input.chunk(size(), 0)[0]).contiguous();
  state_->group->reduce_scatter_single(out, input)->wait();
  return out;
}

void NcclCommunicator::do_broadcast(torch::Tensor& tensor, int root) {
  require_cuda_contiguous(tensor, "broadcast");
  std::vector<torch::Tensor> tensors{tensor};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  state_->group->broadcast(tensors, options)->wait();
}

// In place, as NCCL allows when a rank's chunk sits at its rank's offset
// (Megatron's distributed optimizer does the same).
std::unique_ptr<PendingOp> NcclCommunicator::do_reduce_scatter_async(torch::Tensor& flat, ReduceOp op) {
  require_cuda_contiguous(flat, "reduce_scatter");
  torch::Tensor mine = flat.chunk(size())[rank()];
  c10d::ReduceScatterOptions options;
  options.reduceOp = reduce_op(op);
  return std::make_unique<NcclPendingOp>(state_->group->reduce_scatter_single(mine, flat, options));
}

std::unique_ptr<PendingOp> NcclCommunicator::do_all_gather_async(torch::Tensor& flat) {
  require_cuda_contiguous(flat, "all_gather");
  torch::Tensor mine = flat.chunk(size())[rank()];
  return std::make_unique<NcclPendingOp>(state_->group->all_gather_single(flat, mine));
}

// Single transfers are groups of one: every transfer then runs on the
// group's communicator, in the order posted, as the collectives do (c10d
// would give a lone send a communicator of its own per pair of ranks).
std::unique_ptr<PendingOp> NcclCommunicator::do_isend(const torch::Tensor& tensor, int dst, int tag) {
  return std::move(do_batch_isend_irecv({{P2POp::Send, tensor, dst, tag}}).front());
}

std::unique_ptr<PendingOp> NcclCommunicator::do_irecv(torch::Tensor& tensor, int src, int tag) {
  return std::move(do_batch_isend_irecv({{P2POp::Receive, tensor, src, tag}}).front());
}

std::vector<std::unique_ptr<PendingOp>> NcclCommunicator::do_batch_isend_irecv(const std::vector<P2POp>& ops) {
  std::vector<std::vector<torch::Tensor>> tensors;  // checked before the group opens, which a throw would leave open
  for (const P2POp& op : ops) {
    const bool send = op.kind == P2POp::Send;
    tensors.push_back({send ? op.tensor.contiguous() : op.tensor});
    require_cuda_contiguous(tensors.back().front(), send ? "send" : "recv");
  }
  c10d::ProcessGroupNCCL& group = *state_->group;
  group.startCoalescing();
  try {
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].kind == P2POp::Send) {
        group.send(tensors[i], ops[i].peer, ops[i].tag);
      } else {
        group.recv(tensors[i], ops[i].peer, ops[i].tag);
      }
    }
  } catch (...) {
    group.endCoalescing();  // closed after a failure too
    throw;
  }
  const c10::intrusive_ptr<c10d::Work> work = group.endCoalescing();
  std::vector<std::unique_ptr<PendingOp>> handles;
  for (size_t i = 0; i < ops.size(); ++i) handles.push_back(std::make_unique<NcclPendingOp>(work));
  return handles;
}

void NcclCommunicator::do_barrier() {
  c10d::BarrierOptions options;
  options.device_ids = {state_->device};
  state_->group->barrier(options)->wait();  // the host waits too
}

}  // namespace minipretrain
