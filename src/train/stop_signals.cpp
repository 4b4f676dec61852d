#include "minipretrain/train/stop_signals.h"

#include <csignal>

namespace minipretrain {
namespace {

constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGUSR1};
volatile std::sig_atomic_t received = 0;

// Async-signal-safe: a store and sigaction only. The next stop signal, of
// any of the three, takes the default action.
void on_stop_signal(int signal) {
  received = signal;
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  for (int s : kStopSignals) sigaction(s, &fallback, nullptr);
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
