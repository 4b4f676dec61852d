// Seeing a run (issue 14): TensorBoard event files decoded here by an
// independent reader (bitwise CRC-32C, protobuf fields by hand), the step
// line's elapsed time and ETA, and the plot script.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "test_support.h"

using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

// CRC-32C one bit at a time, as its definition reads (the writer uses a table).
uint32_t crc32c_bitwise(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : bytes) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

uint32_t unmask(uint32_t masked) {
  const uint32_t rotated = masked - 0xa282ead8u;
  return (rotated >> 17) | (rotated << 15);
}

template <typename T>
T little_endian(const std::string& bytes, size_t at) {
  T v;
  std::memcpy(&v, bytes.data() + at, sizeof(T));
  return v;
}

struct Event {
  int64_t step = 0;
  double wall_time = 0;
  std::string file_version;
  bool session_start = false;
  std::string tag;
  float value = 0;
};

uint64_t varint(const std::string& b, size_t& at) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    const unsigned char c = b.at(at++);
    v |= static_cast<uint64_t>(c & 0x7F) << shift;
    if (!(c & 0x80)) return v;
  }
}

// Calls field(number, wire type, bytes-or-empty, fixed/varint value) for each field of a message.
template <typename F>
void fields(const std::string& message, F field) {
  for (size_t at = 0; at < message.size();) {
    const uint64_t key = varint(message, at);
    const int number = static_cast<int>(key >> 3), type = static_cast<int>(key & 7);
    if (type == 0) {
      field(number, type, std::string(), varint(message, at));
    } else if (type == 1) {
      field(number, type, message.substr(at, 8), 0);
      at += 8;
    } else if (type == 5) {
      field(number, type, message.substr(at, 4), 0);
      at += 4;
    } else {
      ASSERT_EQ(type, 2) << "unexpected wire type";
      const uint64_t n = varint(message, at);
      field(number, type, message.substr(at, n), 0);
      at += n;
    }
  }
}

std::vector<Event> read_events(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string b((std::istreambuf_iterator<char>(in)), {});
  std::vector<Event> events;
  for (size_t at = 0; at < b.size();) {
    EXPECT_LE(at + 12, b.size());
    const uint64_t length = little_endian<uint64_t>(b, at);
    EXPECT_EQ(unmask(little_endian<uint32_t>(b, at + 8)), crc32c_bitwise(b.substr(at, 8))) << "length CRC at " << at;
    const std::string data = b.substr(at + 12, length);
    EXPECT_EQ(unmask(little_endian<uint32_t>(b, at + 12 + length)), crc32c_bitwise(data)) << "data CRC at " << at;
    at += 12 + length + 4;
    Event e;
    fields(data, [&](int number, int, const std::string& bytes, uint64_t v) {
      if (number == 1) e.wall_time = little_endian<double>(bytes, 0);
      if (number == 2) e.step = static_cast<int64_t>(v);
      if (number == 3) e.file_version = bytes;
      if (number == 4) fields(bytes, [&](int n, int, const std::string&, uint64_t status) { e.session_start = n == 1 && status == 1; });
      if (number == 5)
        fields(bytes, [&](int, int, const std::string& value, uint64_t) {
          fields(value, [&](int n, int, const std::string& vb, uint64_t) {
            if (n == 1) e.tag = vb;
            if (n == 2) e.value = little_endian<float>(vb, 0);
          });
        });
    });
    events.push_back(e);
  }
  EXPECT_FALSE(events.empty()) << path;
  return events;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

ProcessResult run_binary(std::vector<std::string> args) {
  args.insert(args.begin(), binary());
  return run(args, {}, 120);
}

}  // namespace

// Six steps logged every two, with validation: the event file holds the file
// version, then train/* at steps 2, 4, 6 equal to metrics.jsonl and val/* at
// the evaluation; a resumed run adds a file that opens with a SessionLog
// START at the resume step.
TEST(TensorBoard, EventFilesHoldTheMetricsAndAResumeRestartsAtItsStep) {
  const std::string out = fresh_dir("tb_run"), tb = out + "/tb";
  std::vector<std::string> args = tiny_args(out, 6);
  args.insert(args.end(), {"--tensorboard-dir", tb, "--log-interval", "2", "--save-interval", "4", "--split", "90,10",
                           "--eval-interval", "6", "--eval-iters", "1"});
  ProcessResult r = run_binary(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(event_files(tb).size(), 1u);
  std::vector<Event> events = read_events(event_files(tb)[0]);
  EXPECT_EQ(events.front().file_version, "brain.Event:2");
  auto metrics = read_metrics(out);
  std::map<std::pair<std::string, int64_t>, float> scalars;
  for (const Event& e : events) {
    if (e.tag.empty()) continue;
    scalars[{e.tag, e.step}] = e.value;
    EXPECT_GT(e.wall_time, 1.7e9);
  }
  for (int64_t step : {2, 4, 6}) {
    ASSERT_TRUE(scalars.count({"train/loss", step})) << step;
    const float loss = scalars[{"train/loss", step}], lr = scalars[{"train/lr", step}];
    EXPECT_FLOAT_EQ(loss, static_cast<float>(metrics[step]["loss"].get<double>()));
    EXPECT_FLOAT_EQ(lr, static_cast<float>(metrics[step]["lr"].get<double>()));
    for (const char* tag : {"train/grad_norm", "train/tokens_per_s", "train/skipped_total", "train/peak_rss_mb"})
      EXPECT_TRUE(scalars.count({tag, step})) << tag << " " << step;
  }
  EXPECT_FALSE(scalars.count({"train/loss", 1}));
  const auto validation = read_metrics(out, "val_loss");
  ASSERT_TRUE(scalars.count({"val/loss", 6}));
  const float val_loss = scalars[{"val/loss", 6}];
  EXPECT_FLOAT_EQ(val_loss, static_cast<float>(validation.at(6)["val_loss"].get<double>()));

  // Resume after step 4 and run to 8 with a second event file.
  sleep(1);  // the file name holds the second it was made in
  args = tiny_args(out, 8);
  args.insert(args.end(), {"--tensorboard-dir", tb, "--log-interval", "2", "--resume", out + "/checkpoint-00000004"});
  r = run_binary(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(event_files(tb).size(), 2u);
  events = read_events(event_files(tb)[1]);
  ASSERT_GE(events.size(), 2u);
  EXPECT_TRUE(events[1].session_start);
  EXPECT_EQ(events[1].step, 4);
  std::set<int64_t> steps;
  for (const Event& e : events)
    if (e.tag == "train/loss") steps.insert(e.step);
  EXPECT_EQ(steps, (std::set<int64_t>{6, 8}));
}

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

// scripts/plot_metrics.py draws two runs side by side into a PNG.
TEST(PlotMetrics, DrawsRunsIntoAPng) {
  if (run({"/usr/bin/python3", "-c", "import matplotlib"}).exit_code != 0)
    GTEST_SKIP() << "python3-matplotlib is not installed (scripts/install_deps.sh installs it)";
  const std::string a = fresh_dir("plot_a"), b = fresh_dir("plot_b");
  for (const std::string& out : {a, b}) {
    std::vector<std::string> args = tiny_args(out, 6);
    args.insert(args.end(), {"--split", "90,10", "--eval-interval", "3", "--eval-iters", "1"});
    ASSERT_EQ(run_binary(args).exit_code, 0);
  }
  const std::string png = a + "/curves.png";
  ProcessResult r = run({"/usr/bin/python3", std::string(MINIPRETRAIN_SOURCE_DIR) + "/scripts/plot_metrics.py", a, b,
                         "-o", png});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(png, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_GT(fs::file_size(png), 10000u);

  r = run({"/usr/bin/python3", std::string(MINIPRETRAIN_SOURCE_DIR) + "/scripts/plot_metrics.py", a + "/nowhere"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("has no metrics.jsonl"), std::string::npos) << r.output;
}
