//! The subcommands, one file each.

pub mod chat;
pub mod convert;
pub mod label;
pub mod pairs;
pub mod revise;
pub mod sample;
pub mod score;
pub mod sft;
pub mod train_pm;

use serde::Serialize;
use std::path::PathBuf;

/// The flags every subcommand has.
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct Common {
    /// A TOML file with the same keys as the flags (in a `[<subcommand>]` table or at the
    /// top level); flags given here win.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// A Hugging Face model directory or a .gguf file (default: SmolLM2-135M-Instruct,
    /// fetched on first use).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Seed of everything random in the stage.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}
