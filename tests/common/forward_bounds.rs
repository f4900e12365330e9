//! The tolerances of `tests/accuracy.rs` (forward and moments), in the units of its module doc.
//! `examples/accuracy.rs` reports its errors against the same tolerances.
//!
//! The example includes this file with `#[path = "../tests/common/forward_bounds.rs"]` next to
//! `mod exact;` and `mod harness;`, as `tests/common/mod.rs` declares them: it refers to them
//! only as `super::exact` and `super::harness`.

use ndarray_layernorm::Float;

use super::exact::Format;
use super::harness::format;

/// Forward target for `f32`: one unit (computed in `f64`, rounded once: ~0.5 expected).
pub const F32_FORWARD_UNITS: f64 = 1.0;
/// Forward target for `f64`, on every row: offset rows (`|mean| > std`) included, which the
/// library shifts by the mean's low part too and normalizes by the variance about the exact mean
/// (see `src/kernels/moments.rs`).
pub const F64_FORWARD_UNITS: f64 = 2.0;
/// `rstd` of `f64` rows (`forward_with_stats`), in ulps of the exact `1 / sqrt(var + eps)`.
pub const F64_RSTD_ULPS: f64 = 1.0;
/// `f64` moments must be correctly rounded.
pub const F64_MOMENT_ULPS: f64 = 0.5;
/// `f32` moments are computed in `f64` and rounded again to `f32`. The `f64` value is within
/// 1 ulp64 = 2^-29 ulp32 of the exact value (it is correctly rounded, or faithful); rounding it
/// to `f32` adds at most 0.5 ulp32. Double rounding can therefore exceed 0.5 ulp32 only by that
/// `f64` error (when the `f64` value lands on an `f32` midpoint and the tie goes the other way).
pub const F32_MOMENT_ULPS: f64 = 0.5 + 1.0 / (1u64 << 29) as f64;

/// The moments tolerance of format `F`: [`F32_MOMENT_ULPS`] or [`F64_MOMENT_ULPS`].
pub fn moment_ulps<F: Float>() -> f64 {
    match format::<F>() {
        Format::F32 => F32_MOMENT_ULPS,
        Format::F64 => F64_MOMENT_ULPS,
    }
}

/// Reference values of one element (nearest `f64`s), for tolerance functions.
pub struct Elem {
    pub y: f64,
    pub gamma: f64,
    pub z: f64,
}

/// Forward tolerance without gamma/beta: [`F32_FORWARD_UNITS`] or [`F64_FORWARD_UNITS`].
pub fn forward_tol<F: Float>(_: &Elem) -> f64 {
    match format::<F>() {
        Format::F32 => F32_FORWARD_UNITS,
        Format::F64 => F64_FORWARD_UNITS,
    }
}

/// Tolerance of `z = y * gamma + beta`.
///
/// `f32`: computed in `f64` and rounded once, so [`F32_FORWARD_UNITS`].
///
/// `f64`: with `y'` within `t` units of `y` (`t` = [`F64_FORWARD_UNITS`]) and the library forming
/// `fl(fl(y' * gamma) + beta)` (or one fused multiply-add), each rounding being relative
/// `EPSILON / 2`:
///
/// ```text
/// |z' - z| <= |gamma| |y' - y| + EPSILON/2 |y' gamma| + EPSILON/2 |z'|
///          <= EPSILON * ((t + 1/2) |gamma| max(1, |y|) + max(1, |z|) / 2)    (to first order)
/// ```
///
/// so in units of `EPSILON * max(1, |z|)`: `(t + 1/2) * kappa + 1/2` with
/// `kappa = |gamma| max(1, |y|) / max(1, |z|)`: 3 units when there is no cancellation
/// (`kappa <= 1`), more when `y * gamma` and `beta` cancel. `1e-9` covers second-order terms.
pub fn affine_tol<F: Float>(e: &Elem) -> f64 {
    match format::<F>() {
        Format::F32 => F32_FORWARD_UNITS,
        Format::F64 => {
            let t = F64_FORWARD_UNITS;
            let kappa = e.gamma.abs() * e.y.abs().max(1.0) / e.z.abs().max(1.0);
            (t + 0.5) * kappa + 0.5 + 1e-9
        }
    }
}
