//! `rlaif pairs`: two responses per prompt from the SL model (stage 2a of Constitutional
//! AI, Bai et al. 2022 §4.1), the pairs that AI feedback labels.

use super::Common;
use super::revise::FormatArg;
use crate::cli::Outcome;
use crate::cli::settings::Settings;
use crate::cli::{Interrupt, Terminal, load_model};
use crate::feedback::{PairConfig, generate_pairs};
use crate::revision::read_prompts;
use burn::prelude::Device;
use serde::Serialize;
use std::path::PathBuf;

/// Flags of `rlaif pairs` (the keys of `PairConfig`).
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    /// The prompt file (`{"id", "prompt", "category"}` per line) [default:
    /// data/prompts/red_team.jsonl].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    prompts: Option<PathBuf>,
    /// The output file (JSON Lines of pair records; a rerun resumes it).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
    /// Only the first N prompts.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    /// Sampling temperature [default: 1.0, as in the paper].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// Nucleus sampling threshold [default: 1.0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<usize>,
    /// Most new tokens of each response [default: 256].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_new_tokens: Option<usize>,
    /// Prompts per generation batch [default: 8].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    /// Chat prompts through the model's template, or raw `Human:`/`Assistant:` text.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<FormatArg>,
}

/// Runs `rlaif pairs`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "pairs", &args)?;
    let model: Option<PathBuf> = s.take("model")?;
    let prompts: PathBuf = s
        .take("prompts")?
        .unwrap_or_else(|| PathBuf::from("data/prompts/red_team.jsonl"));
    let out: PathBuf = s.require("out")?;
    let config: PairConfig = s.into_config()?;
    config.validate()?;
    let prompts_read = read_prompts(&prompts)?;
    let lm = load_model(model.as_deref(), &Device::default())?;
    let terminal = Terminal::new(Interrupt::install()?);
    let summary = generate_pairs(&lm, &prompts_read, &config, &out, &terminal)?;
    eprintln!(
        "Two answers per prompt of {} at temperature {}, seed {}: {summary}. Pairs in {}.",
        prompts.display(),
        config.temperature,
        config.seed,
        out.display()
    );
    Ok(Outcome::of(summary.stopped))
}
