#include "minipretrain/model/normal_stream.h"

namespace minipretrain {
namespace {

// Marsaglia and Tsang's constants for 128 layers: the base layer's tail
// starts at kR, and each layer's area is kV.
constexpr double kR = 3.442619855899;
constexpr double kV = 9.91256303526217e-3;

}  // namespace

NormalStream::Tables::Tables() {
  double f = std::exp(-0.5 * kR * kR);
  x[0] = kV / f;  // the base: a rectangle of area kV, part of it standing for the tail
  x[1] = kR;
  for (int i = 2; i < kLayers; ++i) {
    x[i] = std::sqrt(-2.0 * std::log(kV / x[i - 1] + f));
    f = std::exp(-0.5 * x[i] * x[i]);
  }
  x[kLayers] = 0.0;
  for (int i = 0; i < kLayers; ++i) {
    width[i] = static_cast<float>(x[i]);
    inner[i] = static_cast<float>(x[i + 1] / x[i]);
  }
}

const NormalStream::Tables NormalStream::kTables;

float NormalStream::outside_rectangle(uint64_t bits) {
  for (;;) {
    const int i = static_cast<int>(bits & (kLayers - 1));
    const double u = static_cast<double>(static_cast<int32_t>(bits >> 32)) * 0x1.0p-31;
    const double x = u * kTables.x[i];
    if (std::fabs(u) * kTables.x[i] < kTables.x[i + 1]) return static_cast<float>(x);
    if (i == 0) {  // the tail beyond kR, by Marsaglia's exponential rejection
      double t, y;
      do {
        t = std::log(1.0 - next_uniform()) / kR;
        y = std::log(1.0 - next_uniform());
      } while (-2.0 * y < t * t);
      return static_cast<float>(u < 0 ? t - kR : kR - t);
    }
    // The wedge: accept x where a uniform height between f(x[i]) and
    // f(x[i+1]), both relative to f(x), falls under the curve.
    const double below = std::exp(-0.5 * (kTables.x[i] * kTables.x[i] - x * x));
    const double above = std::exp(-0.5 * (kTables.x[i + 1] * kTables.x[i + 1] - x * x));
    if (below + next_uniform() * (above - below) < 1.0) return static_cast<float>(x);
    bits = next_bits();
  }
}

}  // namespace minipretrain
