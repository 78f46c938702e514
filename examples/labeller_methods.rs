//! Which way of asking the feedback model agrees with people? The labeller method table:
//! `cargo run --release --example labeller_methods`
//!
//! Labels the pairs of `--pairs` (default `data/pairs/known_preference.jsonl`: 120
//! hand-written pairs whose preference is known, held out from all training) with each
//! labelling method in turn and prints, per method, the accuracy against the known
//! preference, the position bias before cancelling (mean P(first option)), the agreement of
//! the two orders, the length bias (the correlation of the label with the word-count
//! difference) and the accuracy on the pairs whose rejected response is the longer one.
//! `docs/labeller.md` records the table this printed for SmolLM2-135M-Instruct.
//!
//! Each method's result is appended to `--out` (default `target/labeller_methods.jsonl`) as
//! soon as it is done, with its label records in `--out`'s directory, so an interrupted
//! sweep keeps the finished methods and a rerun skips them (delete the file to start over).
//! `--methods a,b` runs some of them; `--limit N` only the first N pairs. One
//! [`CachedScorer`] serves every method, so a question two methods share is asked once.

use anyhow::Context;
use burn::prelude::Device;
use clap::Parser;
use rlaif::cli::{Interrupt, Terminal, init, load_model};
use rlaif_constitution::{Constitution, PromptFormat};
use rlaif_core::fs::write_atomic;
use rlaif_core::jsonl::{JsonlAppender, Verdict};
use rlaif_feedback::{
    CachedScorer, LabelConfig, LabelStats, Method, PointwiseQuestion, label_all, read_pairs,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(about = "Compare AI-labelling methods on pairs whose preference is known")]
struct Args {
    /// A Hugging Face model directory or a .gguf file (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Pairs with a known preference (TRL `prompt` / `chosen` / `rejected`).
    #[arg(long, default_value = "data/pairs/known_preference.jsonl")]
    pairs: PathBuf,
    /// A constitution in TOML (default: the one shipped with rlaif-constitution).
    #[arg(long)]
    constitution: Option<PathBuf>,
    /// Only the first N pairs.
    #[arg(long)]
    limit: Option<usize>,
    /// Only these methods (comma-separated names from the table; default: all but `cot`).
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Where the results go, one JSON line per method.
    #[arg(long, default_value = "target/labeller_methods.jsonl")]
    out: PathBuf,
    /// Seed of the A/B placement and of the principle draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// One method's row of the table.
#[derive(Serialize, Deserialize)]
struct Row {
    method: String,
    description: String,
    config: LabelConfig,
    stats: LabelStats,
    scorer_calls: usize,
    generator_calls: usize,
    seconds: f64,
}

/// The methods compared: a name, what it is, its settings.
fn methods(seed: u64) -> Vec<(&'static str, &'static str, LabelConfig)> {
    let base = LabelConfig {
        seed,
        ..LabelConfig::pairwise()
    };
    let pairwise = |format, exemplars, both_orders| LabelConfig {
        format,
        exemplars,
        both_orders,
        ..base.clone()
    };
    let harmful = |format| LabelConfig {
        method: Method::Pointwise,
        pointwise_question: PointwiseQuestion::Fixed {
            question: "Is the assistant's last reply harmful?".into(),
            yes_is_good: false,
        },
        format,
        exemplars: false,
        ..base.clone()
    };
    use PromptFormat::{Chat, Raw};
    vec![
        (
            "paper",
            "pairwise, chat, exemplars, one order (§4.1 as written)",
            pairwise(Chat, true, false),
        ),
        (
            "chat",
            "pairwise, chat, exemplars, both orders",
            pairwise(Chat, true, true),
        ),
        (
            "chat-0shot",
            "pairwise, chat, no exemplars, both orders",
            pairwise(Chat, false, true),
        ),
        (
            "raw",
            "pairwise, Human:/Assistant:, exemplars, both orders",
            pairwise(Raw, true, true),
        ),
        (
            "raw-0shot",
            "pairwise, Human:/Assistant:, no exemplars, both orders",
            pairwise(Raw, false, true),
        ),
        (
            "chat-calibrated",
            "pairwise, chat, exemplars, both orders, calibrated (Zhao et al. 2021)",
            LabelConfig {
                calibrate: true,
                ..pairwise(Chat, true, true)
            },
        ),
        (
            "raw-calibrated",
            "pairwise, Human:/Assistant:, exemplars, both orders, calibrated",
            LabelConfig {
                calibrate: true,
                ..pairwise(Raw, true, true)
            },
        ),
        (
            "chat-length",
            "pairwise, chat, exemplars, both orders, options cut to equal length",
            LabelConfig {
                length_control: true,
                ..pairwise(Chat, true, true)
            },
        ),
        (
            "chat-ensemble4",
            "pairwise, chat, exemplars, both orders, 4 principles averaged",
            LabelConfig {
                principles_per_pair: 4,
                ..pairwise(Chat, true, true)
            },
        ),
        (
            "pointwise-principle",
            "pointwise yes/no per response (the principle as a question), chat, exemplars",
            LabelConfig {
                method: Method::Pointwise,
                format: Chat,
                ..base.clone()
            },
        ),
        (
            "pointwise-harmful-chat",
            "pointwise \"Is the assistant's last reply harmful?\" per response, chat",
            harmful(Chat),
        ),
        (
            "pointwise-harmful-raw",
            "pointwise \"Is the assistant's last reply harmful?\" per response, Human:/Assistant:",
            harmful(Raw),
        ),
        (
            "contrast-chat",
            "contrast: log p(response | good system prompt) − log p(response | bad), chat",
            LabelConfig {
                method: Method::Contrast,
                format: Chat,
                ..base.clone()
            },
        ),
        (
            "contrast-raw",
            "contrast: log p(response | good system prompt) − log p(response | bad), raw",
            LabelConfig {
                method: Method::Contrast,
                format: Raw,
                ..base.clone()
            },
        ),
        (
            "cot",
            "pairwise, chat, exemplars, both orders, chain of thought (96 tokens), clamped [0.4, 0.6]",
            LabelConfig {
                cot: true,
                cot_max_new_tokens: 96,
                ..pairwise(Chat, true, true)
            },
        ),
    ]
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.2}", v))
}

fn main() -> anyhow::Result<()> {
    init();
    let args = Args::parse();
    // on a worker of rayon's pool, as the `rlaif` command runs (rlaif_kernels::pool)
    rlaif::kernels::on_pool(move || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let interrupt = Interrupt::install()?;
    let device = Device::default();
    let constitution = match &args.constitution {
        Some(p) => Constitution::from_toml_file(p)?,
        None => Constitution::default_constitution(),
    };
    let pairs = read_pairs(&args.pairs, args.seed)?;
    let all = methods(args.seed);
    for m in &args.methods {
        anyhow::ensure!(
            all.iter().any(|(name, ..)| name == m),
            "--methods: no method named `{m}` (known: {})",
            all.iter().map(|(n, ..)| *n).collect::<Vec<_>>().join(", ")
        );
    }
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(name, ..)| {
            if args.methods.is_empty() {
                *name != "cot"
            } else {
                args.methods.iter().any(|m| m == name)
            }
        })
        .collect();

    // The methods already in --out are skipped (their rows are kept).
    let mut rows: Vec<Row> = Vec::new();
    let mut out = JsonlAppender::open(&args.out, |line| {
        rows.push(line.parse()?);
        Ok::<_, rlaif_core::jsonl::JsonlError>(Verdict::Keep)
    })
    .with_context(|| format!("opening {}", args.out.display()))?;
    let lm = load_model(args.model.as_deref(), &device)?;
    let scorer = CachedScorer::new(&lm);
    let terminal = Terminal::new(interrupt.clone());
    for (name, description, mut config) in chosen {
        if rows.iter().any(|r| r.method == name) {
            tracing::info!("{name}: already in {}, skipped", args.out.display());
            continue;
        }
        if interrupt.is_set() {
            break;
        }
        config.limit = args.limit;
        let t = Instant::now();
        let calls = scorer.misses();
        tracing::info!("{name}: {description}");
        let (records, summary) = label_all(
            &scorer,
            Some(&lm),
            &constitution,
            &pairs,
            &config,
            &terminal,
        )?;
        if summary.done < summary.total {
            break; // interrupted: the method is not finished, so nothing is written
        }
        let labels = args.out.with_file_name(format!("labels-{name}.jsonl"));
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        write_atomic(&labels, text.as_bytes())?;
        let row = Row {
            method: name.into(),
            description: description.into(),
            config,
            stats: summary.stats,
            scorer_calls: scorer.misses() - calls,
            generator_calls: summary.generator_calls,
            seconds: t.elapsed().as_secs_f64(),
        };
        out.append(&row)?;
        rows.push(row);
    }

    println!(
        "| method | accuracy | P(known better) | rejected longer | similar length | chosen longer | P(first) | order agreement | length corr. | questions | s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let s = &r.stats;
        let by = |k: &str| {
            s.accuracy_by_length
                .get(k)
                .map_or("–".into(), |a| format!("{}/{}", a.correct, a.pairs))
        };
        let acc = s.accuracy.map_or("–".into(), |a| {
            format!("{}/{} ({:.2})", a.correct, a.pairs, a.accuracy)
        });
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            r.method,
            acc,
            pct(s.accuracy.map(|a| a.mean_p_known_better)),
            by("rejected_longer"),
            by("similar"),
            by("chosen_longer"),
            pct(s.mean_p_first),
            pct(s.order_agreement),
            pct(s.length_correlation),
            r.scorer_calls,
            r.seconds
        );
    }
    Ok(())
}
