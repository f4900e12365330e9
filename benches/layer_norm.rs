//! Forward and backward benchmarks, each next to a memory-copy baseline of the same size in the same run.
//!
//! LayerNorm is memory-bound: its floor is one read of `x` and one write of `y`, the cost of a
//! copy. Every group measures `copy_fresh` (a copy into a newly allocated array, like `forward`)
//! and `copy_into` (a copy into an existing array), so each result reads as a ratio to the
//! memory bus of this run. Throughput is the bytes read plus written.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array, Array1, Array2};
use ndarray_layernorm::{Float, LayerNorm};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::hint::black_box;

const SHAPES: &[(usize, usize)] = &[(32, 768), (4096, 768), (65536, 64), (1_000_000, 5)];

fn random<F: Float>(rows: usize, cols: usize) -> Array2<F>
where
    StandardNormal: ndarray_rand::rand_distr::Distribution<F>,
{
    let mut rng = StdRng::seed_from_u64(42);
    Array::random_using((rows, cols), StandardNormal, &mut rng)
}

fn forward<F: Float>(c: &mut Criterion, type_name: &str)
where
    StandardNormal: ndarray_rand::rand_distr::Distribution<F>,
{
    for &(rows, cols) in SHAPES {
        let x = random::<F>(rows, cols);
        let ln = LayerNorm::<F>::default()
            .with_gamma(Array1::from_elem(cols, F::one()))
            .and_then(|ln| ln.with_beta(Array1::from_elem(cols, F::zero())))
            .expect("valid parameters");
        let bytes = 2 * x.len() * std::mem::size_of::<F>();
        let mut group = c.benchmark_group(format!("forward_{type_name}/{rows}x{cols}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::from_parameter("copy_fresh"), |b| {
            b.iter(|| black_box(black_box(&x).to_owned()))
        });
        let mut out = Array2::<F>::zeros((rows, cols));
        group.bench_function(BenchmarkId::from_parameter("copy_into"), |b| {
            b.iter(|| {
                out.assign(black_box(&x));
                black_box(&out);
            })
        });
        group.bench_function(BenchmarkId::from_parameter("forward"), |b| {
            b.iter(|| black_box(ln.forward(black_box(&x)).expect("valid input")))
        });
        let mut y = x.clone();
        group.bench_function(BenchmarkId::from_parameter("forward_inplace"), |b| {
            b.iter(|| {
                ln.forward_inplace(black_box(&mut y)).expect("valid input");
                black_box(&y);
            })
        });
        let xt = random::<F>(cols, rows);
        group.bench_function(BenchmarkId::from_parameter("forward_transposed"), |b| {
            b.iter(|| black_box(ln.forward(black_box(&xt.t())).expect("valid input")))
        });
        group.finish();
    }
}

/// Backward reads `x` and `dy` and writes `dx`: its baseline is the same three arrays' traffic,
/// `x + dy` into a fresh array (the add is free next to the memory traffic).
fn backward<F: Float>(c: &mut Criterion, type_name: &str)
where
    StandardNormal: ndarray_rand::rand_distr::Distribution<F>,
{
    for &(rows, cols) in &[(32, 768), (4096, 768)] {
        let x = random::<F>(rows, cols);
        let dy = random::<F>(rows, cols).mapv(|v| v + F::one());
        let ln = LayerNorm::<F>::affine(cols, F::from_f64(1e-5).expect("representable"))
            .expect("valid parameters");
        let bytes = 3 * x.len() * std::mem::size_of::<F>();
        let mut group = c.benchmark_group(format!("backward_{type_name}/{rows}x{cols}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::from_parameter("copy3_fresh"), |b| {
            b.iter(|| black_box(black_box(&x) + black_box(&dy)))
        });
        group.bench_function(BenchmarkId::from_parameter("backward"), |b| {
            b.iter(|| {
                black_box(
                    ln.backward(black_box(&x), black_box(&dy))
                        .expect("valid input"),
                )
            })
        });
        let (_, stats) = ln.forward_with_stats(&x).expect("valid input");
        group.bench_function(BenchmarkId::from_parameter("backward_with_stats"), |b| {
            b.iter(|| {
                black_box(
                    ln.backward_with_stats(black_box(&x), &stats, black_box(&dy))
                        .expect("valid input"),
                )
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
}

criterion_group!(layer_norm, benches);
criterion_main!(layer_norm);
