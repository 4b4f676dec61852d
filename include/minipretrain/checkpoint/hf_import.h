// The way in from Hugging Face: a `LlamaForCausalLM` directory (config.json
// and model.safetensors, or the files of model.safetensors.index.json) read
// as our model. Features our model lacks (rope scaling, tied embeddings,
// biases, another activation or head size) are refused by name.
#pragma once

#include <string>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/config/config.h"

namespace minipretrain {

// The architecture in DIR/config.json. Throws CheckpointError naming the
// file and the field for anything our model cannot represent.
ModelConfig read_hf_config(const std::string& hf_dir);

// Writes CHECKPOINT_DIR as a checkpoint of ours (one shard, step 0, weights
// only, fp32): `export` of it gives the HF weights back, and `--init-from`
// starts a run from it.
void import_hugging_face(const std::string& hf_dir, const std::string& checkpoint_dir);

// Copies into every tensor of `weights` (this rank's "model/..." slices) the
// weights of PATH: a checkpoint of ours of any layout, or an HF directory.
// The model must be this run's.
void load_weights(const std::string& path, const NamedState& weights, const Config& config);

}  // namespace minipretrain
