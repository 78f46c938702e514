//! Checkpoints: the model, the optimizer state and the trainer state, written atomically.
//!
//! Layout under the run's output directory:
//!
//! ```text
//! checkpoints/step-00000040/model.bpk          the parameters (burnpack, with parameter ids)
//! checkpoints/step-00000040/optimizer.bpk      AdamW moments and step counts, keyed by parameter id
//! checkpoints/step-00000040/trainer_state.json [`TrainerState`]
//! ```
//!
//! A checkpoint is written into `step-N.partial/`, each file flushed to disk, and the
//! directory then renamed to `step-N/`: a crash leaves either the whole checkpoint or a
//! `.partial` directory that the next run deletes. The newest `keep` checkpoints are kept.
//! Burnpack keeps parameter ids, so the optimizer state (keyed by id) applies to the
//! reloaded model as it did to the saved one.

use crate::config::{RESUMABLE_FIELDS, SftConfig};
use crate::error::{Result, SftError};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use rlaif_lm::Llama;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The trainer state file of a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
const MODEL_FILE: &str = "model.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bpk";

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
    /// The run's configuration.
    pub config: SftConfig,
    /// FNV-1a hash of the encoded training set (ids, tokens, prompt lengths), in hex.
    pub train_fingerprint: String,
    /// Training examples.
    pub train_examples: usize,
    /// Completion tokens trained on so far.
    pub tokens_seen: u64,
    /// The model's configuration (Hugging Face `config.json` fields).
    #[serde(default)]
    pub model_config: serde_json::Value,
}

/// The directory of the checkpoint after `step` steps.
pub fn checkpoint_dir(out_dir: &Path, step: usize) -> PathBuf {
    out_dir.join("checkpoints").join(format!("step-{step:08}"))
}

fn step_of(name: &str) -> Option<usize> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Writes a checkpoint atomically and deletes all but the newest `keep`.
pub fn save(
    out_dir: &Path,
    model: &Llama,
    optim: &ModuleOptimizer,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(out_dir, state.step);
    let partial = dir.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| SftError::io(&partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| SftError::io(&partial, e))?;
    let ckpt_err = |path: &Path, e: &dyn std::fmt::Debug| SftError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("{e:?}"),
    };
    let model_path = partial.join(MODEL_FILE);
    model
        .clone()
        .save_file(&model_path)
        .map_err(|e| ckpt_err(&model_path, &e))?;
    let optim_path = partial.join(OPTIMIZER_FILE);
    optim
        .save(&optim_path)
        .map_err(|e| ckpt_err(&optim_path, &e))?;
    let state_path = partial.join(STATE_FILE);
    fs::write(&state_path, serde_json::to_vec_pretty(state)?)
        .map_err(|e| SftError::io(&state_path, e))?;
    for f in [&model_path, &optim_path, &state_path] {
        sync(f)?;
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| SftError::io(&dir, e))?;
    }
    fs::rename(&partial, &dir).map_err(|e| SftError::io(&dir, e))?;
    if let Some(parent) = dir.parent() {
        sync(parent)?;
    }
    prune(out_dir, keep)?;
    Ok(dir)
}

fn sync(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| SftError::io(path, e))
}

/// Complete checkpoints under `out_dir`, oldest first, as (step, directory).
pub fn list(out_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = out_dir.join("checkpoints");
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(SftError::io(&root, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SftError::io(&root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = step_of(&name)
            && entry.path().join(STATE_FILE).is_file()
        {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes `.partial` leftovers and all complete checkpoints but the newest `keep`.
pub fn prune(out_dir: &Path, keep: usize) -> Result<()> {
    let root = out_dir.join("checkpoints");
    if let Ok(entries) = fs::read_dir(&root) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".partial") {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(|e| SftError::io(&p, e))?;
            }
        }
    }
    let all = list(out_dir)?;
    for (_, dir) in &all[..all.len().saturating_sub(keep)] {
        fs::remove_dir_all(dir).map_err(|e| SftError::io(dir, e))?;
    }
    Ok(())
}

/// Reads the trainer state of a checkpoint directory.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|e| SftError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| SftError::Checkpoint {
        path,
        message: format!("unreadable trainer state: {e}"),
    })
}

/// The newest complete checkpoint, if any.
pub fn latest(out_dir: &Path) -> Result<Option<(PathBuf, TrainerState)>> {
    match list(out_dir)?.pop() {
        Some((_, dir)) => {
            let state = read_state(&dir)?;
            Ok(Some((dir, state)))
        }
        None => Ok(None),
    }
}

/// Loads a checkpoint's parameters into `model` (same shapes; its parameter ids become
/// the checkpoint's) and its state into `optim`.
pub fn load(dir: &Path, model: Llama, optim: ModuleOptimizer) -> Result<(Llama, ModuleOptimizer)> {
    let ckpt_err = |path: PathBuf, e: &dyn std::fmt::Debug| SftError::Checkpoint {
        path,
        message: format!("{e:?}"),
    };
    let model_path = dir.join(MODEL_FILE);
    let model = model
        .try_load_file(&model_path)
        .map_err(|e| ckpt_err(model_path.clone(), &e))?;
    let optim_path = dir.join(OPTIMIZER_FILE);
    let optim = optim
        .load(&optim_path)
        .map_err(|e| ckpt_err(optim_path.clone(), &e))?;
    Ok((model, optim))
}

/// Checks that a checkpoint was made by the same run: every setting that changes what is
/// computed, the model's shape and the training data.
pub fn check_resumable(
    state: &TrainerState,
    state_path: &Path,
    config: &SftConfig,
    train_fingerprint: &str,
    train_examples: usize,
    model_config: &serde_json::Value,
) -> Result<()> {
    let mismatch = |field: &str, found: String, expected: String| SftError::ResumeMismatch {
        path: state_path.to_path_buf(),
        field: field.to_string(),
        found,
        expected,
    };
    let (serde_json::Value::Object(then), serde_json::Value::Object(now)) = (
        serde_json::to_value(&state.config)?,
        serde_json::to_value(config)?,
    ) else {
        unreachable!("a config serialises to an object");
    };
    for (key, value) in &now {
        if RESUMABLE_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let old = then.get(key).cloned().unwrap_or(serde_json::Value::Null);
        if &old != value {
            return Err(mismatch(key, old.to_string(), value.to_string()));
        }
    }
    if &state.model_config != model_config {
        return Err(mismatch(
            "model config",
            state.model_config.to_string(),
            model_config.to_string(),
        ));
    }
    if state.train_examples != train_examples {
        return Err(mismatch(
            "training examples",
            state.train_examples.to_string(),
            train_examples.to_string(),
        ));
    }
    if state.train_fingerprint != train_fingerprint {
        return Err(mismatch(
            "training data fingerprint",
            state.train_fingerprint.clone(),
            train_fingerprint.to_string(),
        ));
    }
    Ok(())
}
