//! `rlaif score`: a preference model on a file: its accuracy against the preferences of a
//! pair file, or the scores of prompt / response lines.

use super::Common;
use super::revise::FormatArg;
use crate::cli::Outcome;
use crate::cli::settings::Settings;
use crate::constitution::PromptFormat;
use crate::core::Prompt;
use crate::core::fs::write_atomic;
use crate::pm::{PreferenceModel, read_comparisons, read_reference};
use anyhow::Context;
use burn::prelude::Device;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;

/// Flags of `rlaif score`.
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    /// The preference model's directory (`rlaif train-pm`'s `model/`; `--model` works too).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pm: Option<PathBuf>,
    /// Pairs (`prompt`/`chosen`/`rejected`, or `prompt`/`response_a`/`response_b`/`p_a`):
    /// the PM's accuracy against their preference; or `prompt`/`completion` lines: their
    /// scores.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<PathBuf>,
    /// Where the scores go, one JSON line per input line (optional).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
    /// How string prompts without a `format` field are rendered [default: chat].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<FormatArg>,
}

/// Whether the file's first line is a pair (has `chosen` or `response_a`).
fn is_pair_file(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l).ok())
        .is_some_and(|o| o.contains_key("chosen") || o.contains_key("response_a"))
}

/// Runs `rlaif score`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "score", &args)?;
    let model: Option<PathBuf> = s.take("model")?;
    let pm_dir: PathBuf = s
        .take("pm")?
        .or(model)
        .ok_or_else(|| anyhow::anyhow!("--pm (the preference model's directory) is required"))?;
    let input: PathBuf = s.require("input")?;
    let out: Option<PathBuf> = s.take("out")?;
    let format = match s.take::<String>("format")?.as_deref() {
        Some("raw") => PromptFormat::Raw,
        _ => PromptFormat::Chat,
    };
    let _seed: Option<u64> = s.take("seed")?;
    s.into_config::<serde_json::Map<String, serde_json::Value>>()
        .and_then(|rest| {
            anyhow::ensure!(rest.is_empty(), "unknown settings: {:?}", rest.keys());
            Ok(())
        })?;
    let pm = PreferenceModel::load(&pm_dir, &Device::default())
        .with_context(|| format!("loading the preference model {}", pm_dir.display()))?;
    let text =
        std::fs::read_to_string(&input).with_context(|| format!("reading {}", input.display()))?;
    let mut lines = String::new();
    if is_pair_file(&text) {
        let pairs = read_comparisons(&input, "input", 1.0, format)?;
        let texts: Vec<(Prompt, String)> = pairs
            .iter()
            .flat_map(|c| {
                [
                    (c.prompt.clone(), c.response_a.clone()),
                    (c.prompt.clone(), c.response_b.clone()),
                ]
            })
            .collect();
        let scores = pm.score_pairs(&texts)?;
        let (mut decided, mut correct) = (0usize, 0usize);
        for (i, c) in pairs.iter().enumerate() {
            let (ra, rb) = (f64::from(scores[2 * i]), f64::from(scores[2 * i + 1]));
            let p_model = 1.0 / (1.0 + (rb - ra).exp());
            if c.p_a != 0.5 {
                decided += 1;
                if (ra > rb) == (c.p_a > 0.5) && ra != rb {
                    correct += 1;
                }
            }
            let line = json!({"id": c.id, "score_a": ra, "score_b": rb, "p_a_model": p_model, "p_a": c.p_a});
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        eprintln!(
            "{} pairs of {}: the preference model agrees with the file's preference on {correct} of {decided} ({:.3}).",
            pairs.len(),
            input.display(),
            correct as f64 / decided.max(1) as f64
        );
    } else {
        let items = read_reference(&input, format)?;
        let texts: Vec<(Prompt, String)> = items
            .iter()
            .map(|t| (t.prompt.clone(), t.response.clone()))
            .collect();
        let scores = pm.score_pairs(&texts)?;
        let normalized = pm.normalize(&scores);
        for (t, (s, n)) in items.iter().zip(scores.iter().zip(&normalized)) {
            let line = json!({"line": t.origin.line, "score": s, "normalized": n});
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        let mean = scores.iter().map(|&x| f64::from(x)).sum::<f64>() / scores.len().max(1) as f64;
        eprintln!(
            "{} responses of {} scored: mean score {mean:.3}.",
            items.len(),
            input.display()
        );
    }
    if let Some(out) = &out {
        write_atomic(out, lines.as_bytes())?;
        eprintln!("Scores in {}.", out.display());
    } else {
        print!("{lines}");
    }
    Ok(Outcome::Done)
}
