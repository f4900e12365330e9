//! The element types the crate works with.

use ndarray::NdFloat;
use num_traits::FromPrimitive;

/// The floating-point element types supported by the crate: `f32` and `f64`.
///
/// The trait is sealed: it cannot be implemented outside this crate, so it can grow without a
/// breaking change. All statistics are computed in `f64` (with compensated sums), whatever `F` is;
/// `f32` results are rounded once, at the end.
pub trait Float: NdFloat + FromPrimitive + private::Sealed {}

impl Float for f32 {}
impl Float for f64 {}

pub(crate) mod private {
    /// Conversions to and from the `f64` working precision. Crate-internal.
    pub trait Sealed: Copy {
        /// The working precision of the backward pass.
        type Wide: crate::kernels::Wide;
        /// The value as `f64` (exact for `f32` and `f64`).
        fn wide(self) -> f64;
        /// `v` rounded to `Self` (round to nearest, ties to even).
        fn narrow(v: f64) -> Self;
        /// `hi + lo` (with `hi = fl(hi + lo)`) rounded to `Self` once: for `f32`, `hi` is first
        /// rounded to odd towards `hi + lo`, so that a tie in `f32` is decided by `lo` and not
        /// by a second rounding.
        fn narrow_dd(hi: f64, lo: f64) -> Self;
    }

    impl Sealed for f32 {
        type Wide = f64;
        #[inline(always)]
        fn wide(self) -> f64 {
            f64::from(self)
        }
        #[inline(always)]
        fn narrow(v: f64) -> Self {
            v as f32
        }
        #[inline]
        fn narrow_dd(hi: f64, lo: f64) -> Self {
            let mut v = hi;
            if lo != 0.0 && v.is_finite() && v.to_bits() & 1 == 0 {
                // Round to odd: the f64 neighbour of `hi` on the side of `lo` (|lo| is at most
                // half an ulp of `hi`, so `hi + lo` lies between the two).
                let bits = v.to_bits();
                v = f64::from_bits(if (lo > 0.0) == (v > 0.0) {
                    bits + 1
                } else {
                    bits - 1
                });
            }
            v as f32
        }
    }

    impl Sealed for f64 {
        type Wide = crate::kernels::DoubleF64;
        #[inline(always)]
        fn wide(self) -> f64 {
            self
        }
        #[inline(always)]
        fn narrow(v: f64) -> Self {
            v
        }
        #[inline(always)]
        fn narrow_dd(hi: f64, _lo: f64) -> Self {
            hi
        }
    }
}
