//! The fused float32 kernels of the flex CPU backend: the [`RlKernels`] implementation for
//! [`Flex`], which moves tensors to and from host slices and runs
//!
//! - [`token_stats`]: the token log-prob / entropy statistics, forward and backward;
//! - [`gae`]: generalised advantage estimation per row;
//! - [`small_m`]: `x · W` for at most eight rows of `x`, the columns split across threads;
//! - [`attention`]: grouped-query attention with a bias, skipping the key tiles it masks;
//!
//! built on the vectorised arithmetic of [`crate::simd`] and the huge-page output buffers of
//! [`huge_page_buffer`].

mod attention;
mod gae;
mod huge_page_buffer;
mod small_m;
mod token_stats;

use crate::extension::RlKernels;
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::prelude::*;
use burn::tensor::DType;

/// Labels as `usize`, checked against the vocabulary size.
fn labels_checked(labels: FlexTensor, v: usize) -> Vec<usize> {
    let lab: Vec<i64> = labels
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("labels converted to i64");
    lab.into_iter()
        .map(|l| {
            assert!(
                (0..v as i64).contains(&l),
                "token_logprobs: label {l} out of range for a vocabulary of {v}"
            );
            l as usize
        })
        .collect()
}

fn f32_vec(t: FlexTensor) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

/// Contiguous float32 logits and their `[N, V]` shape.
fn contiguous_f32(t: FlexTensor) -> (FlexTensor, usize, usize) {
    assert_eq!(t.dtype(), DType::F32, "fused kernels take float32 tensors");
    let t = if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    };
    let shape = t.layout().shape();
    let (n, v) = (shape[0], shape[1]);
    (t, n, v)
}

/// The fused kernels, in the order of [`fused_calls`].
#[derive(Clone, Copy)]
enum Kernel {
    TokenStats = 0,
    TokenStatsBackward = 1,
    Gae = 2,
    Linear = 3,
    Attention = 4,
}

#[cfg(test)]
thread_local! {
    /// Calls of each fused kernel made on this thread (tests only).
    static CALLS: std::cell::Cell<[usize; 5]> = const { std::cell::Cell::new([0; 5]) };
}

/// Whether [`RlKernels::project`] has its small-row kernel on this CPU (AVX-512).
#[cfg(test)]
pub(crate) fn small_m_available() -> bool {
    small_m::available()
}

/// Calls of the fused kernels made **on the calling thread** so far (tests only), as
/// `[token_stats, token_stats_backward, gae, linear on the small-row kernel, attention]`.
///
/// Per thread, so that a test proves that *its own* call took the fused path: parallel tests
/// run on other threads and cannot move this thread's counts. The kernels are entered on the
/// thread that called the public op: Burn's dispatch, the flex backend and autodiff's
/// backward pass (a mutex-guarded graph, no worker thread) all run synchronously on the
/// caller; only the rows inside a kernel are spread over rayon workers, after the count.
#[cfg(test)]
pub(crate) fn fused_calls() -> [usize; 5] {
    CALLS.with(|c| c.get())
}

/// Counts one call of `kernel` on this thread (a no-op outside tests).
#[inline(always)]
fn count(kernel: Kernel) {
    #[cfg(test)]
    CALLS.with(|c| {
        let mut calls = c.get();
        calls[kernel as usize] += 1;
        c.set(calls);
    });
    let _ = kernel;
}

impl RlKernels for Flex {
    fn token_stats(logits: FlexTensor, labels: FlexTensor, inv_temperature: f32) -> FlexTensor {
        count(Kernel::TokenStats);
        let (logits, n, v) = contiguous_f32(logits);
        let lab = labels_checked(labels, v);
        let x: &[f32] = logits.as_slice::<f32>().expect("contiguous f32 logits");
        let out = token_stats::token_stats_slice(x, &lab, v, inv_temperature);
        FlexTensor::from_data(TensorData::new(out, [n, 3]))
    }

    fn token_stats_backward(
        logits: FlexTensor,
        labels: FlexTensor,
        stats: FlexTensor,
        grad: FlexTensor,
        inv_temperature: f32,
    ) -> FlexTensor {
        count(Kernel::TokenStatsBackward);
        let (logits, n, v) = contiguous_f32(logits);
        let lab = labels_checked(labels, v);
        let x: &[f32] = logits.as_slice::<f32>().expect("contiguous f32 logits");
        let (st, g) = (f32_vec(stats), f32_vec(grad));
        let out = token_stats::token_stats_backward_slice(x, &lab, &st, &g, v, inv_temperature);
        FlexTensor::from_data(TensorData::new(out, [n, v]))
    }

    fn gae(
        rewards: FlexTensor,
        values: FlexTensor,
        mask: FlexTensor,
        gamma: f32,
        lambda: f32,
    ) -> FlexTensor {
        count(Kernel::Gae);
        let (rewards, b, t) = contiguous_f32(rewards);
        let (values, mask) = (contiguous_f32(values).0, contiguous_f32(mask).0);
        fn slice(x: &FlexTensor) -> &[f32] {
            x.as_slice::<f32>().expect("contiguous f32")
        }
        let out = if t == 0 || b == 0 {
            Vec::new()
        } else {
            gae::gae_slice(
                slice(&rewards),
                slice(&values),
                slice(&mask),
                t,
                gamma,
                lambda,
            )
        };
        FlexTensor::from_data(TensorData::new(out, [2, b, t]))
    }

    fn project(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        let (m, k) = (x.layout().shape()[0], x.layout().shape()[1]);
        let n = w.layout().shape()[1];
        // a transposed (non-contiguous) weight would be copied on every call: gemm reads
        // strides, so leave it to the matmul
        if m > small_m::MAX_ROWS
            || m == 0
            || !small_m::available()
            || !w.is_contiguous()
            || w.dtype() != DType::F32
        {
            return Flex::float_matmul(x, w);
        }
        count(Kernel::Linear);
        let x = contiguous_f32(x).0;
        let y = small_m::matmul_small_m(
            x.as_slice::<f32>().expect("contiguous f32 x"),
            w.as_slice::<f32>().expect("contiguous f32 w"),
            m,
            k,
            n,
        );
        FlexTensor::from_data(TensorData::new(y, [m, n]))
    }

    fn grouped_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: FlexTensor,
    ) -> FlexTensor {
        if [&q, &k, &v, &bias].iter().any(|t| t.dtype() != DType::F32) {
            return crate::attention::burn_attention::<Flex>(q, k, v, bias);
        }
        count(Kernel::Attention);
        let [b, h, s, d] = crate::attention::dims4(q.layout().shape());
        let [_, g, t, _] = crate::attention::dims4(k.layout().shape());
        let contiguous = |x: FlexTensor| {
            if x.is_contiguous() {
                x
            } else {
                x.to_contiguous()
            }
        };
        let (q, k, v, bias) = (
            contiguous(q),
            contiguous(k),
            contiguous(v),
            contiguous(bias),
        );
        let out = attention::attention(
            q.as_slice::<f32>().expect("contiguous f32 q"),
            k.as_slice::<f32>().expect("contiguous f32 k"),
            v.as_slice::<f32>().expect("contiguous f32 v"),
            bias.as_slice::<f32>().expect("contiguous f32 bias"),
            attention::Dims { b, h, g, s, t, d },
        );
        FlexTensor::from_data(TensorData::new(out, [b, h, s, d]))
    }
}
