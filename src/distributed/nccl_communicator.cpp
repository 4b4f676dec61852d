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

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;       // collectives and receives
  cudaStream_t send_stream = nullptr;  // sends only
  int device = 0;

  void run(const std::function<ncclResult_t(cudaStream_t)>& op, const char* what, cudaStream_t s) {
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    // LibTorch computes on the legacy default stream; our streams are
    // non-blocking, so this waits for the data without waiting for a send.
    check_cuda(cudaStreamSynchronize(cudaStreamLegacy), "waiting for the producing kernels");
    check_nccl(op(s), what);
  }
};

namespace {

class NcclPendingSend : public PendingOp {
 public:
  NcclPendingSend(cudaStream_t stream, torch::Tensor keep_alive) : stream_(stream), tensor_(std::move(keep_alive)) {}
  void wait() override { check_cuda(cudaStreamSynchronize(stream_), "send"); }

 private:
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

void NcclCommunicator::do_all_reduce(torch::Tensor& tensor, ReduceOp op) {
  require_cuda_contiguous(tensor, "all_reduce");
  const ncclRedOp_t nccl_op = op == ReduceOp::Max ? ncclMax : (op == ReduceOp::Avg ? ncclAvg : ncclSum);
  state_->run([&](cudaStream_t s) {
    return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor), nccl_op,
                         state_->comm, s);
  }, "ncclAllReduce", state_->stream);
  check_cuda(cudaStreamSynchronize(state_->stream), "all_reduce");
}

torch::Tensor NcclCommunicator::do_all_gather(const torch::Tensor& tensor, int64_t dim) {
  torch::Tensor input = tensor.contiguous();
  require_cuda_contiguous(input, "all_gather");
  std::vector<int64_t> shape = input.sizes().vec();
  shape.insert(shape.begin(), size());
  torch::Tensor out = torch::empty(shape, input.options());
  state_->run([&](cudaStream_t s) {
    return ncclAllGather(input.data_ptr(), out.data_ptr(), input.numel(), nccl_type(input), state_->comm, s);
  }, "ncclAllGather", state_->stream);
  check_cuda(cudaStreamSynchronize(state_->stream), "all_gather");
  return torch::cat(out.unbind(0), dim);
}

torch::Tensor NcclCommunicator::do_reduce_scatter(const torch::Tensor& tensor) {
  torch::Tensor input = tensor.contiguous();
  require_cuda_contiguous(input, "reduce_scatter");
  torch::Tensor out = torch::empty_like(input.chunk(size(), 0)[0]).contiguous();
  state_->run([&](cudaStream_t s) {
    return ncclReduceScatter(input.data_ptr(), out.data_ptr(), out.numel(), nccl_type(input), ncclSum,
                             state_->comm, s);
  }, "ncclReduceScatter", state_->stream);
  check_cuda(cudaStreamSynchronize(state_->stream), "reduce_scatter");
  return out;
}

void NcclCommunicator::do_broadcast(torch::Tensor& tensor, int root) {
  require_cuda_contiguous(tensor, "broadcast");
  state_->run([&](cudaStream_t s) {
    return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor), root,
                         state_->comm, s);
  }, "ncclBroadcast", state_->stream);
  check_cuda(cudaStreamSynchronize(state_->stream), "broadcast");
}

std::unique_ptr<PendingOp> NcclCommunicator::do_isend(const torch::Tensor& tensor, int dst, int /*tag*/) {
  torch::Tensor payload = tensor.contiguous();
  require_cuda_contiguous(payload, "send");
  state_->run([&](cudaStream_t s) {
    return ncclSend(payload.data_ptr(), payload.numel(), nccl_type(payload), dst, state_->comm, s);
  }, "ncclSend", state_->send_stream);
  return std::make_unique<NcclPendingSend>(state_->send_stream, payload);
}

void NcclCommunicator::do_recv(torch::Tensor& tensor, int src, int /*tag*/) {
  require_cuda_contiguous(tensor, "recv");
  state_->run([&](cudaStream_t s) {
    return ncclRecv(tensor.data_ptr(), tensor.numel(), nccl_type(tensor), src, state_->comm, s);
  }, "ncclRecv", state_->stream);
  check_cuda(cudaStreamSynchronize(state_->stream), "recv");
}

void NcclCommunicator::do_barrier() {
  torch::Tensor token = torch::zeros({1}, torch::TensorOptions().device(torch::kCUDA, state_->device));
  do_all_reduce(token, ReduceOp::Sum);
}

}  // namespace minipretrain
