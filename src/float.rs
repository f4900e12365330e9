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
    }
}
