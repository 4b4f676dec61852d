// Checkpoints: OUTPUT/checkpoint-00000100/ holds
//   meta.json               step, consumed samples, the resolved config, the layout
//   shard-tp0-pp0.safetensors  one per (TP, PP) position: that rank's named state,
//                           the fp32 weights ("model/<name>") and optimizer state
//                           ("optim/exp_avg.<name>", ...)
//   shard-tp0-pp0.json      each tensor's ShardSpec, the file's size and XXH3 hash
//   shard-tp0-pp0-dp1.*     with --use-distributed-optimizer: DP rank 1's boxes
//                           of the optimizer state ("optim/exp_avg.<name>@<k>")
// DP replicas hold equal state, so only DP rank 0 writes, but for the boxes
// of the distributed optimizer, which each DP rank owns. Everything is written
// under checkpoint-...tmp, flushed to disk (fsync, files then directory), and
// renamed once every shard is there, meta.json last: a kill -9 at any moment
// of a save leaves the previous checkpoints as they were, and the .tmp is
// never taken for a checkpoint and is removed by the next save. With
// save_keep N, older checkpoints go only after the new one is complete.
// Checkpoints of later steps than the one saved belong to a run that was
// abandoned (resumed from an earlier step): they are renamed
// checkpoint-<step>.abandoned, kept but never resumed from.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>

#include <torch/torch.h>

#include "minipretrain/checkpoint/safetensors.h"
#include "minipretrain/config/config.h"
#include "minipretrain/distributed/parallel_state.h"
#include "minipretrain/parallel/shard.h"

namespace minipretrain {

// A checkpoint that cannot be used: corrupt, incomplete or of another model.
struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TrainingProgress {
  int64_t step = 0;
  int64_t consumed_samples = 0;
  std::string layout;  // that wrote the checkpoint, e.g. "TP 2 x PP 2 x DP 1"; set by load_checkpoint
};

// Collective over `group`, which spans the world (ParallelState::world or
// saves). Returns the checkpoint's directory.
std::string save_checkpoint(const std::string& output_dir, const TrainingProgress& progress, const NamedState& state,
                            const Config& config, const ParallelState& parallel, Communicator& group);

// The newest complete checkpoint under `output_dir`, or "" when none.
std::string find_latest_checkpoint(const std::string& output_dir);
// The step of a checkpoint directory checkpoint-<step>, or -1.
int64_t checkpoint_step(const std::string& checkpoint_dir);

// Copies into every tensor of `state` its slice (its spec) from the
// checkpoint, whatever layout wrote it: each rank reads only the pieces of
// the shards that overlap its own. Throws CheckpointError when the checkpoint
// is corrupt or incomplete, lacks a tensor, or was written for another model
// or global batch size.
TrainingProgress load_checkpoint(const std::string& dir, const NamedState& state, const Config& config);

// Throws CheckpointError, naming `what` and the field, unless the model
// fields of `saved` (a config as JSON) equal this run's.
void check_same_model(const nlohmann::json& saved, const Config& config, const std::string& what);

// Writes `text` to `path` and flushes it to disk (fsync); throws
// CheckpointError when it cannot (a full disk).
void write_file_durably(const std::string& path, const std::string& text);

// Named tensors of one rank, with their specs, written and read in the shard
// format above (also used for --dump-first-step).
void write_named_shard(const std::string& path_prefix, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, ShardSpec>& specs);
std::map<std::string, torch::Tensor> read_named_shard(const std::string& path_prefix,
                                                      std::map<std::string, ShardSpec>* specs = nullptr);

// Joins every FILE_PREFIX*.safetensors under `dir` into full tensors by name (padding
// dropped), for any layout. Optimizer state is skipped.
std::map<std::string, torch::Tensor> load_full_tensors(const std::string& dir,
                                                       const std::string& file_prefix = "shard-");

}  // namespace minipretrain
