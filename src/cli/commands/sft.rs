//! `rlaif sft`: supervised fine-tuning on revisions mixed with helpful samples → the SL
//! model as a Hugging Face directory.

use super::Common;
use crate::cli::Outcome;
use crate::cli::settings::Settings;
use crate::cli::{Interrupt, Terminal, load_model, set_bf16_matmuls};
use crate::constitution::PromptFormat;
use crate::sft::{DataConfig, SftConfig, SftData, read_examples, train};
use burn::prelude::Device;
use serde::Serialize;
use std::path::PathBuf;

/// Flags of `rlaif sft` (the keys of `SftConfig` and `DataConfig`).
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    /// The training data: records of `rlaif revise`, or lines of `messages` or
    /// `prompt`/`completion` (TRL's formats).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    revisions: Option<PathBuf>,
    /// Helpful samples to mix in (the output of `rlaif sample`, or any format above).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    helpful: Option<PathBuf>,
    /// The run's directory: checkpoints, log.jsonl, report.json, model/ (a rerun resumes).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
    /// Helpful samples mixed in per revision [default: 1.0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    helpful_ratio: Option<f64>,
    /// Fraction of each set held out for the evaluation loss [default: 0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_fraction: Option<f64>,
    /// Peak learning rate [default: 2e-5].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    learning_rate: Option<f64>,
    /// Passes over the training set [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps (overrides the epochs).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_steps: Option<usize>,
    /// Examples per micro-batch [default: 4].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    grad_accum_steps: Option<usize>,
    /// Longest prompt + completion in tokens [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_seq_len: Option<usize>,
    /// Optimizer steps between held-out evaluations [default: 50].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_every: Option<usize>,
    /// Optimizer steps between checkpoints [default: 50].
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

/// Runs `rlaif sft`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "sft", &args)?;
    let model: Option<PathBuf> = s.take("model")?;
    let revisions: PathBuf = s.require("revisions")?;
    let helpful: Option<PathBuf> = s.take("helpful")?;
    let out: PathBuf = s.require("out")?;
    let bf16: bool = s.take("bf16_matmuls")?.unwrap_or(false);
    // One seed for the split, the mixing and the data order.
    let data_config = DataConfig {
        helpful_ratio: s
            .take("helpful_ratio")?
            .unwrap_or(DataConfig::default().helpful_ratio),
        eval_fraction: s
            .take("eval_fraction")?
            .unwrap_or(DataConfig::default().eval_fraction),
        seed: s.get("seed")?.unwrap_or_default(),
    };
    let config: SftConfig = s.into_config()?;
    config.validate()?;
    let helpful_examples = match &helpful {
        Some(p) => read_examples(p, "helpful", PromptFormat::Chat)?,
        None => Vec::new(),
    };
    let data = SftData::build(
        read_examples(&revisions, "revision", PromptFormat::Chat)?,
        helpful_examples,
        &data_config,
    );
    let mut lm = load_model(model.as_deref(), &Device::default())?;
    set_bf16_matmuls(&mut lm.model, bf16)?;
    let terminal = Terminal::new(Interrupt::install()?);
    let run = train(lm, &data, &config, &out, &terminal)?;
    let r = &run.report;
    let held_out = match (r.evals.first(), r.evals.last()) {
        (Some(a), Some(b)) if a.step != b.step => format!(
            "; held-out loss {:.3} → {:.3} ({})",
            a.loss,
            b.loss,
            b.by_source
                .iter()
                .map(|(k, v)| format!(
                    "{k} {:.3} → {v:.3}",
                    a.by_source.get(k).copied().unwrap_or(f64::NAN)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    };
    eprintln!(
        "SFT on {} examples ({} held out): {} of {} steps{}, training loss {} → {}{held_out}, {:.0} completion tokens/s. {}",
        data.train.len(),
        data.eval.len(),
        r.steps,
        r.total_steps,
        r.resumed_from
            .map(|s| format!(" (resumed at step {s})"))
            .unwrap_or_default(),
        r.first_loss.map_or("-".into(), |l| format!("{l:.3}")),
        r.last_loss.map_or("-".into(), |l| format!("{l:.3}")),
        r.tokens_per_second,
        match &r.model_dir {
            Some(d) => format!("The SL model is in {} (Hugging Face layout).", d.display()),
            None => format!(
                "Checkpoint in {}.",
                r.checkpoint
                    .as_ref()
                    .map_or("-".into(), |c| c.display().to_string())
            ),
        }
    );
    Ok(Outcome::of(r.interrupted))
}
