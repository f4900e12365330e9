//! Helpers shared by `forward.rs`, `errors.rs`, `layouts.rs`, `properties.rs` and
//! `storage_kinds.rs`. Included with `#[path = "common/support.rs"] mod support;`, so it does not
//! depend on `tests/common/mod.rs`.
//!
//! Nothing here calls the library: expected values are computed independently, in `f64`.
#![allow(dead_code)] // Every test file uses a different subset.

use std::fmt::{Debug, Display};

use ndarray::{Array, Array2, ArrayRef, Dimension, ShapeBuilder};
use ndarray_layernorm::Float;
use ndarray_rand::rand_distr::Uniform;
use ndarray_rand::RandomExt;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The element types under test, with the few conversions the tests need.
pub trait TestFloat: Float + Debug + Display + Send + Sync + 'static {
    /// The machine epsilon of the type, as `f64`.
    const EPS: f64;
    /// The type's name, for assertion messages.
    const NAME: &'static str;
    /// The value rounded to this type.
    fn of(v: f64) -> Self;
    /// The value as `f64` (exact).
    fn f64(self) -> f64;
    /// The raw bits, widened to `u64`.
    fn bits(self) -> u64;
}

impl TestFloat for f32 {
    const EPS: f64 = f32::EPSILON as f64;
    const NAME: &'static str = "f32";
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        f64::from(self)
    }
    fn bits(self) -> u64 {
        u64::from(self.to_bits())
    }
}

impl TestFloat for f64 {
    const EPS: f64 = f64::EPSILON;
    const NAME: &'static str = "f64";
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
    fn bits(self) -> u64 {
        self.to_bits()
    }
}

/// A tolerance of `ulps` units of `F`'s machine epsilon, scaled by `max(|expected|, 1)`.
pub fn tol<F: TestFloat>(ulps: f64, expected: f64) -> f64 {
    ulps * F::EPS * expected.abs().max(1.0)
}

/// Asserts that every element of `actual` is within [`tol`]`(ulps, e)` of the matching element `e`
/// of `expected` (given in logical order, as `f64`).
#[track_caller]
pub fn assert_close<F: TestFloat, D: Dimension>(
    actual: &ArrayRef<F, D>,
    expected: &[f64],
    ulps: f64,
) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{}: length of {actual:?} differs from {expected:?}",
        F::NAME
    );
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a.f64() - e).abs();
        assert!(
            err <= tol::<F>(ulps, e),
            "{}: element {i} is {a:e}, expected {e:e} (error {err:e} > {ulps} ulps)\n{actual:?}",
            F::NAME
        );
    }
}

/// Whether `a` and `b` are the same value bit for bit, except that any two NaNs count as equal.
pub fn same_bits<F: TestFloat>(a: F, b: F) -> bool {
    (a.is_nan() && b.is_nan()) || a.bits() == b.bits()
}

/// Asserts that `actual` and `expected` have the same shape and bitwise identical elements
/// (NaNs compare equal whatever their payload; `0.0` and `-0.0` differ).
#[track_caller]
pub fn assert_bitwise_eq<F: TestFloat, D: Dimension>(
    actual: &ArrayRef<F, D>,
    expected: &ArrayRef<F, D>,
    what: &str,
) {
    assert_eq!(
        actual.shape(),
        expected.shape(),
        "{} {what}: shapes differ",
        F::NAME
    );
    for ((idx, &a), &e) in actual.indexed_iter().zip(expected.iter()) {
        assert!(
            same_bits(a, e),
            "{} {what}: element {idx:?} is {a:e} ({:#x}), expected {e:e} ({:#x})",
            F::NAME,
            a.bits(),
            e.bits()
        );
    }
}

/// `shape` filled with uniform values in `[-4, 4)` drawn from a generator seeded with `seed`,
/// in standard layout.
pub fn random_array<F: TestFloat, Sh: ShapeBuilder>(shape: Sh, seed: u64) -> Array<F, Sh::Dim> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = Uniform::new(-4.0f64, 4.0).expect("valid range");
    Array::<f64, _>::random_using(shape, dist, &mut rng).mapv(F::of)
}

/// A `rows x cols` standard-layout matrix of seeded random data whose rows have different offsets
/// and scales (so that the statistics are not all alike and cancellation matters).
pub fn random_rows<F: TestFloat>(rows: usize, cols: usize, seed: u64) -> Array2<F> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = Uniform::new(-1.0f64, 1.0).expect("valid range");
    let u = Array2::<f64>::random_using((rows, cols), dist, &mut rng);
    let mut out = Array2::<F>::zeros((rows, cols));
    for (i, (mut o, r)) in out.rows_mut().into_iter().zip(u.rows()).enumerate() {
        let offset = (i as f64 - rows as f64 / 2.0) * 37.25;
        let scale = [1.0, 0.001, 250.0, 3.5][i % 4];
        for (o, &v) in o.iter_mut().zip(r) {
            *o = F::of(offset + scale * v);
        }
    }
    out
}

/// A Fortran-order (column-major) copy of `x`: the same logical array, other memory layout.
pub fn fortran_copy<F: TestFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Array<F, D> {
    let mut out = Array::<F, D>::zeros(x.raw_dim().f());
    out.assign(x);
    out
}

/// Mean and biased variance of `row`, two-pass in `f64` (independent of the library).
pub fn mean_var(row: impl IntoIterator<Item = f64> + Clone) -> (f64, f64) {
    let n = row.clone().into_iter().count() as f64;
    let mean = row.clone().into_iter().sum::<f64>() / n;
    let var = row
        .into_iter()
        .map(|v| (v - mean) * (v - mean))
        .sum::<f64>()
        / n;
    (mean, var)
}
