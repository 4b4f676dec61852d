// Configuration: defaults, JSON and flags, and one clear message per mistake.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "minipretrain/commands/cli.h"
#include "minipretrain/config/config.h"
#include "minipretrain/distributed/launch_env.h"
#include "minipretrain/distributed/parallel_state.h"
#include "test_support.h"

using namespace minipretrain;

namespace {

Config parse(std::vector<std::string> args) {
  args.insert(args.begin(), "minipretrain");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(static_cast<int>(argv.size()), argv.data())->config;
}

std::string resolve_error(Config config, int64_t world = 1) {
  try {
    config.resolve(world);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

// What detect_launch_env reads from an environment of exactly `vars`.
LaunchEnv env_of(const std::map<std::string, std::string>& vars) {
  return detect_launch_env([vars](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
}

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = test::fresh_dir("config") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST(Config, DefaultsMatchTheOriginal) {
  Config c = parse({});
  c.resolve(1);
  EXPECT_EQ(c.model.vocab_size, 32000);
  EXPECT_EQ(c.model.hidden_size, 768);
  EXPECT_EQ(c.model.intermediate_size, 3072);
  EXPECT_EQ(c.model.num_layers, 12);
  EXPECT_EQ(c.model.kv_heads(), 12);
  EXPECT_EQ(c.model.max_seq_length, 512);
  EXPECT_EQ(c.train.micro_batch_size, 4);
  EXPECT_EQ(c.global_batch(), 32);
  EXPECT_EQ(c.microbatches(), 8);
  EXPECT_EQ(c.train.max_steps, 10000);
  EXPECT_DOUBLE_EQ(c.train.learning_rate, 3e-4);
  EXPECT_DOUBLE_EQ(c.train.min_lr, 3e-5);
  EXPECT_DOUBLE_EQ(c.train.warmup_ratio, 0.05);
  EXPECT_EQ(c.parallel.pipeline_schedule, PipelineSchedule::OneFOneB);
  EXPECT_EQ(c.log.output_dir, "./checkpoints");
  EXPECT_EQ(c.log.save_interval, 1000);
}

TEST(Config, FlagsOverrideTheFile) {
  const std::string path = write_temp("c.json", R"({"hidden_size": 256, "num_layers": 2, "num_attention_heads": 4})");
  Config c = parse({"--config", path, "--num-layers", "6"});
  EXPECT_EQ(c.model.hidden_size, 256);
  EXPECT_EQ(c.model.num_layers, 6);
}

TEST(Config, ShippedConfigsValidate) {
  for (const char* name : {"tiny", "small", "medium", "large", "xl"}) {
    Config c = load_config_file(std::string(MINIPRETRAIN_SOURCE_DIR) + "/configs/" + name + ".json");
    const int64_t world = c.parallel.tensor_parallel_size * c.parallel.pipeline_parallel_size;
    EXPECT_EQ(resolve_error(c, world), "") << name;
  }
}

TEST(Config, EachMistakeNamesFieldAndValue) {
  Config c;
  c.model.hidden_size = 100;
  c.model.num_attention_heads = 12;
  EXPECT_EQ(resolve_error(c), "hidden_size 100 is not divisible by num_attention_heads 12");
  c = Config();
  c.model.num_key_value_heads = 5;
  EXPECT_EQ(resolve_error(c), "num_attention_heads 12 is not divisible by num_key_value_heads 5");
  c = Config();
  c.model.num_layers = 0;
  EXPECT_EQ(resolve_error(c), "num_layers must be positive, got 0");
  c = Config();
  c.train.min_lr = 1e-3;
  EXPECT_EQ(resolve_error(c), "min_lr 0.001 is greater than learning_rate 0.0003");
  c = Config();
  c.train.warmup_ratio = 1.5;
  EXPECT_EQ(resolve_error(c), "warmup_ratio must be in [0, 1], got 1.5");
  c = Config();
  c.train.global_batch_size = 30;
  EXPECT_EQ(resolve_error(c), "global_batch_size 30 is not divisible by micro_batch_size 4 x data-parallel size 1");
  c = Config();
  c.train.global_batch_size = 32;
  c.parallel.num_microbatches = 2;
  EXPECT_EQ(resolve_error(c),
            "global_batch_size 32 contradicts micro_batch_size 4 x num_microbatches 2 x data-parallel size 1 = 8");
}

TEST(Config, LayoutMistakes) {
  Config c;
  c.parallel.tensor_parallel_size = 5;
  EXPECT_EQ(resolve_error(c, 5), "num_attention_heads 12 is not divisible by tensor_parallel_size 5");
  c = Config();
  c.model.num_key_value_heads = 2;
  c.parallel.tensor_parallel_size = 4;
  EXPECT_EQ(resolve_error(c, 4), "num_key_value_heads 2 is not divisible by tensor_parallel_size 4");
  c = Config();
  c.parallel.tensor_parallel_size = 2;
  c.parallel.pipeline_parallel_size = 2;
  EXPECT_EQ(resolve_error(c, 6), "world size 6 is not divisible by tensor_parallel_size 2 x pipeline_parallel_size 2");
  c = Config();
  c.parallel.sequence_parallel = true;
  EXPECT_EQ(resolve_error(c), "sequence_parallel needs tensor_parallel_size 2 or more, got 1");
  c.parallel.tensor_parallel_size = 4;
  c.model.max_seq_length = 1022;
  EXPECT_EQ(resolve_error(c, 4), "sequence_parallel: max_seq_length 1022 is not divisible by tensor_parallel_size 4");
  c = Config();
  c.parallel.pipeline_parallel_size = 13;
  EXPECT_EQ(resolve_error(c, 13), "num_layers 12 is fewer than pipeline_parallel_size 13: every stage needs a layer");
  c = Config();
  c.parallel.pipeline_parallel_size = 2;
  c.parallel.pipeline_layer_split = {7, 4};
  EXPECT_EQ(resolve_error(c, 2), "pipeline_layer_split 7,4 adds up to 11 layers, the model has num_layers 12");
  c.parallel.pipeline_layer_split = {7, 4, 1};
  EXPECT_EQ(resolve_error(c, 2), "pipeline_layer_split 7,4,1 has 3 entries for 2 pipeline stages");
  c.parallel.pipeline_layer_split = {12, 0};
  EXPECT_EQ(resolve_error(c, 2), "pipeline_layer_split 12,0: every stage needs at least one layer");
  c = Config();
  c.parallel.virtual_pipeline_stages = 2;
  EXPECT_EQ(resolve_error(c), "virtual_pipeline_stages 2 needs pipeline_schedule interleaved-1f1b, got 1f1b");
  c.parallel.pipeline_schedule = PipelineSchedule::Interleaved1F1B;
  EXPECT_EQ(resolve_error(c), "pipeline_schedule interleaved-1f1b needs pipeline_parallel_size 2 or more, got 1");
  c.parallel.pipeline_parallel_size = 2;
  c.parallel.virtual_pipeline_stages = 1;
  EXPECT_EQ(resolve_error(c, 2),
            "pipeline_schedule interleaved-1f1b needs virtual_pipeline_stages 2 or more (with 1 it is 1f1b), got 1");
  c.parallel.virtual_pipeline_stages = 7;
  EXPECT_EQ(resolve_error(c, 2), "num_layers 12 is fewer than the 14 virtual pipeline stages (2 stages x "
                                 "virtual_pipeline_stages 7): every stage needs a layer");
  c.parallel.virtual_pipeline_stages = 2;
  c.parallel.pipeline_layer_split = {7, 5};
  EXPECT_EQ(resolve_error(c, 2), "pipeline_layer_split 7,5 has 2 entries for 4 virtual pipeline stages (2 stages x "
                                 "virtual_pipeline_stages 2)");
  c.parallel.pipeline_layer_split = {};
  c.parallel.num_microbatches = 3;
  EXPECT_EQ(resolve_error(c, 2), "pipeline_schedule interleaved-1f1b needs num_microbatches no more than "
                                 "pipeline_parallel_size or a multiple of it, got 3 microbatches for 2 stages");
}

// A choice outside its table is refused where it is read, from a flag or from JSON.
TEST(Config, ChoicesAreCheckedAgainstTheirNameTable) {
  auto flag_error = [](const std::vector<std::string>& args) {
    try {
      parse(args);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(flag_error({"--pipeline-schedule", "zb-h2"}),
            "pipeline_schedule must be gpipe, 1f1b, interleaved-1f1b or zb-h1, got 'zb-h2'");
  EXPECT_EQ(flag_error({"--precision", "fp16"}), "precision must be auto, fp32 or bf16, got 'fp16'");
  EXPECT_EQ(flag_error({"--recompute", "selective"}), "recompute must be none or full, got 'selective'");
  EXPECT_EQ(flag_error({"--device", "tpu"}), "device must be auto, cpu or cuda, got 'tpu'");
  EXPECT_EQ(parse({"--pipeline-schedule", "zb-h1"}).parallel.pipeline_schedule, PipelineSchedule::ZeroBubbleH1);
  EXPECT_EQ(parse({"--precision", "fp32"}).train.precision, Precision::Fp32);
  try {
    load_config_file(write_temp("choice.json", R"({"recompute": "selective"})"));
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("recompute must be none or full, got 'selective'"), std::string::npos)
        << e.what();
  }
  // Every name reads back as its value: the table is the one place a choice is named.
  for (const auto& [value, name] : choice_table<PipelineSchedule>())
    EXPECT_EQ(parse_choice<PipelineSchedule>("pipeline_schedule", name), value);
}

TEST(Config, InterleavedSplitsPerVirtualStage) {
  Config c;
  c.parallel.pipeline_parallel_size = 2;
  c.parallel.pipeline_schedule = PipelineSchedule::Interleaved1F1B;
  c.parallel.virtual_pipeline_stages = 2;
  c.resolve(2);
  // The four virtual stages balanced, the last with the LM head and loss:
  // rank 0 holds virtual stages 0 and 2 (7 layers), rank 1 1 and 3 (5).
  EXPECT_EQ(c.parallel.pipeline_layer_split, std::vector<int64_t>({3, 4, 4, 1}));
}

TEST(Config, BalancedSplitGivesTheLastStageFewerLayers) {
  // Small: the LM head over 32000 words costs about 2.5 decoder layers.
  ModelConfig small;
  EXPECT_EQ(balanced_layer_split(small, 1), std::vector<int64_t>({12}));
  EXPECT_EQ(balanced_layer_split(small, 2), std::vector<int64_t>({7, 5}));
  const std::vector<int64_t> four = balanced_layer_split(small, 4);
  EXPECT_EQ(four.size(), 4u);
  EXPECT_EQ(four[0] + four[1] + four[2] + four[3], 12);
  EXPECT_LT(four[3], four[0]);
  ModelConfig narrow_vocab = small;
  narrow_vocab.vocab_size = 256;  // a negligible head: an even split
  EXPECT_EQ(balanced_layer_split(narrow_vocab, 2), std::vector<int64_t>({6, 6}));
  Config c;
  c.parallel.pipeline_parallel_size = 2;
  c.resolve(2);
  EXPECT_EQ(c.parallel.pipeline_layer_split, std::vector<int64_t>({7, 5}));
}

TEST(Config, MicrobatchesDeriveFromTheGlobalBatch) {
  Config c;
  c.parallel.tensor_parallel_size = 2;
  c.resolve(8);  // DP = 4
  EXPECT_EQ(c.data_parallel_size, 4);
  EXPECT_EQ(c.microbatches(), 2);  // 32 / (4 x 4)
  Config d;
  d.parallel.num_microbatches = 3;
  d.resolve(2);
  EXPECT_EQ(d.global_batch(), 24);
}

TEST(Config, JsonMistakesNameTheKey) {
  auto error_of = [](const std::string& text) {
    try {
      load_config_file(write_temp("bad.json", text));
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of(R"({"hiden_size": 5})").find("unknown key 'hiden_size'"), std::string::npos);
  EXPECT_NE(error_of(R"({"hidden_size": "big"})").find("hidden_size must be an integer, got string \"big\""),
            std::string::npos);
  EXPECT_NE(error_of("{\"hidden_size\": 5,").find("is not valid JSON"), std::string::npos);
  try {
    load_config_file("/nonexistent/config.json");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "cannot read config file '/nonexistent/config.json'");
  }
}

TEST(Config, BadFlagValues) {
  EXPECT_THROW(parse({"--hidden-size", "abc"}), ConfigError);
  EXPECT_THROW(parse({"--no-such-flag", "1"}), ConfigError);
}

// One GPU per process: local rank r takes GPU r; a launcher that gives each
// process its own GPU through CUDA_VISIBLE_DEVICES leaves one visible; more
// processes than GPUs is one line naming both counts.
TEST(LaunchEnv, EachLocalRankTakesItsOwnGpu) {
  LaunchEnv env;
  env.local_world_size = 8;
  env.local_rank = 5;
  EXPECT_EQ(gpu_of_local_rank(env, 8, false), 5);
  EXPECT_EQ(gpu_of_local_rank(env, 1, true), 0);
  try {
    gpu_of_local_rank(env, 4, false);
    FAIL() << "8 processes shared 4 GPUs";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("8 processes on this node, 4 GPUs visible to each"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(gpu_of_local_rank(env, 1, false), ConfigError);
}

TEST(LaunchEnv, ReadsEachLauncher) {
  EXPECT_EQ(env_of({}).world_size, 1);
  LaunchEnv t = env_of({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                        {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "1234"}});
  EXPECT_EQ(t.launcher, "torchrun");
  EXPECT_EQ(t.rank, 3);
  EXPECT_EQ(t.local_world_size, 2);
  EXPECT_EQ(t.master_addr, "node0");
  EXPECT_EQ(t.master_port, 1234);
  LaunchEnv o = env_of({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(o.launcher, "openmpi");
  EXPECT_EQ(o.rank, 2);
  LaunchEnv p = env_of({{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}});
  EXPECT_EQ(p.launcher, "pmi");
  LaunchEnv s = env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                        {"SLURM_NTASKS_PER_NODE", "4(x2)"}, {"SLURM_JOB_NODELIST", "gpu[07-08],cpu1"}});
  EXPECT_EQ(s.launcher, "slurm");
  EXPECT_EQ(s.local_world_size, 4);
  EXPECT_EQ(s.master_addr, "gpu07");
  EXPECT_THROW(env_of({{"RANK", "0"}}), ConfigError);
  EXPECT_THROW(env_of({{"RANK", "4"}, {"WORLD_SIZE", "4"}}), ConfigError);
  EXPECT_THROW(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}}),
               ConfigError);
}

// torchrun serves its own store on MASTER_PORT while the workers run: the
// rendezvous takes the port after it.
TEST(TorchrunEnvironment, TheRendezvousTakesThePortAfterTorchrunsOwnStore) {
  auto torchrun_env = [](std::map<std::string, std::string> vars) {
    vars.insert({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "node0"}});
    return env_of(vars);
  };
  EXPECT_EQ(torchrun_env({{"MASTER_PORT", "29500"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}}).master_port, 29501);
  EXPECT_EQ(torchrun_env({{"MASTER_PORT", "29500"}, {"TORCHELASTIC_USE_AGENT_STORE", "False"}}).master_port, 29500);
  EXPECT_EQ(torchrun_env({{"MASTER_PORT", "29500"}}).master_port, 29500);
  EXPECT_THROW(torchrun_env({{"MASTER_PORT", "65535"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}}), ConfigError);
}

TEST(Layout, RankLayoutOfTheDesign) {
  Layout l{2, 2, 2};  // TP 2, DP 2, PP 2
  for (int64_t r = 0; r < 8; ++r) {
    Coordinates c = l.coordinates(r);
    EXPECT_EQ(c.tp, r % 2);
    EXPECT_EQ(c.dp, (r / 2) % 2);
    EXPECT_EQ(c.pp, r / 4);
    EXPECT_EQ(l.rank_of(c), r);
  }
}
