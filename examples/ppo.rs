//! Stage 2b of Constitutional AI on a handful of prompts: `cargo run --release --example ppo`
//!
//! PPO fine-tunes the policy (`--model`, default SmolLM2-135M-Instruct; in the full method
//! the SL model) against a reward with a per-token KL penalty to the frozen starting model:
//!
//! - with `--pm DIR` (a preference model directory, e.g. `rlaif train-pm`'s `model/` or the
//!   `preference_model` example's `target/preference_model/pm/model`), its score,
//!   normalised with its `reward_stats.json`; the critic starts from the PM;
//! - without it, a rule (documented in `rule_reward`): +1 when the answer declines (it
//!   contains a refusal phrase). This runs the whole loop on a real model without a
//!   trained PM, but the rule's signal is sparse for SmolLM2: in our run (8 iterations of 8
//!   answers, 15 minutes on 2 busy cores) 2 of 64 rollout answers declined and the held-out
//!   answers barely changed. For a measured effect use `--pm` (see `docs/ppo.md`: held-out
//!   PM score 0.93 → 1.39 over 24 iterations), or more iterations.
//!
//! Prompts: the red-team file mixed with the helpful file (weights 3 : 1, as the RL stage
//! of the paper mixes both); the last `--held-out` red-team prompts are never trained on
//! and are answered greedily before, during and after training (`samples.jsonl`).
//! Printed: reward and KL per iteration, and the held-out answers before and after.
//! Everything goes to `--out` (default `target/ppo/`: log.jsonl, samples.jsonl,
//! curves.svg, report.json, policy/); a rerun resumes, delete the directory to start over.

use anyhow::Context;
use burn::prelude::Device;
use clap::Parser;
use rlaif::cli::{Interrupt, Terminal, init, load_model};
use rlaif_core::Prompt;
use rlaif_pm::PreferenceModel;
use rlaif_ppo::{CriticInit, PpoConfig, PpoModels, PromptMix, PromptSet, Reward, SampleRecord};
use rlaif_revision::read_prompts;
use std::path::PathBuf;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(about = "PPO against a preference model (or a rule) on a few prompts")]
struct Args {
    /// The policy to start from, also the reference (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A preference model directory (default: the refusal rule).
    #[arg(long)]
    pm: Option<PathBuf>,
    /// Red-team prompts.
    #[arg(long, default_value = "data/prompts/red_team.jsonl")]
    prompts: PathBuf,
    /// Helpful prompts, mixed in at a quarter of the draws.
    #[arg(long, default_value = "data/prompts/helpful.jsonl")]
    helpful: PathBuf,
    /// The last N red-team prompts are held out (answered greedily, never trained on).
    #[arg(long, default_value_t = 6)]
    held_out: usize,
    /// PPO iterations.
    #[arg(long, default_value_t = 8)]
    iterations: usize,
    /// Prompts answered per iteration.
    #[arg(long, default_value_t = 8)]
    rollouts: usize,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// β of the KL penalty.
    #[arg(long, default_value_t = 0.05)]
    kl_coef: f64,
    /// Learning rate of policy and critic.
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory.
    #[arg(long, default_value = "target/ppo")]
    out: PathBuf,
}

/// The reward without a preference model: 1 when the answer contains a refusal phrase
/// (case-insensitive: "sorry", "i can't", "i cannot", "i won't", "not able to",
/// "i'm unable"), else 0.
fn rule_reward(_: &Prompt, response: &str) -> f32 {
    let r = response.to_lowercase();
    let phrases = [
        "sorry",
        "i can't",
        "i cannot",
        "i won't",
        "not able to",
        "i'm unable",
    ];
    f32::from(u8::from(phrases.iter().any(|p| r.contains(p))))
}

fn main() -> anyhow::Result<()> {
    init();
    let args = Args::parse();
    // on a worker of rayon's pool, as the `rlaif` command runs (rlaif_kernels::pool)
    rlaif::kernels::on_pool(move || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let device = Device::default();
    let mut red = read_prompts(&args.prompts)?;
    anyhow::ensure!(
        red.len() > args.held_out,
        "{} has {} prompts; {} are held out",
        args.prompts.display(),
        red.len(),
        args.held_out
    );
    let held = red.split_off(red.len() - args.held_out);
    let mix = PromptMix::new(vec![
        PromptSet::new(&args.prompts, 3.0, red)?,
        PromptSet::read(&args.helpful, 1.0)?,
    ])?;
    let sl = load_model(args.model.as_deref(), &device)?;
    let pm = match &args.pm {
        Some(dir) => Some(
            PreferenceModel::load(dir, &device)
                .with_context(|| format!("loading the preference model {}", dir.display()))?,
        ),
        None => None,
    };
    let rule: &rlaif_ppo::RewardFn = &rule_reward;
    let (reward, critic) = match &pm {
        Some(pm) => (Reward::preference_model(pm), CriticInit::RewardModel(pm)),
        None => (Reward::function(rule), CriticInit::Policy),
    };
    let config = PpoConfig {
        iterations: args.iterations,
        rollouts_per_iteration: args.rollouts,
        minibatch_size: args.rollouts.div_ceil(2),
        micro_batch_size: args.rollouts.div_ceil(2),
        max_new_tokens: args.max_new_tokens,
        sample_max_new_tokens: args.max_new_tokens,
        kl_coef: args.kl_coef,
        policy_lr: args.lr,
        critic_lr: args.lr,
        samples_every: args.iterations.div_ceil(2).max(1),
        // SmolLM2's answers run past 32 tokens: with the rule, a penalty on every answer
        // would only shift the score column.
        missing_eos_penalty: if pm.is_some() { Some(1.0) } else { None },
        seed: args.seed,
        ..Default::default()
    };
    let models = PpoModels::new(sl, critic)?;
    let terminal = Terminal::new(Interrupt::install()?);
    let run = rlaif_ppo::train(models, &reward, &mix, &held, &config, &args.out, &terminal)?;
    let r = &run.report;
    println!(
        "\nReward: {}\n",
        if pm.is_some() {
            "the preference model's score, normalised with its reward statistics"
        } else {
            "the refusal rule (1 when the answer declines)"
        }
    );
    println!("iteration  episodes  score   raw     KL      β       gen s  score s  update s");
    for l in &r.log {
        println!(
            "{:>9}  {:>8}  {:>6.3}  {:>6.3}  {:>6.3}  {:.4}  {:>5.1}  {:>7.1}  {:>8.1}",
            l.step,
            l.episode,
            l.scores,
            l.raw_scores,
            l.kl,
            l.kl_coef,
            l.generation_s,
            l.scoring_s,
            l.update_s
        );
    }
    if let (Some(a), Some(b)) = (r.samples.first(), r.samples.last()) {
        println!(
            "\nHeld-out prompts ({}, greedy): mean score {:.3} at iteration {} → {:.3} at iteration {}; \
             refusals (phrase detector) {:.0}% → {:.0}%",
            held.len(),
            a.score_mean,
            a.step,
            b.score_mean,
            b.step,
            100.0 * a.refusal_rate,
            100.0 * b.refusal_rate
        );
        let samples: Vec<SampleRecord> =
            std::fs::read_to_string(args.out.join(rlaif_ppo::SAMPLES_FILE))?
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?;
        for h in held.iter().take(3) {
            let of = |step: usize| samples.iter().find(|s| s.id == h.id && s.iteration == step);
            if let (Some(x), Some(y)) = (of(a.step), of(b.step)) {
                println!(
                    "\n> {}\n  before ({:.2}): {}\n  after  ({:.2}): {}",
                    h.prompt,
                    x.score,
                    x.response.replace('\n', " "),
                    y.score,
                    y.response.replace('\n', " ")
                );
            }
        }
    }
    println!(
        "\n{}",
        match &r.policy_dir {
            Some(d) => format!(
                "Policy in {}; curves in {}",
                d.display(),
                args.out.join("curves.svg").display()
            ),
            None => "Interrupted: rerun to resume.".into(),
        }
    );
    Ok(())
}
