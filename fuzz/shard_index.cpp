// libFuzzer harness: a checkpoint shard's index (.json): its byte count,
// hash and the shard spec of every tensor, as TensorSource reads them.
#include <string_view>

#include "minipretrain/config/json_input.h"
#include "minipretrain/parallel/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minipretrain;
  try {
    const nlohmann::json index = parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "shard.json");
    json_integer(index, "bytes", 0, INT64_MAX, "shard.json");
    for (const auto& [name, spec] : index.at("specs").items()) shard_spec_from_json(spec);
  } catch (const JsonInputError&) {
  } catch (const nlohmann::json::exception&) {  // a missing or mistyped key: TensorSource reports these by file
  }
  return 0;
}
