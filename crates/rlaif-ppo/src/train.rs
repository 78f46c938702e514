//! The PPO loop.
//!
//! Per iteration (every detail named, as CleanRL does):
//!
//! 1. **Prompts**: `rollouts_per_iteration` prompts from the mix ([`crate::prompts`]),
//!    rendered through the chat template; a prompt that leaves no room for
//!    `max_new_tokens` is an error naming its file and id.
//! 2. **Generation** by the current policy (a copy without autodiff) at temperature T, no
//!    top-k / top-p (PPO's ratio needs the distribution sampled from), stopping at EOS or
//!    `max_new_tokens`; prompt `i` samples from the stream `(seed, it, i)`.
//! 3. **Scores** of (prompt, response text) by the reward, shaped ([`crate::reward`]:
//!    normalised with the PM's statistics, clipped, missing-EOS penalty).
//! 4. **Log-probs and values** of the response tokens, without gradients, in the layout of
//!    [`crate::rollout`]: the policy's and the reference's at the same temperature, the
//!    critic's values.
//! 5. **Per-token rewards**: `−β·KL_t` plus the score at the last real response token
//!    ([`crate::reward::token_rewards`]); optionally whitened keeping their mean (TRL's
//!    `whiten_rewards`).
//! 6. **GAE** (`rlaif_kernels::gae`, the fused kernel: Schulman et al. 2016, eq. 16) with
//!    the last real token terminal; returns `Â + V`; advantages whitened over the
//!    iteration's response tokens ("37 implementation details", detail 7).
//! 7. **Updates**: `ppo_epochs` passes, each over a seeded permutation of the rollout's
//!    micro-batches (`micro_batch_size` rows in draw order, the groups of step 4's forward
//!    passes, so the first update reproduces the rollout's log-probs bit for bit) cut into
//!    minibatches of `minibatch_size` rows; each minibatch is one optimizer update whose
//!    gradient is accumulated over its micro-batches, each
//!    micro-batch's loss ([`crate::loss`]) weighted by its share of the minibatch's
//!    response tokens (so the sum is the minibatch's token mean). Before the update is
//!    applied: a minibatch whose mean ratio exceeds `ratio_threshold` is skipped and
//!    logged (TRL's former `ratio_threshold`, against ratio blow-ups, TRL #1857). The
//!    update clips each model's gradient to `max_grad_norm` and steps the policy and the
//!    critic with their own learning rates (`rlaif_train::Trainer::apply`); a non-finite
//!    loss or gradient stops the run before any parameter moves. When `approx_kl_stop` is
//!    set and the mean approx-KL of the iteration's updates exceeds it, the iteration's
//!    remaining updates are skipped (CleanRL's `target_kl`).
//! 8. **β** moves by the adaptive controller ([`crate::kl_control`]) with the iteration's
//!    mean KL per response.
//! 9. **Log** under TRL's metric names, every `samples_every` iterations greedy answers to
//!    the held-out prompts with their scores in `samples.jsonl`, a checkpoint every
//!    `checkpoint_every` iterations.
//!
//! Every random draw derives from `(seed, iteration)`, and the checkpoint holds the
//! policy, the critic, the optimizer state of both, β and the data position: a resumed run
//! ends bitwise equal to an uninterrupted one.

use crate::config::{PpoConfig, RESUMABLE_FIELDS};
use crate::error::{PpoError, Result};
use crate::kl_control::KlController;
use crate::loss::{BatchTargets, ppo_loss};
use crate::plot::{CURVES_SVG, curves_svg};
use crate::prompts::{DrawPosition, PromptMix, chat_prompt};
use crate::reward::{Reward, shape_scores, token_rewards};
use crate::rollout::{
    Critic, Layout, head_values, host, logprobs_from_hidden, policy_logprobs, response_hidden, rows,
};
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::seq::SliceRandom;
use rlaif_core::jsonl::{JsonlAppender, Verdict};
use rlaif_core::progress::{Observer, Progress};
use rlaif_core::seed::{derive_seed, stream_rng};
use rlaif_core::{FinishReason, Prompt, SamplingParams};
use rlaif_eval::refusal::is_refusal;
use rlaif_kernels::{GaeConfig, WhitenConfig, gae, masked_whiten};
use rlaif_lm::{LanguageModel, Llama};
use rlaif_pm::{PreferenceModel, RewardNet};
use rlaif_revision::PromptRecord;
use rlaif_train::{RunIdentity, Trainer, TrainerConfig, UpdateGroup, take_grads};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The models PPO trains: the policy and the critic, in one module so that one trainer
/// checkpoints both (with the optimizer state of both).
#[derive(Module, Debug)]
pub struct PpoNets {
    /// The policy π.
    pub policy: Llama,
    /// The critic: a scalar head read at every position, on its own decoder or the
    /// policy's.
    pub critic: Critic,
}

/// Where the critic starts.
pub enum CriticInit<'a> {
    /// A copy of the preference model's decoder and head (TRL, OpenRLHF), so the values
    /// start on the reward's scale.
    RewardModel(&'a PreferenceModel),
    /// A copy of the policy's decoder with a zero head.
    Policy,
    /// No decoder of its own: a zero head on the policy's decoder (one forward pass gives
    /// log-probs and values; the value loss, weighted by `vf_coef`, also trains the
    /// policy's decoder). Saves a decoder and its AdamW state.
    SharedTrunk,
}

/// The policy's starting point (the SL model, also the frozen reference) and the critic.
pub struct PpoModels {
    /// The SL model: the reference π_ref, frozen, and the policy's initial weights; its
    /// tokenizer and chat template render the prompts.
    pub sl: LanguageModel,
    /// The critic's initial weights.
    pub critic: Critic,
}

/// Gives every parameter a new id (a copied module must not share ids with the module it
/// was copied from once both are trained in one module).
struct FreshIds;

impl ModuleMapper for FreshIds {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        Param::from_tensor(p.val())
    }
}

impl PpoModels {
    /// The SL model and a critic started as `critic` says.
    pub fn new(sl: LanguageModel, critic: CriticInit<'_>) -> Result<Self> {
        let hidden = sl.config.hidden_size;
        let zero_head = || Param::from_tensor(Tensor::zeros([hidden, 1], &sl.device()));
        let critic = match critic {
            CriticInit::RewardModel(pm) => {
                let mut backbone = pm.lm.model.clone();
                backbone.lm_head = None;
                Critic::separate(RewardNet {
                    backbone,
                    head: pm.head.clone(),
                })
            }
            CriticInit::Policy => {
                let mut backbone = sl.model.clone();
                backbone.lm_head = None;
                Critic {
                    backbone: Some(backbone),
                    head: zero_head(),
                }
            }
            CriticInit::SharedTrunk => Critic {
                backbone: None,
                head: zero_head(),
            },
        };
        if let Some(b) = &critic.backbone
            && (b.vocab_size() != sl.model.vocab_size() || critic.head.dims()[0] != hidden)
        {
            return Err(PpoError::Config {
                field: "critic",
                message: format!(
                    "the critic's vocabulary and width ({}, {}) differ from the policy's ({}, \
                     {hidden}): the preference model must share the policy's tokenizer",
                    b.vocab_size(),
                    critic.head.dims()[0],
                    sl.model.vocab_size()
                ),
            });
        }
        Ok(Self {
            sl,
            critic: critic.map(&mut FreshIds),
        })
    }
}

/// The stage state saved in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoState {
    /// β and its controller.
    pub kl: KlController,
    /// Prompts drawn so far from each file.
    pub position: DrawPosition,
    /// Responses generated so far.
    pub episodes: u64,
    /// Minibatches skipped by the ratio threshold so far.
    pub skipped_minibatches: u64,
}

/// One iteration, under TRL's metric names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationLog {
    /// Iterations done after it (from 1).
    pub step: usize,
    /// Responses generated so far.
    pub episode: u64,
    /// Mean over responses of the summed per-token KL estimate to the reference.
    #[serde(rename = "objective/kl")]
    pub kl: f64,
    /// Mean over responses of the summed `−log π_T` of the sampled tokens.
    #[serde(rename = "objective/entropy")]
    pub entropy: f64,
    /// Mean over responses of the summed `−β·KL_t`.
    #[serde(rename = "objective/non_score_reward")]
    pub non_score_reward: f64,
    /// `objective/scores + objective/non_score_reward`.
    #[serde(rename = "objective/rlhf_reward")]
    pub rlhf_reward: f64,
    /// Mean shaped score (normalised, clipped, missing-EOS penalty).
    #[serde(rename = "objective/scores")]
    pub scores: f64,
    /// Mean raw score of the reward.
    #[serde(rename = "objective/raw_scores")]
    pub raw_scores: f64,
    /// Mean approx-KL(π_old ‖ π) over the applied updates.
    #[serde(rename = "policy/approxkl_avg")]
    pub approxkl_avg: f64,
    /// Mean fraction of tokens whose ratio was clipped.
    #[serde(rename = "policy/clipfrac_avg")]
    pub clipfrac_avg: f64,
    /// Mean entropy per token of π_T during the updates.
    #[serde(rename = "policy/entropy_avg")]
    pub entropy_avg: f64,
    /// Mean clipped surrogate loss.
    #[serde(rename = "loss/policy_avg")]
    pub policy_loss_avg: f64,
    /// Mean clipped value loss.
    #[serde(rename = "loss/value_avg")]
    pub value_loss_avg: f64,
    /// Mean fraction of tokens whose value was clipped.
    #[serde(rename = "val/clipfrac_avg")]
    pub val_clipfrac_avg: f64,
    /// Mean ratio π/π_old over the updates (applied and skipped).
    #[serde(rename = "val/ratio")]
    pub ratio: f64,
    /// Responses that ended with an EOS token.
    #[serde(rename = "val/num_eos_tokens")]
    pub num_eos_tokens: usize,
    /// Mean response length in tokens.
    #[serde(rename = "val/response_length")]
    pub response_length: f64,
    /// The policy's learning rate.
    pub lr: f64,
    /// The critic's learning rate.
    pub critic_lr: f64,
    /// β used for this iteration's rewards.
    pub kl_coef: f64,
    /// Updates applied.
    pub updates: usize,
    /// Minibatches skipped by the ratio threshold.
    pub skipped_minibatches: usize,
    /// Whether approx-KL stopped the iteration's updates early.
    pub early_stopped: bool,
    /// Seconds spent generating.
    #[serde(rename = "time/generation_s")]
    pub generation_s: f64,
    /// Seconds spent scoring and in the forward passes of the rollout.
    #[serde(rename = "time/scoring_s")]
    pub scoring_s: f64,
    /// Seconds spent updating.
    #[serde(rename = "time/update_s")]
    pub update_s: f64,
}

/// The greedy answers to the held-out prompts after `step` iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplesLog {
    /// Iterations done.
    pub step: usize,
    /// Mean score (normalised when the reward has statistics).
    #[serde(rename = "eval/score_mean")]
    pub score_mean: f64,
    /// Standard deviation of the scores.
    #[serde(rename = "eval/score_std")]
    pub score_std: f64,
    /// Mean answer length in tokens.
    #[serde(rename = "eval/response_length")]
    pub response_length: f64,
    /// Share of answers that ended with EOS.
    #[serde(rename = "eval/eos_share")]
    pub eos_share: f64,
    /// Share of answers that refuse, by `rlaif_eval::refusal` (phrase matching: a measure
    /// that depends on no model trained here).
    #[serde(rename = "eval/refusal_rate")]
    pub refusal_rate: f64,
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogEntry {
    /// An iteration.
    Iteration(Box<IterationLog>),
    /// Held-out answers.
    Samples(SamplesLog),
}

impl rlaif_train::LogEntry for LogEntry {
    fn step(&self) -> usize {
        match self {
            Self::Iteration(i) => i.step,
            Self::Samples(s) => s.step,
        }
    }
}

/// One line of `samples.jsonl`: a greedy answer to a held-out prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Iterations done when it was written.
    pub iteration: usize,
    /// The prompt's id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// The answer.
    pub response: String,
    /// Its raw score.
    pub raw_score: f32,
    /// Its score, normalised when the reward has statistics.
    pub score: f32,
    /// Whether it ended with EOS.
    pub eos: bool,
    /// Whether it refuses (`rlaif_eval::refusal::is_refusal`).
    pub refusal: bool,
}

/// What a run did, over all its sessions. Written to `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoReport {
    /// Iterations done (in all).
    pub iterations: usize,
    /// Iterations of the whole run.
    pub total_iterations: usize,
    /// The iteration this session resumed from.
    pub resumed_from: Option<usize>,
    /// Whether the observer stopped this session early.
    pub interrupted: bool,
    /// Every iteration, in order.
    pub log: Vec<IterationLog>,
    /// Every held-out evaluation, in order (the first before any update).
    pub samples: Vec<SamplesLog>,
    /// β at the end.
    pub kl_coef: f64,
    /// The newest checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// The policy as a Hugging Face directory, when the run finished.
    pub policy_dir: Option<PathBuf>,
    /// The picture of the curves.
    pub plot: Option<PathBuf>,
}

/// The trained policy and the report.
pub struct PpoOutcome {
    /// The policy after the last iteration done (plain device), with the SL model's
    /// tokenizer and template.
    pub policy: LanguageModel,
    /// What happened.
    pub report: PpoReport,
}

/// The file of held-out answers in a run's directory.
pub const SAMPLES_FILE: &str = "samples.jsonl";
/// The run's report.
pub const REPORT_FILE: &str = "report.json";
/// The trained policy's directory.
pub const POLICY_DIR: &str = "policy";

/// What one iteration's rollouts hold after steps 1–6, on the host, row-major `[B, R]`.
pub(crate) struct Experience {
    pub(crate) layout: Layout,
    /// Mean over responses of the summed per-token KL.
    pub(crate) kl_mean: f64,
    /// Mean over responses of the summed `−β·KL_t`.
    pub(crate) non_score_mean: f64,
    /// Mean over responses of the summed `−log π_T`.
    pub(crate) neg_logp_mean: f64,
    pub(crate) old_logp: Vec<f32>,
    pub(crate) old_values: Vec<f32>,
    pub(crate) advantages: Vec<f32>,
    pub(crate) returns: Vec<f32>,
}

/// Statistics of one minibatch's micro-batches, token-weighted.
#[derive(Default, Clone, Copy)]
struct MinibatchStats {
    ratio: f64,
    approx_kl: f64,
    clipfrac: f64,
    entropy: f64,
    policy_loss: f64,
    value_loss: f64,
    val_clipfrac: f64,
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_scalar::<f32>())
}

/// Runs PPO (see the [module docs](self)) in `out_dir`, resuming from its newest
/// checkpoint when there is one (a run with other settings or other prompts is refused,
/// naming what changed).
///
/// `held_out` prompts are answered greedily every `samples_every` iterations (and before
/// the first and after the last) into `samples.jsonl` with their scores. Progress goes to
/// `observer`; when it asks to stop, the run checkpoints after the iteration in flight and
/// returns with `report.interrupted`. After the last iteration the policy is written as a
/// Hugging Face directory (`policy/`), the curves as `curves.svg`, the report as
/// `report.json`.
pub fn train(
    models: PpoModels,
    reward: &Reward<'_>,
    prompts: &PromptMix,
    held_out: &[PromptRecord],
    config: &PpoConfig,
    out_dir: &Path,
    observer: &dyn Observer,
) -> Result<PpoOutcome> {
    config.validate()?;
    let PpoModels { sl, critic } = models;
    let max_positions = sl.model.max_positions();
    // 1. (checked once for all prompts) Every prompt fits with its generation budget.
    let mut encoded: Vec<Vec<Vec<u32>>> = Vec::with_capacity(prompts.sets.len());
    for set in &prompts.sets {
        let mut ids = Vec::with_capacity(set.prompts.len());
        for rec in &set.prompts {
            let e = sl.encode_prompt(&chat_prompt(&rec.prompt))?;
            if e.len() + config.max_new_tokens > max_positions {
                return Err(PpoError::PromptTooLong {
                    file: set.file.clone(),
                    id: rec.id.clone(),
                    prompt_tokens: e.len(),
                    max_new_tokens: config.max_new_tokens,
                    max_positions,
                });
            }
            ids.push(e);
        }
        encoded.push(ids);
    }
    let held_ids = held_out
        .iter()
        .map(|r| sl.encode_prompt(&chat_prompt(&r.prompt)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let identity = RunIdentity::new(config, &RESUMABLE_FIELDS)?
        .with_fact("model config", sl.config.to_hf_json())
        .with_fact("prompts", prompts.fingerprint())
        .with_fact(
            "critic",
            if critic.backbone.is_some() {
                "own decoder"
            } else {
                "shared trunk"
            },
        )
        .with_fact(
            "reward statistics",
            serde_json::to_value(reward.stats()).unwrap_or_default(),
        );
    let device = sl.device();
    let train_device = device.clone().autodiff();
    let nets = PpoNets {
        policy: sl.model.clone().map(&mut FreshIds),
        critic,
    }
    .fork(&train_device)
    .train();
    let opened = Trainer::<PpoNets, PpoState, LogEntry>::open(
        nets,
        TrainerConfig {
            optim: config.optim(),
            total_steps: config.iterations,
            checkpoint_every: config.checkpoint_every,
            keep_checkpoints: config.keep_checkpoints,
        },
        out_dir,
        identity,
        PpoState {
            kl: KlController::new(config.kl_coef, config.adaptive_kl),
            position: DrawPosition::default(),
            episodes: 0,
            skipped_minibatches: 0,
        },
    )?;
    let mut trainer = opened.trainer;
    let mut report = PpoReport {
        iterations: trainer.step_count(),
        total_iterations: config.iterations,
        resumed_from: trainer.resumed_from(),
        interrupted: false,
        log: vec![],
        samples: vec![],
        kl_coef: trainer.state.kl.value,
        checkpoint: None,
        policy_dir: None,
        plot: None,
    };
    for e in opened.earlier {
        match e {
            LogEntry::Iteration(i) => report.log.push(*i),
            LogEntry::Samples(s) => report.samples.push(s),
        }
    }
    let resumed_at = trainer.step_count();
    let mut samples_out = JsonlAppender::open(out_dir.join(SAMPLES_FILE), |line| {
        let rec: SampleRecord = line.parse()?;
        Ok::<_, PpoError>(if rec.iteration > resumed_at {
            Verdict::CutHere
        } else {
            Verdict::Keep
        })
    })?;
    let pad_id = {
        let t = &sl.tokenizer;
        t.pad_id.or(t.eos_id).unwrap_or(0)
    };
    // The frozen reference, on the training device for the reason of step 4.
    let reference = sl.model.clone().fork(&train_device).no_grad();
    let held = |trainer: &mut Trainer<PpoNets, PpoState, LogEntry>,
                report: &mut PpoReport,
                samples_out: &mut JsonlAppender|
     -> Result<()> {
        if held_out.is_empty() {
            return Ok(());
        }
        let step = trainer.step_count();
        let policy = trainer.model().policy.valid();
        let completions = rlaif_lm::generate::generate(
            &policy,
            &sl.tokenizer,
            &held_ids,
            &SamplingParams::greedy(config.sample_max_new_tokens),
        )?;
        let pairs: Vec<(Prompt, String)> = held_out
            .iter()
            .zip(&completions)
            .map(|(r, c)| (chat_prompt(&r.prompt), c.text.clone()))
            .collect();
        let raw = reward.raw_scores(&pairs)?;
        let norm: Vec<f32> = raw
            .iter()
            .map(|&s| match reward.stats() {
                Some(st) => st.normalize(s),
                None => s,
            })
            .collect();
        for ((r, c), (&raw, &score)) in held_out.iter().zip(&completions).zip(raw.iter().zip(&norm))
        {
            samples_out.append(&SampleRecord {
                iteration: step,
                id: r.id.clone(),
                prompt: r.prompt.clone(),
                response: c.text.clone(),
                raw_score: raw,
                score,
                eos: c.finish_reason == FinishReason::Eos,
                refusal: is_refusal(&c.text),
            })?;
        }
        let n = norm.len() as f64;
        let mean = norm.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = norm
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        let entry = SamplesLog {
            step,
            score_mean: mean,
            score_std: var.sqrt(),
            response_length: completions
                .iter()
                .map(|c| c.token_ids.len() as f64)
                .sum::<f64>()
                / n,
            eos_share: completions
                .iter()
                .filter(|c| c.finish_reason == FinishReason::Eos)
                .count() as f64
                / n,
            refusal_rate: completions.iter().filter(|c| is_refusal(&c.text)).count() as f64 / n,
        };
        trainer.log(&LogEntry::Samples(entry.clone()))?;
        report.samples.push(entry);
        Ok(())
    };
    if trainer.step_count() == 0 && config.samples_every > 0 {
        held(&mut trainer, &mut report, &mut samples_out)?;
    }

    let mut progress = Progress::new(
        "ppo",
        "iterations",
        trainer.step_count() as u64,
        config.iterations as u64,
    );
    observer.update(&progress);
    let started = Instant::now();
    let result = (|| -> Result<()> {
        while !trainer.is_done() {
            if observer.should_stop() {
                report.interrupted = true;
                break;
            }
            let it = trainer.step_count();
            let b = config.rollouts_per_iteration;
            // 1. Prompts.
            let drawn = prompts.draw(config.seed, it, b, &mut trainer.state.position);
            let prompt_ids: Vec<Vec<u32>> = drawn
                .iter()
                .map(|d| encoded[d.set][d.index].clone())
                .collect();
            // 2. Generation at temperature T, no top-k / top-p.
            let t0 = Instant::now();
            let policy_plain = trainer.model().policy.valid();
            let completions = rlaif_lm::generate::generate(
                &policy_plain,
                &sl.tokenizer,
                &prompt_ids,
                &SamplingParams {
                    max_new_tokens: config.max_new_tokens,
                    temperature: config.temperature,
                    top_k: None,
                    top_p: 1.0,
                    seed: derive_seed(&[config.seed, 0x6E4E, it as u64]),
                    stop: vec![],
                    stop_at_eos: true,
                },
            )?;
            let generation_s = t0.elapsed().as_secs_f64();
            // 3. Scores.
            let t1 = Instant::now();
            let eos: Vec<bool> = completions
                .iter()
                .map(|c| c.finish_reason == FinishReason::Eos)
                .collect();
            let pairs: Vec<(Prompt, String)> = drawn
                .iter()
                .zip(&completions)
                .map(|(d, c)| (chat_prompt(&d.record.prompt), c.text.clone()))
                .collect();
            let raw = reward.raw_scores(&pairs)?;
            let scores = shape_scores(&raw, &eos, reward.stats(), config);
            // 4. Log-probs of policy and reference, values, in micro-batches.
            let responses: Vec<Vec<u32>> =
                completions.iter().map(|c| c.token_ids.clone()).collect();
            let beta = trainer.state.kl.value;
            // On the training device (untracked), as the update will compute them: the
            // autodiff device takes other kernels (attention, log-probs) than the plain one,
            // and their rounding differs.
            let policy_now = trainer.model().policy.clone().no_grad();
            let exp = experience(
                &policy_now,
                &reference,
                &trainer.model().critic.clone().no_grad(),
                &prompt_ids,
                &responses,
                &scores,
                pad_id,
                beta,
                config,
                &train_device,
                &device,
            )?;
            let scoring_s = t1.elapsed().as_secs_f64();
            // 7. Updates.
            let t2 = Instant::now();
            let (policy_lr, critic_lr) = config.learning_rates(it);
            let mut sums = MinibatchStats::default();
            let (mut applied, mut seen, mut skipped, mut early) = (0usize, 0usize, 0usize, false);
            let r = exp.layout.r;
            let take_policy = |m: &PpoNets, g: &mut GradientsParams| take_grads(&m.policy, g);
            let take_critic = |m: &PpoNets, g: &mut GradientsParams| take_grads(&m.critic, g);
            let groups = [
                UpdateGroup {
                    name: "policy",
                    lr: policy_lr,
                    max_grad_norm: config.max_grad_norm,
                    take: &take_policy,
                },
                UpdateGroup {
                    name: "critic",
                    lr: critic_lr,
                    max_grad_norm: config.max_grad_norm,
                    take: &take_critic,
                },
            ];
            // Minibatches are made of whole micro-batches of the rollout's forward passes
            // (rows in draw order, `micro_batch_size` at a time), shuffled per epoch: every
            // forward pass of the update then sees exactly the rows of a rollout pass, so the
            // first update reproduces the rollout's log-probs bit for bit (a matmul's rounding
            // depends on how many rows it is given: gemm's blocking follows the shape).
            let all: Vec<usize> = (0..b).collect();
            let row_groups: Vec<&[usize]> = all.chunks(config.micro_batch_size).collect();
            let per_minibatch = config.minibatch_size / config.micro_batch_size;
            'epochs: for epoch in 0..config.ppo_epochs {
                let mut order: Vec<usize> = (0..row_groups.len()).collect();
                order.shuffle(&mut stream_rng(
                    derive_seed(&[config.seed, 0xE90C, it as u64, epoch as u64]),
                    0,
                ));
                for chosen in order.chunks(per_minibatch) {
                    let micro: Vec<&[usize]> = chosen.iter().map(|&g| row_groups[g]).collect();
                    let mb: Vec<usize> = micro.iter().flat_map(|g| g.iter().copied()).collect();
                    let tokens_of = |idx: &[usize]| -> f64 {
                        idx.iter()
                            .map(|&i| {
                                exp.layout.mask[i * r..(i + 1) * r]
                                    .iter()
                                    .map(|&x| f64::from(x))
                                    .sum::<f64>()
                            })
                            .sum()
                    };
                    let total_tokens = tokens_of(&mb).max(1.0);
                    let mut st = MinibatchStats::default();
                    let acc = trainer.accumulate(
                        micro.len(),
                        |nets: &PpoNets, i| -> Result<Tensor<1>> {
                            let idx = micro[i];
                            let w = tokens_of(idx) / total_tokens;
                            let (tokens, real, mask) = exp.layout.batch(idx, &train_device);
                            // One pass through the policy's decoder; with a shared
                            // trunk its hidden states also give the values.
                            let p = exp.layout.p;
                            let hidden = response_hidden(&nets.policy, tokens.clone(), &real, p, r);
                            let (logp, entropy) = logprobs_from_hidden(
                                &nets.policy,
                                hidden.clone(),
                                tokens.clone(),
                                p,
                                r,
                                config.temperature,
                            )?;
                            let values = match &nets.critic.backbone {
                                None => head_values(hidden, &nets.critic.head),
                                Some(_) => nets.critic.values(&nets.policy, tokens, &real, p, r),
                            };
                            let targets = BatchTargets {
                                old_logp: rows(&exp.old_logp, r, idx, &train_device),
                                old_values: rows(&exp.old_values, r, idx, &train_device),
                                advantages: rows(&exp.advantages, r, idx, &train_device),
                                returns: rows(&exp.returns, r, idx, &train_device),
                                mask,
                            };
                            let parts = ppo_loss(logp, entropy, values, &targets, config)?;
                            st.ratio += w * scalar(parts.policy.ratio_mean.clone());
                            st.approx_kl += w * scalar(parts.policy.approx_kl.clone());
                            st.clipfrac += w * scalar(parts.policy.clip_fraction.clone());
                            st.entropy += w * scalar(parts.entropy.clone());
                            st.policy_loss += w * scalar(parts.policy.loss.clone().detach());
                            st.value_loss += w * scalar(parts.value.loss.clone().detach());
                            st.val_clipfrac += w * scalar(parts.value.clip_fraction.clone());
                            Ok(parts.total.mul_scalar(w))
                        },
                    )?;
                    seen += 1;
                    sums.ratio += st.ratio;
                    // (A NaN ratio makes a NaN loss, which `apply` refuses: the run stops.)
                    if st.ratio > config.ratio_threshold {
                        skipped += 1;
                        tracing::warn!(
                            iteration = it + 1,
                            epoch,
                            ratio = st.ratio,
                            threshold = config.ratio_threshold,
                            "minibatch skipped: its mean ratio exceeds the threshold"
                        );
                        continue;
                    }
                    trainer.apply(acc, &groups)?;
                    applied += 1;
                    sums.approx_kl += st.approx_kl;
                    sums.clipfrac += st.clipfrac;
                    sums.entropy += st.entropy;
                    sums.policy_loss += st.policy_loss;
                    sums.value_loss += st.value_loss;
                    sums.val_clipfrac += st.val_clipfrac;
                    if let Some(stop) = config.approx_kl_stop
                        && sums.approx_kl / applied as f64 > stop
                    {
                        early = true;
                        tracing::info!(
                            iteration = it + 1,
                            epoch,
                            approx_kl = sums.approx_kl / applied as f64,
                            "approx-KL above approx_kl_stop: the iteration's remaining updates are skipped"
                        );
                        break 'epochs;
                    }
                }
            }
            let update_s = t2.elapsed().as_secs_f64();
            // 8. β, from the KL this iteration's rewards were computed with.
            let beta_used = trainer.state.kl.value;
            trainer.state.kl.update(exp.kl_mean, b);
            trainer.state.episodes += b as u64;
            trainer.state.skipped_minibatches += skipped as u64;
            trainer.advance();
            // 9. Log, held-out answers, checkpoint.
            let bf = b as f64;
            let score_mean = scores.iter().map(|&x| f64::from(x)).sum::<f64>() / bf;
            let per = |x: f64| {
                if applied > 0 {
                    x / applied as f64
                } else {
                    f64::NAN
                }
            };
            let entry = IterationLog {
                step: trainer.step_count(),
                episode: trainer.state.episodes,
                kl: exp.kl_mean,
                entropy: exp.neg_logp_mean,
                non_score_reward: exp.non_score_mean,
                rlhf_reward: score_mean + exp.non_score_mean,
                scores: score_mean,
                raw_scores: raw.iter().map(|&x| f64::from(x)).sum::<f64>() / bf,
                approxkl_avg: per(sums.approx_kl),
                clipfrac_avg: per(sums.clipfrac),
                entropy_avg: per(sums.entropy),
                policy_loss_avg: per(sums.policy_loss),
                value_loss_avg: per(sums.value_loss),
                val_clipfrac_avg: per(sums.val_clipfrac),
                ratio: sums.ratio / seen.max(1) as f64,
                num_eos_tokens: eos.iter().filter(|&&e| e).count(),
                response_length: responses.iter().map(|x| x.len() as f64).sum::<f64>() / bf,
                lr: policy_lr,
                critic_lr,
                kl_coef: beta_used,
                updates: applied,
                skipped_minibatches: skipped,
                early_stopped: early,
                generation_s,
                scoring_s,
                update_s,
            };
            tracing::info!(
                iteration = entry.step,
                score = entry.scores,
                kl = entry.kl,
                "PPO iteration done"
            );
            trainer.log(&LogEntry::Iteration(Box::new(entry.clone())))?;
            progress.done = trainer.step_count() as u64;
            progress.tokens += responses.iter().map(|x| x.len() as u64).sum::<u64>();
            progress.elapsed = started.elapsed();
            progress.metrics = vec![
                ("score", entry.scores),
                ("kl", entry.kl),
                ("beta", trainer.state.kl.value),
            ];
            report.log.push(entry);
            let step = trainer.step_count();
            if config.samples_every > 0
                && (step.is_multiple_of(config.samples_every) || trainer.is_done())
            {
                held(&mut trainer, &mut report, &mut samples_out)?;
            }
            observer.update(&progress);
            if let Some(dir) = trainer.maybe_checkpoint()? {
                report.checkpoint = Some(dir);
            }
        }
        Ok(())
    })();
    observer.finish(&progress);
    result?;
    report.iterations = trainer.step_count();
    report.kl_coef = trainer.state.kl.value;
    report.checkpoint = Some(trainer.checkpoint()?);
    let (nets, _) = trainer.into_parts();
    let LanguageModel {
        model: _,
        config: lm_config,
        tokenizer,
        chat_template,
    } = sl;
    let policy =
        LanguageModel::from_parts(nets.policy.valid(), lm_config, tokenizer, chat_template);
    if report.iterations >= config.iterations {
        let dir = out_dir.join(POLICY_DIR);
        policy.save_pretrained(&dir)?;
        report.policy_dir = Some(dir);
    }
    if !report.log.is_empty() {
        let path = out_dir.join(CURVES_SVG);
        curves_svg(&report.log, &report.samples, &path)?;
        report.plot = Some(path);
    }
    let json = serde_json::to_vec_pretty(&report)?;
    rlaif_core::fs::write_atomic(&out_dir.join(REPORT_FILE), &json)?;
    Ok(PpoOutcome { policy, report })
}

/// Steps 4–6 of the [module docs](self) for one iteration.
#[allow(clippy::too_many_arguments)]
pub(crate) fn experience(
    policy: &Llama,
    reference: &Llama,
    critic: &Critic,
    prompt_ids: &[Vec<u32>],
    responses: &[Vec<u32>],
    scores: &[f32],
    pad_id: u32,
    beta: f64,
    config: &PpoConfig,
    fwd_device: &Device,
    device: &Device,
) -> Result<Experience> {
    let layout = Layout::new(prompt_ids, responses, pad_id)?;
    let (b, p, r) = (layout.rows(), layout.p, layout.r);
    let mut old_logp = Vec::with_capacity(b * r);
    let mut ref_logp = Vec::with_capacity(b * r);
    let mut old_values = Vec::with_capacity(b * r);
    let all: Vec<usize> = (0..b).collect();
    // The rollout's forward passes in the micro-batches of the update, so that the rows
    // are computed exactly as they will be (ratio 1 before the first update).
    for idx in all.chunks(config.micro_batch_size) {
        let (tokens, real, _) = layout.batch(idx, fwd_device);
        let (lp, _) = policy_logprobs(policy, tokens.clone(), &real, p, r, config.temperature)?;
        let (rlp, _) = policy_logprobs(reference, tokens.clone(), &real, p, r, config.temperature)?;
        old_logp.extend(host(lp)?);
        ref_logp.extend(host(rlp)?);
        old_values.extend(host(critic.values(policy, tokens, &real, p, r))?);
    }
    let mask = Tensor::<2>::from_data(TensorData::new(layout.mask.clone(), [b, r]), device);
    let t = |v: &[f32]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [b, r]), device);
    // 5. Per-token rewards.
    let parts = token_rewards(
        Tensor::<1>::from_data(TensorData::new(scores.to_vec(), [b]), device),
        t(&old_logp),
        t(&ref_logp),
        mask.clone(),
        beta,
        config.kl_estimator.estimator(),
    )?;
    let mut rewards = parts.rewards;
    if config.whiten_rewards {
        rewards = masked_whiten(
            rewards,
            mask.clone(),
            WhitenConfig {
                shift_mean: false,
                ..Default::default()
            },
        )?;
    }
    // 6. GAE, returns, whitened advantages.
    let values = t(&old_values).mask_fill(mask.clone().equal_elem(0.0), 0.0);
    let g = gae(
        rewards,
        values,
        mask.clone(),
        GaeConfig {
            gamma: config.gamma,
            lambda: config.lam,
        },
    )?;
    let advantages = if config.whiten_advantages {
        masked_whiten(g.advantages, mask.clone(), WhitenConfig::default())?
    } else {
        g.advantages
    };
    let per_seq = |x: Tensor<2>| -> Result<f64> {
        Ok(host(x.sum_dim(1))?
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / b as f64)
    };
    let pad = mask.clone().equal_elem(0.0);
    let neg_logp = t(&old_logp).neg().mask_fill(pad, 0.0);
    Ok(Experience {
        kl_mean: per_seq(parts.kl)?,
        non_score_mean: per_seq(parts.non_score)?,
        neg_logp_mean: per_seq(neg_logp)?,
        layout,
        old_logp,
        old_values,
        advantages: host(advantages)?,
        returns: host(g.returns)?,
    })
}
