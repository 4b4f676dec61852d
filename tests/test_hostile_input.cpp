// Files this process did not write, crafted to crash or fool it: each gets one
// line naming the file and the field, never a crash, a huge allocation or a
// wrong tensor. One case per class the red-team pass found.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/hf_import.h"
#include "minipretrain/checkpoint/safetensors.h"
#include "minipretrain/checkpoint/tensor_source.h"
#include "minipretrain/commands/cli.h"
#include "minipretrain/config/json_input.h"
#include "minipretrain/data/indexed_dataset.h"
#include "test_support.h"

using namespace minipretrain;
namespace fs = std::filesystem;

namespace {

std::string write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// What `fn` threw of type E, or "" when it threw nothing.
template <typename E, typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_MENTIONS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

std::string config_error(const std::string& text) {
  const std::string path = write_file(test::fresh_dir("hostile_config") + "/c.json", text);
  return error_of<ConfigError>([&] { load_config_file(path).resolve(1); });
}

}  // namespace

TEST(HostileInput, JsonNestedTooDeepIsOneLine) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_MENTIONS(config_error(deep), "nests deeper than 32 levels");
  EXPECT_MENTIONS(config_error(R"({"hidden_size": )" + deep + "}"), "nests deeper");
  EXPECT_MENTIONS(error_of<JsonInputError>([&] { parse_json(deep, "x"); }), "x nests deeper");
}

TEST(HostileInput, ConfigNumbersMustBeWholeAndInRange) {
  EXPECT_MENTIONS(config_error(R"({"hidden_size": 128.9})"), "hidden_size must be an integer, got number 128.9");
  EXPECT_MENTIONS(config_error(R"({"num_layers": 18446744073709551615})"), "num_layers must be an integer");
  EXPECT_MENTIONS(config_error(R"({"num_layers": 1000000000})"), "num_layers 1000000000 is more than 4096");
  EXPECT_MENTIONS(config_error(R"({"max_seq_length": 100000000})"), "max_seq_length 100000000 is more than");
  EXPECT_MENTIONS(config_error(R"({"micro_batch_size": 1048576, "num_microbatches": 1048576})"),
                  "samples per step");
  // A number past double is a JSON error, and a config error (exit 2).
  EXPECT_MENTIONS(config_error(R"({"learning_rate": 1e400})"), "is not valid JSON");
  // A long value is cut short in the message.
  const std::string message = config_error(R"({"hidden_size": ")" + std::string(1 << 20, 'x') + R"("})");
  EXPECT_MENTIONS(message, "hidden_size must be an integer");
  EXPECT_LT(message.size(), 400u);
}

TEST(HostileInput, CheckpointStepMustBeAWholeStepInRange) {
  const std::string dir = test::fresh_dir("hostile_meta") + "/checkpoint-00000005";
  fs::create_directories(dir);
  Config config;
  config.resolve(1);
  for (const std::string& step : {"-5", "1e30", "3.5", "\"5\"", "18446744073709551615", "4294967297"}) {
    write_file(dir + "/meta.json", R"({"config": {}, "step": )" + step + "}");
    const std::string e = error_of<CheckpointError>([&] { load_checkpoint(dir, {}, config); });
    EXPECT_MENTIONS(e, dir + "/meta.json");
    EXPECT_MENTIONS(e, "step");
  }
  write_file(dir + "/meta.json", R"({"config": {}, "step": 7})");
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { load_checkpoint(dir, {}, config); }),
                  "says step 7 but the directory is step 5");
}

// A directory named like a checkpoint with a number no run reaches is not one:
// saves and --resume auto go on past it.
TEST(HostileInput, AStrayCheckpointNameWithAHugeNumberIsIgnored) {
  const std::string out = test::fresh_dir("hostile_stray");
  EXPECT_EQ(checkpoint_step(out + "/checkpoint-99999999999999999999999999"), -1);
  EXPECT_EQ(checkpoint_step(out + "/checkpoint-00000012"), 12);
  fs::create_directories(out + "/checkpoint-99999999999999999999999999");
  write_file(out + "/checkpoint-99999999999999999999999999/meta.json", "{}");
  fs::create_directories(out + "/checkpoint-00000003");
  write_file(out + "/checkpoint-00000003/meta.json", "{}");
  EXPECT_EQ(find_latest_checkpoint(out), out + "/checkpoint-00000003");
}

// Two TP shards of one tensor, as a TP 2 save writes them, then the index of
// the second edited: no hash covers the index, so its fields are checked.
TEST(HostileInput, ShardsMustTileTheirTensorExactly) {
  const auto write_shards = [](const std::string& dir, int64_t second_offset, int64_t second_rows) {
    fs::create_directories(dir);
    const torch::Tensor full = torch::arange(8, torch::kFloat).view({4, 2});
    write_named_shard(dir + "/shard-tp0-pp0", {{"model/w", full.narrow(0, 0, 2)}}, {{"model/w", {0, {4, 2}, 0}}});
    write_named_shard(dir + "/shard-tp1-pp0", {{"model/w", full.narrow(0, 2, second_rows)}},
                      {{"model/w", {0, {4, 2}, second_offset}}});
  };
  const std::string base = test::fresh_dir("hostile_tiling");
  write_shards(base + "/good", 2, 2);
  TensorSource good = TensorSource::from_checkpoint(base + "/good");
  EXPECT_TRUE(torch::equal(good.read_full("model/w"), torch::arange(8, torch::kFloat).view({4, 2})));

  write_shards(base + "/overlap", 1, 2);  // rows 1..2 twice, row 3 never
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_checkpoint(base + "/overlap"); }),
                  "model/w has shards that overlap at 1");
  write_shards(base + "/gap", 3, 1);
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_checkpoint(base + "/gap"); }),
                  "model/w has a gap between 2 and 3");
  write_shards(base + "/short", 2, 1);
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_checkpoint(base + "/short"); }),
                  "lacks part of model/w, from index 3 of dimension 0 on");

  // Fields out of range or of the wrong kind, each named with its file.
  write_shards(base + "/fields", 2, 2);
  const std::string index = base + "/fields/shard-tp1-pp0.json";
  nlohmann::json json = read_json(index);
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"offset", 1.5}, {"offset", -2}, {"dim", 5}, {"full_shape", {4, -2}}}) {
    nlohmann::json edited = json;
    edited["specs"]["model/w"][key] = value;
    write_file(index, edited.dump());
    const std::string e = error_of<CheckpointError>([&] { TensorSource::from_checkpoint(base + "/fields"); });
    EXPECT_MENTIONS(e, index + " is corrupt");
  }
}

// The distributed optimizer's boxes: the rest of row 0 and rows 1..3 of a
// [4, 2] tensor from one DP rank, row 0's start from the other; then boxes
// edited to overlap, to leave a hole, or to stand beside a TP shard.
TEST(HostileInput, BoxesMustTileTheirTensorExactly) {
  const torch::Tensor full = torch::arange(8, torch::kFloat).view({4, 2});
  const auto write_boxes = [&](const std::string& dir, std::vector<int64_t> second_start, int64_t second_rows) {
    fs::create_directories(dir);
    ShardSpec first{0, {4, 2}, 0, {0, 0}}, second{0, {4, 2}, 0, second_start};
    write_named_shard(dir + "/shard-tp0-pp0", {{"model/w@0", full.narrow(0, 0, 1).narrow(1, 0, 1)}},
                      {{"model/w@0", first}});
    write_named_shard(dir + "/shard-tp0-pp0-dp1",
                      {{"model/w@1", full.narrow(0, 0, 1).narrow(1, 1, 1)},
                       {"model/w@2", full.narrow(0, 1, second_rows).contiguous()}},
                      {{"model/w@1", {0, {4, 2}, 0, {0, 1}}}, {"model/w@2", second}});
  };
  const std::string base = test::fresh_dir("hostile_boxes");
  write_boxes(base + "/good", {1, 0}, 3);
  TensorSource good = TensorSource::from_checkpoint(base + "/good");
  EXPECT_TRUE(torch::equal(good.read_full("model/w"), full));
  torch::Tensor row = torch::empty({1, 2});
  good.read_into("model/w", row, ShardSpec{0, {4, 2}, 0, {2, 0}});  // a box read into
  EXPECT_TRUE(torch::equal(row, full.narrow(0, 2, 1)));

  write_boxes(base + "/overlap", {0, 0}, 3);
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_checkpoint(base + "/overlap"); }),
                  "model/w has boxes that overlap");
  write_boxes(base + "/hole", {1, 0}, 2);
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_checkpoint(base + "/hole"); }),
                  "lacks part of model/w");
  write_boxes(base + "/mixed", {1, 0}, 3);
  write_named_shard(base + "/mixed/shard-tp1-pp0", {{"model/w", full}}, {{"model/w", {-1, {4, 2}, 0}}});
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_checkpoint(base + "/mixed"); }),
                  "model/w is stored both in boxes and otherwise");
}

TEST(HostileInput, SafetensorsShapesThatOverflowAreRefused) {
  const std::string path = test::fresh_dir("hostile_st") + "/a.safetensors";
  const std::string header = R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 0]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  write_file(path, bytes + header);
  EXPECT_MENTIONS(error_of<SafetensorsError>([&] { read_safetensors(path); }), "is impossible");
}

namespace {

// A tiny Llama in Hugging Face's layout: 1 layer, hidden 4, 2 heads.
nlohmann::json tiny_hf_config() {
  return {{"model_type", "llama"}, {"vocab_size", 8}, {"hidden_size", 4}, {"intermediate_size", 8},
          {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"num_key_value_heads", 2},
          {"max_position_embeddings", 16}};
}

std::vector<std::pair<std::string, torch::Tensor>> tiny_hf_weights(int layers = 1) {
  std::vector<std::pair<std::string, torch::Tensor>> t = {{"model.embed_tokens.weight", torch::randn({8, 4})},
                                                          {"model.norm.weight", torch::ones({4})},
                                                          {"lm_head.weight", torch::randn({8, 4})}};
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"input_layernorm", "post_attention_layernorm"}) t.push_back({p + n + ".weight", torch::ones({4})});
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"})
      t.push_back({p + n + ".weight", torch::randn({4, 4})});
    for (const char* n : {"mlp.gate_proj", "mlp.up_proj"}) t.push_back({p + n + ".weight", torch::randn({8, 4})});
    t.push_back({p + "mlp.down_proj.weight", torch::randn({4, 8})});
  }
  return t;
}

std::string tiny_hf_dir(const std::string& name, const std::vector<std::pair<std::string, torch::Tensor>>& weights,
                        const nlohmann::json& config = tiny_hf_config()) {
  const std::string dir = test::fresh_dir(name);
  write_file(dir + "/config.json", config.dump());
  write_safetensors(dir + "/model.safetensors", weights);
  return dir;
}

std::string import_error(const std::string& hf) {
  return error_of<CheckpointError>([&] { import_hugging_face(hf, hf + "/imported"); });
}

}  // namespace

TEST(HostileInput, HuggingFaceFilesAreCheckedBeforeUse) {
  torch::manual_seed(3);
  const std::string fine = tiny_hf_dir("hostile_hf_fine", tiny_hf_weights());
  EXPECT_EQ(import_error(fine), "");

  nlohmann::json fractional = tiny_hf_config();
  fractional["hidden_size"] = 128.9;
  EXPECT_MENTIONS(import_error(tiny_hf_dir("hostile_hf_frac", tiny_hf_weights(), fractional)),
                  "config.json: hidden_size must be a whole number, got 128.9");
  nlohmann::json huge = tiny_hf_config();
  huge["num_hidden_layers"] = 1000000000;
  EXPECT_MENTIONS(import_error(tiny_hf_dir("hostile_hf_huge", tiny_hf_weights(), huge)), "num_hidden_layers");

  // Two layers in the file, one in config.json.
  EXPECT_MENTIONS(import_error(tiny_hf_dir("hostile_hf_extra", tiny_hf_weights(2))),
                  "config.json describes 236 parameters but the weight files hold 404 values");

  auto nan = tiny_hf_weights();
  nan[0].second[0][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_MENTIONS(import_error(tiny_hf_dir("hostile_hf_nan", nan)), "NaN or infinite");

  auto ints = tiny_hf_weights();
  ints[1].second = torch::ones({4}, torch::kInt);
  EXPECT_MENTIONS(import_error(tiny_hf_dir("hostile_hf_int", ints)), "weights must be floating point");

  // A config.json whose sizes the files contradict fails before anything is
  // allocated by them (here some 2^38 values).
  nlohmann::json wide = tiny_hf_config();
  wide["vocab_size"] = 1 << 24;
  wide["hidden_size"] = 1 << 14;
  wide["num_attention_heads"] = 128;
  wide["num_key_value_heads"] = 128;
  EXPECT_MENTIONS(import_error(tiny_hf_dir("hostile_hf_wide", tiny_hf_weights(), wide)), "config.json describes");
}

TEST(HostileInput, HuggingFaceIndexStaysInItsDirectoryAndIsFollowed) {
  torch::manual_seed(4);
  const auto weights = tiny_hf_weights();
  const std::string dir = test::fresh_dir("hostile_hf_index");
  write_file(dir + "/config.json", tiny_hf_config().dump());
  std::vector<std::pair<std::string, torch::Tensor>> first(weights.begin(), weights.begin() + 3),
      second(weights.begin() + 3, weights.end());
  write_safetensors(dir + "/a.safetensors", first);
  write_safetensors(dir + "/b.safetensors", second);
  const auto write_index = [&](const std::function<std::string(const std::string&)>& file_of) {
    nlohmann::json map = nlohmann::json::object();
    for (const auto& [name, t] : weights) map[name] = file_of(name);
    write_file(dir + "/model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  };
  const auto honest = [&](const std::string& name) {
    for (const auto& [n, t] : first)
      if (n == name) return std::string("a.safetensors");
    return std::string("b.safetensors");
  };
  write_index(honest);
  EXPECT_TRUE(TensorSource::from_hugging_face(dir, "model/").has("model/lm_head.weight"));

  write_index([&](const std::string& name) { return name == "lm_head.weight" ? "../secret.safetensors" : honest(name); });
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_hugging_face(dir, "model/"); }),
                  "only files beside the index may be named");
  write_index([&](const std::string& name) { return name == "lm_head.weight" ? "/etc/passwd" : honest(name); });
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_hugging_face(dir, "model/"); }),
                  "only files beside the index may be named");
  write_index([&](const std::string& name) { return name == "lm_head.weight" ? "b.safetensors" : honest(name); });
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_hugging_face(dir, "model/"); }),
                  "lm_head.weight is in a.safetensors but model.safetensors.index.json puts it in b.safetensors");
  // A name longer than the file system allows (found by fuzz/hf_index) is missing, not a crash.
  write_index([&](const std::string& name) { return honest(name) == "b.safetensors" ? std::string(300, 'h') : honest(name); });
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_hugging_face(dir, "model/"); }),
                  "which is missing");

  // A FIFO in place of a weight file is refused, not waited on.
  write_index(honest);
  fs::remove(dir + "/b.safetensors");
  ASSERT_EQ(::mkfifo((dir + "/b.safetensors").c_str(), 0600), 0);
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { TensorSource::from_hugging_face(dir, "model/"); }),
                  "is not a regular file");
}

// The whole-file hash is checked once, before the file's first tensor is
// used; a file rewritten after that (another run saving into the same
// place) is caught at the next read, by the tensor's name, not loaded.
TEST(HostileInput, AFileThatChangesWhileItIsReadIsCaught) {
  const std::string dir = test::fresh_dir("hostile_changing");
  const auto write = [&](float b) {
    write_named_shard(dir + "/shard-tp0-pp0", {{"model/a", torch::ones({4})}, {"model/b", torch::full({4}, b)}}, {});
  };
  write(2.0f);
  TensorSource source = TensorSource::from_checkpoint(dir);
  EXPECT_TRUE(torch::equal(source.read_full("model/a"), torch::ones({4})));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write(3.0f);
  EXPECT_MENTIONS(error_of<CheckpointError>([&] { source.read_full("model/b"); }),
                  "shard-tp0-pp0.safetensors changed while model/b was read from it");
}

// Found by scripts/fuzz.sh (safetensors): data_offsets of one number threw
// std::out_of_range out of the reader ("vector::_M_range_check"); fractional
// or negative sizes were truncated or wrapped.
TEST(HostileInput, SafetensorsOffsetsAndShapesMustBeWholeLists) {
  const std::string dir = test::fresh_dir("hostile_st_lists");
  const auto file_with = [&](const std::string& entry) {
    const std::string header = R"({"a": )" + entry + "}";
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    return write_file(dir + "/a.safetensors", bytes + header + std::string(16, '\0'));
  };
  for (const std::string& entry : {R"({"dtype": "F32", "shape": [4], "data_offsets": [0]})",
                                   R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16, 32]})",
                                   R"({"dtype": "F32", "shape": [2.5], "data_offsets": [0, 16]})",
                                   R"({"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]})",
                                   R"({"dtype": "F32", "shape": 4, "data_offsets": [0, 16]})"}) {
    const std::string path = file_with(entry);
    EXPECT_MENTIONS(error_of<SafetensorsError>([&] { read_safetensors_index(path); }), path + ": ") << entry;
  }
  EXPECT_EQ(error_of<SafetensorsError>(
                [&] { read_safetensors_index(file_with(R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]})")); }),
            "");
}

// Found by scripts/fuzz.sh (megatron_idx): an index of no sequences passed
// null to memcpy (undefined behaviour, if of 0 bytes). It is an empty dataset.
TEST(HostileInput, AnIndexOfNoSequencesIsAnEmptyDataset) {
  const std::string prefix = test::fresh_dir("hostile_idx_empty") + "/data";
  std::string idx(kIndexMagic, 9);
  const auto put = [&](uint64_t v, size_t n) { idx.append(reinterpret_cast<const char*>(&v), n); };
  put(1, 8);             // version
  put(kDtypeUint16, 1);  // dtype
  put(0, 8);             // sequences
  put(1, 8);             // document indices
  put(0, 8);             // the one document index
  write_file(prefix + ".idx", idx);
  write_file(prefix + ".bin", "");
  IndexedDataset data(prefix);
  EXPECT_EQ(data.num_sequences(), 0);
  EXPECT_EQ(data.num_tokens(), 0);
}
