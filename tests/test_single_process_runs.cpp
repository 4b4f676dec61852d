// The binary end to end in one process: it learns, it resumes exactly, and
// every bad input ends with one clear line and a non-zero exit code.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <fstream>
#include <regex>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/data/dataset.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

std::string config_path(const std::string& name) { return std::string(MINIPRETRAIN_SOURCE_DIR) + "/configs/" + name; }

}  // namespace

// fp32 and bf16 over the same 300 steps: both approach the floor, and bf16
// ends within 0.05 nats of fp32 (the README's justification of bf16 as the
// default where the hardware has it). Without native bf16 (no AVX512-BF16 or
// AMX) bf16 is emulated, 15 to 50 times slower: there it runs the first 25
// steps of the same run (--exit-interval 25), which must be within 0.01 nats
// of fp32's step 25 (measured: 5e-4 native, 7e-4 with oneDNN held to AVX2).
TEST(Run, TinyConfigApproachesTheLossFloorInFp32AndBf16) {
  const std::string probe = fresh_dir("floor_probe");
  ProcessResult probed = run_binary({"--config", config_path("tiny.json"), "--output-dir", probe, "--max-steps", "1"});
  ASSERT_EQ(probed.exit_code, 0) << probed.output;
  const bool native_bf16 = probed.output.find("Precision bf16 (--precision auto)") != std::string::npos;
  std::map<std::string, std::map<int64_t, nlohmann::json>> metrics;
  for (const std::string& precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    const bool to_the_end = precision == "fp32" || native_bf16;
    const std::string out = fresh_dir("floor_" + precision);
    std::vector<std::string> args{"--config", config_path("tiny.json"), "--output-dir", out, "--num-threads", "2",
                                  "--precision", precision};
    if (!to_the_end) args.insert(args.end(), {"--exit-interval", "25"});
    ProcessResult r = run_binary(args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("Step 25 | Loss: "), std::string::npos);
    EXPECT_NE(r.output.find("Precision " + precision), std::string::npos);
    metrics[precision] = read_metrics(out);
    for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "elapsed_s",
                            "forward_ms", "backward_ms", "optimizer_ms"})
      EXPECT_TRUE(metrics[precision].begin()->second.contains(key)) << key;
    if (!to_the_end) continue;
    std::smatch floor_match;
    ASSERT_TRUE(std::regex_search(r.output, floor_match, std::regex("loss floor \\(entropy rate\\) ([0-9.]+) nats")));
    const double floor = std::stod(floor_match[1]);
    const double final_loss = metrics[precision].rbegin()->second["loss"].get<double>();
    EXPECT_LT(final_loss, floor + 0.3) << "final loss " << final_loss << ", floor " << floor;
    EXPECT_GT(final_loss, floor - 0.1);  // below the entropy rate would mean a leak of the targets
  }
  const auto loss_at = [&](const std::string& precision, int64_t step) {
    return metrics.at(precision).at(step)["loss"].get<double>();
  };
  if (native_bf16) {
    EXPECT_NEAR(loss_at("bf16", 300), loss_at("fp32", 300), 0.05);
  } else {
    EXPECT_NEAR(loss_at("bf16", 25), loss_at("fp32", 25), 0.01);
    std::cout << "[ NOTE     ] this CPU has no native bf16: bf16 ran the first 25 of the 300 steps, not to the floor\n";
  }
}

TEST(Run, ResumeReproducesTheUninterruptedRun) {
  const std::string full = fresh_dir("resume_full"), parts = fresh_dir("resume_parts");
  ASSERT_EQ(run_binary(tiny_args(full, 12)).exit_code, 0);
  std::vector<std::string> first = tiny_args(parts, 12);
  first.insert(first.end(), {"--exit-interval", "5"});
  ProcessResult stopped = run_binary(first);
  ASSERT_EQ(stopped.exit_code, 0) << stopped.output;
  ASSERT_EQ(read_metrics(parts).rbegin()->first, 5);
  std::vector<std::string> second = tiny_args(parts, 12);
  second.insert(second.end(), {"--resume", "auto"});
  ProcessResult resumed = run_binary(second);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at step 5"), std::string::npos);
  auto a = read_metrics(full), b = read_metrics(parts);
  ASSERT_EQ(b.size(), 12u);
  for (int64_t step = 1; step <= 12; ++step)
    EXPECT_EQ(a[step]["loss"].get<double>(), b[step]["loss"].get<double>()) << "step " << step;  // bit for bit
  expect_same_weights(full, parts, 0.0);
}

TEST(Run, InterruptedSaveLeavesThePreviousCheckpoint) {
  const std::string out = fresh_dir("atomic");
  std::vector<std::string> args = tiny_args(out, 4);
  ASSERT_EQ(run_binary(args).exit_code, 0);
  // What a save killed half-way leaves behind: a .tmp directory, never a
  // checkpoint-N without its meta.json.
  fs::create_directories(out + "/checkpoint-00000009.tmp");
  std::ofstream(out + "/checkpoint-00000009.tmp/shard-tp0-pp0.safetensors") << "partial";
  EXPECT_EQ(find_latest_checkpoint(out), out + "/checkpoint-00000004");
  args = tiny_args(out, 6);
  args.insert(args.end(), {"--resume", "auto"});
  ProcessResult r = run_binary(args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("at step 4"), std::string::npos);
}

TEST(Run, CorruptOrIncompatibleCheckpointIsRefused) {
  const std::string out = fresh_dir("corrupt");
  ASSERT_EQ(run_binary(tiny_args(out, 2)).exit_code, 0);
  const std::string ckpt = find_latest_checkpoint(out);

  std::vector<std::string> other_shape = tiny_args(out, 4);
  other_shape.insert(other_shape.end(), {"--hidden-size", "32", "--resume", ckpt});
  ProcessResult r = run_binary(other_shape);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("has hidden_size=64 but this run has 32"), std::string::npos) << r.output;

  {  // flip one byte in the middle of the shard
    std::fstream f(ckpt + "/shard-tp0-pp0.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(ckpt + "/shard-tp0-pp0.safetensors") / 2));
    f.put('\x5a');
  }
  std::vector<std::string> args = tiny_args(out, 4);
  args.insert(args.end(), {"--resume", ckpt});
  r = run_binary(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("is corrupt"), std::string::npos) << r.output;
}

TEST(Run, BadInputsExitWithOneClearLine) {
  const std::string out = fresh_dir("bad_inputs");
  const std::string bad_json = out + "/bad.json";
  std::ofstream(bad_json) << "{\"hidden_size\": 64,,}";
  const std::string truncated = out + "/data";
  {
    std::vector<int64_t> tokens(100, 3);
    PackedDataset::write(truncated, tokens, 96);
    fs::resize_file(truncated + "/tokens.bin", 151);
  }
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--num-attention-heads", "6", "--num-key-value-heads", "6", "--hidden-size", "60",
        "--tensor-parallel-size", "4"},
       {{"RANK", "0"}, {"WORLD_SIZE", "4"}}, 2, "num_attention_heads 6 is not divisible by tensor_parallel_size 4"},
      {{"--tensor-parallel-size", "2"}, {{"RANK", "0"}, {"WORLD_SIZE", "3"}}, 2,
       "world size 3 is not divisible by tensor_parallel_size 2 x pipeline_parallel_size 1"},
      {{"--sequence-parallel"}, {}, 2, "sequence_parallel needs tensor_parallel_size 2 or more, got 1"},
      {{"--pipeline-parallel-size", "5"}, {{"RANK", "0"}, {"WORLD_SIZE", "5"}}, 2,
       "num_layers 4 is fewer than pipeline_parallel_size 5"},
      {{"--pipeline-parallel-size", "2", "--pipeline-layer-split", "3,x"}, {{"RANK", "0"}, {"WORLD_SIZE", "2"}}, 2,
       "--pipeline-layer-split must be integers separated by commas, e.g. 7,5, got '3,x'"},
      {{"--precision", "fp8"}, {}, 2, "precision must be auto, fp32 or bf16, got 'fp8'"},
      {{"--config", bad_json}, {}, 2, "is not valid JSON"},
      {{"--config", out + "/missing.json"}, {}, 2, "cannot read config file"},
      {{"--config", out + "/"}, {}, 2, "config file '" + out + "/' is a directory, not a JSON file"},
      {{"--data-dir", out + "/nowhere"}, {}, 2, "cannot read"},
      {{"--data-dir", truncated}, {}, 2, "not a multiple of the dtype size 2"},
      {{"--min-lr", "1"}, {}, 2, "min_lr 1 is greater than learning_rate 0.003"},
      {{}, {{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}}, 2, "MASTER_ADDR is not set"},
      {{}, {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}}, 2,
       "launch variables contradict"},
      {{"--save-keep", "-1"}, {}, 2, "save_keep must not be negative, got -1"},
      {{"--exit-duration-mins", "-5"}, {}, 2, "exit_duration_mins must not be negative, got -5"},
      {{"--max-skipped-steps", "0"}, {}, 2, "max_skipped_steps must be positive, got 0"},
      {{}, {{"MINIPRETRAIN_FAULT", "nan@3:0,boom@4:1"}}, 2, "MINIPRETRAIN_FAULT entry 'boom@4:1' is not KIND@STEP"},
      {{}, {{"MINIPRETRAIN_FAULT", "nan@5-3:0"}}, 2, "MINIPRETRAIN_FAULT entry 'nan@5-3:0' ends before it starts"},
      {{"--resume", out + "/no_such_checkpoint"}, {}, 1, "cannot read " + out + "/no_such_checkpoint/meta.json"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = tiny_args(out + "/run", 2);
    args.insert(args.end(), c.args.begin(), c.args.end());
    ProcessResult r = run_binary(args, c.env);
    EXPECT_EQ(r.exit_code, c.code) << c.message << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
    if (c.code == 2) EXPECT_FALSE(fs::exists(out + "/run")) << c.message << ": a rejected run left its output directory";
  }
}

TEST(Run, PortInUseIsAClearError) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::listen(fd, 1);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  std::vector<std::string> args = tiny_args(fresh_dir("port"), 2);
  args.insert(args.end(), {"--dist-timeout", "5"});
  ProcessResult r = run_binary(args, {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port}});
  ::close(fd);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("cannot serve the rendezvous on 127.0.0.1:" + port), std::string::npos) << r.output;
}

// A rank that waits for the others at the rendezvous, or cannot reach it,
// says where it waited and for how long (not c10d's "Socket Timeout").
TEST(Run, MissingPeersNameTheRendezvousAndTheWait) {
  const std::string port = std::to_string(free_port());
  std::vector<std::string> args = tiny_args(fresh_dir("missing_peers"), 2);
  args.insert(args.end(), {"--dist-timeout", "2"});
  for (const char* rank : {"0", "1"}) {
    ProcessResult r = run_binary(args, {{"RANK", rank}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                                        {"MASTER_PORT", port}});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    const std::string message =
        std::string(rank) == "0" ? " at the rendezvous 127.0.0.1:" + port + " for all 2 processes, and only 1 arrived"
                                 : "rank 1 cannot reach the rendezvous at 127.0.0.1:" + port + " (tried for ";
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("Socket Timeout"), std::string::npos) << r.output;
    // Rank 0 says where it serves the rendezvous: MASTER_ADDR only, not every interface.
    EXPECT_EQ(r.output.find("Rendezvous listens on 127.0.0.1:" + port) != std::string::npos, std::string(rank) == "0")
        << r.output;
  }
}

TEST(Run, PrintConfigShowsTheParameterCount) {
  // 2 x 32000 x 768 (embedding, head) + 12 x (4 x 768^2 + 3 x 768 x 3072 + 2 x 768) + 768
  ProcessResult r = run_binary({"--config", config_path("small.json"), "--print-config"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"hidden_size\": 768"), std::string::npos);
  EXPECT_NE(r.output.find("parameters: 162417408 total"), std::string::npos) << r.output;
}
