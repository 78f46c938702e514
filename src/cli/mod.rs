//! What the `rlaif` command and the examples share (feature `cli`, on by default): the
//! terminal's side of a run. Library crates never print or draw; this module does.
//!
//! - [`Terminal`]: an [`Observer`](crate::core::progress::Observer) that draws one
//!   progress bar per stage on stderr (`indicatif`) and asks the stage to stop after a
//!   Ctrl-C ([`Interrupt`]).
//! - [`load_model`]: the model of `--model` (a Hugging Face directory or a `.gguf`), or the
//!   default one, fetched on first use; [`load_model_for_inference`] for a model that is
//!   only run (frozen; a GGUF decodes from its quantised blocks).
//! - [`init`]: start-up: glibc's `malloc` set for tensor work
//!   ([`tune_allocator`](crate::kernels::tune_allocator); the command's own global
//!   allocator is [`TensorAllocator`](crate::kernels::TensorAllocator)) and a `tracing`
//!   subscriber on stderr (`RLAIF_LOG` or `RUST_LOG` to filter).
//! - [`settings`]: a subcommand's settings from a TOML file (`--config`) with its flags
//!   on top.

pub mod commands;
mod interrupt;
mod model;
pub mod settings;
mod terminal;

pub use interrupt::Interrupt;
pub use model::{init, load_model, load_model_for_inference, set_bf16_matmuls};
pub use terminal::Terminal;

/// The exit code of a run stopped cleanly by Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// How a subcommand ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did all its work.
    Done,
    /// Ctrl-C stopped it cleanly; a rerun resumes.
    Interrupted,
}

impl Outcome {
    /// `Interrupted` when the stage was stopped before its end, `Done` otherwise.
    pub fn of(interrupted: bool) -> Self {
        if interrupted {
            Self::Interrupted
        } else {
            Self::Done
        }
    }
}
