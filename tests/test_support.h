// Helpers shared by the tests: running the real binary as processes, reading
// metrics.jsonl, running a function on N threads that form a Gloo group.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "minipretrain/config/choices.h"
#include "minipretrain/distributed/communicator.h"

namespace minipretrain::test {

struct ProcessResult {
  int exit_code = -1;  // 128 + signal when killed, -1 when it ran past the timeout
  std::string output;  // stdout and stderr
};

// Starts `argv` with `env` added to this process's environment.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env);
  ~Process();
  ProcessResult wait(double timeout_seconds);
  void kill(int signal);
  int pid() const { return pid_; }

 private:
  int pid_ = -1;
  std::string log_path_;
};

ProcessResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
                  double timeout_seconds = 300);
// The binary with `args`, as one process.
ProcessResult run_binary(std::vector<std::string> args, const std::map<std::string, std::string>& env = {},
                         double timeout_seconds = 300);

// The binary with `args`, as `world` processes with torchrun's variables
// (and `env`), started and left running. Their tp, dp and pp groups keep
// NCCL's rules (MINIPRETRAIN_NCCL_RULES=1) unless `env` says otherwise.
std::vector<std::unique_ptr<Process>> start_ranks(int world, const std::vector<std::string>& args,
                                                  const std::map<std::string, std::string>& env = {});
// The same, waited for.
std::vector<ProcessResult> run_ranks(int world, const std::vector<std::string>& args, double timeout_seconds = 300);

std::string binary();
// A program of the project's Python environment (scripts/install_deps.sh makes
// it): in MINIPRETRAIN_VENV if set, else in the checkout's .venv.
std::string venv_program(const std::string& name);
// An empty directory `name` of this test case and process, so that cases
// running side by side (ctest -j, another checkout's suite) never share one.
// All of them go when the process ends with every case passed.
std::string fresh_dir(const std::string& name);
// A loopback port that no other test process is handed while this one runs,
// with the port after it (the rendezvous takes that one under torchrun).
int free_port();

// A client of the rendezvous as a hostile peer plays it: a plain TCP
// connection to 127.0.0.1:`port` (-1 when refused).
int connect_loopback(int port);
// Sends what the peer takes within a second; a server that stops reading
// leaves the rest unsent.
void send_some(int fd, const std::string& bytes);
// Whether the peer has closed the connection (EOF or a reset is waiting).
bool closed_by_peer(int fd);

// step -> record, from OUTPUT/metrics.jsonl: the records that have `key`
// ("loss" for training steps, "val_loss" for validation runs). A last line
// without its newline is still being written, and is left out.
std::map<int64_t, nlohmann::json> read_metrics(const std::string& output_dir, const std::string& key = "loss");

// `args`, then `more` (later flags win).
std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more);

// The small GQA model every run test uses, as command-line flags.
std::vector<std::string> tiny_args(const std::string& output_dir, int max_steps);

// Runs fn(rank, communicator) on `world` threads joined into one Gloo group,
// as it is or keeping NCCL's rules (NcclRulesCommunicator).
enum class GroupRules { Gloo, Nccl };
void with_gloo_group(int world, const std::function<void(int, Communicator&)>& fn, GroupRules rules = GroupRules::Gloo,
                     std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A pipeline schedule's bubble as the literature states it: the idle share
// of PP x the step's time, with a forward, B and W costing 1 each (a whole
// backward 2) and free transfers. The derivations are beside the definition.
double literature_bubble(PipelineSchedule schedule, int64_t pp, int64_t m, int64_t v = 1);

// ||a - b|| / ||b||: fp32 sums in another order differ by ~1e-7 of the
// tensor's scale, which an element-wise ratio on near-zero entries inflates.
double relative_error(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace minipretrain::test

namespace minipretrain::test {

// Every rank of `results` exited 0; otherwise fails with their output.
void expect_all_succeeded(const std::vector<ProcessResult>& results);

// Each of these returns the largest difference it saw (infinity where
// something is missing), for the tests that report their noise.

// Per-step losses of two runs agree within `rel` for steps 1..steps.
double expect_same_losses(const std::string& a_dir, const std::string& b_dir, int64_t steps, double rel);

// The final checkpoints of two runs hold the same full tensors within `rel`.
double expect_same_weights(const std::string& a_dir, const std::string& b_dir, double rel);

// Step 1's tensors of `kind` ("logits" or "grads") that --dump-first-step
// wrote into two directories, full tensors within `rel` of each other.
double expect_same_first_step(const std::string& a_dump, const std::string& b_dump, const std::string& kind,
                              double rel);

}  // namespace minipretrain::test
