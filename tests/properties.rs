//! Property tests (proptest), deterministic: a fixed ChaCha seed unless `PROPTEST_RNG_SEED` is
//! set, and a modest number of cases unless `PROPTEST_CASES` is set (CI may raise it).
//!
//! Expected statistics of the outputs are computed here with a plain two-pass `f64` loop, never
//! with the library.

#[path = "common/support.rs"]
mod support;

use ndarray::{Array1, Array2, Axis};
use ndarray_layernorm::{LayerNorm, RmsNorm};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed};

use support::{assert_bitwise_eq, fortran_copy, mean_var, same_bits, TestFloat};

/// Cases per property when `PROPTEST_CASES` is not set: keeps the debug `cargo test` fast.
const DEFAULT_CASES: u32 = 256;
/// The RNG seed when `PROPTEST_RNG_SEED` is not set.
const DEFAULT_SEED: u64 = 0x1a7e_0c0f_fee5_eed5;

fn config() -> ProptestConfig {
    let env = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            env.cases
        } else {
            DEFAULT_CASES
        },
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            env.rng_seed
        } else {
            RngSeed::Fixed(DEFAULT_SEED)
        },
        ..env
    }
}

/// A matrix description: `rows x cols` values `offset + scale * u` with `u` in `[-1, 1)`.
#[derive(Debug, Clone)]
struct Data {
    rows: usize,
    cols: usize,
    u: Vec<f64>,
    offset: f64,
    scale: f64,
}

impl Data {
    fn array<F: TestFloat>(&self) -> Array2<F> {
        Array2::from_shape_fn((self.rows, self.cols), |(i, j)| {
            F::of(self.offset + self.scale * self.u[i * self.cols + j])
        })
    }
}

fn data(max_rows: usize, max_cols: usize) -> impl Strategy<Value = Data> {
    (1..=max_rows, 1..=max_cols).prop_flat_map(|(rows, cols)| {
        (
            proptest::collection::vec(-1.0f64..1.0, rows * cols),
            prop_oneof![Just(0.0), -10.0f64..10.0, -1e4f64..1e4],
            (-3i32..=3).prop_map(|k| 10f64.powi(k)),
        )
            .prop_map(move |(u, offset, scale)| Data {
                rows,
                cols,
                u,
                offset,
                scale,
            })
    })
}

fn epsilon() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![0.0, 1e-12, 1e-5, 1e-3, 1.0])
}

fn layer<F: TestFloat>(eps: f64) -> LayerNorm<F> {
    LayerNorm::new(F::of(eps)).expect("valid epsilon")
}

/// Each output row has mean ~0 and (biased) variance ~var/(var + eps), where var is the variance
/// of the input row; a constant row gives exact zeros.
fn check_normalized_moments<F: TestFloat>(d: &Data, eps: f64) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let eps = F::of(eps).f64();
    let y = layer::<F>(eps).forward(&x).unwrap();
    for (xr, yr) in x.rows().into_iter().zip(y.rows()) {
        let (mx, vx) = mean_var(xr.iter().map(|v| v.f64()));
        if vx == 0.0 {
            prop_assert!(
                yr.iter().all(|&v| v.f64() == 0.0),
                "constant row {xr} -> {yr}"
            );
            continue;
        }
        let (my, vy) = mean_var(yr.iter().map(|v| v.f64()));
        let max_y = yr.iter().fold(0.0f64, |a, v| a.max(v.f64().abs()));
        let r = 1.0 / (vx + eps).sqrt();
        // Each y is within a few roundings of its exact value; the rounded mean of x shifts the
        // whole row by up to ~eps * |mean| * rstd.
        let mean_tol = 4.0 * F::EPS * (1.0 + max_y + mx.abs() * r);
        prop_assert!(
            my.abs() <= mean_tol,
            "mean of output {my:e} > {mean_tol:e} for row {xr} (eps {eps:e}) -> {yr}"
        );
        let expected = vx / (vx + eps);
        let var_tol = 16.0 * F::EPS * expected;
        prop_assert!(
            (vy - expected).abs() <= var_tol,
            "output variance {vy:e}, expected {expected:e} +- {var_tol:e} (eps {eps:e}): {xr}"
        );
    }
    Ok(())
}

/// Adding the constant `c` to a row (exactly: small integers) changes the outputs by at most a few
/// units: one rounding of `F` plus the `f64` error of subtracting the mean.
fn check_shift_invariance<F: TestFloat>(
    rows: &[Vec<i32>],
    c: i32,
    eps: f64,
) -> Result<(), TestCaseError> {
    let cols = rows[0].len();
    let x = Array2::from_shape_fn((rows.len(), cols), |(i, j)| F::of(f64::from(rows[i][j])));
    let shifted = x.mapv(|v| F::of(v.f64() + f64::from(c)));
    prop_assert_eq!(
        &shifted - &x,
        Array2::from_elem(x.raw_dim(), F::of(f64::from(c)))
    );
    let ln = layer::<F>(eps);
    let eps = F::of(eps).f64();
    let y = ln.forward(&x).unwrap();
    let ys = ln.forward(&shifted).unwrap();
    for i in 0..x.nrows() {
        let (m, v) = mean_var(x.row(i).iter().map(|v| v.f64()));
        let ms = m + f64::from(c);
        let r = 1.0 / (v + eps).sqrt();
        for j in 0..cols {
            let (a, b) = (y[[i, j]].f64(), ys[[i, j]].f64());
            let scale = a.abs().max(b.abs());
            let tol = 2.0 * F::EPS * scale
                + 8.0 * f64::EPSILON * (1.0 + scale + (m.abs() + ms.abs()) * r);
            prop_assert!(
                (a - b).abs() <= tol,
                "row {i} col {j}: {a:e} vs shifted {b:e} (c = {c}, eps {eps:e}, tol {tol:e})"
            );
        }
    }
    Ok(())
}

/// `forward`, `forward_inplace`, `forward_with_stats` and `forward` on Fortran, transposed and
/// reversed layouts of the same logical array all agree bitwise.
fn check_layout_independence<F: TestFloat>(
    d: &Data,
    eps: f64,
    affine: bool,
) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let mut ln = layer::<F>(eps);
    if affine {
        let gamma: Array1<F> = (0..d.cols).map(|j| F::of(1.0 + j as f64 / 7.0)).collect();
        let beta: Array1<F> = (0..d.cols).map(|j| F::of(j as f64 / 3.0 - 2.0)).collect();
        ln = ln.with_gamma(gamma).unwrap().with_beta(beta).unwrap();
    }
    let (y, stats) = ln.forward_with_stats(&x).unwrap();
    assert_bitwise_eq(
        &ln.forward(&x).unwrap(),
        &y,
        "forward vs forward_with_stats",
    );
    let mut inplace = x.clone();
    ln.forward_inplace(&mut inplace).unwrap();
    assert_bitwise_eq(&inplace, &y, "forward_inplace");

    let f = fortran_copy(&x);
    let (yf, sf) = ln.forward_with_stats(&f).unwrap();
    assert_bitwise_eq(&yf, &y, "fortran");
    assert_bitwise_eq(&sf.mean, &stats.mean, "fortran mean");
    assert_bitwise_eq(&sf.rstd, &stats.rstd, "fortran rstd");
    let mut f_inplace = f.clone();
    ln.forward_inplace(&mut f_inplace).unwrap();
    assert_bitwise_eq(&f_inplace, &y, "fortran in place");

    let transposed =
        Array2::from_shape_vec((d.cols, d.rows), x.t().iter().copied().collect()).expect("shape");
    assert_bitwise_eq(&ln.forward(&transposed.t()).unwrap(), &y, "transposed view");

    let mut reversed = x.clone();
    reversed.invert_axis(Axis(0));
    let back = ln.forward(&reversed).unwrap();
    assert_bitwise_eq(&back.slice(ndarray::s![..;-1, ..]), &y, "reversed rows");
    Ok(())
}

/// A non-finite value in one row makes that row (output, mean, rstd) all NaN and leaves every
/// other row bitwise unchanged.
fn check_non_finite_isolation<F: TestFloat>(
    d: &Data,
    eps: f64,
    bad_row: usize,
    bad_col: usize,
    bad: f64,
) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let (bad_row, bad_col) = (bad_row % d.rows, bad_col % d.cols);
    let mut poisoned = x.clone();
    poisoned[[bad_row, bad_col]] = F::of(bad);
    let ln = layer::<F>(eps);
    let (y, stats) = ln.forward_with_stats(&x).unwrap();
    let (yp, sp) = ln.forward_with_stats(&poisoned).unwrap();
    for i in 0..d.rows {
        if i == bad_row {
            prop_assert!(
                yp.row(i).iter().all(|v| v.is_nan()),
                "row {i}: {}",
                yp.row(i)
            );
            prop_assert!(sp.mean[i].is_nan() && sp.rstd[i].is_nan());
        } else {
            for j in 0..d.cols {
                prop_assert!(same_bits(yp[[i, j]], y[[i, j]]), "row {i} col {j} changed");
            }
            prop_assert!(same_bits(sp.mean[i], stats.mean[i]));
            prop_assert!(same_bits(sp.rstd[i], stats.rstd[i]));
        }
    }
    Ok(())
}

/// With eps = 0, multiplying a row by a power of two multiplies every intermediate exactly, so
/// the output is bitwise unchanged.
fn check_power_of_two_scaling<F: TestFloat>(d: &Data, k: i32) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let factor = 2f64.powi(k);
    let scaled = x.mapv(|v| F::of(v.f64() * factor));
    let ln = layer::<F>(0.0);
    let (y, s) = ln.forward_with_stats(&x).unwrap();
    let (ys, ss) = ln.forward_with_stats(&scaled).unwrap();
    assert_bitwise_eq(&ys, &y, &format!("scaled by 2^{k}"));
    for (a, b) in ss.mean.iter().zip(&s.mean) {
        prop_assert_eq!(a.f64(), b.f64() * factor);
    }
    Ok(())
}

/// Negating a row negates its output (rounding to nearest is symmetric).
fn check_negation<F: TestFloat>(d: &Data, eps: f64) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let ln = layer::<F>(eps);
    let y = ln.forward(&x).unwrap();
    let yn = ln.forward(&x.mapv(|v| -v)).unwrap();
    for (a, b) in yn.iter().zip(&y) {
        prop_assert_eq!(a.f64(), -b.f64());
    }
    Ok(())
}

/// gamma and beta are applied per column after normalization: the affine output is within a few
/// roundings of `y * gamma + beta` (computed in `f64` from the plain output).
fn check_affine_application<F: TestFloat>(
    d: &Data,
    eps: f64,
    g: &[f64],
    b: &[f64],
) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let gamma: Array1<F> = g[..d.cols].iter().map(|&v| F::of(v)).collect();
    let beta: Array1<F> = b[..d.cols].iter().map(|&v| F::of(v)).collect();
    let plain = layer::<F>(eps).forward(&x).unwrap();
    let affine = layer::<F>(eps)
        .with_gamma(gamma.clone())
        .unwrap()
        .with_beta(beta.clone())
        .unwrap()
        .forward(&x)
        .unwrap();
    for ((i, j), &a) in affine.indexed_iter() {
        let (y, g, b) = (plain[[i, j]].f64(), gamma[j].f64(), beta[j].f64());
        let expected = y * g + b;
        let tol = 4.0 * F::EPS * ((y * g).abs() + b.abs()) + 4.0 * f64::EPSILON;
        prop_assert!(
            (a.f64() - expected).abs() <= tol,
            "[{i}, {j}]: {a:e} vs y*g+b = {expected:e}"
        );
    }
    Ok(())
}

/// RMSNorm: each output row has the mean square `ms / (ms + eps)`, with `ms` the mean square
/// of the input row (both computed here in plain `f64`), and an all-zero row stays exactly 0.
fn check_rms_mean_square<F: TestFloat>(d: &Data, eps: f64) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let eps = F::of(eps).f64();
    let y = RmsNorm::<F>::new(F::of(eps)).unwrap().forward(&x).unwrap();
    let mean_square = |r: ndarray::ArrayView1<F>| {
        r.iter().map(|v| v.f64() * v.f64()).sum::<f64>() / r.len() as f64
    };
    for (xr, yr) in x.rows().into_iter().zip(y.rows()) {
        let ms = mean_square(xr);
        if ms == 0.0 {
            prop_assert!(yr.iter().all(|&v| v.f64() == 0.0), "zero row -> {yr}");
            continue;
        }
        let expected = ms / (ms + eps);
        // Each output is within about one unit of its exact value, so its square within about
        // two; each plain f64 sum of n squares here adds at most n f64 roundings.
        let n = xr.len() as f64;
        let tol = (8.0 * F::EPS + 4.0 * n * f64::EPSILON) * expected;
        let got = mean_square(yr);
        prop_assert!(
            (got - expected).abs() <= tol,
            "mean square {got:e}, expected {expected:e} +- {tol:e} (eps {eps:e}): {xr}"
        );
    }
    Ok(())
}

/// RMSNorm with eps 0 is invariant under scaling by a power of two (bitwise: the scaling is
/// exact and the arithmetic sees the same significands), and its `rstd` scales inversely.
fn check_rms_power_of_two_scaling<F: TestFloat>(d: &Data, k: i32) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let factor = 2f64.powi(k);
    let scaled = x.mapv(|v| F::of(v.f64() * factor));
    let rms = RmsNorm::<F>::new(F::of(0.0)).unwrap();
    let (y, rstd) = rms.forward_with_stats(&x).unwrap();
    let (ys, rstd_s) = rms.forward_with_stats(&scaled).unwrap();
    assert_bitwise_eq(&ys, &y, &format!("RMSNorm scaled by 2^{k}"));
    for (a, b) in rstd_s.iter().zip(&rstd) {
        if b.f64().is_finite() && b.f64() > 0.0 {
            prop_assert_eq!(a.f64(), b.f64() / factor);
        }
    }
    Ok(())
}

/// RMSNorm of `-x` is `-y`, bitwise (no mean, and rounding to nearest is symmetric).
fn check_rms_negation<F: TestFloat>(d: &Data, eps: f64) -> Result<(), TestCaseError> {
    let x = d.array::<F>();
    let rms = RmsNorm::<F>::new(F::of(eps)).unwrap();
    let y = rms.forward(&x).unwrap();
    let yn = rms.forward(&x.mapv(|v| -v)).unwrap();
    for (a, b) in yn.iter().zip(&y) {
        prop_assert_eq!(a.f64(), -b.f64());
    }
    Ok(())
}

fn small_epsilon() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![0.0, 1e-5])
}

fn integer_rows() -> impl Strategy<Value = Vec<Vec<i32>>> {
    (1usize..=4, 1usize..=40).prop_flat_map(|(rows, cols)| {
        proptest::collection::vec(proptest::collection::vec(-1000i32..=1000, cols), rows)
    })
}

fn affine_params() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (
        proptest::collection::vec(-4.0f64..4.0, 40),
        proptest::collection::vec(-4.0f64..4.0, 40),
    )
}

fn non_finite() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn f32_output_rows_have_zero_mean_and_shrunk_unit_variance(d in data(4, 40), eps in epsilon()) {
        check_normalized_moments::<f32>(&d, eps)?;
    }

    #[test]
    fn f64_output_rows_have_zero_mean_and_shrunk_unit_variance(d in data(4, 40), eps in epsilon()) {
        check_normalized_moments::<f64>(&d, eps)?;
    }

    #[test]
    fn f32_shifting_a_row_by_a_constant_barely_changes_the_output(
        rows in integer_rows(), c in -(1i32 << 16)..=(1 << 16), eps in small_epsilon(),
    ) {
        check_shift_invariance::<f32>(&rows, c, eps)?;
    }

    #[test]
    fn f64_shifting_a_row_by_a_constant_barely_changes_the_output(
        rows in integer_rows(), c in -(1i32 << 30)..=(1 << 30), eps in small_epsilon(),
    ) {
        check_shift_invariance::<f64>(&rows, c, eps)?;
    }

    #[test]
    fn f32_results_are_bitwise_identical_across_entry_points_and_layouts(
        d in data(5, 40), eps in epsilon(), affine in any::<bool>(),
    ) {
        check_layout_independence::<f32>(&d, eps, affine)?;
    }

    #[test]
    fn f64_results_are_bitwise_identical_across_entry_points_and_layouts(
        d in data(5, 40), eps in epsilon(), affine in any::<bool>(),
    ) {
        check_layout_independence::<f64>(&d, eps, affine)?;
    }

    #[test]
    fn f32_non_finite_value_poisons_only_its_own_row(
        d in data(5, 20), eps in epsilon(), r in 0usize..5, c in 0usize..20, bad in non_finite(),
    ) {
        check_non_finite_isolation::<f32>(&d, eps, r, c, bad)?;
    }

    #[test]
    fn f64_non_finite_value_poisons_only_its_own_row(
        d in data(5, 20), eps in epsilon(), r in 0usize..5, c in 0usize..20, bad in non_finite(),
    ) {
        check_non_finite_isolation::<f64>(&d, eps, r, c, bad)?;
    }

    #[test]
    fn f32_zero_epsilon_output_is_invariant_under_power_of_two_scaling(
        d in data(3, 40), k in -20i32..=20,
    ) {
        check_power_of_two_scaling::<f32>(&d, k)?;
    }

    #[test]
    fn f64_zero_epsilon_output_is_invariant_under_power_of_two_scaling(
        d in data(3, 40), k in -100i32..=100,
    ) {
        check_power_of_two_scaling::<f64>(&d, k)?;
    }

    #[test]
    fn f32_negating_the_input_negates_the_output(d in data(3, 40), eps in epsilon()) {
        check_negation::<f32>(&d, eps)?;
    }

    #[test]
    fn f64_negating_the_input_negates_the_output(d in data(3, 40), eps in epsilon()) {
        check_negation::<f64>(&d, eps)?;
    }

    #[test]
    fn f32_gamma_and_beta_scale_and_shift_the_normalized_output(
        d in data(3, 40), eps in epsilon(), (g, b) in affine_params(),
    ) {
        check_affine_application::<f32>(&d, eps, &g, &b)?;
    }

    #[test]
    fn f64_gamma_and_beta_scale_and_shift_the_normalized_output(
        d in data(3, 40), eps in epsilon(), (g, b) in affine_params(),
    ) {
        check_affine_application::<f64>(&d, eps, &g, &b)?;
    }

    #[test]
    fn f32_rms_output_rows_have_mean_square_ms_over_ms_plus_eps(d in data(4, 40), eps in epsilon()) {
        check_rms_mean_square::<f32>(&d, eps)?;
    }

    #[test]
    fn f64_rms_output_rows_have_mean_square_ms_over_ms_plus_eps(d in data(4, 40), eps in epsilon()) {
        check_rms_mean_square::<f64>(&d, eps)?;
    }

    #[test]
    fn f32_rms_zero_epsilon_output_is_invariant_under_power_of_two_scaling(
        d in data(3, 40), k in -20i32..=20,
    ) {
        check_rms_power_of_two_scaling::<f32>(&d, k)?;
    }

    #[test]
    fn f64_rms_zero_epsilon_output_is_invariant_under_power_of_two_scaling(
        d in data(3, 40), k in -100i32..=100,
    ) {
        check_rms_power_of_two_scaling::<f64>(&d, k)?;
    }

    #[test]
    fn f32_rms_negating_the_input_negates_the_output(d in data(3, 40), eps in epsilon()) {
        check_rms_negation::<f32>(&d, eps)?;
    }

    #[test]
    fn f64_rms_negating_the_input_negates_the_output(d in data(3, 40), eps in epsilon()) {
        check_rms_negation::<f64>(&d, eps)?;
    }
}
