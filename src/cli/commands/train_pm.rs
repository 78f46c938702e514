//! `rlaif train-pm`: the preference model (stage 2a of Constitutional AI, Bai et al. 2022
//! §4.2): the LM with a scalar head, trained on AI-labelled (and human) comparisons →
//! a Hugging Face `LlamaForSequenceClassification` directory with its reward statistics.

use super::revise::FormatArg;
use super::{Common, file_and_weight};
use crate::cli::Outcome;
use crate::cli::settings::Settings;
use crate::cli::{Interrupt, Terminal, load_model, set_bf16_matmuls};
use crate::constitution::PromptFormat;
use crate::pm::{DataConfig, HeadInit, PmConfig, PmData, PreferenceModel, read_comparisons};
use anyhow::Context;
use burn::prelude::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Flags of `rlaif train-pm` (the keys of `PmConfig` and `DataConfig`).
#[derive(clap::Args, Serialize, Debug)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: Common,
    /// A comparison file (`rlaif label`'s comparisons.jsonl, or TRL
    /// `prompt`/`chosen`/`rejected`), optionally `FILE:WEIGHT` (its loss weight, default 1);
    /// repeat to mix several (the paper mixes human helpfulness and AI harmlessness
    /// comparisons).
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    comparisons: Vec<String>,
    /// Prompt / completion lines scored after training for the reward statistics PPO
    /// normalises with (e.g. `rlaif sample`'s helpful.jsonl; default: the held-out
    /// responses).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<PathBuf>,
    /// The run's directory: checkpoints, log.jsonl, report.json, plots, model/ (a rerun
    /// resumes).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
    /// How string prompts without a `format` field are rendered [default: chat].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<FormatArg>,
    /// Fraction of the prompts held out [default: 0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_fraction: Option<f64>,
    /// Peak learning rate [default: 1e-5].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    learning_rate: Option<f64>,
    /// Passes over the training comparisons [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps (overrides the epochs).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_steps: Option<usize>,
    /// Comparisons per micro-batch [default: 4].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    grad_accum_steps: Option<usize>,
    /// Longest prompt + response in tokens [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_seq_len: Option<usize>,
    /// Margin of the Bradley–Terry loss, in reward units [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    margin: Option<f64>,
    /// Weight of the reward-centring term (r_a + r_b)² [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    center_coef: Option<f64>,
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

/// The source name of a comparison file: its stem.
fn source_of(file: &Path) -> String {
    file.file_stem().map_or_else(
        || "comparisons".into(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Runs `rlaif train-pm`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "train_pm", &args)?;
    let model: Option<PathBuf> = s.take("model")?;
    let specs: Vec<String> = s.require("comparisons")?;
    anyhow::ensure!(!specs.is_empty(), "--comparisons needs at least one file");
    let reference: Option<PathBuf> = s.take("reference")?;
    let out: PathBuf = s.require("out")?;
    let bf16: bool = s.take("bf16_matmuls")?.unwrap_or(false);
    let format = match s.take::<String>("format")?.as_deref() {
        Some("raw") => PromptFormat::Raw,
        _ => PromptFormat::Chat,
    };
    let data_config = DataConfig {
        eval_fraction: s
            .take("eval_fraction")?
            .unwrap_or(DataConfig::default().eval_fraction),
        seed: s.get("seed")?.unwrap_or_default(),
    };
    let config: PmConfig = s.into_config()?;
    config.validate()?;
    let mut sets = Vec::new();
    for spec in &specs {
        let (file, weight) = file_and_weight("--comparisons", spec)?;
        sets.push(read_comparisons(&file, &source_of(&file), weight, format)?);
    }
    let mut data = PmData::build(sets, &data_config);
    if let Some(r) = &reference {
        data = data.with_reference(crate::pm::read_reference(r, format)?);
    }
    let mut lm = load_model(model.as_deref(), &Device::default())?;
    set_bf16_matmuls(&mut lm.model, bf16)?;
    let pm = PreferenceModel::from_lm(lm, HeadInit::default())
        .context("putting a scalar head on the model")?;
    let terminal = Terminal::new(Interrupt::install()?);
    let run = crate::pm::train(pm, &data, &config, &out, &terminal)?;
    let r = &run.report;
    let eval = match (r.evals.first(), r.evals.last()) {
        (Some(a), Some(b)) => format!(
            "; held-out ({} pairs, {} decisive): loss {:.3} → {:.3}, accuracy {} → {}, ECE {:.3} → {:.3}",
            b.pairs,
            b.decisive,
            a.loss,
            b.loss,
            a.accuracy.map_or("-".into(), |x| format!("{x:.3}")),
            b.accuracy.map_or("-".into(), |x| format!("{x:.3}")),
            a.ece,
            b.ece
        ),
        _ => String::new(),
    };
    eprintln!(
        "Preference model on {} comparisons ({} held out): {} of {} steps{}, training loss {} → {}{eval}. {}",
        data.train.len(),
        data.eval.len(),
        r.steps,
        r.total_steps,
        r.resumed_from
            .map(|s| format!(" (resumed at step {s})"))
            .unwrap_or_default(),
        r.first_loss.map_or("-".into(), |l| format!("{l:.3}")),
        r.last_loss.map_or("-".into(), |l| format!("{l:.3}")),
        match &r.model_dir {
            Some(d) => format!(
                "The PM is in {} (Hugging Face layout); report.json and plots in {}.",
                d.display(),
                out.display()
            ),
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
