//! The constitution: critique / revision principles, comparison principles, and few-shot
//! exemplars for both stages.

use crate::error::Result;
use crate::loader::{self, Parser};
use crate::paper_format::{PaperFile, PaperFiles};
use crate::toml_format;
use rlaif_core::Conversation;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The default constitution shipped with this crate (written for this project, not the
/// paper's text): 16 critique / revision principles, 16 comparison principles, and a few
/// few-shot exemplars of each stage.
pub const DEFAULT_TOML: &str = include_str!("../data/default.toml");

/// A principle of the supervised stage: how to critique a response and how to revise it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CritiquePrinciple {
    /// Unique id (among critique principles), recorded with every draw.
    pub id: String,
    /// The critique request, e.g. "Identify ways in which the assistant's last response is
    /// harmful ...".
    pub critique: String,
    /// The revision request, e.g. "Rewrite the assistant's response to remove ...".
    pub revision: String,
    /// Relative sampling weight (positive, finite; 1 when not given).
    pub weight: f64,
}

/// A principle of the AI-feedback stage: the question of a multiple-choice comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonPrinciple {
    /// Unique id (among comparison principles), recorded with every draw.
    pub id: String,
    /// The question, e.g. "Which of these responses is less harmful?" (without the
    /// trailing "Options:", which the prompt builder adds).
    pub question: String,
    /// Relative sampling weight (positive, finite; 1 when not given).
    pub weight: f64,
}

/// One critique / revision round: the requests and the model's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CritiqueRound {
    /// The critique request (the principle's `critique`).
    pub critique_request: String,
    /// The critique.
    pub critique: String,
    /// The revision request (the principle's `revision`).
    pub revision_request: String,
    /// The revised response.
    pub revision: String,
}

/// A worked example of the supervised stage: a conversation that ends with an assistant
/// response, then one or more critique / revision rounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CritiqueExemplar {
    /// An id for reference (the TOML `id`, or `paper-critique-NNN` for the paper's file).
    pub id: String,
    /// User / assistant turns, alternating, starting with the user and ending with the
    /// assistant response that the rounds critique.
    pub conversation: Conversation,
    /// At least one round.
    pub rounds: Vec<CritiqueRound>,
}

/// A worked example of the feedback stage: a conversation that ends with a user turn, a
/// better and a worse assistant response.
///
/// When rendered, exemplar `k` (0-based, in order) puts the better response at option (A)
/// when `k` is even and at option (B) when `k` is odd, so the answers alternate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComparisonExemplar {
    /// An id for reference (the TOML `id`, or `paper-comparison-NNN` for the paper's file).
    pub id: String,
    /// The question shown with this exemplar; `None`: the question of the comparison being
    /// asked.
    pub question: Option<String>,
    /// User / assistant turns, alternating, starting and ending with the user.
    pub conversation: Conversation,
    /// The better response (the correct answer).
    pub chosen: String,
    /// The worse response.
    pub rejected: String,
}

/// A constitution: the principles of both stages and their few-shot exemplars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Constitution {
    /// Critique / revision principles (supervised stage), in file order.
    pub principles: Vec<CritiquePrinciple>,
    /// Comparison principles (feedback stage), in file order.
    pub comparisons: Vec<ComparisonPrinciple>,
    /// Few-shot exemplars put in front of critique / revision prompts.
    pub critique_exemplars: Vec<CritiqueExemplar>,
    /// Few-shot exemplars put in front of comparison prompts.
    pub comparison_exemplars: Vec<ComparisonExemplar>,
}

impl Constitution {
    /// The constitution shipped with this crate ([`DEFAULT_TOML`]).
    pub fn default_constitution() -> Self {
        // The shipped file is checked by the tests, so a parse failure is a bug of this crate.
        Self::from_toml_str(DEFAULT_TOML, "default.toml")
            .expect("the default constitution shipped with rlaif-constitution is valid")
    }

    /// Parses a constitution in this project's TOML format (see `docs/constitution.md`);
    /// `file` names the text in error messages.
    ///
    /// # Errors
    /// [`ConstitutionError::Syntax`](crate::ConstitutionError::Syntax) (not TOML, unknown or
    /// missing field, wrong type) or [`ConstitutionError::Invalid`](crate::ConstitutionError::Invalid)
    /// (duplicate id, empty text, bad weight, exemplar shape), located by file, line and
    /// column.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self> {
        loader::parse_text(text, file, toml_format::parse)
    }

    /// Reads and parses a TOML constitution file.
    ///
    /// # Errors
    /// [`ConstitutionError::Io`](crate::ConstitutionError::Io) if the file cannot be read; a
    /// located [`ConstitutionError::Syntax`](crate::ConstitutionError::Syntax) at the first
    /// byte that is not UTF-8; otherwise as [`Self::from_toml_str`].
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        loader::load_files([(path.as_ref(), toml_format::parse as Parser)])
    }

    /// Parses the text of one of the paper's JSON files (`file` names it in error messages):
    /// a constitution with only that file's section filled (see [`PaperFiles`] for the
    /// shapes).
    ///
    /// # Errors
    /// Located [`ConstitutionError::Syntax`](crate::ConstitutionError::Syntax) (invalid JSON,
    /// unknown or missing field, wrong type) or
    /// [`ConstitutionError::Invalid`](crate::ConstitutionError::Invalid) (duplicate key, empty
    /// text, a `prompt` list without exactly one string, turns or rounds out of order).
    pub fn from_paper_str(kind: PaperFile, text: &str, file: &str) -> Result<Self> {
        loader::parse_text(text, file, kind.parser())
    }

    /// Loads the JSON files published with the paper (any of them may be absent).
    ///
    /// # Errors
    /// [`ConstitutionError::Io`](crate::ConstitutionError::Io) if a given file cannot be read;
    /// otherwise as [`Self::from_paper_str`], naming the file.
    pub fn from_paper_files(files: &PaperFiles) -> Result<Self> {
        loader::load_files(
            PaperFile::ALL
                .into_iter()
                .filter_map(|kind| Some((files.path(kind)?, kind.parser()))),
        )
    }

    /// Loads the paper's files from a directory holding them under their published names
    /// (the repository's `prompts/` folder); missing files are skipped.
    ///
    /// # Errors
    /// As [`Self::from_paper_files`].
    pub fn from_paper_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_paper_files(&PaperFiles::in_dir(dir.as_ref()))
    }

    /// The critique principle with this id.
    pub fn principle(&self, id: &str) -> Option<&CritiquePrinciple> {
        self.principles.iter().find(|p| p.id == id)
    }

    /// The comparison principle with this id.
    pub fn comparison(&self, id: &str) -> Option<&ComparisonPrinciple> {
        self.comparisons.iter().find(|p| p.id == id)
    }

    /// `(id, weight)` of every critique principle, for [`crate::PrincipleSampler::new`].
    pub fn principle_weights(&self) -> Vec<(String, f64)> {
        self.principles
            .iter()
            .map(|p| (p.id.clone(), p.weight))
            .collect()
    }

    /// `(id, weight)` of every comparison principle, for [`crate::PrincipleSampler::new`].
    pub fn comparison_weights(&self) -> Vec<(String, f64)> {
        self.comparisons
            .iter()
            .map(|p| (p.id.clone(), p.weight))
            .collect()
    }
}

/// Checks that `roles` alternate user / assistant, start with the user and end with
/// `last`. On failure: the index of the offending turn (`roles.len()` when the problem is
/// the end) and a message.
pub(crate) fn check_turn_order(
    roles: &[rlaif_core::Role],
    last: rlaif_core::Role,
) -> std::result::Result<(), (usize, String)> {
    use rlaif_core::Role;
    if roles.is_empty() {
        return Err((0, "the conversation has no turns".into()));
    }
    for (i, &role) in roles.iter().enumerate() {
        let expected = if i & 1 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if role != expected {
            return Err((
                i,
                format!(
                    "turn {} is `{}`, expected `{}` (exemplar turns alternate user / assistant, \
                     starting with the user)",
                    i + 1,
                    role.as_str(),
                    expected.as_str()
                ),
            ));
        }
    }
    if roles[roles.len() - 1] != last {
        return Err((
            roles.len() - 1,
            format!("the last turn must be `{}`", last.as_str()),
        ));
    }
    Ok(())
}
