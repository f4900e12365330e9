//! With the `rayon` feature, results are bitwise identical for every number of threads,
//! including the parameter gradients of the backward pass (fixed row blocks, reduced in order).
#![cfg(feature = "rayon")]

use ndarray::{s, Array, Array1, Array2, Array3, ArrayD, IxDyn};
use ndarray_layernorm::{Float, LayerNorm, RmsNorm, PARALLEL_MIN_ELEMENTS};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
}

fn bits<F: Float>(a: impl IntoIterator<Item = F>) -> Vec<u64> {
    a.into_iter()
        .map(|v| v.to_f64().unwrap().to_bits())
        .collect()
}

/// Everything a layer computes on `x` and `dy`, as bits.
fn everything<F: Float>(ln: &LayerNorm<F>, x: &Array3<F>, dy: &Array3<F>) -> Vec<Vec<u64>> {
    let y = ln.forward(x).unwrap();
    let (_, stats) = ln.forward_with_stats(x).unwrap();
    let mut inplace = x.clone();
    ln.forward_inplace(&mut inplace).unwrap();
    let mut into = Array3::zeros(x.raw_dim());
    ln.forward_into(
        &x.view()
            .permuted_axes([1, 0, 2])
            .to_owned()
            .permuted_axes([1, 0, 2]),
        &mut into,
    )
    .unwrap();
    let transposed = ln
        .forward(
            &x.view()
                .reversed_axes()
                .as_standard_layout()
                .reversed_axes(),
        )
        .unwrap();
    let grads = ln.backward(x, dy).unwrap();
    let saved = ln.backward_with_stats(x, &stats, dy).unwrap();
    vec![
        bits(y),
        bits(stats.mean),
        bits(stats.rstd),
        bits(inplace),
        bits(into),
        bits(transposed),
        bits(grads.input),
        bits(grads.gamma.unwrap()),
        bits(grads.beta.unwrap()),
        bits(saved.input),
        bits(saved.gamma.unwrap()),
    ]
}

/// `offset + N(0, 1)` rows (`offset` 0: centred rows; large: the offset arithmetic of `f64`).
fn check<F: Float>(seed: u64, offset: f64)
where
    StandardNormal: ndarray_rand::rand_distr::Distribution<F>,
{
    let mut rng = StdRng::seed_from_u64(seed);
    // 2 * 700 * 97 elements: above the cut-off, 22 blocks of rows, a ragged last block.
    let mut x: Array3<F> = Array::random_using((2, 700, 97), StandardNormal, &mut rng);
    x.mapv_inplace(|v| v + F::from_f64(offset).unwrap());
    assert!(x.len() >= PARALLEL_MIN_ELEMENTS);
    let dy: Array3<F> = Array::random_using((2, 700, 97), StandardNormal, &mut rng);
    let gamma = Array1::random_using(97, StandardNormal, &mut rng);
    let beta = Array1::random_using(97, StandardNormal, &mut rng);
    let ln = LayerNorm::<F>::default()
        .with_gamma(gamma)
        .unwrap()
        .with_beta(beta)
        .unwrap();
    let one = pool(1).install(|| everything(&ln, &x, &dy));
    for threads in [2, 3, 4] {
        let many = pool(threads).install(|| everything(&ln, &x, &dy));
        assert!(one == many, "{threads} threads differ from one");
    }
}

#[test]
fn f32_results_do_not_depend_on_the_number_of_threads() {
    check::<f32>(1, 0.0);
}

#[test]
fn f64_results_do_not_depend_on_the_number_of_threads() {
    check::<f64>(2, 0.0);
}

#[test]
fn f64_offset_rows_do_not_depend_on_the_number_of_threads() {
    check::<f64>(5, 1e9);
}

#[test]
fn small_inputs_below_the_cutoff_match_large_ones_row_for_row() {
    // The first rows of a large (parallel) input equal the same rows normalized alone (serial).
    let mut rng = StdRng::seed_from_u64(3);
    let x: Array2<f64> = Array::random_using((2000, 64), StandardNormal, &mut rng);
    let ln = LayerNorm::<f64>::default();
    let big = pool(2).install(|| ln.forward(&x).unwrap());
    let small = ln.forward(&x.slice(s![..10, ..])).unwrap();
    assert_eq!(bits(big.slice(s![..10, ..]).to_owned()), bits(small));
}

#[test]
fn dynamic_dimension_inputs_run_in_parallel_too() {
    let mut rng = StdRng::seed_from_u64(4);
    let x: ArrayD<f32> = Array::random_using(IxDyn(&[3, 4, 100, 60]), StandardNormal, &mut rng);
    let ln = LayerNorm::<f32>::default();
    let one = pool(1).install(|| ln.forward(&x).unwrap());
    let two = pool(2).install(|| ln.forward(&x).unwrap());
    assert_eq!(bits(one), bits(two));
}

/// Rows that take every path of the forward kernels: `n = 5` (rows normalized eight at a time,
/// and the rows after the last group of eight), 16 and 97 (lane sums, with and without a
/// tail); among them offset rows (written in the pivot form, `|mean| * rstd > 2^18`), and rows
/// that fail the fast path's bound and take the exact path (constant rows with `eps = 0`, and
/// rows with a NaN).
fn mixed_rows(rows: usize, n: usize, seed: u64) -> Array2<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x: Array2<f32> = Array::random_using((rows, n), StandardNormal, &mut rng);
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        match i % 13 {
            3 => row += 1e6,
            7 => row.fill(2.5),
            11 => row[n / 2] = f32::NAN,
            _ => {}
        }
    }
    x
}

/// Forward, in place, with statistics and RMSNorm of `x`, as bits.
fn forward_bits(ln: &LayerNorm<f32>, rms: &RmsNorm<f32>, x: &Array2<f32>) -> Vec<Vec<u64>> {
    let (y, stats) = ln.forward_with_stats(x).unwrap();
    let mut inplace = x.clone();
    ln.forward_inplace(&mut inplace).unwrap();
    let (r, rstd) = rms.forward_with_stats(x).unwrap();
    vec![
        bits(ln.forward(x).unwrap()),
        bits(y),
        bits(stats.mean),
        bits(stats.rstd),
        bits(inplace),
        bits(rms.forward(x).unwrap()),
        bits(r),
        bits(rstd),
    ]
}

#[test]
fn every_forward_path_gives_each_row_its_own_bits_on_any_thread_count() {
    for (n, seed) in [(5, 11), (16, 12), (97, 13)] {
        let rows = PARALLEL_MIN_ELEMENTS / n + 333;
        let x = mixed_rows(rows, n, seed);
        let ln = LayerNorm::<f32>::new(0.0)
            .unwrap()
            .with_gamma(Array1::linspace(0.5, 2.0, n))
            .unwrap()
            .with_beta(Array1::linspace(-1.0, 1.0, n))
            .unwrap();
        let rms = RmsNorm::<f32>::new(1e-5)
            .unwrap()
            .with_gamma(Array1::linspace(2.0, 0.5, n))
            .unwrap();
        let one = pool(1).install(|| forward_bits(&ln, &rms, &x));
        for threads in [2, 3, 8] {
            let many = pool(threads).install(|| forward_bits(&ln, &rms, &x));
            assert!(one == many, "n = {n}: {threads} threads differ from one");
        }
        // Each row alone gets the bits it gets among the others (in any group of rows).
        for i in [0, 3, 7, 8, 11, 12, rows - 1] {
            let alone =
                pool(1).install(|| forward_bits(&ln, &rms, &x.slice(s![i..i + 1, ..]).to_owned()));
            for (k, (all, alone)) in one.iter().zip(&alone).enumerate() {
                let per_row = all.len() / rows;
                assert_eq!(
                    &all[i * per_row..(i + 1) * per_row],
                    &alone[..],
                    "n = {n}, row {i}, output {k}"
                );
            }
        }
    }
}
