//! The working precision of the backward pass: `f64` for `f32` input, and double-double (an
//! unevaluated sum of two `f64`, about 106 bits) for `f64` input.
//!
//! The input gradient subtracts terms that can be far larger than their difference; evaluated in
//! twice the precision of the data, that cancellation costs nothing visible in the result.
//! Products use an exact `mul_add` (a fused multiply-add where the instruction set has one, an
//! exact library call elsewhere): the result is exact either way, so every instruction set
//! gives the same bits.

use super::sum::two_sum;

/// The arithmetic the backward kernel needs.
pub trait Wide: Copy + Send + Sync {
    /// Whether values have a low part at all (`false` for plain `f64`).
    const HAS_LO: bool;
    /// `v` exactly.
    fn of(v: f64) -> Self;
    /// The unevaluated sum `hi + lo` (normalized).
    fn from_parts(hi: f64, lo: f64) -> Self;
    /// The value as `hi + lo`, `lo` zero for plain `f64`.
    fn parts(self) -> (f64, f64);
    /// The value rounded to `f64`.
    fn round(self) -> f64;
    /// `self + o`.
    fn add(self, o: Self) -> Self;
    /// `self - o`.
    fn sub(self, o: Self) -> Self;
    /// `self * o`.
    fn mul(self, o: Self) -> Self;
    /// `self / o`.
    fn div(self, o: Self) -> Self;
    /// The square root.
    fn sqrt(self) -> Self;
    /// The values as plain `f64`, when that is what they are.
    fn as_plain(values: &[Self]) -> Option<&[f64]>;
}

impl Wide for f64 {
    const HAS_LO: bool = false;
    #[inline(always)]
    fn of(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn from_parts(hi: f64, lo: f64) -> Self {
        hi + lo
    }
    #[inline(always)]
    fn parts(self) -> (f64, f64) {
        (self, 0.0)
    }
    #[inline(always)]
    fn round(self) -> f64 {
        self
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        self / o
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn as_plain(values: &[Self]) -> Option<&[f64]> {
        Some(values)
    }
}

/// A double-double number `hi + lo` with `|lo| <= ulp(hi) / 2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DoubleF64 {
    hi: f64,
    lo: f64,
}

/// `s + e == a + b` exactly, given `|a| >= |b|` (or `a == 0`).
#[inline(always)]
fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

/// `p + e == a * b` exactly (barring overflow and underflow).
#[inline(always)]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

impl DoubleF64 {
    #[inline(always)]
    fn new(hi: f64, lo: f64) -> Self {
        let (hi, lo) = fast_two_sum(hi, lo);
        DoubleF64 { hi, lo }
    }

    /// `self * v` for a plain `f64`.
    #[inline(always)]
    fn mul_f64(self, v: f64) -> Self {
        let (p, e) = two_prod(self.hi, v);
        DoubleF64::new(p, e + self.lo * v)
    }
}

impl Wide for DoubleF64 {
    const HAS_LO: bool = true;
    #[inline(always)]
    fn of(v: f64) -> Self {
        DoubleF64 { hi: v, lo: 0.0 }
    }
    #[inline(always)]
    fn from_parts(hi: f64, lo: f64) -> Self {
        let (hi, lo) = two_sum(hi, lo);
        DoubleF64 { hi, lo }
    }
    #[inline(always)]
    fn parts(self) -> (f64, f64) {
        (self.hi, self.lo)
    }
    #[inline(always)]
    fn round(self) -> f64 {
        self.hi + self.lo
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        let (s, e) = two_sum(self.hi, o.hi);
        let (t, f) = two_sum(self.lo, o.lo);
        let (s, e) = fast_two_sum(s, e + t);
        DoubleF64::new(s, e + f)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.add(DoubleF64 {
            hi: -o.hi,
            lo: -o.lo,
        })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        let (p, e) = two_prod(self.hi, o.hi);
        DoubleF64::new(p, e + (self.hi * o.lo + self.lo * o.hi))
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // Long division with two correction steps: relative error about 2^-104.
        let q1 = self.hi / o.hi;
        let r = self.sub(o.mul_f64(q1));
        let q2 = r.hi / o.hi;
        let r = r.sub(o.mul_f64(q2));
        let q3 = r.hi / o.hi;
        let (q, e) = fast_two_sum(q1, q2);
        DoubleF64::new(q, e + q3)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        if self.hi <= 0.0 {
            return DoubleF64::of(self.hi.sqrt());
        }
        let s = self.hi.sqrt();
        let (p, e) = two_prod(s, s);
        let r = (((self.hi - p) - e) + self.lo) / (2.0 * s);
        DoubleF64::new(s, r)
    }
    #[inline(always)]
    fn as_plain(_: &[Self]) -> Option<&[f64]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dd(v: f64) -> DoubleF64 {
        DoubleF64::of(v)
    }

    #[test]
    fn double_double_carries_what_f64_rounds_away() {
        // (1 + 2^-60) - 1 = 2^-60 exactly.
        let a = dd(1.0).add(dd(2f64.powi(-60)));
        assert_eq!(a.sub(dd(1.0)).round(), 2f64.powi(-60));
        // 1/3 * 3 = 1 to about 2^-104.
        let third = dd(1.0).div(dd(3.0));
        let one = third.mul(dd(3.0));
        assert!((one.hi - 1.0) + one.lo <= 2f64.powi(-100));
        // sqrt(2)^2 = 2 to about 2^-104.
        let r = dd(2.0).sqrt();
        let two = r.mul(r);
        assert_eq!(two.hi, 2.0);
        assert!(two.lo.abs() <= 2f64.powi(-100));
    }

    #[test]
    fn products_are_exact() {
        let a = 1.0 + f64::EPSILON;
        let p = dd(a).mul(dd(a));
        // (1 + e)^2 = 1 + 2e + e^2, which needs more than 53 bits.
        assert_eq!(p.hi, 1.0 + 2.0 * f64::EPSILON);
        assert_eq!(p.lo, f64::EPSILON * f64::EPSILON);
    }
}
