//! `rlaif sample`: the model's own answers to (helpful) prompts, in TRL's
//! prompt-completion format: the helpful samples that SFT mixes in.

use super::Common;
use super::revise::{GenerationFlags, take_io};
use crate::cli::Outcome;
use crate::cli::settings::Settings;
use crate::cli::{Interrupt, Terminal, load_model};
use crate::revision::{RevisionConfig, read_prompts, sample_responses};
use burn::prelude::Device;
use serde::Serialize;

/// Flags of `rlaif sample`.
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    #[command(flatten)]
    #[serde(flatten)]
    generation: GenerationFlags,
}

/// Runs `rlaif sample`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "sample", &args)?;
    let io = take_io(
        &mut s,
        "data/prompts/helpful.jsonl",
        &["max_new_tokens_response"],
    )?;
    let config: RevisionConfig = s.into_config()?;
    config.validate()?;
    let prompts = read_prompts(&io.prompts)?;
    let lm = load_model(io.model.as_deref(), &Device::default())?;
    let terminal = Terminal::new(Interrupt::install()?);
    let summary = sample_responses(&lm, &prompts, &config, &io.out, &terminal)?;
    eprintln!(
        "Answers to {} at temperature {}, seed {}: {summary}. Records in {}.",
        io.prompts.display(),
        config.temperature,
        config.seed,
        io.out.display()
    );
    Ok(Outcome::of(summary.stopped))
}
