//! `rlaif revise`: the critique → revision loop on a prompt file (stage 1 of
//! Constitutional AI) → one JSON line per prompt (trace, SFT pairs, preference pair).

use super::Common;
use crate::cli::Outcome;
use crate::cli::settings::Settings;
use crate::cli::{Interrupt, Terminal, load_model};
use crate::constitution::{Constitution, PromptFormat};
use crate::revision::{RevisionConfig, read_prompts, run_revision_until};
use burn::prelude::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The generation flags `revise` and `sample` share (keys of [`RevisionConfig`]).
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct GenerationFlags {
    /// The prompt file (`{"id", "prompt", "category"}` per line).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PathBuf>,
    /// The output file (JSON Lines; a rerun resumes it).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// Only the first N prompts.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Sampling temperature (0: greedy) [default: 1.0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold [default: 1.0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Most new tokens of every generation not given its own budget below [default: 256].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    /// Most new tokens of the initial response.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_tokens_response: Option<usize>,
    /// Prompts per generation batch [default: 8].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Chat prompts through the model's template, or raw `Human:`/`Assistant:` text.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatArg>,
}

/// `--format`.
#[derive(clap::ValueEnum, Serialize, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub enum FormatArg {
    /// Through the model's chat template.
    Chat,
    /// `Human:` / `Assistant:` text, for base models.
    Raw,
}

/// Flags of `rlaif revise`.
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    #[command(flatten)]
    #[serde(flatten)]
    generation: GenerationFlags,
    /// A constitution in TOML (default: the one shipped with rlaif-constitution).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    constitution: Option<PathBuf>,
    /// Critique → revision rounds per prompt [default: 4].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rounds: Option<usize>,
    /// Most new tokens of a critique.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_new_tokens_critique: Option<usize>,
    /// Most new tokens of a revision.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_new_tokens_revision: Option<usize>,
    /// Whether a prompt may get the same principle in two rounds.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    replacement: Option<ReplacementArg>,
    /// Every round's revision as an SFT pair, not only the last.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    emit_every_round: Option<bool>,
}

/// `--replacement`.
#[derive(clap::ValueEnum, Serialize, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ReplacementArg {
    /// The paper's procedure: each round draws from all principles.
    With,
    /// No principle twice for one prompt.
    Without,
}

/// The input and output files and the model of a generation stage, taken out of the
/// settings; the rest is the stage's config.
pub struct Io {
    /// `--model`.
    pub model: Option<PathBuf>,
    /// `--prompts`.
    pub prompts: PathBuf,
    /// `--out`.
    pub out: PathBuf,
}

/// Takes the files and the model out of `s`, and spreads `max_new_tokens` over the
/// budgets in `budgets` that are not set on their own.
pub fn take_io(s: &mut Settings, default_prompts: &str, budgets: &[&str]) -> anyhow::Result<Io> {
    if let Some(n) = s.take::<i64>("max_new_tokens")? {
        for b in budgets {
            s.set_default(b, n);
        }
    }
    Ok(Io {
        model: s.take("model")?,
        prompts: s
            .take("prompts")?
            .unwrap_or_else(|| PathBuf::from(default_prompts)),
        out: s.require("out")?,
    })
}

/// The constitution of `--constitution`, or the default one.
pub fn constitution(path: Option<&Path>) -> anyhow::Result<Constitution> {
    Ok(match path {
        Some(p) => Constitution::from_toml_file(p)?,
        None => Constitution::default_constitution(),
    })
}

/// Runs `rlaif revise`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "revise", &args)?;
    let io = take_io(
        &mut s,
        "data/prompts/red_team.jsonl",
        &[
            "max_new_tokens_response",
            "max_new_tokens_critique",
            "max_new_tokens_revision",
        ],
    )?;
    let constitution_file: Option<PathBuf> = s.take("constitution")?;
    let config: RevisionConfig = s.into_config()?;
    config.validate()?;
    let constitution = constitution(constitution_file.as_deref())?;
    let prompts = read_prompts(&io.prompts)?;
    let lm = load_model(io.model.as_deref(), &Device::default())?;
    let terminal = Terminal::new(Interrupt::install()?);
    let summary = run_revision_until(&lm, &constitution, &prompts, &config, &io.out, &terminal)?;
    eprintln!(
        "Critique → revision, {} round(s) per prompt, {} format, seed {}: {summary}. Records in {}{}.",
        config.rounds,
        match config.format {
            PromptFormat::Chat => "chat",
            PromptFormat::Raw => "raw",
        },
        config.seed,
        io.out.display(),
        if summary.dropped > 0 {
            format!(
                ", dropped prompts in {}",
                crate::revision::dropped_path(&io.out).display()
            )
        } else {
            String::new()
        }
    );
    Ok(Outcome::of(summary.stopped))
}
