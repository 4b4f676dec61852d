#include "minipretrain/train/sharded_optimizer.h"

#include <algorithm>

namespace minipretrain {
namespace {

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Elements [begin, end) of a row-major [rows, width] matrix as at most
// three boxes: the rest of a first row, whole rows, the start of a last row.
struct Rect {
  int64_t row, col, rows, cols;
};
std::vector<Rect> rectangles(int64_t begin, int64_t end, int64_t width) {
  std::vector<Rect> out;
  while (begin < end) {
    const int64_t row = begin / width, col = begin % width;
    if (col != 0 || end - begin < width) {
      const int64_t cols = std::min(width - col, end - begin);
      out.push_back({row, col, 1, cols});
      begin += cols;
    } else {
      const int64_t rows = (end - begin) / width;
      out.push_back({row, 0, rows, width});
      begin += rows * width;
    }
  }
  return out;
}

}  // namespace

ShardedOptimizer::ShardedOptimizer(std::vector<std::vector<int64_t>> shapes, std::vector<GradientBuckets::Range> buckets,
                                   int64_t rank, int64_t shards, torch::ScalarType compute_dtype, AdamWOptions options)
    : shapes_(std::move(shapes)), buckets_(std::move(buckets)), dtype_(compute_dtype), options_(options) {
  int64_t offset = 0;
  for (const auto& shape : shapes_) {
    offsets_.push_back(offset);
    offset += numel(shape);
  }
  int64_t owned = 0;
  size_t entry = 0;
  for (const GradientBuckets::Range& bucket : buckets_) {
    const int64_t length = bucket.elements / shards;
    const int64_t begin = bucket.offset + rank * length, end = begin + length;
    while (entry < shapes_.size() && offsets_[entry] + numel(shapes_[entry]) <= begin) ++entry;
    for (size_t e = entry; e < shapes_.size() && offsets_[e] < end; ++e) {
      const int64_t from = std::max(begin, offsets_[e]), to = std::min(end, offsets_[e] + numel(shapes_[e]));
      if (from >= to) continue;
      pieces_.push_back({e, from, to - from, owned});
      owned += to - from;
    }
  }
  if (dtype_ != torch::kFloat) masters_ = torch::empty({owned}, torch::kFloat);
}

void ShardedOptimizer::see_fp32(size_t entry, const torch::Tensor& weight) {
  if (!masters_.defined()) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor flat = weight.reshape(-1);
  for (const Piece& p : pieces_)
    if (p.entry == entry)
      masters_.narrow(0, p.master, p.elements).copy_(flat.narrow(0, p.flat - offsets_[entry], p.elements));
}

void ShardedOptimizer::attach(torch::Tensor flat_model, torch::Tensor flat_grad) {
  flat_model_ = std::move(flat_model);
  flat_grad_ = std::move(flat_grad);
  if (masters_.defined()) masters_ = masters_.to(flat_model_.device());
  std::vector<torch::Tensor> params;
  std::vector<bool> decay;
  for (const Piece& p : pieces_) {
    params.push_back(masters_.defined() ? masters_.narrow(0, p.master, p.elements)
                                        : flat_model_.narrow(0, p.flat, p.elements));
    decay.push_back(shapes_[p.entry].size() >= 2);
  }
  adamw_ = std::make_unique<AdamW>(params, options_, decay);
}

void ShardedOptimizer::gradient_pieces(const std::vector<bool>& counted, std::vector<torch::Tensor>& grads,
                                       std::vector<bool>& counted_pieces) const {
  for (const Piece& p : pieces_) {
    grads.push_back(flat_grad_.narrow(0, p.flat, p.elements));
    counted_pieces.push_back(counted.at(p.entry));
  }
}

void ShardedOptimizer::gather(const torch::Tensor& flat, Communicator& dp) const {
  std::vector<std::unique_ptr<PendingOp>> pending;
  for (const GradientBuckets::Range& b : buckets_) {
    torch::Tensor range = flat.narrow(0, b.offset, b.elements);
    pending.push_back(dp.all_gather_async(range));
  }
  for (auto& op : pending) op->wait();
}

void ShardedOptimizer::step(double lr, double grad_scale, Communicator& dp) {
  std::vector<torch::Tensor> grads;
  for (const Piece& p : pieces_) grads.push_back(flat_grad_.narrow(0, p.flat, p.elements));
  adamw_->step(lr, grads, grad_scale);
  publish(dp);
}

void ShardedOptimizer::publish(Communicator& dp) {
  torch::NoGradGuard no_grad;
  if (masters_.defined())
    for (const Piece& p : pieces_)
      flat_model_.narrow(0, p.flat, p.elements).copy_(masters_.narrow(0, p.master, p.elements));
  gather(flat_model_, dp);
}

void ShardedOptimizer::gather_gradients(Communicator& dp) { gather(flat_grad_, dp); }

bool ShardedOptimizer::masters_finite() const {
  for (const Piece& p : pieces_) {
    const torch::Tensor master =
        masters_.defined() ? masters_.narrow(0, p.master, p.elements) : flat_model_.narrow(0, p.flat, p.elements);
    if (!torch::isfinite(master).all().item<bool>()) return false;
  }
  return true;
}

void ShardedOptimizer::add_state(NamedState& state, const std::string& name, size_t entry, int64_t row, int64_t rows,
                                 const ShardSpec& spec) const {
  const std::vector<int64_t>& shape = shapes_.at(entry);
  const int64_t width = numel(shape) / shape.at(0);
  const int64_t first = offsets_[entry] + row * width, last = first + rows * width;  // the tensor in the buffer
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    const int64_t from = std::max(first, p.flat), to = std::min(last, p.flat + p.elements);
    if (p.entry != entry || from >= to) continue;
    for (const Rect& r : rectangles(from - first, to - first, width)) {
      const int64_t at = first + r.row * width + r.col;  // the box's first element in the buffer
      ShardSpec box = spec;
      box.start = shape.size() == 1 ? std::vector<int64_t>{r.row} : std::vector<int64_t>{r.row, r.col};
      if (spec.sharded()) box.start[spec.dim] += spec.offset;
      const auto view = [&](const torch::Tensor& t, int64_t t_first) {
        torch::Tensor part = t.narrow(0, at - t_first, r.rows * r.cols);
        return shape.size() == 1 ? part : part.view({r.rows, r.cols});
      };
      state[box_name("optim/exp_avg." + name, at)] = {view(adamw_->exp_avg(i), p.flat), box};
      state[box_name("optim/exp_avg_sq." + name, at)] = {view(adamw_->exp_avg_sq(i), p.flat), box};
      if (masters_.defined()) state[box_name("model/" + name, at)] = {view(masters_, p.flat - p.master), box};
    }
  }
}

}  // namespace minipretrain
