//! The preference model on tiny seeded models: a planted preference is learned, soft
//! labels are tracked (calibration), the score ignores padding, resumption equals an
//! uninterrupted run, gradient accumulation and the weighted loss match independent
//! computations, export and reload give identical scores, bad input gets located errors.

use crate::data::{parse_comparisons, parse_reference};
use crate::eval::{Outcome, metrics};
use crate::{
    Comparison, DataConfig, HeadInit, LengthPolicy, LogEntry, PmConfig, PmData, PmError, PmReport,
    PreferenceModel, REWARD_STATS_FILE, RewardNet, encode_comparisons, rewards, split_eval, train,
};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use rlaif_constitution::PromptFormat;
use rlaif_core::{Conversation, Prompt, RewardModel};
use rlaif_lm::tiny::{random_weights, tiny_config, tiny_lm};
use rlaif_lm::{LanguageModel, LlamaConfig};
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn pm_of(cfg: &LlamaConfig, seed: u64) -> PreferenceModel {
    let lm = tiny_lm(cfg, seed, &Device::default()).unwrap();
    PreferenceModel::from_lm(lm, HeadInit::Normal { std: None, seed }).unwrap()
}

fn pm(seed: u64) -> PreferenceModel {
    pm_of(&tiny_config(), seed)
}

fn no_stop() -> AtomicBool {
    AtomicBool::new(false)
}

const TOPICS: [&str; 8] = [
    "locks", "bread", "taxes", "chess", "rust", "birds", "rain", "maps",
];
const WORDS: [&str; 8] = ["well", "maybe", "here", "then", "okay", "so", "now", "look"];

/// Comparisons where the response containing "sorry" is better; which one is listed first
/// alternates (the label says which).
fn planted(n: usize) -> Vec<Comparison> {
    (0..n)
        .map(|i| {
            let (t, w1, w2) = (TOPICS[i % 8], WORDS[(i / 8) % 8], WORDS[(i * 3 + 1) % 8]);
            let prompt = format!("tell me about {t}, number {i}");
            let good = format!("{w1} sorry {w2} {t}");
            let bad = format!("{w1} {w2} {t} {}", WORDS[(i + 5) % 8]);
            if i % 2 == 0 {
                Comparison::chat(format!("p{i}"), &prompt, good, bad, 1.0)
            } else {
                Comparison::chat(format!("p{i}"), &prompt, bad, good, 0.0)
            }
        })
        .collect()
}

fn params(module: &impl Module) -> Vec<f32> {
    struct All(Vec<f32>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().try_into_vec_as::<f32>().unwrap());
        }
    }
    let mut v = All(vec![]);
    module.visit(&mut v);
    v.0
}

fn pm_params(pm: &PreferenceModel) -> Vec<f32> {
    let mut p = params(&pm.lm.model);
    p.extend(params(&pm.head));
    p
}

fn log_entries(dir: &Path) -> Vec<LogEntry> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn step_entries(dir: &Path) -> Vec<(usize, f64, f64, Option<f64>)> {
    log_entries(dir)
        .into_iter()
        .filter_map(|e| match e {
            LogEntry::Step {
                step,
                loss,
                grad_norm,
                accuracy,
                ..
            } => Some((step, loss, grad_norm, accuracy)),
            LogEntry::Eval(_) => None,
        })
        .collect()
}

fn pairs_of(cs: &[Comparison]) -> Vec<(Prompt, String)> {
    cs.iter()
        .flat_map(|c| {
            [
                (c.prompt.clone(), c.response_a.clone()),
                (c.prompt.clone(), c.response_b.clone()),
            ]
        })
        .collect()
}

#[test]
fn a_planted_preference_is_learned() {
    let data = PmData::build(
        vec![planted(96)],
        &DataConfig {
            eval_fraction: 0.25,
            seed: 1,
        },
    );
    assert_eq!((data.train.len(), data.eval.len()), (72, 24));
    let config = PmConfig {
        learning_rate: 2e-3,
        batch_size: 8,
        epochs: 4,
        eval_every: Some(9),
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let run = train(pm(1), &data, &config, out.path(), &no_stop()).unwrap();
    let r = &run.report;
    assert_eq!((r.steps, r.total_steps), (36, 36));
    let steps: Vec<usize> = r.evals.iter().map(|e| e.step).collect();
    assert_eq!(steps, vec![0, 9, 18, 27, 36]);
    let (first, last) = (&r.evals[0], r.evals.last().unwrap());
    // Before training: chance, scores near zero (the small head).
    assert!(
        first.score_std < 0.1,
        "initial score spread {}",
        first.score_std
    );
    assert!(
        (first.loss - 2f64.ln()).abs() < 0.05,
        "initial loss {}",
        first.loss
    );
    let acc = last.accuracy.unwrap();
    assert!(acc >= 0.95, "held-out accuracy {acc}");
    assert!(
        last.loss < 0.3,
        "held-out loss {} → {}",
        first.loss,
        last.loss
    );
    assert_eq!(last.decisive, 24);
    assert_eq!(last.by_source["memory"].pairs, 24);
    // The report, the log, the pictures and the model are on disk.
    let on_disk: PmReport =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(on_disk, *r);
    assert_eq!(step_entries(out.path()).len(), 36);
    for f in ["calibration.svg", "curves.svg"] {
        let svg = std::fs::read_to_string(out.path().join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{f}");
    }
    let stats = r.reward_stats.clone().unwrap();
    assert_eq!(
        (stats.source.as_str(), stats.count),
        ("held-out responses", 48)
    );
    assert!(stats.std > 0.5, "trained scores spread out: {stats:?}");
    let reloaded = PreferenceModel::load(out.path().join("model"), &Device::default()).unwrap();
    assert_eq!(reloaded.reward_stats, Some(stats));
    // Through the RewardModel trait: the response with the marker scores higher.
    let prompt: Prompt = Conversation::new().user("tell me about owls").into();
    let s = reloaded
        .score(&[
            (prompt.clone(), "well sorry so owls".into()),
            (prompt, "well so owls now".into()),
        ])
        .unwrap();
    assert!(s[0] > s[1], "{s:?}");
}

#[test]
fn soft_labels_are_tracked() {
    // Three response qualities with latent rewards 0, 1, 2; the label of a pair is
    // σ(q_a − q_b), so the targets are 0.12, 0.27, 0.5, 0.73, 0.88.
    let quality = |q: usize, i: usize| match q {
        0 => format!("no {}", WORDS[i % 8]),
        1 => format!("ok {}", WORDS[i % 8]),
        _ => format!("great {}", WORDS[i % 8]),
    };
    let comparisons: Vec<Comparison> = (0..120)
        .map(|i| {
            let (qa, qb) = (i % 3, (i / 3) % 3);
            let p = 1.0 / (1.0 + (qb as f64 - qa as f64).exp());
            Comparison::chat(
                format!("s{i}"),
                &format!("question {i} on {}", TOPICS[i % 8]),
                quality(qa, i),
                quality(qb, i + 3),
                p,
            )
        })
        .collect();
    let data = PmData::build(
        vec![comparisons],
        &DataConfig {
            eval_fraction: 0.25,
            seed: 2,
        },
    );
    let config = PmConfig {
        learning_rate: 2e-3,
        batch_size: 10,
        epochs: 12,
        eval_every: None,
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let run = train(pm(2), &data, &config, out.path(), &no_stop()).unwrap();
    let (first, last) = (&run.report.evals[0], run.report.evals.last().unwrap());
    // The held-out loss approaches the labels' own entropy (the floor for soft labels).
    let entropy: f64 = data
        .eval
        .iter()
        .map(|c| {
            let p = c.p_a.clamp(1e-12, 1.0 - 1e-12);
            -(p * p.ln() + (1.0 - p) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / data.eval.len() as f64;
    eprintln!(
        "soft labels: held-out loss {:.4} → {:.4} (label entropy {entropy:.4}), ECE {:.4} → {:.4}",
        first.loss, last.loss, first.ece, last.ece
    );
    assert!(
        last.loss < entropy + 0.03,
        "loss {} vs entropy {entropy}",
        last.loss
    );
    assert!(last.ece < 0.06, "ECE {}", last.ece);
    // The predicted probability per target level tracks the target.
    let eval_pairs: Vec<(Prompt, String)> = data
        .eval
        .iter()
        .flat_map(|c| {
            [
                (c.prompt.clone(), c.response_a.clone()),
                (c.prompt.clone(), c.response_b.clone()),
            ]
        })
        .collect();
    let s = run.model.score_pairs(&eval_pairs).unwrap();
    let mut by_target: std::collections::BTreeMap<i64, (f64, usize)> = Default::default();
    for (i, c) in data.eval.iter().enumerate() {
        let d = f64::from(s[2 * i] - s[2 * i + 1]);
        let e = by_target.entry((c.p_a * 100.0).round() as i64).or_default();
        e.0 += 1.0 / (1.0 + (-d).exp());
        e.1 += 1;
    }
    for (t, (sum, n)) in by_target {
        let mean = sum / n as f64;
        assert!(
            (mean - t as f64 / 100.0).abs() < 0.08,
            "target {t}%: mean prediction {mean:.3} over {n} pairs"
        );
    }
}

#[test]
fn the_score_ignores_padding_on_either_side() {
    let pm = pm(3);
    let prompt: Prompt = Conversation::new().user("hello there").into();
    let short = pm.encode(&prompt, "hi").unwrap().tokens;
    let long = pm
        .encode(&prompt, "a much longer reply with many more tokens")
        .unwrap()
        .tokens;
    let dev = Device::default();
    let alone = |s: &Vec<u32>| pm.score_tokens(std::slice::from_ref(s)).unwrap()[0];
    let (s_short, s_long) = (alone(&short), alone(&long));
    let t = long.len();
    let pad = 7u32; // a real byte token as padding: it must not be read either
    let batch = |left: bool| {
        let mut ids = vec![];
        let mut real = vec![];
        for s in [&short, &long] {
            let n = t - s.len();
            let row: Vec<u32> = if left {
                std::iter::repeat_n(pad, n)
                    .chain(s.iter().copied())
                    .collect()
            } else {
                s.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, n))
                    .collect()
            };
            real.push(
                (0..t)
                    .map(|j| if left { j >= n } else { j < s.len() })
                    .collect::<Vec<bool>>(),
            );
            ids.extend(row.iter().map(|&x| x as i64));
        }
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, t]), &dev);
        rewards(&pm.lm.model, &pm.head, tokens, &real)
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    let (right, left) = (batch(false), batch(true));
    for (a, b) in [
        (right[0], left[0]),
        (right[1], left[1]),
        (right[0], s_short),
        (right[1], s_long),
    ] {
        assert!(
            (a - b).abs() < 1e-5,
            "{right:?} {left:?} alone {s_short} {s_long}"
        );
    }
    assert_ne!(s_short, s_long);
    // The scores are read at the end-of-turn token: the last token is <|im_end|>.
    assert_eq!(short.last(), pm.lm.tokenizer.eos_id.as_ref());
    // A row without a real token is an error, not a silent read of padding.
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2], [1, 2]), &dev);
    let e = rewards(&pm.lm.model, &pm.head, tokens, &[vec![false, false]]).unwrap_err();
    assert!(e.to_string().contains("no real token"), "{e}");
}

#[test]
fn conversations_end_with_the_end_of_turn_token() {
    let pm = pm(4);
    let tok = &pm.lm.tokenizer;
    let prompt: Prompt = Conversation::new().user("hi").into();
    let e = pm.encode(&prompt, "Hello there.").unwrap();
    assert_eq!(
        tok.decode(&e.tokens, false).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nHello there.<|im_end|>"
    );
    assert_eq!(
        &e.tokens[..e.prompt_len],
        pm.lm.encode_prompt(&prompt).unwrap().as_slice(),
        "the prompt tokens are the ones the policy generated from"
    );
    // Raw: the text, the response, EOS.
    let raw = rlaif_constitution::initial_prompt(PromptFormat::Raw, "Why?");
    let e = pm.encode(&raw, " Because.").unwrap();
    assert_eq!(
        tok.decode(&e.tokens, false).unwrap(),
        "\n\nHuman: Why?\n\nAssistant: Because.<|im_end|>"
    );
    // Too long: the response is cut and keeps its end token.
    let mut short = pm_of(&tiny_config(), 4);
    short.max_seq_len = e.prompt_len + 4;
    let cut = short.encode(&raw, " Because of many reasons.").unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.tokens.len(), e.prompt_len + 4);
    assert_eq!(cut.tokens.last(), tok.eos_id.as_ref());
    // A prompt that leaves no room is an error naming the pair.
    short.max_seq_len = 5;
    let err = short
        .score_pairs(&[(raw.clone(), " x".into())])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "<memory>:0: comparison `pair 0`: the prompt is {} tokens, the length limit is 5 \
             (raise max_seq_len, shorten the prompt, or set length_policy = \"skip\")",
            e.prompt_len
        )
    );
    let err = RewardModel::score(&short, &[(raw, " x".into())]).unwrap_err();
    assert!(matches!(err, rlaif_core::Error::InvalidRequest(_)), "{err}");
    // The length policy of training data.
    let cs = vec![
        Comparison::chat("long", &"very long prompt ".repeat(20), "a", "b", 1.0),
        Comparison::chat("fine", "q", "a", "b", 1.0),
    ];
    let (enc, stats) = encode_comparisons(&pm, &cs, 64, LengthPolicy::Skip).unwrap();
    assert_eq!((enc.len(), stats.skipped, stats.pairs), (1, 1, 1));
    let err = encode_comparisons(&pm, &cs, 64, LengthPolicy::Error).unwrap_err();
    assert!(
        matches!(err, PmError::PromptTooLong { ref id, .. } if id == "long"),
        "{err}"
    );
}

#[test]
fn resumed_run_equals_an_uninterrupted_one() {
    let mut sets = vec![planted(20)];
    sets.push(
        planted(8)
            .into_iter()
            .map(|c| {
                let id = format!("h{}", c.id);
                Comparison { id, ..c }
                    .with_source("helpful")
                    .with_weight(0.5)
            })
            .collect(),
    );
    let data = PmData::build(
        sets,
        &DataConfig {
            eval_fraction: 0.2,
            seed: 3,
        },
    );
    let config = PmConfig {
        learning_rate: 2e-3,
        batch_size: 3,
        grad_accum_steps: 2,
        epochs: 2,
        checkpoint_every: Some(2),
        keep_checkpoints: 10,
        weight_decay: 0.1,
        center_coef: 0.01,
        margin: 0.1,
        ..Default::default()
    };
    let a = tempfile::tempdir().unwrap();
    let full = train(pm(5), &data, &config, a.path(), &no_stop()).unwrap();
    assert_eq!(full.report.total_steps, 8);

    // A crash after step 4: only the checkpoint of step 4 survived, plus a half-written
    // checkpoint and log lines of steps that will be redone.
    let b = tempfile::tempdir().unwrap();
    let ckpt = |root: &Path, name: &str| root.join("checkpoints").join(name);
    std::fs::create_dir_all(ckpt(b.path(), "step-00000004")).unwrap();
    for f in ["model.bpk", "optimizer.bpk", "trainer_state.json"] {
        std::fs::copy(
            ckpt(a.path(), "step-00000004").join(f),
            ckpt(b.path(), "step-00000004").join(f),
        )
        .unwrap();
    }
    std::fs::create_dir_all(ckpt(b.path(), "step-00000006.partial")).unwrap();
    std::fs::write(
        ckpt(b.path(), "step-00000006.partial").join("model.bpk"),
        b"torn",
    )
    .unwrap();
    std::fs::copy(a.path().join("log.jsonl"), b.path().join("log.jsonl")).unwrap();

    let resumed = train(pm(5), &data, &config, b.path(), &no_stop()).unwrap();
    assert_eq!(resumed.report.resumed_from, Some(4));
    assert_eq!(resumed.report.steps, 8);
    assert_eq!(pm_params(&resumed.model), pm_params(&full.model), "bitwise");
    assert!(!ckpt(b.path(), "step-00000006.partial").exists());
    let steps: Vec<usize> = step_entries(b.path()).iter().map(|s| s.0).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    assert_eq!(step_entries(b.path()), step_entries(a.path()));
    assert_eq!(resumed.report.evals, full.report.evals);
    assert_eq!(resumed.report.epoch_losses, full.report.epoch_losses);
    assert_eq!(resumed.report.reward_stats, full.report.reward_stats);

    // A finished run resumed again does nothing more.
    let again = train(pm(5), &data, &config, a.path(), &no_stop()).unwrap();
    assert_eq!(again.report.resumed_from, Some(8));
    assert_eq!(
        again.report.evals, full.report.evals,
        "no evaluation is repeated"
    );
    assert_eq!(pm_params(&again.model), pm_params(&full.model));

    // Another setting is refused by name; an observation setting may change.
    let other = PmConfig {
        margin: 0.2,
        ..config.clone()
    };
    let err = train(pm(5), &data, &other, a.path(), &no_stop()).unwrap_err();
    assert!(
        matches!(err, PmError::ResumeMismatch { ref field, .. } if field == "margin"),
        "{err}"
    );
    let chatty = PmConfig {
        eval_every: Some(1),
        decisive_threshold: 0.2,
        ..config.clone()
    };
    train(pm(5), &data, &chatty, a.path(), &no_stop()).unwrap();
}

#[test]
fn stop_flag_checkpoints_before_the_first_step() {
    let data = PmData::build(vec![planted(8)], &DataConfig::default());
    let out = tempfile::tempdir().unwrap();
    let stopped = train(
        pm(6),
        &data,
        &PmConfig::default(),
        out.path(),
        &AtomicBool::new(true),
    )
    .unwrap();
    assert!(stopped.report.interrupted);
    assert_eq!(stopped.report.steps, 0);
    assert!(stopped.report.model_dir.is_none() && stopped.report.reward_stats.is_none());
    assert!(
        out.path()
            .join("checkpoints/step-00000000/model.bpk")
            .exists()
    );
    let done = train(pm(6), &data, &PmConfig::default(), out.path(), &no_stop()).unwrap();
    assert_eq!((done.report.resumed_from, done.report.steps), (Some(0), 2));
}

/// Σ w·ℓ / Σ w with the margin and the centring term, from the initial scores on the host.
fn host_loss(pm: &PreferenceModel, cs: &[Comparison], margin: f64, eta: f64) -> f64 {
    let pairs: Vec<(Prompt, String)> = cs
        .iter()
        .flat_map(|c| {
            [
                (c.prompt.clone(), c.response_a.clone()),
                (c.prompt.clone(), c.response_b.clone()),
            ]
        })
        .collect();
    let s = pm.score_pairs(&pairs).unwrap();
    let log_sig = |x: f64| -(-x).exp().ln_1p();
    let (mut num, mut den) = (0.0, 0.0);
    for (i, c) in cs.iter().enumerate() {
        let (ra, rb) = (f64::from(s[2 * i]), f64::from(s[2 * i + 1]));
        let d = ra - rb;
        let l = -(c.p_a * log_sig(d - margin) + (1.0 - c.p_a) * log_sig(-d - margin))
            + eta * (ra + rb).powi(2);
        num += c.weight * l;
        den += c.weight;
    }
    num / den
}

#[test]
fn accumulation_is_exact_and_the_loss_is_weighted() {
    // Pairs of very different lengths and weights, soft and hard labels.
    let mut cs = planted(4);
    cs[0].response_a = "no".into();
    cs[1].response_b = "a much longer response than every other one in this small set".into();
    cs[1].p_a = 0.3;
    cs[2].weight = 3.0;
    cs[3].weight = 0.25;
    // A large head so that the pairs' losses differ.
    let big = |seed| {
        let lm = tiny_lm(&tiny_config(), seed, &Device::default()).unwrap();
        PreferenceModel::from_lm(
            lm,
            HeadInit::Normal {
                std: Some(1.0),
                seed,
            },
        )
        .unwrap()
    };
    let want = host_loss(&big(7), &cs, 0.5, 0.1);
    let data = PmData {
        train: cs,
        ..Default::default()
    };
    let run = |batch_size, grad_accum_steps| {
        let config = PmConfig {
            learning_rate: 1e-3,
            batch_size,
            grad_accum_steps,
            max_steps: Some(1),
            max_grad_norm: None,
            margin: 0.5,
            center_coef: 0.1,
            ..Default::default()
        };
        let out = tempfile::tempdir().unwrap();
        let r = train(big(7), &data, &config, out.path(), &no_stop()).unwrap();
        let (_, loss, grad_norm, _) = step_entries(out.path())[0];
        (loss, grad_norm, pm_params(&r.model))
    };
    let (l1, g1, p1) = run(4, 1);
    let (l4, g4, p4) = run(1, 4);
    assert!((l1 - want).abs() < 1e-4 * want, "loss {l1}, host {want}");
    assert!((l1 - l4).abs() < 1e-5 * l1, "loss {l1} vs {l4}");
    assert!((g1 - g4).abs() < 1e-4 * g1, "grad norm {g1} vs {g4}");
    let max_diff = p1
        .iter()
        .zip(&p4)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max_diff < 1e-4, "parameters differ by {max_diff}");
}

#[test]
fn export_and_reload_give_identical_scores() {
    for tied in [true, false] {
        let cfg = LlamaConfig {
            tie_word_embeddings: tied,
            ..tiny_config()
        };
        let mut pm = pm_of(&cfg, 8);
        // A head that is not near zero, so the scores differ visibly.
        pm.head = Param::from_tensor(pm.head.val().mul_scalar(50.0));
        pm.reward_stats = Some(crate::RewardStats::of(&[1.0, 2.0, 4.0], "reference"));
        let dir = tempfile::tempdir().unwrap();
        pm.save_pretrained(dir.path()).unwrap();
        let back = PreferenceModel::load(dir.path(), &Device::default()).unwrap();
        assert_eq!(pm_params(&back), pm_params(&pm), "tied = {tied}");
        assert!(back.lm.model.lm_head.is_none());
        let pairs = pairs_of(&planted(6));
        let (s0, s1) = (
            pm.score_pairs(&pairs).unwrap(),
            back.score_pairs(&pairs).unwrap(),
        );
        assert_eq!(s0, s1);
        assert!(s0.iter().any(|&x| x.abs() > 1e-3), "{s0:?}");
        assert_eq!(back.reward_stats, pm.reward_stats);
        assert!((back.normalize(&[4.0])[0] - 1.336_306_2).abs() < 1e-5);

        // The files are a Hugging Face sequence classifier's.
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");
        assert_eq!(
            (
                config["num_labels"].as_u64(),
                config["id2label"]["0"].as_str()
            ),
            (Some(1), Some("LABEL_0"))
        );
        assert_eq!(
            config["pad_token_id"], 256,
            "<|endoftext|>, not the end-of-turn token"
        );
        assert_eq!(config["tie_word_embeddings"], tied);
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let score = st.tensor("score.weight").unwrap();
        assert_eq!(score.shape(), [1, 32]);
        assert!(st.tensor("lm_head.weight").is_err());
        assert_eq!(
            st.len(),
            2 * 9 + 2 + 1,
            "2 layers × 9, norm, embedding, score"
        );
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        for f in ["tokenizer.json", "tokenizer_config.json", REWARD_STATS_FILE] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        // The decoder in the file is what rlaif-lm writes for the language model.
        let lm_dir = tempfile::tempdir().unwrap();
        pm.lm.save_pretrained(lm_dir.path()).unwrap();
        let lm_bytes = std::fs::read(lm_dir.path().join("model.safetensors")).unwrap();
        let lm_st = safetensors::SafeTensors::deserialize(&lm_bytes).unwrap();
        for (name, t) in lm_st.tensors() {
            assert_eq!(st.tensor(&name).unwrap().data(), t.data(), "{name}");
        }

        // Saving again without statistics removes the stale file.
        pm.reward_stats = None;
        pm.save_pretrained(dir.path()).unwrap();
        assert!(!dir.path().join(REWARD_STATS_FILE).exists());
    }
}

#[test]
fn a_language_model_directory_is_not_a_preference_model() {
    let dir = tempfile::tempdir().unwrap();
    tiny_lm(&tiny_config(), 9, &Device::default())
        .unwrap()
        .save_pretrained(dir.path())
        .unwrap();
    let err = PreferenceModel::load(dir.path(), &Device::default()).unwrap_err();
    assert!(err.to_string().contains("no `score.weight`"), "{err}");
    // A head of the wrong shape.
    let pm = pm(9);
    pm.save_pretrained(dir.path()).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    config["id2label"] = serde_json::json!({"0": "a", "1": "b"});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = PreferenceModel::load(dir.path(), &Device::default()).unwrap_err();
    assert!(
        err.to_string().ends_with(
            "config.json: field `id2label`: a preference model has one label, this config has 2"
        ),
        "{err}"
    );
}

#[test]
fn a_nan_loss_stops_with_the_state_before_it_saved() {
    let cfg = tiny_config();
    let mut w = random_weights(&cfg, 10).unwrap();
    w.get_mut("model.layers.1.mlp.down_proj.weight")
        .unwrap()
        .data[5] = f32::NAN;
    let dev = Device::default();
    let model = rlaif_lm::tiny::model_from_weights(&cfg, w, Path::new("nan"), &dev).unwrap();
    let base = tiny_lm(&cfg, 10, &dev).unwrap();
    let lm = LanguageModel::from_parts(model, cfg, base.tokenizer, base.chat_template);
    let pm = PreferenceModel::from_lm(lm, HeadInit::default()).unwrap();
    let data = PmData {
        train: planted(4),
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    match train(pm, &data, &PmConfig::default(), out.path(), &no_stop()) {
        Err(PmError::NonFinite {
            step: 1,
            what: "loss",
            checkpoint,
            ..
        }) => {
            assert!(checkpoint.join("trainer_state.json").exists());
            assert!(checkpoint.ends_with("step-00000000"));
        }
        other => panic!("expected a non-finite loss error, got {other:?}"),
    }
    assert!(
        !out.path().join("model").exists(),
        "no model is written from a failed run"
    );
}

#[test]
fn comparison_formats() {
    let text = r#"{"id": "ai-1", "prompt": "How do I pick a lock?", "response_a": "Call a locksmith.", "response_b": "Use a pin.", "p_a": 0.8, "chosen": "Call a locksmith.", "rejected": "Use a pin.", "principle": "harmless"}
{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
{"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "No."}]}

{"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}
{"id": "r", "prompt": "Why?", "response_a": "Because.", "response_b": "  No.", "p_a": 0, "format": "raw"}
"#;
    let cs = parse_comparisons(
        text,
        Path::new("d/cmp.jsonl"),
        "harmless",
        2.0,
        PromptFormat::Chat,
    )
    .unwrap();
    let ids: Vec<&str> = cs.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["ai-1", "cmp:2", "cmp:3", "cmp:5", "r"]);
    assert_eq!(
        (cs[0].p_a, cs[0].response_a.as_str()),
        (0.8, "Call a locksmith.")
    );
    assert_eq!((cs[1].p_a, cs[1].response_b.as_str()), (1.0, "Go away."));
    assert!(matches!(&cs[2].prompt, Prompt::Chat(c) if c.messages.len() == 2));
    assert_eq!(cs[2].response_a, "Hello!");
    assert!(
        matches!(&cs[3].prompt, Prompt::Chat(c) if c.messages.len() == 1 && c.messages[0].content == "2+2?")
    );
    assert_eq!(
        (cs[3].response_a.as_str(), cs[3].response_b.as_str()),
        ("4", "5")
    );
    assert_eq!(
        cs[4].prompt,
        Prompt::Text("\n\nHuman: Why?\n\nAssistant:".into())
    );
    assert_eq!(
        (cs[4].response_a.as_str(), cs[4].response_b.as_str()),
        (" Because.", " No.")
    );
    assert!(cs.iter().all(|c| c.source == "harmless" && c.weight == 2.0));
    assert_eq!((cs[4].origin.line, cs[4].p_a), (6, 0.0));

    let reference = parse_reference(
        "{\"id\": \"h1\", \"prompt\": \"Hi\", \"completion\": \"Hello!\", \"format\": \"chat\", \"seed\": 0}\n{\"prompt\": \"Q\", \"response\": \"A\", \"format\": \"raw\"}",
        Path::new("helpful.jsonl"),
        PromptFormat::Chat,
    )
    .unwrap();
    assert_eq!(reference.len(), 2);
    assert_eq!(reference[1].response, " A");
}

#[test]
fn malformed_lines_are_located_errors() {
    let err = |text: &str| {
        parse_comparisons(text, Path::new("f.jsonl"), "x", 1.0, PromptFormat::Chat)
            .unwrap_err()
            .to_string()
    };
    let cases = [
        (
            "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\nnot json",
            "f.jsonl:2: not JSON: expected ident at line 1 column 2",
        ),
        ("[1]", "f.jsonl:1: expected a JSON object"),
        (
            r#"{"prompt": "a"}"#,
            "f.jsonl:1: field `chosen`: missing (a line needs `response_a`, `response_b`, `p_a`, or `chosen` and `rejected`)",
        ),
        (
            r#"{"prompt": "a", "chosen": "b"}"#,
            "f.jsonl:1: field `rejected`: missing",
        ),
        (
            r#"{"prompt": "a", "chosen": "b", "rejected": " "}"#,
            "f.jsonl:1: field `rejected`: is empty",
        ),
        (
            r#"{"prompt": "a", "response_a": "b", "response_b": "c"}"#,
            "f.jsonl:1: field `p_a`: missing",
        ),
        (
            r#"{"prompt": "a", "response_a": "b", "response_b": "c", "p_a": 1.5}"#,
            "f.jsonl:1: field `p_a`: expected a probability in [0, 1], got 1.5",
        ),
        (
            r#"{"prompt": "a", "response_a": "b", "response_b": "c", "p_a": "0.5"}"#,
            "f.jsonl:1: field `p_a`: expected a probability in [0, 1], got a string",
        ),
        (
            r#"{"prompt": "a", "response_b": "c", "p_a": 0.5}"#,
            "f.jsonl:1: field `response_a`: missing",
        ),
        (
            r#"{"prompt": 3, "chosen": "b", "rejected": "c"}"#,
            "f.jsonl:1: field `prompt`: expected a string or a list of messages, got a number",
        ),
        (
            r#"{"prompt": [{"role": "robot", "content": "a"}], "chosen": "b", "rejected": "c"}"#,
            "f.jsonl:1: field `prompt[0].role`: unknown role `robot` (system, user, assistant)",
        ),
        (
            r#"{"prompt": "a", "chosen": [{"role": "user", "content": "b"}], "rejected": "c"}"#,
            "f.jsonl:1: field `chosen`: expected exactly one non-empty assistant message",
        ),
        (
            r#"{"chosen": "b", "rejected": "c"}"#,
            "f.jsonl:1: field `prompt`: missing (with a string `chosen`, the prompt must be given; without `prompt`, `chosen` and `rejected` are whole conversations)",
        ),
        (
            r#"{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]}"#,
            "f.jsonl:1: field `rejected`: does not share the conversation before the reply with `chosen`",
        ),
        (
            r#"{"prompt": "a", "chosen": [{"role": "assistant", "content": "b"}], "rejected": "c", "format": "raw"}"#,
            "f.jsonl:1: field `chosen`: a list of messages answers a chat prompt; this prompt is raw text",
        ),
        (
            r#"{"prompt": "a", "chosen": "b", "rejected": "c", "format": "latex"}"#,
            "f.jsonl:1: field `format`: expected \"chat\" or \"raw\", found \"latex\"",
        ),
        (
            "{\"id\": \"a\", \"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"id\": \"a\", \"prompt\": \"c\", \"chosen\": \"d\", \"rejected\": \"e\"}",
            "f.jsonl:2: field `id`: duplicate id `a` (first on line 1)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(text), want, "{text}");
    }
    let e = parse_comparisons("", Path::new("w.jsonl"), "x", 0.0, PromptFormat::Chat).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid preference-model configuration: field `weight`: w.jsonl: must be finite and positive, got 0"
    );
    // A malformed reference line too.
    let e = parse_reference(
        "{\"prompt\": \"a\"}",
        Path::new("r.jsonl"),
        PromptFormat::Chat,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "r.jsonl:1: field `completion`: missing");
}

#[test]
fn the_split_keeps_each_prompt_on_one_side() {
    // Three pairs per prompt, ten prompts, over two files.
    let mut cs = vec![];
    for i in 0..10 {
        for k in 0..3 {
            cs.push(
                Comparison::chat(format!("{i}-{k}"), &format!("prompt {i}"), "a", "b", 0.7)
                    .with_source(if i < 5 { "harmless" } else { "helpful" }),
            );
        }
    }
    for seed in 0..10 {
        let (train, eval) = split_eval(cs.clone(), 0.3, seed);
        assert_eq!((train.len(), eval.len()), (21, 9));
        let held: std::collections::HashSet<_> = eval.iter().map(|c| &c.group).collect();
        assert_eq!(held.len(), 3);
        assert!(train.iter().all(|c| !held.contains(&c.group)));
    }
    let a = split_eval(cs.clone(), 0.3, 1).1;
    assert_eq!(a, split_eval(cs.clone(), 0.3, 1).1, "seeded");
    assert_ne!(a, split_eval(cs.clone(), 0.3, 2).1);
    assert_eq!(split_eval(cs.clone(), 0.0, 0).1.len(), 0);
    assert_eq!(split_eval(cs, 0.99, 0).0.len(), 3, "never everything");
}

#[test]
fn metrics_match_hand_computed_values() {
    let o = |r_a: f64, r_b: f64, p: f64, source| Outcome {
        r_a,
        r_b,
        p,
        weight: 1.0,
        source,
    };
    let outcomes = [
        o(2.0, 0.0, 1.0, "a"),  // right, σ = 0.881
        o(0.0, 1.0, 1.0, "a"),  // wrong, σ = 0.269
        o(0.5, 0.5, 0.55, "b"), // not decisive at 0.1
        o(0.0, 3.0, 0.0, "b"),  // right
    ];
    let m = metrics(&outcomes, 7, 0.1, 10);
    assert_eq!((m.step, m.pairs, m.decisive), (7, 4, 3));
    assert!((m.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    let s = |x: f64| 1.0 / (1.0 + (-x).exp());
    let loss =
        (-(s(2.0).ln()) - s(-1.0).ln() - (0.55 * 0.5f64.ln() + 0.45 * 0.5f64.ln()) - s(3.0).ln())
            / 4.0;
    assert!((m.loss - loss).abs() < 1e-12, "{} vs {loss}", m.loss);
    // Both orders of every pair: 8 predictions; each bin's gap weighted by its share.
    assert_eq!(m.bins.iter().map(|b| b.count).sum::<usize>(), 8);
    let preds = [
        (s(2.0), 1.0),
        (s(-2.0), 0.0),
        (s(-1.0), 1.0),
        (s(1.0), 0.0),
        (0.5, 0.55),
        (0.5, 0.45),
        (s(-3.0), 0.0),
        (s(3.0), 1.0),
    ];
    let mut bins = vec![(0.0, 0.0, 0usize); 10];
    for (q, t) in preds {
        let k = ((q * 10.0) as usize).min(9);
        bins[k].0 += q;
        bins[k].1 += t;
        bins[k].2 += 1;
    }
    let ece: f64 = bins
        .iter()
        .filter(|b| b.2 > 0)
        .map(|b| b.2 as f64 / 8.0 * ((b.0 - b.1) / b.2 as f64).abs())
        .sum();
    assert!((m.ece - ece).abs() < 1e-12, "{} vs {ece}", m.ece);
    assert_eq!(m.bins[5].count, 2);
    assert_eq!(m.bins[5].mean_label, Some(0.5));
    assert_eq!(m.by_source["b"].decisive, 1);
    assert!((m.score_mean - 7.0 / 8.0).abs() < 1e-12);
    // A tie counts half; no decisive pair, no accuracy.
    assert_eq!(
        metrics(&[o(1.0, 1.0, 1.0, "a")], 0, 0.1, 10).accuracy,
        Some(0.5)
    );
    assert_eq!(metrics(&[o(1.0, 0.0, 0.5, "a")], 0, 0.1, 10).accuracy, None);
}

#[test]
fn head_initialisation() {
    let z = PreferenceModel::from_lm(
        tiny_lm(&tiny_config(), 11, &Device::default()).unwrap(),
        HeadInit::Zeros,
    )
    .unwrap();
    let pairs = pairs_of(&planted(2));
    assert!(z.score_pairs(&pairs).unwrap().iter().all(|&x| x == 0.0));
    let h = params(&pm(11).head);
    assert_eq!(h.len(), 32);
    let std = (h.iter().map(|x| x * x).sum::<f32>() / 32.0).sqrt();
    assert!((std - 1.0 / 33.0).abs() < 0.015, "std {std}");
    assert_eq!(h, params(&pm(11).head), "seeded");
    // The net as one module: what the trainer checkpoints.
    let p = pm(11);
    let net = RewardNet {
        backbone: p.lm.model.clone(),
        head: p.head.clone(),
    };
    assert_eq!(params(&net), pm_params(&p));
}

#[test]
fn config_errors_name_the_field() {
    let bad = |c: PmConfig| c.validate().unwrap_err().to_string();
    assert_eq!(
        bad(PmConfig {
            learning_rate: 0.0,
            ..Default::default()
        }),
        "invalid preference-model configuration: field `learning_rate`: must be in (0, 1]"
    );
    assert_eq!(
        bad(PmConfig {
            margin: -1.0,
            ..Default::default()
        }),
        "invalid preference-model configuration: field `margin`: must be finite and ≥ 0"
    );
    assert_eq!(
        bad(PmConfig {
            decisive_threshold: 0.5,
            ..Default::default()
        }),
        "invalid preference-model configuration: field `decisive_threshold`: must be in [0, 0.5)"
    );
    let c: PmConfig =
        serde_json::from_str(r#"{"learning_rate": 1e-4, "center_coef": 0.01}"#).unwrap();
    assert_eq!((c.learning_rate, c.center_coef, c.epochs), (1e-4, 0.01, 1));
    let e = serde_json::from_str::<PmConfig>(r#"{"learning_rat": 1e-4}"#).unwrap_err();
    assert!(
        e.to_string().starts_with("unknown field `learning_rat`"),
        "{e}"
    );
    let d = PmConfig::default();
    assert_eq!(
        (
            d.learning_rate,
            d.epochs,
            d.decisive_threshold,
            d.calibration_bins
        ),
        (1e-5, 1, 0.1, 10)
    );
    // Empty data.
    let out = tempfile::tempdir().unwrap();
    let err = train(pm(12), &PmData::default(), &d, out.path(), &no_stop()).unwrap_err();
    assert!(matches!(err, PmError::EmptyDataset(_)), "{err}");
}
