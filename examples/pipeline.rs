//! The whole of Constitutional AI on SmolLM2-135M-Instruct and the CPU by default, in
//! about 30 minutes on 2 cores, into `target/pipeline/`:
//!
//! ```sh
//! cargo run --release --example pipeline                       # the default profile
//! cargo run --release --example pipeline -- --profile smoke    # every stage in minutes
//! cargo run --release --example pipeline -- --config my.toml --out runs/a
//! ```
//!
//! critique → revision on red-team prompts, the base model's helpful answers, supervised
//! fine-tuning (the SL-CAI model), two answers per red-team prompt from it, AI-feedback
//! labels, the preference model, PPO against it (the RL-CAI model), and the evaluation of
//! base, SL and RL on held-out harmful, benign-but-sensitive and helpful prompts:
//! `target/pipeline/eval/report.md` (with `report.json` and the pictures). It is
//! `rlaif pipeline` with the same flags (see `rlaif::cli::commands::pipeline` for the
//! settings file and the profiles). Every stage resumes: after Ctrl-C or a crash, the same
//! command continues where it stopped; a rerun with other settings is refused with the
//! setting named.

use clap::Parser;
use rlaif::cli::commands::pipeline::{Args, run};
use rlaif::cli::{EXIT_INTERRUPTED, Outcome, init};
use std::process::ExitCode;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(about = "Constitutional AI end to end: SL-CAI, AI feedback, PM, RL-CAI, evaluation")]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn main() -> ExitCode {
    init();
    let args = Cli::parse().args;
    // on a worker of rayon's pool, as the `rlaif` command runs (rlaif_kernels::pool)
    match rlaif::kernels::on_pool(move || run(args)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => {
            eprintln!("stopped; run the same command again to resume");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
