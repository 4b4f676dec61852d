// libFuzzer harness: a Hugging Face model.safetensors.index.json as `import`
// and --init-from read it, beside real weight files (written once, with a
// FIFO, a file that is not safetensors and a subdirectory beside them), then
// every tensor it maps read whole. Names must stay beside the index and each
// tensor must be in the file the map says. Errors of the input are
// CheckpointError; anything else escaping, a crash, a hang or a sanitizer
// report is a finding.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/tensor_source.h"

namespace {

// Removed at exit (a crash leaves it, beside the reproducer); a char array,
// so that it outlives every destructor.
char directory[] = "/tmp/fuzz-hf-index-XXXXXX";
void remove_directory() { std::filesystem::remove_all(directory); }

std::string model_dir() {
  static const std::string dir = [] {
    const std::string d = ::mkdtemp(directory);
    std::atexit(remove_directory);
    using minipretrain::write_safetensors;
    write_safetensors(d + "/model-00001-of-00002.safetensors",
                      {{"model.embed_tokens.weight", torch::randn({8, 4})},
                       {"model.layers.0.self_attn.q_proj.weight", torch::randn({4, 4})}});
    write_safetensors(d + "/model-00002-of-00002.safetensors",
                      {{"model.norm.weight", torch::ones({4})},
                       {"lm_head.weight", torch::randn({8, 4}).to(torch::kBFloat16)},
                       {"model.layers.0.mlp.step", torch::zeros({1}, torch::kLong)}});
    std::ofstream(d + "/config.json") << R"({"hidden_size": 4})";
    ::mkfifo((d + "/fifo.safetensors").c_str(), 0600);
    ::mkdir((d + "/sub").c_str(), 0700);
    write_safetensors(d + "/sub/model.safetensors", {{"model.norm.weight", torch::ones({4})}});
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minipretrain;
  const std::string dir = model_dir();
  std::ofstream(dir + "/model.safetensors.index.json", std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    TensorSource source = TensorSource::from_hugging_face(dir, "model/");
    for (const std::string& name : source.names()) source.read_full(name);
  } catch (const CheckpointError&) {
  }
  return 0;
}
