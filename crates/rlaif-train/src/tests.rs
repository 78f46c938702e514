//! The trainer on a toy model that is not a language model: linear regression. It learns,
//! accumulation equals the full batch, a resumed run equals an uninterrupted one bitwise,
//! the non-finite guard keeps the state before the bad step, and resume refuses another
//! run's directory with the field named.

use crate::schedule::LrSchedule;
use crate::{LogEntry, OptimConfig, RunIdentity, TrainError, Trainer, TrainerConfig};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `y = x · w + b` with `x ∈ R^3`.
#[derive(Module, Debug)]
struct Linear {
    weight: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
}

fn device() -> Device {
    Device::default().autodiff()
}

fn linear(dev: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::from_floats([[0.1], [-0.2], [0.3]], dev)),
        bias: Param::from_tensor(Tensor::zeros([1], dev)),
    }
}

/// 24 examples of `y = 1.5 x0 − 2 x1 + 0.5 x2 + 0.25` (exact, no noise).
fn data() -> (Vec<[f32; 3]>, Vec<f32>) {
    let xs: Vec<[f32; 3]> = (0..24)
        .map(|i| {
            let t = i as f32;
            [(t * 0.37).sin(), (t * 0.11).cos(), (t % 5.0) / 5.0 - 0.4]
        })
        .collect();
    let ys = xs
        .iter()
        .map(|x| 1.5 * x[0] - 2.0 * x[1] + 0.5 * x[2] + 0.25)
        .collect();
    (xs, ys)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    step: usize,
    loss: f64,
    grad_norm: f64,
}

impl LogEntry for Entry {
    fn step(&self) -> usize {
        self.step
    }
}

/// The stage state of the toy: how many examples it has seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Seen {
    examples: usize,
}

#[derive(Debug, Clone, Serialize)]
struct ToySettings {
    learning_rate: f64,
    micro_batches: usize,
    checkpoint_every: Option<usize>,
}

fn config(steps: usize, checkpoint_every: Option<usize>) -> TrainerConfig {
    TrainerConfig {
        optim: OptimConfig {
            learning_rate: 0.05,
            schedule: LrSchedule::Cosine,
            warmup_steps: Some(5),
            weight_decay: 0.01,
            max_grad_norm: Some(5.0),
            ..Default::default()
        },
        total_steps: steps,
        checkpoint_every,
        keep_checkpoints: 10,
    }
}

/// Mean squared error of micro-batch `i` of `k` over all 24 examples (each micro-batch
/// divided by the whole step's count).
fn micro_loss(m: &Linear, i: usize, k: usize, dev: &Device, poison: bool) -> Tensor<1> {
    let (xs, ys) = data();
    let per = xs.len() / k;
    let rows: Vec<f32> = xs[i * per..(i + 1) * per]
        .iter()
        .flatten()
        .copied()
        .collect();
    let mut y: Vec<f32> = ys[i * per..(i + 1) * per].to_vec();
    if poison {
        y[0] = f32::NAN;
    }
    let x = Tensor::<2>::from_data(TensorData::new(rows, [per, 3]), dev);
    let y = Tensor::<1>::from_data(TensorData::new(y, [per]), dev);
    let pred = x.matmul(m.weight.val()).reshape([per]) + m.bias.val();
    (pred - y).square().sum().div_scalar(xs.len() as f64)
}

fn params(m: &Linear) -> Vec<f32> {
    struct All(Vec<f32>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().try_into_vec_as::<f32>().unwrap());
        }
    }
    let mut v = All(vec![]);
    m.visit(&mut v);
    v.0
}

/// Runs (or resumes) the toy in `dir` until `stop_after` steps (or the end).
fn run(
    dir: &Path,
    cfg: &TrainerConfig,
    micro: usize,
    stop_after: Option<usize>,
) -> Result<(Linear, Seen, Vec<Entry>), TrainError> {
    let dev = device();
    let settings = ToySettings {
        learning_rate: cfg.optim.learning_rate,
        micro_batches: micro,
        checkpoint_every: cfg.checkpoint_every,
    };
    let identity = RunIdentity::new(&settings, &["checkpoint_every"])?.with_fact("examples", 24);
    let opened = Trainer::<Linear, Seen, Entry>::open(
        linear(&dev),
        cfg.clone(),
        dir,
        identity,
        Seen::default(),
    )?;
    let (mut t, mut log) = (opened.trainer, opened.earlier);
    while !t.is_done() && stop_after.is_none_or(|s| t.step_count() < s) {
        let stats = t.step(micro, |m, i| {
            Ok::<_, TrainError>(micro_loss(m, i, micro, &dev, false))
        })?;
        t.state.examples += 24;
        let e = Entry {
            step: stats.step,
            loss: stats.loss,
            grad_norm: stats.grad_norm,
        };
        t.log(&e)?;
        log.push(e);
        t.maybe_checkpoint()?;
    }
    t.checkpoint()?;
    let (m, s) = t.into_parts();
    Ok((m, s, log))
}

#[test]
fn linear_regression_learns() {
    let dir = tempfile::tempdir().unwrap();
    let (m, seen, log) = run(dir.path(), &config(150, None), 2, None).unwrap();
    assert_eq!(seen.examples, 150 * 24);
    let (first, last) = (log[0].loss, log.last().unwrap().loss);
    assert!(first > 1.0, "first loss {first}");
    assert!(last < 1e-2 * first, "loss {first} → {last}");
    let p = params(&m);
    for (got, want) in p.iter().zip([1.5, -2.0, 0.5, 0.25]) {
        assert!((got - want).abs() < 0.15, "parameters {p:?}");
    }
    // The log on disk is what the run returned.
    let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 150);
}

#[test]
fn accumulation_equals_the_full_batch() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = config(3, None);
    let (m1, _, l1) = run(a.path(), &cfg, 1, None).unwrap();
    let (m4, _, l4) = run(b.path(), &cfg, 4, None).unwrap();
    for (x, y) in l1.iter().zip(&l4) {
        assert!((x.loss - y.loss).abs() < 1e-6 * x.loss, "{x:?} vs {y:?}");
        assert!((x.grad_norm - y.grad_norm).abs() < 1e-5 * x.grad_norm);
    }
    let d = params(&m1)
        .iter()
        .zip(params(&m4))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-5, "parameters differ by {d}");
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one_bitwise() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = config(12, Some(4));
    let (full, full_seen, full_log) = run(a.path(), &cfg, 2, None).unwrap();
    // The first session stops after step 6: its newest checkpoint is step 4 (it also
    // writes one at 6 on the way out; delete it, as a crash would have lost it) and the
    // log holds steps 5 and 6, which the second session redoes.
    run(b.path(), &cfg, 2, Some(6)).unwrap();
    std::fs::remove_dir_all(b.path().join("checkpoints/step-00000006")).unwrap();
    let (resumed, seen, log) = run(b.path(), &cfg, 2, None).unwrap();
    assert_eq!(params(&resumed), params(&full));
    assert_eq!(seen, full_seen, "the stage state is restored");
    assert_eq!(
        log, full_log,
        "the log has each step once, the earlier ones read back"
    );
    let on_disk = std::fs::read_to_string(b.path().join("log.jsonl")).unwrap();
    assert_eq!(
        on_disk,
        std::fs::read_to_string(a.path().join("log.jsonl")).unwrap()
    );
    // Another checkpoint frequency may resume; another learning rate may not.
    run(b.path(), &config(12, Some(5)), 2, None).unwrap();
    let mut other = config(12, Some(4));
    other.optim.learning_rate = 0.01;
    match run(b.path(), &other, 2, None) {
        Err(TrainError::ResumeMismatch {
            field,
            found,
            expected,
            path,
        }) => {
            assert_eq!(
                (field.as_str(), found.as_str(), expected.as_str()),
                ("learning_rate", "0.05", "0.01")
            );
            assert!(path.ends_with("checkpoints/step-00000012/trainer_state.json"));
        }
        other => panic!("expected a resume mismatch, got {other:?}"),
    }
    // Other micro-batching is another computation too.
    let err = run(b.path(), &cfg, 4, None).unwrap_err();
    assert!(
        matches!(err, TrainError::ResumeMismatch { ref field, .. } if field == "micro_batches"),
        "{err}"
    );
}

#[test]
fn a_non_finite_loss_keeps_the_state_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device();
    let identity = RunIdentity::new(
        &ToySettings {
            learning_rate: 0.05,
            micro_batches: 2,
            checkpoint_every: None,
        },
        &[],
    )
    .unwrap();
    let mut t = Trainer::<Linear, Seen, Entry>::open(
        linear(&dev),
        config(10, None),
        dir.path(),
        identity,
        Seen::default(),
    )
    .unwrap()
    .trainer;
    t.step(2, |m, i| {
        Ok::<_, TrainError>(micro_loss(m, i, 2, &dev, false))
    })
    .unwrap();
    let before = params(t.model());
    match t.step(2, |m, i| {
        Ok::<_, TrainError>(micro_loss(m, i, 2, &dev, i == 1))
    }) {
        Err(TrainError::NonFinite {
            step: 2,
            what: "loss",
            checkpoint,
            ..
        }) => {
            assert!(checkpoint.ends_with("step-00000001"));
            let saved = crate::checkpoint::read_state::<Seen>(&checkpoint).unwrap();
            assert_eq!(saved.step, 1);
        }
        other => panic!("expected a non-finite loss, got {other:?}"),
    }
    assert_eq!(params(t.model()), before, "the parameters were not touched");
    assert_eq!(t.step_count(), 1);
}

#[test]
fn a_malformed_log_line_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &config(4, Some(2)), 1, None).unwrap();
    let log = dir.path().join("log.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text = text.replacen("\"loss\"", "\"lost\"", 1);
    std::fs::write(&log, &text).unwrap();
    let err = run(dir.path(), &config(4, Some(2)), 1, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("log.jsonl:1: "), "{err}");
    assert!(err.contains("missing field `loss`"), "{err}");
    // A torn last line (a write cut short) is not an error: it is removed.
    let fixed = text.replacen("\"lost\"", "\"loss\"", 1);
    std::fs::write(&log, format!("{fixed}{{\"step\": 5, \"lo")).unwrap();
    run(dir.path(), &config(4, Some(2)), 1, None).unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), fixed);
}

#[test]
fn optimizer_settings_are_validated_with_the_field_named() {
    let bad = |o: OptimConfig| o.validate().unwrap_err().to_string();
    assert_eq!(
        bad(OptimConfig {
            adam_beta2: 1.0,
            ..Default::default()
        }),
        "invalid training configuration: field `adam_beta2`: must be in [0, 1)"
    );
    assert_eq!(
        OptimConfig {
            warmup_ratio: 0.25,
            ..Default::default()
        }
        .warmup(10),
        3
    );
    assert_eq!(
        OptimConfig {
            warmup_steps: Some(50),
            ..Default::default()
        }
        .warmup(10),
        9
    );
}

/// Two linear models trained as one module in two parameter groups.
#[derive(Module, Debug)]
struct Pair {
    a: Linear,
    b: Linear,
}

fn plain_optim(lr: f64) -> TrainerConfig {
    TrainerConfig {
        optim: OptimConfig {
            learning_rate: lr,
            schedule: LrSchedule::Constant,
            warmup_steps: Some(0),
            max_grad_norm: None,
            ..Default::default()
        },
        total_steps: 3,
        checkpoint_every: None,
        keep_checkpoints: 1,
    }
}

#[test]
fn parameter_groups_update_as_two_optimizers_with_their_own_learning_rates() {
    let dev = device();
    let identity = || {
        RunIdentity::new(
            &ToySettings {
                learning_rate: 0.0,
                micro_batches: 2,
                checkpoint_every: None,
            },
            &[],
        )
        .unwrap()
    };
    // Reference: each model alone, with its own learning rate.
    let mut alone = vec![];
    for lr in [0.05, 0.002] {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Trainer::<Linear, Seen, Entry>::open(
            linear(&dev),
            plain_optim(lr),
            dir.path(),
            identity(),
            Seen::default(),
        )
        .unwrap()
        .trainer;
        for _ in 0..3 {
            t.step(2, |m, i| {
                Ok::<_, TrainError>(micro_loss(m, i, 2, &dev, false))
            })
            .unwrap();
        }
        alone.push(params(t.model()));
    }
    // Both in one module: one loss, two groups.
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair {
        a: linear(&dev),
        b: linear(&dev),
    };
    let mut t = Trainer::<Pair, Seen, Entry>::open(
        pair,
        plain_optim(1.0),
        dir.path(),
        identity(),
        Seen::default(),
    )
    .unwrap()
    .trainer;
    let take_a = |m: &Pair, g: &mut burn::optim::GradientsParams| crate::take_grads(&m.a, g);
    let take_b = |m: &Pair, g: &mut burn::optim::GradientsParams| crate::take_grads(&m.b, g);
    let groups = [
        crate::UpdateGroup {
            name: "a",
            lr: 0.05,
            max_grad_norm: None,
            take: &take_a,
        },
        crate::UpdateGroup {
            name: "b",
            lr: 0.002,
            max_grad_norm: None,
            take: &take_b,
        },
    ];
    for _ in 0..3 {
        let acc = t
            .accumulate(2, |m: &Pair, i| {
                Ok::<_, TrainError>(
                    micro_loss(&m.a, i, 2, &dev, false) + micro_loss(&m.b, i, 2, &dev, false),
                )
            })
            .unwrap();
        let norms = t.apply(acc, &groups).unwrap();
        assert_eq!(norms.len(), 2);
        t.advance();
    }
    assert_eq!(t.step_count(), 3);
    for (got, want) in [params(&t.model().a), params(&t.model().b)]
        .iter()
        .zip(&alone)
    {
        for (x, y) in got.iter().zip(want) {
            assert!((x - y).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
    // A non-finite loss in one group touches no parameter of either.
    let before = (params(&t.model().a), params(&t.model().b));
    let acc = t
        .accumulate(2, |m: &Pair, i| {
            Ok::<_, TrainError>(
                micro_loss(&m.a, i, 2, &dev, false) + micro_loss(&m.b, i, 2, &dev, i == 1),
            )
        })
        .unwrap();
    match t.apply(acc, &groups) {
        Err(TrainError::NonFiniteUpdate {
            step: 4,
            group: "a",
            what: "loss",
            last_checkpoint: None,
            ..
        }) => {}
        other => panic!("expected a non-finite update, got {other:?}"),
    }
    assert_eq!((params(&t.model().a), params(&t.model().b)), before);
}

#[test]
fn fused_adamw_is_burns_adamw_bit_for_bit() {
    use burn::optim::{AdamWConfig, GradientsParams};
    let dev = device();
    let cfg = OptimConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    // Burn's AdamW with the same settings and no-decay group (the bias)
    let burns = |wd: f32| {
        AdamWConfig::new()
            .with_beta_1(cfg.adam_beta1 as f32)
            .with_beta_2(cfg.adam_beta2 as f32)
            .with_epsilon(cfg.adam_epsilon as f32)
            .with_weight_decay(wd)
    };
    let no_decay = burn::module::ParamGroup::from_any_regexes(vec![r"(^|\.)bias$"]).unwrap();
    let mut reference = burns(0.1)
        .init()
        .with_group(no_decay, burns(0.0).build(), None);
    let mut fused = cfg.adamw();
    let (xs, ys) = data();
    let loss = |m: &Linear| {
        let x: Vec<f32> = xs.iter().flatten().copied().collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [24, 3]), &dev);
        let y = Tensor::<2>::from_data(TensorData::new(ys.clone(), [24, 1]), &dev);
        let pred = x.matmul(m.weight.val()) + m.bias.val().unsqueeze::<2>();
        (pred - y).square().mean()
    };
    let (mut a, mut b) = (linear(&dev), linear(&dev));
    for step in 0..4 {
        let lr = 0.05 / (1 + step) as f64;
        let ga = GradientsParams::from_grads(loss(&a).backward(), &a);
        let gb = GradientsParams::from_grads(loss(&b).backward(), &b);
        a = reference.step(lr, a, ga);
        b = fused.step(lr, b, gb);
        let (pa, pb) = (params(&a), params(&b));
        assert!(
            pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "step {step}: {pa:?} vs {pb:?}"
        );
    }
    assert_ne!(params(&b), params(&linear(&dev)), "the model moved");
}
