//! The critique → revision loop with a real model:
//! `cargo run --release --example critique_revision`
//!
//! Runs `--rounds` (default 2, to keep it quick on a CPU; the library's default is the
//! paper's 4) critique / revision rounds on the first `--limit` prompts (default 4) of
//! `--prompts` (default `data/prompts/red_team.jsonl`) with SmolLM2-135M-Instruct (or
//! `--model`), appends the records to `--out` (default `target/critique_revision.jsonl`;
//! rerunning skips the prompts already there, delete it to start over), prints one full
//! trace to stdout and the run summary to stderr.
//!
//! Ctrl-C stops the run after the batch in flight is written (a second Ctrl-C quits at
//! once, losing that batch); run the same command again to resume. Resuming needs the same
//! settings (`--seed`, `--rounds`, `--raw`, `--every-round`, `--constitution`) as the
//! records already in `--out`.

use burn::prelude::Device;
use clap::Parser;
use rlaif::cli::{Interrupt, Terminal, init, load_model};
use rlaif_constitution::{Constitution, PromptFormat};
use rlaif_revision::{
    DegeneratePolicy, RevisionConfig, read_prompts, read_records, run_revision_until,
};
use std::path::PathBuf;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(about = "Run the critique → revision loop and print one trace")]
struct Args {
    /// A Hugging Face model directory or a .gguf file (default: SmolLM2-135M-Instruct,
    /// fetched on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt set (JSON Lines of {"id", "prompt", "category"}).
    #[arg(long, default_value = "data/prompts/red_team.jsonl")]
    prompts: PathBuf,
    /// A constitution in TOML (default: the one shipped with rlaif-constitution).
    #[arg(long)]
    constitution: Option<PathBuf>,
    /// Only the first N prompts.
    #[arg(long, default_value_t = 4)]
    limit: usize,
    /// Critique / revision rounds (2 here to keep the example quick; the paper uses 4).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The output file (appended to; existing records are skipped).
    #[arg(long, default_value = "target/critique_revision.jsonl")]
    out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most new tokens of every stage (response, critique, revision).
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Prompts per batch.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Raw `Human:` / `Assistant:` prompts instead of the chat template.
    #[arg(long)]
    raw: bool,
    /// Emit every round's revision as an SFT pair.
    #[arg(long)]
    every_round: bool,
    /// Drop prompts at their first degenerate output instead of retrying.
    #[arg(long)]
    drop_degenerate: bool,
}

fn main() -> anyhow::Result<()> {
    init();
    let args = Args::parse();
    // on a worker of rayon's pool, as the `rlaif` command runs (rlaif_kernels::pool)
    rlaif::kernels::on_pool(move || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let prompts = read_prompts(&args.prompts)?;
    let constitution = match &args.constitution {
        Some(p) => Constitution::from_toml_file(p)?,
        None => Constitution::default_constitution(),
    };
    let lm = load_model(args.model.as_deref(), &Device::default())?;

    let config = RevisionConfig {
        rounds: args.rounds,
        temperature: args.temperature,
        max_new_tokens_response: args.max_new_tokens,
        max_new_tokens_critique: args.max_new_tokens,
        max_new_tokens_revision: args.max_new_tokens,
        batch_size: args.batch_size,
        seed: args.seed,
        emit_every_round: args.every_round,
        degenerate: if args.drop_degenerate {
            DegeneratePolicy::Drop
        } else {
            DegeneratePolicy::Retry { max_attempts: 3 }
        },
        format: if args.raw {
            PromptFormat::Raw
        } else {
            PromptFormat::Chat
        },
        limit: Some(args.limit),
        ..RevisionConfig::default()
    };
    // Progress bars on stderr; the first Ctrl-C stops after the batch in flight.
    let terminal = Terminal::new(Interrupt::install()?);
    let summary = run_revision_until(&lm, &constitution, &prompts, &config, &args.out, &terminal)?;
    eprintln!("{summary}");
    eprintln!("records in {}", args.out.display());
    if summary.stopped {
        eprintln!(
            "stopped by Ctrl-C: {} prompts written by this run, {} of {} finished in all; \
             run the same command again (same --out and settings) to resume",
            summary.done,
            summary.skipped + summary.done + summary.dropped,
            summary.total,
        );
        return Ok(());
    }

    let wanted: Vec<&str> = prompts
        .iter()
        .take(args.limit)
        .map(|p| p.id.as_str())
        .collect();
    let records = read_records(&args.out)?;
    match records.iter().find(|r| wanted.contains(&r.id.as_str())) {
        Some(r) => println!("{}", r.to_pretty_json()?),
        None => eprintln!("no record to show (every prompt was dropped)"),
    }
    Ok(())
}
