#include "minipretrain/distributed/nccl_rules_communicator.h"

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

namespace minipretrain {
namespace {

// Acknowledgements travel on tags of their own, clear of the pipeline's.
constexpr int kAckTag = 1 << 24;

class QueuedOp : public PendingOp {
 public:
  explicit QueuedOp(std::shared_future<void> done) : done_(std::move(done)) {}
  void wait() override { done_.get(); }

 private:
  std::shared_future<void> done_;
};

std::string message_of(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace

struct NcclRulesCommunicator::Queue {
  struct Job {
    std::function<void()> run;
    std::promise<void> done;
  };
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Job> jobs;
  bool stopping = false;
  bool busy = false;
  std::string failed;  // the first failure, which every later operation repeats (a broken NCCL communicator)
  std::thread thread;

  void serve() {
    for (;;) {
      Job job;
      std::string earlier;
      {
        std::unique_lock<std::mutex> lock(mutex);
        ready.wait(lock, [&] { return stopping || !jobs.empty(); });
        if (stopping) return;
        job = std::move(jobs.front());
        jobs.pop_front();
        busy = true;
        earlier = failed;
      }
      if (!earlier.empty()) {
        job.done.set_exception(std::make_exception_ptr(
            std::runtime_error("an earlier operation of this group failed: " + earlier)));
      } else {
        try {
          job.run();
          job.done.set_value();
        } catch (...) {
          const std::exception_ptr error = std::current_exception();
          std::lock_guard<std::mutex> lock(mutex);
          const std::string text = message_of(error);
          failed = text.substr(0, text.find('\n'));
          job.done.set_exception(error);
        }
      }
      std::lock_guard<std::mutex> lock(mutex);
      busy = false;
    }
  }
};

bool NcclRulesCommunicator::requested() {
  const char* value = std::getenv("MINIPRETRAIN_NCCL_RULES");
  return value && std::strcmp(value, "1") == 0;
}

NcclRulesCommunicator::NcclRulesCommunicator(std::string name, const c10::intrusive_ptr<c10d::Store>& store,
                                             int rank, int size, std::chrono::milliseconds timeout,
                                             const std::string& address)
    : GlooCommunicator(std::move(name), store, rank, size, timeout, address), queue_(std::make_shared<Queue>()) {
  queue_->thread = std::thread([queue = queue_] { queue->serve(); });
}

NcclRulesCommunicator::~NcclRulesCommunicator() {
  bool idle = false;
  {
    std::lock_guard<std::mutex> lock(queue_->mutex);
    queue_->stopping = true;
    idle = !queue_->busy;
  }
  queue_->ready.notify_all();
  // An operation stuck on a dead peer ends only at the timeout; the process
  // is on its way out then (errors exit without waiting), so leave it behind.
  if (idle) {
    queue_->thread.join();
  } else {
    queue_->thread.detach();
  }
}

std::shared_future<void> NcclRulesCommunicator::post(std::function<void()> job) {
  Queue::Job entry{std::move(job), {}};
  std::shared_future<void> done = entry.done.get_future().share();
  {
    std::lock_guard<std::mutex> lock(queue_->mutex);
    queue_->jobs.push_back(std::move(entry));
  }
  queue_->ready.notify_one();
  return done;
}

void NcclRulesCommunicator::transfer(const std::vector<P2POp>& ops) {
  std::vector<std::unique_ptr<PendingOp>> data(ops.size()), acks;
  std::vector<torch::Tensor> tokens;
  // Every receive is posted before anything is waited for, acknowledgements
  // included, so that two ranks exchanging in one batch do not wait on each other.
  for (size_t i = 0; i < ops.size(); ++i) {
    torch::Tensor tensor = ops[i].tensor;
    if (ops[i].kind == P2POp::Send) {
      data[i] = GlooCommunicator::do_isend(tensor, ops[i].peer, ops[i].tag);
      tokens.push_back(torch::zeros({1}));
      acks.push_back(GlooCommunicator::do_irecv(tokens.back(), ops[i].peer, kAckTag + ops[i].tag));
    } else {
      data[i] = GlooCommunicator::do_irecv(tensor, ops[i].peer, ops[i].tag);
    }
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind != P2POp::Receive) continue;
    data[i]->wait();
    tokens.push_back(torch::ones({1}));
    acks.push_back(GlooCommunicator::do_isend(tokens.back(), ops[i].peer, kAckTag + ops[i].tag));
  }
  for (size_t i = 0; i < ops.size(); ++i)
    if (ops[i].kind == P2POp::Send) data[i]->wait();
  for (auto& ack : acks) ack->wait();
}

void NcclRulesCommunicator::do_all_reduce(torch::Tensor& tensor, ReduceOp op) {
  post([&] { GlooCommunicator::do_all_reduce(tensor, op); }).get();
}

std::unique_ptr<PendingOp> NcclRulesCommunicator::do_all_reduce_async(torch::Tensor& tensor, ReduceOp op) {
  return std::make_unique<QueuedOp>(post([this, tensor, op]() mutable { GlooCommunicator::do_all_reduce(tensor, op); }));
}

torch::Tensor NcclRulesCommunicator::do_all_gather(const torch::Tensor& tensor, int64_t dim) {
  torch::Tensor out;
  post([&] { out = GlooCommunicator::do_all_gather(tensor, dim); }).get();
  return out;
}

torch::Tensor NcclRulesCommunicator::do_reduce_scatter(const torch::Tensor& tensor) {
  torch::Tensor out;
  post([&] { out = GlooCommunicator::do_reduce_scatter(tensor); }).get();
  return out;
}

void NcclRulesCommunicator::do_broadcast(torch::Tensor& tensor, int root) {
  post([&] { GlooCommunicator::do_broadcast(tensor, root); }).get();
}

std::unique_ptr<PendingOp> NcclRulesCommunicator::do_reduce_scatter_async(torch::Tensor& flat, ReduceOp op) {
  return std::make_unique<QueuedOp>(
      post([this, flat, op]() mutable { GlooCommunicator::do_reduce_scatter_async(flat, op)->wait(); }));
}

std::unique_ptr<PendingOp> NcclRulesCommunicator::do_all_gather_async(torch::Tensor& flat) {
  return std::make_unique<QueuedOp>(post([this, flat]() mutable { GlooCommunicator::do_all_gather_async(flat)->wait(); }));
}

std::unique_ptr<PendingOp> NcclRulesCommunicator::do_isend(const torch::Tensor& tensor, int dst, int tag) {
  return std::make_unique<QueuedOp>(post([this, op = P2POp{P2POp::Send, tensor, dst, tag}] { transfer({op}); }));
}

std::unique_ptr<PendingOp> NcclRulesCommunicator::do_irecv(torch::Tensor& tensor, int src, int tag) {
  return std::make_unique<QueuedOp>(post([this, op = P2POp{P2POp::Receive, tensor, src, tag}] { transfer({op}); }));
}

std::vector<std::unique_ptr<PendingOp>> NcclRulesCommunicator::do_batch_isend_irecv(const std::vector<P2POp>& ops) {
  const std::shared_future<void> batch = post([this, ops] { transfer(ops); });
  std::vector<std::unique_ptr<PendingOp>> handles;
  for (size_t i = 0; i < ops.size(); ++i) handles.push_back(std::make_unique<QueuedOp>(batch));
  return handles;
}

void NcclRulesCommunicator::do_barrier() {
  post([&] { GlooCommunicator::do_barrier(); }).get();
}

}  // namespace minipretrain
