//! PPO on tiny random models: the score lands on the last real response token, the ratio
//! is exactly 1 before the first update, NaN in padding reaches nothing, the KL of the
//! policy to itself is 0, learning happens with a rule-based reward and a larger β keeps
//! the policy closer, and a resumed run equals an uninterrupted one bitwise.

use crate::config::{AdaptiveKl, KlKind, PpoConfig};
use crate::loss::{BatchTargets, ppo_loss};
use crate::prompts::{PromptMix, PromptSet, chat_prompt};
use crate::reward::{Reward, shape_scores, token_rewards};
use crate::rollout::{Layout, host, policy_logprobs, rows};
use crate::train::{CriticInit, PpoModels, SampleRecord, experience, train};
use burn::prelude::*;
use rlaif_core::{Prompt, SamplingParams};
use rlaif_kernels::KlEstimator;
use rlaif_lm::LanguageModel;
use rlaif_lm::tiny::{tiny_config, tiny_lm};
use rlaif_pm::RewardStats;
use rlaif_revision::PromptRecord;
use std::sync::atomic::AtomicBool;

fn lm(seed: u64) -> LanguageModel {
    tiny_lm(&tiny_config(), seed, &Device::default()).unwrap()
}

fn records(n: usize) -> Vec<PromptRecord> {
    (0..n)
        .map(|i| {
            PromptRecord::new(
                format!("p{i}"),
                format!("question {i}{}", "?".repeat(i % 3)),
            )
        })
        .collect()
}

fn mix(n: usize) -> PromptMix {
    PromptMix::new(vec![
        PromptSet::new("prompts.jsonl", 1.0, records(n)).unwrap(),
    ])
    .unwrap()
}

fn t2(v: Vec<f32>, b: usize, r: usize) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, [b, r]), &Device::default())
}

#[test]
fn the_score_lands_on_the_last_real_response_token_whatever_the_padding() {
    // Prompts of 1, 3 and 2 tokens (left padding), responses of 4 (full length, no EOS),
    // 1 (just EOS) and 2 tokens (right padding).
    let prompts = vec![vec![5], vec![6, 7, 8], vec![9, 10]];
    let responses = vec![vec![11, 12, 13, 14], vec![258], vec![15, 258]];
    let layout = Layout::new(&prompts, &responses, 256).unwrap();
    assert_eq!((layout.p, layout.r), (3, 4));
    assert_eq!(
        layout.mask,
        vec![1., 1., 1., 1., 1., 0., 0., 0., 1., 1., 0., 0.]
    );
    let mask = t2(layout.mask.clone(), 3, 4);
    let logp = t2(vec![-1.0; 12], 3, 4);
    let ref_logp = t2(vec![-1.5; 12], 3, 4);
    let scores = Tensor::<1>::from_floats([10.0, 20.0, 30.0], &Device::default());
    let out = token_rewards(scores, logp, ref_logp, mask, 0.1, KlEstimator::K1).unwrap();
    let r = host(out.rewards).unwrap();
    let kl = -0.1 * 0.5f32; // −β·(log π − log π_ref)
    let want = [
        kl,
        kl,
        kl,
        10.0 + kl, // no EOS: the score on the last (budget-ending) token
        20.0 + kl,
        0.0,
        0.0,
        0.0, // EOS first: nothing on padding
        kl,
        30.0 + kl,
        0.0,
        0.0,
    ];
    for (i, (g, w)) in r.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-6, "slot {i}: {g} vs {w}");
    }
}

#[test]
fn scores_are_normalised_clipped_and_a_missing_eos_is_penalised() {
    let stats = RewardStats {
        mean: 1.0,
        std: 2.0,
        count: 10,
        source: "reference".into(),
    };
    let config = PpoConfig {
        score_clip: Some(3.0),
        missing_eos_penalty: Some(0.5),
        ..Default::default()
    };
    let s = shape_scores(
        &[3.0, 101.0, 3.0],
        &[true, true, false],
        Some(&stats),
        &config,
    );
    assert_eq!(s, vec![1.0, 3.0, 0.5]);
    let plain = PpoConfig {
        normalize_scores: false,
        score_clip: None,
        missing_eos_penalty: None,
        ..Default::default()
    };
    assert_eq!(
        shape_scores(&[3.0, 101.0], &[false, true], Some(&stats), &plain),
        vec![3.0, 101.0]
    );
}

#[test]
fn a_non_finite_score_is_an_error_naming_the_response() {
    let f = |_: &Prompt, r: &str| if r == "bad" { f32::NAN } else { 1.0 };
    let reward = Reward::function(&f);
    let pairs = vec![
        (chat_prompt("a"), "good".to_string()),
        (chat_prompt("b"), "bad".to_string()),
    ];
    let e = reward.raw_scores(&pairs).unwrap_err().to_string();
    assert!(e.contains("response 1") && e.contains("NaN"), "{e}");
}

/// The rollout of a tiny policy on 6 prompts, with its experience.
fn tiny_rollout(config: &PpoConfig) -> (LanguageModel, Vec<Vec<u32>>, Vec<rlaif_core::Completion>) {
    let sl = lm(3);
    let prompt_ids: Vec<Vec<u32>> = records(6)
        .iter()
        .map(|r| sl.encode_prompt(&chat_prompt(&r.prompt)).unwrap())
        .collect();
    let completions = rlaif_lm::generate::generate(
        &sl.model,
        &sl.tokenizer,
        &prompt_ids,
        &SamplingParams {
            max_new_tokens: config.max_new_tokens,
            temperature: config.temperature,
            top_p: 1.0,
            seed: 11,
            ..Default::default()
        },
    )
    .unwrap();
    (sl, prompt_ids, completions)
}

#[test]
fn the_ratio_is_exactly_one_before_the_first_update_and_the_kl_to_itself_is_zero() {
    let config = PpoConfig {
        temperature: 0.7,
        max_new_tokens: 10,
        micro_batch_size: 2,
        ..Default::default()
    };
    let (sl, prompt_ids, completions) = tiny_rollout(&config);
    let responses: Vec<Vec<u32>> = completions.iter().map(|c| c.token_ids.clone()).collect();
    let models = PpoModels::new(sl, CriticInit::Policy).unwrap();
    let device = Device::default();
    let train_device = device.clone().autodiff();
    // As `train` does: policy and reference on the training device, untracked.
    let policy = models.sl.model.clone().fork(&train_device);
    let frozen = policy.clone().no_grad();
    let exp = experience(
        &frozen,
        &frozen,
        &models.critic,
        &prompt_ids,
        &responses,
        &[1.0; 6],
        256,
        0.05,
        &config,
        &train_device,
        &device,
    )
    .unwrap();
    // The policy is the reference: every per-token KL is exactly 0.
    assert_eq!(exp.kl_mean, 0.0);
    // The rollout's log-probs equal those the sampler drew from (logits / T), to rounding.
    let r = exp.layout.r;
    for (b, c) in completions.iter().enumerate() {
        for (t, &lp) in c.logprobs.iter().enumerate() {
            let got = exp.old_logp[b * r + t];
            assert!(
                (got - lp).abs() < 1e-4,
                "row {b} token {t}: {got} vs the sampler's {lp}"
            );
        }
    }
    // The training forward (autodiff device, the rollout's micro-batches in another
    // order) reproduces them bit for bit: ratio exactly 1.
    for idx in [vec![4usize, 5], vec![0, 1], vec![2, 3]] {
        let (tokens, real, mask) = exp.layout.batch(&idx, &train_device);
        let (logp, _) =
            policy_logprobs(&policy, tokens, &real, exp.layout.p, r, config.temperature).unwrap();
        let old = rows(&exp.old_logp, r, &idx, &train_device);
        let ratio = host((logp - old).exp() * mask.clone()).unwrap();
        let m = host(mask).unwrap();
        for (x, k) in ratio.iter().zip(m) {
            if k > 0.0 {
                assert_eq!(*x, 1.0, "rows {idx:?}");
            }
        }
    }
}

#[test]
fn a_nan_in_a_masked_slot_changes_nothing() {
    let device = Device::default().autodiff();
    let (b, r) = (2, 3);
    let mask_v = vec![1., 1., 0., 1., 0., 0.];
    let clean = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [b, r]), &device);
    let poison = |mut v: Vec<f32>| {
        for (x, m) in v.iter_mut().zip(&mask_v) {
            if *m == 0.0 {
                *x = f32::NAN;
            }
        }
        Tensor::<2>::from_data(TensorData::new(v, [b, r]), &device)
    };
    let base = [
        vec![-1.0, -2.0, -0.5, -1.5, -0.1, -0.2],
        vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        vec![1.0, -1.0, 0.5, 0.3, 0.0, 0.0],
        vec![0.5, 0.7, 0.1, 0.2, 0.0, 0.0],
    ];
    let config = PpoConfig {
        entropy_coef: 0.01,
        ..Default::default()
    };
    let run = |make: &dyn Fn(Vec<f32>) -> Tensor<2>| {
        let logp = Tensor::<2>::from_data(
            TensorData::new(vec![-0.9, -2.1, -0.4, -1.4, -0.3, -0.3], [b, r]),
            &device,
        )
        .require_grad();
        let values = Tensor::<2>::from_data(
            TensorData::new(vec![0.2, 0.1, 0.0, 0.5, 0.0, 0.0], [b, r]),
            &device,
        )
        .require_grad();
        let entropy = make(vec![2.0, 2.1, 2.2, 2.3, 2.4, 2.5]);
        let targets = BatchTargets {
            old_logp: make(base[0].clone()),
            old_values: make(base[1].clone()),
            advantages: make(base[2].clone()),
            returns: make(base[3].clone()),
            mask: clean(mask_v.clone()),
        };
        let parts = ppo_loss(logp.clone(), entropy, values.clone(), &targets, &config).unwrap();
        let grads = parts.total.clone().backward();
        (
            host(parts.total).unwrap(),
            host(logp.grad(&grads).unwrap()).unwrap(),
            host(values.grad(&grads).unwrap()).unwrap(),
        )
    };
    let a = run(&clean);
    let z = run(&poison);
    assert!(a.0[0].is_finite());
    assert_eq!(a, z);
    // And in the per-token rewards.
    let dev = Device::default();
    let p = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [b, r]), &dev);
    let m = p(mask_v.clone());
    let s = || Tensor::<1>::from_floats([1.0, 2.0], &dev);
    let lp = vec![-1.0, -2.0, f32::NAN, -1.0, f32::INFINITY, f32::NAN];
    let lp_clean = vec![-1.0, -2.0, 0.0, -1.0, 0.0, 0.0];
    let x = token_rewards(
        s(),
        p(lp),
        p(vec![-1.1; 6]),
        m.clone(),
        0.1,
        KlEstimator::K3,
    )
    .unwrap();
    let y = token_rewards(s(), p(lp_clean), p(vec![-1.1; 6]), m, 0.1, KlEstimator::K3).unwrap();
    assert_eq!(host(x.rewards).unwrap(), host(y.rewards).unwrap());
}

/// Mean reward of the first and last `k` iterations, and the mean KL of the last `k`.
fn run_rule(beta: f64, iterations: usize, dir: &std::path::Path) -> (f64, f64, f64) {
    run_rule_with(CriticInit::Policy, beta, iterations, dir)
}

fn run_rule_with(
    critic: CriticInit<'_>,
    beta: f64,
    iterations: usize,
    dir: &std::path::Path,
) -> (f64, f64, f64) {
    run_rule_seed(critic, beta, iterations, dir, 1)
}

fn run_rule_seed(
    critic: CriticInit<'_>,
    beta: f64,
    iterations: usize,
    dir: &std::path::Path,
    seed: u64,
) -> (f64, f64, f64) {
    let models = PpoModels::new(lm(5), critic).unwrap();
    let count = |_: &Prompt, r: &str| r.matches(['a', 'e', 'i', 'o', 'u']).count() as f32;
    let config = PpoConfig {
        iterations,
        rollouts_per_iteration: 16,
        minibatch_size: 8,
        micro_batch_size: 8,
        ppo_epochs: 2,
        temperature: 1.0,
        max_new_tokens: 8,
        kl_coef: beta,
        // The penalty of the KL-regularised objective the optimum below is computed for.
        kl_estimator: KlKind::K1,
        policy_lr: 1e-2,
        critic_lr: 1e-2,
        missing_eos_penalty: None,
        samples_every: 0,
        seed,
        ..Default::default()
    };
    let run = train(
        models,
        &Reward::function(&count),
        &mix(16),
        &[],
        &config,
        dir,
        &AtomicBool::new(false),
    )
    .unwrap();
    let log = &run.report.log;
    let k = 5;
    let mean = |xs: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = xs.collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    (
        mean(&mut log[..k].iter().map(|l| l.raw_scores)),
        mean(&mut log[log.len() - k..].iter().map(|l| l.raw_scores)),
        mean(&mut log[log.len() - k..].iter().map(|l| l.kl)),
    )
}

/// The KL-regularised optimum of a reward of +1 per vowel (5 of 259 near-uniform tokens):
/// π*(x) ∝ π_ref(x)·exp(r(x)/β) per token (Ziegler et al. 2019; Rafailov et al. 2023,
/// eq. 4). At β = 0.3 each vowel gets e^{10/3}/(254 + 5e^{10/3}) ≈ 0.071: 2.8 vowels per
/// 8-token answer at a KL of ≈ 8 · 0.76 ≈ 6.1 nats; at β = 1, 0.41 vowels at ≈ 0.15 nats.
/// Chance is 8 · 5/259 ≈ 0.15 vowels; collapsing onto the vowels would cost ≈ 32 nats.
/// Forty iterations get part of the way (seeds 1–3, both critics: 0.95–1.7 vowels at
/// 1.8–4.2 nats), so the assertions ask for a clear rise, a KL below the optimum's
/// neighbourhood, and a much smaller KL at β = 1.
#[test]
fn a_rule_based_reward_is_learned_and_a_larger_beta_keeps_the_policy_closer() {
    let d1 = tempfile::tempdir().unwrap();
    let (start, end, kl) = run_rule(0.3, 40, d1.path());
    eprintln!("β 0.3: mean count {start:.3} → {end:.3}, KL {kl:.3}");
    assert!(
        end > 0.6 && end > 2.0 * start,
        "mean vowel count per answer: first 5 iterations {start:.3}, last 5 {end:.3}"
    );
    assert!(
        kl > 0.3 && kl < 9.0,
        "KL stays near the regularised optimum (≈ 6), far from collapse (≈ 32): {kl:.3}"
    );
    let d2 = tempfile::tempdir().unwrap();
    let (_, end_large, kl_large) = run_rule(1.0, 40, d2.path());
    eprintln!("β 1: mean count → {end_large:.3}, KL {kl_large:.3}");
    assert!(
        kl_large < 0.5 * kl,
        "KL with β = 1: {kl_large:.3}; with β = 0.3: {kl:.3}"
    );
    assert!(d1.path().join("curves.svg").exists() && d1.path().join("policy/config.json").exists());
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one_bitwise() {
    for shared in [false, true] {
        resume_matches(shared);
    }
}

/// The resume test with a critic of its own or on the policy's trunk.
fn resume_matches(shared: bool) {
    let init = || {
        let critic = if shared {
            CriticInit::SharedTrunk
        } else {
            CriticInit::Policy
        };
        PpoModels::new(lm(2), critic).unwrap()
    };
    let count = |_: &Prompt, r: &str| r.matches('e').count() as f32;
    let config = PpoConfig {
        iterations: 4,
        rollouts_per_iteration: 4,
        minibatch_size: 2,
        micro_batch_size: 1,
        max_new_tokens: 6,
        temperature: 1.0,
        policy_lr: 1e-3,
        critic_lr: 2e-3,
        adaptive_kl: Some(AdaptiveKl {
            target: 0.5,
            horizon: 20.0,
        }),
        kl_estimator: KlKind::K3,
        samples_every: 2,
        sample_max_new_tokens: 5,
        seed: 9,
        ..Default::default()
    };
    let held = records(2);
    let once = tempfile::tempdir().unwrap();
    let a = train(
        init(),
        &Reward::function(&count),
        &mix(5),
        &held,
        &config,
        once.path(),
        &AtomicBool::new(false),
    )
    .unwrap();
    // The same run stopped after 2 iterations (checkpoint), then resumed.
    let twice = tempfile::tempdir().unwrap();
    let first = PpoConfig {
        iterations: 4,
        ..config.clone()
    };
    struct StopAfter(std::sync::atomic::AtomicUsize, usize);
    impl rlaif_core::progress::Observer for StopAfter {
        fn update(&self, p: &rlaif_core::progress::Progress) {
            self.0
                .store(p.done as usize, std::sync::atomic::Ordering::SeqCst);
        }
        fn should_stop(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst) >= self.1
        }
    }
    let stop = StopAfter(Default::default(), 2);
    let part = train(
        init(),
        &Reward::function(&count),
        &mix(5),
        &held,
        &first,
        twice.path(),
        &stop,
    )
    .unwrap();
    assert!(part.report.interrupted && part.report.iterations == 2);
    // Resuming with another β is refused, naming it.
    let other = PpoConfig {
        kl_coef: 0.2,
        ..config.clone()
    };
    let e = train(
        init(),
        &Reward::function(&count),
        &mix(5),
        &held,
        &other,
        twice.path(),
        &AtomicBool::new(false),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("kl_coef"), "{e}");
    let b = train(
        init(),
        &Reward::function(&count),
        &mix(5),
        &held,
        &config,
        twice.path(),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(b.report.resumed_from, Some(2));
    let strip = |l: &crate::IterationLog| crate::IterationLog {
        generation_s: 0.0,
        scoring_s: 0.0,
        update_s: 0.0,
        ..l.clone()
    };
    assert_eq!(
        a.report.log.iter().map(strip).collect::<Vec<_>>(),
        b.report.log.iter().map(strip).collect::<Vec<_>>()
    );
    assert_eq!(a.report.kl_coef, b.report.kl_coef);
    assert_ne!(
        a.report.kl_coef, config.kl_coef,
        "the adaptive controller moved β"
    );
    let wa = host(a.policy.model.embed_tokens.val()).unwrap();
    let wb = host(b.policy.model.embed_tokens.val()).unwrap();
    assert_eq!(wa, wb);
    let read = |d: &std::path::Path| -> Vec<SampleRecord> {
        std::fs::read_to_string(d.join(crate::SAMPLES_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(read(once.path()), read(twice.path()));
    assert_eq!(
        read(once.path()).len(),
        2 * 3,
        "held-out answers before, at 2 and at 4"
    );
}

#[test]
fn a_prompt_too_long_for_the_budget_names_its_file_and_id() {
    let models = PpoModels::new(lm(1), CriticInit::Policy).unwrap();
    let f = |_: &Prompt, _: &str| 0.0;
    let long = vec![PromptRecord::new("long-one", "x".repeat(300))];
    let mix = PromptMix::new(vec![PromptSet::new("red.jsonl", 1.0, long).unwrap()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = train(
        models,
        &Reward::function(&f),
        &mix,
        &[],
        &PpoConfig::default(),
        dir.path(),
        &AtomicBool::new(false),
    )
    .err()
    .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("red.jsonl") && msg.contains("long-one"),
        "{msg}"
    );
}

#[test]
fn a_critic_on_the_policys_trunk_learns_too() {
    let d = tempfile::tempdir().unwrap();
    let (start, end, kl) = run_rule_with(CriticInit::SharedTrunk, 0.3, 40, d.path());
    eprintln!("shared trunk, β 0.3: mean count {start:.3} → {end:.3}, KL {kl:.3}");
    assert!(
        end > 0.6 && end > 2.0 * start,
        "first 5 iterations {start:.3}, last 5 {end:.3}"
    );
    assert!(kl > 0.3 && kl < 9.0, "KL {kl:.3}");
}

/// Two iterations of 8 rollouts in minibatches of 2 (8 updates per iteration) at a large
/// learning rate, with `tweak` applied to the config.
fn guarded_run(tweak: impl Fn(&mut PpoConfig)) -> Vec<crate::IterationLog> {
    let count = |_: &Prompt, r: &str| r.matches('e').count() as f32;
    let mut config = PpoConfig {
        iterations: 2,
        rollouts_per_iteration: 8,
        minibatch_size: 2,
        micro_batch_size: 2,
        max_new_tokens: 6,
        temperature: 1.0,
        policy_lr: 3e-2,
        critic_lr: 3e-2,
        samples_every: 0,
        seed: 4,
        ..Default::default()
    };
    tweak(&mut config);
    let dir = tempfile::tempdir().unwrap();
    let models = PpoModels::new(lm(6), CriticInit::Policy).unwrap();
    train(
        models,
        &Reward::function(&count),
        &mix(8),
        &[],
        &config,
        dir.path(),
        &AtomicBool::new(false),
    )
    .unwrap()
    .report
    .log
}

#[test]
fn minibatches_above_the_ratio_threshold_are_skipped_and_counted() {
    let free = guarded_run(|_| {});
    assert!(
        free.iter()
            .all(|l| l.updates == 8 && l.skipped_minibatches == 0)
    );
    let guarded = guarded_run(|c| c.ratio_threshold = 1.000_001);
    for l in &guarded {
        // The iteration's first minibatch has ratio exactly 1 and is applied.
        assert!(l.updates >= 1, "{l:?}");
        assert_eq!(l.updates + l.skipped_minibatches, 8);
    }
    assert!(guarded.iter().map(|l| l.skipped_minibatches).sum::<usize>() > 0);
}

#[test]
fn approx_kl_above_its_limit_stops_the_iterations_updates() {
    let stopped = guarded_run(|c| c.approx_kl_stop = Some(1e-9));
    for l in &stopped {
        // The first update has approx-KL exactly 0 (ratio 1); the second exceeds the limit.
        assert!(l.early_stopped && l.updates == 2, "{l:?}");
    }
}
