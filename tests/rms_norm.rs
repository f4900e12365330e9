//! Behaviour of `RmsNorm`: forward against an independent `f64` reference, gamma, all-zero and
//! one-element rows, NaN and infinity isolation, empty inputs, the agreement of every entry
//! point and every layout bit for bit, errors, power-of-two scale invariance at the extremes of
//! the range, and the backward pass (central finite differences, saved statistics, structural
//! properties, degenerate rows).
//!
//! Each generic test is instantiated for `f32` and `f64` by `for_f32_and_f64!` at the end.
//! Tolerances are in units of `F::EPSILON * max(1, |expected|)` (`support::tol`).
//!
//! Two kinds of checks:
//! * Against independent references (closed forms, or an `f64` evaluation written here, never
//!   the library's output): `forward_matches_a_compensated_f64_reference`, `closed_forms`,
//!   `gamma_scales_each_column` (non-power-of-two gammas), the values of all-zero and
//!   one-element rows, the `eps = 1e-5` tiny rows of
//!   `extreme_rows_normalize_like_rows_scaled_to_one` (`x / sqrt(eps)`),
//!   `f32_backward_matches_an_f64_reference`, the closed-form gradients of all-zero and
//!   one-element rows, and `input_gradient_is_orthogonal_to_x_with_eps_zero` (a property of
//!   the exact gradient).
//! * Self-consistency of the library (its own output is the expected value): every entry point
//!   and every layout against `forward`/`backward` on a standard array (bit for bit), rows
//!   alone against the same rows in a batch (all-zero, NaN and infinite neighbours), gamma of
//!   ones and power-of-two gammas against the output without gamma, rows at the ends of the
//!   range against the same rows scaled by a power of two (bit for bit, `eps = 0`, and huge
//!   rows with `eps = 1e-5`), `backward_with_stats` against `backward` (within a derived
//!   bound), and `backward` against central differences of the library's `f64` forward pass.
//!
//! The accuracy against exact arithmetic is `tests/rms_accuracy.rs`'s.

// The generic tests widen with `f64::from`-like conversions that are no-ops for f64.
#![allow(clippy::useless_conversion)]

#[path = "common/support.rs"]
mod support;

use ndarray::{
    arr0, arr1, arr2, s, Array, Array1, Array2, Array3, ArrayD, ArrayRef, Axis, Dimension, Ix2,
    IxDyn, ShapeBuilder,
};
use ndarray_layernorm::{Error, Gradients, Param, RmsNorm};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use support::{
    assert_bitwise_eq, assert_close, fortran_copy, random_array, same_bits, tol, TestFloat,
};

// ----------------------------------------------------------------------------------------------
// The reference and helpers.

/// Tolerance of `forward` against [`reference`], in units of `F::EPSILON * max(1, |y|)`.
///
/// * `f32`: the library is within 1 unit (computed in `f64`, rounded once: 0.5 plus `f64`
///   roundings); the reference, evaluated in `f64` on `f32` data (exact squares), is within
///   about `2^-50` relative, i.e. `2^-27` units. 1 unit covers both.
/// * `f64`: the library's target is 2 units. The reference rounds each square (relative `u`,
///   `u = 2^-53`), sums them with compensation (about `u` more), divides by `n` (`u`), adds
///   eps (`u`), takes the square root (half of the `4u` so far, plus `u`) and divides (`u`):
///   within `4u`, i.e. 2 units. 2 + 2 = 4; with gamma (`|gamma| <= 2`), each side rounds once
///   more (1/2 unit each) and the errors of `y` scale by up to `|gamma|`, so `4 * 2 + 1`.
fn forward_ulps<F: TestFloat>(with_gamma: bool) -> f64 {
    match (F::NAME, with_gamma) {
        ("f32", _) => 1.0,
        (_, false) => 4.0,
        (_, true) => 9.0,
    }
}

/// `y = x / sqrt(mean(x^2) + eps) * gamma` for every row (last axis) of `x`, in `f64`: the
/// squares summed with Neumaier compensation, then one division, one square root, one division
/// and one multiplication per element. All-zero rows give 0; rows with a NaN or an infinity NaN.
fn reference<F: TestFloat>(x: &Array2<F>, eps: F, gamma: Option<&[f64]>) -> Vec<f64> {
    let eps = eps.f64();
    let mut out = Vec::with_capacity(x.len());
    for row in x.rows() {
        let v: Vec<f64> = row.iter().map(|a| a.f64()).collect();
        let s = (neumaier(v.iter().map(|a| a * a)) / v.len() as f64 + eps).sqrt();
        for (i, a) in v.iter().enumerate() {
            let y = if *a == 0.0 && s == 0.0 { 0.0 } else { a / s };
            out.push(y * gamma.map_or(1.0, |g| g[i]));
        }
    }
    out
}

/// The Neumaier-compensated sum of `values`.
fn neumaier(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for v in values {
        let t = sum + v;
        c += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + c
}

/// A layer with epsilon `eps` (rounded to `F`) and the given gamma.
fn layer<F: TestFloat>(eps: f64, gamma: Option<&[f64]>) -> RmsNorm<F> {
    let layer = RmsNorm::<F>::new(F::of(eps)).expect("valid epsilon");
    match gamma {
        Some(g) => layer.with_gamma(to_array::<F>(g)).expect("valid gamma"),
        None => layer,
    }
}

fn to_array<F: TestFloat>(v: &[f64]) -> Array1<F> {
    v.iter().map(|&a| F::of(a)).collect()
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `rows x cols` values `N(0, 1)`-like (uniform sums) times a per-row scale `2^U(-6, 6)`.
fn scaled_rows<F: TestFloat>(rows: usize, cols: usize, seed: u64) -> Array2<F> {
    let mut r = rng(seed);
    let mut x = Array2::<F>::zeros((rows, cols));
    for mut row in x.rows_mut() {
        let scale = 2f64.powf(r.random_range(-6.0..6.0));
        for v in row.iter_mut() {
            *v = F::of(scale * (r.random_range(-1.0..1.0) + r.random_range(-1.0..1.0)));
        }
    }
    x
}

/// The same logical array in standard layout.
fn standard_copy<F: TestFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Array<F, D> {
    Array::from_shape_vec(x.raw_dim(), x.iter().copied().collect()).unwrap()
}

// ----------------------------------------------------------------------------------------------
// Forward: values.

fn forward_matches_a_compensated_f64_reference<F: TestFloat>() {
    let mut r = rng(1);
    for (k, cols) in [1, 2, 3, 7, 8, 9, 16, 17, 33, 100, 257]
        .into_iter()
        .enumerate()
    {
        let x = scaled_rows::<F>(6, cols, 10 + k as u64);
        let gamma: Vec<f64> = (0..cols)
            .map(|_| F::of(r.random_range(-2.0..2.0)).f64())
            .collect();
        for eps in [0.0, 1e-5, 0.5] {
            let e = F::of(eps);
            let y = layer::<F>(eps, None).forward(&x).unwrap();
            assert_close(&y, &reference(&x, e, None), forward_ulps::<F>(false));
            let z = layer::<F>(eps, Some(&gamma)).forward(&x).unwrap();
            assert_close(&z, &reference(&x, e, Some(&gamma)), forward_ulps::<F>(true));
        }
    }
}

fn closed_forms<F: TestFloat>() {
    // [3, 4], eps 0: ms = 25/2, y = (3, 4) / sqrt(12.5), rstd = 1 / sqrt(12.5).
    let x = arr2(&[[F::of(3.0), F::of(4.0)]]);
    let (y, rstd) = layer::<F>(0.0, None).forward_with_stats(&x).unwrap();
    let r = 1.0 / 12.5f64.sqrt();
    assert_close(&y, &[3.0 * r, 4.0 * r], 1.0);
    assert_close(&rstd, &[r], 1.0);

    // Rows of +-1 and +-2 (ms 1 and 4), eps 0: exactly +-1, rstd exactly 1 and 1/2.
    let x = arr2(&[
        [F::of(1.0), F::of(-1.0), F::of(1.0), F::of(-1.0)],
        [F::of(-2.0), F::of(2.0), F::of(2.0), F::of(-2.0)],
    ]);
    let (y, rstd) = layer::<F>(0.0, None).forward_with_stats(&x).unwrap();
    let signs = [1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0];
    assert_eq!(y.iter().map(|v| v.f64()).collect::<Vec<_>>(), signs);
    assert_eq!(rstd, arr1(&[F::of(1.0), F::of(0.5)]));

    // Epsilon is added to the mean square before the square root: ones with eps 3 give
    // sqrt(1 + 3) = 2, so y = 1/2 exactly.
    let x = Array2::<F>::ones((2, 5));
    let y = layer::<F>(3.0, None).forward(&x).unwrap();
    assert!(y.iter().all(|v| v.f64() == 0.5));

    // [1, 2, 3], eps 1/3 (as rounded to F): V = 14/3 + eps.
    let eps = F::of(1.0 / 3.0);
    let x = arr1(&[F::of(1.0), F::of(2.0), F::of(3.0)]);
    let y = RmsNorm::new(eps).unwrap().forward(&x).unwrap();
    let s = (14.0 / 3.0 + eps.f64()).sqrt();
    assert_close(&y, &[1.0 / s, 2.0 / s, 3.0 / s], forward_ulps::<F>(false));

    // The mean of the row does not enter: [5, 5] gives 1, not 0 as LayerNorm would.
    let y = layer::<F>(0.0, None)
        .forward(&arr1(&[F::of(5.0), F::of(5.0)]))
        .unwrap();
    assert_eq!(y, arr1(&[F::of(1.0), F::of(1.0)]));
}

fn accessors_and_constructors<F: TestFloat>() {
    let d = RmsNorm::<F>::default();
    assert_eq!(d.epsilon(), F::of(1e-5));
    assert!(d.gamma().is_none());
    assert_eq!(d.trailing_axes(), 1);

    let a = RmsNorm::<F>::affine(4, F::of(0.25)).unwrap();
    assert_eq!(a.epsilon(), F::of(0.25));
    assert_eq!(a.gamma(), Some(&Array1::<F>::ones(4).into_dyn()));

    let s = RmsNorm::<F>::affine_shape(&[3, 4], F::of(0.0)).unwrap();
    assert_eq!(s.trailing_axes(), 2);
    assert_eq!(s.gamma().unwrap().shape(), &[3, 4]);

    // gamma = 1 leaves the output unchanged, bit for bit.
    let x = scaled_rows::<F>(5, 4, 2);
    let plain = RmsNorm::<F>::new(F::of(0.25)).unwrap();
    assert_bitwise_eq(
        &a.forward(&x).unwrap(),
        &plain.forward(&x).unwrap(),
        "affine",
    );

    // with_gamma replaces gamma; with_trailing_axes keeps epsilon.
    let g = to_array::<F>(&[2.0, 2.0, 2.0, 2.0]);
    let replaced = a.clone().with_gamma(g.clone()).unwrap();
    assert_eq!(replaced.gamma(), Some(&g.into_dyn()));
    let k2 = plain.with_trailing_axes(2).unwrap();
    assert_eq!((k2.trailing_axes(), k2.epsilon()), (2, F::of(0.25)));
}

fn gamma_scales_each_column<F: TestFloat>() {
    let x = scaled_rows::<F>(7, 9, 3);
    let plain = layer::<F>(1e-5, None).forward(&x).unwrap();
    // Powers of two (and 0): the product is exact, so z = y * gamma bit for bit.
    let gamma = [2.0, -0.5, 0.25, -4.0, 1.0, 0.0, -1.0, 8.0, 0.125];
    let z = layer::<F>(1e-5, Some(&gamma)).forward(&x).unwrap();
    for ((i, j), &v) in z.indexed_iter() {
        let want = F::of(plain[[i, j]].f64() * gamma[j]);
        assert!(same_bits(v, want), "({i}, {j}): {v:e} vs {want:e}");
    }
    // A gamma column of 0 gives zeros; other gammas agree with the reference.
    assert!(z.column(5).iter().all(|v| v.f64() == 0.0));
    let gamma = [1.5, -0.3, 0.7, 1.9, -1.1, 0.01, 1.0, -2.0, 0.6];
    let g: Vec<f64> = gamma.iter().map(|&v| F::of(v).f64()).collect();
    let z = layer::<F>(1e-5, Some(&g)).forward(&x).unwrap();
    assert_close(
        &z,
        &reference(&x, F::of(1e-5), Some(&g)),
        forward_ulps::<F>(true),
    );
}

// ----------------------------------------------------------------------------------------------
// Forward: special rows.

fn all_zero_rows_give_exactly_positive_zero<F: TestFloat>() {
    for eps in [0.0, 1e-5, 1.0] {
        for cols in [1, 2, 5, 8, 17, 100] {
            // An all-zero row between two ordinary rows.
            let mut x = scaled_rows::<F>(3, cols, 4 + cols as u64);
            x.row_mut(1).fill(F::of(0.0));
            let (y, rstd) = layer::<F>(eps, None).forward_with_stats(&x).unwrap();
            let what = format!("eps {eps}, {cols} cols");
            assert!(
                y.row(1).iter().all(|v| v.bits() == 0),
                "{what}: {:?}",
                y.row(1)
            );
            let e = F::of(eps).f64();
            if eps == 0.0 {
                assert_eq!(rstd[1], F::infinity(), "{what}");
            } else {
                assert!(rstd[1].is_finite(), "{what}");
                assert_close(&arr0(rstd[1]), &[1.0 / e.sqrt()], 1.0);
            }
            // The other rows are those of the rows alone.
            for r in [0, 2] {
                let alone = layer::<F>(eps, None).forward(&x.row(r)).unwrap();
                assert_bitwise_eq(&y.row(r), &alone, &what);
            }
            // With gamma: 0 * gamma (so -0.0 under a negative gamma).
            let gamma: Vec<f64> = (0..cols).map(|j| j as f64 - 2.5).collect();
            let z = layer::<F>(eps, Some(&gamma)).forward(&x).unwrap();
            for (&v, g) in z.row(1).iter().zip(&gamma) {
                assert!(same_bits(v, F::of(0.0 * g)), "{what}: {v:e} for gamma {g}");
            }
            // A row of -0.0 is all zeros too (whatever their sign).
            x.row_mut(1).fill(F::of(-0.0));
            let y = layer::<F>(eps, None).forward(&x).unwrap();
            assert!(y.row(1).iter().all(|v| v.f64() == 0.0), "{what}: -0.0 row");
        }
    }
}

fn one_element_rows<F: TestFloat>() {
    let mut r = rng(5);
    // Values over the whole range of F, subnormals included.
    let (lo, hi) = if F::NAME == "f32" {
        (-149, 127)
    } else {
        (-1074, 1023)
    };
    let values: Vec<F> = (0..400)
        .map(|_| {
            let sign = if r.random::<bool>() { 1.0 } else { -1.0 };
            let e = r.random_range(lo..=hi);
            F::of(sign * r.random_range(1.0..2.0) * 2f64.powi(e))
        })
        .filter(|v| v.f64() != 0.0 && v.is_finite())
        .collect();
    let x = Array2::from_shape_vec((values.len(), 1), values.clone()).unwrap();
    // eps 0: y = x / |x| = sign(x) exactly.
    let y = layer::<F>(0.0, None).forward(&x).unwrap();
    for (v, y) in values.iter().zip(&y) {
        assert_eq!(y.f64(), v.f64().signum(), "x = {v:e}");
    }
    // eps > 0: y = x / sqrt(x^2 + eps), on moderate values (whose square the f64 reference
    // forms without overflow or underflow).
    let x = x.mapv(|v| F::of(v.f64().clamp(-1e6, 1e6)));
    for eps in [1e-5, 0.5] {
        let y = layer::<F>(eps, None).forward(&x).unwrap();
        let e = F::of(eps).f64();
        let want: Vec<f64> = x
            .iter()
            .map(|v| v.f64() / (v.f64() * v.f64() + e).sqrt())
            .collect();
        assert_close(&y, &want, forward_ulps::<F>(false));
    }
}

fn nan_and_infinity_stay_in_their_row<F: TestFloat>() {
    for cols in [1, 3, 8, 33] {
        let mut x = scaled_rows::<F>(6, cols, 6 + cols as u64);
        x[[1, cols / 2]] = F::nan();
        x[[3, 0]] = F::infinity();
        x[[4, cols - 1]] = F::neg_infinity();
        let gamma: Vec<f64> = (0..cols).map(|j| 0.5 + j as f64).collect();
        for ln in [layer::<F>(0.0, None), layer::<F>(1e-5, Some(&gamma))] {
            let (y, rstd) = ln.forward_with_stats(&x).unwrap();
            for r in 0..6 {
                if [1, 3, 4].contains(&r) {
                    assert!(
                        y.row(r).iter().all(|v| v.is_nan()),
                        "row {r}: {:?}",
                        y.row(r)
                    );
                    assert!(rstd[r].is_nan(), "rstd of row {r}");
                } else {
                    let alone = ln.forward(&x.row(r)).unwrap();
                    assert_bitwise_eq(&y.row(r), &alone, &format!("row {r}, {cols} cols"));
                    assert!(rstd[r].is_finite());
                }
            }
        }
    }
    // A NaN in gamma poisons its column only.
    let x = scaled_rows::<F>(4, 5, 7);
    let ln = RmsNorm::<F>::new(F::of(1e-5))
        .unwrap()
        .with_gamma(arr1(&[F::one(), F::nan(), F::one(), F::one(), F::one()]))
        .unwrap();
    let y = ln.forward(&x).unwrap();
    let plain = layer::<F>(1e-5, None).forward(&x).unwrap();
    for ((i, j), &v) in y.indexed_iter() {
        if j == 1 {
            assert!(v.is_nan());
        } else {
            assert!(same_bits(v, plain[[i, j]]));
        }
    }
}

fn empty_axis_and_zero_rows<F: TestFloat>() {
    let ln = RmsNorm::<F>::default();
    // Empty rows: empty output, NaN rstd.
    let x = Array2::<F>::zeros((3, 0));
    let (y, rstd) = ln.forward_with_stats(&x).unwrap();
    assert_eq!(y.shape(), &[3, 0]);
    assert_eq!(rstd.shape(), &[3]);
    assert!(rstd.iter().all(|v| v.is_nan()));
    let g = RmsNorm::<F>::affine(0, F::of(1e-5))
        .unwrap()
        .backward(&x, &x)
        .unwrap();
    assert_eq!(g.input.shape(), &[3, 0]);
    assert_eq!(g.gamma.unwrap().shape(), &[0]);
    // A one-dimensional empty array is one empty row.
    let (y, rstd) = ln.forward_with_stats(&Array1::<F>::zeros(0)).unwrap();
    assert_eq!((y.len(), rstd.shape()), (0, &[][..]));
    assert!(rstd[()].is_nan());
    // Zero rows: empty output and statistics; dgamma sums no rows: zeros.
    let x = Array2::<F>::zeros((0, 5));
    let (y, rstd) = ln.forward_with_stats(&x).unwrap();
    assert_eq!((y.shape(), rstd.shape()), (&[0, 5][..], &[0][..]));
    let mut out = Array2::<F>::zeros((0, 5));
    ln.forward_into(&x, &mut out).unwrap();
    let g = RmsNorm::<F>::affine(5, F::of(1e-5))
        .unwrap()
        .backward(&x, &x)
        .unwrap();
    assert_eq!(g.input.shape(), &[0, 5]);
    assert!(g.gamma.unwrap().iter().all(|v| v.bits() == 0));
    // An empty view of a non-empty array.
    let big = scaled_rows::<F>(4, 6, 8);
    let y = ln.forward(&big.slice(s![2..2, ..])).unwrap();
    assert_eq!(y.shape(), &[0, 6]);
}

// ----------------------------------------------------------------------------------------------
// Forward: entry points and layouts.

fn every_entry_point_gives_the_same_bits<F: TestFloat>() {
    for cols in [1, 2, 7, 8, 33, 100] {
        let mut x = scaled_rows::<F>(70, cols, 9 + cols as u64); // more than one batch of rows
        x.row_mut(3).fill(F::of(0.0));
        let gamma: Vec<f64> = (0..cols).map(|j| 0.75 + 0.125 * j as f64).collect();
        for ln in [layer::<F>(0.0, None), layer::<F>(1e-5, Some(&gamma))] {
            let y = ln.forward(&x).unwrap();
            let (ys, _) = ln.forward_with_stats(&x).unwrap();
            assert_bitwise_eq(&ys, &y, "forward_with_stats");
            let mut out = Array2::<F>::from_elem((70, cols), F::nan());
            ln.forward_into(&x, &mut out).unwrap();
            assert_bitwise_eq(&out, &y, "forward_into");
            let mut out_f = Array2::<F>::from_elem((70, cols).f(), F::nan());
            ln.forward_into(&x, &mut out_f).unwrap();
            assert_bitwise_eq(&out_f, &y, "forward_into a Fortran array");
            let mut inplace = x.clone();
            ln.forward_inplace(&mut inplace).unwrap();
            assert_bitwise_eq(&inplace, &y, "forward_inplace");
            // Residual: h = x + r rounded, y = forward(h).
            let residual = scaled_rows::<F>(70, cols, 99);
            let (h, yh) = ln.forward_residual(&x, &residual).unwrap();
            assert_bitwise_eq(&h, &(&x + &residual), "residual h");
            assert_bitwise_eq(&yh, &ln.forward(&h).unwrap(), "residual y");
            let (mut xi, mut ri) = (x.clone(), residual.clone());
            ln.forward_residual_inplace(&mut xi, &mut ri).unwrap();
            assert_bitwise_eq(&ri, &h, "residual in place h");
            assert_bitwise_eq(&xi, &yh, "residual in place y");
        }
    }
}

/// `forward_with_stats` and `backward` on `other` give the bits they give on `reference` (the
/// same logical array in standard layout).
fn assert_same_results<F: TestFloat, D: Dimension>(
    reference: &ArrayRef<F, D>,
    other: &ArrayRef<F, D>,
    what: &str,
) {
    let cols = *reference.shape().last().unwrap();
    let gamma: Vec<f64> = (0..cols).map(|j| 0.5 + 0.25 * j as f64).collect();
    for (k, ln) in [layer::<F>(0.0, None), layer::<F>(1e-5, Some(&gamma))]
        .iter()
        .enumerate()
    {
        let what = format!("{what}, layer {k}");
        let (y_ref, rstd_ref) = ln.forward_with_stats(reference).unwrap();
        let (y, rstd) = ln.forward_with_stats(other).unwrap();
        assert!(y.is_standard_layout(), "{what}: output layout");
        assert_bitwise_eq(&y, &y_ref, &what);
        assert_bitwise_eq(&rstd, &rstd_ref, &format!("{what}: rstd"));
        assert_bitwise_eq(&ln.forward(other).unwrap(), &y_ref, &what);
        let mut inplace = other.to_owned();
        ln.forward_inplace(&mut inplace).unwrap();
        assert_bitwise_eq(&inplace, &y_ref, &format!("{what}: in place"));
        // Backward with dy = 0.5 - x element by element (any fixed array not proportional to
        // x), in standard layout for both calls: only the layout of x differs.
        let dy_ref = reference.mapv(|v| F::of(0.5 - v.f64()));
        let dy = standard_copy(&dy_ref);
        let g_ref = ln.backward(reference, &dy_ref).unwrap();
        let g = ln.backward(other, &dy).unwrap();
        assert_bitwise_eq(&g.input, &g_ref.input, &format!("{what}: dx"));
        if let (Some(a), Some(b)) = (&g.gamma, &g_ref.gamma) {
            assert_bitwise_eq(a, b, &format!("{what}: dgamma"));
        }
    }
}

fn every_layout_gives_the_same_bits<F: TestFloat>() {
    for (i, cols) in [1, 2, 3, 8, 9, 33, 100].into_iter().enumerate() {
        let seed = 20 + i as u64;
        let mut x = scaled_rows::<F>(7, cols, seed);
        x.row_mut(2).fill(F::of(0.0));
        x[[4, 0]] = F::nan();
        let what = |l: &str| format!("{l}, {cols} cols");
        assert_same_results(&x, &fortran_copy(&x), &what("fortran"));
        let base = standard_copy(&x.t());
        assert_same_results(&x, &base.t(), &what("transposed view"));
        let wide = scaled_rows::<F>(14, 2 * cols, seed + 100);
        let stepped = wide.slice(s![..;2, ..;2]);
        assert_same_results(&standard_copy(&stepped), &stepped, &what("stepped"));
        let reversed = wide.slice(s![..;-1, ..;-1]);
        assert_same_results(&standard_copy(&reversed), &reversed, &what("reversed"));
        let mut inverted = x.clone();
        inverted.invert_axis(Axis(1));
        assert_same_results(&standard_copy(&inverted), &inverted, &what("invert_axis"));
        let dynamic = x.clone().into_dyn();
        assert_same_results(&dynamic, &fortran_copy(&dynamic), &what("IxDyn fortran"));
        let ln = layer::<F>(1e-5, None);
        let (y, rstd) = ln.forward_with_stats(&x).unwrap();
        let (yd, rstdd) = ln.forward_with_stats(&dynamic).unwrap();
        assert_bitwise_eq(&yd, &y.into_dyn(), &what("IxDyn"));
        assert_bitwise_eq(&rstdd, &rstd.into_dyn(), &what("IxDyn rstd"));
        // Three dimensions, permuted, and a 2-D reshape.
        let x3: Array3<F> = random_array((cols, 3, 4), seed + 200);
        let p = x3.view().permuted_axes([1, 2, 0]);
        assert_same_results(&standard_copy(&p), &p, &what("3-D permuted"));
        let flat = standard_copy(&p).into_shape_with_order((12, cols)).unwrap();
        let y3 = ln.forward(&p).unwrap();
        assert_bitwise_eq(
            &y3.into_shape_with_order((12, cols)).unwrap(),
            &ln.forward(&flat).unwrap(),
            &what("3-D as 2-D"),
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Errors.

fn invalid_epsilons_are_rejected<F: TestFloat>() {
    for eps in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e-30] {
        let e = F::of(eps);
        let check = |r: Result<RmsNorm<F>, Error>| match r {
            Err(Error::InvalidEpsilon { epsilon }) => {
                assert!(same_bits(F::of(epsilon), e), "carried {epsilon} for {eps}")
            }
            other => panic!("eps {eps}: {other:?}"),
        };
        check(RmsNorm::new(e));
        check(RmsNorm::affine(3, e));
        check(RmsNorm::affine_shape(&[2, 3], e));
    }
    for eps in [0.0, 1e-5, 1.0, 1e30] {
        assert_eq!(RmsNorm::<F>::new(F::of(eps)).unwrap().epsilon(), F::of(eps));
    }
}

fn param_length_is_checked_by_every_entry_point<F: TestFloat>() {
    let ln = RmsNorm::<F>::affine(3, F::of(1e-5)).unwrap();
    let x = scaled_rows::<F>(2, 4, 30);
    let want = Error::ParamLength {
        param: Param::Gamma,
        expected: 4,
        actual: 3,
    };
    assert_eq!(ln.forward(&x).unwrap_err(), want);
    assert_eq!(ln.forward_with_stats(&x).unwrap_err(), want);
    let mut out = Array2::<F>::zeros((2, 4));
    assert_eq!(ln.forward_into(&x, &mut out).unwrap_err(), want);
    assert!(out.iter().all(|v| v.bits() == 0), "out unchanged");
    let mut y = x.clone();
    assert_eq!(ln.forward_inplace(&mut y).unwrap_err(), want);
    assert_eq!(y, x, "x unchanged");
    assert_eq!(ln.forward_residual(&x, &x).unwrap_err(), want);
    assert_eq!(ln.backward(&x, &x).unwrap_err(), want);
    let rstd = Array1::<F>::ones(2);
    assert_eq!(ln.backward_with_stats(&x, &rstd, &x).unwrap_err(), want);
    // Over two axes: ParamShape.
    let ln2 = RmsNorm::<F>::affine_shape(&[2, 3], F::of(1e-5)).unwrap();
    let x3: Array3<F> = random_array((2, 3, 4), 31);
    assert_eq!(
        ln2.forward(&x3).unwrap_err(),
        Error::ParamShape {
            param: Param::Gamma,
            expected: vec![3, 4],
            actual: vec![2, 3],
        }
    );
}

fn shape_mismatches_are_errors<F: TestFloat>() {
    let ln = RmsNorm::<F>::affine(4, F::of(1e-5)).unwrap();
    let x = scaled_rows::<F>(3, 4, 32);
    let mismatch = |expected: &[usize], actual: &[usize]| Error::ShapeMismatch {
        expected: expected.to_vec(),
        actual: actual.to_vec(),
    };
    let mut out = Array2::<F>::from_elem((4, 4), F::of(7.0));
    assert_eq!(
        ln.forward_into(&x, &mut out).unwrap_err(),
        mismatch(&[3, 4], &[4, 4])
    );
    assert!(out.iter().all(|v| v.f64() == 7.0), "out unchanged");
    let dy = Array2::<F>::zeros((3, 5));
    assert_eq!(
        ln.backward(&x, &dy).unwrap_err(),
        mismatch(&[3, 4], &[3, 5])
    );
    let dy = Array2::<F>::zeros((2, 4));
    assert_eq!(
        ln.backward(&x, &dy).unwrap_err(),
        mismatch(&[3, 4], &[2, 4])
    );
    let (_, rstd) = ln.forward_with_stats(&x).unwrap();
    let dy = Array2::<F>::zeros((3, 4));
    assert_eq!(
        ln.backward_with_stats(&x, &rstd, &Array2::<F>::zeros((2, 4)))
            .unwrap_err(),
        mismatch(&[3, 4], &[2, 4])
    );
    let short = Array1::<F>::ones(2);
    assert_eq!(
        ln.backward_with_stats(&x, &short, &dy).unwrap_err(),
        mismatch(&[3], &[2])
    );
    assert_eq!(
        ln.forward_residual(&x, &Array2::<F>::zeros((3, 3)))
            .unwrap_err(),
        mismatch(&[3, 4], &[3, 3])
    );
    let mut r = Array2::<F>::zeros((1, 4));
    let mut xi = x.clone();
    assert_eq!(
        ln.forward_residual_inplace(&mut xi, &mut r).unwrap_err(),
        mismatch(&[3, 4], &[1, 4])
    );
    assert_eq!(xi, x, "x unchanged");
}

fn zero_dimensional_and_axis_errors<F: TestFloat>() {
    let ln = RmsNorm::<F>::default();
    let x0 = arr0(F::of(2.0));
    assert_eq!(ln.forward(&x0).unwrap_err(), Error::ZeroDimensional);
    assert_eq!(
        ln.forward_with_stats(&x0).unwrap_err(),
        Error::ZeroDimensional
    );
    let mut out = arr0(F::of(3.0));
    assert_eq!(
        ln.forward_into(&x0, &mut out).unwrap_err(),
        Error::ZeroDimensional
    );
    let mut y = x0.clone();
    assert_eq!(
        ln.forward_inplace(&mut y).unwrap_err(),
        Error::ZeroDimensional
    );
    assert_eq!(y, x0);
    assert_eq!(ln.backward(&x0, &x0).unwrap_err(), Error::ZeroDimensional);
    assert_eq!(
        ln.backward_with_stats(&x0, &x0, &x0).unwrap_err(),
        Error::ZeroDimensional
    );
    assert_eq!(
        ln.forward_residual(&x0, &x0).unwrap_err(),
        Error::ZeroDimensional
    );
    // Axes.
    assert_eq!(
        RmsNorm::<F>::default().with_trailing_axes(0).unwrap_err(),
        Error::InvalidAxes { axes: 0 }
    );
    let k2 = RmsNorm::<F>::default().with_trailing_axes(2).unwrap();
    assert_eq!(
        k2.forward(&Array1::<F>::ones(3)).unwrap_err(),
        Error::TooFewAxes { axes: 2, ndim: 1 }
    );
    assert_eq!(
        k2.with_gamma(Array1::<F>::ones(3)).unwrap_err(),
        Error::ParamAxes {
            param: Param::Gamma,
            expected: 2,
            actual: 1,
        }
    );
    assert_eq!(
        RmsNorm::<F>::affine(3, F::of(0.0))
            .unwrap()
            .with_trailing_axes(2)
            .unwrap_err(),
        Error::ParamAxes {
            param: Param::Gamma,
            expected: 2,
            actual: 1,
        }
    );
}

// ----------------------------------------------------------------------------------------------
// Extreme magnitudes: power-of-two scale invariance.

/// Rows of values near the ends of the range of `F`: tiny, huge, subnormal.
fn extreme_rows<F: TestFloat>(seed: u64) -> Vec<(&'static str, Array2<F>)> {
    let mut r = rng(seed);
    let (tiny, huge) = if F::NAME == "f32" {
        (1e-30, 1e37)
    } else {
        (1e-300, 1e300)
    };
    let min_subnormal = if F::NAME == "f32" {
        f64::from(f32::from_bits(1))
    } else {
        f64::from_bits(1)
    };
    let mut out = Vec::new();
    for (name, scale) in [("tiny", tiny), ("huge", huge)] {
        for cols in [1, 2, 3, 8, 17, 100, 1000] {
            let x = Array2::from_shape_fn((4, cols), |_| {
                F::of(scale * (r.random_range(-1.0..1.0) + r.random_range(-1.0..1.0)))
            });
            out.push((name, x));
        }
    }
    for cols in [1, 2, 3, 8, 17, 100, 1000] {
        // Multiples 1 ..= 2^20 of the smallest subnormal.
        let x = Array2::from_shape_fn((4, cols), |_| {
            let m = r.random_range(-(1i64 << 20)..=(1i64 << 20));
            F::of(m as f64 * min_subnormal)
        });
        out.push(("subnormal", x));
    }
    out
}

/// The largest-magnitude element of a row is in `[2^e, 2^(e+1))`: returns `-e` (0 for a zero row).
fn normalizing_exponent(row: &[f64]) -> i32 {
    let amax = row.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    if amax == 0.0 {
        0
    } else {
        -(amax.log2().floor() as i32)
    }
}

/// `a * 2^k` in two exact steps (`2^k` alone may be out of the range of `f64`).
fn times_pow2(a: f64, k: i32) -> f64 {
    a * 2f64.powi(k / 2) * 2f64.powi(k - k / 2)
}

fn extreme_rows_normalize_like_rows_scaled_to_one<F: TestFloat>() {
    let ln = layer::<F>(0.0, None);
    for (name, x) in extreme_rows::<F>(40) {
        let (y, rstd) = ln.forward_with_stats(&x).unwrap();
        for (r, row) in x.rows().into_iter().enumerate() {
            let v: Vec<f64> = row.iter().map(|a| a.f64()).collect();
            let k = normalizing_exponent(&v);
            // Scaling by 2^k is exact (no element underflows: the row spans a few binades).
            let scaled: Array1<F> = v.iter().map(|&a| F::of(times_pow2(a, k))).collect();
            assert!(
                scaled
                    .iter()
                    .zip(&v)
                    .all(|(s, &a)| times_pow2(s.f64(), -k) == a),
                "{name}: scaling is exact"
            );
            let (ys, rs) = ln.forward_with_stats(&scaled).unwrap();
            let what = format!("{name} row {r} of {} cols (2^{k})", x.ncols());
            assert_bitwise_eq(&y.row(r), &ys, &what);
            // rstd scales by 2^k, where that is a normal number of F.
            let want = times_pow2(rs[()].f64(), k);
            if v.iter().any(|a| *a != 0.0) && F::of(want).is_normal() {
                assert_eq!(rstd[r].f64(), want, "{what}: rstd");
            }
            // With eps = 1e-5: next to a huge mean square eps is negligible (relative 1e-70 or
            // less), so y is that of eps 0; next to a tiny one the mean square is negligible,
            // so y = x / sqrt(eps). Both checked relative to |y| (not max(1, |y|), which would
            // make the tiny case vacuous): the library and the f64 reference x / sqrt(eps)
            // (two roundings) are each within 2 EPSILON relative.
            let eps = F::of(1e-5);
            let ye = RmsNorm::new(eps).unwrap().forward(&row).unwrap();
            let want: Vec<f64> = match name {
                "huge" => ys.iter().map(|a| a.f64()).collect(),
                "tiny" => v.iter().map(|a| a / eps.f64().sqrt()).collect(),
                _ => continue,
            };
            for (got, want) in ye.iter().zip(&want) {
                let err = (got.f64() - want).abs();
                assert!(
                    err <= 4.0 * F::EPS * want.abs(),
                    "{what}, eps 1e-5: {got:e} vs {want:e}"
                );
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Backward.

/// `loss(x) = sum(forward(x) * w)` with a compensated sum, whose gradient with respect to the
/// output is `w`.
fn loss(ln: &RmsNorm<f64>, x: &ArrayD<f64>, w: &ArrayD<f64>) -> f64 {
    let y = ln.forward(x).unwrap();
    neumaier(y.iter().zip(w).map(|(a, b)| a * b))
}

/// Max over elements of `|a - b|`, relative to the largest `|b|`.
fn rel_max_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Central differences in `f64`, step `1e-6 max(1, |x|)`: truncation error `O(h^2)` and
/// rounding error `O(u / h)`, both far below `1e-6` relative for these well-scaled rows.
#[test]
fn backward_matches_central_differences_f64() {
    let shapes: [(&[usize], usize); 5] = [
        (&[1, 7], 1),
        (&[3, 5], 1),
        (&[2, 3, 9], 1),
        (&[4, 1, 2, 17], 1),
        (&[2, 3, 4], 2),
    ];
    for (k, (shape, axes)) in shapes.into_iter().enumerate() {
        let x: ArrayD<f64> = random_array(IxDyn(shape), 50 + k as u64);
        let w: ArrayD<f64> = random_array(IxDyn(shape), 60 + k as u64);
        let param_shape = &shape[shape.len() - axes..];
        let gamma: ArrayD<f64> =
            random_array::<f64, _>(IxDyn(param_shape), 70 + k as u64).mapv(|g| g / 4.0 + 1.25);
        for (eps, with_gamma) in [(1e-5, false), (1e-3, true), (0.0, false), (0.0, true)] {
            let mut ln = RmsNorm::<f64>::new(eps)
                .unwrap()
                .with_trailing_axes(axes)
                .unwrap();
            if with_gamma {
                ln = ln.with_gamma(gamma.clone()).unwrap();
            }
            let grads = ln.backward(&x, &w).unwrap();
            assert!(grads.beta.is_none());
            let mut fd = ArrayD::zeros(x.raw_dim());
            for (idx, o) in fd.indexed_iter_mut() {
                let h = 1e-6 * x[&idx].abs().max(1.0);
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[&idx] += h;
                xm[&idx] -= h;
                *o = (loss(&ln, &xp, &w) - loss(&ln, &xm, &w)) / (xp[&idx] - xm[&idx]);
            }
            let err = rel_max_diff(&grads.input, &fd);
            assert!(err < 1e-6, "{shape:?} eps {eps}: dx relative error {err:e}");
            if !with_gamma {
                assert!(grads.gamma.is_none());
                continue;
            }
            let dgamma = grads.gamma.unwrap();
            assert_eq!(dgamma.shape(), param_shape);
            let mut fd = ArrayD::zeros(gamma.raw_dim());
            for (idx, o) in fd.indexed_iter_mut() {
                let h = 1e-6;
                let (mut gp, mut gm) = (gamma.clone(), gamma.clone());
                gp[&idx] += h;
                gm[&idx] -= h;
                let at = |g: ArrayD<f64>| {
                    let l = RmsNorm::new(eps)
                        .unwrap()
                        .with_trailing_axes(axes)
                        .unwrap()
                        .with_gamma(g)
                        .unwrap();
                    loss(&l, &x, &w)
                };
                *o = (at(gp.clone()) - at(gm.clone())) / (gp[&idx] - gm[&idx]);
            }
            let err = rel_max_diff(&dgamma, &fd);
            assert!(
                err < 1e-6,
                "{shape:?} eps {eps}: dgamma relative error {err:e}"
            );
        }
    }
}

/// `f32` gradients against an `f64` evaluation of `dx = (g - xhat * mean(g * xhat)) / s` and
/// `dgamma = sum over rows of dy * xhat` written here (Neumaier sums; `f32` squares and
/// products `dy * gamma` are exact in `f64`). Its error is a few dozen roundings of `2^-53`
/// relative to the magnitude of the terms, `T_j = (|g_j| + |xhat_j| mean|g * xhat|) / s` for
/// `dx_j` and `M_j = sum_r |dy_rj xhat_rj|` for `dgamma_j`: `32 * f64::EPSILON` times those
/// covers it. The library rounds once to `f32` (half a unit) after an `f64` evaluation of its
/// own: within 1 unit of `f32::EPSILON * max(1, |expected|)` plus that allowance.
/// (`tests/rms_accuracy.rs` checks both formats against exact arithmetic.)
#[test]
fn f32_backward_matches_an_f64_reference() {
    for (k, cols) in [1, 2, 5, 8, 33, 100].into_iter().enumerate() {
        let x = scaled_rows::<f32>(9, cols, 80 + k as u64);
        let dy = scaled_rows::<f32>(9, cols, 90 + k as u64);
        let gamma: Vec<f64> = (0..cols).map(|j| 0.5 + (j % 7) as f64 * 0.25).collect();
        for eps in [1e-5, 0.0] {
            let grads = layer::<f32>(eps, Some(&gamma)).backward(&x, &dy).unwrap();
            let e = f64::from(eps as f32);
            let mut dgamma = vec![Vec::new(); cols];
            for r in 0..9 {
                let v: Vec<f64> = x.row(r).iter().map(|&a| f64::from(a)).collect();
                let d: Vec<f64> = dy.row(r).iter().map(|&a| f64::from(a)).collect();
                let g: Vec<f64> = d.iter().zip(&gamma).map(|(d, w)| d * w).collect();
                let s = (neumaier(v.iter().map(|a| a * a)) / cols as f64 + e).sqrt();
                let xhat: Vec<f64> = v.iter().map(|a| a / s).collect();
                let mean_gx = neumaier(g.iter().zip(&xhat).map(|(g, y)| g * y)) / cols as f64;
                let mean_abs = neumaier(g.iter().zip(&xhat).map(|(g, y)| (g * y).abs()));
                let mean_abs = mean_abs / cols as f64;
                for j in 0..cols {
                    // (One element with eps 0: s = |x| and xhat = sign(x) exactly, so 0.)
                    let want = (g[j] - xhat[j] * mean_gx) / s;
                    let terms = (g[j].abs() + xhat[j].abs() * mean_abs) / s;
                    let got = f64::from(grads.input[[r, j]]);
                    let bound = tol::<f32>(1.0, want) + 32.0 * f64::EPSILON * terms;
                    assert!(
                        (got - want).abs() <= bound,
                        "{cols} cols, eps {eps}, dx[{r}, {j}]: {got:e} vs {want:e}"
                    );
                    dgamma[j].push(d[j] * xhat[j]);
                }
            }
            let computed = grads.gamma.unwrap();
            for (j, terms) in dgamma.iter().enumerate() {
                let want = neumaier(terms.iter().copied());
                let m = neumaier(terms.iter().map(|t| t.abs()));
                let got = f64::from(computed[j]);
                let bound = tol::<f32>(1.0, m) + 32.0 * f64::EPSILON * m;
                assert!(
                    (got - want).abs() <= bound,
                    "{cols} cols, eps {eps}, dgamma[{j}]: {got:e} vs {want:e}"
                );
            }
        }
    }
}

fn backward_with_stats_is_close_to_backward<F: TestFloat>() {
    for (k, cols) in [1, 3, 8, 17, 100].into_iter().enumerate() {
        let x = scaled_rows::<F>(8, cols, 100 + k as u64);
        let dy = scaled_rows::<F>(8, cols, 110 + k as u64);
        let gamma: Vec<f64> = (0..cols).map(|j| 1.0 + 0.125 * j as f64).collect();
        for eps in [1e-5, 0.0] {
            let ln = layer::<F>(eps, Some(&gamma));
            let (_, rstd) = ln.forward_with_stats(&x).unwrap();
            let saved = ln.backward_with_stats(&x, &rstd, &dy).unwrap();
            let fresh = ln.backward(&x, &dy).unwrap();
            // The saved rstd is rounded to F (relative EPSILON/2) and xhat = x * rstd rounds
            // once more: both perturb the terms of dx = (g - xhat A) rstd by a few EPSILON
            // relative to themselves, so the difference is bounded by 4 EPSILON times the sum
            // of their magnitudes T = (|g| + |xhat| |A|) rstd, plus one rounding of each result.
            for r in 0..8 {
                let v: Vec<f64> = x.row(r).iter().map(|a| a.f64()).collect();
                let g: Vec<f64> = (0..cols).map(|j| dy[[r, j]].f64() * gamma[j]).collect();
                let s = (neumaier(v.iter().map(|a| a * a)) / cols as f64 + F::of(eps).f64()).sqrt();
                let a = neumaier(g.iter().zip(&v).map(|(g, x)| (g * x / s).abs())) / cols as f64;
                for j in 0..cols {
                    let t = (g[j].abs() + (v[j] / s).abs() * a) / s;
                    let (p, q) = (saved.input[[r, j]].f64(), fresh.input[[r, j]].f64());
                    let bound = 4.0 * F::EPS * t + tol::<F>(1.0, q);
                    assert!((p - q).abs() <= bound, "row {r} col {j}: {p:e} vs {q:e}");
                }
            }
            // dgamma_j = sum_r dy_rj xhat_rj: each saved xhat is x * rstd with the saved rstd
            // within 1.5 EPSILON relative of the exact 1 / s (f32: rounded to f32, half
            // EPSILON; f64: the mean square, the sum with eps, the square root and the
            // reciprocal each rounded once, the square root halving the first two), and the
            // recomputed xhat is within a negligible error of x / s. So each term differs by at
            // most 2 EPSILON of itself, and the sums by 2 EPSILON times M_j = sum_r |dy_rj
            // xhat_rj|, plus the one rounding of each result to F (half a unit each).
            let (a, b) = (saved.gamma.unwrap(), fresh.gamma.unwrap());
            for (j, (p, q)) in a.iter().zip(&b).enumerate() {
                let m = neumaier((0..8).map(|r| {
                    let v: Vec<f64> = x.row(r).iter().map(|a| a.f64()).collect();
                    let s =
                        (neumaier(v.iter().map(|a| a * a)) / cols as f64 + F::of(eps).f64()).sqrt();
                    (dy[[r, j]].f64() * v[j] / s).abs()
                }));
                let bound = 2.0 * F::EPS * m + tol::<F>(1.0, q.f64());
                let err = (p.f64() - q.f64()).abs();
                assert!(err <= bound, "dgamma[{j}]: {p:e} vs {q:e}, M = {m:e}");
            }
        }
    }
}

fn input_gradient_is_orthogonal_to_x_with_eps_zero<F: TestFloat>() {
    // The output is invariant under x -> c x when eps = 0, so d/dc L(c x) = sum x_i dx_i = 0.
    for (k, cols) in [2, 3, 8, 17, 100].into_iter().enumerate() {
        let x = scaled_rows::<F>(6, cols, 120 + k as u64);
        let dy = scaled_rows::<F>(6, cols, 130 + k as u64);
        for ln in [
            RmsNorm::<F>::new(F::of(0.0)).unwrap(),
            RmsNorm::<F>::affine(cols, F::of(0.0)).unwrap(),
        ] {
            let g = ln.backward(&x, &dy).unwrap();
            for r in 0..6 {
                let terms: Vec<(f64, f64)> = x
                    .row(r)
                    .iter()
                    .zip(g.input.row(r))
                    .map(|(a, d)| (a.f64(), d.f64()))
                    .collect();
                let dot = neumaier(terms.iter().map(|(a, d)| a * d));
                // Each dx_i is within a few units of EPSILON * max(1, |dx_i|).
                let scale: f64 = terms.iter().map(|(a, d)| a.abs() * d.abs().max(1.0)).sum();
                let bound = 8.0 * F::EPS * scale;
                assert!(
                    dot.abs() <= bound,
                    "row {r}, {cols} cols: {dot:e} > {bound:e}"
                );
            }
        }
    }
}

fn all_zero_rows_have_the_gradient_g_over_sqrt_eps<F: TestFloat>() {
    for cols in [1, 4, 9, 100] {
        let mut x = scaled_rows::<F>(3, cols, 140 + cols as u64);
        x.row_mut(1).fill(F::of(0.0));
        let dy = scaled_rows::<F>(3, cols, 150 + cols as u64);
        let gamma: Vec<f64> = (0..cols).map(|j| 0.5 + 0.25 * (j % 5) as f64).collect();
        for eps in [0.25, 1e-5, 0.0] {
            let ln = layer::<F>(eps, Some(&gamma));
            let g = ln.backward(&x, &dy).unwrap();
            let e = F::of(eps).f64();
            let row = g.input.row(1);
            if eps == 0.0 {
                assert!(row.iter().all(|v| v.bits() == 0), "eps 0: {row:?}");
            } else {
                // g_j / sqrt(eps): the f64 reference rounds the product, the square root and
                // the quotient (1.5 units of f64, negligible for f32); the library rounds once.
                let want: Vec<f64> = (0..cols)
                    .map(|j| dy[[1, j]].f64() * gamma[j] / e.sqrt())
                    .collect();
                assert_close(&row, &want, 2.0);
            }
            // The zero row adds exactly 0 to dgamma: the same bits as without it.
            let keep = [0, 2];
            let others = ln
                .backward(&x.select(Axis(0), &keep), &dy.select(Axis(0), &keep))
                .unwrap();
            assert_bitwise_eq(
                g.gamma.as_ref().unwrap(),
                others.gamma.as_ref().unwrap(),
                "dgamma",
            );
            // Saved statistics: the same gradient for the zero row, up to the rounding of the
            // saved rstd = 1 / sqrt(eps) to F (half a unit) and of the result; at eps 0 the
            // saved rstd is +inf, and the row is recomputed: exactly 0.
            let (_, rstd) = ln.forward_with_stats(&x).unwrap();
            let saved = ln.backward_with_stats(&x, &rstd, &dy).unwrap();
            if eps == 0.0 {
                assert_eq!(rstd[1], F::infinity());
                assert_bitwise_eq(&saved.input.row(1), &row, "saved stats, zero row");
            } else {
                let want: Vec<f64> = row.iter().map(|v| v.f64()).collect();
                assert_close(&saved.input.row(1), &want, 2.0);
            }
        }
    }
}

fn one_element_rows_backward<F: TestFloat>() {
    // y = x / sqrt(x^2 + eps): dy/dx = eps / (x^2 + eps)^(3/2), times g.
    let vals = [0.5, -1.0, 3.0, -7.25, 100.0];
    let x = Array2::from_shape_vec((5, 1), vals.iter().map(|&v| F::of(v)).collect()).unwrap();
    let dy = Array2::from_shape_vec((5, 1), vec![F::of(1.5); 5]).unwrap();
    for eps in [0.5, 1e-3] {
        let e = F::of(eps).f64();
        let g = layer::<F>(eps, Some(&[2.0])).backward(&x, &dy).unwrap();
        let want: Vec<f64> = vals
            .iter()
            .map(|v| 3.0 * e / (v * v + e).powf(1.5))
            .collect();
        assert_close(&g.input, &want, 4.0);
    }
    // eps 0: the output is the constant sign(x), and the gradient is documented to be exactly
    // 0 (its sign is that of g), subnormal x included (rounded to F: 5e-324 is 0 in f32, an
    // all-zero row, whose gradient is 0 by definition).
    let g = layer::<F>(0.0, Some(&[2.0])).backward(&x, &dy).unwrap();
    assert!(g.input.iter().all(|v| v.f64() == 0.0), "{:?}", g.input);
    let tiny = [5e-324, -1e-320, 1e-45, -1e-40];
    let x = Array2::from_shape_vec((4, 1), tiny.iter().map(|&v| F::of(v)).collect()).unwrap();
    let dy = Array2::from_shape_vec((4, 1), vec![F::of(-1.5); 4]).unwrap();
    let g = layer::<F>(0.0, Some(&[2.0])).backward(&x, &dy).unwrap();
    assert!(g.input.iter().all(|v| v.f64() == 0.0), "{:?}", g.input);
}

fn non_finite_values_poison_their_row_and_dgamma<F: TestFloat>() {
    let mut x = scaled_rows::<F>(4, 6, 160);
    let dy = scaled_rows::<F>(4, 6, 161);
    x[[1, 2]] = F::nan();
    x[[3, 0]] = F::infinity();
    let ln = RmsNorm::<F>::affine(6, F::of(1e-5)).unwrap();
    let g: Gradients<F, Ix2> = ln.backward(&x, &dy).unwrap();
    for r in [1, 3] {
        assert!(g.input.row(r).iter().all(|v| v.is_nan()), "row {r}");
    }
    for r in [0, 2] {
        let alone = ln
            .backward(&x.slice(s![r..r + 1, ..]), &dy.slice(s![r..r + 1, ..]))
            .unwrap();
        assert_bitwise_eq(&g.input.row(r), &alone.input.row(0), &format!("row {r}"));
    }
    assert!(g.gamma.unwrap().iter().all(|v| v.is_nan()));
    assert!(g.beta.is_none());
}

fn gradients_have_no_beta_and_gamma_only_with_gamma<F: TestFloat>() {
    let x = scaled_rows::<F>(3, 4, 170);
    let plain = RmsNorm::<F>::new(F::of(1e-5))
        .unwrap()
        .backward(&x, &x)
        .unwrap();
    assert!(plain.gamma.is_none() && plain.beta.is_none());
    let affine = RmsNorm::<F>::affine(4, F::of(1e-5))
        .unwrap()
        .backward(&x, &x)
        .unwrap();
    assert!(affine.beta.is_none());
    assert_eq!(affine.gamma.unwrap().shape(), &[4]);
    let x3: Array3<F> = random_array((2, 3, 4), 171);
    let k2 = RmsNorm::<F>::affine_shape(&[3, 4], F::of(1e-5)).unwrap();
    let g = k2.backward(&x3, &x3).unwrap();
    assert!(g.beta.is_none());
    assert_eq!(g.gamma.unwrap().shape(), &[3, 4]);
    assert_eq!(g.input.shape(), &[2, 3, 4]);
    let (_, rstd) = k2.forward_with_stats(&x3).unwrap();
    assert_eq!(rstd.shape(), &[2, 1]);
    assert!(k2
        .backward_with_stats(&x3, &rstd, &x3)
        .unwrap()
        .beta
        .is_none());
}

// ----------------------------------------------------------------------------------------------

/// Instantiates each generic test above for `f32` and `f64`.
macro_rules! for_f32_and_f64 {
    ($($name:ident),* $(,)?) => {
        mod f32_rms {
            $(#[test]
            fn $name() {
                super::$name::<f32>();
            })*
        }
        mod f64_rms {
            $(#[test]
            fn $name() {
                super::$name::<f64>();
            })*
        }
    };
}

for_f32_and_f64!(
    forward_matches_a_compensated_f64_reference,
    closed_forms,
    accessors_and_constructors,
    gamma_scales_each_column,
    all_zero_rows_give_exactly_positive_zero,
    one_element_rows,
    nan_and_infinity_stay_in_their_row,
    empty_axis_and_zero_rows,
    every_entry_point_gives_the_same_bits,
    every_layout_gives_the_same_bits,
    invalid_epsilons_are_rejected,
    param_length_is_checked_by_every_entry_point,
    shape_mismatches_are_errors,
    zero_dimensional_and_axis_errors,
    extreme_rows_normalize_like_rows_scaled_to_one,
    backward_with_stats_is_close_to_backward,
    input_gradient_is_orthogonal_to_x_with_eps_zero,
    all_zero_rows_have_the_gradient_g_over_sqrt_eps,
    one_element_rows_backward,
    non_finite_values_poison_their_row_and_dgamma,
    gradients_have_no_beta_and_gamma_only_with_gamma,
);
