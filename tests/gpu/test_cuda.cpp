// Tests that need a CUDA device: the NCCL communicator and training steps on
// the GPU against the same steps on the CPU. Built whenever CMake finds CUDA
// with NCCL (also next to a CPU-only LibTorch, as on our CI machines, where
// every case skips with a message); they run for real on a GPU machine with a
// CUDA build of LibTorch.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include "minipretrain/distributed/nccl_communicator.h"
#include "minipretrain/distributed/socket_store.h"
#include "minipretrain/distributed/store_server.h"
#include "../test_support.h"

namespace minipretrain {
namespace {

using namespace std::chrono_literals;

#define REQUIRE_GPUS(n)                                                                       \
  if (!torch::cuda::is_available() || static_cast<int>(torch::cuda::device_count()) < (n))  \
  GTEST_SKIP() << "needs " << (n) << " CUDA device(s); this machine has "                    \
               << (torch::cuda::is_available() ? torch::cuda::device_count() : 0)

torch::TensorOptions on_gpu(int device = 0) {
  return torch::TensorOptions().device(torch::kCUDA, device).dtype(torch::kFloat);
}

// Runs fn(rank, communicator) for ranks 0 and 1 of an NCCL pair on GPUs 0 and
// 1, each on its own thread, and fails with what a rank threw.
void on_two_gpus(const std::string& name, const std::function<void(int, NcclCommunicator&)>& fn) {
  StoreServer server("127.0.0.1", 0);
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      try {
        auto store = c10::make_intrusive<SocketStore>("127.0.0.1", server.port(), 30s);
        NcclCommunicator comm(name, store, r, 2, r, 30s);
        fn(r, comm);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 2; ++r) ASSERT_EQ(errors[r], "") << "rank " << r;
}

// One rank's NCCL communicator over a store served in this process.
struct SoloNccl {
  StoreServer server{"127.0.0.1", 0};
  c10::intrusive_ptr<SocketStore> store = c10::make_intrusive<SocketStore>("127.0.0.1", server.port(), 10s);
  NcclCommunicator comm{"solo", store, 0, 1, 0, 10s};
};

TEST(CudaNccl, OneRankCollectivesKeepTheirValues) {
  REQUIRE_GPUS(1);
  SoloNccl nccl;
  Communicator& c = nccl.comm;

  const torch::Tensor x = torch::arange(12, on_gpu()).reshape({3, 4});
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max}) {
    torch::Tensor t = x.clone();
    c.all_reduce(t, op);
    EXPECT_TRUE(torch::equal(t, x));
  }
  EXPECT_TRUE(torch::equal(c.all_gather(x, 1), x));
  EXPECT_TRUE(torch::equal(c.reduce_scatter(x), x));
  torch::Tensor b = x.clone();
  c.broadcast(b, 0);
  EXPECT_TRUE(torch::equal(b, x));
  c.barrier();

  // bf16 reduces as bf16 (Gloo would widen it to fp32); a group of one
  // counts its calls but no bytes.
  torch::Tensor h = x.to(torch::kBFloat16);
  c.all_reduce(h, ReduceOp::Sum);
  EXPECT_TRUE(torch::equal(h.to(torch::kFloat), x));
  EXPECT_EQ(c.stats().at("all_reduce").calls, 4);
  EXPECT_EQ(c.stats().at("all_reduce").bytes, 0);  // a group of one moves nothing
}

// The host never waits for the device: the communicator's stream waits for
// the kernels that produce its input, and LibTorch's later kernels for its
// result. A slow producer (a large matmul) ahead of every operation would
// expose a missing order as stale values.
TEST(CudaNccl, OperationsWaitForTheirProducersAndTheirConsumersForThem) {
  REQUIRE_GPUS(1);
  SoloNccl nccl;
  Communicator& c = nccl.comm;
  const torch::Tensor a = torch::randn({4096, 4096}, on_gpu());
  for (int i = 1; i <= 10; ++i) {
    torch::Tensor x = a.mm(a).mul_(0).add_(i);
    const torch::Tensor gathered = c.all_gather(x, 0);
    torch::Tensor y = a.mm(a).mul_(0).add_(i);
    c.all_reduce_async(y, ReduceOp::Sum)->wait();
    const torch::Tensor after = y + 1;
    EXPECT_TRUE(torch::equal(gathered, torch::full_like(x, i))) << "round " << i;
    EXPECT_TRUE(torch::equal(after, torch::full_like(x, i + 1))) << "round " << i;
  }
}

TEST(CudaNccl, TwoRanksOnTwoGpusReduceAndExchange) {
  REQUIRE_GPUS(2);
  std::vector<torch::Tensor> sums(2), received(2);
  on_two_gpus("pair", [&](int r, NcclCommunicator& comm) {
    torch::Tensor t = torch::full({5}, r + 1.0, on_gpu(r));
    comm.all_reduce(t, ReduceOp::Sum);
    sums[r] = t.cpu();
    torch::Tensor mine = torch::full({4}, 10.0 * (r + 1), on_gpu(r)), theirs = torch::empty({4}, on_gpu(r));
    auto send = comm.isend(mine, 1 - r, 0);
    comm.recv(theirs, 1 - r, 0);
    send->wait();
    received[r] = theirs.cpu();
  });
  if (HasFatalFailure()) return;
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(torch::equal(sums[r], torch::full({5}, 3.0)));
    EXPECT_TRUE(torch::equal(received[r], torch::full({4}, 10.0 * (2 - r))));
  }
}

// PP 2 1F1B with two microbatches, as the executor posts it for NCCL:
// stage 0 sends a0, then a1 batched with the receive of g0; stage 1 receives
// a0, then sends g0 batched with the receive of a1. 64 MiB each, far beyond
// NCCL's buffer per peer: posted one by one, stage 0's send of a1 and stage
// 1's send of g0 would each wait for the other's receive, forever.
TEST(CudaNccl, BatchedSendAndReceiveLetAPipelineStepThrough) {
  REQUIRE_GPUS(2);
  std::vector<std::vector<torch::Tensor>> received(2);
  on_two_gpus("pp", [&](int r, NcclCommunicator& comm) {
    const auto full = [&](double value) { return torch::full({16 << 20}, value, on_gpu(r)); };
    std::vector<torch::Tensor> into;  // stage 0: g0; stage 1: a0, a1
    for (int k = 0; k < 2 - r; ++k) into.push_back(full(0));
    std::vector<std::unique_ptr<PendingOp>> ops;
    ops.push_back(r == 0 ? comm.isend(full(1), 1, 0) : comm.irecv(into[0], 0, 0));
    const std::vector<P2POp> batch =
        r == 0 ? std::vector<P2POp>{{P2POp::Send, full(2), 1, 0}, {P2POp::Receive, into[0], 1, 1}}
               : std::vector<P2POp>{{P2POp::Send, full(-1), 0, 1}, {P2POp::Receive, into[1], 0, 0}};
    for (auto& op : comm.batch_isend_irecv(batch)) ops.push_back(std::move(op));
    for (auto& op : ops) op->wait();
    for (const torch::Tensor& t : into) received[r].push_back(t.cpu());
  });
  if (HasFatalFailure()) return;
  EXPECT_TRUE(torch::equal(received[0][0], torch::full({16 << 20}, -1.0)));  // g0
  EXPECT_TRUE(torch::equal(received[1][0], torch::full({16 << 20}, 1.0)));   // a0
  EXPECT_TRUE(torch::equal(received[1][1], torch::full({16 << 20}, 2.0)));   // a1
}

// ProcessGroupNCCL's watchdog and the non-blocking communicator creation
// bound a wait for a peer that never comes: rank 0 of a pair whose rank 1
// never starts ends non-zero, naming NCCL, well within a minute of a 5 s
// timeout (in a child process: the watchdog takes the whole process down).
TEST(CudaNccl, APeerThatNeverComesEndsTheRankWithinTheTimeout) {
  REQUIRE_GPUS(1);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EXIT(
      {
        StoreServer server("127.0.0.1", 0);
        auto store = c10::make_intrusive<SocketStore>("127.0.0.1", server.port(), 5s);
        try {
          NcclCommunicator comm("lonely", store, 0, 2, 0, 5s);
          torch::Tensor t = torch::ones({4}, on_gpu());
          comm.all_reduce(t, ReduceOp::Sum);
          torch::cuda::synchronize();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::_Exit(1);
        }
        std::_Exit(0);
      },
      [](int status) { return !(WIFEXITED(status) && WEXITSTATUS(status) == 0); }, "NCCL|nccl|lonely");
  EXPECT_LT(std::chrono::steady_clock::now() - started, 60s);
}

// A 10-step tiny run on `device`.
test::ProcessResult cuda_run(const std::string& dir, const std::string& device, const std::string& precision) {
  std::vector<std::string> args = test::tiny_args(dir, 10);
  args.insert(args.end(), {"--device", device, "--precision", precision});
  return test::run_binary(args);
}

// fp32 on the GPU computes the CPU's numbers up to summation order (cuBLAS
// and the CPU's BLAS add in different orders; TF32 stays off): 1e-4 of the
// loss over 10 steps, far below what a wrong kernel or layout would give.
TEST(CudaRun, Fp32StepsMatchTheCpu) {
  REQUIRE_GPUS(1);
  const std::string cpu = test::fresh_dir("cuda_fp32_cpu"), gpu = test::fresh_dir("cuda_fp32_gpu");
  test::expect_all_succeeded({cuda_run(cpu, "cpu", "fp32"), cuda_run(gpu, "cuda", "fp32")});
  test::expect_same_losses(gpu, cpu, 10, 1e-4);
  test::expect_same_weights(gpu, cpu, 1e-3);
}

// Where the GPU has native bf16 (sm80+), auto picks it; bf16 matmuls keep
// the loss within 0.05 nats of fp32 over these 10 steps.
TEST(CudaRun, AutoPrecisionIsBf16AndTracksFp32) {
  REQUIRE_GPUS(1);
  const std::string fp32 = test::fresh_dir("cuda_auto_fp32"), autop = test::fresh_dir("cuda_auto");
  const test::ProcessResult ra = cuda_run(fp32, "cuda", "fp32"), rb = cuda_run(autop, "cuda", "auto");
  test::expect_all_succeeded({ra, rb});
  const auto la = test::read_metrics(fp32), lb = test::read_metrics(autop);
  ASSERT_EQ(la.size(), lb.size());
  for (const auto& [step, record] : la)
    EXPECT_NEAR(lb.at(step)["loss"].get<double>(), record["loss"].get<double>(), 0.05) << "step " << step;
  EXPECT_NE(rb.output.find("Precision bf16 (--precision auto)"), std::string::npos) << rb.output;
}

}  // namespace
}  // namespace minipretrain
