//! Global-norm gradient clipping, as PyTorch's `clip_grad_norm_`: one norm over every
//! gradient of the model, and every gradient scaled by the same factor when it exceeds
//! the limit. (Burn's built-in `GradientClipping::Norm` clips each parameter tensor on
//! its own, which changes the update's direction.)

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// The L2 norm of all of `grads` (of `model`'s float parameters) together.
pub fn global_grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    struct SquaredSum<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SquaredSum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    let mut v = SquaredSum { grads, total: None };
    model.visit(&mut v);
    v.total
        .map_or(0.0, |t| f64::from(t.into_scalar::<f32>()).sqrt())
}

/// Scales every gradient by `factor`.
pub fn scale_grads<M: Module>(model: &M, grads: &mut GradientsParams, factor: f64) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads
                    .register::<D>(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    model.visit(&mut Scale { grads, factor });
}

/// Clips `grads` to a global L2 norm of at most `max_norm` (no clipping when `None`) and
/// returns the norm before clipping. The scale is `max_norm / (norm + 1e-6)`, as PyTorch's.
pub fn clip_grad_norm<M: Module>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f64 {
    let norm = global_grad_norm(model, grads);
    if let Some(max) = max_norm
        && norm.is_finite()
        && norm > max
    {
        scale_grads(model, grads, max / (norm + 1e-6));
    }
    norm
}
