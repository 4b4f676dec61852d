// Export of a checkpoint, of any DP x TP x PP layout, as a Hugging Face
// `LlamaForCausalLM` directory that `from_pretrained` loads as it is:
//   model.safetensors       every full tensor under its HF name, F32, TP padding dropped
//   config.json             the architecture, from the checkpoint's meta.json
//   tokenizer.model         a copy of the SentencePiece model, when one is given
//   tokenizer_config.json   LlamaTokenizer settings, with the tokenizer
// Each file is written under a temporary name and renamed when complete, so a
// reader never sees half a file. Our weights need no permutation: RoPE follows
// the HF convention (DESIGN.md).
//
// Also here, because export and inference share them: reading a checkpoint's
// configuration and its full, checked tensors in one process.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "minipretrain/config/config.h"

namespace minipretrain {

struct HfExportOptions {
  std::string tokenizer_model;          // SentencePiece .model to copy; "" for none
  std::optional<int64_t> bos_token_id;  // written to config.json when set
  std::optional<int64_t> eos_token_id;
  bool progress = false;  // progress lines on stderr (the CLI)
};

// Throws std::runtime_error naming the path when the checkpoint has no
// meta.json or lacks a tensor of the model, or when a file cannot be written.
void export_hugging_face(const std::string& checkpoint_dir, const std::string& output_dir,
                         const HfExportOptions& options);
void export_hugging_face(const std::string& checkpoint_dir, const std::string& output_dir,
                         const std::string& tokenizer_model = "");

// The run configuration saved in CHECKPOINT/meta.json.
Config read_checkpoint_config(const std::string& checkpoint_dir);

// Every parameter of the model `config` describes, as its full unpadded tensor
// by HF name; throws std::runtime_error naming the checkpoint and the tensor
// when one is missing or has another shape. Tensors the model does not have
// are left out.
std::map<std::string, torch::Tensor> load_model_tensors(const std::string& checkpoint_dir,
                                                        const ModelConfig& config, bool show_progress = false);

}  // namespace minipretrain
