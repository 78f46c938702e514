//! Training on tiny seeded models: the loss falls, the held-out loss is reported, the saved
//! directory reloads to the same logits, resumption equals an uninterrupted run, gradient
//! accumulation equals the full batch, clipping and the completion-only loss match
//! independent computations, bad input gets located errors.

use crate::batch::{collate, completion_nll};
use crate::data::{SftExample, parse_examples};
use crate::encode::{LengthPolicy, encode_all, encode_example};
use crate::{DataConfig, LogEntry, SftConfig, SftData, SftError, evaluate, train};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rlaif_constitution::PromptFormat;
use rlaif_core::Prompt;
use rlaif_lm::LanguageModel;
use rlaif_lm::tiny::{random_weights, tiny_config, tiny_lm};
use rlaif_train::clip::{clip_grad_norm, global_grad_norm};
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn lm(seed: u64) -> LanguageModel {
    tiny_lm(&tiny_config(), seed, &Device::default()).unwrap()
}

/// A small "revision set": varied prompts, replies that follow one learnable pattern.
fn revisions(n: usize) -> Vec<SftExample> {
    let topics = [
        "locks", "poison", "fraud", "hacking", "weapons", "stalking", "drugs", "theft",
    ];
    (0..n)
        .map(|i| {
            let t = topics[i % topics.len()];
            SftExample::chat(
                format!("rev-{i}"),
                &format!("tell me about {t} number {i}"),
                format!("I won't help with {t}. Please stay safe."),
            )
            .with_source("revision")
        })
        .collect()
}

fn no_stop() -> AtomicBool {
    AtomicBool::new(false)
}

fn logits(lm: &LanguageModel, ids: &[u32]) -> Vec<f32> {
    let dev = lm.device();
    let t: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(t, [1, ids.len()]), &dev);
    lm.model
        .forward(tokens, &[vec![true; ids.len()]])
        .try_into_vec_as::<f32>()
        .unwrap()
}

fn params(model: &rlaif_lm::Llama) -> Vec<f32> {
    struct All(Vec<f32>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().try_into_vec_as::<f32>().unwrap());
        }
    }
    let mut v = All(vec![]);
    model.visit(&mut v);
    v.0
}

fn log_entries(dir: &Path) -> Vec<LogEntry> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn training_loss_falls_and_held_out_loss_is_reported() {
    let data = SftData::build(
        revisions(24),
        vec![],
        &DataConfig {
            helpful_ratio: 0.0,
            eval_fraction: 0.25,
            seed: 1,
        },
    );
    assert_eq!((data.train.len(), data.eval.len()), (18, 6));
    let config = SftConfig {
        learning_rate: 1e-2,
        batch_size: 3,
        epochs: 10,
        eval_every: Some(20),
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let run = train(lm(1), &data, &config, out.path(), &no_stop()).unwrap();
    let r = &run.report;
    assert_eq!((r.steps, r.total_steps), (60, 60));
    assert!(!r.interrupted);
    let (first, last) = (r.first_loss.unwrap(), r.last_loss.unwrap());
    // A random model starts near ln(259) ≈ 5.6 nats per token; the pattern is learnable.
    assert!(first > 4.0, "first loss {first}");
    assert!(last < 0.5 * first, "training loss {first} → {last}");
    let epochs: Vec<f64> = r.epoch_losses.values().copied().collect();
    assert_eq!(epochs.len(), 10);
    assert!(
        epochs.windows(2).all(|w| w[1] < w[0]),
        "epoch losses fall: {epochs:?}"
    );
    // Held out: before the first step, every 20 steps, after the last.
    let steps: Vec<usize> = r.evals.iter().map(|e| e.step).collect();
    assert_eq!(steps, vec![0, 20, 40, 60]);
    let (e0, e1) = (&r.evals[0], r.evals.last().unwrap());
    assert!(
        e1.loss < 0.4 * e0.loss,
        "held-out loss {} → {}",
        e0.loss,
        e1.loss
    );
    assert_eq!(e1.by_source.keys().collect::<Vec<_>>(), vec!["revision"]);
    assert_eq!(e1.tokens, r.eval.completion_tokens);
    // The log holds every step and every evaluation; the report is on disk.
    let log = log_entries(out.path());
    assert_eq!(
        log.iter()
            .filter(|e| matches!(e, LogEntry::Step { .. }))
            .count(),
        60
    );
    assert_eq!(
        log.iter()
            .filter(|e| matches!(e, LogEntry::Eval(_)))
            .count(),
        4
    );
    let on_disk: crate::SftReport =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!((on_disk.steps, on_disk.evals.len()), (60, 4));
    assert_eq!(on_disk.model_dir, r.model_dir);
    assert!((on_disk.evals[3].loss - e1.loss).abs() < 1e-12);
}

#[test]
fn saved_directory_reloads_with_identical_logits() {
    let data = SftData::build(
        revisions(8),
        vec![],
        &DataConfig {
            helpful_ratio: 0.0,
            eval_fraction: 0.0,
            seed: 0,
        },
    );
    let config = SftConfig {
        learning_rate: 1e-3,
        batch_size: 4,
        epochs: 2,
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let run = train(lm(2), &data, &config, out.path(), &no_stop()).unwrap();
    let dir = run.report.model_dir.clone().unwrap();
    let reloaded = LanguageModel::load(&dir, &Device::default()).unwrap();
    let prompt: Prompt = rlaif_core::Conversation::new()
        .user("tell me about locks")
        .into();
    let ids = run.model.encode_prompt(&prompt).unwrap();
    assert_eq!(
        reloaded.encode_prompt(&prompt).unwrap(),
        ids,
        "tokenizer and template"
    );
    assert_eq!(logits(&reloaded, &ids), logits(&run.model, &ids));
    // And training changed the model.
    assert_ne!(logits(&lm(2), &ids), logits(&run.model, &ids));
}

#[test]
fn resumed_run_equals_an_uninterrupted_one() {
    let data = SftData::build(
        revisions(12),
        revisions(4),
        &DataConfig {
            helpful_ratio: 0.5,
            eval_fraction: 0.25,
            seed: 3,
        },
    );
    let config = SftConfig {
        learning_rate: 2e-3,
        batch_size: 2,
        grad_accum_steps: 2,
        epochs: 2,
        checkpoint_every: Some(2),
        keep_checkpoints: 10,
        weight_decay: 0.1,
        ..Default::default()
    };
    let a = tempfile::tempdir().unwrap();
    let full = train(lm(3), &data, &config, a.path(), &no_stop()).unwrap();
    // Trained: 9 revisions and 5 helpful examples, 4 per step: 4 steps per epoch.
    assert_eq!((data.train.len(), data.eval.len()), (14, 5));
    assert_eq!(full.report.total_steps, 8);
    assert_eq!(full.report.evals.len(), 2);

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

    let resumed = train(lm(3), &data, &config, b.path(), &no_stop()).unwrap();
    assert_eq!(resumed.report.resumed_from, Some(4));
    assert_eq!(resumed.report.steps, 8);
    assert_eq!(params(&resumed.model.model), params(&full.model.model));
    assert!(!ckpt(b.path(), "step-00000006.partial").exists());
    // The log has each step once.
    let steps: Vec<usize> = log_entries(b.path())
        .iter()
        .filter_map(|e| match e {
            LogEntry::Step { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    // The report covers the whole run, the steps before the crash included.
    assert_eq!(resumed.report.first_loss, full.report.first_loss);
    assert_eq!(resumed.report.last_loss, full.report.last_loss);
    assert_eq!(resumed.report.epoch_losses.len(), 2);
    assert_eq!(resumed.report.evals.len(), full.report.evals.len());
    for (r, f) in resumed.report.evals.iter().zip(&full.report.evals) {
        assert_eq!(r.step, f.step);
        assert!(
            (r.loss - f.loss).abs() < 1e-12,
            "held-out loss at step {}",
            r.step
        );
    }
    for (e, l) in &full.report.epoch_losses {
        assert!((resumed.report.epoch_losses[e] - l).abs() < 1e-9);
    }

    // A finished run resumed again does nothing more.
    let again = train(lm(3), &data, &config, a.path(), &no_stop()).unwrap();
    assert_eq!(again.report.resumed_from, Some(8));
    assert_eq!(again.report.first_loss, full.report.first_loss);
    let evals = |r: &crate::SftReport| r.evals.iter().map(|e| e.step).collect::<Vec<_>>();
    assert_eq!(
        evals(&again.report),
        evals(&full.report),
        "no evaluation is repeated"
    );
    assert_eq!(params(&again.model.model), params(&full.model.model));
}

#[test]
fn stop_flag_checkpoints_and_resume_refuses_other_settings_or_data() {
    let data = SftData::build(
        revisions(8),
        vec![],
        &DataConfig {
            helpful_ratio: 0.0,
            eval_fraction: 0.0,
            seed: 0,
        },
    );
    let config = SftConfig {
        batch_size: 4,
        epochs: 2,
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let stopped = train(lm(4), &data, &config, out.path(), &AtomicBool::new(true)).unwrap();
    assert!(stopped.report.interrupted);
    assert_eq!(stopped.report.steps, 0);
    assert!(stopped.report.model_dir.is_none());
    assert!(
        out.path()
            .join("checkpoints/step-00000000/model.bpk")
            .exists()
    );

    let other = SftConfig {
        learning_rate: 1e-4,
        ..config.clone()
    };
    match train(lm(4), &data, &other, out.path(), &no_stop()) {
        Err(SftError::ResumeMismatch {
            field,
            found,
            expected,
            ..
        }) => {
            assert_eq!(field, "learning_rate");
            assert_eq!((found.as_str(), expected.as_str()), ("0.00002", "0.0001"));
        }
        other => panic!("expected a resume mismatch, got {other:?}"),
    }
    let more = SftData::build(
        revisions(9),
        vec![],
        &DataConfig {
            helpful_ratio: 0.0,
            eval_fraction: 0.0,
            seed: 0,
        },
    );
    let err = train(lm(4), &more, &config, out.path(), &no_stop()).unwrap_err();
    assert!(
        matches!(err, SftError::ResumeMismatch { ref field, .. } if field == "training examples"),
        "{err}"
    );
    // Settings that don't change the computation may differ.
    let chatty = SftConfig {
        eval_every: Some(1),
        checkpoint_every: None,
        ..config.clone()
    };
    let done = train(lm(4), &data, &chatty, out.path(), &no_stop()).unwrap();
    assert_eq!((done.report.resumed_from, done.report.steps), (Some(0), 4));
}

#[test]
fn gradient_accumulation_equals_the_full_batch() {
    // Examples of very different lengths, so the micro-batches hold different token counts.
    let mut ex = revisions(4);
    ex[0].completion = "No.".into();
    ex[3].completion =
        "I won't help with that, and here is a much longer explanation of why not.".into();
    let data = SftData {
        train: ex,
        eval: vec![],
    };
    let run = |batch_size, grad_accum_steps| {
        let config = SftConfig {
            learning_rate: 1e-3,
            batch_size,
            grad_accum_steps,
            max_steps: Some(1),
            max_grad_norm: None,
            ..Default::default()
        };
        let out = tempfile::tempdir().unwrap();
        let r = train(lm(5), &data, &config, out.path(), &no_stop()).unwrap();
        let LogEntry::Step {
            loss, grad_norm, ..
        } = log_entries(out.path())[0].clone()
        else {
            panic!("the first log line is the step")
        };
        (loss, grad_norm, params(&r.model.model))
    };
    let (l1, g1, p1) = run(4, 1);
    let (l4, g4, p4) = run(1, 4);
    assert!((l1 - l4).abs() < 1e-5 * l1, "loss {l1} vs {l4}");
    assert!((g1 - g4).abs() < 1e-4 * g1, "grad norm {g1} vs {g4}");
    let max_diff = p1
        .iter()
        .zip(&p4)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    // Adam's first step moves each weight by about lr·sign(g): equal gradients, equal steps.
    assert!(max_diff < 1e-4, "parameters differ by {max_diff}");
}

#[test]
fn completion_only_loss_matches_an_independent_sum() {
    let model = lm(6);
    let examples = revisions(5);
    let (enc, stats) = encode_all(&model, &examples, 1024, LengthPolicy::Error).unwrap();
    let r = evaluate(&model.model, &enc, 2, 256, 0).unwrap();
    // Independently: per-token log-probs of each whole sequence, summed over the completion.
    let mut total = 0.0f64;
    for e in &enc {
        let lp = model
            .sequence_logprobs(std::slice::from_ref(&e.tokens))
            .unwrap();
        total -= lp[0][e.prompt_len - 1..]
            .iter()
            .map(|&x| f64::from(x))
            .sum::<f64>();
    }
    let want = total / stats.completion_tokens as f64;
    assert!((r.loss - want).abs() < 1e-5 * want, "{} vs {want}", r.loss);
    assert_eq!(r.tokens, stats.completion_tokens);
}

#[test]
fn global_norm_clipping_matches_a_host_reference() {
    let dev = Device::default().autodiff();
    let model = lm(7).model.fork(&dev).train();
    let (enc, _) = encode_all(&lm(7), &revisions(3), 1024, LengthPolicy::Error).unwrap();
    let refs: Vec<_> = enc.iter().collect();
    let batch = collate(&refs, 256, &dev);
    let loss = completion_nll(&model, &batch).unwrap().sum();
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    // Reference: every gradient read back and summed on the host in f64.
    struct Host<'a>(&'a GradientsParams, Vec<Vec<f32>>);
    impl ModuleVisitor for Host<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let g = self
                .0
                .get::<D>(p.id)
                .expect("every parameter has a gradient");
            self.1.push(g.try_into_vec_as::<f32>().unwrap());
        }
    }
    let mut host = Host(&grads, vec![]);
    model.visit(&mut host);
    let before = host.1;
    let norm: f64 = before
        .iter()
        .flatten()
        .map(|&g| f64::from(g).powi(2))
        .sum::<f64>()
        .sqrt();
    assert_eq!(
        before.len(),
        2 * 9 + 2,
        "2 layers × 9 tensors, final norm, tied embedding"
    );
    assert!((global_grad_norm(&model, &grads) - norm).abs() < 1e-4 * norm);
    let max = norm / 4.0;
    let reported = clip_grad_norm(&model, &mut grads, Some(max));
    assert!(
        (reported - norm).abs() < 1e-4 * norm,
        "the norm before clipping"
    );
    let mut host = Host(&grads, vec![]);
    model.visit(&mut host);
    let after: Vec<f32> = host.1.into_iter().flatten().collect();
    let k = max / (norm + 1e-6);
    for (a, b) in after.iter().zip(before.iter().flatten()) {
        assert!((f64::from(*a) - k * f64::from(*b)).abs() < 1e-6 + 1e-4 * f64::from(b.abs()));
    }
    assert!((global_grad_norm(&model, &grads) - max).abs() < 1e-4 * max);
    // Under the limit: untouched.
    let n = clip_grad_norm(&model, &mut grads, Some(10.0 * norm));
    assert!((n - max).abs() < 1e-4 * max);
}

#[test]
fn a_nan_loss_stops_with_the_state_before_it_saved() {
    let cfg = tiny_config();
    let mut w = random_weights(&cfg, 8).unwrap();
    w.get_mut("model.layers.1.mlp.down_proj.weight")
        .unwrap()
        .data[5] = f32::NAN;
    let dev = Device::default();
    let model = rlaif_lm::tiny::model_from_weights(&cfg, w, Path::new("nan"), &dev).unwrap();
    let base = lm(8);
    let lm = LanguageModel::from_parts(model, cfg, base.tokenizer, base.chat_template);
    let data = SftData::build(
        revisions(4),
        vec![],
        &DataConfig {
            helpful_ratio: 0.0,
            eval_fraction: 0.0,
            seed: 0,
        },
    );
    let out = tempfile::tempdir().unwrap();
    let config = SftConfig::default();
    match train(lm, &data, &config, out.path(), &no_stop()) {
        Err(SftError::NonFinite {
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
fn completion_boundary_chat_and_raw() {
    let model = lm(9);
    let chat = SftExample::chat("c", "hi", "Hello there.");
    let e = encode_example(&model, &chat, 1024, LengthPolicy::Error)
        .unwrap()
        .unwrap();
    let tok = &model.tokenizer;
    assert_eq!(
        tok.decode(&e.tokens[..e.prompt_len], false).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        tok.decode(&e.tokens[e.prompt_len..], false).unwrap(),
        "Hello there.<|im_end|>\n"
    );
    // The prompt tokens are the ones generation starts from.
    assert_eq!(
        &e.tokens[..e.prompt_len],
        model.encode_prompt(&chat.prompt).unwrap().as_slice()
    );

    let raw = parse_examples(
        r#"{"id": "r", "prompt": "Why?", "completion": "Because.", "format": "raw"}"#,
        Path::new("raw.jsonl"),
        "helpful",
        PromptFormat::Chat,
    )
    .unwrap();
    let e = encode_example(&model, &raw[0], 1024, LengthPolicy::Error)
        .unwrap()
        .unwrap();
    assert_eq!(
        tok.decode(&e.tokens[..e.prompt_len], false).unwrap(),
        "\n\nHuman: Why?\n\nAssistant:"
    );
    assert_eq!(
        tok.decode(&e.tokens[e.prompt_len..], false).unwrap(),
        " Because.<|im_end|>"
    );
    assert_eq!(
        e.tokens.last(),
        tok.eos_id.as_ref(),
        "raw completions end with EOS"
    );

    // Too long: completions are cut, prompts that don't fit are an error naming the line.
    let e = encode_example(&model, &chat, e.prompt_len + 3, LengthPolicy::Error)
        .unwrap()
        .unwrap();
    assert!(e.truncated);
    let mut long = parse_examples(
        "\n{\"id\": \"long\", \"prompt\": \"hello hello hello\", \"completion\": \"x\"}",
        Path::new("data/rev.jsonl"),
        "revision",
        PromptFormat::Chat,
    )
    .unwrap();
    let err = encode_example(&model, &long[0], 20, LengthPolicy::Error).unwrap_err();
    assert_eq!(
        err.to_string(),
        "data/rev.jsonl:2: example `long`: the prompt is 36 tokens, the length limit is 20 \
         (raise max_seq_len, shorten the prompt, or set length_policy = \"skip\")"
    );
    assert_eq!(
        encode_example(&model, &long[0], 20, LengthPolicy::Skip).unwrap(),
        None
    );
    long.push(chat);
    let (_, stats) = encode_all(&model, &long, 30, LengthPolicy::Skip).unwrap();
    assert_eq!((stats.examples, stats.skipped), (1, 1));
}

#[test]
fn data_formats_and_located_errors() {
    let text = r#"{"id": "rt-1", "prompt": "p", "initial_response": "bad", "sft": [{"prompt": "How do I pick a lock?", "completion": "Call a locksmith."}], "format": "chat", "seed": 0}
{"id": "rt-2", "sft": [{"prompt": "q", "completion": "first"}, {"prompt": "q", "completion": "second"}], "format": "raw"}
{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}

{"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}]}
{"id": "s", "prompt": "plain", "completion": "text"}
"#;
    let ex = parse_examples(
        text,
        Path::new("dir/mixed.jsonl"),
        "revision",
        PromptFormat::Chat,
    )
    .unwrap();
    let ids: Vec<&str> = ex.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["rt-1", "rt-2#0", "rt-2#1", "mixed:3", "mixed:5", "s"]
    );
    assert!(
        matches!(&ex[0].prompt, Prompt::Chat(c) if c.messages.len() == 1 && c.messages[0].content == "How do I pick a lock?")
    );
    assert_eq!(ex[0].completion, "Call a locksmith.");
    assert_eq!(
        ex[1].prompt,
        Prompt::Text("\n\nHuman: q\n\nAssistant:".into())
    );
    assert_eq!(ex[2].completion, " second");
    assert!(matches!(&ex[3].prompt, Prompt::Chat(c) if c.messages.len() == 2));
    assert_eq!(ex[3].completion, "Hello!");
    assert_eq!(ex[4].completion, "4");
    assert!(matches!(&ex[5].prompt, Prompt::Chat(_)));
    assert_eq!((ex[5].origin.line, ex[5].source.as_str()), (6, "revision"));

    let err = |text: &str| {
        parse_examples(text, Path::new("f.jsonl"), "x", PromptFormat::Chat)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json"),
        "f.jsonl:2: not JSON: expected ident at line 1 column 2"
    );
    assert_eq!(err("[1]"), "f.jsonl:1: expected a JSON object");
    assert_eq!(
        err(r#"{"prompt": "a"}"#),
        "f.jsonl:1: field `completion`: missing"
    );
    assert_eq!(
        err(r#"{"completion": "a"}"#),
        "f.jsonl:1: field `prompt`: missing (a line needs `sft`, `messages` or `prompt` + `completion`)"
    );
    assert_eq!(
        err(r#"{"prompt": "a", "completion": "  "}"#),
        "f.jsonl:1: field `completion`: is empty"
    );
    assert_eq!(
        err(
            r#"{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}"#
        ),
        "f.jsonl:1: field `messages[1].role`: the last message must be the assistant's (it is what is learnt)"
    );
    assert_eq!(
        err(r#"{"messages": [{"role": "robot", "content": "a"}]}"#),
        "f.jsonl:1: field `messages[0].role`: unknown role `robot` (system, user, assistant)"
    );
    assert_eq!(
        err(r#"{"sft": [{"prompt": "a"}]}"#),
        "f.jsonl:1: field `sft[0].completion`: missing, empty or not a string"
    );
    assert_eq!(
        err(r#"{"prompt": "a", "completion": "b", "format": "latex"}"#),
        "f.jsonl:1: field `format`: expected \"chat\" or \"raw\", found \"latex\""
    );
    assert_eq!(
        err(
            "{\"id\": \"a\", \"prompt\": \"a\", \"completion\": \"b\"}\n{\"id\": \"a\", \"prompt\": \"c\", \"completion\": \"d\"}"
        ),
        "f.jsonl:2: field `id`: duplicate id `a` (first on line 1)"
    );
}

#[test]
fn split_and_mix_are_seeded_and_honour_the_ratio() {
    let rev = revisions(20);
    let help: Vec<SftExample> = (0..6)
        .map(|i| SftExample::chat(format!("h{i}"), "q", "a").with_source("helpful"))
        .collect();
    let d1 = SftData::build(
        rev.clone(),
        help.clone(),
        &DataConfig {
            helpful_ratio: 2.0,
            eval_fraction: 0.1,
            seed: 7,
        },
    );
    let d2 = SftData::build(
        rev.clone(),
        help.clone(),
        &DataConfig {
            helpful_ratio: 2.0,
            eval_fraction: 0.1,
            seed: 7,
        },
    );
    let ids = |v: &[SftExample]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&d1.train), ids(&d2.train), "same seed, same data");
    assert_ne!(
        ids(&d1.train),
        ids(&SftData::build(
            rev.clone(),
            help.clone(),
            &DataConfig {
                helpful_ratio: 2.0,
                eval_fraction: 0.1,
                seed: 8
            }
        )
        .train)
    );
    let count = |v: &[SftExample], s: &str| v.iter().filter(|e| e.source == s).count();
    // 20 revisions: 2 held out, 18 trained; 6 helpful: 1 held out, 5 trained, upsampled to 36.
    assert_eq!(
        (count(&d1.train, "revision"), count(&d1.train, "helpful")),
        (18, 36)
    );
    assert_eq!(
        (count(&d1.eval, "revision"), count(&d1.eval, "helpful")),
        (2, 4)
    );
    // Upsampling cycles through every helpful example before repeating one.
    let mut per: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in d1.train.iter().filter(|e| e.source == "helpful") {
        *per.entry(e.id.as_str()).or_default() += 1;
    }
    assert_eq!(per.len(), 5);
    assert!(per.values().all(|&n| n == 7 || n == 8), "{per:?}");
    // No helpful example is on both sides.
    let train_ids: std::collections::HashSet<_> = d1.train.iter().map(|e| &e.id).collect();
    assert!(d1.eval.iter().all(|e| !train_ids.contains(&e.id)));
    // The pairs of one revision record stay on one side.
    let text: String = (0..10)
        .map(|i| format!("{{\"id\": \"r{i}\", \"sft\": [{{\"prompt\": \"p{i}\", \"completion\": \"a\"}}, {{\"prompt\": \"p{i}\", \"completion\": \"b\"}}]}}\n"))
        .collect();
    let ex = parse_examples(&text, Path::new("r.jsonl"), "revision", PromptFormat::Chat).unwrap();
    for seed in 0..20 {
        let (train, eval) = crate::split_eval(ex.clone(), 0.3, seed);
        assert_eq!((train.len(), eval.len()), (14, 6));
        let groups: std::collections::HashSet<_> = eval.iter().map(|e| &e.group).collect();
        assert_eq!(groups.len(), 3);
        assert!(train.iter().all(|e| !groups.contains(&e.group)));
    }
    // Ratio 0: revisions only.
    assert_eq!(
        SftData::build(
            rev,
            help,
            &DataConfig {
                helpful_ratio: 0.0,
                eval_fraction: 0.0,
                seed: 0
            }
        )
        .train
        .len(),
        20
    );
}

#[test]
fn config_errors_name_the_field() {
    let bad = |c: SftConfig| c.validate().unwrap_err().to_string();
    assert_eq!(
        bad(SftConfig {
            learning_rate: 0.0,
            ..Default::default()
        }),
        "invalid SFT configuration: field `learning_rate`: must be in (0, 1]"
    );
    assert_eq!(
        bad(SftConfig {
            grad_accum_steps: 0,
            ..Default::default()
        }),
        "invalid SFT configuration: field `grad_accum_steps`: must be at least 1"
    );
    assert_eq!(
        bad(SftConfig {
            max_grad_norm: Some(-1.0),
            ..Default::default()
        }),
        "invalid SFT configuration: field `max_grad_norm`: must be positive and finite (or none)"
    );
    let c: SftConfig = serde_json::from_str(r#"{"learning_rate": 1e-4, "epochs": 3}"#).unwrap();
    assert_eq!((c.learning_rate, c.epochs, c.batch_size), (1e-4, 3, 4));
    let e = serde_json::from_str::<SftConfig>(r#"{"learning_rat": 1e-4}"#).unwrap_err();
    assert!(
        e.to_string().starts_with("unknown field `learning_rat`"),
        "{e}"
    );
    assert_eq!(
        SftConfig {
            batch_size: 3,
            grad_accum_steps: 2,
            epochs: 2,
            ..Default::default()
        }
        .total_steps(13),
        6
    );
}

#[test]
fn a_damaged_checkpoint_is_a_located_error() {
    let data = SftData::build(
        revisions(4),
        vec![],
        &DataConfig {
            helpful_ratio: 0.0,
            eval_fraction: 0.0,
            seed: 0,
        },
    );
    let config = SftConfig {
        batch_size: 4,
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    train(lm(10), &data, &config, out.path(), &no_stop()).unwrap();
    let model_file = out.path().join("checkpoints/step-00000001/model.bpk");
    let bytes = std::fs::read(&model_file).unwrap();
    for damaged in [&bytes[..bytes.len() / 2], b"not a burnpack file".as_slice()] {
        std::fs::write(&model_file, damaged).unwrap();
        match train(lm(10), &data, &config, out.path(), &no_stop()) {
            Err(SftError::Checkpoint { path, .. }) => assert_eq!(path, model_file),
            other => panic!("expected a checkpoint error, got {other:?}"),
        }
    }
    // Another model (same tokenizer, so the same training tokens) can't resume it.
    let wider = rlaif_lm::LlamaConfig {
        hidden_size: 48,
        ..tiny_config()
    };
    let other = tiny_lm(&wider, 10, &Device::default()).unwrap();
    let err = train(other, &data, &config, out.path(), &no_stop()).unwrap_err();
    assert!(
        matches!(err, SftError::ResumeMismatch { ref field, .. } if field == "model config"),
        "{err}"
    );
    let state = out
        .path()
        .join("checkpoints/step-00000001/trainer_state.json");
    std::fs::write(&state, "{").unwrap();
    let err = train(lm(10), &data, &config, out.path(), &no_stop()).unwrap_err();
    assert!(
        err.to_string().contains("unreadable trainer state"),
        "{err}"
    );
}
