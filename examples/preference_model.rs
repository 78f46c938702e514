//! Stage 2a of Constitutional AI end to end on a handful of prompts:
//! `cargo run --release --example preference_model`
//!
//! 1. Pairs: two answers per red-team prompt from the model (`--model`, default
//!    SmolLM2-135M-Instruct; in the full method the SL model) at T = 1.
//! 2. Labels: the feedback model (the same model) asked which answer is better under a
//!    comparison principle of the constitution, with the default labelling method
//!    (`LabelConfig::default()`, chosen by the table in `docs/labeller.md`); the labeller
//!    summary is printed, and, with `--known` (default `data/pairs/known_preference.jsonl`,
//!    first `--known-limit` pairs), the labeller's accuracy on pairs whose preference is
//!    known.
//! 3. The preference model: the model with a scalar head, trained on the soft labels;
//!    held-out accuracy and calibration are printed, and its accuracy on the known pairs.
//!
//! Everything goes to `--out` (default `target/preference_model/`): `pairs.jsonl`,
//! `comparisons.jsonl`, `pm/` (report.json, calibration.svg, curves.svg, model/). Each
//! stage resumes: rerun the same command after Ctrl-C; delete the directory to start over.
//! With the defaults (8 prompts, 64 new tokens) it takes a few minutes on a 2-core CPU; a
//! preference model trained on 16 comparisons is a demonstration of the machinery, not a
//! useful reward (see `docs/labeller.md` for the measured numbers on more data).

use anyhow::Context;
use burn::prelude::Device;
use clap::Parser;
use rlaif::cli::{Interrupt, Terminal, init, load_model};
use rlaif_constitution::{Constitution, PromptFormat};
use rlaif_core::Prompt;
use rlaif_feedback::{LabelConfig, PairConfig, generate_pairs, label_all, label_pairs, read_pairs};
use rlaif_pm::{DataConfig, HeadInit, PmConfig, PmData, PreferenceModel, read_comparisons};
use rlaif_revision::read_prompts;
use std::path::PathBuf;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(about = "Pairs → AI-feedback labels → a preference model, on a few prompts")]
struct Args {
    /// The policy and feedback model (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Red-team prompts.
    #[arg(long, default_value = "data/prompts/red_team.jsonl")]
    prompts: PathBuf,
    /// Only the first N prompts.
    #[arg(long, default_value_t = 8)]
    limit: usize,
    /// Most new tokens of each answer.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Pairs with a known preference, to measure the labeller and the PM on (never trained
    /// on).
    #[arg(long, default_value = "data/pairs/known_preference.jsonl")]
    known: PathBuf,
    /// Only the first N known pairs.
    #[arg(long, default_value_t = 24)]
    known_limit: usize,
    /// Passes of the preference model over its training comparisons.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Output directory.
    #[arg(long, default_value = "target/preference_model")]
    out: PathBuf,
    /// Seed of everything random.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    init();
    let args = Args::parse();
    // on a worker of rayon's pool, as the `rlaif` command runs (rlaif_kernels::pool)
    rlaif::kernels::on_pool(move || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let interrupt = Interrupt::install()?;
    let terminal = Terminal::new(interrupt.clone());
    let device = Device::default();
    let lm = load_model(args.model.as_deref(), &device)?;
    let constitution = Constitution::default_constitution();

    // 1. Two answers per prompt.
    let prompts = read_prompts(&args.prompts)?;
    let pair_config = PairConfig {
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        limit: Some(args.limit),
        ..PairConfig::default()
    };
    let pairs_file = args.out.join("pairs.jsonl");
    let s = generate_pairs(&lm, &prompts, &pair_config, &pairs_file, &terminal)?;
    eprintln!("pairs: {s}");
    if s.stopped {
        return Ok(());
    }

    // 2. AI feedback.
    let label_config = LabelConfig {
        seed: args.seed,
        ..LabelConfig::default()
    };
    let pairs = read_pairs(&pairs_file, args.seed)?;
    let comparisons = args.out.join("comparisons.jsonl");
    let summary = label_pairs(
        &lm,
        Some(&lm),
        &constitution,
        &pairs,
        &label_config,
        &comparisons,
        &terminal,
    )?;
    if summary.stopped {
        return Ok(());
    }
    println!("Labeller on the model's own pairs: {summary}\n");
    let known = read_pairs(&args.known, args.seed)
        .with_context(|| format!("reading {}", args.known.display()))?;
    let known = &known[..args.known_limit.min(known.len())];
    let (_, known_summary) = label_all(
        &lm,
        Some(&lm),
        &constitution,
        known,
        &label_config,
        &terminal,
    )?;
    if known_summary.stopped {
        return Ok(());
    }
    if let Some(a) = known_summary.stats.accuracy {
        println!(
            "Labeller on {} hand-written pairs of known preference: {} correct ({:.2}), mean P(known better) {:.3}\n",
            a.pairs, a.correct, a.accuracy, a.mean_p_known_better
        );
    }

    // 3. The preference model on the soft labels.
    let data = PmData::build(
        vec![read_comparisons(
            &comparisons,
            "harmless",
            1.0,
            PromptFormat::Chat,
        )?],
        &DataConfig {
            eval_fraction: 0.25,
            seed: args.seed,
        },
    );
    let pm_config = PmConfig {
        epochs: args.epochs,
        eval_every: Some(2),
        seed: args.seed,
        ..PmConfig::default()
    };
    let pm = PreferenceModel::from_lm(lm, HeadInit::default())?;
    // The baseline: what the untrained head's scores say about the known pairs.
    let (correct0, _) = known_accuracy(&pm, known)?;
    let run = rlaif_pm::train(pm, &data, &pm_config, &args.out.join("pm"), &terminal)?;
    if run.report.interrupted {
        return Ok(());
    }
    let (first, last) = (
        run.report.evals.first().context("no evaluation")?,
        run.report.evals.last().context("no evaluation")?,
    );
    let acc = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
    println!(
        "Preference model: {} training / {} held-out comparisons; held-out loss {:.3} → {:.3}, \
         accuracy on decisive labels ({} pairs) {} → {}, expected calibration error {:.3} → {:.3}",
        data.train.len(),
        data.eval.len(),
        first.loss,
        last.loss,
        last.decisive,
        acc(first.accuracy),
        acc(last.accuracy),
        first.ece,
        last.ece,
    );
    let (correct, n) = known_accuracy(&run.model, known)?;
    println!(
        "Preference model on the {n} hand-written pairs: {correct} correct ({:.2}); before \
         training (the initial head) {correct0} ({:.2}). Report, calibration.svg and \
         curves.svg in {}",
        correct as f64 / n.max(1) as f64,
        correct0 as f64 / n.max(1) as f64,
        args.out.join("pm").display()
    );
    Ok(())
}

/// How many of the `known` pairs the preference model scores the known better response
/// higher, and how many pairs there are.
fn known_accuracy(
    pm: &PreferenceModel,
    known: &[rlaif_feedback::Pair],
) -> anyhow::Result<(usize, usize)> {
    let texts: Vec<(Prompt, String)> = known
        .iter()
        .flat_map(|p| {
            let prompt: Prompt = p.conversation.clone().into();
            [
                (prompt.clone(), p.response_a.clone()),
                (prompt, p.response_b.clone()),
            ]
        })
        .collect();
    let scores = pm.score_pairs(&texts)?;
    let correct = known
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            let better = if scores[2 * i] > scores[2 * i + 1] {
                rlaif_feedback::Side::A
            } else {
                rlaif_feedback::Side::B
            };
            p.known_better == Some(better)
        })
        .count();
    Ok((correct, known.len()))
}
