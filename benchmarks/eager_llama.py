#!/usr/bin/env python3
"""The eager PyTorch training loop minipretrain is measured against.

The same Llama-style model (RMSNorm, RoPE, GQA, SwiGLU, untied LM head), the
same AdamW, clipping and synthetic tokens, written the way a PyTorch user
would: nn.Modules, scaled_dot_product_attention where the PyTorch has it,
bf16 through autocast with fp32 weights. --compile runs the same model through
torch.compile (forward and backward; Inductor, which on the CPU needs a C++
compiler), the optimizer staying eager. Prints one line with the median
tokens/s over the steps after the --warmup ones (with --compile the first
step compiles: its time is printed apart), and the peak RSS; nothing passes
or fails.

Usage: benchmarks/eager_llama.py [--device auto|cpu|cuda] [--precision fp32|bf16]
       [--compile] [--micro-batch-size 4] [--steps 30] [--warmup 10]
       [--threads N] [shape flags]
Defaults are the Small config's shape (configs/small.json, seq 512). Run it
with the project's Python: .venv/bin/python benchmarks/eager_llama.py.
"""
import argparse
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def attention(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):
        if k.size(1) != q.size(1):
            group = q.size(1) // k.size(1)
            k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    seq = q.size(2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return scores.float().softmax(-1).to(q.dtype) @ v


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.hidden_size // a.heads
        self.norm1, self.norm2 = RMSNorm(a.hidden_size, 1e-5), RMSNorm(a.hidden_size, 1e-5)
        self.qkv = nn.Linear(a.hidden_size, (a.heads + 2 * a.kv_heads) * self.head_dim, bias=False)
        self.o = nn.Linear(a.heads * self.head_dim, a.hidden_size, bias=False)
        self.gate_up = nn.Linear(a.hidden_size, 2 * a.intermediate_size, bias=False)
        self.down = nn.Linear(a.intermediate_size, a.hidden_size, bias=False)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        d = self.head_dim
        q, k, v = self.qkv(self.norm1(x)).split([self.heads * d, self.kv_heads * d, self.kv_heads * d], -1)
        q = rotate(q.view(b, s, -1, d).transpose(1, 2), cos, sin)
        k = rotate(k.view(b, s, -1, d).transpose(1, 2), cos, sin)
        v = v.view(b, s, -1, d).transpose(1, 2)
        x = x + self.o(attention(q, k, v).transpose(1, 2).reshape(b, s, -1))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, -1)
        return x + self.down(F.silu(gate) * up)


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a.vocab_size, a.hidden_size)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.num_layers))
        self.norm = RMSNorm(a.hidden_size, 1e-5)
        self.head = nn.Linear(a.hidden_size, a.vocab_size, bias=False)
        d = a.hidden_size // a.heads
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        angles = torch.outer(torch.arange(a.seq, dtype=torch.float64), inv_freq)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, ids, targets):
        x = self.embed(ids)
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto: cuda where there is one, else cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (forward and backward)")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the median")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--hidden-size", type=int, default=768)
    p.add_argument("--intermediate-size", type=int, default=3072)
    p.add_argument("--num-layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=12)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--seq", type=int, default=512)
    a = p.parse_args()
    if a.warmup >= a.steps:
        p.error("--warmup must leave at least one of the --steps")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                       "cpu" if a.device == "auto" else a.device)
    model = Llama(a).to(dev)
    step_model = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times, losses = [], []
    for _ in range(a.steps):
        ids = torch.randint(0, a.vocab_size, (a.micro_batch_size, a.seq + 1), device=dev)
        sync()
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = step_model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        sync()
        times.append(time.perf_counter() - start)
    step = statistics.median(times[a.warmup:])
    # ru_maxrss is in KB on Linux; on CUDA it is the host process only.
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    n = torch.get_num_threads()
    threads = f", {n} thread{'s' if n > 1 else ''}" if dev.type == "cpu" else ""
    print(f"{'compiled' if a.compile else 'eager'} PyTorch {torch.__version__} {dev.type} {a.precision} "
          f"mb {a.micro_batch_size}{threads}: {a.micro_batch_size * a.seq / step:.0f} tokens/s, "
          f"{1000 * step:.1f} ms/step (median of steps {a.warmup + 1}-{a.steps}), first step {times[0]:.1f} s, "
          f"final loss {losses[-1]:.3f}, peak RSS {rss_gb:.2f} GB")


if __name__ == "__main__":
    main()
