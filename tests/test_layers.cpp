// The layers of docs/layout.md: each folder includes only from itself and the
// folders below it, and each header has one source of the same name (or
// none, when it holds only declarations and inline code).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>

using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

// Lowest first; folders of one rank may include each other.
const std::map<std::string, int> kRank = {
    {"config", 0}, {"distributed", 1}, {"parallel", 2}, {"model", 3},      {"data", 3},
    {"text", 3},   {"train", 4},       {"checkpoint", 5}, {"plan", 6}, {"commands", 7}};

std::string layer_of(const fs::path& file) { return file.parent_path().filename().string(); }

}  // namespace

TEST(Layers, EachFolderIncludesOnlyFromBelow) {
  const fs::path root = MINIPRETRAIN_SOURCE_DIR;
  const std::regex include(R"(#include\s+"minipretrain/([a-z_]+)/[a-z_]+\.h")");
  int files = 0;
  for (const fs::path& dir : {root / "src", root / "include" / "minipretrain"})
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      if (!entry.is_regular_file() || entry.path().filename() == "main.cpp") continue;
      const std::string from = layer_of(entry.path());
      if (!kRank.count(from)) continue;  // torch_pch.h
      ++files;
      std::ifstream in(entry.path());
      for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (!std::regex_search(line, m, include)) continue;
        const std::string to = m[1];
        ASSERT_TRUE(kRank.count(to)) << entry.path() << " includes from an unknown layer " << to;
        EXPECT_LE(kRank.at(to), kRank.at(from)) << entry.path() << " (" << from << ") includes " << line;
      }
    }
  EXPECT_GT(files, 50);  // the walk found the tree
}

TEST(Layers, EachSourceHasTheHeaderOfItsName) {
  const fs::path root = MINIPRETRAIN_SOURCE_DIR;
  int sources = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root / "src")) {
    if (entry.path().extension() != ".cpp" || entry.path().filename() == "main.cpp") continue;
    ++sources;
    const fs::path header =
        root / "include" / "minipretrain" / layer_of(entry.path()) / (entry.path().stem().string() + ".h");
    EXPECT_TRUE(fs::exists(header)) << entry.path() << " has no header " << header;
    std::ifstream in(entry.path());
    std::string first;
    std::getline(in, first);
    EXPECT_EQ(first, "#include \"minipretrain/"s + layer_of(entry.path()) + "/" + header.filename().string() + "\"")
        << entry.path() << " does not include its own header first";
  }
  EXPECT_GT(sources, 50);
}
