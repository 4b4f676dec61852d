// Seconds of work on the host or on a device. CUDA kernels run after their
// launch has returned, so on a CUDA device the stopwatch waits for LibTorch's
// stream when it starts and when it is read: a phase is timed by the kernels
// it ran, not by how long launching them took. The waits cost the overlap of
// the next phase's first launches with this phase's last kernels,
// microseconds per phase, and make the step breakdown add up on GPUs as it
// does on CPUs. Only LibTorch's stream: waiting for the whole device would
// also wait for the communicators' streams, i.e. for a neighbour to take a
// pipeline send, which can deadlock interleaved schedules.
#pragma once

#include <chrono>

#include <torch/cuda.h>
#include <torch/torch.h>

#include <cuda_runtime_api.h>

namespace minipretrain {

class Stopwatch {
 public:
  explicit Stopwatch(torch::Device device = torch::kCPU) : device_(device) {
    settle();
    start_ = Clock::now();
  }
  double seconds() const {
    settle();
    return std::chrono::duration<double>(Clock::now() - start_).count();
  }

 private:
  using Clock = std::chrono::steady_clock;
  void settle() const {
    if (!device_.is_cuda()) return;
    cudaStreamSynchronize(cudaStreamLegacy);  // LibTorch computes on the legacy default stream
  }
  torch::Device device_;
  Clock::time_point start_;
};

}  // namespace minipretrain
