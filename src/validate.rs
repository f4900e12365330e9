//! Checks shared by every public entry point. Pure functions that return `Result`, never panic.

use ndarray::{ArrayD, ArrayRef, Dimension};

use crate::error::{Error, Param};
use crate::float::Float;

/// Epsilon must be finite and non-negative; `-0.0` is taken as `+0.0` (so that `1/sqrt(eps)`
/// is `+inf`, never `-inf`).
pub(crate) fn epsilon<F: Float>(epsilon: F) -> Result<F, Error> {
    if epsilon == F::zero() {
        Ok(F::zero())
    } else if epsilon.is_finite() && epsilon > F::zero() {
        Ok(epsilon)
    } else {
        Err(Error::InvalidEpsilon {
            epsilon: epsilon.wide(),
        })
    }
}

/// The length of the last axis; an error for a 0-dimensional array.
pub(crate) fn last_axis_len<F, D: Dimension>(x: &ArrayRef<F, D>) -> Result<usize, Error> {
    match x.shape().last() {
        Some(&n) => Ok(n),
        None => Err(Error::ZeroDimensional),
    }
}

/// Gamma and beta, where present, must have the same shape.
pub(crate) fn params_agree<F>(
    gamma: Option<&ArrayD<F>>,
    beta: Option<&ArrayD<F>>,
) -> Result<(), Error> {
    match (gamma, beta) {
        (Some(g), Some(b)) if g.shape() != b.shape() => Err(Error::ParamMismatch {
            gamma: g.shape().to_vec(),
            beta: b.shape().to_vec(),
        }),
        _ => Ok(()),
    }
}

/// A parameter, where present, must have one axis per normalized axis.
pub(crate) fn param_axes<F>(
    param: Param,
    value: Option<&ArrayD<F>>,
    axes: usize,
) -> Result<(), Error> {
    match value {
        Some(v) if v.ndim() != axes => Err(Error::ParamAxes {
            param,
            expected: axes,
            actual: v.ndim(),
        }),
        _ => Ok(()),
    }
}

/// The shape of the normalized (last `axes`) axes of an array of the given shape; an error if
/// it has fewer axes (or none).
pub(crate) fn normalized_shape(shape: &[usize], axes: usize) -> Result<&[usize], Error> {
    match shape.len() {
        0 => Err(Error::ZeroDimensional),
        ndim if ndim < axes => Err(Error::TooFewAxes { axes, ndim }),
        ndim => Ok(&shape[ndim - axes..]),
    }
}

/// A parameter, where present, must have the shape of the normalized axes: for one axis, its
/// length ([`Error::ParamLength`]), else its shape ([`Error::ParamShape`]).
pub(crate) fn param_shape<F>(
    param: Param,
    value: Option<&ArrayD<F>>,
    row_shape: &[usize],
) -> Result<(), Error> {
    match value {
        Some(v) if v.shape() != row_shape => Err(match (v.shape(), row_shape) {
            (&[actual], &[expected]) => Error::ParamLength {
                param,
                expected,
                actual,
            },
            _ => Error::ParamShape {
                param,
                expected: row_shape.to_vec(),
                actual: v.shape().to_vec(),
            },
        }),
        _ => Ok(()),
    }
}

/// A shape whose element count an array can hold: the product of its non-zero lengths fits in
/// `isize` (ndarray's own limit, which panics when exceeded).
pub(crate) fn array_size(shape: &[usize]) -> Result<(), Error> {
    let fits = shape
        .iter()
        .filter(|&&len| len != 0)
        .try_fold(1usize, |acc, &len| acc.checked_mul(len))
        .is_some_and(|n| n <= isize::MAX as usize);
    if fits {
        Ok(())
    } else {
        Err(Error::ShapeTooLarge {
            shape: shape.to_vec(),
        })
    }
}

/// A parameter in standard layout, so that it is always available as a slice.
pub(crate) fn standard<F: Clone>(p: ArrayD<F>) -> ArrayD<F> {
    if p.is_standard_layout() {
        p
    } else {
        p.as_standard_layout().into_owned()
    }
}

/// Two arrays that must have the same shape.
pub(crate) fn same_shape(expected: &[usize], actual: &[usize]) -> Result<(), Error> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        })
    }
}
