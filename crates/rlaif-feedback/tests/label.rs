//! Labelling with scripted scorers and generators (no model): the soft labels against
//! independent computations, the cancelling of planted biases, ensembles, calibration,
//! chain of thought, the pointwise method, accuracy, resuming.

use rlaif_constitution::{Constitution, PromptFormat, Replacement};
use rlaif_core::progress::{Observer, Progress, Silent};
use rlaif_core::{ChoiceScorer, Completion, FinishReason, Generator, Prompt, SamplingParams};
use rlaif_feedback::prompts::{CONTENT_FREE, COT_CHAT_FOLLOW_UP};
use rlaif_feedback::{
    CachedScorer, FeedbackError, LabelConfig, LabelRecord, LabelStats, Method, Pair,
    PointwiseCombine, PointwiseQuestion, Side, Target, label_all, label_pairs, read_labels,
    read_pairs,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a scripted scorer was asked, read back from the prompt.
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    /// A pairwise question: the principle's question, option (A), option (B), and the
    /// reasoning written before the answer (chain of thought).
    Pairwise {
        question: String,
        first: String,
        second: String,
        reasoning: Option<String>,
    },
    /// A pointwise question about one response.
    Pointwise { question: String, response: String },
}

/// Reads the last question of a prompt built by this crate (chat or raw).
fn asked(prompt: &Prompt) -> Asked {
    let (block, reasoning) = match prompt {
        Prompt::Chat(c) => {
            let m = &c.messages;
            let last = &m[m.len() - 1].content;
            if last == COT_CHAT_FOLLOW_UP {
                (
                    m[m.len() - 3].content.clone(),
                    Some(m[m.len() - 2].content.clone()),
                )
            } else {
                (last.clone(), None)
            }
        }
        Prompt::Text(s) => {
            let block = s.rsplit("\n\nHuman: ").next().unwrap().to_string();
            let reasoning = block
                .split_once("Let's think step by step: ")
                .map(|(_, r)| r.split("\n\nSo the answer is:").next().unwrap().to_string());
            (block, reasoning)
        }
    };
    if let Some((before, options)) = block.split_once("\nOptions:\n(A) ") {
        let question = before.rsplit("\n\n").next().unwrap().to_string();
        let (first, rest) = options.split_once("\n(B) ").unwrap();
        let second = rest.split("\n\n").next().unwrap().to_string();
        Asked::Pairwise {
            question,
            first: first.to_string(),
            second,
            reasoning,
        }
    } else {
        let pre = block.split("\n\nAnswer Yes or No.").next().unwrap();
        let (rest, question) = pre.rsplit_once("\n\n").unwrap();
        let response = rest.rsplit("\n\nAssistant: ").next().unwrap();
        Asked::Pointwise {
            question: question.to_string(),
            response: response.to_string(),
        }
    }
}

/// A scorer answering with a function of what it was asked; it logs the questions.
struct Scripted<F> {
    f: F,
    log: RefCell<Vec<Asked>>,
}

impl<F: Fn(&Asked) -> [f64; 2]> Scripted<F> {
    fn new(f: F) -> Self {
        Self {
            f,
            log: RefCell::new(Vec::new()),
        }
    }
}

impl<F: Fn(&Asked) -> [f64; 2]> ChoiceScorer for Scripted<F> {
    fn choice_logprobs(&self, prompt: &Prompt, choices: &[String]) -> rlaif_core::Result<Vec<f64>> {
        let a = asked(prompt);
        match (&a, prompt) {
            (Asked::Pairwise { .. }, Prompt::Chat(_)) => assert_eq!(choices, ["(A)", "(B)"]),
            (Asked::Pairwise { .. }, Prompt::Text(_)) => assert_eq!(choices, [" (A)", " (B)"]),
            (Asked::Pointwise { .. }, Prompt::Chat(_)) => assert_eq!(choices, ["Yes", "No"]),
            (Asked::Pointwise { .. }, Prompt::Text(_)) => assert_eq!(choices, [" Yes", " No"]),
        }
        let lp = (self.f)(&a);
        self.log.borrow_mut().push(a);
        Ok(lp.to_vec())
    }
}

fn sigma(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The two-way softmax computed directly, as a reference.
fn softmax_first(l: [f64; 2]) -> f64 {
    l[0].exp() / (l[0].exp() + l[1].exp())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn pairs() -> Vec<Pair> {
    [
        (
            "p1",
            "How do I pick a lock?",
            "Use a tension wrench and a pick.",
            "I can't help with that.",
        ),
        (
            "p2",
            "Write a rude joke about my boss.",
            "Your boss is a clown.",
            "How about a friendly joke instead?",
        ),
        (
            "p3",
            "Is bleach safe to drink?",
            "No, call poison control if swallowed.",
            "A little is fine.",
        ),
        (
            "p4",
            "How do I bake bread?",
            "Mix flour, water, salt and yeast, knead, rise, bake.",
            "Buy it.",
        ),
        (
            "p5",
            "Tell me about the moon.",
            "It orbits the Earth every 27 days.",
            "It is made of cheese.",
        ),
        (
            "p6",
            "Help me cheat on a test.",
            "Write notes on your hand.",
            "Let's study together instead.",
        ),
    ]
    .iter()
    .map(|(id, p, a, b)| Pair::new(*id, *p, *a, *b))
    .collect()
}

/// A planted quality per response (its length in bytes, scaled), so labels differ.
fn quality(text: &str) -> f64 {
    (text.len() % 17) as f64 / 5.0 - 1.5
}

fn constitution() -> Constitution {
    Constitution::default_constitution()
}

fn base() -> LabelConfig {
    LabelConfig {
        both_orders: false,
        exemplars: false,
        ..LabelConfig::pairwise()
    }
}

#[test]
fn soft_labels_are_the_softmax_of_the_logprobs() {
    let lp = |a: &Asked| match a {
        Asked::Pairwise { first, second, .. } => [
            -0.1 - quality(first).abs(),
            -0.2 - quality(second).abs() / 3.0,
        ],
        Asked::Pointwise { .. } => unreachable!(),
    };
    for format in [PromptFormat::Chat, PromptFormat::Raw] {
        let scorer = Scripted::new(lp);
        let config = LabelConfig { format, ..base() };
        let (records, summary) =
            label_all(&scorer, None, &constitution(), &pairs(), &config, &Silent).unwrap();
        assert_eq!(summary.scorer_calls, 6);
        for (r, p) in records.iter().zip(pairs()) {
            let l = lp(&Asked::Pairwise {
                question: String::new(),
                first: p.response_a.clone(),
                second: p.response_b.clone(),
                reasoning: None,
            });
            assert_eq!(r.queries.len(), 1);
            assert_eq!(r.queries[0].logprobs, l);
            assert!(
                close(r.p_a, softmax_first(l)),
                "{} vs {}",
                r.p_a,
                softmax_first(l)
            );
            assert_eq!(r.p_a_by_order, None);
            let (chosen, rejected) = if r.p_a >= 0.5 {
                (&p.response_a, &p.response_b)
            } else {
                (&p.response_b, &p.response_a)
            };
            assert_eq!(r.chosen, rlaif_feedback::TrlResponse::Text(chosen.clone()));
            assert_eq!(
                r.rejected,
                rlaif_feedback::TrlResponse::Text(rejected.clone())
            );
        }
        // Both orders: the mean of P(A|AB) and 1 − P(B first|BA).
        let scorer = Scripted::new(lp);
        let config = LabelConfig {
            format,
            both_orders: true,
            ..base()
        };
        let (records, _) =
            label_all(&scorer, None, &constitution(), &pairs(), &config, &Silent).unwrap();
        for (r, p) in records.iter().zip(pairs()) {
            let ab = softmax_first(lp(&Asked::Pairwise {
                question: String::new(),
                first: p.response_a.clone(),
                second: p.response_b.clone(),
                reasoning: None,
            }));
            let ba = softmax_first(lp(&Asked::Pairwise {
                question: String::new(),
                first: p.response_b.clone(),
                second: p.response_a.clone(),
                reasoning: None,
            }));
            assert!(close(r.p_a, (ab + 1.0 - ba) / 2.0));
            let o = r.p_a_by_order.unwrap();
            assert!(close(o.ab, ab) && close(o.ba, 1.0 - ba));
            assert_eq!(
                r.queries.iter().map(|q| q.target).collect::<Vec<_>>(),
                [Target::Ab, Target::Ba]
            );
        }
    }
}

#[test]
fn swapping_orders_cancels_a_planted_position_bias_exactly() {
    // A planted bias of +0.1 on P(first option), on top of a true preference.
    let truth = |first: &str, second: &str| {
        let (a, b) = (quality(first).exp(), quality(second).exp());
        0.1 + 0.8 * a / (a + b)
    };
    let beta = 0.1;
    let scorer = Scripted::new(|a: &Asked| {
        let Asked::Pairwise { first, second, .. } = a else {
            unreachable!()
        };
        let p = truth(first, second) + beta;
        [p.ln(), (1.0 - p).ln()]
    });
    let both = LabelConfig {
        both_orders: true,
        ..base()
    };
    let (records, summary) =
        label_all(&scorer, None, &constitution(), &pairs(), &both, &Silent).unwrap();
    for (r, p) in records.iter().zip(pairs()) {
        assert!(
            close(r.p_a, truth(&p.response_a, &p.response_b)),
            "{} vs {}",
            r.p_a,
            truth(&p.response_a, &p.response_b)
        );
    }
    // The bias measured before cancelling: mean P(first) = ½ + β (the truths of the two
    // orders sum to one).
    assert!(close(summary.stats.mean_p_first.unwrap(), 0.5 + beta));
    let (one, _) = label_all(&scorer, None, &constitution(), &pairs(), &base(), &Silent).unwrap();
    for (r, p) in one.iter().zip(pairs()) {
        assert!(close(r.p_a, truth(&p.response_a, &p.response_b) + beta));
    }

    // A bias on the log-odds: responses of equal quality get exactly ½ in both orders,
    // σ(b) in one; a pair read the other way round gets 1 − p_a.
    let b = 0.8;
    let logit_bias = Scripted::new(|a: &Asked| {
        let Asked::Pairwise { first, second, .. } = a else {
            unreachable!()
        };
        [quality(first) + b, quality(second)]
    });
    let equal = vec![Pair::new(
        "e",
        "Hi",
        "Hello there, friend!",
        "Hello there, fellow!",
    )];
    assert_eq!(quality(&equal[0].response_a), quality(&equal[0].response_b));
    let (r, s) = label_all(&logit_bias, None, &constitution(), &equal, &both, &Silent).unwrap();
    assert_eq!(r[0].p_a, 0.5);
    assert!(close(s.stats.mean_p_first.unwrap(), sigma(b)));
    let (r1, _) = label_all(&logit_bias, None, &constitution(), &equal, &base(), &Silent).unwrap();
    assert!(close(r1[0].p_a, sigma(b)));
    let swapped: Vec<Pair> = pairs()
        .into_iter()
        .map(|p| Pair::new(p.id.clone(), "x", p.response_b, p.response_a))
        .collect();
    let (fwd, _) = label_all(&logit_bias, None, &constitution(), &pairs(), &both, &Silent).unwrap();
    let (rev, _) = label_all(&logit_bias, None, &constitution(), &swapped, &both, &Silent).unwrap();
    for (f, r) in fwd.iter().zip(&rev) {
        assert!(close(f.p_a, 1.0 - r.p_a));
    }
}

/// The planted preference of each comparison principle of the default constitution.
fn principle_strength(question: &str) -> f64 {
    let c = constitution();
    let i = c
        .comparisons
        .iter()
        .position(|p| p.question == question)
        .expect("a principle's question");
    (i as f64 - 7.5) / 4.0
}

#[test]
fn ensembling_averages_the_principles() {
    let scorer = Scripted::new(|a: &Asked| {
        let Asked::Pairwise {
            question,
            first,
            second,
            ..
        } = a
        else {
            unreachable!()
        };
        [
            principle_strength(question) + quality(first),
            quality(second),
        ]
    });
    let config = LabelConfig {
        principles_per_pair: 4,
        ..base()
    };
    let (records, summary) =
        label_all(&scorer, None, &constitution(), &pairs(), &config, &Silent).unwrap();
    assert_eq!(summary.scorer_calls, 6 * 4);
    let c = constitution();
    for r in &records {
        assert_eq!(r.principles.len(), 4);
        let mut ids = r.principles.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "drawn without replacement");
        let want: Vec<f64> = r
            .principles
            .iter()
            .map(|id| {
                sigma(
                    principle_strength(&c.comparison(id).unwrap().question)
                        + quality(&r.response_a)
                        - quality(&r.response_b),
                )
            })
            .collect();
        for (got, want) in r.p_a_by_principle.iter().zip(&want) {
            assert!(close(*got, *want));
        }
        assert!(close(r.p_a, want.iter().sum::<f64>() / 4.0));
    }
    // The first principle of a pair is the same with 1 principle per pair (a prefix of the
    // draw), and the draws differ between pairs.
    let (one, _) = label_all(&scorer, None, &constitution(), &pairs(), &base(), &Silent).unwrap();
    for (a, b) in one.iter().zip(&records) {
        assert_eq!(a.principles[0], b.principles[0]);
    }
    let firsts: std::collections::HashSet<&str> =
        records.iter().map(|r| r.principles[0].as_str()).collect();
    assert!(firsts.len() > 1);
    // With replacement, a principle drawn twice is asked once and counts twice.
    let with = LabelConfig {
        principles_per_pair: 40,
        principle_replacement: Replacement::With,
        ..base()
    };
    let (w, s) = label_all(
        &scorer,
        None,
        &constitution(),
        &pairs()[..1],
        &with,
        &Silent,
    )
    .unwrap();
    assert_eq!(w[0].principles.len(), 40);
    let distinct: std::collections::HashSet<&String> = w[0].principles.iter().collect();
    assert_eq!(s.scorer_calls, distinct.len());
    assert!(close(
        w[0].p_a,
        w[0].p_a_by_principle.iter().sum::<f64>() / 40.0
    ));
    // Without replacement, more principles than the constitution has is refused.
    let too_many = LabelConfig {
        principles_per_pair: 17,
        ..base()
    };
    let e = label_all(&scorer, None, &constitution(), &pairs(), &too_many, &Silent).unwrap_err();
    assert!(
        matches!(e, FeedbackError::Config(ref m) if m.contains("16 comparison principles")),
        "{e}"
    );
}

#[test]
fn calibration_divides_out_a_planted_prior_exactly() {
    // The scorer's prior over (A)/(B) depends on the principle; content-free options have
    // quality 0, so the content-free question shows exactly that prior.
    let q = |t: &str| if t == CONTENT_FREE { 0.0 } else { quality(t) };
    let scorer = Scripted::new(|a: &Asked| {
        let Asked::Pairwise {
            question,
            first,
            second,
            ..
        } = a
        else {
            unreachable!()
        };
        let prior = principle_strength(question);
        [q(first) + prior, q(second) - 0.3]
    });
    for both_orders in [false, true] {
        let config = LabelConfig {
            calibrate: true,
            principles_per_pair: 3,
            both_orders,
            ..base()
        };
        let (records, summary) =
            label_all(&scorer, None, &constitution(), &pairs(), &config, &Silent).unwrap();
        let orders = if both_orders { 2 } else { 1 };
        assert_eq!(
            summary.scorer_calls,
            6 * 3 * (orders + 1),
            "one content-free question per principle"
        );
        for r in &records {
            let want = sigma(quality(&r.response_a) - quality(&r.response_b));
            assert!(close(r.p_a, want), "{} vs {want}", r.p_a);
            for q in &r.queries {
                assert!(q.prior.is_some());
                assert!(
                    !close(q.p, q.p_raw)
                        || principle_strength(
                            &constitution().comparison(&q.principle).unwrap().question
                        ) == 0.3
                );
            }
        }
        let s = &summary.stats;
        assert!(s.mean_p_first_adjusted.is_some());
    }
    // Pointwise: the prior over Yes/No of the reply "N/A" is divided out too.
    let scorer = Scripted::new(|a: &Asked| {
        let Asked::Pointwise { response, .. } = a else {
            unreachable!()
        };
        [q(response) + 1.1, 0.0]
    });
    let config = LabelConfig {
        method: Method::Pointwise,
        calibrate: true,
        ..base()
    };
    let (records, _) =
        label_all(&scorer, None, &constitution(), &pairs(), &config, &Silent).unwrap();
    for r in &records {
        let (qa, qb) = (sigma(quality(&r.response_a)), sigma(quality(&r.response_b)));
        let want = sigma((qa / (1.0 - qa)).ln() - (qb / (1.0 - qb)).ln());
        assert!(close(r.p_a, want), "{} vs {want}", r.p_a);
    }
}

/// Writes "Step k: ..." for prompt k of a call; logs the calls.
#[derive(Default)]
struct Reasoner {
    calls: RefCell<Vec<(usize, SamplingParams)>>,
}

impl Generator for Reasoner {
    fn generate(
        &self,
        prompts: &[Prompt],
        params: &SamplingParams,
    ) -> rlaif_core::Result<Vec<Completion>> {
        self.calls
            .borrow_mut()
            .push((prompts.len(), params.clone()));
        Ok(prompts
            .iter()
            .enumerate()
            .map(|(k, p)| {
                match p {
                    Prompt::Chat(c) => assert!(
                        c.messages
                            .last()
                            .unwrap()
                            .content
                            .ends_with("step by step before answering.")
                    ),
                    Prompt::Text(t) => assert!(t.ends_with("Let's think step by step:")),
                }
                Completion {
                    text: format!(" Step {k}: weighing the options. "),
                    token_ids: vec![7; 5],
                    logprobs: vec![-1.0; 5],
                    finish_reason: FinishReason::Eos,
                }
            })
            .collect())
    }
}

#[test]
fn chain_of_thought_labels_are_clamped_and_averaged() {
    // After the reasoning of prompt k the scorer is sure of option (A) when k is even, of
    // (B) when it is odd, and mild for prompt 1.
    let scorer = Scripted::new(|a: &Asked| {
        let Asked::Pairwise {
            reasoning: Some(r), ..
        } = a
        else {
            panic!("no reasoning: {a:?}")
        };
        let k: usize = r
            .trim_start_matches("Step ")
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        match k {
            1 => [-0.65, -0.75],
            k if k % 2 == 0 => [0.0, -30.0],
            _ => [-30.0, 0.0],
        }
    });
    for format in [PromptFormat::Chat, PromptFormat::Raw] {
        let generator = Reasoner::default();
        let config = LabelConfig {
            cot: true,
            cot_samples: 2,
            both_orders: true,
            format,
            ..base()
        };
        let (records, summary) = label_all(
            &scorer,
            Some(&generator),
            &constitution(),
            &pairs(),
            &config,
            &Silent,
        )
        .unwrap();
        assert_eq!(summary.generator_calls, 6);
        assert_eq!(summary.tokens, 6 * 4 * 5);
        assert_eq!(summary.scorer_calls, 6 * 4);
        let calls = generator.calls.borrow();
        assert!(
            calls
                .iter()
                .all(|(n, p)| *n == 4 && p.temperature == 1.0 && p.max_new_tokens == 256)
        );
        // Each pair's reasoning call has its own seed.
        assert_ne!(calls[0].1.seed, calls[1].1.seed);
        for r in &records {
            // Prompts: (ab, sample 0) → k=0, (ab, 1) → k=1, (ba, 0) → k=2, (ba, 1) → k=3.
            let ps: Vec<f64> = r.queries.iter().map(|q| q.p).collect();
            let mild = sigma(0.1);
            assert!(
                close(ps[0], 0.6) && close(ps[1], mild) && close(ps[2], 0.6) && close(ps[3], 0.4),
                "{ps:?}"
            );
            assert!(r.queries[0].p_raw > 0.999);
            let want = ((0.6 + mild) / 2.0 + (1.0 - 0.6 + 1.0 - 0.4) / 2.0) / 2.0;
            assert!(close(r.p_a, want), "{} vs {want}", r.p_a);
            assert_eq!(
                r.queries[1].reasoning.as_deref(),
                Some("Step 1: weighing the options.")
            );
            assert_eq!(r.queries[3].sample, Some(1));
            assert!(r.p_a >= 0.4 && r.p_a <= 0.6);
        }
    }
    // Without clamping the sure answers stay sure.
    let generator = Reasoner::default();
    let config = LabelConfig {
        cot: true,
        cot_clamp: None,
        ..base()
    };
    let (records, _) = label_all(
        &scorer,
        Some(&generator),
        &constitution(),
        &pairs(),
        &config,
        &Silent,
    )
    .unwrap();
    assert!(records[0].p_a > 0.999);
    // Chain of thought needs a generator.
    let e = label_all(&scorer, None, &constitution(), &pairs(), &config, &Silent).unwrap_err();
    assert!(
        matches!(e, FeedbackError::Config(ref m) if m.contains("generator")),
        "{e}"
    );
}

#[test]
fn pointwise_compares_the_two_responses() {
    let p_yes = |t: &str| sigma(quality(t));
    let scorer = Scripted::new(|a: &Asked| {
        let Asked::Pointwise { response, .. } = a else {
            unreachable!()
        };
        let p = p_yes(response);
        [p.ln(), (1.0 - p).ln()]
    });
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let config = LabelConfig {
        method: Method::Pointwise,
        principles_per_pair: 2,
        ..base()
    };
    let (records, summary) =
        label_all(&scorer, None, &constitution(), &pairs(), &config, &Silent).unwrap();
    assert_eq!(summary.scorer_calls, 6 * 2 * 2);
    assert_eq!(
        summary.stats.mean_p_first, None,
        "no positions, no position bias"
    );
    let c = constitution();
    for r in &records {
        let (qa, qb) = (p_yes(&r.response_a), p_yes(&r.response_b));
        assert!(
            close(r.p_a, sigma(logit(qa) - logit(qb))),
            "{} vs {}",
            r.p_a,
            sigma(logit(qa) - logit(qb))
        );
        assert_eq!(
            r.queries.iter().map(|q| q.target).collect::<Vec<_>>(),
            [Target::A, Target::B, Target::A, Target::B]
        );
        assert_eq!(r.p_a_by_order, None);
        assert_eq!(r.preferred() == Side::A, qa >= qb);
        // The question is the principle's, made a yes/no question.
        let asked = scorer.log.borrow();
        assert!(asked.iter().any(|a| matches!(a, Asked::Pointwise { question, .. } if question.contains(&c.comparison(&r.principles[0]).unwrap().question))));
    }
    let norm = LabelConfig {
        pointwise_combine: PointwiseCombine::Normalise,
        ..config.clone()
    };
    let (records, _) = label_all(&scorer, None, &constitution(), &pairs(), &norm, &Silent).unwrap();
    for r in &records {
        let (qa, qb) = (p_yes(&r.response_a), p_yes(&r.response_b));
        assert!(close(r.p_a, qa / (qa + qb)));
    }
    // "Is it harmful?": No is the good answer.
    let fixed = LabelConfig {
        pointwise_question: PointwiseQuestion::Fixed {
            question: "Is the assistant's reply harmful?".into(),
            yes_is_good: false,
        },
        principles_per_pair: 1,
        ..config
    };
    let (records, _) =
        label_all(&scorer, None, &constitution(), &pairs(), &fixed, &Silent).unwrap();
    for r in &records {
        let (qa, qb) = (1.0 - p_yes(&r.response_a), 1.0 - p_yes(&r.response_b));
        assert!(close(r.p_a, sigma(logit(qa) - logit(qb))));
    }
    assert!(
        matches!(scorer.log.borrow().last(), Some(Asked::Pointwise { question, .. }) if question == "Is the assistant's reply harmful?")
    );
}

#[test]
fn length_control_cuts_both_responses_to_the_shorter_one() {
    let scorer = Scripted::new(|a: &Asked| {
        let Asked::Pairwise { first, second, .. } = a else {
            unreachable!()
        };
        [
            first.split_whitespace().count() as f64,
            second.split_whitespace().count() as f64,
        ]
    });
    let pair = vec![Pair::new(
        "l",
        "Hi",
        "one two three four five",
        "six  seven\nthree",
    )];
    let config = LabelConfig {
        length_control: true,
        ..base()
    };
    let (r, _) = label_all(&scorer, None, &constitution(), &pair, &config, &Silent).unwrap();
    assert_eq!(r[0].p_a, 0.5);
    assert_eq!(
        (r[0].words_a, r[0].words_b, r[0].length_control_words),
        (5, 3, Some(3))
    );
    assert_eq!(
        r[0].response_a, "one two three four five",
        "the record keeps the full text"
    );
    assert!(
        matches!(&scorer.log.borrow()[0], Asked::Pairwise { first, .. } if first == "one two three")
    );
    let (r, _) = label_all(&scorer, None, &constitution(), &pair, &base(), &Silent).unwrap();
    assert!(close(r[0].p_a, sigma(2.0)));
}

/// A scorer that gives option (A) probability `p_first[first option]`.
fn planted(table: HashMap<&'static str, f64>) -> impl Fn(&Asked) -> [f64; 2] {
    move |a: &Asked| {
        let Asked::Pairwise { first, .. } = a else {
            unreachable!()
        };
        let p = table[first.as_str()];
        [p.ln(), (1.0 - p).ln()]
    }
}

#[test]
fn accuracy_against_known_preferences_by_hand() {
    // Four known-preference pairs in TRL's format, with tags; the labeller reads them in a
    // seeded A/B order, so the table is keyed by the text at (A).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eval.jsonl");
    let lines = [
        r#"{"id":"e1","prompt":"q1","chosen":"c1","rejected":"r1","length":"similar","category":"weapons","kind":"refusal"}"#,
        r#"{"id":"e2","prompt":"q2","chosen":"c2 c2","rejected":"r2","length":"chosen_longer","category":"weapons"}"#,
        r#"{"id":"e3","prompt":"q3","chosen":"c3","rejected":"r3","length":"similar","category":"privacy"}"#,
        r#"{"id":"e4","prompt":"q4","chosen":"c4 c4 c4","rejected":"r4","length":"chosen_longer"}"#,
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let pairs = read_pairs(&file, 0).unwrap();
    // p(known better): e1 0.8 (right), e2 0.7 (right), e3 0.4 (wrong), e4 0.5 (tie).
    let p_known = [0.8, 0.7, 0.4, 0.5];
    let mut table = HashMap::new();
    for (p, pk) in pairs.iter().zip(p_known) {
        let a: &'static str = Box::leak(p.response_a.clone().into_boxed_str());
        table.insert(
            a,
            if p.known_better == Some(Side::A) {
                pk
            } else {
                1.0 - pk
            },
        );
    }
    assert!(
        pairs.iter().any(|p| p.known_better == Some(Side::B))
            || pairs.iter().all(|p| p.known_better == Some(Side::A))
    );
    let scorer = Scripted::new(planted(table));
    let (records, summary) =
        label_all(&scorer, None, &constitution(), &pairs, &base(), &Silent).unwrap();
    let s = &summary.stats;
    let acc = s.accuracy.unwrap();
    assert_eq!((acc.pairs, acc.correct, acc.ties), (4, 2, 1));
    assert!(close(acc.accuracy, 0.5));
    assert!(close(
        acc.mean_p_known_better,
        (0.8 + 0.7 + 0.4 + 0.5) / 4.0
    ));
    let similar = s.accuracy_by_length["similar"];
    assert_eq!((similar.pairs, similar.correct), (2, 1));
    let longer = s.accuracy_by_length["chosen_longer"];
    assert_eq!((longer.pairs, longer.correct, longer.ties), (2, 1, 1));
    assert_eq!(s.accuracy_by_category["weapons"].correct, 2);
    assert_eq!(s.accuracy_by_category["privacy"].correct, 0);
    assert_eq!(s.accuracy_by_kind.len(), 1);
    // The tags are carried into the records.
    assert_eq!(records[0].tag("kind"), Some("refusal"));
    assert_eq!(records[1].tag("length"), Some("chosen_longer"));
    // Histogram of p_a and the mean distance from ½.
    assert_eq!(s.histogram.iter().sum::<usize>(), 4);
    let p_a: Vec<f64> = records.iter().map(|r| r.p_a).collect();
    for p in &p_a {
        assert!(s.histogram[((p * 10.0) as usize).min(9)] > 0);
    }
    assert!(close(
        s.mean_confidence.unwrap(),
        (0.3 + 0.2 + 0.1 + 0.0) / 4.0
    ));
    // Length bias: Pearson's r of p_a against words_a − words_b, computed here directly.
    let d: Vec<f64> = records
        .iter()
        .map(|r| r.words_a as f64 - r.words_b as f64)
        .collect();
    let (mp, md) = (p_a.iter().sum::<f64>() / 4.0, d.iter().sum::<f64>() / 4.0);
    let cov: f64 = p_a.iter().zip(&d).map(|(p, d)| (p - mp) * (d - md)).sum();
    let vp: f64 = p_a.iter().map(|p| (p - mp).powi(2)).sum();
    let vd: f64 = d.iter().map(|d| (d - md).powi(2)).sum();
    assert!(close(s.length_correlation.unwrap(), cov / (vp * vd).sqrt()));
    // Summaries print.
    let text = summary.to_string();
    assert!(
        text.contains("accuracy against known preferences 50.0 % (2 of 4, 1 ties"),
        "{text}"
    );
    assert!(
        text.contains("by length: chosen_longer 50.0 % of 2, similar 50.0 % of 2"),
        "{text}"
    );
}

#[test]
fn order_agreement_counts_pairs_both_orders_prefer_alike() {
    // A strong position bias: the model always picks (A), so the orders disagree on every
    // pair; with a weak one they agree.
    let strong = Scripted::new(|_: &Asked| [0.0, -3.0]);
    let both = LabelConfig {
        both_orders: true,
        ..base()
    };
    let (_, s) = label_all(&strong, None, &constitution(), &pairs(), &both, &Silent).unwrap();
    assert_eq!(s.stats.order_agreement, Some(0.0));
    assert!(close(s.stats.mean_p_first.unwrap(), sigma(3.0)));
    let weak = Scripted::new(|a: &Asked| {
        let Asked::Pairwise { first, second, .. } = a else {
            unreachable!()
        };
        [3.0 * (quality(first) - quality(second)) + 0.01, 0.0]
    });
    let (r, s) = label_all(&weak, None, &constitution(), &pairs(), &both, &Silent).unwrap();
    let decided = r
        .iter()
        .filter(|r| quality(&r.response_a) != quality(&r.response_b))
        .count();
    assert_eq!(s.stats.order_agreement, Some(decided as f64 / 6.0));
    assert!(LabelStats::from_records(&[]).order_agreement.is_none());
}

/// Stops after `n` pairs.
struct StopAfter(usize, AtomicUsize);

impl Observer for StopAfter {
    fn update(&self, p: &Progress) {
        self.1.store(p.done as usize, Ordering::SeqCst);
    }
    fn should_stop(&self) -> bool {
        self.1.load(Ordering::SeqCst) >= self.0
    }
}

fn resumable_scorer() -> Scripted<impl Fn(&Asked) -> [f64; 2]> {
    Scripted::new(|a: &Asked| match a {
        Asked::Pairwise {
            question,
            first,
            second,
            ..
        } => [
            principle_strength(question) / 7.0 + quality(first),
            quality(second) - 0.25,
        ],
        Asked::Pointwise { .. } => unreachable!(),
    })
}

#[test]
fn a_resumed_run_writes_the_same_file_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let config = LabelConfig {
        principles_per_pair: 2,
        calibrate: true,
        ..LabelConfig::pairwise()
    };
    let scorer = resumable_scorer();
    let pairs: Vec<Pair> = pairs()
        .into_iter()
        .map(|p| p.with_extra("category", "test"))
        .collect();
    let whole = dir.path().join("whole.jsonl");
    let s = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs,
        &config,
        &whole,
        &Silent,
    )
    .unwrap();
    assert_eq!((s.done, s.skipped, s.stats.pairs), (6, 0, 6));
    let want = std::fs::read_to_string(&whole).unwrap();
    assert_eq!(want.lines().count(), 6);
    assert_eq!(
        read_labels(&whole).unwrap()[2].tag("category"),
        Some("test")
    );

    // Stopped after 2 pairs, then resumed.
    let cut = dir.path().join("sub/cut.jsonl");
    let s = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs,
        &config,
        &cut,
        &StopAfter(2, AtomicUsize::new(0)),
    )
    .unwrap();
    assert!(s.stopped && s.done == 2);
    let s = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs,
        &config,
        &cut,
        &Silent,
    )
    .unwrap();
    assert_eq!((s.done, s.skipped, s.stats.pairs), (4, 2, 6));
    assert_eq!(std::fs::read_to_string(&cut).unwrap(), want);

    // A crash in the middle of a line: the torn line is cut, the rest redone.
    let torn: String = want
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &want.lines().nth(3).unwrap()[..40];
    std::fs::write(&cut, torn).unwrap();
    let calls = scorer.log.borrow().len();
    let s = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs,
        &config,
        &cut,
        &Silent,
    )
    .unwrap();
    assert_eq!((s.done, s.skipped), (3, 3));
    assert_eq!(
        scorer.log.borrow().len() - calls,
        3 * 2 * 3,
        "only the missing pairs are asked"
    );
    assert_eq!(std::fs::read_to_string(&cut).unwrap(), want);
    let ids: Vec<String> = read_labels(&cut)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["p1", "p2", "p3", "p4", "p5", "p6"]);
    // Nothing left to do.
    let s = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs,
        &config,
        &cut,
        &Silent,
    )
    .unwrap();
    assert_eq!((s.done, s.skipped, s.scorer_calls), (0, 6, 0));
    assert_eq!(std::fs::read_to_string(&cut).unwrap(), want);
}

#[test]
fn a_resume_with_other_settings_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("labels.jsonl");
    let scorer = resumable_scorer();
    let config = LabelConfig::pairwise();
    label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs()[..2],
        &config,
        &out,
        &Silent,
    )
    .unwrap();
    let before = std::fs::read_to_string(&out).unwrap();
    let cases: Vec<(LabelConfig, &str, &str, &str)> = vec![
        (
            LabelConfig {
                calibrate: true,
                ..config.clone()
            },
            "calibrate",
            "false",
            "true",
        ),
        (
            LabelConfig {
                seed: 3,
                ..config.clone()
            },
            "seed",
            "0",
            "3",
        ),
        (
            LabelConfig {
                format: PromptFormat::Raw,
                ..config.clone()
            },
            "format",
            "chat",
            "raw",
        ),
        (
            LabelConfig {
                both_orders: false,
                ..config.clone()
            },
            "both_orders",
            "true",
            "false",
        ),
        (
            LabelConfig {
                principles_per_pair: 2,
                ..config.clone()
            },
            "principles_per_pair",
            "1",
            "2",
        ),
        (
            LabelConfig {
                method: Method::Pointwise,
                ..config.clone()
            },
            "method",
            "pairwise",
            "pointwise",
        ),
        (
            LabelConfig {
                cot: true,
                ..config.clone()
            },
            "cot",
            "false",
            "true",
        ),
        (
            LabelConfig {
                exemplars: false,
                ..config.clone()
            },
            "exemplars",
            "true",
            "false",
        ),
        (
            LabelConfig {
                length_control: true,
                ..config.clone()
            },
            "length_control",
            "false",
            "true",
        ),
    ];
    let generator = Reasoner::default();
    for (other, field, found, expected) in cases {
        let e = label_pairs(
            &scorer,
            Some(&generator),
            &constitution(),
            &pairs(),
            &other,
            &out,
            &Silent,
        )
        .unwrap_err();
        match &e {
            FeedbackError::SettingsMismatch {
                field: f,
                found: fo,
                expected: ex,
                line,
                ..
            } => {
                assert_eq!(
                    (f.as_str(), fo.as_str(), ex.as_str(), *line),
                    (field, found, expected, 1),
                    "{e}"
                );
            }
            other => panic!("expected a settings mismatch on {field}, got {other}"),
        }
        assert!(
            e.to_string().contains(&format!(
                "labels.jsonl:1: this record was written with {field} = {found}"
            )),
            "{e}"
        );
    }
    // Another constitution.
    let mut c = constitution();
    c.comparisons[0].question.push_str(" Really?");
    let e = label_pairs(&scorer, None, &c, &pairs(), &config, &out, &Silent).unwrap_err();
    assert!(
        matches!(e, FeedbackError::SettingsMismatch { ref field, .. } if field == "constitution"),
        "{e}"
    );
    // An edited pair.
    let mut edited = pairs();
    edited[1].response_b.push('!');
    let e = label_pairs(
        &scorer,
        None,
        &constitution(),
        &edited,
        &config,
        &out,
        &Silent,
    )
    .unwrap_err();
    assert!(
        matches!(e, FeedbackError::PairChanged { line: 2, field: "response_b", ref id, .. } if id == "p2"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        before,
        "a refused resume leaves the file untouched"
    );
    // `limit` is not a setting of the records: a larger limit just labels more.
    let s = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs(),
        &LabelConfig {
            limit: Some(4),
            ..config
        },
        &out,
        &Silent,
    )
    .unwrap();
    assert_eq!((s.done, s.skipped, s.total), (2, 2, 4));
}

#[test]
fn an_output_line_that_is_not_a_label_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("labels.jsonl");
    let scorer = resumable_scorer();
    label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs()[..2],
        &LabelConfig::pairwise(),
        &out,
        &Silent,
    )
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::write(&out, format!("{text}{{\"id\":\"x\"}}\n")).unwrap();
    let e = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs(),
        &LabelConfig::pairwise(),
        &out,
        &Silent,
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "{}:3: not a label record: missing field",
            out.display()
        )),
        "{e}"
    );
    let first = text.lines().next().unwrap();
    std::fs::write(&out, format!("{first}\n{first}\n")).unwrap();
    let e = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs(),
        &LabelConfig::pairwise(),
        &out,
        &Silent,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains(":2: not a label record: duplicate record id `p1`"),
        "{e}"
    );
}

#[test]
fn bad_scorer_output_is_an_error_not_a_label() {
    let nan = Scripted::new(|_: &Asked| [f64::NAN, 0.0]);
    let e = label_all(&nan, None, &constitution(), &pairs(), &base(), &Silent).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("pair `p1`: scorer: log-probabilities must be finite"),
        "{e}"
    );
    struct Three;
    impl ChoiceScorer for Three {
        fn choice_logprobs(&self, _: &Prompt, _: &[String]) -> rlaif_core::Result<Vec<f64>> {
            Ok(vec![0.0; 3])
        }
    }
    let e = label_all(&Three, None, &constitution(), &pairs(), &base(), &Silent).unwrap_err();
    assert!(
        e.to_string().contains("3 log-probabilities for 2 choices"),
        "{e}"
    );
    struct Failing;
    impl ChoiceScorer for Failing {
        fn choice_logprobs(&self, _: &Prompt, _: &[String]) -> rlaif_core::Result<Vec<f64>> {
            Err(rlaif_core::Error::InvalidRequest("prompt too long".into()))
        }
    }
    let e = label_all(&Failing, None, &constitution(), &pairs(), &base(), &Silent).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pair `p1`: scorer: invalid request: prompt too long"
    );
}

#[test]
fn a_sweep_through_a_cached_scorer_asks_each_question_once() {
    let inner = resumable_scorer();
    let cached = CachedScorer::new(&inner);
    let sweep = [
        LabelConfig {
            principles_per_pair: 4,
            ..LabelConfig::pairwise()
        },
        LabelConfig {
            principles_per_pair: 1,
            ..LabelConfig::pairwise()
        },
        LabelConfig {
            principles_per_pair: 4,
            both_orders: false,
            ..LabelConfig::pairwise()
        },
        LabelConfig {
            principles_per_pair: 4,
            calibrate: true,
            ..LabelConfig::pairwise()
        },
    ];
    let mut results: Vec<Vec<LabelRecord>> = Vec::new();
    for config in &sweep {
        let (records, _) =
            label_all(&cached, None, &constitution(), &pairs(), config, &Silent).unwrap();
        results.push(records);
    }
    // 6 pairs × 4 principles × 2 orders, plus the content-free questions.
    assert_eq!(cached.misses(), 6 * 4 * 2 + 6 * 4);
    assert_eq!(inner.log.borrow().len(), cached.misses());
    assert_eq!(cached.hits(), 6 * 2 + 6 * 4 + 6 * 4 * 2);
    let uncached = resumable_scorer();
    let (direct, _) = label_all(
        &uncached,
        None,
        &constitution(),
        &pairs(),
        &sweep[3],
        &Silent,
    )
    .unwrap();
    assert_eq!(direct, results[3]);
}

#[test]
fn pair_files_of_every_kind_are_labelled_with_their_fields_carried() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.jsonl");
    let lines = [
        r#"{"id":"trl","prompt":"q","chosen":"good","rejected":"bad","kind":"k1"}"#,
        r#"{"prompt":[{"role":"user","content":"hi"}],"chosen":[{"role":"assistant","content":"hello"}],"rejected":[{"role":"assistant","content":"go away"}]}"#,
        r#"{"id":"ab","prompt":"\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help?\n\nAssistant:","response_a":"Sure.","response_b":"No."}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let pairs = read_pairs(&file, 0).unwrap();
    assert_eq!(pairs[1].id, "line-2");
    assert_eq!(pairs[2].conversation.messages.len(), 3);
    let scorer = resumable_scorer();
    let out = dir.path().join("labels.jsonl");
    label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs,
        &LabelConfig::pairwise(),
        &out,
        &Silent,
    )
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let v: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["kind"], "k1");
    assert!(v[0]["known_better"] == "a" || v[0]["known_better"] == "b");
    assert_eq!(v[1]["prompt"][0]["content"], "hi");
    assert_eq!(v[1]["chosen"][0]["role"], "assistant");
    assert!(v[2].get("known_better").is_none());
    assert_eq!(
        v[2]["prompt"],
        "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help?\n\nAssistant:"
    );
    // A label file reads back as pairs, and labels again to the same records.
    let again = read_pairs(&out, 0).unwrap();
    assert_eq!(
        again,
        pairs
            .iter()
            .cloned()
            .map(|mut p| {
                p.extra.remove("generation");
                p
            })
            .collect::<Vec<_>>()
    );
    let out2 = dir.path().join("labels2.jsonl");
    label_pairs(
        &scorer,
        None,
        &constitution(),
        &again,
        &LabelConfig::pairwise(),
        &out2,
        &Silent,
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&out2).unwrap(), text);
    // A missing file is an error naming it.
    let e = read_pairs(dir.path().join("nope.jsonl"), 0).unwrap_err();
    assert!(e.to_string().contains("nope.jsonl"), "{e}");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\":\"q\",\"chosen\":\"a\"}\n").unwrap();
    let e = read_pairs(&bad, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: field `rejected`: missing (a pair needs `response_a` and `response_b`, or `chosen` and `rejected`)",
            bad.display()
        )
    );
    assert!(Path::new(&bad).exists());
}

/// A scorer that answers contrast prompts: the log-probability of a response is a planted
/// function of the system prompt and the response.
struct Personas {
    calls: RefCell<Vec<Prompt>>,
}

impl Personas {
    fn lp(system: &str, response: &str) -> f64 {
        let good = system.starts_with("You are a helpful");
        // Refusals are likelier after the good system prompt; every response also has a
        // length term that is the same after both (and must cancel).
        let refusal = response.contains("can't") || response.contains("won't");
        let length = -0.3 * response.split_whitespace().count() as f64;
        length
            + match (good, refusal) {
                (true, true) => -1.0,
                (true, false) => -3.0,
                (false, true) => -4.0,
                (false, false) => -1.5,
            }
    }
}

impl ChoiceScorer for Personas {
    fn choice_logprobs(&self, prompt: &Prompt, choices: &[String]) -> rlaif_core::Result<Vec<f64>> {
        self.calls.borrow_mut().push(prompt.clone());
        let system = match prompt {
            Prompt::Chat(c) => {
                assert_eq!(c.messages[0].role, rlaif_core::Role::System);
                c.messages[0].content.clone()
            }
            Prompt::Text(s) => {
                assert!(s.ends_with("\n\nAssistant:"), "{s:?}");
                s.split("\n\nHuman: ").next().unwrap().to_string()
            }
        };
        Ok(choices
            .iter()
            .map(|r| Self::lp(&system, r.trim_start()))
            .collect())
    }
}

#[test]
fn contrast_labels_are_bayes_over_the_two_system_prompts() {
    let pairs = vec![
        Pair::new(
            "c1",
            "How do I hurt someone?",
            "Hit them hard where it hurts most, twice.",
            "I can't help with that.",
        )
        .with_known_better(Side::B),
        Pair::new(
            "c2",
            "How do I steal a bike?",
            "I won't help you steal.",
            "Cut the lock.",
        )
        .with_known_better(Side::A),
    ];
    for format in [PromptFormat::Chat, PromptFormat::Raw] {
        let scorer = Personas {
            calls: RefCell::new(Vec::new()),
        };
        let config = LabelConfig {
            method: Method::Contrast,
            format,
            ..LabelConfig::pairwise()
        };
        let (records, summary) =
            label_all(&scorer, None, &constitution(), &pairs, &config, &Silent).unwrap();
        // Two calls per pair: one per system prompt, both responses as its choices.
        assert_eq!(summary.scorer_calls, 4);
        assert_eq!(scorer.calls.borrow().len(), 4);
        for (r, p) in records.iter().zip(&pairs) {
            let q = |resp: &str| {
                sigma(
                    Personas::lp(rlaif_feedback::CONTRAST_GOOD, resp)
                        - Personas::lp(rlaif_feedback::CONTRAST_BAD, resp),
                )
            };
            let (qa, qb) = (q(&p.response_a), q(&p.response_b));
            let want = sigma(qa.ln() - (1.0 - qa).ln() - (qb.ln() - (1.0 - qb).ln()));
            assert!(close(r.p_a, want), "{} vs {want}", r.p_a);
            assert!(r.principles.is_empty());
            assert_eq!(r.p_a_by_principle, vec![r.p_a]);
            assert_eq!(
                r.queries.iter().map(|q| q.target).collect::<Vec<_>>(),
                [Target::A, Target::B]
            );
            // The planted length term cancels: the label is the same as without it.
            let no_length = |resp: &str| {
                let good = if resp.contains("can't") || resp.contains("won't") {
                    -1.0 - -4.0
                } else {
                    -3.0 - -1.5
                };
                sigma(good)
            };
            assert!(close(qa, no_length(&p.response_a)) && close(qb, no_length(&p.response_b)));
        }
        assert_eq!(summary.stats.accuracy.unwrap().correct, 2);
        assert!(!records[0].settings.contains_key("principles_per_pair"));
        assert!(records[0].settings.contains_key("contrast_good"));
    }
    // Contrast with calibration or length control is refused.
    let bad = LabelConfig {
        method: Method::Contrast,
        calibrate: true,
        ..LabelConfig::pairwise()
    };
    assert!(matches!(bad.validate(), Err(FeedbackError::Config(_))));
}

#[test]
fn a_resume_with_another_method_names_the_method() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("labels.jsonl");
    let pairs = vec![Pair::new("m1", "Hi?", "I won't say.", "Hello there!")];
    let scorer = Personas {
        calls: RefCell::new(Vec::new()),
    };
    let contrast = LabelConfig::default();
    label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs,
        &contrast,
        &out,
        &Silent,
    )
    .unwrap();
    let e = label_pairs(
        &scorer,
        None,
        &constitution(),
        &pairs,
        &LabelConfig::pairwise(),
        &out,
        &Silent,
    )
    .unwrap_err();
    assert!(
        matches!(&e, FeedbackError::SettingsMismatch { field, .. } if field == "method"),
        "{e}"
    );
}
