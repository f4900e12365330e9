//! The crate's single error type.

use std::fmt;
use std::path::PathBuf;

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
    /// Safetensors (feature `safetensors`): the file has none of the tensors a layer needs.
    TensorMissing {
        /// The name looked up first (`{prefix}.weight`).
        name: String,
        /// The name looked up next, if any (`{prefix}.gamma`).
        alternative: Option<String>,
    },
    /// Safetensors: the file has a parameter under both of its names (`weight` and `gamma`, or
    /// `bias` and `beta`), so which one the layer should take is not clear.
    TensorAmbiguous {
        /// The PyTorch name (`{prefix}.weight` or `{prefix}.bias`).
        name: String,
        /// The other name (`{prefix}.gamma` or `{prefix}.beta`).
        other: String,
    },
    /// Safetensors: the file has a tensor the layer has no place for (a bias for an
    /// [`RmsNorm`](crate::RmsNorm)).
    TensorUnexpected {
        /// The tensor's name.
        name: String,
    },
    /// Safetensors: a tensor's shape differs from the shape it has to have (the shape the caller
    /// asked for, or for a bias, the shape of the weight).
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The shape it has to have.
        expected: Vec<usize>,
        /// The shape it has in the file.
        actual: Vec<usize>,
    },
    /// Safetensors: a tensor's shape cannot be a layer's parameter: it has no axis, or more
    /// elements than an ndarray array can hold.
    TensorShapeInvalid {
        /// The tensor's name.
        name: String,
        /// The shape it has in the file.
        shape: Vec<usize>,
    },
    /// Safetensors: a tensor's element type is not one that loading converts (`F16`, `BF16`,
    /// `F32`, `F64`).
    TensorDtype {
        /// The tensor's name.
        name: String,
        /// The element type in the file, as safetensors names it (`I64`, `F8_E4M3`, ...).
        dtype: String,
    },
    /// Safetensors: a finite value of a tensor is beyond the range of the layer's element type
    /// (an `F64` value above `f32::MAX`, loaded into an `f32` layer).
    TensorOverflow {
        /// The tensor's name.
        name: String,
        /// The index of the element, in row-major order.
        index: usize,
        /// The value in the file.
        value: f64,
        /// The layer's element type (`f32`).
        target: &'static str,
    },
    /// Safetensors: a tensor's data offsets in the header reach beyond the data of the file.
    TensorOffsets {
        /// The tensor's name.
        name: String,
        /// The start offset in the header.
        start: u64,
        /// The end offset in the header.
        end: u64,
        /// The number of bytes of data the file has after its header.
        data_len: u64,
    },
    /// Safetensors: two tensors of the same name were added to one file.
    TensorDuplicate {
        /// The tensor's name.
        name: String,
    },
    /// Safetensors: a layer without gamma was to be saved. It has no tensor to save (as a
    /// PyTorch layer with `elementwise_affine=False` has none in its state dict).
    NothingToSave {
        /// The prefix it was to be saved under.
        prefix: String,
    },
    /// Safetensors: the bytes are not a valid safetensors file (truncated, corrupt, or not one
    /// at all), as the `safetensors` crate reports it.
    InvalidSafetensors {
        /// What is wrong, in the words of the `safetensors` crate.
        message: String,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        message: String,
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
            Error::TensorMissing { name, alternative } => match alternative {
                Some(other) => write!(f, "the file has no tensor `{name}` (nor `{other}`)"),
                None => write!(f, "the file has no tensor `{name}`"),
            },
            Error::TensorAmbiguous { name, other } => write!(
                f,
                "the file has both `{name}` and `{other}`, two names for one parameter"
            ),
            Error::TensorUnexpected { name } => write!(
                f,
                "the file has a tensor `{name}`, but an RMSNorm has no bias (is it a LayerNorm?)"
            ),
            Error::TensorShape {
                name,
                expected,
                actual,
            } => write!(
                f,
                "tensor `{name}` has shape {actual:?}, but it must have shape {expected:?}"
            ),
            Error::TensorShapeInvalid { name, shape } => write!(
                f,
                "tensor `{name}` has shape {shape:?}, which no layer parameter can have \
                 (it needs at least one axis, and at most isize::MAX elements)"
            ),
            Error::TensorDtype { name, dtype } => write!(
                f,
                "tensor `{name}` has element type {dtype}; loading takes F16, BF16, F32 or F64"
            ),
            Error::TensorOverflow {
                name,
                index,
                value,
                target,
            } => write!(
                f,
                "element {index} of tensor `{name}` is {value:e}, beyond the range of {target}"
            ),
            Error::TensorOffsets {
                name,
                start,
                end,
                data_len,
            } => write!(
                f,
                "tensor `{name}` has data offsets [{start}, {end}], but the file has only \
                 {data_len} bytes of data"
            ),
            Error::TensorDuplicate { name } => {
                write!(f, "a tensor `{name}` was already added to this file")
            }
            Error::NothingToSave { prefix } => write!(
                f,
                "the layer to be saved as `{prefix}` has no gamma, so it has no tensor to save"
            ),
            Error::InvalidSafetensors { message } => {
                write!(f, "not a valid safetensors file: {message}")
            }
            Error::Io {
                path,
                kind: _,
                message,
            } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for Error {}
