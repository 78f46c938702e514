//! This project's TOML format for constitutions (documented in `docs/constitution.md`).
//!
//! ```toml
//! [[principle]]
//! id = "harm"
//! critique = "Identify ways in which the assistant's last response is harmful."
//! revision = "Rewrite the assistant's response to remove the harmful content."
//! weight = 1.0                      # optional, default 1
//!
//! [[comparison]]
//! id = "less-harmful"
//! question = "Which of these assistant responses is less harmful?"
//!
//! [[critique_exemplar]]
//! id = "ex-1"
//! [[critique_exemplar.turn]]
//! role = "user"
//! content = "..."
//! [[critique_exemplar.turn]]
//! role = "assistant"
//! content = "..."
//! [[critique_exemplar.round]]
//! critique_request = "..."
//! critique = "..."
//! revision_request = "..."
//! revision = "..."
//!
//! [[comparison_exemplar]]
//! id = "cmp-1"
//! chosen = "..."
//! rejected = "..."
//! [[comparison_exemplar.turn]]
//! role = "user"
//! content = "..."
//! ```
//!
//! Unknown fields, duplicate ids, empty texts and non-positive or non-finite weights are
//! errors that name the file, line and column.

use crate::constitution::{
    ComparisonExemplar, ComparisonPrinciple, Constitution, CritiqueExemplar, CritiquePrinciple,
    CritiqueRound, check_turn_order,
};
use crate::error::{ConstitutionError, Problem, Result};
use crate::loader::{Ids, Source};
use rlaif_core::{Conversation, Message, Role};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    principle: Vec<RawPrinciple>,
    #[serde(default)]
    comparison: Vec<RawComparison>,
    #[serde(default)]
    critique_exemplar: Vec<RawCritiqueExemplar>,
    #[serde(default)]
    comparison_exemplar: Vec<RawComparisonExemplar>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrinciple {
    id: Spanned<String>,
    critique: Spanned<String>,
    revision: Spanned<String>,
    weight: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComparison {
    id: Spanned<String>,
    question: Spanned<String>,
    weight: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    role: Spanned<Role>,
    content: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRound {
    critique_request: Spanned<String>,
    critique: Spanned<String>,
    revision_request: Spanned<String>,
    revision: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCritiqueExemplar {
    id: Spanned<String>,
    #[serde(default)]
    turn: Vec<RawTurn>,
    #[serde(default)]
    round: Vec<RawRound>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComparisonExemplar {
    id: Spanned<String>,
    question: Option<Spanned<String>>,
    chosen: Spanned<String>,
    rejected: Spanned<String>,
    #[serde(default)]
    turn: Vec<RawTurn>,
}

/// Parses a TOML constitution (the [`Parser`](crate::loader::Parser) of this format).
pub(crate) fn parse(src: &Source<'_>) -> Result<Constitution> {
    let raw: RawFile = toml::from_str(src.text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        src.syntax(at, e.message().trim())
    })?;
    let cx = Checker { src };

    let mut ids = Ids::default();
    let mut principles = Vec::with_capacity(raw.principle.len());
    for p in raw.principle {
        principles.push(CritiquePrinciple {
            id: cx.id(&mut ids, &p.id)?,
            critique: cx.text("critique", &p.critique)?,
            revision: cx.text("revision", &p.revision)?,
            weight: cx.weight(p.weight.as_ref())?,
        });
    }

    let mut ids = Ids::default();
    let mut comparisons = Vec::with_capacity(raw.comparison.len());
    for c in raw.comparison {
        comparisons.push(ComparisonPrinciple {
            id: cx.id(&mut ids, &c.id)?,
            question: cx.text("question", &c.question)?,
            weight: cx.weight(c.weight.as_ref())?,
        });
    }

    let mut ids = Ids::default();
    let mut critique_exemplars = Vec::with_capacity(raw.critique_exemplar.len());
    for ex in raw.critique_exemplar {
        let id = cx.id(&mut ids, &ex.id)?;
        let conversation = cx.conversation(&ex.id, &ex.turn, Role::Assistant)?;
        if ex.round.is_empty() {
            return Err(cx.invalid(
                &ex.id,
                Problem::Shape(format!(
                    "critique exemplar `{id}` has no [[critique_exemplar.round]]"
                )),
            ));
        }
        let mut rounds = Vec::with_capacity(ex.round.len());
        for r in &ex.round {
            rounds.push(CritiqueRound {
                critique_request: cx.text("critique_request", &r.critique_request)?,
                critique: cx.text("critique", &r.critique)?,
                revision_request: cx.text("revision_request", &r.revision_request)?,
                revision: cx.text("revision", &r.revision)?,
            });
        }
        critique_exemplars.push(CritiqueExemplar {
            id,
            conversation,
            rounds,
        });
    }

    let mut ids = Ids::default();
    let mut comparison_exemplars = Vec::with_capacity(raw.comparison_exemplar.len());
    for ex in raw.comparison_exemplar {
        comparison_exemplars.push(ComparisonExemplar {
            id: cx.id(&mut ids, &ex.id)?,
            question: ex
                .question
                .as_ref()
                .map(|q| cx.text("question", q))
                .transpose()?,
            conversation: cx.conversation(&ex.id, &ex.turn, Role::User)?,
            chosen: cx.text("chosen", &ex.chosen)?,
            rejected: cx.text("rejected", &ex.rejected)?,
        });
    }

    Ok(Constitution {
        principles,
        comparisons,
        critique_exemplars,
        comparison_exemplars,
    })
}

/// The checks of one file's items, located through its [`Source`].
struct Checker<'s, 'a> {
    src: &'s Source<'a>,
}

impl Checker<'_, '_> {
    fn invalid<T>(&self, at: &Spanned<T>, problem: Problem) -> ConstitutionError {
        self.src.invalid(at.span().start, problem)
    }

    fn text(&self, field: &str, s: &Spanned<String>) -> Result<String> {
        self.src.non_empty(field, s.get_ref(), s.span().start)?;
        Ok(s.get_ref().clone())
    }

    fn id(&self, seen: &mut Ids, id: &Spanned<String>) -> Result<String> {
        let text = self.text("id", id)?;
        seen.insert(self.src, &text, id.span().start)?;
        Ok(text)
    }

    fn weight(&self, w: Option<&Spanned<f64>>) -> Result<f64> {
        match w {
            None => Ok(1.0),
            Some(w) if w.get_ref().is_finite() && *w.get_ref() > 0.0 => Ok(*w.get_ref()),
            Some(w) => Err(self.invalid(
                w,
                Problem::BadWeight {
                    weight: *w.get_ref(),
                },
            )),
        }
    }

    fn conversation(
        &self,
        id: &Spanned<String>,
        turns: &[RawTurn],
        last: Role,
    ) -> Result<Conversation> {
        let roles: Vec<Role> = turns.iter().map(|t| *t.role.get_ref()).collect();
        if let Err((i, message)) = check_turn_order(&roles, last) {
            return Err(match turns.get(i) {
                Some(t) => self.invalid(&t.role, Problem::Shape(message)),
                None => self.invalid(id, Problem::Shape(message)),
            });
        }
        let mut messages = Vec::with_capacity(turns.len());
        for t in turns {
            messages.push(Message::new(
                *t.role.get_ref(),
                self.text("content", &t.content)?,
            ));
        }
        Ok(Conversation { messages })
    }
}
