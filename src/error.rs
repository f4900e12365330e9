//! The crate's single error type.

use std::fmt;

/// A learnable parameter of a normalization layer, named in [`Error`] values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// The scale, multiplied into the normalized value.
    Gamma,
    /// The shift, added after the scale.
    Beta,
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Param::Gamma => "gamma",
            Param::Beta => "beta",
        })
    }
}

/// Everything that can go wrong, with the values that made it go wrong.
///
/// Every fallible function of the crate returns this type; none of them panics on bad input.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Epsilon was negative, NaN or infinite. The value is carried as `f64`.
    InvalidEpsilon {
        /// The rejected epsilon.
        epsilon: f64,
    },
    /// A parameter's length differs from the length of the normalized (last) axis of the input.
    ParamLength {
        /// Which parameter.
        param: Param,
        /// The length of the input's last axis.
        expected: usize,
        /// The parameter's length.
        actual: usize,
    },
    /// Gamma and beta were given different lengths.
    ParamMismatch {
        /// The length of gamma.
        gamma: usize,
        /// The length of beta.
        beta: usize,
    },
    /// The input is 0-dimensional, so it has no last axis to normalize over.
    ZeroDimensional,
    /// An array's shape differs from the shape it has to match.
    ShapeMismatch {
        /// The shape it has to match.
        expected: Vec<usize>,
        /// The shape it has.
        actual: Vec<usize>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidEpsilon { epsilon } => write!(
                f,
                "invalid epsilon {epsilon:e}: it must be finite and non-negative"
            ),
            Error::ParamLength {
                param,
                expected,
                actual,
            } => write!(
                f,
                "{param} has length {actual}, but the normalized axis has length {expected}"
            ),
            Error::ParamMismatch { gamma, beta } => write!(
                f,
                "gamma has length {gamma} but beta has length {beta}; they must agree"
            ),
            Error::ZeroDimensional => {
                f.write_str("a 0-dimensional array has no last axis to normalize over")
            }
            Error::ShapeMismatch { expected, actual } => {
                write!(f, "shape mismatch: expected {expected:?}, got {actual:?}")
            }
        }
    }
}

impl std::error::Error for Error {}
