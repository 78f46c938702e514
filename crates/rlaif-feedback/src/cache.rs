//! [`CachedScorer`]: a scorer that remembers its answers, for sweeps over labelling
//! methods on one pair file.

use rlaif_core::{ChoiceScorer, Prompt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Wraps a [`ChoiceScorer`] and answers a question asked before (the same prompt and
/// choices) from memory. Many labelling methods share questions (one order is half of both
/// orders; the first principle of a pair is the same for 1 and for 4 principles per pair
/// drawn without replacement; calibration adds questions to the plain ones), so a sweep
/// that labels one pair file with several [`LabelConfig`](crate::LabelConfig)s through one
/// cached scorer asks the model each question once.
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
    cache: Mutex<HashMap<String, Vec<f64>>>,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

impl<'a> CachedScorer<'a> {
    /// An empty cache in front of `inner`.
    pub fn new(inner: &'a dyn ChoiceScorer) -> Self {
        Self {
            inner,
            cache: Mutex::new(HashMap::new()),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        }
    }

    /// Questions answered from memory.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Questions passed to the wrapped scorer.
    pub fn misses(&self) -> usize {
        self.misses.load(Ordering::Relaxed)
    }
}

impl ChoiceScorer for CachedScorer<'_> {
    fn choice_logprobs(&self, prompt: &Prompt, choices: &[String]) -> rlaif_core::Result<Vec<f64>> {
        let key = serde_json::to_string(&(prompt, choices))
            .map_err(|e| rlaif_core::Error::InvalidRequest(e.to_string()))?;
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v.clone());
        }
        let v = self.inner.choice_logprobs(prompt, choices)?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, v.clone());
        Ok(v)
    }
}
