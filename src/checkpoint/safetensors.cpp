#include "minipretrain/checkpoint/safetensors.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace minipretrain {
namespace {

const std::vector<std::pair<std::string, torch::ScalarType>>& dtypes() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> table = {
      {"F32", torch::kFloat}, {"F64", torch::kDouble}, {"F16", torch::kHalf},  {"BF16", torch::kBFloat16},
      {"I64", torch::kLong},  {"I32", torch::kInt},    {"I16", torch::kShort}, {"U8", torch::kByte}};
  return table;
}

std::string dtype_name(torch::ScalarType type) {
  for (const auto& [name, t] : dtypes())
    if (t == type) return name;
  throw std::runtime_error(std::string("safetensors: unsupported dtype ") + c10::toString(type));
}

// FNV-1a, fed in pieces as the file streams by.
struct Fnv1a {
  uint64_t value = 1469598103934665603ULL;
  void update(const char* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      value ^= static_cast<unsigned char>(data[i]);
      value *= 1099511628211ULL;
    }
  }
};

}  // namespace

std::pair<uint64_t, uint64_t> write_safetensors(const std::string& path,
                                                const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                                const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t size = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  const uint64_t length = text.size();

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path);
  Fnv1a hash;
  auto put = [&](const char* data, size_t n) {
    out.write(data, static_cast<std::streamsize>(n));
    hash.update(data, n);
  };
  char length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  put(length_bytes, 8);
  put(text.data(), text.size());
  for (const auto& entry : tensors) {
    torch::Tensor t = entry.second.detach().cpu().contiguous();
    put(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size());
  }
  out.flush();
  if (!out) throw std::runtime_error("cannot write " + path + " (disk full?)");
  return {8 + length + offset, hash.value};
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw SafetensorsError("cannot read " + path);
  SafetensorsFile file;
  std::error_code ec;
  file.bytes = std::filesystem::file_size(path, ec);
  Fnv1a hash;
  auto get = [&](char* data, size_t n) {
    in.read(data, static_cast<std::streamsize>(n));
    if (static_cast<size_t>(in.gcount()) != n) throw SafetensorsError(path + " is truncated");
    hash.update(data, n);
  };
  char length_bytes[8];
  get(length_bytes, 8);
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) length |= static_cast<uint64_t>(static_cast<unsigned char>(length_bytes[i])) << (8 * i);
  if (length > file.bytes - 8) throw SafetensorsError(path + " has a header length past the end of the file");
  std::string text(length, '\0');
  get(text.data(), length);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw SafetensorsError(path + " has a corrupt header: " + e.what());
  }

  // Tensors in file order, so the stream only moves forward.
  std::vector<std::tuple<uint64_t, uint64_t, std::string, torch::ScalarType, std::vector<int64_t>>> entries;
  try {
    for (const auto& [name, info] : header.items()) {
      if (name == "__metadata__") {
        file.metadata = info.get<std::map<std::string, std::string>>();
        continue;
      }
      const std::string dtype = info.at("dtype").get<std::string>();
      auto it = std::find_if(dtypes().begin(), dtypes().end(), [&](const auto& d) { return d.first == dtype; });
      if (it == dtypes().end()) throw SafetensorsError(path + ": unsupported dtype " + dtype + " of " + name);
      const auto offsets = info.at("data_offsets").get<std::vector<uint64_t>>();
      entries.emplace_back(offsets.at(0), offsets.at(1), name, it->second, info.at("shape").get<std::vector<int64_t>>());
    }
  } catch (const nlohmann::json::exception& e) {
    throw SafetensorsError(path + " has a corrupt header: " + e.what());
  }
  std::sort(entries.begin(), entries.end());
  uint64_t position = 0;
  const uint64_t data_bytes = file.bytes - 8 - length;
  for (const auto& [begin, end, name, type, shape] : entries) {
    torch::Tensor t = torch::empty(shape, type);
    const uint64_t size = static_cast<uint64_t>(t.numel()) * t.element_size();
    if (begin != position || end - begin != size || end > data_bytes)
      throw SafetensorsError(path + ": offsets of " + name + " do not match its shape or run past the end");
    get(static_cast<char*>(t.data_ptr()), size);
    position = end;
    file.tensors[name] = t;
  }
  std::vector<char> rest(4096);
  while (in) {  // trailing bytes count in the hash too
    in.read(rest.data(), static_cast<std::streamsize>(rest.size()));
    hash.update(rest.data(), static_cast<size_t>(in.gcount()));
  }
  file.fnv1a = hash.value;
  return file;
}

}  // namespace minipretrain
