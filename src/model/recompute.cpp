#include "minipretrain/model/recompute.h"

namespace minipretrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The layer and the RoPE tables outlive every graph that uses them.
struct RecomputedLayer : torch::autograd::Function<RecomputedLayer> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, DecoderLayerImpl* layer,
                               const RotaryEmbedding* rope) {
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["rope"] = reinterpret_cast<int64_t>(rope);
    ctx->save_for_backward({x});
    return layer->forward(x, *rope);  // autograd is off here: nothing is kept
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    const auto* rope = reinterpret_cast<const RotaryEmbedding*>(ctx->saved_data["rope"].toInt());
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = layer->forward(x, *rope);
    }
    // Accumulates into the layer's parameter gradients, as the first pass would have.
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor recomputed_layer(DecoderLayerImpl& layer, const torch::Tensor& x, const RotaryEmbedding& rope) {
  return RecomputedLayer::apply(x, &layer, &rope);
}

}  // namespace minipretrain
