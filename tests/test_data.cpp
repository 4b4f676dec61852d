// Datasets, windows and the global-batch sampler.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "minipretrain/data/dataset.h"
#include "test_support.h"

using namespace minipretrain;

TEST(Data, PackedWindowsOverlapByOneToken) {
  const std::string dir = test::fresh_dir("packed");
  std::vector<int64_t> tokens(41);
  std::iota(tokens.begin(), tokens.end(), 0);
  PackedDataset::write(dir, tokens, 100);
  PackedDataset data(dir, 100, 8);
  EXPECT_EQ(data.num_samples(), 5);  // (41 - 1) / 8
  EXPECT_TRUE(torch::equal(data.sample(0), torch::arange(0, 9, torch::kLong)));
  EXPECT_TRUE(torch::equal(data.sample(4), torch::arange(32, 41, torch::kLong)));
}

TEST(Data, PackedUsesUint32ForLargeVocabularies) {
  const std::string dir = test::fresh_dir("packed32");
  PackedDataset::write(dir, {70000, 1, 69999, 5, 6}, 80000);
  EXPECT_EQ(std::filesystem::file_size(dir + "/tokens.bin"), 20u);
  PackedDataset data(dir, 80000, 4);
  EXPECT_EQ(data.sample(0)[0].item<int64_t>(), 70000);
}

TEST(Data, PackedRejectsBadFiles) {
  auto error_of = [](const std::string& dir, int64_t vocab) {
    try {
      PackedDataset(dir, vocab, 4);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string dir = test::fresh_dir("bad_packed");
  PackedDataset::write(dir, {1, 2, 3, 4, 5, 6, 7, 8, 9}, 100);
  EXPECT_NE(error_of(dir, 9).find("token id 9 is not below vocab_size 9"), std::string::npos);
  std::filesystem::resize_file(dir + "/tokens.bin", 17);
  EXPECT_NE(error_of(dir, 100).find("not a multiple of the dtype size 2"), std::string::npos);
  std::filesystem::resize_file(dir + "/tokens.bin", 16);
  EXPECT_NE(error_of(dir, 100).find("holds 8 tokens, metadata.json says 9"), std::string::npos);
  EXPECT_NE(error_of(test::fresh_dir("empty"), 100).find("cannot read"), std::string::npos);
}

TEST(Data, MarkovCorpusFollowsItsTable) {
  MarkovDataset data(64, 32, 100, 5);
  EXPECT_NEAR(data.entropy_rate(), 1.0331, 1e-4);
  // Every token has at most four successors across the corpus.
  std::map<int64_t, std::set<int64_t>> next;
  for (int64_t i = 0; i < data.num_samples(); ++i) {
    torch::Tensor s = data.sample(i);
    for (int64_t t = 0; t < 32; ++t) next[s[t].item<int64_t>()].insert(s[t + 1].item<int64_t>());
  }
  for (const auto& [token, successors] : next) EXPECT_LE(successors.size(), 4u);
  MarkovDataset again(64, 32, 100, 5);
  EXPECT_TRUE(torch::equal(data.sample(17), again.sample(17)));
}

TEST(Sampler, DeterministicCoversEveryEpochAndResumes) {
  GlobalBatchSampler a(40, 8, 3), b(40, 8, 3);
  std::set<int64_t> epoch;
  for (int64_t step = 1; step <= 5; ++step)
    for (int64_t i : a.indices(step)) epoch.insert(i);
  EXPECT_EQ(epoch.size(), 40u);  // 5 steps of 8 = one epoch, each sample once
  EXPECT_EQ(a.indices(7), b.indices(7));  // a fresh sampler (a resume) agrees at any step
  EXPECT_NE(a.indices(1), a.indices(6));  // the next epoch is shuffled anew
  EXPECT_NE(GlobalBatchSampler(40, 8, 4).indices(1), a.indices(1));
}
