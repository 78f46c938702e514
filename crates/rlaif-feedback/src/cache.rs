//! [`CachedScorer`]: a scorer that remembers each choice's log-probability, for sweeps over
//! labelling methods on one pair file and for judges that meet the same answer in several
//! pairs.

use rlaif_core::{ChoiceScorer, Prompt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Wraps a [`ChoiceScorer`] and answers from memory the log-probability of a choice after a
/// prompt it has scored before. A choice's log-probability does not depend on the other
/// choices of the call ([`ChoiceScorer::choice_logprobs`] scores each as a continuation of
/// the prompt), so the cache keeps one number per (prompt, choice):
///
/// - many labelling methods share questions (one order is half of both orders; the first
///   principle of a pair is the same for 1 and for 4 principles per pair drawn without
///   replacement; calibration adds questions to the plain ones), so a sweep that labels one
///   pair file with several [`LabelConfig`](crate::LabelConfig)s through one cached scorer
///   asks the model each question once;
/// - with [`CachedScorer::with_siblings`], a judge comparing every pair of several models'
///   answers to one prompt (the contrast method reads each answer alone) scores each answer
///   once, and all of a prompt's answers in one call, so the prompt is read once: for three
///   models one call per question instead of three, and three answers instead of six.
///
/// ```
/// use rlaif_core::{ChoiceScorer, Prompt};
/// use rlaif_feedback::CachedScorer;
///
/// struct Flat;
/// impl ChoiceScorer for Flat {
///     fn choice_logprobs(&self, _: &Prompt, c: &[String]) -> rlaif_core::Result<Vec<f64>> {
///         Ok(vec![-0.7; c.len()])
///     }
/// }
/// let cached = CachedScorer::new(&Flat);
/// let choices = ["(A)".to_string(), "(B)".to_string()];
/// cached.choice_logprobs(&Prompt::from("q"), &choices)?;
/// cached.choice_logprobs(&Prompt::from("q"), &choices)?;
/// assert_eq!((cached.misses(), cached.hits()), (1, 1));
/// # Ok::<(), rlaif_core::Error>(())
/// ```
pub struct CachedScorer<'a> {
    inner: &'a dyn ChoiceScorer,
    /// (prompt as JSON, choice) → log-probability.
    cache: Mutex<HashMap<(String, String), f64>>,
    /// Sibling groups, and for each text (leading whitespace removed) the groups it is in.
    groups: Vec<Vec<String>>,
    group_of: HashMap<String, Vec<usize>>,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

impl<'a> CachedScorer<'a> {
    /// An empty cache in front of `inner`.
    pub fn new(inner: &'a dyn ChoiceScorer) -> Self {
        Self {
            inner,
            cache: Mutex::new(HashMap::new()),
            groups: Vec::new(),
            group_of: HashMap::new(),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        }
    }

    /// Declares groups of texts that are asked about after the same prompts (the answers of
    /// several models to one prompt): when a choice in a group has to be scored, the
    /// group's other texts not yet in the cache are scored in the same call, after the same
    /// prompt. A choice matches a group's text when they are equal after their leading
    /// whitespace, and a sibling is scored with the choice's leading whitespace (a raw-format
    /// question puts a space before each answer). Scoring a sibling that is never asked
    /// about costs time, never correctness.
    pub fn with_siblings<G, S>(mut self, groups: G) -> Self
    where
        G: IntoIterator<Item = Vec<S>>,
        S: Into<String>,
    {
        for g in groups {
            let mut texts: Vec<String> = Vec::new();
            for t in g {
                let t: String = t.into();
                let t = t.trim_start().to_string();
                if !texts.contains(&t) {
                    texts.push(t);
                }
            }
            if texts.len() < 2 {
                continue;
            }
            let i = self.groups.len();
            for t in &texts {
                self.group_of.entry(t.clone()).or_default().push(i);
            }
            self.groups.push(texts);
        }
        self
    }

    /// Questions answered from memory.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Calls passed to the wrapped scorer.
    pub fn misses(&self) -> usize {
        self.misses.load(Ordering::Relaxed)
    }

    /// `choice` and, after it, its siblings with its leading whitespace, that are not in
    /// `known`.
    fn with_its_siblings(&self, choice: &str, known: impl Fn(&str) -> bool, out: &mut Vec<String>) {
        if !out.iter().any(|c| c == choice) {
            out.push(choice.to_string());
        }
        let body = choice.trim_start();
        let lead = &choice[..choice.len() - body.len()];
        for &g in self.group_of.get(body).into_iter().flatten() {
            for t in &self.groups[g] {
                let sibling = format!("{lead}{t}");
                if !known(&sibling) && !out.contains(&sibling) {
                    out.push(sibling);
                }
            }
        }
    }
}

impl ChoiceScorer for CachedScorer<'_> {
    fn choice_logprobs(&self, prompt: &Prompt, choices: &[String]) -> rlaif_core::Result<Vec<f64>> {
        let key = serde_json::to_string(prompt)
            .map_err(|e| rlaif_core::Error::InvalidRequest(e.to_string()))?;
        let lookup = |cache: &HashMap<(String, String), f64>| -> Option<Vec<f64>> {
            choices
                .iter()
                .map(|c| cache.get(&(key.clone(), c.clone())).copied())
                .collect()
        };
        let ask = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = lookup(&cache) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(v);
            }
            let known = |c: &str| cache.contains_key(&(key.clone(), c.to_string()));
            let mut ask = Vec::new();
            for c in choices.iter().filter(|c| !known(c)) {
                self.with_its_siblings(c, known, &mut ask);
            }
            ask
        };
        let v = self.inner.choice_logprobs(prompt, &ask)?;
        if v.len() != ask.len() {
            return Err(rlaif_core::Error::InvalidRequest(format!(
                "the scorer returned {} log-probabilities for {} choices",
                v.len(),
                ask.len()
            )));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (c, lp) in ask.into_iter().zip(v) {
            cache.insert((key.clone(), c), lp);
        }
        lookup(&cache).ok_or_else(|| {
            rlaif_core::Error::InvalidRequest("a scored choice is missing from the cache".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Log-probability = −(length of the choice); records every call's choices.
    struct Lengths(Mutex<Vec<Vec<String>>>);
    impl ChoiceScorer for Lengths {
        fn choice_logprobs(&self, _: &Prompt, c: &[String]) -> rlaif_core::Result<Vec<f64>> {
            self.0.lock().unwrap().push(c.to_vec());
            Ok(c.iter().map(|c| -(c.len() as f64)).collect())
        }
    }

    fn s(x: &[&str]) -> Vec<String> {
        x.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_choice_is_scored_once_per_prompt_whatever_it_is_paired_with() {
        let inner = Lengths(Mutex::new(vec![]));
        let cached = CachedScorer::new(&inner);
        let (p, q) = (Prompt::from("p"), Prompt::from("q"));
        assert_eq!(
            cached.choice_logprobs(&p, &s(&["a", "bb"])).unwrap(),
            [-1.0, -2.0]
        );
        assert_eq!(
            cached.choice_logprobs(&p, &s(&["bb", "ccc"])).unwrap(),
            [-2.0, -3.0]
        );
        assert_eq!(
            cached.choice_logprobs(&p, &s(&["ccc", "a"])).unwrap(),
            [-3.0, -1.0]
        );
        // Another prompt is another question.
        assert_eq!(cached.choice_logprobs(&q, &s(&["a"])).unwrap(), [-1.0]);
        let calls = inner.0.lock().unwrap().clone();
        assert_eq!(calls, vec![s(&["a", "bb"]), s(&["ccc"]), s(&["a"])]);
        assert_eq!((cached.misses(), cached.hits()), (3, 1));
    }

    #[test]
    fn siblings_are_scored_in_the_call_that_first_needs_one_of_them() {
        let inner = Lengths(Mutex::new(vec![]));
        let cached = CachedScorer::new(&inner)
            .with_siblings([s(&["base", "sl answer", "rl answer"]), s(&["x", "y"])]);
        let p = Prompt::from("p");
        // Three models' answers, compared in pairs, after a raw prompt (leading space).
        for (a, b) in [
            ("base", "sl answer"),
            ("base", "rl answer"),
            ("sl answer", "rl answer"),
        ] {
            let got = cached
                .choice_logprobs(&p, &[format!(" {a}"), format!(" {b}")])
                .unwrap();
            assert_eq!(got, [-(a.len() as f64 + 1.0), -(b.len() as f64 + 1.0)]);
        }
        let calls = inner.0.lock().unwrap().clone();
        assert_eq!(calls, vec![s(&[" base", " sl answer", " rl answer"])]);
        assert_eq!((cached.misses(), cached.hits()), (1, 2));
        // A text outside every group is scored alone.
        cached.choice_logprobs(&p, &s(&["z"])).unwrap();
        assert_eq!(inner.0.lock().unwrap().last().unwrap(), &s(&["z"]));
    }

    #[test]
    fn a_scorer_that_returns_the_wrong_number_of_choices_is_an_error() {
        struct One;
        impl ChoiceScorer for One {
            fn choice_logprobs(&self, _: &Prompt, _: &[String]) -> rlaif_core::Result<Vec<f64>> {
                Ok(vec![0.0])
            }
        }
        let cached = CachedScorer::new(&One);
        let e = cached
            .choice_logprobs(&Prompt::from("p"), &s(&["a", "b"]))
            .unwrap_err();
        assert!(
            e.to_string().contains("1 log-probabilities for 2 choices"),
            "{e}"
        );
    }
}
