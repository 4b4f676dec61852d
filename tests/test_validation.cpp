// A validation run: --split holds out part of an indexed dataset, whose loss
// the log and metrics.jsonl report at every --eval-interval.
#include <gtest/gtest.h>

#include <cmath>

#include "minipretrain/data/indexed_dataset.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;

TEST(Validation, SplitGivesValidationLossInTheLogAndMetrics) {
  const std::string dir = fresh_dir("validation");
  std::vector<int64_t> tokens(4001);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int64_t>((i * 7) % 96);
  IndexedDatasetWriter writer(dir + "/data", 1000);
  writer.add_document(tokens);
  writer.finish();
  std::vector<std::string> args = tiny_args(dir + "/out", 10);
  args.insert(args.end(), {"--data-path", dir + "/data", "--split", "90,10", "--eval-interval", "5", "--eval-iters", "2"});
  std::vector<ProcessResult> r = run_ranks(2, args);
  expect_all_succeeded(r);
  EXPECT_NE(r[0].output.find("Validation at step 5 | Loss: "), std::string::npos) << r[0].output;
  auto valid = read_metrics(dir + "/out", "val_loss");
  ASSERT_EQ(valid.size(), 2u);
  EXPECT_GT(valid[5]["val_loss"].get<double>(), valid[10]["val_loss"].get<double>());  // a periodic sequence is learnable
  EXPECT_NEAR(valid[10]["val_ppl"].get<double>(), std::exp(valid[10]["val_loss"].get<double>()), 1e-9);
}
