//! Sampling pairs with a scripted generator (no model): two seeded responses per prompt,
//! degenerate and identical responses regenerated, resuming after a cut, settings checked.

use rlaif_core::progress::{Observer, Progress, Silent};
use rlaif_core::{Completion, FinishReason, Generator, Prompt, SamplingParams};
use rlaif_feedback::{FeedbackError, PairConfig, PairRecord, Side, generate_pairs, read_pairs};
use rlaif_revision::{DegenerateKind, PromptRecord};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Answers every prompt with a text made of the prompt's user message and the call's seed;
/// prompts containing `same` get the same answer whatever the seed (so response b echoes
/// a), a prompt containing `empty` gets nothing the first time it is seen.
#[derive(Default)]
struct Scripted {
    calls: RefCell<Vec<(usize, u64)>>,
    emptied: RefCell<bool>,
}

impl Generator for Scripted {
    fn generate(
        &self,
        prompts: &[Prompt],
        params: &SamplingParams,
    ) -> rlaif_core::Result<Vec<Completion>> {
        self.calls.borrow_mut().push((prompts.len(), params.seed));
        Ok(prompts
            .iter()
            .map(|p| {
                let Prompt::Chat(c) = p else {
                    panic!("chat is the default")
                };
                let user = &c.messages.last().unwrap().content;
                let text = if user.contains("same") {
                    "Always this one answer, whatever you ask me.".to_string()
                } else if user.contains("empty") && !self.emptied.replace(true) {
                    String::new()
                } else {
                    format!(
                        "An answer numbered {} about something else entirely.",
                        params.seed % 1000
                    )
                };
                Completion {
                    token_ids: vec![1; text.split_whitespace().count()],
                    text,
                    logprobs: vec![],
                    finish_reason: FinishReason::Eos,
                }
            })
            .collect())
    }
}

fn prompts() -> Vec<PromptRecord> {
    (0..7)
        .map(|i| {
            let text = match i {
                2 => "Please give the same reply".to_string(),
                4 => "Reply empty first".to_string(),
                _ => format!("Question number {i} about owls"),
            };
            PromptRecord::new(format!("p{i}"), text)
        })
        .collect()
}

fn read(path: &std::path::Path) -> Vec<PairRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn two_seeded_responses_per_prompt_with_degenerate_ones_regenerated() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pairs.jsonl");
    let config = PairConfig {
        batch_size: 3,
        ..PairConfig::default()
    };
    let g = Scripted::default();
    let summary = generate_pairs(&g, &prompts(), &config, &out, &Silent).unwrap();
    let records = read(&out);
    // p2's response b always echoes its response a: dropped after the attempts.
    assert_eq!(summary.dropped, 1);
    assert_eq!(summary.done, 6);
    assert!(records.iter().all(|r| r.id != "p2"));
    for r in &records {
        assert_ne!(
            r.response_a, r.response_b,
            "{}: the two samples differ",
            r.id
        );
        assert!(!r.response_a.is_empty() && !r.response_b.is_empty());
        assert_eq!((r.seed, r.temperature, r.max_new_tokens), (0, 1.0, 256));
    }
    // p4's empty first answer was regenerated and recorded as such.
    let p4 = records.iter().find(|r| r.id == "p4").unwrap();
    assert!(
        p4.degenerate
            .iter()
            .any(|d| d.response == Side::A && d.kind == DegenerateKind::Empty)
    );
    assert!(summary.degenerate.echo >= 3 && summary.degenerate.empty >= 1);
    // Response a and b of a chunk come from calls with different seeds; every call's seed
    // is distinct.
    let seeds: Vec<u64> = g.calls.borrow().iter().map(|c| c.1).collect();
    let mut unique = seeds.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seeds.len());
    // The pair file reads back as pairs to label, with the prompt as a user message.
    let pairs = read_pairs(&out, 0).unwrap();
    assert_eq!(pairs.len(), 6);
    assert_eq!(pairs[0].response_a, records[0].response_a);
    assert_eq!(pairs[0].known_better, None);
}

/// Stops after `n` chunks.
struct StopAfter(AtomicUsize);

impl Observer for StopAfter {
    fn update(&self, _: &Progress) {}
    fn should_stop(&self) -> bool {
        self.0.fetch_sub(1, Ordering::SeqCst) == 0
    }
}

#[test]
fn a_resumed_run_writes_the_same_file_and_other_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.jsonl");
    let cut = dir.path().join("cut.jsonl");
    let config = PairConfig {
        batch_size: 2,
        ..PairConfig::default()
    };
    generate_pairs(&Scripted::default(), &prompts(), &config, &whole, &Silent).unwrap();
    let s = generate_pairs(
        &Scripted::default(),
        &prompts(),
        &config,
        &cut,
        &StopAfter(AtomicUsize::new(1)),
    )
    .unwrap();
    assert!(s.stopped);
    assert!(read(&cut).len() < read(&whole).len());
    // A torn last line, as a crash mid-write leaves.
    let mut text = std::fs::read_to_string(&cut).unwrap();
    text.push_str("{\"id\": \"p9\", \"respon");
    std::fs::write(&cut, text).unwrap();
    let s = generate_pairs(&Scripted::default(), &prompts(), &config, &cut, &Silent).unwrap();
    assert!(s.skipped > 0);
    assert_eq!(std::fs::read(&cut).unwrap(), std::fs::read(&whole).unwrap());
    // A rerun writes nothing new: only the chunk of the dropped prompt (p2, whose second
    // answer always echoes the first) is sampled again, with the same seeds, and it is
    // dropped again.
    let g = Scripted::default();
    let s = generate_pairs(&g, &prompts(), &config, &cut, &Silent).unwrap();
    assert_eq!((s.done, s.dropped), (0, 1));
    assert!(
        g.calls.borrow().iter().all(|c| c.0 <= 2),
        "one chunk of two prompts"
    );
    assert_eq!(std::fs::read(&cut).unwrap(), std::fs::read(&whole).unwrap());
    // Another temperature is refused with the setting and the line named.
    let other = PairConfig {
        temperature: 0.7,
        ..config
    };
    let e = generate_pairs(&Scripted::default(), &prompts(), &other, &cut, &Silent).unwrap_err();
    assert!(
        matches!(&e, FeedbackError::SettingsMismatch { field, line: 1, .. } if field == "temperature"),
        "{e}"
    );
    assert!(e.to_string().contains("temperature"), "{e}");
}
