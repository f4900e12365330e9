//! Measures the accuracy of `RmsNorm::forward` and `RmsNorm::backward` against the exact
//! reference of the tests (`tests/common/exact_rms.rs`), on the scenarios of
//! `tests/rms_accuracy.rs` with more rows, and prints markdown tables.
//!
//! ```text
//! cargo run --release --example rms_accuracy
//! ```
//!
//! Errors are in units of `F::EPSILON * max(1, |exact|)` (`dgamma`: of
//! `F::EPSILON * max(1, sum_r |dy_rj xhat_rj|)`). Those units cannot see errors in outputs far
//! below 1 (tiny or subnormal rows next to eps, and their `dgamma`; the `dx` of huge rows):
//! there the tables also give the error in ulps of the exact value in `F`, with the bounds of
//! the tests. All random generators are seeded: the output is reproducible.

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

use exact::{forward_units, ulp_units, Dyadic, Format};
use exact_backward::{sum_units, ParamGradients};
use exact_rms::{
    affine_tol, dx_terms, forward_tol, forward_ulps_tol, gradient_ulps_tol, proportional_dy,
    rms_input_gradient, short_significand_row, DyGen, RmsRow, DGAMMA_UNITS, DX_UNITS,
};
use harness::{
    bits, flag, format, integers, normal, of, offset, random, scaled, sci, wide, Kind, RowGen,
};
use ndarray::{Array1, Array2};
use ndarray_layernorm::{Float, RmsNorm};
use num_traits::Signed;
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

/// The largest error in ulps and the largest ratio to its bound, where measured.
#[derive(Default)]
struct Ulps(Option<(f64, f64)>);

impl Ulps {
    fn add(&mut self, ulps: f64, bound: f64) {
        let (max, ratio) = self.0.unwrap_or((0.0, 0.0));
        self.0 = Some((max.max(ulps), ratio.max(ulps / bound)));
    }

    /// `max` or `–` when not measured.
    fn max(&self) -> String {
        self.0.map_or("–".into(), |(m, _)| sci(m))
    }

    /// The larger ratio of two measurements, flagged, or `–`.
    fn ratio(a: &Ulps, b: &Ulps) -> String {
        match (a.0, b.0) {
            (None, None) => "–".into(),
            _ => flag(a.0.map_or(0.0, |r| r.1).max(b.0.map_or(0.0, |r| r.1))),
        }
    }
}

/// Measures `forward` (with a random gamma in `[-2, 2)` per row if `with_gamma`) on
/// `rows_for(n)` rows of every length, and prints one table line; with `in_ulps` also in ulps
/// of the exact value (the scenarios where eps dominates a tiny row).
#[allow(clippy::too_many_arguments)]
fn forward_line<F: Float>(
    rng: &mut StdRng,
    name: &str,
    gen: &RowGen,
    lengths: &[usize],
    eps: f64,
    with_gamma: bool,
    in_ulps: bool,
) {
    let fmt = format::<F>();
    let eps = wide(of::<F>(eps)); // the exact epsilon the layer uses
    let (mut rows, mut values, mut max, mut sum, mut ratio) = (0usize, 0usize, 0f64, 0f64, 0f64);
    let mut ulps = Ulps::default();
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
                if in_ulps {
                    let u = ulp_units(wide(c), &z.approx.to_rational(), fmt);
                    ulps.add(u, forward_ulps_tol(fmt, with_gamma));
                }
            }
        }
    }
    println!(
        "| {name} | {} | {eps:e} | {rows} | {} | {} | {} | {} | {} |",
        fmt.name(),
        sci(max),
        sci(sum / values as f64),
        flag(ratio),
        ulps.max(),
        Ulps::ratio(&ulps, &Ulps::default()),
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
            forward_line::<F>(&mut rng, name, &gen, &LENGTHS, eps, false, false);
        }
    }
    let offsets: &[f64] = match format::<F>() {
        Format::F32 => &[1e3, 1e5],
        Format::F64 => &[1e3, 1e6, 1e9],
    };
    for &o in offsets {
        for eps in [1e-5, 0.0] {
            let name = format!("offset {o:e} + N(0,1)");
            let gen = offset(o, 1.0);
            forward_line::<F>(&mut rng, &name, &gen, &SOME_LENGTHS, eps, false, false);
        }
    }
    for (name, gen, tiny_outputs) in [
        (format!("{tiny:e} × N(0,1)"), scaled(tiny), true),
        (format!("{huge:e} × N(0,1)"), scaled(huge), false),
        ("subnormal".to_string(), bits::<F>(0..=0), true),
        (
            "mixed exponents (all finite)".to_string(),
            bits::<F>(0..=max_biased),
            false,
        ),
    ] {
        for eps in [0.0, 1e-5] {
            let in_ulps = tiny_outputs && eps > 0.0;
            forward_line::<F>(&mut rng, &name, &gen, &SOME_LENGTHS, eps, false, in_ulps);
        }
    }
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("gamma, random normal", random(Kind::Normal)),
            ("gamma, random uniform", random(Kind::Uniform)),
        ] {
            forward_line::<F>(&mut rng, name, &gen, &LENGTHS, eps, true, false);
        }
        let name = format!("gamma, {huge:e} × N(0,1)");
        forward_line::<F>(
            &mut rng,
            &name,
            &scaled(huge),
            &SOME_LENGTHS,
            eps,
            true,
            false,
        );
        let name = format!("gamma, {tiny:e} × N(0,1)");
        let in_ulps = eps > 0.0;
        forward_line::<F>(
            &mut rng,
            &name,
            &scaled(tiny),
            &SOME_LENGTHS,
            eps,
            true,
            in_ulps,
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Backward.

/// What a backward line measures besides the units.
#[derive(Clone, Copy)]
struct BackwardLine {
    /// Gamma uniform in `[0.5, 2]` (else ones: `dy ~ c x` keeps `g = dy` proportional to `x`).
    random_gamma: bool,
    /// `dx` also in ulps of the exact value (huge rows: `|dx|` far below 1).
    dx_ulps: bool,
    /// `dgamma` also in ulps of the exact value (tiny rows next to eps).
    dgamma_ulps: bool,
}

const PLAIN: BackwardLine = BackwardLine {
    random_gamma: true,
    dx_ulps: false,
    dgamma_ulps: false,
};

/// `dy` from `N(0, 1)`.
fn normal_dy() -> DyGen {
    Box::new(|rng, x| (0..x.len()).map(|_| normal(rng)).collect())
}

/// Measures `backward` (and `backward_with_stats`, reported only) on batches of rows of every
/// length with `dy` from `dy_gen` and gamma as `what` says, and prints one table line.
#[allow(clippy::too_many_arguments)]
fn backward_line<F: Float>(
    rng: &mut StdRng,
    name: &str,
    gen: &RowGen,
    dy_gen: &DyGen,
    lengths: &[usize],
    eps: f64,
    what: BackwardLine,
) {
    let fmt = format::<F>();
    let eps_f = of::<F>(eps);
    let eps = wide(eps_f);
    let (mut rows, mut dx_max, mut dx_sum, mut dx_values) = (0usize, 0f64, 0f64, 0usize);
    let (mut dg_max, mut saved_max) = (0f64, 0f64);
    let (mut dx_ulps, mut dg_ulps) = (Ulps::default(), Ulps::default());
    for &n in lengths {
        for _ in 0..(rows_for(n) / 16).max(4) {
            let m = rng.random_range(1..=(4096 / n).clamp(2, 64));
            let mut x = Array2::<F>::zeros((m, n));
            let mut dy = Array2::<F>::zeros((m, n));
            for (mut xr, mut dyr) in x.rows_mut().into_iter().zip(dy.rows_mut()) {
                let xv: Vec<f64> = gen(rng, n).into_iter().map(|v| wide(of::<F>(v))).collect();
                for (o, v) in dyr.iter_mut().zip(dy_gen(rng, &xv)) {
                    *o = of(v);
                }
                for (o, v) in xr.iter_mut().zip(xv) {
                    *o = of(v);
                }
            }
            let gamma: Vec<f64> = if what.random_gamma {
                (0..n)
                    .map(|_| wide(of::<F>(rng.random_range(0.5..=2.0))))
                    .collect()
            } else {
                vec![1.0; n]
            };
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
                let xhat = RmsRow::new(&xv).normalized(eps);
                let terms = what
                    .dx_ulps
                    .then(|| dx_terms(&xv, &dyv, Some(&gamma), &xhat));
                for (j, want) in exact.iter().enumerate() {
                    let got = wide(grads.input[[r, j]]);
                    let units = forward_units(got, want, fmt);
                    dx_max = dx_max.max(units);
                    dx_sum += units;
                    dx_values += 1;
                    let units = forward_units(wide(saved.input[[r, j]]), want, fmt);
                    saved_max = saved_max.max(units);
                    if let Some(terms) = &terms {
                        let want = want.approx.to_rational();
                        // As in the test: f64 results that are subnormal round twice.
                        let subnormal = want.abs() < Dyadic::pow2(-1022).to_rational();
                        let rounding = if fmt == Format::F64 && subnormal {
                            1.0
                        } else {
                            0.5
                        };
                        let bound = gradient_ulps_tol(fmt, &want, terms[j], rounding);
                        dx_ulps.add(ulp_units(got, &want, fmt), bound);
                    }
                }
                sums.add_normalized(&xhat, &dyv);
            }
            let computed = grads.gamma.expect("dgamma");
            for ((&got, want), scale) in computed
                .iter()
                .zip(&sums.gamma())
                .zip(sums.gamma_magnitude())
            {
                dg_max = dg_max.max(sum_units(wide(got), want, scale, fmt));
                if what.dgamma_ulps {
                    let want = want.approx.to_rational();
                    let bound = gradient_ulps_tol(fmt, &want, scale.to_f64(), 0.5);
                    dg_ulps.add(ulp_units(wide(got), &want, fmt), bound);
                }
            }
        }
    }
    println!(
        "| {name} | {} | {eps:e} | {rows} | {} | {} | {} | {} | {} | {} | {} | {} |",
        fmt.name(),
        sci(dx_max),
        sci(dx_sum / dx_values as f64),
        sci(dg_max),
        flag((dx_max / DX_UNITS).max(dg_max / DGAMMA_UNITS)),
        dx_ulps.max(),
        dg_ulps.max(),
        Ulps::ratio(&dx_ulps, &dg_ulps),
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
    let dy = normal_dy();
    for eps in [1e-5, 0.0] {
        for (name, gen) in [
            ("random normal", random(Kind::Normal)),
            ("random uniform", random(Kind::Uniform)),
            ("random integers -3..=3", integers()),
            ("offset 1e3 + N(0,1)", offset(1e3, 1.0)),
        ] {
            backward_line::<F>(&mut rng, name, &gen, &dy, &lengths, eps, PLAIN);
        }
        let name = format!("{huge:e} × N(0,1)");
        let what = BackwardLine {
            dx_ulps: true,
            ..PLAIN
        };
        backward_line::<F>(&mut rng, &name, &scaled(huge), &dy, &lengths, eps, what);
        let name = format!("{tiny:e} × N(0,1), n ≥ 2");
        let what = BackwardLine {
            dgamma_ulps: eps > 0.0,
            ..PLAIN
        };
        backward_line::<F>(
            &mut rng,
            &name,
            &scaled(tiny),
            &dy,
            &lengths[1..],
            eps,
            what,
        );
    }
    // One-element rows with eps 0 and a tiny |x| (exact dx = 0), which the general formula got
    // wrong by up to 1e24 units (f32) and 1e285 (f64) before they got their closed form.
    let name = format!("{tiny:e} × N(0,1), n = 1");
    backward_line::<F>(&mut rng, &name, &scaled(tiny), &dy, &[1], 0.0, PLAIN);
    // dy = c x + noise, gamma 1: the terms of dx cancel (down to the noise, or to 0).
    let gen: RowGen = Box::new(short_significand_row);
    let ones = BackwardLine {
        random_gamma: false,
        ..PLAIN
    };
    for relative in [0.0, 1e-6] {
        for eps in [1e-5, 0.0] {
            let name = format!("dy = c x + {relative:e} noise, gamma 1");
            let dy = proportional_dy(relative);
            backward_line::<F>(&mut rng, &name, &gen, &dy, &lengths, eps, ones);
        }
    }
}

fn main() {
    println!("### RmsNorm forward: error in units of `F::EPSILON * max(1, |y|)`\n");
    println!(
        "`error/bound` is the largest ratio of the error to the bound `tests/rms_accuracy.rs` \
         asserts (f32: 1 unit; f64: 2 units; with gamma, f64: `2 * |gamma| * max(1, |y|) / \
         max(1, |z|) + 1/2`); above 1 means the bound is missed. Where eps dominates a tiny or \
         subnormal row (outputs far below 1), the error is also given in ulps of the exact \
         value, and `ulps/bound` against the bound the test asserts (f32: 0.5 + 2^-20, so that \
         a correctly rounded result shows as 1.000; f64: 1.5, with gamma 2.5).\n"
    );
    println!(
        "| scenario | type | eps | rows | max units | mean units | error/bound | max ulps | \
         ulps/bound |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    forward_table::<f32>(1);
    forward_table::<f64>(2);

    println!("\n### RmsNorm backward: `dx` in units of `F::EPSILON * max(1, |dx|)`\n");
    println!(
        "gamma uniform in `[0.5, 2]` (1 for `dy = c x + noise`), `dy` N(0,1) unless said \
         otherwise. `dgamma` is in units of `F::EPSILON * max(1, sum_r |dy_rj xhat_rj|)`. \
         `error/bound` is the larger of both over the bound the test asserts (1 unit each; the \
         issue's target is 4). For huge rows (`|dx|` far below 1) `dx`, and for tiny rows next \
         to eps `dgamma`, are also given in ulps of the exact value, with `ulps/bound` against \
         the test's bound (half an ulp plus the working-precision error relative to the \
         magnitude of the terms: 1.000 is a correctly rounded result). The last column is \
         `backward_with_stats` (`dx`, reported only: its saved `rstd` is rounded to F).\n"
    );
    println!(
        "| scenario | type | eps | rows | dx: max units | dx: mean units | dgamma: max units | \
         error/bound | dx: max ulps | dgamma: max ulps | ulps/bound | with_stats dx: max units |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    backward_table::<f32>(3);
    backward_table::<f64>(4);
}
