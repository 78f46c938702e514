//! Writes a model (GGUF file or Hugging Face directory) as a Hugging Face model directory
//! that transformers can load:
//! `cargo run --release --example convert -- --out smollm2-hf` (default model), or
//! `cargo run --release --example convert -- --model model.gguf --out dir`.

use anyhow::Context;
use burn::prelude::Device;
use clap::Parser;
use rlaif::cli::{init, load_model};
use std::path::PathBuf;

/// mimalloc, keeping freed memory for the next tensor (`rlaif_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

#[derive(Parser, Debug)]
#[command(about = "Convert a model to a Hugging Face directory (f32 safetensors)")]
struct Args {
    /// A Hugging Face model directory or a .gguf file (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The directory to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    init();
    let args = Args::parse();
    // on a worker of rayon's pool, as the `rlaif` command runs (rlaif_kernels::pool)
    rlaif::kernels::on_pool(move || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let lm = load_model(args.model.as_deref(), &Device::default())?;
    lm.save_pretrained(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
