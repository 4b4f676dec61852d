#include "minipretrain/text/preprocess.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "minipretrain/config/config.h"
#include "minipretrain/data/progress.h"
#include "minipretrain/data/indexed_writer.h"
#include "minipretrain/text/tokenizer.h"

namespace minipretrain {

bool is_valid_utf8(const std::string& text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    for (size_t k = 1; k < len; ++k)
      if ((s[i + k] & 0xC0) != 0x80) return false;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
    const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

namespace {

struct Document {
  std::string text;
  std::string where;  // file:line, for errors
};

bool is_json_lines(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".jsonl" || ext == ".json";
}

// Reads the next batch of up to `limit` documents; false at the end of input.
class DocumentReader {
 public:
  DocumentReader(const std::string& path, const PreprocessOptions& options)
      : path_(path), options_(options), in_(path), json_(is_json_lines(path)) {
    if (!in_) throw ConfigError("preprocess: cannot read input '" + path + "'");
  }

  bool next(std::vector<Document>& batch, size_t limit) {
    batch.clear();
    std::string line, text;
    int64_t first_line = 0;
    while (batch.size() < limit && std::getline(in_, line)) {
      ++line_;
      const std::string where = path_ + ":" + std::to_string(line_);
      if (!is_valid_utf8(line)) throw ConfigError("preprocess: " + where + ": invalid UTF-8");
      if (json_) {
        if (line.empty()) continue;
        batch.push_back({json_text(line, where), where});
      } else if (!options_.blank_line_documents) {
        if (!line.empty()) batch.push_back({line, where});
      } else if (line.empty()) {
        if (!text.empty()) batch.push_back({std::move(text), path_ + ":" + std::to_string(first_line)});
        text.clear();
      } else {
        if (text.empty()) first_line = line_;
        text += (text.empty() ? "" : "\n") + line;
      }
    }
    // The limit is only reached right after a document ends, so text left
    // over here is the file's last document.
    if (!text.empty()) batch.push_back({std::move(text), path_ + ":" + std::to_string(first_line)});
    return !batch.empty();
  }

 private:
  std::string json_text(const std::string& line, const std::string& where) const {
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw ConfigError("preprocess: " + where + ": invalid JSON: " + e.what());
    }
    if (!record.is_object() || !record.contains(options_.json_key) || !record[options_.json_key].is_string())
      throw ConfigError("preprocess: " + where + ": no string under the key '" + options_.json_key + "'");
    return record[options_.json_key].get<std::string>();
  }

  std::string path_;
  const PreprocessOptions& options_;
  std::ifstream in_;
  bool json_;
  int64_t line_ = 0;
};

}  // namespace

PreprocessStats preprocess(const PreprocessOptions& options) {
  Tokenizer tokenizer(options.tokenizer);
  const int workers = options.workers > 0 ? options.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  IndexedDatasetWriter writer(options.output_prefix, tokenizer.vocab_size());
  PreprocessStats stats;
  // Progress by input megabytes, so that the ETA counts what is left to read.
  double total_mb = 0, done_mb = 0;
  for (const std::string& path : options.inputs) {
    std::error_code ec;
    total_mb += std::filesystem::file_size(path, ec) / 1e6;
  }
  Progress progress("preprocess", total_mb, "MB", options.progress);
  auto report = [&](bool last) {
    stats.seconds = progress.seconds();
    const std::string detail = std::to_string(stats.documents) + " documents, " + std::to_string(stats.tokens) +
                               " tokens, " + std::to_string(static_cast<int64_t>(stats.tokens / std::max(stats.seconds, 1e-9))) +
                               " tokens/s";
    if (last) progress.finish(done_mb, detail);
    else progress.update(done_mb, detail);
  };

  std::vector<Document> batch;
  std::vector<std::vector<int64_t>> encoded;
  for (const std::string& path : options.inputs) {
    DocumentReader reader(path, options);
    while (reader.next(batch, 4096)) {
      // Each worker encodes a contiguous slice, so the output keeps input order.
      encoded.assign(batch.size(), {});
      std::vector<std::thread> threads;
      const size_t per = (batch.size() + workers - 1) / workers;
      for (int w = 0; w < workers; ++w)
        threads.emplace_back([&, w] {
          for (size_t i = w * per; i < std::min(batch.size(), (w + 1) * per); ++i) {
            encoded[i] = tokenizer.encode(batch[i].text);
            encoded[i].push_back(tokenizer.eos_id());
          }
        });
      for (auto& t : threads) t.join();
      for (const auto& doc : encoded) {
        writer.add_document(doc);
        stats.tokens += static_cast<int64_t>(doc.size());
      }
      stats.documents += static_cast<int64_t>(batch.size());
      for (const Document& d : batch) done_mb += (d.text.size() + 1) / 1e6;
      report(false);
    }
  }
  writer.finish();
  report(true);
  return stats;
}

}  // namespace minipretrain
