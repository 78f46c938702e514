//! The training loop.
//!
//! Per optimizer step (every detail named, as CleanRL does):
//!
//! 1. The step's comparisons: `batch_size · grad_accum_steps` consecutive comparisons of
//!    the epoch's seeded permutation (the last step of an epoch may have fewer). They are
//!    sorted by length before being cut into micro-batches, which only reduces padding.
//! 2. Rewards: each micro-batch's `2n` sequences (every response a, then every response b)
//!    right-padded into one batch; the head reads each at its last real token.
//! 3. Loss: the Bradley–Terry loss of `rlaif_kernels::bradley_terry_loss` (binary
//!    cross-entropy of `σ(r_a − r_b)` against the soft label, with the margin and the
//!    reward-centring term of the config), weighted by each comparison's file weight `w`
//!    and normalised by the whole step's `W = Σ w`: a micro-batch contributes
//!    `Σ_groups mean_group · w · n_group / W` (one kernel call per weight present), so the
//!    summed micro-batch gradients are exactly the full-batch gradient of `Σ w·ℓ / W`.
//! 4. The trainer ([`rlaif_train::Trainer::step`]) clips to the global norm, refuses a
//!    non-finite loss or gradient norm before the update (checkpointing the state before
//!    the step), and takes the AdamW step at the scheduled learning rate.
//!
//! Around the steps: a held-out evaluation ([`crate::eval`]) before the first step, every
//! `eval_every` steps and after the last; a checkpoint every `checkpoint_every` steps,
//! after the last and when stopped; one JSON line per step and per evaluation in
//! `log.jsonl`. After the last step: the reward statistics of the reference set, the
//! model as a Hugging Face directory in `model/`, the pictures (`calibration.svg`,
//! `curves.svg`) and the run's [`PmReport`] in `report.json`.

use crate::config::{PmConfig, RESUMABLE_FIELDS};
use crate::data::PmData;
use crate::encode::{EncodeStats, encode_comparisons};
use crate::error::{PmError, Result};
use crate::eval::{EncodedPair, EvalResult, evaluate};
use crate::model::{PreferenceModel, RewardNet, RewardStats};
use crate::plot::{CALIBRATION_SVG, CURVES_SVG, calibration_svg, curves_svg};
use burn::module::Module;
use burn::prelude::*;
use rand::seq::SliceRandom;
use rlaif_core::progress::{Observer, Progress};
use rlaif_kernels::{PreferenceConfig, bradley_terry_loss};
use rlaif_lm::{LanguageModel, LmError};
use rlaif_train::{RunIdentity, Trainer, TrainerConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a run did, over all its sessions (a resumed session reads the earlier ones back
/// from `log.jsonl`). Written to `report.json` in the output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PmReport {
    /// Optimizer steps done (in all, including those of earlier sessions).
    pub steps: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
    /// The step this session resumed from, if it resumed.
    pub resumed_from: Option<usize>,
    /// Whether the observer stopped this session before the last step.
    pub interrupted: bool,
    /// Training set encoding counts.
    pub train: EncodeStats,
    /// Held-out set encoding counts.
    pub eval: EncodeStats,
    /// The loss of the run's first step.
    pub first_loss: Option<f64>,
    /// The loss of the run's last step so far.
    pub last_loss: Option<f64>,
    /// Mean training loss of each epoch (pair-weighted over its steps), by epoch from 0.
    pub epoch_losses: BTreeMap<usize, f64>,
    /// Held-out evaluations, in step order (the first before any training).
    pub evals: Vec<EvalResult>,
    /// The score statistics of the reference set (when the run finished).
    pub reward_stats: Option<RewardStats>,
    /// Comparisons trained on per second in this session.
    pub pairs_per_second: f64,
    /// The newest checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// The Hugging Face preference-model directory, when the run finished.
    pub model_dir: Option<PathBuf>,
    /// The pictures written (reliability diagram, loss and accuracy curves).
    pub plots: Vec<PathBuf>,
}

/// The trained model and the report.
#[derive(Debug)]
pub struct PmOutcome {
    /// The model after the last step done (on the caller's device, without autodiff),
    /// with its reward statistics when the run finished.
    pub model: PreferenceModel,
    /// What happened.
    pub report: PmReport,
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogEntry {
    /// An optimizer step.
    Step {
        /// Steps done after it (from 1).
        step: usize,
        /// The epoch it belongs to (from 0).
        epoch: usize,
        /// Its learning rate.
        lr: f64,
        /// The step's weighted loss (with margin and centring term).
        loss: f64,
        /// Global gradient norm before clipping.
        grad_norm: f64,
        /// Comparisons in the step.
        pairs: usize,
        /// Accuracy on the step's decisive pairs, before the update (`None`: none).
        accuracy: Option<f64>,
    },
    /// A held-out evaluation.
    Eval(EvalResult),
}

impl rlaif_train::LogEntry for LogEntry {
    fn step(&self) -> usize {
        match self {
            LogEntry::Step { step, .. } => *step,
            LogEntry::Eval(e) => e.step,
        }
    }
}

/// What a preference-model checkpoint stores besides the tensors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PmState {
    /// Comparisons trained on so far.
    pairs_seen: u64,
}

/// FNV-1a (64 bit) of the encoded comparisons: ids, labels, weights and tokens, in order.
fn fingerprint(pairs: &[EncodedPair]) -> String {
    let mut h = rlaif_core::Fnv1a::default();
    for p in pairs {
        h.str(&p.id);
        h.u64(p.p_a.to_bits());
        h.u64(p.weight.to_bits());
        for side in [&p.a, &p.b] {
            h.u64(side.len() as u64);
            for t in side {
                h.bytes(&t.to_le_bytes());
            }
        }
    }
    h.hex()
}

/// The seeded permutation of `n` comparisons for `epoch`.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let s = rlaif_core::seed::derive_seed(&[seed, 0x9E7, epoch as u64]);
    order.shuffle(&mut rlaif_core::seed::stream_rng(s, 0));
    order
}

/// Reads a tensor back to the host.
fn host(t: Tensor<1>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| LmError::Backend(format!("reading a tensor back: {e:?}")).into())
}

/// The loss of one micro-batch (see the [module docs](self), step 3), divided by the
/// step's total weight, and `r_a − r_b` per pair (detached, on the host).
fn micro_batch_loss(
    net: &RewardNet,
    pairs: &[&EncodedPair],
    step_weight: f64,
    loss_config: PreferenceConfig,
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor<1>, Vec<f32>)> {
    let n = pairs.len();
    let seqs: Vec<Vec<u32>> = pairs
        .iter()
        .map(|p| p.a.clone())
        .chain(pairs.iter().map(|p| p.b.clone()))
        .collect();
    let (tokens, real) = rlaif_lm::score::pad_right(&seqs, pad_id, device);
    let r = net.rewards(tokens, &real)?;
    let (r_a, r_b) = (r.clone().slice(0..n), r.slice(n..2 * n));
    let margins = host((r_a.clone() - r_b.clone()).detach())?;
    // One kernel call per distinct weight: Σ_g mean_g · w_g · n_g / W.
    let mut weights: Vec<f64> = pairs.iter().map(|p| p.weight).collect();
    weights.sort_by(f64::total_cmp);
    weights.dedup();
    let mut loss: Option<Tensor<1>> = None;
    for w in weights {
        let idx: Vec<i64> = (0..n)
            .filter(|&i| pairs[i].weight == w)
            .map(|i| i as i64)
            .collect();
        let k = idx.len();
        let p: Vec<f32> = idx.iter().map(|&i| pairs[i as usize].p_a as f32).collect();
        let target = Tensor::<1>::from_data(TensorData::new(p, [k]), device);
        let (ra, rb) = if k == n {
            (r_a.clone(), r_b.clone())
        } else {
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [k]), device);
            (
                r_a.clone().select(0, idx.clone()),
                r_b.clone().select(0, idx),
            )
        };
        let part = bradley_terry_loss(ra, rb, target, loss_config)?
            .loss
            .mul_scalar(w * k as f64 / step_weight);
        loss = Some(match loss {
            Some(l) => l + part,
            None => part,
        });
    }
    Ok((loss.expect("a micro-batch has pairs"), margins))
}

/// Fraction of decisive pairs (`|p − ½| > threshold`) whose margin has the label's sign
/// (a tie counts ½).
fn step_accuracy(pairs: &[&EncodedPair], margins: &[f32], threshold: f64) -> Option<f64> {
    let (mut n, mut ok) = (0usize, 0.0);
    for (p, &d) in pairs.iter().zip(margins) {
        if (p.p_a - 0.5).abs() > threshold {
            n += 1;
            ok += if d == 0.0 {
                0.5
            } else if (d > 0.0) == (p.p_a > 0.5) {
                1.0
            } else {
                0.0
            };
        }
    }
    (n > 0).then(|| ok / n as f64)
}

/// The reward statistics of the reference set: `data.reference` if given, else the
/// responses of the held-out comparisons, else those of the training comparisons
/// (distinct prompt ⊕ response sequences); at most `config.reward_stats_max` of them, a
/// seeded sample when there are more.
fn reward_stats(
    pm: &PreferenceModel,
    data: &PmData,
    eval: &[EncodedPair],
    train: &[EncodedPair],
    config: &PmConfig,
) -> Result<Option<RewardStats>> {
    let max_len = config.max_seq_len.min(pm.lm.model.max_positions());
    let (mut seqs, source): (Vec<Vec<u32>>, &str) = if !data.reference.is_empty() {
        let seqs = data
            .reference
            .iter()
            .enumerate()
            .map(|(i, r)| {
                pm.encode_text(&r.prompt, &r.response, max_len)
                    .map(|e| e.tokens)
                    .map_err(|e| {
                        e.located(
                            r.origin.file.clone(),
                            r.origin.line,
                            &format!("reference {i}"),
                            max_len,
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        (seqs, "reference")
    } else {
        let (pairs, source) = if eval.is_empty() {
            (train, "training responses")
        } else {
            (eval, "held-out responses")
        };
        let mut seen = HashSet::new();
        let seqs = pairs
            .iter()
            .flat_map(|p| [&p.a, &p.b])
            .filter(|s| seen.insert(*s))
            .cloned()
            .collect();
        (seqs, source)
    };
    if seqs.is_empty() {
        return Ok(None);
    }
    if seqs.len() > config.reward_stats_max {
        let s = rlaif_core::seed::derive_seed(&[config.seed, 0x57A7]);
        seqs.shuffle(&mut rlaif_core::seed::stream_rng(s, 0));
        seqs.truncate(config.reward_stats_max.max(1));
    }
    let scores = pm.score_tokens(&seqs)?;
    Ok(Some(RewardStats::of(&scores, source)))
}

/// Trains `pm` on `data` with `config`, writing checkpoints, the log, the report, the
/// pictures and the final model under `out_dir`.
///
/// Resumable: when `out_dir` holds a checkpoint of the same run (same settings that shape
/// the computation, same model and same training data, else [`PmError::ResumeMismatch`]
/// naming what differs), training continues from it and gives bitwise the parameters of an
/// uninterrupted run. Progress (steps, comparisons, loss, accuracy, learning rate) goes to
/// `observer`; when it asks to stop ([`Observer::should_stop`]; a plain `AtomicBool` stop
/// flag is an observer), the run checkpoints after the step in flight and returns with
/// `report.interrupted`.
///
/// The model is trained on its device's autodiff twin; the returned model is on the plain
/// device.
pub fn train(
    pm: PreferenceModel,
    data: &PmData,
    config: &PmConfig,
    out_dir: &Path,
    observer: &dyn Observer,
) -> Result<PmOutcome> {
    config.validate()?;
    let (train, train_stats) =
        encode_comparisons(&pm, &data.train, config.max_seq_len, config.length_policy)?;
    let (eval, eval_stats) =
        encode_comparisons(&pm, &data.eval, config.max_seq_len, config.length_policy)?;
    if train.is_empty() {
        return Err(PmError::EmptyDataset(format!(
            "{} comparisons given, {} skipped as too long",
            data.train.len(),
            train_stats.skipped
        )));
    }
    tracing::info!(
        "encoded {} training comparisons ({} tokens, {} cut to fit, {} skipped) and {} held out",
        train_stats.pairs,
        train_stats.tokens,
        train_stats.truncated,
        train_stats.skipped,
        eval_stats.pairs
    );
    let total = config.total_steps(train.len());
    let per_epoch = train.len().div_ceil(config.effective_batch());
    let pad_id = pm.pad_id();
    let loss_config = PreferenceConfig {
        margin: config.margin as f32,
        center_coef: config.center_coef as f32,
    };

    let PreferenceModel {
        lm,
        head,
        max_seq_len,
        batch_size,
        reward_stats: _,
    } = pm;
    let LanguageModel {
        model: backbone,
        config: lm_config,
        tokenizer,
        chat_template,
    } = lm;
    // What must not change for a checkpoint to be resumed, checked in this order.
    let identity = RunIdentity::new(config, &RESUMABLE_FIELDS)?
        .with_fact("model config", lm_config.to_hf_json())
        .with_fact("training comparisons", train.len())
        .with_fact("training data fingerprint", fingerprint(&train));
    let train_device = backbone.device().autodiff();
    let net = RewardNet { backbone, head }.fork(&train_device).train();
    let opened = Trainer::<RewardNet, PmState, LogEntry>::open(
        net,
        TrainerConfig {
            optim: config.optim(),
            total_steps: total,
            checkpoint_every: config.checkpoint_every,
            keep_checkpoints: config.keep_checkpoints,
        },
        out_dir,
        identity,
        PmState::default(),
    )?;
    let mut trainer = opened.trainer;
    let mut report = PmReport {
        steps: trainer.step_count(),
        total_steps: total,
        resumed_from: trainer.resumed_from(),
        interrupted: false,
        train: train_stats,
        eval: eval_stats,
        first_loss: None,
        last_loss: None,
        epoch_losses: BTreeMap::new(),
        evals: vec![],
        reward_stats: None,
        pairs_per_second: 0.0,
        checkpoint: None,
        model_dir: None,
        plots: vec![],
    };
    // The sessions before this one, from the log.
    let mut epoch_sums: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    let mut step_losses: Vec<(usize, f64)> = Vec::new();
    let mut record_step = |report: &mut PmReport, step: usize, epoch: usize, loss: f64, pairs| {
        report.first_loss.get_or_insert(loss);
        report.last_loss = Some(loss);
        let e = epoch_sums.entry(epoch).or_default();
        (e.0, e.1) = (e.0 + loss * pairs as f64, e.1 + pairs);
        report.epoch_losses = epoch_sums
            .iter()
            .map(|(&k, &(s, n))| (k, s / n.max(1) as f64))
            .collect();
        step_losses.push((step, loss));
    };
    for entry in opened.earlier {
        match entry {
            LogEntry::Step {
                step,
                epoch,
                loss,
                pairs,
                ..
            } => record_step(&mut report, step, epoch, loss, pairs),
            LogEntry::Eval(r) => report.evals.push(r),
        }
    }
    type PmTrainer = Trainer<RewardNet, PmState, LogEntry>;
    let eval_now = |trainer: &mut PmTrainer, report: &mut PmReport| -> Result<()> {
        let step = trainer.step_count();
        if eval.is_empty() || report.evals.last().is_some_and(|e| e.step == step) {
            return Ok(());
        }
        let r = evaluate(
            trainer.model(),
            &eval,
            config.eval_batch_size,
            pad_id,
            step,
            config.decisive_threshold,
            config.calibration_bins,
        )?;
        tracing::info!(
            step,
            loss = r.loss,
            accuracy = r.accuracy,
            ece = r.ece,
            "held-out evaluation"
        );
        trainer.log(&LogEntry::Eval(r.clone()))?;
        report.evals.push(r);
        Ok(())
    };
    if trainer.step_count() == 0 {
        eval_now(&mut trainer, &mut report)?;
    }

    let started = Instant::now();
    let mut progress = Progress::new("pm", "steps", trainer.step_count() as u64, total as u64);
    observer.update(&progress);
    let mut order: (usize, Vec<usize>) = (usize::MAX, vec![]);
    let mut pairs_done = 0u64;
    let result = (|| -> Result<()> {
        while !trainer.is_done() {
            if observer.should_stop() {
                report.interrupted = true;
                break;
            }
            // 1. The step's comparisons.
            let step = trainer.step_count();
            let (epoch, k) = (step / per_epoch, step % per_epoch);
            if order.0 != epoch {
                order = (epoch, epoch_order(train.len(), config.seed, epoch));
            }
            let eff = config.effective_batch();
            let mut chosen: Vec<&EncodedPair> = order.1[k * eff..((k + 1) * eff).min(train.len())]
                .iter()
                .map(|&i| &train[i])
                .collect();
            chosen.sort_by(|a, b| a.len().cmp(&b.len()).then(a.id.cmp(&b.id)));
            let step_weight: f64 = chosen.iter().map(|p| p.weight).sum();
            let micro: Vec<&[&EncodedPair]> = chosen.chunks(config.batch_size).collect();

            // 2.-4. Weighted loss per micro-batch; the trainer accumulates, clips, guards,
            // steps.
            let mut margins: Vec<f32> = Vec::with_capacity(chosen.len());
            let stats = trainer.step(micro.len(), |net, i| {
                let (loss, m) = micro_batch_loss(
                    net,
                    micro[i],
                    step_weight,
                    loss_config,
                    pad_id,
                    &train_device,
                )?;
                margins.extend(m);
                Ok::<_, PmError>(loss)
            })?;
            let accuracy = step_accuracy(&chosen, &margins, config.decisive_threshold);
            trainer.state.pairs_seen += chosen.len() as u64;
            pairs_done += chosen.len() as u64;
            record_step(&mut report, stats.step, epoch, stats.loss, chosen.len());
            trainer.log(&LogEntry::Step {
                step: stats.step,
                epoch,
                lr: stats.lr,
                loss: stats.loss,
                grad_norm: stats.grad_norm,
                pairs: chosen.len(),
                accuracy,
            })?;
            progress.done = stats.step as u64;
            progress.tokens += chosen
                .iter()
                .map(|p| (p.a.len() + p.b.len()) as u64)
                .sum::<u64>();
            progress.elapsed = started.elapsed();
            progress.metrics = vec![("loss", stats.loss), ("lr", stats.lr)];
            if let Some(a) = accuracy {
                progress.metrics.push(("accuracy", a));
            }
            observer.update(&progress);

            if !trainer.is_done()
                && config
                    .eval_every
                    .is_some_and(|n| stats.step.is_multiple_of(n))
            {
                eval_now(&mut trainer, &mut report)?;
            }
            if let Some(dir) = trainer.maybe_checkpoint()? {
                report.checkpoint = Some(dir);
            }
        }
        Ok(())
    })();
    observer.finish(&progress);
    result?;
    report.steps = trainer.step_count();
    report.pairs_per_second = pairs_done as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if !report.interrupted {
        eval_now(&mut trainer, &mut report)?;
    }
    report.checkpoint = Some(trainer.checkpoint()?);
    let (net, _) = trainer.into_parts();
    let net = net.valid();
    let lm = LanguageModel::from_parts(net.backbone, lm_config, tokenizer, chat_template);
    let mut pm = PreferenceModel::from_parts(lm, net.head, None);
    pm.max_seq_len = max_seq_len;
    pm.batch_size = batch_size;
    if !report.interrupted {
        pm.reward_stats = reward_stats(&pm, data, &eval, &train, config)?;
        report.reward_stats = pm.reward_stats.clone();
        if let Some(s) = &pm.reward_stats {
            tracing::info!(mean = s.mean, std = s.std, count = s.count, source = %s.source, "reward statistics");
        }
        let dir = out_dir.join("model");
        pm.save_pretrained(&dir)?;
        report.model_dir = Some(dir);
    }
    if let Some(last) = report.evals.last() {
        let path = out_dir.join(CALIBRATION_SVG);
        calibration_svg(last, &path)?;
        report.plots.push(path);
    }
    let path = out_dir.join(CURVES_SVG);
    curves_svg(&step_losses, &report.evals, &path)?;
    report.plots.push(path);
    write_report(out_dir, &report)?;
    Ok(PmOutcome { model: pm, report })
}

fn write_report(out_dir: &Path, report: &PmReport) -> Result<()> {
    let path = out_dir.join("report.json");
    rlaif_core::fs::write_atomic(&path, &serde_json::to_vec_pretty(report)?)?;
    Ok(())
}
