#include "minipretrain/train/stop_signals.h"

#include <csignal>
#include <ctime>

namespace minipretrain {
namespace {

constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGUSR1};
// One signal often arrives twice within moments: SLURM signals every process
// of the job step and the launcher passes its own on; a terminal's Ctrl-C
// reaches a rank and torchrun, which sends SIGTERM. Repeats within this
// window are the same request; a later one means "now".
constexpr time_t kRepeatWindowSeconds = 10;

volatile std::sig_atomic_t received = 0;
volatile time_t first_at = 0;

time_t monotonic_seconds() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec;
}

// Async-signal-safe: clock_gettime, stores, sigaction and raise only.
void on_stop_signal(int signal) {
  if (received == 0) {
    received = signal;
    first_at = monotonic_seconds();
    return;
  }
  if (monotonic_seconds() - first_at < kRepeatWindowSeconds) return;
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  sigaction(signal, &fallback, nullptr);
  raise(signal);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  // A signal must not fail the socket calls of a collective in flight.
  action.sa_flags = SA_RESTART;
  for (int signal : kStopSignals) sigaction(signal, &action, nullptr);
}

int stop_signal() { return received; }

}  // namespace minipretrain
