#!/usr/bin/env python3
"""PyTorch baselines for benches/kernels.rs, 2 threads, median of 7 after a warm-up.

    python benches/reference/torch_kernels.py

- token log-probs: log_softmax(logits / T, -1).gather(-1, labels) at [8, 256, 49152] and
  [1, 1024, 49152], forward and forward + backward (as TRL computes them);
- GAE over [64, 512]: the reverse loop over time of TRL's PPO trainer.
"""
import statistics
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)


def median_ms(fn, runs=7):
    fn()
    t = []
    for _ in range(runs):
        s = time.perf_counter()
        fn()
        t.append(time.perf_counter() - s)
    return statistics.median(t) * 1e3


for shape in [(8, 256, 49152), (1, 1024, 49152)]:
    logits = torch.randn(*shape) * 3
    labels = torch.randint(0, shape[2], shape[:2])

    def fwd():
        with torch.no_grad():
            torch.log_softmax(logits / 0.7, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)

    x = logits.clone().requires_grad_(True)

    def fwd_bwd():
        lp = torch.log_softmax(x / 0.7, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        lp.sum().backward()
        x.grad = None

    gb = logits.numel() * 4 / 1e9
    f = median_ms(fwd)
    fb = median_ms(fwd_bwd)
    print(f"token_logprobs {list(shape)}: forward {f:.1f} ms ({gb / f * 1e3:.2f} GB/s of logits), "
          f"forward+backward {fb:.1f} ms")

rewards, values = torch.randn(64, 512), torch.randn(64, 512)
gamma, lam = 1.0, 0.95


def gae():
    last = torch.zeros(64)
    adv = []
    for t in reversed(range(512)):
        nv = values[:, t + 1] if t < 511 else torch.zeros(64)
        delta = rewards[:, t] + gamma * nv - values[:, t]
        last = delta + gamma * lam * last
        adv.append(last)
    torch.stack(adv[::-1], 1)


print(f"GAE [64, 512] reverse loop: {median_ms(gae):.2f} ms")
