// The pipeline executor in one process, against a logging communicator: when
// it posts and awaits the receives of a stage's actions.
#include <gtest/gtest.h>

#include "minipretrain/parallel/pipeline_executor.h"

using minipretrain::Action;
using minipretrain::Communicator;
using minipretrain::Microbatch;
using minipretrain::PendingOp;
using minipretrain::PipelineExecutor;
using minipretrain::PipelineStage;

namespace {

// The middle stage of three: every action receives (F an activation, B its
// gradient) and sends when its compute is done.
class ScaleStage : public PipelineStage {
 public:
  bool is_first() const override { return false; }
  bool is_last() const override { return false; }
  int64_t index() const override { return 1; }
  int64_t num_chunks() const override { return 1; }
  torch::Tensor forward(const torch::Tensor& input, int64_t) override { return input * weight_; }
  torch::Tensor loss(const torch::Tensor&, const torch::Tensor&) override { throw std::logic_error("not last"); }
  torch::TensorOptions activation_options() const override { return torch::TensorOptions(); }

 private:
  torch::Tensor weight_ = torch::full({1}, 2.0).requires_grad_();
};

// Rank 1 of a pipeline of 3 that logs each receive posted and waited for,
// each send and each batch of several, in order; receives complete with ones.
class LoggingGroup : public Communicator {
 public:
  explicit LoggingGroup(bool ahead) : Communicator("pp", 1, 3), ahead_(ahead) {}
  bool receives_post_ahead() const override { return ahead_; }
  std::vector<std::string> log;

 protected:
  struct Done : PendingOp {
    std::function<void()> on_wait;
    void wait() override { if (on_wait) on_wait(); }
  };
  void do_all_reduce(torch::Tensor&, minipretrain::ReduceOp) override {}
  torch::Tensor do_all_gather(const torch::Tensor& t, int64_t) override { return t; }
  torch::Tensor do_reduce_scatter(const torch::Tensor& t) override { return t; }
  void do_broadcast(torch::Tensor&, int) override {}
  std::unique_ptr<PendingOp> do_reduce_scatter_async(torch::Tensor&, minipretrain::ReduceOp) override {
    return std::make_unique<Done>();
  }
  std::unique_ptr<PendingOp> do_all_gather_async(torch::Tensor&) override { return std::make_unique<Done>(); }
  void do_barrier() override {}
  std::unique_ptr<PendingOp> do_isend(const torch::Tensor&, int, int) override {
    log.push_back("send");
    return std::make_unique<Done>();
  }
  std::vector<std::unique_ptr<PendingOp>> do_batch_isend_irecv(const std::vector<minipretrain::P2POp>& ops) override {
    log.push_back("batch");
    return Communicator::do_batch_isend_irecv(ops);
  }
  std::unique_ptr<PendingOp> do_irecv(torch::Tensor& t, int, int) override {
    log.push_back("post");
    auto done = std::make_unique<Done>();
    done->on_wait = [this, t]() mutable {
      log.push_back("wait");
      t.fill_(1.0);
    };
    return done;
  }

 private:
  bool ahead_;
};

// Position in `log` of each occurrence of `event`, in order.
std::vector<size_t> positions(const std::vector<std::string>& log, const std::string& event) {
  std::vector<size_t> at;
  for (size_t i = 0; i < log.size(); ++i)
    if (log[i] == event) at.push_back(i);
  return at;
}

}  // namespace

// Action k + 1's receive is posted before action k computes (its send marks
// the end of that compute), and waited for only by action k + 1: the
// transfer runs during action k. Without the backend's leave (NCCL), each
// receive goes in one batch with the send of the action before.
TEST(PipelineParallel, ReceivesArePostedOneActionAhead) {
  for (const bool ahead : {true, false}) {
    SCOPED_TRACE(ahead ? "Gloo-like" : "NCCL-like");
    auto stage = std::make_shared<ScaleStage>();
    LoggingGroup pp(ahead);
    PipelineExecutor executor(stage, pp, {2, 3});
    const std::vector<Action> actions = minipretrain::make_schedule(minipretrain::PipelineSchedule::OneFOneB, 3, 1, 6, 1);
    executor.run(actions, std::vector<Microbatch>(6));

    const std::vector<size_t> posts = positions(pp.log, "post"), waits = positions(pp.log, "wait"),
                              sends = positions(pp.log, "send");
    ASSERT_EQ(posts.size(), actions.size());
    ASSERT_EQ(waits.size(), actions.size());
    ASSERT_EQ(sends.size(), actions.size());
    for (size_t k = 0; k < actions.size(); ++k) {
      EXPECT_LT(posts[k], waits[k]) << "action " << k;
      EXPECT_LT(waits[k], sends[k]) << "action " << k;
      if (k + 1 < actions.size()) {
        EXPECT_GT(waits[k + 1], sends[k]) << "action " << k + 1 << "'s receive was awaited too early";
        if (ahead)
          EXPECT_LT(posts[k + 1], waits[k]) << "action " << k + 1 << "'s receive was not posted ahead";
        else
          EXPECT_EQ(posts[k + 1], sends[k] + 1) << "action " << k + 1 << "'s receive is not batched with the send";
      }
      const bool batched = sends[k] > 0 && pp.log[sends[k] - 1] == "batch";
      EXPECT_EQ(batched, !ahead && k + 1 < actions.size()) << "action " << k;
      // At most two receives are outstanding: this action's and the next one's.
      if (k + 2 < actions.size()) EXPECT_GT(posts[k + 2], waits[k]) << "action " << k + 2;
    }
  }
}
