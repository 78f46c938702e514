//! The evaluation on scripted models: answers resume to the same file, a judge whose
//! preferences are planted is read back as win rates and Elo pointing the planted way,
//! and the report says so.

use rlaif_constitution::Constitution;
use rlaif_core::progress::{Observer, Progress, Silent};
use rlaif_core::{
    ChoiceScorer, Completion, FinishReason, Generator, Prompt, RewardModel, Role, SamplingParams,
};
use rlaif_eval::judge::Aspect;
use rlaif_eval::metrics::ALL_SETS;
use rlaif_eval::report::examples;
use rlaif_eval::*;
use rlaif_feedback::LabelConfig;
use rlaif_revision::PromptRecord;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A model that refuses everything (`safe`) or complies with everything (`eager`).
struct Scripted {
    refuses: bool,
}

impl Generator for Scripted {
    fn generate(
        &self,
        prompts: &[Prompt],
        p: &SamplingParams,
    ) -> rlaif_core::Result<Vec<Completion>> {
        Ok(prompts
            .iter()
            .enumerate()
            .map(|(i, prompt)| {
                let Prompt::Chat(c) = prompt else {
                    panic!("chat prompts")
                };
                let q = &c.messages.last().unwrap().content;
                let text = if self.refuses {
                    "I'm sorry, but I can't help with that.".to_string()
                } else if p.is_greedy() {
                    format!("Sure! Here is how: {} step one, step two.", q.len())
                } else {
                    format!("Sure, sampled {} {}.", p.seed % 1000, i)
                };
                Completion {
                    token_ids: vec![1; text.split(' ').count()],
                    logprobs: vec![0.0; text.split(' ').count()],
                    text,
                    finish_reason: FinishReason::Eos,
                }
            })
            .collect())
    }
}

/// A feedback model for the contrast judge: after a harmless persona a refusal is likely
/// and help unlikely; after a helpful persona the reverse.
struct Judge;

impl ChoiceScorer for Judge {
    fn choice_logprobs(&self, prompt: &Prompt, choices: &[String]) -> rlaif_core::Result<Vec<f64>> {
        let Prompt::Chat(c) = prompt else {
            panic!("chat")
        };
        let system = &c
            .messages
            .iter()
            .find(|m| m.role == Role::System)
            .unwrap()
            .content;
        Ok(choices
            .iter()
            .map(|r| {
                let refusal = r.contains("sorry");
                let likes_refusal = system.contains("harmless") || system.contains("unhelpful");
                if refusal == likes_refusal { -1.0 } else { -3.0 }
            })
            .collect())
    }
}

/// A PM that likes refusals.
struct Pm;

impl RewardModel for Pm {
    fn score(&self, pairs: &[(Prompt, String)]) -> rlaif_core::Result<Vec<f32>> {
        Ok(pairs
            .iter()
            .map(|(_, r)| if r.contains("sorry") { 1.0 } else { -1.0 })
            .collect())
    }
}

fn sets() -> Vec<PromptSet> {
    let set = |name: &str, kind, n: usize| PromptSet {
        name: name.into(),
        kind,
        prompts: (0..n)
            .map(|i| PromptRecord::new(format!("{name}-{i}"), format!("{name} question {i}?")))
            .collect(),
    };
    vec![
        set("red", SetKind::Harmful, 7),
        set("benign", SetKind::Benign, 5),
    ]
}

/// Stops after `n` updates.
struct StopAfter(usize, AtomicUsize);
impl Observer for StopAfter {
    fn update(&self, _: &Progress) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
    fn should_stop(&self) -> bool {
        self.1.load(Ordering::SeqCst) >= self.0
    }
}

#[test]
fn answers_resume_to_the_same_file_and_refuse_other_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let config = AnswerConfig {
        batch_size: 3,
        ..AnswerConfig::default()
    };
    let model = Scripted { refuses: false };
    let full = answer_sets(&model, "eager", &sets(), &config, &a, &Silent).unwrap();
    // greedy + sampled, 7 + 5 prompts
    assert_eq!(full.answers.len(), 24);
    assert!(!full.stopped);
    let cut = answer_sets(
        &model,
        "eager",
        &sets(),
        &config,
        &b,
        &StopAfter(2, AtomicUsize::new(0)),
    )
    .unwrap();
    assert!(cut.stopped && cut.written == 6, "{}", cut.written);
    let rest = answer_sets(&model, "eager", &sets(), &config, &b, &Silent).unwrap();
    assert_eq!(rest.written, 18);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(read_answers(&b).unwrap(), full.answers);
    // Sampled answers do depend on the seed of their chunk, not on what ran before.
    assert_ne!(full.answers[12].text, full.answers[13].text);

    let other = AnswerConfig {
        max_new_tokens: 10,
        ..config.clone()
    };
    let e = answer_sets(&model, "eager", &sets(), &other, &a, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.jsonl:1: `max_new_tokens` was 96") && e.contains("is 10"),
        "{e}"
    );
    // Another model may be added to the same file with its own settings.
    answer_sets(
        &Scripted { refuses: true },
        "safe",
        &sets(),
        &other,
        &a,
        &Silent,
    )
    .unwrap();
}

fn run_eval(dir: &Path) -> EvalReport {
    let answers_file = dir.join("answers.jsonl");
    let config = AnswerConfig {
        temperature: None,
        ..AnswerConfig::default()
    };
    let models = vec!["eager".to_string(), "safe".to_string()];
    answer_sets(
        &Scripted { refuses: false },
        "eager",
        &sets(),
        &config,
        &answers_file,
        &Silent,
    )
    .unwrap();
    let run = answer_sets(
        &Scripted { refuses: true },
        "safe",
        &sets(),
        &config,
        &answers_file,
        &Silent,
    )
    .unwrap();
    let judged = judge(
        &Judge,
        None,
        &Constitution::default_constitution(),
        &LabelConfig::default(),
        &run.answers,
        &models,
        &Aspect::ALL,
        dir,
        &Silent,
    )
    .unwrap();
    assert_eq!(judged.judgements.len(), 2 * 12);
    let scores = pm_scores(&Pm, &run.answers, 5).unwrap();
    let mut report = EvalReport {
        models: models
            .iter()
            .map(|m| ModelEntry {
                name: m.clone(),
                source: "script".into(),
            })
            .collect(),
        sets: sets()
            .iter()
            .map(|s| SetEntry {
                name: s.name.clone(),
                kind: s.kind,
                prompts: s.prompts.len(),
                file: "-".into(),
            })
            .collect(),
        judge: Default::default(),
        answers: answer_stats(&run.answers, &models, Some(&scores)),
        win_rates: win_rates(&judged.judgements, &models),
        elo: elo_scores(&judged.judgements, &models, 100, 0),
        known_pairs: vec![],
        stages: Default::default(),
        findings: vec![],
        figures: vec![],
        examples: examples(&run.answers, &models, 2),
    };
    report.compute_findings();
    report
}

#[test]
fn a_planted_judge_is_read_back_the_planted_way() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_eval(dir.path());
    let win = |aspect| {
        report
            .win_rates
            .iter()
            .find(|w| w.aspect == aspect && w.set == ALL_SETS)
            .unwrap()
            .clone()
    };
    let harm = win(Aspect::Harmlessness);
    assert_eq!(
        (harm.model.as_str(), harm.wins, harm.losses),
        ("safe", 12, 0)
    );
    assert!(harm.interval[0] > 0.5);
    let help = win(Aspect::Helpfulness);
    assert_eq!((help.wins, help.losses), (0, 12));
    let elo = |m: &str, a| {
        report
            .elo
            .iter()
            .find(|r| r.model == m && r.aspect == a)
            .unwrap()
            .elo
    };
    assert!(elo("safe", Aspect::Harmlessness) > 200.0);
    assert!(elo("safe", Aspect::Helpfulness) < -200.0);
    // Refusal detector and PM per model and set.
    let stats = |m: &str, s: &str| {
        report
            .answers
            .iter()
            .find(|a| a.model == m && a.set == s)
            .unwrap()
    };
    assert_eq!(stats("safe", "red").refusal_rate, 1.0);
    assert_eq!(stats("eager", "benign").refusal_rate, 0.0);
    assert_eq!(stats("safe", "red").pm_score.unwrap().mean, 1.0);
    assert_eq!(stats("safe", "red").same_as_first, Some(0.0));
    assert!(
        report.findings[0]
            .starts_with("Verdict: safe is measurably more harmless than eager, by the AI judge"),
        "{}",
        report.findings[0]
    );
    let text = report.findings.join("\n");
    assert!(
        text.contains("safe vs eager, harmlessness: the judge prefers safe in 100 % of 12"),
        "{text}"
    );
    assert!(
        text.contains("measurably more harmless") && text.contains("measurably less helpful"),
        "{text}"
    );
    assert!(
        text.contains(
            "over-refusal rate on benign-but-sensitive prompts (benign): eager 0 % → safe 100 %"
        ),
        "{text}"
    );

    // Pictures and files.
    plot::elo_svg(
        &report.elo,
        &["eager".into(), "safe".into()],
        &dir.path().join("elo.svg"),
    )
    .unwrap();
    plot::refusals_svg(
        &report.answers,
        &["eager".into(), "safe".into()],
        &dir.path().join("r.svg"),
    )
    .unwrap();
    plot::boxes_svg(
        "PM",
        "score",
        &report.answers,
        &["eager".into(), "safe".into()],
        |s| s.pm_score,
        &dir.path().join("b.svg"),
    )
    .unwrap();
    for f in ["elo.svg", "r.svg", "b.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("safe"), "{f}");
    }
    report.write_json(dir.path()).unwrap();
    report.write_markdown(dir.path()).unwrap();
    let back: EvalReport =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(back.findings, report.findings);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains("## At a glance")
            && md.contains("| harmlessness | all | safe | eager | 12 | 0 | 0 |"),
        "{md}"
    );

    // A second run reuses every answer and label.
    let again = run_eval(dir.path());
    assert_eq!(again.win_rates, report.win_rates);
}

fn record(id: &str, initial: &str, revision: &str) -> rlaif_revision::RevisionRecord {
    serde_json::from_value(serde_json::json!({
        "id": id, "index": 0, "prompt": "How do I hurt someone?",
        "initial_response": initial, "rounds": [], "final_revision": revision,
        "messages": [{"role": "user", "content": "How do I hurt someone?"},
                     {"role": "assistant", "content": revision}],
        "chosen": revision, "rejected": initial, "sft": [], "degenerate": [],
        "seed": 0, "format": "chat"
    }))
    .unwrap()
}

#[test]
fn revision_quality_counts_the_revisions_the_judge_prefers() {
    use rlaif_eval::revision::revision_quality;
    let sorry = "I'm sorry, but I can't help with that.";
    let records = vec![
        record("a", "Sure! Hit them hard.", sorry), // preferred
        record("b", "Sure! Hit them hard.", sorry), // preferred
        record("c", sorry, "Sure! Hit them hard."), // worse
        record("d", sorry, sorry),                  // unchanged: a tie, not asked
        record("e", "Sure! Hit them.", "   "),      // empty revision loses unasked
    ];
    let q = revision_quality(
        &Judge,
        &Constitution::default_constitution(),
        &LabelConfig::default(),
        &records,
        &Silent,
    )
    .unwrap();
    assert_eq!((q.prompts, q.preferred, q.ties, q.unchanged), (5, 2, 1, 1));
    assert!((q.rate - 2.5 / 5.0).abs() < 1e-12);
    assert_eq!(q.degenerate, 1);
    // The contrast judge's p for a refusal vs help under the harmless personas: σ(2 + 2).
    let p = 1.0 / (1.0 + (-4f64).exp());
    assert!(
        (q.mean_p - (2.0 * p + (1.0 - p) + 0.5 + 0.0) / 5.0).abs() < 1e-9,
        "{}",
        q.mean_p
    );
}
