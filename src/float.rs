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
    use crate::kernels::{row_stats_f32, FastStats, RowStats, Simd};

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
        /// The statistics of a row from the fast path of this type, where it has one and the
        /// row meets its bound (`f32`: see `kernels::fast`); `None` sends the row to the exact
        /// path.
        fn fast_stats<S: Simd, const CENTER: bool>(x: &[Self], eps: f64) -> Option<FastStats>;
        /// Whether [`fast_stats`](Self::fast_stats) can return anything.
        const HAS_FAST: bool;
        /// The statistics a caller keeps of a row that took the fast path.
        fn fast_recorded<const CENTER: bool>(s: &FastStats, x: &[Self], eps: f64) -> RowStats;
        /// The values as `f32`, where they are (the fast backward path of `f32` rows).
        fn as_f32(v: &[Self]) -> Option<&[f32]>;
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
        const HAS_FAST: bool = true;
        #[inline(always)]
        fn fast_stats<S: Simd, const CENTER: bool>(x: &[Self], eps: f64) -> Option<FastStats> {
            row_stats_f32::<S, CENTER>(x, eps)
        }
        #[inline]
        fn fast_recorded<const CENTER: bool>(s: &FastStats, x: &[Self], eps: f64) -> RowStats {
            s.recorded::<CENTER>(x, eps)
        }
        #[inline(always)]
        fn as_f32(v: &[Self]) -> Option<&[f32]> {
            Some(v)
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
        /// No fast path: `f64` rows need compensated sums to meet their contract.
        const HAS_FAST: bool = false;
        #[inline(always)]
        fn fast_stats<S: Simd, const CENTER: bool>(_: &[Self], _: f64) -> Option<FastStats> {
            None
        }
        #[inline]
        fn fast_recorded<const CENTER: bool>(_: &FastStats, x: &[Self], eps: f64) -> RowStats {
            crate::kernels::row_stats::<f64, CENTER>(x, eps)
        }
        #[inline(always)]
        fn as_f32(_: &[Self]) -> Option<&[f32]> {
            None
        }
    }
}
