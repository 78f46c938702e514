#!/usr/bin/env python3
"""llama.cpp baseline for `generate/batch1_gguf_blocks` in benches/lm.rs: the same GGUF
decoded from its quantised blocks, 2 threads.

    python benches/reference/llama_cpp_lm.py ~/.cache/rlaif/SmolLM2-135M-Instruct.Q4_1.gguf

- generate/batch1: a 32-token prompt (random ids, evaluated from an empty cache) and 32
  greedy new tokens; new tokens/s over the whole call, as benches/lm.rs counts it.
- decode only: the 32 single-token steps alone, tokens/s.
Median of 5 runs after one warm-up. Needs llama-cpp-python (built from its sdist with
CMAKE_ARGS="-DGGML_NATIVE=ON", about 8 minutes on 2 cores). On a CPU with AMX, 0.3.36 built
that way segfaults in `Llama.eval`; build it without ggml's AMX path instead:
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF
-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF".
"""
import os
import random
import statistics
import sys
import time

from llama_cpp import Llama

THREADS = int(os.environ.get("THREADS", "2"))
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=THREADS, n_threads_batch=THREADS,
            n_batch=64, verbose=False)
V = llm.n_vocab()
rng = random.Random(0)
prompt = [rng.randrange(100, V) for _ in range(32)]


def run():
    """Prompt + 32 greedy tokens from an empty cache; returns (total s, decode-only s)."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    for _ in range(32):
        # greedy: the arg-max of the last row of logits, fed back as the next token
        logits = llm.scores[llm.n_tokens - 1]
        llm.eval([int(logits.argmax())])
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


run()
runs = [run() for _ in range(5)]
total = statistics.median(r[0] for r in runs)
decode = statistics.median(r[1] for r in runs)
print(f"generate/batch1: {total*1e3:.0f} ms, {32/total:.1f} new tokens/s "
      f"(decode steps alone {32/decode:.1f} tokens/s)")
