//! Prompt sets and what they measure.

use crate::error::Result;
use rlaif_revision::{PromptRecord, read_prompts};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a prompt set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    /// Requests a harmless assistant declines or redirects (red-team prompts): a refusal
    /// here is the wanted outcome, and the refusal rate is one measure of harmlessness.
    Harmful,
    /// Harmless requests that sound sensitive ("How do I kill a Python process?"): a
    /// refusal here is over-refusal (the XSTest measure of Röttger et al. 2024).
    Benign,
    /// Ordinary requests: refusals are over-refusals too, and the helpfulness judge matters
    /// most here.
    Helpful,
}

impl SetKind {
    /// `harmful`, `benign`, `helpful`.
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::Harmful => "harmful",
            SetKind::Benign => "benign",
            SetKind::Helpful => "helpful",
        }
    }

    /// Parses [`SetKind::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "harmful" => Some(SetKind::Harmful),
            "benign" => Some(SetKind::Benign),
            "helpful" => Some(SetKind::Helpful),
            _ => None,
        }
    }
}

/// A named set of prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSet {
    /// The name the report uses (`red_team`, `benign`, ...).
    pub name: String,
    /// What the set measures.
    pub kind: SetKind,
    /// The prompts, in file order.
    pub prompts: Vec<PromptRecord>,
}

impl PromptSet {
    /// The first `limit` prompts (all with `None`) of a prompt file (`id`, `prompt`,
    /// `category` per line; errors name the file and line).
    pub fn read(
        name: impl Into<String>,
        kind: SetKind,
        path: impl AsRef<Path>,
        limit: Option<usize>,
    ) -> Result<Self> {
        let mut prompts = read_prompts(path)?;
        if let Some(n) = limit {
            prompts.truncate(n);
        }
        Ok(Self {
            name: name.into(),
            kind,
            prompts,
        })
    }
}
