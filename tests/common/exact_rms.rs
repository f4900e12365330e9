//! Exact reference for RMS normalization (forward and backward), for accuracy tests only.
//!
//! Like `exact.rs` (whose [`Dyadic`] and [`Approx`] it uses), it shares no code with `src/` and
//! uses no floating-point arithmetic on the data.
//!
//! # Forward
//!
//! Every finite `f64` (and so every `f32`) is a dyadic rational. For a row `x_0 .. x_{n-1}` let
//! `e` be the smallest exponent in the row; then `x_i = X_i * 2^e` with integers `X_i`. With
//! `Q = sum X_i^2`:
//!
//! ```text
//! ms        = Q * 2^(2e) / n
//! y_i       = x_i / sqrt(ms + eps) = X_i * rho
//! rho^2     = 2^(2e) / (ms + eps) = n / (Q + n * eps * 2^(-2e)) = n * 2^t / den
//! ```
//!
//! with the integer `den = (Q + n * eps * 2^(-2e)) * 2^t` (`t >= 0` the smallest shift that
//! makes it an integer). `rho` is approximated by `s * 2^-k` with
//! `s = isqrt(floor(rho^2 * 2^(2k))) = floor(rho * 2^k)` and `k` chosen so that `s >= 2^140`;
//! `y_i` is approximated by the exact product `X_i * s * 2^-k`, with an error below
//! `|X_i| * 2^-k`, i.e. a relative error below `2^-140`. As `|y_i| <= sqrt(n)`, the absolute
//! error is below `2^-130` for rows of up to `2^20` elements, far below every error unit of the
//! tests (at least `2^-52 * max(1, |y_i|)`). When `rho` is dyadic (`s^2 * den == n * 2^(t+2k)`),
//! every `y_i` is exact (for example `+-1` for a row of `+-2^j` with `eps = 0`).
//!
//! An all-zero row has `X_i = 0`, so `y_i = 0` exactly; with `eps = 0` also `den = 0`, and
//! `0 / 0` is defined as 0.
//!
//! # Backward
//!
//! With `V = ms + eps`, `s = sqrt(V)`, `xhat_i = x_i / s`, `g_i = dy_i * gamma_i`
//! (`gamma_i = 1` without gamma) and `P = sum_k g_k x_k`:
//!
//! ```text
//! dx_j = (g_j - xhat_j * mean(g * xhat)) / s = (n V g_j - x_j P) / (n V^(3/2))
//! ```
//!
//! In scaled integers, `g_i = G_i * 2^h` (`h` the smallest exponent of the exact products),
//! `PG = sum G_k X_k` (so `P = PG * 2^(h+e)`), and `V = den * 2^(2e - t) / n`:
//!
//! ```text
//! n V g_j - x_j P = 2^(h + 2e - t) * (G_j * den - X_j * PG * 2^t)
//! n V^(3/2)       = den^(3/2) * 2^(3e - 3t/2) / sqrt(n)
//! dx_j            = N_j * 2^(h - e) * R,    N_j = G_j * den - X_j * PG * 2^t,
//!                                           R^2 = n * 2^t / den^3
//! ```
//!
//! `N_j` is an exact integer and `R` the one irrational factor of the row, approximated by
//! `r * 2^-k` with `r = floor(R * 2^k) >= 2^200` (computed with an integer square root). The
//! product `N_j * r * 2^(h - e - k)` is exact, so the only error is that of `r`: a relative error
//! below `2^-200` of `|dx_j|`. `N_j = 0` gives an exact 0 (for example a one-element row with
//! `eps = 0`, or `dy` proportional to `x` with `eps = 0`: the output is scale invariant). An
//! all-zero row with `eps > 0` has `X = 0`, so `dx_j = G_j den 2^(h-e) R = g_j / sqrt(eps)`;
//! with `eps = 0` (`den = 0`) its gradient is defined as 0.
//!
//! `dgamma_j = sum over rows of dy_j * xhat_j` is formed by `exact_backward::ParamGradients`
//! from the `xhat` of [`RmsRow::normalized`].

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Signed, Zero};

use rand::rngs::StdRng;
use rand::Rng;

use super::exact::{Approx, Dyadic, Format};
use super::harness::normal;

/// `rho` (forward) is approximated to at least this many significant bits.
const RHO_BITS: i64 = 140;
/// `R` (backward) is approximated to at least this many significant bits.
const R_BITS: i64 = 200;

/// The values as integers with a common exponent: `v_i = X_i * 2^exp` (`exp` the smallest
/// exponent; 0 for an empty slice).
fn scaled_integers(values: &[Dyadic]) -> (Vec<BigInt>, i64) {
    let exp = values.iter().map(|d| d.exp).min().unwrap_or(0);
    let xs = values.iter().map(|d| &d.mant << (d.exp - exp)).collect();
    (xs, exp)
}

/// `floor(sqrt(num * 2^(2k) / den))` with `k` the smallest integer that makes it at least
/// `2^bits`, returned with `k` and whether the square root is exact (`num, den > 0`).
fn scaled_sqrt(num: &BigInt, den: &BigInt, bits: i64) -> (BigInt, i64, bool) {
    // num / den > 2^(bits(num) - 1 - bits(den)), so 2k >= 2 bits + bits(den) - bits(num) + 2
    // gives num * 2^(2k) / den > 2^(2 bits + 1).
    let k = (2 * bits + den.bits() as i64 - num.bits() as i64 + 3).div_euclid(2);
    // The roots of this module are at most sqrt(n) (module doc), so k is positive.
    assert!(k >= 0, "root too large");
    let shifted = num << (2 * k);
    let root = (&shifted / den).sqrt();
    debug_assert!(root.bits() as i64 > bits);
    let exact = &root * &root * den == shifted;
    (root, k, exact)
}

/// The denominator `den = (Q + n eps 2^(-2e)) 2^t` of a row (see the module doc) and `t`.
fn denominator(q: &BigInt, n: &BigInt, e: i64, eps: f64) -> (BigInt, i64) {
    assert!(eps >= 0.0 && eps.is_finite(), "eps must be finite and >= 0");
    let eps = Dyadic::from_f64(eps);
    if eps.is_zero() {
        return (q.clone(), 0);
    }
    let shift = eps.exp - 2 * e;
    let eps_n = &eps.mant * n;
    if shift >= 0 {
        (q + (eps_n << shift), 0)
    } else {
        ((q << -shift) + eps_n, -shift)
    }
}

/// The exact statistics of one row, in scaled-integer form (see the module doc).
#[derive(Clone, Debug)]
pub struct RmsRow {
    /// `x_i = xs[i] * 2^exp`.
    xs: Vec<BigInt>,
    exp: i64,
    /// `Q = sum X_i^2`.
    q: BigInt,
}

impl RmsRow {
    /// The exact row of a non-empty slice of finite values (`f32` rows: convert with
    /// `f64::from`, which is exact).
    pub fn new(row: &[f64]) -> RmsRow {
        assert!(!row.is_empty(), "empty row");
        let values: Vec<Dyadic> = row.iter().map(|&v| Dyadic::from_f64(v)).collect();
        let (xs, exp) = scaled_integers(&values);
        let q = xs.iter().map(|x| x * x).sum();
        RmsRow { xs, exp, q }
    }

    pub fn len(&self) -> usize {
        self.xs.len()
    }

    fn n(&self) -> BigInt {
        BigInt::from(self.xs.len())
    }

    /// The exact mean square `sum(x^2) / n`.
    pub fn mean_square(&self) -> BigRational {
        let n = self.n();
        let e2 = 2 * self.exp;
        if e2 >= 0 {
            BigRational::new(&self.q << e2, n)
        } else {
            BigRational::new(self.q.clone(), n << -e2)
        }
    }

    /// `y_i = x_i / sqrt(ms + eps)` for every element, each within `|y_i| * 2^-140`; exact when
    /// it is 0, and whenever `rho` is dyadic. An all-zero row gives exact zeros for every eps.
    pub fn normalized(&self, eps: f64) -> Vec<Approx> {
        let n = self.n();
        let (den, t) = denominator(&self.q, &n, self.exp, eps);
        if self.q.is_zero() {
            // All zeros: y = 0 (and 0/0 := 0 when eps == 0).
            return vec![Approx::exact(Dyadic::zero()); self.len()];
        }
        // rho^2 = n 2^t / den.
        let (s, k, exact) = scaled_sqrt(&(n << t), &den, RHO_BITS);
        self.xs
            .iter()
            .map(|x| {
                let err = if exact || x.is_zero() {
                    Dyadic::zero()
                } else {
                    Dyadic {
                        mant: x.abs(),
                        exp: -k,
                    }
                };
                Approx {
                    approx: Dyadic {
                        mant: x * &s,
                        exp: -k,
                    },
                    err,
                }
            })
            .collect()
    }

    /// `z_i = y_i * gamma_i` (no gamma: `y`), exact up to the scaled error bound.
    pub fn forward(&self, eps: f64, gamma: Option<&[f64]>) -> Vec<Approx> {
        let y = self.normalized(eps);
        match gamma {
            None => y,
            Some(g) => {
                assert_eq!(g.len(), y.len(), "gamma has another length");
                y.iter().zip(g).map(|(y, &g)| y.affine(g, 0.0)).collect()
            }
        }
    }
}

/// The exact input gradient `dx` of one RMSNorm row (see the module doc), each element within
/// `|dx_i| * 2^-200`; exact where it is 0.
///
/// `x`, `dy` and `gamma` (if any) must have the same non-zero length and hold finite values;
/// `eps` is the exact epsilon the layer uses.
pub fn rms_input_gradient(x: &[f64], dy: &[f64], gamma: Option<&[f64]>, eps: f64) -> Vec<Approx> {
    let len = x.len();
    assert!(len > 0, "empty row");
    assert_eq!(dy.len(), len, "dy has another length");
    let n = BigInt::from(len);
    let xd: Vec<Dyadic> = x.iter().map(|&v| Dyadic::from_f64(v)).collect();
    let (xs, e) = scaled_integers(&xd);
    let q: BigInt = xs.iter().map(|v| v * v).sum();
    let (den, t) = denominator(&q, &n, e, eps);
    if den.is_zero() {
        // An all-zero row with eps == 0: defined as 0.
        return vec![Approx::exact(Dyadic::zero()); len];
    }
    let gd: Vec<Dyadic> = match gamma {
        Some(gamma) => {
            assert_eq!(gamma.len(), len, "gamma has another length");
            dy.iter()
                .zip(gamma)
                .map(|(&d, &g)| Dyadic::from_f64(d).mul(&Dyadic::from_f64(g)))
                .collect()
        }
        None => dy.iter().map(|&d| Dyadic::from_f64(d)).collect(),
    };
    let (gs, h) = scaled_integers(&gd);
    let pg: BigInt = gs.iter().zip(&xs).map(|(g, x)| g * x).sum();
    let pg_t = pg << t;
    // R^2 = n 2^t / den^3.
    let den3 = &den * &den * &den;
    let (r, k, exact) = scaled_sqrt(&(n << t), &den3, R_BITS);
    gs.iter()
        .zip(&xs)
        .map(|(g, x)| {
            let numer = g * &den - x * &pg_t;
            let exp = h - e - k;
            let err = if exact || numer.is_zero() {
                Dyadic::zero()
            } else {
                Dyadic {
                    mant: numer.abs(),
                    exp,
                }
            };
            Approx {
                approx: Dyadic {
                    mant: numer * &r,
                    exp,
                },
                err,
            }
        })
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Tolerances of `tests/rms_accuracy.rs`, shared with `examples/rms_accuracy.rs`, in units of
// `F::EPSILON * max(1, |exact|)` (`dgamma`: of `F::EPSILON * max(1, sum_r |dy_rj xhat_rj|)`).
// Where the measured errors stay far below the issue's targets for a reason the algorithm
// gives, the tests assert the tighter bound.

/// Forward target for `f32` input (computed in `f64`, rounded once: about 0.5 expected).
pub const F32_FORWARD_UNITS: f64 = 1.0;
/// Forward target for `f64` input.
pub const F64_FORWARD_UNITS: f64 = 2.0;
/// Backward target of the issue (`dx` and `dgamma`), both formats, shared with LayerNorm.
pub const BACKWARD_UNITS: f64 = 4.0;
/// What `tests/rms_accuracy.rs` asserts for `dx`, both formats: 1 unit, tighter than
/// [`BACKWARD_UNITS`] (at most 0.5 measured, cancellation scenarios included). The library
/// evaluates `dx_j = (g_j - xhat_j mean(g xhat)) / s` in `f64` (`f32` input) or double-double
/// (`f64` input) and rounds once to `F` (half a unit). Its working error, a few roundings of about
/// `2^-53` (`f32` input) or `2^-104` (`f64`) relative to the magnitude
/// `T_j = (|g_j| + |xhat_j| mean|g xhat|) / s` of the terms, is about `2^-26` or `2^-48` units
/// times `T_j / max(1, |dx_j|)`: far below the other half unit on the rows tested, where that
/// ratio stays below about `2^15` (`2 |c| max|xhat|` in the cancellation scenario, where the
/// terms cancel to the noise or to 0).
pub const DX_UNITS: f64 = 1.0;
/// What `tests/rms_accuracy.rs` asserts for `dgamma` (units of `F::EPSILON * max(1,
/// sum_r |dy_rj xhat_rj|)`), both formats: 1 unit (below 0.5 measured). Each term `dy * xhat` is
/// formed in the working precision (relative error a few `2^-53` for `f32` input, `2^-100`
/// for `f64`) and summed with compensation, then rounded once: half an ulp of the exact sum
/// (at most half a unit) plus a negligible fraction of a unit.
pub const DGAMMA_UNITS: f64 = 1.0;

/// The forward target of a format without gamma.
pub fn forward_tol(format: Format) -> f64 {
    match format {
        Format::F32 => F32_FORWARD_UNITS,
        Format::F64 => F64_FORWARD_UNITS,
    }
}

/// Tolerance of `z = y * gamma`, given the nearest `f64`s of the exact `y` and `gamma`.
///
/// `f32`: `y * gamma` is formed in `f64` and rounded once to `f32`, so [`F32_FORWARD_UNITS`].
///
/// `f64`: the library rounds `y' = fl(x / s)`, within `t = F64_FORWARD_UNITS` units of `y`, then
/// `z' = fl(y' * gamma)`, one more rounding (relative `EPSILON / 2`):
///
/// ```text
/// |z' - z| <= |gamma| |y' - y| + EPSILON/2 |z'|
///          <= EPSILON * (t |gamma| max(1, |y|) + max(1, |z|) / 2)     (to first order)
/// ```
///
/// so in units of `EPSILON * max(1, |z|)`: `t * kappa + 1/2` with
/// `kappa = |gamma| max(1, |y|) / max(1, |z|)`, which is `|gamma|` when `|y| <= 1` and
/// `|z| <= 1`, and at most 1 otherwise. `1e-9` covers the second-order term
/// (`EPSILON/2 * t * kappa`).
pub fn affine_tol(format: Format, y: f64, gamma: f64) -> f64 {
    match format {
        Format::F32 => F32_FORWARD_UNITS,
        Format::F64 => {
            let z = y * gamma;
            let kappa = gamma.abs() * y.abs().max(1.0) / z.abs().max(1.0);
            F64_FORWARD_UNITS * kappa + 0.5 + 1e-9
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Relative tolerances, in ulps of the exact value in `F` (`exact::ulp_units`; subnormal spacing
// below the normal range). The units above are `F::EPSILON * max(1, |exact|)`: for outputs far
// below 1 (a tiny row next to eps, a huge row's `dx`) they cannot see any error, and these
// scenarios are also measured in ulps.

/// Forward bound in ulps for `f32` input: the library computes in `f64` and rounds once. Its
/// `f64` result is within `3 * 2^-52` relative of `y` (the mean square, the sum with eps, the
/// square root and the quotient each rounded once; the square root halves the first two), i.e.
/// `3 * 2^-28` ulps of `f32` (subnormal `f32` results: far less), so one rounding to `f32`
/// gives `0.5 + 3 * 2^-28`; `2^-20` covers that with room (and gamma's one more `f64` rounding).
pub const F32_FORWARD_ULPS: f64 = 0.5 + 1.0 / 1_048_576.0;

/// Forward bound in ulps for `f64` input where eps dominates: in the scenarios measured in ulps
/// (`|x| <= 1e-300` or subnormal, eps `1e-5`) the mean square is below `2^-1990 * eps`, and the
/// library takes `s = fl(sqrt(eps))` (eps alone: the neglected mean square is relative
/// `1e-590`). That one rounding (relative `2^-53`) moves `y = x / s` by less than 1 ulp of `y`
/// (`|y| < 2^53 ulp(y)`), and the quotient rounds once more (half an ulp): 1.5. A subnormal `y`
/// is formed as `fl(x 2^k / s) 2^-k`: the first two roundings are at most `0.75` subnormal ulps
/// there (the quotient is rounded to 53 bits at least as fine as the subnormal spacing, halved
/// in the top subnormal binade), and the last half an ulp: 1.25.
pub const F64_FORWARD_ULPS: f64 = 1.5;

/// [`F64_FORWARD_ULPS`] with gamma: `y' = y (1 + theta)` with `|theta| <= 2 * 2^-53` (both
/// roundings above), then `z' = fl(y' * gamma)`: `|z' - z| <= 2^-52 |z| + ulp(z) / 2`, i.e.
/// below 2.5 ulps of `z`.
pub const F64_AFFINE_ULPS: f64 = 2.5;

/// The forward bound in ulps (see the constants) of the scenarios where eps dominates.
pub fn forward_ulps_tol(format: Format, with_gamma: bool) -> f64 {
    match (format, with_gamma) {
        (Format::F32, _) => F32_FORWARD_ULPS,
        (Format::F64, false) => F64_FORWARD_ULPS,
        (Format::F64, true) => F64_AFFINE_ULPS,
    }
}

/// The relative precision of the library's backward arithmetic on the rows measured in ulps:
/// `f64` for `f32` input (`2^-53`); double-double for `f64` input, about `2^-104`, but on a row
/// of `1e-300`s the low parts of `xhat` (and of `dy * xhat`) are subnormal, exact only to
/// `2^-1074`, about `2^-84` of the values: `2^-80` covers both.
pub fn working_unit(format: Format) -> f64 {
    match format {
        Format::F32 => 2f64.powi(-53),
        Format::F64 => 2f64.powi(-80),
    }
}

/// Bound in ulps of `exact` (in `F`) for a gradient evaluated in the working precision and
/// rounded to `F`, whose terms sum to `terms` in magnitude (`dx_j`: `(|g_j| + |xhat_j| *
/// mean|g xhat|) / s`; `dgamma_j`: `sum_r |dy_rj xhat_rj|`), and `rounding` ulps for the final
/// rounding(s) to `F`.
///
/// Each term is formed with a few roundings of relative [`working_unit`], and the sums are
/// compensated: the result before its rounding to `F` is within, generously,
/// `64 * working_unit * terms` of the exact value. That is `64 * working_unit * terms / ulp`
/// ulps, small unless the terms cancel to far below their magnitude.
pub fn gradient_ulps_tol(format: Format, exact: &BigRational, terms: f64, rounding: f64) -> f64 {
    let ulp = Dyadic::pow2(super::exact::ulp_exp(exact, format)).to_f64();
    rounding + 64.0 * working_unit(format) * terms / ulp
}

// ----------------------------------------------------------------------------------------------
// Shared by the tests and the example: the cancellation scenario and the term magnitudes of
// `dx`.

/// An output-gradient generator: `dy_gen(rng, x_row)` is the `dy` row of the input row `x_row`.
pub type DyGen = Box<dyn Fn(&mut StdRng, &[f64]) -> Vec<f64>>;

/// A row of values with 12-bit significands, `2^U(-8, 8) * N(0, 1)` rounded so: its products
/// with a 12-bit `c` are exact in `f32` (24 bits) as well as in `f64`.
pub fn short_significand_row(rng: &mut StdRng, n: usize) -> Vec<f64> {
    let scale = 2f64.powi(rng.random_range(-8..=8));
    (0..n)
        .map(|_| (normal(rng) * 1024.0).round().clamp(-4095.0, 4095.0) / 1024.0 * scale)
        .collect()
}

/// `dy = c * x + noise`: `c = +-m * 2^j` with an odd 12-bit `m` and `|c|` in `[2^-1, 2^12)`,
/// one per row, and `noise = relative * |c| * rms(x) * N(0, 1)` per element (`relative = 0`:
/// `dy` exactly proportional to `x`, also after rounding to `F` for the rows of
/// [`short_significand_row`]).
pub fn proportional_dy(relative: f64) -> DyGen {
    Box::new(move |rng, x| {
        let m = f64::from(rng.random_range(1024..2048) * 2 + 1);
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        let c = sign * m * 2f64.powi(rng.random_range(-12..=0));
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt();
        x.iter()
            .map(|&v| c * v + relative * c.abs() * rms * normal(rng))
            .collect()
    })
}

/// The magnitudes of the terms of each `dx_j = (g_j - xhat_j * mean(g * xhat)) / s` of a row:
/// `(|g_j| + |xhat_j| * mean|g * xhat|) / s`, in `f64` from the exact `xhat` (a few roundings:
/// they only scale a tolerance). `1 / s` is `xhat_i / x_i` for the largest `|x_i|` (rows of the
/// ulp scenarios are far from the ends of the `f64` range there); an all-zero row has none.
pub fn dx_terms(x: &[f64], dy: &[f64], gamma: Option<&[f64]>, xhat: &[Approx]) -> Vec<f64> {
    let (big, &xb) = x
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .expect("non-empty row");
    if xb == 0.0 {
        return vec![0.0; x.len()];
    }
    let inv_s = xhat[big].to_f64() / xb;
    assert!(inv_s.is_finite() && inv_s > 0.0, "1 / s = {inv_s:e}");
    let g: Vec<f64> = match gamma {
        Some(w) => dy.iter().zip(w).map(|(d, w)| d * w).collect(),
        None => dy.to_vec(),
    };
    let xh: Vec<f64> = xhat.iter().map(Approx::to_f64).collect();
    let a = g.iter().zip(&xh).map(|(g, y)| (g * y).abs()).sum::<f64>() / x.len() as f64;
    g.iter()
        .zip(&xh)
        .map(|(g, y)| (g.abs() + y.abs() * a) * inv_s)
        .collect()
}
