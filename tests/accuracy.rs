//! Accuracy of `LayerNorm::forward` and `moments` against the exact rational reference in
//! `tests/common/exact.rs`.
//!
//! Error units (see the reference's module doc):
//! * forward: `|computed - exact| / (F::EPSILON * max(1, |exact|))`;
//! * moments: `|computed - exact| / ulp_F(exact)` (0.5 = correctly rounded).
//!
//! Every tolerance goes through [`Tally::check`]; the tolerances themselves are in
//! `tests/common/forward_bounds.rs`, which the example shares. Run with `--nocapture` to see the
//! measured maxima; `cargo run --release --example accuracy` measures the same scenarios on more
//! rows.

mod common;

use common::exact::{
    forward_units, mean_rounding_units, spec_var_f64, ulp_units, Approx, Dyadic, ExactRow, Format,
};
use common::forward_bounds::{
    affine_tol, forward_tol, Elem, F32_MOMENT_ULPS, F64_MOMENT_ULPS, F64_RSTD_ULPS,
};
use common::harness::{
    batch, bits, format, normal, of, offset_row, random_row, scaled, scales_row, wide, Kind, RowGen,
};
use common::tally::{assert_tallies, Tally};
use ndarray::{Array1, Array2};
use ndarray_layernorm::{moments, Float, LayerNorm, RmsNorm};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::ToPrimitive;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row lengths, including the awkward ones around SIMD/unroll widths.
const LENGTHS: [usize; 24] = [
    1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 127, 128, 129, 255, 256, 257, 768,
    1000,
];
/// Shorter list for the special-value scenarios.
const SOME_LENGTHS: [usize; 9] = [1, 2, 3, 7, 8, 9, 17, 768, 1000];

/// The distributions of the "random rows" scenario.
const KINDS: [Kind; 3] = [Kind::Normal, Kind::Uniform, Kind::Integers];

// ----------------------------------------------------------------------------------------------
// Checking forward against the reference.

type Tolerance<'a> = &'a dyn Fn(&Elem) -> f64;

/// Runs `forward` (with `(gamma, beta)` if given) on the rows of `x` and checks every output
/// against the exact reference with tolerance `tol(element)`.
fn check_forward<F: Float>(
    tally: &mut Tally,
    x: &Array2<F>,
    eps: F,
    params: Option<(&Array1<F>, &Array1<F>)>,
    tol: Tolerance,
) {
    let n = x.ncols();
    let layer = match params {
        None => LayerNorm::new(eps),
        Some((g, b)) => LayerNorm::affine(n, eps)
            .and_then(|l| l.with_gamma(g.clone()))
            .and_then(|l| l.with_beta(b.clone())),
    }
    .expect("valid layer");
    let y = layer.forward(x).expect("forward succeeds");
    let gamma: Option<Vec<f64>> = params.map(|(g, _)| g.iter().map(|&v| wide(v)).collect());
    let beta: Option<Vec<f64>> = params.map(|(_, b)| b.iter().map(|&v| wide(v)).collect());
    let eps = wide(eps);
    for (r, (xr, yr)) in x.rows().into_iter().zip(y.rows()).enumerate() {
        tally.rows += 1;
        let values: Vec<f64> = xr.iter().map(|&v| wide(v)).collect();
        let ys = ExactRow::new(&values).normalized(eps);
        for (i, (&computed, y_exact)) in yr.iter().zip(&ys).enumerate() {
            let g = gamma.as_ref().map_or(1.0, |g| g[i]);
            let b = beta.as_ref().map_or(0.0, |b| b[i]);
            let z_exact = if params.is_some() {
                y_exact.affine(g, b)
            } else {
                y_exact.clone()
            };
            let elem = Elem {
                y: y_exact.to_f64(),
                gamma: g,
                z: z_exact.to_f64(),
            };
            let units = forward_units(wide(computed), &z_exact, format::<F>());
            tally.check(units, tol(&elem), || {
                let params = match params {
                    Some((g, b)) => format!("\n  gamma = {g:?}\n  beta = {b:?}"),
                    None => String::new(),
                };
                format!(
                    "{} row {r} of {} (n = {n}, eps = {eps:e}), element {i}: computed {computed:?}, \
                     exact {:e}\n  row = {:?}{params}",
                    format::<F>().name(),
                    x.nrows(),
                    z_exact.to_f64(),
                    xr.to_vec(),
                )
            });
        }
    }
}

// ----------------------------------------------------------------------------------------------
// The reference itself.

fn rat(n: i64, d: i64) -> BigRational {
    BigRational::new(BigInt::from(n), BigInt::from(d))
}

/// `2^e` as a rational.
fn pow2(e: i64) -> BigRational {
    Dyadic::pow2(e).to_rational()
}

/// `|a - v| < a.err` and `a.err <= 2^-130`, with `v^2 = v2` and `sign(v) = sign`: checked with
/// squares in exact arithmetic.
fn assert_approximates_sqrt(a: &Approx, v2: &BigRational, negative: bool) {
    let lo = a.approx.to_rational();
    let err = a.err.to_rational();
    assert!(err <= pow2(-130), "error bound too large");
    let (lo, hi) = if negative {
        (-(lo.clone()), -lo + &err)
    } else {
        (lo.clone(), lo + &err)
    };
    // |approx| <= |v| < |approx| + err, since the approximation is floor(|v| * 2^k) / 2^k.
    assert!(
        &lo * &lo <= *v2 && *v2 < &hi * &hi,
        "{a:?} does not bracket sqrt({v2})"
    );
}

#[test]
fn reference_matches_closed_forms() {
    // [1, 2, 3, 4], eps 0: mean 5/2, var 5/4, y = (-3, -1, 1, 3) / sqrt(5).
    let row = ExactRow::new(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(row.mean(), rat(5, 2));
    assert_eq!(row.var(), rat(5, 4));
    for (y, k) in row.normalized(0.0).iter().zip([-3i32, -1, 1, 3]) {
        assert_approximates_sqrt(y, &rat(i64::from(k * k), 5), k < 0);
        let y_f64 = f64::from(k) / 5f64.sqrt();
        assert!(forward_units(y_f64, y, Format::F64) <= 1.0);
    }

    // ... and rstd = 1 / sqrt(5/4), whose square is 4/5.
    assert_approximates_sqrt(&row.rstd(0.0).unwrap(), &rat(4, 5), false);

    // [0, 2], eps 1: mean 1, var 1, y = (-1, 1) / sqrt(2), rstd = 1 / sqrt(2).
    let row = ExactRow::new(&[0.0, 2.0]);
    assert_eq!((row.mean(), row.var()), (rat(1, 1), rat(1, 1)));
    for (y, negative) in row.normalized(1.0).iter().zip([true, false]) {
        assert_approximates_sqrt(y, &rat(1, 2), negative);
    }
    assert_approximates_sqrt(&row.rstd(1.0).unwrap(), &rat(1, 2), false);
    // 1e9 + {0, 1, 1}, eps 0: var 2/9 (the offset rows' closed form), rstd^2 = 9/2.
    let row = ExactRow::new(&[1e9, 1e9 + 1.0, 1e9 + 1.0]);
    assert_eq!(row.var(), rat(2, 9));
    assert_approximates_sqrt(&row.rstd(0.0).unwrap(), &rat(9, 2), false);

    // [-1, 1], eps 0: y = (-1, 1) exactly; with gamma (2, 0.5) and beta (0.25, -3):
    // z = (-1.75, -2.5) exactly.
    let row = ExactRow::new(&[-1.0, 1.0]);
    let y = row.normalized(0.0);
    assert!(y.iter().all(Approx::is_exact));
    assert_eq!((y[0].to_f64(), y[1].to_f64()), (-1.0, 1.0));
    let rstd = row.rstd(0.0).unwrap();
    assert!(rstd.is_exact() && rstd.to_f64() == 1.0);
    let z = row.forward(0.0, Some(&[2.0, 0.5]), Some(&[0.25, -3.0]));
    assert_eq!((z[0].to_f64(), z[1].to_f64()), (-1.75, -2.5));
    assert!(z.iter().all(Approx::is_exact));

    // 0.1 (an f64, so not 1/10) twice and 0.3: mean and var from the exact binary values.
    let (a, b) = (
        Dyadic::from_f64(0.1).to_rational(),
        Dyadic::from_f64(0.3).to_rational(),
    );
    let mean = (&a + &a + &b) / BigRational::from_integer(3.into());
    let var = ((&a - &mean) * (&a - &mean) * BigRational::from_integer(2.into())
        + (&b - &mean) * (&b - &mean))
        / BigRational::from_integer(3.into());
    let row = ExactRow::new(&[0.1, 0.1, 0.3]);
    assert_eq!((row.mean(), row.var()), (mean, var));

    // Subnormal and huge values decode exactly; 2^-1074 * {1, 3}: mean 2^-1073, var 2^-2148.
    assert_eq!(Dyadic::from_f64(5e-324), Dyadic::pow2(-1074));
    assert_eq!(Dyadic::from_f64(-f64::MAX).to_f64(), -f64::MAX);
    let row = ExactRow::new(&[5e-324, 1.5e-323]);
    assert_eq!((row.mean(), row.var()), (pow2(-1073), pow2(-2148)));
    let y = row.normalized(0.0);
    assert!(y.iter().all(Approx::is_exact));

    // Constant rows: exactly 0, for eps 0 too (0/0 := 0); one-element rows likewise. Their
    // rstd is 1 / sqrt(eps): none for eps 0, and 1 / sqrt(fl(eps)) otherwise.
    for eps in [0.0, 1e-5, 1.0] {
        for row in [&[0.1; 5][..], &[-3.7][..], &[f64::MAX; 3][..]] {
            let y = ExactRow::new(row).normalized(eps);
            assert!(y.iter().all(|y| y.is_exact() && y.approx.is_zero()));
            let rstd = ExactRow::new(row).rstd(eps);
            if eps == 0.0 {
                assert!(rstd.is_none());
            } else {
                let (rstd, inv) = (
                    rstd.unwrap(),
                    rat(1, 1) / Dyadic::from_f64(eps).to_rational(),
                );
                if rstd.is_exact() {
                    let r = rstd.approx.to_rational();
                    assert_eq!(&r * &r, inv);
                } else {
                    assert_approximates_sqrt(&rstd, &inv, false);
                }
            }
        }
    }

    // Error units: 1 + 2^-52 against exact 1 is one f64 unit, 2^-29 f32 units, and 1 ulp of
    // the exact value; an f64 neighbour of a midpoint is 1/2 ulp away; 0 against the exact
    // 2^-2148 is 2^-1074 subnormal ulps away.
    let one = Approx::exact(Dyadic::pow2(0));
    assert_eq!(forward_units(1.0 + f64::EPSILON, &one, Format::F64), 1.0);
    assert_eq!(
        forward_units(1.0 + f64::EPSILON, &one, Format::F32),
        2f64.powi(-29)
    );
    assert_eq!(ulp_units(1.0 + f64::EPSILON, &pow2(0), Format::F64), 1.0);
    let midpoint = pow2(-52) + pow2(-105); // halfway between 2^-52 and its successor
    assert_eq!(ulp_units(f64::EPSILON, &midpoint, Format::F64), 0.5);
    assert_eq!(ulp_units(0.0, &pow2(-2148), Format::F64), f64::from_bits(1));

    // Mean rounding: mean 3 (ulp 2^-51), var 1: |delta| <= 2^-52 moves y by 1 unit (+ 2^-53).
    let units = mean_rounding_units(&rat(3, 1), &rat(1, 1), 0.0, Format::F64);
    assert_eq!(units, 1.0 + f64::EPSILON / 2.0);
}

/// The reference agrees with a plain two-pass `f64` evaluation on easy rows (to ~1e-13).
#[test]
fn reference_matches_naive_f64() {
    let mut rng = StdRng::seed_from_u64(1);
    for n in [2, 3, 10, 100] {
        for _ in 0..20 {
            let row: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
            let nf = n as f64;
            let mean = row.iter().sum::<f64>() / nf;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / nf;
            let exact = ExactRow::new(&row);
            assert!((exact.mean().to_f64().unwrap() - mean).abs() < 1e-13);
            assert!((exact.var().to_f64().unwrap() - var).abs() < 1e-13 * var);
            for (v, y) in row.iter().zip(exact.normalized(1e-5)) {
                let naive = (v - mean) / (var + 1e-5).sqrt();
                assert!((y.to_f64() - naive).abs() < 1e-12, "{naive} vs {y:?}");
            }
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
            for n in LENGTHS {
                let x = batch::<F>(2, n, || random_row(&mut rng, kind, n));
                check_forward(&mut t, &x, of(eps), None, &forward_tol::<F>);
            }
            for _ in 0..4 {
                let n = rng.random_range(1..=1000);
                let x = batch::<F>(1, n, || random_row(&mut rng, kind, n));
                check_forward(&mut t, &x, of(eps), None, &forward_tol::<F>);
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
// 2. f32 rows with a large offset (|mean| / std up to 1e5).

#[test]
fn large_offset_f32() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut tallies = Vec::new();
    for (offset, sigma) in [(1e1, 1.0), (1e3, 1.0), (1e5, 1.0), (1.0, 1e-4)] {
        for eps in [1e-5, 0.0] {
            let mut t = Tally::new(format!("f32 offset {offset:e} sigma {sigma:e} eps {eps:e}"));
            for n in SOME_LENGTHS {
                let x = batch::<f32>(2, n, || offset_row(&mut rng, n, offset, sigma));
                check_forward(&mut t, &x, of(eps), None, &forward_tol::<f32>);
            }
            tallies.push(t);
        }
    }
    assert_tallies(&tallies);
}

// ----------------------------------------------------------------------------------------------
// 3. and 4. Tiny, huge, subnormal and mixed magnitudes.

/// `(name, row generator)` for the extreme-magnitude scenarios of `F`.
fn extreme_scenarios<F: Float>() -> Vec<(&'static str, RowGen)> {
    let (tiny, huge) = match format::<F>() {
        Format::F32 => (1e-30, 1e37),
        Format::F64 => (1e-300, 1e300),
    };
    let max_exp = match format::<F>() {
        Format::F32 => 254,
        Format::F64 => 2046,
    };
    vec![
        ("tiny", scaled(tiny)),
        ("huge", scaled(huge)),
        ("subnormal", bits::<F>(0..=0)),
        ("mixed exponents", bits::<F>(0..=max_exp)),
    ]
}

fn extreme_magnitudes<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tallies = Vec::new();
    for (name, gen) in extreme_scenarios::<F>() {
        for eps in [0.0, 1e-5] {
            let mut t = Tally::new(format!("{} {name} eps {eps:e}", format::<F>().name()));
            for n in SOME_LENGTHS {
                // More of the short rows: they are cheap and the most varied.
                let x = batch::<F>((200 / n).max(3), n, || gen(&mut rng, n));
                check_forward(&mut t, &x, of(eps), None, &forward_tol::<F>);
            }
            tallies.push(t);
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
    extreme_magnitudes::<f64>(41);
}

// ----------------------------------------------------------------------------------------------
// 5. f64 rows with a large offset (|mean| / std up to 1e12): within two units, rstd within 1 ulp.

/// Row lengths of the offset scenarios: rows of at most 64 elements (`SHORT` in
/// `src/kernels/sum.rs`), whose statistics are computed up to 64 rows at once, and longer rows
/// (one compensated sum in 64 lanes each), around both thresholds.
const OFFSET_LENGTHS: [usize; 13] = [1, 2, 3, 5, 7, 9, 17, 63, 64, 65, 100, 768, 1029];

/// Rows per matrix of length `n`: enough short rows to fill a batch of 64 and start another.
fn offset_rows(n: usize) -> usize {
    (256 / n).clamp(2, 70)
}

/// Checks `forward_with_stats(x).rstd` of every row against the exact `1 / sqrt(var + eps)`,
/// in ulps of the exact value (rows with `var + eps == 0` must report `+inf`).
fn check_rstd(tally: &mut Tally, x: &Array2<f64>, eps: f64, tol: f64) {
    let (_, stats) = LayerNorm::new(eps)
        .expect("valid layer")
        .forward_with_stats(x)
        .expect("forward succeeds");
    for (r, xr) in x.rows().into_iter().enumerate() {
        tally.rows += 1;
        let values = xr.to_vec();
        let computed = stats.rstd[r];
        let Some(exact) = ExactRow::new(&values).rstd(eps) else {
            assert_eq!(computed, f64::INFINITY, "rstd of {values:?}");
            continue;
        };
        let exact = exact.approx.to_rational();
        let units = ulp_units(computed, &exact, Format::F64);
        tally.check(units, tol, || {
            format!(
                "rstd of row {r} (n = {}, eps = {eps:e}): computed {computed:?}, exact {:e}\n  row = {values:?}",
                values.len(),
                exact.to_f64().unwrap_or(f64::NAN),
            )
        });
    }
}

/// `offset + sigma * N(0, 1)` (the sign of the offset drawn per row, so negative offsets are in
/// every scenario): the rounded mean is off by up to `u |mean|`, `u = 2^-53`, which would move
/// the outputs by `u |mean| / std` (2.4e8 units at 1e9) and `rstd` by `(u |mean| / std)^2`
/// relative had the library normalized with it. Outputs within [`F64_FORWARD_UNITS`] (via
/// [`forward_tol`]), `rstd` within 1 ulp.
#[test]
fn large_offset_f64_within_two_units() {
    let mut rng = StdRng::seed_from_u64(51);
    let mut tallies = Vec::new();
    let scenarios = [
        (1e3, 1.0),
        (1e6, 1.0),
        (1e9, 1.0),
        (1e12, 1.0),
        (-1e9, 1.0),
        (1.0, 1e-9),
    ];
    for (offset, sigma) in scenarios {
        for eps in [1e-5, 0.0] {
            let name = format!("f64 offset {offset:e} + N(0,{sigma:e}) eps {eps:e}");
            let mut t = Tally::new(name.clone());
            let mut r = Tally::ulps(format!("{name}, rstd"));
            for n in OFFSET_LENGTHS {
                let x = batch::<f64>(offset_rows(n), n, || offset_row(&mut rng, n, offset, sigma));
                check_forward(&mut t, &x, eps, None, &forward_tol::<f64>);
                check_rstd(&mut r, &x, eps, F64_RSTD_ULPS);
            }
            tallies.extend([t, r]);
        }
    }
    assert_tallies(&tallies);
}

/// Row lengths of the saved-`rstd` scenario: every length of the batched short path (`SHORT`
/// in `src/kernels/sum.rs`), then longer rows (one compensated sum in 64 lanes each).
fn rstd_lengths() -> impl Iterator<Item = usize> {
    (1..=64).chain([65, 100, 768, 1029])
}

/// Checks the `rstd` that `LayerNorm` (`center`) or `RmsNorm` saves for every row of `x`
/// against the exact `1 / sqrt(var + eps)` (RMSNorm: `1 / sqrt(mean(x^2) + eps)`, the exact
/// `rstd` of the row `[x, -x]`, whose mean is exactly 0 and whose variance is `mean(x^2)`), in
/// ulps of the exact value; rows with an exact `var + eps == 0` are skipped. LayerNorm rows go
/// to `centred` where the exact `mean^2 <= var`, else to `offset`.
fn check_saved_rstd(
    tallies: (&mut Tally, &mut Tally),
    x: &Array2<f64>,
    eps: f64,
    center: bool,
    tol: f64,
) {
    let (centred, offset) = tallies;
    let rstd = if center {
        let layer = LayerNorm::new(eps).expect("valid layer");
        layer
            .forward_with_stats(x)
            .expect("forward succeeds")
            .1
            .rstd
    } else {
        let layer = RmsNorm::new(eps).expect("valid layer");
        layer.forward_with_stats(x).expect("forward succeeds").1
    };
    for (r, xr) in x.rows().into_iter().enumerate() {
        let values = xr.to_vec();
        let row = if center {
            ExactRow::new(&values)
        } else {
            let mirrored: Vec<f64> = values
                .iter()
                .copied()
                .chain(values.iter().map(|v| -v))
                .collect();
            ExactRow::new(&mirrored)
        };
        let Some(exact) = row.rstd(eps) else {
            continue;
        };
        let tally = if !center || row.mean() * row.mean() <= row.var() {
            &mut *centred
        } else {
            &mut *offset
        };
        tally.rows += 1;
        let exact = exact.approx.to_rational();
        let computed = rstd[r];
        let units = ulp_units(computed, &exact, Format::F64);
        tally.check(units, tol, || {
            format!(
                "saved rstd of row {r} (n = {}, eps = {eps:e}): computed {computed:?}, exact {:e}\n  row = {values:?}",
                values.len(),
                exact.to_f64().unwrap_or(f64::NAN),
            )
        });
    }
}

/// The `rstd` saved by `forward_with_stats` of `f64` LayerNorm rows with `|mean| <= std` (and,
/// in their own tally, the random rows with `|mean| > std`) and of `f64` RMSNorm rows, random
/// `N(mu, sigma)` and uniform, every short length and some long ones, eps `1e-5` and 0: within
/// 1 ulp of the exact `1 / sqrt(var + eps)` ([`F64_RSTD_ULPS`]).
#[test]
fn saved_rstd_f64_within_one_ulp() {
    let mut rng = StdRng::seed_from_u64(53);
    let mut tallies = Vec::new();
    for center in [true, false] {
        let layer = if center { "LayerNorm" } else { "RMSNorm" };
        for eps in [1e-5, 0.0] {
            for kind in [Kind::Normal, Kind::Uniform] {
                let name = format!("f64 {layer} saved rstd, random {kind:?} eps {eps:e}");
                let mut c = Tally::ulps(if center {
                    format!("{name}, |mean| <= std")
                } else {
                    name.clone()
                });
                let mut o = Tally::ulps(format!("{name}, |mean| > std"));
                for n in rstd_lengths() {
                    let rows = if n <= 64 { 130 } else { 24 };
                    let x = batch::<f64>(rows, n, || random_row(&mut rng, kind, n));
                    check_saved_rstd((&mut c, &mut o), &x, eps, center, F64_RSTD_ULPS);
                }
                tallies.push(c);
                if center {
                    tallies.push(o);
                }
            }
        }
    }
    assert_tallies(&tallies);
}

// ----------------------------------------------------------------------------------------------
// 6. Degenerate rows: exactly 0 (or exactly beta).

fn degenerate_rows<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let constants: Vec<f64> = match format::<F>() {
        Format::F32 => vec![
            0.0,
            -0.0,
            0.1,
            -3.7,
            1e6 + 0.1,
            1e-30,
            1e-45,
            1e37,
            f64::from(f32::MAX),
        ],
        Format::F64 => vec![
            0.0,
            -0.0,
            0.1,
            -3.7,
            1e6 + 0.1,
            1e-300,
            5e-324,
            1e300,
            f64::MAX,
        ],
    };
    for eps in [0.0, 1e-5, 1.0] {
        let eps = of::<F>(eps);
        for n in SOME_LENGTHS {
            let gamma = Array1::from_iter((0..n).map(|_| of::<F>(normal(&mut rng))));
            let beta = Array1::from_iter((0..n).map(|_| of::<F>(normal(&mut rng))));
            let plain = LayerNorm::new(eps).unwrap();
            let affine = LayerNorm::affine(n, eps)
                .and_then(|l| l.with_gamma(gamma.clone()))
                .and_then(|l| l.with_beta(beta.clone()))
                .unwrap();
            for &c in &constants {
                for sign in [1.0, -1.0] {
                    let x = Array2::<F>::from_elem((2, n), of(sign * c));
                    let y = plain.forward(&x).unwrap();
                    assert!(
                        y.iter().all(|&v| v == F::zero()),
                        "constant {c:e} (n = {n}, eps = {eps:?}): {y:?}"
                    );
                    let z = affine.forward(&x).unwrap();
                    for row in z.rows() {
                        assert_eq!(
                            row, beta,
                            "constant {c:e} (n = {n}, eps = {eps:?}) with beta"
                        );
                    }
                }
            }
        }
        // One-element rows of any value.
        let values: Vec<f64> = (0..200)
            .map(|_| normal(&mut rng) * 2f64.powi(rng.random_range(-60..60)))
            .collect();
        let x = batch::<F>(values.len(), 1, {
            let mut it = values.into_iter();
            move || vec![it.next().unwrap()]
        });
        let y = LayerNorm::new(eps).unwrap().forward(&x).unwrap();
        assert!(y.iter().all(|&v| v == F::zero()), "one-element rows: {y:?}");
    }
}

#[test]
fn degenerate_rows_exactly_zero_f32() {
    degenerate_rows::<f32>(61);
}

#[test]
fn degenerate_rows_exactly_zero_f64() {
    degenerate_rows::<f64>(62);
}

// ----------------------------------------------------------------------------------------------
// 7. Moments are correctly rounded.

fn check_moments<F: Float>(mean_t: &mut Tally, var_t: &mut Tally, x: &Array2<F>, tol: f64) {
    let m = moments(x).expect("moments succeed");
    for (r, xr) in x.rows().into_iter().enumerate() {
        mean_t.rows += 1;
        var_t.rows += 1;
        let values: Vec<f64> = xr.iter().map(|&v| wide(v)).collect();
        let exact = ExactRow::new(&values);
        let n = values.len();
        let detail = |what: &'static str, computed: F, exact: &BigRational| {
            let row = xr.to_vec();
            let exact = exact.to_f64().unwrap_or(f64::NAN);
            move || {
                format!(
                    "{} {what} of row {r} (n = {n}): computed {computed:?}, exact {exact:e}\n  row = {row:?}",
                    format::<F>().name(),
                )
            }
        };
        let mean = exact.mean();
        let units = ulp_units(wide(m.mean[r]), &mean, format::<F>());
        mean_t.check(units, tol, detail("mean", m.mean[r], &mean));
        let var = match format::<F>() {
            // f32 input: the f64 steps are far more precise than f32, so the result is the
            // exact variance correctly rounded (up to the double rounding in F32_MOMENT_ULPS).
            Format::F32 => exact.var(),
            // f64 input: the variance is specified (and the seed computed it) as the sum of the
            // squares of the rounded deviations `fl(x_i - m)`, `m` the correctly rounded mean,
            // each square rounded once, the sum divided by n and rounded once. That is what
            // must come out correctly rounded; its distance from the exact variance is measured
            // by `moments_var_f64_is_close_to_the_exact_variance`.
            Format::F64 => spec_var_f64(&values, &mean),
        };
        let units = ulp_units(wide(m.var[r]), &var, format::<F>());
        var_t.check(units, tol, detail("var", m.var[r], &var));
    }
}

/// Which statistic a moments test asserts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stat {
    Mean,
    Var,
}

/// Checks `moments` on random, offset and scaled rows; asserts only the `which` tallies (both
/// are printed), so that the mean and the variance pass or fail separately.
fn moments_correctly_rounded<F: Float>(seed: u64, tol: f64, which: Stat) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = format::<F>().name();
    let mut tallies = Vec::new();
    for kind in KINDS {
        let mut mean_t = Tally::ulps(format!("{name} moments mean, random {kind:?}"));
        let mut var_t = Tally::ulps(format!("{name} moments var, random {kind:?}"));
        for n in LENGTHS {
            let x = batch::<F>(4, n, || random_row(&mut rng, kind, n));
            check_moments(&mut mean_t, &mut var_t, &x, tol);
        }
        tallies.extend([mean_t, var_t]);
    }
    let offsets: &[f64] = match format::<F>() {
        Format::F32 => &[1e3, 1e5],
        Format::F64 => &[1e3, 1e6, 1e9],
    };
    for &offset in offsets {
        let mut mean_t = Tally::ulps(format!("{name} moments mean, offset {offset:e} + N(0,1)"));
        let mut var_t = Tally::ulps(format!("{name} moments var, offset {offset:e} + N(0,1)"));
        for n in SOME_LENGTHS {
            let x = batch::<F>(4, n, || offset_row(&mut rng, n, offset, 1.0));
            check_moments(&mut mean_t, &mut var_t, &x, tol);
        }
        tallies.extend([mean_t, var_t]);
    }
    // Magnitudes whose variance is still within range of F.
    let max_exp = match format::<F>() {
        Format::F32 => 50,
        Format::F64 => 400,
    };
    let mut mean_t = Tally::ulps(format!("{name} moments mean, scale 2^±{max_exp}"));
    let mut var_t = Tally::ulps(format!("{name} moments var, scale 2^±{max_exp}"));
    for n in SOME_LENGTHS {
        let x = batch::<F>(4, n, || scales_row(&mut rng, n, max_exp));
        check_moments(&mut mean_t, &mut var_t, &x, tol);
    }
    tallies.extend([mean_t, var_t]);
    // Tallies alternate mean, var.
    let asserted: Vec<&Tally> = tallies
        .iter()
        .skip(usize::from(which == Stat::Var))
        .step_by(2)
        .collect();
    assert_tallies(asserted);
}

#[test]
fn moments_mean_correctly_rounded_f32() {
    moments_correctly_rounded::<f32>(71, F32_MOMENT_ULPS, Stat::Mean);
}

#[test]
fn moments_var_correctly_rounded_f32() {
    moments_correctly_rounded::<f32>(71, F32_MOMENT_ULPS, Stat::Var);
}

#[test]
fn moments_mean_correctly_rounded_f64() {
    moments_correctly_rounded::<f64>(72, F64_MOMENT_ULPS, Stat::Mean);
}

#[test]
fn moments_var_correctly_rounded_f64() {
    moments_correctly_rounded::<f64>(72, F64_MOMENT_ULPS, Stat::Var);
}

/// The specified `f64` variance differs from the exact variance of the row by the rounding of
/// the mean (`delta = m - mean`, which adds `delta^2`) and one rounding of each deviation and
/// each square (each relative `u = 2^-53`):
///
/// ```text
/// |var' - var| <= 0.5 ulp(var') + 3 u var + delta^2      (to first order)
/// ```
///
/// Asserted in units of `ulp(var)` on random rows and on rows with an offset, where `delta^2`
/// dominates (the 1e9 offset makes it hundreds of ulps: the price of the once-rounded mean that
/// the contract prescribes).
#[test]
fn moments_var_f64_is_close_to_the_exact_variance() {
    let mut rng = StdRng::seed_from_u64(73);
    let mut tallies = Vec::new();
    let scenarios: [(&str, f64); 4] = [
        ("N(0,1)", 0.0),
        ("1e3 + N(0,1)", 1e3),
        ("1e6 + N(0,1)", 1e6),
        ("1e9 + N(0,1)", 1e9),
    ];
    for (name, offset) in scenarios {
        let mut t = Tally::ulps(format!("f64 moments var vs exact variance, {name}"));
        for n in SOME_LENGTHS {
            let x = batch::<f64>(4, n, || offset_row(&mut rng, n, offset, 1.0));
            let m = moments(&x).expect("moments succeed");
            for (r, xr) in x.rows().into_iter().enumerate() {
                t.rows += 1;
                let values = xr.to_vec();
                let exact = ExactRow::new(&values);
                let (mean, var) = (exact.mean(), exact.var());
                let delta = Dyadic::from_f64(mean.to_f64().expect("finite")).to_rational() - &mean;
                // Bound in ulps of the exact variance: 0.5 (rounding of the result, allowing
                // one binade step) + 3 u var / ulp(var) (<= 3) + delta^2 / ulp(var).
                let delta2 = &delta * &delta;
                // delta^2 / ulp(var): its size in ulps of itself, rescaled to ulps of var.
                let delta2_units = ulp_units(0.0, &delta2, Format::F64) * ulp_ratio(&delta2, &var);
                let bound = 1.0 + 3.0 + delta2_units;
                let units = ulp_units(m.var[r], &var, Format::F64);
                t.check(units, bound, || {
                    format!(
                        "row {r} (n = {n}): var {} vs exact {:e}, row {values:?}",
                        m.var[r],
                        var.to_f64().unwrap_or(f64::NAN)
                    )
                });
            }
        }
        tallies.push(t);
    }
    assert_tallies(&tallies);
}

/// `ulp(a) / ulp(b)` in `f64`, so that units of `ulp(a)` convert to units of `ulp(b)`.
fn ulp_ratio(a: &BigRational, b: &BigRational) -> f64 {
    let ea = common::exact::ulp_exp(a, Format::F64);
    let eb = common::exact::ulp_exp(b, Format::F64);
    2f64.powi((ea - eb) as i32)
}

// ----------------------------------------------------------------------------------------------
// 8. Forward with random gamma and beta.

/// Forward with gamma and beta, against [`affine_tol`].
fn affine<F: Float>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tallies = Vec::new();
    for eps in [1e-5, 0.0] {
        for kind in [Kind::Normal, Kind::Uniform] {
            let mut t = Tally::new(format!(
                "{} affine, random {kind:?} eps {eps:e}",
                format::<F>().name()
            ));
            for n in LENGTHS {
                let gamma = Array1::from_iter((0..n).map(|_| of::<F>(rng.random_range(-2.0..2.0))));
                let beta = Array1::from_iter((0..n).map(|_| of::<F>(normal(&mut rng))));
                let x = batch::<F>(2, n, || random_row(&mut rng, kind, n));
                check_forward(&mut t, &x, of(eps), Some((&gamma, &beta)), &affine_tol::<F>);
            }
            tallies.push(t);
        }
    }
    assert_tallies(&tallies);
}

#[test]
fn affine_f32() {
    affine::<f32>(81);
}

#[test]
fn affine_f64() {
    affine::<f64>(82);
}
