//! Accuracy of `RmsNorm::forward` and `RmsNorm::backward` against the exact rational reference
//! in `tests/common/exact_rms.rs`.
//!
//! Error units (`F::EPSILON` is `2^-23` for `f32`, `2^-52` for `f64`):
//! * forward and `dx`, per element: `|computed - exact| / (F::EPSILON * max(1, |exact|))`;
//! * `dgamma`, per column: `|computed - exact| / (F::EPSILON * max(1, sum_r |dy_rj * xhat_rj|))`
//!   (a sum over rows whose terms each carry a rounding of their own, as in
//!   `tests/backward_accuracy.rs`).
//!
//! Targets (`tests/common/exact_rms.rs` holds them, shared with the example): forward 1 unit for
//! `f32` and 2 units for `f64` input (the issue's), with gamma the derived bound
//! `exact_rms::affine_tol`; backward 1 unit for `dx` and `dgamma` (`DX_UNITS`, `DGAMMA_UNITS`,
//! derived there; tighter than the issue's 4, which is what the library measures far below).
//!
//! Those units cannot see errors in outputs far below 1: where eps dominates a tiny or subnormal
//! row (`y ~ x / sqrt(eps)`, and its `dgamma`), and in the `dx` of huge rows (`~ 1 / |x|`).
//! These scenarios are also measured in ulps of the exact value in `F` (`exact::ulp_units`,
//! subnormal spacing below the normal range), at bounds derived from the algorithm
//! (`exact_rms::forward_ulps_tol`, `exact_rms::gradient_ulps_tol`).
//!
//! Every tolerance goes through [`Tally::check`]. Run with `--nocapture` to see the measured
//! maxima; `cargo run --release --example rms_accuracy` measures the same scenarios on more
//! rows.

mod common;

use common::exact::{
    assert_brackets_sqrt, assert_central_differences, exactly, forward_units, rat, ulp_units,
    within, Dyadic, Format,
};
use common::exact_backward::{sum_units, ParamGradients};
use common::exact_rms::{
    affine_tol, dx_terms, forward_tol, forward_ulps_tol, gradient_ulps_tol, proportional_dy,
    rms_input_gradient, short_significand_row, DyGen, RmsRow, BACKWARD_UNITS, DGAMMA_UNITS,
    DX_UNITS, F32_FORWARD_UNITS, F64_FORWARD_UNITS,
};
use common::harness::{
    batch, bits, format, integer_row, normal, of, offset_row, random_row, scaled, wide, Kind,
    RowGen,
};
use common::tally::{assert_tallies, Tally};
use ndarray::{Array1, Array2};
use ndarray_layernorm::{Float, RmsNorm};
use num_traits::Signed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths, including the awkward ones around SIMD/unroll widths and the short-row batch
/// path.
const LENGTHS: [usize; 24] = [
    1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 127, 128, 129, 255, 256, 257, 768,
    1000,
];
/// Shorter list for the special-value and backward scenarios.
const SOME_LENGTHS: [usize; 9] = [1, 2, 3, 7, 8, 9, 17, 768, 1000];

/// The distributions of the "random rows" scenario.
const KINDS: [Kind; 3] = [Kind::Normal, Kind::Uniform, Kind::Integers];

/// Rows per length: a few in debug builds (the exact reference is slow unoptimized), more in
/// release.
fn rows_per_length(n: usize) -> usize {
    if cfg!(debug_assertions) {
        2
    } else {
        (400 / n).clamp(4, 100)
    }
}

// ----------------------------------------------------------------------------------------------
// Checking forward against the reference.

/// Runs `forward` (with `gamma` if given) on the rows of `x` and checks every output against the
/// exact reference: [`forward_tol`] without gamma, [`affine_tol`] with it; and, if `ulps` is
/// given, also in ulps of the exact value, at [`forward_ulps_tol`] (for the scenarios where eps
/// dominates and the outputs are far below 1, which the units above cannot see).
fn check_forward<F: Float>(
    tally: &mut Tally,
    mut ulps: Option<&mut Tally>,
    x: &Array2<F>,
    eps: F,
    gamma: Option<&Array1<F>>,
) {
    let n = x.ncols();
    let fmt = format::<F>();
    let layer = match gamma {
        None => RmsNorm::new(eps),
        Some(g) => RmsNorm::new(eps).and_then(|l| l.with_gamma(g.clone())),
    }
    .expect("valid layer");
    let y = layer.forward(x).expect("forward succeeds");
    let gamma: Option<Vec<f64>> = gamma.map(|g| g.iter().map(|&v| wide(v)).collect());
    let eps = wide(eps);
    for (r, (xr, yr)) in x.rows().into_iter().zip(y.rows()).enumerate() {
        tally.rows += 1;
        let values: Vec<f64> = xr.iter().map(|&v| wide(v)).collect();
        let ys = RmsRow::new(&values).normalized(eps);
        for (i, (&computed, y_exact)) in yr.iter().zip(&ys).enumerate() {
            let (z_exact, tol) = match &gamma {
                None => (y_exact.clone(), forward_tol(fmt)),
                Some(g) => (
                    y_exact.affine(g[i], 0.0),
                    affine_tol(fmt, y_exact.to_f64(), g[i]),
                ),
            };
            let detail = || {
                let params = match &gamma {
                    Some(g) => format!("\n  gamma = {g:?}"),
                    None => String::new(),
                };
                format!(
                    "{} row {r} of {} (n = {n}, eps = {eps:e}), element {i}: computed \
                     {computed:?}, exact {:e}\n  row = {:?}{params}",
                    fmt.name(),
                    x.nrows(),
                    z_exact.to_f64(),
                    xr.to_vec(),
                )
            };
            let units = forward_units(wide(computed), &z_exact, fmt);
            tally.check(units, tol, detail);
            if let Some(t) = ulps.as_deref_mut() {
                let ulps = ulp_units(wide(computed), &z_exact.approx.to_rational(), fmt);
                t.check(ulps, forward_ulps_tol(fmt, gamma.is_some()), detail);
            }
        }
    }
}

/// `rows_per_length(n)` rows of every length of `lengths` from `gen`, checked by
/// [`check_forward`] (a fresh random gamma in `[-2, 2)` per length if `with_gamma`).
fn forward_scenario<F: Float>(
    t: &mut Tally,
    mut ulps: Option<&mut Tally>,
    rng: &mut StdRng,
    gen: &RowGen,
    lengths: &[usize],
    eps: f64,
    with_gamma: bool,
) {
    for &n in lengths {
        let gamma = with_gamma
            .then(|| Array1::from_iter((0..n).map(|_| of::<F>(rng.random_range(-2.0..2.0)))));
        let x = batch::<F>(rows_per_length(n), n, || gen(rng, n));
        check_forward(t, ulps.as_deref_mut(), &x, of(eps), gamma.as_ref());
    }
}

// ----------------------------------------------------------------------------------------------
// The reference itself.

#[test]
fn reference_matches_closed_forms() {
    // [3, 4], eps 0: ms = 25/2, y = (3, 4) / sqrt(25/2): y^2 = (18/25, 32/25).
    let row = RmsRow::new(&[3.0, 4.0]);
    assert_eq!(row.mean_square(), rat(25, 2));
    let y = row.normalized(0.0);
    assert_brackets_sqrt(&y[0], &rat(18, 25), false, 130);
    assert_brackets_sqrt(&y[1], &rat(32, 25), false, 130);

    // [1, -1, 1, -1] and [-2, 2], eps 0: ms = 1 or 4, y = +-1 exactly; with gamma (3, 0.5):
    // z = (-3, 0.5) exactly.
    let y = RmsRow::new(&[1.0, -1.0, 1.0, -1.0]).normalized(0.0);
    assert!(y
        .iter()
        .zip([1.0, -1.0, 1.0, -1.0])
        .all(|(a, v)| exactly(a, v)));
    let z = RmsRow::new(&[-2.0, 2.0]).forward(0.0, Some(&[3.0, 0.5]));
    assert!(exactly(&z[0], -3.0) && exactly(&z[1], 0.5));

    // [0, 2], eps 2: ms = 2, V = 4, y = (0, 1) exactly.
    let y = RmsRow::new(&[0.0, 2.0]).normalized(2.0);
    assert!(exactly(&y[0], 0.0) && exactly(&y[1], 1.0));

    // [1, 2, 3], eps 1/3: ms = 14/3, V = 5, y_i^2 = i^2 / 5.
    let third = 1.0 / 3.0; // not 1/3: V is ms + the exact binary value
    let v = rat(14, 3) + Dyadic::from_f64(third).to_rational();
    for (a, k) in RmsRow::new(&[1.0, 2.0, 3.0])
        .normalized(third)
        .iter()
        .zip(1..)
    {
        assert_brackets_sqrt(a, &(rat(k * k, 1) / &v), false, 130);
    }

    // One element with eps 0: sign(x), from subnormal to huge; exactly when |x| is a power of
    // two (rho = 2^-e / |X| is dyadic), else within the error bound.
    for x in [5e-324, -1e-300, 0.1, -3.0, 0.25, 1e300, -f64::MAX] {
        let y = RmsRow::new(&[x]).normalized(0.0);
        assert!(within(&y[0], x.signum()), "{x:e}: {y:?}");
        let power_of_two = Dyadic::from_f64(x).mant.magnitude().count_ones() == 1;
        assert_eq!(y[0].is_exact(), power_of_two, "{x:e}: {y:?}");
    }
    // Subnormals: [2^-1074, -2^-1074], eps 0: exactly (1, -1).
    let y = RmsRow::new(&[5e-324, -5e-324]).normalized(0.0);
    assert!(exactly(&y[0], 1.0) && exactly(&y[1], -1.0));

    // All-zero rows: exactly 0 for every eps, 0/0 := 0 included.
    for eps in [0.0, 1e-5, 1.0] {
        for n in [1, 3, 8] {
            let y = RmsRow::new(&vec![0.0; n]).normalized(eps);
            assert!(y.iter().all(|a| exactly(a, 0.0)), "n = {n}, eps = {eps}");
        }
    }
}

/// The reference agrees with a plain `f64` evaluation on easy rows (to ~1e-13).
#[test]
fn reference_matches_naive_f64() {
    let mut rng = StdRng::seed_from_u64(1);
    for n in [1, 2, 3, 10, 100] {
        for eps in [0.0, 1e-5, 0.5] {
            for _ in 0..10 {
                let x: Vec<f64> = (0..n).map(|_| 3.0 + normal(&mut rng)).collect();
                let dy: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
                let gamma: Vec<f64> = (0..n).map(|_| rng.random_range(0.5..2.0)).collect();
                let ms = x.iter().map(|v| v * v).sum::<f64>() / n as f64;
                let s = (ms + eps).sqrt();
                let xhat: Vec<f64> = x.iter().map(|v| v / s).collect();
                let g: Vec<f64> = dy.iter().zip(&gamma).map(|(d, w)| d * w).collect();
                let mean_gx = g.iter().zip(&xhat).map(|(g, y)| g * y).sum::<f64>() / n as f64;
                let ys = RmsRow::new(&x).normalized(eps);
                let dx = rms_input_gradient(&x, &dy, Some(&gamma), eps);
                for i in 0..n {
                    assert!(
                        (ys[i].to_f64() - xhat[i]).abs() < 1e-13,
                        "{xhat:?} vs {ys:?}"
                    );
                    let naive = (g[i] - xhat[i] * mean_gx) / s;
                    assert!((dx[i].to_f64() - naive).abs() < 1e-12, "{naive} vs {dx:?}");
                }
            }
        }
    }
}

#[test]
fn backward_reference_matches_closed_forms() {
    // One element, eps 0: the output is the constant sign(x), so dx = 0 exactly.
    for x in [5e-324, -0.1, 3.0, 1e300] {
        let dx = rms_input_gradient(&[x], &[1.5], Some(&[2.0]), 0.0);
        assert!(exactly(&dx[0], 0.0), "{x:e}: {dx:?}");
    }
    // eps 0 and dy proportional to x: scale invariance gives dx = 0 exactly.
    let x = [0.5, -1.25, 3.0, 2.0];
    let dy: Vec<f64> = x.iter().map(|v| -3.0 * v).collect();
    assert!(rms_input_gradient(&x, &dy, None, 0.0)
        .iter()
        .all(|d| exactly(d, 0.0)));

    // All-zero rows: dx = g / sqrt(eps) (2 g for eps = 1/4), and 0 for eps = 0.
    let dy = [1.0, -2.0, 0.5];
    let gamma = [2.0, 0.5, -1.0];
    let dx = rms_input_gradient(&[0.0; 3], &dy, Some(&gamma), 0.25);
    for ((d, g), w) in dx.iter().zip(dy).zip(gamma) {
        assert!(within(d, 2.0 * g * w), "{dx:?}");
    }
    let dx = rms_input_gradient(&[0.0; 3], &dy, None, 2.0); // g / sqrt(2)
    for (d, g) in dx.iter().zip(dy) {
        assert_brackets_sqrt(
            d,
            &(Dyadic::from_f64(g * g / 2.0).to_rational()),
            g < 0.0,
            130,
        );
    }
    assert!(rms_input_gradient(&[0.0; 3], &dy, None, 0.0)
        .iter()
        .all(|d| exactly(d, 0.0)));

    // [3, 4], eps 0, dy = (1, 0): s^2 = 25/2, P = 3, dx = (n V g - x P) / (n V^(3/2)):
    // numerators (25 - 9, -12) over 2 (25/2)^(3/2) = 125 / sqrt(2): dx = (16, -12) sqrt(2) / 125,
    // squares (512, 288) / 15625.
    let dx = rms_input_gradient(&[3.0, 4.0], &[1.0, 0.0], None, 0.0);
    assert_brackets_sqrt(&dx[0], &rat(512, 15625), false, 130);
    assert_brackets_sqrt(&dx[1], &rat(288, 15625), true, 130);
}

/// `dx` equals central differences of the exact forward reference: with
/// `L(x) = sum_i dy_i z_i(x)`, `(L(x + h e_j) - L(x - h e_j)) / 2h` is within `O(h^2)` of
/// `dx_j`. Rows of multiples of `2^-10` and `h = 2^-30` keep `x +- h` exact in `f64`.
#[test]
fn backward_reference_matches_finite_differences_of_the_forward_reference() {
    let mut rng = StdRng::seed_from_u64(2);
    for n in [1, 2, 3, 5, 8, 17] {
        for eps in [0.0, 1e-5, 0.5] {
            let x: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(-8192..=8192)) / 1024.0)
                .collect();
            if x.iter().all(|&v| v == 0.0) {
                continue;
            }
            let dy: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
            let gamma: Vec<f64> = (0..n).map(|_| rng.random_range(0.5..2.0)).collect();
            let loss = |x: &[f64]| {
                RmsRow::new(x)
                    .forward(eps, Some(&gamma))
                    .iter()
                    .zip(&dy)
                    .fold(Dyadic::zero(), |acc, (z, &d)| {
                        acc.add(&z.approx.mul(&Dyadic::from_f64(d)))
                    })
            };
            let dx = rms_input_gradient(&x, &dy, Some(&gamma), eps);
            assert_central_differences(&x, &dx, loss, &format!("n = {n}, eps = {eps}"));
        }
    }
}

// ----------------------------------------------------------------------------------------------
// 1. Random rows.

fn random_rows<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tallies = Vec::new();
    for eps in [1e-5, 0.0] {
        for kind in KINDS {
            let mut t = Tally::new(format!(
                "{} random {kind:?} eps {eps:e}",
                format::<F>().name()
            ));
            let gen: RowGen = Box::new(move |rng, n| random_row(rng, kind, n));
            forward_scenario::<F>(&mut t, None, &mut rng, &gen, &LENGTHS, eps, false);
            for _ in 0..4 {
                let n = rng.random_range(1..=1000);
                let x = batch::<F>(1, n, || random_row(&mut rng, kind, n));
                check_forward(&mut t, None, &x, of(eps), None);
            }
            tallies.push(t);
        }
    }
    assert_tallies(&tallies);
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
// 2. Rows far from 0 (harmless without centring, but tested).

fn offsets<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tallies = Vec::new();
    let offsets: &[f64] = match format::<F>() {
        Format::F32 => &[1e3, 1e5],
        Format::F64 => &[1e3, 1e6, 1e9],
    };
    for &offset in offsets {
        for eps in [1e-5, 0.0] {
            let name = format::<F>().name();
            let mut t = Tally::new(format!("{name} offset {offset:e} + N(0,1) eps {eps:e}"));
            let gen: RowGen = Box::new(move |rng, n| offset_row(rng, n, offset, 1.0));
            forward_scenario::<F>(&mut t, None, &mut rng, &gen, &SOME_LENGTHS, eps, false);
            tallies.push(t);
        }
    }
    assert_tallies(&tallies);
}

#[test]
fn offsets_f32() {
    offsets::<f32>(21);
}

#[test]
fn offsets_f64() {
    offsets::<f64>(22);
}

// ----------------------------------------------------------------------------------------------
// 3. Tiny, huge, subnormal and mixed magnitudes.

/// `(name, row generator)` for the extreme-magnitude scenarios of `F`.
fn extreme_scenarios<F: Float>() -> Vec<(&'static str, RowGen)> {
    let (tiny, huge, max_exp) = match format::<F>() {
        Format::F32 => (1e-30, 1e37, 254),
        Format::F64 => (1e-300, 1e300, 2046),
    };
    vec![
        ("tiny", scaled(tiny)),
        ("huge", scaled(huge)),
        ("subnormal", bits::<F>(0..=0)),
        ("mixed exponents", bits::<F>(0..=max_exp)),
    ]
}

/// Whether the outputs of an extreme scenario are far below 1 (tiny or subnormal rows next to
/// eps: `y ~ x / sqrt(eps)`), so that they are also measured in ulps of the exact value.
fn outputs_are_tiny(name: &str, eps: f64) -> bool {
    eps > 0.0 && matches!(name, "tiny" | "subnormal")
}

fn extreme_magnitudes<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tallies = Vec::new();
    for (name, gen) in extreme_scenarios::<F>() {
        for eps in [0.0, 1e-5] {
            let label = format!("{} {name} eps {eps:e}", format::<F>().name());
            let mut t = Tally::new(&label);
            let mut u = outputs_are_tiny(name, eps)
                .then(|| Tally::ulps(format!("{label} (in ulps of the exact value)")));
            forward_scenario::<F>(
                &mut t,
                u.as_mut(),
                &mut rng,
                &gen,
                &SOME_LENGTHS,
                eps,
                false,
            );
            // More of the short rows: they are cheap and the most varied.
            for n in [1, 2, 3] {
                let x = batch::<F>(60, n, || gen(&mut rng, n));
                check_forward(&mut t, u.as_mut(), &x, of(eps), None);
            }
            tallies.push(t);
            tallies.extend(u);
        }
    }
    assert_tallies(&tallies);
}

#[test]
fn extreme_magnitudes_f32() {
    extreme_magnitudes::<f32>(31);
}

#[test]
fn extreme_magnitudes_f64() {
    extreme_magnitudes::<f64>(32);
}

// ----------------------------------------------------------------------------------------------
// 4. All-zero rows: exactly +0.0, also with gamma (then 0 * gamma).

fn all_zero_rows<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for eps in [0.0, 1e-5, 1.0] {
        for n in SOME_LENGTHS {
            let x = Array2::<F>::zeros((3, n));
            let y = RmsNorm::new(of::<F>(eps)).unwrap().forward(&x).unwrap();
            assert!(
                y.iter().all(|&v| wide(v).to_bits() == 0),
                "n = {n}, eps = {eps}: {y:?}"
            );
            let gamma = Array1::from_iter((0..n).map(|_| of::<F>(normal(&mut rng))));
            let layer = RmsNorm::new(of::<F>(eps)).unwrap();
            let z = layer
                .with_gamma(gamma.clone())
                .unwrap()
                .forward(&x)
                .unwrap();
            for row in z.rows() {
                for (&v, &g) in row.iter().zip(&gamma) {
                    let want = 0.0 * wide(g);
                    assert_eq!(wide(v).to_bits(), want.to_bits(), "gamma {g:?}");
                }
            }
        }
    }
}

#[test]
fn all_zero_rows_are_exactly_zero_f32() {
    all_zero_rows::<f32>(41);
}

#[test]
fn all_zero_rows_are_exactly_zero_f64() {
    all_zero_rows::<f64>(42);
}

// ----------------------------------------------------------------------------------------------
// 5. Forward with random gamma.

fn with_gamma<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tallies = Vec::new();
    for eps in [1e-5, 0.0] {
        for kind in [Kind::Normal, Kind::Uniform] {
            let mut t = Tally::new(format!(
                "{} gamma, random {kind:?} eps {eps:e}",
                format::<F>().name()
            ));
            let gen: RowGen = Box::new(move |rng, n| random_row(rng, kind, n));
            forward_scenario::<F>(&mut t, None, &mut rng, &gen, &LENGTHS, eps, true);
            tallies.push(t);
        }
        let label = format!("{} gamma, tiny and huge eps {eps:e}", format::<F>().name());
        let mut t = Tally::new(&label);
        let mut u = Tally::ulps(format!("{label}: tiny (in ulps of the exact value)"));
        for (name, gen) in extreme_scenarios::<F>().into_iter().take(2) {
            let u = outputs_are_tiny(name, eps).then_some(&mut u);
            forward_scenario::<F>(&mut t, u, &mut rng, &gen, &SOME_LENGTHS, eps, true);
        }
        tallies.push(t);
        if u.values > 0 {
            tallies.push(u);
        }
    }
    assert_tallies(&tallies);
}

#[test]
fn with_gamma_f32() {
    with_gamma::<f32>(51);
}

#[test]
fn with_gamma_f64() {
    with_gamma::<f64>(52);
}

/// The targets are those of the issue: one unit for `f32`, two for `f64`, four for backward;
/// the backward bounds asserted are tighter, one unit (see `DX_UNITS`, `DGAMMA_UNITS`).
#[test]
fn targets_are_the_issue_s() {
    assert_eq!(F32_FORWARD_UNITS, 1.0);
    assert_eq!(F64_FORWARD_UNITS, 2.0);
    assert_eq!(BACKWARD_UNITS, 4.0);
    assert_eq!((DX_UNITS, DGAMMA_UNITS), (1.0, 1.0));
}

// ----------------------------------------------------------------------------------------------
// 6. Backward.

/// The gamma of a backward scenario.
#[derive(Clone, Copy, Debug)]
enum Gamma {
    None,
    Ones,
    /// Uniform in `[0.5, 2]`.
    Random,
}

/// The tallies of one backward scenario.
struct Backward {
    dx: Tally,
    dgamma: Tally,
    /// `dx` in ulps of the exact value, for scenarios where `|dx|` is far below 1 (huge rows).
    dx_ulps: Option<Tally>,
    /// `dgamma` in ulps of the exact value, for scenarios where it is far below 1 (tiny rows
    /// next to eps).
    dgamma_ulps: Option<Tally>,
}

impl Backward {
    /// The tallies of the scenario `label`, in units only.
    fn new(label: &str) -> Backward {
        Backward {
            dx: Tally::new(format!("{label}: dx")),
            dgamma: Tally::new(format!("{label}: dgamma (units of sum |dy xhat|)")),
            dx_ulps: None,
            dgamma_ulps: None,
        }
    }

    /// The same, also measuring `dx` and/or `dgamma` in ulps of the exact value.
    fn with_ulps(label: &str, dx: bool, dgamma: bool) -> Backward {
        let ulps = |what: &str| Tally::ulps(format!("{label}: {what} (ulps of the exact value)"));
        Backward {
            dx_ulps: dx.then(|| ulps("dx")),
            dgamma_ulps: dgamma.then(|| ulps("dgamma")),
            ..Backward::new(label)
        }
    }

    /// The tallies that measured something.
    fn into_tallies(self) -> impl Iterator<Item = Tally> {
        [
            Some(self.dx),
            Some(self.dgamma),
            self.dx_ulps,
            self.dgamma_ulps,
        ]
        .into_iter()
        .flatten()
        .filter(|t| t.values > 0)
    }
}

/// Runs `backward` on `x` with output gradient `dy` and checks `dx` per element and `dgamma`
/// per column against the exact reference: in units at [`DX_UNITS`] and [`DGAMMA_UNITS`], and
/// where `b` asks for it also in ulps of the exact value at [`gradient_ulps_tol`] (with the
/// magnitudes of the terms of each gradient computed here from the exact `xhat`).
fn check_backward<F: Float>(
    b: &mut Backward,
    rng: &mut StdRng,
    x: &Array2<F>,
    dy: &Array2<F>,
    eps: F,
    gamma: Gamma,
) {
    let fmt = format::<F>();
    let n = x.ncols();
    let gamma: Option<Array1<F>> = match gamma {
        Gamma::None => None,
        Gamma::Ones => Some(Array1::ones(n)),
        Gamma::Random => Some(Array1::from_iter(
            (0..n).map(|_| of::<F>(rng.random_range(0.5..=2.0))),
        )),
    };
    let layer = match &gamma {
        None => RmsNorm::new(eps),
        Some(g) => RmsNorm::new(eps).and_then(|l| l.with_gamma(g.clone())),
    }
    .expect("valid layer");
    let grads = layer.backward(x, dy).expect("backward succeeds");
    assert!(grads.beta.is_none());
    assert_eq!(grads.gamma.is_some(), gamma.is_some());
    let gamma: Option<Vec<f64>> = gamma.map(|g| g.iter().map(|&v| wide(v)).collect());
    let eps = wide(eps);
    let mut sums = ParamGradients::new(n);
    for (r, (xr, dyr)) in x.rows().into_iter().zip(dy.rows()).enumerate() {
        b.dx.rows += 1;
        let xv: Vec<f64> = xr.iter().map(|&v| wide(v)).collect();
        let dyv: Vec<f64> = dyr.iter().map(|&v| wide(v)).collect();
        let exact = rms_input_gradient(&xv, &dyv, gamma.as_deref(), eps);
        let xhat = RmsRow::new(&xv).normalized(eps);
        let terms = b
            .dx_ulps
            .is_some()
            .then(|| dx_terms(&xv, &dyv, gamma.as_deref(), &xhat));
        for (i, (&got, want)) in grads.input.row(r).iter().zip(&exact).enumerate() {
            let detail = || {
                format!(
                    "{} dx, row {r} of {} (n = {n}, eps = {eps:e}), element {i}: computed \
                     {got:?}, exact {:e}\n  x = {xv:?}\n  dy = {dyv:?}\n  gamma = {gamma:?}",
                    fmt.name(),
                    x.nrows(),
                    want.to_f64(),
                )
            };
            let units = forward_units(wide(got), want, fmt);
            b.dx.check(units, DX_UNITS, detail);
            if let (Some(t), Some(terms)) = (b.dx_ulps.as_mut(), &terms) {
                let want = want.approx.to_rational();
                // f32: one rounding of the f64 result. f64: the double-double result is rounded
                // to f64, then scaled by a power of two, which rounds again if it is subnormal.
                let tiny = Dyadic::from_f64(f64::MIN_POSITIVE).to_rational();
                let rounding = match fmt {
                    Format::F64 if want.abs() < tiny => 1.0,
                    _ => 0.5,
                };
                let tol = gradient_ulps_tol(fmt, &want, terms[i], rounding);
                t.check(ulp_units(wide(got), &want, fmt), tol, detail);
            }
        }
        sums.add_normalized(&xhat, &dyv);
    }
    if let Some(computed) = &grads.gamma {
        let exact = sums.gamma();
        let rows = x.nrows();
        for (j, ((&got, want), scale)) in computed
            .iter()
            .zip(&exact)
            .zip(sums.gamma_magnitude())
            .enumerate()
        {
            let detail = || {
                format!(
                    "{} dgamma[{j}] of {rows} rows (n = {n}, eps = {eps:e}): computed {got:?}, \
                     exact {:e}, sum |dy xhat| = {:e}",
                    fmt.name(),
                    want.to_f64(),
                    scale.to_f64(),
                )
            };
            let units = sum_units(wide(got), want, scale, fmt);
            b.dgamma.check(units, DGAMMA_UNITS, detail);
            if let Some(t) = b.dgamma_ulps.as_mut() {
                // The compensated column sums are rounded to F once.
                let want = want.approx.to_rational();
                let tol = gradient_ulps_tol(fmt, &want, scale.to_f64(), 0.5);
                t.check(ulp_units(wide(got), &want, fmt), tol, detail);
            }
        }
    }
}

/// `dy` from `N(0, 1)`, independent of `x`.
fn normal_dy() -> DyGen {
    Box::new(|rng, x| (0..x.len()).map(|_| normal(rng)).collect())
}

/// Runs every length of `lengths` (a random number of rows each, more for short rows so that
/// the `dgamma` sums cover many rows) with `dy` from `dy_gen`.
#[allow(clippy::too_many_arguments)]
fn backward_scenario<F: Float>(
    b: &mut Backward,
    rng: &mut StdRng,
    gen: &RowGen,
    dy_gen: &DyGen,
    lengths: &[usize],
    eps: f64,
    gamma: Gamma,
) {
    for &n in lengths {
        let most = if cfg!(debug_assertions) { 256 } else { 4096 };
        let m = rng.random_range(1..=(most / n).clamp(2, 64));
        let x = batch::<F>(m, n, || gen(rng, n));
        let mut dy = Array2::<F>::zeros((m, n));
        for (xr, mut dyr) in x.rows().into_iter().zip(dy.rows_mut()) {
            let xv: Vec<f64> = xr.iter().map(|&v| wide(v)).collect();
            for (o, v) in dyr.iter_mut().zip(dy_gen(rng, &xv)) {
                *o = of(v);
            }
        }
        check_backward(b, rng, &x, &dy, of(eps), gamma);
    }
}

fn backward<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = format::<F>().name();
    let (tiny, huge) = match format::<F>() {
        Format::F32 => (1e-30, 1e37),
        Format::F64 => (1e-300, 1e300),
    };
    let mut scenarios: Vec<(String, RowGen, &[usize])> = Vec::new();
    for kind in KINDS {
        let gen: RowGen = Box::new(move |rng, n| random_row(rng, kind, n));
        scenarios.push((format!("random {kind:?}"), gen, &SOME_LENGTHS));
    }
    scenarios.push((
        "offset 1e3 + N(0,1)".into(),
        Box::new(|rng, n| offset_row(rng, n, 1e3, 1.0)),
        &SOME_LENGTHS,
    ));
    // One-element rows of tiny values are included: with eps 0 their exact gradient is 0, which
    // the general formula missed by up to 1e24 units before they got their closed form (see also
    // `one_element_rows_with_eps_zero_have_a_zero_input_gradient`).
    scenarios.push((format!("tiny {tiny:e}"), scaled(tiny), &SOME_LENGTHS));
    scenarios.push((format!("huge {huge:e}"), scaled(huge), &SOME_LENGTHS));
    let mut tallies = Vec::new();
    for (label, gen, lengths) in &scenarios {
        for eps in [1e-5, 0.0] {
            for gamma in [Gamma::None, Gamma::Ones, Gamma::Random] {
                let label = format!("{name} backward {label} eps {eps:e} gamma {gamma:?}");
                // dx of a huge row (about 1 / |x|), and dgamma of a tiny row next to eps (about
                // |x| / sqrt(eps)), are far below 1: also measured in ulps.
                let huge_dx = label.contains("huge");
                let tiny_dgamma = label.contains("tiny") && eps > 0.0;
                let mut b = Backward::with_ulps(&label, huge_dx, tiny_dgamma);
                let dy = normal_dy();
                backward_scenario::<F>(&mut b, &mut rng, gen, &dy, lengths, eps, gamma);
                tallies.extend(b.into_tallies());
            }
        }
    }
    assert_tallies(&tallies);
}

#[test]
fn backward_f32() {
    backward::<f32>(61);
}

#[test]
fn backward_f64() {
    backward::<f64>(62);
}

/// Rows of small integers: many exact and tied intermediate values.
#[test]
fn backward_integer_rows_with_eps_zero_and_one_element() {
    let mut rng = StdRng::seed_from_u64(63);
    let mut b = Backward::new("f64 backward, integers -3..=3 and one-element rows, eps 0");
    for n in [1, 2, 3, 4, 5] {
        let x = batch::<f64>(40, n, || integer_row(&mut rng, n));
        let dy = batch::<f64>(40, n, || (0..n).map(|_| normal(&mut rng)).collect());
        check_backward(&mut b, &mut rng, &x, &dy, 0.0, Gamma::Random);
    }
    assert_tallies(&b.into_tallies().collect::<Vec<_>>());
}

// ----------------------------------------------------------------------------------------------
// 7. Backward where the terms of dx cancel: dy proportional to x.

/// `dy` (nearly) proportional to `x`: with `g = c x + eta`, `dx = (c x eps / V + eta - xhat
/// mean(eta xhat)) / s`, so with eps 0 the terms `g_j / s` and `xhat_j mean(g xhat) / s` (about
/// `|c xhat_j|`, up to `2^12`) cancel down to the noise, or to exactly 0. An implementation in
/// plain `f64` errs by tens of units there (measured and printed below for `f64` input, not
/// asserted); the library's double-double (`f64`) or `f64` (`f32`) evaluation must stay within
/// the target.
fn backward_cancellation<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = format::<F>().name();
    let gen: RowGen = Box::new(short_significand_row);
    let mut tallies = Vec::new();
    let mut naive = Tally::new(format!(
        "{name} backward, dy ~ c x: a plain f64 evaluation (for comparison, not asserted): dx"
    ));
    for relative in [0.0, 1e-6, 1e-3] {
        for eps in [0.0, 1e-5] {
            for gamma in [Gamma::None, Gamma::Ones] {
                let label = format!(
                    "{name} backward, dy = c x + {relative:e} noise, eps {eps:e} gamma {gamma:?}"
                );
                let mut b = Backward::new(&label);
                let dy_gen = proportional_dy(relative);
                // The same rows for the naive evaluation: replay the generator's draws.
                let mut replay = rng.clone();
                backward_scenario::<F>(&mut b, &mut rng, &gen, &dy_gen, &SOME_LENGTHS, eps, gamma);
                if format::<F>() == Format::F64 {
                    naive_scenario(&mut naive, &mut replay, &gen, &dy_gen, eps, gamma);
                }
                tallies.extend(b.into_tallies());
            }
        }
    }
    if naive.values > 0 {
        tallies.push(naive);
    }
    assert_tallies(&tallies);
}

/// Replays [`backward_scenario`] on `f64` rows (same draws) with a plain `f64` evaluation of
/// `dx = (g - xhat * mean(g * xhat)) / s` in place of the library, recording its errors.
fn naive_scenario(
    t: &mut Tally,
    rng: &mut StdRng,
    gen: &RowGen,
    dy_gen: &DyGen,
    eps: f64,
    gamma: Gamma,
) {
    for &n in &SOME_LENGTHS {
        let most = if cfg!(debug_assertions) { 256 } else { 4096 };
        let m = rng.random_range(1..=(most / n).clamp(2, 64));
        let x = batch::<f64>(m, n, || gen(rng, n));
        let dys: Vec<Vec<f64>> = x
            .rows()
            .into_iter()
            .map(|r| dy_gen(rng, &r.to_vec()))
            .collect();
        // check_backward draws gamma (Ones and None draw nothing).
        assert!(matches!(gamma, Gamma::None | Gamma::Ones));
        for (xr, dy) in x.rows().into_iter().zip(&dys) {
            let xv = xr.to_vec();
            let ms = xv.iter().map(|v| v * v).sum::<f64>() / n as f64;
            let s = (ms + eps).sqrt();
            if s == 0.0 {
                continue; // an all-zero row with eps 0 (dx defined as 0)
            }
            let mean_gx = dy.iter().zip(&xv).map(|(g, x)| g * (x / s)).sum::<f64>() / n as f64;
            let exact = rms_input_gradient(&xv, dy, None, eps);
            for ((g, x), want) in dy.iter().zip(&xv).zip(&exact) {
                let dx = (g - x / s * mean_gx) / s;
                t.check(
                    forward_units(dx, want, Format::F64),
                    f64::INFINITY,
                    String::new,
                );
            }
        }
    }
}

#[test]
fn backward_cancellation_f32() {
    backward_cancellation::<f32>(66);
}

#[test]
fn backward_cancellation_f64() {
    backward_cancellation::<f64>(67);
}

// ----------------------------------------------------------------------------------------------
// 8. One-element rows.

/// `normal * 2^e` for exponents over the whole range of `F` (subnormals included: `e` down to
/// the exponent of the smallest subnormal), in two exact steps for `f64`; with a few explicit
/// subnormals of `F`.
fn one_element_values<F: Float>(rng: &mut StdRng) -> Vec<f64> {
    let (lo, hi) = match format::<F>() {
        Format::F32 => (-149, 125),
        Format::F64 => (-1074, 1020),
    };
    let mut values: Vec<f64> = (lo..=hi)
        .flat_map(|e: i32| {
            let (a, b) = (2f64.powi(e / 2), 2f64.powi(e - e / 2));
            (0..8).map(move |_| (a, b)).collect::<Vec<_>>()
        })
        .map(|(a, b)| normal(rng) * a * b)
        .collect();
    let explicit: &[f64] = match format::<F>() {
        Format::F32 => &[1e-45, -1e-40, 1.5e-44, -2e-38],
        Format::F64 => &[5e-324, -1e-320, 1e-45, -1e-40, 1.5e-322, -2e-308],
    };
    values.extend(explicit);
    // Rounded to F (subnormal f32s are exact in f64).
    values.iter().map(|&v| wide(of::<F>(v))).collect()
}

/// A one-element row with eps 0 normalizes to the constant `sign(x)`, so its exact input
/// gradient is 0 (the reference agrees: `backward_reference_matches_closed_forms`), and the
/// library documents it as exactly 0. The general formula `(g - xhat * mean(g * xhat)) / s`,
/// whose terms cancel exactly there, used to leave their rounding times `|g / x|`: for tiny `x`
/// that was enormous (`f32`: `x = [-6.337978e-31]`, `dy = [1.1306636]` gave `dx = 7.0e14`;
/// `f64`: `x = [3.9433122073865263e-302]`, `dy = [1.4704866164983144]`, gamma 1, gave
/// `dx = -2.87e268`). Such rows now use the closed form `g * eps / (x^2 + eps)^(3/2)`; this test
/// sweeps the whole exponent range, subnormals included, and asserts `dx == 0` exactly (its
/// sign is that of `g`); `dgamma` is checked against the exact reference.
#[test]
fn one_element_rows_with_eps_zero_have_a_zero_input_gradient() {
    fn check<F: Float>(rng: &mut StdRng, b: &mut Backward) {
        let values = one_element_values::<F>(rng);
        let x = Array2::from_shape_fn((values.len(), 1), |(i, _)| of::<F>(values[i]));
        let dy = batch::<F>(values.len(), 1, || vec![normal(rng)]);
        for gamma in [Gamma::None, Gamma::Random] {
            check_backward(b, rng, &x, &dy, of(0.0), gamma);
        }
        for layer in [RmsNorm::<F>::new(of(0.0)), RmsNorm::<F>::affine(1, of(0.0))] {
            let dx = layer.unwrap().backward(&x, &dy).unwrap().input;
            for (v, d) in x.iter().zip(&dx) {
                assert!(wide(*d) == 0.0, "x = {v:e}: dx = {d:e}");
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(64);
    let mut b32 = Backward::new("f32 backward, one element, eps 0");
    let mut b64 = Backward::new("f64 backward, one element, eps 0");
    check::<f32>(&mut rng, &mut b32);
    check::<f64>(&mut rng, &mut b64);
    let tallies: Vec<Tally> = b32.into_tallies().chain(b64.into_tallies()).collect();
    assert_tallies(&tallies);
}

/// `backward_with_stats` gives one-element rows the same closed form: exactly 0 with eps 0
/// (whatever the saved `rstd`, `+inf` for a subnormal `x`), and the bits of `backward`
/// otherwise; over the whole exponent range, subnormals included.
#[test]
fn one_element_rows_with_saved_stats_have_the_closed_form_gradient() {
    fn check<F: Float>() {
        let mut rng = StdRng::seed_from_u64(65);
        let values = one_element_values::<F>(&mut rng);
        let x = Array2::from_shape_fn((values.len(), 1), |(i, _)| of::<F>(values[i]));
        let dy = batch::<F>(values.len(), 1, || vec![normal(&mut rng)]);
        for eps in [0.0, 1e-5] {
            let rms = RmsNorm::<F>::affine(1, of(eps)).unwrap();
            let (_, rstd) = rms.forward_with_stats(&x).unwrap();
            let saved = rms.backward_with_stats(&x, &rstd, &dy).unwrap();
            let fresh = rms.backward(&x, &dy).unwrap();
            for ((v, a), b) in x.iter().zip(&saved.input).zip(&fresh.input) {
                let (a, b) = (wide(*a), wide(*b));
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "x = {v:e}, eps {eps}: {a:e} vs {b:e}"
                );
                if eps == 0.0 {
                    assert!(a == 0.0, "x = {v:e}: {a:e}");
                }
            }
        }
    }
    check::<f32>();
    check::<f64>();
}
