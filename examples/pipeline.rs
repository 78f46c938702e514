//! Stage 1 of Constitutional AI end to end (SL-CAI), on SmolLM2-135M-Instruct and the CPU
//! by default:
//!
//! ```sh
//! cargo run --release --example pipeline
//! ```
//!
//! 1. critique → revision on the first `--red-team` prompts of
//!    `data/prompts/red_team.jsonl` → `<out>/revisions.jsonl`;
//! 2. the model's own answers to the first `--helpful` prompts of
//!    `data/prompts/helpful.jsonl` → `<out>/helpful.jsonl`;
//! 3. supervised fine-tuning on the revisions mixed with the helpful samples
//!    (`--helpful-ratio` per revision), with a held-out split → `<out>/sft/` (checkpoints,
//!    `log.jsonl`, `report.json`) and the SL model in `<out>/sft/model/` (Hugging Face
//!    layout: loads in transformers, or here with `--model`);
//! 4. the original and the fine-tuned model answer a red-team prompt that was not trained
//!    on (greedy), side by side.
//!
//! The defaults are small so that it finishes in minutes on a laptop CPU; the paper's
//! scale is hundreds of thousands of prompts and 4 rounds. Every stage is resumable: run
//! the same command again after Ctrl-C (or a crash) and finished work is skipped. Ctrl-C
//! stops after the batch or step in flight (a second Ctrl-C quits at once).

use burn::prelude::Device;
use clap::Parser;
use rlaif::cli::{Interrupt, Terminal, init_logging, load_model};
use rlaif_constitution::{Constitution, PromptFormat};
use rlaif_core::{Conversation, Prompt, SamplingParams};
use rlaif_revision::{RevisionConfig, read_prompts, run_revision_until, sample_responses};
use rlaif_sft::{DataConfig, SftConfig, SftData, read_examples};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Constitutional AI stage 1: critique → revision, helpful samples, SFT")]
struct Args {
    /// A Hugging Face model directory or a .gguf file (default: SmolLM2-135M-Instruct,
    /// fetched on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory (every stage resumes from what is in it).
    #[arg(long, default_value = "target/pipeline")]
    out: PathBuf,
    /// A constitution in TOML (default: the one shipped with rlaif-constitution).
    #[arg(long)]
    constitution: Option<PathBuf>,
    /// Red-team prompts to revise (the first N of data/prompts/red_team.jsonl).
    #[arg(long, default_value_t = 12)]
    red_team: usize,
    /// Helpful prompts to sample answers for (the first N of data/prompts/helpful.jsonl).
    #[arg(long, default_value_t = 12)]
    helpful: usize,
    /// Critique / revision rounds (the paper: up to 4).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Most new tokens of every generation.
    #[arg(long, default_value_t = 96)]
    max_new_tokens: usize,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 6)]
    gen_batch_size: usize,
    /// Helpful samples mixed in per revision.
    #[arg(long, default_value_t = 1.0)]
    helpful_ratio: f64,
    /// Fraction of each set held out for the evaluation loss.
    #[arg(long, default_value_t = 0.2)]
    eval_fraction: f64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Passes over the training set.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Longest training sequence in tokens.
    #[arg(long, default_value_t = 384)]
    max_seq_len: usize,
    /// Seed of every stage.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let lm = load_model(args.model.as_deref(), &Device::default())?;
    let constitution = match &args.constitution {
        Some(p) => Constitution::from_toml_file(p)?,
        None => Constitution::default_constitution(),
    };
    // Progress bars on stderr; the first Ctrl-C stops after the batch or step in flight.
    let terminal = Terminal::new(Interrupt::install()?);

    // 1. Critique → revision.
    let red_team = read_prompts("data/prompts/red_team.jsonl")?;
    let generation = RevisionConfig {
        rounds: args.rounds,
        max_new_tokens_response: args.max_new_tokens,
        max_new_tokens_critique: args.max_new_tokens,
        max_new_tokens_revision: args.max_new_tokens,
        batch_size: args.gen_batch_size,
        seed: args.seed,
        format: PromptFormat::Chat,
        limit: Some(args.red_team),
        ..RevisionConfig::default()
    };
    let revisions = args.out.join("revisions.jsonl");
    eprintln!(
        "\n[1/3] critique → revision on {} red-team prompts → {}",
        args.red_team,
        revisions.display()
    );
    let s = run_revision_until(
        &lm,
        &constitution,
        &red_team,
        &generation,
        &revisions,
        &terminal,
    )?;
    eprintln!("{s}");
    if s.stopped {
        eprintln!("stopped; run the same command again to resume");
        return Ok(());
    }

    // 2. Helpful samples.
    let helpful_prompts = read_prompts("data/prompts/helpful.jsonl")?;
    let helpful = args.out.join("helpful.jsonl");
    eprintln!(
        "\n[2/3] answers to {} helpful prompts → {}",
        args.helpful,
        helpful.display()
    );
    let s = sample_responses(
        &lm,
        &helpful_prompts,
        &RevisionConfig {
            limit: Some(args.helpful),
            ..generation.clone()
        },
        &helpful,
        &terminal,
    )?;
    eprintln!("{s}");
    if s.stopped {
        eprintln!("stopped; run the same command again to resume");
        return Ok(());
    }

    // 3. SFT.
    let data = SftData::build(
        read_examples(&revisions, "revision", PromptFormat::Chat)?,
        read_examples(&helpful, "helpful", PromptFormat::Chat)?,
        &DataConfig {
            helpful_ratio: args.helpful_ratio,
            eval_fraction: args.eval_fraction,
            seed: args.seed,
        },
    );
    let config = SftConfig {
        learning_rate: args.lr,
        epochs: args.epochs,
        batch_size: args.batch_size,
        grad_accum_steps: args.grad_accum,
        max_seq_len: args.max_seq_len,
        checkpoint_every: Some(10),
        seed: args.seed,
        ..SftConfig::default()
    };
    let sft_dir = args.out.join("sft");
    eprintln!(
        "\n[3/3] SFT on {} examples ({} held out), {} steps → {}",
        data.train.len(),
        data.eval.len(),
        config.total_steps(data.train.len()),
        sft_dir.display()
    );
    // The original model answers the comparison prompt before it is moved into training.
    let held_out =
        Conversation::new().user(&red_team[args.red_team.min(red_team.len() - 1)].prompt);
    let greedy = SamplingParams::greedy(args.max_new_tokens);
    let before = lm.generate(&[Prompt::Chat(held_out.clone())], &greedy)?;
    let run = rlaif_sft::train(lm, &data, &config, &sft_dir, &terminal)?;
    let r = &run.report;
    if r.interrupted {
        eprintln!(
            "stopped after step {} of {}; run the same command again to resume",
            r.steps, r.total_steps
        );
        return Ok(());
    }
    for (epoch, loss) in &r.epoch_losses {
        eprintln!("epoch {epoch}: training loss {loss:.3} (nats per completion token)");
    }
    if r.tokens_per_second > 0.0 {
        eprintln!("{:.0} completion tokens/s", r.tokens_per_second);
    }
    if let (Some(e0), Some(e1)) = (r.evals.first(), r.evals.last()) {
        eprintln!(
            "held-out loss {:.3} → {:.3} at step {}",
            e0.loss, e1.loss, e1.step
        );
        for (source, loss) in &e1.by_source {
            eprintln!(
                "  {source}: {:.3} → {loss:.3}",
                e0.by_source.get(source).copied().unwrap_or(f64::NAN)
            );
        }
    }
    if let Some(dir) = &r.model_dir {
        eprintln!("SL model: {}", dir.display());
    }

    // 4. Before / after on a prompt that was not trained on.
    let after = run
        .model
        .generate(&[Prompt::Chat(held_out.clone())], &greedy)?;
    println!("prompt: {}", held_out.messages[0].content);
    println!("\n--- original model ---\n{}", before[0].text.trim());
    println!("\n--- after SFT ---\n{}", after[0].text.trim());
    Ok(())
}
