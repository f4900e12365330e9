//! Measures the accuracy of `LayerNorm::backward` and `backward_with_stats` against the exact
//! rational reference of the tests (`tests/common/exact_backward.rs`), on the scenarios of
//! `tests/backward_accuracy.rs` with more rows, and prints a markdown table.
//!
//! ```text
//! cargo run --release --example backward_accuracy
//! ```
//!
//! Units (see `tests/backward_accuracy.rs`): `dx` and `dbeta` in units of
//! `F::EPSILON * max(1, |exact|)`; `dgamma` in units of `F::EPSILON * max(1, sum_r |dy xhat|)`
//! (and, for comparison, of `F::EPSILON * max(1, |exact|)`). All random generators are seeded:
//! the output is reproducible.

// The reference, the bounds of the test and the helpers shared with it, at the crate root as
// `tests/common/mod.rs` declares them (they refer to each other as `super::...`).
#[allow(dead_code)]
#[path = "../tests/common/backward_bounds.rs"]
mod backward_bounds;
#[allow(dead_code)] // The tests use more of the reference than this example.
#[path = "../tests/common/exact.rs"]
mod exact;
#[allow(dead_code)]
#[path = "../tests/common/exact_backward.rs"]
mod exact_backward;
#[allow(dead_code)]
#[path = "../tests/common/harness.rs"]
mod harness;

use backward_bounds::{backward_errors, Batch, Params, Source};
use exact::Format;
use harness::{flag, format, normal, of, offset, random, scaled, sci, Kind, RowGen};
use ndarray::Array2;
use ndarray_layernorm::Float;
use num_traits::Zero;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths, including the awkward ones around SIMD/unroll widths.
const LENGTHS: [usize; 16] = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 100, 129, 257, 768];
/// About this many elements per row length and scenario, in batches of at most 64 rows.
const ELEMENTS: usize = 6000;

// ----------------------------------------------------------------------------------------------
// Row generators: the distributions of tests/backward_accuracy.rs (from
// tests/common/harness.rs), and constant rows.

/// A constant row, the constant `2^U(-40, 40) * N(0, 1)`.
fn constant() -> RowGen {
    Box::new(|rng, n| {
        let c = normal(rng) * 2f64.powf(rng.random_range(-40.0..40.0));
        vec![c; n]
    })
}

// ----------------------------------------------------------------------------------------------
// Measurement.

/// Measured errors of one scenario.
#[derive(Default)]
struct Line {
    rows: usize,
    dx_values: usize,
    dx_max: f64,
    dx_sum: f64,
    /// `dx` in units of `EPSILON * max(1, T_i)` (`RowTerms::terms`), on rows of more than one
    /// element with `|mean| <= std` (`None`: no such row).
    dx_terms_max: Option<f64>,
    dgamma_max: Option<f64>,
    dgamma_own_max: Option<f64>,
    dbeta_max: Option<f64>,
    /// Largest `error / bound` over `dx`, and over `dgamma` and `dbeta`.
    dx_ratio: f64,
    param_ratio: f64,
    /// Whether any bound went beyond the target (offset rows, `f32` saved statistics).
    extended: bool,
}

fn max_opt(a: Option<f64>, b: f64) -> Option<f64> {
    Some(a.map_or(b, |a| a.max(b)))
}

/// Runs backward on one batch and measures it against the reference, with the bounds of the
/// test ([`backward_errors`]).
fn measure<F: Float>(line: &mut Line, rng: &mut StdRng, batch: Batch<F>) {
    let n = batch.x.ncols();
    let errors = backward_errors(rng, &batch);
    for row in &errors.rows {
        line.rows += 1;
        let (mean, var) = (row.exact.mean(), row.exact.var());
        let centered = n > 1 && (var.is_zero() || &mean * &mean <= var);
        line.extended |= row.c > 0.0 || row.rho > 0.0;
        for dx in &row.dx {
            let units = dx.error.units;
            line.dx_values += 1;
            line.dx_max = line.dx_max.max(units);
            line.dx_sum += units;
            line.dx_ratio = line.dx_ratio.max(units / dx.error.tol);
            if centered {
                line.dx_terms_max = max_opt(line.dx_terms_max, dx.terms_units);
            }
        }
    }
    for dgamma in &errors.dgamma {
        let units = dgamma.error.units;
        line.dgamma_max = max_opt(line.dgamma_max, units);
        line.param_ratio = line.param_ratio.max(units / dgamma.error.tol);
        line.dgamma_own_max = max_opt(line.dgamma_own_max, dgamma.own_units);
    }
    for dbeta in &errors.dbeta {
        line.dbeta_max = max_opt(line.dbeta_max, dbeta.units);
        line.param_ratio = line.param_ratio.max(dbeta.units / dbeta.tol);
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".to_string(), sci)
}

/// Measures one scenario on every length of `lengths` and prints its line.
fn scenario<F: Float>(
    rng: &mut StdRng,
    name: &str,
    gen: &RowGen,
    lengths: &[usize],
    eps: f64,
    params: Params,
    source: Source,
) {
    let mut line = Line::default();
    let eps_f = of::<F>(eps);
    for &n in lengths {
        let mut rows = (ELEMENTS / n).clamp(16, 1024);
        while rows > 0 {
            let m = rng.random_range(1..=64).min(rows);
            rows -= m;
            let x = Array2::from_shape_vec((m, n), (0..m).flat_map(|_| gen(rng, n)).collect())
                .expect("shape")
                .mapv(of::<F>);
            let dy = Array2::from_shape_fn((m, n), |_| of::<F>(normal(rng)));
            measure(&mut line, rng, Batch::new(&x, &dy, eps_f, params, source));
        }
    }
    let bound = match (line.extended, format::<F>(), source) {
        (false, _, _) => "4",
        (true, Format::F32, Source::Saved) => "4 + f32 stats",
        (true, _, _) => "4 + mean rounding",
    };
    let param_ratio = if line.dgamma_max.is_some() || line.dbeta_max.is_some() {
        flag(line.param_ratio)
    } else {
        "–".to_string()
    };
    let params = match params {
        Params::Plain => "",
        Params::Ones => ", gamma = 1",
        Params::Random => ", random gamma",
    };
    let source = match source {
        Source::Recompute => "",
        Source::Saved => ", saved stats",
    };
    println!(
        "| {name}{params}{source} | {} | {eps:e} | {} | {} | {} | {} | {} | {} | {} | {bound} | {} | {param_ratio} |",
        format::<F>().name(),
        line.rows,
        sci(line.dx_max),
        sci(line.dx_sum / line.dx_values.max(1) as f64),
        opt(line.dx_terms_max),
        opt(line.dgamma_max),
        opt(line.dgamma_own_max),
        opt(line.dbeta_max),
        flag(line.dx_ratio),
    );
}

fn table<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let rng = &mut rng;
    let (r, s) = (Source::Recompute, Source::Saved);
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("random normal", random(Kind::Normal)),
            ("random uniform", random(Kind::Uniform)),
        ] {
            for params in [Params::Plain, Params::Ones, Params::Random] {
                scenario::<F>(rng, name, &gen, &LENGTHS, eps, params, r);
            }
        }
        for (name, gen) in [
            ("N(0,1)", scaled(1.0)),
            ("2^-6 × N(0,1)", scaled(2f64.powi(-6))),
            ("2^6 × N(0,1)", scaled(2f64.powi(6))),
        ] {
            scenario::<F>(rng, name, &gen, &LENGTHS, eps, Params::Random, r);
        }
    }
    let offsets: &[f64] = match format::<F>() {
        Format::F32 => &[1e3, 1e5],
        Format::F64 => &[1e3, 1e6, 1e9],
    };
    for &o in offsets {
        for eps in [1e-5, 0.0] {
            let name = format!("offset {o:e} + N(0,1)");
            scenario::<F>(
                rng,
                &name,
                &offset(o, 1.0),
                &LENGTHS,
                eps,
                Params::Random,
                r,
            );
        }
    }
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("random normal", random(Kind::Normal)),
            ("random uniform", random(Kind::Uniform)),
            ("N(0,1)", scaled(1.0)),
            ("offset 1e3 + N(0,1)", offset(1e3, 1.0)),
        ] {
            scenario::<F>(rng, name, &gen, &LENGTHS, eps, Params::Random, s);
        }
    }
    for source in [r, s] {
        for eps in [1e-5, 0.0] {
            let gen = constant();
            scenario::<F>(
                rng,
                "constant rows",
                &gen,
                &LENGTHS,
                eps,
                Params::Random,
                source,
            );
        }
    }
}

fn main() {
    println!("### Backward: errors against the exact reference\n");
    println!(
        "Units: `dx` and `dbeta` in units of `F::EPSILON * max(1, |exact|)`; `dgamma` in units \
         of `F::EPSILON * max(1, sum_r |dy_rj * xhat_rj|)` (a sum over rows is determined to a \
         few units of the sum of the magnitudes of its terms), and for comparison in units of \
         `F::EPSILON * max(1, |exact|)`. `dx, units of terms` is the `dx` error in units of \
         `F::EPSILON * max(1, T_i)` with `T_i = (|g_i| + mean|g| + |xhat_i| mean|g xhat|) / s`, \
         on the rows with `|mean| <= std` (– if none): small values there mean that large `dx` \
         errors are cancellation between the terms of `dx_i`. `bound` is what \
         `tests/backward_accuracy.rs` asserts: 4 units, plus (offset rows in `f64`) the effect \
         of the rounding of the mean, or (`f32` saved statistics) of the `f32` mean and `rstd`, \
         element by element; `error/bound` is the largest ratio of the error to that \
         bound, for `dx` and for the parameter gradients (above 1: the bound is missed).\n"
    );
    println!(
        "| scenario | type | eps | rows | dx max units | dx mean | dx max, units of terms | \
         dgamma max | dgamma max, units of \\|dgamma\\| | dbeta max | bound | dx error/bound | \
         params error/bound |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    table::<f32>(1);
    table::<f64>(2);
}
