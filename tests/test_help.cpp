// What a newcomer reads first: `minipretrain --help` shows the type of every
// value and lists every subcommand, one line each, and every subcommand
// answers --help of its own. All through the real binary.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "test_support.h"

using namespace minipretrain::test;

namespace {

ProcessResult help_of(std::vector<std::string> args) {
  args.push_back("--help");
  return run_binary(args);
}

// The names in the "Subcommands:" section of CLI11's help.
std::vector<std::string> listed_subcommands(const std::string& help) {
  std::istringstream in(help);
  std::vector<std::string> names;
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    if (line == "Subcommands:") {
      inside = true;
    } else if (inside) {
      if (line.rfind("  ", 0) != 0) break;
      std::string name;
      std::istringstream(line) >> name;
      names.push_back(name);
    }
  }
  return names;
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

TEST(Help, NamesTheTypeOfEveryValue) {
  ProcessResult r = help_of({});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* shown : {"--hidden-size INT", "--num-key-value-heads INT", "--learning-rate FLOAT",
                            "--config PATH", "--output-dir PATH", "--resume PATH", "--device {auto,cpu,cuda}",
                            "--pipeline-schedule {gpipe,1f1b,interleaved-1f1b,zb-h1}", "--split TEXT"})
    EXPECT_NE(r.output.find(shown), std::string::npos) << shown << "\n" << r.output;
  for (const char* wrong : {"--hidden-size TEXT", "--learning-rate TEXT", "--num-key-value-heads TEXT"})
    EXPECT_EQ(r.output.find(wrong), std::string::npos) << wrong << "\n" << r.output;
}

TEST(Help, ListsEverySubcommand) {
  ProcessResult r = help_of({});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<std::string> names = listed_subcommands(r.output);
  for (const char* name : {"generate", "export", "import", "tokenizer", "preprocess"})
    EXPECT_TRUE(contains(names, name)) << name << "\n" << r.output;
}

// Every subcommand that --help lists, later ones included.
TEST(Help, EverySubcommandHasItsOwn) {
  const std::vector<std::string> names = listed_subcommands(help_of({}).output);
  ASSERT_GE(names.size(), 4u);
  for (const std::string& name : names) {
    ProcessResult r = help_of({name});
    EXPECT_EQ(r.exit_code, 0) << name << "\n" << r.output;
    EXPECT_NE(r.output.find("Usage: minipretrain " + name + " [OPTIONS]"), std::string::npos) << r.output;
  }
  ProcessResult tokenizer = help_of({"tokenizer"});
  EXPECT_NE(tokenizer.output.find("--input PATH"), std::string::npos) << tokenizer.output;
  EXPECT_NE(tokenizer.output.find("--vocab-size INT"), std::string::npos) << tokenizer.output;
  ProcessResult generate = help_of({"generate"});
  EXPECT_NE(generate.output.find("--temperature FLOAT"), std::string::npos) << generate.output;
  EXPECT_NE(generate.output.find("--checkpoint PATH"), std::string::npos) << generate.output;
}
