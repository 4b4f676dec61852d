#include "minipretrain/data/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "minipretrain/config/config.h"

namespace minipretrain {

MappedFile::MappedFile(const std::string& path) {
  // Non-blocking: a FIFO under the name is refused, not waited on.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ConfigError("cannot open " + path);
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    throw ConfigError(path + " is not a regular file");
  }
  size_ = static_cast<size_t>(info.st_size);
  if (size_ > 0) data_ = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (data_ == MAP_FAILED) throw ConfigError("cannot map " + path);
}

MappedFile::~MappedFile() {
  if (data_ && data_ != MAP_FAILED) ::munmap(data_, size_);
}

}  // namespace minipretrain
