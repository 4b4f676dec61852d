// Tokenizer, preprocessing and generation through the real binary, which
// links SentencePiece and LibTorch in one process.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <random>

#include "minipretrain/data/indexed_dataset.h"
#include "minipretrain/text/tokenizer.h"
#include "test_support.h"

using namespace minipretrain;
using namespace minipretrain::test;
namespace fs = std::filesystem;

namespace {

// Sentences of random words, one document per line.
std::vector<std::string> documents(int count) {
  const std::vector<std::string> words = {"the", "king", "queen", "speaks", "of", "war", "and", "peace", "to",
                                          "his", "her", "people", "café", "naïve", "señor"};
  std::mt19937 rng(7);
  std::vector<std::string> docs;
  for (int d = 0; d < count; ++d) {
    std::string doc;
    for (int w = 0; w < 5 + static_cast<int>(rng() % 10); ++w) doc += (w ? " " : "") + words[rng() % words.size()];
    docs.push_back(doc);
  }
  return docs;
}

// A tokenizer trained once for the tests below.
std::string tokenizer_model(const std::string& corpus) {
  const std::string model = fs::path(corpus).parent_path() / "tok.model";
  ProcessResult r = run_binary({"tokenizer", "--input", corpus, "--vocab-size", "320", "--output", model});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return model;
}

std::vector<std::string> decoded_documents(const std::string& prefix, const Tokenizer& tokenizer) {
  IndexedDataset data(prefix);
  std::vector<std::string> out;
  for (int64_t i = 0; i < data.num_sequences(); ++i) {
    std::vector<int64_t> ids = data.sequence(i);
    EXPECT_EQ(ids.back(), tokenizer.eos_id());
    ids.pop_back();
    out.push_back(tokenizer.decode(ids));
  }
  return out;
}

}  // namespace

TEST(Text, PreprocessThenDetokenizeGivesTheDocuments) {
  const std::string dir = fresh_dir("text_roundtrip");
  const std::vector<std::string> docs = documents(300);
  {
    std::ofstream text(dir + "/corpus.txt"), jsonl(dir + "/corpus.jsonl"), blank(dir + "/blank.txt");
    for (const auto& d : docs) {
      text << d << "\n";
      jsonl << nlohmann::json{{"content", d}, {"id", 1}}.dump() << "\n";
    }
    blank << docs[0] << "\n" << docs[1] << "\n\n\n" << docs[2] << "\n";
  }
  const std::string model = tokenizer_model(dir + "/corpus.txt");
  const Tokenizer tokenizer(model);
  EXPECT_EQ(tokenizer.vocab_size(), 320);
  EXPECT_EQ(tokenizer.eos_id(), 2);

  ProcessResult r = run_binary({"preprocess", "--tokenizer", model, "--input", dir + "/corpus.txt",
                                      "--output-prefix", dir + "/text", "--workers", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(decoded_documents(dir + "/text", tokenizer), docs);

  r = run_binary({"preprocess", "--tokenizer", model, "--input", dir + "/corpus.jsonl", "--json-key", "content",
                        "--output-prefix", dir + "/json", "--workers", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(decoded_documents(dir + "/json", tokenizer), docs);
  // 1 and 2 workers write the same bytes.
  std::ifstream a(dir + "/text.bin", std::ios::binary), b(dir + "/json.bin", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}));

  r = run_binary({"preprocess", "--tokenizer", model, "--input", dir + "/blank.txt", "--blank-line-documents",
                        "--output-prefix", dir + "/blank"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(decoded_documents(dir + "/blank", tokenizer),
            (std::vector<std::string>{docs[0] + "\n" + docs[1], docs[2]}));
}

TEST(Text, BadInputNamesFileAndLineAndLeavesNothing) {
  const std::string dir = fresh_dir("text_errors");
  {
    std::ofstream corpus(dir + "/corpus.txt");
    for (const auto& d : documents(200)) corpus << d << "\n";
    std::ofstream(dir + "/missing_key.jsonl") << "{\"text\": \"fine\"}\n{\"body\": \"no text\"}\n";
    std::ofstream(dir + "/bad.jsonl") << "{\"text\": \"fine\"}\n{\"text\": \n";
    std::ofstream(dir + "/latin1.txt") << "fine\nbad \xe9 byte\n";
  }
  const std::string model = tokenizer_model(dir + "/corpus.txt");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {dir + "/missing_key.jsonl", "missing_key.jsonl:2: no string under the key 'text'"},
      {dir + "/bad.jsonl", "bad.jsonl:2: invalid JSON"},
      {dir + "/latin1.txt", "latin1.txt:2: invalid UTF-8"},
      {dir + "/nowhere.txt", "cannot read input"},
  };
  for (const auto& [input, message] : cases) {
    ProcessResult r = run_binary({"preprocess", "--tokenizer", model, "--input", input, "--output-prefix",
                                        dir + "/out", "--no-progress"});
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    for (const char* leftover : {"/out.bin", "/out.idx", "/out.bin.tmp", "/out.idx.tmp"})
      EXPECT_FALSE(fs::exists(dir + leftover)) << leftover;
  }
  ProcessResult r = run_binary({"preprocess", "--tokenizer", dir + "/corpus.txt", "--input", dir + "/corpus.txt",
                                      "--output-prefix", dir + "/out"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("cannot load tokenizer"), std::string::npos) << r.output;
}

TEST(Text, TrainOnPreprocessedTextThenGenerate) {
  const std::string dir = fresh_dir("text_generate");
  {
    std::ofstream corpus(dir + "/corpus.txt");
    for (const auto& d : documents(400)) corpus << d << "\n";
  }
  const std::string model = tokenizer_model(dir + "/corpus.txt");
  ASSERT_EQ(run_binary({"preprocess", "--tokenizer", model, "--input", dir + "/corpus.txt", "--output-prefix",
                              dir + "/data", "--no-progress"}).exit_code, 0);
  std::vector<std::string> args = tiny_args(dir + "/out", 20);
  args.insert(args.end(), {"--vocab-size", "320", "--data-path", dir + "/data", "--split", "95,5", "--eval-interval", "10"});
  expect_all_succeeded(run_ranks(1, args));
  // It learns the text: from about ln(320) = 5.8 at step 1 (measured 5.75) to
  // 3.35 at step 20; held-out loss 3.85 at step 10, 3.33 at step 20.
  auto train = read_metrics(dir + "/out"), valid = read_metrics(dir + "/out", "val_loss");
  EXPECT_LT(train.at(20)["loss"].get<double>(), train.at(1)["loss"].get<double>() - 1.5);
  EXPECT_LT(valid.at(20)["val_loss"].get<double>(), valid.at(10)["val_loss"].get<double>() - 0.2);
  ProcessResult r = run_binary({"generate", "--checkpoint", dir + "/out", "--tokenizer", model, "--prompt",
                                      "the king", "--max-new-tokens", "8", "--seed", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("the king", 0), 0u) << r.output;  // the prompt, then its continuation
  EXPECT_EQ(r.output, run_binary({"generate", "--checkpoint", dir + "/out", "--tokenizer", model, "--prompt",
                                        "the king", "--max-new-tokens", "8", "--seed", "3"}).output);
}

// SentencePiece's own messages name its source lines (trainer_interface.cc(428)
// [!sentences_.empty()]); ours name the file and what is wrong with it.
TEST(Text, EmptyInputOrNotATokenizerSaysWhichFile) {
  const std::string dir = fresh_dir("text_first_errors");
  {
    std::ofstream(dir + "/empty.txt");
    std::ofstream(dir + "/blank.txt") << "\n  \n\n";
    std::ofstream(dir + "/corpus.txt") << "the king speaks of war and peace\n";
  }
  for (const std::string& input : {dir + "/empty.txt", dir + "/blank.txt"}) {
    ProcessResult r = run_binary({"tokenizer", "--input", input, "--vocab-size", "320", "--output",
                                        dir + "/tok.model"});
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("the input has no text: '" + input + "'"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("Internal"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(dir + "/tok.model"));
  }

  const std::string text = dir + "/corpus.txt";
  const std::vector<std::pair<std::string, std::string>> models = {
      {text, "cannot load tokenizer '" + text + "': not a SentencePiece model file"},
      {dir, "cannot load tokenizer '" + dir + "': it is a directory"},
      {dir + "/nowhere.model", "cannot load tokenizer '" + dir + "/nowhere.model': no such file"},
  };
  for (const auto& [model, message] : models) {
    ProcessResult r = run_binary({"preprocess", "--tokenizer", model, "--input", text, "--output-prefix",
                                        dir + "/out", "--no-progress"});
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("Internal"), std::string::npos) << r.output;
    r = run_binary({"generate", "--checkpoint", dir, "--tokenizer", model, "--prompt", "the king"});
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("Internal"), std::string::npos) << r.output;
  }
}

// Long work that is not training says how far it is: the tokenizer what it
// trains and how long it took; preprocess and export their progress with
// rate and ETA, as lines (not carriage returns) when stderr is not a terminal.
TEST(Text, LongWorkShowsProgressWithRateAndEta) {
  const std::string dir = fresh_dir("text_progress");
  {
    std::ofstream corpus(dir + "/corpus.txt");
    for (const auto& d : documents(400)) corpus << d << "\n";
  }
  ProcessResult r = run_binary({"tokenizer", "--input", dir + "/corpus.txt", "--vocab-size", "360", "--output",
                                      dir + "/tok.model"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("tokenizer: training a BPE vocabulary of 360 on"), std::string::npos) << r.output;
  // The merges, counted from SentencePiece's log, whose own lines stay out.
  EXPECT_TRUE(std::regex_search(
      r.output, std::regex("tokenizer: merged: [0-9]+\\.0 pieces \\(100%\\) \\| ETA 0:00:00 \\| [0-9.]+ pieces/s\n")))
      << r.output;
  EXPECT_EQ(r.output.find("LOG(INFO)"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("trainer_spec"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokenizer: trained in"), std::string::npos) << r.output;

  r = run_binary({"preprocess", "--tokenizer", dir + "/tok.model", "--input", dir + "/corpus.txt",
                        "--output-prefix", dir + "/data"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(
      r.output, std::regex("preprocess: [0-9.]+ MB \\(100%\\) \\| ETA 0:00:00 \\| [0-9.]+ MB/s \\| 400 documents, "
                           "[0-9]+ tokens, [0-9]+ tokens/s\n")))
      << r.output;
  EXPECT_EQ(r.output.find('\r'), std::string::npos) << "carriage returns in a log that is not a terminal";

  std::vector<std::string> args = tiny_args(dir + "/out", 2);
  args.insert(args.end(), {"--vocab-size", "360", "--data-path", dir + "/data"});
  ASSERT_EQ(run_binary(args).exit_code, 0);
  r = run_binary({"export", "--checkpoint", dir + "/out", "--output", dir + "/hf"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("reading .*checkpoint-00000002: [0-9]+\\.0 tensors \\(100%\\) \\| "
                                                     "ETA 0:00:00 \\| [0-9.]+ tensors/s\n")))
      << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("writing .*model.safetensors: [0-9.]+ MB \\| [0-9.]+ MB/s\n")))
      << r.output;
}
