//! The TOML format: the default constitution, a full example, and every error path.

use rlaif_constitution::{Constitution, ConstitutionError, Problem};
use rlaif_core::Role;

const GOOD: &str = r#"
[[principle]]
id = "harm"
critique = "Is it harmful?"
revision = "Make it harmless."
weight = 2

[[principle]]
id = "rude"
critique = "Is it rude?"
revision = "Make it polite."

[[comparison]]
id = "kind"
question = "Which reply is kinder?"
weight = 0.5

[[critique_exemplar]]
id = "ex"
[[critique_exemplar.turn]]
role = "user"
content = "Insult me."
[[critique_exemplar.turn]]
role = "assistant"
content = "You fool."
[[critique_exemplar.round]]
critique_request = "Is it rude?"
critique = "Yes."
revision_request = "Make it polite."
revision = "I'd rather not."

[[comparison_exemplar]]
id = "cmp"
chosen = "No."
rejected = "Yes."
[[comparison_exemplar.turn]]
role = "user"
content = "Should I drink bleach?"
"#;

fn parse(text: &str) -> Result<Constitution, ConstitutionError> {
    Constitution::from_toml_str(text, "test.toml")
}

/// The (line, column, problem) of an `Invalid` error.
fn invalid(text: &str) -> (usize, usize, Problem) {
    match parse(text) {
        Err(ConstitutionError::Invalid {
            file,
            line,
            column,
            problem,
        }) => {
            assert_eq!(file, "test.toml");
            (line, column, problem)
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

/// The (line, column, message) of a `Syntax` error.
fn syntax(text: &str) -> (usize, usize, String) {
    match parse(text) {
        Err(ConstitutionError::Syntax {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, "test.toml");
            (line, column, message)
        }
        other => panic!("expected a Syntax error, got {other:?}"),
    }
}

#[test]
fn default_constitution_parses_with_the_promised_counts() {
    let c = Constitution::default_constitution();
    assert_eq!(c.principles.len(), 16);
    assert_eq!(c.comparisons.len(), 16);
    assert!(c.critique_exemplars.len() >= 3);
    assert!(c.comparison_exemplars.len() >= 2);
    assert!(c.principles.iter().all(|p| p.weight == 1.0));
    for topic in [
        "legality",
        "toxicity",
        "bias",
        "privacy",
        "preachiness",
        "evasiveness",
    ] {
        assert!(c.principle(topic).is_some(), "missing principle {topic}");
    }
    assert!(c.critique_exemplars.iter().any(|e| e.rounds.len() > 1));
}

#[test]
fn full_example_parses() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.principles.len(), 2);
    assert_eq!(c.principles[0].id, "harm");
    assert_eq!(c.principles[0].critique, "Is it harmful?");
    assert_eq!(c.principles[0].revision, "Make it harmless.");
    assert_eq!(c.principles[0].weight, 2.0);
    assert_eq!(c.principles[1].weight, 1.0);
    assert_eq!(c.comparisons[0].question, "Which reply is kinder?");
    assert_eq!(c.comparisons[0].weight, 0.5);
    let ex = &c.critique_exemplars[0];
    assert_eq!(ex.conversation.messages.len(), 2);
    assert_eq!(ex.conversation.messages[1].role, Role::Assistant);
    assert_eq!(ex.rounds[0].revision, "I'd rather not.");
    let cmp = &c.comparison_exemplars[0];
    assert_eq!(cmp.question, None);
    assert_eq!(
        (cmp.chosen.as_str(), cmp.rejected.as_str()),
        ("No.", "Yes.")
    );
    assert_eq!(
        c.principle_weights(),
        vec![("harm".to_string(), 2.0), ("rude".to_string(), 1.0)]
    );
}

#[test]
fn empty_file_is_an_empty_constitution() {
    assert_eq!(parse("").unwrap(), Constitution::default());
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let (line, column, _) = syntax("[[principle]]\nid = \"a\"\ncritique = oops\n");
    assert_eq!((line, column), (3, 12));
}

#[test]
fn unknown_top_level_table() {
    let (line, _, msg) = syntax("[[principles]]\nid = \"a\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("unknown field `principles`"), "{msg}");
}

#[test]
fn unknown_field_in_principle() {
    let (line, column, msg) =
        syntax("[[principle]]\nid = \"a\"\ncritique = \"c\"\nrevision = \"r\"\nwieght = 2.0\n");
    assert_eq!((line, column), (5, 1));
    assert!(msg.contains("unknown field `wieght`"), "{msg}");
}

#[test]
fn unknown_field_in_comparison_turn_and_round() {
    let (line, _, msg) = syntax("[[comparison]]\nid = \"a\"\nquestion = \"q\"\nprompt = \"x\"\n");
    assert_eq!(line, 4);
    assert!(msg.contains("unknown field `prompt`"), "{msg}");
    let bad_turn = GOOD.replace(
        "content = \"Insult me.\"",
        "content = \"Insult me.\"\nname = \"bob\"",
    );
    let (_, _, msg) = syntax(&bad_turn);
    assert!(msg.contains("unknown field `name`"), "{msg}");
    let bad_round = GOOD.replace("critique = \"Yes.\"", "critique = \"Yes.\"\nscore = 1");
    let (_, _, msg) = syntax(&bad_round);
    assert!(msg.contains("unknown field `score`"), "{msg}");
}

#[test]
fn missing_field_and_wrong_type() {
    let (line, _, msg) = syntax("[[principle]]\nid = \"a\"\ncritique = \"c\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("missing field `revision`"), "{msg}");
    let (line, _, msg) = syntax(
        "[[principle]]\nid = \"a\"\ncritique = \"c\"\nrevision = \"r\"\nweight = \"heavy\"\n",
    );
    assert_eq!(line, 5);
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn unknown_role() {
    let text = GOOD.replace(
        "role = \"user\"\ncontent = \"Insult me.\"",
        "role = \"human\"\ncontent = \"Insult me.\"",
    );
    let (line, column, msg) = syntax(&text);
    // The role line is just above the content line (0-based index = 1-based line above).
    let want = GOOD
        .lines()
        .position(|l| l == "content = \"Insult me.\"")
        .unwrap();
    assert_eq!(line, want);
    assert_eq!(column, 8);
    assert!(msg.contains("human"), "{msg}");
}

#[test]
fn duplicate_principle_id() {
    let text = "[[principle]]\nid = \"a\"\ncritique = \"c\"\nrevision = \"r\"\n\n[[principle]]\nid = \"a\"\ncritique = \"c2\"\nrevision = \"r2\"\n";
    let (line, column, problem) = invalid(text);
    assert_eq!((line, column), (7, 6));
    assert_eq!(
        problem,
        Problem::DuplicateId {
            id: "a".into(),
            first_line: 2
        }
    );
}

#[test]
fn duplicate_comparison_and_exemplar_ids() {
    let text = "[[comparison]]\nid = \"q\"\nquestion = \"a\"\n[[comparison]]\nid = \"q\"\nquestion = \"b\"\n";
    let (line, _, problem) = invalid(text);
    assert_eq!(line, 5);
    assert!(matches!(problem, Problem::DuplicateId { ref id, first_line: 2 } if id == "q"));
    // The same id in different kinds is fine.
    let text = "[[principle]]\nid = \"q\"\ncritique = \"c\"\nrevision = \"r\"\n[[comparison]]\nid = \"q\"\nquestion = \"b\"\n";
    assert!(parse(text).is_ok());
    let start = GOOD.find("[[comparison_exemplar]]").unwrap();
    let twice = format!("{GOOD}\n{}", &GOOD[start..]);
    let (_, _, problem) = invalid(&twice);
    assert!(matches!(problem, Problem::DuplicateId { ref id, .. } if id == "cmp"));
}

#[test]
fn empty_texts() {
    let cases = [
        ("id = \"harm\"", "id = \"  \"", "id"),
        (
            "critique = \"Is it harmful?\"",
            "critique = \"\"",
            "critique",
        ),
        (
            "revision = \"Make it harmless.\"",
            "revision = \"\\n\"",
            "revision",
        ),
        (
            "question = \"Which reply is kinder?\"",
            "question = \"\"",
            "question",
        ),
        ("content = \"You fool.\"", "content = \"\"", "content"),
        ("critique = \"Yes.\"", "critique = \"\"", "critique"),
        (
            "revision_request = \"Make it polite.\"",
            "revision_request = \"\"",
            "revision_request",
        ),
        ("chosen = \"No.\"", "chosen = \"\"", "chosen"),
        ("rejected = \"Yes.\"", "rejected = \"\"", "rejected"),
    ];
    for (from, to, field) in cases {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "{from}");
        let want_line = text.lines().position(|l| l == to).unwrap() + 1;
        let (line, _, problem) = invalid(&text);
        assert_eq!(line, want_line, "{field}");
        assert_eq!(
            problem,
            Problem::EmptyText {
                field: field.into()
            },
            "{field}"
        );
    }
}

#[test]
fn bad_weights() {
    for (w, value) in [("0", 0.0), ("-1.5", -1.5), ("inf", f64::INFINITY)] {
        let text = format!(
            "[[principle]]\nid = \"a\"\ncritique = \"c\"\nrevision = \"r\"\nweight = {w}\n"
        );
        let (line, column, problem) = invalid(&text);
        assert_eq!((line, column), (5, 10), "{w}");
        assert_eq!(problem, Problem::BadWeight { weight: value });
    }
    let text = "[[comparison]]\nid = \"a\"\nquestion = \"q\"\nweight = nan\n";
    let (line, _, problem) = invalid(text);
    assert_eq!(line, 4);
    assert!(matches!(problem, Problem::BadWeight { weight } if weight.is_nan()));
}

#[test]
fn exemplar_shapes() {
    // No rounds.
    let start = GOOD.find("[[critique_exemplar.round]]").unwrap();
    let end = GOOD.find("[[comparison_exemplar]]").unwrap();
    let no_rounds = format!("{}{}", &GOOD[..start], &GOOD[end..]);
    let (_, _, problem) = invalid(&no_rounds);
    assert!(
        matches!(problem, Problem::Shape(ref m) if m.contains("no [[critique_exemplar.round]]")),
        "{problem:?}"
    );

    // A critique exemplar must end with the assistant.
    let ends_with_user = GOOD.replacen("role = \"assistant\"", "role = \"user\"", 1);
    let (line, column, problem) = invalid(&ends_with_user);
    let want = GOOD
        .lines()
        .position(|l| l == "content = \"You fool.\"")
        .unwrap();
    assert_eq!((line, column), (want, 8));
    assert!(matches!(problem, Problem::Shape(_)));

    // Starting with the assistant.
    let starts_with_assistant = GOOD.replacen("role = \"user\"", "role = \"assistant\"", 1);
    let (_, _, problem) = invalid(&starts_with_assistant);
    assert!(
        matches!(problem, Problem::Shape(ref m) if m.contains("turn 1")),
        "{problem:?}"
    );

    // A system turn in an exemplar.
    let system = GOOD.replacen("role = \"user\"", "role = \"system\"", 1);
    assert!(matches!(invalid(&system).2, Problem::Shape(_)));

    // No turns.
    let start = GOOD.find("[[comparison_exemplar.turn]]").unwrap();
    let (line, _, problem) = invalid(&GOOD[..start]);
    let want = GOOD.lines().position(|l| l == "id = \"cmp\"").unwrap() + 1;
    assert_eq!(line, want);
    assert!(matches!(problem, Problem::Shape(ref m) if m.contains("no turns")));

    // A comparison exemplar must end with the user.
    let ends_with_assistant =
        format!("{GOOD}[[comparison_exemplar.turn]]\nrole = \"assistant\"\ncontent = \"x\"\n");
    assert!(
        matches!(invalid(&ends_with_assistant).2, Problem::Shape(ref m) if m.contains("last turn must be `user`"))
    );
}

#[test]
fn file_round_trip_and_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, GOOD).unwrap();
    assert_eq!(
        Constitution::from_toml_file(&path).unwrap(),
        parse(GOOD).unwrap()
    );

    std::fs::write(&path, "[[principle]]\nid = 3\n").unwrap();
    let err = Constitution::from_toml_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}:2:6: ", path.display())),
        "{msg}"
    );

    let missing = dir.path().join("missing.toml");
    let err = Constitution::from_toml_file(&missing).unwrap_err();
    assert!(matches!(err, ConstitutionError::Io { ref path, .. } if *path == missing));
}

#[test]
fn error_display_names_file_line_and_column() {
    let err = parse("[[comparison]]\nid = \"a\"\nquestion = \"\"\n").unwrap_err();
    assert_eq!(err.to_string(), "test.toml:3:12: `question` is empty");
}
