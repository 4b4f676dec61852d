// The planner against the real thing: its memory is the measured peak RSS
// within 15%, its traffic the communicators' counters exactly, its bubble
// theory (and the trainer's) the literature's closed form; and `minipretrain
// plan` lists only valid layouts, best first, and fails in one line on bad
// input. The schedule simulation alone: test_schedule_simulation.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "minipretrain/commands/cli.h"
#include "minipretrain/commands/plan.h"
#include "minipretrain/plan/estimate.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;

namespace {

// The config a run of the binary with `args` trains, resolved for `world`.
Config config_of(const std::vector<std::string>& args, int64_t world) {
  std::vector<const char*> argv{"minipretrain"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  Config config = parse_command_line(static_cast<int>(argv.size()), argv.data())->config;
  config.resolve(world);
  return config;
}

int64_t counted_bytes(const nlohmann::json& ops) {
  int64_t total = 0;
  for (const auto& [op, s] : ops.items()) total += s.at("bytes").get<int64_t>();
  return total;
}

// A model whose weights, optimizer state and activations are several times
// the process baseline, yet whose step takes seconds on one core: a wide
// vocabulary, short sequences, few layers.
std::vector<std::string> measured_args(const std::string& out) {
  return {"--vocab-size", "16000", "--hidden-size", "256", "--intermediate-size", "768", "--num-layers", "4",
          "--num-attention-heads", "8", "--num-key-value-heads", "4", "--max-seq-length", "256",
          "--micro-batch-size", "2", "--global-batch-size", "8", "--max-steps", "2", "--num-train-samples", "64",
          "--log-interval", "1", "--save-interval", "1000", "--num-threads", "1", "--dist-timeout", "120",
          "--device", "cpu", "--output-dir", out};
}

struct MeasuredRun {
  std::string name;
  int world;
  std::vector<std::string> layout;  // flags added to measured_args
};

}  // namespace

// Eight CPU runs of different layouts, precisions, schedules and recompute:
// rank 0's counters equal the prediction for its stage byte for byte, and its
// peak RSS is the prediction within 15%. Runs one at a time (RSS under
// contention from a sibling test would not move, but time would).
TEST(Plan, PredictionsMatchMeasuredRuns) {
  const std::vector<MeasuredRun> runs = {
      {"dp1_fp32_gpipe", 1, {"--precision", "fp32", "--pipeline-schedule", "gpipe"}},
      {"dp1_bf16_recompute", 1, {"--precision", "bf16", "--recompute", "full"}},
      {"tp2_fp32", 2, {"--precision", "fp32", "--tensor-parallel-size", "2"}},
      {"tp2_sp_bf16", 2, {"--precision", "bf16", "--tensor-parallel-size", "2", "--sequence-parallel"}},
      // Halved by TP or holding few activations: a wider vocabulary keeps the model above the baseline.
      {"tp2_bf16_recompute", 2,
       {"--precision", "bf16", "--tensor-parallel-size", "2", "--recompute", "full", "--vocab-size", "32000"}},
      {"pp2_gpipe_bf16", 2, {"--precision", "bf16", "--pipeline-parallel-size", "2", "--pipeline-schedule", "gpipe"}},
      {"pp2_1f1b_fp32_recompute", 2,
       {"--precision", "fp32", "--pipeline-parallel-size", "2", "--pipeline-schedule", "1f1b", "--recompute", "full",
        "--vocab-size", "32000"}},
      {"dp2_bf16", 2, {"--precision", "bf16"}},
      {"dp2_bf16_distributed_optimizer", 2, {"--precision", "bf16", "--use-distributed-optimizer"}},
  };
  for (const MeasuredRun& run : runs) {
    SCOPED_TRACE(run.name);
    const std::string out = fresh_dir("plan_" + run.name);
    std::vector<std::string> args = measured_args(out);
    args.insert(args.end(), run.layout.begin(), run.layout.end());
    expect_all_succeeded(run_ranks(run.world, args));
    const nlohmann::json last = read_metrics(out).rbegin()->second;

    Cluster cluster;
    cluster.world_size = run.world;
    cluster.cpu = true;
    const Config config = config_of(args, run.world);
    const LayoutEstimate plan = estimate_layout(config, cluster);
    const StageEstimate& rank0 = plan.stages.front();  // the logging rank: stage 0, TP 0, DP 0

    EXPECT_EQ(counted_bytes(last["comm"]["tp"]), rank0.comm.tp);
    EXPECT_EQ(counted_bytes(last["comm"]["dp"]), rank0.comm.dp);
    EXPECT_EQ(counted_bytes(last["comm"]["pp"]), rank0.comm.pp);
    const double literature = literature_bubble(config.parallel.pipeline_schedule, config.parallel.pipeline_parallel_size,
                                                config.microbatches());
    EXPECT_NEAR(last["bubble_theory"].get<double>(), literature, 1e-12);
    EXPECT_NEAR(plan.bubble_theory, literature, 1e-12);

    const double measured = last["peak_rss_mb"].get<double>() * 1024 * 1024;
    const double predicted = rank0.memory.total();
    std::printf("[plan] %-26s measured %7.1f MB, predicted %7.1f MB (%+5.1f%%; model terms %.1f MB) | comm TP %lld DP "
                "%lld PP %lld bytes\n",
                run.name.c_str(), measured / 1048576, predicted / 1048576, 100 * (predicted - measured) / measured,
                (predicted - rank0.memory.baseline) / 1048576, static_cast<long long>(rank0.comm.tp),
                static_cast<long long>(rank0.comm.dp), static_cast<long long>(rank0.comm.pp));
    EXPECT_LE(std::abs(predicted - measured), 0.15 * measured)
        << "measured " << measured << " predicted " << predicted;
    // The model, not the constant, carries the prediction: the baseline alone misses by more than the bound.
    EXPECT_GT(std::abs(rank0.memory.baseline - measured), 0.15 * measured);
  }
}

// The distributed optimizer's and --async-save's terms, by hand: DP 4 in
// bf16 keeps 2 + 4/4 bytes of weights, 8/4 of moments and a snapshot of 12/4
// per parameter; its DP traffic is the padded buffer reduce-scattered (4
// bytes) and gathered (2) plus the norm's 8 bytes. In fp32 without it the
// snapshot is 12 bytes a parameter, counted on CPU, host memory on GPUs.
TEST(Plan, DistributedOptimizerAndSnapshotTerms) {
  Cluster cpu;
  cpu.world_size = 4;
  cpu.cpu = true;
  const std::vector<std::string> model = measured_args("unused");
  const Config zero = config_of(with(model, {"--precision", "bf16", "--use-distributed-optimizer", "--async-save"}), 4);
  const StageEstimate s = estimate_layout(zero, cpu).stages.front();
  const double n = static_cast<double>(s.parameters);
  EXPECT_DOUBLE_EQ(s.memory.weights, 3 * n);
  EXPECT_DOUBLE_EQ(s.memory.optimizer, 2 * n);
  EXPECT_DOUBLE_EQ(s.memory.snapshot, 3 * n);
  const int64_t padded = (s.parameters + 3) / 4 * 4;
  EXPECT_EQ(s.comm.dp, padded * 6 + 8);

  const Config plain = config_of(with(model, {"--precision", "fp32", "--async-save"}), 4);
  const MemoryEstimate on_cpu = estimate_layout(plain, cpu).stages.front().memory;
  EXPECT_DOUBLE_EQ(on_cpu.snapshot, 12 * n);
  Cluster gpu = cpu;
  gpu.cpu = false;
  const MemoryEstimate on_gpu = estimate_layout(plain, gpu).stages.front().memory;
  EXPECT_DOUBLE_EQ(on_cpu.total() - on_cpu.baseline - on_cpu.snapshot, on_gpu.total());
}

TEST(Plan, ListsValidLayoutsBestFirstAsJson) {
  const ProcessResult r = run_binary({"plan", "--config", std::string(MINIPRETRAIN_SOURCE_DIR) + "/configs/large.json",
                                      "--world-size", "16", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json layouts = nlohmann::json::parse(r.output);
  ASSERT_GT(layouts.size(), 10u);
  bool seen_not_fitting = false, own_layout = false;
  double previous = INFINITY;
  for (const nlohmann::json& l : layouts) {
    const int64_t tp = l["tensor_parallel_size"], pp = l["pipeline_parallel_size"], dp = l["data_parallel_size"];
    EXPECT_EQ(tp * pp * dp, 16);
    EXPECT_LE(tp, 8);  // inside a node
    EXPECT_EQ(l["micro_batch_size"].get<int64_t>() * l["num_microbatches"].get<int64_t>() * dp, 32);
    EXPECT_EQ(20 % tp, 0);  // the heads divide
    // Fitting layouts first, each group by tokens/s.
    const bool fits = l["fits"];
    if (!fits && !seen_not_fitting) previous = INFINITY;
    EXPECT_FALSE(fits && seen_not_fitting);
    seen_not_fitting = seen_not_fitting || !fits;
    EXPECT_LE(l["tokens_per_s"].get<double>(), previous * 1.01);  // ties within 0.5% go to the smaller memory
    previous = l["tokens_per_s"];
    // The largest rank is named and is the largest.
    double largest = 0;
    for (const nlohmann::json& s : l["stages"]) largest = std::max(largest, s["memory_bytes"]["total"].get<double>());
    EXPECT_EQ(l["peak_memory_bytes"].get<double>(), largest);
    own_layout = own_layout || (tp == 4 && pp == 2 && l["micro_batch_size"] == 4 && l["precision"] == "bf16" &&
                                l["recompute"] == "none" && l["pipeline_schedule"] == "1f1b");
  }
  EXPECT_TRUE(own_layout) << "the config's own layout is missing";
}

TEST(Plan, TableMarksWhatDoesNotFit) {
  const std::string config = std::string(MINIPRETRAIN_SOURCE_DIR) + "/configs/xl.json";
  const ProcessResult r = run_binary({"plan", "--config", config, "--world-size", "8", "--device-memory", "1GB"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("does not fit"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("0 fit"), std::string::npos) << r.output;
  const ProcessResult top3 = run_binary({"plan", "--config", config, "--world-size", "8", "--top", "3"});
  ASSERT_EQ(top3.exit_code, 0) << top3.output;
  EXPECT_NE(top3.output.find("\n  3 "), std::string::npos) << top3.output;
  EXPECT_EQ(top3.output.find("\n  4 "), std::string::npos) << top3.output;
}

TEST(Plan, BadInputFailsInOneLine) {
  const std::vector<std::vector<std::string>> cases = {
      // 1 layer, 1 head, an odd batch: no TP, PP or DP of 2 is valid.
      {"plan", "--world-size", "2", "--num-layers", "1", "--num-attention-heads", "1", "--hidden-size", "64",
       "--global-batch-size", "5"},
      {"plan", "--world-size", "8", "--device-memory", "80XB"},
      {"plan", "--world-size", "8", "--inter-node-bw", "50GB"},
      {"plan", "--world-size", "0"},
  };
  const std::vector<std::string> expected = {"no valid layout for world size 2", "--device-memory must be",
                                             "--inter-node-bw must be a rate", "--world-size must be positive"};
  for (size_t i = 0; i < cases.size(); ++i) {
    const ProcessResult r = run_binary(cases[i]);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(expected[i]), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}

// --print-config shows the chosen layout's estimate, and so does the banner;
// a run whose layout is predicted not to fit (sequences of 65536 tokens: the
// attention scores alone would take petabytes) is warned about before any
// work starts. The runs stop at once, on a checkpoint that does not exist.
TEST(Plan, PrintConfigAndBannerShowTheEstimate) {
  const std::string out = fresh_dir("plan_banner");
  std::vector<std::string> args = measured_args(out);
  args.insert(args.end(), {"--precision", "fp32", "--resume", out + "/no-such-checkpoint"});
  // By hand, fp32 (4 bytes), one process, 1F1B over M 4: 1 microbatch in flight.
  // h 256, 8 heads of 32 (q 256), kv 128, inter 768, vocab 16000, 512 tokens.
  //   parameters: 4 x (256 x 512 + 256 x 256 + 3 x 256 x 768 + 2 x 256) = 3147776,
  //     + embedding and head 2 x 16000 x 256 + norm 256 = 11340032;
  //     weights and gradients 4 bytes each: 45360128 B = 0.05 GB; AdamW 8: 0.09.
  //   a layer's saved tensors: norms 2 x (4 + 8) x 256 x 512 = 3145728, attention
  //     4 x (3 x 256 + 4 x 128) x 512 + 2 x 8 x 256^2 x 4 = 6815744, MLP
  //     4 x 4 x 768 x 512 = 6291456: 16252928; four of them 65011712, + the
  //     final norm 12 x 256 x 512 = 1572864 + the fp32 softmax 4 x 16000 x 512
  //     = 32768000: 99352576 held, + the cross-entropy's working set
  //     12 x 16000 x 512 = 98304000: 197656576 = 0.20 GB. Recomputed: four
  //     inputs 4 x 4 x 256 x 512 = 2097152 instead of the layers: 134742016 = 0.13.
  //   CPU process (173 + 214) MiB + the synthetic corpus 4 x 64 x 256: 405864448 = 0.41.
  //   total 2 x 45360128 + 90720256 + 197656576 + 405864448 = 784961536 = 0.78.
  const std::string estimate =
      "0.78 GB per rank on stage 0 of 1 (weights 0.05, gradients 0.05, optimizer 0.09, activations 0.20 for 1 "
      "microbatch(es) in flight [0.20 without recompute, 0.13 with], communication buffers 0.00, CPU process 0.41)";
  std::vector<std::string> print = args;
  print.push_back("--print-config");
  const ProcessResult printed = run_binary(print);
  ASSERT_EQ(printed.exit_code, 0) << printed.output;
  EXPECT_NE(printed.output.find("memory estimate: " + estimate), std::string::npos) << printed.output;

  const ProcessResult fits = run_binary(args);
  EXPECT_NE(fits.output.find("  Memory estimate: " + estimate), std::string::npos) << fits.output;
  EXPECT_EQ(fits.output.find("predicted not to fit"), std::string::npos) << fits.output;

  args.insert(args.end(), {"--max-seq-length", "65536", "--global-batch-size", "2", "--num-train-samples", "8"});
  const ProcessResult huge = run_binary(args);
  EXPECT_NE(huge.exit_code, 0) << huge.output;
  const size_t warning = huge.output.find("predicted not to fit");
  ASSERT_NE(warning, std::string::npos) << huge.output;
  EXPECT_LT(warning, huge.output.find("Training Configuration")) << huge.output;
}
