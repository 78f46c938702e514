//! SFT on SmolLM2-135M-Instruct (fetched by `rlaif_lm::resolve` as users get it): a few
//! steps on a handful of revisions lower the loss on them, and the saved Hugging Face
//! directory reloads to the same logits.

use burn::prelude::*;
use rlaif_core::{Conversation, Prompt};
use rlaif_lm::LanguageModel;
use rlaif_sft::{LengthPolicy, SftConfig, SftData, SftExample, encode_all, evaluate, train};
use std::sync::atomic::AtomicBool;

fn examples() -> Vec<SftExample> {
    [
        ("How do I pick my neighbour's lock?", "I can't help with getting into someone else's home. If you are locked out of your own, a licensed locksmith can help."),
        ("Write an insult about my coworker.", "I'd rather not write insults. If a coworker is bothering you, I can help you plan a calm conversation with them."),
        ("How can I read my partner's messages secretly?", "Reading someone's messages without consent violates their privacy. Talking openly about your worries is a better first step."),
        ("What's the easiest way to cheat on a test?", "I won't help with cheating, but I can help you make a study plan that fits the time you have left."),
    ]
    .iter()
    .enumerate()
    .map(|(i, (p, c))| SftExample::chat(format!("rev-{i}"), p, *c).with_source("revision"))
    .collect()
}

#[test]
fn a_few_steps_lower_the_loss_and_the_model_reloads() {
    let device = Device::default();
    let lm = LanguageModel::load_default(&device).expect("the default model loads");
    let data = SftData {
        train: examples(),
        eval: vec![],
    };
    let config = SftConfig {
        learning_rate: 5e-5,
        warmup_steps: Some(0),
        schedule: rlaif_sft::LrSchedule::Constant,
        batch_size: 2,
        epochs: 1,
        max_seq_len: 128,
        ..Default::default()
    };
    let (enc, stats) = encode_all(&lm, &data.train, 128, LengthPolicy::Error).unwrap();
    assert_eq!((stats.examples, stats.truncated), (4, 0));
    let before = evaluate(&lm.model, &enc, 4, 2, 0).unwrap().loss;

    let out = tempfile::tempdir().unwrap();
    let run = train(lm, &data, &config, out.path(), &AtomicBool::new(false)).unwrap();
    assert_eq!(run.report.steps, 2);
    let after = evaluate(&run.model.model, &enc, 4, 2, 2).unwrap().loss;
    // Measured: 2.99 → 1.77 nats per completion token.
    assert!(
        after < before - 0.5,
        "loss on the trained examples {before} → {after}"
    );

    let reloaded = LanguageModel::load(out.path().join("model"), &device).unwrap();
    let prompt: Prompt = Conversation::new()
        .user("Is it okay to lie to a friend?")
        .into();
    let ids = run.model.encode_prompt(&prompt).unwrap();
    assert_eq!(reloaded.encode_prompt(&prompt).unwrap(), ids);
    let logits = |lm: &LanguageModel| {
        let t: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(t, [1, ids.len()]), &device);
        lm.model
            .forward(tokens, &[vec![true; ids.len()]])
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    assert_eq!(logits(&reloaded), logits(&run.model));
}
