//! [`Trainer`]: the optimizer-step loop every stage drives, and its checkpoints.
//!
//! See [`Trainer::step`] for what an optimizer step does.

use crate::checkpoint::{self, CheckpointState, STATE_FILE};
use crate::clip::clip_grad_norm;
use crate::error::{Result, TrainError};
use crate::log::{LogEntry, RunLog};
use crate::optim::OptimConfig;
use crate::resume::RunIdentity;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// What the trainer needs besides the optimizer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerConfig {
    /// AdamW, schedule, clipping.
    pub optim: OptimConfig,
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
    /// Write a checkpoint every this many steps (`None`: only when asked, at the end and
    /// when stopped).
    pub checkpoint_every: Option<usize>,
    /// How many checkpoints to keep (at least 1).
    pub keep_checkpoints: usize,
}

/// One optimizer step, as it happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Steps done after it (from 1).
    pub step: usize,
    /// Its learning rate.
    pub lr: f64,
    /// The step's loss: the sum of the micro-batch losses.
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// The training loop's state: the model being trained (on an autodiff device), its
/// optimizer, the stage's own state `S` (saved in every checkpoint), the run log of
/// entries `E`, and the run's directory.
///
/// See [`Trainer::step`] for what a step does, and the crate docs for an example.
pub struct Trainer<M, S, E> {
    model: M,
    optim: ModuleOptimizer,
    config: TrainerConfig,
    out_dir: PathBuf,
    identity: RunIdentity,
    log: RunLog<E>,
    /// The stage's own state, saved in and restored from every checkpoint.
    pub state: S,
    step: usize,
    resumed_from: Option<usize>,
    last_saved: Option<usize>,
}

/// Summed micro-batch gradients and loss, from [`Trainer::accumulate`].
pub struct Accumulated {
    grads: GradientsParams,
    /// The sum of the micro-batch losses.
    pub loss: f64,
}

/// A parameter group of [`Trainer::apply`]: its name (in errors), learning rate and
/// clip, and how to take its gradients out of the model's.
pub struct UpdateGroup<'a, M> {
    /// The group's name (`"policy"`, `"critic"`).
    pub name: &'static str,
    /// Its learning rate for this update.
    pub lr: f64,
    /// Its global-norm clip (`None`: none).
    pub max_grad_norm: Option<f64>,
    /// Moves the group's gradients out of the model's, e.g.
    /// `&|m: &Nets, g| take_grads(&m.critic, g)`.
    pub take: &'a dyn Fn(&M, &mut GradientsParams) -> GradientsParams,
}

/// Moves the gradients of `module`'s parameters (a submodule of the trained model) out of
/// `grads` into a new set.
pub fn take_grads<S: Module>(module: &S, grads: &mut GradientsParams) -> GradientsParams {
    struct Take<'a> {
        from: &'a mut GradientsParams,
        to: GradientsParams,
    }
    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.from.remove::<D>(param.id) {
                self.to.register::<D>(param.id, g);
            }
        }
    }
    let mut t = Take {
        from: grads,
        to: GradientsParams::new(),
    };
    module.visit(&mut t);
    t.to
}

/// The first non-finite of a loss and a gradient norm, named.
fn non_finite(loss: f64, grad_norm: f64) -> Option<(&'static str, f64)> {
    if !loss.is_finite() {
        Some(("loss", loss))
    } else if !grad_norm.is_finite() {
        Some(("gradient norm", grad_norm))
    } else {
        None
    }
}

/// What [`Trainer::open`] found in the run's directory.
pub struct Opened<M, S, E> {
    /// The trainer, at step 0 or at the newest checkpoint's step.
    pub trainer: Trainer<M, S, E>,
    /// The log entries of earlier sessions (up to the step resumed from), in order.
    pub earlier: Vec<E>,
}

impl<M, S, E> Trainer<M, S, E>
where
    M: Module,
    S: Serialize + DeserializeOwned,
    E: LogEntry,
{
    /// Opens a run in `out_dir` with `model` (already on the autodiff device it trains on).
    ///
    /// When `out_dir` holds a checkpoint, `identity` is first checked against the one
    /// stored there ([`RunIdentity::check_resumes`]: a changed setting or input is a
    /// [`TrainError::ResumeMismatch`] naming it); then the model, the optimizer and the
    /// stage state are restored from it, and the log is cut back to its step. Otherwise
    /// the run starts at step 0 with `state`.
    pub fn open(
        model: M,
        config: TrainerConfig,
        out_dir: &Path,
        identity: RunIdentity,
        state: S,
    ) -> Result<Opened<M, S, E>> {
        config.optim.validate()?;
        if config.keep_checkpoints == 0 {
            return Err(TrainError::Config {
                field: "keep_checkpoints",
                message: "must be at least 1".into(),
            });
        }
        if config.checkpoint_every == Some(0) {
            return Err(TrainError::Config {
                field: "checkpoint_every",
                message: "must be at least 1 (or none)".into(),
            });
        }
        std::fs::create_dir_all(out_dir).map_err(rlaif_core::fs::FileError::at(out_dir))?;
        let mut optim = config.optim.adamw();
        let (mut model, mut state, mut step, mut resumed_from) = (model, state, 0, None);
        if let Some((dir, stored)) = checkpoint::latest::<S>(out_dir)? {
            identity.check_resumes(&stored.identity, &dir.join(STATE_FILE))?;
            (model, optim) = checkpoint::load(&dir, model, optim)?;
            state = stored.stage;
            step = stored.step;
            resumed_from = Some(step);
            tracing::info!(step, checkpoint = %dir.display(), "resuming");
        }
        let (log, earlier) = RunLog::open(out_dir, step)?;
        Ok(Opened {
            trainer: Self {
                model,
                optim,
                config,
                out_dir: out_dir.to_path_buf(),
                identity,
                log,
                state,
                step,
                resumed_from,
                last_saved: resumed_from,
            },
            earlier,
        })
    }

    /// Optimizer steps done.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// Steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.config.total_steps
    }

    /// Whether every step is done.
    pub fn is_done(&self) -> bool {
        self.step >= self.config.total_steps
    }

    /// The step this session resumed from, if it resumed.
    pub fn resumed_from(&self) -> Option<usize> {
        self.resumed_from
    }

    /// The model being trained.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The run's directory.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// The learning rate of the next step.
    pub fn next_lr(&self) -> f64 {
        self.config.optim.lr_at(self.step, self.config.total_steps)
    }

    /// One optimizer step over `micro_batches` micro-batches. `loss(model, i)` computes
    /// micro-batch `i`'s scalar loss, already divided by the whole step's normaliser.
    ///
    /// Each detail named, as CleanRL does:
    ///
    /// 1. The stage hands over `n` micro-batches through a closure that returns each one's
    ///    loss **already divided by the whole step's normaliser** (its token or example
    ///    count), so that summing the micro-batch gradients (Burn's `GradientsAccumulator`
    ///    sums) gives exactly the full-batch gradient, whatever the micro-batches' sizes.
    ///    (Dividing each micro-batch by its own count and then by the number of micro-batches
    ///    weights tokens unequally: the "gradient accumulation bug" fixed in Hugging Face
    ///    transformers 4.46.)
    /// 2. Global-norm clipping to `max_grad_norm` ([`crate::clip`]: PyTorch's
    ///    `clip_grad_norm_`, not Burn's per-tensor clipping).
    /// 3. A non-finite loss or gradient norm stops the run with [`TrainError::NonFinite`]
    ///    before the parameters are touched; the state before the step is checkpointed.
    /// 4. AdamW ([`OptimConfig::adamw`]) at the step's learning rate
    ///    ([`OptimConfig::lr_at`]: a function of the step, so resuming needs no scheduler
    ///    state).
    pub fn step<Err: From<TrainError>>(
        &mut self,
        micro_batches: usize,
        loss: impl FnMut(&M, usize) -> Result<Tensor<1>, Err>,
    ) -> Result<StepStats, Err> {
        // 1. Micro-batch gradients, summed.
        let Accumulated { mut grads, loss } = self.accumulate(micro_batches, loss)?;
        // 2. Global-norm clipping.
        let grad_norm = clip_grad_norm(&self.model, &mut grads, self.config.optim.max_grad_norm);
        // 3. Nothing non-finite reaches the parameters.
        if let Some((what, value)) = non_finite(loss, grad_norm) {
            let checkpoint = self.checkpoint()?;
            return Err(TrainError::NonFinite {
                step: self.step + 1,
                what,
                value,
                checkpoint,
            }
            .into());
        }
        // 4. AdamW at the scheduled learning rate.
        let lr = self.next_lr();
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            lr,
            loss,
            grad_norm,
        })
    }

    /// The summed gradients of `micro_batches` micro-batch losses (detail 1 of
    /// [`Trainer::step`]), without touching the parameters: for stages whose unit of
    /// progress holds several optimizer updates (PPO: an iteration of epochs over
    /// minibatches), with [`Trainer::apply`] and [`Trainer::advance`]. The caller may look
    /// at statistics computed in the closures before deciding to apply the update.
    pub fn accumulate<Err>(
        &self,
        micro_batches: usize,
        mut loss: impl FnMut(&M, usize) -> Result<Tensor<1>, Err>,
    ) -> Result<Accumulated, Err> {
        let mut acc = GradientsAccumulator::new();
        let mut total = 0.0f64;
        for i in 0..micro_batches {
            let l = loss(&self.model, i)?;
            total += f64::from(l.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(l.backward(), &self.model);
            acc.accumulate(&self.model, grads);
        }
        Ok(Accumulated {
            grads: acc.grads(),
            loss: total,
        })
    }

    /// Applies accumulated gradients in parameter groups, each with its own learning rate
    /// and global-norm clip (PPO: the policy and the critic, as two optimizers would; the
    /// AdamW moments are per parameter, so one optimizer state serves both). Each group
    /// takes its gradients out of the accumulated ones (see [`take_grads`]); gradients left
    /// over after the last group are dropped. The parameters are untouched when the loss or
    /// any group's gradient norm is not finite ([`TrainError::NonFiniteUpdate`]). Does not
    /// advance the run's step count (see [`Trainer::advance`]). Returns each group's
    /// gradient norm before clipping.
    pub fn apply(
        &mut self,
        accumulated: Accumulated,
        groups: &[UpdateGroup<'_, M>],
    ) -> Result<Vec<f64>> {
        let Accumulated { mut grads, loss } = accumulated;
        let mut parts = Vec::with_capacity(groups.len());
        for g in groups {
            let mut part = (g.take)(&self.model, &mut grads);
            let norm = clip_grad_norm(&self.model, &mut part, g.max_grad_norm);
            if let Some((what, value)) = non_finite(loss, norm) {
                return Err(TrainError::NonFiniteUpdate {
                    step: self.step + 1,
                    group: g.name,
                    what,
                    value,
                    last_checkpoint: self
                        .last_saved
                        .map(|s| checkpoint::checkpoint_dir(&self.out_dir, s)),
                });
            }
            parts.push((norm, part));
        }
        let mut norms = Vec::with_capacity(parts.len());
        for (g, (norm, part)) in groups.iter().zip(parts) {
            self.model = self.optim.step(g.lr, self.model.clone(), part);
            norms.push(norm);
        }
        Ok(norms)
    }

    /// Counts one unit of progress done (for stages that update through
    /// [`Trainer::apply`]; [`Trainer::step`] counts its own).
    pub fn advance(&mut self) {
        self.step += 1;
    }

    /// Appends an entry to the run log (flushed).
    pub fn log(&mut self, entry: &E) -> Result<()> {
        self.log.write(entry)
    }

    /// Writes a checkpoint if `checkpoint_every` says so at this step (never after the
    /// last step: [`Trainer::checkpoint`] does that).
    pub fn maybe_checkpoint(&mut self) -> Result<Option<PathBuf>> {
        let due = !self.is_done()
            && self
                .config
                .checkpoint_every
                .is_some_and(|n| self.step.is_multiple_of(n));
        if due {
            self.checkpoint().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Writes a checkpoint of the current step, unless one was written (or resumed from)
    /// at this step already; returns its directory.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        if self.last_saved == Some(self.step) {
            return Ok(checkpoint::checkpoint_dir(&self.out_dir, self.step));
        }
        let state = CheckpointState {
            step: self.step,
            total_steps: self.config.total_steps,
            identity: self.identity.clone(),
            stage: &self.state,
        };
        let dir = checkpoint::save(
            &self.out_dir,
            &self.model,
            &self.optim,
            &state,
            self.config.keep_checkpoints,
        )?;
        self.last_saved = Some(self.step);
        Ok(dir)
    }

    /// The model (still on the autodiff device) and the stage state.
    pub fn into_parts(self) -> (M, S) {
        (self.model, self.state)
    }
}
