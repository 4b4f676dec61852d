// Communicator, tensor-parallel pieces and schedules, without launching the
// binary: multi-rank cases run on threads joined by real Gloo groups.
#include <gtest/gtest.h>

#include <set>

#include "minipretrain/parallel/cross_entropy.h"
#include "minipretrain/parallel/grad_sync.h"
#include "minipretrain/parallel/regions.h"
#include "minipretrain/parallel/schedule.h"
#include "minipretrain/parallel/shard.h"
#include "test_support.h"

#ifdef MINIPRETRAIN_WITH_NCCL
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "minipretrain/distributed/nccl_communicator.h"
#endif

using namespace minipretrain;
using test::with_gloo_group;

TEST(Gloo, CollectivesAndPointToPoint) {
  with_gloo_group(3, [](int rank, Communicator& comm) {
    torch::Tensor t = torch::full({4}, static_cast<float>(rank + 1));
    comm.all_reduce(t, ReduceOp::Sum);
    EXPECT_TRUE(torch::equal(t, torch::full({4}, 6.0f)));
    torch::Tensor m = torch::full({2}, static_cast<float>(rank));
    comm.all_reduce(m, ReduceOp::Max);
    EXPECT_EQ(m[0].item<float>(), 2.0f);
    torch::Tensor a = torch::full({2}, static_cast<float>(rank));
    comm.all_reduce(a, ReduceOp::Avg);
    EXPECT_FLOAT_EQ(a[0].item<float>(), 1.0f);

    torch::Tensor gathered = comm.all_gather(torch::full({2, 1}, static_cast<float>(rank)), 1);
    EXPECT_TRUE(torch::equal(gathered, torch::tensor({{0.f, 1.f, 2.f}, {0.f, 1.f, 2.f}})));
    torch::Tensor scattered = comm.reduce_scatter(torch::arange(6, torch::kFloat));
    EXPECT_TRUE(torch::equal(scattered, torch::arange(6, torch::kFloat).chunk(3)[rank] * 3));
    torch::Tensor b = torch::full({3}, static_cast<float>(rank));
    comm.broadcast(b, 2);
    EXPECT_EQ(b[1].item<float>(), 2.0f);

    // A ring: everyone sends before receiving, which only works if sends don't block.
    auto send = comm.isend(torch::full({5}, static_cast<float>(rank)), (rank + 1) % 3, 0);
    torch::Tensor got = torch::empty({5});
    comm.recv(got, (rank + 2) % 3, 0);
    send->wait();
    EXPECT_EQ(got[0].item<float>(), static_cast<float>((rank + 2) % 3));
    comm.barrier();

    EXPECT_EQ(comm.stats().at("all_reduce").calls, 3);
  });
}

TEST(VocabParallelCrossEntropy, EqualsPlainCrossEntropy) {
  for (int64_t vocab : {12, 11}) {  // 12 divides over 2 and 3 ranks; 11 is padded to 12
    for (int world : {2, 3}) {
      torch::manual_seed(vocab * 10 + world);
      torch::Tensor logits = torch::randn({6, vocab}) * 3;
      torch::Tensor targets = torch::randint(0, vocab, {6}, torch::kLong);
      torch::Tensor full = logits.clone().requires_grad_(true);
      torch::Tensor expected = torch::nn::functional::cross_entropy(
          full, targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
      expected.sum().backward();
      with_gloo_group(world, [&](int rank, Communicator& tp) {
        ShardSpec spec = shard_along(1, {6, vocab}, rank, world);
        const int64_t local = local_shape(spec, world)[1];
        torch::Tensor mine = take_shard(logits, spec, local).requires_grad_(true);
        torch::Tensor loss = vocab_parallel_cross_entropy(mine, targets, spec.offset, vocab, tp);
        EXPECT_TRUE(torch::allclose(loss, expected, 1e-5, 1e-6)) << "vocab " << vocab << " world " << world;
        loss.sum().backward();
        torch::Tensor grad_expected = take_shard(full.grad(), spec, local);
        EXPECT_TRUE(torch::allclose(mine.grad(), grad_expected, 1e-5, 1e-7));
        EXPECT_EQ(tp.stats().at("all_reduce").calls, 3);  // max, target logit, sum of exponentials
      });
    }
  }
}

TEST(Regions, ForwardAndBackwardCommunicateWhereMegatronDoes) {
  with_gloo_group(2, [](int rank, Communicator& tp) {
    torch::Tensor x = torch::full({3}, static_cast<float>(rank + 1)).requires_grad_(true);
    torch::Tensor y = copy_to_tp(x, tp);
    EXPECT_TRUE(tp.stats().empty());  // identity forward
    (y * static_cast<float>(rank + 1)).sum().backward();
    EXPECT_TRUE(torch::equal(x.grad(), torch::full({3}, 3.0f)));  // grads summed over ranks
    torch::Tensor z = torch::full({3}, static_cast<float>(rank)).requires_grad_(true);
    torch::Tensor r = reduce_from_tp(z, tp);
    EXPECT_TRUE(torch::equal(r, torch::full({3}, 1.0f)));
    r.sum().backward();
    EXPECT_TRUE(torch::equal(z.grad(), torch::ones({3})));  // identity backward
    EXPECT_EQ(tp.stats().at("all_reduce").calls, 2);
  });
}

TEST(GradientBuckets, AverageOverDataParallelInFewCalls) {
  with_gloo_group(2, [](int rank, Communicator& dp) {
    torch::Tensor flat = torch::empty({1000});
    for (int i = 0; i < 10; ++i) flat.narrow(0, 100 * i, 100).fill_(static_cast<float>(rank * 10 + i));
    GradientBuckets buckets(flat, std::vector<int64_t>(10, 100), 1000);  // two 400-byte gradients per bucket
    buckets.all_reduce_mean(dp);
    for (int i = 0; i < 10; ++i) {
      EXPECT_FLOAT_EQ(flat[100 * i].item<float>(), 5.0f + i);
      EXPECT_FLOAT_EQ(flat[100 * i + 99].item<float>(), 5.0f + i);
    }
    EXPECT_EQ(dp.stats().at("all_reduce").calls, static_cast<int64_t>(buckets.num_buckets()));
    EXPECT_EQ(buckets.num_buckets(), 5u);
  });
}

// Buckets start as soon as all their tensors are ready, in buffer order (so
// every DP rank issues the same collectives in the same order), overlapping
// the rest of backward; finish() starts the rest and waits.
TEST(GradientBuckets, StartInOrderAsTheirTensorsBecomeReady) {
  with_gloo_group(2, [](int rank, Communicator& dp) {
    torch::Tensor flat = torch::empty({1000});
    GradientBuckets buckets(flat, std::vector<int64_t>(10, 100), 1000);  // buckets {0,1} {2,3} ... {8,9}
    const auto started = [&] { return dp.stats().count("all_reduce") ? dp.stats().at("all_reduce").calls : 0; };
    for (int step = 0; step < 2; ++step) {
      for (int i = 0; i < 10; ++i) flat.narrow(0, 100 * i, 100).fill_(static_cast<float>(rank * 10 + i + step));
      buckets.begin();
      const int64_t before = started();
      buckets.ready(2, dp);
      buckets.ready(3, dp);
      EXPECT_EQ(started() - before, 0) << "bucket 1 waits for bucket 0";
      buckets.ready(0, dp);
      EXPECT_EQ(started() - before, 0) << "bucket 0 waits for tensor 1";
      buckets.ready(1, dp);
      EXPECT_EQ(started() - before, 2);
      buckets.ready(9, dp);
      EXPECT_EQ(started() - before, 2);
      buckets.finish(dp);
      EXPECT_EQ(started() - before, 5);
      for (int i = 0; i < 10; ++i) EXPECT_FLOAT_EQ(flat[100 * i + 50].item<float>(), 5.0f + i + step);
    }
  });
}

namespace {

// Runs every stage's list the way the executor does (sends never block, a
// receive waits for its sender) and returns false on a deadlock.
bool runs_without_deadlock(const std::string& name, int64_t stages, int64_t m) {
  std::vector<std::vector<Action>> lists;
  for (int64_t s = 0; s < stages; ++s) lists.push_back(make_schedule(name, stages, s, m));
  std::vector<size_t> next(stages, 0);
  std::set<std::tuple<int64_t, int, int64_t>> done;  // (stage, kind, microbatch)
  bool progress = true;
  while (progress) {
    progress = false;
    for (int64_t s = 0; s < stages; ++s) {
      if (next[s] == lists[s].size()) continue;
      const Action a = lists[s][next[s]];
      const bool ready = a.kind == Action::Forward
                             ? (s == 0 || done.count({s - 1, Action::Forward, a.microbatch}))
                             : (done.count({s, Action::Forward, a.microbatch}) &&
                                (s == stages - 1 || done.count({s + 1, Action::Backward, a.microbatch})));
      if (!ready) continue;
      done.insert({s, a.kind, a.microbatch});
      ++next[s];
      progress = true;
    }
  }
  for (int64_t s = 0; s < stages; ++s)
    if (next[s] != lists[s].size()) return false;
  return true;
}

}  // namespace

TEST(Schedules, EveryMicrobatchOnceAndDeadlockFree) {
  for (const std::string name : {"gpipe", "1f1b"})
    for (int64_t stages : {1, 2, 3, 4, 8})
      for (int64_t m : {1, 2, 3, 4, 8, 13}) {
        for (int64_t s = 0; s < stages; ++s) {
          auto actions = make_schedule(name, stages, s, m);
          std::map<int64_t, int> forwards, backwards;
          for (const Action& a : actions) {
            if (a.kind == Action::Forward) {
              ++forwards[a.microbatch];
            } else {
              EXPECT_EQ(forwards[a.microbatch], 1) << "backward before forward";
              ++backwards[a.microbatch];
            }
          }
          for (int64_t i = 0; i < m; ++i) EXPECT_TRUE(forwards[i] == 1 && backwards[i] == 1);
          const int64_t peak = peak_in_flight(actions);
          if (name == "gpipe") EXPECT_EQ(peak, m);
          else EXPECT_LE(peak, std::min(stages - s, m)) << "stage " << s << " of " << stages << ", M " << m;
        }
        EXPECT_TRUE(runs_without_deadlock(name, stages, m)) << name << " PP " << stages << " M " << m;
      }
}

TEST(Schedules, OneForwardOneBackwardShape) {
  const std::vector<Action> expected = {{Action::Forward, 0}, {Action::Forward, 1}, {Action::Backward, 0},
                                        {Action::Forward, 2}, {Action::Backward, 1}, {Action::Forward, 3},
                                        {Action::Backward, 2}, {Action::Backward, 3}};
  EXPECT_EQ(one_f_one_b_schedule(3, 1, 4), expected);  // warm-up of PP - stage - 1 = 1
}

TEST(Shards, TakeAndJoinWithPadding) {
  torch::Tensor full = torch::arange(14, torch::kFloat).view({7, 2});
  std::vector<std::pair<ShardSpec, torch::Tensor>> shards;
  for (int r = 0; r < 4; ++r) {
    ShardSpec spec = shard_along(0, {7, 2}, r, 4);
    shards.emplace_back(spec, take_shard(full, spec, 2));
  }
  EXPECT_TRUE(torch::equal(shards[3].second[1], torch::zeros({2})));  // the padding row
  EXPECT_TRUE(torch::equal(join_shards(shards), full));
}

TEST(Nccl, CreatingItWithoutAGpuIsAClearError) {
#ifdef MINIPRETRAIN_WITH_NCCL
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is present";
  auto store = c10::make_intrusive<c10d::HashStore>();
  try {
    NcclCommunicator comm("nccl", store, 0, 1, 0, std::chrono::seconds(5));
    FAIL() << "created an NCCL communicator without a GPU";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("NCCL communicator: "), std::string::npos) << e.what();
  }
#else
  GTEST_SKIP() << "built without NCCL (no CUDA toolkit with NCCL found)";
#endif
}
