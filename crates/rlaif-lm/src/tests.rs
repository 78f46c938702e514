//! End-to-end tests on tiny random models: cache against recomputation, batching against
//! one-by-one, GGUF and Hugging Face round trips.

use crate::gguf::GgufFile;
use crate::gguf::tests::GgufWriter;
use crate::weights::{to_host, weights_from_model};
use crate::{LanguageModel, LlamaConfig, TextTokenizer, generate, score};
use burn::prelude::*;
use rlaif_core::{ChoiceScorer, Prompt, SamplingParams};

/// The tiny byte-level tokenizer of `tokenizer::tests` (260 tokens, specials 0 and 1).
fn tiny_tokenizer() -> TextTokenizer {
    let g = GgufFile::parse(crate::tokenizer::tests::tiny_gguf_tokenizer(), "tok.gguf").unwrap();
    TextTokenizer::from_gguf(&g).unwrap()
}

fn tiny_config(tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 260,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        tie_word_embeddings: tied,
        max_position_embeddings: 128,
        rope_theta: 1000.0,
        ..LlamaConfig::default()
    }
}

/// A tiny model with seeded weights (the same on every run, whatever the test order).
fn tiny_lm(tied: bool) -> LanguageModel {
    let cfg = tiny_config(tied);
    LanguageModel::from_parts(
        seeded(&cfg, &Device::default()),
        cfg,
        tiny_tokenizer(),
        None,
    )
}

fn seeded(cfg: &LlamaConfig, device: &Device) -> crate::Llama {
    let weights = crate::tiny::random_weights(cfg, 17).unwrap();
    crate::weights::model_from_weights(cfg, weights, std::path::Path::new("seeded"), device)
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn logits_of(lm: &LanguageModel, ids: &[u32]) -> Vec<f32> {
    let dev = lm.device();
    let t: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(t, [1, ids.len()]), &dev);
    to_host(lm.model.forward(tokens, &[vec![true; ids.len()]])).unwrap()
}

const PROMPTS: [&[u32]; 3] = [&[5, 9, 33, 70, 2, 8, 100], &[44], &[7, 7, 250, 3]];

#[test]
fn kv_cache_generation_equals_recomputation() {
    let lm = tiny_lm(true);
    let params = SamplingParams {
        max_new_tokens: 12,
        stop_at_eos: false,
        ..SamplingParams::greedy(12)
    };
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    let out = generate::generate(&lm.model, &lm.tokenizer, &prompts, &params).unwrap();
    for (p, c) in prompts.iter().zip(&out) {
        assert_eq!(c.token_ids.len(), 12);
        // Without a cache: the full sequence at once.
        let full: Vec<u32> = p.iter().chain(&c.token_ids).copied().collect();
        let logits = logits_of(&lm, &full);
        let v = lm.config.vocab_size;
        for (k, &tok) in c.token_ids.iter().enumerate() {
            let row = &logits[(p.len() - 1 + k) * v..(p.len() + k) * v];
            let argmax = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |a, (i, &x)| if x > a.1 { (i, x) } else { a },
                )
                .0;
            assert_eq!(argmax as u32, tok, "step {k}");
        }
        let lp = lm.sequence_logprobs(std::slice::from_ref(&full)).unwrap();
        let recomputed = &lp[0][p.len() - 1..];
        let diff = max_abs_diff(recomputed, &c.logprobs);
        assert!(
            diff < 1e-4,
            "cached vs recomputed log-probs differ by {diff}"
        );
    }
}

#[test]
fn batched_generation_equals_one_by_one() {
    let lm = tiny_lm(false);
    let params = SamplingParams {
        stop_at_eos: false,
        ..SamplingParams::greedy(10)
    };
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    let batched = generate::generate(&lm.model, &lm.tokenizer, &prompts, &params).unwrap();
    for (p, b) in prompts.iter().zip(&batched) {
        let alone =
            generate::generate(&lm.model, &lm.tokenizer, std::slice::from_ref(p), &params).unwrap();
        assert_eq!(alone[0].token_ids, b.token_ids);
        assert!(max_abs_diff(&alone[0].logprobs, &b.logprobs) < 1e-4);
    }
    // Sampling: a prompt's stream depends on its index, not on the batch around it.
    let sampled = SamplingParams {
        temperature: 1.0,
        seed: 11,
        ..params.clone()
    };
    let a = generate::generate(&lm.model, &lm.tokenizer, &prompts, &sampled).unwrap();
    let b = generate::generate(&lm.model, &lm.tokenizer, &prompts[..1], &sampled).unwrap();
    assert_eq!(a[0].token_ids, b[0].token_ids);
    let again = generate::generate(&lm.model, &lm.tokenizer, &prompts, &sampled).unwrap();
    assert_eq!(a, again, "same seed, same result");
    let other = SamplingParams {
        seed: 12,
        ..sampled
    };
    let c = generate::generate(&lm.model, &lm.tokenizer, &prompts, &other).unwrap();
    assert_ne!(a, c, "another seed gives other samples");
}

#[test]
fn stops_at_eos_stop_strings_and_length() {
    let lm = tiny_lm(true);
    let p = vec![PROMPTS[0].to_vec()];
    let free = SamplingParams {
        stop_at_eos: false,
        ..SamplingParams::greedy(16)
    };
    let base = generate::generate(&lm.model, &lm.tokenizer, &p, &free)
        .unwrap()
        .remove(0);
    assert_eq!(base.finish_reason, rlaif_core::FinishReason::Length);
    // Make the 3rd generated token a stop token: generation must end right there.
    let mut tok = lm.tokenizer.clone();
    tok.stop_ids = vec![base.token_ids[2]];
    let eos = SamplingParams {
        stop_at_eos: true,
        ..free.clone()
    };
    let first_stop = base
        .token_ids
        .iter()
        .position(|t| *t == base.token_ids[2])
        .unwrap();
    let c = generate::generate(&lm.model, &tok, &p, &eos)
        .unwrap()
        .remove(0);
    assert_eq!(c.finish_reason, rlaif_core::FinishReason::Eos);
    assert_eq!(c.token_ids, base.token_ids[..=first_stop]);
    // A stop string taken from the free text cuts the text before it.
    let text = &base.text;
    let needle: String = text.chars().skip(3).take(2).collect();
    assert_eq!(
        needle.chars().count(),
        2,
        "free text too short to test stop strings: {text:?}"
    );
    let s = SamplingParams {
        stop: vec![needle.clone()],
        ..free
    };
    let c = generate::generate(&lm.model, &lm.tokenizer, &p, &s)
        .unwrap()
        .remove(0);
    assert_eq!(
        c.finish_reason,
        rlaif_core::FinishReason::Stop(needle.clone())
    );
    assert!(!c.text.contains(&needle));
    assert!(text.starts_with(&c.text));
}

#[test]
fn bad_requests_are_errors() {
    let lm = tiny_lm(true);
    let run = |p: Vec<Vec<u32>>, n: usize| {
        generate::generate(&lm.model, &lm.tokenizer, &p, &SamplingParams::greedy(n))
            .unwrap_err()
            .to_string()
    };
    assert!(run(vec![vec![1; 120]], 20).contains("exceeds the context of 128"));
    assert!(run(vec![vec![3], vec![]], 2).contains("prompt 1 is empty"));
    assert!(run(vec![vec![999]], 2).contains("outside the vocabulary"));
    let e = lm
        .generate(
            &[Prompt::Chat(Default::default())],
            &SamplingParams::greedy(1),
        )
        .unwrap_err();
    assert!(e.to_string().contains("no chat template"));
}

#[test]
fn choice_logprobs_equal_full_sequence_scoring() {
    let lm = tiny_lm(false);
    let prompt: Vec<u32> = PROMPTS[0].to_vec();
    let choices: Vec<Vec<u32>> = vec![vec![12], vec![40, 41, 42], vec![99, 7]];
    let got = score::choice_logprobs(&lm.model, &prompt, &choices).unwrap();
    for (c, g) in choices.iter().zip(&got) {
        let full: Vec<u32> = prompt.iter().chain(c).copied().collect();
        let lp = lm.sequence_logprobs(&[full]).unwrap().remove(0);
        let want: f64 = lp[prompt.len() - 1..].iter().map(|&x| x as f64).sum();
        assert!((g - want).abs() < 1e-4, "{g} vs {want}");
    }
    // Through the trait, with text choices.
    let text = Prompt::Text("hello".into());
    let via_trait = lm
        .choice_logprobs(&text, &["he".to_string(), " x".to_string()])
        .unwrap();
    assert_eq!(via_trait.len(), 2);
    assert!(via_trait.iter().all(|x| *x < 0.0));
    let e = score::choice_logprobs(&lm.model, &prompt, &[vec![]]).unwrap_err();
    assert!(e.to_string().contains("choice 0 is empty"));
    let e = score::choice_logprobs(&lm.model, &prompt, &[vec![3], vec![260]]).unwrap_err();
    assert!(e.to_string().contains("token id 260 is outside"), "{e}");
}

#[test]
fn left_and_right_padding_give_the_same_logprobs() {
    let lm = tiny_lm(true);
    let seqs: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    let batched = lm.sequence_logprobs(&seqs).unwrap();
    for (s, b) in seqs.iter().zip(&batched) {
        let alone = lm.sequence_logprobs(std::slice::from_ref(s)).unwrap();
        assert!(max_abs_diff(&alone[0], b) < 1e-4);
    }
    // left padding through the model's forward
    let dev = lm.device();
    let s = PROMPTS[2];
    let t: Vec<i64> = [0, 0].iter().chain(s.iter()).map(|&x| x as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(t, [1, s.len() + 2]), &dev);
    let real = vec![vec![false, false, true, true, true, true]];
    let left = to_host(lm.model.forward(tokens, &real)).unwrap();
    let alone = logits_of(&lm, s);
    let v = lm.config.vocab_size;
    assert!(max_abs_diff(&left[2 * v..], &alone) < 1e-4);
}

/// llama.cpp's q/k row permutation (convert_hf_to_gguf.py `LlamaModel.permute`).
fn permute(data: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..heads {
        for j in 0..hd / 2 {
            for t in 0..2 {
                let r = h * hd + t * (hd / 2) + j;
                out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn gguf_written_like_llama_cpp_loads_to_the_same_logits() {
    let lm = tiny_lm(true);
    let cfg = &lm.config;
    let weights = weights_from_model(&lm.model).unwrap();
    let mut w = GgufWriter::default();
    w.str("general.architecture", "llama")
        .u32("llama.block_count", cfg.num_hidden_layers as u32)
        .u32("llama.context_length", cfg.max_position_embeddings as u32)
        .u32("llama.embedding_length", cfg.hidden_size as u32)
        .u32("llama.feed_forward_length", cfg.intermediate_size as u32)
        .u32("llama.attention.head_count", cfg.num_attention_heads as u32)
        .u32("llama.attention.head_count_kv", cfg.kv_heads() as u32)
        .f32("llama.rope.freq_base", cfg.rope_theta as f32)
        .f32(
            "llama.attention.layer_norm_rms_epsilon",
            cfg.rms_norm_eps as f32,
        )
        .str(
            "tokenizer.chat_template",
            "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}",
        );
    // the tokenizer metadata of the tiny tokenizer
    let tok = GgufFile::parse(crate::tokenizer::tests::tiny_gguf_tokenizer(), "t").unwrap();
    let tokens: Vec<String> = tok
        .meta("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut types = vec![3i32, 3];
    types.extend(std::iter::repeat_n(1, tokens.len() - 2));
    w.str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .strs("tokenizer.ggml.tokens", &refs)
        .strs("tokenizer.ggml.merges", &["h e", "he l"])
        .i32s("tokenizer.ggml.token_type", &types)
        .u32("tokenizer.ggml.eos_token_id", 1);
    let gguf_name = |hf: &str| -> String {
        hf.replace("model.embed_tokens", "token_embd")
            .replace("model.norm", "output_norm")
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
    };
    for (name, t) in &weights {
        let heads = if name.contains("q_proj") {
            Some(cfg.num_attention_heads)
        } else if name.contains("k_proj") {
            Some(cfg.kv_heads())
        } else {
            None
        };
        let data = match heads {
            Some(h) => permute(&t.data, h, t.shape[0], t.shape[1]),
            None => t.data.clone(),
        };
        w.f32_tensor(&gguf_name(name), &t.shape, &data);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, w.finish()).unwrap();
    let loaded = LanguageModel::load(&path, &Device::default()).unwrap();
    assert!(loaded.config.tie_word_embeddings);
    assert_eq!(loaded.config.rope_theta, cfg.rope_theta);
    let ids = PROMPTS[0];
    assert!(max_abs_diff(&logits_of(&loaded, ids), &logits_of(&lm, ids)) < 1e-5);
    let chat = Prompt::Chat(rlaif_core::Conversation::new().user("hel"));
    assert_eq!(loaded.render(&chat).unwrap(), "<|im_start|>hel<|im_end|>");
    assert_eq!(loaded.encode_prompt(&chat).unwrap().len(), 3);
}

#[test]
fn hf_directory_round_trip_gives_identical_logits() {
    for tied in [true, false] {
        let mut lm = tiny_lm(tied);
        lm.chat_template =
            Some(crate::ChatTemplate::new("{{ messages[0].content }}!", "", "").unwrap());
        let dir = tempfile::tempdir().unwrap();
        lm.save_pretrained(dir.path()).unwrap();
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            assert!(dir.path().join(f).is_file(), "{f} missing");
        }
        let back = LanguageModel::load(dir.path(), &Device::default()).unwrap();
        assert_eq!(back.config.tie_word_embeddings, tied);
        let ids = PROMPTS[0];
        assert_eq!(
            logits_of(&back, ids),
            logits_of(&lm, ids),
            "bit-identical logits"
        );
        let s = "<|im_start|>hello 42 wörld<|im_end|>";
        assert_eq!(
            back.tokenizer.encode(s).unwrap(),
            lm.tokenizer.encode(s).unwrap()
        );
        assert_eq!(back.tokenizer.stop_ids, lm.tokenizer.stop_ids);
        let chat = Prompt::Chat(rlaif_core::Conversation::new().user("hi"));
        assert_eq!(back.render(&chat).unwrap(), "hi!");
    }
}

#[test]
fn loading_reports_missing_and_mismatched_weights() {
    let lm = tiny_lm(false);
    let dir = tempfile::tempdir().unwrap();
    lm.save_pretrained(dir.path()).unwrap();
    let st = dir.path().join("model.safetensors");
    let mut map = crate::weights::WeightMap::new();
    crate::hf::read_safetensors(&st, &mut map).unwrap();
    let full = map.clone();
    map.remove("model.layers.1.mlp.up_proj.weight");
    crate::hf::write_safetensors(&map, &st).unwrap();
    let e = LanguageModel::load(dir.path(), &Device::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing weight model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );
    assert!(e.contains("model.safetensors"), "{e}");

    let mut bad = full.clone();
    bad.get_mut("model.norm.weight").unwrap().shape = vec![16, 2];
    crate::hf::write_safetensors(&bad, &st).unwrap();
    let e = LanguageModel::load(dir.path(), &Device::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.norm.weight") && e.contains("[16, 2]"),
        "{e}"
    );

    let mut extra = full;
    extra.insert(
        "model.layers.7.mlp.up_proj.weight".into(),
        extra["lm_head.weight"].clone(),
    );
    crate::hf::write_safetensors(&extra, &st).unwrap();
    let e = LanguageModel::load(dir.path(), &Device::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unexpected weight model.layers.7"), "{e}");
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let lm = tiny_lm(false);
    let dir = tempfile::tempdir().unwrap();
    lm.save_pretrained(dir.path()).unwrap();
    let single = dir.path().join("model.safetensors");
    let mut map = crate::weights::WeightMap::new();
    crate::hf::read_safetensors(&single, &mut map).unwrap();
    std::fs::remove_file(&single).unwrap();
    // two shards and the index that names them, as transformers writes them
    let (mut a, mut b) = (
        crate::weights::WeightMap::new(),
        crate::weights::WeightMap::new(),
    );
    let mut index = serde_json::Map::new();
    for (i, (name, t)) in map.into_iter().enumerate() {
        let file = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        index.insert(name.clone(), file.into());
        if i % 2 == 0 {
            a.insert(name, t)
        } else {
            b.insert(name, t)
        };
    }
    crate::hf::write_safetensors(&a, &dir.path().join("model-00001-of-00002.safetensors")).unwrap();
    crate::hf::write_safetensors(&b, &dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let json = serde_json::json!({ "metadata": {}, "weight_map": index });
    let idx = dir.path().join("model.safetensors.index.json");
    std::fs::write(&idx, json.to_string()).unwrap();
    let back = LanguageModel::load(dir.path(), &Device::default()).unwrap();
    assert_eq!(logits_of(&back, PROMPTS[1]), logits_of(&lm, PROMPTS[1]));

    // an index pointing outside the directory is refused
    let evil = serde_json::json!({ "weight_map": { "model.norm.weight": "../x.safetensors" } });
    std::fs::write(&idx, evil.to_string()).unwrap();
    let e = LanguageModel::load(dir.path(), &Device::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a plain file name"), "{e}");
}

#[test]
fn gradients_flow_through_the_padded_model() {
    let device = Device::default().autodiff();
    let cfg = tiny_config(true);
    let model = seeded(&cfg, &device);
    let seqs: Vec<Vec<u32>> = vec![PROMPTS[0].to_vec(), PROMPTS[2].to_vec()];
    // left-pad the shorter sequence
    let len = seqs.iter().map(Vec::len).max().unwrap();
    let mut toks = Vec::new();
    let mut real = Vec::new();
    for s in &seqs {
        let pad = len - s.len();
        toks.extend(std::iter::repeat_n(0i64, pad).chain(s.iter().map(|&t| t as i64)));
        real.push((0..len).map(|j| j >= pad).collect::<Vec<_>>());
    }
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(toks, [2, len]), &device);
    let lp = score::token_logprobs(&model, tokens, &real).unwrap();
    let mask: Vec<f32> = real
        .iter()
        .flat_map(|r| r[1..].iter().map(|&x| x as u8 as f32))
        .collect();
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [2, len - 1]), &device);
    let loss = -(lp * mask.clone()).sum() / mask.sum();
    let grads = loss.backward();
    let check = |name: &str, g: Option<Tensor<2>>| {
        let g = to_host(g.unwrap_or_else(|| panic!("no gradient for {name}"))).unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(g.iter().any(|x| *x != 0.0), "{name}: zero gradient");
    };
    check("embed_tokens", model.embed_tokens.grad(&grads));
    check(
        "q_proj",
        model.layers[0].self_attn.q_proj.weight.grad(&grads),
    );
    check(
        "k_proj",
        model.layers[1].self_attn.k_proj.weight.grad(&grads),
    );
    check(
        "down_proj",
        model.layers[1].mlp.down_proj.weight.grad(&grads),
    );
}

#[test]
fn tokenizer_config_errors_other_than_not_found_are_errors() {
    let mut lm = tiny_lm(true);
    lm.chat_template =
        Some(crate::ChatTemplate::new("{{ messages[0].content }}!", "", "").unwrap());
    let dir = tempfile::tempdir().unwrap();
    lm.save_pretrained(dir.path()).unwrap();
    let tc = dir.path().join("tokenizer_config.json");
    // Not there: no template (and default special tokens).
    std::fs::remove_file(&tc).unwrap();
    let back = LanguageModel::load(dir.path(), &Device::default()).unwrap();
    assert!(back.chat_template.is_none());
    // There but unreadable (a directory), not UTF-8, or not JSON: an error naming it.
    std::fs::create_dir(&tc).unwrap();
    let e = LanguageModel::load(dir.path(), &Device::default()).unwrap_err();
    assert!(
        matches!(&e, crate::LmError::Io { path, .. } if path == &tc),
        "{e:?}"
    );
    std::fs::remove_dir(&tc).unwrap();
    for (bytes, kind) in [
        (&b"{\"chat_template\": \"\xff\"}"[..], "io"),
        (b"{oops", "json"),
    ] {
        std::fs::write(&tc, bytes).unwrap();
        let e = LanguageModel::load(dir.path(), &Device::default()).unwrap_err();
        let ok = match kind {
            "io" => matches!(&e, crate::LmError::Io { path, .. } if path == &tc),
            _ => matches!(&e, crate::LmError::Json { path, .. } if path == &tc),
        };
        assert!(ok, "{kind}: {e:?}");
        assert!(e.to_string().contains("tokenizer_config.json"), "{e}");
    }
}

/// The metadata of a GGUF model file with the tiny tokenizer and no tensors.
fn gguf_config(arch: &str, heads: u32) -> Vec<u8> {
    let mut w = GgufWriter::default();
    w.str("general.architecture", arch)
        .u32(&format!("{arch}.block_count"), 1)
        .u32(&format!("{arch}.embedding_length"), 8)
        .u32(&format!("{arch}.feed_forward_length"), 8)
        .u32(&format!("{arch}.attention.head_count"), heads)
        .u32(&format!("{arch}.vocab_size"), 260);
    w.finish()
}

#[test]
fn unsupported_gguf_architecture_and_bad_sizes_name_the_key() {
    let g = GgufFile::parse(gguf_config("gemma", 2), "gemma.gguf").unwrap();
    let e = LanguageModel::from_gguf(&g, &Device::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("gemma.gguf")
            && msg.contains("general.architecture")
            && msg.contains("\"gemma\""),
        "{msg}"
    );
    let g = GgufFile::parse(gguf_config("llama", 0), "zero.gguf").unwrap();
    let e = LlamaConfig::from_gguf(&g).unwrap_err();
    assert!(
        matches!(&e, crate::LmError::InvalidConfig { path: Some(p), field, .. }
            if p.ends_with("zero.gguf") && field == "llama.attention.head_count"),
        "{e:?}"
    );
    let g = GgufFile::parse(gguf_config("qwen2", 2), "q.gguf").unwrap();
    let c = LlamaConfig::from_gguf(&g).unwrap();
    assert_eq!(c.model_type, crate::ModelType::Qwen2);
    assert!(c.qkv_bias());
}

/// Blocks kept for decoding are read only for a frozen weight, at most eight rows, on flex:
/// blocks of zeros in place of the tiny model's output layer make every logit 0 exactly when
/// they are read, so the test sees which path ran.
#[test]
fn quantised_blocks_are_read_only_for_frozen_decoding_products() {
    use rlaif_kernels::quant::{BlockFormat, QuantMatrix};
    use std::collections::HashMap;
    use std::sync::Arc;
    let cfg = tiny_config(true);
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    let zeros = QuantMatrix::new(BlockFormat::Q8_0, v, h, vec![0; v * h / 32 * 34]).unwrap();
    let blocks = HashMap::from([("model.embed_tokens.weight".to_string(), Arc::new(zeros))]);
    let short: &[u32] = &[5, 9, 33];
    let long: &[u32] = &[5, 9, 33, 70, 2, 8, 100, 4, 11];

    let plain = tiny_lm(true);
    let mut frozen = tiny_lm(true);
    frozen.model = frozen.model.no_grad();
    assert_eq!(frozen.model.attach_quantized(&blocks), 1);
    assert!(
        logits_of(&frozen, short).iter().all(|&x| x == 0.0),
        "blocks read"
    );
    assert_eq!(
        logits_of(&frozen, long),
        logits_of(&plain, long),
        "9 rows: f32"
    );

    // a weight that requires a gradient (training) never reads its blocks
    let device = Device::default().autodiff();
    let mut trained = LanguageModel::from_parts(seeded(&cfg, &device), cfg, tiny_tokenizer(), None);
    assert_eq!(trained.model.attach_quantized(&blocks), 1);
    let want = logits_of(&plain, short);
    assert!(
        max_abs_diff(&logits_of(&trained, short), &want) < 1e-6,
        "trainable: f32"
    );

    frozen.model.drop_quantized();
    assert_eq!(logits_of(&frozen, short), want, "dropped: f32");
}

#[test]
fn bf16_matmuls_round_the_products_and_are_kept_through_an_optimizer_step() {
    use crate::MatmulPrecision;
    use burn::module::{ModuleMapper, Param};
    /// One step of plain gradient descent through `Module::map`, which rebuilds the module
    /// as every optimizer's step does.
    struct Sgd<'a>(&'a burn::tensor::Gradients);
    impl ModuleMapper for Sgd<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match param.val().grad(self.0) {
                Some(g) => param.map(|t| Tensor::from_inner(t.inner() - g * 1e-2).require_grad()),
                None => param,
            }
        }
    }
    let device = Device::default().autodiff();
    let cfg = tiny_config(false);
    let f32_model = seeded(&cfg, &device);
    let mut model = seeded(&cfg, &device);
    if !rlaif_kernels::bf16_available(&device) {
        let err = model
            .set_matmul_precision(MatmulPrecision::Bf16)
            .unwrap_err();
        assert!(err.to_string().contains("AMX-BF16"), "{err}");
        assert_eq!(model.matmul_precision(), MatmulPrecision::F32);
        return;
    }
    model.set_matmul_precision(MatmulPrecision::Bf16).unwrap();
    // 2 × 12 = 24 rows per product: more than a decoding step's eight
    let ids: Vec<i64> = (0..24).map(|i| (i * 37 + 5) % 260).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 12]), &device);
    let real = vec![vec![true; 12]; 2];
    let loss_and_grads = |m: &crate::Llama| {
        let lp = score::token_logprobs(m, tokens.clone(), &real).unwrap();
        let loss = -lp.mean();
        let value = to_host(loss.clone().reshape([1])).unwrap()[0];
        (value, loss.backward())
    };
    let (loss_f32, grads_f32) = loss_and_grads(&f32_model);
    let (loss_bf16, grads_bf16) = loss_and_grads(&model);
    // the inputs of every product lose their low 16 bits: visible, but small
    let dl = (loss_bf16 - loss_f32).abs();
    assert!(
        dl > 0.0 && dl < 1e-2 * loss_f32.abs(),
        "loss {loss_f32} → {loss_bf16}"
    );
    let grad = |m: &crate::Llama, g| to_host(m.layers[1].mlp.down_proj.weight.grad(g).unwrap());
    let (g32, g16) = (
        grad(&f32_model, &grads_f32).unwrap(),
        grad(&model, &grads_bf16).unwrap(),
    );
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let diff: Vec<f32> = g32.iter().zip(&g16).map(|(a, b)| a - b).collect();
    assert!(
        norm(&diff) < 0.05 * norm(&g32),
        "down_proj gradient off by {}",
        norm(&diff)
    );
    // an optimizer step rebuilds the module: the setting stays
    let model = model.map(&mut Sgd(&grads_bf16));
    assert_eq!(model.matmul_precision(), MatmulPrecision::Bf16);
    assert_eq!(
        model.layers[0].self_attn.q_proj.precision,
        MatmulPrecision::Bf16
    );
    let (loss_after, _) = loss_and_grads(&model);
    assert!(
        loss_after < loss_bf16,
        "a step of gradient descent lowers the loss"
    );
}
