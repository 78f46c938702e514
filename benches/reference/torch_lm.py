#!/usr/bin/env python3
"""PyTorch baseline for benches/lm.rs: the same measurements with transformers on the same
GGUF (dequantised to f32), 2 threads.

    python benches/reference/torch_lm.py ~/.cache/rlaif/SmolLM2-135M-Instruct.Q4_1.gguf

- generate/batch{1,8}: greedy, 32-token prompt, 32 new tokens, KV cache; new tokens/s.
- prefill/1024: one 1024-token prompt and its first new token (`generate` with one new
  token); prompt tokens/s.
- train_step/4x256: forward + backward of the causal-LM loss; tokens/s; `_bf16`: the same
  under `torch.autocast("cpu", dtype=torch.bfloat16)`.
Median of 5 runs after one warm-up. Needs torch, transformers, gguf, accelerate.
"""
import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

gguf = sys.argv[1]
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
)
V = model.config.vocab_size


def median_time(fn, runs=5):
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


model.eval()
for batch in (1, 8):
    ids = torch.randint(100, V, (batch, 32))
    mask = torch.ones_like(ids)

    def gen():
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, max_new_tokens=32, min_new_tokens=32,
                           do_sample=False, pad_token_id=0)

    t = median_time(gen)
    print(f"generate/batch{batch}: {t*1e3:.0f} ms, {batch*32/t:.1f} new tokens/s")

ids = torch.randint(100, V, (1, 1024))


def prefill():
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                       min_new_tokens=1, do_sample=False, pad_token_id=0)


t = median_time(prefill)
print(f"prefill/1024: {t*1e3:.0f} ms, {1024/t:.1f} prompt tokens/s")

model.train()
ids = torch.randint(100, V, (4, 256))


def step():
    out = model(ids, labels=ids)
    out.loss.backward()
    model.zero_grad(set_to_none=True)


t = median_time(step)
print(f"train_step/4x256: {t*1e3:.0f} ms, {4*256/t:.1f} tokens/s")


def step_bf16():
    # PyTorch's mixed precision on CPU: linear layers' inputs cast to bf16 (oneDNN, AMX where
    # the CPU has it), f32 weights and f32 gradients
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=ids)
    out.loss.backward()
    model.zero_grad(set_to_none=True)


t = median_time(step_bf16)
print(f"train_step/4x256_bf16 (autocast): {t*1e3:.0f} ms, {4*256/t:.1f} tokens/s")
