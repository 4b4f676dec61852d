#include "minipretrain/checkpoint/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <xxhash.h>

#include "minipretrain/config/json_input.h"

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

// A file's hash, fed in pieces as the file streams by.
class StreamHash {
 public:
  explicit StreamHash(FileHash kind) : kind_(kind) {
    if (kind_ == FileHash::kXxh3) {
      xxh3_ = XXH3_createState();
      if (!xxh3_ || XXH3_64bits_reset(xxh3_) != XXH_OK) throw std::runtime_error("XXH3: cannot start a hash");
    }
  }
  ~StreamHash() { XXH3_freeState(xxh3_); }
  StreamHash(const StreamHash&) = delete;
  StreamHash& operator=(const StreamHash&) = delete;

  void update(const char* data, size_t n) {
    if (kind_ == FileHash::kXxh3) {
      XXH3_64bits_update(xxh3_, data, n);
      return;
    }
    for (size_t i = 0; i < n; ++i) {
      fnv1a_ ^= static_cast<unsigned char>(data[i]);
      fnv1a_ *= 1099511628211ULL;
    }
  }
  uint64_t value() const { return kind_ == FileHash::kXxh3 ? XXH3_64bits_digest(xxh3_) : fnv1a_; }

 private:
  FileHash kind_;
  XXH3_state_t* xxh3_ = nullptr;
  uint64_t fnv1a_ = 1469598103934665603ULL;
};

}  // namespace

const char* hash_key(FileHash kind) { return kind == FileHash::kXxh3 ? "xxh3" : "fnv1a"; }

std::pair<FileHash, uint64_t> recorded_hash(const nlohmann::json& shard_index) {
  const FileHash kind = shard_index.contains(hash_key(FileHash::kFnv1a)) ? FileHash::kFnv1a : FileHash::kXxh3;
  return {kind, shard_index.value(hash_key(kind), uint64_t{0})};
}

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
  StreamHash hash(FileHash::kXxh3);
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
  return {8 + length + offset, hash.value()};
}

namespace {

// The header's entries, checked against each other and the file size: in
// file order, contiguous, each as long as its shape says.
SafetensorsIndex parse_index(const std::string& path, const std::string& text, uint64_t file_bytes) {
  SafetensorsIndex index;
  index.path = path;
  index.data_start = 8 + text.size();
  nlohmann::json header;
  try {
    header = parse_json(text, path + " header");
    if (!header.is_object()) throw SafetensorsError(path + " has a corrupt header: not a JSON object");
    for (const auto& item : header.items()) {
      const std::string& name = item.key();
      const nlohmann::json& info = item.value();
      if (name == "__metadata__") {
        index.metadata = info.get<std::map<std::string, std::string>>();
        continue;
      }
      const std::string dtype = info.at("dtype").get<std::string>();
      auto it = std::find_if(dtypes().begin(), dtypes().end(), [&](const auto& d) { return d.first == dtype; });
      if (it == dtypes().end()) throw SafetensorsError(path + ": unsupported dtype " + dtype + " of " + name);
      // Whole numbers only: the library would truncate 2.5 to 2 and read -1 as 2^64-1.
      const auto whole = [&](const nlohmann::json& list, size_t count, const char* what) {
        if (!list.is_array() || (count && list.size() != count) || list.size() > 8 ||
            !std::all_of(list.begin(), list.end(), [](const nlohmann::json& v) { return v.is_number_unsigned(); }))
          throw SafetensorsError(path + ": " + what + " of " + name + " is not " +
                                 (count ? "[begin, end]" : "a list of sizes") + ": " + json_excerpt(list));
        return list.get<std::vector<uint64_t>>();
      };
      const std::vector<uint64_t> offsets = whole(info.at("data_offsets"), 2, "data_offsets");
      const std::vector<uint64_t> sizes = whole(info.at("shape"), 0, "shape");
      index.entries[name] = {it->second, std::vector<int64_t>(sizes.begin(), sizes.end()), offsets[0], offsets[1]};
    }
  } catch (const nlohmann::json::exception& e) {
    throw SafetensorsError(path + " has a corrupt header: " + e.what());
  } catch (const JsonInputError& e) {
    throw SafetensorsError(e.what());
  }
  std::vector<std::pair<uint64_t, const std::string*>> order;
  for (const auto& [name, e] : index.entries) order.emplace_back(e.begin, &name);
  std::sort(order.begin(), order.end());
  uint64_t position = 0;
  for (const auto& [begin, name] : order) {
    const SafetensorsIndex::Entry& e = index.entries.at(*name);
    // Sizes from the header multiply without overflow, or are refused.
    uint64_t size = c10::elementSize(e.dtype);
    for (int64_t d : e.shape)
      if (d < 0 || __builtin_mul_overflow(size, static_cast<uint64_t>(d), &size))
        throw SafetensorsError(path + ": shape of " + *name + " " + c10::str(e.shape) + " is impossible");
    if (begin != position || e.end - e.begin != size || index.data_start + e.end > file_bytes)
      throw SafetensorsError(path + ": offsets of " + *name + " do not match its shape or run past the end");
    position = e.end;
  }
  return index;
}

uint64_t read_header_length(std::istream& in, const std::string& path, uint64_t file_bytes, StreamHash* hash) {
  char bytes[8];
  in.read(bytes, 8);
  if (in.gcount() != 8) throw SafetensorsError(path + " is truncated");
  if (hash) hash->update(bytes, 8);
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) length |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (length > file_bytes - 8) throw SafetensorsError(path + " has a header length past the end of the file");
  return length;
}

uint64_t size_of(const std::string& path) {
  std::error_code ec;
  const uint64_t bytes = std::filesystem::file_size(path, ec);
  if (ec) throw SafetensorsError("cannot read " + path + ": " + ec.message());
  return bytes;
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path, FileHash kind) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw SafetensorsError("cannot read " + path);
  SafetensorsFile file;
  file.bytes = size_of(path);
  StreamHash hash(kind);
  auto get = [&](char* data, size_t n) {
    in.read(data, static_cast<std::streamsize>(n));
    if (static_cast<size_t>(in.gcount()) != n) throw SafetensorsError(path + " is truncated");
    hash.update(data, n);
  };
  std::string text(read_header_length(in, path, file.bytes, &hash), '\0');
  get(text.data(), text.size());
  const SafetensorsIndex index = parse_index(path, text, file.bytes);
  file.metadata = index.metadata;
  // Tensors in file order, so the stream only moves forward.
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [name, e] : index.entries) order.emplace_back(e.begin, name);
  std::sort(order.begin(), order.end());
  for (const auto& [begin, name] : order) {
    const SafetensorsIndex::Entry& e = index.entries.at(name);
    torch::Tensor t = torch::empty(e.shape, e.dtype);
    get(static_cast<char*>(t.data_ptr()), e.end - e.begin);
    file.tensors[name] = t;
  }
  std::vector<char> rest(4096);
  while (in) {  // trailing bytes count in the hash too
    in.read(rest.data(), static_cast<std::streamsize>(rest.size()));
    hash.update(rest.data(), static_cast<size_t>(in.gcount()));
  }
  file.hash = hash.value();
  return file;
}

SafetensorsIndex read_safetensors_index(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw SafetensorsError("cannot read " + path);
  const uint64_t bytes = size_of(path);
  std::string text(read_header_length(in, path, bytes, nullptr), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (static_cast<size_t>(in.gcount()) != text.size()) throw SafetensorsError(path + " is truncated");
  return parse_index(path, text, bytes);
}

torch::Tensor read_safetensors_tensor(const SafetensorsIndex& index, const std::string& name) {
  auto it = index.entries.find(name);
  if (it == index.entries.end()) throw SafetensorsError(index.path + " has no tensor " + name);
  std::ifstream in(index.path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(index.data_start + it->second.begin));
  torch::Tensor t = torch::empty(it->second.shape, it->second.dtype);
  const uint64_t n = it->second.end - it->second.begin;
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(n));
  if (!in || static_cast<uint64_t>(in.gcount()) != n) throw SafetensorsError(index.path + " is truncated");
  return t;
}

uint64_t hash_file(const std::string& path, FileHash kind) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw SafetensorsError("cannot read " + path);
  StreamHash hash(kind);
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hash.update(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  return hash.value();
}

}  // namespace minipretrain
