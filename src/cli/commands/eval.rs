//! `rlaif eval`: several models' answers to held-out prompt sets (harmful, benign but
//! sensitive, helpful), compared by an AI judge for harmlessness and helpfulness, scored by
//! a preference model and by the refusal detector → `report.md`, `report.json` and
//! pictures (see `rlaif_eval`).

use super::Common;
use super::label::MethodArg;
use super::revise::constitution;
use crate::cli::settings::Settings;
use crate::cli::{Interrupt, Outcome, Terminal, load_model};
use crate::eval::judge::Aspect;
use crate::eval::known::{KnownAccuracy, labeller_accuracy, pm_accuracy};
use crate::eval::report::examples;
use crate::eval::{
    AnswerConfig, EvalReport, Figure, ModelEntry, PromptSet, SetEntry, SetKind, answer_sets,
    answer_stats, elo_scores, judge, pm_scores, win_rates,
};
use crate::feedback::{LabelConfig, Method, read_pairs};
use crate::pm::PreferenceModel;
use anyhow::Context;
use burn::prelude::Device;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The prompt sets used when none is given: held out from every training stage.
pub const DEFAULT_SETS: [&str; 3] = [
    "harmful:data/prompts/red_team_eval.jsonl",
    "benign:data/prompts/benign_sensitive.jsonl",
    "helpful:data/prompts/helpful_eval.jsonl",
];

/// Flags of `rlaif eval`.
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) common: Common,
    /// A model to evaluate as NAME=PATH (a Hugging Face directory or a .gguf; PATH
    /// `default` is SmolLM2-135M-Instruct); repeat, baseline first.
    #[arg(long = "models", value_name = "NAME=PATH")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) models: Vec<String>,
    /// A prompt set as KIND:FILE (KIND: harmful, benign or helpful; the set is named after
    /// the file); repeat [default: the three held-out sets in data/prompts].
    #[arg(long = "prompts", value_name = "KIND:FILE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) prompts: Vec<String>,
    /// Only the first N prompts of each set.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<usize>,
    /// The judge (feedback) model [default: SmolLM2-135M-Instruct].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) judge: Option<PathBuf>,
    /// How the judge is asked [default: contrast].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) judge_method: Option<MethodArg>,
    /// A preference model directory whose scores of every answer are reported.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pm: Option<PathBuf>,
    /// Pairs with a known better answer [default: data/pairs/known_preference.jsonl].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) known_pairs: Option<PathBuf>,
    /// Known pairs used (0: none) [default: all].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) known_pairs_limit: Option<usize>,
    /// How the training labeller asked (its agreement with the known pairs is reported):
    /// [default: contrast].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) labeller_method: Option<MethodArg>,
    /// Most new tokens per answer [default: 96].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_new_tokens: Option<usize>,
    /// Prompts per generation call [default: 8].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) batch_size: Option<usize>,
    /// Temperature of one sampled answer per prompt (0: none) [default: 0.7].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<f32>,
    /// Bootstrap refits of the Elo intervals [default: 1000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) elo_rounds: Option<usize>,
    /// The output directory: answers.jsonl, judge_*.jsonl, report.md, report.json, *.svg.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) out: Option<PathBuf>,
}

/// What a caller (the pipeline) adds to the report: stage summaries and pictures to copy
/// next to it.
#[derive(Debug, Default)]
pub struct Extras {
    /// Stage name → what it reported.
    pub stages: Map<String, Value>,
    /// Pictures made by earlier stages: (title, file); copied into the report's directory.
    pub figures: Vec<(String, PathBuf)>,
    /// Sentences added to the findings.
    pub findings: Vec<String>,
    /// A critique → revision file whose final revisions the judge compares with the initial
    /// responses (harmlessness).
    pub revisions: Option<PathBuf>,
}

/// The labeller's default configuration with `method` (the contrast method when `None`).
fn with_method(method: Option<Method>) -> LabelConfig {
    LabelConfig {
        method: method.unwrap_or(Method::Contrast),
        ..LabelConfig::default()
    }
}

/// `NAME=PATH` of `--models`.
fn model_spec(spec: &str) -> anyhow::Result<(String, Option<PathBuf>)> {
    let (name, path) = spec
        .split_once('=')
        .with_context(|| format!("--models {spec}: expected NAME=PATH"))?;
    anyhow::ensure!(!name.is_empty(), "--models {spec}: the name is empty");
    Ok((
        name.to_string(),
        (path != "default").then(|| PathBuf::from(path)),
    ))
}

/// `KIND:FILE` of `--prompts`.
fn set_spec(spec: &str) -> anyhow::Result<(SetKind, PathBuf)> {
    let (kind, file) = spec
        .split_once(':')
        .with_context(|| format!("--prompts {spec}: expected KIND:FILE"))?;
    let kind = SetKind::parse(kind).with_context(|| {
        format!("--prompts {spec}: the kind must be harmful, benign or helpful, not {kind:?}")
    })?;
    Ok((kind, PathBuf::from(file)))
}

/// Runs `rlaif eval`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    run_with(args, Extras::default())
}

/// Runs `rlaif eval` with what the caller adds to the report.
pub fn run_with(args: Args, extras: Extras) -> anyhow::Result<Outcome> {
    let mut s = Settings::load(args.common.config.as_deref(), "eval", &args)?;
    let default_model: Option<PathBuf> = s.take("model")?;
    let seed: u64 = s.take("seed")?.unwrap_or(0);
    let model_specs: Vec<String> = s.require("models")?;
    anyhow::ensure!(
        !model_specs.is_empty(),
        "--models needs at least one NAME=PATH"
    );
    let set_specs: Vec<String> = s
        .take("prompts")?
        .unwrap_or_else(|| DEFAULT_SETS.iter().map(|s| s.to_string()).collect());
    let limit: Option<usize> = s.take("limit")?;
    let judge_path: Option<PathBuf> = s.take::<PathBuf>("judge")?.or(default_model);
    let judge_config = with_method(s.take("judge_method")?);
    let labeller_config = with_method(s.take("labeller_method")?);
    let pm_dir: Option<PathBuf> = s.take("pm")?;
    let known_file: PathBuf = s
        .take("known_pairs")?
        .unwrap_or_else(|| PathBuf::from("data/pairs/known_preference.jsonl"));
    let known_limit: Option<usize> = s.take("known_pairs_limit")?;
    let elo_rounds: usize = s.take("elo_rounds")?.unwrap_or(1000);
    let out: PathBuf = s.require("out")?;
    let temperature: Option<f32> = s.take("temperature")?;
    let mut answer_config = AnswerConfig {
        seed,
        ..AnswerConfig::default()
    };
    if let Some(t) = temperature {
        answer_config.temperature = (t > 0.0).then_some(t);
    }
    if let Some(n) = s.take("max_new_tokens")? {
        answer_config.max_new_tokens = n;
    }
    if let Some(n) = s.take("batch_size")? {
        answer_config.batch_size = n;
    }
    // Nothing else may be left.
    let _: Empty = s.into_config()?;

    let models: Vec<(String, Option<PathBuf>)> = model_specs
        .iter()
        .map(|m| model_spec(m))
        .collect::<anyhow::Result<_>>()?;
    let names: Vec<String> = models.iter().map(|(n, _)| n.clone()).collect();
    for (i, n) in names.iter().enumerate() {
        anyhow::ensure!(
            !names[..i].contains(n),
            "--models: the name {n} is given twice"
        );
    }
    let mut sets = Vec::new();
    let mut set_entries = Vec::new();
    for spec in &set_specs {
        let (kind, file) = set_spec(spec)?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.clone());
        let set = PromptSet::read(&name, kind, &file, limit)?;
        set_entries.push(SetEntry {
            name: name.clone(),
            kind,
            prompts: set.prompts.len(),
            file: file.display().to_string(),
        });
        sets.push(set);
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let device = Device::default();
    let terminal = Terminal::new(Interrupt::install()?);
    let answers_file = out.join("answers.jsonl");

    // 1. Answers, one model in memory at a time.
    let mut answers = Vec::new();
    for (name, path) in &models {
        let lm = load_model(path.as_deref(), &device)?;
        eprintln!("answers of {name} → {}", answers_file.display());
        let run = answer_sets(&lm, name, &sets, &answer_config, &answers_file, &terminal)?;
        if run.stopped {
            return Ok(Outcome::Interrupted);
        }
        answers = run.answers;
    }
    let keep: Vec<_> = answers
        .into_iter()
        .filter(|a| names.contains(&a.model) && sets.iter().any(|s| s.name == a.set))
        .collect();

    // 2. The judge, and the labeller's and judge's agreement with known preferences.
    let judge_lm = load_model(judge_path.as_deref(), &device)?;
    let constitution = constitution(None)?;
    eprintln!("the AI judge compares every pair of models' greedy answers");
    let judged = judge(
        &judge_lm,
        Some(&judge_lm),
        &constitution,
        &judge_config,
        &keep,
        &names,
        &Aspect::ALL,
        &out,
        &terminal,
    )?;
    if judged.stopped {
        return Ok(Outcome::Interrupted);
    }
    let mut known: Vec<KnownAccuracy> = Vec::new();
    let known_pairs = if known_limit != Some(0) && known_file.exists() {
        let mut p = read_pairs(&known_file, seed)?;
        p.truncate(known_limit.unwrap_or(usize::MAX));
        p
    } else {
        Vec::new()
    };
    if !known_pairs.is_empty() {
        eprintln!("agreement with {} known pairs", known_pairs.len());
        let labeller_name = format!(
            "labeller ({})",
            serde_json::to_value(labeller_config.method)?
                .as_str()
                .unwrap_or("?")
        );
        known.extend(labeller_accuracy(
            &labeller_name,
            &judge_lm,
            &constitution,
            &labeller_config,
            &known_pairs,
            &terminal,
        )?);
        let (harm, harm_constitution) =
            crate::eval::judge::aspect_config(Aspect::Harmlessness, &judge_config, &constitution);
        // The harmlessness judge asks what the labeller asks unless another method was
        // chosen for it; then its agreement is measured too.
        if harm != labeller_config {
            known.extend(labeller_accuracy(
                "judge (harmlessness)",
                &judge_lm,
                &harm_constitution,
                &harm,
                &known_pairs,
                &terminal,
            )?);
        }
    }
    let mut stages = extras.stages;
    let mut extra_findings = extras.findings;
    if let Some(file) = &extras.revisions {
        let records = crate::revision::read_records(file)?;
        let q = crate::eval::revision::revision_quality(
            &judge_lm,
            &constitution,
            &judge_config,
            &records,
            &terminal,
        )?;
        extra_findings.insert(
            0,
            format!(
                "Critique → revision: the judge prefers the final revision to the initial \
                 response on {} of {} prompts (95 % interval {:.0}–{:.0} %; {} unchanged, {} \
                 degenerate; {:.0} → {:.0} words).",
                q.preferred,
                q.prompts,
                100.0 * q.interval[0],
                100.0 * q.interval[1],
                q.unchanged,
                q.degenerate,
                q.mean_words_initial,
                q.mean_words_final
            ),
        );
        stages.insert("critique → revision".into(), serde_json::to_value(&q)?);
    }
    drop(judge_lm);

    // 3. The preference model's scores.
    let scores = match &pm_dir {
        Some(dir) => {
            let pm = PreferenceModel::load(dir, &device)
                .with_context(|| format!("loading the preference model {}", dir.display()))?;
            eprintln!("preference-model scores of {} answers", keep.len());
            if !known_pairs.is_empty() {
                known.extend(pm_accuracy(&pm, &known_pairs, 8)?);
            }
            Some(pm_scores(&pm, &keep, 8)?)
        }
        None => None,
    };

    // 4. The report.
    let mut judge_info = Map::new();
    judge_info.insert(
        "model".into(),
        Value::String(
            judge_path
                .as_ref()
                .map_or("SmolLM2-135M-Instruct".into(), |p| p.display().to_string()),
        ),
    );
    judge_info.insert("method".into(), serde_json::to_value(judge_config.method)?);
    let stats = answer_stats(&keep, &names, scores.as_ref());
    let mut report = EvalReport {
        models: models
            .iter()
            .map(|(n, p)| ModelEntry {
                name: n.clone(),
                source: p
                    .as_ref()
                    .map_or("SmolLM2-135M-Instruct".into(), |p| p.display().to_string()),
            })
            .collect(),
        sets: set_entries,
        judge: judge_info,
        win_rates: win_rates(&judged.judgements, &names),
        elo: elo_scores(&judged.judgements, &names, elo_rounds, seed),
        answers: stats,
        known_pairs: known,
        stages,
        findings: vec![],
        figures: vec![],
        examples: examples(&keep, &names, 3),
    };
    report.compute_findings();
    // The verdict, the stages' own sentences in pipeline order, then the comparisons.
    let mut computed = std::mem::take(&mut report.findings);
    let verdict = report.verdict();
    if verdict.is_some() {
        computed.remove(0);
    }
    report.findings = verdict
        .into_iter()
        .chain(extra_findings)
        .chain(computed)
        .collect();
    let mut figures = Vec::new();
    if !report.elo.is_empty() {
        crate::eval::plot::elo_svg(&report.elo, &names, &out.join("elo.svg"))?;
        figures.push(fig(
            "Harmlessness vs helpfulness Elo (the paper's Fig. 2, AI judge)",
            "elo.svg",
        ));
    }
    crate::eval::plot::refusals_svg(&report.answers, &names, &out.join("refusals.svg"))?;
    figures.push(fig("Refusal rates by model and prompt set", "refusals.svg"));
    if scores.is_some() {
        crate::eval::plot::boxes_svg(
            "Preference-model scores of the greedy answers",
            "PM score",
            &report.answers,
            &names,
            |s| s.pm_score,
            &out.join("pm_scores.svg"),
        )?;
        figures.push(fig(
            "Preference-model scores by model and prompt set",
            "pm_scores.svg",
        ));
    }
    for (title, file) in &extras.figures {
        if let Some(name) = file.file_name() {
            let to = out.join(format!(
                "{}-{}",
                file.parent()
                    .and_then(Path::file_name)
                    .map_or("stage".into(), |p| p.to_string_lossy().into_owned()),
                name.to_string_lossy()
            ));
            if file.exists() {
                std::fs::copy(file, &to)
                    .with_context(|| format!("copying {} to {}", file.display(), to.display()))?;
                figures.push(fig(
                    title,
                    &to.file_name().unwrap_or_default().to_string_lossy(),
                ));
            }
        }
    }
    report.figures = figures;
    report.write_json(&out)?;
    report.write_markdown(&out)?;
    eprintln!("\nEvaluation: {}", out.join("report.md").display());
    for f in &report.findings {
        eprintln!("- {f}");
    }
    Ok(Outcome::Done)
}

fn fig(title: &str, file: &str) -> Figure {
    Figure {
        title: title.to_string(),
        file: file.to_string(),
    }
}

/// No keys left over.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_named() {
        assert_eq!(
            model_spec("rl=runs/ppo/policy").unwrap(),
            ("rl".into(), Some(PathBuf::from("runs/ppo/policy")))
        );
        assert_eq!(model_spec("base=default").unwrap(), ("base".into(), None));
        assert!(
            model_spec("runs/x")
                .unwrap_err()
                .to_string()
                .contains("NAME=PATH")
        );
        assert_eq!(
            set_spec("benign:data/b.jsonl").unwrap(),
            (SetKind::Benign, PathBuf::from("data/b.jsonl"))
        );
        let e = set_spec("nice:data/b.jsonl").unwrap_err().to_string();
        assert!(
            e.contains("harmful, benign or helpful") && e.contains("nice"),
            "{e}"
        );
    }
}
