//! The fused float32 kernels of the flex CPU backend: the [`RlKernels`] implementation for
//! [`Flex`], which moves tensors to and from host slices and runs
//!
//! - [`token_stats`]: the token log-prob / entropy statistics, forward and backward;
//! - [`gae`]: generalised advantage estimation per row;
//! - [`small_m`]: `x · W` for at most eight rows of `x`, the columns split across threads;
//! - [`attention`]: grouped-query attention with a bias, skipping the key tiles it masks, and
//!   [`attention_backward`], its backward;
//! - [`rope`]: rotary position embedding, forward and backward, reading strided rows;
//! - [`elementwise`]: SwiGLU's gating and RMSNorm, forward and backward, and the AdamW step,
//!   one pass each;
//!
//! built on the vectorised arithmetic of [`crate::simd`] and the huge-page output buffers of
//! [`huge_page_buffer`].

mod attention;
mod attention_backward;
mod elementwise;
mod gae;
mod huge_page_buffer;
mod rope;
mod small_m;
mod token_stats;

use crate::adamw::AdamWScalars;
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
    let t = contiguous(t);
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
    Swiglu = 5,
    SwigluBackward = 6,
    RmsNorm = 7,
    RmsNormBackward = 8,
    AdamW = 9,
    AttentionBackward = 10,
    Rope = 11,
    RopeBackward = 12,
    ProjectBf16 = 13,
    AddRmsNorm = 14,
    RopeInto = 15,
}

#[cfg(test)]
thread_local! {
    /// Calls of each fused kernel made on this thread (tests only).
    static CALLS: std::cell::Cell<[usize; 16]> = const { std::cell::Cell::new([0; 16]) };
}

/// Whether the elementwise kernels agree on the baseline and the best instruction set.
#[cfg(test)]
pub(crate) fn elementwise_isas_agree(x: &[f32], w: &[f32], eps: f32) -> bool {
    elementwise::agree_across_instruction_sets(x, w, eps)
}

/// `len` deterministic values spread over `[-1, 1)` (tests only): inputs for the kernels'
/// own tests, different for each `seed`.
#[cfg(test)]
pub(crate) fn spread_values(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13);
            (h % 20_001) as f32 / 10_000.0 - 1.0
        })
        .collect()
}

/// Whether [`RlKernels::project`] has its small-row kernel on this CPU (AVX-512).
#[cfg(test)]
pub(crate) fn small_m_available() -> bool {
    small_m::available()
}

/// Calls of the fused kernels made **on the calling thread** so far (tests only), as
/// `[token_stats, token_stats_backward, gae, linear on the small-row kernel, attention (with
/// or without the log-sum-exps), swiglu, swiglu_backward, rms_norm, rms_norm_backward, adamw,
/// attention_backward, rope, rope_backward, project_bf16, add_rms_norm, rope_into]`.
///
/// Per thread, so that a test proves that *its own* call took the fused path: parallel tests
/// run on other threads and cannot move this thread's counts. The kernels are entered on the
/// thread that called the public op: Burn's dispatch, the flex backend and autodiff's
/// backward pass (a mutex-guarded graph, no worker thread) all run synchronously on the
/// caller; only the rows inside a kernel are spread over rayon workers, after the count.
#[cfg(test)]
pub(crate) fn fused_calls() -> [usize; 16] {
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

    fn project_bf16(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        count(Kernel::ProjectBf16);
        let (x, w) = (strided_2d(x), strided_2d(w));
        let (m, n) = (x.layout().shape()[0], w.layout().shape()[1]);
        let y = crate::amx::matmul_bf16(mat_ref(&x), mat_ref(&w));
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
        let dims = attention_dims(&q, &k);
        let (q, bias) = (contiguous(q), contiguous(bias));
        // keys and values where they lie when each head's rows are contiguous (a KV cache
        // with spare room is such a view), otherwise copied
        let (k, k_layout) = heads_in_place(k, dims);
        let (v, v_layout) = heads_in_place(v, dims);
        let out = attention::attention(
            q.as_slice::<f32>().expect("contiguous f32 q"),
            (k.storage::<f32>(), k_layout),
            (v.storage::<f32>(), v_layout),
            bias.as_slice::<f32>().expect("contiguous f32 bias"),
            dims,
        );
        let attention::Dims { b, h, s, d, .. } = dims;
        FlexTensor::from_data(TensorData::new(out, [b, h, s, d]))
    }

    fn grouped_attention_with_lse(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: FlexTensor,
    ) -> FlexTensor {
        count(Kernel::Attention);
        let dims = attention_dims(&q, &k);
        let (q, bias) = (contiguous(q), contiguous(bias));
        let (k, k_layout) = heads_in_place(k, dims);
        let (v, v_layout) = heads_in_place(v, dims);
        let packed = attention::attention_with_lse(
            f32_slice(&q),
            (k.storage::<f32>(), k_layout),
            (v.storage::<f32>(), v_layout),
            f32_slice(&bias),
            dims,
        );
        let len = packed.len();
        FlexTensor::from_data(TensorData::new(packed, [len]))
    }

    fn grouped_attention_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: FlexTensor,
        out: FlexTensor,
        lse: FlexTensor,
        grad: FlexTensor,
    ) -> FlexTensor {
        count(Kernel::AttentionBackward);
        let dims = attention_dims(&q, &k);
        let [q, k, v, bias, out, lse, grad] = [q, k, v, bias, out, lse, grad].map(contiguous);
        let packed = attention_backward::attention_backward(
            f32_slice(&q),
            f32_slice(&k),
            f32_slice(&v),
            f32_slice(&bias),
            f32_slice(&out),
            f32_slice(&lse),
            f32_slice(&grad),
            dims,
        );
        let len = packed.len();
        FlexTensor::from_data(TensorData::new(packed, [len]))
    }

    fn rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        count(Kernel::Rope);
        rope_flex(x, cos, sin, false)
    }

    fn rope_backward(grad: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        count(Kernel::RopeBackward);
        rope_flex(grad, cos, sin, true)
    }

    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        count(Kernel::Swiglu);
        let (gate, up) = (contiguous(gate), contiguous(up));
        let n = gate.layout().shape()[0];
        let out = elementwise::swiglu(f32_slice(&gate), f32_slice(&up));
        FlexTensor::from_data(TensorData::new(out, [n]))
    }

    fn swiglu_backward(gate: FlexTensor, up: FlexTensor, grad: FlexTensor) -> FlexTensor {
        count(Kernel::SwigluBackward);
        let (gate, up, grad) = (contiguous(gate), contiguous(up), contiguous(grad));
        let n = gate.layout().shape()[0];
        let out = elementwise::swiglu_backward(f32_slice(&gate), f32_slice(&up), f32_slice(&grad));
        FlexTensor::from_data(TensorData::new(out, [2, n]))
    }

    fn rms_norm(x: FlexTensor, weight: FlexTensor, eps: f32) -> FlexTensor {
        count(Kernel::RmsNorm);
        let (x, weight) = (contiguous(x), contiguous(weight));
        let [n, d] = [x.layout().shape()[0], x.layout().shape()[1]];
        let out = elementwise::rms_norm(f32_slice(&x), f32_slice(&weight), eps);
        FlexTensor::from_data(TensorData::new(out, [n, d]))
    }

    fn add_rms_norm(x: FlexTensor, delta: FlexTensor, weight: FlexTensor, eps: f32) -> FlexTensor {
        count(Kernel::AddRmsNorm);
        let (x, delta, weight) = (contiguous(x), contiguous(delta), contiguous(weight));
        // h then y along the first dimension: [2N, …, D]
        let mut packed: Vec<usize> = x.layout().shape().iter().copied().collect();
        packed[0] *= 2;
        let out =
            elementwise::add_rms_norm(f32_slice(&x), f32_slice(&delta), f32_slice(&weight), eps);
        FlexTensor::from_data(TensorData::new(out, packed))
    }

    fn rope_into(
        cache: FlexTensor,
        x: FlexTensor,
        cos: FlexTensor,
        sin: FlexTensor,
        start: usize,
    ) -> FlexTensor {
        count(Kernel::RopeInto);
        rope_into_flex(cache, x, cos, sin, start)
    }

    fn rms_norm_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        eps: f32,
    ) -> FlexTensor {
        count(Kernel::RmsNormBackward);
        let (x, weight, grad) = (contiguous(x), contiguous(weight), contiguous(grad));
        let out = elementwise::rms_norm_backward(
            f32_slice(&x),
            f32_slice(&weight),
            f32_slice(&grad),
            eps,
        );
        let len = out.len();
        FlexTensor::from_data(TensorData::new(out, [len]))
    }

    fn adamw(
        param: FlexTensor,
        grad: FlexTensor,
        moment_1: FlexTensor,
        moment_2: FlexTensor,
        scalars: AdamWScalars,
        fresh: bool,
    ) -> FlexTensor {
        adamw_flex(
            param,
            grad,
            (!fresh).then_some((moment_1, moment_2)),
            scalars,
        )
    }
}

/// See [`RlKernels::adamw`].
fn adamw_flex(
    param: FlexTensor,
    grad: FlexTensor,
    moments: Option<(FlexTensor, FlexTensor)>,
    s: AdamWScalars,
) -> FlexTensor {
    count(Kernel::AdamW);
    let (param, grad) = (contiguous(param), contiguous(grad));
    let moments = moments.map(|(m, v)| (contiguous(m), contiguous(v)));
    let n = param.layout().shape()[0];
    let out = elementwise::adamw(
        f32_slice(&param),
        f32_slice(&grad),
        moments.as_ref().map(|(m, v)| (f32_slice(m), f32_slice(v))),
        s,
    );
    FlexTensor::from_data(TensorData::new(out, [3, n]))
}

/// See [`RlKernels::rope`] and [`RlKernels::rope_backward`].
fn rope_flex(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, backward: bool) -> FlexTensor {
    let dims = crate::attention::dims4(x.layout().shape());
    let (x, layout) = rope_rows(x);
    let (cos, sin) = (contiguous(cos), contiguous(sin));
    let out = rope::rope(
        x.storage::<f32>(),
        layout,
        f32_slice(&cos),
        f32_slice(&sin),
        dims,
        backward,
    );
    FlexTensor::from_data(TensorData::new(out, dims))
}

/// See [`RlKernels::rope_into`]: the rotated rows are written into `cache`'s own buffer when
/// it is contiguous and nothing else holds it (a KV cache between decoding steps), otherwise
/// into a copy of it.
fn rope_into_flex(
    cache: FlexTensor,
    x: FlexTensor,
    cos: FlexTensor,
    sin: FlexTensor,
    start: usize,
) -> FlexTensor {
    assert_eq!(
        cache.dtype(),
        DType::F32,
        "fused kernels take float32 tensors"
    );
    let dims = crate::attention::dims4(x.layout().shape());
    let [cb, ch, capacity, cd] = crate::attention::dims4(cache.layout().shape());
    assert!(
        [cb, ch, cd] == [dims[0], dims[1], dims[3]] && start + dims[2] <= capacity,
        "rope_into: x {dims:?} does not fit the cache [{cb}, {ch}, {capacity}, {cd}] at position {start}"
    );
    let (x, layout) = rope_rows(x);
    let (cos, sin) = (contiguous(cos), contiguous(sin));
    let mut cache = contiguous(cache);
    let (first, end) = cache
        .layout()
        .contiguous_offsets()
        .expect("a contiguous tensor has contiguous offsets");
    // copy-on-write: in place when `cache` is the only holder of its buffer
    let out = &mut cache.storage_mut::<f32>()[first..end];
    rope::rope_into(
        x.storage::<f32>(),
        layout,
        f32_slice(&cos),
        f32_slice(&sin),
        dims,
        false,
        out,
        capacity,
        start,
    );
    cache
}

/// `x: [b, h, s, d]` and where its rows lie: read in place when each row of `d` is
/// contiguous (a transposed view of a projection), otherwise copied.
fn rope_rows(x: FlexTensor) -> (FlexTensor, rope::RowLayout) {
    let [_, h, s, d] = crate::attention::dims4(x.layout().shape());
    let layout = x.layout();
    let st = layout.strides();
    let rows_in_place = st.len() == 4 && (st[3] == 1 || d <= 1) && st[..3].iter().all(|&x| x >= 0);
    if rows_in_place {
        let layout = rope::RowLayout {
            offset: layout.start_offset(),
            strides: [st[0] as usize, st[1] as usize, st[2] as usize],
        };
        (x, layout)
    } else {
        let layout = rope::RowLayout {
            offset: 0,
            strides: [h * s * d, s * d, d],
        };
        (contiguous(x), layout)
    }
}

/// The shapes of an attention call from `q: [b, h, s, d]` and `k: [b, g, t, d]`.
fn attention_dims(q: &FlexTensor, k: &FlexTensor) -> attention::Dims {
    let [b, h, s, d] = crate::attention::dims4(q.layout().shape());
    let [_, g, t, _] = crate::attention::dims4(k.layout().shape());
    attention::Dims { b, h, g, s, t, d }
}

/// A `[b, g, t, d]` key or value tensor and where its heads lie in its storage: in place when
/// each head is `t` contiguous rows of `d` (strides `[·, ·, d, 1]`, non-negative), otherwise
/// after a copy to a contiguous tensor.
fn heads_in_place(x: FlexTensor, dims: attention::Dims) -> (FlexTensor, attention::KvLayout) {
    let layout = x.layout();
    let strides = layout.strides();
    let rows_contiguous = strides.len() == 4
        && (strides[3] == 1 || dims.d <= 1)
        && (strides[2] == dims.d as isize || dims.t <= 1)
        && strides[0] >= 0
        && strides[1] >= 0;
    if rows_contiguous {
        let kv = attention::KvLayout {
            offset: layout.start_offset(),
            batch: strides[0] as usize,
            group: strides[1] as usize,
        };
        (x, kv)
    } else {
        (contiguous(x), attention::KvLayout::contiguous(dims))
    }
}

/// A float32 matrix whose strides are non-negative (a transposed view stays as it is), or
/// a contiguous copy of it.
fn strided_2d(t: FlexTensor) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "fused kernels take float32 tensors");
    let st = t.layout().strides();
    if st.len() == 2 && st.iter().all(|&s| s >= 0) {
        t
    } else {
        t.to_contiguous()
    }
}

/// The [`crate::amx::MatRef`] view of a matrix from [`strided_2d`].
fn mat_ref(t: &FlexTensor) -> crate::amx::MatRef<'_> {
    let layout = t.layout();
    let (shape, st) = (layout.shape(), layout.strides());
    crate::amx::MatRef {
        data: t.storage::<f32>(),
        offset: layout.start_offset(),
        rows: shape[0],
        cols: shape[1],
        row_stride: st[0] as usize,
        col_stride: st[1] as usize,
    }
}

/// `t`, contiguous.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The float32 elements of a contiguous tensor.
fn f32_slice(t: &FlexTensor) -> &[f32] {
    assert_eq!(t.dtype(), DType::F32, "fused kernels take float32 tensors");
    t.as_slice::<f32>().expect("contiguous f32")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Shape;

    #[test]
    fn a_cache_view_is_read_in_place_and_a_transposed_one_is_copied() {
        let dims = attention::Dims {
            b: 2,
            h: 9,
            g: 3,
            s: 1,
            t: 40,
            d: 64,
        };
        let cache = FlexTensor::zeros(Shape::new([2, 3, 100, 64]), DType::F32);
        let view = cache.narrow(2, 0, 40);
        let (x, layout) = heads_in_place(view, dims);
        assert!(std::sync::Arc::ptr_eq(&x.data_arc(), &cache.data_arc()));
        let want = attention::KvLayout {
            offset: 0,
            batch: 3 * 100 * 64,
            group: 100 * 64,
        };
        assert_eq!(layout, want);
        // rows of d that are not contiguous: copied, then read as a contiguous tensor
        let cols = FlexTensor::zeros(Shape::new([2, 3, 64, 40]), DType::F32).transpose(2, 3);
        let (x, layout) = heads_in_place(cols, dims);
        assert!(x.is_contiguous());
        assert_eq!(layout, attention::KvLayout::contiguous(dims));
    }

    #[test]
    fn rope_writes_into_a_cache_nothing_else_holds_and_copies_a_shared_one() {
        let ([b, g, s, d], capacity) = ([1usize, 2, 1, 4], 3usize);
        let x = FlexTensor::from_data(TensorData::new(vec![1f32; b * g * s * d], [b, g, s, d]));
        let table =
            |v: f32| FlexTensor::from_data(TensorData::new(vec![v; b * s * d], [b, 1, s, d]));
        let cache = FlexTensor::zeros(Shape::new([b, g, capacity, d]), DType::F32);
        let ptr = std::sync::Arc::as_ptr(&cache.data_arc());
        let out = <Flex as RlKernels>::rope_into(cache, x.clone(), table(1.0), table(0.0), 2);
        assert_eq!(
            std::sync::Arc::as_ptr(&out.data_arc()),
            ptr,
            "written in place"
        );
        // cos = 1, sin = 0: the rows are copied as they are, at position 2 of each head
        let v = f32_vec(out.clone());
        assert_eq!(v, [vec![0f32; 8], vec![1f32; 4]].concat().repeat(2));
        // a cache someone else still reads is copied first, and that reader sees no change
        let held = out.clone();
        let out = <Flex as RlKernels>::rope_into(out, x, table(2.0), table(0.0), 0);
        assert!(!std::sync::Arc::ptr_eq(&out.data_arc(), &held.data_arc()));
        assert_eq!(f32_vec(held), v);
        assert_eq!(f32_vec(out)[..4], [2f32; 4]);
    }
}
