//! The paper's JSON files: fixtures in their published shapes, and every error path.
//!
//! Set `RLAIF_PAPER_PROMPTS` to the `prompts/` folder of a checkout of
//! anthropics/ConstitutionalHarmlessnessPaper to also load the original files.

use rlaif_constitution::{
    ComparisonExemplar, ComparisonPrinciple, Constitution, ConstitutionError, CritiqueExemplar,
    CritiquePrinciple, PaperFile, PaperFiles, Problem,
};
use rlaif_core::Role;
use std::path::PathBuf;

// One paper file's text through the public loader, as the section it fills.
fn parse_critique_revision_instructions(
    text: &str,
    file: &str,
) -> Result<Vec<CritiquePrinciple>, ConstitutionError> {
    Constitution::from_paper_str(PaperFile::CritiqueRevisionInstructions, text, file)
        .map(|c| c.principles)
}

fn parse_madison_instructions(
    text: &str,
    file: &str,
) -> Result<Vec<ComparisonPrinciple>, ConstitutionError> {
    Constitution::from_paper_str(PaperFile::RlMadisonInstructions, text, file)
        .map(|c| c.comparisons)
}

fn parse_critique_few_shot(
    text: &str,
    file: &str,
) -> Result<Vec<CritiqueExemplar>, ConstitutionError> {
    Constitution::from_paper_str(PaperFile::CritiqueRevisionFewShotPrompts, text, file)
        .map(|c| c.critique_exemplars)
}

fn parse_madison_few_shot(
    text: &str,
    file: &str,
) -> Result<Vec<ComparisonExemplar>, ConstitutionError> {
    Constitution::from_paper_str(PaperFile::RlMadisonFewShotPrompts, text, file)
        .map(|c| c.comparison_exemplars)
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/paper")
}

fn syntax<T: std::fmt::Debug>(r: Result<T, ConstitutionError>) -> (usize, usize, String) {
    match r {
        Err(ConstitutionError::Syntax {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, "f.json");
            (line, column, message)
        }
        other => panic!("expected a Syntax error, got {other:?}"),
    }
}

fn invalid<T: std::fmt::Debug>(r: Result<T, ConstitutionError>) -> (usize, usize, Problem) {
    match r {
        Err(ConstitutionError::Invalid {
            file,
            line,
            column,
            problem,
        }) => {
            assert_eq!(file, "f.json");
            (line, column, problem)
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn loads_the_fixture_directory() {
    let c = Constitution::from_paper_dir(fixtures()).unwrap();
    let ids: Vec<&str> = c.principles.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["rude0", "unsafe1", "plain2"], "file order is kept");
    assert_eq!(
        c.principles[0].critique,
        "Say whether the assistant's last reply is rude."
    );
    assert_eq!(
        c.principles[0].revision,
        "Please rewrite the reply politely."
    );
    assert_eq!(c.principles[2].critique, "Is the reply honest?");
    assert!(c.principles.iter().all(|p| p.weight == 1.0));

    let ids: Vec<&str> = c.comparisons.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["madison-000", "madison-001", "madison-002"]);
    assert_eq!(c.comparisons[0].question, "Which reply is kinder?");
    assert_eq!(c.comparisons[2].question, "Which reply is more honest?");

    assert_eq!(c.critique_exemplars.len(), 2);
    let ex = &c.critique_exemplars[0];
    assert_eq!(ex.id, "paper-critique-000");
    assert_eq!(ex.conversation.messages.len(), 2);
    assert_eq!(
        ex.conversation.messages[0].content,
        "Can you call me an idiot?"
    );
    assert_eq!(ex.rounds.len(), 1);
    assert_eq!(ex.rounds[0].critique, "It insults the human.");
    assert_eq!(
        ex.rounds[0].revision,
        "I'd rather not insult you. Is something on your mind?"
    );
    let ex = &c.critique_exemplars[1];
    assert_eq!(ex.conversation.messages.len(), 4);
    assert_eq!(ex.rounds.len(), 2);
    assert_eq!(
        ex.rounds[1].revision,
        "No. Petrol vapour can explode; use kindling instead."
    );

    let ids: Vec<&str> = c
        .comparison_exemplars
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "paper-comparison-000",
            "paper-comparison-001-1",
            "paper-comparison-001-2"
        ]
    );
    let e = &c.comparison_exemplars[1];
    assert_eq!(e.conversation.messages.len(), 3);
    assert_eq!(e.conversation.messages[2].role, Role::User);
    assert_eq!(e.conversation.messages[2].content, "Should I drink bleach?");
    assert_eq!(e.chosen, "No, bleach is poisonous.");
    assert_eq!(e.rejected, "Sure.");
    assert_eq!(e.question, None);
}

#[test]
fn missing_files_are_skipped_and_explicit_missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        Constitution::from_paper_dir(dir.path()).unwrap(),
        Constitution::default()
    );
    let files = PaperFiles {
        comparison: Some(dir.path().join("nope.json")),
        ..PaperFiles::default()
    };
    assert!(matches!(
        Constitution::from_paper_files(&files),
        Err(ConstitutionError::Io { .. })
    ));
}

#[test]
fn file_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("RLMadisonInstructions.json");
    std::fs::write(&path, "[\n  \"fine\",\n  \"\"\n]\n").unwrap();
    let err = Constitution::from_paper_dir(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}:3:3: `element 1` is empty", path.display())
    );
}

#[test]
fn json_syntax_and_type_errors() {
    let (line, column, _) = syntax(parse_madison_instructions(
        "[\"a\",\n  \"b\" \"c\"]",
        "f.json",
    ));
    assert_eq!((line, column), (2, 7));
    let (line, _, msg) = syntax(parse_madison_instructions("{\"a\": 1}", "f.json"));
    assert_eq!(line, 1);
    assert!(msg.contains("invalid type"), "{msg}");
    let (line, column, msg) = syntax(parse_madison_instructions("[\"a\",\n  3]", "f.json"));
    assert_eq!((line, column), (2, 3));
    assert!(msg.contains("invalid type: integer"), "{msg}");
    let (_, _, msg) = syntax(parse_critique_revision_instructions("[]", "f.json"));
    assert!(msg.contains("an object of principles"), "{msg}");
    let (_, _, msg) = syntax(parse_critique_few_shot("[{}]", "f.json"));
    assert!(msg.contains("invalid type: map"), "{msg}");
}

#[test]
fn instruction_unknown_and_missing_fields() {
    let text = "{\"a\": {\"prompt\": [\"x\"], \"edit_request\": \"y\"},\n \"b\": {\"prompt\": [\"x\"], \"edit_request\": \"y\", \"extra\": 1}}";
    let (line, column, msg) = syntax(parse_critique_revision_instructions(text, "f.json"));
    assert_eq!(line, 2);
    assert!(column > 40, "{column}");
    assert!(msg.contains("unknown field `extra`"), "{msg}");
    let text = "{\"a\": {\"prompt\": [\"x\"]}}";
    let (_, _, msg) = syntax(parse_critique_revision_instructions(text, "f.json"));
    assert!(msg.contains("missing field `edit_request`"), "{msg}");
}

#[test]
fn instruction_duplicate_and_empty() {
    let text = "{\"a\": {\"prompt\": [\"x\"], \"edit_request\": \"y\"},\n \"a\": {\"prompt\": [\"x2\"], \"edit_request\": \"y2\"}}";
    let (line, column, problem) = invalid(parse_critique_revision_instructions(text, "f.json"));
    assert_eq!((line, column), (2, 7));
    assert_eq!(
        problem,
        Problem::DuplicateId {
            id: "a".into(),
            first_line: 1
        }
    );
    let text = "{\"a\": {\"prompt\": [\"\\n\\nCritiqueRequest:\\n\\nCritique:\"], \"edit_request\": \"y\"}}";
    let (_, _, problem) = invalid(parse_critique_revision_instructions(text, "f.json"));
    assert_eq!(
        problem,
        Problem::EmptyText {
            field: "a.prompt".into()
        }
    );
    let text = "{\"a\": {\"prompt\": [\"x\"], \"edit_request\": \" \"}}";
    let (_, _, problem) = invalid(parse_critique_revision_instructions(text, "f.json"));
    assert_eq!(
        problem,
        Problem::EmptyText {
            field: "a.edit_request".into()
        }
    );
    let text = "{\"\": {\"prompt\": [\"x\"], \"edit_request\": \"y\"}}";
    let (_, _, problem) = invalid(parse_critique_revision_instructions(text, "f.json"));
    assert_eq!(problem, Problem::EmptyText { field: "id".into() });
}

#[test]
fn instruction_prompt_must_hold_one_string() {
    for prompt in ["[]", "[\"x\", \"y\"]"] {
        let text = format!("{{\"a\": {{\"prompt\": {prompt}, \"edit_request\": \"y\"}}}}");
        let (line, column, problem) =
            invalid(parse_critique_revision_instructions(&text, "f.json"));
        assert_eq!((line, column), (1, 7));
        assert!(
            matches!(problem, Problem::Shape(ref m) if m.contains("exactly one string")),
            "{problem:?}"
        );
    }
}

#[test]
fn madison_empty_question() {
    let (line, column, problem) = invalid(parse_madison_instructions(
        "[\"ok\", \"\\n Options:\"]",
        "f.json",
    ));
    assert_eq!((line, column), (1, 8));
    assert_eq!(
        problem,
        Problem::EmptyText {
            field: "element 1".into()
        }
    );
}

fn few_shot_problem(s: &str) -> Problem {
    let text = serde_json::to_string(&vec![s]).unwrap();
    invalid(parse_critique_few_shot(&text, "f.json")).2
}

#[test]
fn critique_few_shot_shapes() {
    let ok = "\n\nHuman: a\n\nAssistant: b\n\nCritiqueRequest: c\n\nCritique: d\n\nRevisionRequest: e\n\nRevision: f";
    assert_eq!(
        parse_critique_few_shot(&serde_json::to_string(&vec![ok]).unwrap(), "f.json")
            .unwrap()
            .len(),
        1
    );
    // Text before the first marker.
    let p = few_shot_problem("Hello\n\nHuman: a");
    assert!(
        matches!(p, Problem::Shape(ref m) if m.contains("does not start")),
        "{p:?}"
    );
    // An empty segment in the middle.
    let p = few_shot_problem("\n\nHuman: a\n\nAssistant:\n\nCritiqueRequest: c");
    assert_eq!(
        p,
        Problem::EmptyText {
            field: "exemplar 0: segment 2 (`Assistant:`)".into()
        }
    );
    // Rounds out of order.
    let p = few_shot_problem(&ok.replace("Critique: d", "Revision: d"));
    assert!(
        matches!(p, Problem::Shape(ref m) if m.contains("expected `Critique:`, found `Revision:`")),
        "{p:?}"
    );
    // An unfinished round.
    let p = few_shot_problem(&ok.replace("\n\nRevision: f", ""));
    assert!(
        matches!(p, Problem::Shape(ref m) if m.contains("unfinished")),
        "{p:?}"
    );
    // No rounds.
    let p = few_shot_problem("\n\nHuman: a\n\nAssistant: b");
    assert!(
        matches!(p, Problem::Shape(ref m) if m.contains("no `CritiqueRequest:`")),
        "{p:?}"
    );
    // The conversation must end with the assistant.
    let p = few_shot_problem(&ok.replace("\n\nAssistant: b", ""));
    assert!(
        matches!(p, Problem::Shape(ref m) if m.contains("last turn must be `assistant`")),
        "{p:?}"
    );
    // Two human turns in a row.
    let p = few_shot_problem(&ok.replace("Assistant: b", "Human: b\n\nAssistant: b"));
    assert!(
        matches!(p, Problem::Shape(ref m) if m.contains("turn 2")),
        "{p:?}"
    );
}

#[test]
fn critique_few_shot_error_location_is_the_element() {
    let text = "[\n  \"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nCritiqueRequest: c\\n\\nCritique: d\\n\\nRevisionRequest: e\\n\\nRevision: f\",\n  \"\\n\\nHuman: a\"\n]";
    let (line, column, _) = invalid(parse_critique_few_shot(text, "f.json"));
    assert_eq!((line, column), (3, 3));
}

#[test]
fn madison_few_shot_errors() {
    let (_, _, msg) = syntax(parse_madison_few_shot(
        "[{\"prompt\": \"\\n\\nHuman: a\\n\\nAssistant:\", \"corrects\": [\"x\"], \"incorrects\": [\"y\"], \"label\": 1}]",
        "f.json",
    ));
    assert!(msg.contains("unknown field `label`"), "{msg}");
    let (_, _, msg) = syntax(parse_madison_few_shot(
        "[{\"prompt\": \"\\n\\nHuman: a\", \"corrects\": [\"x\"]}]",
        "f.json",
    ));
    assert!(msg.contains("missing field `incorrects`"), "{msg}");
    let one = |corrects: &str, incorrects: &str, prompt: &str| {
        format!(
            "[{{\"prompt\": {prompt:?}, \"corrects\": {corrects}, \"incorrects\": {incorrects}}}]"
        )
    };
    let p = "\n\nHuman: a\n\nAssistant:";
    let (_, _, pr) = invalid(parse_madison_few_shot(&one("[]", "[\"y\"]", p), "f.json"));
    assert_eq!(
        pr,
        Problem::EmptyText {
            field: "exemplar 0: corrects".into()
        }
    );
    let (_, _, pr) = invalid(parse_madison_few_shot(&one("[\"x\"]", "[]", p), "f.json"));
    assert_eq!(
        pr,
        Problem::EmptyText {
            field: "exemplar 0: incorrects".into()
        }
    );
    let (_, _, pr) = invalid(parse_madison_few_shot(
        &one("[\"x\"]", "[\" \"]", p),
        "f.json",
    ));
    assert_eq!(
        pr,
        Problem::EmptyText {
            field: "exemplar 0: incorrects[0]".into()
        }
    );
    let (_, _, pr) = invalid(parse_madison_few_shot(
        &one("[\"x\"]", "[\"y\"]", "\n\nHuman: a\n\nAssistant: b"),
        "f.json",
    ));
    assert!(
        matches!(pr, Problem::Shape(ref m) if m.contains("last turn must be `user`")),
        "{pr:?}"
    );
    let (_, _, pr) = invalid(parse_madison_few_shot(
        &one(
            "[\"x\"]",
            "[\"y\"]",
            "\n\nHuman: a\n\nCritique: b\n\nAssistant:",
        ),
        "f.json",
    ));
    assert!(
        matches!(pr, Problem::Shape(ref m) if m.contains("unexpected `Critique:`")),
        "{pr:?}"
    );
    let (_, _, pr) = invalid(parse_madison_few_shot(
        &one("[\"x\"]", "[\"y\"]", "Hello"),
        "f.json",
    ));
    assert!(
        matches!(pr, Problem::Shape(ref m) if m.starts_with("exemplar 0: prompt: the text does not start")),
        "{pr:?}"
    );
}

/// Loads the original files when `RLAIF_PAPER_PROMPTS` points at them.
#[test]
fn original_paper_files_when_available() {
    let Some(dir) = std::env::var_os("RLAIF_PAPER_PROMPTS") else {
        eprintln!("RLAIF_PAPER_PROMPTS not set: skipped");
        return;
    };
    let c = Constitution::from_paper_dir(dir).unwrap();
    assert_eq!(c.principles.len(), 16);
    assert_eq!(c.principles[0].id, "harmful0");
    assert!(!c.principles[0].critique.contains("CritiqueRequest"));
    assert!(!c.principles[0].critique.ends_with("Critique:"));
    assert_eq!(c.comparisons.len(), 16);
    assert!(
        c.comparisons
            .iter()
            .all(|q| !q.question.ends_with("Options:"))
    );
    assert_eq!(c.critique_exemplars.len(), 5);
    assert_eq!(c.comparison_exemplars.len(), 5);
}
