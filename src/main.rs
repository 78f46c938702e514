//! `rlaif`: each stage of Constitutional AI as a subcommand that reads and writes the
//! files of the data flow (docs/architecture.md), so a stage can be run, inspected and
//! resumed on its own.
//!
//! ```sh
//! rlaif revise --prompts data/prompts/red_team.jsonl --out run/revisions.jsonl --limit 12
//! rlaif sample --prompts data/prompts/helpful.jsonl --out run/helpful.jsonl --limit 12
//! rlaif sft --revisions run/revisions.jsonl --helpful run/helpful.jsonl --out run/sft
//! rlaif chat --model run/sft/model "How do I pick a lock?"
//! rlaif pairs --model run/sft/model --out run/pairs.jsonl --limit 12
//! rlaif label --pairs run/pairs.jsonl --out run/comparisons.jsonl
//! rlaif train-pm --model run/sft/model --comparisons run/comparisons.jsonl --out run/pm
//! rlaif score --pm run/pm/model --input data/pairs/known_preference.jsonl
//! ```
//!
//! Every subcommand takes `--model` (a Hugging Face directory or a `.gguf`; default
//! SmolLM2-135M-Instruct), `--out`, `--seed` and `--config FILE` (TOML with the same keys
//! as the flags; flags win), draws progress on stderr, ends with a one-paragraph summary,
//! and exits with 130 after a clean Ctrl-C stop (rerun the same command to resume).

use rlaif::cli::{Outcome, commands};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(
    name = "rlaif",
    version,
    about = "Constitutional AI (RLAIF) on Burn, one stage at a time"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Answer one message with a model.
    Chat(commands::chat::Args),
    /// Critique → revision on red-team prompts (stage 1) → revisions.jsonl.
    Revise(commands::revise::Args),
    /// The model's own answers to (helpful) prompts → helpful.jsonl.
    Sample(commands::sample::Args),
    /// Supervised fine-tuning on revisions mixed with helpful samples → an SL model directory.
    Sft(commands::sft::Args),
    /// Two responses per prompt from the SL model (stage 2a) → pairs.jsonl.
    Pairs(commands::pairs::Args),
    /// AI-feedback soft labels on response pairs → comparisons.jsonl.
    Label(commands::label::Args),
    /// Train a preference model on comparisons → a PM directory.
    TrainPm(commands::train_pm::Args),
    /// PPO against a preference model (stage 2b) → an RL policy directory.
    Ppo(commands::ppo::Args),
    /// Every stage of Constitutional AI in one directory, from one TOML file.
    Pipeline(commands::pipeline::Args),
    /// Evaluate models on held-out prompts: AI judge, Elo, PM scores, refusals → report.md.
    Eval(commands::eval::Args),
    /// A preference model on a file: accuracy on pairs, or scores of responses.
    Score(commands::score::Args),
    /// Write a model (GGUF or Hugging Face directory) as a Hugging Face directory.
    Convert(commands::convert::Args),
}

fn main() -> ExitCode {
    rlaif::cli::init();
    let cli = Cli::parse();
    // on a worker of rayon's pool: each tensor op splits without waking a sleeping thread
    // (rlaif_kernels::pool)
    let result = rlaif::kernels::on_pool(move || match cli.command {
        Command::Chat(a) => commands::chat::run(a),
        Command::Revise(a) => commands::revise::run(a),
        Command::Sample(a) => commands::sample::run(a),
        Command::Sft(a) => commands::sft::run(a),
        Command::Pairs(a) => commands::pairs::run(a),
        Command::Label(a) => commands::label::run(a),
        Command::TrainPm(a) => commands::train_pm::run(a),
        Command::Ppo(a) => commands::ppo::run(a),
        Command::Score(a) => commands::score::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Pipeline(a) => commands::pipeline::run(a),
        Command::Convert(a) => commands::convert::run(a),
    });
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => {
            eprintln!("stopped; run the same command again to resume");
            ExitCode::from(rlaif::cli::EXIT_INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
