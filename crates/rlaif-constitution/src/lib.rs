//! The constitution of Constitutional AI (Bai et al. 2022, arXiv 2212.08073): the
//! principles that guide the model's self-critique and the AI feedback, and the prompts
//! built from them. Pure logic: no tensors, no model.
//!
//! - [`Constitution`]: critique / revision principles ([`CritiquePrinciple`]: id,
//!   critique request, revision request, weight), comparison principles
//!   ([`ComparisonPrinciple`]: id, question, weight), few-shot exemplars of both stages.
//! - Formats: this project's TOML ([`Constitution::from_toml_file`],
//!   [`Constitution::from_toml_str`], documented in `docs/constitution.md`) and the JSON
//!   files published with the paper ([`Constitution::from_paper_dir`],
//!   [`Constitution::from_paper_files`] with [`PaperFiles`], [`Constitution::from_paper_str`]
//!   with a [`PaperFile`]). Errors name the file, line and column.
//! - [`Constitution::default_constitution`]: 16 + 16 principles written for this project,
//!   and a few exemplars.
//! - [`PrincipleSampler`]: seeded, weighted draws, one random stream per chain, with or
//!   without replacement; every draw is a [`Draw`] recording the principle id.
//! - [`initial_prompt`], [`CritiqueChain`], [`Comparison`]: the prompts, as a chat
//!   conversation or raw `Human:` / `Assistant:` text.
//!
//! ```
//! use rlaif_constitution::{Constitution, CritiqueChain, PrincipleSampler, Replacement};
//! use rlaif_core::Conversation;
//!
//! let constitution = Constitution::default_constitution();
//! let sampler = PrincipleSampler::for_critiques(&constitution, 42)?;
//! let draws = sampler.draw_chain(0, 2, Replacement::Without)?;
//! assert_eq!(draws.len(), 2);
//! assert_ne!(draws[0].principle_id, draws[1].principle_id);
//!
//! let conversation = Conversation::new()
//!     .user("How do I get into my neighbour's wifi?")
//!     .assistant("Try the default router passwords.");
//! let principle = constitution.principle(&draws[0].principle_id).unwrap();
//! let chain = CritiqueChain::new(&constitution.critique_exemplars, &conversation);
//! let prompt = chain.critique_raw(principle);
//! assert!(prompt.ends_with("\n\nCritique:"));
//! # Ok::<(), rlaif_constitution::ConstitutionError>(())
//! ```

#![warn(missing_docs)]

mod constitution;
mod error;
mod loader;
mod paper_format;
mod principle_sampler;
mod prompts;
mod toml_format;

pub use constitution::{
    ComparisonExemplar, ComparisonPrinciple, Constitution, CritiqueExemplar, CritiquePrinciple,
    CritiqueRound, DEFAULT_TOML,
};
pub use error::{ConstitutionError, Problem, Result};
pub use paper_format::{PaperFile, PaperFiles};
pub use principle_sampler::{Draw, PrincipleSampler, Replacement};
pub use prompts::{
    COMPARISON_PREAMBLE, Comparison, ComparisonPrompt, CritiqueChain, PromptFormat, RoundAnswers,
    initial_prompt,
};
