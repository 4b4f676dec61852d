// Communicator, tensor-parallel pieces and schedules, without launching the
// binary: multi-rank cases run on threads joined by real Gloo groups.
#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include "minipretrain/parallel/cross_entropy.h"
#include "minipretrain/parallel/grad_sync.h"
#include "minipretrain/parallel/pipeline_transfers.h"
#include "minipretrain/parallel/regions.h"
#include "minipretrain/parallel/schedule.h"
#include "minipretrain/parallel/shard.h"
#include "test_support.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "minipretrain/distributed/nccl_communicator.h"

using namespace minipretrain;
using test::with_gloo_group;

TEST(Gloo, CollectivesAndPointToPoint) {
  for (const auto rules : {test::GroupRules::Gloo, test::GroupRules::Nccl}) {
    SCOPED_TRACE(rules == test::GroupRules::Gloo ? "Gloo" : "NCCL's rules");
    with_gloo_group(3, [rules](int rank, Communicator& comm) {
      torch::Tensor t = torch::full({4}, static_cast<float>(rank + 1));
      comm.all_reduce(t, ReduceOp::Sum);
      EXPECT_TRUE(torch::equal(t, torch::full({4}, 6.0f)));
      torch::Tensor m = torch::full({2}, static_cast<float>(rank));
      comm.all_reduce(m, ReduceOp::Max);
      EXPECT_EQ(m[0].item<float>(), 2.0f);
      torch::Tensor a = torch::full({2}, static_cast<float>(rank));
      comm.all_reduce_async(a, ReduceOp::Avg)->wait();
      EXPECT_FLOAT_EQ(a[0].item<float>(), 1.0f);

      torch::Tensor gathered = comm.all_gather(torch::full({2, 1}, static_cast<float>(rank)), 1);
      EXPECT_TRUE(torch::equal(gathered, torch::tensor({{0.f, 1.f, 2.f}, {0.f, 1.f, 2.f}})));
      torch::Tensor scattered = comm.reduce_scatter(torch::arange(6, torch::kFloat));
      EXPECT_TRUE(torch::equal(scattered, torch::arange(6, torch::kFloat).chunk(3)[rank] * 3));
      torch::Tensor b = torch::full({3}, static_cast<float>(rank));
      comm.broadcast(b, 2);
      EXPECT_EQ(b[1].item<float>(), 2.0f);

      // A ring: everyone sends before receiving. Gloo's sends do not wait for
      // their receive; under NCCL's rules they do, so the pair goes as one batch.
      const torch::Tensor mine = torch::full({5}, static_cast<float>(rank));
      torch::Tensor got = torch::empty({5});
      if (rules == test::GroupRules::Gloo) {
        auto send = comm.isend(mine, (rank + 1) % 3, 0);
        comm.recv(got, (rank + 2) % 3, 0);
        send->wait();
      } else {
        for (auto& h : comm.batch_isend_irecv({{P2POp::Send, mine, (rank + 1) % 3, 0},
                                               {P2POp::Receive, got, (rank + 2) % 3, 0}}))
          h->wait();
      }
      EXPECT_EQ(got[0].item<float>(), static_cast<float>((rank + 2) % 3));
      comm.barrier();

      EXPECT_EQ(comm.stats().at("all_reduce").calls, 3);
    }, rules);
  }
}

// The 1F1B exchange of the issue that brought these rules in, at PP 2 with
// two microbatches: stage 0 sends a0, sends a1, receives g0; stage 1
// receives a0, sends g0, receives a1. Gloo completes it; under NCCL's rules
// stage 0's second send waits behind nothing but for a receive that stage 1
// has queued behind its own send, which waits for stage 0's receive, queued
// behind that second send. Sent as Megatron batches them, it completes.
namespace {

void one_f_one_b_exchange(int rank, Communicator& pp, bool batched) {
  const torch::Tensor a0 = torch::full({4}, 1.0f), a1 = torch::full({4}, 2.0f), g0 = torch::full({4}, 3.0f);
  torch::Tensor got_a0 = torch::empty({4}), got_a1 = torch::empty({4}), got_g0 = torch::empty({4});
  std::vector<std::unique_ptr<PendingOp>> handles;
  const auto post = [&](std::vector<P2POp> ops) {
    if (!batched) {
      for (const P2POp& op : ops) handles.push_back(op.kind == P2POp::Send ? pp.isend(op.tensor, op.peer, op.tag)
                                                                             : pp.irecv(op.tensor, op.peer, op.tag));
      return;
    }
    for (auto& h : pp.batch_isend_irecv(ops)) handles.push_back(std::move(h));
  };
  if (rank == 0) {
    post({{P2POp::Send, a0, 1, 0}});
    post({{P2POp::Send, a1, 1, 0}, {P2POp::Receive, got_g0, 1, 1}});
  } else {
    post({{P2POp::Receive, got_a0, 0, 0}});
    post({{P2POp::Send, g0, 0, 1}, {P2POp::Receive, got_a1, 0, 0}});
  }
  for (auto& h : handles) h->wait();
  if (rank == 0) {
    EXPECT_TRUE(torch::equal(got_g0, g0));
  } else {
    EXPECT_TRUE(torch::equal(got_a0, a0));
    EXPECT_TRUE(torch::equal(got_a1, a1));
  }
}

// `exchange` completes on Gloo and, under NCCL's rules, fails at the
// group's timeout with an error that names the group.
void expect_only_nccl_rules_hang(const std::function<void(int, Communicator&)>& exchange) {
  with_gloo_group(2, exchange);
  const auto started = std::chrono::steady_clock::now();
  try {
    with_gloo_group(2, exchange, test::GroupRules::Nccl, std::chrono::seconds(3));
    FAIL() << "completed under NCCL's rules";
  } catch (const CommunicationError& e) {
    EXPECT_NE(std::string(e.what()).find("test "), std::string::npos) << e.what();
  }
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
}

}  // namespace

TEST(NcclRules, SendsPostedOneByOneDeadlockWhereGlooGoesOn) {
  expect_only_nccl_rules_hang([](int rank, Communicator& pp) { one_f_one_b_exchange(rank, pp, false); });
}

TEST(NcclRules, BatchedSendAndReceiveComplete) {
  with_gloo_group(2, [](int rank, Communicator& pp) { one_f_one_b_exchange(rank, pp, true); },
                  test::GroupRules::Nccl, std::chrono::seconds(30));
}

// One group's operations run in the order posted: an all-reduce queued
// behind a send waits for that send's receive, here posted after the peer's
// own all-reduce.
TEST(NcclRules, AnAllReduceQueuedBehindASendWaitsForItsReceive) {
  expect_only_nccl_rules_hang([](int rank, Communicator& comm) {
    torch::Tensor sum = torch::ones({1});
    if (rank == 0) {
      auto send = comm.isend(torch::ones({2}), 1, 0);
      comm.all_reduce_async(sum)->wait();
      send->wait();
    } else {
      comm.all_reduce(sum);
      comm.recv(torch::empty({2}), 0, 0);
    }
    EXPECT_EQ(sum.item<float>(), 2.0f);
  });
}

// A batch posts its transfers together and counts them as the separate
// sends and receives (bf16 travels as fp32 on Gloo, both ways).
TEST(Gloo, BatchedSendsAndReceivesCountAsTheirParts) {
  for (const auto rules : {test::GroupRules::Gloo, test::GroupRules::Nccl}) {
    with_gloo_group(2, [](int rank, Communicator& comm) {
      const int peer = 1 - rank;
      const torch::Tensor mine = torch::full({3}, static_cast<float>(rank + 1)).to(torch::kBFloat16);
      torch::Tensor theirs = torch::empty({3}, torch::kBFloat16), extra = torch::empty({2});
      auto handles = comm.batch_isend_irecv({{P2POp::Send, mine, peer, 0},
                                             {P2POp::Receive, theirs, peer, 0},
                                             {P2POp::Send, torch::full({2}, 7.0f), peer, 1},
                                             {P2POp::Receive, extra, peer, 1}});
      ASSERT_EQ(handles.size(), 4u);
      for (auto& h : handles) h->wait();
      EXPECT_TRUE(torch::equal(theirs, torch::full({3}, static_cast<float>(peer + 1)).to(torch::kBFloat16)));
      EXPECT_TRUE(torch::equal(extra, torch::full({2}, 7.0f)));
      EXPECT_EQ(comm.stats().at("send").calls, 2);
      EXPECT_EQ(comm.stats().at("recv").calls, 2);
      EXPECT_EQ(comm.stats().at("send").bytes, 5 * 4);
      EXPECT_EQ(comm.stats().at("recv").bytes, 5 * 4);
    }, rules);
  }
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

TEST(Regions, SequenceRegionsSplitDimOneAndMirrorInBackward) {
  with_gloo_group(2, [](int rank, Communicator& tp) {
    // [batch 2, seq 2 of 4, hidden 3]: rank r holds positions 2r and 2r + 1.
    const torch::Tensor whole = torch::arange(24, torch::kFloat).reshape({2, 4, 3});
    torch::Tensor mine = whole.narrow(1, 2 * rank, 2).clone().requires_grad_(true);
    torch::Tensor gathered = gather_sequence(mine, tp);
    EXPECT_TRUE(torch::equal(gathered, whole));
    // Each rank's gradient is a partial sum: backward sums them and keeps its positions.
    (gathered * static_cast<float>(rank + 1)).sum().backward();
    EXPECT_TRUE(torch::equal(mine.grad(), torch::full({2, 2, 3}, 3.0f)));

    torch::Tensor partial = (whole * static_cast<float>(rank + 1)).requires_grad_(true);
    torch::Tensor scattered = reduce_scatter_sequence(partial, tp);
    EXPECT_TRUE(torch::equal(scattered, 3 * whole.narrow(1, 2 * rank, 2)));
    (scattered * static_cast<float>(rank + 1)).sum().backward();
    // Backward gathers every rank's gradient of its positions.
    const torch::Tensor expected = torch::cat({torch::ones({2, 2, 3}), torch::full({2, 2, 3}, 2.0f)}, 1);
    EXPECT_TRUE(torch::equal(partial.grad(), expected));
    EXPECT_EQ(tp.stats().at("all_gather").calls, 2);
    EXPECT_EQ(tp.stats().at("reduce_scatter").calls, 2);
    EXPECT_FALSE(tp.stats().count("all_reduce"));
    // Each counts its whole [2, 4, 3] fp32 tensor.
    EXPECT_EQ(tp.stats().at("all_gather").bytes, 2 * 24 * 4);
    EXPECT_EQ(tp.stats().at("reduce_scatter").bytes, 2 * 24 * 4);
  });
}

TEST(GradientBuckets, AverageOverDataParallelInFewCalls) {
  with_gloo_group(2, [](int rank, Communicator& dp) {
    torch::Tensor flat = torch::empty({1000});
    for (int i = 0; i < 10; ++i) flat.narrow(0, 100 * i, 100).fill_(static_cast<float>(rank * 10 + i));
    GradientBuckets buckets(flat, std::vector<int64_t>(10, 100), 1000);  // two 400-byte gradients per bucket
    buckets.reduce(dp);
    for (int i = 0; i < 10; ++i) {
      EXPECT_FLOAT_EQ(flat[100 * i].item<float>(), 5.0f + i);
      EXPECT_FLOAT_EQ(flat[100 * i + 99].item<float>(), 5.0f + i);
    }
    EXPECT_EQ(dp.stats().at("all_reduce").calls, static_cast<int64_t>(buckets.num_buckets()));
    EXPECT_EQ(buckets.num_buckets(), 5u);
  });
}

// The distributed optimizer's buckets: cut anywhere into lengths that
// divide over DP, the buffer padded; each reduce-scatter leaves rank r the
// average of chunk r of its bucket, and a bucket waits for every tensor that
// reaches into it.
TEST(GradientBuckets, ReduceScatterChunksForTheDistributedOptimizer) {
  const std::vector<int64_t> sizes{150, 150, 101};
  ASSERT_EQ(GradientBuckets::padded_length(sizes, 2), 402);
  with_gloo_group(2, [&](int rank, Communicator& dp) {
    torch::Tensor flat = torch::arange(402, torch::kFloat) * static_cast<float>(rank + 1);
    GradientBuckets buckets(flat, sizes, 400, 2);  // 100 elements a bucket: [0,100) ... [400,402)
    ASSERT_EQ(buckets.num_buckets(), 5u);
    // Gloo reduce-scatters by all-reducing, and counts it so.
    const auto started = [&] { return dp.stats().count("all_reduce") ? dp.stats().at("all_reduce").calls : 0; };
    buckets.ready(1, dp);
    EXPECT_EQ(started(), 0) << "bucket 0 holds tensor 0";
    buckets.ready(0, dp);
    EXPECT_EQ(started(), 3) << "tensors 0 and 1 fill buckets 0 to 2";
    buckets.finish(dp);
    EXPECT_EQ(started(), 5);
    EXPECT_EQ(dp.stats().at("all_reduce").bytes, 402 * 4);
    for (const GradientBuckets::Range& r : buckets.ranges()) {
      const int64_t length = r.elements / 2, first = r.offset + rank * length;
      // The mean of i and 2i.
      EXPECT_TRUE(torch::allclose(flat.narrow(0, first, length), torch::arange(first, first + length, torch::kFloat) * 1.5f))
          << "bucket at " << r.offset;
    }
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

std::vector<std::vector<Action>> every_stage(PipelineSchedule name, int64_t stages, int64_t m, int64_t v = 1) {
  std::vector<std::vector<Action>> lists;
  for (int64_t s = 0; s < stages; ++s) lists.push_back(make_schedule(name, stages, s, m, v));
  return lists;
}

// simulate_pipeline's complaint about `lists`, or "" when it accepts them.
std::string complaint(const std::vector<std::vector<Action>>& lists, int64_t m, int64_t v = 1) {
  try {
    simulate_pipeline(lists, m, v);
    return "";
  } catch (const std::logic_error& e) {
    return e.what();
  }
}

}  // namespace

// The checker proves every schedule: each (chunk, microbatch) runs F once and
// its backward (or B and W) once per stage, in an order whose transfers
// match, dependencies hold across stages and no stage waits forever.
TEST(Schedules, EveryScheduleRunsEachMicrobatchOnceWithoutDeadlock) {
  for (int64_t stages : {1, 2, 3, 4, 8})
    for (int64_t m : {1, 2, 3, 4, 8, 13, 16}) {
      SCOPED_TRACE("PP " + std::to_string(stages) + " M " + std::to_string(m));
      const auto gpipe = simulate_schedule(PipelineSchedule::GPipe, stages, m);
      const auto one_f_one_b = simulate_schedule(PipelineSchedule::OneFOneB, stages, m);
      const auto zb = simulate_schedule(PipelineSchedule::ZeroBubbleH1, stages, m);
      for (int64_t s = 0; s < stages; ++s) {
        EXPECT_EQ(gpipe.peak_in_flight[s], m);
        EXPECT_LE(one_f_one_b.peak_in_flight[s], std::min(stages - s, m)) << "stage " << s;
        // ZB-H1 holds no more than 1F1B's peak (its stage 0's).
        EXPECT_LE(zb.peak_in_flight[s], std::min(stages, m)) << "stage " << s;
      }
      const double classic = static_cast<double>(stages - 1) / static_cast<double>(m + stages - 1);
      EXPECT_NEAR(one_f_one_b.bubble, classic, 1e-12);
      EXPECT_NEAR(gpipe.bubble, classic, 1e-12);
      EXPECT_LE(zb.bubble, one_f_one_b.bubble + 1e-12);
      // The paper's ZB-H1 bubble, (PP - 1)(F + B - W), once there are enough microbatches.
      if (m >= stages)
        EXPECT_NEAR(zb.bubble, static_cast<double>(stages - 1) / static_cast<double>(stages - 1 + 3 * m), 1e-12);
      if (stages < 2) continue;
      for (int64_t v : {2, 3}) {
        if (m > stages && m % stages != 0) {
          EXPECT_THROW(make_schedule(PipelineSchedule::Interleaved1F1B, stages, 0, m, v), std::invalid_argument);
          continue;
        }
        const auto interleaved = simulate_schedule(PipelineSchedule::Interleaved1F1B, stages, m, v);
        // Narayanan et al.: the bubble shrinks by V, (PP - 1) / (V M + PP - 1)
        // once every group of PP microbatches is full.
        if (m % stages == 0)
          EXPECT_NEAR(interleaved.bubble,
                      static_cast<double>(stages - 1) / static_cast<double>(v * m + stages - 1), 1e-12)
              << "V " << v;
        // Megatron's memory: the warm-up's chunk activations and one more,
        // all of them when every forward is warm-up (M <= PP).
        for (int64_t s = 0; s < stages; ++s)
          EXPECT_EQ(interleaved.peak_in_flight[s],
                    m <= stages ? v * m : std::min((stages - s - 1) * 2 + (v - 1) * stages + 1, v * m))
              << "stage " << s << " V " << v;
      }
    }
}

TEST(Schedules, TheCheckerCatchesBrokenSchedules) {
  auto lists = every_stage(PipelineSchedule::ZeroBubbleH1, 2, 2);
  EXPECT_EQ(complaint(lists, 2), "");
  auto dropped = lists;
  dropped[1].pop_back();  // the last W of stage 1
  EXPECT_NE(complaint(dropped, 2).find("never runs"), std::string::npos) << complaint(dropped, 2);
  auto twice = lists;
  twice[0].push_back(twice[0].front());
  EXPECT_NE(complaint(twice, 2).find("runs twice"), std::string::npos) << complaint(twice, 2);
  // Two backwards of one chunk out of microbatch order: their gradients
  // would be received as each other's.
  auto reordered = every_stage(PipelineSchedule::OneFOneB, 2, 2);
  std::swap(reordered[1][1], reordered[1][3]);  // F0 B0 F1 B1 -> F0 B1 F1 B0
  EXPECT_NE(complaint(reordered, 2).find("comes after"), std::string::npos) << complaint(reordered, 2);
  // Stage 0 sends microbatch 1 before 0 (in order per chunk and kind, as
  // chunk 0's and chunk 1's): stage 1 receives 0 first.
  std::vector<std::vector<Action>> crossed = {
      {{Action::Forward, 0, 1}, {Action::Forward, 0, 0}, {Action::Backward, 0, 1}, {Action::Backward, 0, 0}},
      {{Action::Forward, 0, 0}, {Action::Forward, 0, 1}, {Action::Backward, 0, 1}, {Action::Backward, 0, 0}}};
  EXPECT_NE(complaint(crossed, 1, 2).find("in another order"), std::string::npos) << complaint(crossed, 1, 2);
  // Stage 0 waits for microbatch 0's gradient before sending microbatch 1;
  // stage 1 wants microbatch 1's forward before it returns 0's gradient.
  std::vector<std::vector<Action>> deadlocked = {
      {{Action::Forward, 0}, {Action::Backward, 0}, {Action::Forward, 1}, {Action::Backward, 1}},
      {{Action::Forward, 0}, {Action::Forward, 1}, {Action::Backward, 0}, {Action::Backward, 1}}};
  EXPECT_NE(complaint(deadlocked, 2).find("deadlock"), std::string::npos) << complaint(deadlocked, 2);
}

namespace {

// Every stage's transfers for `lists`, as the executor posts them.
std::vector<std::vector<TransferBatch>> planned(const std::vector<std::vector<Action>>& lists, int64_t v,
                                                bool in_order_progress) {
  std::vector<std::vector<TransferBatch>> stages;
  for (size_t s = 0; s < lists.size(); ++s)
    stages.push_back(plan_transfers(lists[s], {static_cast<int64_t>(s), static_cast<int64_t>(lists.size()), v},
                                    in_order_progress));
  return stages;
}

// check_in_order_progress's complaint, or "" when every stage finishes.
std::string in_order_complaint(const std::vector<std::vector<TransferBatch>>& stages) {
  try {
    check_in_order_progress(stages);
    return "";
  } catch (const std::logic_error& e) {
    return e.what();
  }
}

// The most receive buffers a stage holds at once: posted, not yet taken by
// their action.
size_t peak_receives(const std::vector<TransferBatch>& batches) {
  size_t peak = 0;
  for (const TransferBatch& now : batches) {
    size_t held = 0;
    for (const TransferBatch& b : batches)
      for (const Transfer& t : b.receives) held += b.before <= now.before && t.action >= now.before;
    peak = std::max(peak, held);
  }
  return peak;
}

// What a stage sends and receives, whatever the batches: (send?, action, peer, tag).
std::set<std::tuple<bool, size_t, int, int>> transfers_of(const std::vector<TransferBatch>& batches) {
  std::set<std::tuple<bool, size_t, int, int>> all;
  for (const TransferBatch& b : batches) {
    for (const Transfer& t : b.sends) all.emplace(true, t.action, t.peer, t.tag);
    for (const Transfer& t : b.receives) all.emplace(false, t.action, t.peer, t.tag);
  }
  return all;
}

}  // namespace

// NCCL runs a communicator's operations in the order posted, a send ending
// once the peer's matching receive runs. Posted one by one (as the executor
// did before batching), PP 2 1F1B deadlocks with two microbatches: stage 0
// sends a0, a1 and then receives g0; stage 1 receives a0, sends g0 and then
// receives a1. Batched, the send of a1 runs with the receive of g0.
TEST(Schedules, SendsAndReceivesPostedOneByOneDeadlockUnderNcclRules) {
  const auto batched = planned(every_stage(PipelineSchedule::OneFOneB, 2, 2), 1, true);
  EXPECT_EQ(in_order_complaint(batched), "");
  EXPECT_EQ(batched[0].size(), 3u);  // a0; a1 with g0; g1
  auto one_by_one = batched;
  for (auto& stage : one_by_one) {
    std::vector<TransferBatch> split;
    for (const TransferBatch& b : stage) {
      for (const Transfer& t : b.sends) split.push_back({b.before, {t}, {}});
      for (const Transfer& t : b.receives) split.push_back({b.before, {}, {t}});
    }
    stage = split;
  }
  const std::string complaint = in_order_complaint(one_by_one);
  EXPECT_NE(complaint.find("deadlock"), std::string::npos) << complaint;
  EXPECT_NE(complaint.find("stage 0 waits on its send of action 1 to stage 1"), std::string::npos) << complaint;
  // Gloo's order, each receive posted an action ahead, deadlocks too: NCCL
  // cannot post receives ahead (receives_post_ahead() stays false there).
  EXPECT_NE(in_order_complaint(planned(every_stage(PipelineSchedule::OneFOneB, 2, 2), 1, false)).find("deadlock"), std::string::npos);
  // A result sent before its action computes is refused.
  auto early = batched;
  early[0][0].before = 0;
  EXPECT_NE(in_order_complaint(early).find("before it computes"), std::string::npos) << in_order_complaint(early);
}

// The executor's batches for NCCL finish under NCCL's rules for every
// schedule, and for validation's forwards; they carry the same transfers as
// Gloo's order, which simulate_pipeline proves, with at most two receive
// buffers at once.
TEST(Schedules, EveryScheduleFinishesUnderNcclRules) {
  for (int64_t stages : {2, 3, 4, 8})
    for (int64_t m : {1, 2, 3, 4, 8, 13, 16}) {
      std::vector<std::tuple<std::string, int64_t, std::vector<std::vector<Action>>>> runs;
      for (PipelineSchedule schedule :
           {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB, PipelineSchedule::ZeroBubbleH1})
        runs.emplace_back(name_of(schedule), 1, every_stage(schedule, stages, m));
      for (int64_t v : {2, 3})
        if (m <= stages || m % stages == 0)
          runs.emplace_back("interleaved-1f1b", v, every_stage(PipelineSchedule::Interleaved1F1B, stages, m, v));
      for (int64_t v : {1, 2, 3})
        runs.emplace_back("forwards only", v,
                          std::vector<std::vector<Action>>(stages, forward_only_schedule(stages, m, v)));
      for (const auto& [name, v, lists] : runs) {
        SCOPED_TRACE(name + " PP " + std::to_string(stages) + " M " + std::to_string(m) + " V " + std::to_string(v));
        const auto batched = planned(lists, v, true), gloo = planned(lists, v, false);
        EXPECT_EQ(in_order_complaint(batched), "");
        for (int64_t s = 0; s < stages; ++s) {
          EXPECT_EQ(transfers_of(batched[s]), transfers_of(gloo[s])) << "stage " << s;
          EXPECT_LE(peak_receives(batched[s]), 2u) << "stage " << s;
          EXPECT_LE(peak_receives(gloo[s]), 2u) << "stage " << s;
        }
      }
    }
}

TEST(Schedules, OneForwardOneBackwardShape) {
  const std::vector<Action> expected = {{Action::Forward, 0}, {Action::Forward, 1}, {Action::Backward, 0},
                                        {Action::Forward, 2}, {Action::Backward, 1}, {Action::Forward, 3},
                                        {Action::Backward, 2}, {Action::Backward, 3}};
  EXPECT_EQ(one_f_one_b_schedule(3, 1, 4), expected);  // warm-up of PP - stage - 1 = 1
}

TEST(Schedules, ZeroBubbleH1Shape) {
  using A = Action;
  // Stage 1 of 3: 1F1B's F and B, each W deferred by one microbatch.
  const std::vector<Action> expected = {
      {A::Forward, 0},        {A::Forward, 1},        {A::BackwardInput, 0},  {A::Forward, 2},
      {A::BackwardInput, 1},  {A::BackwardWeight, 0}, {A::Forward, 3},        {A::BackwardInput, 2},
      {A::BackwardWeight, 1}, {A::BackwardInput, 3},  {A::BackwardWeight, 2}, {A::BackwardWeight, 3}};
  EXPECT_EQ(zb_h1_schedule(3, 1, 4), expected);
  // Stage 0 has nobody upstream to hurry for: B and W stay one backward.
  EXPECT_EQ(zb_h1_schedule(3, 0, 4), one_f_one_b_schedule(3, 0, 4));
}

TEST(Schedules, InterleavedShape) {
  using A = Action;
  // Stage 0 of 2, two chunks, four microbatches: warm-up of 2 + 2 chunk
  // forwards in groups of two microbatches, backwards last chunk first.
  const std::vector<Action> expected = {
      {A::Forward, 0, 0},  {A::Forward, 1, 0},  {A::Forward, 0, 1},  {A::Forward, 1, 1},
      {A::Forward, 2, 0},  {A::Backward, 0, 1}, {A::Forward, 3, 0},  {A::Backward, 1, 1},
      {A::Forward, 2, 1},  {A::Backward, 0, 0}, {A::Forward, 3, 1},  {A::Backward, 1, 0},
      {A::Backward, 2, 1}, {A::Backward, 3, 1}, {A::Backward, 2, 0}, {A::Backward, 3, 0}};
  EXPECT_EQ(interleaved_schedule(2, 0, 4, 2), expected);
}

TEST(Shards, TakeWithPadding) {
  torch::Tensor full = torch::arange(14, torch::kFloat).view({7, 2});
  std::vector<torch::Tensor> shards;
  for (int r = 0; r < 4; ++r) {
    const ShardSpec spec = shard_along(0, {7, 2}, r, 4);
    EXPECT_EQ(spec.offset, 2 * r);
    shards.push_back(take_shard(full, spec, 2));
  }
  EXPECT_TRUE(torch::equal(shards[3][1], torch::zeros({2})));  // the padding row
  EXPECT_TRUE(torch::equal(torch::cat(shards).narrow(0, 0, 7), full));
}

TEST(Nccl, CreatingItWithoutAGpuIsAClearError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is present";
  auto store = c10::make_intrusive<c10d::HashStore>();
  try {
    NcclCommunicator comm("nccl", store, 0, 1, 0, std::chrono::seconds(5));
    FAIL() << "created an NCCL communicator without a GPU";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("NCCL communicator: "), std::string::npos) << e.what();
  }
}
