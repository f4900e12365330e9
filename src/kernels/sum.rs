//! Compensated summation and correctly rounded division by the row length.
//!
//! Every sum in the crate goes through [`compensated_sum`]: eight independent TwoSum lanes, so
//! that the loop vectorizes without reassociating anything, then a fixed-order merge of the
//! lanes. The order depends only on the row length, never on the layout, the instruction set or
//! the thread count, so the bits of every result are reproducible.

use crate::float::Float;

/// Number of independent accumulators for rows longer than [`SHORT`]: element `i` of a row
/// goes to lane `i % LANES`. 64 lanes keep enough independent TwoSum chains in flight to hide
/// the latency of the additions, and the per-lane loop is an element-wise loop that LLVM
/// vectorizes for any instruction set without reordering anything.
const LANES: usize = 64;
/// The lanes are folded down to this many before the final sequential merge.
const FOLD: usize = 8;
/// Rows up to this long are summed sequentially, element by element (and, in blocks of rows,
/// many rows at once: see `moments::short_rows_stats`).
pub(crate) const SHORT: usize = 64;

/// Knuth's TwoSum: `s + e == a + b` exactly, with `s = fl(a + b)`. Branch-free, 6 flops.
#[inline(always)]
pub(crate) fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// The sum of `f(x_i)` as an unevaluated pair `hi + lo` with `hi = fl(hi + lo)`.
///
/// The error of `hi + lo` is of the order of `n * 2^-106 * sum |f(x_i)|`, far below half an ulp
/// of the sum unless it cancels catastrophically, so `hi` is the correctly rounded sum in all but
/// contrived cases. Non-finite terms (or an overflow) make `hi` or `lo` non-finite.
#[inline(always)]
pub(crate) fn compensated_sum<F: Float>(x: &[F], f: impl Fn(f64) -> f64) -> (f64, f64) {
    compensated_sum_zip(x, x, |v, _| f(v))
}

/// The compensated sum of `f(a_i, b_i)` over two rows of the same length (see
/// [`compensated_sum`]).
///
/// The order of every operation depends on the row length alone: rows of at most [`SHORT`]
/// elements are summed in order; longer rows go to [`LANES`] TwoSum lanes, which are folded
/// pairwise into [`FOLD`] lanes and merged in order.
#[inline(always)]
pub(crate) fn compensated_sum_zip<A: Float, B: Float>(
    a: &[A],
    b: &[B],
    f: impl Fn(f64, f64) -> f64,
) -> (f64, f64) {
    debug_assert_eq!(a.len(), b.len());
    if a.len() <= SHORT {
        let (mut hi, mut lo) = (0.0, 0.0);
        for (va, vb) in a.iter().zip(b) {
            accumulate(&mut hi, &mut lo, f(va.wide(), vb.wide()));
        }
        return two_sum(hi, lo);
    }
    let mut s = [0.0f64; LANES];
    let mut c = [0.0f64; LANES];
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    for (ca, cb) in a_chunks.iter().zip(b_chunks) {
        for j in 0..LANES {
            let (t, e) = two_sum(s[j], f(ca[j].wide(), cb[j].wide()));
            s[j] = t;
            c[j] += e;
        }
    }
    for (j, (va, vb)) in a_tail.iter().zip(b_tail).enumerate() {
        let (t, e) = two_sum(s[j], f(va.wide(), vb.wide()));
        s[j] = t;
        c[j] += e;
    }
    // Fold lane j + FOLD * k into lane j, k = 1, 2, ...: element-wise, so it vectorizes too.
    for k in 1..LANES / FOLD {
        for j in 0..FOLD {
            let (t, e) = two_sum(s[j], s[k * FOLD + j]);
            s[j] = t;
            c[j] += e + c[k * FOLD + j];
        }
    }
    let mut hi = s[0];
    let mut lo = c[0];
    for j in 1..FOLD {
        let (t, e) = two_sum(hi, s[j]);
        hi = t;
        lo += e + c[j];
    }
    two_sum(hi, lo)
}

/// Adds `v` to the compensated accumulator `(hi, lo)`.
#[inline(always)]
pub(crate) fn accumulate(hi: &mut f64, lo: &mut f64, v: f64) {
    let (t, e) = two_sum(*hi, v);
    *hi = t;
    *lo += e;
}

/// Clears the low 27 bits of the significand: a value with at most 26 significant bits.
#[inline(always)]
fn high_half(v: f64) -> f64 {
    f64::from_bits(v.to_bits() & !((1u64 << 27) - 1))
}

/// `fl((hi + lo) / n)`, rounded once (up to ties that no realistic input reaches).
#[inline]
pub(crate) fn div_by_len(hi: f64, lo: f64, n: usize) -> f64 {
    div_by_len_dd(hi, lo, n).0
}

/// `(hi + lo) / n` as `(q, e)`: `q = fl((hi + lo) / n)`, rounded once (up to ties that no
/// realistic input reaches), and `e` the part of the quotient that `q` leaves out (to about
/// `2^-53 |e|`), for rounding `q + e` correctly to a narrower type.
///
/// `q0 = fl(hi / n)` is corrected by the exact remainder `hi - q0 * n`. For `n < 2^26` the
/// product `q0 * n` is split exactly into two products of at most 53 bits each, so no FMA is
/// needed (on the baseline x86-64 target `mul_add` is a library call); longer rows use
/// `mul_add`, once per row.
#[inline]
pub(crate) fn div_by_len_dd(hi: f64, lo: f64, n: usize) -> (f64, f64) {
    let nf = n as f64;
    let q = hi / nf;
    let r = if n < (1 << 26) {
        let q_hi = high_half(q);
        let q_lo = q - q_hi;
        // Both products are exact: 26 + 26 and 27 + 26 significant bits.
        let p1 = q_hi * nf;
        let p2 = q_lo * nf;
        (hi - p1) - p2
    } else {
        (-q).mul_add(nf, hi)
    };
    two_sum(q, (r + lo) / nf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sum_is_error_free() {
        let (s, e) = two_sum(1.0, 1e-20);
        assert_eq!(s, 1.0);
        assert_eq!(e, 1e-20);
    }

    #[test]
    fn compensated_sum_recovers_what_a_plain_sum_loses() {
        // 1 + 2^-60 (x 16) - 1: a plain sum returns 0, the exact sum is 2^-56.
        let mut x = vec![1.0f64];
        x.extend(std::iter::repeat_n(2f64.powi(-60), 16));
        x.push(-1.0);
        let (hi, lo) = compensated_sum(&x, |v| v);
        assert_eq!(hi, 2f64.powi(-56));
        assert_eq!(lo, 0.0);
    }

    #[test]
    fn division_by_length_rounds_once() {
        // (2.9 + tiny)/5 where fl(2.9)/5 and the exact quotient round differently would be
        // contrived; check the identity cases and a case where the low part matters.
        assert_eq!(div_by_len(7.0, 0.0, 1), 7.0);
        assert_eq!(div_by_len(0.3, 0.0, 3), 0.3 / 3.0);
        // hi + lo = 1 + 2^-60 split across the pair: dividing hi alone by 3 gives
        // 0.333...33 (rounded down); the correction by lo must not change a value whose
        // exact quotient is far from a tie.
        let m = div_by_len(1.0, 2f64.powi(-60), 3);
        assert_eq!(m, 1.0 / 3.0);
        // The low part decides the rounding: (3 + 3 * 2^-53 + ...) / 3.
        let hi = 3.0;
        let lo = 3.0 * 2f64.powi(-52) * 0.75; // exact quotient 1 + 0.75 ulp(1)
        assert_eq!(div_by_len(hi, lo, 3), 1.0 + f64::EPSILON);
    }
}
