// Pipeline parallelism across real processes: PP = 2 and 4 with every
// schedule and 1, 2 and 8 microbatches compute the single-process run.
#include <gtest/gtest.h>

#include "test_support.h"

using namespace minipretrain::test;

namespace {

constexpr int kSteps = 10;

// micro-batch 1 and M microbatches: the global batch is M.
std::vector<std::string> pp_args(const std::string& out, int pp, int m, const std::string& schedule) {
  std::vector<std::string> args = tiny_args(out, kSteps);
  args.insert(args.end(), {"--pipeline-parallel-size", std::to_string(pp), "--micro-batch-size", "1",
                           "--global-batch-size", std::to_string(m), "--pipeline-schedule", schedule});
  return args;
}

// The schedules past 1F1B, with a model of 8 layers so that PP 4 x V 2
// chunks each hold one.
std::vector<std::string> schedule_args(const std::string& out, int pp, int m, const std::string& schedule) {
  std::vector<std::string> args = pp_args(out, pp, m, schedule);
  args.insert(args.end(), {"--num-layers", "8"});
  if (schedule == "interleaved-1f1b") args.insert(args.end(), {"--virtual-pipeline-stages", "2"});
  return args;
}

}  // namespace

TEST(PipelineParallel, EverySchedulePPAndMicrobatchCountEqualsOneProcess) {
  for (int m : {1, 2, 8}) {
    const std::string base = fresh_dir("pp_base_m" + std::to_string(m));
    expect_all_succeeded(run_ranks(1, pp_args(base, 1, m, "1f1b")));
    for (int pp : {2, 4})
      for (const std::string schedule : {"gpipe", "1f1b"}) {
        SCOPED_TRACE("PP " + std::to_string(pp) + " M " + std::to_string(m) + " " + schedule);
        const std::string out = fresh_dir("pp" + std::to_string(pp) + "_m" + std::to_string(m) + "_" + schedule);
        expect_all_succeeded(run_ranks(pp, pp_args(out, pp, m, schedule)));
        expect_same_losses(base, out, kSteps, 1e-5);
        expect_same_weights(base, out, 1e-4);
      }
  }
}

TEST(PipelineParallel, InterleavedAndZeroBubbleEqualOneProcess) {
  for (int m : {1, 2, 8}) {
    const std::string base = fresh_dir("sched_base_m" + std::to_string(m));
    expect_all_succeeded(run_ranks(1, schedule_args(base, 1, m, "1f1b")));
    for (int pp : {2, 4})
      for (const std::string schedule : {"interleaved-1f1b", "zb-h1"}) {
        SCOPED_TRACE("PP " + std::to_string(pp) + " M " + std::to_string(m) + " " + schedule);
        const std::string out = fresh_dir("sched_pp" + std::to_string(pp) + "_m" + std::to_string(m) + "_" + schedule);
        const auto results = run_ranks(pp, schedule_args(out, pp, m, schedule));
        expect_all_succeeded(results);
        EXPECT_NE(results[0].output.find("(" + schedule + " theory "), std::string::npos) << results[0].output;
        expect_same_losses(base, out, kSteps, 1e-5);
        expect_same_weights(base, out, 1e-4);
      }
  }
}

// Interleaving takes an uneven split per virtual stage; ZB-H1 defers the
// weight gradients of recomputed layers too.
TEST(PipelineParallel, InterleavedSplitAndZeroBubbleRecomputeEqualOneProcess) {
  const std::string base = fresh_dir("sched_extra_base");
  expect_all_succeeded(run_ranks(1, schedule_args(base, 1, 4, "1f1b")));
  const std::string split = fresh_dir("sched_interleaved_split");
  std::vector<std::string> args = schedule_args(split, 2, 4, "interleaved-1f1b");
  args.insert(args.end(), {"--pipeline-layer-split", "1,3,3,1"});
  const auto results = run_ranks(2, args);
  expect_all_succeeded(results);
  EXPECT_NE(results[0].output.find("Layers per virtual stage: 1,3,3,1"), std::string::npos) << results[0].output;
  expect_same_losses(base, split, kSteps, 1e-5);
  expect_same_weights(base, split, 1e-4);
  const std::string recompute = fresh_dir("sched_zb_recompute");
  args = schedule_args(recompute, 2, 4, "zb-h1");
  args.insert(args.end(), {"--recompute", "full"});
  expect_all_succeeded(run_ranks(2, args));
  expect_same_losses(base, recompute, kSteps, 1e-5);
  expect_same_weights(base, recompute, 1e-4);
}

TEST(PipelineParallel, UnevenLayerSplitsEqualOneProcess) {
  const std::string base = fresh_dir("split_base");
  expect_all_succeeded(run_ranks(1, pp_args(base, 1, 4, "1f1b")));
  for (const std::string split : {"3,1", "1,3"}) {
    SCOPED_TRACE(split);
    const std::string out = fresh_dir("split_" + split.substr(0, 1));
    std::vector<std::string> args = pp_args(out, 2, 4, "1f1b");
    args.insert(args.end(), {"--pipeline-layer-split", split});
    const auto results = run_ranks(2, args);
    expect_all_succeeded(results);
    EXPECT_NE(results[0].output.find("Layers per stage: " + split), std::string::npos) << results[0].output;
    expect_same_losses(base, out, kSteps, 1e-5);
    expect_same_weights(base, out, 1e-4);
  }
}

TEST(PipelineParallel, DataTensorAndPipelineTogether) {
  // 2 x 2 x 2 = 8 processes against one, global batch 8.
  const std::string base = fresh_dir("3d_base"), out = fresh_dir("3d");
  std::vector<std::string> args = tiny_args(base, kSteps);
  expect_all_succeeded(run_ranks(1, args));
  args = tiny_args(out, kSteps);
  args.insert(args.end(), {"--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"});
  expect_all_succeeded(run_ranks(8, args));
  expect_same_losses(base, out, kSteps, 1e-5);
  expect_same_weights(base, out, 1e-4);
}

TEST(PipelineParallel, NewSchedulesWithDataAndTensorParallel) {
  // TP 2 x DP 2 x PP 2 with each new schedule against one process, global batch 8.
  const std::string base = fresh_dir("3d_sched_base");
  std::vector<std::string> args = tiny_args(base, kSteps);
  args.insert(args.end(), {"--num-layers", "8"});
  expect_all_succeeded(run_ranks(1, args));
  for (const std::string schedule : {"interleaved-1f1b", "zb-h1"}) {
    SCOPED_TRACE(schedule);
    const std::string out = fresh_dir("3d_" + schedule);
    args = tiny_args(out, kSteps);
    args.insert(args.end(), {"--num-layers", "8", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
                             "--pipeline-schedule", schedule});
    if (schedule == "interleaved-1f1b") args.insert(args.end(), {"--virtual-pipeline-stages", "2"});
    expect_all_succeeded(run_ranks(8, args));
    expect_same_losses(base, out, kSteps, 1e-5);
    // After 10 AdamW steps one weight element whose gradient nearly cancels
    // can differ by a few % of a step: with interleaving, seeds 1-7 and 1234
    // measured 6e-6 to 1.7e-4, the largest all in one element (2026-11-26).
    expect_same_weights(base, out, 5e-4);
  }
}

TEST(PipelineParallel, EveryShardSavesAndResumes) {
  // TP 2 x PP 2: stopped after step 5 and resumed = the uninterrupted run.
  auto args = [](const std::string& out) {
    std::vector<std::string> a = tiny_args(out, kSteps);
    a.insert(a.end(), {"--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"});
    return a;
  };
  const std::string full = fresh_dir("pp_resume_full"), parts = fresh_dir("pp_resume_parts");
  expect_all_succeeded(run_ranks(4, args(full)));
  std::vector<std::string> first = args(parts);
  first.insert(first.end(), {"--exit-interval", "5"});
  expect_all_succeeded(run_ranks(4, first));
  std::vector<std::string> second = args(parts);
  second.insert(second.end(), {"--resume", "auto"});
  expect_all_succeeded(run_ranks(4, second));
  expect_same_losses(full, parts, kSteps, 0.0);
  expect_same_weights(full, parts, 0.0);
}
