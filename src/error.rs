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
    /// A parameter's length differs from the length of the normalized axis of the input (a
    /// layer over one axis; see [`ParamShape`](Error::ParamShape) for several).
    ParamLength {
        /// Which parameter.
        param: Param,
        /// The length of the input's last axis.
        expected: usize,
        /// The parameter's length.
        actual: usize,
    },
    /// A parameter's shape differs from the shape of the normalized axes of the input (a layer
    /// over several trailing axes).
    ParamShape {
        /// Which parameter.
        param: Param,
        /// The shape of the input's normalized axes.
        expected: Vec<usize>,
        /// The parameter's shape.
        actual: Vec<usize>,
    },
    /// A parameter's number of axes differs from the number of axes the layer normalizes over.
    ParamAxes {
        /// Which parameter.
        param: Param,
        /// The number of normalized axes.
        expected: usize,
        /// The parameter's number of axes.
        actual: usize,
    },
    /// Gamma and beta were given different shapes.
    ParamMismatch {
        /// The shape of gamma.
        gamma: Vec<usize>,
        /// The shape of beta.
        beta: Vec<usize>,
    },
    /// A layer was asked to normalize over zero axes; it needs at least one.
    InvalidAxes {
        /// The rejected number of axes.
        axes: usize,
    },
    /// A parameter shape asked of a constructor is beyond ndarray's limit: the product of its
    /// non-zero lengths overflows `isize`.
    ShapeTooLarge {
        /// The requested shape.
        shape: Vec<usize>,
    },
    /// The input is 0-dimensional, so it has no last axis to normalize over.
    ZeroDimensional,
    /// The input has fewer axes than the layer normalizes over.
    TooFewAxes {
        /// The number of axes the layer normalizes over.
        axes: usize,
        /// The number of axes of the input.
        ndim: usize,
    },
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
            Error::ParamShape {
                param,
                expected,
                actual,
            } => write!(
                f,
                "{param} has shape {actual:?}, but the normalized axes have shape {expected:?}"
            ),
            Error::ParamAxes {
                param,
                expected,
                actual,
            } => write!(
                f,
                "{param} has {actual} axes, but the layer normalizes over {expected}"
            ),
            Error::ParamMismatch { gamma, beta } => write!(
                f,
                "gamma has shape {gamma:?} but beta has shape {beta:?}; they must agree"
            ),
            Error::InvalidAxes { axes } => write!(
                f,
                "a layer must normalize over at least one axis, not {axes}"
            ),
            Error::ShapeTooLarge { shape } => write!(
                f,
                "a parameter of shape {shape:?} has more elements than an array can hold"
            ),
            Error::ZeroDimensional => {
                f.write_str("a 0-dimensional array has no last axis to normalize over")
            }
            Error::TooFewAxes { axes, ndim } => write!(
                f,
                "the layer normalizes over the last {axes} axes, but the input has {ndim}"
            ),
            Error::ShapeMismatch { expected, actual } => {
                write!(f, "shape mismatch: expected {expected:?}, got {actual:?}")
            }
        }
    }
}

impl std::error::Error for Error {}
