#include "minipretrain/commands/cli.h"

#include <iostream>
#include <map>

#include <CLI/CLI.hpp>

#include "minipretrain/config/fields.h"

namespace minipretrain {

namespace {

void add_generate(CLI::App& app, GenerateCommand& c) {
  CLI::App* sub = app.add_subcommand("generate", "sample text from a checkpoint");
  sub->add_option("--checkpoint", c.checkpoint, "checkpoint directory, or an output dir for its newest")
      ->required()->type_name("PATH");
  sub->add_option("--tokenizer", c.tokenizer, "SentencePiece .model")->required()->type_name("PATH");
  sub->add_option("--prompt", c.prompt, "text to continue")->required();
  sub->add_option("--max-new-tokens", c.max_new_tokens, "tokens to sample")->capture_default_str();
  sub->add_option("--temperature", c.temperature, "0: greedy")->capture_default_str();
  sub->add_option("--top-k", c.top_k, "sample among the k likeliest (0: all)")->capture_default_str();
  sub->add_option("--seed", c.seed, "sampling seed")->capture_default_str();
}

void add_export(CLI::App& app, ExportCommand& c) {
  CLI::App* sub = app.add_subcommand("export", "checkpoint of any layout -> Hugging Face LlamaForCausalLM directory");
  sub->add_option("--checkpoint", c.checkpoint, "checkpoint directory, or an output dir for its newest")
      ->required()->type_name("PATH");
  sub->add_option("--output", c.output, "directory to write")->required()->type_name("PATH");
  sub->add_option("--tokenizer", c.tokenizer, "SentencePiece .model to copy beside the weights")->type_name("PATH");
}

void add_import(CLI::App& app, ImportCommand& c) {
  CLI::App* sub = app.add_subcommand("import", "Hugging Face LlamaForCausalLM directory -> checkpoint (weights only)");
  sub->add_option("--hf", c.hf_dir, "directory with config.json and model.safetensors (or its index)")
      ->required()->type_name("PATH");
  sub->add_option("--output", c.output, "checkpoint directory to write (must not exist); train from it with --init-from")
      ->required()->type_name("PATH");
}

void add_plan(CLI::App& app, PlanCommand& c) {
  CLI::App* sub = app.add_subcommand(
      "plan", "every valid layout of the config for N ranks: memory per rank, traffic, bubble, speed; best first");
  // The config's flags (--config, --hidden-size, ...) belong to the main
  // command; they may follow `plan` too.
  sub->fallthrough();
  sub->add_option("--world-size", c.world_size, "ranks (GPUs) to plan for")->required();
  sub->add_option("--gpus-per-node", c.gpus_per_node, "ranks per node; tensor parallelism stays inside one")
      ->capture_default_str();
  sub->add_option("--device-memory", c.device_memory, "memory per rank, e.g. 80GB, 141GB, 24GiB")
      ->capture_default_str();
  sub->add_option("--flops", c.flops, "sustained bf16 matmul FLOP/s per rank (fp32: half)")->capture_default_str();
  sub->add_option("--intra-node-bw", c.intra_node_bw, "bandwidth per rank within a node, e.g. 450GB/s")
      ->capture_default_str();
  sub->add_option("--inter-node-bw", c.inter_node_bw, "bandwidth per rank between nodes, e.g. 50GB/s")
      ->capture_default_str();
  sub->add_option("--top", c.top, "rows of the table (0: all)")->capture_default_str();
  sub->add_flag("--json", c.json, "print every layout as JSON instead of the table");
  sub->footer(
      "Figures for common GPUs (sustained FLOP/s about 40% of the dense bf16 peak):\n"
      "  H100 SXM 80GB: --device-memory 80GB --flops 400e12 --intra-node-bw 450GB/s --inter-node-bw 50GB/s (default)\n"
      "  H200 141GB:    --device-memory 141GB --flops 400e12 --intra-node-bw 450GB/s --inter-node-bw 50GB/s\n"
      "  A100 SXM 80GB: --device-memory 80GB --flops 125e12 --intra-node-bw 300GB/s --inter-node-bw 25GB/s\n"
      "  A100 40GB:     --device-memory 40GB --flops 125e12 --intra-node-bw 300GB/s --inter-node-bw 25GB/s\n"
      "With --device cpu the plan is for CPU processes (Gloo, process baseline included).");
}

void add_tokenizer(CLI::App& app, TokenizerCommand& c) {
  CLI::App* sub = app.add_subcommand("tokenizer", "train a SentencePiece BPE tokenizer (unk 0, bos 1, eos 2)");
  sub->add_option("--input", c.inputs, "text files")->required()->expected(1, -1)->type_name("PATH");
  sub->add_option("--vocab-size", c.vocab_size, "pieces")->capture_default_str();
  sub->add_option("--output", c.output, "the .model file to write")->capture_default_str()->type_name("PATH");
}

void add_preprocess(CLI::App& app, PreprocessOptions& c) {
  CLI::App* sub = app.add_subcommand("preprocess", "text or JSON Lines -> Megatron indexed dataset");
  sub->add_option("--tokenizer", c.tokenizer, "SentencePiece .model")->required()->type_name("PATH");
  sub->add_option("--input", c.inputs, "text files (a document per line) or .jsonl files")
      ->required()->expected(1, -1)->type_name("PATH");
  sub->add_option("--output-prefix", c.output_prefix, "writes PREFIX.bin and PREFIX.idx")
      ->required()->type_name("PREFIX");
  sub->add_option("--json-key", c.json_key, "the text's key in JSON Lines")->capture_default_str();
  sub->add_flag("--blank-line-documents", c.blank_line_documents, "text: documents are separated by blank lines");
  sub->add_option("--workers", c.workers, "tokenizer threads (0: every core)")->capture_default_str();
  sub->add_flag_callback("--no-progress", [&c] { c.progress = false; }, "no progress line");
}

// How --help shows a field's value: as its binder names it, or else as its
// default suggests.
std::string shown_type(const Field& f, const nlohmann::json& value) {
  if (!f.type_name.empty()) return f.type_name;
  if (value.is_boolean()) return "BOOLEAN";
  if (value.is_number_integer()) return "INT";
  if (value.is_number()) return "FLOAT";
  return "TEXT";
}

}  // namespace

std::optional<CommandLine> parse_command_line(int argc, const char* const* argv) {
  CLI::App app{"minipretrain: pretrain a Llama-style model with data, tensor and pipeline parallelism", "minipretrain"};
  std::string config_path;
  CommandLine result;
  app.add_option("--config", config_path, "JSON file of settings; flags given here override it")->type_name("PATH");
  app.add_flag("--print-config", result.print_config,
               "print the resolved configuration and the parameter counts, then exit");

  // Flags are read as text first, so that they can be applied after the file.
  Config defaults;
  std::vector<Field> fields = config_fields(defaults);
  std::map<std::string, std::string> given;
  std::map<std::string, std::vector<std::string>> given_lists;
  std::map<std::string, bool> given_switches;
  for (const Field& f : fields) {
    const nlohmann::json value = f.get();
    if (f.on_off) {
      app.add_flag(f.flag(), given_switches[f.key], f.help);
      continue;
    }
    if (f.list) {
      app.add_option(f.flag(), given_lists[f.key], f.help)->expected(1, -1)->type_name(shown_type(f, value));
      continue;
    }
    const std::string shown = value.is_null() ? "" : (value.is_string() ? value.get<std::string>() : value.dump());
    // The last occurrence wins, so a launcher's flags can be overridden after it.
    app.add_option(f.flag(), given[f.key], f.help + (shown.empty() ? "" : " [default: " + shown + "]"))
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
        ->type_name(shown_type(f, value));
  }

  add_generate(app, result.generate);
  add_export(app, result.export_model);
  add_import(app, result.import_model);
  add_plan(app, result.plan);
  add_tokenizer(app, result.tokenizer);
  add_preprocess(app, result.preprocess);
  app.require_subcommand(0, 1);
  // After the subcommands, which would inherit it.
  app.footer(std::string("Run 'minipretrain SUBCOMMAND --help' for the options of a subcommand."));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    throw ConfigError(e.what());
  }

  for (const CLI::App* sub : app.get_subcommands()) result.command = sub->get_name();
  result.config = config_path.empty() ? Config{} : load_config_file(config_path);
  std::vector<Field> targets = config_fields(result.config);
  for (Field& f : targets)
    if (app.count(f.flag()) > 0) {
      if (f.list) f.set(nlohmann::json(given_lists[f.key]));
      else f.parse(given[f.key]);
    }
  return result;
}

}  // namespace minipretrain
