// The subcommands other than training (`generate`, `export`, `import`), the
// top layer: they read checkpoints and build models, which the layers below
// never do to each other.
#pragma once

#include <string>

#include "minipretrain/commands/cli.h"
#include "minipretrain/model/stage.h"

namespace minipretrain {

// The whole model (TP = PP = 1) of a checkpoint of any layout, with its
// trained weights. `config_out`, when given, receives its ModelConfig
// (generate() needs it). Throws std::runtime_error naming the path when
// meta.json is missing, or a tensor is missing or of another shape.
Stage load_for_inference(const std::string& checkpoint_dir, ModelConfig* config_out = nullptr);

void run_generate(const GenerateCommand& command);
void run_export(const ExportCommand& command);
void run_import(const ImportCommand& command);

}  // namespace minipretrain
