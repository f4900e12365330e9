//! Conformance with the ONNX operators `LayerNormalization` (opset 17) and
//! `RMSNormalization` (opset 23, its first version), mirroring the cases that ONNX's own backend
//! test generator (`onnx/backend/test/case/node/layernormalization.py` and
//! `rmsnormalization.py`) enumerates.
//!
//! # What the operators compute
//! Both take `X`, `Scale` and (`LayerNormalization` only, optional) `B`, and the attributes
//! `axis` (default -1; a negative value counts from the end), `epsilon` (a 32-bit float, default
//! `1e-5`) and `stash_type`. They normalize over `normalized_axes = [axis, rank)`, i.e. over each
//! block of `X` flattened from `axis` on (a "row"); `Scale` and `B` have the shape
//! `X.shape[axis:]`:
//!
//! ```text
//! LayerNormalization:  Mean = ReduceMean(X), D = X - Mean, Var = ReduceMean(D * D),
//!                      InvStdDev = 1 / Sqrt(Var + epsilon), Y = D * InvStdDev * Scale + B
//! RMSNormalization:    RMS = Sqrt(ReduceMean(X * X) + epsilon), Y = X / RMS * Scale
//! ```
//!
//! `LayerNormalization` also has the optional outputs `Mean` and `InvStdDev`, of shape
//! `X.shape[:axis] + [1] * (rank - axis)`.
//!
//! # How they are mirrored
//! * ONNX `axis` becomes the crate's `with_trailing_axes(k)` through
//!   [`trailing_axes_of_onnx_axis`]; a case without the attribute uses the layer's default of one
//!   trailing axis, which is ONNX's default `axis = -1`.
//! * `epsilon` is an ONNX float attribute, so its value is the `f32` one (`0.1f32`, `1e-5f32`),
//!   widened exactly to `f64` for `f64` data, as ONNX's function body casts it to the stash type.
//! * `Mean` and `InvStdDev` are the crate's [`Stats`](ndarray_layernorm::Stats), whose shape is
//!   `X.shape[:axis] + [1] * (k - 1)`: one more axis of length 1 at the end gives ONNX's shape,
//!   which is checked.
//! * ONNX's generator draws `X`, `Scale` and `B` from `randn` as `float32`, with `X` of shape
//!   `(3, 4)` for the 2-D cases, `(2, 3, 5)` with `epsilon = 0.1` for the 3-D ones and
//!   `(2, 3, 4, 5)` for the 4-D and default-axis ones, and every axis in `-rank..rank`. The same
//!   cases run here for `f32` (ONNX's default `stash_type = 1`, `FLOAT`, which the crate exceeds
//!   by computing in `f64`) and for `f64` (`stash_type = 11`, `DOUBLE`: the computation in double
//!   precision), with `N(0, 1)` draws from a generator seeded by the case's name. A few cases
//!   without `B` are added, which ONNX's generator lacks. For `RMSNormalization`, which has no
//!   statistics outputs, the crate's `1 / RMS` is checked too, with ONNX's reduction shape.
//! * ONNX compares against a NumPy evaluation of the formulas in the data's precision with a
//!   loose tolerance. Here the reference follows the same formulas in more precision than the
//!   data: for `f32` data a plain `f64` evaluation ([`plain_reference`]), for `f64` data exact
//!   rational arithmetic with one square root to 200 bits ([`exact_reference`]). Neither calls
//!   the crate. The tolerances follow from the crate's documented accuracy (see [`F32_UNITS`]
//!   and [`exact_reference`]).
//!
//! Errors are measured in units of `F::EPSILON * max(1, |reference|)`. Run with `--nocapture`
//! to see the largest error of each case.

mod common;

use std::fmt::{Debug, Display};

use common::forward_bounds::F64_FORWARD_UNITS;
use ndarray::{ArrayD, Axis, Dimension, IxDyn};
use ndarray_layernorm::{Float, LayerNorm, RmsNorm};
use ndarray_rand::rand_distr::StandardNormal;
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The default of ONNX's `epsilon` attribute (a 32-bit float) for both operators.
const ONNX_DEFAULT_EPSILON: f32 = 1e-5;

/// The default of ONNX's `axis` attribute for both operators.
const ONNX_DEFAULT_AXIS: i64 = -1;

/// The number of trailing axes, `k` in `with_trailing_axes(k)`, that ONNX's `axis` attribute
/// normalizes over for an input of rank `rank`, or `None` if ONNX rejects that axis (it must be
/// in `-rank..rank`).
///
/// ONNX normalizes over the axes `[axis, rank)`, with a negative `axis` counting from the end
/// (`axis + rank`): that is `rank - axis` axes for `axis >= 0` and `-axis` axes for `axis < 0`.
fn trailing_axes_of_onnx_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = i64::try_from(rank).ok()?;
    if !(-rank..rank).contains(&axis) {
        return None;
    }
    let k = if axis >= 0 { rank - axis } else { -axis };
    usize::try_from(k).ok()
}

// ----------------------------------------------------------------------------------------------
// Cases.

/// The ONNX operator a case exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `LayerNormalization`, mirrored by [`LayerNorm`].
    Layer,
    /// `RMSNormalization`, mirrored by [`RmsNorm`].
    Rms,
}

/// One ONNX test case: the operator, the shape of `X` and the node's attributes and inputs.
#[derive(Clone, Copy, Debug)]
struct Case {
    op: Op,
    shape: &'static [usize],
    /// The `axis` attribute; `None` when the node omits it.
    axis: Option<i64>,
    /// The `epsilon` attribute; `None` when the node omits it.
    epsilon: Option<f32>,
    /// Whether the node has the input `B` (`LayerNormalization` only).
    bias: bool,
}

/// A `LayerNormalization` node with inputs `X`, `Scale` and `B` and no attributes.
const fn layer(shape: &'static [usize]) -> Case {
    Case {
        op: Op::Layer,
        shape,
        axis: None,
        epsilon: None,
        bias: true,
    }
}

/// An `RMSNormalization` node with inputs `X` and `Scale` and no attributes.
const fn rms(shape: &'static [usize]) -> Case {
    Case {
        op: Op::Rms,
        shape,
        axis: None,
        epsilon: None,
        bias: false,
    }
}

impl Case {
    const fn axis(self, axis: i64) -> Case {
        Case {
            axis: Some(axis),
            ..self
        }
    }

    const fn epsilon(self, epsilon: f32) -> Case {
        Case {
            epsilon: Some(epsilon),
            ..self
        }
    }

    const fn without_bias(self) -> Case {
        Case {
            bias: false,
            ..self
        }
    }
}

/// ONNX's shapes of `X`.
const X_2D: &[usize] = &[3, 4];
const X_3D: &[usize] = &[2, 3, 5];
const X_4D: &[usize] = &[2, 3, 4, 5];

// ----------------------------------------------------------------------------------------------
// Element types.

/// `f32` and `f64`, with what the cases need of each.
trait OnnxFloat: Float + Debug + Display {
    /// The type's name, for messages.
    const NAME: &'static str;
    /// The unit of error: `F::EPSILON` as `f64`.
    const UNIT: f64;
    /// `v` rounded to this type.
    fn of(v: f64) -> Self;
    /// The value as `f64` (exact).
    fn as_f64(self) -> f64;
    /// The reference outputs of a case, in more precision than this type (see [`Outputs`]).
    fn reference(
        op: Op,
        n: usize,
        x: &[f64],
        scale: &[f64],
        bias: Option<&[f64]>,
        eps: f64,
    ) -> Outputs;
}

impl OnnxFloat for f32 {
    const NAME: &'static str = "f32";
    const UNIT: f64 = f32::EPSILON as f64;
    fn of(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    fn reference(
        op: Op,
        n: usize,
        x: &[f64],
        scale: &[f64],
        bias: Option<&[f64]>,
        eps: f64,
    ) -> Outputs {
        plain_reference(op, n, x, scale, bias, eps)
    }
}

impl OnnxFloat for f64 {
    const NAME: &'static str = "f64";
    const UNIT: f64 = f64::EPSILON;
    fn of(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn reference(
        op: Op,
        n: usize,
        x: &[f64],
        scale: &[f64],
        bias: Option<&[f64]>,
        eps: f64,
    ) -> Outputs {
        exact_reference(op, n, x, scale, bias, eps)
    }
}

// ----------------------------------------------------------------------------------------------
// References.

/// A reference value: plain `f64` (for `f32` data) or an exact rational (for `f64` data).
#[derive(Clone, Debug)]
enum Value {
    Plain(f64),
    Exact(BigRational),
}

impl Value {
    /// The nearest `f64`, for messages.
    fn approx(&self) -> f64 {
        match self {
            Value::Plain(v) => *v,
            Value::Exact(v) => v.to_f64().expect("finite reference"),
        }
    }

    /// `|computed - self| / (unit * max(1, |self|))`; infinite for a non-finite `computed`.
    fn units(&self, computed: f64, unit: f64) -> f64 {
        if !computed.is_finite() {
            return f64::INFINITY;
        }
        match self {
            Value::Plain(v) => (computed - v).abs() / (unit * v.abs().max(1.0)),
            Value::Exact(v) => {
                let diff = (rational(computed) - v).abs();
                let scale = v.abs().max(BigRational::one());
                (diff / scale).to_f64().expect("finite ratio") / unit
            }
        }
    }
}

/// One expected output element: the reference and the tolerance, in units.
#[derive(Clone, Debug)]
struct Expected {
    value: Value,
    tol: f64,
}

/// The reference outputs of a case, each in the logical (row-major) order of the ONNX tensor.
#[derive(Debug, Default)]
struct Outputs {
    /// `Y`.
    y: Vec<Expected>,
    /// `Mean` (`LayerNormalization` only; empty for `RMSNormalization`).
    mean: Vec<Expected>,
    /// `InvStdDev`; for `RMSNormalization`, which has no such output, `1 / RMS`, which the
    /// crate's `forward_with_stats` returns.
    inv_std_dev: Vec<Expected>,
}

/// Tolerance of every output for `f32` data, in units of `f32::EPSILON * max(1, |ref|)`.
///
/// The crate computes `f32` input in `f64` and rounds each output to `f32` once: at most half a
/// unit, plus the error of its `f64` arithmetic (a few roundings of values below 20, about
/// `2^-47` absolutely, i.e. `2^-24` units). The reference is the same formula evaluated naively
/// in `f64` on rows of at most 120 values of `N(0, 1)`: its error is below `n * 2^-53` relative
/// to the magnitudes involved, about `2^-46`, i.e. `2^-23` units. So the crate is within
/// `0.5 + 2^-24 + 2^-23` units of the reference (0.48 measured): the documented 1 unit covers
/// it, and stays far below the loose tolerances of ONNX's own test runner.
const F32_UNITS: f64 = 1.0;

/// Tolerance of `Mean` and `InvStdDev` for `f64` data, in units of
/// `f64::EPSILON * max(1, |exact|)`: the crate rounds the mean correctly (half a unit), and
/// `1 / sqrt(var + eps)` goes through four roundings of relative `2^-53` (the variance, the sum
/// with epsilon, the square root, the reciprocal), which move it by at most `3 * 2^-53`
/// relative (the first two are halved by the square root): 1.5 units.
const F64_STATS_UNITS: f64 = 2.0;

/// Tolerance of the normalized value `x / sqrt(ms + eps)` of `RMSNormalization` for `f64` data
/// (the crate's documented accuracy for `RmsNorm`).
const F64_RMS_UNITS: f64 = 2.0;

/// The spec's formulas evaluated naively in `f64`, the reference for `f32` data.
fn plain_reference(
    op: Op,
    n: usize,
    x: &[f64],
    scale: &[f64],
    bias: Option<&[f64]>,
    eps: f64,
) -> Outputs {
    let expected = |v: f64| Expected {
        value: Value::Plain(v),
        tol: F32_UNITS,
    };
    let count = n as f64;
    let mut out = Outputs::default();
    for row in x.chunks(n) {
        match op {
            Op::Layer => {
                // Mean = ReduceMean(X), D = X - Mean, Var = ReduceMean(D * D).
                let mean = row.iter().sum::<f64>() / count;
                let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f64>() / count;
                // InvStdDev = Reciprocal(Sqrt(Var + epsilon)), Normalized = D * InvStdDev.
                let inv_std_dev = 1.0 / (var + eps).sqrt();
                for (i, &v) in row.iter().enumerate() {
                    let b = bias.map_or(0.0, |b| b[i]);
                    out.y
                        .push(expected((v - mean) * inv_std_dev * scale[i] + b));
                }
                out.mean.push(expected(mean));
                out.inv_std_dev.push(expected(inv_std_dev));
            }
            Op::Rms => {
                // RMS = Sqrt(ReduceMean(X * X) + epsilon), Normalized = X / RMS.
                let rms = (row.iter().map(|&v| v * v).sum::<f64>() / count + eps).sqrt();
                for (i, &v) in row.iter().enumerate() {
                    out.y.push(expected(v / rms * scale[i]));
                }
                out.inv_std_dev.push(expected(1.0 / rms));
            }
        }
    }
    out
}

/// Bits of the square roots in [`exact_reference`]: each is within `2^-200` of the exact value.
const SQRT_BITS: usize = 200;

/// The exact value of a finite `f64`.
fn rational(v: f64) -> BigRational {
    BigRational::from_float(v).expect("finite value")
}

/// `1 / sqrt(v)` for a rational `v > 0`, rounded down to a multiple of `2^-SQRT_BITS`:
/// `floor(sqrt(q * 2^(2 SQRT_BITS) / p)) / 2^SQRT_BITS` for `v = p / q` (the floor of the
/// integer square root of the floor is the floor of the square root).
fn inv_sqrt(v: &BigRational) -> BigRational {
    assert!(v.is_positive(), "1/sqrt of {v}");
    let scaled = (v.denom() << (2 * SQRT_BITS)) / v.numer();
    BigRational::new(scaled.sqrt(), BigInt::one() << SQRT_BITS)
}

/// The spec's formulas in exact rational arithmetic (square roots to [`SQRT_BITS`] bits), the
/// reference for `f64` data. The reference's own error, below `2^-200 * |D * Scale|`, is
/// negligible next to the unit `2^-52`.
///
/// Tolerances: `Mean` and `InvStdDev` [`F64_STATS_UNITS`]. The normalized value is within
/// `t` units of `f64::EPSILON * max(1, |normalized|)`, where `t` is the crate's documented
/// bound: 2 on every row, for `RMSNormalization` and `LayerNormalization` alike
/// (`F64_FORWARD_UNITS` of `tests/common/forward_bounds.rs`). The crate then forms `fl(normalized * Scale)` and, with
/// `B`, `fl(fl(normalized * Scale) + B)`, each rounding of relative `EPSILON / 2`, so that, to
/// first order, with `kappa = |Scale| * max(1, |normalized|) / max(1, |Y|)`:
///
/// ```text
/// without B: |Y' - Y| <= |Scale| |n' - n| + EPSILON/2 |Y'|
///                                                     -> t kappa + 1/2
/// with B:    |Y' - Y| <= |Scale| |n' - n| + EPSILON/2 (|n' Scale| + |Y'|)
///                                                     -> (t + 1/2) kappa + 1/2
/// ```
///
/// units of `EPSILON * max(1, |Y|)` (`kappa > 1` where `normalized * Scale` and `B` cancel);
/// `1e-9` covers the second-order terms.
fn exact_reference(
    op: Op,
    n: usize,
    x: &[f64],
    scale: &[f64],
    bias: Option<&[f64]>,
    eps: f64,
) -> Outputs {
    let count = BigRational::from_integer(BigInt::from(n));
    let eps = rational(eps);
    let stat = |v: BigRational| Expected {
        value: Value::Exact(v),
        tol: F64_STATS_UNITS,
    };
    let mut out = Outputs::default();
    for row in x.chunks(n) {
        let row: Vec<BigRational> = row.iter().map(|&v| rational(v)).collect();
        // LayerNormalization: D = X - Mean, Var = ReduceMean(D * D).
        // RMSNormalization: D = X (no centring), ReduceMean(X * X) in place of Var.
        let mean = match op {
            Op::Layer => row.iter().sum::<BigRational>() / &count,
            Op::Rms => BigRational::zero(),
        };
        let d: Vec<BigRational> = row.iter().map(|v| v - &mean).collect();
        let var = d.iter().map(|v| v * v).sum::<BigRational>() / &count;
        let inv_std_dev = inv_sqrt(&(&var + &eps));
        let t = match op {
            Op::Layer => F64_FORWARD_UNITS,
            Op::Rms => F64_RMS_UNITS,
        };
        for (i, d) in d.iter().enumerate() {
            let normalized = d * &inv_std_dev;
            let g = scale[i];
            let (y, first_order) = match bias {
                Some(b) => (&normalized * rational(g) + rational(b[i]), t + 0.5),
                None => (&normalized * rational(g), t),
            };
            let y_approx = y.to_f64().expect("finite");
            let normalized = normalized.to_f64().expect("finite");
            let kappa = g.abs() * normalized.abs().max(1.0) / y_approx.abs().max(1.0);
            out.y.push(Expected {
                value: Value::Exact(y),
                tol: first_order * kappa + 0.5 + 1e-9,
            });
        }
        if op == Op::Layer {
            out.mean.push(stat(mean));
        }
        out.inv_std_dev.push(stat(inv_std_dev));
    }
    out
}

// ----------------------------------------------------------------------------------------------
// Running a case.

/// A seed derived from the case's name (FNV-1a), so that every case has its own fixed data.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A tensor of `shape` filled with `N(0, 1)` draws rounded to `F`, as ONNX's
/// `np.random.randn(*shape).astype(...)`.
fn randn<F: OnnxFloat>(rng: &mut StdRng, shape: &[usize]) -> ArrayD<F> {
    let len = shape.iter().product();
    let values = (0..len)
        .map(|_| F::of(rng.sample::<f64, _>(StandardNormal)))
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape matches")
}

/// The tensor's elements in logical order, as `f64`.
fn flat<F: OnnxFloat>(a: &ArrayD<F>) -> Vec<f64> {
    a.iter().map(|&v| v.as_f64()).collect()
}

/// Where a case's output is, for messages.
struct Ctx<'a> {
    name: &'a str,
    seed: u64,
}

/// Checks that `computed` has ONNX's `shape` and every element is within its tolerance of the
/// reference; returns the largest error, in units, and the largest ratio of error to tolerance.
fn check_output<F: OnnxFloat>(
    ctx: &Ctx,
    output: &str,
    computed: &ArrayD<F>,
    shape: &[usize],
    expected: &[Expected],
) -> (f64, f64) {
    assert_eq!(
        computed.shape(),
        shape,
        "{} ({}): shape of {output}",
        ctx.name,
        F::NAME
    );
    assert_eq!(computed.len(), expected.len(), "{}: {output}", ctx.name);
    let (mut worst, mut worst_ratio) = (0.0f64, 0.0f64);
    for ((index, &c), e) in computed.indexed_iter().zip(expected) {
        let units = e.value.units(c.as_f64(), F::UNIT);
        assert!(
            units <= e.tol,
            "ONNX case {} ({}, seed {:#x}): {output}{:?} = {c:e}, reference {:e}: error {units:.3} \
             units of {} EPSILON * max(1, |ref|) > tolerance {:.3}",
            ctx.name,
            F::NAME,
            ctx.seed,
            index.slice(),
            e.value.approx(),
            F::NAME,
            e.tol,
        );
        worst = worst.max(units);
        worst_ratio = worst_ratio.max(units / e.tol);
    }
    (worst, worst_ratio)
}

/// Runs the ONNX case `name`: builds the layer from the node's attributes and inputs, runs it,
/// and checks every output, with its ONNX shape, against the reference.
fn run<F: OnnxFloat>(name: &str, case: Case) {
    let ctx = Ctx {
        name,
        seed: seed_of(name),
    };
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let rank = case.shape.len();
    let k = trailing_axes_of_onnx_axis(case.axis.unwrap_or(ONNX_DEFAULT_AXIS), rank)
        .expect("ONNX case with a valid axis");
    let axis = rank - k; // ONNX's axis, made non-negative
    let normalized_shape = &case.shape[axis..];
    // ONNX's reduction shape, of Mean and InvStdDev: X.shape[:axis] + [1] * (rank - axis).
    let reduction_shape: Vec<usize> = case.shape[..axis]
        .iter()
        .copied()
        .chain(std::iter::repeat_n(1, k))
        .collect();
    let n: usize = normalized_shape.iter().product();

    let x = randn::<F>(&mut rng, case.shape);
    let scale = randn::<F>(&mut rng, normalized_shape);
    let bias = case.bias.then(|| randn::<F>(&mut rng, normalized_shape));
    // The attribute is a 32-bit float; F::from_f32 is exact for f32 and f64.
    let eps = F::from_f32(case.epsilon.unwrap_or(ONNX_DEFAULT_EPSILON)).expect("exact");

    let expected = F::reference(
        case.op,
        n,
        &flat(&x),
        &flat(&scale),
        bias.as_ref().map(flat).as_deref(),
        eps.as_f64(),
    );

    let (y, mean, inv_std_dev) = match case.op {
        Op::Layer => {
            let mut ln = LayerNorm::<F>::new(eps).expect("valid epsilon");
            if let Some(a) = case.axis {
                ln = ln
                    .with_trailing_axes(trailing_axes_of_onnx_axis(a, rank).unwrap())
                    .expect("valid axes");
            }
            assert_eq!(ln.trailing_axes(), k, "{name}: trailing axes");
            ln = ln.with_gamma(scale).expect("Scale of X.shape[axis:]");
            if let Some(b) = bias {
                ln = ln.with_beta(b).expect("B of X.shape[axis:]");
            }
            let (y, stats) = ln.forward_with_stats(&x).expect("valid input");
            (y, Some(stats.mean), stats.rstd)
        }
        Op::Rms => {
            assert!(bias.is_none(), "RMSNormalization has no B");
            let mut rms = RmsNorm::<F>::new(eps).expect("valid epsilon");
            if let Some(a) = case.axis {
                rms = rms
                    .with_trailing_axes(trailing_axes_of_onnx_axis(a, rank).unwrap())
                    .expect("valid axes");
            }
            assert_eq!(rms.trailing_axes(), k, "{name}: trailing axes");
            rms = rms.with_gamma(scale).expect("Scale of X.shape[axis:]");
            let (y, rstd) = rms.forward_with_stats(&x).expect("valid input");
            (y, None, rstd)
        }
    };

    // The crate's statistics lack ONNX's last axis of length 1.
    let onnx_stat = |s: ArrayD<F>| {
        assert_eq!(s.ndim(), rank - 1, "{name}: rank of the statistics");
        s.insert_axis(Axis(rank - 1))
    };
    let mut report = Vec::new();
    let mut check = |output: &str, computed: &ArrayD<F>, shape: &[usize], e: &[Expected]| {
        let (units, ratio) = check_output(&ctx, output, computed, shape, e);
        report.push(format!("{output} {units:.3} ({:.0}%)", 100.0 * ratio));
    };
    check("Y", &y, case.shape, &expected.y);
    if let Some(mean) = mean {
        check("Mean", &onnx_stat(mean), &reduction_shape, &expected.mean);
    }
    check(
        "InvStdDev",
        &onnx_stat(inv_std_dev),
        &reduction_shape,
        &expected.inv_std_dev,
    );
    // Largest error of each output, in units, and as a percentage of its tolerance.
    eprintln!("{name} ({}): {}", F::NAME, report.join(", "));
}

/// One `#[test]` per case and element type, named after the ONNX case (without its `test_`
/// prefix), in the modules `f32` and `f64`.
macro_rules! onnx_cases {
    ($($name:ident => $case:expr;)*) => {
        mod f32 {
            use super::*;
            $(
                #[test]
                fn $name() {
                    run::<core::primitive::f32>(stringify!($name), $case);
                }
            )*
        }
        mod f64 {
            use super::*;
            $(
                #[test]
                fn $name() {
                    run::<core::primitive::f64>(stringify!($name), $case);
                }
            )*
        }
    };
}

onnx_cases! {
    // LayerNormalization, export2d: X of shape (3, 4), every axis.
    layer_normalization_2d_axis0 => layer(X_2D).axis(0);
    layer_normalization_2d_axis1 => layer(X_2D).axis(1);
    layer_normalization_2d_axis_negative_1 => layer(X_2D).axis(-1);
    layer_normalization_2d_axis_negative_2 => layer(X_2D).axis(-2);
    // export3d_epsilon: X of shape (2, 3, 5), epsilon = 0.1, every axis.
    layer_normalization_3d_axis0_epsilon => layer(X_3D).axis(0).epsilon(0.1);
    layer_normalization_3d_axis1_epsilon => layer(X_3D).axis(1).epsilon(0.1);
    layer_normalization_3d_axis2_epsilon => layer(X_3D).axis(2).epsilon(0.1);
    layer_normalization_3d_axis_negative_1_epsilon => layer(X_3D).axis(-1).epsilon(0.1);
    layer_normalization_3d_axis_negative_2_epsilon => layer(X_3D).axis(-2).epsilon(0.1);
    layer_normalization_3d_axis_negative_3_epsilon => layer(X_3D).axis(-3).epsilon(0.1);
    // export: X of shape (2, 3, 4, 5), every axis; axis 0 and -4 normalize the whole tensor.
    layer_normalization_4d_axis0 => layer(X_4D).axis(0);
    layer_normalization_4d_axis1 => layer(X_4D).axis(1);
    layer_normalization_4d_axis2 => layer(X_4D).axis(2);
    layer_normalization_4d_axis3 => layer(X_4D).axis(3);
    layer_normalization_4d_axis_negative_1 => layer(X_4D).axis(-1);
    layer_normalization_4d_axis_negative_2 => layer(X_4D).axis(-2);
    layer_normalization_4d_axis_negative_3 => layer(X_4D).axis(-3);
    layer_normalization_4d_axis_negative_4 => layer(X_4D).axis(-4);
    // export_default_axis: no axis attribute (-1).
    layer_normalization_default_axis => layer(X_4D);
    // Not in ONNX's generator: the optional input B absent.
    layer_normalization_2d_axis_negative_1_without_bias => layer(X_2D).axis(-1).without_bias();
    layer_normalization_3d_axis1_epsilon_without_bias =>
        layer(X_3D).axis(1).epsilon(0.1).without_bias();
    layer_normalization_4d_axis0_without_bias => layer(X_4D).axis(0).without_bias();
    layer_normalization_default_axis_without_bias => layer(X_4D).without_bias();

    // RMSNormalization, the same enumeration.
    rms_normalization_2d_axis0 => rms(X_2D).axis(0);
    rms_normalization_2d_axis1 => rms(X_2D).axis(1);
    rms_normalization_2d_axis_negative_1 => rms(X_2D).axis(-1);
    rms_normalization_2d_axis_negative_2 => rms(X_2D).axis(-2);
    rms_normalization_3d_axis0_epsilon => rms(X_3D).axis(0).epsilon(0.1);
    rms_normalization_3d_axis1_epsilon => rms(X_3D).axis(1).epsilon(0.1);
    rms_normalization_3d_axis2_epsilon => rms(X_3D).axis(2).epsilon(0.1);
    rms_normalization_3d_axis_negative_1_epsilon => rms(X_3D).axis(-1).epsilon(0.1);
    rms_normalization_3d_axis_negative_2_epsilon => rms(X_3D).axis(-2).epsilon(0.1);
    rms_normalization_3d_axis_negative_3_epsilon => rms(X_3D).axis(-3).epsilon(0.1);
    rms_normalization_4d_axis0 => rms(X_4D).axis(0);
    rms_normalization_4d_axis1 => rms(X_4D).axis(1);
    rms_normalization_4d_axis2 => rms(X_4D).axis(2);
    rms_normalization_4d_axis3 => rms(X_4D).axis(3);
    rms_normalization_4d_axis_negative_1 => rms(X_4D).axis(-1);
    rms_normalization_4d_axis_negative_2 => rms(X_4D).axis(-2);
    rms_normalization_4d_axis_negative_3 => rms(X_4D).axis(-3);
    rms_normalization_4d_axis_negative_4 => rms(X_4D).axis(-4);
    rms_normalization_default_axis => rms(X_4D);
}

// ----------------------------------------------------------------------------------------------
// The mapping and the defaults.

#[test]
fn onnx_axis_maps_to_the_number_of_trailing_axes() {
    // Rank 4: axis 0 and -4 normalize all four axes, axis 3 and -1 the last one.
    let rank4 = [
        (0, 4),
        (1, 3),
        (2, 2),
        (3, 1),
        (-1, 1),
        (-2, 2),
        (-3, 3),
        (-4, 4),
    ];
    for (axis, k) in rank4 {
        assert_eq!(trailing_axes_of_onnx_axis(axis, 4), Some(k), "axis {axis}");
    }
    for rank in 1..=6usize {
        let r = rank as i64;
        for axis in 0..r {
            // A negative axis names the same axis as axis + rank.
            let k = trailing_axes_of_onnx_axis(axis, rank);
            assert_eq!(k, trailing_axes_of_onnx_axis(axis - r, rank), "rank {rank}");
            assert_eq!(k, Some(rank - axis as usize), "rank {rank}, axis {axis}");
        }
        // ONNX accepts axis in [-rank, rank) only.
        assert_eq!(trailing_axes_of_onnx_axis(r, rank), None);
        assert_eq!(trailing_axes_of_onnx_axis(-r - 1, rank), None);
    }
    assert_eq!(trailing_axes_of_onnx_axis(-1, 0), None);
}

#[test]
fn default_layers_normalize_over_the_onnx_default_axis() {
    for rank in 1..=4 {
        let k = trailing_axes_of_onnx_axis(ONNX_DEFAULT_AXIS, rank);
        assert_eq!(Some(LayerNorm::<f32>::default().trailing_axes()), k);
        assert_eq!(Some(RmsNorm::<f64>::default().trailing_axes()), k);
    }
}

#[test]
fn f32_default_epsilon_is_the_onnx_default_attribute() {
    assert_eq!(LayerNorm::<f32>::default().epsilon(), ONNX_DEFAULT_EPSILON);
    assert_eq!(RmsNorm::<f32>::default().epsilon(), ONNX_DEFAULT_EPSILON);
    assert_eq!(
        LayerNorm::<f32>::default(),
        LayerNorm::new(ONNX_DEFAULT_EPSILON).unwrap()
    );
}

/// The crate's `f64` default is `1e-5` rounded to `f64` (as PyTorch), while ONNX's attribute is
/// `1e-5f32` widened to `f64`, about `2.5e-13` away (which moves outputs by hundreds of `f64`
/// units): to mirror an ONNX node on `f64` data, pass `f64::from(epsilon)` explicitly, as the
/// cases above do.
#[test]
fn f64_default_epsilon_is_1e_5_not_the_widened_onnx_attribute() {
    let onnx = f64::from(ONNX_DEFAULT_EPSILON);
    assert_ne!(onnx, 1e-5);
    assert_eq!(LayerNorm::<f64>::default().epsilon(), 1e-5);
    assert_eq!(RmsNorm::<f64>::default().epsilon(), 1e-5);
    assert_eq!(LayerNorm::<f64>::new(onnx).unwrap().epsilon(), onnx);
}
