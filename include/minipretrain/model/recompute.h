// Full activation recomputation: a decoder layer run this way keeps only its
// input; backward runs the layer forward again (TP collectives included, in
// the same order on every rank) and then through it. The numbers are the same
// as without recomputation, for the memory of one layer's activations.
#pragma once

#include <torch/torch.h>

#include "minipretrain/model/decoder_layer.h"

namespace minipretrain {

torch::Tensor recomputed_layer(DecoderLayerImpl& layer, const torch::Tensor& x, const RotaryEmbedding& rope);

}  // namespace minipretrain
