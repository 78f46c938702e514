//! The JSON Lines reader and the appender cannot be crashed: random bytes and mutations
//! of valid files give located errors or records, never a panic or a hang; an appender
//! opened on any file leaves it a sequence of whole lines it accepted, or untouched.
//!
//! `RLAIF_FUZZ_CASES=N` runs N cases per property (default 2000).

use proptest::prelude::*;
use rlaif_core::jsonl::{self, Fields, JsonlAppender, JsonlError, Verdict};

fn cases() -> u32 {
    std::env::var("RLAIF_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Record {
    id: String,
    n: Option<u32>,
    tags: Vec<String>,
}

const VALID: &str = "{\"id\":\"a\",\"n\":1,\"tags\":[\"x\"]}\n{\"id\":\"b\",\"tags\":[]}\n\n{\"id\":\"c\",\"n\":null,\"tags\":[\"y\",\"z\"]}\n";

/// Mutations of a valid file: cut, byte flips, inserted bytes, duplicated lines.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let base = VALID.as_bytes().to_vec();
    let n = base.len();
    (
        0..=n,
        prop::collection::vec((0..n, any::<u8>()), 0..6),
        prop::collection::vec((0..=n, any::<u8>()), 0..4),
    )
        .prop_map(move |(cut, flips, inserts)| {
            let mut b = base.clone();
            for (i, v) in flips {
                b[i] = v;
            }
            for (i, v) in inserts {
                b.insert(i.min(b.len()), v);
            }
            b.truncate(cut.min(b.len()));
            b
        })
}

fn read_all(bytes: &[u8]) -> Result<usize, JsonlError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.jsonl");
    std::fs::write(&p, bytes).unwrap();
    let text = jsonl::read_text(&p)?;
    let mut n = 0;
    for line in jsonl::lines(&p, &text) {
        let obj = line.object()?;
        let f = Fields::new(&line, &obj);
        f.required_str("id")?;
        f.optional_str("note")?;
        let _: Record = line.parse()?;
        n += 1;
    }
    Ok(n)
}

fn check_error(e: &JsonlError) {
    if let JsonlError::Line { line, .. } = e {
        assert!(*line >= 1, "lines are 1-based: {e}");
        assert!(e.to_string().contains(&format!("f.jsonl:{line}: ")), "{e}");
    }
}

fn reopen(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.jsonl");
    std::fs::write(&p, bytes).unwrap();
    let mut accepted = Vec::new();
    let result = JsonlAppender::open(&p, |line| {
        line.object()?;
        accepted.push(line.text.to_string());
        Ok::<_, JsonlError>(Verdict::Keep)
    });
    let after = std::fs::read(&p).unwrap();
    match result {
        Ok(mut w) => {
            w.append(&serde_json::json!({"id": "new"})).unwrap();
            let text = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
            assert!(text.ends_with("{\"id\":\"new\"}\n"));
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(l).expect("whole lines only");
                assert!(v.is_object());
            }
        }
        Err(e) => {
            check_error(&e);
            assert_eq!(after, bytes, "a refused file is left untouched");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_give_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = read_all(&bytes) { check_error(&e) }
        reopen(&bytes);
    }

    #[test]
    fn mutated_files_give_errors_not_panics(bytes in mutated()) {
        if let Err(e) = read_all(&bytes) { check_error(&e) }
        reopen(&bytes);
    }

    #[test]
    fn random_text_lines(lines in prop::collection::vec("[ -~]{0,40}", 0..8)) {
        let text = lines.join("\n");
        if let Err(e) = read_all(text.as_bytes()) { check_error(&e) }
        reopen(text.as_bytes());
    }
}

#[test]
fn the_valid_file_reads() {
    assert_eq!(read_all(VALID.as_bytes()).unwrap(), 3);
}
