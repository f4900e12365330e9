//! Accuracy of `LayerNorm::backward` and `backward_with_stats` against the exact rational
//! reference in `tests/common/exact_backward.rs`.
//!
//! Error units (`F::EPSILON` is `2^-23` for `f32`, `2^-52` for `f64`):
//! * `dx`, per element: `|computed - exact| / (F::EPSILON * max(1, |exact|))`, the unit of the
//!   forward tests;
//! * `dgamma`, per column: `|computed - exact| / (F::EPSILON * max(1, sum_r |dy_rj * xhat_rj|))`.
//!   `dgamma_j` is a sum over rows whose terms carry rounding errors relative to themselves
//!   (`xhat` is only known to a few units), so when the terms cancel the sum is determined to a
//!   few units of the sum of their magnitudes, not of its own magnitude. The error in units of
//!   `F::EPSILON * max(1, |exact|)` is reported as well (not asserted);
//! * `dbeta`, per column: `|computed - exact| / (F::EPSILON * max(1, |exact|))` (a sum of the
//!   exact inputs `dy`, which a compensated sum rounds once).
//!
//! Every tolerance goes through [`Tally::check`]; the bounds themselves, and the measurement of
//! a batch against them, are in `tests/common/backward_bounds.rs`, which the example shares. Run
//! with `--nocapture` to see the measured maxima; `cargo run --release --example
//! backward_accuracy` measures the same scenarios on more rows.

mod common;

use common::backward_bounds::{backward_errors, layer, run, Batch, Params, Source};
use common::exact::{
    assert_brackets_sqrt, assert_central_differences, exactly, rat, within, Approx, Dyadic,
    ExactRow, Format,
};
use common::exact_backward::{input_gradient, sum_units, ParamGradients};
use common::harness::{batch, format, normal, of, offset_row, random_row, wide, Kind};
use common::tally::{assert_tallies_noted, Tally};
use ndarray_layernorm::Float;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths, including the awkward ones around SIMD/unroll widths.
const LENGTHS: [usize; 10] = [1, 2, 3, 7, 8, 17, 33, 64, 100, 768];

/// The distributions of the "random rows" scenarios.
const KINDS: [Kind; 2] = [Kind::Normal, Kind::Uniform];

/// A random number of rows for rows of length `n`: up to 64 for short rows, so that the
/// parameter sums cover many rows, fewer for long ones (debug-mode run time).
fn row_count(rng: &mut StdRng, n: usize) -> usize {
    rng.random_range(1..=(1024 / n).clamp(2, 64))
}

// ----------------------------------------------------------------------------------------------
// Scenarios.

/// The tallies of one scenario. Two record errors in other units, for the report only:
/// `dx_terms` (`backward_bounds::terms_units`) and `dgamma_own` (`dgamma` in units of
/// `EPSILON * max(1, |exact|)`).
struct Scenario {
    rows: usize,
    dx: Tally,
    dx_terms: Tally,
    dgamma: Tally,
    dgamma_own: Tally,
    dbeta: Tally,
}

impl Scenario {
    fn new(label: &str) -> Scenario {
        Scenario {
            rows: 0,
            dx: Tally::new(format!("{label}: dx")),
            dx_terms: Tally::new(format!("{label}: dx (units of the terms, report)")),
            dgamma: Tally::new(format!("{label}: dgamma (units of sum |dy xhat|)")),
            dgamma_own: Tally::new(format!("{label}: dgamma (units of |dgamma|, report)")),
            dbeta: Tally::new(format!("{label}: dbeta")),
        }
    }
}

/// Prints every tally and panics with the worst failing value of each failing one.
fn assert_scenarios(scenarios: &[Scenario]) {
    assert_tallies_noted(scenarios.iter().flat_map(|s| {
        [&s.dx, &s.dx_terms, &s.dgamma, &s.dgamma_own, &s.dbeta]
            .into_iter()
            .filter(|t| t.values > 0)
            .map(move |t| (t, format!(" ({} rows)", s.rows)))
    }));
}

// ----------------------------------------------------------------------------------------------
// Checking backward against the reference.

/// Runs backward on `x` with output gradient `dy` and checks `dx`, `dgamma` and `dbeta`
/// against the exact reference ([`backward_errors`]), with the tolerances of
/// `tests/common/backward_bounds.rs`: `dx_tol`, `dgamma_tol` and the target.
fn check_backward<F: Float>(sc: &mut Scenario, rng: &mut StdRng, batch: Batch<F>) {
    let Batch { x, dy, source, .. } = batch;
    let fmt = format::<F>();
    let n = x.ncols();
    let errors = backward_errors(rng, &batch);
    let eps = wide(batch.eps);
    let describe_params = || match &errors.gamma {
        Some(g) => format!("\n  gamma = {g:?}"),
        None => String::new(),
    };
    let rows = x.rows().into_iter().zip(dy.rows()).zip(&errors.rows);
    for (r, ((xr, dyr), row)) in rows.enumerate() {
        sc.rows += 1;
        for (i, dx) in row.dx.iter().enumerate() {
            let (got, want) = (dx.error.got, dx.error.exact);
            let detail = || {
                format!(
                    "{} {source:?} dx, row {r} of {} (n = {n}, eps = {eps:e}), element {i}: \
                     computed {got:?}, exact {want:e}\n  x = {:?}\n  dy = {:?}{}",
                    fmt.name(),
                    x.nrows(),
                    xr.to_vec(),
                    dyr.to_vec(),
                    describe_params(),
                )
            };
            sc.dx.check(dx.error.units, dx.error.tol, detail);
            sc.dx_terms.check(dx.terms_units, f64::INFINITY, detail);
        }
    }
    let rows = x.nrows();
    for (j, dgamma) in errors.dgamma.iter().enumerate() {
        let (got, magnitude) = (dgamma.error.got, dgamma.magnitude);
        let detail = || {
            format!(
                "{} {source:?} dgamma[{j}] of {rows} rows (n = {n}, eps = {eps:e}): \
                 computed {got:?}, exact {:e}, sum |dy xhat| = {magnitude:e}",
                fmt.name(),
                dgamma.error.exact,
            )
        };
        sc.dgamma
            .check(dgamma.error.units, dgamma.error.tol, detail);
        sc.dgamma_own.check(dgamma.own_units, f64::INFINITY, detail);
    }
    for (j, dbeta) in errors.dbeta.iter().enumerate() {
        let got = dbeta.got;
        sc.dbeta.check(dbeta.units, dbeta.tol, || {
            format!(
                "{} {source:?} dbeta[{j}] of {rows} rows (n = {n}): computed {got:?}, \
                 exact {:e}",
                fmt.name(),
                dbeta.exact
            )
        });
    }
}

// ----------------------------------------------------------------------------------------------
// The reference itself.

#[test]
fn reference_matches_closed_forms() {
    // n = 2, eps = 0: xhat = (-1, 1) and the output is constant (-1, 1), so dx = 0 for any dy
    // (exactly: N_i = 0).
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..50 {
        let x = [normal(&mut rng), normal(&mut rng)];
        let dy = [normal(&mut rng), normal(&mut rng)];
        let gamma = [rng.random_range(0.5..2.0), rng.random_range(0.5..2.0)];
        for g in [None, Some(&gamma[..])] {
            let dx = input_gradient(&x, &dy, g, 0.0);
            assert!(dx.iter().all(|v| exactly(v, 0.0)), "{x:?} {dy:?}: {dx:?}");
        }
        let mut sums = ParamGradients::new(2);
        sums.add_row(&x, &dy, 0.0);
        let sign = if x[0] < x[1] { -1.0 } else { 1.0 };
        let dgamma = sums.gamma();
        assert!(within(&dgamma[0], sign * dy[0]) && within(&dgamma[1], -sign * dy[1]));
    }

    // [1, 2, 3], eps 0, dy = (0, 0, 1): mean 2, var 2/3, s = sqrt(2/3), xhat = (-a, 0, a) with
    // a = sqrt(3/2); g = dy, mean(g) = 1/3, mean(g xhat) = a/3, so
    // dx = (g - 1/3 - xhat a/3) / s = (1/6, -1/3, 1/6) sqrt(3/2): squares (1/24, 1/6, 1/24).
    let dx = input_gradient(&[1.0, 2.0, 3.0], &[0.0, 0.0, 1.0], None, 0.0);
    assert_brackets_sqrt(&dx[0], &rat(1, 24), false, 100);
    assert_brackets_sqrt(&dx[1], &rat(1, 6), true, 100);
    assert_brackets_sqrt(&dx[2], &rat(1, 24), false, 100);
    // The same with gamma = (5, 7, 2): g = (0, 0, 2), so twice the above.
    let dx = input_gradient(
        &[1.0, 2.0, 3.0],
        &[0.0, 0.0, 1.0],
        Some(&[5.0, 7.0, 2.0]),
        0.0,
    );
    assert_brackets_sqrt(&dx[1], &rat(4, 6), true, 100);
    // dgamma = dy xhat = (0, 0, a), dbeta = dy.
    let mut sums = ParamGradients::new(3);
    sums.add_row(&[1.0, 2.0, 3.0], &[0.0, 0.0, 1.0], 0.0);
    let dgamma = sums.gamma();
    assert!(exactly(&dgamma[0], 0.0) && exactly(&dgamma[1], 0.0));
    assert_brackets_sqrt(&dgamma[2], &rat(3, 2), false, 100);
    assert!(sums
        .beta()
        .iter()
        .zip([0.0, 0.0, 1.0])
        .all(|(b, v)| exactly(b, v)));

    // [0, 2, 4, 6], eps 3: d = (-3, -1, 1, 3), var 5, V = 8 (s = 2 sqrt 2, V^(3/2) = 16 sqrt 2);
    // dy = (1, 0, 0, 0): mean(g) = 1/4, C = -3/4, dx_i = ((g_i - 1/4) 8 + d_i 3/4) / V^(3/2):
    // dx = (15/4, -11/4, -5/4, 1/4) / (16 sqrt 2), i.e. squares (v / 16)^2 / 2.
    let dx = input_gradient(&[0.0, 2.0, 4.0, 6.0], &[1.0, 0.0, 0.0, 0.0], None, 3.0);
    for (d, (p, q)) in dx.iter().zip([(15, 4), (-11, 4), (-5, 4), (1, 4)]) {
        let v = rat(p, q) / rat(16, 1);
        assert_brackets_sqrt(d, &(&v * &v / rat(2, 1)), p < 0, 100);
    }

    // Constant rows with eps > 0: dx = (g - mean(g)) / sqrt(eps), exact when that is dyadic;
    // dgamma gets exactly 0. With eps = 0: dx = 0 (defined). One element: dx = 0 always.
    let dy = [1.0, -2.0, 0.5, 4.5];
    for c in [0.0, 0.1, -3.7, 1e6 + 0.1, 1e-300, 1e300] {
        let x = [c; 4];
        let dx = input_gradient(&x, &dy, None, 0.25); // sqrt(eps) = 1/2, mean(g) = 1
        for (d, g) in dx.iter().zip(dy) {
            assert!(exactly(d, (g - 1.0) * 2.0), "constant {c}: {d:?}");
        }
        let dx = input_gradient(&x, &dy, None, 2.0); // (g - 1) / sqrt 2
        for (d, g) in dx.iter().zip(dy) {
            let v = rat(((g - 1.0) * 2.0) as i64, 2);
            if g != 1.0 {
                assert_brackets_sqrt(d, &(&v * &v / rat(2, 1)), g < 1.0, 100);
            }
        }
        assert!(input_gradient(&x, &dy, Some(&[2.0; 4]), 0.0)
            .iter()
            .all(|d| exactly(d, 0.0)));
        for eps in [0.0, 1e-5] {
            let mut sums = ParamGradients::new(4);
            sums.add_row(&x, &dy, eps);
            assert!(sums.gamma().iter().all(|g| exactly(g, 0.0)));
            assert!(input_gradient(&[c], &[dy[1]], Some(&[3.0]), eps)
                .iter()
                .all(|d| exactly(d, 0.0)));
        }
    }

    // Units: 1 + 2^-52 against exact 1 is one f64 unit; against 1 with a magnitude scale of 4,
    // a quarter.
    let one = Approx::exact(Dyadic::pow2(0));
    assert_eq!(
        sum_units(1.0 + f64::EPSILON, &one, &Dyadic::pow2(0), Format::F64),
        1.0
    );
    assert_eq!(
        sum_units(1.0 + f64::EPSILON, &one, &Dyadic::pow2(2), Format::F64),
        0.25
    );
    assert_eq!(
        sum_units(1.0 + f64::EPSILON, &one, &Dyadic::pow2(-3), Format::F32),
        2f64.powi(-29)
    );
}

/// `dx` equals central differences of the exact forward reference: with
/// `L(x) = sum_i dy_i z_i(x)` (`z` the affine output), `(L(x + h e_j) - L(x - h e_j)) / 2h`
/// is within `O(h^2)` of `dx_j`. Rows of multiples of `2^-10` and `h = 2^-30` keep `x +- h`
/// exact in `f64`; `L` is formed exactly from the forward approximations (error `< 2^-120`).
#[test]
fn reference_matches_finite_differences_of_the_forward_reference() {
    let mut rng = StdRng::seed_from_u64(2);
    for n in [2, 3, 5, 8, 17] {
        for eps in [0.0, 1e-5, 0.5] {
            let x: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(-8192..=8192)) / 1024.0)
                .collect();
            let dy: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
            let gamma: Vec<f64> = (0..n).map(|_| rng.random_range(0.5..2.0)).collect();
            let beta: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
            let loss = |x: &[f64]| {
                ExactRow::new(x)
                    .forward(eps, Some(&gamma), Some(&beta))
                    .iter()
                    .zip(&dy)
                    .fold(Dyadic::zero(), |acc, (z, &d)| {
                        acc.add(&z.approx.mul(&Dyadic::from_f64(d)))
                    })
            };
            let dx = input_gradient(&x, &dy, Some(&gamma), eps);
            assert_central_differences(&x, &dx, loss, &format!("n = {n}, eps = {eps}"));
        }
    }
}

/// The reference agrees with a plain `f64` evaluation of the centred formula on easy rows.
#[test]
fn reference_matches_naive_f64() {
    let mut rng = StdRng::seed_from_u64(3);
    for n in [2, 3, 10, 100] {
        for _ in 0..10 {
            let x: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
            let dy: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
            let gamma: Vec<f64> = (0..n).map(|_| rng.random_range(0.5..2.0)).collect();
            let nf = n as f64;
            let mean = x.iter().sum::<f64>() / nf;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / nf;
            let s = (var + 1e-5).sqrt();
            let xhat: Vec<f64> = x.iter().map(|v| (v - mean) / s).collect();
            let g: Vec<f64> = dy.iter().zip(&gamma).map(|(d, w)| d * w).collect();
            let mean_g = g.iter().sum::<f64>() / nf;
            let mean_gx = g.iter().zip(&xhat).map(|(g, y)| g * y).sum::<f64>() / nf;
            let dx = input_gradient(&x, &dy, Some(&gamma), 1e-5);
            for i in 0..n {
                let naive = (g[i] - mean_g - xhat[i] * mean_gx) / s;
                assert!((dx[i].to_f64() - naive).abs() < 1e-12, "{naive} vs {dx:?}");
            }
            let mut sums = ParamGradients::new(n);
            sums.add_row(&x, &dy, 1e-5);
            for (j, dg) in sums.gamma().iter().enumerate() {
                assert!((dg.to_f64() - dy[j] * xhat[j]).abs() < 1e-12);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// 1. Random rows, with and without gamma and beta.

fn random_rows<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scenarios = Vec::new();
    for eps in [1e-5, 0.0] {
        for kind in KINDS {
            for params in [Params::Plain, Params::Ones, Params::Random] {
                let mut sc = Scenario::new(&format!(
                    "{} random {kind:?} eps {eps:e} {params:?}",
                    format::<F>().name()
                ));
                for n in LENGTHS {
                    let m = row_count(&mut rng, n);
                    let x = batch::<F>(m, n, || random_row(&mut rng, kind, n));
                    let dy = batch::<F>(m, n, || (0..n).map(|_| normal(&mut rng)).collect());
                    let src = Source::Recompute;
                    check_backward(&mut sc, &mut rng, Batch::new(&x, &dy, of(eps), params, src));
                }
                scenarios.push(sc);
            }
        }
    }
    assert_scenarios(&scenarios);
}

#[test]
fn random_rows_f32() {
    random_rows::<f32>(11);
}

#[test]
fn random_rows_f64() {
    random_rows::<f64>(12);
}

// ----------------------------------------------------------------------------------------------
// 2. Rows with a large offset.

fn large_offset<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scenarios = Vec::new();
    for offset in [1e3, 1e6] {
        for eps in [1e-5, 0.0] {
            let mut sc = Scenario::new(&format!(
                "{} offset {offset:e} + N(0,1) eps {eps:e}",
                format::<F>().name()
            ));
            for n in LENGTHS {
                let m = row_count(&mut rng, n);
                let x = batch::<F>(m, n, || offset_row(&mut rng, n, offset, 1.0));
                let dy = batch::<F>(m, n, || (0..n).map(|_| normal(&mut rng)).collect());
                let src = Source::Recompute;
                let input = Batch::new(&x, &dy, of(eps), Params::Random, src);
                check_backward(&mut sc, &mut rng, input);
            }
            scenarios.push(sc);
        }
    }
    assert_scenarios(&scenarios);
}

#[test]
fn large_offset_f32() {
    large_offset::<f32>(21);
}

#[test]
fn large_offset_f64_bounded_by_mean_rounding() {
    large_offset::<f64>(22);
}

// ----------------------------------------------------------------------------------------------
// 3. backward_with_stats.

fn with_saved_stats<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scenarios = Vec::new();
    for eps in [1e-5, 0.0] {
        for kind in KINDS {
            let mut sc = Scenario::new(&format!(
                "{} saved stats, random {kind:?} eps {eps:e}",
                format::<F>().name()
            ));
            for n in LENGTHS {
                let m = row_count(&mut rng, n);
                let x = batch::<F>(m, n, || random_row(&mut rng, kind, n));
                let dy = batch::<F>(m, n, || (0..n).map(|_| normal(&mut rng)).collect());
                let src = Source::Saved;
                let input = Batch::new(&x, &dy, of(eps), Params::Random, src);
                check_backward(&mut sc, &mut rng, input);
            }
            scenarios.push(sc);
        }
        let mut sc = Scenario::new(&format!(
            "{} saved stats, offset 1e3 + N(0,1) eps {eps:e}",
            format::<F>().name()
        ));
        for n in LENGTHS {
            let m = row_count(&mut rng, n);
            let x = batch::<F>(m, n, || offset_row(&mut rng, n, 1e3, 1.0));
            let dy = batch::<F>(m, n, || (0..n).map(|_| normal(&mut rng)).collect());
            let src = Source::Saved;
            let input = Batch::new(&x, &dy, of(eps), Params::Random, src);
            check_backward(&mut sc, &mut rng, input);
        }
        scenarios.push(sc);
    }
    assert_scenarios(&scenarios);
}

#[test]
fn with_saved_stats_f32() {
    with_saved_stats::<f32>(31);
}

#[test]
fn with_saved_stats_f64() {
    with_saved_stats::<f64>(32);
}

// ----------------------------------------------------------------------------------------------
// 4. Degenerate rows.

/// Constants for constant rows (near 1, offset, and near both ends of the range of `F`).
fn constants<F: Float>() -> &'static [f64] {
    match format::<F>() {
        Format::F32 => &[0.0, -0.0, 0.1, -3.7, 1e6 + 0.1, 1e-30, 1e37],
        Format::F64 => &[0.0, -0.0, 0.1, -3.7, 1e6 + 0.1, 1e-300, 1e300],
    }
}

/// The policies, bit for bit, with both sources: one-element rows give `dx` exactly 0 and add
/// exactly 0 to `dgamma` (`xhat = 0`), for every epsilon; constant rows add exactly 0 to
/// `dgamma` for every epsilon, and give `dx` exactly 0 when `eps == 0`.
fn degenerate_rows_exact_zeros<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = format::<F>().name();
    let constants = constants::<F>();
    for source in [Source::Recompute, Source::Saved] {
        for eps in [0.0, 1e-5, 0.25, 1.0] {
            for n in [1, 2, 3, 8, 17, 100] {
                for params in [Params::Plain, Params::Random] {
                    // Row r is constants[r] (a one-element row when n == 1).
                    let mut values = constants.iter();
                    let x = batch::<F>(constants.len(), n, || vec![*values.next().unwrap(); n]);
                    let dy =
                        batch::<F>(x.nrows(), n, || (0..n).map(|_| normal(&mut rng)).collect());
                    let grads = run(&layer(&mut rng, n, of(eps), params), &x, &dy, source);
                    if eps == 0.0 || n == 1 {
                        assert!(
                            grads.input.iter().all(|&v| v == F::zero()),
                            "{name} {source:?} n = {n}, eps = {eps}: dx = {:?}",
                            grads.input
                        );
                    }
                    if let Some(dgamma) = &grads.gamma {
                        assert!(
                            dgamma.iter().all(|&v| v == F::zero()),
                            "{name} {source:?} n = {n}, eps = {eps}: dgamma = {dgamma:?}"
                        );
                    }
                }
            }
            // One-element rows of any value.
            let x = batch::<F>(100, 1, || {
                vec![normal(&mut rng) * 2f64.powi(rng.random_range(-60..60))]
            });
            let dy = batch::<F>(100, 1, || vec![normal(&mut rng)]);
            let layer = layer(&mut rng, 1, of(eps), Params::Random);
            let grads = run(&layer, &x, &dy, source);
            assert!(
                grads.input.iter().all(|&v| v == F::zero()),
                "{name} {source:?}"
            );
            assert_eq!(grads.gamma.unwrap()[0], F::zero(), "{name} {source:?}");
        }
    }
}

#[test]
fn degenerate_rows_exact_zeros_f32() {
    degenerate_rows_exact_zeros::<f32>(41);
}

#[test]
fn degenerate_rows_exact_zeros_f64() {
    degenerate_rows_exact_zeros::<f64>(42);
}

/// Constant rows with `eps > 0`: `dx = (g - mean(g)) / sqrt(eps)`, against the reference with
/// the target (and `dgamma`, `dbeta` as everywhere), both sources.
fn constant_rows_with_eps<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = format::<F>().name();
    let constants = constants::<F>();
    let mut scenarios = Vec::new();
    for source in [Source::Recompute, Source::Saved] {
        for eps in [1e-5, 0.25, 1.0] {
            let mut sc = Scenario::new(&format!("{name} {source:?} constant rows eps {eps:e}"));
            for n in [2, 3, 8, 17, 100] {
                for params in [Params::Plain, Params::Random] {
                    let mut values = constants.iter();
                    let x = batch::<F>(constants.len(), n, || vec![*values.next().unwrap(); n]);
                    let dy =
                        batch::<F>(x.nrows(), n, || (0..n).map(|_| normal(&mut rng)).collect());
                    check_backward(
                        &mut sc,
                        &mut rng,
                        Batch::new(&x, &dy, of(eps), params, source),
                    );
                }
            }
            scenarios.push(sc);
        }
    }
    assert_scenarios(&scenarios);
}

#[test]
fn constant_rows_with_eps_f32() {
    constant_rows_with_eps::<f32>(43);
}

#[test]
fn constant_rows_with_eps_f64() {
    constant_rows_with_eps::<f64>(44);
}
