// The ecosystem's own readers as oracles: files made by the real binary are
// read by transformers, safetensors, TensorBoard and SentencePiece (the
// pinned PyPI packages in the project's .venv, through tests/oracles/*.py),
// and models that transformers writes come in through `import`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/checkpoint/safetensors.h"
#include "minipretrain/commands/commands.h"
#include "minipretrain/model/generate.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

// Runs tests/oracles/SCRIPT ARGS with the venv's python; fails with what the
// oracle printed unless it agrees. A missing venv fails: these checks are the
// only ones made by the libraries themselves.
void expect_oracle_agrees(const std::string& script, std::vector<std::string> args) {
  const std::string py = venv_program("python");
  ASSERT_TRUE(fs::exists(py)) << py << " is missing: run scripts/install_deps.sh, which makes .venv from "
                              << "scripts/requirements.txt (or set MINIPRETRAIN_VENV)";
  args.insert(args.begin(), {py, std::string(MINIPRETRAIN_SOURCE_DIR) + "/tests/oracles/" + script});
  // Offline and quiet: no hub look-ups, no progress bars in the output, no
  // __pycache__ left in the source tree.
  const ProcessResult r = run(args, {{"HF_HUB_OFFLINE", "1"}, {"HF_HUB_DISABLE_PROGRESS_BARS", "1"},
                                     {"TRANSFORMERS_VERBOSITY", "error"}, {"OMP_NUM_THREADS", "1"},
                                     {"PYTHONDONTWRITEBYTECODE", "1"}}, 180);
  EXPECT_EQ(r.exit_code, 0) << script << " disagrees:\n" << r.output;
  if (r.exit_code == 0) std::cout << r.output;  // what it compared
}

// The tiny model trained for `steps` on `world` processes; returns its output directory.
std::string train(const std::string& name, int world, int steps, const std::vector<std::string>& extra = {}) {
  const std::string out = fresh_dir(name);
  std::vector<std::string> args = tiny_args(out, steps);
  args.insert(args.end(), extra.begin(), extra.end());  // later flags win
  expect_all_succeeded(run_ranks(world, args));
  return out;
}

// Our model's answers from a checkpoint, for hf_llama.py check: the logits
// of a fixed sequence and the greedy continuation of a prompt up to the
// model's context (so neither side has to slide a window).
void write_model_outputs(const std::string& checkpoint, const std::string& path) {
  ModelConfig config;
  Stage model = load_for_inference(checkpoint, &config);
  const std::vector<int64_t> tokens = {5, 17, 95, 0, 42, 42, 3, 77, 60, 1, 2, 88}, prompt = {5, 12, 19, 26, 33, 40};
  nlohmann::json rows = nlohmann::json::array();
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = model->forward(torch::tensor(tokens, torch::kLong).view({1, -1}))[0].to(torch::kDouble);
    for (int64_t i = 0; i < logits.size(0); ++i) {
      const torch::Tensor row = logits[i].contiguous();
      rows.push_back(std::vector<double>(row.data_ptr<double>(), row.data_ptr<double>() + row.numel()));
    }
  }
  SamplingOptions greedy;
  greedy.max_new_tokens = config.max_seq_length - static_cast<int64_t>(prompt.size());
  greedy.temperature = 0;
  std::ofstream(path) << nlohmann::json{{"tokens", tokens}, {"logits", rows}, {"prompt", prompt},
                                        {"greedy", generate(model, config, prompt, greedy)}}.dump();
}

// Tensors as safetensors_files.py reads "ours": dtype, shape and every value
// (doubles print exactly, so float32 and bfloat16 values survive the trip).
void write_tensors(const std::map<std::string, torch::Tensor>& tensors, const std::string& path) {
  const std::map<torch::ScalarType, std::string> names = {
      {torch::kFloat, "F32"}, {torch::kBFloat16, "BF16"}, {torch::kHalf, "F16"}, {torch::kLong, "I64"}};
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(names.count(t.scalar_type())) << name << " has dtype " << t.scalar_type();
    const torch::Tensor flat = t.to(torch::kDouble).flatten().contiguous();
    out[name] = {{"dtype", names.at(t.scalar_type())},
                 {"shape", t.sizes().vec()},
                 {"values", std::vector<double>(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel())}};
  }
  std::ofstream(path) << out.dump();
}

// The flags that give our tiny model the architecture of hf_llama.py's TINY.
std::vector<std::string> hf_tiny_args(const std::string& out, int steps) {
  std::vector<std::string> args = tiny_args(out, steps);
  args.insert(args.end(), {"--vocab-size", "97", "--intermediate-size", "96", "--num-layers", "2",
                           "--num-key-value-heads", "2", "--rms-norm-eps", "1e-5"});
  return args;
}

// Our fp32 forward against transformers' fp32 forward from the same weights:
// other kernels, other summation orders. Measured at most 1.1e-6 on logits
// of scale 0.66 to 2.3 (torch 2.15.0, transformers 5.25.0, 2026-12-07); a
// wrong RoPE base is off by 0.1.
constexpr const char* kLogitsAtol = "5e-6";

}  // namespace

// Our export loads in LlamaForCausalLM.from_pretrained with every tensor
// used, and gives our logits and our greedy continuation; the RoPE base is
// not the default, so config.json's rope_theta must reach transformers.
TEST(TransformersOracle, LoadsOurExportWithOurLogitsAndGreedyTokens) {
  const std::string out = train("oracle_export", 1, 3, {"--rope-theta", "500000"});
  const std::string hf = fresh_dir("oracle_export_hf") + "/model";
  ProcessResult r = run_binary({"export", "--checkpoint", out, "--output", hf});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  write_model_outputs(find_latest_checkpoint(out), out + "/ours.json");
  expect_oracle_agrees("hf_llama.py", {"check", kLogitsAtol, hf, out + "/ours.json"});
}

// A model written by save_pretrained (fp32 and bf16, one file and sharded
// with an index) imports with its logits and greedy continuation, and
// --init-from its directory trains.
TEST(TransformersOracle, ItsSavedModelsImportWithItsLogitsAndTrain) {
  const std::string saved = fresh_dir("oracle_hf_saved"), work = fresh_dir("oracle_hf_import");
  expect_oracle_agrees("hf_llama.py", {"save", saved});
  std::vector<std::string> pairs = {"check", kLogitsAtol};
  for (const std::string variant : {"fp32", "fp32-sharded", "bf16", "bf16-sharded"}) {
    const std::string checkpoint = work + "/" + variant;
    ProcessResult r = run_binary({"import", "--hf", saved + "/" + variant, "--output", checkpoint});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    write_model_outputs(checkpoint, checkpoint + ".json");
    pairs.insert(pairs.end(), {saved + "/" + variant, checkpoint + ".json"});
  }
  EXPECT_TRUE(fs::exists(saved + "/bf16-sharded/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(saved + "/bf16-sharded/model.safetensors"));  // only shards
  expect_oracle_agrees("hf_llama.py", pairs);

  const std::string run_dir = fresh_dir("oracle_hf_init");
  std::vector<std::string> args = hf_tiny_args(run_dir, 6);
  args.insert(args.end(), {"--init-from", saved + "/bf16-sharded"});
  expect_all_succeeded(run_ranks(1, args));
  const auto metrics = read_metrics(run_dir);
  ASSERT_EQ(metrics.size(), 6u);
  for (const auto& [step, record] : metrics) EXPECT_TRUE(std::isfinite(record["loss"].get<double>())) << step;
  EXPECT_LT(metrics.at(6)["loss"].get<double>(), metrics.at(1)["loss"].get<double>() - 0.05);
}

// transformers 5 writes the RoPE base under "rope_parameters", not
// "rope_theta"; a base other than 10000 must reach our model.
TEST(TransformersOracle, ARopeBaseUnderRopeParametersIsKept) {
  const std::string saved = fresh_dir("oracle_hf_rope"), checkpoint = fresh_dir("oracle_hf_rope_import") + "/ckpt";
  expect_oracle_agrees("hf_llama.py", {"save", saved, "500000"});
  ProcessResult r = run_binary({"import", "--hf", saved + "/fp32", "--output", checkpoint});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  write_model_outputs(checkpoint, checkpoint + ".json");
  expect_oracle_agrees("hf_llama.py", {"check", kLogitsAtol, saved + "/fp32", checkpoint + ".json"});
}

// safetensors reads every tensor of an export and of a checkpoint shard
// (TP 2, vocabulary 95 padded to 96): the names and shapes that config.json
// or the shard's index say, and the values our own reader has.
TEST(SafetensorsOracle, ReadsEveryTensorOfAnExportAndACheckpointShard) {
  const std::string out = train("oracle_safetensors", 2, 2, {"--vocab-size", "95", "--tensor-parallel-size", "2"});
  const std::string checkpoint = find_latest_checkpoint(out), hf = out + "/hf";
  ASSERT_EQ(run_binary({"export", "--checkpoint", checkpoint, "--output", hf}).exit_code, 0);
  write_tensors(load_full_tensors(checkpoint), out + "/full.json");
  expect_oracle_agrees("safetensors_files.py", {hf + "/model.safetensors", out + "/full.json"});

  const std::string shard = checkpoint + "/shard-tp1-pp0.safetensors";
  write_tensors(read_safetensors(shard).tensors, out + "/shard.json");
  expect_oracle_agrees("safetensors_files.py", {shard, out + "/shard.json"});
}

// TensorBoard's EventAccumulator shows every scalar of metrics.jsonl at its
// step, before and after a resume, and the resumed run's SessionLog START
// keeps what the checkpoint holds.
TEST(TensorBoardOracle, ShowsMetricsJsonlAcrossAResume) {
  const std::string out = fresh_dir("oracle_tensorboard"), tb = out + "/tb";
  auto args = [&](int steps) {
    std::vector<std::string> a = tiny_args(out, steps);
    a.insert(a.end(), {"--tensorboard-dir", tb, "--log-interval", "2", "--save-interval", "4", "--split", "90,10",
                       "--eval-interval", "3", "--eval-iters", "1"});
    return a;
  };
  expect_all_succeeded(run_ranks(1, args(6)));
  expect_oracle_agrees("tensorboard_events.py", {tb, out});

  sleep(1);  // an event file's name holds the second it was made in
  std::vector<std::string> resumed = args(8);
  resumed.insert(resumed.end(), {"--resume", out + "/checkpoint-00000004"});
  expect_all_succeeded(run_ranks(1, resumed));
  expect_oracle_agrees("tensorboard_events.py", {tb, out, "4"});
}

// A tokenizer trained by `minipretrain tokenizer` loads in SentencePiece's
// own processor, which encodes the corpus to the ids `preprocess` wrote.
TEST(SentencePieceOracle, EncodesTheCorpusToTheIdsPreprocessWrote) {
  const std::string dir = fresh_dir("oracle_sentencepiece");
  {
    // Words, accents, digits, punctuation and odd spacing; byte fallback for
    // what the vocabulary lacks (the emoji, the CJK).
    const std::vector<std::string> words = {"the", "king", "queen", "speaks", "of", "war", "and", "peace",
                                            "to", "his", "people", "café", "naïve", "señor", "1066", "3.14",
                                            "well,", "nay!", "what?", "  double", "tab\there", "日本", "🙂"};
    std::mt19937 rng(11);
    std::ofstream corpus(dir + "/corpus.txt");
    for (int d = 0; d < 400; ++d) {
      for (int w = 0; w < 3 + static_cast<int>(rng() % 12); ++w) corpus << (w ? " " : "") << words[rng() % words.size()];
      corpus << (d % 50 == 7 ? "\n\n" : "\n");  // some blank lines, which are no documents
    }
  }
  const std::string model = dir + "/tok.model";
  ProcessResult r = run_binary({"tokenizer", "--input", dir + "/corpus.txt", "--vocab-size", "320", "--output", model});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_binary({"preprocess", "--tokenizer", model, "--input", dir + "/corpus.txt", "--output-prefix", dir + "/data",
           "--workers", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_oracle_agrees("sentencepiece_ids.py", {model, dir + "/data", dir + "/corpus.txt"});
}
