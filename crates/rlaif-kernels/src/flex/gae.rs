//! Generalised advantage estimation on `[B, T]` float32 rows: the backward recursion of
//! [`crate::gae()`], one row at a time (rayon over rows when the batch is large).

use rayon::prelude::*;

/// Slice-level GAE on `[B·T]` rows (see [`crate::gae()`]): returns `[2·B·T]`, the advantages
/// then the returns.
pub(crate) fn gae_slice(
    r: &[f32],
    v: &[f32],
    m: &[f32],
    t: usize,
    gamma: f32,
    lambda: f32,
) -> Vec<f32> {
    let n = r.len();
    let mut out = vec![0f32; 2 * n];
    let (adv, ret) = out.split_at_mut(n);
    let row = |a: &mut [f32], ret: &mut [f32], r: &[f32], v: &[f32], m: &[f32]| {
        let mut next_adv = 0f32;
        let mut next_value = 0f32;
        for i in (0..t).rev() {
            if m[i] == 0.0 {
                // padding: a terminal boundary; NaN/inf in the slot never leaks
                a[i] = 0.0;
                ret[i] = 0.0;
                next_adv = 0.0;
                next_value = 0.0;
            } else {
                let delta = r[i] + gamma * next_value - v[i];
                next_adv = delta + gamma * lambda * next_adv;
                next_value = v[i];
                a[i] = next_adv;
                ret[i] = next_adv + v[i];
            }
        }
    };
    if n < 1 << 16 {
        // a few hundred microseconds of work at most: threads would cost more than they save
        let rows = adv.chunks_mut(t).zip(ret.chunks_mut(t));
        for (((a, rt), r), (v, m)) in rows.zip(r.chunks(t)).zip(v.chunks(t).zip(m.chunks(t))) {
            row(a, rt, r, v, m);
        }
    } else {
        let rows = adv.par_chunks_mut(t).zip(ret.par_chunks_mut(t));
        rows.zip(r.par_chunks(t))
            .zip(v.par_chunks(t).zip(m.par_chunks(t)))
            .with_min_len(16)
            .for_each(|(((a, rt), r), (v, m))| row(a, rt, r, v, m));
    }
    out
}
