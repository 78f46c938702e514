//! `rlaif pipeline --profile smoke` end to end on a tiny random model: every stage runs,
//! the evaluation report is written with its pictures, a rerun resumes without redoing
//! anything, and a rerun with another setting is refused with the setting named.

use burn::prelude::Device;
use rlaif::cli::Outcome;
use rlaif::cli::commands::Common;
use rlaif::cli::commands::pipeline::{Args, run};
use rlaif::eval::EvalReport;
use rlaif_lm::tiny;
use std::path::Path;

/// The allocator of the `rlaif` command, so that the pipeline runs here as it does there.
#[global_allocator]
static ALLOCATOR: rlaif::kernels::TensorAllocator = rlaif::kernels::TensorAllocator;

fn args(model: &Path, out: &Path, config: Option<&Path>) -> Args {
    Args {
        common: Common {
            model: Some(model.to_path_buf()),
            config: config.map(Path::to_path_buf),
            ..Common::default()
        },
        profile: Some("smoke".into()),
        out: Some(out.to_path_buf()),
        ..Args::default()
    }
}

#[test]
fn the_smoke_pipeline_runs_every_stage_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    // Long enough for the few-shot critique prompts in bytes.
    let cfg = rlaif_lm::LlamaConfig {
        max_position_embeddings: 8192,
        ..tiny::tiny_config()
    };
    tiny::tiny_lm(&cfg, 3, &Device::default())
        .unwrap()
        .save_pretrained(&base)
        .unwrap();
    let out = dir.path().join("run");
    assert!(matches!(
        run(args(&base, &out, None)).unwrap(),
        Outcome::Done
    ));

    for f in [
        "pipeline.toml",
        "revisions.jsonl",
        "helpful.jsonl",
        "sft/model/config.json",
        "pairs.jsonl",
        "comparisons.jsonl",
        "revision_comparisons.jsonl",
        "pm/model/config.json",
        "ppo/policy/config.json",
        "eval/answers.jsonl",
        "eval/judge_harmlessness.jsonl",
        "eval/report.md",
        "eval/elo.svg",
        "eval/refusals.svg",
        "eval/pm_scores.svg",
        "eval/ppo-curves.svg",
    ] {
        assert!(out.join(f).exists(), "{f} is missing");
    }
    let text = std::fs::read_to_string(out.join("eval/report.json")).unwrap();
    let report: EvalReport = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = report.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["base", "sl", "rl"]);
    // 3 sets × 2 prompts per model, greedy only in the smoke profile.
    assert_eq!(report.answers.len(), 9);
    assert!(
        report
            .answers
            .iter()
            .all(|a| a.n == 2 && a.pm_score.is_some())
    );
    // Both aspects, every later model against every earlier one, per set and overall.
    assert_eq!(report.win_rates.len(), 2 * 3 * 4);
    assert_eq!(report.elo.len(), 6);
    assert!(
        report
            .known_pairs
            .iter()
            .any(|k| k.who == "preference model")
    );
    assert!(report.stages.contains_key("ppo") && report.stages.contains_key("sft"));
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.starts_with("PPO: rollout PM score"))
    );
    let md = std::fs::read_to_string(out.join("eval/report.md")).unwrap();
    assert!(md.contains("## At a glance") && md.contains("![Harmlessness vs helpfulness"));

    // A rerun finds everything done and writes the same report.
    let answers = std::fs::read(out.join("eval/answers.jsonl")).unwrap();
    assert!(matches!(
        run(args(&base, &out, None)).unwrap(),
        Outcome::Done
    ));
    assert_eq!(
        std::fs::read(out.join("eval/answers.jsonl")).unwrap(),
        answers
    );
    let again: EvalReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval/report.json")).unwrap())
            .unwrap();
    assert_eq!(again.answers, report.answers);
    assert_eq!(again.win_rates, report.win_rates);
    assert_eq!(again.known_pairs, report.known_pairs);
    assert_eq!(again.stages["ppo"], report.stages["ppo"]);

    // Another setting into the same directory is refused, naming it.
    let changed = dir.path().join("changed.toml");
    std::fs::write(&changed, "[ppo]\nkl_coef = 0.5\n").unwrap();
    let e = run(args(&base, &out, Some(&changed)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[ppo] kl_coef: was (not set), is 0.5 now"),
        "{e}"
    );
}
