// bf16 mixed precision, activation recomputation and the fused projections,
// over real processes, against the single-process run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "minipretrain/checkpoint/checkpoint.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

constexpr int kSteps = 20;

std::vector<std::string> bf16_args(const std::string& out, const std::vector<std::string>& extra = {}) {
  return with(with(tiny_args(out, kSteps), {"--precision", "bf16"}), extra);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

// Each layout against one bf16 process: step 1's logits and gradients
// (--dump-first-step), then 20 steps' losses and the final weights, within a
// few times what each measured (2026-12, AVX512-BF16; the same within 3% with
// oneDNN held to AVX2), printed below as [bf16] lines.
//   PP runs the same bf16 operations on the same rows in the same order:
//     step 1 is exact, and so were the 20 steps; 1e-6 leaves the sum of
//     squares for clipping its order across stages.
//   DP adds the bf16 gradients of the same microbatches in fp32 in another
//     order; a sum of bf16 values is exact in fp32 unless their exponents
//     differ by more than 16, so everything measured 0. 1e-6 is fp32's
//     summation-order noise (DP 2 in fp32: 5e-8 losses, 3e-7 weights).
//   TP adds bf16 partial sums of the row-parallel GEMMs, each rounded to bf16
//     first: step 1's logits 4.9e-3, gradients 9.6e-3, losses 5.9e-4 over 20
//     steps. A missing all-reduce or a wrong shard moves step 1 by tens of
//     percent. AdamW's normalized step then turns that rounding into a few
//     percent on o_proj and down_proj for elements whose gradient is near
//     zero (2.3e-2 after 20 steps), so the final weights say little more
//     than "nothing diverged"; the shards are checked at step 1.
TEST(MixedPrecision, Bf16LayoutsMatchOneProcessBf16) {
  const std::string base = fresh_dir("bf16_base");
  expect_all_succeeded(run_ranks(1, bf16_args(base, {"--dump-first-step", base + "/dump"})));
  EXPECT_NE(read_metrics(base).at(1)["loss"].get<double>(), 0.0);

  struct Layout {
    std::string name;
    int world;
    std::vector<std::string> flags;
    double logits_rel, grads_rel, loss_rel, weight_rel;
  };
  const std::vector<std::string> pp2 = {"--pipeline-parallel-size", "2", "--pipeline-schedule"};
  const std::vector<Layout> layouts = {
      {"pp2_gpipe", 2, with(pp2, {"gpipe"}), 0, 0, 1e-6, 1e-6},
      {"pp2_1f1b", 2, with(pp2, {"1f1b"}), 0, 0, 1e-6, 1e-6},
      // B and W each fold their own gradients into fp32, in microbatch order.
      {"pp2_zb-h1", 2, with(pp2, {"zb-h1"}), 0, 0, 1e-6, 1e-6},
      {"pp2_interleaved", 2, with(pp2, {"interleaved-1f1b", "--virtual-pipeline-stages", "2"}), 0, 0, 1e-6, 1e-6},
      {"dp2", 2, {}, 0, 1e-6, 1e-6, 1e-6},
      {"tp2", 2, {"--tensor-parallel-size", "2"}, 2e-2, 3e-2, 2e-3, 7e-2},
      {"dp2_tp2_pp2", 8, {"--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"}, 2e-2, 3e-2, 2e-3, 7e-2},
  };
  for (const Layout& l : layouts) {
    SCOPED_TRACE(l.name);
    const std::string out = fresh_dir("bf16_" + l.name);
    expect_all_succeeded(run_ranks(l.world, bf16_args(out, with(l.flags, {"--dump-first-step", out + "/dump"}))));
    const double logits = expect_same_first_step(base + "/dump", out + "/dump", "logits", l.logits_rel);
    const double grads = expect_same_first_step(base + "/dump", out + "/dump", "grads", l.grads_rel);
    const double losses = expect_same_losses(base, out, kSteps, l.loss_rel);
    const double weights = expect_same_weights(base, out, l.weight_rel);
    std::printf("[bf16] %-16s step 1: logits %.1e, gradients %.1e | %d steps: losses %.1e, weights %.1e\n",
                l.name.c_str(), logits, grads, kSteps, losses, weights);
  }
}

TEST(MixedPrecision, Bf16ResumeIsExact) {
  const std::string full = fresh_dir("bf16_resume_full"), parts = fresh_dir("bf16_resume_parts");
  expect_all_succeeded(run_ranks(1, bf16_args(full)));
  expect_all_succeeded(run_ranks(1, bf16_args(parts, {"--exit-interval", "5"})));
  expect_all_succeeded(run_ranks(1, bf16_args(parts, {"--resume", "auto"})));
  expect_same_losses(full, parts, kSteps, 0.0);
  expect_same_weights(full, parts, 0.0);
}

TEST(MixedPrecision, CheckpointsHoldFp32MasterWeights) {
  const std::string out = fresh_dir("bf16_master");
  std::vector<std::string> args = bf16_args(out);
  expect_all_succeeded(run_ranks(1, args));
  const auto tensors = load_full_tensors(find_latest_checkpoint(out));
  const torch::Tensor w = tensors.at("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(w.scalar_type(), torch::kFloat);
  // Master weights moved by updates far smaller than a bf16 step are not bf16 values.
  EXPECT_FALSE(torch::equal(w, w.to(torch::kBFloat16).to(torch::kFloat)));
}

TEST(Recompute, ChangesNoNumber) {
  for (const std::string precision : {"fp32", "bf16"}) {
    for (int tp : {1, 2}) {
      SCOPED_TRACE(precision + " TP " + std::to_string(tp));
      const std::string tag = precision + "_tp" + std::to_string(tp);
      const std::string plain = fresh_dir("recompute_off_" + tag), again = fresh_dir("recompute_on_" + tag);
      auto args = [&](const std::string& out, const std::string& recompute) {
        std::vector<std::string> a = tiny_args(out, 6);
        a.insert(a.end(), {"--precision", precision, "--recompute", recompute, "--tensor-parallel-size",
                           std::to_string(tp), "--dump-first-step", out + "/dump"});
        return a;
      };
      expect_all_succeeded(run_ranks(tp, args(plain, "none")));
      expect_all_succeeded(run_ranks(tp, args(again, "full")));
      expect_same_losses(plain, again, 6, 0.0);
      const auto g0 = load_full_tensors(plain + "/dump", "grads-"), g1 = load_full_tensors(again + "/dump", "grads-");
      ASSERT_EQ(g0.size(), g1.size());
      for (const auto& [name, g] : g0) EXPECT_TRUE(torch::equal(g, g1.at(name))) << name;
      expect_same_weights(plain, again, 0.0);
    }
  }
}

// Checkpoints written before Q/K/V and gate/up were fused (tests/data/pre_fusion,
// made by the previous release with the flags below) still resume, continue
// the old run's losses, and export to the very bytes the old release wrote.
TEST(FusedProjections, PreFusionCheckpointsResumeAndExportUnchanged) {
  const std::string data = std::string(MINIPRETRAIN_SOURCE_DIR) + "/tests/data/pre_fusion";
  const std::vector<std::string> flags = {
      "--vocab-size", "64", "--hidden-size", "32", "--intermediate-size", "64", "--num-layers", "2",
      "--num-attention-heads", "4", "--num-key-value-heads", "2", "--max-seq-length", "16", "--micro-batch-size", "2",
      "--global-batch-size", "4", "--max-steps", "4", "--learning-rate", "0.01", "--num-train-samples", "64",
      "--log-interval", "1", "--num-threads", "1", "--precision", "fp32", "--save-interval", "1000"};
  for (int tp : {1, 2}) {
    SCOPED_TRACE("TP " + std::to_string(tp));
    const std::string old_run = data + "/tp" + std::to_string(tp);
    const std::string out = fresh_dir("pre_fusion_tp" + std::to_string(tp));
    std::vector<std::string> args = flags;
    args.insert(args.end(), {"--tensor-parallel-size", std::to_string(tp), "--output-dir", out, "--resume", old_run});
    expect_all_succeeded(run_ranks(tp, args));
    std::map<int64_t, nlohmann::json> old_losses;
    std::ifstream in(old_run + "/old_metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto record = nlohmann::json::parse(line);
      old_losses[record.at("step").get<int64_t>()] = record;
    }
    const auto now = read_metrics(out);
    ASSERT_EQ(now.size(), 2u);
    for (int64_t step : {3, 4}) {
      const double was = old_losses.at(step)["loss"].get<double>(), is = now.at(step)["loss"].get<double>();
      EXPECT_NEAR(is, was, 1e-5 * was) << "step " << step;
    }

    const std::string exported = fresh_dir("pre_fusion_export_tp" + std::to_string(tp));
    ProcessResult r = run_binary({"export", "--checkpoint", old_run, "--output", exported});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(read_bytes(exported + "/model.safetensors") == read_bytes(old_run + "/old_export.safetensors"));
  }
}
