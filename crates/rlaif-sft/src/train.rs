//! The training loop.
//!
//! Per optimizer step (every detail named, as CleanRL does):
//!
//! 1. The step's examples: `batch_size · grad_accum_steps` consecutive examples of the
//!    epoch's seeded permutation (the last step of an epoch may have fewer). They are
//!    sorted by length before being cut into micro-batches, which only reduces padding:
//!    the loss below does not depend on how the step is cut.
//! 2. Loss: the mean negative log-likelihood of the completion tokens of the whole step,
//!    `Σ nll / N` with `N` the step's completion tokens; each micro-batch contributes
//!    `Σ_micro nll / N`, so the summed micro-batch gradients are exactly the full-batch
//!    gradient (the shared trainer, [`rlaif_train::Trainer::step`], sums them).
//! 3. The trainer clips to the global norm, refuses a non-finite loss or gradient norm
//!    before the update (checkpointing the state before the step), and takes the AdamW
//!    step at the scheduled learning rate (norms and biases not decayed).
//!
//! Around the steps: a held-out evaluation before the first step, every `eval_every`
//! steps and after the last; a checkpoint every `checkpoint_every` steps, after the last
//! and when stopped; one JSON line per step and per evaluation in `log.jsonl`; the
//! trained model as a Hugging Face directory in `model/` and the run's [`SftReport`] in
//! `report.json`.

use crate::batch::{collate, completion_nll};
use crate::config::{RESUMABLE_FIELDS, SftConfig};
use crate::data::SftData;
use crate::encode::{EncodeStats, EncodedExample, encode_all};
use crate::error::{Result, SftError};
use burn::module::Module;
use rand::seq::SliceRandom;
use rlaif_core::progress::{Observer, Progress};
use rlaif_lm::{LanguageModel, Llama};
use rlaif_train::{RunIdentity, Trainer, TrainerConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The held-out loss at one point of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Optimizer steps done when it was measured.
    pub step: usize,
    /// Mean negative log-likelihood per completion token (nats).
    pub loss: f64,
    /// Completion tokens evaluated.
    pub tokens: usize,
    /// The same mean per example source (`"revision"`, `"helpful"`, ...).
    pub by_source: BTreeMap<String, f64>,
}

/// What a run did, over all its sessions (a resumed session reads the earlier ones back
/// from `log.jsonl`). Written to `report.json` in the output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftReport {
    /// Optimizer steps done (in all, including those of earlier sessions).
    pub steps: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
    /// The step this session resumed from, if it resumed.
    pub resumed_from: Option<usize>,
    /// Whether the stop flag ended this session before the last step.
    pub interrupted: bool,
    /// Training set encoding counts.
    pub train: EncodeStats,
    /// Held-out set encoding counts.
    pub eval: EncodeStats,
    /// Mean completion-token loss of the run's first step.
    pub first_loss: Option<f64>,
    /// Mean completion-token loss of the run's last step so far.
    pub last_loss: Option<f64>,
    /// Mean completion-token training loss of each epoch (token-weighted over its steps),
    /// by epoch from 0.
    pub epoch_losses: BTreeMap<usize, f64>,
    /// Held-out losses, in step order.
    pub evals: Vec<EvalResult>,
    /// Completion tokens trained on per second in this session.
    pub tokens_per_second: f64,
    /// The newest checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// The Hugging Face model directory, when the run finished.
    pub model_dir: Option<PathBuf>,
}

impl SftReport {
    /// Takes one optimizer step's mean loss over `tokens` completion tokens into the
    /// first / last / per-epoch losses; `sums` holds each epoch's (Σ loss·tokens, tokens).
    fn record_step(
        &mut self,
        sums: &mut BTreeMap<usize, (f64, usize)>,
        epoch: usize,
        loss: f64,
        tokens: usize,
    ) {
        self.first_loss.get_or_insert(loss);
        self.last_loss = Some(loss);
        let e = sums.entry(epoch).or_default();
        (e.0, e.1) = (e.0 + loss * tokens as f64, e.1 + tokens);
        self.epoch_losses = sums
            .iter()
            .map(|(&k, &(s, n))| (k, s / n.max(1) as f64))
            .collect();
    }
}

/// The trained model and the report.
#[derive(Debug)]
pub struct SftOutcome {
    /// The model after the last step done (on the caller's device, without autodiff).
    pub model: LanguageModel,
    /// What happened.
    pub report: SftReport,
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
        /// Mean completion-token loss of the step.
        loss: f64,
        /// Global gradient norm before clipping.
        grad_norm: f64,
        /// Completion tokens in the step.
        tokens: usize,
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

/// FNV-1a (64 bit) of the encoded examples: ids, prompt lengths and tokens, in order.
pub fn fingerprint(examples: &[EncodedExample]) -> String {
    let mut h = rlaif_core::Fnv1a::default();
    for e in examples {
        h.bytes(e.id.as_bytes());
        h.bytes(&[0xff]);
        h.u64(e.prompt_len as u64);
        for t in &e.tokens {
            h.bytes(&t.to_le_bytes());
        }
    }
    h.hex()
}

/// The seeded permutation of `n` examples for `epoch`.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let s = rlaif_core::seed::derive_seed(&[seed, 0x5F7, epoch as u64]);
    order.shuffle(&mut rlaif_core::seed::stream_rng(s, 0));
    order
}

/// The held-out loss of `model` (evaluated without autodiff) on `examples`.
pub fn evaluate(
    model: &Llama,
    examples: &[EncodedExample],
    batch_size: usize,
    pad_id: u32,
    step: usize,
) -> Result<EvalResult> {
    let model = model.valid();
    let device = model.embed_tokens.val().device();
    // Similar lengths together: less padding.
    let mut order: Vec<&EncodedExample> = examples.iter().collect();
    order.sort_by_key(|e| e.tokens.len());
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for chunk in order.chunks(batch_size.max(1)) {
        let batch = collate(chunk, pad_id, &device);
        let nll: Vec<f32> = completion_nll(&model, &batch)?
            .try_into_vec_as::<f32>()
            .map_err(|e| rlaif_lm::LmError::Backend(format!("reading the loss back: {e:?}")))?;
        for (e, v) in chunk.iter().zip(nll) {
            let s = sums.entry(e.source.clone()).or_default();
            s.0 += f64::from(v);
            s.1 += e.completion_tokens();
        }
    }
    let (total, tokens) = sums
        .values()
        .fold((0.0, 0), |(a, n), (s, k)| (a + s, n + k));
    Ok(EvalResult {
        step,
        loss: total / tokens.max(1) as f64,
        tokens,
        by_source: sums
            .into_iter()
            .map(|(k, (s, n))| (k, s / n.max(1) as f64))
            .collect(),
    })
}

/// What an SFT checkpoint stores besides the tensors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SftState {
    /// Completion tokens trained on so far.
    tokens_seen: u64,
}

/// Fine-tunes `lm` on `data` with `config`, writing checkpoints, the log, the report and
/// the final model under `out_dir`.
///
/// Resumable: when `out_dir` holds a checkpoint of the same run (same settings that shape
/// the computation, same model and same training data, else [`SftError::ResumeMismatch`]
/// naming what differs), training continues from it and gives the same parameters as an
/// uninterrupted run. Progress (steps, completion tokens, loss, learning rate) goes to
/// `observer`; when it asks to stop ([`Observer::should_stop`]; a plain `AtomicBool` stop
/// flag is an observer), the run checkpoints after the step in flight and returns with
/// `report.interrupted`.
///
/// The model is trained on `lm.device().autodiff()`; the returned model is on the plain
/// device.
pub fn train(
    lm: LanguageModel,
    data: &SftData,
    config: &SftConfig,
    out_dir: &Path,
    observer: &dyn Observer,
) -> Result<SftOutcome> {
    config.validate()?;
    let (train, train_stats) =
        encode_all(&lm, &data.train, config.max_seq_len, config.length_policy)?;
    let (eval, eval_stats) = encode_all(&lm, &data.eval, config.max_seq_len, config.length_policy)?;
    if train.is_empty() {
        return Err(SftError::EmptyDataset(format!(
            "{} examples given, {} skipped as too long",
            data.train.len(),
            train_stats.skipped
        )));
    }
    tracing::info!(
        "encoded {} training examples ({} completion tokens, {} cut to fit, {} skipped) and {} held out",
        train_stats.examples,
        train_stats.completion_tokens,
        train_stats.truncated,
        train_stats.skipped,
        eval_stats.examples
    );
    let total = config.total_steps(train.len());
    let per_epoch = train.len().div_ceil(config.effective_batch());
    let pad_id = lm.tokenizer.pad_id.or(lm.tokenizer.eos_id).unwrap_or(0);

    let LanguageModel {
        model,
        config: lm_config,
        tokenizer,
        chat_template,
    } = lm;
    // What must not change for a checkpoint to be resumed, checked in this order.
    let identity = RunIdentity::new(config, &RESUMABLE_FIELDS)?
        .with_fact("model config", lm_config.to_hf_json())
        .with_fact("training examples", train.len())
        .with_fact("training data fingerprint", fingerprint(&train));
    let train_device = model.embed_tokens.val().device().autodiff();
    let opened = Trainer::<Llama, SftState, LogEntry>::open(
        model.fork(&train_device).train(),
        TrainerConfig {
            optim: config.optim(),
            total_steps: total,
            checkpoint_every: config.checkpoint_every,
            keep_checkpoints: config.keep_checkpoints,
        },
        out_dir,
        identity,
        SftState::default(),
    )?;
    let mut trainer = opened.trainer;
    let resumed_from = trainer.resumed_from();
    let mut report = SftReport {
        steps: trainer.step_count(),
        total_steps: total,
        resumed_from,
        interrupted: false,
        train: train_stats,
        eval: eval_stats,
        first_loss: None,
        last_loss: None,
        epoch_losses: BTreeMap::new(),
        evals: vec![],
        tokens_per_second: 0.0,
        checkpoint: None,
        model_dir: None,
    };
    // The sessions before this one, from the log.
    let mut epoch_sums = BTreeMap::new();
    for entry in opened.earlier {
        match entry {
            LogEntry::Step {
                epoch,
                loss,
                tokens,
                ..
            } => report.record_step(&mut epoch_sums, epoch, loss, tokens),
            LogEntry::Eval(r) => report.evals.push(r),
        }
    }
    type SftTrainer = Trainer<Llama, SftState, LogEntry>;
    let eval_now = |trainer: &mut SftTrainer, report: &mut SftReport| -> Result<()> {
        let step = trainer.step_count();
        if eval.is_empty() || report.evals.last().is_some_and(|e| e.step == step) {
            return Ok(());
        }
        let r = evaluate(trainer.model(), &eval, config.eval_batch_size, pad_id, step)?;
        trainer.log(&LogEntry::Eval(r.clone()))?;
        report.evals.push(r);
        Ok(())
    };
    if trainer.step_count() == 0 {
        eval_now(&mut trainer, &mut report)?;
    }

    let started = Instant::now();
    let mut progress = Progress::new("sft", "steps", trainer.step_count() as u64, total as u64);
    observer.update(&progress);
    let mut order: (usize, Vec<usize>) = (usize::MAX, vec![]);
    let result = (|| -> Result<()> {
        while !trainer.is_done() {
            if observer.should_stop() {
                report.interrupted = true;
                break;
            }
            // 1. The step's examples.
            let step = trainer.step_count();
            let (epoch, k) = (step / per_epoch, step % per_epoch);
            if order.0 != epoch {
                order = (epoch, epoch_order(train.len(), config.seed, epoch));
            }
            let eff = config.effective_batch();
            let mut chosen: Vec<&EncodedExample> = order.1
                [k * eff..((k + 1) * eff).min(train.len())]
                .iter()
                .map(|&i| &train[i])
                .collect();
            chosen.sort_by(|a, b| a.tokens.len().cmp(&b.tokens.len()).then(a.id.cmp(&b.id)));
            let n_tokens: usize = chosen.iter().map(|e| e.completion_tokens()).sum();
            let micro: Vec<&[&EncodedExample]> = chosen.chunks(config.batch_size).collect();

            // 2.-3. Σ nll / N per micro-batch; the trainer accumulates, clips, guards, steps.
            let stats = trainer.step(micro.len(), |model, i| {
                let batch = collate(micro[i], pad_id, &train_device);
                Ok::<_, SftError>(
                    completion_nll(model, &batch)?
                        .sum()
                        .div_scalar(n_tokens as f64),
                )
            })?;
            trainer.state.tokens_seen += n_tokens as u64;
            report.record_step(&mut epoch_sums, epoch, stats.loss, n_tokens);
            trainer.log(&LogEntry::Step {
                step: stats.step,
                epoch,
                lr: stats.lr,
                loss: stats.loss,
                grad_norm: stats.grad_norm,
                tokens: n_tokens,
            })?;
            progress.done = stats.step as u64;
            progress.tokens += n_tokens as u64;
            progress.elapsed = started.elapsed();
            progress.metrics = vec![("loss", stats.loss), ("lr", stats.lr)];
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
    report.tokens_per_second = progress.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if !report.interrupted {
        eval_now(&mut trainer, &mut report)?;
    }
    report.checkpoint = Some(trainer.checkpoint()?);
    let (model, _) = trainer.into_parts();
    let lm = LanguageModel::from_parts(model.valid(), lm_config, tokenizer, chat_template);
    if !report.interrupted {
        let dir = out_dir.join("model");
        lm.save_pretrained(&dir)?;
        report.model_dir = Some(dir);
    }
    write_report(out_dir, &report)?;
    Ok(SftOutcome { model: lm, report })
}

fn write_report(out_dir: &Path, report: &SftReport) -> Result<()> {
    let path = out_dir.join("report.json");
    rlaif_core::fs::write_atomic(&path, &serde_json::to_vec_pretty(report)?)?;
    Ok(())
}
