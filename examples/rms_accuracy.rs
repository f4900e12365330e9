//! Measures the accuracy of `RmsNorm::forward` and `RmsNorm::backward` against the exact
//! reference of the tests (`tests/common/exact_rms.rs`), on the scenarios of
//! `tests/rms_accuracy.rs` with more rows, and prints markdown tables.
//!
//! ```text
//! cargo run --release --example rms_accuracy
//! ```
//!
//! Errors are in units of `F::EPSILON * max(1, |exact|)` (`dgamma`: of
//! `F::EPSILON * max(1, sum_r |dy_rj xhat_rj|)`). All random generators are seeded: the output
//! is reproducible.

// The references and the helpers shared with the tests, at the crate root as
// `tests/common/mod.rs` declares them (they refer to each other as `super::...`).
#[allow(dead_code)] // The tests use more of the references than this example.
#[path = "../tests/common/exact.rs"]
mod exact;
#[allow(dead_code)]
#[path = "../tests/common/exact_backward.rs"]
mod exact_backward;
#[allow(dead_code)]
#[path = "../tests/common/exact_rms.rs"]
mod exact_rms;
#[allow(dead_code)]
#[path = "../tests/common/harness.rs"]
mod harness;

use exact::{forward_units, Format};
use exact_backward::{sum_units, ParamGradients};
use exact_rms::{affine_tol, forward_tol, rms_input_gradient, RmsRow, BACKWARD_UNITS};
use harness::{
    bits, flag, format, integers, normal, of, offset, random, scaled, sci, wide, Kind, RowGen,
};
use ndarray::{Array1, Array2};
use ndarray_layernorm::{Float, RmsNorm};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths, including the awkward ones around SIMD/unroll widths.
const LENGTHS: [usize; 24] = [
    1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 127, 128, 129, 255, 256, 257, 768,
    1000,
];
/// Shorter list for the special-value scenarios.
const SOME_LENGTHS: [usize; 9] = [1, 2, 3, 7, 8, 9, 17, 768, 1000];

/// Number of rows of length `n` to draw (short rows get more).
fn rows_for(n: usize) -> usize {
    (2000 / n).clamp(60, 2000)
}

// ----------------------------------------------------------------------------------------------
// Forward.

/// Measures `forward` (with a random gamma in `[-2, 2)` per row if `with_gamma`) on
/// `rows_for(n)` rows of every length, and prints one table line.
fn forward_line<F: Float>(
    rng: &mut StdRng,
    name: &str,
    gen: &RowGen,
    lengths: &[usize],
    eps: f64,
    with_gamma: bool,
) {
    let fmt = format::<F>();
    let eps = wide(of::<F>(eps)); // the exact epsilon the layer uses
    let (mut rows, mut values, mut max, mut sum, mut ratio) = (0usize, 0usize, 0f64, 0f64, 0f64);
    for &n in lengths {
        for _ in 0..rows_for(n) {
            let row: Vec<f64> = gen(rng, n).into_iter().map(|v| wide(of::<F>(v))).collect();
            let x = Array2::from_shape_fn((1, n), |(_, j)| of::<F>(row[j]));
            let gamma: Option<Vec<f64>> = with_gamma.then(|| {
                (0..n)
                    .map(|_| wide(of::<F>(rng.random_range(-2.0..2.0))))
                    .collect()
            });
            let layer = match &gamma {
                None => RmsNorm::new(of::<F>(eps)),
                Some(g) => RmsNorm::new(of::<F>(eps))
                    .and_then(|l| l.with_gamma(Array1::from_iter(g.iter().map(|&v| of::<F>(v))))),
            }
            .expect("valid layer");
            let y = layer.forward(&x).expect("forward");
            let exact = RmsRow::new(&row).normalized(eps);
            rows += 1;
            for (i, (&c, y_exact)) in y.iter().zip(&exact).enumerate() {
                let (z, bound) = match &gamma {
                    None => (y_exact.clone(), forward_tol(fmt)),
                    Some(g) => (
                        y_exact.affine(g[i], 0.0),
                        affine_tol(fmt, y_exact.to_f64(), g[i]),
                    ),
                };
                let units = forward_units(wide(c), &z, fmt);
                values += 1;
                sum += units;
                max = max.max(units);
                ratio = ratio.max(units / bound);
            }
        }
    }
    println!(
        "| {name} | {} | {eps:e} | {rows} | {} | {} | {} |",
        fmt.name(),
        sci(max),
        sci(sum / values as f64),
        flag(ratio),
    );
}

fn forward_table<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (tiny, huge, max_biased) = match format::<F>() {
        Format::F32 => (1e-30, 1e37, 254),
        Format::F64 => (1e-300, 1e300, 2046),
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
    let offsets: &[f64] = match format::<F>() {
        Format::F32 => &[1e3, 1e5],
        Format::F64 => &[1e3, 1e6, 1e9],
    };
    for &o in offsets {
        for eps in [1e-5, 0.0] {
            let name = format!("offset {o:e} + N(0,1)");
            forward_line::<F>(&mut rng, &name, &offset(o, 1.0), &SOME_LENGTHS, eps, false);
        }
    }
    for (name, gen) in [
        (format!("{tiny:e} × N(0,1)"), scaled(tiny)),
        (format!("{huge:e} × N(0,1)"), scaled(huge)),
        ("subnormal".to_string(), bits::<F>(0..=0)),
        (
            "mixed exponents (all finite)".to_string(),
            bits::<F>(0..=max_biased),
        ),
    ] {
        for eps in [0.0, 1e-5] {
            forward_line::<F>(&mut rng, &name, &gen, &SOME_LENGTHS, eps, false);
        }
    }
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("gamma, random normal", random(Kind::Normal)),
            ("gamma, random uniform", random(Kind::Uniform)),
        ] {
            forward_line::<F>(&mut rng, name, &gen, &LENGTHS, eps, true);
        }
        let name = format!("gamma, {huge:e} × N(0,1)");
        forward_line::<F>(&mut rng, &name, &scaled(huge), &SOME_LENGTHS, eps, true);
    }
}

// ----------------------------------------------------------------------------------------------
// Backward.

/// Measures `backward` (and `backward_with_stats`, reported only) on batches of rows of every
/// length with `dy` from `N(0, 1)` and gamma uniform in `[0.5, 2]`, and prints one table line.
fn backward_line<F: Float>(
    rng: &mut StdRng,
    name: &str,
    gen: &RowGen,
    lengths: &[usize],
    eps: f64,
) {
    let fmt = format::<F>();
    let eps_f = of::<F>(eps);
    let eps = wide(eps_f);
    let (mut rows, mut dx_max, mut dx_sum, mut dx_values) = (0usize, 0f64, 0f64, 0usize);
    let (mut dg_max, mut saved_max) = (0f64, 0f64);
    for &n in lengths {
        for _ in 0..(rows_for(n) / 16).max(4) {
            let m = rng.random_range(1..=(4096 / n).clamp(2, 64));
            let x = Array2::from_shape_fn((m, n), |_| ());
            let x: Array2<F> = {
                let mut out = x.mapv(|_| F::zero());
                for mut row in out.rows_mut() {
                    for (o, v) in row.iter_mut().zip(gen(rng, n)) {
                        *o = of(v);
                    }
                }
                out
            };
            let dy = Array2::from_shape_fn((m, n), |_| of::<F>(normal(rng)));
            let gamma: Vec<f64> = (0..n)
                .map(|_| wide(of::<F>(rng.random_range(0.5..=2.0))))
                .collect();
            let layer = RmsNorm::new(eps_f)
                .and_then(|l| l.with_gamma(Array1::from_iter(gamma.iter().map(|&g| of::<F>(g)))))
                .expect("valid layer");
            let grads = layer.backward(&x, &dy).expect("backward");
            let (_, rstd) = layer.forward_with_stats(&x).expect("forward");
            let saved = layer.backward_with_stats(&x, &rstd, &dy).expect("backward");
            let mut sums = ParamGradients::new(n);
            for r in 0..m {
                rows += 1;
                let xv: Vec<f64> = x.row(r).iter().map(|&v| wide(v)).collect();
                let dyv: Vec<f64> = dy.row(r).iter().map(|&v| wide(v)).collect();
                let exact = rms_input_gradient(&xv, &dyv, Some(&gamma), eps);
                for (j, want) in exact.iter().enumerate() {
                    let units = forward_units(wide(grads.input[[r, j]]), want, fmt);
                    dx_max = dx_max.max(units);
                    dx_sum += units;
                    dx_values += 1;
                    let units = forward_units(wide(saved.input[[r, j]]), want, fmt);
                    saved_max = saved_max.max(units);
                }
                sums.add_normalized(&RmsRow::new(&xv).normalized(eps), &dyv);
            }
            let computed = grads.gamma.expect("dgamma");
            for ((&got, want), scale) in computed
                .iter()
                .zip(&sums.gamma())
                .zip(sums.gamma_magnitude())
            {
                dg_max = dg_max.max(sum_units(wide(got), want, scale, fmt));
            }
        }
    }
    println!(
        "| {name} | {} | {eps:e} | {rows} | {} | {} | {} | {} | {} |",
        fmt.name(),
        sci(dx_max),
        sci(dx_sum / dx_values as f64),
        sci(dg_max),
        flag(dx_max.max(dg_max) / BACKWARD_UNITS),
        sci(saved_max),
    );
}

fn backward_table<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (tiny, huge) = match format::<F>() {
        Format::F32 => (1e-30, 1e37),
        Format::F64 => (1e-300, 1e300),
    };
    let lengths = [1, 2, 3, 7, 8, 17, 33, 64, 100, 768];
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("random normal", random(Kind::Normal)),
            ("random uniform", random(Kind::Uniform)),
            ("random integers -3..=3", integers()),
            ("offset 1e3 + N(0,1)", offset(1e3, 1.0)),
        ] {
            backward_line::<F>(&mut rng, name, &gen, &lengths, eps);
        }
        let name = format!("{huge:e} × N(0,1)");
        backward_line::<F>(&mut rng, &name, &scaled(huge), &lengths, eps);
        let name = format!("{tiny:e} × N(0,1), n ≥ 2");
        backward_line::<F>(&mut rng, &name, &scaled(tiny), &lengths[1..], eps);
    }
    // One-element rows with eps 0 and a tiny |x| (exact dx = 0), which the general formula got
    // wrong by up to 1e24 units (f32) and 1e285 (f64) before they got their closed form.
    let name = format!("{tiny:e} × N(0,1), n = 1");
    backward_line::<F>(&mut rng, &name, &scaled(tiny), &[1], 0.0);
}

fn main() {
    println!("### RmsNorm forward: error in units of `F::EPSILON * max(1, |y|)`\n");
    println!(
        "`error/bound` is the largest ratio of the error to the bound `tests/rms_accuracy.rs` \
         asserts (f32: 1 unit; f64: 2 units; with gamma, f64: `2 * |gamma| * max(1, |y|) / \
         max(1, |z|) + 1/2`); above 1 means the bound is missed.\n"
    );
    println!("| scenario | type | eps | rows | max units | mean units | error/bound |");
    println!("|---|---|---|---:|---:|---:|---:|");
    forward_table::<f32>(1);
    forward_table::<f64>(2);

    println!("\n### RmsNorm backward: `dx` in units of `F::EPSILON * max(1, |dx|)`\n");
    println!(
        "gamma uniform in `[0.5, 2]`, `dy` N(0,1). `dgamma` is in units of \
         `F::EPSILON * max(1, sum_r |dy_rj xhat_rj|)`. `error/bound` is the larger of both over \
         the 4-unit target. The last column is `backward_with_stats` (`dx`, reported only: its \
         saved `rstd` is rounded to F).\n"
    );
    println!(
        "| scenario | type | eps | rows | dx: max units | dx: mean units | dgamma: max units | error/bound | with_stats dx: max units |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    backward_table::<f32>(3);
    backward_table::<f64>(4);
}
