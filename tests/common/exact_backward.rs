//! Exact reference for the backward pass of layer normalization, for accuracy tests only.
//!
//! Like the forward reference (`exact.rs`, whose [`Dyadic`] and [`Approx`] it uses), it shares
//! no code with `src/` and uses no floating-point arithmetic on the data.
//!
//! # Input gradient
//!
//! For one row of length `n` with `mu = mean(x)`, `var = mean((x - mu)^2)` (biased),
//! `V = var + eps`, `d_i = x_i - mu`, `g_i = dy_i * gamma_i` (`gamma_i = 1` without gamma) and
//! `C = sum_k g_k d_k / n`:
//!
//! ```text
//! dx_i = (g_i - mean(g) - xhat_i * mean(g * xhat)) / sqrt(V)
//!      = ((g_i - mean(g)) * V - d_i * C) / V^(3/2)
//! ```
//!
//! In scaled integers (as in `exact.rs`): `x_i = X_i * 2^e` (`e` the smallest exponent of the
//! row), `S = sum X_i`, `D_i = n X_i - S`, `W = n sum X_i^2 - S^2`, and `V = den * 2^(2e - t) / n^2`
//! with the integer `den = (W + eps * n^2 * 2^(-2e)) * 2^t` (`t >= 0` the smallest shift that
//! makes it an integer). Likewise `g_i = G_i * 2^h`, `SG = sum G_i`, `P = sum G_i D_i`. Then
//! `g_i - mean(g) = (n G_i - SG) 2^h / n`, `d_i = D_i 2^e / n`, `C = P 2^(h+e) / n^2`, and all
//! powers of `n` cancel:
//!
//! ```text
//! dx_i = N_i * 2^(h - e) * R,    N_i = (n G_i - SG) * den - D_i * P * 2^t,    R^2 = 2^t / den^3
//! ```
//!
//! `N_i` is an exact integer and `R` the one irrational factor of the row, approximated by
//! `r * 2^-k` with `r = isqrt(floor(R^2 * 2^(2k))) = floor(R * 2^k) >= 2^140`. The product
//! `N_i * r * 2^(h - e - k)` is exact, so the only error is that of `r`: below `|N_i| 2^(h-e-k)`,
//! i.e. a relative error below `2^-140` of `|dx_i|`, negligible against every error unit of the
//! tests (at least `2^-52 * max(1, |dx_i|)`). When `R` is dyadic (`r^2 den^3 = 2^(t + 2k)`) every
//! `dx_i` is exact; `N_i = 0` gives an exact 0.
//!
//! # Parameter gradients
//!
//! `dgamma_j = sum over rows r of dy_rj * xhat_rj` with `xhat` from the forward reference
//! ([`ExactRow::normalized`], each within `|xhat| * 2^-140`): every term is formed exactly from
//! that approximation, so the sum is within `2^-140 * sum_r |dy_rj * xhat_rj|`, far below one
//! unit of `EPSILON * max(1, sum_r |dy_rj * xhat_rj|)` (the unit the tests use for `dgamma`,
//! see [`sum_units`]). `dbeta_j = sum over rows of dy_rj` is exact.
//!
//! # Degenerate rows
//!
//! A row of one element has `D = 0`, `W = 0` and `n G_i - SG = 0`: `dx = 0` exactly, and
//! `xhat = 0` adds exactly 0 to `dgamma`. A constant row with `eps > 0` has `D = 0`, so
//! `dx_i = (n G_i - SG) den 2^(h-e) R = (g_i - mean(g)) / sqrt(eps)`; with `eps = 0` (`den = 0`)
//! its `dx` and `xhat` are defined as 0.
//!
//! # Error scales
//!
//! [`sum_units`] measures an error against a given scale (for `dgamma`, the sum of the
//! magnitudes of its terms). [`RowTerms`] holds per-row quantities (nearest `f64`s of exact
//! values) for error bounds: the sum of the magnitudes of the terms of `dx_i`, and the exact
//! effect on `dx` of perturbed statistics (a rounded mean, a rounded `1 / s`).

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Signed, ToPrimitive, Zero};

use super::exact::{Approx, Dyadic, ExactRow, Format};

/// `R` (see the module doc) is approximated to at least this many significant bits.
const R_BITS: i64 = 140;

/// The values of a slice of `f64`s as integers `X_i` with a common exponent: `v_i = X_i * 2^exp`.
fn scaled_integers(values: &[Dyadic]) -> (Vec<BigInt>, i64) {
    let exp = values.iter().map(|d| d.exp).min().unwrap_or(0);
    let xs = values.iter().map(|d| &d.mant << (d.exp - exp)).collect();
    (xs, exp)
}

/// The exact input gradient `dx` of one row (see the module doc), each element within
/// `|dx_i| * 2^-140`.
///
/// `x`, `dy` and `gamma` (if any) must have the same non-zero length and hold finite values;
/// `f32` data converts exactly with `f64::from`. `eps` is the exact epsilon the layer uses.
pub fn input_gradient(x: &[f64], dy: &[f64], gamma: Option<&[f64]>, eps: f64) -> Vec<Approx> {
    let len = x.len();
    assert!(len > 0, "empty row");
    assert_eq!(dy.len(), len, "dy has another length");
    assert!(eps >= 0.0 && eps.is_finite(), "eps must be finite and >= 0");
    let n = BigInt::from(len);

    // x_i = X_i 2^e, S, D_i, W.
    let xd: Vec<Dyadic> = x.iter().map(|&v| Dyadic::from_f64(v)).collect();
    let (xs, e) = scaled_integers(&xd);
    let sum: BigInt = xs.iter().sum();
    let ds: Vec<BigInt> = xs.iter().map(|v| &n * v - &sum).collect();
    let sum_sq: BigInt = xs.iter().map(|v| v * v).sum();
    let w = &n * sum_sq - &sum * &sum;
    debug_assert!(!w.is_negative());

    // den = (W + eps n^2 2^(-2e)) 2^t with the smallest t >= 0 that makes it an integer.
    let eps = Dyadic::from_f64(eps);
    let (den, t) = if eps.is_zero() {
        (w, 0i64)
    } else {
        let shift = eps.exp - 2 * e;
        let eps_n2 = &eps.mant * &n * &n;
        if shift >= 0 {
            (w + (eps_n2 << shift), 0)
        } else {
            ((w << -shift) + eps_n2, -shift)
        }
    };
    if den.is_zero() {
        // A constant row with eps == 0: defined as 0.
        return vec![Approx::exact(Dyadic::zero()); len];
    }

    // g_i = G_i 2^h, SG, P.
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
    let sum_g: BigInt = gs.iter().sum();
    let p: BigInt = gs.iter().zip(&ds).map(|(g, d)| g * d).sum();
    let p_t = p << t;

    // R^2 = 2^t / den^3. Pick k with R^2 2^(2k) >= 2^(2 R_BITS): as R^2 > 2^(t - bits(den^3)),
    // 2k >= 2 R_BITS + bits(den^3) - t will do.
    let den3 = &den * &den * &den;
    let k = (2 * R_BITS + den3.bits() as i64 - t + 1).div_euclid(2);
    let shifted = BigInt::from(1u8) << (t + 2 * k);
    let r = (&shifted / &den3).sqrt(); // floor(R 2^k)
    debug_assert!(r.bits() as i64 > R_BITS);
    let exact = &r * &r * &den3 == shifted;

    gs.iter()
        .zip(&ds)
        .map(|(g, d)| {
            let numer = (&n * g - &sum_g) * &den - d * &p_t;
            let err = if exact || numer.is_zero() {
                Dyadic::zero()
            } else {
                Dyadic {
                    mant: numer.abs(),
                    exp: h - e - k,
                }
            };
            Approx {
                approx: Dyadic {
                    mant: numer * &r,
                    exp: h - e - k,
                },
                err,
            }
        })
        .collect()
}

/// Exact parameter gradients of a batch of rows, accumulated row by row:
/// `dgamma_j = sum_r dy_rj * xhat_rj` and `dbeta_j = sum_r dy_rj`, together with the sums of
/// magnitudes `sum_r |dy_rj * xhat_rj|` and `sum_r |dy_rj|` (the scales of [`sum_units`]).
#[derive(Clone, Debug)]
pub struct ParamGradients {
    /// Approximation of `dgamma_j` (exact sum of the exact products with the approximate xhat).
    gamma: Vec<Dyadic>,
    /// Sum of the error bounds of the `xhat` terms, times `|dy|`.
    gamma_err: Vec<Dyadic>,
    /// `sum_r |dy_rj * xhat_rj|` (of the approximations).
    gamma_abs: Vec<Dyadic>,
    /// `dbeta_j`, exact.
    beta: Vec<Dyadic>,
    /// `sum_r |dy_rj|`, exact.
    beta_abs: Vec<Dyadic>,
}

impl ParamGradients {
    /// Zero sums for rows of length `n`.
    pub fn new(n: usize) -> ParamGradients {
        let zeros = vec![Dyadic::zero(); n];
        ParamGradients {
            gamma: zeros.clone(),
            gamma_err: zeros.clone(),
            gamma_abs: zeros.clone(),
            beta: zeros.clone(),
            beta_abs: zeros,
        }
    }

    /// Adds the contributions of one row `x` with output gradient `dy`.
    pub fn add_row(&mut self, x: &[f64], dy: &[f64], eps: f64) {
        self.add_normalized(&ExactRow::new(x).normalized(eps), dy);
    }

    /// Adds the contributions of one row given its normalized values `xhat` (from
    /// [`ExactRow::normalized`]) and output gradient `dy`.
    pub fn add_normalized(&mut self, xhat: &[Approx], dy: &[f64]) {
        assert_eq!(xhat.len(), self.gamma.len(), "row of another length");
        assert_eq!(dy.len(), xhat.len(), "dy has another length");
        for (j, (y, &d)) in xhat.iter().zip(dy).enumerate() {
            let d = Dyadic::from_f64(d);
            let term = y.approx.mul(&d);
            self.gamma_abs[j] = self.gamma_abs[j].add(&term.abs());
            self.gamma[j] = self.gamma[j].add(&term);
            self.gamma_err[j] = self.gamma_err[j].add(&y.err.mul(&d.abs()));
            self.beta_abs[j] = self.beta_abs[j].add(&d.abs());
            self.beta[j] = self.beta[j].add(&d);
        }
    }

    /// `dgamma_j`, each within `2^-140 * sum_r |dy_rj * xhat_rj|`.
    pub fn gamma(&self) -> Vec<Approx> {
        self.gamma
            .iter()
            .zip(&self.gamma_err)
            .map(|(a, e)| Approx {
                approx: a.clone(),
                err: e.clone(),
            })
            .collect()
    }

    /// `sum_r |dy_rj * xhat_rj|` for every column.
    pub fn gamma_magnitude(&self) -> &[Dyadic] {
        &self.gamma_abs
    }

    /// `dbeta_j`, exact.
    pub fn beta(&self) -> Vec<Approx> {
        self.beta.iter().cloned().map(Approx::exact).collect()
    }

    /// `sum_r |dy_rj|` for every column.
    pub fn beta_magnitude(&self) -> &[Dyadic] {
        &self.beta_abs
    }
}

/// `|computed - exact| / (F::EPSILON * max(1, scale))`; infinite for a non-finite `computed`.
///
/// With `scale = |exact|` this is the forward unit (`exact::forward_units`). For a sum over rows
/// the tests pass the sum of the magnitudes of its terms: a sum that cancels is only determined
/// to a few units of that (each term carries rounding errors relative to itself), so the
/// error is measured in units of `EPSILON * max(1, sum of |terms|)`.
pub fn sum_units(computed: f64, exact: &Approx, scale: &Dyadic, format: Format) -> f64 {
    if !computed.is_finite() {
        return f64::INFINITY;
    }
    let diff = Dyadic::from_f64(computed).sub(&exact.approx).abs();
    if diff.is_zero() {
        return 0.0;
    }
    let one = Dyadic::pow2(0);
    let scale = if scale.abs().cmp_value(&one).is_gt() {
        scale.abs()
    } else {
        one
    };
    // diff / (2^(1-p) * scale), rounded once to f64.
    quotient_f64(
        &diff,
        &Dyadic {
            mant: scale.mant,
            exp: scale.exp + 1 - format.precision(),
        },
    )
}

/// `a / b` (`b > 0`) rounded to the nearest `f64`, without reducing the fraction.
fn quotient_f64(a: &Dyadic, b: &Dyadic) -> f64 {
    let shift = a.exp - b.exp;
    let q = if shift >= 0 {
        BigRational::new_raw(&a.mant << shift, b.mant.clone())
    } else {
        BigRational::new_raw(a.mant.clone(), &b.mant << -shift)
    };
    q.to_f64().expect("finite ratio")
}

/// `sum(values) / n` for exact values, rounded once to `f64`.
fn mean_f64(values: impl Iterator<Item = Dyadic>, n: usize) -> f64 {
    let sum = values.fold(Dyadic::zero(), |acc, v| acc.add(&v));
    let n = Dyadic {
        mant: BigInt::from(n),
        exp: 0,
    };
    quotient_f64(&sum, &n)
}

/// Per-row quantities for error bounds and reports: nearest `f64`s of exact values (except
/// `xhat`, the forward reference's approximation).
#[derive(Clone, Debug)]
pub struct RowTerms {
    /// `xhat_i` from [`ExactRow::normalized`], and its nearest `f64`.
    pub xhat: Vec<Approx>,
    pub xhat_f64: Vec<f64>,
    /// `g_i = dy_i * gamma_i`.
    pub g: Vec<f64>,
    /// `s = sqrt(var + eps)` (0 for a constant row with `eps == 0`).
    pub s: f64,
    /// `B = mean(g)` and `A = mean(g * xhat)`.
    pub mean_g: f64,
    pub mean_gx: f64,
    /// `mean(|g|)` and `mean(|g * xhat|)`.
    pub mean_abs_g: f64,
    pub mean_abs_gx: f64,
}

impl RowTerms {
    /// The quantities of row `x` with output gradient `dy` (arguments as [`input_gradient`]).
    pub fn new(x: &[f64], dy: &[f64], gamma: Option<&[f64]>, eps: f64) -> RowTerms {
        let n = x.len();
        assert_eq!(dy.len(), n, "dy has another length");
        let row = ExactRow::new(x);
        let xhat = row.normalized(eps);
        let g: Vec<Dyadic> = match gamma {
            Some(gamma) => dy
                .iter()
                .zip(gamma)
                .map(|(&d, &w)| Dyadic::from_f64(d).mul(&Dyadic::from_f64(w)))
                .collect(),
            None => dy.iter().map(|&d| Dyadic::from_f64(d)).collect(),
        };
        let gx = || g.iter().zip(&xhat).map(|(g, y)| g.mul(&y.approx));
        let var_eps = row.var() + Dyadic::from_f64(eps).to_rational();
        RowTerms {
            s: var_eps.to_f64().expect("finite variance").sqrt(),
            mean_g: mean_f64(g.iter().cloned(), n),
            mean_gx: mean_f64(gx(), n),
            mean_abs_g: mean_f64(g.iter().map(Dyadic::abs), n),
            mean_abs_gx: mean_f64(gx().map(|v| v.abs()), n),
            g: g.iter().map(Dyadic::to_f64).collect(),
            xhat_f64: xhat.iter().map(Approx::to_f64).collect(),
            xhat,
        }
    }

    /// `T_i = (|g_i| + mean|g| + |xhat_i| mean|g xhat|) / s`: the sum of the magnitudes of the
    /// terms of `dx_i` (0 when `s == 0`). Each term is known to an evaluation in working
    /// precision only to a few roundings of itself (`g_i = dy_i * gamma_i` is rounded, `xhat` is
    /// a rounded quotient), so where they cancel, `dx_i` is only determined to a few units of
    /// `EPSILON * T_i`: the scale of an error that is due to cancellation alone.
    pub fn terms(&self, i: usize) -> f64 {
        if self.s == 0.0 {
            return 0.0;
        }
        let xhat = self.xhat_f64[i];
        (self.g[i].abs() + self.mean_abs_g + xhat.abs() * self.mean_abs_gx) / self.s
    }

    /// A bound on `|dx'_i - dx_i|` when `dx'` is computed exactly from perturbed statistics:
    /// normalized values `xhat'_k = (xhat_k - c_k)(1 + rho_k)` with `|c_k| <= c` (a mean off by
    /// `delta`, `c_k = delta / s`) and `1/s` replaced by `(1/s)(1 + rho_k)` with `|rho_k| <= rho`
    /// (the same `c_k`, `rho_k` for the whole row). With `A = mean(g xhat)`, `B = mean(g)`:
    ///
    /// ```text
    /// A'   = (A - c_k B)(1 + rho_k)
    /// dx'_i = (g_i - B - xhat'_i A') (1 + rho_k) / s
    /// dx'_i - dx_i = rho_k dx_i + [ -xhat_i A (2 rho_k + rho_k^2)
    ///                               + (c_k (A + xhat_i B) - c_k^2 B) (1 + rho_k)^2 ] (1 + rho_k) / s
    /// ```
    ///
    /// hence, with no first-order truncation (for `f32` statistics `c` reaches `1e-3`):
    ///
    /// ```text
    /// |dx'_i - dx_i| <= rho |dx_i| + (1 + rho) / s * [ |xhat_i A| (2 rho + rho^2)
    ///                                 + (c (|A| + |xhat_i| |B|) + c^2 |B|) (1 + rho)^2 ]
    /// ```
    ///
    /// `dx` is the (nearest `f64` of the) exact `dx_i`. Returns 0 when `s == 0` (`dx` and `xhat`
    /// are defined as 0). Evaluated in `f64` from the nearest `f64`s of exact values: callers
    /// allow a relative `1e-9` for that.
    pub fn perturbed_stats_error(&self, i: usize, dx: f64, c: f64, rho: f64) -> f64 {
        if self.s == 0.0 {
            return 0.0;
        }
        let xhat = self.xhat_f64[i].abs();
        let (a, b) = (self.mean_gx.abs(), self.mean_g.abs());
        let r1 = 1.0 + rho;
        rho * dx.abs()
            + r1 / self.s
                * (xhat * a * (2.0 * rho + rho * rho) + (c * (a + xhat * b) + c * c * b) * r1 * r1)
    }
}
