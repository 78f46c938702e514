//! Orchestration tests of the critique → revision loop, with a deterministic test double
//! of the `Generator` trait (no model).

use rlaif_constitution::{Constitution, PrincipleSampler, PromptFormat, Replacement};
use rlaif_core::{Completion, FinishReason, Generator, Prompt, Role, SamplingParams};
use rlaif_revision::{
    DegenerateKind, DegeneratePolicy, DroppedRecord, PromptRecord, RevisionConfig, RevisionError,
    Stage, constitution_fingerprint, dropped_path, read_prompts, read_records, run_revision,
};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What the test generator does with a prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Response,
    Critique,
    Revision,
}

/// A deterministic generator: the answer is a function of the stage (read off the
/// prompt), a hash of the whole prompt, the call's seed and the slot in the batch, like a
/// seeded sampler would be. Prompts mentioning markers misbehave:
/// `EMPTY-ONCE`: the first initial response is empty; `ALWAYS-ECHO`: every revision
/// repeats the revision request; `LOOP-ONCE`: the first critique loops.
/// `fail_after`: calls after that many fail (a simulated crash).
#[derive(Default)]
struct TestGen {
    constitution: Constitution,
    fail_after: Option<usize>,
    calls: RefCell<usize>,
    seen: RefCell<HashMap<(String, u8), usize>>,
    log: RefCell<Vec<(Prompt, SamplingParams)>>,
}

impl TestGen {
    fn new() -> Self {
        Self {
            constitution: Constitution::default_constitution(),
            ..Self::default()
        }
    }

    fn kind(&self, p: &Prompt) -> (Kind, String, String) {
        match p {
            Prompt::Chat(c) => {
                let all: Vec<&str> = c.messages.iter().map(|m| m.content.as_str()).collect();
                let all = all.join("\n");
                let last = c.messages.last().unwrap();
                assert_eq!(last.role, Role::User);
                let kind = if self
                    .constitution
                    .principles
                    .iter()
                    .any(|q| q.critique == last.content)
                {
                    Kind::Critique
                } else if self
                    .constitution
                    .principles
                    .iter()
                    .any(|q| q.revision == last.content)
                {
                    Kind::Revision
                } else {
                    Kind::Response
                };
                (kind, last.content.clone(), all)
            }
            Prompt::Text(t) => {
                let kind = if t.ends_with("\n\nCritique:") {
                    Kind::Critique
                } else if t.ends_with("\n\nRevision:") {
                    Kind::Revision
                } else {
                    assert!(t.ends_with("\n\nAssistant:"), "{t:?}");
                    Kind::Response
                };
                let req = t.rsplit("RevisionRequest: ").next().unwrap_or("");
                let req = req.strip_suffix("\n\nRevision:").unwrap_or(req).to_string();
                (kind, req, t.clone())
            }
        }
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl Generator for TestGen {
    fn generate(
        &self,
        prompts: &[Prompt],
        params: &SamplingParams,
    ) -> rlaif_core::Result<Vec<Completion>> {
        let mut calls = self.calls.borrow_mut();
        *calls += 1;
        if self.fail_after.is_some_and(|n| *calls > n) {
            return Err(rlaif_core::Error::InvalidRequest("simulated crash".into()));
        }
        let mut out = Vec::new();
        for (slot, p) in prompts.iter().enumerate() {
            self.log.borrow_mut().push((p.clone(), params.clone()));
            let (kind, last_request, all) = self.kind(p);
            let full = serde_json::to_string(p).unwrap();
            let mut seen = self.seen.borrow_mut();
            // Count per (user question, stage), whatever the round.
            let question = all
                .find("Question number")
                .map_or(all.as_str(), |k| &all[k..(k + 20).min(all.len())]);
            let count = seen.entry((question.to_string(), kind as u8)).or_insert(0);
            *count += 1;
            let text = if kind == Kind::Response && all.contains("EMPTY-ONCE") && *count == 1 {
                "   ".to_string()
            } else if kind == Kind::Revision && all.contains("ALWAYS-ECHO") {
                last_request
            } else if kind == Kind::Critique && all.contains("LOOP-ONCE") && *count == 1 {
                "the the the the ".repeat(10)
            } else {
                let tag = match kind {
                    Kind::Response => "response",
                    Kind::Critique => "critique",
                    Kind::Revision => "revision",
                };
                format!(
                    " {tag} {:016x} seed {:x} slot {slot} ",
                    fnv(&full),
                    params.seed
                )
            };
            out.push(Completion {
                token_ids: vec![7; text.len() / 4 + 1],
                logprobs: vec![-1.0; text.len() / 4 + 1],
                text,
                finish_reason: FinishReason::Eos,
            });
        }
        Ok(out)
    }
}

fn prompts(n: usize) -> Vec<PromptRecord> {
    (0..n)
        .map(|i| PromptRecord {
            id: format!("p-{i:03}"),
            prompt: format!("Question number {i}: how do I do thing {i}?"),
            category: Some(if i % 2 == 0 { "even" } else { "odd" }.into()),
        })
        .collect()
}

fn config(rounds: usize, batch_size: usize) -> RevisionConfig {
    RevisionConfig {
        rounds,
        batch_size,
        seed: 7,
        ..RevisionConfig::default()
    }
}

fn run(
    g: &TestGen,
    p: &[PromptRecord],
    c: &RevisionConfig,
    out: &Path,
) -> rlaif_revision::Result<rlaif_revision::RunSummary> {
    run_revision(g, &Constitution::default_constitution(), p, c, out)
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    (dir, out)
}

#[test]
fn records_are_well_formed() {
    let (_d, out) = tmp();
    let ps = prompts(10);
    let cfg = config(3, 3);
    let g = TestGen::new();
    let s = run(&g, &ps, &cfg, &out).unwrap();
    assert_eq!((s.total, s.done, s.skipped, s.dropped), (10, 10, 0, 0));
    // 4 chunks × (1 response + 3 × 2) calls.
    assert_eq!(s.generator_calls, 4 * 7);
    assert_eq!(s.degenerate.total(), 0);
    assert!(s.tokens > 0);

    let constitution = Constitution::default_constitution();
    let sampler = PrincipleSampler::for_critiques(&constitution, cfg.seed).unwrap();
    let recs = read_records(&out).unwrap();
    assert_eq!(recs.len(), 10);
    let log = g.log.borrow();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.id, ps[i].id);
        assert_eq!(r.index, i);
        assert_eq!(r.prompt, ps[i].prompt);
        assert_eq!(r.category, ps[i].category);
        assert_eq!(r.seed, 7);
        assert_eq!(r.format, PromptFormat::Chat);
        assert!(r.initial_response.starts_with("response "), "{r:?}");
        assert_eq!(r.initial_response, r.initial_response.trim());
        let draws = sampler.draw_chain(i, 3, Replacement::With).unwrap();
        assert_eq!(r.rounds.len(), 3);
        for (k, round) in r.rounds.iter().enumerate() {
            assert_eq!(round.round, k);
            assert_eq!(round.principle_id, draws[k].principle_id);
            let p = constitution.principle(&round.principle_id).unwrap();
            assert_eq!(round.critique_request, p.critique);
            assert_eq!(round.revision_request, p.revision);
            assert!(round.critique.starts_with("critique "));
            assert!(round.revision.starts_with("revision "));
            // The critique prompt of this round holds the previous round's revision (or
            // the initial response) as the last assistant text before the request.
            let previous = if k == 0 {
                &r.initial_response
            } else {
                &r.rounds[k - 1].revision
            };
            assert!(
                log.iter().any(|(p, _)| matches!(p, Prompt::Chat(c)
                    if c.messages.len() >= 2
                        && c.messages[c.messages.len() - 1].content == round.critique_request
                        && &c.messages[c.messages.len() - 2].content == previous)),
                "no critique prompt of round {k} of {} follows {previous:?}",
                r.id
            );
        }
        assert_eq!(r.final_revision, r.rounds[2].revision);
        assert_eq!(r.chosen, r.final_revision);
        assert_eq!(r.rejected, r.initial_response);
        assert_eq!(r.messages.messages.len(), 2);
        assert_eq!(r.messages.messages[0].role, Role::User);
        assert_eq!(r.messages.messages[0].content, r.prompt);
        assert_eq!(r.messages.messages[1].role, Role::Assistant);
        assert_eq!(r.messages.messages[1].content, r.final_revision);
        assert_eq!(r.sft.len(), 1);
        assert_eq!(
            (r.sft[0].prompt.as_str(), r.sft[0].completion.as_str()),
            (r.prompt.as_str(), r.final_revision.as_str())
        );
        assert!(r.degenerate.is_empty());
    }
    // Sampling parameters: temperature 1 by default, per-stage budgets.
    assert!(
        log.iter()
            .all(|(_, p)| p.temperature == 1.0 && p.stop.is_empty())
    );
    // The JSON line has the documented keys.
    let line = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for key in [
        "id",
        "category",
        "index",
        "prompt",
        "initial_response",
        "rounds",
        "final_revision",
        "messages",
        "chosen",
        "rejected",
        "sft",
        "degenerate",
        "seed",
        "format",
        "emit_every_round",
        "replacement",
        "constitution",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {line}");
    }
    assert_eq!(v["messages"][0]["role"], "user");
    assert_eq!(v["format"], "chat");
    assert_eq!(v["emit_every_round"], false);
    assert_eq!(v["replacement"], "with");
    assert_eq!(
        v["constitution"],
        constitution_fingerprint(&Constitution::default_constitution())
    );
    assert_eq!(recs[0].replacement, Some(Replacement::With));
}

#[test]
fn every_round_can_be_emitted_and_raw_format_works() {
    let (_d, out) = tmp();
    let cfg = RevisionConfig {
        emit_every_round: true,
        format: PromptFormat::Raw,
        ..config(2, 4)
    };
    let g = TestGen::new();
    run(&g, &prompts(5), &cfg, &out).unwrap();
    let recs = read_records(&out).unwrap();
    assert_eq!(recs.len(), 5);
    for r in &recs {
        assert_eq!(r.format, PromptFormat::Raw);
        let completions: Vec<&str> = r.sft.iter().map(|p| p.completion.as_str()).collect();
        let revisions: Vec<&str> = r.rounds.iter().map(|x| x.revision.as_str()).collect();
        assert_eq!(completions, revisions);
        assert!(r.sft.iter().all(|p| p.prompt == r.prompt));
    }
    let log = g.log.borrow();
    assert!(
        log.iter().all(
            |(p, s)| matches!(p, Prompt::Text(_)) && s.stop.contains(&"\n\nHuman:".to_string())
        )
    );
    assert!(log.iter().any(
        |(p, _)| matches!(p, Prompt::Text(t) if t.starts_with("\n\nHuman: Question number 0"))
    ));
}

#[test]
fn same_seed_same_file_other_seed_other_file() {
    let (_d, out) = tmp();
    let ps = prompts(7);
    run(&TestGen::new(), &ps, &config(2, 3), &out).unwrap();
    let a = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    run(&TestGen::new(), &ps, &config(2, 3), &out).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), a);
    std::fs::remove_file(&out).unwrap();
    run(
        &TestGen::new(),
        &ps,
        &RevisionConfig {
            seed: 8,
            ..config(2, 3)
        },
        &out,
    )
    .unwrap();
    assert_ne!(std::fs::read_to_string(&out).unwrap(), a);
}

fn ids_of(path: &Path) -> Vec<String> {
    read_records(path)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[test]
fn resume_after_a_crash_gives_the_same_records() {
    let ps = prompts(11);
    let cfg = config(2, 3);
    let (_d, reference) = tmp();
    run(&TestGen::new(), &ps, &cfg, &reference).unwrap();
    let want = std::fs::read_to_string(&reference).unwrap();
    assert_eq!(want.lines().count(), 11);

    // A crash in the third chunk (5 calls per chunk): two chunks are written.
    let (_d2, out) = tmp();
    let crashing = TestGen {
        fail_after: Some(12),
        ..TestGen::new()
    };
    let e = run(&crashing, &ps, &cfg, &out).unwrap_err();
    assert!(matches!(e, RevisionError::Generator(_)), "{e}");
    assert_eq!(ids_of(&out).len(), 6);
    let s = run(&TestGen::new(), &ps, &cfg, &out).unwrap();
    assert_eq!((s.skipped, s.done), (6, 5));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
    // Once more: nothing to do.
    let s = run(&TestGen::new(), &ps, &cfg, &out).unwrap();
    assert_eq!((s.skipped, s.done, s.generator_calls), (11, 0, 0));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
}

#[test]
fn resume_after_a_torn_write_gives_the_same_records() {
    let ps = prompts(11);
    let cfg = config(2, 3);
    let (_d, out) = tmp();
    run(&TestGen::new(), &ps, &cfg, &out).unwrap();
    let want = std::fs::read_to_string(&out).unwrap();
    // Keep 4 whole lines (a chunk and a part of the next) and half of the fifth.
    let lines: Vec<&str> = want.lines().collect();
    let mut torn = lines[..4].join("\n") + "\n";
    torn.push_str(&lines[4][..lines[4].len() / 2]);
    std::fs::write(&out, &torn).unwrap();
    let s = run(&TestGen::new(), &ps, &cfg, &out).unwrap();
    assert_eq!((s.skipped, s.done), (4, 7));
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        got, want,
        "the partially finished chunk is regenerated identically"
    );
    let ids = ids_of(&out);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no duplicates"
    );
}

#[test]
fn resume_with_a_limit_then_all() {
    let ps = prompts(9);
    let cfg = config(1, 4);
    let (_d, reference) = tmp();
    run(&TestGen::new(), &ps, &cfg, &reference).unwrap();
    let (_d2, out) = tmp();
    let s = run(
        &TestGen::new(),
        &ps,
        &RevisionConfig {
            limit: Some(5),
            ..cfg.clone()
        },
        &out,
    )
    .unwrap();
    assert_eq!((s.total, s.done), (5, 5));
    let s = run(&TestGen::new(), &ps, &cfg, &out).unwrap();
    assert_eq!((s.skipped, s.done), (5, 4));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&reference).unwrap()
    );
}

fn marked_prompts() -> Vec<PromptRecord> {
    let mut ps = prompts(6);
    ps[1].prompt.push_str(" EMPTY-ONCE");
    ps[3].prompt.push_str(" ALWAYS-ECHO");
    ps[4].prompt.push_str(" LOOP-ONCE");
    ps
}

#[test]
fn degenerate_outputs_are_retried_then_dropped() {
    let (_d, out) = tmp();
    let cfg = RevisionConfig {
        degenerate: DegeneratePolicy::Retry { max_attempts: 2 },
        ..config(2, 3)
    };
    let s = run(&TestGen::new(), &marked_prompts(), &cfg, &out).unwrap();
    assert_eq!((s.done, s.dropped), (5, 1));
    assert_eq!(s.degenerate.empty, 1);
    assert_eq!(s.degenerate.repetition, 1);
    assert_eq!(
        s.degenerate.echo, 2,
        "both attempts of round 0's revision echo"
    );
    assert_eq!(s.retried, 3);
    let recs = read_records(&out).unwrap();
    let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["p-000", "p-001", "p-002", "p-004", "p-005"]);
    assert_eq!(recs[1].degenerate.len(), 1);
    assert_eq!(recs[1].degenerate[0].stage, Stage::Response);
    assert_eq!(recs[1].degenerate[0].kind, DegenerateKind::Empty);
    assert!(recs[1].initial_response.starts_with("response"));
    assert_eq!(recs[3].degenerate[0].stage, Stage::Critique);
    assert_eq!(recs[3].degenerate[0].round, Some(0));
    assert_eq!(recs[3].degenerate[0].kind, DegenerateKind::Repetition);
    assert!(recs[0].degenerate.is_empty());

    let dropped: Vec<DroppedRecord> = std::fs::read_to_string(dropped_path(&out))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].id, "p-003");
    assert_eq!(
        (dropped[0].stage, dropped[0].round),
        (Stage::Revision, Some(0))
    );
    assert_eq!(dropped[0].degenerate.len(), 2);

    // A rerun skips the dropped prompt too.
    let s = run(&TestGen::new(), &marked_prompts(), &cfg, &out).unwrap();
    assert_eq!(
        (s.skipped, s.done, s.dropped, s.generator_calls),
        (6, 0, 0, 0)
    );
}

#[test]
fn drop_policy_drops_at_first_degenerate_output() {
    let (_d, out) = tmp();
    let cfg = RevisionConfig {
        degenerate: DegeneratePolicy::Drop,
        ..config(2, 3)
    };
    let s = run(&TestGen::new(), &marked_prompts(), &cfg, &out).unwrap();
    assert_eq!((s.done, s.dropped, s.retried), (3, 3, 0));
    assert_eq!(s.degenerate.total(), 3);
    assert_eq!(ids_of(&out), ["p-000", "p-002", "p-005"]);
}

#[test]
fn bad_configuration_and_bad_generator_are_errors() {
    let (_d, out) = tmp();
    let e = run(&TestGen::new(), &prompts(2), &config(0, 3), &out).unwrap_err();
    assert!(matches!(e, RevisionError::Config(_)), "{e}");
    let e = run(
        &TestGen::new(),
        &prompts(2),
        &RevisionConfig {
            batch_size: 0,
            ..config(1, 1)
        },
        &out,
    )
    .unwrap_err();
    assert!(matches!(e, RevisionError::Config(_)), "{e}");
    let e = run(
        &TestGen::new(),
        &prompts(2),
        &RevisionConfig {
            top_p: 0.0,
            ..config(1, 1)
        },
        &out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("top_p"), "{e}");
    let e = run(
        &TestGen::new(),
        &prompts(2),
        &RevisionConfig {
            replacement: Replacement::Without,
            ..config(40, 2)
        },
        &out,
    )
    .unwrap_err();
    assert!(matches!(e, RevisionError::Constitution(_)), "{e}");
    assert_eq!(ids_of(&out).len(), 0);

    struct Short;
    impl Generator for Short {
        fn generate(
            &self,
            _: &[Prompt],
            _: &SamplingParams,
        ) -> rlaif_core::Result<Vec<Completion>> {
            Ok(Vec::new())
        }
    }
    let e = run_revision(
        &Short,
        &Constitution::default_constitution(),
        &prompts(2),
        &config(1, 2),
        &out,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            RevisionError::CompletionCount {
                expected: 2,
                got: 0
            }
        ),
        "{e}"
    );
}

#[test]
fn malformed_prompt_files_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(
        &p,
        "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":17}\n",
    )
    .unwrap();
    let e = read_prompts(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.jsonl:2: field `prompt`: expected a string, got a number"),
        "{e}"
    );
    std::fs::write(
        &p,
        "{\"id\":\"a\",\"prompt\":\"x\"}\n\n{\"id\":\"a\",\"prompt\":\"y\"}\n",
    )
    .unwrap();
    let e = read_prompts(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.jsonl:3: field `id`: duplicate id `a` (first used on line 1)"),
        "{e}"
    );
    let e = read_prompts(dir.path().join("missing.jsonl")).unwrap_err();
    assert!(
        matches!(e, RevisionError::Io { .. }) && e.to_string().contains("missing.jsonl"),
        "{e}"
    );
}

#[test]
fn a_corrupt_output_line_is_an_error_and_nothing_is_lost() {
    let (_d, out) = tmp();
    let ps = prompts(4);
    run(&TestGen::new(), &ps, &config(1, 2), &out).unwrap();
    let mut text = std::fs::read_to_string(&out).unwrap();
    text.insert_str(0, "garbage\n");
    std::fs::write(&out, &text).unwrap();
    let e = run(&TestGen::new(), &ps, &config(1, 2), &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("out.jsonl:1: not a revision record"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
}

#[test]
fn shipped_prompt_sets_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/prompts");
    // Training pools and the held-out evaluation sets: no id or text in two files.
    let mut all_ids = HashSet::new();
    let mut all_texts = HashSet::new();
    for (file, prefix, at_least) in [
        ("red_team.jsonl", "rt-", 200),
        ("red_team_eval.jsonl", "rt-", 25),
        ("helpful.jsonl", "hp-", 190),
        ("helpful_eval.jsonl", "hp-", 20),
        ("benign_sensitive.jsonl", "bs-", 40),
    ] {
        let ps = read_prompts(root.join(file)).unwrap();
        assert!(ps.len() >= at_least, "{file}: {} prompts", ps.len());
        for p in &ps {
            assert!(all_ids.insert(p.id.clone()), "{file}: {} twice", p.id);
            assert!(all_texts.insert(p.prompt.clone()), "{file}: {} twice", p.id);
        }
        let ids: HashSet<&str> = ps.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), ps.len());
        let texts: HashSet<&str> = ps.iter().map(|p| p.prompt.as_str()).collect();
        assert_eq!(texts.len(), ps.len(), "{file}: repeated prompt text");
        for p in &ps {
            assert!(p.id.starts_with(prefix), "{}", p.id);
            assert!(
                p.category.as_deref().is_some_and(|c| !c.is_empty()),
                "{}",
                p.id
            );
        }
    }
}

#[test]
fn principle_draws_do_not_depend_on_batching() {
    let ps = prompts(8);
    let (_d, a) = tmp();
    let (_d2, b) = tmp();
    run(&TestGen::new(), &ps, &config(3, 3), &a).unwrap();
    run(&TestGen::new(), &ps, &config(3, 5), &b).unwrap();
    let principles = |p: &Path| -> Vec<Vec<String>> {
        read_records(p)
            .unwrap()
            .into_iter()
            .map(|r| r.rounds.into_iter().map(|x| x.principle_id).collect())
            .collect()
    };
    assert_eq!(principles(&a), principles(&b));
}

#[test]
fn summary_reads_well() {
    let (_d, out) = tmp();
    let s = run(&TestGen::new(), &marked_prompts(), &config(1, 6), &out).unwrap();
    let text = s.to_string();
    assert!(
        text.starts_with("6 prompts: 5 done, 0 skipped (already finished), 1 dropped"),
        "{text}"
    );
    assert!(
        text.contains("degenerate outputs: 1 empty, 3 echo, 1 repetition"),
        "{text}"
    );
    assert!(text.contains("tokens/s"), "{text}");
}

#[test]
fn a_stop_flag_ends_the_run_after_the_batch_in_flight() {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Sets the flag during its first call (as a Ctrl-C handler would).
    struct Stopper<'a>(TestGen, &'a AtomicBool);
    impl Generator for Stopper<'_> {
        fn generate(
            &self,
            prompts: &[Prompt],
            params: &SamplingParams,
        ) -> rlaif_core::Result<Vec<Completion>> {
            self.1.store(true, Ordering::SeqCst);
            self.0.generate(prompts, params)
        }
    }
    let ps = prompts(7);
    let cfg = config(2, 3);
    let (_d, reference) = tmp();
    run(&TestGen::new(), &ps, &cfg, &reference).unwrap();
    let (_d2, out) = tmp();
    let stop = AtomicBool::new(false);
    let s = rlaif_revision::run_revision_until(
        &Stopper(TestGen::new(), &stop),
        &Constitution::default_constitution(),
        &ps,
        &cfg,
        &out,
        &stop,
    )
    .unwrap();
    assert!(s.stopped);
    assert_eq!(s.done, 3, "the batch in flight is finished");
    let s = run(&TestGen::new(), &ps, &cfg, &out).unwrap();
    assert!(!s.stopped);
    assert_eq!((s.skipped, s.done), (3, 4));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&reference).unwrap()
    );
}

#[test]
fn resuming_with_other_settings_is_an_error_naming_the_setting() {
    let ps = prompts(7);
    let cfg = config(2, 3);
    let (_d, reference) = tmp();
    run(&TestGen::new(), &ps, &cfg, &reference).unwrap();
    let (_d2, out) = tmp();
    let partial = RevisionConfig {
        limit: Some(3),
        ..cfg.clone()
    };
    run(&TestGen::new(), &ps, &partial, &out).unwrap();
    let before = std::fs::read_to_string(&out).unwrap();

    let e = run(
        &TestGen::new(),
        &ps,
        &RevisionConfig {
            seed: 8,
            ..cfg.clone()
        },
        &out,
    )
    .unwrap_err();
    match &e {
        RevisionError::SettingsMismatch {
            file,
            line,
            field,
            found,
            expected,
        } => {
            assert_eq!(file, &out);
            assert_eq!(
                (*line, field.as_str(), found.as_str(), expected.as_str()),
                (1, "seed", "7", "8")
            );
        }
        other => panic!("not a settings mismatch: {other}"),
    }
    let text = e.to_string();
    assert!(
        text.contains(
            "out.jsonl:1: this record was written with seed = 7, but this run has seed = 8"
        ),
        "{text}"
    );
    assert!(
        text.contains("pass the same settings, or write to another output file"),
        "{text}"
    );

    // Every stored setting is checked, and the first record that differs is named.
    let mut other = Constitution::default_constitution();
    other.principles[0].revision.push_str(" Be brief.");
    let cases: [(RevisionConfig, Constitution, &str, &str, &str); 5] = [
        (
            config(3, 3),
            Constitution::default_constitution(),
            "rounds",
            "2",
            "3",
        ),
        (
            RevisionConfig {
                format: PromptFormat::Raw,
                ..cfg.clone()
            },
            Constitution::default_constitution(),
            "format",
            "chat",
            "raw",
        ),
        (
            RevisionConfig {
                emit_every_round: true,
                ..cfg.clone()
            },
            Constitution::default_constitution(),
            "emit_every_round",
            "false",
            "true",
        ),
        (
            RevisionConfig {
                replacement: Replacement::Without,
                ..cfg.clone()
            },
            Constitution::default_constitution(),
            "replacement",
            "with",
            "without",
        ),
        (
            cfg.clone(),
            other.clone(),
            "constitution",
            &constitution_fingerprint(&Constitution::default_constitution()),
            &constitution_fingerprint(&other),
        ),
    ];
    for (c, constitution, want_field, want_found, want_expected) in &cases {
        let e = run_revision(&TestGen::new(), constitution, &ps, c, &out).unwrap_err();
        let RevisionError::SettingsMismatch {
            line,
            field,
            found,
            expected,
            ..
        } = &e
        else {
            panic!("{want_field}: not a settings mismatch: {e}");
        };
        assert_eq!(
            (*line, field.as_str(), found.as_str(), expected.as_str()),
            (1, *want_field, *want_found, *want_expected),
            "{e}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        before,
        "a refused resume leaves the output as it was"
    );

    // The same settings resume as before (a limit is not a record setting).
    let s = run(&TestGen::new(), &ps, &cfg, &out).unwrap();
    assert_eq!((s.skipped, s.done), (3, 4));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&reference).unwrap()
    );
}

#[test]
fn the_dropped_file_is_checked_too() {
    let (_d, out) = tmp();
    let cfg = RevisionConfig {
        degenerate: DegeneratePolicy::Drop,
        ..config(2, 3)
    };
    run(&TestGen::new(), &marked_prompts(), &cfg, &out).unwrap();
    // Start the output over but forget the dropped file.
    std::fs::remove_file(&out).unwrap();
    let e = run(
        &TestGen::new(),
        &marked_prompts(),
        &RevisionConfig { seed: 9, ..cfg },
        &out,
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("out.dropped.jsonl:1: this record was written with seed = 7"),
        "{text}"
    );
}

#[test]
fn a_file_written_before_the_settings_fields_still_resumes() {
    let ps = prompts(7);
    let cfg = config(2, 3);
    let (_d, reference) = tmp();
    run(&TestGen::new(), &ps, &cfg, &reference).unwrap();
    // An output of 4 records as an older version wrote them: without
    // `emit_every_round`, `replacement` and `constitution`.
    let (_d2, out) = tmp();
    let old: String = std::fs::read_to_string(&reference)
        .unwrap()
        .lines()
        .take(4)
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let map = v.as_object_mut().unwrap();
            for key in ["emit_every_round", "replacement", "constitution"] {
                assert!(map.remove(key).is_some(), "{key}");
            }
            serde_json::to_string(&v).unwrap() + "\n"
        })
        .collect();
    std::fs::write(&out, &old).unwrap();
    let recs = read_records(&out).unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(
        (
            recs[0].emit_every_round,
            recs[0].replacement,
            &recs[0].constitution
        ),
        (None, None, &None)
    );

    // What the old records do not store is not held against them (a constitution edit
    // and `replacement` are accepted); what they store still is.
    let mut edited = Constitution::default_constitution();
    edited.principles[0].critique.push_str(" Be specific.");
    let lenient = RevisionConfig {
        replacement: Replacement::Without,
        limit: Some(4),
        ..cfg.clone()
    };
    let s = run_revision(&TestGen::new(), &edited, &ps, &lenient, &out).unwrap();
    assert_eq!((s.skipped, s.done), (4, 0));
    let e = run(&TestGen::new(), &ps, &config(3, 3), &out).unwrap_err();
    assert!(
        matches!(&e, RevisionError::SettingsMismatch { field, .. } if field == "rounds"),
        "{e}"
    );

    // The same settings resume: the new records have the new fields, the old ones are
    // kept as they were.
    let s = run(&TestGen::new(), &ps, &cfg, &out).unwrap();
    assert_eq!((s.skipped, s.done), (4, 3));
    let got = std::fs::read_to_string(&out).unwrap();
    assert!(got.starts_with(&old));
    assert_eq!(
        got.lines().skip(4).collect::<Vec<_>>(),
        std::fs::read_to_string(&reference)
            .unwrap()
            .lines()
            .skip(4)
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_constitution_fingerprint_covers_the_critique_stage_only() {
    let base = Constitution::default_constitution();
    let fp = constitution_fingerprint(&base);
    assert_eq!(fp.len(), 16);
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()), "{fp}");
    assert_eq!(constitution_fingerprint(&base.clone()), fp);

    let mut c = base.clone();
    c.principles[1].weight = 2.0;
    assert_ne!(constitution_fingerprint(&c), fp, "weights shape the draws");
    let mut c = base.clone();
    c.principles.swap(0, 1);
    assert_ne!(constitution_fingerprint(&c), fp, "order shapes the draws");
    assert!(!base.critique_exemplars.is_empty());
    let mut c = base.clone();
    c.critique_exemplars[0].rounds[0].critique.push('!');
    assert_ne!(
        constitution_fingerprint(&c),
        fp,
        "exemplars shape the prompts"
    );
    let mut c = base.clone();
    c.critique_exemplars[0].id.push_str("-renamed");
    assert_eq!(
        constitution_fingerprint(&c),
        fp,
        "exemplar ids are not rendered"
    );
    let mut c = base.clone();
    c.comparisons.clear();
    c.comparison_exemplars.clear();
    assert_eq!(
        constitution_fingerprint(&c),
        fp,
        "the feedback stage is not in it"
    );
}
