//! Measures the accuracy of `LayerNorm::forward` and `moments` against the exact rational
//! reference of the tests (`tests/common/exact.rs`), on the scenarios of `tests/accuracy.rs`
//! with more rows, and prints markdown tables.
//!
//! ```text
//! cargo run --release --example accuracy
//! ```
//!
//! Forward errors are in units of `F::EPSILON * max(1, |y|)`; moment errors in ulps of the
//! exact value (0.5 = correctly rounded). All random generators are seeded: the output is
//! reproducible.

// The reference, the bounds of the test and the helpers shared with it, at the crate root as
// `tests/common/mod.rs` declares them (they refer to each other as `super::...`).
#[allow(dead_code)] // The tests use more of the reference than this example.
#[path = "../tests/common/exact.rs"]
mod exact;
#[allow(dead_code)]
#[path = "../tests/common/forward_bounds.rs"]
mod forward_bounds;
#[allow(dead_code)]
#[path = "../tests/common/harness.rs"]
mod harness;

use exact::{forward_units, spec_var_f64, ulp_units, ExactRow, Format};
use forward_bounds::{affine_tol, forward_tol, moment_ulps, Elem};
use harness::{
    bits, flag, format, integers, normal, of, offset, random, scaled, scales, sci, wide, Kind,
    RowGen,
};
use ndarray::{Array1, Array2};
use ndarray_layernorm::{moments, Float, LayerNorm};
use num_rational::BigRational;
use num_traits::{ToPrimitive, Zero};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths, including the awkward ones around SIMD/unroll widths.
const LENGTHS: [usize; 24] = [
    1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 127, 128, 129, 255, 256, 257, 768,
    1000,
];
/// Shorter list for the special-value scenarios.
const SOME_LENGTHS: [usize; 9] = [1, 2, 3, 7, 8, 9, 17, 768, 1000];
/// Rows per length (short rows get more, up to `SHORT_ROWS`).
const ROWS: usize = 60;
const SHORT_ROWS: usize = 2000;

/// Number of rows of length `n` to draw.
fn rows_for(n: usize) -> usize {
    (SHORT_ROWS / n).clamp(ROWS, SHORT_ROWS)
}

// ----------------------------------------------------------------------------------------------
// Rows (the distributions of tests/accuracy.rs, from tests/common/harness.rs).

/// Rows from `gen` for every length of `lengths`, rounded to `F`, as `f64` values.
fn draw<F: Float>(rng: &mut StdRng, gen: &RowGen, lengths: &[usize]) -> Vec<Vec<f64>> {
    let mut rows = Vec::new();
    for &n in lengths {
        for _ in 0..rows_for(n) {
            rows.push(gen(rng, n).into_iter().map(|v| wide(of::<F>(v))).collect());
        }
    }
    rows
}

// ----------------------------------------------------------------------------------------------
// Forward.

/// Measured errors of one forward scenario.
#[derive(Default)]
struct Forward {
    rows: usize,
    values: usize,
    max: f64,
    sum: f64,
    /// Largest error on rows with `|mean| <= std`, and their number.
    max_centered: f64,
    centered_rows: usize,
    /// Largest `u * |mean| / sqrt(var + eps)` over the rows, in units (`u = 2^-53`).
    max_offset: f64,
    /// Largest `error / bound`, with the bound asserted by `tests/accuracy.rs`.
    max_ratio: f64,
}

/// Runs `forward` (with random gamma in `[-2, 2)` and beta `N(0, 1)` if `affine`) on every row
/// and measures it against the reference.
fn forward<F: Float>(rng: &mut StdRng, rows: &[Vec<f64>], eps: f64, affine: bool) -> Forward {
    let fmt = format::<F>();
    let eps = wide(of::<F>(eps)); // the exact epsilon the layer uses
    let mut m = Forward::default();
    for row in rows {
        let n = row.len();
        let x = Array2::from_shape_fn((1, n), |(_, j)| of::<F>(row[j]));
        let (layer, gamma, beta) = if affine {
            let gamma: Vec<f64> = (0..n)
                .map(|_| wide(of::<F>(rng.random_range(-2.0..2.0))))
                .collect();
            let beta: Vec<f64> = (0..n).map(|_| wide(of::<F>(normal(rng)))).collect();
            let layer = LayerNorm::affine(n, of(eps))
                .and_then(|l| l.with_gamma(Array1::from_iter(gamma.iter().map(|&g| of(g)))))
                .and_then(|l| l.with_beta(Array1::from_iter(beta.iter().map(|&b| of(b)))));
            (layer, Some(gamma), Some(beta))
        } else {
            (LayerNorm::new(of(eps)), None, None)
        };
        let y = layer.expect("valid layer").forward(&x).expect("forward");
        let exact = ExactRow::new(row);
        let (mean, var) = (exact.mean(), exact.var());
        // Non-constant rows with |mean| <= std.
        let centered = !var.is_zero() && &mean * &mean <= var;
        if !var.is_zero() {
            let var_eps = &var + BigRational::from_float(eps).expect("finite");
            let ratio2 = (&mean * &mean / var_eps).to_f64().expect("finite");
            m.max_offset = m.max_offset.max(0.5 * ratio2.sqrt());
        }
        let ys = exact.normalized(eps);
        m.rows += 1;
        m.centered_rows += usize::from(centered);
        for (i, (&c, y_exact)) in y.iter().zip(&ys).enumerate() {
            let (units, bound) = match (&gamma, &beta) {
                (Some(g), Some(b)) => {
                    let z = y_exact.affine(g[i], b[i]);
                    let elem = Elem {
                        y: y_exact.to_f64(),
                        gamma: g[i],
                        z: z.to_f64(),
                    };
                    let units = forward_units(wide(c), &z, fmt);
                    (units, affine_tol::<F>(&elem))
                }
                _ => {
                    let y = y_exact.to_f64();
                    let elem = Elem {
                        y,
                        gamma: 1.0,
                        z: y,
                    };
                    let units = forward_units(wide(c), y_exact, fmt);
                    (units, forward_tol::<F>(&elem))
                }
            };
            m.values += 1;
            m.sum += units;
            m.max = m.max.max(units);
            if centered {
                m.max_centered = m.max_centered.max(units);
            }
            m.max_ratio = m.max_ratio.max(units / bound);
        }
    }
    m
}

fn forward_line<F: Float>(
    rng: &mut StdRng,
    name: &str,
    gen: &RowGen,
    lengths: &[usize],
    eps: f64,
    affine: bool,
) {
    let rows = draw::<F>(rng, gen, lengths);
    let m = forward::<F>(rng, &rows, eps, affine);
    let offset = match format::<F>() {
        Format::F32 => "–".to_string(),
        Format::F64 => sci(m.max_offset),
    };
    println!(
        "| {name} | {} | {eps:e} | {} | {} | {} | {} | {offset} | {} |",
        format::<F>().name(),
        m.rows,
        sci(m.max),
        sci(m.sum / m.values as f64),
        if m.centered_rows > 0 {
            sci(m.max_centered)
        } else {
            "–".to_string()
        },
        flag(m.max_ratio),
    );
}

fn forward_table<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (tiny, huge, tiny_name, huge_name, max_biased) = match format::<F>() {
        Format::F32 => (1e-30, 1e37, "1e-30 × N(0,1)", "1e37 × N(0,1)", 254),
        Format::F64 => (1e-300, 1e300, "1e-300 × N(0,1)", "1e300 × N(0,1)", 2046),
    };
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("random normal", random(Kind::Normal)),
            ("random uniform", random(Kind::Uniform)),
            ("random integers -3..=3", integers()),
        ] {
            forward_line::<F>(&mut rng, name, &gen, &LENGTHS, eps, false);
        }
    }
    let offsets: &[(f64, f64, &str)] = match format::<F>() {
        Format::F32 => &[
            (1e1, 1.0, "offset 1e1 + N(0,1)"),
            (1e3, 1.0, "offset 1e3 + N(0,1)"),
            (1e5, 1.0, "offset 1e5 + N(0,1)"),
            (1.0, 1e-4, "offset 1 + 1e-4 × N(0,1)"),
        ],
        Format::F64 => &[
            (1e3, 1.0, "offset 1e3 + N(0,1)"),
            (1e6, 1.0, "offset 1e6 + N(0,1)"),
            (1e9, 1.0, "offset 1e9 + N(0,1)"),
            (1e12, 1.0, "offset 1e12 + N(0,1)"),
            (1.0, 1e-9, "offset 1 + 1e-9 × N(0,1)"),
        ],
    };
    for &(o, sigma, name) in offsets {
        for eps in [1e-5, 0.0] {
            forward_line::<F>(&mut rng, name, &offset(o, sigma), &SOME_LENGTHS, eps, false);
        }
    }
    for (name, gen) in [
        (tiny_name, scaled(tiny)),
        (huge_name, scaled(huge)),
        ("subnormal", bits::<F>(0..=0)),
        ("mixed exponents (all finite)", bits::<F>(0..=max_biased)),
    ] {
        for eps in [0.0, 1e-5] {
            forward_line::<F>(&mut rng, name, &gen, &SOME_LENGTHS, eps, false);
        }
    }
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("affine, random normal", random(Kind::Normal)),
            ("affine, random uniform", random(Kind::Uniform)),
        ] {
            forward_line::<F>(&mut rng, name, &gen, &LENGTHS, eps, true);
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Moments.

fn moments_line<F: Float>(rng: &mut StdRng, name: &str, gen: &RowGen, lengths: &[usize]) {
    let fmt = format::<F>();
    let tol = moment_ulps::<F>();
    let rows = draw::<F>(rng, gen, lengths);
    let (mut mean_max, mut mean_sum, mut var_max, mut var_sum) = (0f64, 0.0, 0f64, 0.0);
    let (mut mean_over, mut var_over) = (0, 0);
    let mut exact_var_max = 0f64;
    for row in &rows {
        let x = Array2::from_shape_fn((1, row.len()), |(_, j)| of::<F>(row[j]));
        let m = moments(&x).expect("moments");
        let exact = ExactRow::new(row);
        let e = ulp_units(wide(m.mean[0]), &exact.mean(), fmt);
        mean_max = mean_max.max(e);
        mean_sum += e;
        mean_over += usize::from(e > tol);
        // f64: the variance as the contract defines it (rounded deviations and squares); its
        // distance from the exact variance is in the last column.
        let var = match fmt {
            Format::F32 => exact.var(),
            Format::F64 => spec_var_f64(row, &exact.mean()),
        };
        let e = ulp_units(wide(m.var[0]), &var, fmt);
        exact_var_max = exact_var_max.max(ulp_units(wide(m.var[0]), &exact.var(), fmt));
        var_max = var_max.max(e);
        var_sum += e;
        var_over += usize::from(e > tol);
    }
    let k = rows.len() as f64;
    println!(
        "| {name} | {} | {} | {} | {} | {mean_over} | {} | {} | {var_over} | {} |",
        fmt.name(),
        rows.len(),
        sci(mean_max),
        sci(mean_sum / k),
        sci(var_max),
        sci(var_sum / k),
        sci(exact_var_max),
    );
}

fn moments_table<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for (name, gen) in [
        ("random normal", random(Kind::Normal)),
        ("random uniform", random(Kind::Uniform)),
        ("random integers -3..=3", integers()),
    ] {
        moments_line::<F>(&mut rng, name, &gen, &LENGTHS);
    }
    let (offsets, max_exp): (&[f64], i32) = match format::<F>() {
        Format::F32 => (&[1e3, 1e5], 50),
        Format::F64 => (&[1e3, 1e6, 1e9], 400),
    };
    for &o in offsets {
        let name = format!("offset {o:e} + N(0,1)");
        moments_line::<F>(&mut rng, &name, &offset(o, 1.0), &SOME_LENGTHS);
    }
    let name = format!("2^±{max_exp} × N(0,1)");
    moments_line::<F>(&mut rng, &name, &scales(max_exp), &SOME_LENGTHS);
}

fn main() {
    println!("### Forward: error in units of `F::EPSILON * max(1, |y|)`\n");
    println!(
        "`max units, |mean| ≤ std` is the largest error on the non-constant rows with \
         `|mean| <= sqrt(var)` (– if there are none). `max u·|mean|/std` is the largest `2^-53 * |mean| / sqrt(var + eps)` over the \
         non-constant rows, in units: the error that normalizing with the correctly rounded `f64` mean alone \
         would cause (f64 rows with `|mean| > std` subtract the mean's low part too, so their errors stay far below it). \
         `error/bound` is the largest ratio of the error to the bound `tests/accuracy.rs` \
         asserts (f32: 1 unit; f64: 2 units on every row; affine f64: `(t + 1/2) * |gamma| * max(1, |y|) / \
         max(1, |z|) + 1/2` with `t = 2`); above 1 means the bound is missed.\n"
    );
    println!(
        "| scenario | type | eps | rows | max units | mean units | max units, \\|mean\\| ≤ std | max u·\\|mean\\|/std | error/bound |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    forward_table::<f32>(1);
    forward_table::<f64>(2);

    println!("\n### Moments: error in ulps of the exact value (0.5 = correctly rounded)\n");
    println!(
        "f32 moments are computed in `f64` and rounded again; the tolerance is `0.5 + 2^-29` \
         ulps there and 0.5 ulps for f64. `> tol` counts the rows that miss it. For f64 the \
         variance is measured against its definition (the once-rounded sum of the once-rounded \
         squares of the rounded deviations from the rounded mean); the last column measures \
         it against the exact variance, which differs by the rounding of the mean.\n"
    );
    println!(
        "| scenario | type | rows | mean: max ulps | mean: avg ulps | mean: > tol | var: max ulps | var: avg ulps | var: > tol | var vs exact var: max ulps |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    moments_table::<f32>(3);
    moments_table::<f64>(4);
}
