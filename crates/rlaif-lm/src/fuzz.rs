//! Property-based fuzz tests (proptest, stable Rust) of every parser that reads a user's
//! file: the GGUF reader (and a whole model load from its bytes), the safetensors reader,
//! the sharded index `model.safetensors.index.json`, and `config.json`.
//!
//! Inputs are random bytes, and mutations of valid files: truncation, bit flips, bytes
//! inserted or deleted, little-endian length / count fields overwritten with boundary
//! values, and (in the JSON parts) numbers replaced by huge, negative or non-integer ones.
//! Each case must end, within a deadline, in `Ok` or an error that names the file: never a
//! panic, a hang, or (while the parser runs) a single allocation larger than
//! [`ALLOC_FACTOR`] times the input plus [`ALLOC_SLACK`]: a count read from a file is
//! checked against the bytes that remain before anything is allocated for it.
//!
//! `cargo test` runs [`DEFAULT_CASES`] cases per target from a fixed seed;
//! `RLAIF_FUZZ_CASES=N` runs `N` per target, from a random seed unless `RLAIF_FUZZ_SEED`
//! fixes one:
//!
//! ```text
//! RLAIF_FUZZ_CASES=50000 cargo test -p rlaif-lm --lib fuzz -- --nocapture
//! ```

use crate::gguf::GgufFile;
use crate::gguf::tests::GgufWriter;
use crate::hf::{parse_index, parse_safetensors};
use crate::weights::{HostTensor, WeightMap, hf_shape};
use crate::{LanguageModel, LlamaConfig, LmError};
use burn::prelude::Device;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Cases per target in a plain `cargo test`.
const DEFAULT_CASES: u32 = 5000;
/// A case that takes longer than this is a hang.
const DEADLINE: Duration = Duration::from_secs(60);
/// The largest single allocation a parser may make is `ALLOC_FACTOR × input + ALLOC_SLACK`
/// bytes: decoded values are bigger than their encoding (a one-byte GGUF array element
/// becomes a 32-byte value, a 4.5-bit quantised weight a 4-byte float), but only by a
/// constant factor.
const ALLOC_FACTOR: usize = 64;
/// See [`ALLOC_FACTOR`].
const ALLOC_SLACK: usize = 1 << 16;

// ---------------------------------------------------------------------------------------
// The largest allocation of a thread while armed.

/// The system allocator, noting the largest request of an armed thread.
struct Watch;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown must not touch a dead thread-local
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static WATCH: Watch = Watch;

/// Runs `f` and returns its result with the largest single allocation it made on this
/// thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, LARGEST.with(Cell::get))
}

/// Fails if a parser of `input_len` bytes allocated more than the bound at once.
fn check_allocation(what: &str, input_len: usize, largest: usize) -> Result<(), TestCaseError> {
    let bound = ALLOC_FACTOR * input_len + ALLOC_SLACK;
    if largest > bound {
        return Err(TestCaseError::fail(format!(
            "{what} of {input_len} bytes allocated {largest} bytes at once (bound {bound})"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Running a case: in its own thread, with a deadline; a panic is a failure.

fn run_case<T, F>(f: F) -> Result<T, TestCaseError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, TestCaseError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let handle = std::thread::Builder::new()
        .name("fuzz case".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| TestCaseError::fail(format!("cannot spawn: {e}")))?;
    match rx.recv_timeout(DEADLINE) {
        Ok(result) => {
            let _ = handle.join();
            result
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "no result after {:?}: a hang",
            start.elapsed()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let msg = match handle.join() {
                Err(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into()),
                Ok(()) => "the case ended without a result".into(),
            };
            Err(TestCaseError::fail(format!("panicked: {msg}")))
        }
    }
}

/// How far a case got: rejected by the parser, parsed, or all the way (a model built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Depth {
    Rejected = 0,
    Parsed = 1,
    Loaded = 2,
}

/// An error from parsing `file` must name it.
fn names_file(e: &LmError, file: &str) -> Result<Depth, TestCaseError> {
    let msg = e.to_string();
    if msg.contains(file) {
        Ok(Depth::Rejected)
    } else {
        Err(TestCaseError::fail(format!(
            "error does not name {file}: {msg}"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Inputs.

/// Boundary values for overwritten integer fields.
fn boundary_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0u64,
            1,
            2,
            3,
            4,
            7,
            8,
            13,
            24,
            31,
            32,
            33,
            255,
            256,
            4095,
            65535,
            65536,
            (1 << 22) + 1,
            (1 << 31) - 1,
            1 << 31,
            u32::MAX as u64,
            1 << 32,
            1 << 40,
            1 << 62,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ]),
        1 => any::<u64>(),
    ]
}

/// Replacements for a number in a JSON text.
fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "2",
            "3",
            "1.5",
            "1e308",
            "-1e308",
            "1e-320",
            "4294967295",
            "4294967296",
            "9007199254740993",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999",
            "null",
            "true",
            "\"7\"",
            "[]",
            "{}",
            "[1,2]",
        ])
        .prop_map(str::to_string),
        1 => boundary_u64().prop_map(|v| v.to_string()),
    ]
}

/// Where an edit applies: mostly inside the header (`focus`), else anywhere.
#[derive(Debug, Clone)]
struct At {
    index: Index,
    anywhere: bool,
}

impl At {
    fn resolve(&self, len: usize, header: usize) -> usize {
        let range = if self.anywhere || header == 0 {
            len
        } else {
            header.min(len)
        };
        if range == 0 {
            0
        } else {
            self.index.index(range)
        }
    }
}

fn at() -> impl Strategy<Value = At> {
    (any::<Index>(), prop::bool::weighted(0.15))
        .prop_map(|(index, anywhere)| At { index, anywhere })
}

/// A new value for a number of the file, given the old one.
#[derive(Debug, Clone)]
enum NewValue {
    /// A boundary value.
    Set(u64),
    /// Old ± 1, × 2, ÷ 2, + 2³², × 2²⁰.
    Perturb(u8),
}

impl NewValue {
    fn apply(&self, old: u64) -> u64 {
        match *self {
            NewValue::Set(v) => v,
            NewValue::Perturb(k) => match k % 6 {
                0 => old.wrapping_add(1),
                1 => old.wrapping_sub(1),
                2 => old.wrapping_mul(2),
                3 => old / 2,
                4 => old.wrapping_add(1 << 32),
                _ => old.wrapping_mul(1 << 20),
            },
        }
    }
}

fn new_value() -> impl Strategy<Value = NewValue> {
    prop_oneof![
        boundary_u64().prop_map(NewValue::Set),
        any::<u8>().prop_map(NewValue::Perturb),
    ]
}

/// One mutation of a valid file. Positions and choices are resolved against the file as
/// it is when the edit applies.
#[derive(Debug, Clone)]
enum Edit {
    /// Cut the file here.
    Truncate(At),
    /// Flip one bit.
    FlipBit(At, u8),
    /// Set one byte.
    SetByte(At, u8),
    /// Overwrite 8 bytes with a little-endian u64.
    SetU64(At, u64),
    /// Overwrite 4 bytes with a little-endian u32.
    SetU32(At, u32),
    /// Insert bytes.
    Insert(At, Vec<u8>),
    /// Delete up to this many bytes.
    Delete(At, u8),
    /// Change one of the header's little-endian u64 fields that hold a small number
    /// (lengths, counts, dimensions, offsets, sizes).
    Field(Index, NewValue),
    /// Change one of the header's decimal numbers (JSON).
    Number(Index, NewValue),
    /// Replace one of the header's decimal numbers (JSON) by another literal.
    Literal(Index, String),
    /// Reshape one of the header's lists of numbers (JSON): reversed, flattened to
    /// its product, a 1 appended, a 0 prepended.
    Shape(Index, u8),
    /// Swap the contents of two of the header's quoted strings (JSON).
    SwapStrings(Index, Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => at().prop_map(Edit::Truncate),
        2 => (at(), 0u8..8).prop_map(|(a, b)| Edit::FlipBit(a, b)),
        1 => (at(), any::<u8>()).prop_map(|(a, b)| Edit::SetByte(a, b)),
        1 => (at(), boundary_u64()).prop_map(|(a, v)| Edit::SetU64(a, v)),
        1 => (at(), boundary_u64()).prop_map(|(a, v)| Edit::SetU32(a, v as u32)),
        1 => (at(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(a, b)| Edit::Insert(a, b)),
        1 => (at(), 1u8..32).prop_map(|(a, n)| Edit::Delete(a, n)),
        6 => (any::<Index>(), new_value()).prop_map(|(i, v)| Edit::Field(i, v)),
        4 => (any::<Index>(), new_value()).prop_map(|(i, v)| Edit::Number(i, v)),
        2 => (any::<Index>(), json_number()).prop_map(|(i, s)| Edit::Literal(i, s)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, k)| Edit::Shape(i, k)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Edit::SwapStrings(i, j)),
    ]
}

/// One to four edits, mostly one or two: a single change reaches deeper than many.
fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop_oneof![
        4 => prop::collection::vec(edit(), 1..2),
        2 => prop::collection::vec(edit(), 2..3),
        1 => prop::collection::vec(edit(), 3..5),
    ]
}

/// Applies `edits` to `seed`, whose first `header` bytes are its header. With `framed`
/// (safetensors: a u64 byte length, then the JSON header), the edits of the JSON text
/// keep the length right, so that they reach the JSON parser.
fn mutate(seed: &[u8], header: usize, framed: bool, edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let len = b.len();
        let head = header.min(len);
        let json_edit = matches!(
            e,
            Edit::Number(..) | Edit::Literal(..) | Edit::Shape(..) | Edit::SwapStrings(..)
        );
        if framed && json_edit && len >= 8 {
            let before = b.len() as i64;
            mutate_one(&mut b, head, header, e);
            let delta = b.len() as i64 - before;
            if b.len() >= 8 {
                let n = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
                b[..8].copy_from_slice(&n.wrapping_add_signed(delta).to_le_bytes());
            }
        } else {
            mutate_one(&mut b, head, header, e);
        }
    }
    b
}

fn mutate_one(b: &mut Vec<u8>, head: usize, header: usize, e: &Edit) {
    let len = b.len();
    {
        match e {
            Edit::Truncate(a) => b.truncate(a.resolve(len, header)),
            Edit::FlipBit(a, bit) => {
                if len > 0 {
                    let i = a.resolve(len, header);
                    b[i] ^= 1 << bit;
                }
            }
            Edit::SetByte(a, v) => {
                if len > 0 {
                    let i = a.resolve(len, header);
                    b[i] = *v;
                }
            }
            Edit::SetU64(a, v) => overwrite(b, a.resolve(len, header), &v.to_le_bytes()),
            Edit::SetU32(a, v) => overwrite(b, a.resolve(len, header), &v.to_le_bytes()),
            Edit::Insert(a, bytes) => {
                let i = a.resolve(len + 1, header + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(a, n) => {
                let i = a.resolve(len, header);
                let end = (i + *n as usize).min(len);
                b.drain(i..end);
            }
            Edit::Field(which, v) => {
                let fields = small_u64_fields(&b[..head]);
                if !fields.is_empty() {
                    let i = fields[which.index(fields.len())];
                    let old = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
                    b[i..i + 8].copy_from_slice(&v.apply(old).to_le_bytes());
                }
            }
            Edit::Number(which, v) => {
                let runs = digit_runs(&b[..head]);
                if !runs.is_empty() {
                    let (s, e) = runs[which.index(runs.len())];
                    let old = std::str::from_utf8(&b[s..e])
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())
                        .unwrap_or(0);
                    b.splice(s..e, v.apply(old).to_string().bytes());
                }
            }
            Edit::Literal(which, literal) => {
                let runs = digit_runs(&b[..head]);
                if !runs.is_empty() {
                    let (s, e) = runs[which.index(runs.len())];
                    b.splice(s..e, literal.bytes());
                }
            }
            Edit::Shape(which, kind) => {
                let lists = number_lists(&b[..head]);
                if !lists.is_empty() {
                    let (s, e, nums) = &lists[which.index(lists.len())];
                    let new: Vec<u64> = match kind % 4 {
                        0 => nums.iter().rev().copied().collect(),
                        1 => vec![nums.iter().fold(1u64, |a, &x| a.wrapping_mul(x))],
                        2 => nums.iter().copied().chain([1]).collect(),
                        _ => [0].into_iter().chain(nums.iter().copied()).collect(),
                    };
                    let text: Vec<String> = new.iter().map(u64::to_string).collect();
                    b.splice(*s..*e, format!("[{}]", text.join(",")).into_bytes());
                }
            }
            Edit::SwapStrings(i, j) => {
                let strings = quoted_strings(&b[..head]);
                if strings.len() >= 2 {
                    let (a, c) = (i.index(strings.len()), j.index(strings.len()));
                    let (first, second) = (strings[a.min(c)], strings[a.max(c)]);
                    if first != second {
                        let x = b[first.0..first.1].to_vec();
                        let y = b[second.0..second.1].to_vec();
                        // the later one first, so that the earlier span stays valid
                        b.splice(second.0..second.1, x);
                        b.splice(first.0..first.1, y);
                    }
                }
            }
        }
    }
}

/// Offsets of the little-endian u64s in 1..2²⁴ (any alignment): the lengths, counts,
/// dimensions and offsets of a binary header.
fn small_u64_fields(b: &[u8]) -> Vec<usize> {
    (0..b.len().saturating_sub(7))
        .filter(|&i| {
            let v = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
            (1..1 << 24).contains(&v)
        })
        .collect()
}

/// The spans of the JSON lists of plain numbers (`[8,16]`), with their numbers.
fn number_lists(b: &[u8]) -> Vec<(usize, usize, Vec<u64>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            let end = b[i..].iter().position(|&c| c == b']').map(|p| i + p);
            if let Some(end) = end
                && let Ok(inner) = std::str::from_utf8(&b[i + 1..end])
            {
                let nums: Option<Vec<u64>> = inner
                    .split(',')
                    .map(|t| t.trim().parse::<u64>().ok())
                    .collect();
                if let Some(nums) = nums {
                    out.push((i, end + 1, nums));
                }
            }
        }
        i += 1;
    }
    out
}

/// The spans of the contents of JSON strings without escapes.
fn quoted_strings(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let Some(len) = b[i + 1..].iter().position(|&c| c == b'"') else {
                break;
            };
            if !b[i + 1..i + 1 + len].contains(&b'\\') {
                out.push((i + 1, i + 1 + len));
            }
            i += len + 2;
        } else {
            i += 1;
        }
    }
    out
}

fn overwrite(b: &mut [u8], at: usize, v: &[u8]) {
    let end = (at + v.len()).min(b.len());
    b[at..end].copy_from_slice(&v[..end - at]);
}

/// The spans of the maximal runs of ASCII digits.
fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((s, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// A valid file to mutate: its bytes and the length of its header (where mutations
/// concentrate).
#[derive(Debug, Clone)]
struct Seed {
    bytes: Vec<u8>,
    header: usize,
    /// Whether the header is a JSON text after its u64 length (safetensors).
    framed: bool,
}

/// Random bytes (starting with `prefix` half the time) or mutations of one of the seeds.
fn input(seeds: Vec<Seed>, prefix: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        1 => (prop::collection::vec(any::<u8>(), 0..1024), any::<bool>()).prop_map(move |(r, p)| {
            if p { prefix.iter().copied().chain(r).collect() } else { r }
        }),
        6 => (0..n, edits()).prop_map(move |(i, edits)| {
            mutate(&seeds[i].bytes, seeds[i].header, seeds[i].framed, &edits)
        }),
    ]
}

/// Runs `cases` inputs through `check`; at least `min_past_parser` of them (a fraction)
/// must get past the parser, or the mutations would be too destructive to test what
/// comes after it.
fn fuzz<S, F>(target: &str, strategy: S, check: F, min_past_parser: f64)
where
    S: Strategy<Value = Vec<u8>>,
    F: Fn(Vec<u8>) -> Result<Depth, TestCaseError> + Send + Sync + Clone + 'static,
{
    let from_env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = from_env("RLAIF_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    let seed = match (from_env("RLAIF_FUZZ_SEED"), from_env("RLAIF_FUZZ_CASES")) {
        (Some(s), _) => RngSeed::Fixed(s),
        (None, Some(_)) => RngSeed::Random,
        (None, None) => RngSeed::Fixed(0x5eed_f022),
    };
    let config = Config {
        cases,
        failure_persistence: None,
        rng_seed: seed,
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let depths: [AtomicUsize; 3] = Default::default();
    let start = Instant::now();
    let result = runner.run(&strategy, |bytes| {
        let check = check.clone();
        let depth = run_case(move || check(bytes))?;
        depths[depth as usize].fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    let counts = depths.map(|d| d.load(Ordering::Relaxed));
    tracing::info!(target, cases, elapsed = ?start.elapsed(), rejected = counts[0],
        parsed = counts[1], loaded = counts[2], "fuzzed");
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!(
            "{target}: {why}\nminimal input ({} bytes): {input:?}",
            input.len()
        ),
        Err(e) => panic!("{target}: {e}"),
    }
    let total: usize = counts.iter().sum();
    let past_parser = total - counts[Depth::Rejected as usize];
    assert!(
        past_parser as f64 >= min_past_parser * total as f64,
        "{target}: only {past_parser} of {total} cases got past the parser (parsed {}, loaded {})",
        counts[1],
        counts[2]
    );
}

// ---------------------------------------------------------------------------------------
// Seeds.

/// The tiny model of the GGUF seed: the 260-token tokenizer of `tokenizer::tests`.
fn gguf_model_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 260,
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: Some(1),
        max_position_embeddings: 64,
        ..LlamaConfig::default()
    }
}

/// The GGUF name of a Hugging Face tensor name (llama.cpp's naming).
fn gguf_name(hf: &str) -> String {
    hf.replace("model.embed_tokens", "token_embd")
        .replace("model.norm", "output_norm")
        .replace("lm_head", "output")
        .replace("model.layers.", "blk.")
        .replace("self_attn.q_proj", "attn_q")
        .replace("self_attn.k_proj", "attn_k")
        .replace("self_attn.v_proj", "attn_v")
        .replace("self_attn.o_proj", "attn_output")
        .replace("mlp.gate_proj", "ffn_gate")
        .replace("mlp.up_proj", "ffn_up")
        .replace("mlp.down_proj", "ffn_down")
        .replace("post_attention_layernorm", "ffn_norm")
        .replace("input_layernorm", "attn_norm")
}

/// A whole loadable GGUF model (tokenizer, chat template, every tensor type this crate
/// reads), and a file of metadata values of every type, nested arrays included.
fn gguf_seeds() -> Vec<Seed> {
    let cfg = gguf_model_config();
    let tok = GgufFile::parse(crate::tokenizer::tests::tiny_gguf_tokenizer(), "t").unwrap();
    let tokens: Vec<String> = tok
        .meta("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut types = vec![3i32, 3];
    types.extend(std::iter::repeat_n(1, tokens.len() - 2));
    let mut w = GgufWriter::default();
    w.str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", 8)
        .u32("llama.feed_forward_length", 16)
        .u32("llama.attention.head_count", 2)
        .u32("llama.attention.head_count_kv", 1)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .str(
            "tokenizer.chat_template",
            "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}",
        )
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .strs("tokenizer.ggml.tokens", &refs)
        .strs("tokenizer.ggml.merges", &["h e", "he l"])
        .i32s("tokenizer.ggml.token_type", &types)
        .u32("tokenizer.ggml.eos_token_id", 1)
        .u32("general.alignment", 32);
    let weights = crate::tiny::random_weights(&cfg, 5).unwrap();
    for (i, (name, t)) in weights.iter().enumerate() {
        let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        let numel = t.data.len();
        // every type the reader dequantises, on the tensors whose size allows it
        let (ty, raw): (u32, Vec<u8>) = match i % 6 {
            1 => (
                1,
                t.data
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            2 => (
                30,
                t.data
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            3 if numel % 32 == 0 => (8, pseudo_random(numel / 32 * 34, i)),
            4 if numel % 32 == 0 => (2, pseudo_random(numel / 32 * 18, i)),
            5 if numel % 32 == 0 => (3, pseudo_random(numel / 32 * 20, i)),
            _ => (0, t.data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        w.tensor(&gguf_name(name), &dims, ty, raw);
    }
    let model = w.finish();
    let header = GgufFile::parse(model.clone(), "seed.gguf")
        .unwrap()
        .data_offset();

    let mut all = GgufWriter::default();
    let u8s: Vec<u8> = [
        0u32.to_le_bytes().to_vec(),
        3u64.to_le_bytes().to_vec(),
        vec![1, 2, 3],
    ]
    .concat();
    let nested: Vec<u8> = [
        9u32.to_le_bytes().to_vec(),
        2u64.to_le_bytes().to_vec(),
        4u32.to_le_bytes().to_vec(),
        1u64.to_le_bytes().to_vec(),
        7u32.to_le_bytes().to_vec(),
        4u32.to_le_bytes().to_vec(),
        0u64.to_le_bytes().to_vec(),
    ]
    .concat();
    all.raw("u8", 0, &[7])
        .raw("i8", 1, &[0xff])
        .raw("u16", 2, &[1, 2])
        .raw("i16", 3, &[1, 0x80])
        .raw("u32", 4, &9u32.to_le_bytes())
        .raw("i32", 5, &(-9i32).to_le_bytes())
        .raw("f32", 6, &1.5f32.to_le_bytes())
        .raw("bool", 7, &[1])
        .raw("u64", 10, &u64::MAX.to_le_bytes())
        .raw("i64", 11, &(-1i64).to_le_bytes())
        .raw("f64", 12, &0.25f64.to_le_bytes())
        .raw("u8s", 9, &u8s)
        .raw("nested", 9, &nested)
        .tensor("blk.0.attn_q.weight", &[32, 2], 8, pseudo_random(2 * 34, 9))
        .tensor("odd.q6k", &[256], 14, pseudo_random(210, 3));
    let values = all.finish();
    let values_header = GgufFile::parse(values.clone(), "v.gguf")
        .unwrap()
        .data_offset();
    vec![
        Seed {
            bytes: model,
            header,
            framed: false,
        },
        Seed {
            bytes: values,
            header: values_header,
            framed: false,
        },
    ]
}

/// `n` deterministic bytes.
fn pseudo_random(n: usize, salt: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ salt as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The config of the safetensors seed: a tiny Qwen2 (biases) with an untied head.
fn st_model_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 16,
        hidden_size: 8,
        intermediate_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        max_position_embeddings: 16,
        model_type: crate::ModelType::Qwen2,
        ..LlamaConfig::default()
    }
}

/// safetensors files: the tiny model's weights in f32 / f16 / bf16, and a file with an
/// unsupported dtype.
fn safetensors_seeds() -> Vec<Seed> {
    use safetensors::{Dtype, tensor::TensorView};
    let w = crate::tiny::random_weights(&st_model_config(), 2).unwrap();
    let bytes: Vec<(String, Dtype, Vec<u8>, Vec<usize>)> = w
        .iter()
        .enumerate()
        .map(|(i, (k, t))| {
            let (dt, raw): (Dtype, Vec<u8>) = match i % 3 {
                0 => (
                    Dtype::F32,
                    t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                1 => (
                    Dtype::F16,
                    t.data
                        .iter()
                        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                        .collect(),
                ),
                _ => (
                    Dtype::BF16,
                    t.data
                        .iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                        .collect(),
                ),
            };
            (k.clone(), dt, raw, t.shape.clone())
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, dt, raw, shape)| {
            (
                k.as_str(),
                TensorView::new(*dt, shape.clone(), raw).unwrap(),
            )
        })
        .collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let model = safetensors::serialize(views, Some(meta)).unwrap();
    let ints = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let other = safetensors::serialize(
        vec![
            ("i", TensorView::new(Dtype::I32, vec![2], &ints).unwrap()),
            ("f", TensorView::new(Dtype::F32, vec![1, 2], &ints).unwrap()),
        ],
        None,
    )
    .unwrap();
    let header = |b: &[u8]| 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    vec![
        Seed {
            header: header(&model),
            bytes: model,
            framed: true,
        },
        Seed {
            header: header(&other),
            bytes: other,
            framed: true,
        },
    ]
}

fn json_seed(json: serde_json::Value) -> Seed {
    let bytes = serde_json::to_vec_pretty(&json).unwrap();
    Seed {
        header: bytes.len(),
        bytes,
        framed: false,
    }
}

fn index_seeds() -> Vec<Seed> {
    let weight_map: serde_json::Map<String, serde_json::Value> =
        crate::tiny::random_weights(&st_model_config(), 0)
            .unwrap()
            .keys()
            .enumerate()
            .map(|(i, k)| {
                (
                    k.clone(),
                    format!("model-0000{}-of-00002.safetensors", 1 + i % 2).into(),
                )
            })
            .collect();
    vec![json_seed(serde_json::json!({
        "metadata": { "total_size": 123456 },
        "weight_map": weight_map,
    }))]
}

fn config_seeds() -> Vec<Seed> {
    let full = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "max_position_embeddings": 8192, "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "attention_bias": false,
        "bos_token_id": 1, "eos_token_id": [2, 3], "rope_scaling": null,
    });
    let small = serde_json::json!({
        "model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "eos_token_id": 2,
    });
    vec![json_seed(full), json_seed(small)]
}

// ---------------------------------------------------------------------------------------
// Targets.

/// A GGUF file's bytes: the reader (header, metadata, tensor infos, every tensor
/// dequantised) within the allocation bound, then a whole model load.
fn check_gguf(bytes: Vec<u8>) -> Result<Depth, TestCaseError> {
    let len = bytes.len();
    let (parsed, largest) = largest_allocation(|| {
        let g = GgufFile::parse(bytes, "fuzz.gguf")?;
        for t in &g.tensors {
            if let Ok((shape, data)) = g.tensor_f32(&t.name)
                && shape.iter().product::<usize>() != data.len()
            {
                return Err(LmError::Backend(format!(
                    "{}: shape and data disagree",
                    t.name
                )));
            }
        }
        Ok(g)
    });
    check_allocation("the GGUF reader", len, largest)?;
    let g = match parsed {
        Ok(g) => g,
        Err(LmError::Backend(e)) => return Err(TestCaseError::fail(e)),
        Err(e) => return names_file(&e, "fuzz.gguf"),
    };
    // The whole load: config, tokenizer, weights, model, template. Ok or any error.
    Ok(match LanguageModel::from_gguf(&g, &Device::default()) {
        Ok(_) => Depth::Loaded,
        Err(_) => Depth::Parsed,
    })
}

/// A safetensors file's bytes: the reader within the allocation bound, then a model of
/// the seed's config from the tensors.
fn check_safetensors(bytes: Vec<u8>) -> Result<Depth, TestCaseError> {
    let len = bytes.len();
    let path = Path::new("fuzz.safetensors");
    let mut map = WeightMap::new();
    let (parsed, largest) = largest_allocation(|| parse_safetensors(&bytes, path, &mut map));
    check_allocation("the safetensors reader", len, largest)?;
    if let Err(e) = parsed {
        return names_file(&e, "fuzz.safetensors");
    }
    for (name, HostTensor { shape, data }) in &map {
        if shape.iter().product::<usize>() != data.len() {
            return Err(TestCaseError::fail(format!(
                "{name}: shape {shape:?}, {} values",
                data.len()
            )));
        }
    }
    let model =
        crate::weights::model_from_weights(&st_model_config(), map, path, &Device::default());
    Ok(if model.is_ok() {
        Depth::Loaded
    } else {
        Depth::Parsed
    })
}

/// A `model.safetensors.index.json`: parsed, and every shard it names is a plain file
/// name.
fn check_index(bytes: Vec<u8>) -> Result<Depth, TestCaseError> {
    let len = bytes.len();
    // read_weights reads the index with read_to_string: not UTF-8 is an I/O error there
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(Depth::Rejected);
    };
    let path = Path::new("dir/model.safetensors.index.json");
    let (parsed, largest) = largest_allocation(|| parse_index(&text, path));
    check_allocation("the index parser", len, largest)?;
    match parsed {
        Err(e) => names_file(&e, "model.safetensors.index.json"),
        Ok((files, _)) => {
            for f in files {
                let p = Path::new(&f);
                let plain = p.components().count() == 1
                    && matches!(p.components().next(), Some(std::path::Component::Normal(_)));
                if !plain {
                    return Err(TestCaseError::fail(format!(
                        "shard {f:?} escapes the directory"
                    )));
                }
            }
            Ok(Depth::Loaded)
        }
    }
}

/// A `config.json`: parsed and validated; an accepted config is valid, survives the
/// export round trip, and (when its RoPE tables are small) builds a model skeleton.
fn check_config(bytes: Vec<u8>) -> Result<Depth, TestCaseError> {
    let len = bytes.len();
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(Depth::Rejected);
    };
    let path = Path::new("dir/config.json");
    let (parsed, largest) = largest_allocation(|| LlamaConfig::from_json_str(&text, path));
    check_allocation("the config parser", len, largest)?;
    let cfg = match parsed {
        Err(e) => return names_file(&e, "config.json"),
        Ok(c) => c,
    };
    cfg.validate()
        .map_err(|e| TestCaseError::fail(format!("accepted an invalid config: {e}")))?;
    let back = LlamaConfig::from_json_str(&cfg.to_hf_json().to_string(), path)
        .map_err(|e| TestCaseError::fail(format!("export does not read back: {e}")))?;
    prop_assert_eq!(
        (
            back.model_type,
            back.kv_heads(),
            back.head_dim(),
            back.vocab_size
        ),
        (
            cfg.model_type,
            cfg.kv_heads(),
            cfg.head_dim(),
            cfg.vocab_size
        )
    );
    if cfg.max_position_embeddings * cfg.head_dim() > 1 << 16 {
        return Ok(Depth::Parsed); // valid, but its RoPE tables take a while to build
    }
    let model = cfg
        .skeleton(&Device::default())
        .map_err(|e| TestCaseError::fail(format!("no skeleton: {e}")))?;
    prop_assert_eq!(model.layers.len(), cfg.num_hidden_layers);
    prop_assert_eq!(
        hf_shape(model.embed_tokens.lazy_shape().as_slice()),
        vec![cfg.vocab_size, cfg.hidden_size]
    );
    Ok(Depth::Loaded)
}

#[test]
fn fuzz_gguf() {
    fuzz(
        "gguf",
        input(gguf_seeds(), b"GGUF\x03\0\0\0"),
        check_gguf,
        0.1,
    );
}

#[test]
fn fuzz_safetensors() {
    fuzz(
        "safetensors",
        input(safetensors_seeds(), b"\x40\0\0\0\0\0\0\0{"),
        check_safetensors,
        0.01,
    );
}

#[test]
fn fuzz_safetensors_index() {
    fuzz(
        "model.safetensors.index.json",
        input(index_seeds(), b"{\"weight_map\":"),
        check_index,
        0.3,
    );
}

#[test]
fn fuzz_config_json() {
    fuzz(
        "config.json",
        input(config_seeds(), b"{\"vocab_size\":"),
        check_config,
        0.2,
    );
}

#[test]
fn the_seeds_are_valid_files() {
    // Mutations start from files that load: otherwise the fuzzing would only ever test
    // the first check.
    for s in gguf_seeds() {
        GgufFile::parse(s.bytes.clone(), "seed.gguf").unwrap();
    }
    let g = GgufFile::parse(gguf_seeds().remove(0).bytes, "seed.gguf").unwrap();
    let lm = LanguageModel::from_gguf(&g, &Device::default()).unwrap();
    assert_eq!(
        lm.config,
        LlamaConfig {
            eos_token_id: vec![1],
            rms_norm_eps: 1e-5f32 as f64,
            ..gguf_model_config()
        }
    );
    let mut map = WeightMap::new();
    parse_safetensors(&safetensors_seeds()[0].bytes, Path::new("s"), &mut map).unwrap();
    crate::weights::model_from_weights(&st_model_config(), map, Path::new("s"), &Device::default())
        .unwrap();
    for s in index_seeds() {
        let (files, names) =
            parse_index(std::str::from_utf8(&s.bytes).unwrap(), Path::new("i")).unwrap();
        assert_eq!(files.len(), 2);
        assert!(names.len() > 10);
    }
    for s in config_seeds() {
        LlamaConfig::from_json_str(std::str::from_utf8(&s.bytes).unwrap(), Path::new("c")).unwrap();
    }
    // and the checks take the loadable ones all the way
    let depths: Vec<Depth> = gguf_seeds()
        .into_iter()
        .map(|s| check_gguf(s.bytes).unwrap())
        .collect();
    assert_eq!(depths, [Depth::Loaded, Depth::Parsed]);
    let depths: Vec<Depth> = safetensors_seeds()
        .into_iter()
        .map(|s| check_safetensors(s.bytes).unwrap())
        .collect();
    assert_eq!(depths, [Depth::Loaded, Depth::Rejected]);
    for s in index_seeds() {
        assert_eq!(check_index(s.bytes).unwrap(), Depth::Loaded);
    }
    for s in config_seeds() {
        assert!(check_config(s.bytes).unwrap() >= Depth::Parsed);
    }
}

#[test]
fn the_allocation_watch_sees_large_allocations() {
    let (v, largest) = largest_allocation(|| vec![0u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(largest >= 1 << 20);
    assert!(check_allocation("x", 10, largest).is_err());
    let (_, small) = largest_allocation(|| 1 + 1);
    assert_eq!(small, 0);
}

#[test]
fn a_panicking_case_is_a_failure_not_a_crash() {
    let r = run_case::<(), _>(|| panic!("boom"));
    assert!(format!("{r:?}").contains("boom"), "{r:?}");
    assert!(run_case(|| Ok(())).is_ok());
}
