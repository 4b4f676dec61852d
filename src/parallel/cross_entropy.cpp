#include "minipretrain/parallel/cross_entropy.h"

namespace minipretrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& targets,
                               int64_t vocab_start, int64_t vocab_size, Communicator* tp) {
    const int64_t local = logits.size(-1);
    torch::Tensor column = torch::arange(vocab_start, vocab_start + local, targets.options());
    torch::Tensor logits_f = logits.to(torch::kFloat).masked_fill(column >= vocab_size, -INFINITY);

    torch::Tensor max = std::get<0>(logits_f.max(-1));
    tp->all_reduce(max, ReduceOp::Max);
    torch::Tensor shifted = logits_f - max.unsqueeze(-1);

    torch::Tensor target_local = targets - vocab_start;
    torch::Tensor mine = (target_local >= 0) & (target_local < local);
    target_local = target_local.masked_fill(~mine, 0);
    torch::Tensor target_logit =
        shifted.gather(-1, target_local.unsqueeze(-1)).squeeze(-1).masked_fill(~mine, 0.0).contiguous();
    tp->all_reduce(target_logit, ReduceOp::Sum);

    torch::Tensor exp = shifted.exp();
    torch::Tensor sum_exp = exp.sum(-1);
    tp->all_reduce(sum_exp, ReduceOp::Sum);

    ctx->save_for_backward({exp.div_(sum_exp.unsqueeze(-1)), target_local, mine});
    ctx->saved_data["dtype"] = logits.scalar_type();
    return sum_exp.log() - target_logit;
  }

  // d loss / d logit = softmax - one_hot(target), restricted to local columns.
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    torch::Tensor grad = saved[0];
    grad.scatter_add_(-1, saved[1].unsqueeze(-1), -saved[2].to(grad.scalar_type()).unsqueeze(-1));
    grad.mul_(grads[0].unsqueeze(-1));
    const auto dtype = ctx->saved_data["dtype"].toScalarType();
    return {grad.to(dtype), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits_local, const torch::Tensor& targets,
                                           int64_t vocab_start, int64_t vocab_size, Communicator& tp) {
  return VocabParallelCrossEntropy::apply(logits_local, targets, vocab_start, vocab_size, &tp);
}

}  // namespace minipretrain
