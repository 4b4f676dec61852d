#include "test_support.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/distributed/gloo_communicator.h"
#include "minipretrain/distributed/nccl_rules_communicator.h"

extern char** environ;

namespace minipretrain::test {
namespace fs = std::filesystem;

Process::Process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  static int counter = 0;
  log_path_ = (fs::temp_directory_path() / ("minipretrain-test-" + std::to_string(::getpid()) + "-" +
                                            std::to_string(counter++) + ".log")).string();
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    merged[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
  }
  for (const auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);

  pid_ = ::fork();
  if (pid_ == 0) {
    FILE* log = std::fopen(log_path_.c_str(), "w");
    ::dup2(::fileno(log), 1);
    ::dup2(::fileno(log), 2);
    ::setpgid(0, 0);
    std::vector<char*> args, envp;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (const auto& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    ::execve(args[0], args.data(), envp.data());
    std::perror("execve");
    ::_exit(127);
  }
}

Process::~Process() {
  if (pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  fs::remove(log_path_);
}

void Process::kill(int signal) { ::kill(pid_, signal); }

ProcessResult Process::wait(double timeout_seconds) {
  ProcessResult result;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  int status = 0;
  while (true) {
    const int done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
      result.exit_code = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::ifstream in(log_path_);
  std::stringstream text;
  text << in.rdbuf();
  result.output = text.str();
  return result;
}

ProcessResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                  double timeout_seconds) {
  return Process(argv, env).wait(timeout_seconds);
}

ProcessResult run_binary(std::vector<std::string> args, const std::map<std::string, std::string>& env,
                         double timeout_seconds) {
  args.insert(args.begin(), binary());
  return run(args, env, timeout_seconds);
}

std::vector<std::unique_ptr<Process>> start_ranks(int world, const std::vector<std::string>& args,
                                                  const std::map<std::string, std::string>& env) {
  const std::string port = std::to_string(free_port());
  std::vector<std::unique_ptr<Process>> processes;
  std::vector<std::string> argv{binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  for (int r = 0; r < world; ++r) {
    std::map<std::string, std::string> rank_env = env;
    rank_env.insert({{"RANK", std::to_string(r)},
                     {"WORLD_SIZE", std::to_string(world)},
                     {"LOCAL_RANK", std::to_string(r)},
                     {"LOCAL_WORLD_SIZE", std::to_string(world)},
                     {"MASTER_ADDR", "127.0.0.1"},
                     {"MASTER_PORT", port},
                     // What would hang on GPUs hangs here too.
                     {"MINIPRETRAIN_NCCL_RULES", "1"}});
    processes.push_back(std::make_unique<Process>(argv, rank_env));
  }
  return processes;
}

std::vector<ProcessResult> run_ranks(int world, const std::vector<std::string>& args, double timeout_seconds) {
  std::vector<ProcessResult> results;
  for (auto& p : start_ranks(world, args)) results.push_back(p->wait(timeout_seconds));
  return results;
}

std::string binary() { return MINIPRETRAIN_BIN; }

std::string venv_program(const std::string& name) {
  const char* chosen = std::getenv("MINIPRETRAIN_VENV");
  const fs::path venv = fs::path(MINIPRETRAIN_SOURCE_DIR) / (chosen && *chosen ? chosen : ".venv");
  return (venv / "bin" / name).string();
}

namespace {

// This process's directories; at exit they go, unless a case failed: then
// they stay to be looked at, and the path is printed.
class ProcessDirectory {
 public:
  ProcessDirectory()
      : path_(fs::temp_directory_path() / ("minipretrain-tests-" + std::to_string(::getuid())) /
              std::to_string(::getpid())) {}
  ~ProcessDirectory() {
    std::error_code ignored;
    if (::testing::UnitTest::GetInstance()->Passed())
      fs::remove_all(path_, ignored);
    else
      std::printf("[ KEPT     ] the failed run's files: %s\n", path_.c_str());
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

bool can_bind(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));  // as the rendezvous server binds
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return bound;
}

}  // namespace

std::string fresh_dir(const std::string& name) {
  static const ProcessDirectory root;
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string owner = test ? std::string(test->test_suite_name()) + "." + test->name() : "no_case";
  const fs::path dir = root.path() / owner / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// The binary binds MASTER_PORT itself, later: a port that bind(port 0)
// picked here and closed again could go to a sibling test meanwhile. So a
// pair of ports in 20000-31999, below Linux's ephemeral ones (32768-60999,
// where bind(port 0) and connect take theirs), is claimed by a lock on a file
// under /tmp that this process holds until it ends, and must be free now.
int free_port() {
  constexpr int kFirst = 20000, kPairs = 6000;
  static std::vector<int> held;  // the claims' lock files
  const fs::path dir = fs::temp_directory_path() / "minipretrain-test-ports";
  std::error_code ignored;
  // Shared by every user's tests: anyone may add a lock file.
  if (fs::create_directories(dir, ignored)) fs::permissions(dir, fs::perms::all | fs::perms::sticky_bit, ignored);
  for (int i = 0; i < kPairs; ++i) {
    const int port = kFirst + 2 * ((::getpid() + i) % kPairs);
    const int fd = ::open((dir / (std::to_string(port) + ".lock")).c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && can_bind(port) && can_bind(port + 1)) {
      held.push_back(fd);
      return port;
    }
    ::close(fd);
  }
  throw std::runtime_error("free_port: every port pair of " + std::to_string(kFirst) + "-" +
                           std::to_string(kFirst + 2 * kPairs - 1) + " is claimed or bound");
}

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
  ::close(fd);
  return -1;
}

void send_some(int fd, const std::string& bytes) {
  timeval limit{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  for (size_t sent = 0; sent < bytes.size();) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

bool closed_by_peer(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  char byte;
  return ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

std::map<int64_t, nlohmann::json> read_metrics(const std::string& output_dir, const std::string& key) {
  std::map<int64_t, nlohmann::json> out;
  std::ifstream in(fs::path(output_dir) / "metrics.jsonl");
  for (std::string line; std::getline(in, line) && !in.eof();) {
    auto record = nlohmann::json::parse(line);
    if (record.contains(key)) out[record.at("step").get<int64_t>()] = record;
  }
  return out;
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::vector<std::string> tiny_args(const std::string& output_dir, int max_steps) {
  return {"--vocab-size", "96", "--hidden-size", "64", "--intermediate-size", "128", "--num-layers", "4",
          "--num-attention-heads", "8", "--num-key-value-heads", "4", "--max-seq-length", "16",
          "--micro-batch-size", "2", "--global-batch-size", "8", "--max-steps", std::to_string(max_steps),
          "--learning-rate", "3e-3", "--min-lr", "3e-4", "--warmup-ratio", "0.1", "--num-train-samples", "512",
          "--log-interval", "1", "--save-interval", "1000", "--num-threads", "1", "--dist-timeout", "60", "--precision", "fp32",
          "--output-dir", output_dir};
}

void with_gloo_group(int world, const std::function<void(int, Communicator&)>& fn, GroupRules rules,
                     std::chrono::milliseconds timeout) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(world);
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        std::unique_ptr<Communicator> comm;
        if (rules == GroupRules::Nccl)
          comm = std::make_unique<NcclRulesCommunicator>("test", store, r, world, timeout, "127.0.0.1");
        else
          comm = std::make_unique<GlooCommunicator>("test", store, r, world, timeout, "127.0.0.1");
        fn(r, *comm);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Each paper gives the bubble as idle time t_b per stage against the ideal
// time t_id = m (F + B + W); as a share of the step it is t_b / (t_id + t_b).
//   GPipe (Huang et al. 2019: O((K - 1) / (M + K - 1))) and 1F1B (Narayanan et al. 2021,
//   "Efficient Large-Scale Language Model Training on GPU Clusters Using
//   Megatron-LM", sec. 2.2.1): t_b = (p - 1)(F + B + W), so (p - 1) / (m + p - 1).
//   Interleaved 1F1B (ibid., sec. 2.2.2): each of v chunks costs 1/v, so
//   t_b = (p - 1)(F + B + W) / v and the share is (p - 1) / (v m + p - 1).
//   ZB-H1 (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", sec. 3.1):
//   t_b = (p - 1)(F + B - W) = (p - 1) against t_id = 3m: (p - 1) / (3m + p - 1).
double literature_bubble(PipelineSchedule schedule, int64_t pp, int64_t m, int64_t v) {
  const double idle = static_cast<double>(pp - 1), microbatches = static_cast<double>(m);
  switch (schedule) {
    case PipelineSchedule::GPipe:
    case PipelineSchedule::OneFOneB: return idle / (microbatches + idle);
    case PipelineSchedule::Interleaved1F1B: return idle / (static_cast<double>(v) * microbatches + idle);
    case PipelineSchedule::ZeroBubbleH1: return idle / (3 * microbatches + idle);
  }
  throw std::invalid_argument("literature_bubble: no closed form for " + name_of(schedule));
}

double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor bd = b.to(torch::kDouble);
  return (a.to(torch::kDouble) - bd).norm().item<double>() / std::max(bd.norm().item<double>(), 1e-30);
}

void expect_all_succeeded(const std::vector<ProcessResult>& results) {
  for (size_t r = 0; r < results.size(); ++r)
    ASSERT_EQ(results[r].exit_code, 0) << "rank " << r << " output:\n" << results[r].output;
}

double expect_same_losses(const std::string& a_dir, const std::string& b_dir, int64_t steps, double rel) {
  auto a = read_metrics(a_dir), b = read_metrics(b_dir);
  double largest = 0;
  for (int64_t step = 1; step <= steps; ++step) {
    if (!a.count(step) || !b.count(step)) {
      ADD_FAILURE() << "step " << step << " missing";
      return INFINITY;
    }
    const double la = a[step]["loss"].get<double>(), lb = b[step]["loss"].get<double>();
    EXPECT_LE(std::abs(la - lb), rel * std::abs(la)) << "step " << step << ": " << la << " vs " << lb;
    largest = std::max(largest, std::abs(la - lb) / std::abs(la));
  }
  return largest;
}

namespace {

// Each tensor of `a` against its namesake in `b`, within `rel`.
double expect_same_tensors(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b,
                           double rel) {
  EXPECT_EQ(a.size(), b.size());
  EXPECT_FALSE(a.empty());
  double largest = a.size() == b.size() && !a.empty() ? 0 : INFINITY;
  for (const auto& [name, t] : a) {
    if (!b.count(name) || t.sizes() != b.at(name).sizes()) {
      ADD_FAILURE() << name << " is missing or of another shape";
      return INFINITY;
    }
    const double error = relative_error(b.at(name), t);
    EXPECT_LE(error, rel) << name;
    largest = std::max(largest, error);
  }
  return largest;
}

}  // namespace

double expect_same_weights(const std::string& a_dir, const std::string& b_dir, double rel) {
  return expect_same_tensors(load_full_tensors(find_latest_checkpoint(a_dir)),
                             load_full_tensors(find_latest_checkpoint(b_dir)), rel);
}

double expect_same_first_step(const std::string& a_dump, const std::string& b_dump, const std::string& kind,
                              double rel) {
  return expect_same_tensors(load_full_tensors(a_dump, kind + "-"), load_full_tensors(b_dump, kind + "-"), rel);
}

}  // namespace minipretrain::test
