// Checkpoints that outlive their layout (issue 11): a run continued on another
// (TP, PP, DP) equals the run continued on its own layout; Hugging Face Llama
// weights come in through `import` and `--init-from`, checked against an
// independent forward pass written here with plain tensor operations.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "minipretrain/checkpoint/checkpoint.h"
#include "minipretrain/commands/commands.h"
#include "minipretrain/model/generate.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

struct RunLayout {
  int tp, pp, dp;
  int world() const { return tp * pp * dp; }
  std::string name() const { return "tp" + std::to_string(tp) + "pp" + std::to_string(pp) + "dp" + std::to_string(dp); }
};

// The tiny model with a vocabulary of 97: padded to 98 over TP 2 and to 100
// over TP 4, so every change of TP size also changes the padding.
std::vector<std::string> args_for(const RunLayout& l, const std::string& out, int steps) {
  std::vector<std::string> args = tiny_args(out, steps);
  args.insert(args.end(), {"--vocab-size", "97", "--tensor-parallel-size", std::to_string(l.tp),
                           "--pipeline-parallel-size", std::to_string(l.pp), "--save-interval", "5"});
  return args;
}

}  // namespace

// Five steps on one layout, then ten more on another, against the same ten
// on the first layout: losses within 1e-5, final weights within 1e-4 (sums in
// another order), as every layout test of the suite.
TEST(AnyLayout, ContinuingOnAnotherLayoutEqualsContinuingOnTheOriginal) {
  constexpr int kSteps = 15;
  const std::vector<std::pair<RunLayout, RunLayout>> changes = {
      {{2, 2, 1}, {1, 1, 1}}, {{1, 1, 1}, {2, 2, 1}}, {{2, 1, 2}, {1, 4, 1}},
      {{4, 1, 1}, {2, 2, 1}}, {{1, 1, 4}, {1, 1, 2}}};
  for (const auto& [from, to] : changes) {
    SCOPED_TRACE(from.name() + " -> " + to.name());
    const std::string original = fresh_dir("any_" + from.name());
    expect_all_succeeded(run_ranks(from.world(), args_for(from, original, kSteps)));
    const std::string moved = fresh_dir("any_" + from.name() + "_to_" + to.name());
    std::vector<std::string> args = args_for(to, moved, kSteps);
    args.insert(args.end(), {"--resume", original + "/checkpoint-00000005"});
    std::vector<ProcessResult> results = run_ranks(to.world(), args);
    expect_all_succeeded(results);
    EXPECT_NE(results[0].output.find("at step 5 (written by TP " + std::to_string(from.tp) + " x PP " +
                                     std::to_string(from.pp) + " x DP " + std::to_string(from.dp) + ", now TP " +
                                     std::to_string(to.tp) + " x PP " + std::to_string(to.pp) + " x DP " +
                                     std::to_string(to.dp) + ")"),
              std::string::npos)
        << results[0].output;
    auto a = read_metrics(original), b = read_metrics(moved);
    ASSERT_EQ(b.begin()->first, 6);
    for (int64_t step = 6; step <= kSteps; ++step) {
      ASSERT_TRUE(b.count(step)) << step;
      const double la = a[step]["loss"].get<double>(), lb = b[step]["loss"].get<double>();
      EXPECT_LE(std::abs(la - lb), 1e-5 * std::abs(la)) << "step " << step << ": " << la << " vs " << lb;
    }
    expect_same_weights(original, moved, 1e-4);
  }
}

// Interleaved chunks save and load the same global names: five steps
// interleaved at PP 2 x V 2, then ten on one process, against fifteen on one
// process; and one process's checkpoint continued interleaved.
TEST(AnyLayout, InterleavedChunksSaveAndLoadLikeAnyLayout) {
  auto args = [](const std::string& out, bool interleaved) {
    std::vector<std::string> a = tiny_args(out, 15);
    a.insert(a.end(), {"--save-interval", "5"});
    if (interleaved)
      a.insert(a.end(), {"--pipeline-parallel-size", "2", "--pipeline-schedule", "interleaved-1f1b",
                         "--virtual-pipeline-stages", "2"});
    return a;
  };
  const std::string one = fresh_dir("any_interleaved_one"), inter = fresh_dir("any_interleaved");
  expect_all_succeeded(run_ranks(1, args(one, false)));
  expect_all_succeeded(run_ranks(2, args(inter, true)));
  for (const bool to_interleaved : {false, true}) {
    SCOPED_TRACE(to_interleaved ? "one process -> interleaved" : "interleaved -> one process");
    const std::string moved = fresh_dir(std::string("any_interleaved_moved_") + (to_interleaved ? "in" : "out"));
    std::vector<std::string> a = args(moved, to_interleaved);
    a.insert(a.end(), {"--resume", (to_interleaved ? one : inter) + "/checkpoint-00000005"});
    expect_all_succeeded(run_ranks(to_interleaved ? 2 : 1, a));
    auto expected = read_metrics(one), got = read_metrics(moved);
    ASSERT_EQ(got.begin()->first, 6);
    for (int64_t step = 6; step <= 15; ++step) {
      const double la = expected[step]["loss"].get<double>(), lb = got.at(step)["loss"].get<double>();
      EXPECT_LE(std::abs(la - lb), 1e-5 * std::abs(la)) << "step " << step << ": " << la << " vs " << lb;
    }
    expect_same_weights(one, moved, 1e-4);
  }
}

// What cannot be resumed says why: another model, another global batch, a
// shard file that is gone, weights without optimizer state.
TEST(AnyLayout, RefusalsNameTheProblem) {
  const std::string out = fresh_dir("any_refusals");
  const RunLayout tp2{2, 1, 1}, one{1, 1, 1};
  expect_all_succeeded(run_ranks(2, args_for(tp2, out, 5)));
  const std::string checkpoint = out + "/checkpoint-00000005";
  struct Case {
    std::vector<std::string> extra;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--num-layers", "2"}, "checkpoint " + checkpoint + " has num_layers=4 but this run has 2"},
      {{"--global-batch-size", "16"},
       "was trained with global_batch_size 8 but this run has 16: steps count global batches, so pass "
       "--global-batch-size 8 to resume it"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = args_for(one, fresh_dir("any_refusal_run"), 8);
    args.insert(args.end(), {"--resume", checkpoint});
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    ProcessResult r = run_binary(args);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
  }
  fs::remove(checkpoint + "/shard-tp1-pp0.safetensors");
  fs::remove(checkpoint + "/shard-tp1-pp0.json");
  std::vector<std::string> args = args_for(one, fresh_dir("any_refusal_run"), 8);
  args.insert(args.end(), {"--resume", checkpoint});
  ProcessResult r = run_binary(args);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(" lacks part of model/"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("(is a shard file missing?)"), std::string::npos) << r.output;
}

namespace {

constexpr int64_t kVocab = 97, kHidden = 64, kInter = 96, kLayers = 2, kHeads = 8, kKvHeads = 2;

// A Llama model's weights by HF name, drawn here.
std::map<std::string, torch::Tensor> hf_weights() {
  torch::manual_seed(7);
  const int64_t d = kHidden / kHeads;
  auto w = [](std::vector<int64_t> shape) { return torch::randn(shape) * 0.08; };
  std::map<std::string, torch::Tensor> t;
  t["model.embed_tokens.weight"] = w({kVocab, kHidden});
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t[p + "input_layernorm.weight"] = 1 + w({kHidden});
    t[p + "post_attention_layernorm.weight"] = 1 + w({kHidden});
    t[p + "self_attn.q_proj.weight"] = w({kHeads * d, kHidden});
    t[p + "self_attn.k_proj.weight"] = w({kKvHeads * d, kHidden});
    t[p + "self_attn.v_proj.weight"] = w({kKvHeads * d, kHidden});
    t[p + "self_attn.o_proj.weight"] = w({kHidden, kHeads * d});
    t[p + "mlp.gate_proj.weight"] = w({kInter, kHidden});
    t[p + "mlp.up_proj.weight"] = w({kInter, kHidden});
    t[p + "mlp.down_proj.weight"] = w({kHidden, kInter});
  }
  t["model.norm.weight"] = 1 + w({kHidden});
  t["lm_head.weight"] = w({kVocab, kHidden});
  return t;
}

// The safetensors layout written byte by byte (not with our writer), tensors
// in reverse name order, some as BF16 the way many HF checkpoints ship. Kept
// beside test_oracles.cpp's save_pretrained files: transformers writes one
// dtype per model and tensors in its own order, so only this file mixes them.
void write_hf_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors) {
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  std::string data;
  for (auto it = tensors.rbegin(); it != tensors.rend(); ++it) {
    const bool bf16 = it->first.find("mlp") != std::string::npos;
    const torch::Tensor t = it->second.to(bf16 ? torch::kBFloat16 : torch::kFloat).contiguous();
    const size_t begin = data.size();
    data.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
    header[it->first] = {{"dtype", bf16 ? "BF16" : "F32"}, {"shape", t.sizes().vec()}, {"data_offsets", {begin, data.size()}}};
  }
  const std::string text = header.dump();
  std::ofstream out(path, std::ios::binary);
  const uint64_t length = text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((length >> (8 * i)) & 0xFF));
  out << text << data;
}

void write_hf_config(const std::string& dir, const nlohmann::json& extra) {
  nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", kVocab},
                      {"hidden_size", kHidden}, {"intermediate_size", kInter}, {"num_hidden_layers", kLayers},
                      {"num_attention_heads", kHeads}, {"num_key_value_heads", kKvHeads},
                      {"max_position_embeddings", 16}, {"rope_theta", 10000.0}, {"rms_norm_eps", 1e-5},
                      {"hidden_act", "silu"}, {"tie_word_embeddings", false}};
  if (extra.is_object()) c.update(extra);
  std::ofstream(dir + "/config.json") << c.dump(2);
}

// HF's LlamaForCausalLM forward in double, from its definition: RMSNorm,
// RoPE with rotate_half, grouped-query attention with each kv head shared by
// consecutive query heads, SwiGLU. (transformers itself is the oracle of
// save_pretrained files in test_oracles.cpp; this one serves the mixed file.)
torch::Tensor reference_logits(std::map<std::string, torch::Tensor> w, const torch::Tensor& tokens) {
  for (auto& [name, t] : w)
    t = (name.find("mlp") != std::string::npos ? t.to(torch::kBFloat16) : t).to(torch::kDouble);
  const int64_t T = tokens.size(0), d = kHidden / kHeads;
  auto rms = [](const torch::Tensor& x, const torch::Tensor& g) {
    return x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-5) * g;
  };
  const torch::Tensor inv = 1.0 / torch::pow(10000.0, torch::arange(0, d, 2, torch::kDouble) / d);
  const torch::Tensor freqs = torch::outer(torch::arange(T, torch::kDouble), inv);
  const torch::Tensor cos = torch::cat({freqs, freqs}, -1).cos().unsqueeze(1), sin = torch::cat({freqs, freqs}, -1).sin().unsqueeze(1);
  auto rope = [&](const torch::Tensor& x) {
    const torch::Tensor rotated = torch::cat({-x.narrow(-1, d / 2, d / 2), x.narrow(-1, 0, d / 2)}, -1);
    return x * cos + rotated * sin;
  };
  const torch::Tensor mask = torch::ones({T, T}, torch::kBool).triu(1);
  torch::Tensor x = w.at("model.embed_tokens.weight").index_select(0, tokens);
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    torch::Tensor h = rms(x, w.at(p + "input_layernorm.weight"));
    torch::Tensor q = rope(h.matmul(w.at(p + "self_attn.q_proj.weight").t()).view({T, kHeads, d}));
    torch::Tensor k = rope(h.matmul(w.at(p + "self_attn.k_proj.weight").t()).view({T, kKvHeads, d}));
    torch::Tensor v = h.matmul(w.at(p + "self_attn.v_proj.weight").t()).view({T, kKvHeads, d});
    k = k.repeat_interleave(kHeads / kKvHeads, 1);
    v = v.repeat_interleave(kHeads / kKvHeads, 1);
    torch::Tensor scores = torch::einsum("thd,shd->hts", {q, k}) / std::sqrt(static_cast<double>(d));
    scores = scores.masked_fill(mask, -std::numeric_limits<double>::infinity()).softmax(-1);
    torch::Tensor attended = torch::einsum("hts,shd->thd", {scores, v}).reshape({T, kHidden});
    x = x + attended.matmul(w.at(p + "self_attn.o_proj.weight").t());
    h = rms(x, w.at(p + "post_attention_layernorm.weight"));
    torch::Tensor mlp = torch::silu(h.matmul(w.at(p + "mlp.gate_proj.weight").t())) * h.matmul(w.at(p + "mlp.up_proj.weight").t());
    x = x + mlp.matmul(w.at(p + "mlp.down_proj.weight").t());
  }
  return rms(x, w.at("model.norm.weight")).matmul(w.at("lm_head.weight").t());
}

}  // namespace

// An HF directory laid out here, in one file and sharded over two with an
// index, imports into a checkpoint whose forward pass gives the reference
// logits; export gives the same tensors back, and export -> import -> export
// is byte-identical.
TEST(HfImport, IndependentlyWrittenWeightsGiveTheReferenceLogitsAndRoundTrip) {
  const std::map<std::string, torch::Tensor> weights = hf_weights();
  const std::string single = fresh_dir("hf_single"), sharded = fresh_dir("hf_sharded");
  write_hf_config(single, {});
  write_hf_safetensors(single + "/model.safetensors", weights);
  write_hf_config(sharded, {});
  std::map<std::string, torch::Tensor> first, second;
  nlohmann::json weight_map;
  for (const auto& [name, t] : weights) {
    const bool in_first = name.find("layers.1.") == std::string::npos && name.find("lm_head") == std::string::npos;
    (in_first ? first : second)[name] = t;
    weight_map[name] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_hf_safetensors(sharded + "/model-00001-of-00002.safetensors", first);
  write_hf_safetensors(sharded + "/model-00002-of-00002.safetensors", second);
  std::ofstream(sharded + "/model.safetensors.index.json") << nlohmann::json({{"weight_map", weight_map}}).dump();

  const torch::Tensor tokens = torch::tensor({5, 17, 96, 0, 42, 42, 3, 77, 60, 1, 2, 88}, torch::kLong);
  const torch::Tensor expected = reference_logits(weights, tokens);
  const std::string work = fresh_dir("hf_import");
  for (const std::string& source : {single, sharded}) {
    SCOPED_TRACE(source);
    const std::string checkpoint = work + "/" + fs::path(source).filename().string();
    ProcessResult r = run_binary({"import", "--hf", source, "--output", checkpoint});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    Stage model = load_for_inference(checkpoint);
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = model->forward(tokens.view({1, -1}))[0].to(torch::kDouble);
    EXPECT_LT(relative_error(logits, expected), 1e-5);
  }

  const std::string once = work + "/export_once", imported = work + "/reimported", twice = work + "/export_twice";
  ASSERT_EQ(run_binary({"export", "--checkpoint", work + "/hf_single", "--output", once}).exit_code, 0);
  ASSERT_EQ(run_binary({"import", "--hf", once, "--output", imported}).exit_code, 0);
  ASSERT_EQ(run_binary({"export", "--checkpoint", imported, "--output", twice}).exit_code, 0);
  for (const char* file : {"/model.safetensors", "/config.json"}) {
    std::ifstream a(once + file, std::ios::binary), b(twice + file, std::ios::binary);
    const std::string bytes_a((std::istreambuf_iterator<char>(a)), {}), bytes_b((std::istreambuf_iterator<char>(b)), {});
    EXPECT_FALSE(bytes_a.empty()) << file;
    EXPECT_EQ(bytes_a, bytes_b) << file;
  }
}

// --init-from an HF directory, or from its import, or on TP 2 x PP 2: the
// same losses, which are not those of a run from random weights; the
// optimizer starts fresh at step 1.
TEST(HfImport, InitFromStartsEveryLayoutFromTheSameWeights) {
  const std::string hf = fresh_dir("hf_init");
  write_hf_config(hf, {});
  write_hf_safetensors(hf + "/model.safetensors", hf_weights());
  const std::string imported = fresh_dir("hf_init_ckpt") + "/checkpoint";
  ASSERT_EQ(run_binary({"import", "--hf", hf, "--output", imported}).exit_code, 0);
  auto args = [](const std::string& out, const std::string& from) {
    std::vector<std::string> a = tiny_args(out, 4);
    a.insert(a.end(), {"--vocab-size", "97", "--intermediate-size", "96", "--num-layers", "2",
                       "--num-key-value-heads", "2", "--rms-norm-eps", "1e-5"});
    if (!from.empty()) a.insert(a.end(), {"--init-from", from});
    return a;
  };
  const std::string from_hf = fresh_dir("init_hf"), from_ckpt = fresh_dir("init_ckpt"), sharded = fresh_dir("init_tp2pp2"),
                    scratch = fresh_dir("init_none");
  ProcessResult r = run_binary(args(from_hf, hf));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Initialized the weights from " + hf), std::string::npos) << r.output;
  ASSERT_EQ(run_binary(args(from_ckpt, imported)).exit_code, 0);
  ASSERT_EQ(run_binary(args(scratch, "")).exit_code, 0);
  std::vector<std::string> tp2pp2 = args(sharded, hf);
  tp2pp2.insert(tp2pp2.end(), {"--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"});
  expect_all_succeeded(run_ranks(4, tp2pp2));
  expect_same_losses(from_hf, from_ckpt, 4, 0.0);
  expect_same_losses(from_hf, sharded, 4, 1e-5);
  EXPECT_GT(std::abs(read_metrics(from_hf)[1]["loss"].get<double>() - read_metrics(scratch)[1]["loss"].get<double>()), 0.01);
  EXPECT_EQ(read_metrics(from_hf).begin()->first, 1);
}

// HF features our model lacks are refused by name, before anything is written.
TEST(HfImport, UnsupportedFeaturesAreRefusedByName) {
  const std::string dir = fresh_dir("hf_refused");
  const std::vector<std::pair<nlohmann::json, std::string>> cases = {
      {{{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}}, "rope_scaling {\"factor\":2.0,\"type\":\"linear\"} is not supported"},
      {{{"rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 500000.0}}}},
       "rope_parameters {\"rope_theta\":500000.0,\"rope_type\":\"llama3\"} is not supported"},
      {{{"tie_word_embeddings", true}}, "tie_word_embeddings true is not supported"},
      {{{"attention_bias", true}}, "attention_bias true is not supported"},
      {{{"hidden_act", "gelu"}}, "hidden_act 'gelu' is not supported"},
      {{{"model_type", "mistral"}}, "model_type is 'mistral'"},
  };
  for (const auto& [extra, message] : cases) {
    const std::string hf = fresh_dir("hf_refused_model");
    write_hf_config(hf, extra);
    write_hf_safetensors(hf + "/model.safetensors", hf_weights());
    ProcessResult r = run_binary({"import", "--hf", hf, "--output", dir + "/out"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(hf + "/config.json: " + message), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(dir + "/out"));
  }
  const std::string empty = fresh_dir("hf_empty");
  write_hf_config(empty, {});
  ProcessResult r = run_binary({"import", "--hf", empty, "--output", dir + "/out"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("has neither model.safetensors nor model.safetensors.index.json"), std::string::npos) << r.output;
}
