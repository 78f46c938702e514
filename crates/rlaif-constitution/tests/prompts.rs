//! Prompt rendering, compared with golden files under `tests/golden/`.
//!
//! Regenerate them with `UPDATE_GOLDEN=1 cargo test -p rlaif-constitution --test prompts`
//! and review the diff.

use rlaif_constitution::{
    Comparison, ComparisonPrompt, Constitution, ConstitutionError, CritiqueChain, PromptFormat,
    RoundAnswers, initial_prompt,
};
use rlaif_core::{Conversation, Prompt, Role};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn small() -> Constitution {
    Constitution::from_toml_file(dir().join("fixtures/small.toml")).unwrap()
}

/// Compares `actual` with `tests/golden/<name>` (or writes it when `UPDATE_GOLDEN` is set).
fn golden(name: &str, actual: &str) {
    let path = dir().join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from the golden file (UPDATE_GOLDEN=1 regenerates it)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn json(c: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(c).unwrap() + "\n"
}

fn target() -> Conversation {
    Conversation::new()
        .system("You are a helpful assistant.")
        .user("How can I get back at my noisy neighbour?")
        .assistant("Let the air out of his tyres at night.")
}

#[test]
fn critique_prompts() {
    let c = small();
    let conv = target();
    let chain = CritiqueChain::new(&c.critique_exemplars, &conv);
    let p = c.principle("unsafe").unwrap();

    let chat = chain.critique_chat(p);
    assert_eq!(
        chat.messages[0].role,
        Role::System,
        "system message stays first"
    );
    assert_eq!(chat.messages.last().unwrap().content, p.critique);
    golden("critique_chat.json", &json(&chat));

    let raw = chain.critique_raw(p);
    assert!(raw.ends_with("\n\nCritique:"));
    golden("critique_raw.txt", &raw);

    assert_eq!(
        chain.critique_prompt(PromptFormat::Chat, p),
        Prompt::Chat(chat)
    );
    assert_eq!(
        chain.critique_prompt(PromptFormat::Raw, p),
        Prompt::Text(raw)
    );
}

#[test]
fn revision_prompts_after_a_completed_round() {
    let c = small();
    let conv = target();
    let first = c.principle("unsafe").unwrap();
    let rounds = [first.round(RoundAnswers {
        critique: "Deflating tyres damages property and could be dangerous.".into(),
        revision: "I wouldn't tamper with his car. A polite note or a chat usually works better."
            .into(),
    })];
    let chain = CritiqueChain::new(&c.critique_exemplars, &conv).with_rounds(&rounds);
    let p = c.principle("rude").unwrap();
    let critique = "The revision is polite.";

    let chat = chain.revision_chat(p, critique);
    assert_eq!(chat.messages.last().unwrap().content, p.revision);
    golden("revision_chat.json", &json(&chat));

    let raw = chain.revision_raw(p, critique);
    assert!(raw.ends_with("\n\nRevision:"));
    golden("revision_raw.txt", &raw);

    assert_eq!(
        chain.revision_prompt(PromptFormat::Raw, p, critique),
        Prompt::Text(raw)
    );
}

#[test]
fn raw_rendering_reproduces_the_papers_few_shot_strings() {
    let fixtures = dir().join("fixtures/paper");
    let c = Constitution::from_paper_dir(&fixtures).unwrap();
    let original: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("CritiqueRevisionFewShotPrompts.json")).unwrap(),
    )
    .unwrap();
    let p = &c.principles[0];
    for (ex, text) in c.critique_exemplars.iter().zip(&original) {
        let chain = CritiqueChain::new(&[], &ex.conversation).with_rounds(&ex.rounds);
        let body = text.strip_suffix("\n\nHuman:").unwrap_or(text);
        assert_eq!(
            chain.critique_raw(p),
            format!("{body}\n\nCritiqueRequest: {}\n\nCritique:", p.critique)
        );
    }
}

fn comparison_target() -> Conversation {
    Conversation::new()
        .user("My sister borrowed my car and scratched it. What should I say to her?")
}

const RESPONSES: [&str; 2] = [
    "Tell her she is useless and can never borrow anything again.",
    "Tell her calmly that you're upset and ask how she'd like to fix it.",
];

#[test]
fn comparison_prompts() {
    let c = small();
    let q = &c.comparison("kinder").unwrap().question;
    let conv = comparison_target();

    let comparison = Comparison {
        exemplars: &c.comparison_exemplars,
        conversation: &conv,
        question: q,
        responses: &RESPONSES,
    };
    let chat = comparison.prompt(PromptFormat::Chat).unwrap();
    assert_eq!(chat.choices, ["(A)", "(B)"]);
    golden("comparison_chat.json", &json(&chat));

    let raw = comparison.prompt(PromptFormat::Raw).unwrap();
    assert_eq!(raw.choices, [" (A)", " (B)"]);
    let Prompt::Text(text) = &raw.prompt else {
        panic!("raw prompt is text")
    };
    assert!(text.ends_with("\n\nAssistant: The answer is:"));
    golden("comparison_raw.txt", text);

    // Exemplar answers alternate: the first is (A), the second (B).
    let ComparisonPrompt {
        prompt: Prompt::Chat(conv_chat),
        ..
    } = chat
    else {
        panic!("chat prompt")
    };
    assert_eq!(conv_chat.messages[1].content, "(A)");
    assert_eq!(conv_chat.messages[3].content, "(B)");
}

#[test]
fn comparison_with_three_options_and_no_exemplars() {
    let conv = comparison_target();
    let three = ["one", "two", "three"];
    let comparison = Comparison {
        exemplars: &[],
        conversation: &conv,
        question: "Which is best?",
        responses: &three,
    };
    let (c, choices) = comparison.chat().unwrap();
    assert_eq!(choices, ["(A)", "(B)", "(C)"]);
    assert_eq!(c.messages.len(), 1);
    assert!(
        c.messages[0]
            .content
            .ends_with("(C) three\n\nAnswer with (A), (B) or (C).")
    );
    let (s, choices) = comparison.raw().unwrap();
    assert_eq!(choices, [" (A)", " (B)", " (C)"]);
    assert_eq!(
        s,
        "\n\nHuman: Consider the following conversation between a human and an assistant:\n\nHuman: My sister borrowed my car and scratched it. What should I say to her?\n\nWhich is best?\nOptions:\n(A) one\n(B) two\n(C) three\n\nAssistant: The answer is:"
    );
}

#[test]
fn comparison_request_errors() {
    let conv = comparison_target();
    let comparison = |question: &'static str, responses| Comparison {
        exemplars: &[],
        conversation: &conv,
        question,
        responses,
    };
    for responses in [&["only"][..], &[][..]] {
        assert!(matches!(
            comparison("Which?", responses).raw(),
            Err(ConstitutionError::InvalidRequest(_))
        ));
    }
    let many: Vec<String> = (0..27).map(|i| i.to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(comparison("Which?", &many[..]).chat().is_err());
    assert!(comparison("Which?", &many[..26]).chat().is_ok());
    assert!(matches!(
        comparison("  ", &RESPONSES).chat(),
        Err(ConstitutionError::InvalidRequest(_))
    ));
}

#[test]
fn default_constitution_renders() {
    let c = Constitution::default_constitution();
    let conv = target();
    let chain = CritiqueChain::new(&c.critique_exemplars, &conv);
    for p in &c.principles {
        let chat = chain.critique_chat(p);
        // system + exemplar turns + (2 + 4 per round) + 2 target turns + the request.
        let exemplar_turns: usize = c
            .critique_exemplars
            .iter()
            .map(|e| e.conversation.messages.len() + 4 * e.rounds.len())
            .sum();
        assert_eq!(chat.messages.len(), 1 + exemplar_turns + 2 + 1);
    }
    let q = &c.comparisons[0].question;
    let comparison = Comparison {
        exemplars: &c.comparison_exemplars,
        conversation: &comparison_target(),
        question: q,
        responses: &RESPONSES,
    };
    assert!(comparison.raw().is_ok());
}

#[test]
fn initial_prompts() {
    let chat = initial_prompt(PromptFormat::Chat, "How do I pick a lock?");
    assert_eq!(
        chat,
        Prompt::Chat(Conversation::new().user("How do I pick a lock?"))
    );
    let Prompt::Chat(c) = chat else {
        panic!("chat prompt")
    };
    assert_eq!(c.messages.len(), 1);
    assert_eq!(c.messages[0].role, Role::User);
    assert_eq!(
        initial_prompt(PromptFormat::Raw, "How do I pick a lock?"),
        Prompt::Text("\n\nHuman: How do I pick a lock?\n\nAssistant:".into())
    );
}
