#include "minipretrain/distributed/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <functional>

namespace minipretrain {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("NCCL communicator: ") + what + ": " + cudaGetErrorString(err));
}

void check_nccl(ncclResult_t result, const char* what) {
  if (result != ncclSuccess)
    throw std::runtime_error(std::string("NCCL communicator: ") + what + ": " + ncclGetErrorString(result));
}

ncclDataType_t nccl_type(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt: return ncclInt32;
    case torch::kLong: return ncclInt64;
    case torch::kByte: return ncclUint8;
    default: throw std::runtime_error("NCCL communicator: unsupported dtype " + std::string(c10::toString(t.scalar_type())));
  }
}

void require_cuda_contiguous(const torch::Tensor& t, const char* op) {
  TORCH_CHECK(t.is_cuda(), "NCCL communicator: ", op, " needs a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "NCCL communicator: ", op, " needs a contiguous tensor");
}

// Later work queued on `to` waits for the work queued on `from` so far: the
// streams are ordered on the device, and the host goes on.
void order(cudaStream_t from, cudaStream_t to) {
  cudaEvent_t done;
  check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreate");
  check_cuda(cudaEventRecord(done, from), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(to, done, 0), "cudaStreamWaitEvent");
  check_cuda(cudaEventDestroy(done), "cudaEventDestroy");  // released once it has fired
}

// LibTorch computes on the legacy default stream; ours are non-blocking.
const cudaStream_t kCompute = cudaStreamLegacy;

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;       // collectives and receives
  cudaStream_t send_stream = nullptr;  // sends only
  int device = 0;

  // Queues `op` on `s` behind the kernels that produce its data.
  void enqueue(const std::function<ncclResult_t(cudaStream_t)>& op, const char* what, cudaStream_t s) {
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    order(kCompute, s);
    check_nccl(op(s), what);
  }
  // As enqueue, and LibTorch's later kernels wait for the result.
  void run(const std::function<ncclResult_t(cudaStream_t)>& op, const char* what) {
    enqueue(op, what, stream);
    order(stream, kCompute);
  }
};

namespace {

// An operation queued on one of our streams. Waiting orders LibTorch's later
// kernels after it (the host does not block) and releases the tensor it kept
// alive, whose memory the caching allocator may then hand to those kernels.
class NcclPendingOp : public PendingOp {
 public:
  NcclPendingOp(int device, cudaStream_t stream, torch::Tensor keep_alive)
      : device_(device), stream_(stream), tensor_(std::move(keep_alive)) {}
  // Dropped unawaited (a step that failed half-way): its memory must still not
  // go to kernels queued before the operation ends.
  ~NcclPendingOp() override {
    try {
      wait();
    } catch (const std::exception&) {  // the device is already failing; nothing better to do here
    }
  }
  void wait() override {
    if (!tensor_.defined()) return;
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    order(stream_, kCompute);
    tensor_ = torch::Tensor();
  }

 private:
  int device_;
  cudaStream_t stream_;
  torch::Tensor tensor_;
};

}  // namespace

NcclCommunicator::NcclCommunicator(std::string name, const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                   int size, int device, std::chrono::milliseconds timeout)
    : Communicator(name, rank, size), state_(std::make_unique<State>()) {
  int count = 0;
  check_cuda(cudaGetDeviceCount(&count), "no usable CUDA device");
  if (device >= count)
    throw std::runtime_error("NCCL communicator: local device " + std::to_string(device) + " but only " +
                             std::to_string(count) + " CUDA devices are visible");
  state_->device = device;
  check_cuda(cudaSetDevice(device), "cudaSetDevice");

  ncclUniqueId id;
  const std::string key = name + "/nccl_unique_id";
  if (rank == 0) {
    check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    const auto* bytes = reinterpret_cast<const uint8_t*>(&id);
    store->set(key, std::vector<uint8_t>(bytes, bytes + sizeof(id)));
  } else {
    store->wait({key}, timeout);
    std::vector<uint8_t> bytes = store->get(key);
    if (bytes.size() != sizeof(id)) throw std::runtime_error("NCCL communicator: malformed unique id in the store");
    std::memcpy(&id, bytes.data(), sizeof(id));
  }
  check_nccl(ncclCommInitRank(&state_->comm, size, id, rank), "ncclCommInitRank");
  check_cuda(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  check_cuda(cudaStreamCreateWithFlags(&state_->send_stream, cudaStreamNonBlocking), "cudaStreamCreate");
}

NcclCommunicator::~NcclCommunicator() {
  if (state_->comm) ncclCommDestroy(state_->comm);
  if (state_->stream) cudaStreamDestroy(state_->stream);
  if (state_->send_stream) cudaStreamDestroy(state_->send_stream);
}

namespace {

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Max ? ncclMax : (op == ReduceOp::Avg ? ncclAvg : ncclSum); }

}  // namespace

void NcclCommunicator::do_all_reduce(torch::Tensor& tensor, ReduceOp op) {
  require_cuda_contiguous(tensor, "all_reduce");
  state_->run([&](cudaStream_t s) {
    return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor), nccl_op(op),
                         state_->comm, s);
  }, "ncclAllReduce");
}

std::unique_ptr<PendingOp> NcclCommunicator::do_all_reduce_async(torch::Tensor& tensor, ReduceOp op) {
  require_cuda_contiguous(tensor, "all_reduce");
  state_->enqueue([&](cudaStream_t s) {
    return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor), nccl_op(op),
                         state_->comm, s);
  }, "ncclAllReduce", state_->stream);
  return std::make_unique<NcclPendingOp>(state_->device, state_->stream, tensor);
}

torch::Tensor NcclCommunicator::do_all_gather(const torch::Tensor& tensor, int64_t dim) {
  torch::Tensor input = tensor.contiguous();
  require_cuda_contiguous(input, "all_gather");
  std::vector<int64_t> shape = input.sizes().vec();
  shape.insert(shape.begin(), size());
  torch::Tensor out = torch::empty(shape, input.options());
  state_->run([&](cudaStream_t s) {
    return ncclAllGather(input.data_ptr(), out.data_ptr(), input.numel(), nccl_type(input), state_->comm, s);
  }, "ncclAllGather");
  return torch::cat(out.unbind(0), dim);
}

torch::Tensor NcclCommunicator::do_reduce_scatter(const torch::Tensor& tensor) {
  torch::Tensor input = tensor.contiguous();
  require_cuda_contiguous(input, "reduce_scatter");
  torch::Tensor out = torch::empty_like(input.chunk(size(), 0)[0]).contiguous();
  state_->run([&](cudaStream_t s) {
    return ncclReduceScatter(input.data_ptr(), out.data_ptr(), out.numel(), nccl_type(input), ncclSum,
                             state_->comm, s);
  }, "ncclReduceScatter");
  return out;
}

void NcclCommunicator::do_broadcast(torch::Tensor& tensor, int root) {
  require_cuda_contiguous(tensor, "broadcast");
  state_->run([&](cudaStream_t s) {
    return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor), root,
                         state_->comm, s);
  }, "ncclBroadcast");
}

std::unique_ptr<PendingOp> NcclCommunicator::do_isend(const torch::Tensor& tensor, int dst, int /*tag*/) {
  torch::Tensor payload = tensor.contiguous();
  require_cuda_contiguous(payload, "send");
  state_->enqueue([&](cudaStream_t s) {
    return ncclSend(payload.data_ptr(), payload.numel(), nccl_type(payload), dst, state_->comm, s);
  }, "ncclSend", state_->send_stream);
  return std::make_unique<NcclPendingOp>(state_->device, state_->send_stream, payload);
}

std::unique_ptr<PendingOp> NcclCommunicator::do_irecv(torch::Tensor& tensor, int src, int /*tag*/) {
  require_cuda_contiguous(tensor, "recv");
  state_->enqueue([&](cudaStream_t s) {
    return ncclRecv(tensor.data_ptr(), tensor.numel(), nccl_type(tensor), src, state_->comm, s);
  }, "ncclRecv", state_->stream);
  return std::make_unique<NcclPendingOp>(state_->device, state_->stream, tensor);
}

std::vector<std::unique_ptr<PendingOp>> NcclCommunicator::do_batch_isend_irecv(const std::vector<P2POp>& ops) {
  std::vector<torch::Tensor> tensors;
  std::vector<ncclDataType_t> types;  // found before the group opens, which a throw would leave open
  for (const P2POp& op : ops) {
    const bool send = op.kind == P2POp::Send;
    tensors.push_back(send ? op.tensor.contiguous() : op.tensor);
    require_cuda_contiguous(tensors.back(), send ? "send" : "recv");
    types.push_back(nccl_type(tensors.back()));
  }
  state_->enqueue([&](cudaStream_t s) {
    ncclResult_t result = ncclGroupStart();
    for (size_t i = 0; i < ops.size() && result == ncclSuccess; ++i) {
      const torch::Tensor& t = tensors[i];
      result = ops[i].kind == P2POp::Send ? ncclSend(t.data_ptr(), t.numel(), types[i], ops[i].peer, state_->comm, s)
                                          : ncclRecv(t.data_ptr(), t.numel(), types[i], ops[i].peer, state_->comm, s);
    }
    const ncclResult_t ended = ncclGroupEnd();  // closed after a failure too
    return result != ncclSuccess ? result : ended;
  }, "ncclSend/ncclRecv group", state_->stream);
  std::vector<std::unique_ptr<PendingOp>> handles;
  for (const torch::Tensor& t : tensors)
    handles.push_back(std::make_unique<NcclPendingOp>(state_->device, state_->stream, t));
  return handles;
}

void NcclCommunicator::do_barrier() {
  torch::Tensor token = torch::zeros({1}, torch::TensorOptions().device(torch::kCUDA, state_->device));
  do_all_reduce(token, ReduceOp::Sum);
  check_cuda(cudaStreamSynchronize(state_->stream), "barrier");  // the host waits too
}

}  // namespace minipretrain
