// The distributed optimizer (--use-distributed-optimizer, ZeRO-1) computes
// what the replicated optimizer computes, on real processes: DP 2,
// DP 2 x TP 2 x PP 2 and DP 2 x TP 2 with sequence parallelism against the
// runs without it, in fp32 and bf16; its
// checkpoints (boxes of the optimizer state, one file per DP rank) resume
// without it and the other way round, across layouts.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_support.h"

using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

constexpr int kSteps = 10;

// The tiny model with a vocabulary of 97 (padded under TP 2) and clipping
// that acts, so the gradient norm over the DP parts matters.
std::vector<std::string> args_of(const std::string& out, std::vector<std::string> layout, bool distributed) {
  std::vector<std::string> args = with(tiny_args(out, kSteps), {"--vocab-size", "97", "--grad-clip", "0.5"});
  args.insert(args.end(), layout.begin(), layout.end());
  if (distributed) args.push_back("--use-distributed-optimizer");
  return args;
}

struct Case {
  std::string name;
  int world;
  std::vector<std::string> layout;
  double loss_rel, weight_rel;
};

}  // namespace

// Each layout with and without it: the same losses and final weights. In
// fp32 DP 2 the sums are the same sums (a reduce-scatter adds the same two
// numbers an all-reduce does), only the gradient norm adds its parts in
// another order; bf16 rounds the weights it gathers as the replicated
// optimizer rounds its copies.
TEST(DistributedOptimizer, EqualsTheReplicatedOptimizer) {
  const std::vector<Case> cases = {
      {"dp2_fp32", 2, {}, 1e-6, 1e-6},
      {"dp2_bf16", 2, {"--precision", "bf16"}, 1e-3, 2e-3},
      {"dp2tp2pp2_fp32", 8, {"--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"}, 1e-5, 1e-4},
      // The norm weights' gradients summed over TP on the chunks each DP rank owns.
      {"dp2tp2_sp_fp32", 4, {"--tensor-parallel-size", "2", "--sequence-parallel"}, 1e-5, 1e-4},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string plain = fresh_dir("zero_plain_" + c.name), sharded = fresh_dir("zero_" + c.name);
    expect_all_succeeded(run_ranks(c.world, args_of(plain, c.layout, false)));
    const std::vector<ProcessResult> ranks = run_ranks(c.world, args_of(sharded, c.layout, true));
    expect_all_succeeded(ranks);
    expect_same_losses(plain, sharded, kSteps, c.loss_rel);
    expect_same_weights(plain, sharded, c.weight_rel);
    // One bucket reduce-scattered (on Gloo an all-reduce, counted as one)
    // and gathered, bf16 as bf16; the gradient norm's one fp64 value.
    const nlohmann::json dp = read_metrics(sharded)[kSteps]["comm"]["dp"];
    EXPECT_FALSE(dp.contains("reduce_scatter")) << dp.dump();
    EXPECT_EQ(dp["all_reduce"]["calls"], 2) << dp.dump();
    EXPECT_EQ(dp["all_gather"]["calls"], 1) << dp.dump();
    const int64_t gathered = dp["all_gather"]["bytes"], reduced = dp["all_reduce"]["bytes"];
    EXPECT_EQ(reduced - 8, c.name.find("bf16") != std::string::npos ? 2 * gathered : gathered) << dp.dump();
  }
}

// Five steps with it, five more without it on another layout, and the
// other way round, against the uninterrupted run: the optimizer state moved
// (bf16: the fp32 master weights too, which only the boxes hold).
TEST(DistributedOptimizer, CheckpointsResumeWithoutItAndBack) {
  struct Side {
    int world;
    std::vector<std::string> layout;
    bool sharded;
  };
  struct Move {
    std::string name;
    Side from, to;
    double rel;
  };
  const std::vector<Move> moves = {
      {"zero_dp2_to_tp2", {2, {}, true}, {2, {"--tensor-parallel-size", "2"}, false}, 1e-5},
      {"tp2_to_zero_tp2dp2", {2, {"--tensor-parallel-size", "2"}, false}, {4, {"--tensor-parallel-size", "2"}, true},
       1e-5},
      {"zero_bf16_dp4_to_dp1", {4, {"--precision", "bf16"}, true}, {1, {"--precision", "bf16"}, false}, 2e-3},
  };
  for (const Move& m : moves) {
    SCOPED_TRACE(m.name);
    const std::string original = fresh_dir("zero_from_" + m.name), moved = fresh_dir("zero_to_" + m.name);
    expect_all_succeeded(
        run_ranks(m.from.world, with(args_of(original, m.from.layout, m.from.sharded), {"--save-interval", "5"})));
    const std::string checkpoint = original + "/checkpoint-00000005";
    // Each DP rank but the first writes its boxes apart.
    EXPECT_EQ(fs::exists(checkpoint + "/shard-tp0-pp0-dp1.safetensors"), m.from.sharded);
    expect_all_succeeded(
        run_ranks(m.to.world, with(args_of(moved, m.to.layout, m.to.sharded), {"--resume", checkpoint})));
    auto a = read_metrics(original), b = read_metrics(moved);
    ASSERT_EQ(b.begin()->first, 6);
    for (int64_t step = 6; step <= kSteps; ++step) {
      ASSERT_TRUE(b.count(step)) << step;
      const double la = a[step]["loss"].get<double>(), lb = b[step]["loss"].get<double>();
      EXPECT_LE(std::abs(la - lb), m.rel * std::abs(la)) << "step " << step << ": " << la << " vs " << lb;
    }
    expect_same_weights(original, moved, 10 * m.rel);
  }
}

// Without data parallelism there is nothing to shard: the flag changes nothing, and says so.
TEST(DistributedOptimizer, WithoutDataParallelismItIsTheUsualOptimizer) {
  const std::string plain = fresh_dir("zero_dp1_plain"), flagged = fresh_dir("zero_dp1");
  expect_all_succeeded(run_ranks(1, args_of(plain, {}, false)));
  const std::vector<ProcessResult> ranks = run_ranks(1, args_of(flagged, {}, true));
  expect_all_succeeded(ranks);
  EXPECT_NE(ranks[0].output.find("--use-distributed-optimizer has no effect without data parallelism"),
            std::string::npos)
      << ranks[0].output;
  expect_same_losses(plain, flagged, kSteps, 0.0);
}
