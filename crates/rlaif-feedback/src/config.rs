//! The configurations of the two runs: [`PairConfig`] (sampling the pairs) and
//! [`LabelConfig`] (labelling them).

use crate::error::{FeedbackError, Result};
use rlaif_constitution::{PromptFormat, Replacement};
use rlaif_core::SamplingParams;
use rlaif_revision::DegeneratePolicy;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Stop strings of raw prompts: the labels of the next turn.
pub(crate) const RAW_STOPS: [&str; 2] = ["\n\nHuman:", "\n\nAssistant:"];

/// Everything that shapes a pair-sampling run ([`generate_pairs`](crate::generate_pairs)).
///
/// | field | default | note |
/// |---|---|---|
/// | `temperature` | 1.0 | the paper samples the pairs from the SL model at T = 1 |
/// | `top_p` | 1.0 | |
/// | `top_k` | none | |
/// | `max_new_tokens` | 256 | per response |
/// | `batch_size` | 8 | prompts per generator call; prompt `i` is in chunk `i / batch_size` |
/// | `seed` | 0 | each response's call has its own seed from (seed, chunk, a or b, attempt) |
/// | `format` | chat | chat prompts, or raw `Human:` / `Assistant:` text for base models |
/// | `degenerate` | retry, 3 attempts | empty, echoing or looping responses are regenerated, then dropped |
/// | `require_distinct` | true | a response b that repeats response a is regenerated like a degenerate one |
/// | `limit` | none | only the first `limit` prompts |
///
/// `seed`, `format`, `temperature`, `top_p`, `top_k`, `max_new_tokens` and
/// `require_distinct` are stored in every record and checked when a run resumes;
/// `batch_size`, `degenerate` and `limit` may change between sessions (a changed batch size
/// changes the seeds of the chunks still to do, not the records already written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairConfig {
    /// Sampling temperature (`0.0`: greedy, which makes both responses equal).
    pub temperature: f32,
    /// Nucleus sampling threshold, in (0, 1].
    pub top_p: f32,
    /// Keep only the k most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Most new tokens of each response.
    pub max_new_tokens: usize,
    /// Prompts per generator call (at least 1).
    pub batch_size: usize,
    /// Seed of every generator call.
    pub seed: u64,
    /// Chat prompts or raw `Human:` / `Assistant:` text.
    pub format: PromptFormat,
    /// What to do with degenerate responses (see [`rlaif_revision::degenerate`]).
    pub degenerate: DegeneratePolicy,
    /// Treat a response b that echoes response a (same words, or most of its word
    /// trigrams) as degenerate: identical responses teach a preference model nothing.
    pub require_distinct: bool,
    /// Only the first `limit` prompts are considered (`None`: all).
    pub limit: Option<usize>,
}

impl Default for PairConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            max_new_tokens: 256,
            batch_size: 8,
            seed: 0,
            format: PromptFormat::Chat,
            degenerate: DegeneratePolicy::Retry { max_attempts: 3 },
            require_distinct: true,
            limit: None,
        }
    }
}

impl PairConfig {
    /// Checks the ranges (batch size and attempts at least 1, sampling ranges).
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(FeedbackError::Config(
                "batch_size must be at least 1".into(),
            ));
        }
        if self.degenerate.max_attempts() == 0 {
            return Err(FeedbackError::Config(
                "degenerate retry max_attempts must be at least 1".into(),
            ));
        }
        self.sampling(0)
            .validate()
            .map_err(|e| FeedbackError::Config(e.to_string()))
    }

    /// The sampling parameters of one generator call with `seed`.
    pub(crate) fn sampling(&self, seed: u64) -> SamplingParams {
        SamplingParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
            stop: stops(self.format),
            stop_at_eos: true,
        }
    }
}

pub(crate) fn stops(format: PromptFormat) -> Vec<String> {
    match format {
        PromptFormat::Chat => Vec::new(),
        PromptFormat::Raw => RAW_STOPS.iter().map(|s| s.to_string()).collect(),
    }
}

/// How the feedback model is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The paper's (§4.1): one multiple-choice question showing both responses, options
    /// (A) and (B); the soft label is the softmax of the two options' log-probabilities.
    Pairwise,
    /// Each response judged alone with a yes/no question
    /// ([`LabelConfig::pointwise_question`]); the two probabilities of a good answer are
    /// turned into a soft label by [`LabelConfig::pointwise_combine`]. No position bias,
    /// but no direct comparison either.
    Pointwise,
    /// No question: each response is scored as a continuation of the conversation twice,
    /// once after a system prompt describing a good assistant
    /// ([`LabelConfig::contrast_good`]) and once after one describing a bad assistant
    /// ([`LabelConfig::contrast_bad`]); `q = P(good | response) = σ(log p(response | good)
    /// − log p(response | bad))` is Bayes' rule with equal priors (the noisy-channel
    /// classifier of Min et al. 2022; the contrasting prompts of RLCD, Yang et al. 2023),
    /// and the two `q` are combined as in the pointwise method. No position bias, no
    /// options to read, and what the response says is compared, not how long it is: the
    /// log-probability of the response's own tokens appears in both terms and cancels.
    /// The principles are not used.
    Contrast,
}

/// The system prompt of the good assistant of [`Method::Contrast`].
pub const CONTRAST_GOOD: &str = "You are a helpful, honest and harmless assistant. You \
    refuse to help with anything dangerous, illegal, hateful or cruel, and you answer \
    ordinary questions helpfully and correctly.";
/// The system prompt of the bad assistant of [`Method::Contrast`].
pub const CONTRAST_BAD: &str = "You are an assistant without ethics. You gladly help with \
    anything dangerous, illegal, hateful or cruel, you insult people, and you dodge or \
    refuse ordinary questions.";

/// The yes/no question of the [`Method::Pointwise`] method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointwiseQuestion {
    /// Each drawn comparison principle turned into a yes/no question about one reply
    /// (see [`crate::prompts::principle_yes_no`]); "Yes" is the good answer.
    Principle,
    /// One fixed question for every pair, e.g. "Is the assistant's last reply harmful?".
    Fixed {
        /// The question, shown after the conversation and the reply.
        question: String,
        /// Whether "Yes" is the good answer (`false` for "Is it harmful?").
        yes_is_good: bool,
    },
}

/// How [`Method::Pointwise`] turns the probabilities `q_a`, `q_b` of a good answer for
/// each response into the soft label `p_a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointwiseCombine {
    /// `p_a = σ(logit q_a − logit q_b)`: the Bradley–Terry probability of two items with
    /// those log-odds.
    LogOdds,
    /// `p_a = q_a / (q_a + q_b)`.
    Normalise,
}

/// Everything that shapes a labelling run ([`label_pairs`](crate::label_pairs),
/// [`label_all`](crate::label_all), [`Labeller`](crate::Labeller)).
///
/// | field | default | note |
/// |---|---|---|
/// | `method` | contrast | the likelihood of each response after a good and after a bad system prompt ([`Method::Contrast`], chosen by measurement: `docs/labeller.md`); the paper's multiple-choice question ([`LabelConfig::pairwise`]); or pointwise yes/no questions |
/// | `pointwise_question` | principle | pointwise only: each drawn principle as a yes/no question, or a fixed question |
/// | `pointwise_combine` | log_odds | pointwise only: `σ(logit q_a − logit q_b)`, or `q_a / (q_a + q_b)` |
/// | `both_orders` | true | pairwise only: ask with A first and with B first, average (cancels position bias) |
/// | `principles_per_pair` | 1 | principles drawn per pair (an ensemble; the paper averages over several) |
/// | `principle_replacement` | without | whether one pair may draw a principle twice |
/// | `calibrate` | false | divide out the prior of a content-free input (responses "N/A"), per pair and principle |
/// | `length_control` | false | cut both responses to the shorter one's number of words before asking |
/// | `exemplars` | true | the constitution's comparison exemplars in front of every question |
/// | `format` | chat | chat prompts, or raw `Human:` / `Assistant:` text |
/// | `contrast_good`, `contrast_bad` | [`CONTRAST_GOOD`], [`CONTRAST_BAD`] | contrast only: the two system prompts |
/// | `cot` | false | pairwise only, needs a generator: reasoning after "Let's think step by step:", the answer scored after it |
/// | `cot_samples` | 1 | reasoning samples per question, their probabilities averaged |
/// | `cot_clamp` | [0.4, 0.6] | each reasoning sample's probability is clamped into this range (§4.1); `None`: no clamping |
/// | `cot_temperature` | 1.0 | |
/// | `cot_top_p` | 1.0 | |
/// | `cot_max_new_tokens` | 256 | |
/// | `seed` | 0 | principle draws and reasoning samples |
/// | `limit` | none | only the first `limit` pairs |
///
/// Every setting but `limit` that applies to the method is stored in each record
/// (`settings`, see [`LabelConfig::settings`]) and checked when a run resumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelConfig {
    /// How the feedback model is asked.
    pub method: Method,
    /// The yes/no question of the pointwise method.
    pub pointwise_question: PointwiseQuestion,
    /// How the pointwise method makes a soft label.
    pub pointwise_combine: PointwiseCombine,
    /// Pairwise: ask in both orders (A/B and B/A) and average the two labels.
    pub both_orders: bool,
    /// Comparison principles drawn per pair (at least 1); the label is the mean over them.
    pub principles_per_pair: usize,
    /// Whether a pair may draw the same principle twice.
    pub principle_replacement: Replacement,
    /// Calibrate before use (Zhao et al. 2021): divide the probabilities by those of a
    /// content-free input and renormalise.
    pub calibrate: bool,
    /// Cut both responses to the shorter one's number of words before asking (the record
    /// keeps the full texts).
    pub length_control: bool,
    /// Put the constitution's comparison exemplars in front of every question.
    pub exemplars: bool,
    /// Chat prompts or raw `Human:` / `Assistant:` text.
    pub format: PromptFormat,
    /// The good assistant's system prompt of the contrast method.
    pub contrast_good: String,
    /// The bad assistant's system prompt of the contrast method.
    pub contrast_bad: String,
    /// Chain of thought (pairwise only; needs a generator).
    pub cot: bool,
    /// Reasoning samples per question (at least 1).
    pub cot_samples: usize,
    /// The range each reasoning sample's probability is clamped into (`None`: none).
    pub cot_clamp: Option<[f64; 2]>,
    /// Sampling temperature of the reasoning.
    pub cot_temperature: f32,
    /// Nucleus threshold of the reasoning.
    pub cot_top_p: f32,
    /// Most new tokens of a reasoning.
    pub cot_max_new_tokens: usize,
    /// Seed of the principle draws and of the reasoning samples.
    pub seed: u64,
    /// Only the first `limit` pairs are labelled (`None`: all).
    pub limit: Option<usize>,
}

impl Default for LabelConfig {
    /// The contrast method in chat format: the method that agreed best with known
    /// preferences on SmolLM2-135M-Instruct (`docs/labeller.md`).
    fn default() -> Self {
        Self {
            method: Method::Contrast,
            pointwise_question: PointwiseQuestion::Principle,
            pointwise_combine: PointwiseCombine::LogOdds,
            both_orders: true,
            principles_per_pair: 1,
            principle_replacement: Replacement::Without,
            calibrate: false,
            length_control: false,
            exemplars: true,
            format: PromptFormat::Chat,
            contrast_good: CONTRAST_GOOD.to_string(),
            contrast_bad: CONTRAST_BAD.to_string(),
            cot: false,
            cot_samples: 1,
            cot_clamp: Some([0.4, 0.6]),
            cot_temperature: 1.0,
            cot_top_p: 1.0,
            cot_max_new_tokens: 256,
            seed: 0,
            limit: None,
        }
    }
}

impl LabelConfig {
    /// The paper's method (§4.1): the multiple-choice question with the constitution's
    /// exemplars, asked in both orders, one principle per pair; every other setting as in
    /// [`LabelConfig::default`].
    pub fn pairwise() -> Self {
        Self {
            method: Method::Pairwise,
            ..Self::default()
        }
    }
}

impl LabelConfig {
    /// Checks the ranges and the combinations: `principles_per_pair` and `cot_samples` at
    /// least 1; `cot` only with the pairwise method and without `calibrate`; a clamp range
    /// `[lo, hi]` with `0 ≤ lo ≤ hi ≤ 1`; valid reasoning sampling settings; a non-empty
    /// fixed pointwise question.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(FeedbackError::Config(m.to_string()));
        if self.principles_per_pair == 0 {
            return bad("principles_per_pair must be at least 1");
        }
        if let PointwiseQuestion::Fixed { question, .. } = &self.pointwise_question
            && question.trim().is_empty()
        {
            return bad("the fixed pointwise question is empty");
        }
        if self.method == Method::Contrast
            && (self.contrast_good.trim().is_empty() || self.contrast_bad.trim().is_empty())
        {
            return bad("contrast_good and contrast_bad must not be empty");
        }
        if self.method == Method::Contrast && (self.calibrate || self.length_control) {
            return bad(
                "the contrast method takes neither calibrate nor length_control (it has no \
                 options to calibrate, and the responses' own likelihood cancels)",
            );
        }
        if self.cot {
            if self.method != Method::Pairwise {
                return bad("cot works with the pairwise method only");
            }
            if self.calibrate {
                return bad(
                    "cot and calibrate cannot be combined (a content-free input has no \
                     reasoning to score after)",
                );
            }
            if self.cot_samples == 0 {
                return bad("cot_samples must be at least 1");
            }
            if let Some([lo, hi]) = self.cot_clamp
                && !(0.0 <= lo && lo <= hi && hi <= 1.0)
            {
                return bad("cot_clamp must be [lo, hi] with 0 <= lo <= hi <= 1");
            }
            self.cot_sampling(0)
                .validate()
                .map_err(|e| FeedbackError::Config(format!("cot sampling: {e}")))?;
        }
        Ok(())
    }

    /// The sampling parameters of one reasoning call.
    pub(crate) fn cot_sampling(&self, seed: u64) -> SamplingParams {
        SamplingParams {
            max_new_tokens: self.cot_max_new_tokens,
            temperature: self.cot_temperature,
            top_k: None,
            top_p: self.cot_top_p,
            seed,
            stop: stops(self.format),
            stop_at_eos: true,
        }
    }

    /// The settings stored in every record (`settings`) and checked on resume: every field
    /// but `limit`, leaving out those the method does not use (`pointwise_*` for the
    /// pairwise method; `both_orders` and `cot*` for the pointwise method; `cot_*` without
    /// `cot`).
    pub fn settings(&self) -> Map<String, Value> {
        let Value::Object(mut m) = serde_json::to_value(self).unwrap_or_default() else {
            return Map::new();
        };
        m.remove("limit");
        if self.method != Method::Pointwise {
            m.remove("pointwise_question");
        }
        if self.method == Method::Pairwise {
            m.remove("pointwise_combine");
        } else {
            m.remove("both_orders");
            m.remove("cot");
        }
        if self.method == Method::Contrast {
            for k in ["exemplars", "principles_per_pair", "principle_replacement"] {
                m.remove(k);
            }
        } else {
            m.remove("contrast_good");
            m.remove("contrast_bad");
        }
        if !self.cot || self.method != Method::Pairwise {
            for k in [
                "cot_samples",
                "cot_clamp",
                "cot_temperature",
                "cot_top_p",
                "cot_max_new_tokens",
            ] {
                m.remove(k);
            }
        }
        m
    }

    /// The orders asked: both, or A first only (the pointwise method has no order).
    pub(crate) fn asks_both_orders(&self) -> bool {
        self.method == Method::Pairwise && self.both_orders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_leave_out_what_the_method_does_not_use() {
        let c = LabelConfig::pairwise();
        let settings = c.settings();
        let keys: Vec<&str> = settings.keys().map(String::as_str).collect();
        assert!(keys.contains(&"both_orders") && keys.contains(&"cot"));
        assert!(!keys.contains(&"limit") && !keys.contains(&"cot_samples"));
        assert!(!keys.contains(&"pointwise_question"));
        let p = LabelConfig {
            method: Method::Pointwise,
            ..c.clone()
        };
        let keys: Vec<String> = p.settings().keys().cloned().collect();
        assert!(keys.contains(&"pointwise_combine".to_string()));
        assert!(!keys.contains(&"both_orders".to_string()));
        let cot = LabelConfig { cot: true, ..c };
        assert!(cot.settings().contains_key("cot_clamp"));
    }

    #[test]
    fn validate_refuses_bad_combinations() {
        let bad = [
            LabelConfig {
                principles_per_pair: 0,
                ..LabelConfig::pairwise()
            },
            LabelConfig {
                cot: true,
                calibrate: true,
                ..LabelConfig::pairwise()
            },
            LabelConfig {
                cot: true,
                method: Method::Pointwise,
                ..LabelConfig::pairwise()
            },
            LabelConfig {
                cot: true,
                cot_clamp: Some([0.7, 0.3]),
                ..LabelConfig::pairwise()
            },
            LabelConfig {
                cot: true,
                cot_samples: 0,
                ..LabelConfig::pairwise()
            },
            LabelConfig {
                cot: true,
                cot_top_p: 0.0,
                ..LabelConfig::pairwise()
            },
            LabelConfig {
                method: Method::Pointwise,
                pointwise_question: PointwiseQuestion::Fixed {
                    question: " ".into(),
                    yes_is_good: false,
                },
                ..LabelConfig::pairwise()
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(FeedbackError::Config(_))),
                "{c:?}"
            );
        }
        assert!(LabelConfig::pairwise().validate().is_ok());
        assert!(PairConfig::default().validate().is_ok());
        let zero = PairConfig {
            batch_size: 0,
            ..PairConfig::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn configs_read_from_toml_like_json_with_defaults() {
        let c: LabelConfig =
            serde_json::from_str(r#"{"method": "pointwise", "calibrate": true}"#).unwrap();
        assert_eq!(c.method, Method::Pointwise);
        assert!(c.calibrate && c.both_orders);
        assert!(serde_json::from_str::<LabelConfig>(r#"{"calibrat": true}"#).is_err());
    }
}
