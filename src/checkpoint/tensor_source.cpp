#include "minipretrain/checkpoint/tensor_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include <sys/stat.h>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/config/json_input.h"

namespace minipretrain {
namespace fs = std::filesystem;
namespace {

using Box = std::vector<std::pair<int64_t, int64_t>>;  // [begin, end) per dimension, of the full tensor

// What a tensor stored with `shape` covers of the full tensor: a box from
// its start, or all of every dimension but the one it is a shard of; clamped
// to the full size (a padded vocabulary's extra rows lie past it).
Box box_of(const std::vector<int64_t>& shape, const std::optional<ShardSpec>& spec, const std::vector<int64_t>& full) {
  Box box;
  for (size_t d = 0; d < full.size(); ++d) {
    const int64_t begin = spec && spec->box()                               ? spec->start[d]
                          : spec && spec->dim == static_cast<int64_t>(d) ? spec->offset
                                                                            : 0;
    box.emplace_back(std::min(begin, full[d]), std::min(begin + shape[d], full[d]));
  }
  return box;
}

bool overlap(const Box& a, const Box& b) {
  for (size_t d = 0; d < a.size(); ++d)
    if (std::max(a[d].first, b[d].first) >= std::min(a[d].second, b[d].second)) return false;
  return true;
}

// A copy of the whole tensor, which any one piece supplies.
bool whole(const std::optional<ShardSpec>& spec) { return !spec || (!spec->sharded() && !spec->box()); }

int64_t volume(const Box& box) {
  int64_t n = 1;
  for (const auto& [b, e] : box) n *= std::max<int64_t>(0, e - b);
  return n;
}


SafetensorsIndex index_of(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw CheckpointError(path.string() + " is not a regular file");
  try {
    return read_safetensors_index(path.string());
  } catch (const SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
}

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  try {
    return read_json(path);
  } catch (const JsonInputError& e) {
    throw CheckpointError(e.what());
  }
}

TensorSource TensorSource::from_checkpoint(const std::string& dir, const std::string& file_prefix) {
  TensorSource source;
  source.where_ = "checkpoint " + dir;
  std::vector<fs::path> indexes;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(file_prefix, 0) == 0 && entry.path().extension() == ".json") indexes.push_back(entry.path());
  }
  if (indexes.empty())
    throw CheckpointError("checkpoint " + dir + " has no shard files (" + file_prefix + "*.json)");
  std::sort(indexes.begin(), indexes.end());
  for (const fs::path& json_path : indexes) {
    const nlohmann::json index = read_json_file(json_path.string());
    fs::path tensors_path = json_path;
    tensors_path.replace_extension(".safetensors");
    File file{index_of(tensors_path), recorded_hash(index), false};
    if (std::filesystem::file_size(tensors_path) != index.value("bytes", uint64_t{0}))
      throw CheckpointError(tensors_path.string() + " is corrupt: its size does not match " + json_path.string());
    std::map<std::string, ShardSpec> specs;
    try {
      for (const auto& [name, spec] : index.at("specs").items()) specs[name] = shard_spec_from_json(spec);
    } catch (const std::exception& e) {  // JSON types and ranges alike
      throw CheckpointError(json_path.string() + " is corrupt: " + e.what());
    }
    for (const auto& [name, entry] : file.index.entries) {
      auto spec = specs.find(name);
      // Older checkpoints recorded specs for the weights only; an optimizer
      // moment ("optim/exp_avg.<name>") is sliced like its weight.
      const size_t dot = name.find('.');
      if (spec == specs.end() && name.rfind("optim/", 0) == 0 && dot != std::string::npos)
        spec = specs.find("model/" + name.substr(dot + 1));
      source.pieces_[tensor_name(name)].push_back(
          {source.files_.size(), name, spec == specs.end() ? std::nullopt : std::optional<ShardSpec>(spec->second)});
    }
    source.files_.push_back(std::move(file));
  }
  source.check_pieces();
  return source;
}

TensorSource TensorSource::from_hugging_face(const std::string& dir, const std::string& prefix) {
  TensorSource source;
  source.where_ = "Hugging Face directory " + dir;
  const fs::path root(dir);
  std::vector<std::string> names;
  std::map<std::string, std::string> weight_map;  // tensor -> file, when an index names them
  if (fs::exists(root / "model.safetensors.index.json")) {
    const nlohmann::json index = read_json_file((root / "model.safetensors.index.json").string());
    std::set<std::string> unique;
    try {
      for (const auto& [tensor, file] : index.at("weight_map").items()) {
        const std::string name = file.get<std::string>();
        // Files beside the index only: no directories, no way out of it.
        if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
          throw CheckpointError((root / "model.safetensors.index.json").string() + " names the file " +
                                json_excerpt(file) + " for " + tensor + "; only files beside the index may be named");
        weight_map[tensor] = name;
        unique.insert(name);
      }
    } catch (const nlohmann::json::exception& e) {
      throw CheckpointError((root / "model.safetensors.index.json").string() + " is corrupt: " + e.what());
    }
    names.assign(unique.begin(), unique.end());
  } else if (fs::exists(root / "model.safetensors")) {
    names.push_back("model.safetensors");
  } else {
    throw CheckpointError(dir + " has neither model.safetensors nor model.safetensors.index.json");
  }
  for (const std::string& name : names) {
    std::error_code ec;  // a name too long for the file system is as missing as any
    if (!fs::exists(root / name, ec))
      throw CheckpointError(dir + ": model.safetensors.index.json names " + json_excerpt(name) + ", which is missing");
    File file{index_of(root / name), std::nullopt, true};
    for (const auto& [tensor, entry] : file.index.entries) {
      if (!weight_map.empty() && weight_map.count(tensor) && weight_map.at(tensor) != name)
        throw CheckpointError(dir + ": " + tensor + " is in " + name + " but model.safetensors.index.json puts it in " +
                              weight_map.at(tensor));
      if (source.pieces_.count(prefix + tensor))
        throw CheckpointError(dir + ": " + tensor + " is stored twice (in " +
                              fs::path(source.files_[source.pieces_.at(prefix + tensor).front().file].index.path).filename().string() + " and " + name + ")");
      source.pieces_[prefix + tensor].push_back({source.files_.size(), tensor, std::nullopt});
    }
    source.files_.push_back(std::move(file));
  }
  for (const auto& [tensor, file] : weight_map)
    if (!source.pieces_.count(prefix + tensor))
      throw CheckpointError(dir + ": model.safetensors.index.json puts " + tensor + " in " + file + ", which lacks it");
  source.check_pieces();
  return source;
}

// The pieces of one tensor fit together exactly: copies of the whole (each TP
// rank stores a replicated tensor), or shards along one dimension that tile
// it with neither gap nor overlap (the last may run into vocabulary
// padding). Anything else would load weights no run wrote. Weights are
// floating point: integer ones would be converted without a word.
void TensorSource::check_pieces() const {
  for (const auto& entry : pieces_) {
    const std::string& name = entry.first;  // named, not bound: clang 14 lambdas cannot capture bindings
    const std::vector<Piece>& pieces = entry.second;
    const auto stored = [&](const Piece& p) -> const SafetensorsIndex::Entry& {
      return files_[p.file].index.entries.at(p.stored_name);
    };
    const auto refuse = [&](const std::string& why) { throw CheckpointError(where_ + ": " + name + " " + why); };
    for (const Piece& p : pieces)
      if (name.rfind("model/", 0) == 0 && !c10::isFloatingType(stored(p).dtype))
        refuse("is stored as " + std::string(c10::toString(stored(p).dtype)) + "; weights must be floating point");
    const bool boxes = pieces.front().spec && pieces.front().spec->box();
    for (const Piece& p : pieces)
      if ((p.spec && p.spec->box()) != boxes) refuse("is stored both in boxes and otherwise");
    if (boxes) {
      check_boxes(name, pieces);
      continue;
    }
    const bool sharded = pieces.front().spec && pieces.front().spec->sharded();
    std::vector<std::pair<int64_t, int64_t>> spans;  // [offset, end) along the shard dimension
    for (const Piece& p : pieces) {
      const std::vector<int64_t>& shape = stored(p).shape;
      if ((p.spec && p.spec->sharded()) != sharded) refuse("is stored both whole and in shards");
      if (!sharded) {
        if (p.spec && shape != p.spec->full_shape)
          refuse("has shape " + c10::str(shape) + " where its index says " + c10::str(p.spec->full_shape));
        if (shape != stored(pieces.front()).shape) refuse("is stored whole with two different shapes");
        continue;
      }
      const ShardSpec& spec = *p.spec;
      const ShardSpec& first = *pieces.front().spec;
      if (spec.dim != first.dim || spec.full_shape != first.full_shape || shape.size() != spec.full_shape.size())
        refuse("has shards that disagree on the dimension or the full shape");
      for (size_t d = 0; d < shape.size(); ++d)
        if (static_cast<int64_t>(d) != spec.dim && shape[d] != spec.full_shape[d])
          refuse("has a shard of shape " + c10::str(shape) + " that does not fit " + c10::str(spec.full_shape));
      spans.emplace_back(spec.offset, spec.offset + shape[spec.dim]);
    }
    if (!sharded) continue;
    std::sort(spans.begin(), spans.end());
    int64_t end = 0;
    for (const auto& [begin, stop] : spans) {
      if (begin != end)
        refuse(begin < end ? "has shards that overlap at " + std::to_string(begin)
                           : "has a gap between " + std::to_string(end) + " and " + std::to_string(begin));
      end = stop;
    }
    const ShardSpec& spec = *pieces.front().spec;
    if (end < spec.full_shape[spec.dim])
      throw CheckpointError(where_ + " lacks part of " + name + ", from index " + std::to_string(end) + " of dimension " +
                            std::to_string(spec.dim) + " on (is a shard file missing?)");
  }
}

// The distributed optimizer's boxes of one tensor tile it: the same full
// shape, no two overlapping, together as large as the whole.
void TensorSource::check_boxes(const std::string& name, const std::vector<Piece>& pieces) const {
  const auto refuse = [&](const std::string& why) { throw CheckpointError(where_ + ": " + name + " " + why); };
  const std::vector<int64_t>& full = pieces.front().spec->full_shape;
  std::vector<Box> boxes;
  for (const Piece& p : pieces) {
    const std::vector<int64_t>& shape = files_[p.file].index.entries.at(p.stored_name).shape;
    if (p.spec->full_shape != full || shape.size() != full.size())
      refuse("has boxes that disagree on the full shape");
    const Box box = box_of(shape, p.spec, full);
    if (volume(box) > 0) boxes.push_back(box);
  }
  // Sorted by their first dimension, a box can only overlap those that start before it ends there.
  std::sort(boxes.begin(), boxes.end());
  int64_t covered = 0;
  for (size_t i = 0; i < boxes.size(); ++i) {
    covered += volume(boxes[i]);
    for (size_t j = i + 1; j < boxes.size() && boxes[j][0].first < boxes[i][0].second; ++j)
      if (overlap(boxes[i], boxes[j])) refuse("has boxes that overlap");
  }
  int64_t all = 1;
  for (int64_t n : full) all *= n;
  if (covered != all)
    throw CheckpointError(where_ + " lacks part of " + name + " (is a shard file missing?)");
}

namespace {

// What changes when a file is rewritten or replaced: its inode, size and
// modification time (to the nanosecond).
std::string stamp_of(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return "gone";
  return std::to_string(info.st_ino) + ":" + std::to_string(info.st_size) + ":" + std::to_string(info.st_mtim.tv_sec) +
         "." + std::to_string(info.st_mtim.tv_nsec);
}

}  // namespace

torch::Tensor TensorSource::read_piece(const Piece& piece) {
  File& file = files_[piece.file];
  if (file.stamp.empty()) file.stamp = stamp_of(file.index.path);
  if (!file.checked) {
    if (file.hash && hash_file(file.index.path, file.hash->first) != file.hash->second)
      throw CheckpointError(file.index.path + " is corrupt: its hash does not match its .json (reading " +
                            piece.stored_name + ")");
    file.checked = true;
  }
  torch::Tensor tensor;
  try {
    tensor = read_safetensors_tensor(file.index, piece.stored_name);
  } catch (const SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
  // The hash covered the file as it was then: one rewritten since (another
  // run saving into the same place) is caught here, not loaded.
  if (stamp_of(file.index.path) != file.stamp)
    throw CheckpointError(file.index.path + " changed while " + piece.stored_name + " was read from it");
  return tensor;
}

void TensorSource::read_into(const std::string& name, torch::Tensor dest, const std::optional<ShardSpec>& spec) {
  auto it = pieces_.find(name);
  if (it == pieces_.end()) throw CheckpointError(where_ + " has no tensor " + name);
  const std::vector<int64_t> full = spec ? spec->full_shape : dest.sizes().vec();
  const Box want = box_of(dest.sizes().vec(), spec, full);
  // Shapes first: a file that disagrees costs nothing (the destination of an
  // import is sized by config.json and not yet touched).
  for (const Piece& piece : it->second) {
    const SafetensorsIndex::Entry& stored = files_[piece.file].index.entries.at(piece.stored_name);
    const std::vector<int64_t> stored_full = piece.spec ? piece.spec->full_shape : stored.shape;
    if (stored_full != full)
      throw CheckpointError(where_ + ": " + name + " has shape " + c10::str(stored_full) + ", the model expects " +
                            c10::str(full));
  }
  int64_t covered = 0;
  torch::NoGradGuard no_grad;
  dest.zero_();  // padding rows stay zero
  for (const Piece& piece : it->second) {
    const SafetensorsIndex::Entry& stored = files_[piece.file].index.entries.at(piece.stored_name);
    const Box have = box_of(stored.shape, piece.spec, full);
    Box both;
    for (size_t d = 0; d < full.size(); ++d)
      both.emplace_back(std::max(want[d].first, have[d].first), std::min(want[d].second, have[d].second));
    if (volume(both) == 0) continue;
    const torch::Tensor data = read_piece(piece);
    torch::Tensor to = dest, from = data;
    for (size_t d = 0; d < full.size(); ++d) {
      const int64_t length = both[d].second - both[d].first, dim = static_cast<int64_t>(d);
      to = to.narrow(dim, both[d].first - want[d].first, length);
      from = from.narrow(dim, both[d].first - have[d].first, length);
    }
    to.copy_(from);
    covered += volume(both);
    if (whole(piece.spec)) break;  // a whole copy: the others are the same
  }
  if (covered != volume(want))
    throw CheckpointError(where_ + " lacks part of " + name + " (is a shard file missing?)");
}

std::vector<std::string> TensorSource::names() const {
  std::vector<std::string> out;
  for (const auto& [name, pieces] : pieces_) out.push_back(name);
  return out;
}

int64_t TensorSource::elements() const {
  int64_t total = 0;
  for (const auto& [name, pieces] : pieces_) {
    const Piece& p = pieces.front();
    const std::vector<int64_t>& shape = p.spec ? p.spec->full_shape : files_[p.file].index.entries.at(p.stored_name).shape;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;  // bounded by the file's size (safetensors) or the spec's checks
    total += n;
  }
  return total;
}

torch::Tensor TensorSource::read_full(const std::string& name) {
  auto it = pieces_.find(name);
  if (it == pieces_.end()) throw CheckpointError(where_ + " has no tensor " + name);
  const Piece& first = it->second.front();
  const SafetensorsIndex::Entry& stored = files_[first.file].index.entries.at(first.stored_name);
  torch::Tensor full = torch::empty(first.spec ? first.spec->full_shape : stored.shape, stored.dtype);
  read_into(name, full, std::nullopt);
  return full;
}

}  // namespace minipretrain
