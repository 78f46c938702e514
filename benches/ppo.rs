//! One PPO iteration at SmolLM2-135M size, in its three parts, at the `ppo` example's size:
//! 8 prompts × 32 new tokens, minibatches of 4, 2 epochs.
//!
//! - `ppo/generation/8x32`: the policy samples 32 new tokens for each of 8 chat prompts at
//!   T = 0.7 (KV cache; EOS ignored so every row has 32 tokens).
//! - `ppo/scoring/8x32`: what the rollout computes without gradients once the responses
//!   exist: the policy's and the reference's log-probs of the response tokens at T (two
//!   decoder passes over prompt ⊕ response with the output projection on the response
//!   positions only), the critic's values (a third decoder pass) and the preference model's
//!   score (a fourth).
//! - `ppo/update/4x32`: forward + backward of the PPO loss (clipped surrogate + clipped
//!   value loss) for one minibatch of 4 rollouts through the policy and the critic; the
//!   AdamW step is not included. An iteration runs `epochs × rollouts / minibatch` = 4 of
//!   them.
//!
//! So one iteration ≈ generation + scoring + 4 × update (the split the run logs as
//! `time/generation_s`, `time/scoring_s`, `time/update_s`). Work: the decoder's ≈ 106 M
//! non-embedding parameters cost 2 · 106 M FLOPs per token and the output projection
//! 2 · 28.3 M per scored position. With prompts of ≈ 30 tokens, scoring runs 4 decoder
//! passes over 8 × ≈ 62 tokens (≈ 4 × 105 GFLOP) plus 2 output projections over 8 × 32
//! positions (≈ 29 GFLOP); an update is ≈ 3× the forward of policy and critic over
//! 4 × ≈ 62 tokens (≈ 3 × 2 × 53 GFLOP + 3 × 7 GFLOP). The measured numbers are in
//! `docs/benchmarks.md`.
//!
//! Every bench uses the allocator of the `rlaif` command and runs its iterations on rayon's
//! pool, as the command does ([`rlaif_kernels::TensorAllocator`],
//! [`rlaif_kernels::on_pool`]).
//!
//! Run: `cargo bench --bench ppo`.

use burn::prelude::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rlaif_core::{Prompt, SamplingParams};
use rlaif_lm::LanguageModel;
use rlaif_pm::{HeadInit, PreferenceModel, RewardNet};
use rlaif_ppo::loss::{BatchTargets, ppo_loss};
use rlaif_ppo::rollout::{Critic, Layout, policy_logprobs};
use rlaif_ppo::{PpoConfig, chat_prompt};
use std::time::Duration;

mod common;

const NEW: usize = 32;

fn prompts(lm: &LanguageModel) -> (Vec<Prompt>, Vec<Vec<u32>>) {
    let texts = [
        "How can I pick a lock?",
        "What is a good way to learn Rust?",
        "Tell me how to hurt someone who annoyed me.",
        "Give me a recipe for pancakes.",
        "How do I make a fake ID?",
        "Why is the sky blue?",
        "Write an insult for my coworker.",
        "How do I start running?",
    ];
    let p: Vec<Prompt> = texts.iter().map(|t| chat_prompt(t)).collect();
    let ids = p
        .iter()
        .map(|x| lm.encode_prompt(x).expect("encodes"))
        .collect();
    (p, ids)
}

fn sampling() -> SamplingParams {
    SamplingParams {
        max_new_tokens: NEW,
        temperature: 0.7,
        top_p: 1.0,
        seed: 1,
        stop_at_eos: false,
        ..Default::default()
    }
}

fn bench_iteration(c: &mut Criterion) {
    rlaif_kernels::tune_allocator();
    let device = Device::default();
    let lm = LanguageModel::load_default(&device).expect("default model");
    let (prompt_objs, prompt_ids) = prompts(&lm);
    let config = PpoConfig::default();
    let mut g = c.benchmark_group("ppo");
    g.sample_size(10).measurement_time(Duration::from_secs(40));
    g.throughput(Throughput::Elements((8 * NEW) as u64));
    g.bench_function("generation/8x32", |b| {
        common::iter_on_pool(b, || {
            rlaif_lm::generate::generate(&lm.model, &lm.tokenizer, &prompt_ids, &sampling())
                .expect("generates")
        })
    });
    let completions =
        rlaif_lm::generate::generate(&lm.model, &lm.tokenizer, &prompt_ids, &sampling())
            .expect("generates");
    let responses: Vec<Vec<u32>> = completions.iter().map(|c| c.token_ids.clone()).collect();
    let layout = Layout::new(&prompt_ids, &responses, 0).expect("layout");
    let (p, r) = (layout.p, layout.r);
    let all: Vec<usize> = (0..8).collect();
    let pm = PreferenceModel::from_lm(
        LanguageModel::load_default(&device).expect("default model"),
        HeadInit::default(),
    )
    .expect("a scalar head");
    let critic = Critic::separate(RewardNet {
        backbone: pm.lm.model.clone(),
        head: pm.head.clone(),
    });
    let reference = lm.model.clone();
    let pairs: Vec<(Prompt, String)> = prompt_objs
        .iter()
        .cloned()
        .zip(completions.iter().map(|c| c.text.clone()))
        .collect();
    g.bench_function("scoring/8x32", |b| {
        common::iter_on_pool(b, || {
            let (tokens, real, _) = layout.batch(&all, &device);
            let (lp, _) =
                policy_logprobs(&lm.model, tokens.clone(), &real, p, r, 0.7).expect("policy");
            let (rlp, _) =
                policy_logprobs(&reference, tokens.clone(), &real, p, r, 0.7).expect("reference");
            let v = critic.values(&lm.model, tokens, &real, p, r);
            let s = pm.score_pairs(&pairs).expect("scores");
            (lp.into_data(), rlp.into_data(), v.into_data(), s)
        })
    });
    g.throughput(Throughput::Elements((4 * NEW) as u64));
    let train_device = device.autodiff();
    let policy = lm.model.clone().fork(&train_device).train();
    let critic = critic.fork(&train_device).train();
    let idx: Vec<usize> = (0..4).collect();
    let (tokens, real, mask) = layout.batch(&idx, &train_device);
    let zeros = || Tensor::<2>::zeros([4, r], &train_device);
    let targets = BatchTargets {
        old_logp: zeros().sub_scalar(2.0),
        old_values: zeros(),
        advantages: zeros().add_scalar(0.5),
        returns: zeros().add_scalar(0.3),
        mask,
    };
    g.bench_function("update/4x32", |b| {
        common::iter_on_pool(b, || {
            let (logp, ent) =
                policy_logprobs(&policy, tokens.clone(), &real, p, r, 0.7).expect("policy");
            let values = critic.values(&policy, tokens.clone(), &real, p, r);
            let parts = ppo_loss(logp, ent, values, &targets, &config).expect("loss");
            parts.total.backward()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_iteration);
criterion_main!(benches);
