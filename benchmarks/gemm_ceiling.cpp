// The GEMM ceiling of this machine for fp32 and bf16: the best of several
// n x n x n products with LibTorch's own kernels (OpenBLAS for fp32, oneDNN
// for bf16 on CPUs), the figure MFU is measured against.
// Usage: minipretrain-gemm-ceiling [N] [THREADS]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <torch/torch.h>

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 2048;
  if (argc > 2) torch::set_num_threads(std::atoi(argv[2]));
  torch::NoGradGuard no_grad;
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const torch::Tensor a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
    torch::Tensor c = torch::mm(a, b);  // warm-up
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
      const auto start = std::chrono::steady_clock::now();
      c = torch::mm(a, b);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::printf("gemm %s n=%lld threads=%d: %.1f GFLOP/s\n", dtype == torch::kFloat ? "fp32" : "bf16",
                static_cast<long long>(n), torch::get_num_threads(), 2.0 * n * n * n / best / 1e9);
  }
  return 0;
}
