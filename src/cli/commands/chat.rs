//! `rlaif chat`: one reply to one message.

use super::Common;
use crate::cli::Outcome;
use crate::core::{Conversation, Prompt, SamplingParams};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Flags of `rlaif chat`.
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    /// The user message.
    #[serde(skip)]
    message: String,
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    /// A system message to put first.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    /// Greedy decoding (overrides the temperature).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    greedy: bool,
    /// Sampling temperature [default: 0.7].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// Nucleus sampling threshold [default: 0.9].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<usize>,
    /// Most new tokens [default: 256].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_new_tokens: Option<usize>,
    /// Send the message as raw text instead of through the chat template.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    raw: bool,
}

/// What `rlaif chat` reads from the settings.
#[derive(Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    model: Option<std::path::PathBuf>,
    seed: u64,
    system: Option<String>,
    greedy: bool,
    temperature: f32,
    top_p: f32,
    top_k: Option<usize>,
    max_new_tokens: usize,
    raw: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: None,
            seed: 0,
            system: None,
            greedy: false,
            temperature: 0.7,
            top_p: 0.9,
            top_k: None,
            max_new_tokens: 256,
            raw: false,
        }
    }
}

/// Runs `rlaif chat`: the reply on stdout (exactly the decoded text with `--greedy`), the
/// rest on stderr.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let s: Settings = crate::cli::settings::merge(args.common.config.as_deref(), "chat", &args)?;
    let lm = crate::cli::load_model_for_inference(s.model.as_deref(), &Device::default())?;
    let prompt = if s.raw {
        Prompt::Text(args.message)
    } else {
        let mut c = Conversation::new();
        if let Some(system) = s.system {
            c = c.system(system);
        }
        Prompt::Chat(c.user(args.message))
    };
    let params = SamplingParams {
        max_new_tokens: s.max_new_tokens,
        temperature: if s.greedy { 0.0 } else { s.temperature },
        top_p: if s.greedy { 1.0 } else { s.top_p },
        top_k: s.top_k,
        seed: s.seed,
        ..SamplingParams::default()
    };
    let t = Instant::now();
    let out = lm.generate(&[prompt], &params)?;
    let c = &out[0];
    let secs = t.elapsed().as_secs_f64();
    println!("{}", c.text);
    eprintln!(
        "{} new tokens in {secs:.2} s ({:.1} tokens/s), finished by {:?}.",
        c.token_ids.len(),
        c.token_ids.len() as f64 / secs.max(1e-9),
        c.finish_reason
    );
    Ok(Outcome::Done)
}
