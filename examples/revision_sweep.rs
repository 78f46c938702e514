//! Chooses the critique → revision settings by measurement: for each temperature, top-p
//! and number of rounds of a grid, the loop runs on the first `--limit` red-team prompts,
//! then the feedback model (the harmlessness judge of `rlaif_eval`) compares each final
//! revision with its initial response. The share of revisions it prefers, with its 95 %
//! interval, is the stage's quality; `docs/pipeline.md` records the table that chose the
//! pipeline's defaults.
//!
//! ```sh
//! cargo run --release --example revision_sweep -- --limit 24 \
//!     --temperatures 0.3,0.7,1.0 --top-ps 0.9,1.0 --rounds 1,2
//! ```
//!
//! Each setting's revisions go to `<out>/T<t>_p<p>_r<r>/revisions.jsonl` (resumable); the
//! table is printed as Markdown and written to `<out>/sweep.json`.

use burn::prelude::Device;
use clap::Parser;
use rlaif::cli::{Interrupt, Terminal, init, load_model};
use rlaif::constitution::{Constitution, PromptFormat};
use rlaif::eval::revision::{RevisionQuality, revision_quality};
use rlaif::feedback::LabelConfig;
use rlaif::revision::{RevisionConfig, read_prompts, read_records, run_revision_until};
use std::path::PathBuf;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(about = "Critique → revision settings chosen by the feedback model")]
struct Args {
    /// The model that answers, critiques and revises (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The feedback model that judges (default: the same).
    #[arg(long)]
    feedback_model: Option<PathBuf>,
    /// Red-team prompts (the first N of data/prompts/red_team.jsonl).
    #[arg(long, default_value_t = 24)]
    limit: usize,
    /// Temperatures to try.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.7,1.0")]
    temperatures: Vec<f32>,
    /// Top-p values to try.
    #[arg(long, value_delimiter = ',', default_value = "0.9")]
    top_ps: Vec<f32>,
    /// Prompt formats to try: chat (the model's template) and/or raw (the paper's
    /// `Human:` / `Assistant:` transcript with `Revision:` to continue).
    #[arg(long, value_delimiter = ',', default_value = "chat")]
    formats: Vec<String>,
    /// Rounds to try.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    rounds: Vec<usize>,
    /// Most new tokens of each response, critique and revision.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// The judge: contrast or pairwise.
    #[arg(long, default_value = "contrast")]
    judge_method: String,
    /// Output directory.
    #[arg(long, default_value = "target/revision-sweep")]
    out: PathBuf,
    /// Seed.
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
    let device = Device::default();
    let lm = load_model(args.model.as_deref(), &device)?;
    let judge = match &args.feedback_model {
        Some(p) => Some(load_model(Some(p), &device)?),
        None => None,
    };
    let judge_lm = judge.as_ref().unwrap_or(&lm);
    let judge_config = match args.judge_method.as_str() {
        "contrast" => LabelConfig::default(),
        "pairwise" => LabelConfig::pairwise(),
        o => anyhow::bail!("--judge-method: contrast or pairwise, not {o:?}"),
    };
    let constitution = Constitution::default_constitution();
    let prompts = read_prompts("data/prompts/red_team.jsonl")?;
    let terminal = Terminal::new(Interrupt::install()?);
    let mut rows: Vec<(String, RevisionQuality)> = Vec::new();
    println!(
        "| format | temperature | top-p | rounds | revision preferred | 95 % interval | mean P(revision better) | unchanged | degenerate | words initial → final |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in &args.formats {
        let format = match f.as_str() {
            "chat" => PromptFormat::Chat,
            "raw" => PromptFormat::Raw,
            o => anyhow::bail!("--formats: chat or raw, not {o:?}"),
        };
        for &t in &args.temperatures {
            for &p in &args.top_ps {
                for &r in &args.rounds {
                    let name = match format {
                        PromptFormat::Chat => format!("T{t}_p{p}_r{r}"),
                        PromptFormat::Raw => format!("raw_T{t}_p{p}_r{r}"),
                    };
                    let file = args.out.join(&name).join("revisions.jsonl");
                    let config = RevisionConfig {
                        rounds: r,
                        temperature: t,
                        top_p: p,
                        max_new_tokens_response: args.max_new_tokens,
                        max_new_tokens_critique: args.max_new_tokens,
                        max_new_tokens_revision: args.max_new_tokens,
                        batch_size: args.batch_size,
                        seed: args.seed,
                        format,
                        limit: Some(args.limit),
                        ..RevisionConfig::default()
                    };
                    let s = run_revision_until(
                        &lm,
                        &constitution,
                        &prompts,
                        &config,
                        &file,
                        &terminal,
                    )?;
                    if s.stopped {
                        eprintln!("stopped; run the same command again to resume");
                        return Ok(());
                    }
                    let records = read_records(&file)?;
                    let q = revision_quality(
                        judge_lm,
                        &constitution,
                        &judge_config,
                        &records,
                        &terminal,
                    )?;
                    println!(
                        "| {f} | {t} | {p} | {r} | {}/{} ({:.0} %) | {:.0}–{:.0} % | {:.3} | {} | {} | {:.0} → {:.0} |",
                        q.preferred,
                        q.prompts,
                        100.0 * q.rate,
                        100.0 * q.interval[0],
                        100.0 * q.interval[1],
                        q.mean_p,
                        q.unchanged,
                        q.degenerate,
                        q.mean_words_initial,
                        q.mean_words_final
                    );
                    rows.push((name, q));
                }
            }
        }
    }
    let json = serde_json::to_string_pretty(
        &rows
            .iter()
            .map(|(n, q)| serde_json::json!({"setting": n, "quality": q}))
            .collect::<Vec<_>>(),
    )?;
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("sweep.json"), json)?;
    Ok(())
}
