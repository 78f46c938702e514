//! `rlaif ppo`: PPO against the preference model (stage 2b of Constitutional AI, Bai et al.
//! 2022 §4.2) → the RL policy as a Hugging Face directory, with log.jsonl (TRL's metric
//! names), samples.jsonl and curves.svg.

use super::{Common, file_and_weight};
use crate::cli::Outcome;
use crate::cli::settings::Settings;
use crate::cli::{Interrupt, Terminal, load_model, set_bf16_matmuls};
use crate::pm::PreferenceModel;
use crate::ppo::{
    AdaptiveKl, CriticInit, PpoConfig, PpoModels, Profile, PromptMix, PromptSet, Reward,
};
use crate::revision::read_prompts;
use anyhow::Context;
use burn::prelude::Device;
use serde::Serialize;
use std::path::PathBuf;

/// A profile of defaults.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileArg {
    /// Sized for SmolLM2-135M on a CPU (minutes).
    Default,
    /// The paper's settings (β 0.001, 128 new tokens, T 1).
    Paper,
    /// TRL's former PPO defaults.
    Trl,
}

/// Where the critic starts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CriticArg {
    /// A copy of the preference model (TRL, OpenRLHF).
    Pm,
    /// A copy of the policy with a zero head.
    Policy,
    /// A zero head on the policy's own decoder (no second decoder).
    Shared,
}

/// Flags of `rlaif ppo` (the keys of `PpoConfig`, plus the files).
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    /// The SL policy to start from, also the frozen reference (`rlaif sft`'s model
    /// directory; `--model` works too; default: SmolLM2-135M-Instruct).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PathBuf>,
    /// The preference model's directory (`rlaif train-pm`'s `model/`), with its
    /// reward_stats.json.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    reward_model: Option<PathBuf>,
    /// A prompt file (`id`, `prompt`), optionally `FILE:WEIGHT` (its share of the draws);
    /// repeat to mix red-team and helpful prompts.
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prompts: Vec<String>,
    /// Prompts answered greedily every `samples_every` iterations into samples.jsonl.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    held_out: Option<PathBuf>,
    /// The run's directory: checkpoints, log.jsonl, samples.jsonl, curves.svg,
    /// report.json, policy/ (a rerun resumes).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
    /// Defaults to start from [default: default].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<ProfileArg>,
    /// Where the critic starts [default: pm].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    critic: Option<CriticArg>,
    /// Rollout + update cycles.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    iterations: Option<usize>,
    /// Prompts answered per iteration.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rollouts_per_iteration: Option<usize>,
    /// Rollouts per optimizer update.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    minibatch_size: Option<usize>,
    /// Rows per forward pass.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    micro_batch_size: Option<usize>,
    /// Passes over an iteration's rollouts.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ppo_epochs: Option<usize>,
    /// Sampling temperature.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// Tokens per response.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_new_tokens: Option<usize>,
    /// β of the KL penalty (the initial β with --target-kl).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kl_coef: Option<f64>,
    /// Adapt β to this KL per response (Ziegler et al.'s controller).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    target_kl: Option<f64>,
    /// The controller's horizon in episodes [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kl_horizon: Option<f64>,
    /// Learning rate of the policy.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_lr: Option<f64>,
    /// Learning rate of the critic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    critic_lr: Option<f64>,
    /// Iterations between held-out answers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    samples_every: Option<usize>,
    /// Iterations between checkpoints.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_every: Option<usize>,
    /// Round the inputs of the model's matrix products to bf16 and multiply them on the
    /// CPU's AMX tile unit (f32 weights, gradients and sums; as PyTorch's bf16 autocast):
    /// about 2× faster training steps on CPUs with AMX-BF16 (Intel Sapphire Rapids or
    /// later), an error elsewhere. Results differ from f32 by bf16 rounding
    /// (docs/benchmarks.md).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    bf16_matmuls: bool,
}

/// The settings of `profile` with every key of `overrides` on top (an unknown key or a
/// value of the wrong type is an error naming it).
fn profile_with(
    profile: Profile,
    overrides: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<PpoConfig> {
    let mut merged = serde_json::to_value(PpoConfig::profile(profile))?;
    for (k, v) in overrides {
        merged[k] = v;
    }
    serde_json::from_value(merged).context("the [ppo] settings")
}

/// Runs `rlaif ppo`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "ppo", &args)?;
    let model: Option<PathBuf> = s.take("model")?;
    let policy: Option<PathBuf> = s.take::<PathBuf>("policy")?.or(model);
    let pm_dir: PathBuf = s.require("reward_model")?;
    let specs: Vec<String> = s.require("prompts")?;
    anyhow::ensure!(!specs.is_empty(), "--prompts needs at least one file");
    let held_out: Option<PathBuf> = s.take("held_out")?;
    let out: PathBuf = s.require("out")?;
    let bf16: bool = s.take("bf16_matmuls")?.unwrap_or(false);
    let profile = match s.take::<String>("profile")?.as_deref() {
        None | Some("default") => Profile::Default,
        Some("paper") => Profile::Paper,
        Some("trl") => Profile::Trl,
        Some(other) => anyhow::bail!("profile: expected default, paper or trl, found {other:?}"),
    };
    let critic_kind = s.take::<String>("critic")?;
    let target_kl: Option<f64> = s.take("target_kl")?;
    let horizon: Option<f64> = s.take("kl_horizon")?;
    // The profile's values, then every key given (flags win over the settings file).
    let mut config = profile_with(profile, s.into_config()?)?;
    if let Some(target) = target_kl {
        config.adaptive_kl = Some(AdaptiveKl {
            target,
            horizon: horizon.unwrap_or(10_000.0),
        });
    }
    config.validate()?;
    let mut sets = Vec::new();
    for spec in &specs {
        let (file, weight) = file_and_weight("--prompts", spec)?;
        sets.push(PromptSet::read(&file, weight)?);
    }
    let mix = PromptMix::new(sets)?;
    let held = match &held_out {
        Some(f) => read_prompts(f)?,
        None => vec![],
    };
    let device = Device::default();
    let mut sl = load_model(policy.as_deref(), &device)?;
    set_bf16_matmuls(&mut sl.model, bf16)?;
    let mut pm = PreferenceModel::load(&pm_dir, &device)
        .with_context(|| format!("loading the preference model {}", pm_dir.display()))?;
    set_bf16_matmuls(&mut pm.lm.model, bf16)?;
    if pm.reward_stats.is_none() && config.normalize_scores {
        tracing::warn!(
            "{} has no reward_stats.json: scores are used without normalisation",
            pm_dir.display()
        );
    }
    let models = PpoModels::new(
        sl,
        match critic_kind.as_deref() {
            None | Some("pm") => CriticInit::RewardModel(&pm),
            Some("policy") => CriticInit::Policy,
            Some("shared") => CriticInit::SharedTrunk,
            Some(other) => anyhow::bail!("critic: expected pm, policy or shared, found {other:?}"),
        },
    )?;
    let terminal = Terminal::new(Interrupt::install()?);
    let run = crate::ppo::train(
        models,
        &Reward::preference_model(&pm),
        &mix,
        &held,
        &config,
        &out,
        &terminal,
    )?;
    let r = &run.report;
    let first = r.log.first();
    let last = r.log.last();
    let held_scores = match (r.samples.first(), r.samples.last()) {
        (Some(a), Some(b)) if r.samples.len() > 1 => format!(
            "; held-out greedy score {:.3} → {:.3}, refusals {:.0}% → {:.0}%",
            a.score_mean,
            b.score_mean,
            100.0 * a.refusal_rate,
            100.0 * b.refusal_rate
        ),
        _ => String::new(),
    };
    eprintln!(
        "PPO: {} of {} iterations{}; rollout score {} → {}, KL {} → {}, β {:.4}{held_scores}. {}",
        r.iterations,
        r.total_iterations,
        r.resumed_from
            .map(|s| format!(" (resumed at {s})"))
            .unwrap_or_default(),
        first.map_or("-".into(), |l| format!("{:.3}", l.scores)),
        last.map_or("-".into(), |l| format!("{:.3}", l.scores)),
        first.map_or("-".into(), |l| format!("{:.3}", l.kl)),
        last.map_or("-".into(), |l| format!("{:.3}", l.kl)),
        r.kl_coef,
        match &r.policy_dir {
            Some(d) => format!(
                "The policy is in {} (Hugging Face layout); log.jsonl, samples.jsonl and curves.svg in {}.",
                d.display(),
                out.display()
            ),
            None => format!(
                "Checkpoint in {}; rerun to resume.",
                r.checkpoint
                    .as_ref()
                    .map_or("-".into(), |c| c.display().to_string())
            ),
        }
    );
    Ok(Outcome::of(r.interrupted))
}

#[cfg(test)]
mod tests {
    use super::profile_with;
    use crate::ppo::{PpoConfig, Profile};
    use serde_json::json;

    #[test]
    fn keys_given_override_the_profile_and_the_rest_of_the_profile_stays() {
        let over = json!({"kl_coef": 0.2, "iterations": 3})
            .as_object()
            .unwrap()
            .clone();
        let c = profile_with(Profile::Paper, over).unwrap();
        let paper = PpoConfig::profile(Profile::Paper);
        assert_eq!((c.kl_coef, c.iterations), (0.2, 3));
        // The paper has no missing-EOS penalty although the default profile has one.
        assert_eq!(c.missing_eos_penalty, None);
        assert_eq!(c.max_new_tokens, paper.max_new_tokens);
        let bad = json!({"kl_coeff": 0.2}).as_object().unwrap().clone();
        let e = format!("{:#}", profile_with(Profile::Default, bad).unwrap_err());
        assert!(e.contains("kl_coeff"), "{e}");
    }
}
