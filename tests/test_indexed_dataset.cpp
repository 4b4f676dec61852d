// Megatron's indexed dataset format and blending.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "minipretrain/data/indexed_dataset.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;

namespace {

// An independent writer of the documented layout: three documents of
// lengths 3, 1, 2 as uint16.
std::string expected_idx() {
  std::string bytes("MMIDIDX\0\0", 9);
  auto put = [&](const void* p, size_t n) { bytes.append(static_cast<const char*>(p), n); };
  const uint64_t version = 1, sequences = 3, documents = 4;
  const uint8_t dtype = 8;
  put(&version, 8);
  put(&dtype, 1);
  put(&sequences, 8);
  put(&documents, 8);
  for (int32_t length : {3, 1, 2}) put(&length, 4);
  for (int64_t pointer : {0, 6, 8}) put(&pointer, 8);
  for (int64_t index : {0, 1, 2, 3}) put(&index, 8);
  return bytes;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string write_documents(const std::string& prefix, const std::vector<std::vector<int64_t>>& docs) {
  IndexedDatasetWriter writer(prefix, 1000);
  for (const auto& d : docs) writer.add_document(d);
  writer.finish();
  return prefix;
}

}  // namespace

TEST(IndexedDataset, WritesMegatronsIndexByteForByte) {
  const std::string prefix = write_documents(fresh_dir("idx") + "/data", {{5, 6, 7}, {8}, {9, 10}});
  EXPECT_EQ(read_all(prefix + ".idx"), expected_idx());
  EXPECT_EQ(std::filesystem::file_size(prefix + ".bin"), 12u);
  EXPECT_FALSE(std::filesystem::exists(prefix + ".idx.tmp"));
}

TEST(IndexedDataset, ReadsAnIndependentlyWrittenPair) {
  const std::string prefix = fresh_dir("idx_independent") + "/data";
  write_all(prefix + ".idx", expected_idx());
  const uint16_t tokens[] = {5, 6, 7, 8, 9, 10};
  write_all(prefix + ".bin", std::string(reinterpret_cast<const char*>(tokens), sizeof(tokens)));
  IndexedDataset data(prefix);
  EXPECT_EQ(data.num_sequences(), 3);
  EXPECT_EQ(data.num_documents(), 3);
  EXPECT_EQ(data.sequence(2), (std::vector<int64_t>{9, 10}));
  EXPECT_TRUE(torch::equal(data.tokens(2, 3), torch::tensor({7, 8, 9}, torch::kLong)));
}

TEST(IndexedDataset, CorruptPairsAreClearErrors) {
  auto error_of = [](const std::string& prefix) {
    try {
      IndexedDataset data(prefix);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string dir = fresh_dir("idx_bad");
  const std::string prefix = write_documents(dir + "/data", {{5, 6, 7}, {8}, {9, 10}});
  std::string idx = expected_idx();

  std::filesystem::resize_file(prefix + ".bin", 10);
  EXPECT_NE(error_of(prefix).find("pointers run past the end"), std::string::npos) << error_of(prefix);
  write_documents(prefix, {{5, 6, 7}, {8}, {9, 10}});

  std::string bad = idx;
  bad[0] = 'X';
  write_all(prefix + ".idx", bad);
  EXPECT_NE(error_of(prefix).find("wrong magic"), std::string::npos);
  bad = idx;
  bad[9] = 2;
  write_all(prefix + ".idx", bad);
  EXPECT_NE(error_of(prefix).find("unsupported version 2"), std::string::npos);
  write_all(prefix + ".idx", idx.substr(0, idx.size() - 5));
  EXPECT_NE(error_of(prefix).find("truncated"), std::string::npos);
  bad = idx;
  bad[9 + 8 + 1 + 8 + 8 + 12 + 8] = 7;  // the second pointer
  write_all(prefix + ".idx", bad);
  EXPECT_NE(error_of(prefix).find("sequence 1 has pointer 7, expected 6"), std::string::npos) << error_of(prefix);

  // An index consistent in itself whose dtype contradicts the .bin: uint8
  // (code 1, pointers 0, 3, 4) makes 6 bytes of the 12 written as uint16.
  bad = idx;
  bad[17] = 1;
  bad[9 + 8 + 1 + 8 + 8 + 12 + 8] = 3;
  bad[9 + 8 + 1 + 8 + 8 + 12 + 16] = 4;
  write_all(prefix + ".idx", bad);
  EXPECT_NE(error_of(prefix).find("make 6 bytes, but " + prefix + ".bin has 12"), std::string::npos)
      << error_of(prefix);
  // Document indices that go back.
  bad = idx;
  bad[bad.size() - 24] = 3;  // 0, 3, 2, 3
  write_all(prefix + ".idx", bad);
  EXPECT_NE(error_of(prefix).find("document indices must not decrease"), std::string::npos) << error_of(prefix);
  // A FIFO in place of the .bin is refused, not waited on.
  write_all(prefix + ".idx", idx);
  std::filesystem::remove(prefix + ".bin");
  ASSERT_EQ(::mkfifo((prefix + ".bin").c_str(), 0600), 0);
  EXPECT_NE(error_of(prefix).find("is not a regular file"), std::string::npos) << error_of(prefix);
}

TEST(IndexedDataset, BlendsByWeightAcrossDocumentBoundaries) {
  const std::string dir = fresh_dir("blend");
  std::vector<int64_t> a(401), b(401);
  std::iota(a.begin(), a.end(), 0);
  std::fill(b.begin(), b.end(), 999);
  write_documents(dir + "/a", {std::vector<int64_t>(a.begin(), a.begin() + 150), std::vector<int64_t>(a.begin() + 150, a.end())});
  write_documents(dir + "/b", {b});
  IndexedTokenDataset one({{dir + "/a", 1.0}}, 1000, 8);
  EXPECT_EQ(one.num_samples(), 50);
  EXPECT_TRUE(torch::equal(one.sample(18), torch::arange(144, 153, torch::kLong)));  // spans both documents

  IndexedTokenDataset blended(parse_data_path({"0.75", dir + "/a", "0.25", dir + "/b"}), 1000, 8);
  int from_b = 0;
  for (int64_t i = 0; i < 40; ++i) from_b += blended.sample(i)[0].item<int64_t>() == 999;
  EXPECT_EQ(from_b, 10);  // a quarter of any prefix of the blend
  EXPECT_THROW(parse_data_path({"0.5", dir + "/a", "0.5"}), ConfigError);
  EXPECT_THROW(IndexedTokenDataset({{dir + "/a", 1.0}}, 100, 8).sample(20), ConfigError);  // ids >= vocab
}
