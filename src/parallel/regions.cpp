#include "minipretrain/parallel/regions.h"

namespace minipretrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Autograd contexts hold IValues; the group outlives every graph that uses it.
void save_group(AutogradContext* ctx, Communicator& tp) {
  ctx->saved_data["tp"] = reinterpret_cast<int64_t>(&tp);
}
Communicator& saved_group(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(ctx->saved_data["tp"].toInt());
}

torch::Tensor all_reduced(const torch::Tensor& x, Communicator& tp) {
  torch::Tensor out = x.contiguous().clone();
  tp.all_reduce(out, ReduceOp::Sum);
  return out;
}

// Communicator::reduce_scatter splits dim 0: the sequence goes first for it.
torch::Tensor reduce_scattered_sequence(const torch::Tensor& x, Communicator& tp) {
  return tp.reduce_scatter(x.transpose(0, 1).contiguous()).transpose(0, 1).contiguous();
}

struct CopyToTP : torch::autograd::Function<CopyToTP> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* tp) {
    save_group(ctx, *tp);
    return x.view_as(x);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    return {all_reduced(grads[0], saved_group(ctx)), torch::Tensor()};
  }
};

struct ReduceFromTP : torch::autograd::Function<ReduceFromTP> {
  static torch::Tensor forward(AutogradContext*, const torch::Tensor& x, Communicator* tp) {
    return all_reduced(x, *tp);
  }
  static tensor_list backward(AutogradContext*, tensor_list grads) { return {grads[0], torch::Tensor()}; }
};

struct GatherFromTP : torch::autograd::Function<GatherFromTP> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* tp) {
    save_group(ctx, *tp);
    return tp->all_gather(x, x.dim() - 1);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    Communicator& tp = saved_group(ctx);
    const torch::Tensor& g = grads[0];
    return {g.chunk(tp.size(), g.dim() - 1)[tp.rank()].contiguous(), torch::Tensor()};
  }
};

struct GatherSequence : torch::autograd::Function<GatherSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* tp) {
    save_group(ctx, *tp);
    return tp->all_gather(x, 1);
  }
  // Each rank's gradient is its partial sum (of its shard of the next GEMM).
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    return {reduce_scattered_sequence(grads[0], saved_group(ctx)), torch::Tensor()};
  }
};

struct ReduceScatterSequence : torch::autograd::Function<ReduceScatterSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* tp) {
    save_group(ctx, *tp);
    return reduce_scattered_sequence(x, *tp);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    return {saved_group(ctx).all_gather(grads[0], 1), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor copy_to_tp(const torch::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : CopyToTP::apply(x, &tp);
}

torch::Tensor reduce_from_tp(const torch::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : ReduceFromTP::apply(x, &tp);
}

torch::Tensor gather_from_tp(const torch::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : GatherFromTP::apply(x, &tp);
}

torch::Tensor gather_sequence(const torch::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : GatherSequence::apply(x, &tp);
}

torch::Tensor reduce_scatter_sequence(const torch::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : ReduceScatterSequence::apply(x, &tp);
}

}  // namespace minipretrain
