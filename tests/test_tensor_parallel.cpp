// Tensor parallelism across real processes: TP = 2 and 4 start from the TP = 1
// weights and compute its logits, gradients and losses; each layer
// communicates exactly Megatron's minimum. With sequence parallelism too, at
// the ring bytes of TP alone plus the norm weights' gradients.
#include <gtest/gtest.h>

#include "minipretrain/checkpoint/checkpoint.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;

namespace {

constexpr int kSteps = 20;
constexpr int kLayers = 4;

std::vector<std::string> tp_args(const std::string& out, int tp) {
  std::vector<std::string> args = tiny_args(out, kSteps);
  args.insert(args.end(), {"--tensor-parallel-size", std::to_string(tp), "--dump-first-step", out + "/dump"});
  return args;
}

std::string baseline() {
  static const std::string dir = [] {
    const std::string out = fresh_dir("tp_baseline");
    expect_all_succeeded(run_ranks(1, tp_args(out, 1)));
    return out;
  }();
  return dir;
}

}  // namespace

TEST(TensorParallel, TwoAndFourRanksEqualOneProcess) {
  // vocab 96 divides by 2 and 4; 4 kv heads divide by 4.
  const auto base_logits = load_full_tensors(baseline() + "/dump", "logits-").at("logits");
  for (int tp : {2, 4}) {
    SCOPED_TRACE("TP " + std::to_string(tp));
    const std::string out = fresh_dir("tp" + std::to_string(tp));
    expect_all_succeeded(run_ranks(tp, tp_args(out, tp)));
    const auto logits = load_full_tensors(out + "/dump", "logits-").at("logits");
    EXPECT_LT((logits - base_logits).abs().max().item<double>(), 1e-5);
    expect_same_first_step(baseline() + "/dump", out + "/dump", "grads", 1e-5);
    expect_same_losses(baseline(), out, kSteps, 1e-5);
    expect_same_weights(baseline(), out, 1e-4);
  }
}

TEST(TensorParallel, PaddedVocabularyEqualsOneProcess) {
  auto with_vocab = [](std::vector<std::string> args) {
    args.insert(args.end(), {"--vocab-size", "95"});  // padded to 96 over TP 2
    return args;
  };
  const std::string one = fresh_dir("tp_pad1"), two = fresh_dir("tp_pad2");
  expect_all_succeeded(run_ranks(1, with_vocab(tp_args(one, 1))));
  expect_all_succeeded(run_ranks(2, with_vocab(tp_args(two, 2))));
  expect_same_losses(one, two, kSteps, 1e-5);
  expect_same_weights(one, two, 1e-4);
  EXPECT_EQ(load_full_tensors(find_latest_checkpoint(two)).at("lm_head.weight").size(0), 95);
}

TEST(TensorParallel, CommunicatesMegatronsMinimum) {
  const std::string out = fresh_dir("tp_counts");
  expect_all_succeeded(run_ranks(2, tp_args(out, 2)));
  const auto record = read_metrics(out).at(kSteps);
  const int64_t microbatches = 4, micro = 2, seq = 16, hidden = 64;
  // Per layer and microbatch: attention and MLP each reduce once forward and
  // once backward. Per microbatch: the embedding (1), the LM head's input
  // copy (1 in backward) and the cross-entropy (3). Per step: the grad norm.
  const int64_t expected_calls = microbatches * (4 * kLayers + 5) + 1;
  EXPECT_EQ(record["comm"]["tp"]["all_reduce"]["calls"].get<int64_t>(), expected_calls);
  const int64_t layer_bytes = 4 * kLayers * microbatches * micro * seq * hidden * 4;
  const int64_t bytes = record["comm"]["tp"]["all_reduce"]["bytes"].get<int64_t>();
  EXPECT_GE(bytes, layer_bytes);
  EXPECT_LT(bytes, layer_bytes + microbatches * (micro * seq * hidden * 4 * 2 + micro * seq * 4 * 3) + 64);
  std::printf("TP=2 all-reduce per step per rank: %lld bytes (layers alone: %lld)\n", static_cast<long long>(bytes),
              static_cast<long long>(layer_bytes));
}

TEST(TensorParallel, ComposesWithDataParallel) {
  const std::string out = fresh_dir("tp2dp2");
  expect_all_succeeded(run_ranks(4, tp_args(out, 2)));
  expect_same_losses(baseline(), out, kSteps, 1e-5);
  expect_same_weights(baseline(), out, 1e-4);
}

namespace {

std::vector<std::string> sp_args(const std::string& out, std::vector<std::string> extra) {
  std::vector<std::string> args = tp_args(out, 2);
  args.push_back("--sequence-parallel");
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

}  // namespace

TEST(TensorParallel, SequenceParallelEqualsOneProcess) {
  const auto base_logits = load_full_tensors(baseline() + "/dump", "logits-").at("logits");
  // Recomputed layers run their gathers and reduce-scatters again in backward.
  for (const std::vector<std::string>& extra : {std::vector<std::string>{}, {"--recompute", "full"}}) {
    SCOPED_TRACE(extra.empty() ? "SP" : "SP, recompute");
    const std::string out = fresh_dir(extra.empty() ? "tp2_sp" : "tp2_sp_recompute");
    expect_all_succeeded(run_ranks(2, sp_args(out, extra)));
    const auto logits = load_full_tensors(out + "/dump", "logits-").at("logits");
    EXPECT_LT((logits - base_logits).abs().max().item<double>(), 1e-5);
    // The norm weights' gradients, summed over TP, are the whole sequence's.
    expect_same_first_step(baseline() + "/dump", out + "/dump", "grads", 1e-5);
    expect_same_losses(baseline(), out, kSteps, 1e-5);
    expect_same_weights(baseline(), out, 1e-4);
  }
}

TEST(TensorParallel, SequenceParallelWithPipelineEqualsOneProcess) {
  // TP 2 x PP 2: the stages pass [micro, seq / 2, hidden].
  const std::string out = fresh_dir("tp2pp2_sp");
  expect_all_succeeded(run_ranks(4, sp_args(out, {"--pipeline-parallel-size", "2"})));
  expect_same_losses(baseline(), out, kSteps, 1e-5);
  expect_same_weights(baseline(), out, 1e-4);
}

TEST(TensorParallel, SequenceParallelMovesTheSameRingBytes) {
  const std::string plain = fresh_dir("tp_ring_plain"), sp = fresh_dir("tp_ring_sp");
  expect_all_succeeded(run_ranks(2, tp_args(plain, 2)));
  expect_all_succeeded(run_ranks(2, sp_args(sp, {})));
  const nlohmann::json a = read_metrics(plain).at(kSteps)["comm"]["tp"], b = read_metrics(sp).at(kSteps)["comm"]["tp"];
  auto ring = [](const nlohmann::json& ops) {
    double total = 0;
    for (const auto& [op, s] : ops.items()) total += s.at("ring_bytes").get<double>();
    return total;
  };
  // Per microbatch each all-reduce of a [micro, seq, hidden] activation
  // became one all-gather and one reduce-scatter: per layer 4 of each; the
  // embedding and the LM head one of each.
  const int64_t microbatches = 4, hidden = 64;
  EXPECT_FALSE(a.contains("all_gather"));
  EXPECT_EQ(b["all_gather"]["calls"].get<int64_t>(), microbatches * (4 * kLayers + 2));
  EXPECT_EQ(b["reduce_scatter"]["calls"].get<int64_t>(), microbatches * (4 * kLayers + 2));
  EXPECT_EQ(b["all_gather"]["bytes"], b["reduce_scatter"]["bytes"]);
  // All-reduces left: the cross-entropy's 3 per microbatch, the grad norm,
  // and one for the norm weights' gradients (2 per layer and the final one, fp32).
  EXPECT_EQ(b["all_reduce"]["calls"].get<int64_t>(), microbatches * 3 + 2);
  const double norm_gradients = (2 * kLayers + 1) * hidden * 4;
  EXPECT_DOUBLE_EQ(ring(b), ring(a) + norm_gradients);
  std::printf("TP=2 ring bytes per step per rank: %.0f without sequence parallelism, %.0f with (%.0f of them the "
              "norm weights' gradients)\n",
              ring(a), ring(b), norm_gradients);
}
