//! `rlaif label`: AI feedback on response pairs (stage 2a of Constitutional AI, Bai et al.
//! 2022 §4.1): a feedback model asked which response better follows a comparison
//! principle; the soft labels go to `comparisons.jsonl` in TRL's preference format.

use super::Common;
use super::revise::{FormatArg, constitution};
use crate::cli::Outcome;
use crate::cli::settings::Settings;
use crate::cli::{Interrupt, Terminal, load_model};
use crate::feedback::{LabelConfig, label_pairs, read_pairs};
use burn::prelude::Device;
use serde::Serialize;
use std::path::PathBuf;

/// Flags of `rlaif label` (the keys of `LabelConfig`; the pointwise question and the
/// chain-of-thought clamp are set in a settings file).
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    /// The feedback model, when it is not `--model` (a larger local model, say).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback_model: Option<PathBuf>,
    /// The pairs: records of `rlaif pairs`, or TRL `prompt`/`chosen`/`rejected` (a known
    /// preference: the summary then reports the labeller's accuracy) or
    /// `prompt`/`response_a`/`response_b` lines.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pairs: Option<PathBuf>,
    /// The output file (JSON Lines; a rerun resumes it).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
    /// A constitution in TOML (default: the one shipped with rlaif-constitution).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    constitution: Option<PathBuf>,
    /// Only the first N pairs.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    /// The paper's multiple-choice question, yes/no questions about each response, or the
    /// contrast of two system prompts.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<MethodArg>,
    /// Ask with A first and with B first and average (cancels position bias).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    both_orders: Option<bool>,
    /// Comparison principles per pair, their labels averaged.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    principles_per_pair: Option<usize>,
    /// Divide out the prior of a content-free input (Zhao et al. 2021).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    calibrate: Option<bool>,
    /// Cut both responses to the shorter one's length before asking.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    length_control: Option<bool>,
    /// The constitution's comparison exemplars in front of every question.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    exemplars: Option<bool>,
    /// Chat prompts through the model's template, or raw `Human:`/`Assistant:` text.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<FormatArg>,
    /// Chain of thought: the model reasons first, its answer is scored after it.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cot: Option<bool>,
    /// Reasoning samples per question, averaged.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cot_samples: Option<usize>,
    /// Most new tokens of a reasoning.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cot_max_new_tokens: Option<usize>,
}

/// `--method`.
#[derive(clap::ValueEnum, Serialize, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub enum MethodArg {
    /// One multiple-choice question with options (A) and (B) (§4.1).
    Pairwise,
    /// A yes/no question about each response, compared.
    Pointwise,
    /// Each response's likelihood after a good and after a bad system prompt, compared.
    Contrast,
}

/// Runs `rlaif label`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "label", &args)?;
    let model: Option<PathBuf> = s.take("model")?;
    let feedback_model: Option<PathBuf> = s.take("feedback_model")?;
    let pairs_file: PathBuf = s.require("pairs")?;
    let out: PathBuf = s.require("out")?;
    let constitution_file: Option<PathBuf> = s.take("constitution")?;
    let config: LabelConfig = s.into_config()?;
    config.validate()?;
    let constitution = constitution(constitution_file.as_deref())?;
    let pairs = read_pairs(&pairs_file, config.seed)?;
    let lm = load_model(feedback_model.or(model).as_deref(), &Device::default())?;
    let terminal = Terminal::new(Interrupt::install()?);
    let summary = label_pairs(
        &lm,
        Some(&lm),
        &constitution,
        &pairs,
        &config,
        &out,
        &terminal,
    )?;
    eprintln!(
        "Labels of {}: {summary}. Labels in {}.",
        pairs_file.display(),
        out.display()
    );
    Ok(Outcome::of(summary.stopped))
}
