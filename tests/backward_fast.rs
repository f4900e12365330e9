//! The rows that the `f32` fast backward path must hand to the exact path, and those it may
//! keep, measured against the exact rational reference with the tolerances of
//! `tests/backward_accuracy.rs` (`tests/common/backward_bounds.rs`), for `f32` and `f64`; and
//! the bits of mixed batches (fast and exact rows in the same blocks) for every layout and,
//! with the `rayon` feature, every number of threads.
//!
//! The scenarios: `dy = c x` (the terms of `dx` cancel almost completely; with `c` large the
//! per-element test fails), rows offset far from 0 (the row-level test fails at 1e8 for
//! `f32`), rows mixed in one batch so that both paths add to the same column sums, and columns
//! of `dy` that cancel (the bound of `dbeta`'s plain sums fails, and the column is summed
//! again).

mod common;

use common::backward_bounds::{backward_errors, Batch, Params, Source};
use common::harness::{batch, format, normal, of, offset_row, random_row, Kind};
use common::tally::{assert_tallies, Tally};
use ndarray::{s, Array2, Array3, Axis};
use ndarray_layernorm::{Float, LayerNorm, RmsNorm};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths around the lane count (8) and the unrolls, short and long.
const LENGTHS: [usize; 14] = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 1029];

/// Tallies of `dx`, `dgamma` and `dbeta`.
struct Tallies([Tally; 3]);

impl Tallies {
    fn new(label: &str) -> Tallies {
        Tallies([
            Tally::new(format!("{label}: dx")),
            Tally::new(format!("{label}: dgamma (units of sum |dy xhat|)")),
            Tally::new(format!("{label}: dbeta")),
        ])
    }

    /// [`check`](Self::check) of `x` and `dy` with random parameters and `eps = 1e-5`, with the
    /// statistics recomputed and then saved.
    fn check_both_sources<F: Float>(&mut self, rng: &mut StdRng, x: &Array2<F>, dy: &Array2<F>) {
        for source in [Source::Recompute, Source::Saved] {
            self.check(rng, Batch::new(x, dy, of(1e-5), Params::Random, source));
        }
    }

    /// Measures one batch against the reference and its tolerances.
    fn check<F: Float>(&mut self, rng: &mut StdRng, input: Batch<F>) {
        let n = input.x.ncols();
        let errors = backward_errors(rng, &input);
        let name = format::<F>().name();
        let source = input.source;
        for (r, row) in errors.rows.iter().enumerate() {
            for (i, dx) in row.dx.iter().enumerate() {
                let detail = || {
                    format!(
                        "{name} {source:?} dx row {r} element {i} (n = {n}): computed {:?}, \
                         exact {:e}",
                        dx.error.got, dx.error.exact
                    )
                };
                self.0[0].check(dx.error.units, dx.error.tol, detail);
            }
        }
        for (j, g) in errors.dgamma.iter().enumerate() {
            let detail = || format!("{name} {source:?} dgamma[{j}] (n = {n}): {:?}", g.error.got);
            self.0[1].check(g.error.units, g.error.tol, detail);
        }
        for (j, b) in errors.dbeta.iter().enumerate() {
            let detail = || format!("{name} {source:?} dbeta[{j}] (n = {n}): {:?}", b.got);
            self.0[2].check(b.units, b.tol, detail);
        }
    }
}

fn assert_all(tallies: &[Tallies]) {
    assert_tallies(
        tallies
            .iter()
            .flat_map(|t| t.0.iter())
            .filter(|t| t.values > 0),
    );
}

/// A few rows for rows of length `n` (debug-mode run time of the exact reference).
fn rows_for(rng: &mut StdRng, n: usize) -> usize {
    rng.random_range(1..=(256 / n).clamp(2, 24))
}

// ----------------------------------------------------------------------------------------------
// 1. dy = c x: the terms of dx cancel.

/// `dy = c x` for every `(c, offset)` of `cases`.
fn proportional_gradients<F: Float>(seed: u64, cases: &[(f64, f64)]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut all = Vec::new();
    for &(c, offset) in cases {
        {
            for eps in [1e-5, 0.0] {
                for source in [Source::Recompute, Source::Saved] {
                    let label = format!(
                        "{} dy = {c:e} x, offset {offset:e}, eps {eps:e}, {source:?}",
                        format::<F>().name()
                    );
                    let mut t = Tallies::new(&label);
                    for n in LENGTHS {
                        let m = rows_for(&mut rng, n);
                        let x = batch::<F>(m, n, || offset_row(&mut rng, n, offset, 1.0));
                        // dy = c * x, exactly in F where c is a power of ten up to 1e7 and
                        // x an f32 or f64 value (the rounding of the product is the input).
                        let dy = x.mapv(|v| v * of::<F>(c));
                        for params in [Params::Plain, Params::Ones] {
                            t.check(&mut rng, Batch::new(&x, &dy, of(eps), params, source));
                        }
                    }
                    all.push(t);
                }
            }
        }
    }
    assert_all(&all);
}

/// Centred rows with any `c`, and offset rows with `c = 1`.
const PROPORTIONAL: [(f64, f64); 5] = [(1.0, 0.0), (1e3, 0.0), (1e5, 0.0), (1e7, 0.0), (1.0, 1e3)];

/// Offset rows with a large `c`: `|dy|` reaches `c * 1e3` while `dx` stays near `c * xhat`
/// times `eps / var` (or 0), so the terms of `dx` exceed it by a factor of `1e3 / std` and
/// more.
const PROPORTIONAL_OFFSET: [(f64, f64); 3] = [(1e3, 1e3), (1e5, 1e3), (1e7, 1e3)];

#[test]
fn proportional_gradients_f32() {
    proportional_gradients::<f32>(101, &PROPORTIONAL);
}

#[test]
fn proportional_gradients_f64() {
    proportional_gradients::<f64>(102, &PROPORTIONAL);
    proportional_gradients::<f64>(103, &PROPORTIONAL_OFFSET);
}

/// A known gap of the exact path for `f32` input (not of the fast path, which hands these rows
/// to it): with an offset of 1e3 and `dy = c x`, `c >= 1e3`, its `f64` working precision
/// leaves errors of up to thousands of units in `dx` (the fast path gives the same bits: it
/// refuses these rows). Run with `--ignored` to see them.
#[test]
#[ignore = "known gap of the f32 exact path: dy = c x on offset rows, c >= 1e3"]
fn proportional_gradients_offset_f32() {
    proportional_gradients::<f32>(104, &PROPORTIONAL_OFFSET);
}

// ----------------------------------------------------------------------------------------------
// 2. Rows far from zero.

fn far_offsets<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut all = Vec::new();
    for offset in [1e5, 1e7, 1e8] {
        let label = format!("{} offset {offset:e} + N(0, 1)", format::<F>().name());
        let mut t = Tallies::new(&label);
        for n in LENGTHS {
            let m = rows_for(&mut rng, n);
            let x = batch::<F>(m, n, || offset_row(&mut rng, n, offset, 1.0));
            let dy = batch::<F>(m, n, || (0..n).map(|_| normal(&mut rng)).collect());
            t.check_both_sources(&mut rng, &x, &dy);
        }
        all.push(t);
    }
    assert_all(&all);
}

#[test]
fn far_offsets_f32() {
    far_offsets::<f32>(111);
}

#[test]
fn far_offsets_f64() {
    far_offsets::<f64>(112);
}

// ----------------------------------------------------------------------------------------------
// 3. Fast and exact rows in the same blocks; columns of dy that cancel.

/// Row `r` of a mixed batch: random, or offset by 1e8 (exact path), or tiny, or huge.
fn mixed_row(rng: &mut StdRng, n: usize, r: usize) -> Vec<f64> {
    match r % 4 {
        0 => random_row(rng, Kind::Normal, n),
        1 => offset_row(rng, n, 1e8, 1.0),
        2 => offset_row(rng, n, 0.0, 1e-20),
        _ => offset_row(rng, n, 0.0, 1e20),
    }
}

fn mixed_rows<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut all = Vec::new();
    let mut t = Tallies::new(&format!("{} mixed rows", format::<F>().name()));
    for n in LENGTHS {
        let m = rows_for(&mut rng, n).max(8);
        let mut r = 0;
        let x = batch::<F>(m, n, || {
            r += 1;
            mixed_row(&mut rng, n, r)
        });
        // Every other row of dy is minus the one before (plus a little): each column of dy
        // nearly cancels, so dbeta is tiny next to the sum of |dy|.
        let mut prev: Vec<f64> = Vec::new();
        let mut r = 0;
        let dy = batch::<F>(m, n, || {
            r += 1;
            let row: Vec<f64> = if r % 2 == 0 {
                prev.iter().map(|v| -v + normal(&mut rng) * 1e-3).collect()
            } else {
                (0..n).map(|_| normal(&mut rng) * 1e6).collect()
            };
            prev.clone_from(&row);
            row
        });
        t.check_both_sources(&mut rng, &x, &dy);
    }
    all.push(t);
    assert_all(&all);
}

#[test]
fn mixed_rows_f32() {
    mixed_rows::<f32>(121);
}

#[test]
fn mixed_rows_f64() {
    mixed_rows::<f64>(122);
}

// ----------------------------------------------------------------------------------------------
// 4. The same bits for every layout (and number of threads).

fn bits<F: Float>(a: impl IntoIterator<Item = F>) -> Vec<u64> {
    a.into_iter()
        .map(|v| v.to_f64().unwrap().to_bits())
        .collect()
}

/// A batch of `rows x n` with every kind of row (random, `dy = 1e6 x`, offset 1e8, constant),
/// above `PARALLEL_MIN_ELEMENTS` for the sizes used here.
fn mixed_batch<F: Float>(rng: &mut StdRng, rows: usize, n: usize) -> (Array2<F>, Array2<F>) {
    let mut x = Array2::<F>::zeros((rows, n));
    let mut dy = Array2::<F>::zeros((rows, n));
    for (r, (mut xr, mut dyr)) in x.rows_mut().into_iter().zip(dy.rows_mut()).enumerate() {
        for (a, b) in xr.iter_mut().zip(dyr.iter_mut()) {
            *a = of(normal(rng));
            *b = of(normal(rng));
        }
        match r % 5 {
            1 => dyr.assign(&xr.mapv(|v| v * of::<F>(1e6))),
            2 => xr.mapv_inplace(|v| v + of::<F>(1e8)),
            3 => xr.fill(of(2.5)),
            _ => {}
        }
    }
    (x, dy)
}

/// Every backward result of both layers, as bits, for `x` and `dy` in the layout `layout`
/// makes of them.
fn everything<F: Float>(
    x: &Array2<F>,
    dy: &Array2<F>,
    layout: impl Fn(&Array2<F>) -> Array3<F>,
) -> Vec<Vec<u64>> {
    let n = x.ncols();
    let gamma = ndarray::Array1::from_iter((0..n).map(|j| of::<F>(0.5 + (j % 7) as f64 / 4.0)));
    let beta = ndarray::Array1::from_iter((0..n).map(|j| of::<F>((j % 5) as f64 - 2.0)));
    let ln = LayerNorm::<F>::affine(n, of(1e-5))
        .and_then(|l| l.with_gamma(gamma.clone()))
        .and_then(|l| l.with_beta(beta))
        .unwrap();
    let rms = RmsNorm::<F>::affine(n, of(1e-5))
        .and_then(|l| l.with_gamma(gamma))
        .unwrap();
    let (x3, dy3) = (layout(x), layout(dy));
    let (_, stats) = ln.forward_with_stats(&x3).unwrap();
    let (_, rstd) = rms.forward_with_stats(&x3).unwrap();
    let mut out = Vec::new();
    for g in [
        ln.backward(&x3, &dy3).unwrap(),
        ln.backward_with_stats(&x3, &stats, &dy3).unwrap(),
    ] {
        out.push(bits(g.input.as_standard_layout().iter().copied()));
        out.push(bits(g.gamma.unwrap()));
        out.push(bits(g.beta.unwrap()));
    }
    for g in [
        rms.backward(&x3, &dy3).unwrap(),
        rms.backward_with_stats(&x3, &rstd, &dy3).unwrap(),
    ] {
        out.push(bits(g.input.as_standard_layout().iter().copied()));
        out.push(bits(g.gamma.unwrap()));
    }
    out
}

/// The layouts: standard; the same values in column-major order (so that the rows are
/// strided); every other row of an array twice as long.
type Layout<F> = Box<dyn Fn(&Array2<F>) -> Array3<F> + Sync>;

fn layouts<F: Float>() -> Vec<(&'static str, Layout<F>)> {
    let split = |a: &Array2<F>| {
        let rows = a.nrows();
        a.clone()
            .into_shape_with_order((2, rows / 2, a.ncols()))
            .unwrap()
    };
    vec![
        ("standard", Box::new(split)),
        (
            "column-major",
            Box::new(move |a: &Array2<F>| {
                let s = split(a);
                let mut f = Array3::zeros(s.raw_dim().f());
                f.assign(&s);
                f
            }),
        ),
        (
            "every other row",
            Box::new(move |a: &Array2<F>| {
                let s = split(a);
                let mut big = Array3::zeros((2, 2 * s.len_of(Axis(1)), s.len_of(Axis(2))));
                big.slice_mut(s![.., ..;2, ..]).assign(&s);
                big.slice_mut(s![.., 1..;2, ..]).fill(of(7.0));
                big.slice(s![.., ..;2, ..]).to_owned()
            }),
        ),
    ]
}

use ndarray::ShapeBuilder;

fn same_bits_for_every_layout<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in [7, 97] {
        let rows = 2 * (70_000 / n / 2 + 1);
        let (x, dy) = mixed_batch::<F>(&mut rng, rows, n);
        let mut reference = None;
        for (name, layout) in layouts::<F>() {
            let got = everything(&x, &dy, layout);
            match &reference {
                None => reference = Some(got),
                Some(r) => assert!(
                    *r == got,
                    "{} n = {n}: {name} differs",
                    format::<F>().name()
                ),
            }
        }
    }
}

#[test]
fn same_bits_for_every_layout_f32() {
    same_bits_for_every_layout::<f32>(131);
}

#[test]
fn same_bits_for_every_layout_f64() {
    same_bits_for_every_layout::<f64>(132);
}

#[cfg(feature = "rayon")]
fn same_bits_for_every_thread_count<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in [7, 97, 1029] {
        let rows = 2 * (70_000 / n / 2 + 1);
        assert!(rows * n >= ndarray_layernorm::PARALLEL_MIN_ELEMENTS);
        let (x, dy) = mixed_batch::<F>(&mut rng, rows, n);
        let run = |threads: usize, layout: &(dyn Fn(&Array2<F>) -> Array3<F> + Sync)| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| everything(&x, &dy, layout))
        };
        let layouts = layouts::<F>();
        let one = run(1, &*layouts[0].1);
        for threads in [2, 3, 8] {
            for (name, layout) in &layouts {
                let many = run(threads, &**layout);
                assert!(
                    one == many,
                    "n = {n}: {threads} threads, {name}, differ from one"
                );
            }
        }
    }
}

#[cfg(feature = "rayon")]
#[test]
fn same_bits_for_every_thread_count_f32() {
    same_bits_for_every_thread_count::<f32>(141);
}

#[cfg(feature = "rayon")]
#[test]
fn same_bits_for_every_thread_count_f64() {
    same_bits_for_every_thread_count::<f64>(142);
}
