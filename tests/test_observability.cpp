// Seeing a run (issue 14): the step line's elapsed time and ETA, and the plot
// script. The TensorBoard event files are read by TensorBoard itself in
// test_oracles.cpp (it replaced a reader written here, which shared the
// writer's mistake of storing SessionLog under Event field 4, graph_def).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "test_support.h"

using namespace minipretrain::test;
namespace fs = std::filesystem;

// The step line says how long the run has taken and how long it will take.
TEST(TensorBoard, TheStepLineShowsElapsedTimeAndEta) {
  ProcessResult r = run_binary(tiny_args(fresh_dir("eta"), 3));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("Step 1 \\| .* \\| Elapsed: 0:00:0[0-9] \\| ETA: 0:00:0[0-9]")))
      << r.output;
  EXPECT_NE(r.output.find("Training Configuration:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("World size: 1 | Data parallel: 1 | Tensor parallel: 1 | Pipeline parallel: 1"),
            std::string::npos)
      << r.output;
}

// scripts/plot_metrics.py draws two runs side by side into a PNG. Run by a
// python3 without matplotlib (here -S: no site-packages, whatever the machine
// has), it runs itself again with the project's .venv, where
// scripts/install_deps.sh installs matplotlib.
TEST(PlotMetrics, DrawsRunsIntoAPng) {
  const std::string python = venv_program("python");
  ASSERT_EQ(run({python, "-c", "import matplotlib"}).exit_code, 0)
      << python << " has no matplotlib: run scripts/install_deps.sh";
  const std::string script = std::string(MINIPRETRAIN_SOURCE_DIR) + "/scripts/plot_metrics.py";
  const std::string a = fresh_dir("plot_a"), b = fresh_dir("plot_b");
  for (const std::string& out : {a, b}) {
    std::vector<std::string> args = tiny_args(out, 6);
    args.insert(args.end(), {"--split", "90,10", "--eval-interval", "3", "--eval-iters", "1"});
    ASSERT_EQ(run_binary(args).exit_code, 0);
  }
  const std::string png = a + "/curves.png";
  ProcessResult r = run({"/usr/bin/python3", "-S", script, a, b, "-o", png});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(png, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_GT(fs::file_size(png), 10000u);

  r = run({"/usr/bin/python3", "-S", script, a + "/nowhere"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("has no metrics.jsonl"), std::string::npos) << r.output;
}
