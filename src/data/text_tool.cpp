#include "minipretrain/data/text_tool.h"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "minipretrain/config/config.h"

namespace minipretrain {
namespace fs = std::filesystem;

std::string text_tool_path() {
  std::error_code ec;
  const fs::path beside = fs::read_symlink("/proc/self/exe", ec).parent_path() / "minipretrain-text";
  if (!ec && fs::exists(beside)) return beside.string();
  return MINIPRETRAIN_TEXT_TOOL;
}

std::string run_text_tool(const std::vector<std::string>& args, const std::string& input) {
  // stdin and stderr go through files, stdout through a pipe: no deadlock
  // whatever the sizes.
  const fs::path dir = fs::temp_directory_path() / ("minipretrain-text-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path in_path = dir / "stdin", err_path = dir / "stderr";
  std::ofstream(in_path, std::ios::binary) << input;
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("cannot create a pipe");
  const std::string tool = text_tool_path();
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::FILE* in = std::fopen(in_path.c_str(), "rb");
    std::FILE* err = std::fopen(err_path.c_str(), "wb");
    ::dup2(::fileno(in), 0);
    ::dup2(out[1], 1);
    ::dup2(::fileno(err), 2);
    ::close(out[0]);
    std::vector<char*> argv{const_cast<char*>(tool.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(tool.c_str(), argv.data());
    std::fprintf(stderr, "error: cannot run %s\n", tool.c_str());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string output;
  char buffer[65536];
  for (ssize_t n; (n = ::read(out[0], buffer, sizeof(buffer))) > 0;) output.append(buffer, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::stringstream err;
  err << std::ifstream(err_path).rdbuf();
  fs::remove_all(dir);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string message = err.str();
    const size_t start = message.rfind("error: ");
    message = start == std::string::npos ? message : message.substr(start + 7);
    throw ConfigError(message.substr(0, message.find('\n')));
  }
  return output;
}

ExternalTokenizer::ExternalTokenizer(std::string model_path) : model_(std::move(model_path)) {
  const auto info = nlohmann::json::parse(run_text_tool({"info", "--tokenizer", model_}));
  vocab_size_ = info.at("vocab_size").get<int64_t>();
  bos_id_ = info.at("bos_id").get<int64_t>();
  eos_id_ = info.at("eos_id").get<int64_t>();
}

std::vector<int64_t> ExternalTokenizer::encode(const std::string& text) const {
  std::istringstream in(run_text_tool({"encode", "--tokenizer", model_}, text));
  return std::vector<int64_t>(std::istream_iterator<int64_t>(in), {});
}

std::string ExternalTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  for (int64_t id : ids) text += std::to_string(id) + " ";
  return run_text_tool({"decode", "--tokenizer", model_}, text);
}

}  // namespace minipretrain
