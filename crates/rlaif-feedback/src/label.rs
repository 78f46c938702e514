//! Labelling one pair: the questions, the scores, the soft label, the record.
//!
//! # The soft label
//!
//! For each of the pair's principles `j` (drawn with stream `id_hash(id)` of the seeded
//! comparison-principle sampler, so a pair's principles do not depend on the file around
//! it):
//!
//! - **pairwise**: each asked order `o` (`ab`: A at option (A); `ba`: B at option (A)) gives
//!   the log-probabilities `l` of the two options and `P(first) = softmax(l)₀`; with
//!   calibration, `P(first) = σ((l₀ − l₁) − (π₀ − π₁))` where `π` are the log-probabilities
//!   of the content-free question (both responses [`CONTENT_FREE`]),
//!   i.e. `p ∝ p_raw / p_prior`; with chain of thought, each reasoning sample's `P(first)`
//!   is clamped into `cot_clamp`. The label of a query is `P(A better) = P(first)` for `ab`
//!   and `1 − P(first)` for `ba`; the principle's label `p_a_by_principle[j]` is the mean
//!   over its orders and reasoning samples.
//! - **pointwise**: each response gets `q = P(good answer)` from the yes/no question (with
//!   calibration: divided by the prior of the same question about the reply
//!   [`CONTENT_FREE`]), and `p_a_by_principle[j] = σ(logit q_a
//!   − logit q_b)` or `q_a / (q_a + q_b)`.
//!
//! - **contrast**: each response `x` is scored as the assistant's turn after the good and
//!   the bad system prompt, `logprobs = [log p(x | good), log p(x | bad)]`, `q = σ(l₀ −
//!   l₁)`, combined as in the pointwise method; no principle is drawn
//!   (`principles` is empty and `p_a_by_principle` holds the one label).
//!
//! `p_a` is the mean of `p_a_by_principle`. With both orders, `p_a_by_order` holds the
//! mean label of each order (so `p_a = (ab + ba) / 2`, i.e. `(P(A|AB) + 1 − P(B first|BA))
//! / 2`).

use crate::config::{LabelConfig, Method, PointwiseCombine};
use crate::error::{FeedbackError, Result};
use crate::math::{
    calibrated_first, clamp, logit, mean, sigmoid, softmax_first, truncate_words, word_count,
};
use crate::output::HasId;
use crate::pair::{LABEL_FIELDS, Pair, PairPrompt, Side, TrlResponse};
use crate::prompts::{self, CONTENT_FREE};
use rlaif_constitution::{
    ComparisonPrinciple, ComparisonPrompt, Constitution, PrincipleSampler, Replacement,
};
use rlaif_core::seed::derive_seed;
use rlaif_core::{ChoiceScorer, Generator, Prompt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cell::Cell;

/// What one query asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Pairwise, response A at option (A).
    Ab,
    /// Pairwise, response B at option (A).
    Ba,
    /// Pointwise or contrast, response A.
    A,
    /// Pointwise or contrast, response B.
    B,
}

/// One question put to the scorer, and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The comparison principle's id.
    pub principle: String,
    /// The order (pairwise) or the response (pointwise) asked about.
    pub target: Target,
    /// The reasoning sample (chain of thought), from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<usize>,
    /// The reasoning written before the answer (chain of thought).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// The log-probabilities of the two choices, in order: `(A)`, `(B)` (pairwise),
    /// `Yes`, `No` (pointwise), or of the response after the good and after the bad system
    /// prompt (contrast).
    pub logprobs: [f64; 2],
    /// The log-probabilities of the same choices after the content-free input
    /// (calibration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<[f64; 2]>,
    /// The probability of the first choice, `softmax(logprobs)₀`, before calibration and
    /// clamping.
    pub p_raw: f64,
    /// After calibration and clamping: `P(first option)` for `ab` / `ba`, `P(good answer)`
    /// (pointwise) or `P(good assistant)` (contrast) for `a` / `b`.
    pub p: f64,
}

impl Query {
    /// This query's `P(A better)` (pairwise queries only).
    pub fn p_a(&self) -> Option<f64> {
        match self.target {
            Target::Ab => Some(self.p),
            Target::Ba => Some(1.0 - self.p),
            Target::A | Target::B => None,
        }
    }
}

/// The mean label of each order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrderLabels {
    /// `P(A better)` asked with A first.
    pub ab: f64,
    /// `P(A better)` asked with B first (`1 − P(first)`).
    pub ba: f64,
}

/// One labelled pair: a line of `comparisons.jsonl` (see the crate docs for the format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRecord {
    /// The pair id.
    pub id: String,
    /// The input's other fields (`category`, `length`, `kind`, `generation`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The prompt as given (TRL `prompt`).
    pub prompt: PairPrompt,
    /// The response with `p ≥ ½` (A when `p_a ≥ ½`) (TRL `chosen`).
    pub chosen: TrlResponse,
    /// The other response (TRL `rejected`).
    pub rejected: TrlResponse,
    /// Response A.
    pub response_a: String,
    /// Response B.
    pub response_b: String,
    /// The soft label: the probability that A is the better response.
    pub p_a: f64,
    /// The known better response, when the input had a preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_better: Option<Side>,
    /// The mean label of each order, when both were asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_a_by_order: Option<OrderLabels>,
    /// The ids of the principles drawn for this pair.
    pub principles: Vec<String>,
    /// The label of each principle, in the order of `principles`.
    pub p_a_by_principle: Vec<f64>,
    /// Every question asked, with its log-probabilities.
    pub queries: Vec<Query>,
    /// Words of response A.
    pub words_a: usize,
    /// Words of response B.
    pub words_b: usize,
    /// With length control: the number of words both responses were cut to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_control_words: Option<usize>,
    /// The labelling settings ([`LabelConfig::settings`]).
    pub settings: Map<String, Value>,
    /// The [`comparison_fingerprint`] of the constitution.
    pub constitution: String,
}

impl HasId for LabelRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl LabelRecord {
    /// The response of side `side`.
    pub fn response(&self, side: Side) -> &str {
        match side {
            Side::A => &self.response_a,
            Side::B => &self.response_b,
        }
    }

    /// The side the label prefers (A when `p_a ≥ ½`).
    pub fn preferred(&self) -> Side {
        if self.p_a >= 0.5 { Side::A } else { Side::B }
    }

    /// The label's probability of the known better response, when there is one.
    pub fn p_known_better(&self) -> Option<f64> {
        self.known_better.map(|s| match s {
            Side::A => self.p_a,
            Side::B => 1.0 - self.p_a,
        })
    }

    /// An extra field as a string (e.g. `length`, `category`, `kind`).
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }
}

/// The names a label record writes itself; extra fields of these names are not carried.
const RECORD_FIELDS: [&str; 5] = ["id", "prompt", "response_a", "response_b", "known_better"];

/// A fingerprint of what of `constitution` shapes the labels: the comparison principles
/// (ids, questions and weights, in order) and the comparison exemplars (questions,
/// conversations, chosen and rejected texts, in order; not their ids). 16 hexadecimal
/// digits (64-bit FNV-1a), stored in every label record as `constitution` and checked on
/// resume.
pub fn comparison_fingerprint(constitution: &Constitution) -> String {
    let mut h = rlaif_core::Fnv1a::default();
    h.u64(constitution.comparisons.len() as u64);
    for p in &constitution.comparisons {
        h.str(&p.id);
        h.str(&p.question);
        h.u64(p.weight.to_bits());
    }
    h.u64(constitution.comparison_exemplars.len() as u64);
    for e in &constitution.comparison_exemplars {
        h.str(e.question.as_deref().unwrap_or("\u{0}none"));
        h.u64(e.conversation.messages.len() as u64);
        for m in &e.conversation.messages {
            h.str(m.role.as_str());
            h.str(&m.content);
        }
        h.str(&e.chosen);
        h.str(&e.rejected);
    }
    h.hex()
}

/// Labels pairs one at a time with a scorer (and, for chain of thought, a generator),
/// without touching any file: the building block of [`label_pairs`](crate::label_pairs) and
/// [`label_all`](crate::label_all), and of sweeps over methods (wrap the scorer in a
/// [`CachedScorer`](crate::CachedScorer) so that the questions several methods share are
/// scored once).
pub struct Labeller<'a> {
    scorer: &'a dyn ChoiceScorer,
    generator: Option<&'a dyn Generator>,
    constitution: &'a Constitution,
    config: LabelConfig,
    sampler: PrincipleSampler,
    settings: Map<String, Value>,
    fingerprint: String,
    scorer_calls: Cell<usize>,
    generator_calls: Cell<usize>,
    tokens: Cell<usize>,
}

impl<'a> Labeller<'a> {
    /// A labeller; checks the configuration ([`LabelConfig::validate`]), that chain of
    /// thought has a generator, and that the constitution has enough comparison principles.
    pub fn new(
        scorer: &'a dyn ChoiceScorer,
        generator: Option<&'a dyn Generator>,
        constitution: &'a Constitution,
        config: &LabelConfig,
    ) -> Result<Self> {
        config.validate()?;
        if config.cot && generator.is_none() {
            return Err(FeedbackError::Config(
                "cot needs a generator to write the reasoning".into(),
            ));
        }
        let sampler = PrincipleSampler::for_comparisons(constitution, config.seed)?;
        if config.principle_replacement == Replacement::Without
            && config.principles_per_pair > sampler.ids().len()
        {
            return Err(FeedbackError::Config(format!(
                "principles_per_pair is {} but the constitution has {} comparison principles \
                 (draw with replacement, or ask for fewer)",
                config.principles_per_pair,
                sampler.ids().len()
            )));
        }
        Ok(Self {
            scorer,
            generator,
            constitution,
            config: config.clone(),
            sampler,
            settings: config.settings(),
            fingerprint: comparison_fingerprint(constitution),
            scorer_calls: Cell::new(0),
            generator_calls: Cell::new(0),
            tokens: Cell::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LabelConfig {
        &self.config
    }

    /// The settings stored in every record.
    pub fn settings(&self) -> &Map<String, Value> {
        &self.settings
    }

    /// The constitution's [`comparison_fingerprint`].
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Scorer calls made so far.
    pub fn scorer_calls(&self) -> usize {
        self.scorer_calls.get()
    }

    /// Generator calls made so far (chain of thought).
    pub fn generator_calls(&self) -> usize {
        self.generator_calls.get()
    }

    /// Tokens generated so far (chain of thought).
    pub fn tokens(&self) -> usize {
        self.tokens.get()
    }

    /// The principles drawn for the pair `id`.
    pub fn principles(&self, id: &str) -> Result<Vec<&'a ComparisonPrinciple>> {
        let draws = self.sampler.draw_chain(
            crate::id_hash(id) as usize,
            self.config.principles_per_pair,
            self.config.principle_replacement,
        )?;
        draws
            .iter()
            .map(|d| {
                self.constitution
                    .comparison(&d.principle_id)
                    .ok_or_else(|| {
                        FeedbackError::Config(format!(
                            "principle `{}` drawn but not in the constitution",
                            d.principle_id
                        ))
                    })
            })
            .collect()
    }

    /// Labels one pair (see the [module docs](self) for the computation).
    pub fn label(&self, pair: &Pair) -> Result<LabelRecord> {
        let c = &self.config;
        let principles = if c.method == Method::Contrast {
            Vec::new()
        } else {
            self.principles(&pair.id)?
        };
        let (words_a, words_b) = (word_count(&pair.response_a), word_count(&pair.response_b));
        let cut = c.length_control.then(|| words_a.min(words_b));
        let (a, b) = match cut {
            Some(n) => (
                truncate_words(&pair.response_a, n),
                truncate_words(&pair.response_b, n),
            ),
            None => (pair.response_a.as_str(), pair.response_b.as_str()),
        };
        // A principle drawn twice (with replacement) is asked once and counts twice.
        let mut unique: Vec<&ComparisonPrinciple> = Vec::with_capacity(principles.len());
        for p in &principles {
            if !unique.iter().any(|u| u.id == p.id) {
                unique.push(p);
            }
        }
        let queries = match (c.method, c.cot) {
            (Method::Pairwise, false) => self.pairwise(pair, &unique, a, b)?,
            (Method::Pairwise, true) => self.pairwise_cot(pair, &unique, a, b)?,
            (Method::Pointwise, _) => self.pointwise(pair, &unique, a, b)?,
            (Method::Contrast, _) => self.contrast(pair, a, b)?,
        };
        let combine = |qa: f64, qb: f64| match c.pointwise_combine {
            PointwiseCombine::LogOdds => sigmoid(logit(qa) - logit(qb)),
            PointwiseCombine::Normalise if qa + qb > 0.0 => qa / (qa + qb),
            PointwiseCombine::Normalise => 0.5,
        };
        let mut p_a_by_principle = Vec::with_capacity(principles.len().max(1));
        if c.method == Method::Contrast {
            let q = |t| queries.iter().find(|q| q.target == t).map(|q| q.p);
            let label = q(Target::A)
                .zip(q(Target::B))
                .map(|(qa, qb)| combine(qa, qb));
            p_a_by_principle.push(label.unwrap_or(0.5));
        }
        for p in &principles {
            let mine = || queries.iter().filter(|q| q.principle == p.id);
            let label = match c.method {
                Method::Pairwise => mean(mine().filter_map(Query::p_a)),
                Method::Pointwise | Method::Contrast => {
                    let q = |t| mine().find(|q| q.target == t).map(|q| q.p);
                    q(Target::A)
                        .zip(q(Target::B))
                        .map(|(qa, qb)| combine(qa, qb))
                }
            };
            p_a_by_principle.push(label.unwrap_or(0.5));
        }
        let p_a = mean(p_a_by_principle.iter().copied()).unwrap_or(0.5);
        let p_a_by_order = c.asks_both_orders().then(|| {
            let by = |t| {
                mean(
                    queries
                        .iter()
                        .filter(|q| q.target == t)
                        .filter_map(Query::p_a),
                )
            };
            OrderLabels {
                ab: by(Target::Ab).unwrap_or(0.5),
                ba: by(Target::Ba).unwrap_or(0.5),
            }
        });
        let (chosen, rejected) = if p_a >= 0.5 {
            (&pair.response_a, &pair.response_b)
        } else {
            (&pair.response_b, &pair.response_a)
        };
        let mut extra = Map::new();
        for (k, v) in &pair.extra {
            if RECORD_FIELDS.contains(&k.as_str()) || LABEL_FIELDS.contains(&k.as_str()) {
                tracing::warn!(
                    "pair `{}`: extra field `{k}` is a label field; not carried",
                    pair.id
                );
            } else {
                extra.insert(k.clone(), v.clone());
            }
        }
        Ok(LabelRecord {
            id: pair.id.clone(),
            extra,
            chosen: TrlResponse::for_prompt(&pair.prompt, chosen),
            rejected: TrlResponse::for_prompt(&pair.prompt, rejected),
            prompt: pair.prompt.clone(),
            response_a: pair.response_a.clone(),
            response_b: pair.response_b.clone(),
            p_a,
            known_better: pair.known_better,
            p_a_by_order,
            principles: principles.iter().map(|p| p.id.clone()).collect(),
            p_a_by_principle,
            queries,
            words_a,
            words_b,
            length_control_words: cut,
            settings: self.settings.clone(),
            constitution: self.fingerprint.clone(),
        })
    }

    fn exemplars(&self) -> &'a [rlaif_constitution::ComparisonExemplar] {
        if self.config.exemplars {
            &self.constitution.comparison_exemplars
        } else {
            &[]
        }
    }

    fn orders(&self) -> &'static [Target] {
        if self.config.asks_both_orders() {
            &[Target::Ab, Target::Ba]
        } else {
            &[Target::Ab]
        }
    }

    /// The log-probabilities of the two choices of `q`, checked.
    fn score(&self, pair: &Pair, q: &ComparisonPrompt) -> Result<[f64; 2]> {
        self.score_prompt(pair, &q.prompt, &q.choices)
    }

    fn score_prompt(&self, pair: &Pair, prompt: &Prompt, choices: &[String]) -> Result<[f64; 2]> {
        let context = || format!("pair `{}`: scorer", pair.id);
        self.scorer_calls.set(self.scorer_calls.get() + 1);
        let lp = self
            .scorer
            .choice_logprobs(prompt, choices)
            .map_err(|source| FeedbackError::Model {
                context: context(),
                source,
            })?;
        let bad = |message: String| FeedbackError::BadModelOutput {
            context: context(),
            message,
        };
        let [l0, l1] = lp[..] else {
            return Err(bad(format!(
                "{} log-probabilities for {} choices",
                lp.len(),
                choices.len()
            )));
        };
        if !(l0.is_finite() && l1.is_finite()) {
            return Err(bad(format!(
                "log-probabilities must be finite numbers, got [{l0}, {l1}]"
            )));
        }
        Ok([l0, l1])
    }

    fn pairwise(
        &self,
        pair: &Pair,
        principles: &[&ComparisonPrinciple],
        a: &str,
        b: &str,
    ) -> Result<Vec<Query>> {
        let (c, ex, conv) = (&self.config, self.exemplars(), &pair.conversation);
        let mut out = Vec::new();
        for p in principles {
            let prior = if c.calibrate {
                let q =
                    prompts::pairwise(ex, conv, &p.question, CONTENT_FREE, CONTENT_FREE, c.format)?;
                Some(self.score(pair, &q)?)
            } else {
                None
            };
            for &target in self.orders() {
                let (first, second) = if target == Target::Ab { (a, b) } else { (b, a) };
                let q = prompts::pairwise(ex, conv, &p.question, first, second, c.format)?;
                let logprobs = self.score(pair, &q)?;
                out.push(Query {
                    principle: p.id.clone(),
                    target,
                    sample: None,
                    reasoning: None,
                    logprobs,
                    prior,
                    p_raw: softmax_first(logprobs),
                    p: prior.map_or_else(
                        || softmax_first(logprobs),
                        |pr| calibrated_first(logprobs, pr),
                    ),
                });
            }
        }
        Ok(out)
    }

    fn pairwise_cot(
        &self,
        pair: &Pair,
        principles: &[&ComparisonPrinciple],
        a: &str,
        b: &str,
    ) -> Result<Vec<Query>> {
        let (c, ex, conv) = (&self.config, self.exemplars(), &pair.conversation);
        let generator = self
            .generator
            .ok_or_else(|| FeedbackError::Config("cot needs a generator".into()))?;
        let mut jobs = Vec::new();
        for p in principles {
            for &target in self.orders() {
                let (first, second) = if target == Target::Ab { (a, b) } else { (b, a) };
                let q = prompts::pairwise(ex, conv, &p.question, first, second, c.format)?;
                let reasoning_prompt = prompts::cot_reasoning(&q)?;
                for sample in 0..c.cot_samples {
                    jobs.push((
                        p,
                        target,
                        sample,
                        reasoning_prompt.clone(),
                        q.choices.clone(),
                    ));
                }
            }
        }
        let prompts: Vec<Prompt> = jobs.iter().map(|j| j.3.clone()).collect();
        let seed = derive_seed(&[c.seed, crate::id_hash(&pair.id), 0xC07]);
        let context = || format!("pair `{}`: reasoning", pair.id);
        self.generator_calls.set(self.generator_calls.get() + 1);
        let completions = generator
            .generate(&prompts, &c.cot_sampling(seed))
            .map_err(|source| FeedbackError::Model {
                context: context(),
                source,
            })?;
        if completions.len() != prompts.len() {
            return Err(FeedbackError::BadModelOutput {
                context: context(),
                message: format!(
                    "{} completions for {} prompts",
                    completions.len(),
                    prompts.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(jobs.len());
        for ((p, target, sample, reasoning_prompt, choices), completion) in
            jobs.into_iter().zip(completions)
        {
            self.tokens
                .set(self.tokens.get() + completion.token_ids.len());
            let reasoning = completion.text.trim().to_string();
            let answer = prompts::cot_answer(&reasoning_prompt, &reasoning);
            let logprobs = self.score_prompt(pair, &answer, &choices)?;
            let p_raw = softmax_first(logprobs);
            out.push(Query {
                principle: p.id.clone(),
                target,
                sample: Some(sample),
                reasoning: Some(reasoning),
                logprobs,
                prior: None,
                p_raw,
                p: clamp(p_raw, c.cot_clamp),
            });
        }
        Ok(out)
    }

    /// The contrast method: each response scored after the good and the bad system prompt
    /// (one scorer call per system prompt, both responses as its two choices).
    fn contrast(&self, pair: &Pair, a: &str, b: &str) -> Result<Vec<Query>> {
        let (c, conv) = (&self.config, &pair.conversation);
        let lead = match c.format {
            rlaif_constitution::PromptFormat::Chat => "",
            rlaif_constitution::PromptFormat::Raw => " ",
        };
        let choices = [format!("{lead}{a}"), format!("{lead}{b}")];
        let good = self.score_prompt(
            pair,
            &prompts::contrast(&c.contrast_good, conv, c.format),
            &choices,
        )?;
        let bad = self.score_prompt(
            pair,
            &prompts::contrast(&c.contrast_bad, conv, c.format),
            &choices,
        )?;
        Ok([(Target::A, 0), (Target::B, 1)]
            .into_iter()
            .map(|(target, i)| {
                let logprobs = [good[i], bad[i]];
                let q = softmax_first(logprobs);
                Query {
                    principle: String::new(),
                    target,
                    sample: None,
                    reasoning: None,
                    logprobs,
                    prior: None,
                    p_raw: q,
                    p: q,
                }
            })
            .collect())
    }

    fn pointwise(
        &self,
        pair: &Pair,
        principles: &[&ComparisonPrinciple],
        a: &str,
        b: &str,
    ) -> Result<Vec<Query>> {
        let (c, ex, conv) = (&self.config, self.exemplars(), &pair.conversation);
        let mut out = Vec::new();
        for p in principles {
            let (question, yes_is_good) = prompts::pointwise_question(c, &p.question);
            let exemplar_question = |e: &rlaif_constitution::ComparisonExemplar| {
                prompts::pointwise_question(c, e.question.as_deref().unwrap_or(&p.question)).0
            };
            let ask = |response: &str| {
                prompts::pointwise(
                    ex,
                    conv,
                    &question,
                    response,
                    c.format,
                    yes_is_good,
                    &exemplar_question,
                )
            };
            let prior = if c.calibrate {
                Some(self.score(pair, &ask(CONTENT_FREE))?)
            } else {
                None
            };
            for (target, response) in [(Target::A, a), (Target::B, b)] {
                let logprobs = self.score(pair, &ask(response))?;
                let p_yes = prior.map_or_else(
                    || softmax_first(logprobs),
                    |pr| calibrated_first(logprobs, pr),
                );
                out.push(Query {
                    principle: p.id.clone(),
                    target,
                    sample: None,
                    reasoning: None,
                    logprobs,
                    prior,
                    p_raw: softmax_first(logprobs),
                    p: if yes_is_good { p_yes } else { 1.0 - p_yes },
                });
            }
        }
        Ok(out)
    }
}
