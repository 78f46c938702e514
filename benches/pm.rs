//! Preference-model cost per pair at SmolLM2-135M size, beside the language model's forward
//! over the same tokens:
//!
//! - `pm_forward/8pairs`: the scores of 8 comparisons (16 sequences of 128 tokens: prompt ⊕
//!   response a, prompt ⊕ response b), no gradients: the decoder, then one `[576] · [576, 1]`
//!   head product per sequence at its last real token. Throughput in pairs/s.
//! - `lm_forward/8pairs`: the same 16 × 128 tokens through the language model with its
//!   output projection and the log-probability of every next token (what scoring a
//!   response under the policy costs), no gradients.
//! - `pm_train_step/4pairs`: forward + backward of the Bradley–Terry loss on 4 comparisons
//!   (8 sequences of 128 tokens); the optimizer step is not included.
//!
//! Every bench uses the allocator of the `rlaif` command and runs its iterations on rayon's
//! pool, as the command does ([`rlaif_kernels::TensorAllocator`],
//! [`rlaif_kernels::on_pool`]).
//!
//! Run: `cargo bench --bench pm`; the numbers of this machine are in `docs/benchmarks.md`.
//! Work per pair: the decoder's ≈ 106 M non-embedding parameters cost 2 · 106 M FLOPs per
//! token, so a pair of 2 × 128 tokens is ≈ 54 GFLOP forward (plus attention, ≈ 2 %); the
//! language model adds its output projection, 2 · 28.3 M FLOPs per token (49 152 × 576),
//! ≈ 14.5 GFLOP per pair, and a 49 152-wide log-softmax per token. Training is ≈ 3× the
//! forward.

use burn::prelude::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rlaif_lm::{LanguageModel, score};
use rlaif_pm::{HeadInit, PreferenceModel};
use std::time::Duration;

mod common;

const LEN: usize = 128;

/// The seed of the token ids.
const SEED: u64 = 0x2545f4914f6cdd1d;

fn bench_forward(c: &mut Criterion) {
    rlaif_kernels::tune_allocator();
    let device = Device::default();
    let lm = LanguageModel::load_default(&device).expect("default model");
    let seqs = common::random_ids(SEED, 16, LEN, lm.config.vocab_size);
    let mut g = c.benchmark_group("forward");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(8));
    let (tokens, real) = score::pad_right(&seqs, 0, &device);
    g.bench_function("lm_forward/8pairs", |b| {
        common::iter_on_pool(b, || {
            score::token_logprobs(&lm.model, tokens.clone(), &real)
                .expect("16 × 128 tokens")
                .into_data()
        })
    });
    let mut pm = PreferenceModel::from_lm(lm, HeadInit::default()).expect("a scalar head");
    pm.batch_size = 16;
    g.bench_function("pm_forward/8pairs", |b| {
        common::iter_on_pool(b, || pm.score_tokens(&seqs).expect("16 × 128 tokens"))
    });
    g.finish();
}

fn bench_train_step(c: &mut Criterion) {
    rlaif_kernels::tune_allocator();
    let device = Device::default().autodiff();
    let lm = LanguageModel::load_default(&device).expect("default model");
    let seqs = common::random_ids(SEED, 8, LEN, lm.config.vocab_size);
    let pm = PreferenceModel::from_lm(lm, HeadInit::default()).expect("a scalar head");
    let net = rlaif_pm::RewardNet {
        backbone: pm.lm.model,
        head: pm.head,
    };
    let (tokens, real) = score::pad_right(&seqs, 0, &device);
    let mut g = c.benchmark_group("train");
    g.sample_size(10).measurement_time(Duration::from_secs(60));
    g.throughput(Throughput::Elements(4));
    g.bench_function("pm_train_step/4pairs", |b| {
        common::iter_on_pool(b, || {
            let r = net.rewards(tokens.clone(), &real).expect("8 × 128 tokens");
            let a = r.clone().slice(0..4);
            let bb = r.slice(4..8);
            // −log σ(r_a − r_b) with hard labels: the Bradley–Terry loss.
            let loss = -burn::tensor::activation::log_sigmoid(a - bb).mean();
            loss.backward()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_forward, bench_train_step);
criterion_main!(benches);
