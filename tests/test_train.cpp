// Optimizer, schedule and clipping against hand computations.
#include <gtest/gtest.h>

#include <cmath>

#include "minipretrain/train/adamw.h"
#include "minipretrain/train/grad_clip.h"
#include "minipretrain/train/lr_schedule.h"

using namespace minipretrain;

TEST(LRSchedule, WarmupThenCosine) {
  LRSchedule s(1e-3, 1e-4, 0.1, 100);  // 10 warm-up steps
  EXPECT_EQ(s.warmup_steps(), 10);
  EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);                     // end of warm-up: the peak
  EXPECT_NEAR(s.at(55), 1e-4 + 0.5 * 9e-4, 1e-12);       // halfway through the decay
  EXPECT_NEAR(s.at(100), 1e-4, 1e-15);                  // max_steps: min_lr
  EXPECT_GT(s.at(30), s.at(31));
}

TEST(AdamW, OneStepByHand) {
  torch::Tensor w = torch::tensor({{1.0f, -2.0f}}), b = torch::tensor({0.5f});
  const torch::Tensor gw = torch::tensor({{0.1f, 0.2f}}), gb = torch::tensor({-0.3f});
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt({w, b}, o);
  const double lr = 0.01;
  opt.step(lr, {gw, gb});
  // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps).
  auto expected = [&](double p, double g, bool decay) {
    if (decay) p *= 1 - lr * o.weight_decay;
    return p - lr * g / (std::abs(g) + o.eps);
  };
  EXPECT_NEAR(w[0][0].item<double>(), expected(1.0, 0.1, true), 1e-6);
  EXPECT_NEAR(w[0][1].item<double>(), expected(-2.0, 0.2, true), 1e-6);
  EXPECT_NEAR(b[0].item<double>(), expected(0.5, -0.3, false), 1e-6);  // vectors take no decay
  EXPECT_EQ(opt.steps_taken(), 1);
}

TEST(AdamW, MatchesTheTensorFormulaOverSteps) {
  // The fused loop against the textbook update in double precision, with a
  // gradient scale, over several steps and more elements than one task takes.
  torch::manual_seed(5);
  torch::Tensor w = torch::randn({300, 400}), ref = w.to(torch::kDouble);
  torch::Tensor m = torch::zeros_like(ref), v = torch::zeros_like(ref);
  AdamWOptions o;
  AdamW opt({w}, o);
  for (int t = 1; t <= 3; ++t) {
    const torch::Tensor g = torch::randn({300, 400});
    const double lr = 1e-3 * t, scale = 0.5;
    opt.step(lr, {g}, scale);
    const torch::Tensor gd = g.to(torch::kDouble) * scale;
    ref.mul_(1 - lr * o.weight_decay);
    m = o.beta1 * m + (1 - o.beta1) * gd;
    v = o.beta2 * v + (1 - o.beta2) * gd * gd;
    const double c1 = 1 - std::pow(o.beta1, t), c2 = 1 - std::pow(o.beta2, t);
    ref -= lr * (m / c1) / ((v / c2).sqrt() + o.eps);
  }
  EXPECT_LT((w.to(torch::kDouble) - ref).abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(torch::allclose(opt.exp_avg(0).to(torch::kDouble), m, 1e-5, 1e-7));
}

TEST(GradClip, NormAndFactorInOneProcess) {
  const torch::Tensor a = torch::full({2, 2}, 3.0f);  // squares: 36
  const torch::Tensor n = torch::full({2}, 4.0f);     // squares: 32
  SoloCommunicator tp("tp"), pp("pp");
  EXPECT_NEAR(global_grad_norm({a, n}, {true, true}, tp, pp), std::sqrt(68.0), 1e-9);
  EXPECT_NEAR(global_grad_norm({a, n}, {true, false}, tp, pp), 6.0, 1e-9);  // a replicated copy left out
  EXPECT_NEAR(clip_factor(std::sqrt(68.0), 1.0), 1.0 / std::sqrt(68.0), 1e-6);
  EXPECT_EQ(clip_factor(0.5, 1.0), 1.0);
  EXPECT_EQ(clip_factor(5.0, 0.0), 1.0);  // clipping off
}

TEST(GradClip, NormOfALargeTensorIsExactAndThreadCountFree) {
  torch::manual_seed(6);
  const torch::Tensor g = torch::randn({1 << 20});
  SoloCommunicator tp("tp"), pp("pp");
  const double expected = std::sqrt(g.to(torch::kDouble).pow(2).sum().item<double>());
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  const double one = global_grad_norm({g}, {true}, tp, pp);
  torch::set_num_threads(2);
  const double two = global_grad_norm({g}, {true}, tp, pp);
  torch::set_num_threads(threads);
  EXPECT_NEAR(one, expected, 1e-9 * expected);
  EXPECT_EQ(one, two);
}
