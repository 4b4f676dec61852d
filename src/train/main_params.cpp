#include "minipretrain/train/main_params.h"

#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <fstream>
#include <sstream>

#include <cuda_runtime_api.h>

#include "minipretrain/parallel/grad_sync.h"

namespace minipretrain {

MainParams::MainParams(std::vector<std::pair<std::string, torch::Tensor>> parameters, torch::ScalarType dtype,
                       int64_t shards, const std::function<void(size_t, const torch::Tensor&)>& see_fp32)
    : dtype_(dtype) {
  torch::NoGradGuard no_grad;
  int64_t total = 0;
  std::vector<int64_t> sizes;
  for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
    Entry e{it->first, it->second, it->second, torch::Tensor(), total, true};
    total += e.model.numel();
    sizes.push_back(e.model.numel());
    entries_.push_back(e);
  }
  const torch::TensorOptions options = parameters.front().second.options();
  const int64_t length = GradientBuckets::padded_length(sizes, shards);
  if (shards > 1) {
    flat_model_ = torch::empty({length}, options.dtype(dtype_));
    flat_model_.narrow(0, total, length - total).zero_();
    for (size_t i = 0; i < entries_.size(); ++i) {
      Entry& e = entries_[i];
      if (see_fp32) see_fp32(i, e.model);
      torch::Tensor view = flat_model_.narrow(0, e.offset, e.model.numel()).view_as(e.model);
      view.copy_(e.model);
      e.model.set_data(view);
      e.master = dtype_ == torch::kFloat ? e.model : torch::Tensor();
    }
  }
  flat_grad_ = torch::zeros({length}, options.dtype(torch::kFloat));
  for (size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    e.grad = flat_grad_.narrow(0, e.offset, e.model.numel()).view_as(e.model);
    if (dtype_ == torch::kFloat) {
      e.model.mutable_grad() = e.grad;  // autograd adds into it in place
    } else if (shards == 1) {
      e.master = e.model.detach().clone();
      e.model.set_data(e.model.to(dtype_));
    }
    auto accumulator = torch::autograd::impl::grad_accumulator(e.model);
    if (!accumulator) continue;  // no gradient: its bucket starts at finish()
    accumulators_.push_back(accumulator);
    accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list& inputs) {
          // A B pass (zb-h1) hands an undefined gradient to the weights whose
          // W it defers; the node then adds nothing, but its hooks still run.
          if (!inputs.empty() && inputs[0].defined()) accumulated(i);
          return outputs;
        }));
  }
}

void MainParams::zero_grad(int64_t backwards) {
  backwards_ = backwards;
  for (Entry& e : entries_) {
    e.fresh = true;
    e.arrived = 0;
  }
  if (dtype_ == torch::kFloat) flat_grad_.zero_();
}

void MainParams::accumulated(size_t i) {
  Entry& e = entries_[i];
  if (dtype_ != torch::kFloat) {
    torch::NoGradGuard no_grad;
    const torch::Tensor g = e.model.grad();
    if (e.fresh)
      e.grad.copy_(g);
    else
      e.grad.add_(g);
    e.fresh = false;
    e.model.mutable_grad().reset();  // the next backward hands over a new tensor instead of adding in bf16
  }
  if (++e.arrived == backwards_ && on_final) on_final(i);
}

void MainParams::finish_accumulation() {
  if (dtype_ == torch::kFloat) return;
  for (Entry& e : entries_)
    if (e.fresh) {
      e.grad.zero_();
      e.fresh = false;
    }
}

void MainParams::copy_to_model() {
  if (dtype_ == torch::kFloat || flat_model_.defined()) return;
  torch::NoGradGuard no_grad;
  for (Entry& e : entries_) e.model.copy_(e.master);
}

namespace {

bool cpu_has_native_bf16() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream flags(line);
    for (std::string flag; flags >> flag;)
      if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
    return false;
  }
  return false;
}

// Ampere (compute capability 8.0) and newer.
bool cuda_has_native_bf16(int device) {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  return major >= 8;
}

}  // namespace

torch::ScalarType resolve_precision(Precision precision, const torch::Device& device) {
  if (precision == Precision::Fp32) return torch::kFloat;
  if (precision == Precision::Bf16) return torch::kBFloat16;
  if (device.is_cuda()) return cuda_has_native_bf16(device.index()) ? torch::kBFloat16 : torch::kFloat;
  return cpu_has_native_bf16() ? torch::kBFloat16 : torch::kFloat;
}

}  // namespace minipretrain
