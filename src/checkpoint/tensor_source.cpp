#include "minipretrain/checkpoint/tensor_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "minipretrain/checkpoint/checkpoint.h"

namespace minipretrain {
namespace fs = std::filesystem;
namespace {

using Box = std::vector<std::pair<int64_t, int64_t>>;  // [begin, end) per dimension, of the full tensor

// What a tensor stored with `shape` covers of the full tensor: all of every
// dimension but the one it is a shard of, clamped to the full size (a padded
// vocabulary's extra rows lie past it).
Box box_of(const std::vector<int64_t>& shape, const std::optional<ShardSpec>& spec, const std::vector<int64_t>& full) {
  Box box;
  for (size_t d = 0; d < full.size(); ++d) {
    const int64_t begin = spec && spec->dim == static_cast<int64_t>(d) ? spec->offset : 0;
    box.emplace_back(begin, std::min(begin + shape[d], full[d]));
  }
  return box;
}

int64_t volume(const Box& box) {
  int64_t n = 1;
  for (const auto& [b, e] : box) n *= std::max<int64_t>(0, e - b);
  return n;
}


SafetensorsIndex index_of(const fs::path& path) {
  try {
    return read_safetensors_index(path.string());
  } catch (const SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
}

}  // namespace

TensorSource TensorSource::from_checkpoint(const std::string& dir) {
  TensorSource source;
  source.where_ = "checkpoint " + dir;
  std::vector<fs::path> indexes;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("shard-", 0) == 0 && entry.path().extension() == ".json") indexes.push_back(entry.path());
  }
  if (indexes.empty()) throw CheckpointError("checkpoint " + dir + " has no shard files (shard-*.json)");
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
    } catch (const nlohmann::json::exception& e) {
      throw CheckpointError(json_path.string() + " is corrupt: " + e.what());
    }
    for (const auto& [name, entry] : file.index.entries) {
      auto spec = specs.find(name);
      // Older checkpoints recorded specs for the weights only; an optimizer
      // moment ("optim/exp_avg.<name>") is sliced like its weight.
      const size_t dot = name.find('.');
      if (spec == specs.end() && name.rfind("optim/", 0) == 0 && dot != std::string::npos)
        spec = specs.find("model/" + name.substr(dot + 1));
      source.pieces_[name].push_back(
          {source.files_.size(), name, spec == specs.end() ? std::nullopt : std::optional<ShardSpec>(spec->second)});
    }
    source.files_.push_back(std::move(file));
  }
  return source;
}

TensorSource TensorSource::from_hugging_face(const std::string& dir, const std::string& prefix) {
  TensorSource source;
  source.where_ = "Hugging Face directory " + dir;
  const fs::path root(dir);
  std::vector<std::string> names;
  if (fs::exists(root / "model.safetensors.index.json")) {
    const nlohmann::json index = read_json_file((root / "model.safetensors.index.json").string());
    std::set<std::string> unique;
    try {
      for (const auto& [tensor, file] : index.at("weight_map").items()) unique.insert(file.get<std::string>());
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
    if (!fs::exists(root / name))
      throw CheckpointError(dir + ": model.safetensors.index.json names " + name + ", which is missing");
    File file{index_of(root / name), std::nullopt, true};
    for (const auto& [tensor, entry] : file.index.entries)
      source.pieces_[prefix + tensor].push_back({source.files_.size(), tensor, std::nullopt});
    source.files_.push_back(std::move(file));
  }
  return source;
}

torch::Tensor TensorSource::read_piece(const Piece& piece) {
  File& file = files_[piece.file];
  if (!file.checked) {
    if (file.hash && hash_file(file.index.path, file.hash->first) != file.hash->second)
      throw CheckpointError(file.index.path + " is corrupt: its hash does not match its .json");
    file.checked = true;
  }
  try {
    return read_safetensors_tensor(file.index, piece.stored_name);
  } catch (const SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
}

void TensorSource::read_into(const std::string& name, torch::Tensor dest, const std::optional<ShardSpec>& spec) {
  auto it = pieces_.find(name);
  if (it == pieces_.end()) throw CheckpointError(where_ + " has no tensor " + name);
  const std::vector<int64_t> full = spec ? spec->full_shape : dest.sizes().vec();
  const Box want = box_of(dest.sizes().vec(), spec, full);
  int64_t covered = 0;
  torch::NoGradGuard no_grad;
  dest.zero_();  // padding rows stay zero
  for (const Piece& piece : it->second) {
    const SafetensorsIndex::Entry& stored = files_[piece.file].index.entries.at(piece.stored_name);
    const std::vector<int64_t> stored_full = piece.spec ? piece.spec->full_shape : stored.shape;
    if (stored_full != full)
      throw CheckpointError(where_ + ": " + name + " has shape " + c10::str(stored_full) + ", the model expects " +
                            c10::str(full));
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
    if (!piece.spec || !piece.spec->sharded()) break;  // a whole copy: the others are the same
  }
  if (covered != volume(want))
    throw CheckpointError(where_ + " lacks part of " + name + " (is a shard file missing?)");
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
