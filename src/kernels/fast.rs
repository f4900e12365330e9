//! The fast statistics of an `f32` row: plain `f64` sums of the row (shifted by one of its
//! elements where the mean is far from 0), accepted where an a-posteriori bound shows that they meet the accuracy contract,
//! and otherwise left to the exact path ([`super::moments::row_stats`]).
//!
//! # The method
//!
//! With a pivot `p` (RMSNorm: `p = 0`; LayerNorm rows of at least `LANES` elements: `p = 0`
//! first, then, only if the bound below refuses those sums, `p = x_0`; shorter LayerNorm rows:
//! `p = x_0`), one pass computes, in `f64`,
//! `d_i = x_i - p`, `S1 = sum d_i` and `S2 = sum d_i^2` (each square fused into its addition:
//! `s = fma(d_i, d_i, s)`), element `i` into lane `i % LANES`,
//! then the lanes in a fixed pairwise tree (rows shorter than `LANES`: one accumulator, in
//! order). Then `m = S1 / n` (the mean is `p + m`),
//! `q = S2 / n`, `var = q - m^2` (RMSNorm: `var = q`), `v = var + eps`, `rstd = 1 / sqrt(v)`,
//! and a row is written as `y_i = ((x_i - p) - m) * rstd [* gamma_i] [+ beta_i]` in `f64`,
//! rounded once to `f32` (or, where the mean is within `2^18` standard deviations of 0 and the
//! row is not constant, as `y_i = fma(x_i, rstd, -c) [* gamma_i] [+ beta_i]` with
//! `c = (p + m) * rstd`, one subtraction fewer; with both gamma and beta, the last two steps
//! are one `fma(t, gamma_i, beta_i)`). Converting `f32` to `f64` is exact, and `f32` values cannot leave the
//! `f64` range when squared or summed (`|d_i^2| <= 2^257`, and a nonzero `|d_i| >= 2^-149`
//! squares to at least `2^-298`), so no rescaling is ever needed here.
//!
//! # The bound
//!
//! Let `u = 2^-53` and `h = ceil(n / LANES) + log2(LANES)`, the largest number of additions any
//! term goes through (its lane, then the tree; `h = n` for rows shorter than `LANES`). Each computed quantity below is written with a
//! hat; `gamma_k = k u / (1 - k u)`.
//!
//! 1. `|d^_i - d_i| <= u |d_i|`, so `d^_i^2 = d_i^2 (1 + t)` with `|t| <= gamma_2`; the square
//!    is fused into its addition and not rounded, and the bound below still counts one
//!    rounding of it (`gamma_3`), so it holds with and without the fusion.
//! 2. Sums in any fixed tree of depth `h` (Higham, *Accuracy and Stability of Numerical
//!    Algorithms*, 2nd ed., eq. 4.4): `|S2^ - S2| <= gamma_(h+3) S2`, and
//!    `|S1^ - S1| <= gamma_(h+1) sum |d_i| <= gamma_(h+1) sqrt(n S2)` (Cauchy-Schwarz).
//! 3. `q = S2 / n`: `|q^ - q| <= gamma_(h+4) q`. Since `m^2 <= q` (Cauchy-Schwarz again),
//!    `|m^ - m| <= gamma_(h+2) sqrt(q) =: E_m`, and
//!    `|fl(m^ m^) - m^2| <= (2 + gamma) E_m sqrt(q) + u m^2 <= (2 gamma_(h+2) + 2u) q`.
//! 4. `var^ = fl(q^ - fl(m^2))` and `v^ = fl(var^ + eps)` add `u |var^| + u |v^|`.
//!
//! Altogether `|v^ - (var + eps)| <= C q + 2.1 u |v^|` with `C = 1.01 (3h + 10) u` (the factor
//! 1.01 covers `gamma_k` against `k u` and the products of `(1 + u)` factors for any
//! `h < 2^40`). The fast path is taken only where
//!
//! ```text
//! C q^ <= TOL v^,   TOL = 2^-30,   0 < v^ < inf,
//! ```
//!
//! all false for a NaN or an infinity, so that such rows, constant rows with `eps = 0`, rows
//! whose pivot lies so far from the mean that `q >> var` (`q / var = 1 + (mean - p)^2 / var`),
//! and rows so long that `C > TOL` (about `n > 4.4e7`) take the exact path. With `p = 0` the
//! test refuses rows with `mean^2 / var > TOL / C - 1` (about `|mean| > 220 std` at
//! `n = 768`, `|mean| > 26 std` at `n = 65536`), which are summed again with `p = x_0`: one
//! more pass over a row still in cache, for offset rows only. Unshifted sums are kept only
//! where they show the row is not constant (`var^ > 2 C q^`, so that the exact variance is
//! positive); other rows are summed shifted too, where a constant row gives `S1 = S2 = 0`
//! exactly and is written as exact zeros. Where it is taken:
//!
//! * `v^` is within `(TOL + 2.1 u)` of `var + eps`, relative, so `rstd` (one more rounding for
//!   the square root and one for the reciprocal) is within `TOL / 2 + 4 u < 2^-30`, relative;
//! * the shift of every output by the error of the mean is
//!   `E_m rstd <= 1.02 (h + 3) u sqrt(q / v) <= 1.02 (h + 3) u sqrt(TOL / C)`, below `2^-31`
//!   for every `h <= 2^20` (rows up to 16 million elements);
//! * `d^_i` and the subtraction of `m^` round by `u |x_i - p|` and `u |y_i|`, where
//!   `|x_i - p| rstd <= |y_i| + sqrt(q / v) <= |y_i| + 2^12`: below `2^-40 max(1, |y_i|)`;
//! * rows where `|c| <= 2^18`, `c = fl(fl(p + m^) rstd)` (RMSNorm rows: `c = 0`), are written
//!   in the direct form `fl(x_i rstd - c)`, one fused multiply-add, instead ([`Form::Direct`]):
//!   the mean `p + m^`, the product `c` and the fused operation round by `u |mean| rstd`,
//!   `u |c|` and `u |y_i|` (the product `x_i rstd` is not rounded; counting a rounding of it
//!   too, `u |x_i| rstd`, where `|x_i| rstd <= |x_i - mean| rstd + |mean| rstd <= |y_i| +
//!   2^18.01`): in all below `u (2 |y_i| + 3 * 2^18.01) < 2^-33 max(1, |y_i|)`. Constant rows
//!   (`q = 0`) keep the pivot form, where `(x_i - p) - m` is exactly 0: the fused form would
//!   leave the rounding error of `c`, not 0;
//! * gamma and beta add one rounding each in `f64` (one in all where both are present: a fused
//!   multiply-add).
//!
//! So each output before its rounding to `f32` is within `2^-29 max(1, |y_i|)` (times
//! `|gamma_i|`, plus `u |beta_i|`) of the exact value: after the rounding, within
//! `0.5 + 2^-6` units of `f32::EPSILON * max(1, |y_i|)`, against the contract's 1 unit.
//!
//! The per-row statistics that a caller keeps (`forward_with_stats`) are rounded to `f32`
//! only where the rounding is certain: the exact mean and `rstd` lie within the error bounds
//! above of the `f64` values, and if both ends of that interval round to the same `f32`, so
//! does the exact value. Otherwise they come from the exact path. Either way they are the
//! correctly rounded mean and `rstd` (up to the exact path's own `2^-50`), so saved statistics
//! are as accurate as before.

use super::isa::Simd;
use super::moments::{row_stats, RowStats};

/// Independent accumulators of each sum: element `i` of a row goes to lane `i % LANES`.
pub(crate) const LANES: usize = 16;
/// `log2(LANES)`: the depth of the tree that merges the lanes.
const TREE: usize = 4;
/// `u = 2^-53`, the unit roundoff of `f64`.
const U: f64 = f64::EPSILON / 2.0;
/// The relative error of `var + eps` the fast path accepts: `2^-30`.
const TOL: f64 = 1.0 / (1u64 << 30) as f64;

/// The statistics of an `f32` row from the fast path: `y_i = ((x_i - pivot) - shift) * rstd`.
#[derive(Debug, Clone, Copy)]
pub struct FastStats {
    pivot: f64,
    shift: f64,
    rstd: f64,
    /// `S2 / n`, for the error bound of the mean.
    q: f64,
    /// The depth `h` of the sums.
    depth: f64,
}

/// How a row of [`FastStats`] is written, before gamma and beta: each form gives, for every
/// element, exactly the bits of `fma((x - p) - m, r, -c)` with its [`parts`](Form::parts)
/// (`t - 0.0 == t` for every `f64` `t`, `-0.0` included, and `fma(a, r, -0.0) == fl(a * r)`),
/// so a writer may use the parts where a loop over forms would not vectorize.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Form {
    /// `x * r` (RMSNorm, or a row of mean exactly 0).
    Scale { r: f64 },
    /// `fma(x, r, -c)`, with `c = mean * r` (non-constant rows with
    /// `|mean| * rstd <= DIRECT_LIMIT`).
    Direct { r: f64, c: f64 },
    /// `((x - p) - m) * r`, the pivot `p` and the mean `m` of `x - p` (the other rows).
    Pivot { p: f64, m: f64, r: f64 },
}

impl Form {
    /// `[p, m, r, c]`: the form is `fma((x - p) - m, r, -c)`, bitwise.
    #[inline(always)]
    pub(crate) fn parts(self) -> [f64; 4] {
        match self {
            Form::Scale { r } => [0.0, 0.0, r, 0.0],
            Form::Direct { r, c } => [0.0, 0.0, r, c],
            Form::Pivot { p, m, r } => [p, m, r, 0.0],
        }
    }

    /// The normalized value of one element (widened to `f64`), before gamma and beta.
    #[cfg(test)]
    pub(crate) fn apply(self, x: f64) -> f64 {
        let [p, m, r, c] = self.parts();
        ((x - p) - m).mul_add(r, -c)
    }
}

/// `|mean| * rstd` up to which a row is written in the [`Form::Direct`] form (see the module
/// doc): `2^18`.
const DIRECT_LIMIT: f64 = (1u64 << 18) as f64;

impl FastStats {
    /// How the row is written: [`Form::Direct`] where `|mean| * rstd <= DIRECT_LIMIT` and the
    /// row is not constant (every nonzero RMSNorm row, and centred or moderately offset
    /// LayerNorm rows), else [`Form::Pivot`] ([`Form::Scale`] where the offset `c` is `+0`).
    #[inline(always)]
    pub(crate) fn form(&self) -> Form {
        let r = self.rstd;
        let c = (self.pivot + self.shift) * r;
        if c.to_bits() == 0 {
            Form::Scale { r }
        } else if c.abs() <= DIRECT_LIMIT && self.q != 0.0 {
            Form::Direct { r, c }
        } else {
            Form::Pivot {
                p: self.pivot,
                m: self.shift,
                r,
            }
        }
    }

    /// Whether the sums show that the row is not constant: `var^ > 2 C q^`, where the error
    /// of `var^` is at most `1.01 C q` (see the module doc), so that the exact variance is
    /// positive. Unshifted sums of a constant row are not exact, and would not write it as
    /// exact zeros; rows that fail this are summed again, shifted.
    #[inline(always)]
    fn surely_varies(&self) -> bool {
        let var = self.q - self.shift * self.shift;
        var > 2.0 * 1.01 * (3.0 * self.depth + 10.0) * U * self.q
    }

    /// The statistics a caller keeps: the mean and `rstd` rounded to `f32` where that
    /// rounding is certain (see the module doc), else those of the exact path.
    #[cold]
    pub(crate) fn recorded<const CENTER: bool>(&self, x: &[f32], eps: f64) -> RowStats {
        let mean = self.pivot + self.shift;
        let mean_err = 1.02 * (self.depth + 3.0) * U * self.q.sqrt() + 1.01 * U * mean.abs();
        let rstd_err = TOL * self.rstd;
        let certain = |v: f64, e: f64| ((v - e) as f32) == ((v + e) as f32);
        if (!CENTER || certain(mean, mean_err)) && certain(self.rstd, rstd_err) {
            let mean = if CENTER { f64::from(mean as f32) } else { 0.0 };
            let rstd = f64::from(self.rstd as f32);
            return RowStats::recorded(mean, rstd);
        }
        row_stats::<f32, CENTER>(x, eps)
    }
}

/// `x - p` (`SHIFT`), or `x` itself (where `p = 0`: `x - 0 == x` for every `x`, `-0.0`
/// included, so skipping the subtraction changes no bit).
#[inline(always)]
pub(crate) fn shifted<const SHIFT: bool>(x: f64, p: f64) -> f64 {
    if SHIFT {
        x - p
    } else {
        x
    }
}

/// Merges `L` lanes (a power of two) in a fixed pairwise tree: lane `j + w` into lane `j`,
/// `w = L/2, ..., 2, 1` (for the 16 lanes here, `w = 8, 4, 2, 1`).
#[inline(always)]
pub(crate) fn tree<const L: usize>(mut s: [f64; L]) -> f64 {
    let mut w = L / 2;
    while w > 0 {
        for j in 0..w {
            s[j] += s[j + w];
        }
        w /= 2;
    }
    s[0]
}

/// The fast statistics of a row with epsilon `eps` (finite, `>= 0`), or `None` where the bound
/// of the module doc does not hold (the row then takes the exact path). `CENTER == false`:
/// RMSNorm, no mean.
///
/// LayerNorm rows of at least [`LANES`] elements are first summed unshifted (`p = 0`, one
/// subtraction fewer per element); only where the bound refuses those sums (a mean more than
/// a few hundred standard deviations from 0, see the module doc) are they summed again,
/// shifted by `p = x_0`. Which sums a row gets depends on the row alone.
#[inline(always)]
pub(crate) fn row_stats_f32<S: Simd, const CENTER: bool>(x: &[f32], eps: f64) -> Option<FastStats> {
    let n = x.len();
    let first = *x.first()?;
    if n < LANES {
        // Short rows: one accumulator each, in order, shifted by `x_0`.
        let p = if CENTER { f64::from(first) } else { 0.0 };
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let d = shifted::<CENTER>(f64::from(v), p);
            if CENTER {
                s1 += d;
            }
            s2 = d.mul_add(d, s2);
        }
        return finish::<CENTER>(p, s1, s2, n, n, eps);
    }
    let unshifted = lane_stats::<S, CENTER, false>(x, 0.0, eps);
    if !CENTER || unshifted.is_some_and(|s| s.surely_varies()) {
        return unshifted;
    }
    lane_stats::<S, CENTER, true>(x, f64::from(first), eps)
}

/// The statistics of a row of `n >= LANES` elements from its sums in [`LANES`] lanes, shifted
/// by `p` if `SHIFT` (else `p = 0`).
#[inline(always)]
fn lane_stats<S: Simd, const CENTER: bool, const SHIFT: bool>(
    x: &[f32],
    p: f64,
    eps: f64,
) -> Option<FastStats> {
    let n = x.len();
    let mut s1 = [0.0f64; LANES];
    let mut s2 = [0.0f64; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    S::lane_sums::<CENTER, SHIFT>(chunks, p, &mut s1, &mut s2);
    for (j, &v) in tail.iter().enumerate() {
        let d = shifted::<SHIFT>(f64::from(v), p);
        if CENTER {
            s1[j] += d;
        }
        s2[j] = d.mul_add(d, s2[j]);
    }
    let depth = n.div_ceil(LANES) + TREE;
    finish::<CENTER>(p, tree(s1), tree(s2), n, depth, eps)
}

/// Rows of a group of [`short_group_stats`].
pub(crate) const GROUP: usize = 8;

/// The fast statistics of [`GROUP`] consecutive rows of `n < LANES` elements each (`x` holds
/// `GROUP * n` values), computed across the rows at once, lane `r` for row `r`, with exactly
/// the operations of [`row_stats_f32`] on each row, so that every row gets the bits it gets
/// alone. `F` is `f32` (the caller checks `F::HAS_FAST`); values are widened with `wide`.
#[inline(always)]
pub(crate) fn short_group_stats<F: crate::float::Float, const CENTER: bool>(
    x: &[F],
    n: usize,
    eps: f64,
) -> [Option<FastStats>; GROUP] {
    debug_assert!(n > 0 && n < LANES && x.len() == GROUP * n);
    let mut xt = [[0.0f64; GROUP]; LANES];
    for (r, row) in x.chunks_exact(n).enumerate() {
        for (col, v) in xt.iter_mut().zip(row) {
            col[r] = v.wide();
        }
    }
    let p: [f64; GROUP] = if CENTER { xt[0] } else { [0.0; GROUP] };
    let (mut s1, mut s2) = ([0.0f64; GROUP], [0.0f64; GROUP]);
    for col in &xt[..n] {
        for r in 0..GROUP {
            let d = shifted::<CENTER>(col[r], p[r]);
            if CENTER {
                s1[r] += d;
            }
            s2[r] = d.mul_add(d, s2[r]);
        }
    }
    // The operations of `finish`, lane by lane, so that they vectorize.
    let nf = n as f64;
    let c = bound_factor(n);
    let (mut q, mut m, mut v, mut rstd) = ([0.0; GROUP], [0.0; GROUP], [0.0; GROUP], [0.0; GROUP]);
    for r in 0..GROUP {
        q[r] = s2[r] / nf;
        let var = if CENTER {
            m[r] = s1[r] / nf;
            q[r] - m[r] * m[r]
        } else {
            q[r]
        };
        v[r] = var + eps;
        rstd[r] = 1.0 / v[r].sqrt();
    }
    std::array::from_fn(|r| {
        accepted(c, q[r], v[r]).then_some(FastStats {
            pivot: p[r],
            shift: m[r],
            rstd: rstd[r],
            q: q[r],
            depth: n as f64,
        })
    })
}

/// `C = 1.01 (3h + 10) u` for sums of depth `h` (see the module doc).
#[inline(always)]
fn bound_factor(depth: usize) -> f64 {
    1.01 * (3.0 * depth as f64 + 10.0) * U
}

/// Whether the fast statistics meet the bound: `C q <= TOL v` and `0 < v < inf`, written so
/// that a NaN anywhere fails (an infinity in the row makes `v` infinite or NaN).
#[inline(always)]
fn accepted(c: f64, q: f64, v: f64) -> bool {
    c * q <= TOL * v && v > 0.0 && v < f64::INFINITY
}

/// The statistics from the sums `S1`, `S2` of a row of `n > 0` elements shifted by `p`,
/// computed in a tree of depth `depth`, or `None` where the bound does not hold.
#[inline(always)]
fn finish<const CENTER: bool>(
    p: f64,
    s1: f64,
    s2: f64,
    n: usize,
    depth: usize,
    eps: f64,
) -> Option<FastStats> {
    let nf = n as f64;
    let q = s2 / nf;
    let (m, var) = if CENTER {
        let m = s1 / nf;
        (m, q - m * m)
    } else {
        (0.0, q)
    };
    let v = var + eps;
    if !accepted(bound_factor(depth), q, v) {
        return None;
    }
    let depth = depth as f64;
    Some(FastStats {
        pivot: p,
        shift: m,
        rstd: 1.0 / v.sqrt(),
        q,
        depth,
    })
}

#[cfg(test)]
mod tests {
    use super::super::isa::Baseline;
    use super::*;

    #[test]
    fn the_tolerance_is_two_to_the_minus_thirty() {
        assert_eq!(TOL, 2f64.powi(-30));
        assert_eq!(1 << TREE, LANES);
    }

    #[test]
    fn rows_outside_the_bound_are_refused() {
        // NaN and infinity.
        assert!(row_stats_f32::<Baseline, true>(&[1.0, f32::NAN, 2.0], 0.0).is_none());
        assert!(row_stats_f32::<Baseline, false>(&[1.0, f32::INFINITY], 1e-5).is_none());
        // A constant row with eps = 0: v = 0.
        assert!(row_stats_f32::<Baseline, true>(&[3.5; 40], 0.0).is_none());
        assert!(row_stats_f32::<Baseline, false>(&[0.0; 40], 0.0).is_none());
        // An empty row.
        assert!(row_stats_f32::<Baseline, true>(&[], 1e-5).is_none());
        // A long row whose mean is far from 0 (the unshifted sums are refused) and from its
        // first element (so are the sums shifted by it): q / var ~ n either way.
        let mut x = vec![1000.0f32; 1 << 16];
        x[0] = 1001.0;
        assert!(row_stats_f32::<Baseline, true>(&x, 0.0).is_none());
        // The same row with its outlier elsewhere is accepted, shifted by its first element.
        x.swap(0, 5);
        let s = row_stats_f32::<Baseline, true>(&x, 0.0).expect("shifted sums accepted");
        assert_eq!(s.pivot, 1000.0);
    }

    #[test]
    fn rows_near_zero_are_summed_unshifted_and_offset_rows_shifted() {
        // Mean near 0: the unshifted sums are accepted, whatever the first element is.
        let mut x: Vec<f32> = (0..768)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.02)
            .collect();
        x[0] = 40.0;
        let s = row_stats_f32::<Baseline, true>(&x, 1e-5).expect("fast path");
        assert_eq!(s.pivot, 0.0);
        // The same row offset by 1e4 (|mean| ~ 1e4 std): shifted by its first element.
        let y: Vec<f32> = x.iter().map(|v| v + 1e4).collect();
        let s = row_stats_f32::<Baseline, true>(&y, 1e-5).expect("fast path");
        assert_eq!(s.pivot, f64::from(y[0]));
        // RMSNorm never shifts.
        let s = row_stats_f32::<Baseline, false>(&y, 1e-5).expect("fast path");
        assert_eq!(s.pivot, 0.0);
    }

    #[test]
    fn constant_rows_with_eps_normalize_to_exact_zeros() {
        // Small and large offsets, short rows and rows past the lane count: the sums shifted
        // by the first element are exactly 0, and the row is written in the pivot form (the
        // direct form would leave the rounding error of `mean * rstd`).
        for n in [5, 33, 768] {
            for v in [0.75f32, 0.1, -3.7, 1e6 + 0.5] {
                let s = row_stats_f32::<Baseline, true>(&vec![v; n], 1e-5).expect("fast path");
                assert!(matches!(s.form(), Form::Pivot { .. }), "{v} (n = {n})");
                assert_eq!(s.q, 0.0, "{v} (n = {n})");
                let y = s.form().apply(f64::from(v));
                assert_eq!(y.to_bits(), 0.0f64.to_bits(), "{v} (n = {n})");
            }
        }
    }
}
