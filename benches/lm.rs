//! Language-model throughput on the default model (SmolLM2-135M-Instruct, f32 weights):
//!
//! - `generate/batch1`, `generate/batch8`: greedy generation of 32 new tokens after a
//!   32-token prompt (KV cache), throughput in new tokens/s.
//! - `generate/batch8_top_p`: as `batch8`, sampled at T = 1 with top-p 0.9 (the pipeline's
//!   settings), so the sampler's cost shows beside the greedy figure.
//! - `generate/batch1_gguf_blocks`, `generate/batch8_gguf_blocks`: as `batch1` / `batch8`
//!   with the model loaded by `LanguageModel::load_for_inference`, whose decoding products
//!   read the GGUF's Q4_1 / Q8_0 blocks (97 MB per step instead of 540 MB) — llama.cpp's
//!   setting. `generate/batch1_gguf_blocks_first_token`: the same prompt and one new token,
//!   so that the 31 decoding steps after it can be timed apart (the difference).
//!   `generate/batch1_gguf_blocks_after1024`: 32 new tokens after a 1024-token prompt, so that
//!   decoding at a long context (every step reads ≈ 1040 cached keys and values per layer)
//!   can be timed apart from `prefill/1024` (the same prompt and first token).
//! - `prefill/1024`: one 1024-token prompt through the model into the KV cache and the first
//!   new token (`generate` with one new token), throughput in prompt tokens/s: the critique
//!   and revision prompts with their few-shot exemplars are this long.
//! - `train_step/4x256`: forward + backward of the causal-LM loss on a 4 × 256 batch,
//!   throughput in tokens/s (the optimizer step is not included); `train_step/4x256_bf16`:
//!   the same with `MatmulPrecision::Bf16` (every projection's and the output layer's
//!   inputs rounded to bf16 and multiplied on AMX tiles, f32 weights and sums; on CPUs with
//!   AMX-BF16 only), beside PyTorch's bf16 autocast.
//!
//! Every bench uses the allocator of the `rlaif` command ([`rlaif_kernels::TensorAllocator`])
//! and runs on rayon's pool as the command does ([`rlaif_kernels::on_pool`]; `generate`
//! moves there itself), so the numbers are what the command gets.
//!
//! Run: `cargo bench --bench lm`. The same measurements in PyTorch are made by
//! `benches/reference/torch_lm.py`, and `generate/batch1_gguf_blocks` in llama.cpp by
//! `benches/reference/llama_cpp_lm.py`; all are recorded in `docs/benchmarks.md`.
//! Cost per step: a forward pass reads all 135 M weights once (540 MB in f32), so batch-1
//! decoding is bound by memory bandwidth (≈ 90 tokens/s at 50 GB/s); the 4 × 256 training
//! step is ≈ 0.85 TFLOP (6 · params · tokens, plus attention).

use burn::prelude::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rlaif_core::SamplingParams;
use rlaif_lm::{LanguageModel, MatmulPrecision, score};
use std::time::Duration;

mod common;

const PROMPT: usize = 32;
/// The prompt of `prefill/1024` and `generate/batch1_gguf_blocks_after1024`.
const LONG_PROMPT: usize = 1024;
const NEW: usize = 32;

/// The seed of the token ids.
const SEED: u64 = 0x9e3779b97f4a7c15;

fn bench_generate(c: &mut Criterion) {
    rlaif_kernels::tune_allocator();
    let lm = LanguageModel::load_default(&Device::default()).expect("default model");
    let params = SamplingParams {
        stop_at_eos: false,
        ..SamplingParams::greedy(NEW)
    };
    let mut g = c.benchmark_group("generate");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    for batch in [1usize, 8] {
        let p = common::random_ids(SEED, batch, PROMPT, lm.config.vocab_size);
        g.throughput(Throughput::Elements((batch * NEW) as u64));
        g.bench_function(format!("batch{batch}"), |b| {
            b.iter(|| rlaif_lm::generate::generate(&lm.model, &lm.tokenizer, &p, &params).unwrap())
        });
    }
    // the pipeline's sampling settings (T = 1, top-p 0.9): the sampler's share of a step
    let sampled = SamplingParams {
        temperature: 1.0,
        top_p: 0.9,
        ..params.clone()
    };
    let p = common::random_ids(SEED, 8, PROMPT, lm.config.vocab_size);
    g.throughput(Throughput::Elements((8 * NEW) as u64));
    g.bench_function("batch8_top_p", |b| {
        b.iter(|| rlaif_lm::generate::generate(&lm.model, &lm.tokenizer, &p, &sampled).unwrap())
    });
    // the same file loaded for inference: decoding reads the GGUF's Q4_1 / Q8_0 blocks
    let path = rlaif_lm::resolve::default_model().expect("default model");
    let q = LanguageModel::load_for_inference(&path, &Device::default()).expect("default model");
    for batch in [1usize, 8] {
        let p = common::random_ids(SEED, batch, PROMPT, lm.config.vocab_size);
        g.throughput(Throughput::Elements((batch * NEW) as u64));
        g.bench_function(format!("batch{batch}_gguf_blocks"), |b| {
            b.iter(|| rlaif_lm::generate::generate(&q.model, &q.tokenizer, &p, &params).unwrap())
        });
    }
    // the prompt and the first new token alone: what `batch1_gguf_blocks` spends before its
    // 31 decoding steps (llama.cpp's script reports its decoding steps apart)
    let p = common::random_ids(SEED, 1, PROMPT, lm.config.vocab_size);
    let first = SamplingParams {
        max_new_tokens: 1,
        ..params.clone()
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("batch1_gguf_blocks_first_token", |b| {
        b.iter(|| rlaif_lm::generate::generate(&q.model, &q.tokenizer, &p, &first).unwrap())
    });
    // 32 new tokens after a 1024-token prompt (the critique stage's few-shot prompts): each
    // step attends over ≈ 1040 cached positions; minus `prefill/1024` (the same prompt and
    // first token), what the 31 steps after it cost at that context
    let long = common::random_ids(SEED, 1, LONG_PROMPT, lm.config.vocab_size);
    g.throughput(Throughput::Elements(NEW as u64));
    g.bench_function(format!("batch1_gguf_blocks_after{LONG_PROMPT}"), |b| {
        b.iter(|| rlaif_lm::generate::generate(&q.model, &q.tokenizer, &long, &params).unwrap())
    });
    g.finish();
}

fn bench_prefill(c: &mut Criterion) {
    rlaif_kernels::tune_allocator();
    let lm = LanguageModel::load_default(&Device::default()).expect("default model");
    let params = SamplingParams {
        stop_at_eos: false,
        ..SamplingParams::greedy(1)
    };
    let len = LONG_PROMPT;
    let p = common::random_ids(SEED, 1, len, lm.config.vocab_size);
    let mut g = c.benchmark_group("prefill");
    g.sample_size(10).measurement_time(Duration::from_secs(40));
    g.throughput(Throughput::Elements(len as u64));
    g.bench_function(format!("{len}"), |b| {
        b.iter(|| rlaif_lm::generate::generate(&lm.model, &lm.tokenizer, &p, &params).unwrap())
    });
    g.finish();
}

fn bench_train_step(c: &mut Criterion) {
    rlaif_kernels::tune_allocator();
    let device = Device::default().autodiff();
    let lm = LanguageModel::load_default(&device).expect("default model");
    let (b, t) = (4usize, 256usize);
    let seqs = common::random_ids(SEED, b, t, lm.config.vocab_size);
    let (tokens, real) = score::pad_right(&seqs, 0, &device);
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10).measurement_time(Duration::from_secs(60));
    g.throughput(Throughput::Elements((b * t) as u64));
    let step = |lm: &LanguageModel| {
        let loss = -score::token_logprobs(&lm.model, tokens.clone(), &real)
            .expect("a 4 × 256 batch")
            .mean();
        loss.backward()
    };
    g.bench_function("4x256", |bench| common::iter_on_pool(bench, || step(&lm)));
    // the same step with every product's inputs rounded to bf16 on AMX (f32 weights and
    // sums), beside PyTorch's `torch.autocast("cpu", dtype=torch.bfloat16)`
    let mut lm = lm;
    if lm.model.set_matmul_precision(MatmulPrecision::Bf16).is_ok() {
        g.bench_function("4x256_bf16", |bench| {
            common::iter_on_pool(bench, || step(&lm))
        });
    } else {
        eprintln!("train_step/4x256_bf16: no AMX-BF16 on this machine, skipped");
    }
    g.finish();
}

criterion_group!(benches, bench_generate, bench_prefill, bench_train_step);
criterion_main!(benches);
