//! Tests against independent float64 references written as plain loops, and fused kernels
//! against the default bodies.

#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

use crate::*;
use burn::prelude::*;
use burn::tensor::DType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NEG_INF: f32 = f32::NEG_INFINITY;

fn dev() -> Device {
    Device::flex()
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn normal(r: &mut ChaCha8Rng) -> f32 {
    // Box–Muller
    let (u1, u2): (f32, f32) = (r.random::<f32>().max(1e-7), r.random());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// A rayon pool of `n` threads, to show that a kernel's result does not depend on it.
fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn ints<const D: usize>(data: Vec<i64>, shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` elementwise; equal infinities and NaN-free required.
fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            !g.is_nan() && !w.is_nan(),
            "{what}[{i}]: NaN (got {g}, want {w})"
        );
        if w.is_infinite() {
            assert_eq!(g as f64, w, "{what}[{i}]");
            continue;
        }
        let err = (g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (err {err:e})"
        );
    }
}

fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// ---------------------------------------------------------------- token log-probs -------

/// f64 reference: per row `(lp, entropy, lse, p)` of softmax(z/τ).
fn ref_row(row: &[f32], label: usize, tau: f64) -> (f64, f64, f64, Vec<f64>) {
    let z: Vec<f64> = row.iter().map(|&x| x as f64 / tau).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return (
            f64::NEG_INFINITY,
            0.0,
            f64::NEG_INFINITY,
            vec![0.0; z.len()],
        );
    }
    let s: f64 = z.iter().map(|&x| (x - m).exp()).sum();
    let lse = m + s.ln();
    let p: Vec<f64> = z.iter().map(|&x| (x - lse).exp()).collect();
    let h: f64 = p
        .iter()
        .zip(&z)
        .map(|(&pj, &zj)| if pj > 0.0 { -pj * (zj - lse) } else { 0.0 })
        .sum();
    (z[label] - lse, h, lse, p)
}

/// f64 reference gradient of Σ_i (w_lp[i]·lp_i + w_h[i]·H_i) with respect to the logits.
fn ref_grad(
    x: &[f32],
    labels: &[usize],
    v: usize,
    tau: f64,
    w_lp: &[f32],
    w_h: &[f32],
) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for (i, row) in x.chunks(v).enumerate() {
        let (_, h, lse, p) = ref_row(row, labels[i], tau);
        if lse == f64::NEG_INFINITY {
            continue;
        }
        let mu = lse - h;
        for j in 0..v {
            let zj = row[j] as f64 / tau;
            let dh = if p[j] > 0.0 { -p[j] * (zj - mu) } else { 0.0 };
            let onehot = if j == labels[i] { 1.0 } else { 0.0 };
            out[i * v + j] = (w_lp[i] as f64 * (onehot - p[j]) + w_h[i] as f64 * dh) / tau;
        }
    }
    out
}

struct LogitCase {
    b: usize,
    t: usize,
    v: usize,
    x: Vec<f32>,
    labels: Vec<usize>,
}

/// Random logits with the edge cases of the issue: extreme ±1e4 rows, `-inf` masked
/// positions (sometimes under the label), an all-`-inf` row, a max that grows in a late chunk.
fn logit_case(seed: u64, b: usize, t: usize, v: usize, edge: bool) -> LogitCase {
    let mut r = rng(seed);
    let n = b * t;
    let mut x: Vec<f32> = (0..n * v).map(|_| 3.0 * normal(&mut r)).collect();
    let mut labels: Vec<usize> = (0..n).map(|_| r.random_range(0..v)).collect();
    if edge && n >= 4 {
        // row 0: extreme logits ±1e4
        for xj in x.iter_mut().take(v) {
            *xj = if r.random::<bool>() { 1e4 } else { -1e4 } * r.random::<f32>();
        }
        // row 1: -inf in about a third of the positions, label on a finite one
        for j in 0..v {
            if j % 3 == 1 {
                x[v + j] = NEG_INF;
            }
        }
        labels[1] = 0;
        // row 2: all -inf
        x[2 * v..3 * v].fill(NEG_INF);
        // row 3: label on a -inf logit, and a large max at the very end
        x[3 * v + labels[3]] = NEG_INF;
        if labels[3] != v - 1 {
            x[4 * v - 1] = 40.0;
        }
    }
    LogitCase { b, t, v, x, labels }
}

fn case_tensors(c: &LogitCase, device: &Device) -> (Tensor<3>, Tensor<2, Int>) {
    (
        tensor(c.x.clone(), [c.b, c.t, c.v], device),
        ints(
            c.labels.iter().map(|&l| l as i64).collect(),
            [c.b, c.t],
            device,
        ),
    )
}

fn ref_stats(c: &LogitCase, tau: f64) -> (Vec<f64>, Vec<f64>) {
    c.x.chunks(c.v)
        .zip(&c.labels)
        .map(|(row, &l)| {
            let (lp, h, _, _) = ref_row(row, l, tau);
            (lp, h)
        })
        .unzip()
}

/// Tolerance scale: f32 rounding of the largest tempered logit.
fn atol_for(c: &LogitCase, tau: f32) -> f64 {
    let m =
        c.x.iter()
            .filter(|x| x.is_finite())
            .fold(0f32, |a, &x| a.max(x.abs()));
    2e-5 + 4e-7 * (m / tau) as f64
}

const CASES: &[(usize, usize, usize, bool)] = &[
    (2, 3, 37, true),
    (1, 1, 5, false),   // length-1 sequence
    (2, 2, 9000, true), // several chunks per row (CHUNK = 4096)
    (3, 2, 1, false),   // a vocabulary of one token
];

#[test]
fn fused_path_is_taken_on_flex_f32() {
    assert!(fused_available(&dev(), DType::F32));
    assert!(fused_available(&dev().autodiff(), DType::F32));
    assert!(!fused_available(&dev(), DType::BF16));
    // this thread's counters only grow, and only this thread's calls move them, so "grew
    // across the call" proves that this test's call ran the kernel
    let calls = |i: usize| crate::flex::fused_calls()[i];
    let (f0, b0, g0) = (calls(0), calls(1), calls(2));
    let x = Tensor::<3>::ones([1, 2, 3], &dev().autodiff()).require_grad();
    // labels may live on the autodiff device too (int tensors are never tracked)
    let lp = token_logprobs(x.clone(), Tensor::zeros([1, 2], &dev().autodiff()), 1.0).unwrap();
    let _ = x.grad(&lp.sum().backward());
    let m = Tensor::<2>::ones([1, 2], &dev());
    let _ = gae(m.clone(), m.clone(), m, GaeConfig::default()).unwrap();
    assert!(calls(0) > f0 && calls(1) > b0 && calls(2) > g0);
}

/// One fused call of each kernel: token log-probs forward and backward, and GAE.
fn fused_round(device: &Device) {
    let x = Tensor::<3>::ones([2, 3, 5], &device.clone().autodiff()).require_grad();
    let labels = Tensor::<2, Int>::zeros([2, 3], device);
    let lp = token_logprobs(x.clone(), labels, 1.0).unwrap();
    let _ = x.grad(&lp.sum().backward());
    let m = Tensor::<2>::ones([2, 3], device);
    let _ = gae(m.clone(), m.clone(), m, GaeConfig::default()).unwrap();
}

#[test]
fn calls_that_do_not_take_the_fused_path_are_not_counted_while_others_do() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let device = dev();
    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    std::thread::scope(|s| {
        // other threads keep running the fused kernels the whole time (as parallel tests do)
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(SeqCst) {
                    fused_round(&device);
                    rounds.fetch_add(1, SeqCst);
                }
            });
        }
        let before = crate::flex::fused_calls();
        let started = rounds.load(SeqCst);
        let ad = device.clone().autodiff();
        for _ in 0..3 {
            // the default bodies, called directly: forward and backward, and GAE
            let x = Tensor::<3>::ones([2, 3, 5], &ad).require_grad();
            let y = Tensor::<2, Int>::zeros([2, 3], &device);
            let (lp, h) = token_logprobs_with_entropy_default(x.clone(), y.clone(), 1.0).unwrap();
            let _ = x.grad(&(lp.sum() + h.sum()).backward());
            let m = Tensor::<2>::ones([2, 3], &device);
            let _ = gae_default(m.clone(), m.clone(), m, GaeConfig::default()).unwrap();
            // the public op on bf16 logits falls back to the default body
            let xb = Tensor::<3>::ones([2, 3, 5], (&device, DType::BF16));
            let _ = token_logprobs(xb, y, 1.0).unwrap();
        }
        // make sure fused calls of other threads overlapped this window
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        let overlapped = loop {
            if rounds.load(SeqCst) >= started + 2 {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::yield_now();
        };
        let after = crate::flex::fused_calls();
        stop.store(true, SeqCst);
        assert!(overlapped, "the other threads made no fused call in time");
        assert_eq!(
            after, before,
            "calls that ran the default bodies on this thread were counted as fused calls"
        );
    });
    // and this thread's own fused calls are counted, one per kernel
    let before = crate::flex::fused_calls();
    fused_round(&device);
    let after = crate::flex::fused_calls();
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [1, 1, 1]
    );
}

#[test]
fn token_logprobs_fused_and_default_match_f64_reference() {
    let device = dev();
    for (k, &(b, t, v, edge)) in CASES.iter().enumerate() {
        for tau in [1.0f32, 0.7, 2.5] {
            let c = logit_case(10 + k as u64, b, t, v, edge);
            let (logits, labels) = case_tensors(&c, &device);
            let (want_lp, want_h) = ref_stats(&c, tau as f64);
            let atol = atol_for(&c, tau);
            let what = format!("case {k} τ={tau}");

            let lp = token_logprobs(logits.clone(), labels.clone(), tau).unwrap();
            assert_close(
                &format!("fused lp {what}"),
                &vec_of(lp),
                &want_lp,
                atol,
                1e-5,
            );
            let (lp, h) = token_logprobs_with_entropy(logits.clone(), labels.clone(), tau).unwrap();
            assert_close(
                &format!("fused lp+H {what}"),
                &vec_of(lp),
                &want_lp,
                atol,
                1e-5,
            );
            assert_close(&format!("fused H {what}"), &vec_of(h), &want_h, atol, 1e-4);

            let lp = token_logprobs_default(logits.clone(), labels.clone(), tau).unwrap();
            assert_close(
                &format!("default lp {what}"),
                &vec_of(lp),
                &want_lp,
                atol,
                1e-5,
            );
            let (lp, h) = token_logprobs_with_entropy_default(logits, labels, tau).unwrap();
            assert_close(
                &format!("default lp+H {what}"),
                &vec_of(lp),
                &want_lp,
                atol,
                1e-5,
            );
            assert_close(
                &format!("default H {what}"),
                &vec_of(h),
                &want_h,
                atol,
                1e-4,
            );
        }
    }
}

#[test]
fn token_logprobs_gradients_match_f64_reference_and_default_autodiff() {
    let ad = dev().autodiff();
    for (k, &(b, t, v, edge)) in CASES.iter().enumerate() {
        let tau = if k % 2 == 0 { 0.8f32 } else { 1.0 };
        let c = logit_case(20 + k as u64, b, t, v, edge);
        let n = b * t;
        let mut r = rng(99 + k as u64);
        let mut w_lp: Vec<f32> = (0..n).map(|_| normal(&mut r)).collect();
        let w_h: Vec<f32> = (0..n).map(|_| normal(&mut r)).collect();
        let wl = tensor(w_lp.clone(), [b, t], &ad);
        let wh = tensor(w_h.clone(), [b, t], &ad);
        // the loss below masks -inf log-probs, so those rows have no log-prob term
        let (ref_lp, _) = ref_stats(&c, tau as f64);
        for (w, lp) in w_lp.iter_mut().zip(&ref_lp) {
            if lp.is_infinite() {
                *w = 0.0;
            }
        }
        let want = ref_grad(&c.x, &c.labels, v, tau as f64, &w_lp, &w_h);
        let (logits, labels) = case_tensors(&c, &dev());

        let grad_of = |fused: bool, entropy: bool| -> Vec<f32> {
            let x = logits.clone().autodiff().require_grad();
            let (lp, h) = match (fused, entropy) {
                (true, true) => {
                    token_logprobs_with_entropy(x.clone(), labels.clone(), tau).unwrap()
                }
                (false, true) => {
                    token_logprobs_with_entropy_default(x.clone(), labels.clone(), tau).unwrap()
                }
                (true, false) => (
                    token_logprobs(x.clone(), labels.clone(), tau).unwrap(),
                    Tensor::zeros([b, t], &ad),
                ),
                (false, false) => (
                    token_logprobs_default(x.clone(), labels.clone(), tau).unwrap(),
                    Tensor::zeros([b, t], &ad),
                ),
            };
            // mask the -inf log-probs (dead rows, impossible labels) as a loss would
            let lp = lp.clone().mask_fill(lp.detach().is_inf(), 0.0);
            let loss = (lp * wl.clone() + h * wh.clone()).sum();
            vec_of(x.grad(&loss.backward()).unwrap())
        };
        // f32 rounding of z' = z/τ near |z'| ≈ 1e4 perturbs p = exp(z' − lse) relatively by
        // about |z'|·2^-24 (both paths): scale the tolerance with the largest logit
        let atol = 1e-5 + 1e-6 * atol_for(&c, tau) / 2e-5;
        let rtol = 1e-4 + 2e-7 * atol_for(&c, tau) / 4e-7;
        let fused = grad_of(true, true);
        assert_close(&format!("fused grad case {k}"), &fused, &want, atol, rtol);
        let default = grad_of(false, true);
        assert_close(
            &format!("default grad case {k}"),
            &default,
            &want,
            atol,
            rtol,
        );
        assert_close(
            &format!("fused vs default grad case {k}"),
            &fused,
            &as_f64(&default),
            atol,
            rtol,
        );

        // without the entropy term the reference has w_h = 0
        let want_lp_only = ref_grad(&c.x, &c.labels, v, tau as f64, &w_lp, &vec![0.0; n]);
        assert_close(
            &format!("fused lp-only grad case {k}"),
            &grad_of(true, false),
            &want_lp_only,
            atol,
            rtol,
        );
        assert_close(
            &format!("default lp-only grad case {k}"),
            &grad_of(false, false),
            &want_lp_only,
            atol,
            rtol,
        );
    }
}

#[test]
fn token_logprobs_gradient_matches_finite_differences() {
    // an independent check of the f64 gradient formula used above, on the fused path
    let ad = dev().autodiff();
    let c = logit_case(5, 1, 2, 7, false);
    let tau = 1.3f32;
    let (logits, labels) = case_tensors(&c, &dev());
    let x = logits.autodiff().require_grad();
    let (lp, h) = token_logprobs_with_entropy(x.clone(), labels, tau).unwrap();
    let w = tensor(vec![0.7, -1.1], [1, 2], &ad);
    let loss = (lp + h * 0.5) * w;
    let g = vec_of(x.grad(&loss.sum().backward()).unwrap());
    let f = |xs: &[f32]| -> f64 {
        xs.chunks(7)
            .zip(&c.labels)
            .zip([0.7, -1.1])
            .map(|((row, &l), w)| {
                let (lp, h, _, _) = ref_row(row, l, tau as f64);
                w * (lp + 0.5 * h)
            })
            .sum()
    };
    for j in 0..c.x.len() {
        let (mut up, mut dn) = (c.x.clone(), c.x.clone());
        up[j] += 1e-2;
        dn[j] -= 1e-2;
        let fd = (f(&up) - f(&dn)) / 2e-2;
        assert!(
            (g[j] as f64 - fd).abs() < 2e-3,
            "x[{j}]: autodiff {} vs finite difference {fd}",
            g[j]
        );
    }
}

#[test]
fn token_logprobs_rejects_bad_arguments_and_falls_back_for_bf16() {
    let device = dev();
    let logits = Tensor::<3>::zeros([2, 3, 4], &device);
    let labels = Tensor::<2, Int>::zeros([2, 2], &device);
    assert!(matches!(
        token_logprobs(logits.clone(), labels, 1.0),
        Err(KernelError::ShapeMismatch { .. })
    ));
    let labels = Tensor::<2, Int>::zeros([2, 3], &device);
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            token_logprobs(logits.clone(), labels.clone(), tau),
            Err(KernelError::InvalidArgument { .. })
        ));
    }
    // empty sequences: empty results on both paths, forward and backward
    let x = Tensor::<3>::zeros([2, 0, 4], &device.clone().autodiff()).require_grad();
    let y = Tensor::<2, Int>::zeros([2, 0], &device);
    let (lp, h) = token_logprobs_with_entropy(x.clone(), y.clone(), 1.0).unwrap();
    assert_eq!((lp.dims(), h.dims()), ([2, 0], [2, 0]));
    let g = x.grad(&(lp.sum() + h.sum()).backward()).unwrap();
    assert_eq!(g.dims(), [2, 0, 4]);
    assert_eq!(
        token_logprobs_default(x.clone(), y, 1.0).unwrap().dims(),
        [2, 0]
    );
    // a NaN logit makes its row NaN on both paths (and leaves the other rows alone)
    let mut x = vec![0.5f32; 2 * 5];
    x[7] = f32::NAN;
    let nan_logits = tensor(x, [1, 2, 5], &device);
    let y = ints(vec![1, 2], [1, 2], &device);
    for lp in [
        token_logprobs(nan_logits.clone(), y.clone(), 1.0).unwrap(),
        token_logprobs_default(nan_logits, y, 1.0).unwrap(),
    ] {
        let lp = vec_of(lp);
        assert!(
            (lp[0] as f64 - (0.2f64).ln()).abs() < 1e-6 && lp[1].is_nan(),
            "{lp:?}"
        );
    }
    // bf16 logits: not fused, the default body runs
    let c = logit_case(3, 1, 2, 6, false);
    let (logits, labels) = case_tensors(&c, &device);
    let lp = token_logprobs(logits.cast(burn::tensor::FloatDType::BF16), labels, 1.0).unwrap();
    let (want, _) = ref_stats(&c, 1.0);
    assert_close("bf16 lp", &vec_of(lp), &want, 0.1, 0.02);
}

// ---------------------------------------------------------------- KL ---------------------

#[test]
fn kl_estimators_match_formulas() {
    let device = dev();
    let mut r = rng(7);
    let logp: Vec<f32> = (0..12).map(|_| -r.random::<f32>() * 3.0).collect();
    let ref_logp: Vec<f32> = (0..12).map(|_| -r.random::<f32>() * 3.0).collect();
    let (a, b) = (
        tensor(logp.clone(), [3, 4], &device),
        tensor(ref_logp.clone(), [3, 4], &device),
    );
    let lr: Vec<f64> = logp
        .iter()
        .zip(&ref_logp)
        .map(|(&p, &q)| q as f64 - p as f64)
        .collect();
    let k1: Vec<f64> = lr.iter().map(|&l| -l).collect();
    let k2: Vec<f64> = lr.iter().map(|&l| 0.5 * l * l).collect();
    let k3: Vec<f64> = lr.iter().map(|&l| l.exp() - 1.0 - l).collect();
    for (est, want) in [
        (KlEstimator::K1, k1),
        (KlEstimator::K2, k2),
        (KlEstimator::K3, k3.clone()),
    ] {
        let got = vec_of(kl_estimate(a.clone(), b.clone(), est).unwrap());
        assert_close(&format!("{est:?}"), &got, &want, 1e-6, 1e-5);
    }
    assert!(k3.iter().all(|&k| k >= 0.0));
    assert!(matches!(
        kl_estimate(a, Tensor::<2>::zeros([4, 3], &device), KlEstimator::K1),
        Err(KernelError::ShapeMismatch { .. })
    ));
}

// ---------------------------------------------------------------- masked stats -----------

fn ref_masked(x: &[f32], m: &[f32]) -> (f64, f64, f64) {
    let real: Vec<f64> = x
        .iter()
        .zip(m)
        .filter(|(_, m)| **m != 0.0)
        .map(|(&x, _)| x as f64)
        .collect();
    let n = real.len() as f64;
    let mean = if n > 0.0 {
        real.iter().sum::<f64>() / n
    } else {
        0.0
    };
    let ss: f64 = real.iter().map(|x| (x - mean).powi(2)).sum();
    let unbiased = if n > 1.0 { ss / (n - 1.0) } else { 0.0 };
    let biased = if n > 0.0 { ss / n } else { 0.0 };
    (mean, unbiased, biased)
}

#[test]
fn masked_statistics_match_reference_and_ignore_nan_in_masked_slots() {
    let ad = dev().autodiff();
    let mut r = rng(11);
    let (b, t) = (4, 9);
    let mut x: Vec<f32> = (0..b * t).map(|_| 2.0 + normal(&mut r)).collect();
    let m: Vec<f32> = (0..b * t)
        .map(|i| if i % t < 3 + i / t { 1.0 } else { 0.0 })
        .collect();
    for i in 0..b * t {
        if m[i] == 0.0 && i % 2 == 0 {
            x[i] = f32::NAN;
        } else if m[i] == 0.0 {
            x[i] = f32::INFINITY;
        }
    }
    let (mean, var_u, var_b) = ref_masked(&x, &m);
    let xt = tensor(x.clone(), [b, t], &ad).require_grad();
    let mt = tensor(m.clone(), [b, t], &ad);
    assert_close(
        "mean",
        &vec_of(masked_mean(xt.clone(), mt.clone()).unwrap()),
        &[mean],
        1e-5,
        1e-5,
    );
    let sum: f64 = x
        .iter()
        .zip(&m)
        .filter(|(_, m)| **m != 0.0)
        .map(|(&x, _)| x as f64)
        .sum();
    assert_close(
        "sum",
        &vec_of(masked_sum(xt.clone(), mt.clone()).unwrap()),
        &[sum],
        1e-4,
        1e-5,
    );
    assert_close(
        "var",
        &vec_of(masked_var(xt.clone(), mt.clone(), true).unwrap()),
        &[var_u],
        1e-5,
        1e-4,
    );
    assert_close(
        "var biased",
        &vec_of(masked_var(xt.clone(), mt.clone(), false).unwrap()),
        &[var_b],
        1e-5,
        1e-4,
    );
    for shift_mean in [true, false] {
        let cfg = WhitenConfig {
            shift_mean,
            ..Default::default()
        };
        let w = masked_whiten(xt.clone(), mt.clone(), cfg).unwrap();
        let want: Vec<f64> = x
            .iter()
            .zip(&m)
            .map(|(&x, &m)| {
                if m == 0.0 {
                    0.0
                } else {
                    (x as f64 - mean) / (var_u + 1e-8).sqrt() + if shift_mean { 0.0 } else { mean }
                }
            })
            .collect();
        assert_close("whiten", &vec_of(w.clone()), &want, 1e-5, 1e-4);
        // the gradient is finite everywhere and zero in masked slots
        let g = vec_of(
            xt.grad(
                &(w * tensor(x.iter().map(|_| normal(&mut r)).collect(), [b, t], &ad))
                    .sum()
                    .backward(),
            )
            .unwrap(),
        );
        for (i, g) in g.iter().enumerate() {
            assert!(g.is_finite(), "whiten grad[{i}] = {g}");
            if m[i] == 0.0 {
                assert_eq!(*g, 0.0);
            }
        }
    }
    // all masked: 0, not NaN
    let zero = Tensor::<2>::zeros([b, t], &ad);
    assert_eq!(
        vec_of(masked_mean(xt.clone(), zero.clone()).unwrap()),
        vec![0.0]
    );
    assert_eq!(
        vec_of(masked_var(xt.clone(), zero.clone(), true).unwrap()),
        vec![0.0]
    );
    assert!(
        vec_of(masked_whiten(xt, zero, WhitenConfig::default()).unwrap())
            .iter()
            .all(|&v| v == 0.0)
    );
}

// ---------------------------------------------------------------- GAE ---------------------

fn ref_gae(
    r: &[f32],
    v: &[f32],
    m: &[f32],
    t: usize,
    gamma: f64,
    lambda: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut adv = vec![0.0; r.len()];
    let mut ret = vec![0.0; r.len()];
    for b in 0..r.len() / t {
        for i in 0..t {
            let k = b * t + i;
            if m[k] == 0.0 {
                continue;
            }
            // Â_i = Σ_l (γλ)^l δ_{i+l} over the run of real tokens starting at i
            let mut a = 0.0;
            let mut w = 1.0;
            let mut j = i;
            while j < t && m[b * t + j] != 0.0 {
                let next_v = if j + 1 < t && m[b * t + j + 1] != 0.0 {
                    v[b * t + j + 1] as f64
                } else {
                    0.0
                };
                let delta = r[b * t + j] as f64 + gamma * next_v - v[b * t + j] as f64;
                a += w * delta;
                w *= gamma * lambda;
                j += 1;
            }
            adv[k] = a;
            ret[k] = a + v[k] as f64;
        }
    }
    (adv, ret)
}

#[test]
fn gae_fused_and_default_match_f64_reference() {
    let device = dev();
    for (k, &(b, t)) in [(5usize, 13usize), (3, 1), (2, 40), (130, 512)]
        .iter()
        .enumerate()
    {
        let mut rg = rng(30 + k as u64);
        let r: Vec<f32> = (0..b * t).map(|_| normal(&mut rg)).collect();
        let v: Vec<f32> = (0..b * t).map(|_| normal(&mut rg)).collect();
        // row 0 all real, row 1 all masked, other rows: real prefix then padding (NaN there)
        let mut m = vec![0f32; b * t];
        let (mut r, mut v) = (r, v);
        for row in 0..b {
            let len = match row {
                0 => t,
                1 => 0,
                _ => rg.random_range(1..=t),
            };
            for i in 0..t {
                if i < len {
                    m[row * t + i] = 1.0;
                } else {
                    r[row * t + i] = f32::NAN;
                    v[row * t + i] = f32::INFINITY;
                }
            }
        }
        if t > 4 {
            m[2] = 0.0; // a hole inside row 0: an episode boundary
        }
        // (130, 512) has B·T ≥ 2^16: the fused kernel's parallel branch
        for (gamma, lambda) in [(1.0f32, 0.95f32), (0.9, 0.8), (0.99, 1.0)] {
            let (want_adv, want_ret) = ref_gae(&r, &v, &m, t, gamma as f64, lambda as f64);
            let cfg = GaeConfig { gamma, lambda };
            let (rt, vt, mt) = (
                tensor(r.clone(), [b, t], &device),
                tensor(v.clone(), [b, t], &device),
                tensor(m.clone(), [b, t], &device),
            );
            let fused = gae(rt.clone(), vt.clone(), mt.clone(), cfg).unwrap();
            let default = gae_default(rt, vt, mt, cfg).unwrap();
            for (name, out) in [("fused", fused), ("default", default)] {
                assert_close(
                    &format!("{name} adv {k} γ={gamma}"),
                    &vec_of(out.advantages),
                    &want_adv,
                    1e-5,
                    1e-5,
                );
                assert_close(
                    &format!("{name} ret {k} γ={gamma}"),
                    &vec_of(out.returns),
                    &want_ret,
                    1e-5,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn gae_on_autodiff_tensors_is_untracked_and_checks_shapes() {
    let ad = dev().autodiff();
    let v = Tensor::<2>::ones([2, 3], &ad).require_grad();
    let out = gae(
        Tensor::ones([2, 3], &ad),
        v.clone(),
        Tensor::ones([2, 3], &ad),
        GaeConfig::default(),
    )
    .unwrap();
    assert!(!out.advantages.is_tracked());
    assert!(matches!(
        gae(
            Tensor::ones([2, 3], &ad),
            v,
            Tensor::ones([3, 2], &ad),
            GaeConfig::default()
        ),
        Err(KernelError::ShapeMismatch { .. })
    ));
}

#[test]
fn gae_accepts_empty_batches_and_sequences() {
    for dims in [[2usize, 0usize], [0, 3]] {
        let z = Tensor::<2>::zeros(dims, &dev());
        let out = gae(z.clone(), z.clone(), z.clone(), GaeConfig::default()).unwrap();
        assert_eq!((out.advantages.dims(), out.returns.dims()), (dims, dims));
    }
}

#[test]
fn rewards_at_eos_places_scores_on_last_real_token() {
    let device = dev();
    let mask = tensor(
        vec![
            1., 1., 1., 0., 0., /**/ 1., 1., 1., 1., 1., /**/ 0., 0., 0., 0., 0.,
        ],
        [3, 5],
        &device,
    );
    let scores = tensor(vec![2.0, -1.0, f32::NAN], [3], &device);
    let kl = tensor(vec![0.1; 15], [3, 5], &device);
    let got = vec_of(rewards_at_eos(scores.clone(), mask.clone(), None).unwrap());
    let want = [0., 0., 2., 0., 0., 0., 0., 0., 0., -1., 0., 0., 0., 0., 0.];
    assert_close("eos", &got, &as_f64(&want), 0.0, 0.0);
    let got = vec_of(rewards_at_eos(scores, mask, Some(kl)).unwrap());
    let want = [
        0.1, 0.1, 2.1, 0., 0., 0.1, 0.1, 0.1, 0.1, -0.9, 0., 0., 0., 0., 0.,
    ];
    assert_close("eos + per-token", &got, &as_f64(&want), 1e-6, 0.0);
}

// ---------------------------------------------------------------- PPO ---------------------

#[test]
fn ppo_losses_match_reference_and_are_nan_safe() {
    let ad = dev().autodiff();
    let mut rg = rng(41);
    let (b, t) = (3, 7);
    let n = b * t;
    let mut logp: Vec<f32> = (0..n).map(|_| -1.0 + 0.3 * normal(&mut rg)).collect();
    let old: Vec<f32> = logp.iter().map(|&l| l + 0.3 * normal(&mut rg)).collect();
    let adv: Vec<f32> = (0..n).map(|_| normal(&mut rg)).collect();
    let m: Vec<f32> = (0..n)
        .map(|i| if i % t < 2 + 2 * (i / t) { 1.0 } else { 0.0 })
        .collect();
    for i in 0..n {
        if m[i] == 0.0 {
            logp[i] = NEG_INF; // padding log-probs are -inf: must not poison anything
        }
    }
    let eps = 0.2f64;
    let (mut loss, mut kl, mut clip, mut ratio_sum, mut cnt) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        if m[i] == 0.0 {
            continue;
        }
        let lr = logp[i] as f64 - old[i] as f64;
        let ratio = lr.exp();
        let a = adv[i] as f64;
        loss += (-a * ratio).max(-a * ratio.clamp(1.0 - eps, 1.0 + eps));
        kl += ratio - 1.0 - lr;
        clip += if (ratio - 1.0).abs() > eps { 1.0 } else { 0.0 };
        ratio_sum += ratio;
        cnt += 1.0;
    }
    let lp_t = tensor(logp.clone(), [b, t], &ad).require_grad();
    let mask = tensor(m.clone(), [b, t], &ad);
    let out = ppo_policy_loss(
        lp_t.clone(),
        tensor(old.clone(), [b, t], &ad),
        tensor(adv.clone(), [b, t], &ad),
        mask.clone(),
        PpoConfig::default(),
    )
    .unwrap();
    assert_close(
        "policy loss",
        &vec_of(out.loss.clone()),
        &[loss / cnt],
        1e-5,
        1e-5,
    );
    assert_close("approx kl", &vec_of(out.approx_kl), &[kl / cnt], 1e-6, 1e-4);
    assert_close(
        "clip frac",
        &vec_of(out.clip_fraction),
        &[clip / cnt],
        1e-6,
        0.0,
    );
    assert_close(
        "ratio mean",
        &vec_of(out.ratio_mean),
        &[ratio_sum / cnt],
        1e-6,
        1e-5,
    );
    assert!(clip > 0.0 && clip < cnt, "the case exercises both branches");
    let g = vec_of(lp_t.grad(&out.loss.backward()).unwrap());
    for i in 0..n {
        assert!(g[i].is_finite());
        let lr = logp[i] as f64 - old[i] as f64;
        let (ratio, a) = (lr.exp(), adv[i] as f64);
        // d/dlogp of max(−aρ, −a·clip(ρ)): −aρ unless the clipped branch is active and flat
        let want = if m[i] == 0.0 {
            0.0
        } else if (-a * ratio) >= (-a * ratio.clamp(1.0 - eps, 1.0 + eps)) {
            -a * ratio / cnt
        } else {
            0.0
        };
        assert!(
            (g[i] as f64 - want).abs() < 1e-5,
            "policy grad[{i}]: {} vs {want}",
            g[i]
        );
    }

    // value loss
    let vals: Vec<f32> = (0..n).map(|_| normal(&mut rg)).collect();
    let old_v: Vec<f32> = vals.iter().map(|&v| v + 0.3 * normal(&mut rg)).collect();
    let mut ret: Vec<f32> = (0..n).map(|_| normal(&mut rg)).collect();
    for i in 0..n {
        if m[i] == 0.0 {
            ret[i] = f32::NAN;
        }
    }
    let (mut vl, mut vclip) = (0.0, 0.0);
    for i in 0..n {
        if m[i] == 0.0 {
            continue;
        }
        let (v, vo, r) = (vals[i] as f64, old_v[i] as f64, ret[i] as f64);
        let vc = vo + (v - vo).clamp(-eps, eps);
        vl += (v - r).powi(2).max((vc - r).powi(2));
        vclip += if (v - vo).abs() > eps { 1.0 } else { 0.0 };
    }
    let v_t = tensor(vals, [b, t], &ad).require_grad();
    let out = ppo_value_loss(
        v_t.clone(),
        tensor(old_v, [b, t], &ad),
        tensor(ret, [b, t], &ad),
        mask,
        PpoConfig::default(),
    )
    .unwrap();
    assert_close(
        "value loss",
        &vec_of(out.loss.clone()),
        &[0.5 * vl / cnt],
        1e-5,
        1e-5,
    );
    assert_close(
        "value clip frac",
        &vec_of(out.clip_fraction),
        &[vclip / cnt],
        1e-6,
        0.0,
    );
    assert!(
        vec_of(v_t.grad(&out.loss.backward()).unwrap())
            .iter()
            .all(|g| g.is_finite())
    );
}

// ---------------------------------------------------------------- preference -------------

#[test]
fn bradley_terry_matches_reference() {
    let ad = dev().autodiff();
    let mut rg = rng(51);
    let n = 16;
    let ra: Vec<f32> = (0..n).map(|_| 2.0 * normal(&mut rg)).collect();
    let rb: Vec<f32> = (0..n).map(|_| 2.0 * normal(&mut rg)).collect();
    let mut p: Vec<f32> = (0..n).map(|_| rg.random::<f32>()).collect();
    p[0] = 1.0;
    p[1] = 0.0;
    p[2] = 0.5;
    let log_sig = |x: f64| -(1.0 + (-x).exp()).ln();
    for cfg in [
        PreferenceConfig::default(),
        PreferenceConfig {
            margin: 0.5,
            center_coef: 0.01,
        },
    ] {
        let (m, eta) = (cfg.margin as f64, cfg.center_coef as f64);
        let mut want = 0.0;
        let mut center = 0.0;
        for i in 0..n {
            let d = ra[i] as f64 - rb[i] as f64;
            let pi = p[i] as f64;
            want += -(pi * log_sig(d - m) + (1.0 - pi) * log_sig(-d - m));
            center += (ra[i] as f64 + rb[i] as f64).powi(2);
        }
        let want = want / n as f64 + eta * center / n as f64;
        let a = tensor(ra.clone(), [n], &ad).require_grad();
        let out = bradley_terry_loss(
            a.clone(),
            tensor(rb.clone(), [n], &ad),
            tensor(p.clone(), [n], &ad),
            cfg,
        )
        .unwrap();
        assert_close("bt loss", &vec_of(out.loss.clone()), &[want], 1e-5, 1e-5);
        // gradient in r_a: (σ(d−m) − p)·… analytic for margin 0, checked against the formula
        let g = vec_of(a.grad(&out.loss.backward()).unwrap());
        for i in 0..n {
            let d = ra[i] as f64 - rb[i] as f64;
            let pi = p[i] as f64;
            let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
            let dl = -(pi * (1.0 - sig(d - m)) - (1.0 - pi) * (1.0 - sig(-d - m)));
            let want_g = (dl + eta * 2.0 * (ra[i] as f64 + rb[i] as f64)) / n as f64;
            assert!((g[i] as f64 - want_g).abs() < 1e-5, "bt grad[{i}]");
        }
        let decided: Vec<usize> = (0..n).filter(|&i| p[i] != 0.5).collect();
        let agree = decided
            .iter()
            .filter(|&&i| (ra[i] > rb[i] && p[i] > 0.5) || (ra[i] < rb[i] && p[i] < 0.5))
            .count();
        assert_close(
            "accuracy",
            &vec_of(out.accuracy),
            &[agree as f64 / decided.len() as f64],
            1e-6,
            0.0,
        );
    }
}

// ---------------------------------------------------------------- sampling ---------------

#[test]
fn top_k_and_top_p_match_reference() {
    let device = dev();
    let mut rg = rng(61);
    let (b, v) = (4, 10);
    let x: Vec<f32> = (0..b * v).map(|_| 2.0 * normal(&mut rg)).collect();
    let logits = tensor(x.clone(), [b, v], &device);
    for k in [1usize, 3, 10] {
        let got = vec_of(top_k_filter(logits.clone(), k).unwrap());
        for (row, grow) in x.chunks(v).zip(got.chunks(v)) {
            let mut s = row.to_vec();
            s.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let kth = s[k - 1];
            for (&z, &g) in row.iter().zip(grow) {
                assert_eq!(g, if z >= kth { z } else { NEG_INF });
            }
        }
    }
    for top_p in [0.05f32, 0.5, 0.9, 1.0] {
        let got = vec_of(top_p_filter(logits.clone(), top_p).unwrap());
        for (row, grow) in x.chunks(v).zip(got.chunks(v)) {
            let mx = row.iter().copied().fold(NEG_INF, f32::max) as f64;
            let z: f64 = row.iter().map(|&r| (r as f64 - mx).exp()).sum();
            let p: Vec<f64> = row.iter().map(|&r| (r as f64 - mx).exp() / z).collect();
            for (j, (&r, &g)) in row.iter().zip(grow).enumerate() {
                let before: f64 = (0..v).filter(|&i| p[i] > p[j]).map(|i| p[i]).sum();
                let keep = top_p >= 1.0 || before <= top_p as f64;
                assert_eq!(g, if keep { r } else { NEG_INF }, "top_p {top_p} token {j}");
            }
            assert!(grow.iter().any(|g| g.is_finite()));
        }
    }
    assert!(top_k_filter(logits.clone(), 0).is_err());
    assert!(top_p_filter(logits, 0.0).is_err());
}

#[test]
fn top_p_after_top_k_keeps_the_nucleus_of_the_renormalised_distribution() {
    let device = dev();
    // p = [0.4, 0.3, 0.2, 0.1]; top-k 2 leaves [0.4, 0.3] -> renormalised [4/7, 3/7]
    let row: Vec<f32> = [0.4f32, 0.3, 0.2, 0.1].iter().map(|p| p.ln()).collect();
    let logits = tensor(row.clone(), [1, 4], &device);
    let kept = |t: Tensor<2>| -> Vec<bool> { vec_of(t).iter().map(|x| x.is_finite()).collect() };
    // top-p 0.5 alone: token 1 has 0.4 ≤ 0.5 of mass before it, so it stays
    assert_eq!(
        kept(top_p_filter(logits.clone(), 0.5).unwrap()),
        [true, true, false, false]
    );
    // after top-k 2, token 1 has 4/7 ≈ 0.571 > 0.5 before it: the nucleus is token 0 alone
    let filtered = top_p_filter(top_k_filter(logits.clone(), 2).unwrap(), 0.5).unwrap();
    let got = vec_of(filtered);
    assert_eq!(
        got.iter().map(|x| x.is_finite()).collect::<Vec<_>>(),
        [true, false, false, false]
    );
    assert_eq!(got[0], row[0], "kept logits are unchanged");
    // top-p 0.6 after top-k 2 keeps both (4/7 ≤ 0.6), never the tokens top-k removed
    assert_eq!(
        kept(top_p_filter(top_k_filter(logits, 2).unwrap(), 0.6).unwrap()),
        [true, true, false, false]
    );
}

#[test]
fn categorical_sampling_is_seeded_and_follows_the_distribution() {
    let device = dev();
    let rows = 20_000;
    let probs = [0.1f32, 0.0, 0.6, 0.3];
    let row: Vec<f32> = probs
        .iter()
        .map(|&p| if p > 0.0 { p.ln() } else { NEG_INF })
        .collect();
    let logits = tensor(row.repeat(rows), [rows, 4], &device);
    let a: Vec<i64> = sample_categorical(logits.clone(), 42)
        .unwrap()
        .try_into_vec_as::<i64>()
        .unwrap();
    let b: Vec<i64> = sample_categorical(logits.clone(), 42)
        .unwrap()
        .try_into_vec_as::<i64>()
        .unwrap();
    let c: Vec<i64> = sample_categorical(logits, 43)
        .unwrap()
        .try_into_vec_as::<i64>()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    for (tok, &p) in probs.iter().enumerate() {
        let freq = a.iter().filter(|&&x| x == tok as i64).count() as f64 / rows as f64;
        // 5 standard deviations of a binomial proportion
        let sd = (p as f64 * (1.0 - p as f64) / rows as f64).sqrt();
        assert!(
            (freq - p as f64).abs() <= 5.0 * sd + 1e-12,
            "token {tok}: {freq} vs {p}"
        );
    }
}

/// `x · w` in float64.
fn ref_matmul(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * n];
    for r in 0..m {
        for i in 0..k {
            for j in 0..n {
                y[r * n + j] += x[r * k + i] as f64 * w[i * n + j] as f64;
            }
        }
    }
    y
}

#[test]
fn linear_matches_f64_reference_and_takes_the_small_row_kernel_up_to_eight_rows() {
    let device = dev();
    let mut r = rng(41);
    // k · n = 307 200 weights: large enough for the kernel to split the columns
    let (k, n) = (384, 800);
    let w: Vec<f32> = (0..k * n).map(|_| normal(&mut r) * 0.05).collect();
    for m in [1usize, 2, 5, 8, 9, 40] {
        let x: Vec<f32> = (0..m * k).map(|_| normal(&mut r)).collect();
        let before = crate::flex::fused_calls()[3];
        let y = linear(
            tensor(x.clone(), [m, k], &device),
            tensor(w.clone(), [k, n], &device),
        )
        .unwrap();
        let kernel_calls = crate::flex::fused_calls()[3] - before;
        let kernel = m <= SMALL_M_MAX_ROWS && crate::flex::small_m_available();
        assert_eq!(kernel_calls, usize::from(kernel), "m = {m}");
        assert_eq!(y.dims(), [m, n]);
        let want = ref_matmul(&x, &w, m, k, n);
        assert_close(&format!("linear m={m}"), &vec_of(y), &want, 2e-5, 1e-5);
    }
}

/// `bf16(x)` as f64: what the AMX products see.
fn bf16_f64(x: f32) -> f64 {
    crate::amx::bf16_value(crate::amx::bf16_bits(x)) as f64
}

#[test]
fn bf16_linear_forward_and_backward_match_references_of_the_rounded_inputs() {
    use crate::{MatmulPrecision, linear_with};
    let ad = dev().autodiff();
    let mut r = rng(43);
    // ragged against the 16 × 32 tiles; more than eight rows
    let (m, k, n) = (37, 70, 45);
    let xv: Vec<f32> = (0..m * k).map(|_| normal(&mut r)).collect();
    let wv: Vec<f32> = (0..k * n).map(|_| normal(&mut r) * 0.1).collect();
    let g: Vec<f32> = (0..m * n).map(|_| normal(&mut r)).collect();
    let available = crate::bf16_available(&ad);
    let before = crate::flex::fused_calls()[13];
    let x = tensor(xv.clone(), [m, k], &ad).require_grad();
    let w = tensor(wv.clone(), [k, n], &ad).require_grad();
    let y = linear_with(x.clone(), w.clone(), MatmulPrecision::Bf16).unwrap();
    let yv = vec_of(y.clone());
    let grads = (y * tensor(g.clone(), [m, n], &ad)).sum().backward();
    let (gx, gw) = (
        vec_of(x.grad(&grads).unwrap()),
        vec_of(w.grad(&grads).unwrap()),
    );
    // forward, ∂x = g·wᵀ and ∂w = xᵀ·g: three kernel calls where AMX is available
    assert_eq!(
        crate::flex::fused_calls()[13] - before,
        if available { 3 } else { 0 }
    );
    let (mut want_y, mut want_gx, mut want_gw) =
        (vec![0f64; m * n], vec![0f64; m * k], vec![0f64; k * n]);
    for a in 0..m {
        for i in 0..k {
            for j in 0..n {
                let (xr, wr, gr) = (
                    bf16_f64(xv[a * k + i]),
                    bf16_f64(wv[i * n + j]),
                    bf16_f64(g[a * n + j]),
                );
                want_y[a * n + j] += xr * wr;
                want_gx[a * k + i] += gr * wr;
                want_gw[i * n + j] += xr * gr;
            }
        }
    }
    if available {
        // exact products of the rounded inputs, float32 sums
        assert_close("bf16 y", &yv, &want_y, 1e-5, 1e-5);
        assert_close("bf16 ∂x", &gx, &want_gx, 1e-5, 1e-5);
        assert_close("bf16 ∂w", &gw, &want_gw, 1e-5, 1e-5);
        // and not the f32 product: the rounding is visible
        let exact = ref_matmul(&xv, &wv, m, k, n);
        let off = yv
            .iter()
            .zip(&exact)
            .filter(|(a, b)| (**a as f64 - **b).abs() > 1e-4);
        assert!(
            off.count() > m * n / 2,
            "the product was not rounded to bf16"
        );
    } else {
        // without AMX the setting is ignored: the f32 product
        assert_close("f32 y", &yv, &ref_matmul(&xv, &wv, m, k, n), 2e-5, 1e-5);
    }
    // eight rows or fewer (a decoding step) stay f32 in any case
    let small = linear_with(
        tensor(xv[..8 * k].to_vec(), [8, k], &dev()),
        tensor(wv.clone(), [k, n], &dev()),
        MatmulPrecision::Bf16,
    )
    .unwrap();
    assert_close(
        "8 rows",
        &vec_of(small),
        &ref_matmul(&xv[..8 * k], &wv, 8, k, n),
        2e-5,
        1e-5,
    );
}

#[test]
fn linear_under_autodiff_has_matmul_gradients_and_serves_untracked_inference() {
    let ad = dev().autodiff();
    let mut r = rng(42);
    let (m, k, n) = (3, 6, 5);
    let xv: Vec<f32> = (0..m * k).map(|_| normal(&mut r)).collect();
    let wv: Vec<f32> = (0..k * n).map(|_| normal(&mut r)).collect();
    let g: Vec<f32> = (0..m * n).map(|_| normal(&mut r)).collect();
    let grads_of = |use_linear: bool| {
        let x = tensor(xv.clone(), [m, k], &ad).require_grad();
        let w = tensor(wv.clone(), [k, n], &ad).require_grad();
        let y = if use_linear {
            linear(x.clone(), w.clone()).unwrap()
        } else {
            x.clone().matmul(w.clone())
        };
        let grads = (y * tensor(g.clone(), [m, n], &ad)).sum().backward();
        (
            vec_of(x.grad(&grads).unwrap()),
            vec_of(w.grad(&grads).unwrap()),
        )
    };
    let before = crate::flex::fused_calls()[3];
    let (gx, gw) = grads_of(true);
    assert_eq!(
        crate::flex::fused_calls()[3],
        before,
        "tracked: autodiff's matmul"
    );
    // ∂x = g · wᵀ, ∂w = xᵀ · g
    let mut want_gx = vec![0f64; m * k];
    let mut want_gw = vec![0f64; k * n];
    for a in 0..m {
        for i in 0..k {
            for j in 0..n {
                want_gx[a * k + i] += g[a * n + j] as f64 * wv[i * n + j] as f64;
                want_gw[i * n + j] += xv[a * k + i] as f64 * g[a * n + j] as f64;
            }
        }
    }
    assert_close("∂x", &gx, &want_gx, 1e-5, 1e-5);
    assert_close("∂w", &gw, &want_gw, 1e-5, 1e-5);
    assert_eq!((gx, gw), grads_of(false));
    // nothing tracked (inference on an autodiff device): the kernel, and the same product
    let y = linear(
        tensor(xv.clone(), [m, k], &ad),
        tensor(wv.clone(), [k, n], &ad),
    )
    .unwrap();
    let kernel = usize::from(crate::flex::small_m_available());
    assert_eq!(crate::flex::fused_calls()[3], before + kernel);
    assert_close(
        "untracked",
        &vec_of(y),
        &ref_matmul(&xv, &wv, m, k, n),
        1e-5,
        1e-5,
    );
}

#[test]
fn linear_rejects_mismatched_inner_dimensions() {
    let device = dev();
    let e = linear(
        Tensor::zeros([2, 3], &device),
        Tensor::zeros([4, 5], &device),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("linear") && e.contains("[4, 5]") && e.contains("[3, 5]"),
        "{e}"
    );
}

// ---------------------------------------------------------------- attention -------------

/// An attention case: `q [b, h, s, d]`, `k, v [b, g, t, d]`, the model's bias `[b, 1, s, t]`
/// (causal after `t − s` cached positions, padded keys hidden, the diagonal always visible).
struct AttnCase {
    dims: [usize; 6], // b, h, g, s, t, d
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    bias: Vec<f32>,
}

fn attn_case(seed: u64, dims: [usize; 6], pad: &[usize], masked: f32) -> AttnCase {
    let [b, h, g, s, t, d] = dims;
    let mut r = rng(seed);
    let mut draw = |n: usize| (0..n).map(|_| normal(&mut r)).collect::<Vec<f32>>();
    let (q, k, v) = (
        draw(b * h * s * d),
        draw(b * g * t * d),
        draw(b * g * t * d),
    );
    let past = t - s;
    let mut bias = vec![0f32; b * s * t];
    for bi in 0..b {
        for i in 0..s {
            for j in 0..t {
                let qpos = past + i;
                if j > qpos || (j < pad[bi] && j != qpos) {
                    bias[(bi * s + i) * t + j] = masked;
                }
            }
        }
    }
    AttnCase {
        dims,
        q,
        k,
        v,
        bias,
    }
}

/// f64 reference: plain softmax per query row over the keys of its head's group.
fn ref_attention(c: &AttnCase) -> Vec<f64> {
    let [b, h, g, s, t, d] = c.dims;
    let n_rep = h / g;
    let mut out = vec![0f64; b * h * s * d];
    for bi in 0..b {
        for hi in 0..h {
            let kv = (bi * g + hi / n_rep) * t * d;
            for i in 0..s {
                let q = &c.q[((bi * h + hi) * s + i) * d..][..d];
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|x| q[x] as f64 * c.k[kv + j * d + x] as f64)
                            .sum();
                        let bias = c.bias[(bi * s + i) * t + j];
                        if bias == NEG_INF {
                            f64::NEG_INFINITY
                        } else {
                            dot / (d as f64).sqrt() + bias as f64
                        }
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = w.iter().sum();
                for j in 0..t {
                    for x in 0..d {
                        out[((bi * h + hi) * s + i) * d + x] +=
                            w[j] / z * c.v[kv + j * d + x] as f64;
                    }
                }
            }
        }
    }
    out
}

fn attn_tensors(c: &AttnCase, device: &Device) -> [Tensor<4>; 4] {
    let [b, h, g, s, t, d] = c.dims;
    [
        tensor(c.q.clone(), [b, h, s, d], device),
        tensor(c.k.clone(), [b, g, t, d], device),
        tensor(c.v.clone(), [b, g, t, d], device),
        tensor(c.bias.clone(), [b, 1, s, t], device),
    ]
}

#[test]
fn attention_matches_f64_reference_for_prefill_decoding_and_padding() {
    let device = dev();
    // [b, h, g, s, t, d]: a prefill over several query blocks and key tiles (with two rows
    // left-padded by different amounts), a prefill after a cache, decoding steps (the
    // kernel's in-place path: at most FUSED_MIN_ROWS rows per group; widths 64 and 128 in
    // registers, 24 in the portable loop), a head width that is padded inside the kernel,
    // width 128, and plain multi-head attention
    let cases = [
        ([2, 6, 2, 150, 150, 64], vec![0, 37]),
        ([2, 6, 2, 70, 79, 64], vec![5, 0]),
        ([3, 9, 3, 1, 130, 64], vec![0, 3, 70]),
        ([2, 9, 3, 2, 300, 64], vec![0, 250]),
        ([1, 4, 2, 1, 50, 128], vec![3]),
        ([2, 4, 2, 3, 40, 24], vec![0, 7]),
        ([1, 4, 2, 33, 40, 8], vec![2]),
        ([2, 2, 1, 5, 70, 128], vec![0, 9]),
        ([1, 2, 2, 9, 9, 24], vec![0]),
    ];
    for (seed, (dims, pad)) in cases.into_iter().enumerate() {
        for masked in [NEG_INF, f32::MIN] {
            let c = attn_case(70 + seed as u64, dims, &pad, masked);
            let [q, k, v, bias] = attn_tensors(&c, &device);
            let before = crate::flex::fused_calls()[4];
            let fused = attention(q.clone(), k.clone(), v.clone(), bias.clone()).unwrap();
            assert_eq!(crate::flex::fused_calls()[4], before + 1, "{dims:?}");
            let mut c_ref = c;
            if masked == f32::MIN {
                // the same masking, written as the reference reads it
                for x in &mut c_ref.bias {
                    if *x == f32::MIN {
                        *x = NEG_INF;
                    }
                }
            }
            let want = ref_attention(&c_ref);
            let what = format!("attention {dims:?} masked by {masked}");
            assert_close(&what, &vec_of(fused), &want, 2e-5, 1e-5);
            let default = attention_default(q, k, v, bias);
            assert_close(
                &format!("default {what}"),
                &vec_of(default),
                &want,
                2e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn attention_reads_keys_and_values_from_a_cache_with_spare_room() {
    // The keys and values as the first t of 100 positions of a larger tensor (a KV cache
    // with room to grow), sliced along T: the kernel reads the view in place (decoding) or
    // by tiles (prefill) and must give exactly what it gives on contiguous copies.
    let device = dev();
    for (dims, pad) in [
        ([2, 9, 3, 1, 70, 64], vec![0, 5]),
        ([1, 9, 3, 2, 33, 64], vec![0]),
        ([2, 6, 2, 40, 75, 64], vec![3, 0]),
    ] {
        let c = attn_case(90, dims, &pad, NEG_INF);
        let [q, k, v, bias] = attn_tensors(&c, &device);
        let [b, _, g, _, t, d] = dims;
        let with_room = |x: Tensor<4>| {
            Tensor::<4>::zeros([b, g, 100, d], &device)
                .slice_assign([0..b, 0..g, 0..t, 0..d], x)
                .slice([0..b, 0..g, 0..t, 0..d])
        };
        let want = vec_of(attention(q.clone(), k.clone(), v.clone(), bias.clone()).unwrap());
        let got = vec_of(attention(q, with_room(k), with_room(v), bias).unwrap());
        assert_eq!(got, want, "{dims:?}");
        assert_close(&format!("{dims:?}"), &got, &ref_attention(&c), 2e-5, 1e-5);
    }
}

#[test]
fn attention_does_not_depend_on_the_thread_count() {
    let device = dev();
    let c = attn_case(80, [2, 6, 2, 150, 150, 64], &[0, 11], NEG_INF);
    let run = || {
        let [q, k, v, bias] = attn_tensors(&c, &device);
        vec_of(attention(q, k, v, bias).unwrap())
    };
    let (one, three) = (pool(1).install(run), pool(3).install(run));
    assert_eq!(one, three);
}

/// f64 reference of the gradients of `Σ g · attention(q, k, v, bias)`: `(dq, dk, dv)` from
/// the softmax written out (`dS = P ∘ (dP − rowsum(P ∘ dP))`), independent of the kernel.
fn ref_attention_grads(c: &AttnCase, g: &[f32]) -> [Vec<f64>; 3] {
    let [b, h, gr, s, t, d] = c.dims;
    let n_rep = h / gr;
    let scale = 1.0 / (d as f64).sqrt();
    let (mut dq, mut dk, mut dv) = (
        vec![0f64; b * h * s * d],
        vec![0f64; b * gr * t * d],
        vec![0f64; b * gr * t * d],
    );
    for bi in 0..b {
        for hi in 0..h {
            let kv = (bi * gr + hi / n_rep) * t * d;
            for i in 0..s {
                let row = ((bi * h + hi) * s + i) * d;
                let q = &c.q[row..][..d];
                let go = &g[row..][..d];
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        let bias = c.bias[(bi * s + i) * t + j];
                        if bias == NEG_INF || bias == f32::MIN {
                            return f64::NEG_INFINITY;
                        }
                        let dot: f64 = (0..d)
                            .map(|x| q[x] as f64 * c.k[kv + j * d + x] as f64)
                            .sum();
                        dot * scale + bias as f64
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = w.iter().sum();
                let p: Vec<f64> = w.iter().map(|x| x / z).collect();
                let dp: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|x| go[x] as f64 * c.v[kv + j * d + x] as f64)
                            .sum()
                    })
                    .collect();
                let delta: f64 = (0..t).map(|j| p[j] * dp[j]).sum();
                for j in 0..t {
                    let ds = p[j] * (dp[j] - delta);
                    for x in 0..d {
                        dq[row + x] += ds * c.k[kv + j * d + x] as f64 * scale;
                        dk[kv + j * d + x] += ds * q[x] as f64 * scale;
                        dv[kv + j * d + x] += p[j] * go[x] as f64;
                    }
                }
            }
        }
    }
    [dq, dk, dv]
}

/// The gradients of `Σ g · attention(q, k, v, bias)` under autodiff, by the kernel
/// (`fused`) or by Burn's attention, and the output.
fn attention_grads(c: &AttnCase, g: &[f32], fused: bool) -> ([Vec<f32>; 3], Vec<f32>) {
    let ad = dev().autodiff();
    let [b, h, _, s, _, d] = c.dims;
    let [q, k, v, bias] = attn_tensors(c, &ad);
    let (q, k, v) = (q.require_grad(), k.require_grad(), v.require_grad());
    let o = if fused {
        attention(q.clone(), k.clone(), v.clone(), bias).unwrap()
    } else {
        attention_default(q.clone(), k.clone(), v.clone(), bias)
    };
    let out = vec_of(o.clone());
    let grads = (o * tensor(g.to_vec(), [b, h, s, d], &ad)).sum().backward();
    ([q, k, v].map(|x| vec_of(x.grad(&grads).unwrap())), out)
}

#[test]
fn attention_backward_matches_f64_reference_and_burns_gradients() {
    // [b, h, g, s, t, d]: a small case, a prefill over several query blocks and key tiles
    // with padded rows, a prefill after cached positions at a width padded inside the
    // kernel, and plain multi-head attention with a width of 128
    let cases = [
        ([1, 4, 2, 9, 12, 8], vec![2]),
        ([2, 6, 2, 150, 150, 64], vec![0, 37]),
        ([2, 9, 3, 70, 79, 24], vec![5, 0]),
        ([1, 2, 2, 65, 65, 128], vec![0]),
    ];
    for (seed, (dims, pad)) in cases.into_iter().enumerate() {
        for masked in [NEG_INF, f32::MIN] {
            let c = attn_case(81 + seed as u64, dims, &pad, masked);
            let [b, h, _, s, _, d] = dims;
            let mut r = rng(82 + seed as u64);
            let g: Vec<f32> = (0..b * h * s * d).map(|_| normal(&mut r)).collect();
            let before = crate::flex::fused_calls();
            let (fused, out) = attention_grads(&c, &g, true);
            let after = crate::flex::fused_calls();
            let what = format!("{dims:?} masked by {masked}");
            assert_eq!(after[4], before[4] + 1, "forward by the kernel: {what}");
            assert_eq!(after[10], before[10] + 1, "backward by the kernel: {what}");
            let mut c_ref = c;
            for x in &mut c_ref.bias {
                if *x == f32::MIN {
                    *x = NEG_INF;
                }
            }
            assert_close(
                &format!("out {what}"),
                &out,
                &ref_attention(&c_ref),
                2e-5,
                1e-5,
            );
            let want = ref_attention_grads(&c_ref, &g);
            let (burn, _) = attention_grads(&c_ref, &g, false);
            for (name, ((got, want), burn)) in ["dq", "dk", "dv"]
                .iter()
                .zip(fused.iter().zip(&want).zip(&burn))
            {
                assert!(got.iter().any(|&x| x != 0.0), "{name} {what} is all zeros");
                assert_close(&format!("{name} {what}"), got, want, 1e-4, 1e-5);
                assert_close(&format!("Burn's {name} {what}"), burn, want, 1e-4, 1e-5);
            }
        }
    }
}

#[test]
fn attention_backward_does_not_depend_on_the_thread_count() {
    let c = attn_case(85, [2, 6, 2, 150, 150, 64], &[0, 11], NEG_INF);
    let mut r = rng(86);
    let g: Vec<f32> = (0..2 * 6 * 150 * 64).map(|_| normal(&mut r)).collect();
    let run = || attention_grads(&c, &g, true).0;
    assert_eq!(pool(1).install(run), pool(3).install(run));
}

#[test]
fn attention_serves_untracked_inference_on_an_autodiff_device() {
    let ad = dev().autodiff();
    let c = attn_case(81, [1, 4, 2, 9, 12, 8], &[2], NEG_INF);
    let before = crate::flex::fused_calls();
    let [q, k, v, bias] = attn_tensors(&c, &ad);
    let o = attention(q, k, v, bias).unwrap();
    let after = crate::flex::fused_calls();
    assert_eq!(after[4], before[4] + 1);
    assert_eq!(after[10], before[10], "nothing to differentiate");
    assert_close("untracked", &vec_of(o), &ref_attention(&c), 2e-5, 1e-5);
}

#[test]
fn attention_rejects_shapes_that_do_not_fit() {
    let device = dev();
    let z = |shape: [usize; 4]| Tensor::<4>::zeros(shape, &device);
    let err = |q, k, v, b| attention(q, k, v, b).unwrap_err().to_string();
    let e = err(
        z([1, 4, 3, 8]),
        z([1, 3, 5, 8]),
        z([1, 3, 5, 8]),
        z([1, 1, 3, 5]),
    );
    assert!(
        e.contains("4 query heads") && e.contains("3 key/value heads"),
        "{e}"
    );
    let e = err(
        z([1, 4, 3, 8]),
        z([1, 2, 5, 8]),
        z([1, 2, 5, 8]),
        z([1, 1, 3, 4]),
    );
    assert!(e.contains("bias") && e.contains("[1, 1, 3, 4]"), "{e}");
    let e = err(
        z([1, 4, 3, 8]),
        z([1, 2, 5, 16]),
        z([1, 2, 5, 16]),
        z([1, 1, 3, 5]),
    );
    assert!(e.contains("k (against q"), "{e}");
    let e = err(
        z([1, 4, 3, 8]),
        z([1, 2, 5, 8]),
        z([1, 2, 6, 8]),
        z([1, 1, 3, 5]),
    );
    assert!(e.contains("v (against k)"), "{e}");
}

/// `silu(g) · u` and its gradients (with upstream `dy`) in float64.
fn ref_swiglu(g: &[f32], u: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut out = Vec::new();
    let (mut dg, mut du) = (Vec::new(), Vec::new());
    for i in 0..g.len() {
        let (g, u, dy) = (g[i] as f64, u[i] as f64, dy[i] as f64);
        let s = 1.0 / (1.0 + (-g).exp());
        out.push(g * s * u);
        du.push(dy * g * s);
        dg.push(dy * u * (s + g * s * (1.0 - s)));
    }
    (out, dg, du)
}

/// RMSNorm over rows of `w.len()` and its gradients (upstream `dy`) in float64, from the
/// definition: the gradient of each row by the chain rule through `r = (mean(x²)+eps)^-½`.
fn ref_rms_norm(x: &[f32], w: &[f32], dy: &[f32], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let d = w.len();
    let (mut y, mut dx, mut dw) = (vec![], vec![], vec![0f64; d]);
    for (xr, gr) in x.chunks(d).zip(dy.chunks(d)) {
        let ms: f64 = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps).sqrt();
        // ∂r/∂x_k = −r³ x_k / d
        let s: f64 = (0..d)
            .map(|k| gr[k] as f64 * w[k] as f64 * xr[k] as f64)
            .sum();
        for j in 0..d {
            let (xj, wj, gj) = (xr[j] as f64, w[j] as f64, gr[j] as f64);
            y.push(xj * r * wj);
            dx.push(gj * wj * r - xj * r.powi(3) * s / d as f64);
            dw[j] += gj * xj * r;
        }
    }
    (y, dx, dw)
}

fn randn(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n).map(|_| scale * normal(&mut r)).collect()
}

#[test]
fn swiglu_matches_float64_forward_and_backward() {
    let ad = dev().autodiff();
    // serial (a decoding step's row), and split across tasks with a ragged last one
    for (seed, shape) in [[1usize, 1, 24], [2, 3, 1536], [3, 70, 333]]
        .into_iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let mut g = randn(90 + seed as u64, n, 3.0);
        // saturated gates both ways
        g[0] = 95.0;
        g[n - 1] = -95.0;
        let u = randn(100 + seed as u64, n, 1.0);
        let dy = randn(110 + seed as u64, n, 1.0);
        let (want, want_dg, want_du) = ref_swiglu(&g, &u, &dy);
        let calls = crate::flex::fused_calls();
        let gt = tensor(g.clone(), shape, &ad).require_grad();
        let ut = tensor(u.clone(), shape, &ad).require_grad();
        let out = swiglu(gt.clone(), ut.clone()).unwrap();
        assert_close("swiglu", &vec_of(out.clone()), &want, 1e-6, 1e-5);
        let grads = (out * tensor(dy.clone(), shape, &ad)).sum().backward();
        let after = crate::flex::fused_calls();
        assert_eq!(
            [after[5] - calls[5], after[6] - calls[6]],
            [1, 1],
            "{shape:?}: the fused forward and backward"
        );
        let what = format!("swiglu {shape:?}");
        assert_close(
            &format!("∂gate {what}"),
            &vec_of(gt.grad(&grads).unwrap()),
            &want_dg,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("∂up {what}"),
            &vec_of(ut.grad(&grads).unwrap()),
            &want_du,
            1e-6,
            1e-5,
        );
        // the default body agrees with the same reference
        let default = swiglu_default(tensor(g.clone(), shape, &ad), tensor(u.clone(), shape, &ad));
        assert_close(
            &format!("default {what}"),
            &vec_of(default),
            &want,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn rms_norm_matches_float64_forward_and_backward() {
    let ad = dev().autodiff();
    // one row (decoding), rows split across tasks with a ragged last one, a width that is
    // not a multiple of 16
    for (seed, (shape, eps)) in [
        ([1usize, 1, 576], 1e-5),
        ([2, 70, 576], 1e-5),
        ([3, 50, 37], 1e-6),
    ]
    .into_iter()
    .enumerate()
    {
        let [b, s, d] = shape;
        let n = b * s * d;
        let mut x = randn(120 + seed as u64, n, 2.0);
        x[..d].iter_mut().for_each(|v| *v *= 1e-3); // a row of small values: eps matters
        let w = randn(130 + seed as u64, d, 1.0);
        let dy = randn(140 + seed as u64, n, 1.0);
        let (want, want_dx, want_dw) = ref_rms_norm(&x, &w, &dy, eps);
        let calls = crate::flex::fused_calls();
        let xt = tensor(x.clone(), shape, &ad).require_grad();
        let wt = tensor(w.clone(), [d], &ad).require_grad();
        let y = rms_norm(xt.clone(), wt.clone(), eps).unwrap();
        let what = format!("rms_norm {shape:?}");
        assert_close(&what, &vec_of(y.clone()), &want, 1e-5, 1e-5);
        let grads = (y * tensor(dy.clone(), shape, &ad)).sum().backward();
        let after = crate::flex::fused_calls();
        assert_eq!(
            [after[7] - calls[7], after[8] - calls[8]],
            [1, 1],
            "{shape:?}: the fused forward and backward"
        );
        let scale_dx = want_dx.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert_close(
            &format!("∂x {what}"),
            &vec_of(xt.grad(&grads).unwrap()),
            &want_dx,
            1e-5 * scale_dx,
            1e-4,
        );
        assert_close(
            &format!("∂w {what}"),
            &vec_of(wt.grad(&grads).unwrap()),
            &want_dw,
            1e-4,
            1e-4,
        );
        let default = rms_norm_default(
            tensor(x.clone(), shape, &ad),
            tensor(w.clone(), [d], &ad),
            eps,
        );
        assert_close(
            &format!("default {what}"),
            &vec_of(default),
            &want,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn swiglu_and_rms_norm_gradients_equal_the_default_bodies_and_skip_untracked_inputs() {
    let ad = dev().autodiff();
    let shape = [2, 5, 40];
    let (x, w) = (randn(150, 400, 1.0), randn(151, 40, 1.0));
    let dy = randn(152, 400, 1.0);
    let grads_of = |fused: bool| {
        let xt = tensor(x.clone(), shape, &ad).require_grad();
        let wt = tensor(w.clone(), [40], &ad).require_grad();
        let ut = tensor(x.iter().map(|v| v * 0.5).collect(), shape, &ad);
        // a norm, then the gating with a frozen `up` (no gradient asked for it)
        let y = if fused {
            swiglu(rms_norm(xt.clone(), wt.clone(), 1e-5).unwrap(), ut).unwrap()
        } else {
            swiglu_default(rms_norm_default(xt.clone(), wt.clone(), 1e-5), ut)
        };
        let grads = (y * tensor(dy.clone(), shape, &ad)).sum().backward();
        [
            vec_of(xt.grad(&grads).unwrap()),
            vec_of(wt.grad(&grads).unwrap()),
        ]
    };
    let (fused, default) = (grads_of(true), grads_of(false));
    for (what, f, d) in [
        ("∂x", &fused[0], &default[0]),
        ("∂w", &fused[1], &default[1]),
    ] {
        assert_close(what, f, &as_f64(d), 1e-5, 1e-4);
        assert!(f.iter().any(|&v| v != 0.0), "{what} is zero");
    }
    // inference: nothing tracked, no backward state; other dtypes take the default bodies
    let before = crate::flex::fused_calls();
    let y = swiglu(
        tensor(x.clone(), shape, &dev()),
        tensor(x.clone(), shape, &dev()),
    )
    .unwrap();
    assert_eq!(crate::flex::fused_calls()[5], before[5] + 1);
    let xb = Tensor::<3>::from_data(TensorData::new(x.clone(), shape), (&dev(), DType::BF16));
    let _ = swiglu(xb.clone(), xb.clone()).unwrap();
    let wb = Tensor::<1>::from_data(TensorData::new(w.clone(), [40]), (&dev(), DType::BF16));
    let _ = rms_norm(xb, wb, 1e-5).unwrap();
    let after = crate::flex::fused_calls();
    assert_eq!(
        [after[5], after[7]],
        [before[5] + 1, before[7]],
        "bf16: default bodies"
    );
    assert_eq!(vec_of(y).len(), 400);
}

#[test]
fn swiglu_and_rms_norm_do_not_depend_on_the_thread_count() {
    let ad = dev().autodiff();
    let shape = [4, 64, 576]; // 147 456 elements: many tasks
    let n = 4 * 64 * 576;
    let (x, w, dy) = (randn(160, n, 1.0), randn(161, 576, 1.0), randn(162, n, 1.0));
    let run = || {
        let xt = tensor(x.clone(), shape, &ad).require_grad();
        let wt = tensor(w.clone(), [576], &ad).require_grad();
        let y = swiglu(rms_norm(xt.clone(), wt.clone(), 1e-5).unwrap(), xt.clone()).unwrap();
        let grads = (y.clone() * tensor(dy.clone(), shape, &ad))
            .sum()
            .backward();
        [
            vec_of(y),
            vec_of(xt.grad(&grads).unwrap()),
            vec_of(wt.grad(&grads).unwrap()),
        ]
    };
    assert_eq!(pool(1).install(run), pool(3).install(run));
    assert!(crate::flex::elementwise_isas_agree(
        &x[..5000],
        &w[..50],
        1e-5
    ));
}

#[test]
fn swiglu_and_rms_norm_reject_shapes_that_do_not_fit() {
    let device = dev();
    let e = swiglu(
        Tensor::<2>::zeros([2, 3], &device),
        Tensor::<2>::zeros([3, 2], &device),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("up (against gate)") && e.contains("[3, 2]"),
        "{e}"
    );
    let x = Tensor::<3>::zeros([1, 2, 8], &device);
    let e = rms_norm(x.clone(), Tensor::<1>::ones([7], &device), 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weight (against the last dimension of x)"),
        "{e}"
    );
    let e = rms_norm(x, Tensor::<1>::ones([8], &device), -1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("eps is -1"), "{e}");
}

#[test]
fn add_rms_norm_equals_the_add_and_rms_norm_bit_for_bit_and_a_float64_reference() {
    let plain = dev();
    let ad = dev().autodiff();
    // one row (decoding), rows split across tasks with a ragged last one, a width that is
    // not a multiple of 16
    for (seed, shape) in [[1usize, 1, 576], [2, 70, 576], [3, 50, 37]]
        .into_iter()
        .enumerate()
    {
        let [b, s, d] = shape;
        let n = b * s * d;
        let x = randn(180 + seed as u64, n, 2.0);
        let delta = randn(190 + seed as u64, n, 1.0);
        let w = randn(200 + seed as u64, d, 1.0);
        let sum: Vec<f32> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
        let (want_y, _, _) = ref_rms_norm(&sum, &w, &vec![0.0; n], 1e-5);
        for device in [&plain, &ad] {
            let run = || {
                let before = crate::flex::fused_calls()[14];
                let (h, y) = add_rms_norm(
                    tensor(x.clone(), shape, device),
                    tensor(delta.clone(), shape, device),
                    tensor(w.clone(), [d], device),
                    1e-5,
                )
                .unwrap();
                assert_eq!(crate::flex::fused_calls()[14], before + 1, "{shape:?}");
                assert_eq!((h.dims(), y.dims()), (shape, shape));
                (vec_of(h), vec_of(y))
            };
            let (h, y) = run();
            assert_eq!((h.clone(), y.clone()), pool(1).install(run), "1 thread");
            assert_eq!((h.clone(), y.clone()), pool(3).install(run), "3 threads");
            // the add and the norm as separate ops, bit for bit
            let plain_h = tensor(x.clone(), shape, device) + tensor(delta.clone(), shape, device);
            let plain_y = rms_norm(plain_h.clone(), tensor(w.clone(), [d], device), 1e-5).unwrap();
            assert_eq!(h, vec_of(plain_h), "h {shape:?}");
            assert_eq!(y, vec_of(plain_y), "y {shape:?}");
            assert_close(&format!("y {shape:?}"), &y, &want_y, 1e-5, 1e-5);
            // the default body (Burn ops, another summation order for mean(x²))
            let (default_h, default_y) = add_rms_norm_default(
                tensor(x.clone(), shape, device),
                tensor(delta.clone(), shape, device),
                tensor(w.clone(), [d], device),
                1e-5,
            );
            assert_eq!(vec_of(default_h), h, "default h {shape:?}");
            assert_close(
                &format!("default y {shape:?}"),
                &vec_of(default_y),
                &want_y,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn add_rms_norm_gradients_under_autodiff_match_float64_references() {
    let ad = dev().autodiff();
    let shape = [2usize, 9, 40];
    let (n, d) = (2 * 9 * 40, 40);
    let (x, delta, w) = (randn(210, n, 1.5), randn(211, n, 1.0), randn(212, d, 1.0));
    let (gh, gy) = (randn(213, n, 1.0), randn(214, n, 1.0));
    let sum: Vec<f32> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
    let (_, dx_norm, want_dw) = ref_rms_norm(&sum, &w, &gy, 1e-5);
    // h feeds the next residual and y the next sub-layer: ∂x = ∂delta = g_h + ∂h of the norm
    let want_dx: Vec<f64> = gh
        .iter()
        .zip(&dx_norm)
        .map(|(&a, b)| a as f64 + b)
        .collect();
    // through the public function (tracked: the add and rms_norm) and through the
    // extension op itself (its autodiff implementation packs them)
    for packed in [false, true] {
        let xt = tensor(x.clone(), shape, &ad).require_grad();
        let dt = tensor(delta.clone(), shape, &ad).require_grad();
        let wt = tensor(w.clone(), [d], &ad).require_grad();
        let before = crate::flex::fused_calls();
        let (h, y) = if packed {
            let p =
                crate::extension::dispatch_add_rms_norm(xt.clone(), dt.clone(), wt.clone(), 1e-5);
            assert_eq!(p.dims(), [4, 9, 40]);
            (p.clone().slice_dim(0, 0..2), p.slice_dim(0, 2..4))
        } else {
            add_rms_norm(xt.clone(), dt.clone(), wt.clone(), 1e-5).unwrap()
        };
        let after = crate::flex::fused_calls();
        // tracked inputs never reach the one-pass kernel; the norm is the fused rms_norm
        assert_eq!(
            (after[14], after[7]),
            (before[14], before[7] + 1),
            "packed {packed}"
        );
        let loss = (h * tensor(gh.clone(), shape, &ad) + y * tensor(gy.clone(), shape, &ad)).sum();
        let grads = loss.backward();
        let what = format!("packed {packed}");
        let scale = want_dx.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (name, t) in [("∂x", &xt), ("∂delta", &dt)] {
            let got = vec_of(t.grad(&grads).unwrap());
            assert_close(
                &format!("{name} {what}"),
                &got,
                &want_dx,
                1e-5 * scale,
                1e-4,
            );
        }
        let got_dw = vec_of(wt.grad(&grads).unwrap());
        assert_close(&format!("∂w {what}"), &got_dw, &want_dw, 1e-4, 1e-4);
    }
}

#[test]
fn add_rms_norm_rejects_shapes_that_do_not_fit() {
    let device = dev();
    let x = Tensor::<3>::zeros([1, 2, 8], &device);
    let e = add_rms_norm(
        x.clone(),
        Tensor::<3>::zeros([1, 3, 8], &device),
        Tensor::<1>::ones([8], &device),
        1e-5,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("delta (against x)") && e.contains("[1, 3, 8]"),
        "{e}"
    );
    let e = add_rms_norm(x.clone(), x.clone(), Tensor::<1>::ones([7], &device), 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weight (against the last dimension of x)"),
        "{e}"
    );
    let e = add_rms_norm(x.clone(), x, Tensor::<1>::ones([8], &device), f64::NAN)
        .unwrap_err()
        .to_string();
    assert!(e.contains("eps is NaN"), "{e}");
}

#[test]
fn adamw_step_kernel_equals_the_default_body_bit_for_bit() {
    let device = dev();
    // serial, and split across tasks with a ragged last one
    for (seed, n) in [(170u64, 40usize), (171, 100_003)] {
        for weight_decay in [0.0f32, 0.1] {
            let p0 = randn(seed, n, 0.05);
            let (mut fused, mut plain): (Option<AdamWOutput<2>>, Option<AdamWOutput<2>>) =
                (None, None);
            for time in 1..=3 {
                let g = tensor(randn(seed + 10 * time as u64, n, 1e-3), [1, n], &device);
                let h = AdamWStep {
                    lr: 1e-3 / time as f64,
                    beta1: 0.9,
                    beta2: 0.999,
                    epsilon: 1e-8,
                    weight_decay,
                    time,
                };
                let before = crate::flex::fused_calls()[9];
                let start = |o: &Option<AdamWOutput<2>>| {
                    o.as_ref()
                        .map_or(tensor(p0.clone(), [1, n], &device), |o| o.param.clone())
                };
                let moments = |o: &Option<AdamWOutput<2>>| {
                    o.as_ref().map(|o| (o.moment_1.clone(), o.moment_2.clone()))
                };
                let f = adamw_step(start(&fused), g.clone(), moments(&fused), &h).unwrap();
                assert_eq!(crate::flex::fused_calls()[9], before + 1);
                let d = adamw_step_default(start(&plain), g, moments(&plain), &h);
                for (what, a, b) in [
                    ("param", &f.param, &d.param),
                    ("m", &f.moment_1, &d.moment_1),
                    ("v", &f.moment_2, &d.moment_2),
                ] {
                    let (a, b) = (vec_of(a.clone()), vec_of(b.clone()));
                    assert!(
                        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{what} differs at step {time} (n {n}, decay {weight_decay})"
                    );
                }
                (fused, plain) = (Some(f), Some(d));
            }
            // the parameter moved, by about lr per element at the first step (Adam's scale)
            let moved = vec_of(fused.unwrap().param);
            assert!(moved.iter().zip(&p0).all(|(a, b)| a != b));
        }
    }
    let z = |n| Tensor::<1>::zeros([n], &device);
    let h = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.0,
        time: 1,
    };
    let e = adamw_step(z(3), z(4), None, &h).unwrap_err().to_string();
    assert!(e.contains("grad (against param)"), "{e}");
    let e = adamw_step(z(3), z(3), Some((z(3), z(2))), &h)
        .unwrap_err()
        .to_string();
    assert!(e.contains("moment_2"), "{e}");
    let e = adamw_step(z(3), z(3), None, &AdamWStep { time: 0, ..h })
        .unwrap_err()
        .to_string();
    assert!(e.contains("time counts from 1"), "{e}");
}

// ---------------------------------------------------------------- rope -------------------

/// RoPE tables `[b, 1, s, d]` at per-sequence positions `start[bi] + i`, in the model's
/// layout (the half-row of angles twice), and an f64 reference of the rotation.
fn rope_tables(b: usize, s: usize, d: usize, start: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for &p0 in start.iter().take(b) {
        for i in 0..s {
            for j in 0..d {
                let inv = 10000f64.powf(-((2 * (j % half)) as f64) / d as f64);
                let a = (p0 + i) as f64 * inv;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
    }
    (cos, sin)
}

/// `x [b, h, s, d]` rotated pairwise in f64: dimension `j < d/2` pairs with `j + d/2`.
fn ref_rope(x: &[f32], cos: &[f32], sin: &[f32], [b, h, s, d]: [usize; 4]) -> Vec<f64> {
    let half = d / 2;
    let mut out = vec![0f64; x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..s {
                let r = ((bi * h + hi) * s + i) * d;
                let t = (bi * s + i) * d;
                for j in 0..half {
                    let (x1, x2) = (x[r + j] as f64, x[r + j + half] as f64);
                    out[r + j] = x1 * cos[t + j] as f64 - x2 * sin[t + j] as f64;
                    out[r + j + half] =
                        x2 * cos[t + j + half] as f64 + x1 * sin[t + j + half] as f64;
                }
            }
        }
    }
    out
}

/// `x [b, h, s, d]` laid out as `[b, s, h, d]`: the projection the model reads RoPE's
/// input from (as a transposed view).
fn to_bshd(x: &[f32], [b, h, s, d]: [usize; 4]) -> Vec<f32> {
    let mut bshd = vec![0f32; x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..s {
                let src = ((bi * h + hi) * s + i) * d;
                let dst = ((bi * s + i) * h + hi) * d;
                bshd[dst..dst + d].copy_from_slice(&x[src..src + d]);
            }
        }
    }
    bshd
}

#[test]
fn rope_matches_the_plain_ops_bit_for_bit_on_a_transposed_view_and_a_reference() {
    let device = dev();
    // a decoding step's few rows and a prefill's many (split across tasks)
    for (seed, [b, h, s, d]) in [[2usize, 3, 1, 8], [2, 9, 40, 64], [1, 4, 7, 128]]
        .into_iter()
        .enumerate()
    {
        let mut r = rng(300 + seed as u64);
        let x: Vec<f32> = (0..b * h * s * d).map(|_| normal(&mut r)).collect();
        let (cos, sin) = rope_tables(b, s, d, &[3, 17]);
        let tables = || {
            (
                tensor(cos.clone(), [b, 1, s, d], &device),
                tensor(sin.clone(), [b, 1, s, d], &device),
            )
        };
        // as the model has it: the projection [b, s, h, d] read as [b, h, s, d]
        let bshd = to_bshd(&x, [b, h, s, d]);
        let view = tensor(bshd, [b, s, h, d], &device).swap_dims(1, 2);
        let plain = tensor(x.clone(), [b, h, s, d], &device);
        let before = crate::flex::fused_calls()[11];
        let (c, sn) = tables();
        let fused_view = vec_of(rope(view, c, sn).unwrap());
        let (c, sn) = tables();
        let fused = vec_of(rope(plain.clone(), c, sn).unwrap());
        assert_eq!(crate::flex::fused_calls()[11], before + 2);
        let (c, sn) = tables();
        let default = vec_of(rope_default(plain, c, sn));
        assert_eq!(fused, default, "[{b}, {h}, {s}, {d}]");
        assert_eq!(fused_view, default, "view [{b}, {h}, {s}, {d}]");
        let want = ref_rope(&x, &cos, &sin, [b, h, s, d]);
        assert_close(
            &format!("rope [{b}, {h}, {s}, {d}]"),
            &fused,
            &want,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn rope_backward_gives_the_plain_ops_gradient() {
    let ad = dev().autodiff();
    let [b, h, s, d] = [2usize, 3, 5, 16];
    let mut r = rng(310);
    let x: Vec<f32> = (0..b * h * s * d).map(|_| normal(&mut r)).collect();
    let g: Vec<f32> = (0..b * h * s * d).map(|_| normal(&mut r)).collect();
    let (cos, sin) = rope_tables(b, s, d, &[0, 9]);
    let grad_of = |fused: bool| {
        let x = tensor(x.clone(), [b, h, s, d], &ad).require_grad();
        let (c, sn) = (
            tensor(cos.clone(), [b, 1, s, d], &ad),
            tensor(sin.clone(), [b, 1, s, d], &ad),
        );
        let y = if fused {
            rope(x.clone(), c, sn).unwrap()
        } else {
            rope_default(x.clone(), c, sn)
        };
        let grads = (y * tensor(g.clone(), [b, h, s, d], &ad)).sum().backward();
        vec_of(x.grad(&grads).unwrap())
    };
    let before = crate::flex::fused_calls();
    let fused = grad_of(true);
    let after = crate::flex::fused_calls();
    assert_eq!((after[11], after[12]), (before[11] + 1, before[12] + 1));
    assert_eq!(fused, grad_of(false));
    // the rotation is orthogonal: the gradient is g rotated back, |∂x| = |g| per pair
    let rotated_back = ref_rope(
        &g,
        &cos,
        &sin.iter().map(|v| -v).collect::<Vec<_>>(),
        [b, h, s, d],
    );
    assert_close("rope backward", &fused, &rotated_back, 1e-6, 1e-6);
}

#[test]
fn rope_rejects_an_odd_width_and_tables_of_another_shape() {
    let device = dev();
    let x = Tensor::<4>::zeros([1, 2, 3, 5], &device);
    let t = || Tensor::<4>::zeros([1, 1, 3, 5], &device);
    let err = rope(x, t(), t()).unwrap_err().to_string();
    assert!(err.contains("head width 5 is odd"), "{err}");
    let x = Tensor::<4>::zeros([1, 2, 3, 4], &device);
    let err = rope(
        x,
        Tensor::<4>::zeros([1, 1, 4, 4], &device),
        Tensor::<4>::zeros([1, 1, 3, 4], &device),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cos"), "{err}");
}

#[test]
fn rope_into_cache_writes_the_rotated_rows_and_leaves_the_other_positions() {
    let plain = dev();
    let ad = dev().autodiff();
    // a decoding step (one position) and a prefill split across tasks, keys arriving as the
    // projection's transposed view
    for (seed, ([b, g, s, d], capacity, start)) in [
        ([2usize, 3, 1, 8], 10usize, 5usize),
        ([1, 3, 300, 64], 320, 7),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = rng(320 + seed as u64);
        let x: Vec<f32> = (0..b * g * s * d).map(|_| normal(&mut r)).collect();
        let old: Vec<f32> = (0..b * g * capacity * d).map(|_| normal(&mut r)).collect();
        let (cos, sin) = rope_tables(b, s, d, &[start, start]);
        for device in [&plain, &ad] {
            let tables = || {
                (
                    tensor(cos.clone(), [b, 1, s, d], device),
                    tensor(sin.clone(), [b, 1, s, d], device),
                )
            };
            let bshd = to_bshd(&x, [b, g, s, d]);
            let view = tensor(bshd, [b, s, g, d], device).swap_dims(1, 2);
            let cache = tensor(old.clone(), [b, g, capacity, d], device);
            let before = crate::flex::fused_calls()[15];
            let (c, sn) = tables();
            let fused = vec_of(rope_into_cache(cache, start, view, c, sn).unwrap());
            assert_eq!(crate::flex::fused_calls()[15], before + 1);
            let (c, sn) = tables();
            let default = vec_of(rope_into_cache_default(
                tensor(old.clone(), [b, g, capacity, d], device),
                start,
                tensor(x.clone(), [b, g, s, d], device),
                c,
                sn,
            ));
            assert_eq!(
                fused, default,
                "[{b}, {g}, {s}, {d}] into {capacity} at {start}"
            );
            let want = ref_rope(&x, &cos, &sin, [b, g, s, d]);
            for bh in 0..b * g {
                let plane = &fused[bh * capacity * d..(bh + 1) * capacity * d];
                let kept = &old[bh * capacity * d..(bh + 1) * capacity * d];
                let new = start * d..(start + s) * d;
                assert_eq!(
                    plane[..new.start],
                    kept[..new.start],
                    "before the new positions"
                );
                assert_eq!(plane[new.end..], kept[new.end..], "after the new positions");
                assert_close(
                    "rotated rows",
                    &plane[new],
                    &want[bh * s * d..(bh + 1) * s * d],
                    1e-6,
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn rope_into_cache_is_differentiable_in_the_new_rows_and_the_cache() {
    let ad = dev().autodiff();
    let ([b, g, s, d], capacity, start) = ([2usize, 2, 3, 8], 6usize, 2usize);
    let mut r = rng(330);
    let x: Vec<f32> = (0..b * g * s * d).map(|_| normal(&mut r)).collect();
    let old: Vec<f32> = (0..b * g * capacity * d).map(|_| normal(&mut r)).collect();
    let up: Vec<f32> = (0..b * g * capacity * d).map(|_| normal(&mut r)).collect();
    let (cos, sin) = rope_tables(b, s, d, &[start, start]);
    let grads_of = |route: usize| {
        let xt = tensor(x.clone(), [b, g, s, d], &ad).require_grad();
        let ct = tensor(old.clone(), [b, g, capacity, d], &ad).require_grad();
        let (c, sn) = (
            tensor(cos.clone(), [b, 1, s, d], &ad),
            tensor(sin.clone(), [b, 1, s, d], &ad),
        );
        let before = crate::flex::fused_calls()[15];
        let out = match route {
            0 => rope_into_cache(ct.clone(), start, xt.clone(), c, sn).unwrap(),
            1 => crate::extension::dispatch_rope_into(ct.clone(), xt.clone(), c, sn, start),
            _ => rope_into_cache_default(ct.clone(), start, xt.clone(), c, sn),
        };
        // tracked rows never reach the in-place kernel
        assert_eq!(crate::flex::fused_calls()[15], before, "route {route}");
        let grads = (out * tensor(up.clone(), [b, g, capacity, d], &ad))
            .sum()
            .backward();
        (
            vec_of(xt.grad(&grads).unwrap()),
            vec_of(ct.grad(&grads).unwrap()),
        )
    };
    let (dx, dcache) = grads_of(0);
    assert_eq!((dx.clone(), dcache.clone()), grads_of(1));
    let (dx_default, dcache_default) = grads_of(2);
    assert_close(
        "∂x against the plain ops",
        &dx,
        &as_f64(&dx_default),
        1e-6,
        1e-6,
    );
    assert_eq!(dcache, dcache_default);
    // the cache's gradient is the upstream one with the overwritten positions zeroed
    for (i, (&got, &u)) in dcache.iter().zip(&up).enumerate() {
        let pos = (i / d) % capacity;
        let want = if (start..start + s).contains(&pos) {
            0.0
        } else {
            u
        };
        assert_eq!(got, want, "∂cache[{i}]");
    }
}

#[test]
fn rope_into_cache_rejects_positions_past_the_capacity_and_other_heads() {
    let device = dev();
    let t = || Tensor::<4>::zeros([1, 1, 2, 4], &device);
    let err = rope_into_cache(
        Tensor::<4>::zeros([1, 2, 5, 4], &device),
        4,
        Tensor::<4>::zeros([1, 2, 2, 4], &device),
        t(),
        t(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("positions 4..6 run past the cache's capacity 5"),
        "{err}"
    );
    let err = rope_into_cache(
        Tensor::<4>::zeros([1, 3, 5, 4], &device),
        0,
        Tensor::<4>::zeros([1, 2, 2, 4], &device),
        t(),
        t(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cache [B, G, C, D]"), "{err}");
}
