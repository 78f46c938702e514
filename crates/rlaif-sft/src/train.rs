//! The training loop.
//!
//! Per optimizer step (every detail named, as CleanRL does):
//!
//! 1. The step's examples: `batch_size · grad_accum_steps` consecutive examples of the
//!    epoch's seeded permutation (the last step of an epoch may have fewer). They are
//!    sorted by length before being cut into micro-batches, which only reduces padding:
//!    the loss below does not depend on how the step is cut.
//! 2. Loss: the mean negative log-likelihood of the completion tokens of the whole step,
//!    `Σ nll / N` with `N` the step's completion tokens. Each micro-batch contributes
//!    `Σ_micro nll / N`, so summing the micro-batch gradients (Burn's
//!    `GradientsAccumulator` sums) gives exactly the full-batch gradient, whatever the
//!    micro-batches' token counts. (Dividing each micro-batch by its own count and then
//!    by the number of micro-batches weights tokens unequally: the "gradient accumulation
//!    bug" fixed in Hugging Face transformers 4.46.)
//! 3. Global-norm clipping to `max_grad_norm` ([`crate::clip`]).
//! 4. A non-finite loss or gradient norm stops the run with [`SftError::NonFinite`]
//!    before the parameters are touched; the state before the step is checkpointed.
//! 5. AdamW (Loshchilov & Hutter 2019, decoupled weight decay; norms and biases not
//!    decayed) at the step's learning rate ([`crate::schedule`]).
//!
//! Around the steps: a held-out evaluation before the first step, every `eval_every`
//! steps and after the last; a checkpoint every `checkpoint_every` steps, after the last
//! and when stopped; one JSON line per step and per evaluation in `log.jsonl`; the
//! trained model as a Hugging Face directory in `model/` and the run's [`SftReport`] in
//! `report.json`.

use crate::batch::{collate, completion_nll};
use crate::checkpoint::{self, TrainerState};
use crate::clip::clip_grad_norm;
use crate::config::SftConfig;
use crate::data::SftData;
use crate::encode::{EncodeStats, EncodedExample, encode_all};
use crate::error::{Result, SftError};
use crate::schedule::learning_rate;
use burn::module::{Module, ParamGroup};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rlaif_lm::hf::write_atomic;
use rlaif_lm::{LanguageModel, Llama};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

impl LogEntry {
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

/// The AdamW optimizer of `config`; norms and biases get no weight decay.
pub fn optimizer(config: &SftConfig) -> ModuleOptimizer {
    let adamw = |wd: f64| {
        AdamWConfig::new()
            .with_beta_1(config.adam_beta1 as f32)
            .with_beta_2(config.adam_beta2 as f32)
            .with_epsilon(config.adam_epsilon as f32)
            .with_weight_decay(wd as f32)
    };
    let optim = adamw(config.weight_decay).init();
    if config.weight_decay > 0.0 {
        // Module paths: `layers.0.input_layernorm.weight`, `norm.weight`, `...q_proj.bias`.
        let no_decay = ParamGroup::from_any_regexes(vec![r"norm\.", r"\.bias$"])
            .expect("constant regexes compile");
        optim.with_group(no_decay, adamw(0.0).build(), None)
    } else {
        optim
    }
}

/// The seeded permutation of `n` examples for `epoch`.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let s = rlaif_revision::run::derive_seed(&[seed, 0x5F7, epoch as u64]);
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(s));
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

struct Log {
    path: PathBuf,
    file: std::fs::File,
}

impl Log {
    /// Opens `log.jsonl`, keeping only the entries up to `keep_until` steps (a resumed run
    /// redoes the steps after its checkpoint); returns them too.
    fn open(out_dir: &Path, keep_until: usize) -> Result<(Self, Vec<LogEntry>)> {
        let path = out_dir.join("log.jsonl");
        let (kept, entries): (Vec<String>, Vec<LogEntry>) = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| {
                    serde_json::from_str::<LogEntry>(l)
                        .ok()
                        .filter(|e| e.step() <= keep_until)
                        .map(|e| (l.to_string(), e))
                })
                .unzip(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (vec![], vec![]),
            Err(e) => return Err(SftError::io(&path, e)),
        };
        let body: String = kept.iter().map(|l| format!("{l}\n")).collect();
        write_atomic(&path, body.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| SftError::io(&path, e))?;
        Ok((Self { path, file }, entries))
    }

    fn write(&mut self, entry: &LogEntry) -> Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|e| SftError::io(&self.path, e))
    }
}

/// Fine-tunes `lm` on `data` with `config`, writing checkpoints, the log, the report and
/// the final model under `out_dir`.
///
/// Resumable: when `out_dir` holds a checkpoint of the same run (same settings that shape
/// the computation and same training data, else [`SftError::ResumeMismatch`]), training
/// continues from it and gives the same parameters as an uninterrupted run. Setting
/// `stop` makes the run checkpoint after the step in flight and return with
/// `report.interrupted`.
///
/// The model is trained on `lm.device().autodiff()`; the returned model is on the plain
/// device.
pub fn train(
    lm: LanguageModel,
    data: &SftData,
    config: &SftConfig,
    out_dir: &Path,
    stop: &AtomicBool,
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
    std::fs::create_dir_all(out_dir).map_err(|e| SftError::io(out_dir, e))?;
    let fp = fingerprint(&train);
    let total = config.total_steps(train.len());
    let warmup = config.warmup(total);
    let per_epoch = train.len().div_ceil(config.effective_batch());
    let pad_id = lm.tokenizer.pad_id.or(lm.tokenizer.eos_id).unwrap_or(0);

    let LanguageModel {
        model,
        config: lm_config,
        tokenizer,
        chat_template,
    } = lm;
    let model_json = lm_config.to_hf_json();
    let train_device = model.embed_tokens.val().device().autodiff();
    let mut model = model.fork(&train_device).train();
    let mut optim = optimizer(config);

    let mut step = 0;
    let mut tokens_seen = 0u64;
    let mut resumed_from = None;
    if let Some((dir, state)) = checkpoint::latest(out_dir)? {
        checkpoint::check_resumable(
            &state,
            &dir.join(checkpoint::STATE_FILE),
            config,
            &fp,
            train.len(),
            &model_json,
        )?;
        (model, optim) = checkpoint::load(&dir, model, optim)?;
        step = state.step;
        tokens_seen = state.tokens_seen;
        resumed_from = Some(step);
    }
    let (mut log, earlier) = Log::open(out_dir, step)?;
    let save = |model: &Llama, optim: &ModuleOptimizer, step: usize, tokens_seen: u64| {
        let state = TrainerState {
            step,
            total_steps: total,
            config: config.clone(),
            train_fingerprint: fp.clone(),
            train_examples: train.len(),
            tokens_seen,
            model_config: model_json.clone(),
        };
        checkpoint::save(out_dir, model, optim, &state, config.keep_checkpoints)
    };

    let bar = progress_bar(config.progress, total, step);
    let mut report = SftReport {
        steps: step,
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
    for entry in earlier {
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
    let eval_now =
        |model: &Llama, step: usize, log: &mut Log, report: &mut SftReport| -> Result<()> {
            if eval.is_empty() || report.evals.last().is_some_and(|e| e.step == step) {
                return Ok(());
            }
            let r = evaluate(model, &eval, config.eval_batch_size, pad_id, step)?;
            log.write(&LogEntry::Eval(r.clone()))?;
            report.evals.push(r);
            Ok(())
        };
    if step == 0 {
        eval_now(&model, 0, &mut log, &mut report)?;
    }

    let started = Instant::now();
    let mut session_tokens = 0usize;
    let mut order: (usize, Vec<usize>) = (usize::MAX, vec![]);
    let mut last_saved = resumed_from;
    while step < total {
        if stop.load(Ordering::SeqCst) {
            report.interrupted = true;
            break;
        }
        // 1. The step's examples.
        let (epoch, k) = (step / per_epoch, step % per_epoch);
        if order.0 != epoch {
            order = (epoch, epoch_order(train.len(), config.seed, epoch));
        }
        let eff = config.effective_batch();
        let mut chosen: Vec<&EncodedExample> = order.1[k * eff..((k + 1) * eff).min(train.len())]
            .iter()
            .map(|&i| &train[i])
            .collect();
        chosen.sort_by(|a, b| a.tokens.len().cmp(&b.tokens.len()).then(a.id.cmp(&b.id)));
        let n_tokens: usize = chosen.iter().map(|e| e.completion_tokens()).sum();

        // 2. Σ nll / N over micro-batches, gradients summed.
        let mut acc = GradientsAccumulator::new();
        let mut loss = 0.0f64;
        for micro in chosen.chunks(config.batch_size) {
            let batch = collate(micro, pad_id, &train_device);
            let l = completion_nll(&model, &batch)?
                .sum()
                .div_scalar(n_tokens as f64);
            loss += f64::from(l.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(l.backward(), &model);
            acc.accumulate(&model, grads);
        }
        let mut grads = acc.grads();

        // 3. Global-norm clipping.
        let grad_norm = clip_grad_norm(&model, &mut grads, config.max_grad_norm);

        // 4. Nothing non-finite reaches the parameters.
        let bad = if !loss.is_finite() {
            Some(("loss", loss))
        } else if !grad_norm.is_finite() {
            Some(("gradient norm", grad_norm))
        } else {
            None
        };
        if let Some((what, value)) = bad {
            let checkpoint = if last_saved == Some(step) {
                checkpoint::checkpoint_dir(out_dir, step)
            } else {
                save(&model, &optim, step, tokens_seen)?
            };
            bar.abandon();
            return Err(SftError::NonFinite {
                step: step + 1,
                what,
                value,
                checkpoint,
            });
        }

        // 5. AdamW at the scheduled learning rate.
        let lr = learning_rate(
            config.schedule,
            config.learning_rate,
            warmup,
            total,
            config.min_lr_ratio,
            step,
        );
        model = optim.step(lr, model, grads);
        step += 1;
        tokens_seen += n_tokens as u64;
        session_tokens += n_tokens;
        report.record_step(&mut epoch_sums, epoch, loss, n_tokens);
        log.write(&LogEntry::Step {
            step,
            epoch,
            lr,
            loss,
            grad_norm,
            tokens: n_tokens,
        })?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(step as u64);
        bar.set_message(format!(
            "loss {loss:.4}  lr {lr:.2e}  {:.0} tok/s",
            session_tokens as f64 / secs
        ));

        if step < total && config.eval_every.is_some_and(|n| step.is_multiple_of(n)) {
            eval_now(&model, step, &mut log, &mut report)?;
        }
        if step < total
            && config
                .checkpoint_every
                .is_some_and(|n| step.is_multiple_of(n))
        {
            report.checkpoint = Some(save(&model, &optim, step, tokens_seen)?);
            last_saved = Some(step);
        }
    }
    bar.finish_and_clear();
    report.steps = step;
    report.tokens_per_second = session_tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if !report.interrupted {
        eval_now(&model, step, &mut log, &mut report)?;
    }
    report.checkpoint = Some(if last_saved == Some(step) {
        checkpoint::checkpoint_dir(out_dir, step)
    } else {
        save(&model, &optim, step, tokens_seen)?
    });
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
    Ok(write_atomic(&path, &serde_json::to_vec_pretty(report)?)?)
}

fn progress_bar(enabled: bool, total: usize, done: usize) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("sft {bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .expect("constant template parses"),
    );
    bar.set_position(done as u64);
    bar
}
