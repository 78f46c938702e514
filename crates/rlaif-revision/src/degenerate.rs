//! Detectors of degenerate outputs: empty, the request echoed back, runaway repetition.
//!
//! Texts are compared as *normalised words*: lowercased, every run of characters that are
//! not letters or digits is a separator.
//!
//! - [`DegenerateKind::Empty`]: the text has no letter or digit (empty, whitespace,
//!   punctuation only).
//! - [`DegenerateKind::Echo`]: the output repeats one of its references (the user prompt,
//!   the critique or revision request) instead of answering: its normalised words equal
//!   the reference's, or it has at least [`ECHO_MIN_WORDS`] words and at least
//!   [`ECHO_FRACTION`] of its word trigrams occur in one reference. Shorter outputs of at
//!   least [`ECHO_MIN_CONTAINED_WORDS`] words are an echo when they are contained in a
//!   reference (as a word sequence).
//! - [`DegenerateKind::Repetition`]: the output loops: with at least
//!   [`REPETITION_MIN_WORDS`] words, at least [`REPETITION_FRACTION`] of its word trigrams
//!   are repeats of an earlier trigram; or, for texts of at least [`REPETITION_MIN_CHARS`]
//!   characters (catching loops without spaces), at least [`REPETITION_FRACTION_CHARS`] of
//!   the character 4-grams are repeats. Ordinary prose of a few hundred words repeats
//!   well under a quarter of its word trigrams and about half of its character 4-grams.
//!
//! ```
//! use rlaif_revision::degenerate::{detect, DegenerateKind};
//!
//! let request = "Rewrite the reply so that it causes no harm.";
//! assert_eq!(detect("  ", &[request]), Some(DegenerateKind::Empty));
//! assert_eq!(detect("Rewrite the reply so that it causes no harm!", &[request]), Some(DegenerateKind::Echo));
//! assert_eq!(detect(&"I am sorry. ".repeat(20), &[request]), Some(DegenerateKind::Repetition));
//! assert_eq!(detect("I can't help with that, but here is a safer idea.", &[request]), None);
//! ```

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Outputs of at least this many words are an echo when [`ECHO_FRACTION`] of their word
/// trigrams come from a reference.
pub const ECHO_MIN_WORDS: usize = 6;
/// Outputs shorter than [`ECHO_MIN_WORDS`] are an echo when they have at least this many
/// words and appear in a reference as a word sequence (a one- or two-word answer such as
/// "No." is never an echo unless it is the whole reference).
pub const ECHO_MIN_CONTAINED_WORDS: usize = 3;
/// Share of an output's word trigrams found in a reference that makes it an echo.
pub const ECHO_FRACTION: f64 = 0.8;
/// Outputs of at least this many words are checked for repeated word trigrams.
pub const REPETITION_MIN_WORDS: usize = 16;
/// Share of repeated word trigrams that makes an output runaway repetition.
pub const REPETITION_FRACTION: f64 = 0.5;
/// Outputs of at least this many characters are checked for repeated character 4-grams.
pub const REPETITION_MIN_CHARS: usize = 64;
/// Share of repeated character 4-grams that makes an output runaway repetition.
pub const REPETITION_FRACTION_CHARS: f64 = 0.85;

/// Why an output was judged degenerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegenerateKind {
    /// No letter or digit.
    Empty,
    /// The request or the prompt repeated back.
    Echo,
    /// Runaway repetition.
    Repetition,
}

impl DegenerateKind {
    /// The snake_case name (`"empty"`, `"echo"`, `"repetition"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DegenerateKind::Empty => "empty",
            DegenerateKind::Echo => "echo",
            DegenerateKind::Repetition => "repetition",
        }
    }
}

/// The first degenerate kind that applies to `text` (checked in the order empty, echo,
/// repetition), with `references` the texts it must not echo.
pub fn detect(text: &str, references: &[&str]) -> Option<DegenerateKind> {
    let words = normalised_words(text);
    if words.is_empty() {
        return Some(DegenerateKind::Empty);
    }
    if references
        .iter()
        .any(|r| is_echo(&words, &normalised_words(r)))
    {
        return Some(DegenerateKind::Echo);
    }
    if is_repetition(text, &words) {
        return Some(DegenerateKind::Repetition);
    }
    None
}

/// Lowercased runs of letters and digits.
pub fn normalised_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn is_echo(words: &[String], reference: &[String]) -> bool {
    if reference.is_empty() {
        return false;
    }
    if words == reference {
        return true;
    }
    if words.len() < ECHO_MIN_WORDS {
        return words.len() >= ECHO_MIN_CONTAINED_WORDS
            && words.len() <= reference.len()
            && reference.windows(words.len()).any(|w| w == words);
    }
    let refs: HashSet<&[String]> = reference.windows(3).collect();
    let grams: Vec<&[String]> = words.windows(3).collect();
    let shared = grams.iter().filter(|g| refs.contains(*g)).count();
    shared as f64 >= ECHO_FRACTION * grams.len() as f64
}

fn repeated_fraction<T: Eq + std::hash::Hash>(grams: impl Iterator<Item = T>) -> f64 {
    let mut seen = HashSet::new();
    let (mut total, mut repeats) = (0usize, 0usize);
    for g in grams {
        total += 1;
        if !seen.insert(g) {
            repeats += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        repeats as f64 / total as f64
    }
}

fn is_repetition(text: &str, words: &[String]) -> bool {
    if words.len() >= REPETITION_MIN_WORDS
        && repeated_fraction(words.windows(3)) >= REPETITION_FRACTION
    {
        return true;
    }
    let chars: Vec<char> = text.trim().chars().collect();
    chars.len() >= REPETITION_MIN_CHARS
        && repeated_fraction(chars.windows(4)) >= REPETITION_FRACTION_CHARS
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "How can I get into my neighbour's wifi without the password?";
    const REQUEST: &str = "Rewrite the assistant's reply so that it causes no harm, while still helping with any legitimate part of the request.";

    #[test]
    fn empty_positive_and_negative() {
        for t in ["", "   \n\t", "...!!!", " - "] {
            assert_eq!(detect(t, &[PROMPT]), Some(DegenerateKind::Empty), "{t:?}");
        }
        assert_eq!(detect("No.", &[PROMPT]), None);
        assert_eq!(detect("42", &[PROMPT]), None);
    }

    #[test]
    fn echo_positive() {
        let cases = [
            PROMPT.to_string(),
            PROMPT.to_uppercase(),
            format!("  {PROMPT}  "),
            "Rewrite the assistant's reply so that it causes no harm, while still helping".into(),
            "neighbour's wifi".into(),
        ];
        for t in cases {
            assert_eq!(
                detect(&t, &[PROMPT, REQUEST]),
                Some(DegenerateKind::Echo),
                "{t:?}"
            );
        }
    }

    #[test]
    fn echo_negative() {
        let cases = [
            "I can't help you get into someone else's network without permission, but you could ask your neighbour to share the password.",
            "The reply explains how to get into a wifi network without the password, which could help someone break the law.",
            "Sure.",
            "wifi password reset",
            "No.",
            "No harm.",
        ];
        for t in cases {
            assert_eq!(detect(t, &[PROMPT, REQUEST]), None, "{t:?}");
        }
    }

    #[test]
    fn repetition_positive() {
        let cases = [
            "I'm sorry, I can't help with that. ".repeat(10),
            format!(
                "Here is an idea: {}",
                "and then and then and then ".repeat(8)
            ),
            "ha".repeat(60),
            "=-".repeat(50) + " ok",
        ];
        for t in cases {
            assert_eq!(
                detect(&t, &[PROMPT]),
                Some(DegenerateKind::Repetition),
                "{t:?}"
            );
        }
    }

    #[test]
    fn repetition_negative() {
        let cases = [
            "Bread needs flour, water, salt and yeast. Mix them, knead for ten minutes, let the dough rise for an hour, shape it, let it rise again and bake it at 230 degrees for about thirty minutes, until the crust is brown and the loaf sounds hollow when tapped.",
            "Step 1: mix the flour and the water. Step 2: add the salt and the yeast. Step 3: knead the dough. Step 4: let the dough rest. Step 5: bake the dough.",
            "I'm sorry, I can't help with that. I'm sorry if that is disappointing, but I can help with something else.",
        ];
        for t in cases {
            assert_eq!(detect(t, &[PROMPT]), None, "{t:?}");
        }
    }

    #[test]
    fn kinds_have_snake_case_names() {
        assert_eq!(
            serde_json::to_string(&DegenerateKind::Repetition).unwrap(),
            "\"repetition\""
        );
        assert_eq!(DegenerateKind::Echo.as_str(), "echo");
    }
}
