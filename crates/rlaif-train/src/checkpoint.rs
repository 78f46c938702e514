//! Checkpoints: the model, the optimizer state and a JSON trainer state, written
//! atomically.
//!
//! Layout under a run's output directory:
//!
//! ```text
//! checkpoints/step-00000040/model.bpk          the parameters (burnpack, with parameter ids)
//! checkpoints/step-00000040/optimizer.bpk      AdamW moments and step counts, keyed by parameter id
//! checkpoints/step-00000040/trainer_state.json [`CheckpointState`]
//! ```
//!
//! A checkpoint is written into `step-N.partial/`, each file flushed to disk, the
//! directory renamed to `step-N/` and its parent flushed: a crash leaves either the whole
//! checkpoint or a `.partial` directory that the next save or [`prune`] deletes. Burnpack
//! keeps parameter ids, so the optimizer state (keyed by id) applies to the reloaded model
//! as it did to the saved one (safetensors would lose the ids).

use crate::error::{Result, TrainError};
use crate::resume::RunIdentity;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use rlaif_core::fs::{FileError, sync_dir, sync_file, write_atomic};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The trainer state file of a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
/// The parameters of a checkpoint.
pub const MODEL_FILE: &str = "model.bpk";
/// The optimizer state of a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState<S> {
    /// Optimizer steps done.
    pub step: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
    /// What must not change for the run to be resumed from here.
    pub identity: RunIdentity,
    /// The stage's own state (tokens seen, data position, a KL controller, ...).
    pub stage: S,
}

/// The directory of the checkpoint after `step` steps.
pub fn checkpoint_dir(out_dir: &Path, step: usize) -> PathBuf {
    out_dir.join("checkpoints").join(format!("step-{step:08}"))
}

fn step_of(name: &str) -> Option<usize> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Writes a checkpoint of `model`, `optim` and `state` atomically, then deletes all but
/// the newest `keep` checkpoints.
pub fn save<M: Module, S: Serialize>(
    out_dir: &Path,
    model: &M,
    optim: &ModuleOptimizer,
    state: &CheckpointState<S>,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(out_dir, state.step);
    let partial = dir.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(FileError::at(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(FileError::at(&partial))?;
    let model_path = partial.join(MODEL_FILE);
    model
        .clone()
        .save_file(&model_path)
        .map_err(|e| TrainError::checkpoint(&model_path, format!("{e:?}")))?;
    let optim_path = partial.join(OPTIMIZER_FILE);
    optim
        .save(&optim_path)
        .map_err(|e| TrainError::checkpoint(&optim_path, format!("{e:?}")))?;
    let state_path = partial.join(STATE_FILE);
    let json =
        serde_json::to_vec_pretty(state).map_err(|e| TrainError::checkpoint(&state_path, e))?;
    write_atomic(&state_path, &json)?;
    sync_file(&model_path)?;
    sync_file(&optim_path)?;
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(FileError::at(&dir))?;
    }
    fs::rename(&partial, &dir).map_err(FileError::at(&dir))?;
    sync_dir(rlaif_core::fs::parent_of(&dir))?;
    prune(out_dir, keep)?;
    tracing::debug!(checkpoint = %dir.display(), "checkpoint written");
    Ok(dir)
}

/// Complete checkpoints under `out_dir`, oldest first, as (step, directory).
pub fn list(out_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = out_dir.join("checkpoints");
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(FileError::new(&root, e).into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(FileError::at(&root))?;
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
                fs::remove_dir_all(&p).map_err(FileError::at(&p))?;
            }
        }
    }
    let all = list(out_dir)?;
    for (_, dir) in &all[..all.len().saturating_sub(keep)] {
        fs::remove_dir_all(dir).map_err(FileError::at(dir))?;
    }
    Ok(())
}

/// Reads the trainer state of a checkpoint directory.
pub fn read_state<S: DeserializeOwned>(dir: &Path) -> Result<CheckpointState<S>> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(FileError::at(&path))?;
    serde_json::from_str(&text)
        .map_err(|e| TrainError::checkpoint(&path, format!("unreadable trainer state: {e}")))
}

/// The newest complete checkpoint, if any, with its state.
pub fn latest<S: DeserializeOwned>(
    out_dir: &Path,
) -> Result<Option<(PathBuf, CheckpointState<S>)>> {
    match list(out_dir)?.pop() {
        Some((_, dir)) => {
            let state = read_state(&dir)?;
            Ok(Some((dir, state)))
        }
        None => Ok(None),
    }
}

/// Loads a checkpoint's parameters into `model` (same structure and shapes; its
/// parameter ids become the checkpoint's) and its state into `optim`.
pub fn load<M: Module>(
    dir: &Path,
    model: M,
    optim: ModuleOptimizer,
) -> Result<(M, ModuleOptimizer)> {
    let model_path = dir.join(MODEL_FILE);
    let model = model
        .try_load_file(&model_path)
        .map_err(|e| TrainError::checkpoint(&model_path, format!("{e:?}")))?;
    let optim_path = dir.join(OPTIMIZER_FILE);
    let optim = optim
        .load(&optim_path)
        .map_err(|e| TrainError::checkpoint(&optim_path, format!("{e:?}")))?;
    Ok((model, optim))
}
