//! Exact reference for layer normalization, for accuracy tests only.
//!
//! Written independently of the library: it shares no code with `src/` and uses
//! no floating-point arithmetic on the data.
//!
//! # Method
//!
//! Every finite `f64` (and so every `f32`) is a dyadic rational `m * 2^e`. For a
//! row `x_0 .. x_{n-1}` let `e` be the smallest exponent in the row; then
//! `x_i = X_i * 2^e` with integers `X_i`. With `S = sum X_i` and
//! `W = n * sum X_i^2 - S^2 >= 0`, all statistics are exact rationals:
//!
//! ```text
//! mean      = S * 2^e / n
//! var       = W * 2^(2e) / n^2                  (biased: divides by n)
//! d_i       = x_i - mean = D_i * 2^e / n,       D_i = n * X_i - S
//! y_i^2     = d_i^2 / (var + eps) = D_i^2 / (W + eps * n^2 * 2^(-2e))
//! ```
//!
//! So `y_i = D_i * rho` with one irrational factor per row,
//! `rho = 2^e / (n * sqrt(var + eps))`, whose square `1 / (W + eps * n^2 * 2^(-2e))`
//! is a ratio of integers (after multiplying both by a power of two to clear the
//! exponent of `eps`). `rho` is approximated by `s * 2^-k` with
//! `s = isqrt(floor(rho^2 * 2^(2k))) = floor(rho * 2^k)` and `k` chosen so that
//! `s >= 2^140`; then `y_i` is approximated by the exact product `D_i * s * 2^-k`,
//! with error below `|D_i| * 2^-k`, i.e. relative error below `2^-140`. As
//! `|y_i| <= sqrt(n - 1)`, the absolute error is below `2^-130` for any row of up
//! to `2^20` elements: far below an `f64` ulp of `max(1, |y_i|)` (the unit of the
//! error measure), so the reference error is negligible (< 2^-78 units). When
//! `rho` is dyadic (`s^2` times the denominator is exact), so is every `y_i` (for
//! example `+-1` for any row of two distinct values with `eps = 0`).
//!
//! Degenerate rows: `D_i = 0` gives `y_i = 0` exactly; when `var + eps == 0`
//! (a constant row with `eps = 0`) every `y_i` is defined as 0 (0/0 := 0).
//! The affine output `z_i = y_i * gamma_i + beta_i` is formed exactly from the
//! approximation of `y_i`, so its error bound is that of `y_i` times `|gamma_i|`.
//!
//! # Error units
//!
//! * [`forward_units`]: `|computed - exact| / (F::EPSILON * max(1, |exact|))`,
//!   where `F::EPSILON = 2^(1-p)` is the ulp of 1 (2^-23 for `f32`, 2^-52 for `f64`).
//! * [`ulp_units`]: `|computed - exact| / ulp_F(exact)`, where `ulp_F(v)` is the
//!   spacing of `F` numbers in the binade of `v` (the subnormal spacing below the
//!   normal range). A correctly rounded result has error `<= 0.5`.
//!
//! Differences are computed exactly and converted to `f64` only at the end.

use std::cmp::Ordering;

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Signed, ToPrimitive, Zero};

/// `rho` (see the module doc) is approximated to at least this many significant bits.
const RHO_BITS: i64 = 140;

/// A binary floating-point format, for error units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    F32,
    F64,
}

impl Format {
    /// Significand precision `p` in bits (24 or 53).
    pub fn precision(self) -> i64 {
        match self {
            Format::F32 => 24,
            Format::F64 => 53,
        }
    }

    /// Exponent of the smallest positive normal number (-126 or -1022).
    pub fn min_exp(self) -> i64 {
        match self {
            Format::F32 => -126,
            Format::F64 => -1022,
        }
    }

    /// `F::EPSILON = 2^(1-p)`, the ulp of 1.
    pub fn epsilon(self) -> f64 {
        match self {
            Format::F32 => f64::from(f32::EPSILON),
            Format::F64 => f64::EPSILON,
        }
    }

    /// The format's name, `"f32"` or `"f64"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::F32 => "f32",
            Format::F64 => "f64",
        }
    }
}

/// The exact value `mant * 2^exp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dyadic {
    pub mant: BigInt,
    pub exp: i64,
}

impl Dyadic {
    pub fn zero() -> Dyadic {
        Dyadic {
            mant: BigInt::zero(),
            exp: 0,
        }
    }

    /// `2^exp`.
    pub fn pow2(exp: i64) -> Dyadic {
        Dyadic {
            mant: BigInt::from(1u8),
            exp,
        }
    }

    /// The exact value of a finite `f64`, decoded from its bits.
    pub fn from_f64(x: f64) -> Dyadic {
        assert!(x.is_finite(), "non-finite value {x}");
        let bits = x.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i64;
        let fraction = bits & ((1u64 << 52) - 1);
        let (m, exp) = if biased == 0 {
            (fraction, -1074) // zero or subnormal
        } else {
            (fraction | (1u64 << 52), biased - 1075)
        };
        let mant = if bits >> 63 == 1 {
            -BigInt::from(m)
        } else {
            BigInt::from(m)
        };
        Dyadic { mant, exp }
    }

    pub fn is_zero(&self) -> bool {
        self.mant.is_zero()
    }

    pub fn abs(&self) -> Dyadic {
        Dyadic {
            mant: self.mant.abs(),
            exp: self.exp,
        }
    }

    /// Both mantissas at the common (smaller) exponent.
    fn aligned(&self, other: &Dyadic) -> (BigInt, BigInt, i64) {
        let exp = self.exp.min(other.exp);
        (
            &self.mant << (self.exp - exp),
            &other.mant << (other.exp - exp),
            exp,
        )
    }

    pub fn add(&self, other: &Dyadic) -> Dyadic {
        let (a, b, exp) = self.aligned(other);
        Dyadic { mant: a + b, exp }
    }

    pub fn sub(&self, other: &Dyadic) -> Dyadic {
        let (a, b, exp) = self.aligned(other);
        Dyadic { mant: a - b, exp }
    }

    pub fn mul(&self, other: &Dyadic) -> Dyadic {
        Dyadic {
            mant: &self.mant * &other.mant,
            exp: self.exp + other.exp,
        }
    }

    pub fn cmp_value(&self, other: &Dyadic) -> Ordering {
        let (a, b, _) = self.aligned(other);
        a.cmp(&b)
    }

    pub fn to_rational(&self) -> BigRational {
        ratio(&self.mant, self.exp, &BigInt::from(1u8), 0)
    }

    /// The nearest `f64` (for display and for cheap tolerance arithmetic).
    pub fn to_f64(&self) -> f64 {
        ratio_to_f64(&self.mant, self.exp, &BigInt::from(1u8), 0)
    }
}

/// `(a * 2^ea) / (b * 2^eb)` as an unreduced rational (`b > 0`).
fn ratio(a: &BigInt, ea: i64, b: &BigInt, eb: i64) -> BigRational {
    let shift = ea - eb;
    if shift >= 0 {
        BigRational::new_raw(a << shift, b.clone())
    } else {
        BigRational::new_raw(a.clone(), b << -shift)
    }
}

/// `(a * 2^ea) / (b * 2^eb)` rounded to the nearest `f64` (`b > 0`).
fn ratio_to_f64(a: &BigInt, ea: i64, b: &BigInt, eb: i64) -> f64 {
    ratio(a, ea, b, eb).to_f64().expect("ratio converts to f64")
}

/// A real number `v` with `|v - approx| < err` (`err == 0`: `v == approx` exactly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approx {
    pub approx: Dyadic,
    pub err: Dyadic,
}

impl Approx {
    pub fn exact(value: Dyadic) -> Approx {
        Approx {
            approx: value,
            err: Dyadic::zero(),
        }
    }

    pub fn is_exact(&self) -> bool {
        self.err.is_zero()
    }

    /// `self * gamma + beta`, exact up to the scaled error bound `err * |gamma|`.
    pub fn affine(&self, gamma: f64, beta: f64) -> Approx {
        let g = Dyadic::from_f64(gamma);
        Approx {
            approx: self.approx.mul(&g).add(&Dyadic::from_f64(beta)),
            err: self.err.mul(&g.abs()),
        }
    }

    /// The nearest `f64` to the approximation (for display / tolerances).
    pub fn to_f64(&self) -> f64 {
        self.approx.to_f64()
    }
}

/// Exact statistics of one row, kept in scaled-integer form (see the module doc).
#[derive(Clone, Debug)]
pub struct ExactRow {
    /// `x_i = xs[i] * 2^exp`.
    xs: Vec<BigInt>,
    exp: i64,
    /// `S = sum X_i`.
    sum: BigInt,
    /// `W = n * sum X_i^2 - S^2 = n^2 * var * 2^(-2 exp)`.
    w: BigInt,
}

impl ExactRow {
    /// Exact statistics of a non-empty row of finite values (`f32` rows: convert
    /// with `f64::from`, which is exact).
    pub fn new(row: &[f64]) -> ExactRow {
        assert!(!row.is_empty(), "empty row");
        let values: Vec<Dyadic> = row.iter().map(|&v| Dyadic::from_f64(v)).collect();
        let exp = values.iter().map(|d| d.exp).min().unwrap();
        let xs: Vec<BigInt> = values
            .into_iter()
            .map(|d| d.mant << (d.exp - exp))
            .collect();
        let sum: BigInt = xs.iter().sum();
        let sum_sq: BigInt = xs.iter().map(|x| x * x).sum();
        let w = BigInt::from(xs.len()) * sum_sq - &sum * &sum;
        debug_assert!(!w.is_negative());
        ExactRow { xs, exp, sum, w }
    }

    pub fn len(&self) -> usize {
        self.xs.len()
    }

    fn n(&self) -> BigInt {
        BigInt::from(self.xs.len())
    }

    /// The exact mean `sum(x) / n`.
    pub fn mean(&self) -> BigRational {
        ratio(&self.sum, self.exp, &self.n(), 0).reduced()
    }

    /// The exact biased variance `sum((x - mean)^2) / n`.
    pub fn var(&self) -> BigRational {
        let n = self.n();
        ratio(&self.w, 2 * self.exp, &(&n * &n), 0).reduced()
    }

    /// The exact value of `var + eps` is zero (constant row, `eps == 0`).
    fn var_eps_is_zero(&self, eps: f64) -> bool {
        self.w.is_zero() && eps == 0.0
    }

    /// `rho = 2^exp / (n * sqrt(var + eps))` as `(s, k, exact)`: `s = floor(rho * 2^k)` with at
    /// least [`RHO_BITS`] bits, and `exact` when `rho == s * 2^-k`. `None` when `var + eps == 0`.
    fn rho(&self, eps: f64) -> Option<(BigInt, i64, bool)> {
        assert!(eps >= 0.0 && eps.is_finite(), "eps must be finite and >= 0");
        if self.var_eps_is_zero(eps) {
            return None;
        }
        let n = self.n();
        // rho^2 = 1 / (W + eps * n^2 * 2^(-2 exp)) = 2^num_shift / den.
        let eps = Dyadic::from_f64(eps);
        let (den, num_shift) = if eps.is_zero() {
            (self.w.clone(), 0)
        } else {
            let t = eps.exp - 2 * self.exp;
            let eps_n2 = &eps.mant * &n * &n;
            if t >= 0 {
                (&self.w + (eps_n2 << t), 0)
            } else {
                ((&self.w << -t) + eps_n2, -t)
            }
        };
        debug_assert!(den.is_positive());
        // rho^2 = 2^num_shift / den. Pick k with rho^2 * 2^(2k) >= 2^(2 * RHO_BITS): since
        // rho^2 > 2^(num_shift - bits(den)), 2k >= 2 * RHO_BITS + bits(den) - num_shift will do.
        let k = (2 * RHO_BITS + den.bits() as i64 - num_shift + 1).div_euclid(2);
        let shifted = BigInt::from(1u8) << (num_shift + 2 * k);
        // floor(sqrt(floor(rho^2 * 2^(2k)))) = floor(rho * 2^k)
        let s = (&shifted / &den).sqrt();
        debug_assert!(s.bits() as i64 > RHO_BITS);
        let exact = &s * &s * &den == shifted; // rho == s * 2^-k
        Some((s, k, exact))
    }

    /// `y_i = (x_i - mean) / sqrt(var + eps)` for every element, each within
    /// `|y_i| * 2^-140` (so within `2^-130` for rows of up to `2^20` elements);
    /// exact when it is 0, and whenever `rho` is dyadic.
    pub fn normalized(&self, eps: f64) -> Vec<Approx> {
        let Some((s, k, exact)) = self.rho(eps) else {
            return vec![Approx::exact(Dyadic::zero()); self.len()];
        };
        let n = self.n();
        self.xs
            .iter()
            .map(|x| {
                let d = &n * x - &self.sum;
                let err = if exact || d.is_zero() {
                    Dyadic::zero()
                } else {
                    Dyadic {
                        mant: d.abs(),
                        exp: -k,
                    }
                };
                Approx {
                    approx: Dyadic {
                        mant: d * &s,
                        exp: -k,
                    },
                    err,
                }
            })
            .collect()
    }

    /// `rstd = 1 / sqrt(var + eps) = rho * n * 2^-exp`, within `rstd * 2^-140`; `None` when
    /// `var + eps == 0` (the library reports `+inf`).
    pub fn rstd(&self, eps: f64) -> Option<Approx> {
        let (s, k, exact) = self.rho(eps)?;
        let n = self.n();
        let exp = -k - self.exp;
        let err = if exact {
            Dyadic::zero()
        } else {
            Dyadic {
                mant: n.clone(),
                exp,
            }
        };
        Some(Approx {
            approx: Dyadic { mant: n * s, exp },
            err,
        })
    }

    /// `z_i = y_i * gamma_i + beta_i` (missing gamma: ones; missing beta: zeros).
    pub fn forward(&self, eps: f64, gamma: Option<&[f64]>, beta: Option<&[f64]>) -> Vec<Approx> {
        let mut y = self.normalized(eps);
        if gamma.is_none() && beta.is_none() {
            return y;
        }
        for (i, yi) in y.iter_mut().enumerate() {
            let g = gamma.map_or(1.0, |g| g[i]);
            let b = beta.map_or(0.0, |b| b[i]);
            *yi = yi.affine(g, b);
        }
        y
    }
}

/// `|computed - exact| / (F::EPSILON * max(1, |exact|))`; infinite for a
/// non-finite `computed`. The reference's own error (`exact.err`, at most
/// `2^-130 * max(1, |gamma|)`) is negligible and not included.
pub fn forward_units(computed: f64, exact: &Approx, format: Format) -> f64 {
    if !computed.is_finite() {
        return f64::INFINITY;
    }
    let diff = Dyadic::from_f64(computed).sub(&exact.approx).abs();
    if diff.is_zero() {
        return 0.0;
    }
    let magnitude = exact.approx.abs();
    let scale = if magnitude.cmp_value(&Dyadic::pow2(0)) == Ordering::Greater {
        magnitude
    } else {
        Dyadic::pow2(0)
    };
    // unit = 2^(1-p) * scale
    ratio_to_f64(
        &diff.mant,
        diff.exp,
        &scale.mant,
        scale.exp + 1 - format.precision(),
    )
}

/// `floor(log2(v))` for a rational `v > 0`.
fn floor_log2(v: &BigRational) -> i64 {
    let (a, b) = (v.numer().abs(), v.denom().abs());
    let t = a.bits() as i64 - b.bits() as i64; // 2^(t-1) < a/b < 2^(t+1)
    let at_least_2t = if t >= 0 {
        a >= (b << t)
    } else {
        (a << -t) >= b
    };
    if at_least_2t {
        t
    } else {
        t - 1
    }
}

/// Exponent of `ulp_F(v)`: the spacing of format `F` numbers in the binade of `v`
/// (subnormal spacing for `|v|` below the normal range, including 0).
pub fn ulp_exp(v: &BigRational, format: Format) -> i64 {
    let binade = if v.is_zero() {
        format.min_exp()
    } else {
        floor_log2(&v.abs()).max(format.min_exp())
    };
    binade + 1 - format.precision()
}

/// `|computed - exact| / ulp_F(exact)`: at most 0.5 when `computed` is `exact`
/// correctly rounded to `F`. Infinite for a non-finite `computed`.
pub fn ulp_units(computed: f64, exact: &BigRational, format: Format) -> f64 {
    if !computed.is_finite() {
        return f64::INFINITY;
    }
    let diff = (Dyadic::from_f64(computed).to_rational() - exact).abs();
    let e = ulp_exp(exact, format);
    let scaled = if e >= 0 {
        diff / BigRational::from(BigInt::from(1u8) << e)
    } else {
        diff * BigRational::from(BigInt::from(1u8) << -e)
    };
    scaled.to_f64().expect("finite ratio")
}

/// The largest change of any `y_i`, in units of `F::EPSILON * max(1, |y_i|)`, caused by
/// rounding the mean alone: normalizing with a mean off by `|delta| <= 0.5 ulp_F(mean)` (a
/// correctly rounded mean) and with the variance of the shifted differences, `var + delta^2`.
///
/// With `V = var + eps` and `s = |delta| / sqrt(V)`:
///
/// ```text
/// |(d - delta) / sqrt(V + delta^2) - d / sqrt(V)|
///     <= |delta| / sqrt(V) + |d / sqrt(V)| * (1 - 1 / sqrt(1 + delta^2 / V))
///     <= s + |y| * s^2 / 2
/// ```
///
/// which in units is at most `S + S^2 * F::EPSILON / 2` with `S = s / F::EPSILON`; that is the
/// value returned (0 when `V == 0`, where `y` is defined as 0). `S` is at most
/// `(u * |mean| / sqrt(V)) / F::EPSILON` with `u = F::EPSILON / 2`.
pub fn mean_rounding_units(mean: &BigRational, var: &BigRational, eps: f64, format: Format) -> f64 {
    let v = var + Dyadic::from_f64(eps).to_rational();
    if v.is_zero() {
        return 0.0;
    }
    // S^2 = (0.5 ulp(mean) / EPSILON)^2 / V = 2^(2 * (ulp_exp - 1 - (1 - p))) / V
    let half_ulp_in_eps = ulp_exp(mean, format) - 2 + format.precision();
    let s2 = Dyadic::pow2(2 * half_ulp_in_eps).to_rational() / v;
    let s = s2.to_f64().expect("finite ratio").sqrt();
    s + s * s * format.epsilon() / 2.0
}

/// The exact value of `sum(fl(fl(x_i - m)^2)) / n` with `m` the exact mean rounded to `f64`
/// (round to nearest, by `num-rational`): the variance as the contract defines it for `f64`
/// input (the deviations and their squares each rounded once), before its final rounding.
pub fn spec_var_f64(values: &[f64], mean: &BigRational) -> BigRational {
    let m = mean.to_f64().expect("finite mean");
    let sum = values.iter().fold(Dyadic::zero(), |acc, &x| {
        let d = x - m;
        acc.add(&Dyadic::from_f64(d * d))
    });
    sum.to_rational() / BigRational::from(BigInt::from(values.len()))
}

// ----------------------------------------------------------------------------------------------
// Checks of the references themselves, shared by the accuracy tests.

/// The exact rational `n / d`.
pub fn rat(n: i64, d: i64) -> BigRational {
    BigRational::new(BigInt::from(n), BigInt::from(d))
}

/// `a` brackets the real number `v` with `v^2 = v2` and the sign `negative`:
/// `|approx| <= |v| < |approx| + err` (the references truncate toward zero), with
/// `err <= 2^-bits |v|`. Checked with squares in exact arithmetic.
pub fn assert_brackets_sqrt(a: &Approx, v2: &BigRational, negative: bool, bits: i64) {
    let approx = a.approx.to_rational();
    let err = a.err.to_rational();
    assert_eq!(approx < BigRational::zero(), negative, "sign of {a:?}");
    let lo = if negative { -approx } else { approx };
    let hi = &lo + &err;
    assert!(
        &lo * &lo <= *v2 && *v2 < &hi * &hi,
        "{a:?} does not bracket sqrt({v2})"
    );
    let bound = Dyadic::pow2(-bits).to_rational();
    assert!(&err * &err <= &bound * &bound * v2, "error bound too large");
}

/// `|a.approx - v| <= a.err <= 2^-130 max(1, |v|)`.
pub fn within(a: &Approx, v: f64) -> bool {
    let v = Dyadic::from_f64(v);
    let scale = if v.abs().cmp_value(&Dyadic::pow2(0)).is_gt() {
        v.abs()
    } else {
        Dyadic::pow2(0)
    };
    a.approx.sub(&v).abs().cmp_value(&a.err).is_le()
        && a.err.cmp_value(&scale.mul(&Dyadic::pow2(-130))).is_le()
}

/// `a` is exactly `v`, and marked exact.
pub fn exactly(a: &Approx, v: f64) -> bool {
    a.is_exact() && a.approx.cmp_value(&Dyadic::from_f64(v)).is_eq()
}

/// The exact gradient `dx` of a row agrees with the central differences of the exact `loss`,
/// `(loss(x + h e_j) - loss(x - h e_j)) / 2h` with `h = 2^-30` (the differences are exact; only
/// the final conversion to `f64` rounds), within `1e-9 * max(1, |dx_j|)`: the truncation error of
/// the difference quotient, `O(h^2)` times the third derivative.
pub fn assert_central_differences(
    x: &[f64],
    dx: &[Approx],
    loss: impl Fn(&[f64]) -> Dyadic,
    context: &str,
) {
    let h = 2f64.powi(-30);
    for j in 0..x.len() {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[j] += h;
        xm[j] -= h;
        let diff = loss(&xp).sub(&loss(&xm));
        let fd = Dyadic {
            mant: diff.mant,
            exp: diff.exp + 29, // / (2h) = * 2^29
        }
        .to_f64();
        let want = dx[j].to_f64();
        assert!(
            (fd - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{context}, j = {j}: fd {fd} vs {want}, x = {x:?}"
        );
    }
}
