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

use super::exact::{Approx, Dyadic, Format};

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

/// Forward target for `f32` input (computed in `f64`, rounded once: about 0.5 expected).
pub const F32_FORWARD_UNITS: f64 = 1.0;
/// Forward target for `f64` input.
pub const F64_FORWARD_UNITS: f64 = 2.0;
/// Backward target (`dx` and `dgamma`), both formats.
pub const BACKWARD_UNITS: f64 = 4.0;

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
