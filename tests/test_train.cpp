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
  torch::Tensor w = torch::tensor({{1.0, -2.0}}, torch::kDouble).requires_grad_(true);
  torch::Tensor b = torch::tensor({0.5}, torch::kDouble).requires_grad_(true);
  w.mutable_grad() = torch::tensor({{0.1, 0.2}}, torch::kDouble);
  b.mutable_grad() = torch::tensor({-0.3}, torch::kDouble);
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt({{"w", w}, {"b", b}}, o);
  const double lr = 0.01;
  opt.step(lr);
  // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps).
  auto expected = [&](double p, double g, bool decay) {
    if (decay) p *= 1 - lr * o.weight_decay;
    return p - lr * g / (std::abs(g) + o.eps);
  };
  EXPECT_NEAR(w[0][0].item<double>(), expected(1.0, 0.1, true), 1e-12);
  EXPECT_NEAR(w[0][1].item<double>(), expected(-2.0, 0.2, true), 1e-12);
  EXPECT_NEAR(b[0].item<double>(), expected(0.5, -0.3, false), 1e-12);  // vectors take no decay
  EXPECT_EQ(opt.steps_taken(), 1);
}

TEST(AdamW, StateRoundTrips) {
  torch::Tensor w = torch::ones({2, 2}).requires_grad_(true);
  w.mutable_grad() = torch::full({2, 2}, 0.5);
  AdamW a({{"w", w}}, {});
  a.step(0.1);
  torch::Tensor w2 = w.detach().clone().requires_grad_(true);
  AdamW b({{"w", w2}}, {});
  b.load_state(a.state());
  w2.mutable_grad() = w.grad().clone();
  a.step(0.1);
  b.step(0.1);
  EXPECT_TRUE(torch::equal(w, w2));
}

TEST(GradClip, NormAndScaleInOneProcess) {
  torch::Tensor a = torch::zeros({2, 2}).requires_grad_(true), n = torch::zeros({2}).requires_grad_(true);
  a.mutable_grad() = torch::full({2, 2}, 3.0);  // squares: 36
  n.mutable_grad() = torch::full({2}, 4.0);     // squares: 32 (replicated)
  std::map<std::string, ShardSpec> specs{{"a", ShardSpec{0, {4, 2}, 0}}, {"n", ShardSpec{-1, {2}, 0}}};
  SoloCommunicator tp("tp"), pp("pp");
  const double norm = clip_grad_norm({{"a", a}, {"n", n}}, specs, 1.0, tp, pp);
  EXPECT_NEAR(norm, std::sqrt(68.0), 1e-9);
  EXPECT_NEAR(a.grad()[0][0].item<double>(), 3.0 / std::sqrt(68.0), 1e-5);
}
