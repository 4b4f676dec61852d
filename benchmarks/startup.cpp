// Start-up as the layout shards the model. For each (pipeline stage, TP rank)
// of a config's layout, alone in this process: the time to build and draw
// its stage, and to allocate its gradient buffer and AdamW moments, as the
// trainer does on this CPU. Then the whole model built and drawn as one process would
// (its state is left out: XL's alone is 33 GB). A rank draws only its shard's
// rows or columns, so its draw is about 1 / (TP x PP) of the whole model's.
// Usage: minipretrain-startup CONFIG.json [THREADS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "minipretrain/config/config.h"
#include "minipretrain/model/stage.h"
#include "minipretrain/train/adamw.h"
#include "minipretrain/train/main_params.h"

namespace mp = minipretrain;

namespace {

template <typename Work>
double seconds(Work&& work) {
  const auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int64_t count(const mp::Stage& stage) {
  int64_t n = 0;
  for (const auto& p : stage->parameters()) n += p.numel();
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: minipretrain-startup CONFIG.json [THREADS]\n");
    return 2;
  }
  if (argc > 2) torch::set_num_threads(std::atoi(argv[2]));
  mp::Config config = mp::load_config_file(argv[1]);
  const int tp = static_cast<int>(config.parallel.tensor_parallel_size);
  const int64_t pp = config.parallel.pipeline_parallel_size;
  config.resolve(tp * pp);
  torch::NoGradGuard no_grad;

  double slowest_draw = 0.0;
  for (int64_t s = 0; s < pp; ++s)
    for (int t = 0; t < tp; ++t) {
      mp::Stage stage(nullptr);
      const double draw = seconds([&] {
        stage = mp::Stage(config.model, mp::StagePosition::of(config.parallel.pipeline_layer_split, s, pp),
                          mp::TensorParallel{std::make_shared<mp::ShapeOnlyCommunicator>("tp", t, tp)});
        stage->initialize(config.train.seed);
      });
      std::unique_ptr<mp::MainParams> main;
      std::unique_ptr<mp::AdamW> adamw;
      const double state = seconds([&] {
        std::vector<std::pair<std::string, torch::Tensor>> parameters;
        for (const auto& p : stage->named_parameters()) parameters.emplace_back(p.key(), p.value());
        main = std::make_unique<mp::MainParams>(parameters, mp::resolve_precision(config.train.precision, torch::kCPU));
        std::vector<torch::Tensor> masters;
        for (const mp::MainParams::Entry& e : main->entries()) masters.push_back(e.master);
        adamw = std::make_unique<mp::AdamW>(masters, mp::AdamWOptions{});
      });
      slowest_draw = std::max(slowest_draw, draw);
      std::printf("stage %lld of %lld, TP rank %d of %d: %.1fM parameters, built and drawn in %.2f s, gradient "
                  "buffer and AdamW state in %.2f s\n",
                  static_cast<long long>(s), static_cast<long long>(pp), t, tp, count(stage) / 1e6, draw, state);
    }

  mp::Stage whole(nullptr);
  const double draw = seconds([&] {
    whole = mp::Stage(config.model, mp::StagePosition::of({config.model.num_layers}, 0),
                      mp::TensorParallel{std::make_shared<mp::SoloCommunicator>("tp")});
    whole->initialize(config.train.seed);
  });
  // Drawing again into the same, already touched memory times the generator
  // alone: the difference to the first draw is the cost of fresh pages.
  const double redraw = seconds([&] { whole->initialize(config.train.seed); });
  std::printf("the whole model in one process: %.1fM parameters, built and drawn in %.2f s (drawn again into the "
              "same memory in %.2f s)\n",
              count(whole) / 1e6, draw, redraw);
  std::printf("slowest rank of TP %d x PP %lld: %.4f of the whole model's draw (1 / %.1f)\n", tp,
              static_cast<long long>(pp), slowest_draw / draw, draw / slowest_draw);
  return 0;
}
