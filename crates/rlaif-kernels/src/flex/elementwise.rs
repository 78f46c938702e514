//! SwiGLU and RMSNorm on contiguous float32 slices, forward and backward, in one pass each.
//!
//! Flex runs each elementwise op of the plain formulas as its own serial pass with a libm
//! `expf` per element: `silu(gate) · up` is three passes over `[B, S, 1536]` per layer (a
//! sigmoid, two products), RMSNorm six over `[B, S, 576]` (square, mean, add, sqrt, divide,
//! scale). Here each is one pass that reads its inputs once and writes its output once, with
//! the vectorised exponential of [`crate::simd`], split across rayon tasks of a fixed size so
//! that the results do not depend on the number of threads.

use crate::adamw::AdamWScalars;
use crate::simd::{Isa, LANES, fast_exp, fmadd, isa};
use rayon::prelude::*;

/// Elements per rayon task (64 KiB of each input); inputs of at most two tasks run on the
/// calling thread (a decoding step's rows).
const CHUNK: usize = 1 << 14;

/// `σ(x) = 1 / (1 + e^{−x})`; exactly 0 or 1 far out, NaN stays NaN.
#[inline(always)]
fn sigmoid<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp::<FMA>(-x))
}

#[inline(always)]
fn swiglu_impl<const FMA: bool>(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = out.len().min(gate.len()).min(up.len());
    let (gate, up, out) = (&gate[..n], &up[..n], &mut out[..n]);
    for i in 0..n {
        let g = gate[i];
        out[i] = g * sigmoid::<FMA>(g) * up[i];
    }
}

#[inline(always)]
fn swiglu_backward_impl<const FMA: bool>(
    gate: &[f32],
    up: &[f32],
    grad: &[f32],
    d_gate: &mut [f32],
    d_up: &mut [f32],
) {
    let n = d_gate
        .len()
        .min(d_up.len())
        .min(gate.len())
        .min(up.len())
        .min(grad.len());
    let (gate, up, grad) = (&gate[..n], &up[..n], &grad[..n]);
    let (d_gate, d_up) = (&mut d_gate[..n], &mut d_up[..n]);
    for i in 0..n {
        let (g, dy) = (gate[i], grad[i]);
        let s = sigmoid::<FMA>(g);
        d_up[i] = dy * (g * s);
        // d silu(g) / dg = σ(g) · (1 + g · (1 − σ(g)))
        d_gate[i] = dy * up[i] * (s * fmadd::<FMA>(g, 1.0 - s, 1.0));
    }
}

/// `Σ x_i²` in 16 lanes.
#[inline(always)]
fn sum_squares<const FMA: bool>(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            acc[l] = fmadd::<FMA>(c[l], c[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().map(|v| v * v).sum::<f32>()
}

/// `√(mean(x²) + eps)` of one row.
#[inline(always)]
fn rms<const FMA: bool>(x: &[f32], eps: f32) -> f32 {
    (sum_squares::<FMA>(x) / x.len() as f32 + eps).sqrt()
}

#[inline(always)]
fn rms_norm_impl<const FMA: bool>(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let r = rms::<FMA>(xr, eps);
        let (xr, yr) = (&xr[..d], &mut yr[..d]);
        for j in 0..d {
            yr[j] = xr[j] / r * w[j];
        }
    }
}

/// `h = x + delta` row by row, then [`rms_norm_impl`]'s arithmetic on `h` (the same
/// operations in the same order, so `y` is bit for bit `rms_norm(x + delta)`).
#[inline(always)]
fn add_rms_norm_impl<const FMA: bool>(
    x: &[f32],
    delta: &[f32],
    w: &[f32],
    eps: f32,
    h: &mut [f32],
    y: &mut [f32],
) {
    let d = w.len();
    for (((xr, dr), hr), yr) in x
        .chunks_exact(d)
        .zip(delta.chunks_exact(d))
        .zip(h.chunks_exact_mut(d))
        .zip(y.chunks_exact_mut(d))
    {
        let (xr, dr, hr, yr) = (&xr[..d], &dr[..d], &mut hr[..d], &mut yr[..d]);
        for j in 0..d {
            hr[j] = xr[j] + dr[j];
        }
        let r = rms::<FMA>(hr, eps);
        for j in 0..d {
            yr[j] = hr[j] / r * w[j];
        }
    }
}

/// The rows of `x` (with `grad` and `dx` alike), and `dw` **added** to: see
/// [`rms_norm_backward`].
#[inline(always)]
fn rms_norm_backward_impl<const FMA: bool>(
    x: &[f32],
    w: &[f32],
    grad: &[f32],
    eps: f32,
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let d = w.len();
    let dw = &mut dw[..d];
    for ((xr, gr), dxr) in x
        .chunks_exact(d)
        .zip(grad.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let (xr, gr, dxr) = (&xr[..d], &gr[..d], &mut dxr[..d]);
        let inv = 1.0 / rms::<FMA>(xr, eps);
        // Σ_k g_k w_k x_k
        let mut acc = [0f32; LANES];
        let (mut xc, mut gc, mut wc) = (
            xr.chunks_exact(LANES),
            gr.chunks_exact(LANES),
            w.chunks_exact(LANES),
        );
        for ((xl, gl), wl) in (&mut xc).zip(&mut gc).zip(&mut wc) {
            for l in 0..LANES {
                acc[l] = fmadd::<FMA>(gl[l] * wl[l], xl[l], acc[l]);
            }
        }
        let tail: f32 = (xc.remainder().iter())
            .zip(gc.remainder())
            .zip(wc.remainder())
            .map(|((x, g), w)| g * w * x)
            .sum();
        let dot = acc.iter().sum::<f32>() + tail;
        // y = x · r · w with r = 1/√(mean(x²) + eps):
        // ∂/∂x_j = r · g_j w_j − x_j · r³ · Σ_k g_k w_k x_k / d,  ∂/∂w_j = g_j · x_j · r
        let c = inv * inv * inv * dot / d as f32;
        for j in 0..d {
            dxr[j] = fmadd::<FMA>(inv, gr[j] * w[j], -(xr[j] * c));
            dw[j] = fmadd::<FMA>(gr[j] * xr[j], inv, dw[j]);
        }
    }
}

/// One compiled variant per instruction set, picked at run time (see [`crate::simd`]).
macro_rules! variants {
    ($name:ident, $imp:ident, ($($arg:ident: $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) {
                $imp::<true>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) {
                $imp::<true>($($arg),*)
            }
            match isa {
                // SAFETY: `isa()` detected the features at run time.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2($($arg),*) },
                Isa::Baseline => $imp::<false>($($arg),*),
            }
        }
    };
}

variants!(swiglu_on, swiglu_impl, (gate: &[f32], up: &[f32], out: &mut [f32]));
variants!(
    swiglu_backward_on,
    swiglu_backward_impl,
    (gate: &[f32], up: &[f32], grad: &[f32], d_gate: &mut [f32], d_up: &mut [f32])
);
variants!(rms_norm_on, rms_norm_impl, (x: &[f32], w: &[f32], eps: f32, y: &mut [f32]));
variants!(
    add_rms_norm_on,
    add_rms_norm_impl,
    (x: &[f32], delta: &[f32], w: &[f32], eps: f32, h: &mut [f32], y: &mut [f32])
);
variants!(
    rms_norm_backward_on,
    rms_norm_backward_impl,
    (x: &[f32], w: &[f32], grad: &[f32], eps: f32, dx: &mut [f32], dw: &mut [f32])
);

/// `silu(gate) · up` elementwise (equal lengths).
pub(crate) fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    let isa = isa();
    let mut out = vec![0f32; gate.len()];
    if gate.len() <= 2 * CHUNK {
        swiglu_on(isa, gate, up, &mut out);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK))
            .zip(up.par_chunks(CHUNK))
            .for_each(|((o, g), u)| swiglu_on(isa, g, u, o));
    }
    out
}

/// The gradients of `Σ grad · silu(gate) · up` with respect to `gate` and `up`, packed:
/// `[d_gate..., d_up...]`.
pub(crate) fn swiglu_backward(gate: &[f32], up: &[f32], grad: &[f32]) -> Vec<f32> {
    let n = gate.len();
    assert!(
        up.len() == n && grad.len() == n,
        "swiglu_backward: gate, up and grad differ in length"
    );
    let isa = isa();
    let mut out = vec![0f32; 2 * n];
    let (d_gate, d_up) = out.split_at_mut(n);
    if n <= 2 * CHUNK {
        swiglu_backward_on(isa, gate, up, grad, d_gate, d_up);
    } else {
        d_gate
            .par_chunks_mut(CHUNK)
            .zip(d_up.par_chunks_mut(CHUNK))
            .zip(gate.par_chunks(CHUNK))
            .zip(up.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
            .for_each(|(((dg, du), g), (u, dy))| swiglu_backward_on(isa, g, u, dy, dg, du));
    }
    out
}

/// Rows per rayon task for rows of `d` elements: about [`CHUNK`] elements, at least one row.
fn rows_per_task(d: usize) -> usize {
    (CHUNK / d.max(1)).max(1)
}

/// `x / √(mean(x²) + eps) · w` per row of `d = w.len()` elements (`x.len()` a multiple of
/// `d`).
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d),
        "rms_norm: x is not rows of {d}"
    );
    let isa = isa();
    let mut y = vec![0f32; x.len()];
    let task = rows_per_task(d) * d;
    if x.len() <= 2 * task {
        rms_norm_on(isa, x, w, eps, &mut y);
    } else {
        y.par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .for_each(|(yc, xc)| rms_norm_on(isa, xc, w, eps, yc));
    }
    y
}

/// The residual sum `h = x + delta` and `rms_norm(h, w)` in one pass per row (`x` and
/// `delta` rows of `d = w.len()` elements), packed: `[h..., y...]`.
pub(crate) fn add_rms_norm(x: &[f32], delta: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d) && delta.len() == x.len(),
        "add_rms_norm: x and delta are not rows of {d}"
    );
    let isa = isa();
    let n = x.len();
    let mut out = vec![0f32; 2 * n];
    let (h, y) = out.split_at_mut(n);
    let task = rows_per_task(d) * d;
    if n <= 2 * task {
        add_rms_norm_on(isa, x, delta, w, eps, h, y);
    } else {
        h.par_chunks_mut(task)
            .zip(y.par_chunks_mut(task))
            .zip(x.par_chunks(task).zip(delta.par_chunks(task)))
            .for_each(|((hc, yc), (xc, dc))| add_rms_norm_on(isa, xc, dc, w, eps, hc, yc));
    }
    out
}

/// The gradients of `Σ grad · rms_norm(x, w)` with respect to `x` and `w`, packed:
/// `[dx..., dw...]`. `dw` sums over rows in tasks of a fixed number of rows, then over the
/// tasks in order, so it does not depend on the number of threads.
pub(crate) fn rms_norm_backward(x: &[f32], w: &[f32], grad: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d) && grad.len() == x.len(),
        "rms_norm_backward: x and grad are not rows of {d}"
    );
    let isa = isa();
    let mut out = vec![0f32; x.len() + d];
    let (dx, dw) = out.split_at_mut(x.len());
    let task = rows_per_task(d) * d;
    let tasks = x.len().div_ceil(task);
    if tasks <= 2 {
        rms_norm_backward_on(isa, x, w, grad, eps, dx, dw);
        return out;
    }
    let mut partial = vec![0f32; tasks * d];
    partial
        .par_chunks_mut(d)
        .zip(dx.par_chunks_mut(task))
        .zip(x.par_chunks(task).zip(grad.par_chunks(task)))
        .for_each(|((pw, dxc), (xc, gc))| rms_norm_backward_on(isa, xc, w, gc, eps, dxc, pw));
    for pw in partial.chunks_exact(d) {
        for (a, b) in dw.iter_mut().zip(pw) {
            *a += b;
        }
    }
    out
}

/// The forward RMSNorm and SwiGLU kernels on the baseline instruction set against the best
/// one of this CPU (tests).
#[cfg(test)]
pub(crate) fn agree_across_instruction_sets(x: &[f32], w: &[f32], eps: f32) -> bool {
    let (mut a, mut b) = (vec![0f32; x.len()], vec![0f32; x.len()]);
    rms_norm_on(Isa::Baseline, x, w, eps, &mut a);
    rms_norm_on(isa(), x, w, eps, &mut b);
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + a.abs()))
    };
    let ok_norm = close(&a, &b);
    let (mut c, mut e) = (vec![0f32; x.len()], vec![0f32; x.len()]);
    swiglu_on(Isa::Baseline, x, x, &mut c);
    swiglu_on(isa(), x, x, &mut e);
    ok_norm && close(&c, &e)
}

/// One AdamW step over a chunk; `m` and `v` are `None` on the first step (zero moments).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn adamw_impl<const FMA: bool>(
    p: &[f32],
    g: &[f32],
    m: Option<&[f32]>,
    v: Option<&[f32]>,
    s: AdamWScalars,
    p_out: &mut [f32],
    m_out: &mut [f32],
    v_out: &mut [f32],
) {
    let n = p_out.len();
    let (p, g) = (&p[..n], &g[..n]);
    let (m_out, v_out) = (&mut m_out[..n], &mut v_out[..n]);
    // Burn's AdamW, operation for operation (no fused multiply-adds), so that the
    // results are the same bits
    let (c1, c2) = (s.c1(), s.c2());
    match (m, v) {
        (Some(m), Some(v)) => {
            let (m, v) = (&m[..n], &v[..n]);
            for i in 0..n {
                m_out[i] = m[i] * s.beta1 + g[i] * c1;
                v_out[i] = v[i] * s.beta2 + g[i] * g[i] * c2;
            }
        }
        _ => {
            for i in 0..n {
                m_out[i] = g[i] * c1;
                v_out[i] = g[i] * g[i] * c2;
            }
        }
    }
    for i in 0..n {
        let delta = (m_out[i] / s.bc1) / ((v_out[i] / s.bc2).sqrt() + s.epsilon);
        p_out[i] = p[i] * s.keep - delta * s.lr;
    }
}

variants!(
    adamw_on,
    adamw_impl,
    (
        p: &[f32],
        g: &[f32],
        m: Option<&[f32]>,
        v: Option<&[f32]>,
        s: AdamWScalars,
        p_out: &mut [f32],
        m_out: &mut [f32],
        v_out: &mut [f32]
    )
);

/// One AdamW step (Loshchilov & Hutter 2019, Algorithm 2, with Adam's bias corrections)
/// over a parameter: returns `[param..., m..., v...]`. `moments` is `None` on the first
/// step. Elementwise, so the split across threads cannot change a bit.
pub(crate) fn adamw(
    p: &[f32],
    g: &[f32],
    moments: Option<(&[f32], &[f32])>,
    s: AdamWScalars,
) -> Vec<f32> {
    let n = p.len();
    assert!(
        g.len() == n && moments.is_none_or(|(m, v)| m.len() == n && v.len() == n),
        "adamw: parameter, gradient and moments differ in length"
    );
    let isa = isa();
    let mut out = vec![0f32; 3 * n];
    let (p_out, rest) = out.split_at_mut(n);
    let (m_out, v_out) = rest.split_at_mut(n);
    let (m, v) = (moments.map(|x| x.0), moments.map(|x| x.1));
    if n <= 2 * CHUNK {
        adamw_on(isa, p, g, m, v, s, p_out, m_out, v_out);
        return out;
    }
    fn chunks(x: Option<&[f32]>, n: usize) -> Vec<Option<&[f32]>> {
        match x {
            Some(x) => x.chunks(CHUNK).map(Some).collect(),
            None => vec![None; n.div_ceil(CHUNK)],
        }
    }
    let (mc, vc) = (chunks(m, n), chunks(v, n));
    p_out
        .par_chunks_mut(CHUNK)
        .zip(m_out.par_chunks_mut(CHUNK))
        .zip(v_out.par_chunks_mut(CHUNK))
        .zip(p.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .zip(mc.into_par_iter().zip(vc.into_par_iter()))
        .for_each(|((((po, mo), vo), (pc, gc)), (mi, vi))| {
            adamw_on(isa, pc, gc, mi, vi, s, po, mo, vo)
        });
    out
}
