// The safetensors files that checkpoints are made of.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "minipretrain/checkpoint/safetensors.h"
#include "test_support.h"

using namespace minipretrain;

TEST(Safetensors, RoundTripsWithTheDocumentedLayout) {
  const std::string path = test::fresh_dir("safetensors") + "/a.safetensors";
  torch::Tensor a = torch::arange(6, torch::kFloat).view({2, 3}), b = torch::tensor({7, 8}, torch::kLong);
  const auto [bytes, hash] = write_safetensors(path, {{"a", a}, {"b", b}}, {{"format", "pt"}});
  EXPECT_EQ(bytes, std::filesystem::file_size(path));

  std::ifstream in(path, std::ios::binary);
  uint64_t length = 0;
  in.read(reinterpret_cast<char*>(&length), 8);  // little-endian on every machine we run on
  std::string header(length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(length));
  auto json = nlohmann::json::parse(header);
  EXPECT_EQ(json["a"]["dtype"], "F32");
  EXPECT_EQ(json["a"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(json["a"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(json["b"]["data_offsets"], nlohmann::json({24, 40}));
  EXPECT_EQ(json["__metadata__"]["format"], "pt");
  EXPECT_EQ((8 + length) % 8, 0u);

  SafetensorsFile file = read_safetensors(path);
  EXPECT_TRUE(torch::equal(file.tensors.at("a"), a));
  EXPECT_TRUE(torch::equal(file.tensors.at("b"), b));
  EXPECT_EQ(file.hash, hash);
  EXPECT_EQ(file.metadata.at("format"), "pt");
}

TEST(Safetensors, TruncatedOrCorruptFilesAreErrors) {
  const std::string path = test::fresh_dir("safetensors_bad") + "/a.safetensors";
  write_safetensors(path, {{"a", torch::ones({100})}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  EXPECT_THROW(read_safetensors(path), SafetensorsError);
  std::ofstream(path, std::ios::binary) << std::string(8, '\xff');
  EXPECT_THROW(read_safetensors(path), SafetensorsError);
}
