// A read-only memory mapping of a whole file, released on destruction.
#pragma once

#include <cstddef>
#include <string>

namespace minipretrain {

class MappedFile {
 public:
  // Throws ConfigError naming the path when it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return static_cast<const char*>(data_); }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace minipretrain
