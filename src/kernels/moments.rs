//! Per-row statistics: the mean, the biased variance, and how to normalize the row.
//!
//! The fast path is three steps, each a compensated sum over a cache-resident row:
//! 1. `mean = fl(sum(x) / n)`, rounded once;
//! 2. `d_i = fl(x_i - mean)` and `var = fl(sum(fl(d_i * d_i)) / n)`, rounded once;
//! 3. `s = fl(sqrt(fl(var + eps)))`, and the row is written as `y_i = fl(d_i / s)`.
//!
//! A rare slow path keeps the statistics in range: a sum of finite values that overflows, and a
//! sum of squares that overflows or underflows (values near `1e300` or `1e-300`, or a constant
//! row), are recomputed on the row scaled by a power of two, which is exact.

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

/// How a row is written: `y_i = ((x_i * scale - shift) / den) * post`.
///
/// On the fast path `scale = post = 1` and `shift` is the mean, so this is exactly
/// `(x_i - mean) / s`. The slow path works on the row scaled by `scale = 2^k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    scale: f64,
    shift: f64,
    /// What `shift` leaves out of the mean, subtracted too (`f32` rows: their mean's low part
    /// can be the whole of a small output; 0 for `f64`, whose bits it would move).
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
    /// The biased variance, correctly rounded (infinite if it exceeds the `f64` range).
    pub(crate) var: f64,
    /// What `var` leaves out (0 where unknown, as for `mean_lo`).
    pub(crate) var_lo: f64,
    /// `1 / sqrt(var + eps)`; `+inf` for a constant row with `eps == 0`.
    pub(crate) rstd: f64,
    /// How to write the normalized row.
    pub(crate) plan: Plan,
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
        let shift_lo = if F::HAS_FAST { mean_lo } else { 0.0 };
        return fast_stats((mean, mean_lo), shift_lo, sq_hi, sq_lo, n, eps);
    }
    scaled_row_stats::<F, CENTER>(x, mean, eps)
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

/// The statistics of a row whose sum of squares `sq_hi + sq_lo` is in range.
#[inline(always)]
fn fast_stats(
    mean: (f64, f64),
    shift_lo: f64,
    sq_hi: f64,
    sq_lo: f64,
    n: usize,
    eps: f64,
) -> RowStats {
    let (var, var_lo) = div_by_len_dd(sq_hi, sq_lo, n);
    let s = sqrt_sum(var, eps);
    let (mean, mean_lo) = mean;
    RowStats {
        mean,
        mean_lo,
        var,
        var_lo,
        rstd: 1.0 / s,
        plan: Plan {
            scale: 1.0,
            shift: mean,
            shift_lo,
            den: s,
            post: 1.0,
        },
    }
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
            RowStats {
                mean: mean[r],
                mean_lo: mean_lo[r],
                var: var[r],
                var_lo: var_lo[r],
                rstd: 1.0 / s[r],
                plan: Plan {
                    scale: 1.0,
                    shift: mean[r],
                    shift_lo: if F::HAS_FAST { mean_lo[r] } else { 0.0 },
                    den: s[r],
                    post: 1.0,
                },
            }
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
#[cold]
fn scaled_row_stats<F: Float, const CENTER: bool>(x: &[F], mean: f64, eps: f64) -> RowStats {
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
    let shift = if CENTER {
        let (hi, lo) = compensated_sum(x, |v| v * scale);
        div_by_len(hi, lo, n)
    } else {
        0.0
    };
    let (sq_hi, sq_lo) = compensated_sum(x, |v| {
        let d = v * scale - shift;
        d * d
    });
    let var_scaled = div_by_len(sq_hi, sq_lo, n);
    if var_scaled == 0.0 {
        // Every deviation is exactly zero (nonzero scaled deviations are at least ~2^-108, and
        // their squares do not underflow): a constant row (uncentred: an all-zero row). Its
        // output is exactly zero; with eps == 0 the divisor is +inf rather than 0, which
        // defines 0 / 0 as 0 (and makes the input gradient of the row 0 as well).
        let den = if eps > 0.0 { eps.sqrt() } else { f64::INFINITY };
        return RowStats {
            mean,
            mean_lo: 0.0,
            var: 0.0,
            var_lo: 0.0,
            rstd: 1.0 / eps.sqrt(),
            plan: Plan {
                scale: 1.0,
                shift: mean,
                shift_lo: 0.0,
                den,
                post: 1.0,
            },
        };
    }
    let var = var_scaled * unscale * unscale;
    let eps_scaled = eps * scale * scale;
    if eps_scaled.is_finite() {
        let den = sqrt_sum(var_scaled, eps_scaled);
        RowStats {
            mean,
            mean_lo: 0.0,
            var,
            var_lo: 0.0,
            rstd: scale / den,
            plan: Plan {
                scale,
                shift,
                shift_lo: 0.0,
                den,
                post: 1.0,
            },
        }
    } else {
        // A tiny row and an epsilon so much larger than its variance (by a factor above 2^1000
        // / 16) that var + eps rounds to eps: y = (d * 2^k / sqrt(eps)) * 2^-k.
        let den = eps.sqrt();
        RowStats {
            mean,
            mean_lo: 0.0,
            var,
            var_lo: 0.0,
            rstd: 1.0 / den,
            plan: Plan {
                scale,
                shift,
                shift_lo: 0.0,
                den,
                post: unscale,
            },
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
    /// and an all-zero row (all three take the rescaling path): the batched statistics have the
    /// bits of the row alone.
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
                let mut batched = vec![RowStats::nan(); rows];
                short_rows_stats::<_, CENTER>(&transpose_rows(&x, n), &x, 1e-5, &mut batched);
                for (row, got) in x.chunks_exact(n).zip(&batched) {
                    let alone = row_stats::<_, CENTER>(row, 1e-5);
                    assert_eq!(got.mean.to_bits(), alone.mean.to_bits());
                    assert_eq!(got.var.to_bits(), alone.var.to_bits());
                    assert_eq!(got.rstd.to_bits(), alone.rstd.to_bits());
                    assert_eq!(got.plan, alone.plan);
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
