// Named tensors on disk, read slice by slice: the shards of one of our
// checkpoints, written by any layout, or a Hugging Face directory. A rank
// asks for the slice its own layout holds (a ShardSpec) and reads only the
// pieces that overlap it, so resuming on another TP or PP size, or starting
// from HF weights, never loads the whole model into one rank unless that
// rank holds it all. Vocabulary padding of either layout is handled: rows
// past the real vocabulary are zero.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "minipretrain/checkpoint/safetensors.h"
#include "minipretrain/parallel/shard.h"

namespace minipretrain {

// A JSON file of a checkpoint (meta.json, a shard's index) or of a Hugging
// Face directory; throws CheckpointError naming the file when it cannot be
// read or parsed.
nlohmann::json read_json_file(const std::string& path);

class TensorSource {
 public:
  // Every <file_prefix>*.safetensors of a checkpoint directory (or of a
  // --dump-first-step directory), with the specs of its .json; each file's
  // hash is checked before its first tensor is used.
  static TensorSource from_checkpoint(const std::string& dir, const std::string& file_prefix = "shard-");
  // model.safetensors, or the files model.safetensors.index.json names;
  // tensor names get `prefix` in front ("model/", as our checkpoints name them).
  static TensorSource from_hugging_face(const std::string& dir, const std::string& prefix);

  bool has(const std::string& name) const { return pieces_.count(name) > 0; }
  std::vector<std::string> names() const;
  // The values of every tensor, whole (a sharded one counted once).
  int64_t elements() const;
  // Fills `dest` with its slice (`spec`; none: the whole tensor) of `name`.
  // Throws CheckpointError naming the tensor when the source lacks it, holds
  // it with another full shape, or lacks part of the slice (a missing file).
  void read_into(const std::string& name, torch::Tensor dest, const std::optional<ShardSpec>& spec);
  // The whole tensor (for import).
  torch::Tensor read_full(const std::string& name);

 private:
  struct Piece {
    size_t file;
    std::string stored_name;        // as the file names it
    std::optional<ShardSpec> spec;  // none: the whole tensor
  };
  struct File {
    SafetensorsIndex index;
    std::optional<std::pair<FileHash, uint64_t>> hash;  // expected, when the source records one
    bool checked = false;
    std::string stamp;  // inode, size and mtime when first read (see read_piece)
  };
  torch::Tensor read_piece(const Piece& piece);
  // Every tensor's pieces fit together exactly (see the .cpp); throws
  // CheckpointError naming the tensor otherwise.
  void check_pieces() const;
  void check_boxes(const std::string& name, const std::vector<Piece>& pieces) const;

  std::string where_;  // the directory, for messages
  std::vector<File> files_;
  std::map<std::string, std::vector<Piece>> pieces_;
};

}  // namespace minipretrain
