//! Chat with a model: `cargo run --release --example chat -- "How do I bake bread?"`
//!
//! The message goes through the model's chat template with the generation prompt. With
//! `--greedy`, stdout holds exactly the decoded greedy continuation (logs go to stderr), so
//! it can be compared with other implementations. The model is loaded for inference only: a
//! GGUF decodes from its quantised blocks (`LanguageModel::load_for_inference`).

use burn::prelude::Device;
use clap::Parser;
use rlaif::cli::{init, load_model_for_inference};
use rlaif_core::{Conversation, Prompt, SamplingParams};
use std::path::PathBuf;
use std::time::Instant;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(about = "Generate a reply to one user message")]
struct Args {
    /// The user message.
    message: String,
    /// A Hugging Face model directory or a .gguf file (default: SmolLM2-135M-Instruct,
    /// fetched on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A system message to put first.
    #[arg(long)]
    system: Option<String>,
    /// Greedy decoding (overrides the temperature).
    #[arg(long)]
    greedy: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most new tokens.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Send the message as raw text instead of through the chat template.
    #[arg(long)]
    raw: bool,
}

fn main() -> anyhow::Result<()> {
    init();
    let args = Args::parse();
    // on a worker of rayon's pool, as the `rlaif` command runs (rlaif_kernels::pool)
    rlaif::kernels::on_pool(move || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let lm = load_model_for_inference(args.model.as_deref(), &Device::default())?;
    let prompt = if args.raw {
        Prompt::Text(args.message)
    } else {
        let mut c = Conversation::new();
        if let Some(s) = args.system {
            c = c.system(s);
        }
        Prompt::Chat(c.user(args.message))
    };
    let params = SamplingParams {
        max_new_tokens: args.max_new_tokens,
        temperature: if args.greedy { 0.0 } else { args.temperature },
        top_p: if args.greedy { 1.0 } else { args.top_p },
        top_k: args.top_k,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let t = Instant::now();
    let out = lm.generate(&[prompt], &params)?;
    let c = &out[0];
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} new tokens in {secs:.2} s ({:.1} tokens/s), finish: {:?}",
        c.token_ids.len(),
        c.token_ids.len() as f64 / secs,
        c.finish_reason
    );
    println!("{}", c.text);
    Ok(())
}
