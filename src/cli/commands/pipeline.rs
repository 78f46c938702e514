//! `rlaif pipeline`: the whole of Constitutional AI in one command, into one directory:
//!
//! | stage | subcommand | writes |
//! |---|---|---|
//! | critique → revision on red-team prompts | `revise` | `revisions.jsonl` |
//! | the base model's answers to helpful prompts | `sample` | `helpful.jsonl` |
//! | supervised fine-tuning (SL-CAI) | `sft` | `sft/`, the SL model in `sft/model/` |
//! | two answers per red-team prompt from the SL model | `pairs` | `pairs.jsonl` |
//! | AI-feedback soft labels | `label` | `comparisons.jsonl` |
//! | the preference model | `train-pm` | `pm/`, the PM in `pm/model/` |
//! | PPO against the PM (RL-CAI) | `ppo` | `ppo/`, the policy in `ppo/policy/` |
//! | base vs SL vs RL on held-out prompts | `eval` | `eval/report.md`, `eval/report.json`, pictures |
//!
//! One TOML file holds every stage's settings: a table per subcommand with the same keys
//! as its flags (`[revise]`, `[sft]`, …, `[eval]`), and `[pipeline]` for the base model,
//! the feedback model, the output directory and the seed. A profile gives the starting
//! values (`smoke`, `default`, `paper`: `src/cli/profiles/*.toml`); the `--config` file's
//! keys go on top, then the flags. The merged file is written to `<out>/pipeline.toml`
//! and every stage reads it; a rerun into the same directory with any other setting is
//! refused with the setting named. Every stage resumes what is already in the
//! directory, so a rerun after Ctrl-C (or a crash) continues where the run stopped.
//!
//! With `[pipeline] label_revisions = true` (the default profile), the feedback model also
//! labels each red-team prompt's initial response against its final revision
//! (`revision_comparisons.jsonl`, the same `[label]` settings), and the preference model
//! trains on both comparison files: the small model's two samples of one prompt are
//! often alike, while a revision differs from the answer it revises in the direction the
//! constitution asks for — if the labeller agrees. Which way each pair went is the
//! labeller's call, not the loop's; the share of revisions it prefers is in the report.
//!
//! The pipeline decides the files that join the stages (`out`, `model`, `policy`,
//! `reward_model`, `revisions`, `helpful`, `pairs`, `comparisons`, `reference`,
//! `feedback_model`, `models`, `pm`, `judge`); the tables hold everything else.

use super::Common;
use crate::cli::Outcome;
use anyhow::{Context, anyhow};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The profiles, by name.
pub const PROFILES: [(&str, &str); 3] = [
    ("smoke", include_str!("../profiles/smoke.toml")),
    ("default", include_str!("../profiles/default.toml")),
    ("paper", include_str!("../profiles/paper.toml")),
];

/// The labels of the (initial response, final revision) pairs of the critique → revision
/// stage, with `[pipeline] label_revisions = true`.
pub const REVISION_COMPARISONS: &str = "revision_comparisons.jsonl";

/// The stages in order, by their table names.
pub const STAGES: [&str; 8] = [
    "revise", "sample", "sft", "pairs", "label", "train_pm", "ppo", "eval",
];

/// Flags of `rlaif pipeline`.
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Starting values: smoke (minutes), default (about 30 minutes on 2 CPU cores with
    /// SmolLM2-135M), paper (the paper's settings, for a GPU) [default: default].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The run's directory [default: target/pipeline].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// The feedback model that labels pairs and judges the evaluation [default: the base
    /// model].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_model: Option<PathBuf>,
    /// Stop after this stage (revise, sample, sft, pairs, label, train_pm, ppo, eval).
    #[arg(long)]
    #[serde(skip)]
    pub until: Option<String>,
    /// Print the merged settings and stop.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
}

/// The merged settings: the profile, the file's tables on top, the flags on top of
/// `[pipeline]`.
pub fn merged_settings(args: &Args) -> anyhow::Result<toml::Table> {
    let user: toml::Table = match &args.common.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?
        }
        None => toml::Table::new(),
    };
    let flags = toml::Table::try_from(args).context("the flags")?;
    let profile = flags
        .get("profile")
        .or_else(|| user.get("pipeline").and_then(|p| p.get("profile")))
        .and_then(|v| v.as_str())
        .unwrap_or("default")
        .to_string();
    let text = PROFILES
        .iter()
        .find(|(n, _)| *n == profile)
        .map(|(_, t)| *t)
        .ok_or_else(|| anyhow!("profile: expected smoke, default or paper, found {profile:?}"))?;
    let mut merged: toml::Table = toml::from_str(text).context("the profile")?;
    for (k, v) in user {
        let toml::Value::Table(t) = v else {
            anyhow::bail!(
                "{}: `{k}` must be a table ([pipeline] or a stage: {})",
                args.common
                    .config
                    .as_ref()
                    .map_or("".into(), |p| p.display().to_string()),
                STAGES.join(", ")
            );
        };
        anyhow::ensure!(
            k == "pipeline" || STAGES.contains(&k.as_str()),
            "{}: unknown table [{k}] (expected [pipeline] or one of {})",
            args.common
                .config
                .as_ref()
                .map_or("".into(), |p| p.display().to_string()),
            STAGES.join(", ")
        );
        let entry = merged
            .entry(k)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(e) = entry {
            e.extend(t);
        }
    }
    let p = merged
        .entry("pipeline")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(p) = p {
        p.extend(flags);
        p.insert("profile".into(), toml::Value::String(profile));
    }
    Ok(merged)
}

/// The first key whose value differs between two merged settings, as `[table] key: was → now`.
pub fn first_difference(was: &toml::Table, now: &toml::Table) -> Option<String> {
    let empty = toml::Table::new();
    let mut tables: Vec<&String> = was.keys().chain(now.keys()).collect();
    tables.sort();
    tables.dedup();
    for t in tables {
        let a = was.get(t).and_then(|v| v.as_table()).unwrap_or(&empty);
        let b = now.get(t).and_then(|v| v.as_table()).unwrap_or(&empty);
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if a.get(k) != b.get(k) {
                let show =
                    |v: Option<&toml::Value>| v.map_or("(not set)".into(), |v| v.to_string());
                return Some(format!(
                    "[{t}] {k}: was {}, is {} now",
                    show(a.get(k)),
                    show(b.get(k))
                ));
            }
        }
    }
    None
}

/// Parses a stage's flags.
fn stage_args<A: clap::Args>(argv: &[String]) -> anyhow::Result<A> {
    #[derive(clap::Parser)]
    struct Wrap<A: clap::Args> {
        #[command(flatten)]
        inner: A,
    }
    let w = <Wrap<A> as clap::Parser>::try_parse_from(argv)
        .map_err(|e| anyhow!("the pipeline's flags for {}: {e}", argv[0]))?;
    Ok(w.inner)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Runs `rlaif pipeline`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let merged = merged_settings(&args)?;
    if args.print_config {
        println!("{}", toml::to_string_pretty(&merged)?);
        return Ok(Outcome::Done);
    }
    let p = merged
        .get("pipeline")
        .and_then(|v| v.as_table())
        .cloned()
        .unwrap_or_default();
    let allowed = [
        "profile",
        "out",
        "model",
        "feedback_model",
        "seed",
        "label_revisions",
    ];
    if let Some(k) = p.keys().find(|k| !allowed.contains(&k.as_str())) {
        anyhow::bail!(
            "[pipeline]: unknown key `{k}` (expected one of {})",
            allowed.join(", ")
        );
    }
    let get = |k: &str| p.get(k).and_then(|v| v.as_str()).map(PathBuf::from);
    let out = get("out").unwrap_or_else(|| PathBuf::from("target/pipeline"));
    let base = get("model");
    let feedback = get("feedback_model").or_else(|| base.clone());
    let label_revisions = match p.get("label_revisions") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| anyhow!("[pipeline] label_revisions: expected true or false"))?,
    };
    let until = args.until.as_deref();
    if let Some(u) = until {
        anyhow::ensure!(
            STAGES.contains(&u),
            "--until: expected one of {}, found {u:?}",
            STAGES.join(", ")
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let settings_file = out.join("pipeline.toml");
    if settings_file.exists() {
        let text = std::fs::read_to_string(&settings_file)
            .with_context(|| format!("reading {}", settings_file.display()))?;
        let was: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", settings_file.display()))?;
        if let Some(d) = first_difference(&was, &merged) {
            anyhow::bail!(
                "{}: {d}; this directory holds a run with other settings (use another --out, \
                 or the same settings)",
                settings_file.display()
            );
        }
    } else {
        let text = format!(
            "# The settings of this run (rlaif pipeline): the profile, the --config file and the\n\
             # flags merged. Every stage reads its table; a rerun must match it.\n\n{}",
            toml::to_string_pretty(&merged)?
        );
        rlaif_core::fs::write_atomic(&settings_file, text.as_bytes())?;
    }
    let config = path(&settings_file);
    let seed: Vec<String> = match p.get("seed").and_then(|v| v.as_integer()) {
        Some(s) => vec!["--seed".into(), s.to_string()],
        None => vec![],
    };
    let model_flag = |flag: &str, m: &Option<PathBuf>| -> Vec<String> {
        m.as_ref()
            .map(|m| vec![flag.to_string(), path(m)])
            .unwrap_or_default()
    };
    let argv = |name: &str, rest: Vec<String>| -> Vec<String> {
        let mut v = vec![name.to_string(), "--config".into(), config.clone()];
        v.extend(seed.iter().cloned());
        v.extend(rest);
        v
    };
    let o = |f: &str| path(&out.join(f));
    let sl = out.join("sft/model");
    let pm = out.join("pm/model");
    let rl = out.join("ppo/policy");
    let total = STAGES.len();
    for (i, stage) in STAGES.iter().enumerate() {
        eprintln!("\n[{}/{total}] {stage}", i + 1);
        let outcome = match *stage {
            "revise" => super::revise::run(stage_args(&argv(
                "revise",
                [
                    vec!["--out".into(), o("revisions.jsonl")],
                    model_flag("--model", &base),
                ]
                .concat(),
            ))?)?,
            "sample" => super::sample::run(stage_args(&argv(
                "sample",
                [
                    vec!["--out".into(), o("helpful.jsonl")],
                    model_flag("--model", &base),
                ]
                .concat(),
            ))?)?,
            "sft" => super::sft::run(stage_args(&argv(
                "sft",
                [
                    vec![
                        "--revisions".into(),
                        o("revisions.jsonl"),
                        "--helpful".into(),
                        o("helpful.jsonl"),
                        "--out".into(),
                        o("sft"),
                    ],
                    model_flag("--model", &base),
                ]
                .concat(),
            ))?)?,
            "pairs" => super::pairs::run(stage_args(&argv(
                "pairs",
                vec![
                    "--model".into(),
                    path(&sl),
                    "--out".into(),
                    o("pairs.jsonl"),
                ],
            ))?)?,
            "label" => {
                let label = |pairs: &str, out: &str| -> anyhow::Result<Outcome> {
                    super::label::run(stage_args(&argv(
                        "label",
                        [
                            vec!["--pairs".into(), o(pairs), "--out".into(), o(out)],
                            model_flag("--feedback-model", &feedback),
                        ]
                        .concat(),
                    ))?)
                };
                match label("pairs.jsonl", "comparisons.jsonl")? {
                    Outcome::Done if label_revisions => {
                        label("revisions.jsonl", REVISION_COMPARISONS)?
                    }
                    o => o,
                }
            }
            "train_pm" => super::train_pm::run(stage_args(&argv(
                "train-pm",
                [
                    vec![
                        "--model".into(),
                        path(&sl),
                        "--comparisons".into(),
                        o("comparisons.jsonl"),
                    ],
                    if label_revisions {
                        vec!["--comparisons".into(), o(REVISION_COMPARISONS)]
                    } else {
                        vec![]
                    },
                    vec![
                        "--reference".into(),
                        o("helpful.jsonl"),
                        "--out".into(),
                        o("pm"),
                    ],
                ]
                .concat(),
            ))?)?,
            "ppo" => super::ppo::run(stage_args(&argv(
                "ppo",
                vec![
                    "--policy".into(),
                    path(&sl),
                    "--reward-model".into(),
                    path(&pm),
                    "--out".into(),
                    o("ppo"),
                ],
            ))?)?,
            "eval" => {
                let base_spec = format!(
                    "base={}",
                    base.as_ref().map_or("default".into(), |b| path(b))
                );
                let mut rest = vec![
                    "--models".into(),
                    base_spec,
                    "--models".into(),
                    format!("sl={}", path(&sl)),
                    "--models".into(),
                    format!("rl={}", path(&rl)),
                    "--pm".into(),
                    path(&pm),
                    "--out".into(),
                    o("eval"),
                ];
                rest.extend(model_flag("--judge", &feedback));
                let extras = extras(&out);
                super::eval::run_with(stage_args(&argv("eval", rest))?, extras)?
            }
            _ => unreachable!("every stage is listed"),
        };
        if let Outcome::Interrupted = outcome {
            return Ok(Outcome::Interrupted);
        }
        if until == Some(*stage) {
            eprintln!("stopped after {stage} (--until)");
            return Ok(Outcome::Done);
        }
    }
    eprintln!(
        "\nThe run is in {}: the SL model in {}, the PM in {}, the RL policy in {}, the report in {}.",
        out.display(),
        sl.display(),
        pm.display(),
        rl.display(),
        out.join("eval/report.md").display()
    );
    Ok(Outcome::Done)
}

/// What the training stages reported, for the evaluation's report: their summaries and
/// pictures, and a sentence each on whether SFT learned and whether PPO raised the score
/// without running away in KL.
fn extras(out: &Path) -> super::eval::Extras {
    let mut e = super::eval::Extras {
        revisions: Some(out.join("revisions.jsonl")),
        ..Default::default()
    };
    if let Some(r) = read_json(&out.join("sft/report.json")) {
        let mut m = Map::new();
        for k in ["steps", "total_steps", "tokens_per_second"] {
            if let Some(v) = r.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        if let Some(ev) = r.get("evals").and_then(|v| v.as_array())
            && let (Some(a), Some(b)) = (ev.first(), ev.last())
        {
            let loss = |x: &Value| x.get("loss").and_then(Value::as_f64);
            if let (Some(l0), Some(l1)) = (loss(a), loss(b)) {
                m.insert("held_out_loss_first".into(), l0.into());
                m.insert("held_out_loss_last".into(), l1.into());
                e.findings.push(format!(
                    "SFT: held-out loss {l0:.3} → {l1:.3} (nats per completion token)."
                ));
            }
        }
        e.stages.insert("sft".into(), Value::Object(m));
    }
    if let Some(r) = read_json(&out.join("pm/report.json")) {
        let mut m = Map::new();
        if let Some(v) = r.get("steps") {
            m.insert("steps".into(), v.clone());
        }
        for (part, key) in [("train", "train_pairs"), ("eval", "held_out_pairs")] {
            if let Some(v) = r.get(part).and_then(|p| p.get("pairs")) {
                m.insert(key.into(), v.clone());
            }
        }
        if let Some(ev) = r
            .get("evals")
            .and_then(|v| v.as_array())
            .and_then(|v| v.last())
        {
            for k in ["loss", "accuracy", "ece"] {
                if let Some(v) = ev.get(k) {
                    m.insert(format!("held_out_{k}"), v.clone());
                }
            }
        }
        e.stages.insert("preference model".into(), Value::Object(m));
        e.figures.push((
            "Preference model: calibration on held-out comparisons".into(),
            out.join("pm/calibration.svg"),
        ));
    }
    if let Some(r) = read_json(&out.join("ppo/report.json")) {
        let mut m = Map::new();
        let log = r.get("log").and_then(|v| v.as_array());
        let at = |i: usize, k: &str| {
            log.and_then(|l| l.get(i))
                .and_then(|x| x.get(k))
                .and_then(Value::as_f64)
        };
        let n = log.map_or(0, |l| l.len());
        if n > 0 {
            for (k, name) in [
                ("objective/raw_scores", "pm_score"),
                ("objective/scores", "score"),
                ("objective/kl", "kl"),
                ("objective/rlhf_reward", "rlhf_reward"),
            ] {
                if let (Some(a), Some(b)) = (at(0, k), at(n - 1, k)) {
                    m.insert(format!("{name}_first"), a.into());
                    m.insert(format!("{name}_last"), b.into());
                }
            }
            if let (Some(s0), Some(s1), Some(k1)) = (
                at(0, "objective/raw_scores"),
                at(n - 1, "objective/raw_scores"),
                at(n - 1, "objective/kl"),
            ) {
                e.findings.push(format!(
                    "PPO: rollout PM score {s0:.3} → {s1:.3} over {n} iterations, KL to the SL model {k1:.2} nats per answer at the end."
                ));
            }
        }
        if let Some(v) = r.get("kl_coef") {
            m.insert("kl_coef_last".into(), v.clone());
        }
        e.stages.insert("ppo".into(), Value::Object(m));
        e.figures
            .push(("PPO: reward and KL".into(), out.join("ppo/curves.svg")));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_have_every_stage() {
        for (name, text) in PROFILES {
            let t: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            for s in STAGES {
                assert!(t.contains_key(s), "{name}: no [{s}]");
            }
        }
    }

    #[test]
    fn the_file_goes_over_the_profile_and_differences_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my.toml");
        std::fs::write(
            &file,
            "[sft]\nlearning_rate = 1e-4\n[pipeline]\nprofile = \"smoke\"\n",
        )
        .unwrap();
        let args = Args {
            common: Common {
                config: Some(file.clone()),
                ..Common::default()
            },
            ..Args::default()
        };
        let m = merged_settings(&args).unwrap();
        assert_eq!(m["sft"]["learning_rate"].as_float(), Some(1e-4));
        // The rest of the smoke profile stays.
        assert_eq!(m["sft"]["epochs"].as_integer(), Some(1));
        assert_eq!(m["pipeline"]["profile"].as_str(), Some("smoke"));
        let mut other = m.clone();
        other["sft"]
            .as_table_mut()
            .unwrap()
            .insert("learning_rate".into(), 2e-4.into());
        let d = first_difference(&m, &other).unwrap();
        assert!(
            d.contains("[sft] learning_rate: was 0.0001, is 0.0002 now"),
            "{d}"
        );
        assert_eq!(first_difference(&m, &m), None);
        std::fs::write(&file, "[sft]\nlearning_rate = 1e-4\n[sfft]\nx = 1\n").unwrap();
        let e = merged_settings(&args).unwrap_err().to_string();
        assert!(e.contains("unknown table [sfft]"), "{e}");
    }
}
