// What a pipeline stage sends to and receives from its neighbours, and in
// which batches and order the executor posts them, computed from the stage's
// action list alone: the executor posts exactly this, and the checker below
// proves it free of deadlock under NCCL's rules.
//
// Activations go forward and their gradients backward, tagged 2c for
// activations into chunk c and 2c + 1 for gradients into chunk c (every
// schedule runs each chunk's transfers of a kind in microbatch order, so they
// match). Chunk c of the last rank feeds chunk c + 1 of rank 0.
//
// Two orders, after the backend:
// - Transfers that progress on their own (Gloo): each alone; a send right
//   after its action computes, a receive before the action before its
//   consumer computes, so that it arrives meanwhile (two receive buffers at
//   most). Any order simulate_pipeline() accepts is then deadlock-free.
// - In-order progress (NCCL runs a communicator's operations one after
//   another in the order posted, and a send ends only once the peer's
//   matching receive runs): after each action that communicates, one batch
//   of its send and the receives of the actions up to the next one that
//   communicates, so a send and the receive that follows it run together
//   (Megatron's send_forward_recv_backward, send_backward_recv_forward).
//   Posted one by one, PP 2 1F1B already deadlocks: stage 0 sends a0, a1
//   then receives g0; stage 1 receives a0, sends g0 then receives a1. With
//   interleaving, a forward followed by a backward while forwards remain
//   (the steady state) communicates with that backward, both sends and the
//   next two receives in one batch (Megatron's interleaved schedule): per
//   action, the ring of chunks deadlocks at PP 2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "minipretrain/parallel/schedule.h"

namespace minipretrain {

// Where a stage sits: pipeline rank `stage` of `num_stages`, holding
// `num_chunks` model chunks.
struct PipelineRank {
  int64_t stage;
  int64_t num_stages;
  int64_t num_chunks;
};

struct Transfer {
  size_t action;  // index of the action whose result is sent, or whose input is received
  int peer;       // pipeline rank
  int tag;
};

// Posted as one operation once the actions before `before` have computed.
struct TransferBatch {
  size_t before;
  std::vector<Transfer> sends, receives;
};

// The batches of a stage running `actions`, in the order posted. With
// `in_order_progress` (Communicator::receives_post_ahead() false) the NCCL
// order above, else Gloo's.
std::vector<TransferBatch> plan_transfers(const std::vector<Action>& actions, const PipelineRank& at,
                                          bool in_order_progress);

// Runs every stage's batches (index = pipeline rank) under in-order
// progress: each stage runs its batches one at a time in order; a transfer
// of a running batch completes once the peer's running batch holds its
// match (the n-th send from a to b matches b's n-th receive from a, as NCCL
// matches them); a batch ends when all its transfers have. Compute never
// holds a batch up beyond that: an action waits only for batches posted
// before it. Throws std::logic_error saying what each stuck stage waits for
// if they do not all finish, or if a batch sends a result before its action
// or receives an input after it.
void check_in_order_progress(const std::vector<std::vector<TransferBatch>>& stages);

}  // namespace minipretrain
