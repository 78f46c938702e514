//! `rlaif convert`: a model (GGUF or Hugging Face directory) as a Hugging Face directory.

use super::Common;
use crate::cli::Outcome;
use anyhow::Context;
use burn::module::Module;
use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Flags of `rlaif convert`.
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    /// The directory to write (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Settings {
    model: Option<PathBuf>,
    /// Accepted like every subcommand's, unused: conversion draws no random numbers.
    #[serde(default, rename = "seed")]
    _seed: Option<u64>,
    out: PathBuf,
}

/// Runs `rlaif convert`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let s: Settings = crate::cli::settings::merge(args.common.config.as_deref(), "convert", &args)?;
    let lm = crate::cli::load_model(s.model.as_deref(), &Device::default())?;
    lm.save_pretrained(&s.out)
        .with_context(|| format!("writing {}", s.out.display()))?;
    eprintln!(
        "Wrote {} ({} parameters, f32 safetensors with the tokenizer and chat template): it loads in transformers, and here with --model.",
        s.out.display(),
        lm.model.num_params()
    );
    Ok(Outcome::Done)
}
