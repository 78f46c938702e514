//! Fused kernels of `rlaif-kernels` against their default bodies, beside the machine's limits.
//!
//! - `floor/copy`, `floor/read`: memory bandwidth on a 400 MB f32 buffer with all cores
//!   (copy counts bytes read + written; read is a vectorised sum). `floor/exp`: exponentials per
//!   second of the kernels' vectorised `exp` over an L1-resident slice, all cores.
//! - `token_logprobs_fwd/{fused,default,naive}/BxTxV` and `token_logprobs_fwd_bwd/...` at
//!   [8, 256, 49152] and [1, 1024, 49152], temperature 1. `default` is the crate's default body
//!   (all-`-inf` rows handled), `naive` is `log_softmax(z, 2).gather(2, y)` in Burn ops (what
//!   `log_softmax(...).gather(...)` is in PyTorch). Bytes: the logits read once (forward); read
//!   twice and the gradient written once (forward + backward).
//! - `gae/{fused,default}/64x512`: bytes = rewards, values, mask read, advantages and returns
//!   written. `whiten/default/64x512`: x and mask read, output written.
//! - `linear/{small_m,matmul}/MxKxN`: the projections of a SmolLM2-135M decoding step (`M` = 1
//!   or 8 rows; `K × N` = 576 × 576 for q and o, 576 × 1536 for gate and up, 1536 × 576 for
//!   down, 576 × 49 152 for the output), [`rlaif_kernels::linear`]'s small-row kernel against
//!   Burn's `matmul` (gemm). Bytes: the weight read once (`4·K·N`; `x` and `y` are a few KiB), so
//!   the throughput is the memory bandwidth the product reaches.
//! - `linear/q4_1/MxKxN`: the same products from Q4_1 blocks
//!   ([`rlaif_kernels::quant::QuantMatrix::matmul_rows`], dequantised in registers), as
//!   `LanguageModel::load_for_inference` runs them for a GGUF model. Bytes: the blocks read
//!   once (`20·K·N/32`, 0.156 of the f32 weight).
//! - `linear_bf16/{amx,f32}/MxKxN`: the products of a 4 × 256 train step (`M` = 1024 rows;
//!   the same `K × N` as above), [`rlaif_kernels::linear_with`] with
//!   [`rlaif_kernels::MatmulPrecision::Bf16`] (inputs rounded to bf16 and multiplied on AMX
//!   tiles, f32 sums) against Burn's f32 `matmul` (gemm, AVX-512); and
//!   `{amx,f32}_fwd_bwd/1024x576x1536`, a projection's forward and backward under autodiff
//!   (three products). Elements: FLOPs (`2·M·K·N` per product). Skipped without AMX-BF16.
//! - `attention/{fused,burn}/<shape>`: grouped-query attention at SmolLM2's shapes (9 query
//!   heads, 3 key/value heads, width 64) with the model's causal bias: `prefill1024` (one
//!   1024-token prompt), `decode_b8_t64` and `decode_b8_t1024` (one new token for 8 sequences
//!   after 64 or 1024 cached ones), `decode_b1_t1024`. [`rlaif_kernels::attention`] (for a
//!   prefill the kernel that skips masked key tiles; for a decoding step its in-place path, one
//!   query head per task) against its default body (Burn's `attention`, which flex runs over
//!   every tile). Elements: the multiply-adds a causal kernel must do
//!   (`2 · B · H · D · Σ_i visible keys of query i`, for `q kᵀ` and `p v`).
//! - `attention_train/{fused,burn}/4x256`: the forward and backward of the same attention
//!   under autodiff at the train step's shape (4 sequences of 256 tokens, causal): the
//!   kernel with its own backward against Burn's differentiable attention. Elements: the
//!   multiply-adds of a causal forward and backward (`6 · B · H · D · Σ visible`: `q kᵀ` and
//!   `p v`, then `dV`, `dP`, `dQ` and `dK`; the kernel also recomputes `q kᵀ`).
//!
//! - `rope/{fused,default}/<shape>`: rotary position embedding of one layer's queries (9
//!   heads of 64) read as the model has them, a transposed view of the projection:
//!   `decode_b1` (one position: the cost is the ops' overhead, seven small ops against one),
//!   `prefill1024`, and `4x256_fwd_bwd` (forward and backward under autodiff). Bytes: `x`
//!   read and written and the tables read once (twice for forward + backward).
//!
//! - `swiglu/{fused,default}/<shape>` and `rms_norm/{fused,default}/<shape>`: SwiGLU's gating
//!   `silu(gate) · up` on `[B, S, 1536]` and RMSNorm on `[B, S, 576]` (SmolLM2's widths) for a
//!   1024-token prefill (`1x1024`) and a 4 × 256 training batch (`4x256`), forward, and
//!   forward + backward on autodiff (`_fwd_bwd`). [`rlaif_kernels::swiglu`] /
//!   [`rlaif_kernels::rms_norm`] against their default bodies (flex's serial elementwise ops).
//!   Bytes: what one pass must move: swiglu reads gate and up and writes the output
//!   (12 bytes per element; forward + backward also reads them again with the gradient and
//!   writes two gradients: 32); RMSNorm reads x and writes y (8; with the backward 20).
//! - `add_rms_norm/{fused,separate}/<shape>`: the residual sum and the next RMSNorm as a
//!   block forms them in inference, for a decoding step (`decode_b1`, one row of 576) and a
//!   1024-token prefill (`1x1024`): [`rlaif_kernels::add_rms_norm`] (one pass) against the
//!   add and [`rlaif_kernels::rms_norm`]. Bytes: x and delta read, h and y written (16 per
//!   element; the separate ops move 20).
//! - `rope_into_cache/{fused,separate}/<shape>`: one layer's keys (3 heads of 64, the
//!   projection's transposed view) rotated into its KV cache (room for 1088 positions): one
//!   position after 1024 (`decode_b1_t1024`) and a 1024-token prefill (`prefill1024`);
//!   [`rlaif_kernels::rope_into_cache`] (in place) against [`rlaif_kernels::rope`] and the
//!   cache's `slice_assign`. Bytes: the keys read and written, the tables read.
//! - `adamw/{fused,default}/28M`: one AdamW step over SmolLM2's embedding (49 152 × 576,
//!   28.3M parameters, a fifth of the model), [`rlaif_kernels::adamw_step`] against its
//!   default body (Burn's `AdamW`, op for op). Bytes: parameter, gradient and two moments
//!   read, parameter and moments written (28 per parameter).
//!
//! Run: `cargo bench --bench kernels` (about 5 minutes on 2 cores). Results and the floors
//! they imply are recorded in `docs/benchmarks.md`.

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::log_softmax;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rlaif_kernels as k;
use std::hint::black_box;
use std::time::Duration;

/// The allocator of the `rlaif` command (`rlaif_kernels::allocator`), so that the numbers
/// are what the command gets.
#[cfg(feature = "cli")]
#[global_allocator]
static ALLOCATOR: rlaif_kernels::TensorAllocator = rlaif_kernels::TensorAllocator;

const VOCAB: usize = 49152;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sum with lane-wise accumulators (vectorises).
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

fn bench_floors(c: &mut Criterion) {
    let n = 100 << 20; // 100 Mi f32: 419 MB
    let src: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 1e-3).collect();
    let mut dst = vec![1f32; n];
    let th = threads();
    let part = n.div_ceil(th);
    let mut g = c.benchmark_group("floor");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes((2 * n * 4) as u64));
    g.bench_function("copy", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for (d, x) in dst.chunks_mut(part).zip(src.chunks(part)) {
                    s.spawn(move || d.copy_from_slice(x));
                }
            })
        })
    });
    g.throughput(Throughput::Bytes((n * 4) as u64));
    g.bench_function("read", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let hs: Vec<_> = src
                    .chunks(part)
                    .map(|x| s.spawn(move || sum_lanes(x)))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum::<f32>()
            })
        })
    });
    // exp throughput: each thread runs the kernels' exp over a 16 KiB slice `reps` times
    let slice: Vec<f32> = (0..4096).map(|i| -((i % 97) as f32) * 0.1).collect();
    let reps = 2000;
    g.throughput(Throughput::Elements((th * reps * slice.len()) as u64));
    g.bench_function("exp", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..th)
                    .map(|_| {
                        let x = &slice;
                        s.spawn(move || {
                            (0..reps)
                                .map(|_| k::probe::sum_exp(black_box(x)))
                                .sum::<f32>()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum::<f32>()
            })
        })
    });
    g.finish();
}

fn labels(b: usize, t: usize, device: &Device) -> Tensor<2, Int> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let ids: Vec<i64> = (0..b * t)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as usize % VOCAB) as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(ids, [b, t]), device)
}

fn naive(logits: Tensor<3>, labels: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, _] = logits.dims();
    log_softmax(logits, 2)
        .gather(2, labels.unsqueeze_dim::<3>(2))
        .reshape([b, t])
}

fn bench_token_logprobs(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(7);
    type F = fn(Tensor<3>, Tensor<2, Int>) -> Tensor<2>;
    let variants: [(&str, F); 3] = [
        ("fused", |x, y| k::token_logprobs(x, y, 1.0).unwrap()),
        ("default", |x, y| {
            k::token_logprobs_default(x, y, 1.0).unwrap()
        }),
        ("naive", naive),
    ];
    for (b, t) in [(8usize, 256usize), (1, 1024)] {
        let logits = Tensor::<3>::random([b, t, VOCAB], Distribution::Normal(0.0, 2.0), &device);
        let y = labels(b, t, &device);
        let bytes = (b * t * VOCAB * 4) as u64;
        let shape = format!("{b}x{t}x{VOCAB}");

        let mut g = c.benchmark_group("token_logprobs_fwd");
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Bytes(bytes));
        for (name, f) in variants {
            g.bench_function(format!("{name}/{shape}"), |bch| {
                bch.iter(|| f(logits.clone(), y.clone()))
            });
        }
        g.finish();

        let mut g = c.benchmark_group("token_logprobs_fwd_bwd");
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Bytes(3 * bytes));
        for (name, f) in variants {
            g.bench_function(format!("{name}/{shape}"), |bch| {
                bch.iter(|| {
                    let x = logits.clone().autodiff().require_grad();
                    let grads = f(x.clone(), y.clone()).sum().backward();
                    x.grad(&grads).unwrap()
                })
            });
        }
        g.finish();
    }
}

fn bench_gae_whiten(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(8);
    let (b, t) = (64usize, 512usize);
    let rewards = Tensor::<2>::random([b, t], Distribution::Normal(0.0, 1.0), &device);
    let values = Tensor::<2>::random([b, t], Distribution::Normal(0.0, 1.0), &device);
    // response lengths between t/2 and t: padding after the EOS
    let lens =
        Tensor::<2>::random([b, 1], Distribution::Uniform(0.5, 1.0), &device).mul_scalar(t as f32);
    let pos = Tensor::<1, Int>::arange(0..t as i64, &device)
        .float()
        .unsqueeze::<2>();
    let mask = pos.lower(lens.expand([b, t])).float();
    let cfg = k::GaeConfig::default();
    let elems = (b * t * 4) as u64;

    let mut g = c.benchmark_group("gae");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(5 * elems));
    g.bench_function(format!("fused/{b}x{t}"), |bch| {
        bch.iter(|| k::gae(rewards.clone(), values.clone(), mask.clone(), cfg).unwrap())
    });
    g.bench_function(format!("default/{b}x{t}"), |bch| {
        bch.iter(|| k::gae_default(rewards.clone(), values.clone(), mask.clone(), cfg).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("whiten");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(3 * elems));
    g.bench_function(format!("default/{b}x{t}"), |bch| {
        bch.iter(|| {
            k::masked_whiten(rewards.clone(), mask.clone(), k::WhitenConfig::default()).unwrap()
        })
    });
    g.finish();
}

fn bench_linear(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(11);
    let mut g = c.benchmark_group("linear");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for (m, kd, n) in [
        (1usize, 576usize, 576usize),
        (1, 576, 1536),
        (1, 1536, 576),
        (1, 576, VOCAB),
        (8, 576, 1536),
        (8, 576, VOCAB),
    ] {
        let x = Tensor::<2>::random([m, kd], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([kd, n], Distribution::Normal(0.0, 0.05), &device);
        g.throughput(Throughput::Bytes((kd * n * 4) as u64));
        let shape = format!("{m}x{kd}x{n}");
        g.bench_function(format!("small_m/{shape}"), |b| {
            b.iter(|| k::linear(x.clone(), w.clone()).unwrap().into_data())
        });
        g.bench_function(format!("matmul/{shape}"), |b| {
            b.iter(|| x.clone().matmul(w.clone()).into_data())
        });
        let q = q4_1_blocks(n, kd);
        let xv: Vec<f32> = x.clone().try_into_vec_as::<f32>().unwrap();
        g.throughput(Throughput::Bytes(q.data().len() as u64));
        g.bench_function(format!("q4_1/{shape}"), |b| {
            b.iter(|| q.matmul_rows(black_box(&xv), m).unwrap())
        });
    }
    g.finish();
}

fn bench_linear_bf16(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(15);
    if !k::bf16_available(&device) {
        eprintln!("linear_bf16: no AMX-BF16 on this machine, skipped");
        return;
    }
    let mut g = c.benchmark_group("linear_bf16");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let bf16 = k::MatmulPrecision::Bf16;
    for (m, kd, n) in [
        (1024usize, 576usize, 576usize),
        (1024, 576, 1536),
        (1024, 1536, 576),
        (1024, 576, VOCAB),
    ] {
        let x = Tensor::<2>::random([m, kd], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([kd, n], Distribution::Normal(0.0, 0.05), &device);
        g.throughput(Throughput::Elements((2 * m * kd * n) as u64));
        let shape = format!("{m}x{kd}x{n}");
        g.bench_function(format!("amx/{shape}"), |b| {
            b.iter(|| {
                k::linear_with(x.clone(), w.clone(), bf16)
                    .unwrap()
                    .into_data()
            })
        });
        g.bench_function(format!("f32/{shape}"), |b| {
            b.iter(|| x.clone().matmul(w.clone()).into_data())
        });
    }
    // forward and backward (∂x = g·wᵀ, ∂w = xᵀ·g) of a gate projection at the train step
    let ad = Device::flex().autodiff();
    let (m, kd, n) = (1024usize, 576usize, 1536usize);
    let x = Tensor::<2>::random([m, kd], Distribution::Normal(0.0, 1.0), &ad);
    let w = Tensor::<2>::random([kd, n], Distribution::Normal(0.0, 0.05), &ad);
    let grad = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &ad);
    g.throughput(Throughput::Elements((6 * m * kd * n) as u64));
    for (name, precision) in [("amx", bf16), ("f32", k::MatmulPrecision::F32)] {
        g.bench_function(format!("{name}_fwd_bwd/{m}x{kd}x{n}"), |b| {
            b.iter(|| {
                let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
                let y = k::linear_with(x.clone(), w.clone(), precision).unwrap();
                let grads = (y * grad.clone()).sum().backward();
                [x, w].map(|t| t.grad(&grads).unwrap().into_data())
            })
        });
    }
    g.finish();
}

fn bench_attention(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(12);
    let mut g = c.benchmark_group("attention");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let (h, kvh, d) = (9usize, 3usize, 64usize);
    for (name, b, s, t) in [
        ("prefill1024", 1usize, 1024usize, 1024usize),
        ("decode_b8_t64", 8, 1, 64),
        ("decode_b1_t1024", 1, 1, 1024),
        ("decode_b8_t1024", 8, 1, 1024),
    ] {
        let normal = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<4>::random([b, h, s, d], normal, &device);
        let k_ = Tensor::<4>::random([b, kvh, t, d], normal, &device);
        let v = Tensor::<4>::random([b, kvh, t, d], normal, &device);
        // causal after t − s cached positions
        let past = t - s;
        let bias: Vec<f32> = (0..b * s * t)
            .map(|x| {
                let (i, j) = ((x / t) % s, x % t);
                if j > past + i { f32::NEG_INFINITY } else { 0.0 }
            })
            .collect();
        let bias = Tensor::<4>::from_data(TensorData::new(bias, [b, 1, s, t]), &device);
        let visible: usize = (0..s).map(|i| past + i + 1).sum();
        g.throughput(Throughput::Elements((2 * b * h * d * visible) as u64));
        let args = || (q.clone(), k_.clone(), v.clone(), bias.clone());
        g.bench_function(format!("fused/{name}"), |bench| {
            bench.iter(|| {
                let (q, k_, v, bias) = args();
                k::attention(q, k_, v, bias).unwrap().into_data()
            })
        });
        g.bench_function(format!("burn/{name}"), |bench| {
            bench.iter(|| {
                let (q, k_, v, bias) = args();
                k::attention_default(q, k_, v, bias).into_data()
            })
        });
    }
    g.finish();
}

fn bench_attention_train(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    device.seed(14);
    let mut g = c.benchmark_group("attention_train");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let (b, h, kvh, s, d) = (4usize, 9usize, 3usize, 256usize, 64usize);
    let normal = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<4>::random([b, h, s, d], normal, &device);
    let k_ = Tensor::<4>::random([b, kvh, s, d], normal, &device);
    let v = Tensor::<4>::random([b, kvh, s, d], normal, &device);
    let grad = Tensor::<4>::random([b, h, s, d], normal, &device);
    let bias: Vec<f32> = (0..b * s * s)
        .map(|x| {
            if x % s > (x / s) % s {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let bias = Tensor::<4>::from_data(TensorData::new(bias, [b, 1, s, s]), &device);
    let visible = s * (s + 1) / 2;
    // q kᵀ and p v forward; dV, dP, dQ and dK backward
    g.throughput(Throughput::Elements((6 * b * h * d * visible) as u64));
    let step = |fused: bool| {
        let (q, k_, v) = (
            q.clone().require_grad(),
            k_.clone().require_grad(),
            v.clone().require_grad(),
        );
        let o = if fused {
            k::attention(q.clone(), k_.clone(), v.clone(), bias.clone()).unwrap()
        } else {
            k::attention_default(q.clone(), k_.clone(), v.clone(), bias.clone())
        };
        let grads = (o * grad.clone()).sum().backward();
        [q, k_, v].map(|x| x.grad(&grads).unwrap().into_data())
    };
    g.bench_function("fused/4x256", |bench| bench.iter(|| step(true)));
    g.bench_function("burn/4x256", |bench| bench.iter(|| step(false)));
    g.finish();
}

fn bench_rope(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(15);
    let normal = Distribution::Normal(0.0, 1.0);
    let mut g = c.benchmark_group("rope");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    type Rope = fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>;
    let ropes: [(&str, Rope); 2] = [
        ("fused", |x, c, s| k::rope(x, c, s).unwrap()),
        ("default", k::rope_default),
    ];
    // the queries of one layer as the model has them: the projection [B, S, 9, 64] read as
    // [B, 9, S, 64]; a decoding step (one position), a 1024-token prefill, the train step
    for (name, b, s, bwd) in [
        ("decode_b1", 1usize, 1usize, false),
        ("prefill1024", 1, 1024, false),
        ("4x256_fwd_bwd", 4, 256, true),
    ] {
        let (h, d) = (9usize, 64usize);
        let x = Tensor::<4>::random([b, s, h, d], normal, &device);
        let cos = Tensor::<4>::random([b, 1, s, d], normal, &device);
        let sin = Tensor::<4>::random([b, 1, s, d], normal, &device);
        // x read and written, the tables read once (forward; twice that with the backward)
        let bytes = 4 * (2 * b * s * h * d + 2 * b * s * d) as u64;
        g.throughput(Throughput::Bytes(if bwd { 2 * bytes } else { bytes }));
        for (v, f) in ropes {
            g.bench_function(format!("{v}/{name}"), |bench| {
                bench.iter(|| {
                    let (c, sn) = (cos.clone(), sin.clone());
                    if bwd {
                        let xt = x.clone().autodiff().require_grad();
                        let y = f(xt.clone().swap_dims(1, 2), c.autodiff(), sn.autodiff());
                        let grads = y.sum().backward();
                        black_box(xt.grad(&grads).unwrap());
                    } else {
                        black_box(f(x.clone().swap_dims(1, 2), c, sn).into_data());
                    }
                })
            });
        }
    }
    g.finish();

    // the keys of one layer (3 heads of 64) written into its KV cache (room for 1088
    // positions, a cache grown past 1024): a decoding step's one new position after 1024, and
    // a 1024-token prefill from position 0; `fused` rotates into the cache's buffer in place,
    // `separate` is the rotation kernel and then the cache's `slice_assign`
    let mut g = c.benchmark_group("rope_into_cache");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    type Into = fn(Tensor<4>, usize, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>;
    let intos: [(&str, Into); 2] = [
        ("fused", |cache, start, x, c, s| {
            k::rope_into_cache(cache, start, x, c, s).unwrap()
        }),
        ("separate", |cache, start, x, c, s| {
            let [b, g, n, d] = x.dims();
            let rotated = k::rope(x, c, s).unwrap();
            cache.slice_assign([0..b, 0..g, start..start + n, 0..d], rotated)
        }),
    ];
    for (name, s, start) in [
        ("decode_b1_t1024", 1usize, 1024usize),
        ("prefill1024", 1024, 0),
    ] {
        let (b, kvh, d, capacity) = (1usize, 3usize, 64usize, 1088usize);
        let x = Tensor::<4>::random([b, s, kvh, d], normal, &device);
        let cos = Tensor::<4>::random([b, 1, s, d], normal, &device);
        let sin = Tensor::<4>::random([b, 1, s, d], normal, &device);
        g.throughput(Throughput::Bytes(
            4 * (2 * b * s * kvh * d + 2 * b * s * d) as u64,
        ));
        for (v, f) in intos {
            let mut cache = Some(Tensor::<4>::random([b, kvh, capacity, d], normal, &device));
            g.bench_function(format!("{v}/{name}"), |bench| {
                bench.iter(|| {
                    let c = cache.take().expect("put back by the previous iteration");
                    let x = x.clone().swap_dims(1, 2);
                    cache = Some(black_box(f(c, start, x, cos.clone(), sin.clone())));
                })
            });
        }
    }
    g.finish();
}

fn bench_elementwise(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(13);
    let normal = Distribution::Normal(0.0, 1.0);
    for (name, b, s) in [("1x1024", 1usize, 1024usize), ("4x256", 4, 256)] {
        let (gate, up) = (
            Tensor::<3>::random([b, s, 1536], normal, &device),
            Tensor::<3>::random([b, s, 1536], normal, &device),
        );
        let x = Tensor::<3>::random([b, s, 576], normal, &device);
        let w = Tensor::<1>::random([576], normal, &device);
        type Glu = fn(Tensor<3>, Tensor<3>) -> Tensor<3>;
        let glus: [(&str, Glu); 2] = [
            ("fused", |g, u| k::swiglu(g, u).unwrap()),
            ("default", k::swiglu_default),
        ];
        type Norm = fn(Tensor<3>, Tensor<1>) -> Tensor<3>;
        let norms: [(&str, Norm); 2] = [
            ("fused", |x, w| k::rms_norm(x, w, 1e-5).unwrap()),
            ("default", |x, w| k::rms_norm_default(x, w, 1e-5)),
        ];
        let (n_glu, n_norm) = ((b * s * 1536) as u64, (b * s * 576) as u64);
        let mut g = c.benchmark_group("swiglu");
        g.sample_size(20).measurement_time(Duration::from_secs(3));
        for (bwd, bytes) in [(false, 12), (true, 32)] {
            g.throughput(Throughput::Bytes(bytes * n_glu));
            for (v, f) in glus {
                let id = format!("{v}/{name}{}", if bwd { "_fwd_bwd" } else { "" });
                g.bench_function(id, |bench| {
                    bench.iter(|| {
                        if bwd {
                            let gt = gate.clone().autodiff().require_grad();
                            let ut = up.clone().autodiff().require_grad();
                            let grads = f(gt.clone(), ut.clone()).sum().backward();
                            black_box((gt.grad(&grads).unwrap(), ut.grad(&grads).unwrap()));
                        } else {
                            black_box(f(gate.clone(), up.clone()).into_data());
                        }
                    })
                });
            }
        }
        g.finish();
        let mut g = c.benchmark_group("rms_norm");
        g.sample_size(20).measurement_time(Duration::from_secs(3));
        for (bwd, bytes) in [(false, 8), (true, 20)] {
            g.throughput(Throughput::Bytes(bytes * n_norm));
            for (v, f) in norms {
                let id = format!("{v}/{name}{}", if bwd { "_fwd_bwd" } else { "" });
                g.bench_function(id, |bench| {
                    bench.iter(|| {
                        if bwd {
                            let xt = x.clone().autodiff().require_grad();
                            let wt = w.clone().autodiff().require_grad();
                            let grads = f(xt.clone(), wt.clone()).sum().backward();
                            black_box((xt.grad(&grads).unwrap(), wt.grad(&grads).unwrap()));
                        } else {
                            black_box(f(x.clone(), w.clone()).into_data());
                        }
                    })
                });
            }
        }
        g.finish();
    }

    // the residual sum and the next norm, as a block of the model forms them between its
    // sub-layers in inference: a decoding step's one row and a 1024-token prefill; `fused`
    // writes both in one pass, `separate` is the add and the RMSNorm kernel
    let mut g = c.benchmark_group("add_rms_norm");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    type AddNorm = fn(Tensor<3>, Tensor<3>, Tensor<1>) -> (Tensor<3>, Tensor<3>);
    let add_norms: [(&str, AddNorm); 2] = [
        ("fused", |x, dx, w| k::add_rms_norm(x, dx, w, 1e-5).unwrap()),
        ("separate", |x, dx, w| {
            let h = x + dx;
            (h.clone(), k::rms_norm(h, w, 1e-5).unwrap())
        }),
    ];
    for (name, s) in [("decode_b1", 1usize), ("1x1024", 1024)] {
        let x = Tensor::<3>::random([1, s, 576], normal, &device);
        let delta = Tensor::<3>::random([1, s, 576], normal, &device);
        let w = Tensor::<1>::random([576], normal, &device);
        // x and delta read, h and y written (the separate ops also write h and read it back)
        g.throughput(Throughput::Bytes(16 * (s * 576) as u64));
        for (v, f) in add_norms {
            g.bench_function(format!("{v}/{name}"), |bench| {
                bench.iter(|| black_box(f(x.clone(), delta.clone(), w.clone())))
            });
        }
    }
    g.finish();
}

fn bench_adamw(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(14);
    let shape = [VOCAB, 576];
    let p = Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.02), &device);
    let g = Tensor::<2>::random(shape, Distribution::Normal(0.0, 1e-3), &device);
    let m = Tensor::<2>::random(shape, Distribution::Normal(0.0, 1e-4), &device);
    let v = Tensor::<2>::random(shape, Distribution::Uniform(0.0, 1e-6), &device);
    let h = k::AdamWStep {
        lr: 1e-5,
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.0,
        time: 10,
    };
    let mut group = c.benchmark_group("adamw");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(28 * (VOCAB * 576) as u64));
    let moments = || Some((m.clone(), v.clone()));
    group.bench_function("fused/28M", |b| {
        b.iter(|| black_box(k::adamw_step(p.clone(), g.clone(), moments(), &h).unwrap()))
    });
    group.bench_function("default/28M", |b| {
        b.iter(|| black_box(k::adamw_step_default(p.clone(), g.clone(), moments(), &h)))
    });
    group.finish();
}

/// `rows × cols` of Q4_1 blocks with a trained model's scales (d = 0.01, m = −0.08) and
/// nibbles from a fixed byte pattern.
fn q4_1_blocks(rows: usize, cols: usize) -> k::quant::QuantMatrix {
    use k::quant::{BLOCK_VALUES, BlockFormat, QuantMatrix};
    let blocks = rows * cols / BLOCK_VALUES;
    let (d, m) = (half::f16::from_f32(0.01), half::f16::from_f32(-0.08));
    let mut data = Vec::with_capacity(blocks * 20);
    let mut byte = 0x5au8;
    for _ in 0..blocks {
        data.extend_from_slice(&d.to_le_bytes());
        data.extend_from_slice(&m.to_le_bytes());
        for _ in 0..16 {
            byte = byte.wrapping_mul(181).wrapping_add(59);
            data.push(byte);
        }
    }
    QuantMatrix::new(BlockFormat::Q4_1, rows, cols, data).unwrap()
}

criterion_group!(
    benches,
    bench_floors,
    bench_gae_whiten,
    bench_token_logprobs,
    bench_linear,
    bench_linear_bf16,
    bench_attention,
    bench_attention_train,
    bench_rope,
    bench_elementwise,
    bench_adamw
);
criterion_main!(benches);
