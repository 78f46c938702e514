//! One AdamW step over a parameter tensor (Loshchilov & Hutter 2019, "Decoupled weight
//! decay regularization", Algorithm 2, with Adam's bias corrections: Kingma & Ba 2015,
//! Algorithm 1), as Burn's `AdamW` computes it.
//!
//! Burn's optimizer runs about fifteen tensor ops per parameter and step; flex runs each as
//! a serial pass, so a step of a 135M-parameter model made some fifteen single-threaded
//! sweeps over 540 MB. On flex (float32) [`adamw_step`] is one parallel pass that reads the
//! parameter, its gradient and the two moments once and writes the three new tensors, with
//! the same float32 operations in the same order: the same bits as Burn's `AdamW`.

use crate::error::{Result, check_arg, check_shape};
use crate::extension::{dispatch_adamw, fused_available};
use burn::prelude::*;

/// The hyperparameters of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate of this step.
    pub lr: f64,
    /// β₁, β₂.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε, added to `√v̂`.
    pub epsilon: f32,
    /// Decoupled weight decay: the parameter is scaled by `1 − lr · weight_decay` first.
    pub weight_decay: f32,
    /// The step's number, from 1 (after counting this one): the bias corrections are
    /// `1 − β^time`.
    pub time: usize,
}

/// The scalars of one step in float32, computed as Burn's `AdamW` computes them (what the
/// fused kernel of [`RlKernels::adamw`](crate::RlKernels::adamw) takes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// The bias correction `1 − β₁^t`.
    pub bc1: f32,
    /// The bias correction `1 − β₂^t`.
    pub bc2: f32,
    /// ε.
    pub epsilon: f32,
    /// The learning rate.
    pub lr: f32,
    /// `1 − lr · weight_decay` (1 without decay: `θ · 1` is `θ`, bit for bit).
    pub keep: f32,
}

impl AdamWScalars {
    /// The scalars of the step `h`.
    pub fn of(h: &AdamWStep) -> Self {
        let t = h.time as i32;
        Self {
            beta1: h.beta1,
            beta2: h.beta2,
            bc1: 1.0 - h.beta1.powi(t),
            bc2: 1.0 - h.beta2.powi(t),
            epsilon: h.epsilon,
            lr: h.lr as f32,
            keep: (1.0 - h.lr * h.weight_decay as f64) as f32,
        }
    }

    /// `1 − β₁`, the weight of the gradient in `m`.
    pub fn c1(&self) -> f32 {
        1.0 - self.beta1
    }

    /// `1 − β₂`, the weight of the squared gradient in `v`.
    pub fn c2(&self) -> f32 {
        1.0 - self.beta2
    }
}

/// A parameter after one step, and its moments.
#[derive(Debug, Clone)]
pub struct AdamWOutput<const D: usize> {
    /// The updated parameter.
    pub param: Tensor<D>,
    /// The first moment `m`.
    pub moment_1: Tensor<D>,
    /// The second moment `v`.
    pub moment_2: Tensor<D>,
}

/// One AdamW step: with `g` the gradient and `(m, v)` the moments (zero when `moments` is
/// `None`, the first step),
///
/// ```text
/// m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
/// m̂ = m / (1 − β₁^t)             v̂ = v / (1 − β₂^t)
/// θ ← θ · (1 − lr · λ) − lr · m̂ / (√v̂ + ε)
/// ```
///
/// On flex (float32) the fused kernel, elsewhere [`adamw_step_default`]; both give the
/// float32 results of Burn's `AdamW` bit for bit.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the gradient or a
/// moment differs in shape from the parameter;
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if `time` is 0.
pub fn adamw_step<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    h: &AdamWStep,
) -> Result<AdamWOutput<D>> {
    let dims = param.dims();
    check_shape("adamw_step", "grad (against param)", &grad.dims(), &dims)?;
    if let Some((m, v)) = &moments {
        check_shape("adamw_step", "moment_1 (against param)", &m.dims(), &dims)?;
        check_shape("adamw_step", "moment_2 (against param)", &v.dims(), &dims)?;
    }
    check_arg("adamw_step", h.time >= 1, || {
        "time counts from 1".to_string()
    })?;
    let n: usize = dims.iter().product();
    let dtype = param.dtype();
    let same = grad.dtype() == dtype
        && moments
            .as_ref()
            .is_none_or(|(m, v)| m.dtype() == dtype && v.dtype() == dtype);
    if n == 0 || !same || !fused_available(&param.device(), dtype) {
        return Ok(adamw_step_default(param, grad, moments, h));
    }
    let fresh = moments.is_none();
    let (m, v) = moments.unwrap_or_else(|| (grad.clone(), grad.clone()));
    let packed = dispatch_adamw(
        param.reshape([n]),
        grad.reshape([n]),
        m.reshape([n]),
        v.reshape([n]),
        AdamWScalars::of(h),
        fresh,
    );
    let part = |i: usize| packed.clone().slice(i * n..(i + 1) * n).reshape(dims);
    Ok(AdamWOutput {
        param: part(0),
        moment_1: part(1),
        moment_2: part(2),
    })
}

/// [`adamw_step`]'s default body in Burn tensor ops, on every backend (Burn's `AdamW`,
/// operation for operation).
pub fn adamw_step_default<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    h: &AdamWStep,
) -> AdamWOutput<D> {
    let s = AdamWScalars::of(h);
    let (beta1, beta2, bc1, bc2, epsilon) = (s.beta1, s.beta2, s.bc1, s.bc2, s.epsilon);
    let (c1, c2) = (s.c1(), s.c2());
    let (m, v) = match moments {
        Some((m, v)) => (
            m.mul_scalar(beta1).add(grad.clone().mul_scalar(c1)),
            v.mul_scalar(beta2).add(grad.square().mul_scalar(c2)),
        ),
        None => (grad.clone().mul_scalar(c1), grad.square().mul_scalar(c2)),
    };
    let delta = m
        .clone()
        .div_scalar(bc1)
        .div(v.clone().div_scalar(bc2).sqrt().add_scalar(epsilon));
    let decay = h.lr * h.weight_decay as f64;
    let decayed = if decay == 0.0 {
        param
    } else {
        param.mul_scalar(1.0 - decay)
    };
    AdamWOutput {
        param: decayed - delta.mul_scalar(h.lr),
        moment_1: m,
        moment_2: v,
    }
}
