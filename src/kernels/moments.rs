//! Per-row statistics: the mean, the biased variance, and how to normalize the row.
//!
//! The fast path is three steps, each a compensated sum over a cache-resident row:
//! 1. `mean = fl(sum(x) / n)`, rounded once, and `mean_lo`, what `mean` leaves out of the exact
//!    mean `M` (`mean + mean_lo` is `M` to about 106 bits);
//! 2. `d_i = fl(x_i - mean)` and `var = fl(sum(fl(d_i * d_i)) / n)`, rounded once (with its low
//!    part `var_lo`);
//! 3. `s = fl(sqrt(fl(var + eps)))`, and the row is written as `y_i = fl(d_i / s)`.
//!
//! `mean` and `var` are what [`crate::moments()`] returns: the mean correctly rounded, and the
//! variance about that rounded mean, as the contract defines it.
//!
//! # Offset rows
//!
//! Rounding the mean moves it by `delta = mean - M`, `|delta| <= ulp(mean) / 2 <= u |M|`
//! (`u = 2^-53`). Step 3 then shifts every output by `delta / s`: in units of
//! `f64::EPSILON * max(1, |y|)`, at most `|M| / (2 std)`, so at most half a unit where
//! `|mean| <= std`, but up to `2^28 = 2.7e8` units at mean `1e9` and std 1. And `var`, taken
//! about the rounded mean, exceeds the variance by `delta^2`, which moves `rstd` by
//! `delta^2 / (2 (var + eps))`, relative. So `f64` rows with `mean^2 > var` (LayerNorm only;
//! RMSNorm has no mean) replace step 3 by
//!
//! 3'. `V = var + var_lo - mean_lo^2 + eps` in double-double: the variance about the exact
//!     mean plus `eps`, since `sum((x_i - mean)^2) / n = var_M + (M - mean)^2` and
//!     `mean_lo = M - mean`; `r = 1 / sqrt(V)`, one Newton step in double-double from
//!     `fl(1 / fl(sqrt(V)))`, correctly rounded up to `2^-47` ulp (`rsqrt_dd`); the row is
//!     written as `y_i = fl(fl(d_i - mean_lo) * r)`, and `rstd = r`.
//!
//! Every other row keeps steps 1 to 3 exactly as they were before step 3' existed, and so its
//! bits: `f64` rows with `|mean| <= std` (the seed walkthrough's rows among them), constant and
//! one-element rows (exactly 0, below), RMSNorm rows, and every `f32` row. (`f32` rows of this
//! exact path subtract `mean_lo` in step 3 too, `y_i = fl((d_i - mean_lo) / s)`: their mean's
//! low part can be the whole of a small output, and their `f64` variance is far more precise
//! than `f32` needs.) The choice is made on `mean` and `var`, the same values on every path, so
//! the batched short rows ([`short_rows_stats`]) make it as [`row_stats`] does.
//!
//! # The error of an `f64` offset row
//!
//! With `y_i = (x_i - M) / sqrt(V)` exact and `u = 2^-53`, to first order in `u`:
//!
//! * `d_i = fl(x_i - mean)` is exact where `x_i` lies within a factor of 2 of `mean`
//!   (Sterbenz), as on every element of a row with `|mean| >> std`; elsewhere it adds
//!   `u |x_i - mean| / sqrt(V) <= u |y_i| (1 + 2u)` (such an `x_i` is at least `|mean| / 2`
//!   from `mean`, so `|delta| <= 2u |x_i - mean|`).
//! * `mean_lo` is `M - mean` but for the error of the compensated sum, at most about
//!   `n^2 u^2 mean(|x|)` (Ogita, Rump and Oishi's bound for a sequential sum; the 64-lane sums of
//!   long rows have `ceil(n / 64) + 14` in place of `n`), a shift of that over `sqrt(V)`:
//!   `0.23` units at `n = 64`, `|mean| / std = 1e12`, and 0 whenever the partial sums' errors are
//!   exact, as on rows whose values share one binade (the tested offset rows).
//! * `fl(d_i - mean_lo)` and the product each round once: `u |y_i|` each.
//! * `r`: the squares `fl(d_i^2)` each round once and the sum is compensated, so
//!   `var + var_lo` and `V` are within `u` of their exact values, relative (`3u` where
//!   deviations round); `r` within `u/2` of `1 / sqrt(V)` from that and within half an ulp,
//!   at most `u`, from its rounding: `1.5 u`, relative.
//!
//! Altogether `3.5 u |y_i|`, i.e. `1.75` units of `f64::EPSILON * max(1, |y_i|)` (`2.75` where
//! deviations round), plus the `mean_lo` term, against the 2 units the tests assert on every
//! row; they measure at most 1.27. The `r` the row is written with is within `0.5 + 0.5` ulp
//! of `1 / sqrt(V)` (rounding, and `u/2` relative from the squares, at most half an ulp) plus
//! `2^-47` ulp. Centred rows keep the bound they had: `delta / s` at most half a unit, and the
//! roundings of steps 2 and 3 (`fl(1 / s)`, their `rstd` field, rounds three times after the
//! variance: up to 2.1 ulp measured). Neither is the `rstd` a caller saves (next section).
//!
//! # Saved `rstd`
//!
//! The `rstd` that `forward_with_stats` returns (LayerNorm and RMSNorm) is computed only there,
//! when the kernels hand a row's statistics to the caller (`Row::stats` calls
//! [`RowStats::recorded_rstd`]), so that `forward` pays nothing for it and no row is written
//! differently. `f32` rows save the `rstd` they are written with, narrowed to `f32` (correctly
//! rounded: see `super::fast`). `f64` rows save `1 / sqrt(V)`, `V` the variance about the exact
//! mean plus `eps`, from one more pass over the (cache-resident) row: with `d_i = fl(x_i - mean)`
//! the deviations of step 2, `e_i` the exact error of that subtraction (TwoSum) and `q_i` the
//! exact error of `fl(d_i^2)` (Dekker's square, without a fused multiply-add),
//!
//! ```text
//! n (V - eps) = sum fl(d_i^2) + sum (q_i + e_i (2 d_i + e_i)) - n mean_lo^2,
//! ```
//!
//! since `sum(x_i - mean) = n mean_lo`. The first sum is `n (var + var_lo)`, already known; the
//! second is a plain sum in 8 fixed lanes (RMSNorm: `mean = mean_lo = 0`, `e_i = 0`). To first
//! order, with `u = 2^-53`:
//!
//! * the compensated sum of squares and `div_by_len_dd` leave a relative error of order `n u^2`;
//! * the corrections are below `3 u d_i^2` each, so their rounding and their plain sum add at
//!   most about `(n / 8 + 3) 3 u^2` of `V`, relative;
//! * `mean_lo`, off by `err` (see "The error of an `f64` offset row"), moves `V` by
//!   `2 |mean_lo| err` at most: a relative `2 u |mean| err / var`, third order in `u`, 0 where
//!   the mean's partial sums are exact;
//! * [`rsqrt_dd`] rounds `1 / sqrt(V)` within `0.5 + 2^-47` ulp.
//!
//! So the saved `rstd` is within `0.5 + 2^-20` ulp of the exact `1 / sqrt(var + eps)` for rows
//! of up to `2^30` elements, plus the `mean_lo` term on offset rows (correctly rounded but for
//! values that close to a tie): measured at most 0.5000 ulp on centred, offset and RMSNorm rows
//! (`tests/accuracy.rs`; it was up to 2.1 ulp on centred and RMSNorm rows, and 1.17 on random
//! short rows with `|mean| > std`, with `fl(1 / s)` and `r`). Rows of the slow path (below) redo
//! it with the same refinement in the scaled coordinates (`rstd` scaled back exactly); constant
//! rows save [`rsqrt_dd`]`(eps)` (`+inf` for `eps == 0`). Only where `var + eps` overflows
//! (`eps` near `f64::MAX`) is it `1 / sqrt_sum(var, eps)`, three roundings.
//!
//! # The slow path
//!
//! A rare slow path keeps the statistics in range: a sum of finite values that overflows, and a
//! sum of squares that overflows or underflows (values near `1e300` or `1e-300`, or a constant
//! row), are recomputed on the row scaled by a power of two, which is exact. Offset rows there
//! take step 3' in the scaled coordinates (`rstd` is then `r` scaled back, exactly).

use super::sum::{accumulate, compensated_sum, div_by_len, div_by_len_dd, two_sum, SHORT};
use crate::float::Float;

/// A sum of squares in `[TINY, HUGE]` is safe: nothing overflowed, and whatever underflowed
/// (at most `n * 2^-1075`) is negligible next to it.
const TINY: f64 = f64::from_bits((1023 - 900) << 52); // 2^-900
const HUGE: f64 = f64::from_bits((1023 + 1000) << 52); // 2^1000

/// `2^k` for `-1022 <= k <= 1023`.
#[inline]
pub(crate) fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// The binary exponent `e` of a finite, positive `v`: `2^e <= v < 2^(e+1)`.
pub(crate) fn exponent(v: f64) -> i32 {
    debug_assert!(v > 0.0 && v.is_finite());
    let biased = ((v.to_bits() >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first (exact).
        exponent(v * pow2(64)) - 64
    } else {
        biased - 1023
    }
}

/// How a row is written: `y_i = (((x_i * scale - shift) - shift_lo) / den) * post`.
///
/// On the fast path `scale = post = 1` and `shift` is the mean, so this is exactly
/// `(x_i - mean) / s`; offset rows (see the module doc) have `den = 1` and `post = rstd`, so
/// that they are written as `((x_i - mean) - mean_lo) * rstd`. The slow path works on the row
/// scaled by `scale = 2^k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    scale: f64,
    shift: f64,
    /// What `shift` leaves out of the mean, subtracted too: on `f32` rows (their mean's low part
    /// can be the whole of a small output) and on `f64` offset rows; 0 on other `f64` rows,
    /// whose bits it would move.
    shift_lo: f64,
    den: f64,
    post: f64,
}

impl Plan {
    /// The normalized value of one element, before gamma and beta.
    #[inline(always)]
    pub(crate) fn apply(&self, x: f64) -> f64 {
        (((x * self.scale - self.shift) - self.shift_lo) / self.den) * self.post
    }

    /// The plan of a row whose outputs are all NaN.
    fn nan() -> Self {
        Plan {
            scale: f64::NAN,
            shift: f64::NAN,
            shift_lo: 0.0,
            den: 1.0,
            post: 1.0,
        }
    }
}

/// The statistics of one row, in `f64`, and the plan to normalize it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    /// The mean, correctly rounded.
    pub(crate) mean: f64,
    /// What `mean` leaves out of the exact mean (0 where unknown: only on the rescaling slow
    /// path, which `f32` input reaches only for constant rows, whose mean is exact).
    pub(crate) mean_lo: f64,
    /// The biased variance about `mean` (the rounded mean, as `moments` defines it), correctly
    /// rounded (infinite if it exceeds the `f64` range).
    pub(crate) var: f64,
    /// What `var` leaves out (0 where unknown, as for `mean_lo`).
    pub(crate) var_lo: f64,
    /// `1 / sqrt(var + eps)`; `+inf` for a constant row with `eps == 0`. On `f64` offset rows
    /// the variance about the exact mean in place of `var`, and refined (see the module doc).
    /// The value a caller saves is [`RowStats::recorded_rstd`].
    pub(crate) rstd: f64,
    /// How to write the normalized row.
    pub(crate) plan: Plan,
    /// How [`RowStats::recorded_rstd`] gets the `rstd` a caller saves.
    pub(crate) saved: Saved,
}

/// Where the `rstd` that `forward_with_stats` saves comes from (see the module doc, "Saved
/// `rstd`").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Saved {
    /// `rstd` itself: `f32` rows (narrowed to `f32` by the caller) and rows without statistics.
    Rstd,
    /// Refined from `mean`, `mean_lo`, `var`, `var_lo` and one more pass over the row: `f64`
    /// rows of the fast path.
    Parts,
    /// Refined from the rescaled row, recomputed: `f64` rows of the rescaling slow path.
    Rescaled,
}

impl RowStats {
    /// The `rstd` a caller saves for row `x` (the row these statistics are of) with epsilon
    /// `eps`: `rstd` itself on `f32` rows; on `f64` rows `1 / sqrt(V)` for `V` the variance
    /// about the exact mean plus `eps`, from the exact squares of the exact deviations, within
    /// `0.5 + 2^-20` ulp of the exact value (see the module doc, "Saved `rstd`"). Only callers
    /// that keep statistics pay for it: one more pass over the row (the slow path: the whole
    /// slow path again). It never changes how the row is written. Inlined, so that the pass
    /// is compiled for the instruction set of the kernel that calls it (the same bits on each).
    #[inline(always)]
    pub(crate) fn recorded_rstd<F: Float, const CENTER: bool>(&self, x: &[F], eps: f64) -> f64 {
        match self.saved {
            Saved::Rstd => self.rstd,
            Saved::Parts => {
                let (mean, var) = ((self.mean, self.mean_lo), (self.var, self.var_lo));
                refined_rstd::<F, CENTER>(x, 1.0, mean, var, eps)
            }
            Saved::Rescaled => scaled_row_stats::<F, CENTER>(x, self.mean, eps, true).rstd,
        }
    }
}

impl RowStats {
    /// The statistics a caller keeps (mean and `rstd`), from a path that computes no more.
    pub(crate) fn recorded(mean: f64, rstd: f64) -> Self {
        RowStats {
            mean,
            rstd,
            ..RowStats::nan()
        }
    }

    /// The statistics of a row that holds a NaN or an infinity, or has no elements.
    pub(crate) fn nan() -> Self {
        RowStats {
            mean: f64::NAN,
            mean_lo: 0.0,
            var: f64::NAN,
            var_lo: 0.0,
            rstd: f64::NAN,
            plan: Plan::nan(),
            saved: Saved::Rstd,
        }
    }
}

/// The mean and variance of a row and how to normalize it with epsilon `eps` (finite, `>= 0`).
///
/// With `CENTER == false` (RMSNorm) the mean is not computed but taken as exactly 0, so that
/// `var` is the mean of the squares and the plan writes `x_i / sqrt(var + eps)`.
///
/// Returns all-NaN statistics for an empty row or a row with a NaN or infinite value.
#[inline(always)]
pub(crate) fn row_stats<F: Float, const CENTER: bool>(x: &[F], eps: f64) -> RowStats {
    let n = x.len();
    if n == 0 {
        return RowStats::nan();
    }
    let (mut mean, mut mean_lo) = (0.0, 0.0);
    if CENTER {
        let (hi, lo) = compensated_sum(x, |v| v);
        (mean, mean_lo) = div_by_len_dd(hi, lo, n);
        if !mean.is_finite() {
            if x.iter().any(|v| !v.wide().is_finite()) {
                return RowStats::nan();
            }
            (mean, mean_lo) = (mean_of_huge_row(x), 0.0);
        }
    }
    let (sq_hi, sq_lo) = compensated_sum(x, |v| {
        let d = v - mean;
        d * d
    });
    if (TINY..=HUGE).contains(&sq_hi) {
        let (var, var_lo) = div_by_len_dd(sq_hi, sq_lo, n);
        let s = sqrt_sum(var, eps);
        return fast_stats::<F, CENTER>((mean, mean_lo), (var, var_lo), s, eps);
    }
    scaled_row_stats::<F, CENTER>(x, mean, eps, false)
}

/// `fl(sqrt(fl(var + eps)))`, also where `var + eps` overflows (a variance near the top of the
/// range with a huge epsilon): then `2 * sqrt(var/4 + eps/4)`, which scales exactly.
#[inline(always)]
pub(crate) fn sqrt_sum(var: f64, eps: f64) -> f64 {
    let v = var + eps;
    if v.is_finite() {
        v.sqrt()
    } else {
        2.0 * (var * 0.25 + eps * 0.25).sqrt()
    }
}

/// The statistics of a row whose sum of squares is in range, from its mean `(mean, mean_lo)`,
/// its variance about `mean`, `(var, var_lo)`, and `s = sqrt_sum(var, eps)`.
#[inline(always)]
fn fast_stats<F: Float, const CENTER: bool>(
    mean: (f64, f64),
    var: (f64, f64),
    s: f64,
    eps: f64,
) -> RowStats {
    let ((mean, mean_lo), (var, var_lo)) = (mean, var);
    let (shift_lo, den, post, rstd) = if is_offset::<F, CENTER>(mean, var) {
        let (den, post) = offset_plan(mean_lo, var, var_lo, eps);
        (mean_lo, den, post, post / den)
    } else {
        (if F::HAS_FAST { mean_lo } else { 0.0 }, s, 1.0, 1.0 / s)
    };
    RowStats {
        mean,
        mean_lo,
        var,
        var_lo,
        rstd,
        plan: Plan {
            scale: 1.0,
            shift: mean,
            shift_lo,
            den,
            post,
        },
        saved: if F::HAS_FAST {
            Saved::Rstd
        } else {
            Saved::Parts
        },
    }
}

/// Whether a row takes the offset arithmetic: an `f64` row (LayerNorm) whose mean exceeds its
/// standard deviation, `mean^2 > var` (`var` about the rounded mean). Every other row keeps the
/// operations it had before the offset arithmetic existed, and so its bits.
#[inline(always)]
fn is_offset<F: Float, const CENTER: bool>(mean: f64, var: f64) -> bool {
    !F::HAS_FAST && CENTER && mean * mean > var
}

/// `(den, post)` of an offset row (see the module doc), which is shifted by its mean's low part
/// `mean_lo` too: `(1, r)`, so that the row is written as `fl(fl(d_i - mean_lo) * r)`, with `r`
/// the reciprocal square root of `V = var + var_lo - mean_lo^2 + eps` ([`rsqrt_dd`]). `V` is
/// the variance about the exact mean plus `eps`, in double-double: `var + var_lo` is the mean
/// square about the rounded mean, larger than the variance by the square of the mean's rounding
/// error, `mean_lo^2`. Where `V` overflows (`eps` near `f64::MAX`), `(sqrt_sum(var, eps), 1)`.
#[inline(never)]
fn offset_plan(mean_lo: f64, var: f64, var_lo: f64, eps: f64) -> (f64, f64) {
    rsqrt_plan(var, var_lo - mean_lo * mean_lo, eps)
}

/// `(1, 1 / sqrt(var + var_lo + eps))` with [`rsqrt_dd`], the sum in double-double; where it
/// overflows (`eps` near `f64::MAX`), `(sqrt_sum(fl(var + var_lo), eps), 1)`.
#[inline(always)]
fn rsqrt_plan(var: f64, var_lo: f64, eps: f64) -> (f64, f64) {
    let (v, v_lo) = two_sum(var, var_lo);
    let (w, w_lo) = two_sum(v, eps);
    let (w, w_lo) = two_sum(w, v_lo + w_lo);
    if w > 0.0 && w.is_finite() {
        (1.0, rsqrt_dd(w, w_lo))
    } else {
        (sqrt_sum(v, eps), 1.0)
    }
}

/// The saved `rstd` of a row of the fast path (`scale == 1`) or of the rescaling slow path
/// (`x` scaled by `scale`, `eps` by `scale^2`; the result is in the scaled coordinates), from
/// its mean `(m, m_lo)` (`(0, 0)` for RMSNorm) and its `(var, var_lo)`, the compensated mean of
/// `fl(d_i^2)`, `d_i = fl(x_i * scale - m)` (see the module doc, "Saved `rstd`").
///
/// With `e_i` the exact error of `d_i` and `q_i` that of `fl(d_i^2)` (Dekker's square, without
/// a fused multiply-add), `sum((x_i - m)^2) = sum(fl(d_i^2)) + sum(c_i)`,
/// `c_i = q_i + e_i (2 d_i + e_i)`, and the variance about the exact mean is that over `n`
/// minus `m_lo^2`. The `c_i` are below `3u d_i^2` each, so a plain sum in [`REFINE_LANES`]
/// fixed lanes keeps them to `(n / 8 + 3) u` of their size: the variance has a relative error
/// of order `n u^2` (`u = 2^-53`), and [`rsqrt_dd`] rounds its reciprocal square root.
#[inline(always)]
fn refined_rstd<F: Float, const CENTER: bool>(
    x: &[F],
    scale: f64,
    mean: (f64, f64),
    var: (f64, f64),
    eps: f64,
) -> f64 {
    let ((m, m_lo), (var, var_lo)) = (mean, var);
    let term = |v: f64| {
        let v = v * scale;
        let (d, e) = if CENTER { two_sum(v, -m) } else { (v, 0.0) };
        let (h, l) = split(d);
        let q = ((h * h - d * d) + (h + h) * l) + l * l;
        q + e * (d + d + e)
    };
    let mut acc = [0.0f64; REFINE_LANES];
    let (chunks, tail) = x.as_chunks::<REFINE_LANES>();
    for chunk in chunks {
        for j in 0..REFINE_LANES {
            acc[j] += term(chunk[j].wide());
        }
    }
    for (a, v) in acc.iter_mut().zip(tail) {
        *a += term(v.wide());
    }
    let c = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    let lo = (var_lo - m_lo * m_lo) + c / x.len() as f64;
    let (den, post) = rsqrt_plan(var, lo, eps);
    post / den
}

/// Independent accumulators of [`refined_rstd`]: element `i` goes to lane `i % 8`, so that the
/// loop vectorizes without reordering anything, and the lanes are merged in a fixed order.
const REFINE_LANES: usize = 8;

/// Veltkamp's split: `a = hi + lo` with `hi` and `lo` of at most 26 significant bits each
/// (`|a| < 2^996`, so that `a * (2^27 + 1)` does not overflow).
#[inline(always)]
fn split(a: f64) -> (f64, f64) {
    let c = a * 134_217_729.0; // 2^27 + 1
    let hi = c - (c - a);
    (hi, a - hi)
}

/// Dekker's product: `p + e == a * b` exactly, `p = fl(a * b)`, without a fused multiply-add
/// (a library call on the baseline target), barring overflow and underflow.
#[inline(always)]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    let ((ah, al), (bh, bl)) = (split(a), split(b));
    (p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)
}

/// `1 / sqrt(hi + lo)` for a positive, finite `hi = fl(hi + lo)`, rounded once but for a
/// relative error below `2^-100`: within `0.5 ulp + 2^-47 ulp` of the exact value.
///
/// `hi + lo` is scaled by `4^-j` into `[1, 4)` (exact; `lo` may lose bits below `2^-1074`,
/// far below `2^-100` of the value), `r0 = fl(1 / fl(sqrt(hi)))` is within `3 u` of the exact
/// root (`u = 2^-53`), and one Newton step `r = r0 - r0 * t / 2` with
/// `t = (hi + lo) * r0^2 - 1` (evaluated with exact products; `|t| < 7 u`) leaves a relative
/// error of `3 t^2 / 8`, about `2^-100`. The result is `r * 2^-j`, exact.
#[inline(always)]
fn rsqrt_dd(hi: f64, lo: f64) -> f64 {
    debug_assert!(hi > 0.0 && hi.is_finite());
    let j = exponent(hi) >> 1; // floor(e / 2): hi * 4^-j is in [1, 4)
    let down = pow2(-j);
    let (hi, lo) = (hi * down * down, lo * down * down);
    let r0 = 1.0 / hi.sqrt();
    let (p, p_lo) = two_prod(r0, r0);
    let (q, q_lo) = two_prod(hi, p);
    // hi * r0^2 + lo * r0^2 - 1, q - 1 exact (q is within 7 u of 1).
    let t = ((q - 1.0) + q_lo) + (hi * p_lo + lo * p);
    (r0 - r0 * (0.5 * t)) * pow2(-j)
}

/// Rows per batch of [`short_rows_stats`].
pub(crate) const BATCH: usize = 64;

/// Up to [`BATCH`] consecutive rows of length `n <= SHORT` of `x`, transposed: column `i`,
/// lane `r` holds `x[r][i]` in `f64`; lanes past the last row hold 0.
#[inline(always)]
pub(crate) fn transpose_rows<F: Float>(x: &[F], n: usize) -> Vec<[f64; BATCH]> {
    debug_assert!(n > 0 && n <= SHORT && x.len() <= BATCH * n && x.len().is_multiple_of(n));
    let mut xt = vec![[0.0f64; BATCH]; n];
    for (r, row) in x.chunks_exact(n).enumerate() {
        for (col, v) in xt.iter_mut().zip(row) {
            col[r] = v.wide();
        }
    }
    xt
}

/// The statistics of up to [`BATCH`] rows of length `n <= SHORT`, given transposed
/// ([`transpose_rows`]) in `xt` and as rows in `x`, into `out` (one per row): the same
/// operations as [`row_stats`], in the same order, on all rows at once (row `r` in lane `r`),
/// so that they vectorize across rows. Rows that leave the fast path (a non-finite value, a sum
/// of squares out of range) are redone by [`row_stats`].
#[inline(always)]
pub(crate) fn short_rows_stats<F: Float, const CENTER: bool>(
    xt: &[[f64; BATCH]],
    x: &[F],
    eps: f64,
    out: &mut [RowStats],
) {
    let n = xt.len();
    debug_assert_eq!(x.len(), out.len() * n);
    let (mut mean, mut mean_lo) = ([0.0f64; BATCH], [0.0f64; BATCH]);
    if CENTER {
        let mut hi = [0.0f64; BATCH];
        let mut lo = [0.0f64; BATCH];
        for col in xt {
            for r in 0..BATCH {
                accumulate(&mut hi[r], &mut lo[r], col[r]);
            }
        }
        for r in 0..BATCH {
            let (h, l) = two_sum(hi[r], lo[r]);
            (mean[r], mean_lo[r]) = div_by_len_dd(h, l, n);
        }
    }
    let (mut hi, mut lo) = ([0.0f64; BATCH], [0.0f64; BATCH]);
    for col in xt {
        for r in 0..BATCH {
            let d = col[r] - mean[r];
            accumulate(&mut hi[r], &mut lo[r], d * d);
        }
    }
    let (mut var, mut var_lo, mut s) = ([0.0f64; BATCH], [0.0f64; BATCH], [0.0f64; BATCH]);
    let mut fast = [false; BATCH];
    for r in 0..BATCH {
        let (sq_hi, sq_lo) = two_sum(hi[r], lo[r]);
        fast[r] = mean[r].is_finite() && (TINY..=HUGE).contains(&sq_hi);
        (var[r], var_lo[r]) = div_by_len_dd(sq_hi, sq_lo, n);
        s[r] = sqrt_sum(var[r], eps);
    }
    for (r, (out, row)) in out.iter_mut().zip(x.chunks_exact(n)).enumerate() {
        *out = if fast[r] {
            let (mean, var) = ((mean[r], mean_lo[r]), (var[r], var_lo[r]));
            fast_stats::<F, CENTER>(mean, var, s[r], eps)
        } else {
            row_stats::<F, CENTER>(row, eps)
        };
    }
}

/// The mean of a row of finite values whose sum overflows: the same compensated sum of the row
/// scaled down by `2^-s`, with `2^s >= 2n`, so that no partial sum can overflow.
#[cold]
fn mean_of_huge_row<F: Float>(x: &[F]) -> f64 {
    let n = x.len();
    let s = (usize::BITS - n.leading_zeros()) as i32 + 1;
    let down = pow2(-s);
    let (hi, lo) = compensated_sum(x, |v| v * down);
    div_by_len(hi, lo, n) * pow2(s)
}

/// The slow path: the row is scaled by `2^k` so that its largest magnitude lies in `[1, 2)`
/// (`k` clamped to `[-1000, 1000]`, enough for every finite `f64`), which brings every
/// non-negligible squared deviation into range. Uncentred rows (RMSNorm) also come here with a
/// NaN or an infinity, which no mean has caught.
///
/// With `refine` (only from [`RowStats::recorded_rstd`], on `f64` rows), `rstd` is the saved
/// one (see the module doc, "Saved `rstd`"); the rest is the same.
#[cold]
fn scaled_row_stats<F: Float, const CENTER: bool>(
    x: &[F],
    mean: f64,
    eps: f64,
    refine: bool,
) -> RowStats {
    // What the saved rstd of this row is: refined later, from the row, for f64 rows.
    let saved = if F::HAS_FAST || refine {
        Saved::Rstd
    } else {
        Saved::Rescaled
    };
    let n = x.len();
    if !CENTER && x.iter().any(|v| !v.wide().is_finite()) {
        return RowStats::nan();
    }
    let amax = x.iter().fold(0.0f64, |a, v| a.max(v.wide().abs()));
    let k = if amax == 0.0 {
        0
    } else {
        (-exponent(amax)).clamp(-1000, 1000)
    };
    let scale = pow2(k);
    let unscale = pow2(-k);
    // The mean of the scaled row, rounded once at full precision: where the row is subnormal,
    // `mean` itself carries the coarse rounding of the subnormal range.
    let (shift, shift_lo) = if CENTER {
        let (hi, lo) = compensated_sum(x, |v| v * scale);
        div_by_len_dd(hi, lo, n)
    } else {
        (0.0, 0.0)
    };
    let (sq_hi, sq_lo) = compensated_sum(x, |v| {
        let d = v * scale - shift;
        d * d
    });
    let (var_scaled, var_scaled_lo) = div_by_len_dd(sq_hi, sq_lo, n);
    if var_scaled == 0.0 {
        // Every deviation is exactly zero (nonzero scaled deviations are at least ~2^-108, and
        // their squares do not underflow): a constant row (uncentred: an all-zero row). Its
        // output is exactly zero; with eps == 0 the divisor is +inf rather than 0, which
        // defines 0 / 0 as 0 (and makes the input gradient of the row 0 as well).
        let den = if eps > 0.0 { eps.sqrt() } else { f64::INFINITY };
        let rstd = if refine && eps > 0.0 {
            rsqrt_dd(eps, 0.0)
        } else {
            1.0 / eps.sqrt()
        };
        return RowStats {
            mean,
            mean_lo: 0.0,
            var: 0.0,
            var_lo: 0.0,
            rstd,
            plan: Plan {
                scale: 1.0,
                shift: mean,
                shift_lo: 0.0,
                den,
                post: 1.0,
            },
            saved,
        };
    }
    let var = var_scaled * unscale * unscale;
    let eps_scaled = eps * scale * scale;
    // Offset rows (see the module doc) as on the fast path, in the scaled coordinates.
    let offset = is_offset::<F, CENTER>(shift, var_scaled);
    if eps_scaled.is_finite() {
        let (shift_lo, den, post, rstd) = if offset {
            let (den, post) = offset_plan(shift_lo, var_scaled, var_scaled_lo, eps_scaled);
            (shift_lo, den, post, post / den * scale)
        } else {
            let den = sqrt_sum(var_scaled, eps_scaled);
            (0.0, den, 1.0, scale / den)
        };
        let rstd = if refine {
            let (mean, var) = ((shift, shift_lo), (var_scaled, var_scaled_lo));
            refined_rstd::<F, CENTER>(x, scale, mean, var, eps_scaled) * scale
        } else {
            rstd
        };
        RowStats {
            mean,
            mean_lo: 0.0,
            var,
            var_lo: 0.0,
            rstd,
            plan: Plan {
                scale,
                shift,
                shift_lo,
                den,
                post,
            },
            saved,
        }
    } else {
        // A tiny row and an epsilon so much larger than its variance (by a factor above 2^1000
        // / 16) that var + eps rounds to eps: y = (d * 2^k / sqrt(eps)) * 2^-k.
        let den = eps.sqrt();
        let (shift_lo, rstd) = if offset {
            (shift_lo, rsqrt_dd(eps, 0.0))
        } else if refine {
            (0.0, rsqrt_dd(eps, 0.0))
        } else {
            (0.0, 1.0 / den)
        };
        RowStats {
            mean,
            mean_lo: 0.0,
            var,
            var_lo: 0.0,
            rstd,
            plan: Plan {
                scale,
                shift,
                shift_lo,
                den,
                post: unscale,
            },
            saved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_where_the_comments_say() {
        assert_eq!(TINY, 2f64.powi(-900));
        assert_eq!(HUGE, 2f64.powi(1000));
    }

    #[test]
    fn exponent_of_normal_and_subnormal_values() {
        assert_eq!(exponent(1.0), 0);
        assert_eq!(exponent(3.0), 1);
        assert_eq!(exponent(0.5), -1);
        assert_eq!(exponent(f64::MIN_POSITIVE), -1022);
        assert_eq!(exponent(f64::from_bits(1)), -1074);
        assert_eq!(exponent(f64::MAX), 1023);
    }

    #[test]
    fn seed_row_statistics() {
        let s = row_stats::<_, true>(&[0.5f64, -1.2, 3.3, 0.8, -0.5], 1e-5);
        assert_eq!(s.mean, 0.58);
        assert_eq!(s.var, 2.3575999999999997);
    }

    /// Every short row length, batches of 1, 7 and 64 rows, with a subnormal row and a constant
    /// and an all-zero row (all three take the rescaling path) and offset rows: the batched
    /// statistics have the bits of the row alone.
    fn check_batched_rows<const CENTER: bool>() {
        // Pseudo-random rows of every short length, with a few that leave the fast path.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for n in 1..=SHORT {
            for rows in [1, 7, BATCH] {
                let mut x: Vec<f64> = (0..rows * n).map(|_| next() * 10.0 + 3.0).collect();
                // A subnormal row, whose squares underflow: the rescaling path.
                for (i, v) in x[..n].iter_mut().enumerate() {
                    *v = 1e-310 * (i as f64 + 1.0) * if i % 2 == 0 { 1.0 } else { -0.5 };
                }
                if rows > 2 {
                    x[n..2 * n].iter_mut().for_each(|v| *v = 0.25); // a constant row
                }
                if rows > 3 {
                    x[2 * n..3 * n].iter_mut().for_each(|v| *v = 0.0); // an all-zero row
                }
                // Offset rows (|mean| > std), which subtract the mean's low part.
                for row in x.chunks_exact_mut(n).skip(4).step_by(3) {
                    row.iter_mut().for_each(|v| *v += 1e9);
                }
                let mut batched = vec![RowStats::nan(); rows];
                short_rows_stats::<_, CENTER>(&transpose_rows(&x, n), &x, 1e-5, &mut batched);
                for (row, got) in x.chunks_exact(n).zip(&batched) {
                    let alone = row_stats::<_, CENTER>(row, 1e-5);
                    assert_eq!(got.mean.to_bits(), alone.mean.to_bits());
                    assert_eq!(got.var.to_bits(), alone.var.to_bits());
                    assert_eq!(got.rstd.to_bits(), alone.rstd.to_bits());
                    assert_eq!(got.plan, alone.plan);
                    assert_eq!(got.saved, alone.saved);
                    let saved = |s: &RowStats| s.recorded_rstd::<_, CENTER>(row, 1e-5).to_bits();
                    assert_eq!(saved(got), saved(&alone));
                }
            }
        }
    }

    #[test]
    fn rows_batched_across_lanes_get_the_bits_they_get_alone() {
        check_batched_rows::<true>();
    }

    #[test]
    fn uncentred_rows_batched_across_lanes_get_the_bits_they_get_alone() {
        check_batched_rows::<false>();
    }

    #[test]
    fn uncentred_statistics_are_the_mean_square_with_a_zero_mean() {
        let s = row_stats::<_, false>(&[3.0f64, -4.0], 0.0);
        assert_eq!((s.mean, s.var, s.rstd), (0.0, 12.5, 1.0 / 12.5f64.sqrt()));
        assert_eq!(s.plan.apply(3.0), 3.0 / 12.5f64.sqrt());
        // Squares out of range take the rescaling path; all-zero rows the exact-zero plan.
        for &c in &[1e-300f64, 1e300, f64::MAX, 5e-324] {
            let s = row_stats::<_, false>(&[c, c], 0.0);
            assert_eq!(s.plan.apply(c), 1.0, "{c:e}");
        }
        for eps in [0.0, 1e-5] {
            let s = row_stats::<_, false>(&[0.0f64; 5], eps);
            assert_eq!(s.plan.apply(0.0).to_bits(), 0.0f64.to_bits());
        }
        assert!(row_stats::<_, false>(&[1.0f64, f64::INFINITY], 0.0)
            .rstd
            .is_nan());
        assert!(row_stats::<_, false>(&[f64::NAN, 1.0], 0.0)
            .plan
            .apply(1.0)
            .is_nan());
    }

    #[test]
    fn products_and_reciprocal_square_roots_in_double_double() {
        // (1 + 2^-52)^2 = 1 + 2^-51 + 2^-104: the last term is the error of the product.
        let a = 1.0 + f64::EPSILON;
        assert_eq!(two_prod(a, a), (1.0 + 2.0 * f64::EPSILON, 2f64.powi(-104)));
        assert_eq!(two_prod(3.0, -7.0), (-21.0, 0.0));
        // Exact squares: 1 / sqrt(4^k) = 2^-k, at both ends of the range.
        for k in [-511, -300, -1, 0, 1, 300, 511] {
            assert_eq!(rsqrt_dd(pow2(2 * k), 0.0), pow2(-k), "4^{k}");
        }
        assert_eq!(rsqrt_dd(f64::from_bits(1), 0.0), 2f64.powi(537)); // 2^-1074
        assert_eq!(rsqrt_dd(f64::from_bits(1 << 14), 0.0), 2f64.powi(530)); // 2^-1060
                                                                            // Correctly rounded values (from 80-digit decimal arithmetic) where the plain
                                                                            // fl(1 / fl(sqrt(hi))) is one ulp off.
        assert_eq!(rsqrt_dd(3.7821316432340155, 0.0), 0.5141995348638035);
        assert_eq!(rsqrt_dd(1.6662722088169637, 0.0), 0.7746883492365174);
        // ... and where the low part decides the rounding.
        assert_eq!(
            rsqrt_dd(1.9038029785471369, -1.0413631035938176e-16),
            0.7247512933173722
        );
        assert_eq!(
            rsqrt_dd(3.0459464099049, 1.9049011310557563e-16),
            0.5729792187593168
        );
        // The same, scaled by 4^300 and 4^-300: the result by 2^-300 and 2^300, exactly.
        let (up, down) = (pow2(600), pow2(-600));
        let (hi, lo) = (1.013985383749437, 9.842523150263211e-17);
        assert_eq!(rsqrt_dd(hi * up, lo * up), 0.9930798102482739 * pow2(-300));
        assert_eq!(
            rsqrt_dd(hi * down, lo * down),
            0.9930798102482739 * pow2(300)
        );
    }

    /// The saved `rstd` is refined from the row without touching the plan: on the fast path
    /// from the statistics and the row, on the rescaling path from the rescaled row, so that a
    /// row scaled by `2^k` (which moves it to the slow path) has its saved `rstd` scaled by
    /// `2^-k`, exactly; constant rows save `1 / sqrt(eps)` correctly rounded.
    #[test]
    fn saved_rstd_is_refined_lazily_and_scales_exactly() {
        fn check<const CENTER: bool>(x: &[f64]) {
            let s = row_stats::<_, CENTER>(x, 0.0);
            assert_eq!(s.saved, Saved::Parts);
            let r = s.recorded_rstd::<_, CENTER>(x, 0.0);
            // Within an ulp of the two-rounding value (the accuracy tests hold it to 0.5 ulp
            // of the exact one).
            assert!((r - s.rstd).abs() <= s.rstd * f64::EPSILON, "{x:?}");
            for k in [-600, 600] {
                let xs: Vec<f64> = x.iter().map(|v| v * pow2(k)).collect();
                let t = row_stats::<_, CENTER>(&xs, 0.0);
                assert_eq!(t.saved, Saved::Rescaled, "{k}");
                assert_eq!(t.plan.apply(xs[0]), s.plan.apply(x[0]), "{k}");
                assert_eq!(t.recorded_rstd::<_, CENTER>(&xs, 0.0), r * pow2(-k), "{k}");
            }
        }
        for x in [
            &[0.5f64, -1.2, 3.3, 0.8, -0.5][..],
            &[2.0, -0.7, 1.2, -3.5, 0.6, 0.1, -0.3],
            &[1.0, 3.0], // an offset row
        ] {
            check::<true>(x);
            check::<false>(x);
        }
        for eps in [1e-5, 0.1, 3.0] {
            let s = row_stats::<_, true>(&[0.25f64; 7], eps);
            assert_eq!(s.saved, Saved::Rescaled);
            assert_eq!(s.rstd, 1.0 / eps.sqrt());
            assert_eq!(
                s.recorded_rstd::<_, true>(&[0.25; 7], eps),
                rsqrt_dd(eps, 0.0)
            );
        }
        let s = row_stats::<_, true>(&[0.25f64; 7], 0.0);
        assert_eq!(s.recorded_rstd::<_, true>(&[0.25; 7], 0.0), f64::INFINITY);
        // f32 rows save the rstd they were computed with (narrowed by the caller).
        let x = [0.5f32, -1.25, 3.5];
        let s = row_stats::<_, true>(&x, 1e-5);
        assert_eq!(s.saved, Saved::Rstd);
        assert_eq!(s.recorded_rstd::<_, true>(&x, 1e-5), s.rstd);
        assert_eq!(RowStats::nan().saved, Saved::Rstd);
    }

    /// Rows with `|mean| <= std` keep the plan and `rstd` of the one-rounded-mean arithmetic:
    /// `(x - mean) / fl(sqrt(fl(var + eps)))` and `rstd = 1 / den`, bit for bit.
    #[test]
    fn centred_rows_keep_the_plan_of_the_rounded_mean() {
        let rows: [&[f64]; 4] = [
            &[0.5, -1.2, 3.3, 0.8, -0.5],
            &[2.0, -0.7, 1.2, -3.5, 0.6],
            &[1.0, 2.0, 3.0, -3.0], // mean 0.75, std 2.3
            &[1.0, 3.0],            // mean 2, std 1: |mean| > std
        ];
        for (i, x) in rows.iter().enumerate() {
            let s = row_stats::<_, true>(x, 1e-5);
            let den = sqrt_sum(s.var, 1e-5);
            if i < 3 {
                assert_eq!(s.plan.shift_lo, 0.0, "{x:?}");
                assert_eq!(s.plan.den.to_bits(), den.to_bits(), "{x:?}");
                assert_eq!(s.rstd.to_bits(), (1.0 / den).to_bits(), "{x:?}");
            } else {
                // mean 2 is exact: the offset plan has a zero low part; it multiplies by the
                // refined rstd.
                assert_eq!((s.mean, s.mean_lo, s.var), (2.0, 0.0, 1.0));
                let (v, v_lo) = two_sum(1.0, 1e-5);
                assert_eq!(s.rstd, rsqrt_dd(v, v_lo));
                assert_eq!(
                    (s.plan.shift_lo, s.plan.den, s.plan.post),
                    (0.0, 1.0, s.rstd)
                );
            }
        }
    }

    /// An offset row whose mean is not an `f64`: `2^52 + {0, 1, 1}`, mean `2^52 + 2/3`, rounded
    /// to `2^52 + 1` (low part `-1/3`); var `2/9` about the exact mean, `2/9 + 1/9 = 1/3` about
    /// the rounded one. The plan subtracts the low part and multiplies by `1 / sqrt(2/9)`.
    #[test]
    fn offset_rows_subtract_the_low_part_and_use_the_variance_about_the_exact_mean() {
        let big = 2f64.powi(52);
        let s = row_stats::<_, true>(&[big, big + 1.0, big + 1.0], 0.0);
        assert_eq!(s.mean, big + 1.0);
        assert_eq!(s.mean_lo, -1.0 / 3.0);
        assert_eq!(s.var, 1.0 / 3.0); // about the rounded mean, as moments() defines it
        assert_eq!(s.plan.shift_lo, -1.0 / 3.0);
        assert_eq!(s.rstd, 4.5f64.sqrt()); // 1 / sqrt(2/9), correctly rounded
        assert_eq!((s.plan.den, s.plan.post), (1.0, s.rstd));
        // y = (-2/3, 1/3, 1/3) / sqrt(2/9) = (-sqrt(2), 1/sqrt(2), 1/sqrt(2)).
        assert!((s.plan.apply(big) + 2f64.sqrt()).abs() <= 2.0 * f64::EPSILON);
        assert!((s.plan.apply(big + 1.0) - 0.5f64.sqrt()).abs() <= 2.0 * f64::EPSILON);
        // The same row scaled to 2^1000 takes the rescaling path (its squares overflow): it is
        // written as 1 + {0, 2^-52, 2^-52}, whose mean's low part is -2^-52 / 3, and its rstd
        // is scaled exactly.
        let up = 2f64.powi(948);
        let s = row_stats::<_, true>(&[big * up, (big + 1.0) * up, (big + 1.0) * up], 0.0);
        assert_eq!(s.plan.shift_lo, -1.0 / 3.0 * f64::EPSILON);
        assert_eq!(s.rstd, 4.5f64.sqrt() * 2f64.powi(-948)); // 1 / (2^948 sqrt(2/9))
        assert!((s.plan.apply(big * up) + 2f64.sqrt()).abs() <= 2.0 * f64::EPSILON);
    }

    /// Every compiled version (baseline, AVX2, AVX-512, as the processor has them) gives the
    /// same bits on `f64` rows with and without an offset, short (statistics of many rows at
    /// once) and long, with and without gamma and beta; the statistics too.
    #[test]
    fn every_instruction_set_gives_the_same_bits_on_offset_f64_rows() {
        use crate::kernels::{normalize_rows, Isa};
        let mut state = 0x5851_f42d_4c95_7f2du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let offsets = [0.0, 0.3, 1e3, -1e9, 1e12];
        for n in [1, 2, 5, 17, 64, 65, 100, 1029] {
            let rows = 70;
            let x: Vec<f64> = (0..rows * n)
                .map(|k| offsets[(k / n) % offsets.len()] + next())
                .collect();
            let g: Vec<f64> = (0..n).map(|_| next() * 4.0).collect();
            let b: Vec<f64> = (0..n).map(|_| next()).collect();
            for params in [(None, None), (Some(&g[..]), Some(&b[..]))] {
                let run = |isa: Isa| {
                    let mut y = vec![0.0f64; x.len()];
                    let mut slots = vec![(0u64, 0u64); rows];
                    normalize_rows::<f64, f64, _, true>(
                        isa,
                        &x,
                        &mut y,
                        n,
                        1e-5,
                        params.0,
                        params.1,
                        &mut slots,
                        |s, r| {
                            let st = r.stats();
                            *s = (st.mean.to_bits(), st.rstd.to_bits());
                        },
                    );
                    (y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), slots)
                };
                let base = run(Isa::Baseline);
                for isa in Isa::available() {
                    assert!(run(isa) == base, "{isa:?}, n = {n}");
                }
            }
        }
    }

    #[test]
    fn constant_rows_take_the_exact_zero_plan() {
        for &c in &[0.0f64, 0.1, -3.7, 1e6 + 0.1, 1e-300, 1e300, f64::MAX] {
            for eps in [0.0, 1e-5] {
                let s = row_stats::<_, true>(&[c; 7], eps);
                assert_eq!(s.mean, c);
                assert_eq!(s.var, 0.0);
                assert_eq!(s.plan.apply(c), 0.0);
            }
        }
    }
}
