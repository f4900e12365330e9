//! Checks shared by every public entry point. Pure functions that return `Result`, never panic.

use ndarray::{Array1, ArrayRef, Dimension};

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

/// Gamma and beta, where present, must have the same length.
pub(crate) fn params_agree<F>(
    gamma: Option<&Array1<F>>,
    beta: Option<&Array1<F>>,
) -> Result<(), Error> {
    match (gamma, beta) {
        (Some(g), Some(b)) if g.len() != b.len() => Err(Error::ParamMismatch {
            gamma: g.len(),
            beta: b.len(),
        }),
        _ => Ok(()),
    }
}

/// A parameter, where present, must have the length of the normalized axis.
pub(crate) fn param_len<F>(param: Param, value: Option<&Array1<F>>, n: usize) -> Result<(), Error> {
    match value {
        Some(v) if v.len() != n => Err(Error::ParamLength {
            param,
            expected: n,
            actual: v.len(),
        }),
        _ => Ok(()),
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
