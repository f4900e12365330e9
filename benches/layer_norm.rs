//! Forward and backward benchmarks, each group next to memory-copy baselines of the same array,
//! measured in the same run.
//!
//! LayerNorm is memory-bound: its physical floor is one read of `x` and one write of `y`, the
//! cost of copying the array. Run-to-run noise on a shared machine is large (~25%), so absolute
//! timings mean little; what means something is the ratio of an operation to the baselines of
//! its own group, measured minutes apart at most. Every group's `Throughput::Bytes` is the bytes
//! read plus written (`2 * len * size_of::<F>()` for forward, `3 * len * size_of::<F>()` for
//! backward), so criterion's throughput figures of an operation and of its baseline compare
//! directly. (Criterion prints GiB/s, 2^30 bytes; the `bandwidth` example prints GB/s, 10^9 bytes;
//! ratios are the same.)
//!
//! # Names
//!
//! `{kind}_{type}/{shape}/{variant}`, for example `forward_f32/4096x768/forward_into`:
//!
//! * `cargo bench -- f32/4096x768/` runs one shape (the trailing `/` keeps out `4096x768T`),
//! * `cargo bench -- forward_f64/` one kind and type,
//! * `cargo bench -- 'forward_into|copy_into'` one variant and its baseline everywhere.
//!
//! Shapes are `{rows}x{cols}`, rows normalized over the last axis; `4096x768T` is `x.t()` of a
//! 768x4096 array, a 4096x768 logical array in column-major layout.
//!
//! # Variants
//!
//! Forward groups (`forward_f32`, `forward_f64`):
//!
//! * `copy_fresh` — `x.to_owned()`, a copy into a newly allocated array: the baseline of
//!   `forward` and `forward_noaffine`, which allocate their output too. (For the transposed
//!   input, `to_owned` keeps the column-major layout, so it is a plain memory copy: the true floor.)
//! * `copy_into` — `out.assign(&x)` into an existing standard-layout array: the baseline of
//!   `forward_into`, which writes into such an array.
//! * `copy_into_colmajor` (transposed input only) — `assign` into an existing array with the
//!   layout of `x`: the baseline of `forward_inplace`, which reads and writes `x` itself.
//! * `forward` — gamma and beta set (seeded random values), fresh output.
//! * `forward_noaffine` — no gamma, no beta, fresh output.
//! * `forward_into` — gamma and beta, output into an existing standard-layout array.
//! * `forward_inplace` — gamma and beta, output over the input.
//!
//! Backward groups (`backward_f32`, `backward_f64`) read `x` and `dy` and write `dx`; their
//! baselines move the same three arrays:
//!
//! * `copy3_fresh` — `&x + &dy` into a fresh array (the add is free next to the traffic): the
//!   baseline of `backward` and `backward_with_stats`, which allocate `dx`.
//! * `copy3_into` — the same sum with `Zip` into an existing array.
//! * `backward` — affine layer, statistics recomputed.
//! * `backward_with_stats` — affine layer, statistics saved by `forward_with_stats`.
//!
//! RMSNorm groups (`rms_norm_f32`, `rms_norm_f64`, shapes `RMS_SHAPES`) have the forward
//! baselines and the variants `rms_norm` (fresh output), `rms_norm_into` and `rms_norm_inplace`,
//! all with gamma.
//!
//! Residual groups (`residual_f32`, `residual_f64`, shapes `RESIDUAL_SHAPES`) read `x` and `r`
//! and write `h = x + r` and `y = norm(h)`: `Throughput::Bytes` is `4 * len * size_of::<F>()`.
//!
//! * `copy4_into` — one `Zip` pass writing `x + r` and `x` into two existing arrays: the
//!   baseline, the same traffic in one pass.
//! * `{layer,rms}_norm_add_then_norm` — `&x + &r` into a fresh array, then `forward` (the
//!   unfused way), against `{layer,rms}_norm_fused` — `forward_residual`.
//! * `{layer,rms}_norm_add_then_norm_inplace` — `stream += &x`, then
//!   `forward_into(&stream, &mut x)`, against `{layer,rms}_norm_fused_inplace` —
//!   `forward_residual_inplace(&mut x, &mut stream)`.
//!
//! With the `rayon` feature (`cargo bench --features rayon`), the groups above run on rayon's
//! global pool (the crate goes parallel from `PARALLEL_MIN_ELEMENTS` elements; the baselines stay
//! single-threaded), and two more groups compare like with like on a two-thread pool:
//!
//! * `forward_into_f32_2threads/{8192x1024,4096x768}` — `copy_into` is
//!   `Zip::from(&mut out).and(&x).par_for_each(..)` and `forward_into` the same call as above,
//!   both timed inside `pool.install` of a `rayon::ThreadPool` with 2 threads.
//!
//! Big shapes run 10 flat samples over a few seconds so that the whole suite stays well under
//! 30 minutes on a 2-core machine. For a bus-bound table in one short run, see
//! `cargo run --release --example bandwidth`.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use ndarray::{Array2, Zip};
use ndarray_layernorm::{Float, LayerNorm};
use ndarray_rand::rand_distr::{Distribution, StandardNormal};
use std::hint::black_box;
use std::time::Duration;

#[path = "common/shapes.rs"]
mod shapes;
use shapes::{affine, rms_affine, BACKWARD_SHAPES, FORWARD_SHAPES, RESIDUAL_SHAPES, RMS_SHAPES};

/// Modest sampling: big arrays get 10 flat samples over 3 s, small ones 50 samples over 2 s.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, len: usize) {
    if len >= 1 << 20 {
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
    } else {
        group
            .sample_size(50)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    }
}

fn forward<F: Float>(c: &mut Criterion, ty: &str)
where
    StandardNormal: Distribution<F>,
{
    for &s in FORWARD_SHAPES {
        let x = s.input::<F>(1);
        let ln = affine::<F>(s.cols);
        let plain = LayerNorm::<F>::default();
        let bytes = 2 * s.len() * std::mem::size_of::<F>();

        let mut group = c.benchmark_group(format!("forward_{ty}/{}", s.name()));
        configure(&mut group, s.len());
        group.throughput(Throughput::Bytes(bytes as u64));

        // Baselines.
        group.bench_function("copy_fresh", |b| b.iter(|| black_box(&x).to_owned()));
        let mut out = Array2::<F>::zeros((s.rows, s.cols));
        group.bench_function("copy_into", |b| {
            b.iter(|| {
                out.assign(black_box(&x));
                black_box(&mut out);
            })
        });
        if s.transposed {
            let mut same = x.clone(); // `clone` keeps the column-major strides
            group.bench_function("copy_into_colmajor", |b| {
                b.iter(|| {
                    same.assign(black_box(&x));
                    black_box(&mut same);
                })
            });
        }

        // LayerNorm.
        group.bench_function("forward", |b| {
            b.iter(|| ln.forward(black_box(&x)).expect("valid input"))
        });
        group.bench_function("forward_noaffine", |b| {
            b.iter(|| plain.forward(black_box(&x)).expect("valid input"))
        });
        group.bench_function("forward_into", |b| {
            b.iter(|| {
                ln.forward_into(black_box(&x), &mut out)
                    .expect("valid input");
                black_box(&mut out);
            })
        });
        // Normalizing already-normalized rows costs the same as normalizing fresh ones.
        let mut y = x.clone();
        group.bench_function("forward_inplace", |b| {
            b.iter(|| {
                ln.forward_inplace(black_box(&mut y)).expect("valid input");
            })
        });
        group.finish();
    }
}

fn backward<F: Float>(c: &mut Criterion, ty: &str)
where
    StandardNormal: Distribution<F>,
{
    for &s in BACKWARD_SHAPES {
        let x = s.input::<F>(1);
        let dy = s.input::<F>(4);
        let ln = affine::<F>(s.cols);
        let (_, stats) = ln.forward_with_stats(&x).expect("valid input");
        let bytes = 3 * s.len() * std::mem::size_of::<F>();

        let mut group = c.benchmark_group(format!("backward_{ty}/{}", s.name()));
        configure(&mut group, s.len());
        group.throughput(Throughput::Bytes(bytes as u64));

        // Baselines: read two arrays, write a third.
        group.bench_function("copy3_fresh", |b| b.iter(|| black_box(&x) + black_box(&dy)));
        let mut out = Array2::<F>::zeros((s.rows, s.cols));
        group.bench_function("copy3_into", |b| {
            b.iter(|| {
                Zip::from(&mut out)
                    .and(black_box(&x))
                    .and(black_box(&dy))
                    .for_each(|o, &a, &d| *o = a + d);
                black_box(&mut out);
            })
        });

        // LayerNorm.
        group.bench_function("backward", |b| {
            b.iter(|| {
                ln.backward(black_box(&x), black_box(&dy))
                    .expect("valid input")
            })
        });
        group.bench_function("backward_with_stats", |b| {
            b.iter(|| {
                ln.backward_with_stats(black_box(&x), &stats, black_box(&dy))
                    .expect("valid input")
            })
        });
        group.finish();
    }
}

fn rms_norm<F: Float>(c: &mut Criterion, ty: &str)
where
    StandardNormal: Distribution<F>,
{
    for &s in RMS_SHAPES {
        let x = s.input::<F>(1);
        let rms = rms_affine::<F>(s.cols);
        let bytes = 2 * s.len() * std::mem::size_of::<F>();

        let mut group = c.benchmark_group(format!("rms_norm_{ty}/{}", s.name()));
        configure(&mut group, s.len());
        group.throughput(Throughput::Bytes(bytes as u64));

        group.bench_function("copy_fresh", |b| b.iter(|| black_box(&x).to_owned()));
        let mut out = Array2::<F>::zeros((s.rows, s.cols));
        group.bench_function("copy_into", |b| {
            b.iter(|| {
                out.assign(black_box(&x));
                black_box(&mut out);
            })
        });

        group.bench_function("rms_norm", |b| {
            b.iter(|| rms.forward(black_box(&x)).expect("valid input"))
        });
        group.bench_function("rms_norm_into", |b| {
            b.iter(|| {
                rms.forward_into(black_box(&x), &mut out)
                    .expect("valid input");
                black_box(&mut out);
            })
        });
        let mut y = x.clone();
        group.bench_function("rms_norm_inplace", |b| {
            b.iter(|| {
                rms.forward_inplace(black_box(&mut y)).expect("valid input");
            })
        });
        group.finish();
    }
}

/// The fused residual forms against adding first and normalizing after, for both layers.
fn residual<F: Float>(c: &mut Criterion, ty: &str)
where
    StandardNormal: Distribution<F>,
{
    for &s in RESIDUAL_SHAPES {
        let x = s.input::<F>(1);
        let r = s.input::<F>(2);
        let ln = affine::<F>(s.cols);
        let rms = rms_affine::<F>(s.cols);
        // Two arrays read, two written.
        let bytes = 4 * s.len() * std::mem::size_of::<F>();

        let mut group = c.benchmark_group(format!("residual_{ty}/{}", s.name()));
        configure(&mut group, s.len());
        group.throughput(Throughput::Bytes(bytes as u64));

        // Baseline: the same four arrays' traffic, in one pass.
        let mut h = Array2::<F>::zeros((s.rows, s.cols));
        let mut out = Array2::<F>::zeros((s.rows, s.cols));
        group.bench_function("copy4_into", |b| {
            b.iter(|| {
                Zip::from(&mut h)
                    .and(&mut out)
                    .and(black_box(&x))
                    .and(black_box(&r))
                    .for_each(|h, o, &a, &b| {
                        *h = a + b;
                        *o = a;
                    });
                black_box((&mut h, &mut out));
            })
        });

        // Allocating forms: `&x + &r` then `forward`, against `forward_residual`.
        group.bench_function("layer_norm_add_then_norm", |b| {
            b.iter(|| {
                let h = black_box(&x) + black_box(&r);
                let y = ln.forward(&h).expect("valid input");
                (h, y)
            })
        });
        group.bench_function("layer_norm_fused", |b| {
            b.iter(|| {
                ln.forward_residual(black_box(&x), black_box(&r))
                    .expect("valid input")
            })
        });
        group.bench_function("rms_norm_add_then_norm", |b| {
            b.iter(|| {
                let h = black_box(&x) + black_box(&r);
                let y = rms.forward(&h).expect("valid input");
                (h, y)
            })
        });
        group.bench_function("rms_norm_fused", |b| {
            b.iter(|| {
                rms.forward_residual(black_box(&x), black_box(&r))
                    .expect("valid input")
            })
        });

        // In-place forms on a residual stream: `stream += x` then `forward_into(stream, x)`,
        // against `forward_residual_inplace`. Both start from the same arrays; the stream
        // grows by about one unit per call, which changes no timing.
        let (mut xa, mut stream_a) = (x.clone(), r.clone());
        group.bench_function("layer_norm_add_then_norm_inplace", |b| {
            b.iter(|| {
                stream_a += black_box(&xa);
                ln.forward_into(&stream_a, &mut xa).expect("valid input");
            })
        });
        let (mut xb, mut stream_b) = (x.clone(), r.clone());
        group.bench_function("layer_norm_fused_inplace", |b| {
            b.iter(|| {
                ln.forward_residual_inplace(black_box(&mut xb), &mut stream_b)
                    .expect("valid input");
            })
        });
        let (mut xc, mut stream_c) = (x.clone(), r.clone());
        group.bench_function("rms_norm_add_then_norm_inplace", |b| {
            b.iter(|| {
                stream_c += black_box(&xc);
                rms.forward_into(&stream_c, &mut xc).expect("valid input");
            })
        });
        let (mut xd, mut stream_d) = (x.clone(), r.clone());
        group.bench_function("rms_norm_fused_inplace", |b| {
            b.iter(|| {
                rms.forward_residual_inplace(black_box(&mut xd), &mut stream_d)
                    .expect("valid input");
            })
        });
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    forward::<f32>(c, "f32");
    forward::<f64>(c, "f64");
    backward::<f32>(c, "f32");
    backward::<f64>(c, "f64");
    rms_norm::<f32>(c, "f32");
    rms_norm::<f64>(c, "f64");
    residual::<f32>(c, "f32");
    residual::<f64>(c, "f64");
    #[cfg(feature = "rayon")]
    two_threads::forward_into(c);
}

/// `--features rayon` only: `forward_into` and its copy baseline on a two-thread pool.
#[cfg(feature = "rayon")]
mod two_threads {
    use super::configure;
    use super::shapes::{affine, shape, Shape};
    use criterion::{Criterion, Throughput};
    use ndarray::{Array2, Zip};
    use std::hint::black_box;

    const SHAPES: &[Shape] = &[shape(8192, 1024), shape(4096, 768)];

    pub fn forward_into(c: &mut Criterion) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a two-thread pool");
        for &s in SHAPES {
            let x = s.input::<f32>(1);
            let ln = affine::<f32>(s.cols);
            let mut out = Array2::<f32>::zeros((s.rows, s.cols));
            let bytes = 2 * s.len() * std::mem::size_of::<f32>();

            let mut group = c.benchmark_group(format!("forward_into_f32_2threads/{}", s.name()));
            configure(&mut group, s.len());
            group.throughput(Throughput::Bytes(bytes as u64));

            // The timing loop itself runs on the pool, so every call sees its two threads.
            group.bench_function("copy_into", |b| {
                pool.install(|| {
                    b.iter(|| {
                        Zip::from(&mut out)
                            .and(black_box(&x))
                            .par_for_each(|o, &v| *o = v);
                        black_box(&mut out);
                    })
                })
            });
            group.bench_function("forward_into", |b| {
                pool.install(|| {
                    b.iter(|| {
                        ln.forward_into(black_box(&x), &mut out)
                            .expect("valid input");
                        black_box(&mut out);
                    })
                })
            });
            group.finish();
        }
    }
}

criterion_group!(layer_norm, benches);
criterion_main!(layer_norm);
