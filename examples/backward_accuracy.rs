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

#[allow(dead_code)] // The tests use more of the reference than this example.
#[path = "../tests/common/exact.rs"]
mod exact;
#[allow(dead_code)]
#[path = "../tests/common/exact_backward.rs"]
mod exact_backward;

use exact::{forward_units, mean_rounding_units, ExactRow, Format};
use exact_backward::{input_gradient, sum_units, ParamGradients, RowTerms};
use ndarray::{Array1, Array2, Ix2};
use ndarray_layernorm::{Float, Gradients, LayerNorm};
use ndarray_rand::rand_distr::StandardNormal;
use num_traits::Zero;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths, including the awkward ones around SIMD/unroll widths.
const LENGTHS: [usize; 16] = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 100, 129, 257, 768];
/// The target asserted by the tests (see `tests/backward_accuracy.rs`).
const TARGET_UNITS: f64 = 4.0;
/// About this many elements per row length and scenario, in batches of at most 64 rows.
const ELEMENTS: usize = 6000;

fn of<F: Float>(v: f64) -> F {
    F::from_f64(v).expect("representable")
}

fn wide<F: Float>(v: F) -> f64 {
    v.to_f64().expect("f32/f64 converts")
}

fn format<F: Float>() -> Format {
    if wide(F::epsilon()) == f64::EPSILON {
        Format::F64
    } else {
        Format::F32
    }
}

fn normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

// ----------------------------------------------------------------------------------------------
// Row generators (the distributions of tests/backward_accuracy.rs, and a few more).

type Gen = Box<dyn Fn(&mut StdRng, usize) -> Vec<f64>>;

/// `N(mu, sigma)`, `sigma = 2^U(-8, 8)`, `|mu| <= sigma / 2`.
fn random_normal() -> Gen {
    Box::new(|rng, n| {
        let scale = 2f64.powf(rng.random_range(-8.0..8.0));
        let mu = scale * rng.random_range(-0.5..0.5);
        (0..n).map(|_| mu + scale * normal(rng)).collect()
    })
}

/// `U(-s, s)`, `s = 2^U(-8, 8)`.
fn random_uniform() -> Gen {
    Box::new(|rng, n| {
        let scale = 2f64.powf(rng.random_range(-8.0..8.0));
        (0..n)
            .map(|_| scale * rng.random_range(-1.0..1.0))
            .collect()
    })
}

/// `scale * N(0, 1)`.
fn scaled(scale: f64) -> Gen {
    Box::new(move |rng, n| (0..n).map(|_| scale * normal(rng)).collect())
}

/// `±offset + N(0, 1)`.
fn offset(offset: f64) -> Gen {
    Box::new(move |rng, n| {
        let offset = if rng.random::<bool>() {
            offset
        } else {
            -offset
        };
        (0..n).map(|_| offset + normal(rng)).collect()
    })
}

/// A constant row, the constant `2^U(-40, 40) * N(0, 1)`.
fn constant() -> Gen {
    Box::new(|rng, n| {
        let c = normal(rng) * 2f64.powf(rng.random_range(-40.0..40.0));
        vec![c; n]
    })
}

// ----------------------------------------------------------------------------------------------
// Layers and sources.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Params {
    /// No gamma, no beta.
    Plain,
    /// gamma = 1, beta = 0.
    Ones,
    /// gamma uniform in `[0.5, 2]`, beta `N(0, 1)`.
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `backward`.
    Recompute,
    /// `backward_with_stats` with the statistics of `forward_with_stats`.
    Saved,
}

fn layer<F: Float>(rng: &mut StdRng, n: usize, eps: F, params: Params) -> LayerNorm<F> {
    match params {
        Params::Plain => LayerNorm::new(eps),
        Params::Ones => LayerNorm::affine(n, eps),
        Params::Random => {
            let gamma = Array1::from_iter((0..n).map(|_| of::<F>(rng.random_range(0.5..=2.0))));
            let beta = Array1::from_iter((0..n).map(|_| of::<F>(normal(rng))));
            LayerNorm::affine(n, eps)
                .and_then(|l| l.with_gamma(gamma))
                .and_then(|l| l.with_beta(beta))
        }
    }
    .expect("valid layer")
}

fn run<F: Float>(
    layer: &LayerNorm<F>,
    x: &Array2<F>,
    dy: &Array2<F>,
    source: Source,
) -> Gradients<F, Ix2> {
    match source {
        Source::Recompute => layer.backward(x, dy),
        Source::Saved => {
            let (_, stats) = layer.forward_with_stats(x).expect("forward");
            layer.backward_with_stats(x, &stats, dy)
        }
    }
    .expect("backward")
}

// ----------------------------------------------------------------------------------------------
// The bounds of tests/backward_accuracy.rs (see the comments there).

/// `c'` (absolute): the shift of `xhat` due to the rounding of the mean, beyond the target.
fn mean_shift<F: Float>(row: &ExactRow, eps: f64, source: Source) -> f64 {
    let (mean, var) = (row.mean(), row.var());
    if var.is_zero() {
        return 0.0;
    }
    let units = match (format::<F>(), source) {
        (Format::F32, Source::Recompute) => 0.0,
        (Format::F32, Source::Saved) => {
            mean_rounding_units(&mean, &var, eps, Format::F32) * (1.0 + 2f64.powi(-28))
        }
        (Format::F64, Source::Recompute) => 0.0,
        (Format::F64, Source::Saved) => mean_rounding_units(&mean, &var, eps, Format::F64),
    };
    units * format::<F>().epsilon()
}

/// `rho'` (absolute): the relative error of `1/s` beyond the target.
fn rstd_error<F: Float>(source: Source, c: f64) -> f64 {
    match (format::<F>(), source) {
        (Format::F32, Source::Saved) => 0.5 * (1.0 + 2f64.powi(-26)) * f64::from(f32::EPSILON),
        (Format::F32, Source::Recompute) => 0.0,
        (Format::F64, Source::Recompute) => 0.0,
        (Format::F64, Source::Saved) => 2.25 * f64::EPSILON + c * c / 2.0,
    }
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

/// Runs backward on one batch and measures it against the reference.
#[allow(clippy::too_many_arguments)]
fn measure<F: Float>(
    line: &mut Line,
    rng: &mut StdRng,
    x: &Array2<F>,
    dy: &Array2<F>,
    eps: F,
    params: Params,
    source: Source,
) {
    let fmt = format::<F>();
    let unit = fmt.epsilon();
    let n = x.ncols();
    let layer = layer(rng, n, eps, params);
    let grads = run(&layer, x, dy, source);
    let eps = wide(eps);
    let gamma: Option<Vec<f64>> = layer.gamma().map(|g| g.iter().map(|&v| wide(v)).collect());
    let mut sums = ParamGradients::new(n);
    let mut shift = vec![0.0f64; n];
    for (r, (xr, dyr)) in x.rows().into_iter().zip(dy.rows()).enumerate() {
        line.rows += 1;
        let xv: Vec<f64> = xr.iter().map(|&v| wide(v)).collect();
        let dyv: Vec<f64> = dyr.iter().map(|&v| wide(v)).collect();
        let row = ExactRow::new(&xv);
        let (mean, var) = (row.mean(), row.var());
        let centered = n > 1 && (var.is_zero() || &mean * &mean <= var);
        let c = mean_shift::<F>(&row, eps, source);
        let rho = rstd_error::<F>(source, c);
        line.extended |= c > 0.0 || rho > 0.0;
        let terms = RowTerms::new(&xv, &dyv, gamma.as_deref(), eps);
        let exact = input_gradient(&xv, &dyv, gamma.as_deref(), eps);
        for (i, (&got, want)) in grads.input.row(r).iter().zip(&exact).enumerate() {
            let units = forward_units(wide(got), want, fmt);
            let want = want.to_f64();
            let extra = if c == 0.0 && rho == 0.0 {
                0.0
            } else {
                terms.perturbed_stats_error(i, want, c, rho) / (unit * want.abs().max(1.0))
                    * (1.0 + 1e-9)
            };
            line.dx_values += 1;
            line.dx_max = line.dx_max.max(units);
            line.dx_sum += units;
            line.dx_ratio = line.dx_ratio.max(units / (TARGET_UNITS + extra));
            if centered {
                let t = units * want.abs().max(1.0) / terms.terms(i).max(1.0);
                line.dx_terms_max = max_opt(line.dx_terms_max, t);
            }
        }
        sums.add_normalized(&terms.xhat, &dyv);
        for ((s, d), y) in shift.iter_mut().zip(&dyv).zip(&terms.xhat_f64) {
            *s += d.abs() * (c * (1.0 + rho) + rho * y.abs());
        }
    }
    if let Some(dgamma) = &grads.gamma {
        let exact = sums.gamma();
        for (j, ((&got, want), scale)) in dgamma
            .iter()
            .zip(&exact)
            .zip(sums.gamma_magnitude())
            .enumerate()
        {
            let units = sum_units(wide(got), want, scale, fmt);
            let bound = TARGET_UNITS + shift[j] / (unit * scale.to_f64().max(1.0)) * (1.0 + 1e-9);
            line.dgamma_max = max_opt(line.dgamma_max, units);
            line.param_ratio = line.param_ratio.max(units / bound);
            let own = forward_units(wide(got), want, fmt);
            line.dgamma_own_max = max_opt(line.dgamma_own_max, own);
        }
    }
    if let Some(dbeta) = &grads.beta {
        for (&got, want) in dbeta.iter().zip(sums.beta()) {
            let units = forward_units(wide(got), &want, fmt);
            line.dbeta_max = max_opt(line.dbeta_max, units);
            line.param_ratio = line.param_ratio.max(units / TARGET_UNITS);
        }
    }
}

/// A compact number: fixed for moderate values, scientific otherwise.
fn sci(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if (1e-3..1e4).contains(&v) {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".to_string(), sci)
}

/// Measures one scenario on every length of `lengths` and prints its line.
fn scenario<F: Float>(
    rng: &mut StdRng,
    name: &str,
    gen: &Gen,
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
            measure(&mut line, rng, &x, &dy, eps_f, params, source);
        }
    }
    let bound = match (line.extended, format::<F>(), source) {
        (false, _, _) => "4",
        (true, Format::F32, Source::Saved) => "4 + f32 stats",
        (true, _, _) => "4 + mean rounding",
    };
    let flag = |ratio: f64| {
        if ratio <= 1.0 {
            sci(ratio)
        } else {
            format!("**{}** ✗", sci(ratio))
        }
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
            ("random normal", random_normal()),
            ("random uniform", random_uniform()),
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
            scenario::<F>(rng, &name, &offset(o), &LENGTHS, eps, Params::Random, r);
        }
    }
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("random normal", random_normal()),
            ("random uniform", random_uniform()),
            ("N(0,1)", scaled(1.0)),
            ("offset 1e3 + N(0,1)", offset(1e3)),
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
