//! [`LayerNorm`] and [`RmsNorm`] loaded from and saved to safetensors files (feature
//! `safetensors`).
//!
//! The rules (tensor names, element types, shapes) are in the docs of [`SafetensorsReader`]
//! (loading) and [`SafetensorsWriter`] (saving); the inherent methods of the layers
//! (`from_safetensors`, `load_safetensors`, `to_safetensors`, `save_safetensors`) are shorthands
//! for one layer.
//!
//! The file layout is the one of the `safetensors` crate, which parses and writes it: 8 bytes
//! (a little-endian `u64` `n`), a JSON header of `n` bytes naming each tensor with its dtype,
//! shape and byte offsets, then the data, little-endian and in row-major order. Before the
//! crate reads a header, [`check_offsets`] checks that every tensor's offsets lie within the
//! data: `safetensors` 0.8.0 adds the last offset to the header length unchecked, which
//! overflows (a panic in a debug build) on a header whose offsets sum to nearly `2^64`.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use ::safetensors::{Dtype, SafeTensors, View};
use ndarray::{ArrayD, IxDyn};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::Error;
use crate::float::Float;
use crate::layer_norm::LayerNorm;
use crate::rms_norm::RmsNorm;
use crate::validate;

pub(crate) mod element {
    use ::safetensors::Dtype;

    use crate::float::Float;

    /// An element type a layer can be loaded into and saved from: its own safetensors dtype and
    /// its little-endian bytes. Values of other dtypes are converted through `f64` (exactly)
    /// and rounded to the type once, by `Float`'s `narrow`. Crate-internal (sealed): one impl
    /// per element type.
    pub trait SafetensorsElement: Float {
        /// The dtype a layer of this type is saved as, and loaded from without conversion.
        const DTYPE: Dtype;
        /// The type's name in messages (`f32`).
        const NAME: &'static str;
        /// The value of `bytes`, little-endian; `bytes` has the width of [`Self::DTYPE`].
        fn from_le(bytes: &[u8]) -> Self;
        /// Appends the value's little-endian bytes.
        fn write_le(self, out: &mut Vec<u8>);
    }

    impl SafetensorsElement for f32 {
        const DTYPE: Dtype = Dtype::F32;
        const NAME: &'static str = "f32";
        fn from_le(bytes: &[u8]) -> Self {
            f32::from_le_bytes(super::array(bytes))
        }
        fn write_le(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
    }

    impl SafetensorsElement for f64 {
        const DTYPE: Dtype = Dtype::F64;
        const NAME: &'static str = "f64";
        fn from_le(bytes: &[u8]) -> Self {
            f64::from_le_bytes(super::array(bytes))
        }
        fn write_le(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
    }
}

use element::SafetensorsElement;

/// The first `N` bytes of `bytes` as an array (zeros past its end; callers pass exactly `N`).
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
    a
}

/// The width in bytes of a dtype that loading converts, `None` for the others.
fn width(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F16 | Dtype::BF16 => Some(2),
        Dtype::F32 => Some(4),
        Dtype::F64 => Some(8),
        _ => None,
    }
}

/// The value of one element of a converted dtype, exactly, as `f64`.
fn wide(dtype: Dtype, bytes: &[u8]) -> f64 {
    match dtype {
        Dtype::F16 => half::f16::from_le_bytes(array(bytes)).to_f64(),
        Dtype::BF16 => half::bf16::from_le_bytes(array(bytes)).to_f64(),
        Dtype::F32 => f64::from(f32::from_le_bytes(array(bytes))),
        _ => f64::from_le_bytes(array(bytes)),
    }
}

/// `prefix.field`, or `field` for an empty prefix.
fn tensor_name(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

fn invalid(e: ::safetensors::SafeTensorError) -> Error {
    Error::InvalidSafetensors {
        message: e.to_string(),
    }
}

/// The byte offsets of one tensor in a header, the only field the check reads.
#[derive(Deserialize)]
struct Span {
    data_offsets: (u64, u64),
}

/// Visits every entry of a header (duplicates included) and keeps the first tensor whose
/// offsets reach beyond `data_len`.
struct Offsets {
    data_len: u64,
}

impl<'de> Visitor<'de> for Offsets {
    type Value = Option<(String, u64, u64)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a safetensors header (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut beyond = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let (start, end) = map.next_value::<Span>()?.data_offsets;
            if beyond.is_none() && (start > self.data_len || end > self.data_len) {
                beyond = Some((name, start, end));
            }
        }
        Ok(beyond)
    }
}

/// What [`check_offsets`] found.
enum Checked {
    /// Every tensor's offsets lie within the data, or the bytes have no header to check (the
    /// `safetensors` crate rejects them before it reads any offset).
    Within,
    /// A tensor's offsets reach beyond the data.
    Beyond(Error),
    /// The header is not JSON of the expected form; the message says why.
    Unreadable(String),
}

/// Checks, before the `safetensors` crate parses `bytes`, that every tensor's data offsets lie
/// within the data after the header, so that its sum of the header length and the last offset
/// cannot overflow.
fn check_offsets(bytes: &[u8]) -> Checked {
    let Some(head) = bytes.get(..8) else {
        return Checked::Within;
    };
    let n = u64::from_le_bytes(array(head));
    let Some(end) = usize::try_from(n).ok().and_then(|n| n.checked_add(8)) else {
        return Checked::Within;
    };
    let Some(header) = bytes.get(8..end) else {
        return Checked::Within;
    };
    let data_len = (bytes.len() - end) as u64;
    let mut de = serde_json::Deserializer::from_slice(header);
    match de.deserialize_map(Offsets { data_len }) {
        Ok(None) => Checked::Within,
        Ok(Some((name, start, end))) => Checked::Beyond(Error::TensorOffsets {
            name,
            start,
            end,
            data_len,
        }),
        Err(e) => Checked::Unreadable(e.to_string()),
    }
}

/// The tensors of a safetensors file, parsed and checked, from which layers are built.
///
/// Reading a file of many layers through one reader parses its header once. The bytes can be
/// any buffer, for example a memory map of a large model file.
///
/// # Tensor names
/// A layer stored under the prefix `p` (PyTorch's module path, such as
/// `encoder.layer.0.output.LayerNorm`) has its scale in `p.weight` and its shift in `p.bias`
/// (PyTorch's names), or in `p.gamma` and `p.beta` (older BERT files). An empty prefix means
/// the names `weight` and `bias` themselves. For each parameter loading takes the PyTorch name
/// if the file has it, else the old one; a file with both names for one parameter is an
/// [`Error::TensorAmbiguous`], since taking one of two different tensors silently could load
/// the wrong values. The scale must be present (a missing one is [`Error::TensorMissing`]: a
/// mistyped prefix must not load as a layer without parameters); the shift is optional
/// (PyTorch's `bias=False`). An [`RmsNorm`] takes only a scale: a `p.bias` or `p.beta` in the
/// file is an [`Error::TensorUnexpected`]. Other tensors, under `p` or not, are ignored.
///
/// # Element types
/// Tensors stored as `F16`, `BF16`, `F32` or `F64` load into an `f32` or `f64` layer; other
/// dtypes are an [`Error::TensorDtype`]. A tensor of the layer's own type is taken bit for bit
/// (NaN payloads included). Otherwise each value is converted to `f64`, which is exact for all
/// four types, and rounded to the layer's type once, to nearest with ties to even: `F16`,
/// `BF16` and `F32` values load into `f32` and `f64` exactly, and `F64` values into `f32`
/// rounded to the nearest `f32`. A finite `F64` value beyond the range of `f32` (above
/// `f32::MAX` by half an ulp or more) is an [`Error::TensorOverflow`], not an infinity.
/// Infinities and NaNs load as themselves.
///
/// # Shapes
/// [`layer_norm`](Self::layer_norm) and [`rms_norm`](Self::rms_norm) take the shape of the
/// scale from the file: a tensor with `k` axes gives a layer over the last `k` axes (a rank-1
/// tensor, the usual case, a layer over the last axis), with gamma of the tensor's shape. A
/// shift must have the scale's shape ([`Error::TensorShape`] otherwise). A tensor with no axis,
/// or with more elements than an array can hold, is an [`Error::TensorShapeInvalid`].
/// [`layer_norm_with_shape`](Self::layer_norm_with_shape) and
/// [`rms_norm_with_shape`](Self::rms_norm_with_shape) take the normalized shape from the
/// caller (PyTorch's `normalized_shape`) and check the tensors against it: a tensor of that
/// shape is taken as it is, a rank-1 tensor of the same number of elements is reshaped to it
/// in row-major order (as some exporters flatten parameters), and any other shape is an
/// [`Error::TensorShape`].
///
/// # Epsilon
/// Safetensors files hold tensors only; epsilon is the caller's (PyTorch's `LayerNorm` default
/// is `1e-5`, BERT's `1e-12`; RMSNorm's is often `1e-6`).
///
/// # Hostile bytes
/// Every problem with the bytes is an `Err`, never a panic: a truncated or corrupt file, or one
/// whose header does not describe its data, is an [`Error::InvalidSafetensors`] with the
/// message of the `safetensors` crate, and a header whose offsets reach beyond the data is an
/// [`Error::TensorOffsets`] (checked here first, because `safetensors` 0.8.0 can overflow on
/// such a header). The memory taken is bounded by the size of the bytes: no tensor is larger
/// than the data that holds it.
///
/// ```
/// use ndarray_layernorm::{LayerNorm, SafetensorsReader, SafetensorsWriter};
/// # fn main() -> Result<(), ndarray_layernorm::Error> {
/// let mut writer = SafetensorsWriter::new();
/// for i in 0..2 {
///     let ln = LayerNorm::<f32>::affine(4, 1e-12)?;
///     writer.add_layer_norm(&format!("encoder.layer.{i}.output.LayerNorm"), &ln)?;
/// }
/// let bytes = writer.to_bytes()?;
///
/// let reader = SafetensorsReader::new(&bytes)?;
/// let ln = reader.layer_norm::<f32>("encoder.layer.1.output.LayerNorm", 1e-12)?;
/// assert_eq!(ln, LayerNorm::affine(4, 1e-12)?);
/// // An f64 layer from the same f32 tensors: exact.
/// let ln64 = reader.layer_norm::<f64>("encoder.layer.0.output.LayerNorm", 1e-12)?;
/// assert_eq!(ln64.gamma().unwrap().as_slice(), Some(&[1.0; 4][..]));
/// assert!(reader.layer_norm::<f32>("encoder.layer.2.output.LayerNorm", 1e-12).is_err());
/// # Ok(())
/// # }
/// ```
pub struct SafetensorsReader<'data> {
    tensors: SafeTensors<'data>,
}

impl fmt::Debug for SafetensorsReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsReader")
            .field("names", &self.names())
            .finish()
    }
}

impl<'data> SafetensorsReader<'data> {
    /// Parses and checks the header of a safetensors file held in `bytes`.
    ///
    /// ```
    /// use ndarray_layernorm::{Error, SafetensorsReader};
    /// assert!(matches!(
    ///     SafetensorsReader::new(b"not a file"),
    ///     Err(Error::InvalidSafetensors { .. })
    /// ));
    /// ```
    ///
    /// # Errors
    /// * [`Error::TensorOffsets`] if a tensor's data offsets reach beyond the data.
    /// * [`Error::InvalidSafetensors`] for any other problem with the bytes: too short for a
    ///   header, a header that is not JSON of the safetensors form, offsets that do not cover
    ///   the data exactly or do not fit the tensors' shapes and dtypes.
    pub fn new(bytes: &'data [u8]) -> Result<Self, Error> {
        let unreadable = match check_offsets(bytes) {
            Checked::Within => None,
            Checked::Beyond(e) => return Err(e),
            Checked::Unreadable(message) => Some(message),
        };
        let tensors = SafeTensors::deserialize(bytes).map_err(invalid)?;
        match unreadable {
            // The crate read a header that the check could not: never rely on unchecked offsets.
            Some(message) => Err(Error::InvalidSafetensors {
                message: format!("the header's offsets could not be checked: {message}"),
            }),
            None => Ok(SafetensorsReader { tensors }),
        }
    }

    /// The names of the tensors in the file, sorted.
    ///
    /// ```
    /// use ndarray_layernorm::{RmsNorm, SafetensorsReader};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let bytes = RmsNorm::<f32>::affine(8, 1e-6)?.to_safetensors("model.norm")?;
    /// assert_eq!(SafetensorsReader::new(&bytes)?.names(), ["model.norm.weight"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn names(&self) -> Vec<&str> {
        let mut names = self.tensors.names();
        names.sort_unstable();
        names
    }

    /// A [`LayerNorm`] from the tensors `prefix.weight` (or `prefix.gamma`) and, if present,
    /// `prefix.bias` (or `prefix.beta`), over as many trailing axes as the weight has, with the
    /// given epsilon. See the [type-level docs](Self) for the rules.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::{LayerNorm, SafetensorsReader};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f64>::new(1e-5)?
    ///     .with_gamma(array![1.5, -2.0])?
    ///     .with_beta(array![0.25, 0.0])?;
    /// let bytes = ln.to_safetensors("ln_f")?;
    /// let loaded = SafetensorsReader::new(&bytes)?.layer_norm::<f64>("ln_f", 1e-5)?;
    /// assert_eq!(loaded, ln);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidEpsilon`] if `epsilon` is negative, NaN or infinite.
    /// * [`Error::TensorMissing`] if the file has no scale under `prefix`.
    /// * [`Error::TensorAmbiguous`] if it has a parameter under both of its names.
    /// * [`Error::TensorDtype`], [`Error::TensorShapeInvalid`], [`Error::TensorOverflow`] for
    ///   a tensor of another dtype, an unusable shape, or a value out of range.
    /// * [`Error::TensorShape`] if the bias does not have the weight's shape.
    pub fn layer_norm<F: SafetensorsElement>(
        &self,
        prefix: &str,
        epsilon: F,
    ) -> Result<LayerNorm<F>, Error> {
        self.build_layer_norm(prefix, None, epsilon)
    }

    /// A [`LayerNorm`] over the normalized shape `shape` (PyTorch's `normalized_shape`), from
    /// tensors of that shape or rank-1 tensors of as many elements. See
    /// [`layer_norm`](Self::layer_norm) and the [type-level docs](Self).
    ///
    /// ```
    /// use ndarray::Array1;
    /// use ndarray_layernorm::{LayerNorm, SafetensorsReader};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// // A flattened weight of 6 elements, loaded as the gamma of shape [2, 3].
    /// let flat = LayerNorm::<f32>::new(1e-5)?.with_gamma(Array1::from_elem(6, 0.5f32))?;
    /// let bytes = flat.to_safetensors("norm")?;
    /// let reader = SafetensorsReader::new(&bytes)?;
    /// let ln = reader.layer_norm_with_shape::<f32>("norm", &[2, 3], 1e-5)?;
    /// assert_eq!((ln.trailing_axes(), ln.gamma().unwrap().shape()), (2, &[2, 3][..]));
    /// assert!(reader.layer_norm_with_shape::<f32>("norm", &[2, 2], 1e-5).is_err());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`layer_norm`](Self::layer_norm), and
    /// * [`Error::InvalidAxes`] if `shape` is empty, [`Error::ShapeTooLarge`] if it has more
    ///   elements than an array can hold;
    /// * [`Error::TensorShape`] if a tensor has neither `shape` nor one axis of as many
    ///   elements.
    pub fn layer_norm_with_shape<F: SafetensorsElement>(
        &self,
        prefix: &str,
        shape: &[usize],
        epsilon: F,
    ) -> Result<LayerNorm<F>, Error> {
        self.build_layer_norm(prefix, Some(shape), epsilon)
    }

    /// An [`RmsNorm`] from the tensor `prefix.weight` (or `prefix.gamma`), over as many
    /// trailing axes as it has, with the given epsilon. See the [type-level docs](Self).
    ///
    /// ```
    /// use ndarray_layernorm::{RmsNorm, SafetensorsReader};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let bytes = RmsNorm::<f32>::affine(3, 1e-6)?.to_safetensors("model.norm")?;
    /// let rms = SafetensorsReader::new(&bytes)?.rms_norm::<f32>("model.norm", 1e-6)?;
    /// assert_eq!(rms, RmsNorm::affine(3, 1e-6)?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`layer_norm`](Self::layer_norm), and [`Error::TensorUnexpected`] if the file has a
    /// `prefix.bias` or `prefix.beta` (an RMSNorm has no bias).
    pub fn rms_norm<F: SafetensorsElement>(
        &self,
        prefix: &str,
        epsilon: F,
    ) -> Result<RmsNorm<F>, Error> {
        self.build_rms_norm(prefix, None, epsilon)
    }

    /// An [`RmsNorm`] over the normalized shape `shape`, from a tensor of that shape or a
    /// rank-1 tensor of as many elements. See [`layer_norm_with_shape`](Self::layer_norm_with_shape).
    ///
    /// ```
    /// use ndarray_layernorm::{RmsNorm, SafetensorsReader};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let bytes = RmsNorm::<f64>::affine_shape(&[2, 2], 1e-6)?.to_safetensors("norm")?;
    /// let rms = SafetensorsReader::new(&bytes)?.rms_norm_with_shape::<f64>("norm", &[2, 2], 1e-6)?;
    /// assert_eq!(rms.trailing_axes(), 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`rms_norm`](Self::rms_norm) and [`layer_norm_with_shape`](Self::layer_norm_with_shape).
    pub fn rms_norm_with_shape<F: SafetensorsElement>(
        &self,
        prefix: &str,
        shape: &[usize],
        epsilon: F,
    ) -> Result<RmsNorm<F>, Error> {
        self.build_rms_norm(prefix, Some(shape), epsilon)
    }

    fn build_layer_norm<F: SafetensorsElement>(
        &self,
        prefix: &str,
        shape: Option<&[usize]>,
        epsilon: F,
    ) -> Result<LayerNorm<F>, Error> {
        let layer = LayerNorm::new(epsilon)?;
        let (gamma, beta) = self.params::<F>(prefix, shape, true)?;
        let layer = layer.with_trailing_axes(gamma.ndim())?.with_gamma(gamma)?;
        match beta {
            Some(beta) => layer.with_beta(beta),
            None => Ok(layer),
        }
    }

    fn build_rms_norm<F: SafetensorsElement>(
        &self,
        prefix: &str,
        shape: Option<&[usize]>,
        epsilon: F,
    ) -> Result<RmsNorm<F>, Error> {
        let layer = RmsNorm::new(epsilon)?;
        let (gamma, _) = self.params::<F>(prefix, shape, false)?;
        layer.with_trailing_axes(gamma.ndim())?.with_gamma(gamma)
    }

    /// The scale and (for LayerNorm, `bias`) the shift under `prefix`, decoded and shaped.
    #[allow(clippy::type_complexity)]
    fn params<F: SafetensorsElement>(
        &self,
        prefix: &str,
        shape: Option<&[usize]>,
        bias: bool,
    ) -> Result<(ArrayD<F>, Option<ArrayD<F>>), Error> {
        if let Some(shape) = shape {
            if shape.is_empty() {
                return Err(Error::InvalidAxes { axes: 0 });
            }
            validate::array_size(shape)?;
        }
        let weight = self.find(prefix, "weight", "gamma")?;
        let shift = self.find(prefix, "bias", "beta")?;
        let Some((name, view)) = weight else {
            return Err(Error::TensorMissing {
                name: tensor_name(prefix, "weight"),
                alternative: Some(tensor_name(prefix, "gamma")),
            });
        };
        if !bias {
            if let Some((name, _)) = shift {
                return Err(Error::TensorUnexpected { name });
            }
        }
        let gamma = shaped(&name, decode::<F>(&name, &view)?, shape)?;
        let beta = match shift {
            Some((name, view)) if bias => {
                let beta = shaped(&name, decode::<F>(&name, &view)?, Some(gamma.shape()))?;
                Some(beta)
            }
            _ => None,
        };
        Ok((gamma, beta))
    }

    /// The tensor `prefix.name`, else `prefix.old`, else none; both is an error.
    #[allow(clippy::type_complexity)]
    fn find(
        &self,
        prefix: &str,
        name: &str,
        old: &str,
    ) -> Result<Option<(String, ::safetensors::tensor::TensorView<'data>)>, Error> {
        let (name, old) = (tensor_name(prefix, name), tensor_name(prefix, old));
        match (
            self.tensors.tensor(&name).ok(),
            self.tensors.tensor(&old).ok(),
        ) {
            (Some(_), Some(_)) => Err(Error::TensorAmbiguous { name, other: old }),
            (Some(view), None) => Ok(Some((name, view))),
            (None, Some(view)) => Ok(Some((old, view))),
            (None, None) => Ok(None),
        }
    }
}

/// The values of a tensor as an array of its shape, converted to `F`.
fn decode<F: SafetensorsElement>(
    name: &str,
    view: &::safetensors::tensor::TensorView<'_>,
) -> Result<ArrayD<F>, Error> {
    let dtype = view.dtype();
    let Some(width) = width(dtype) else {
        return Err(Error::TensorDtype {
            name: name.to_string(),
            dtype: dtype.to_string(),
        });
    };
    let shape = view.shape().to_vec();
    if shape.is_empty() || validate::array_size(&shape).is_err() {
        return Err(Error::TensorShapeInvalid {
            name: name.to_string(),
            shape,
        });
    }
    let data = view.data();
    // The crate has checked this; a mismatch is an error here too, never a panic.
    let count = shape.iter().try_fold(1usize, |n, &len| n.checked_mul(len));
    if count.and_then(|n| n.checked_mul(width)) != Some(data.len()) {
        return Err(Error::InvalidSafetensors {
            message: format!(
                "tensor `{name}` has {} bytes of data for shape {shape:?} of {dtype}",
                data.len()
            ),
        });
    }
    let mut values = Vec::with_capacity(data.len() / width);
    if dtype == F::DTYPE {
        values.extend(data.chunks_exact(width).map(F::from_le));
    } else {
        for (index, bytes) in data.chunks_exact(width).enumerate() {
            let value = wide(dtype, bytes);
            let narrow = F::narrow(value);
            if narrow.is_infinite() && value.is_finite() {
                return Err(Error::TensorOverflow {
                    name: name.to_string(),
                    index,
                    value,
                    target: F::NAME,
                });
            }
            values.push(narrow);
        }
    }
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|_| Error::TensorShapeInvalid {
        name: name.to_string(),
        shape,
    })
}

/// `value` checked against the shape it must have, if any: taken as it is, or a rank-1 array
/// of as many elements reshaped to it.
fn shaped<F: Float>(
    name: &str,
    value: ArrayD<F>,
    shape: Option<&[usize]>,
) -> Result<ArrayD<F>, Error> {
    let Some(shape) = shape else {
        return Ok(value);
    };
    if value.shape() == shape {
        return Ok(value);
    }
    let mismatch = |actual: &[usize]| Error::TensorShape {
        name: name.to_string(),
        expected: shape.to_vec(),
        actual: actual.to_vec(),
    };
    let count = shape.iter().try_fold(1usize, |n, &len| n.checked_mul(len));
    if value.ndim() != 1 || count != Some(value.len()) {
        return Err(mismatch(value.shape()));
    }
    let actual = value.shape().to_vec();
    value
        .into_shape_with_order(IxDyn(shape))
        .map_err(|_| mismatch(&actual))
}

/// One tensor to be written: its name, dtype, shape and little-endian bytes.
#[derive(Clone, PartialEq)]
struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl<F: SafetensorsElement> From<(String, &ArrayD<F>)> for Tensor {
    fn from((name, value): (String, &ArrayD<F>)) -> Self {
        let mut data = Vec::with_capacity(value.len() * std::mem::size_of::<F>());
        value.iter().for_each(|v| v.write_le(&mut data));
        Tensor {
            name,
            dtype: F::DTYPE,
            shape: value.shape().to_vec(),
            data,
        }
    }
}

/// Layers collected into one safetensors file, as a model export writes them.
///
/// A layer added under the prefix `p` is written as `p.weight` (gamma) and, if the layer has
/// one, `p.bias` (beta): PyTorch's names, which [`SafetensorsReader`] reads back. An empty
/// prefix writes `weight` and `bias`. The tensors have the shape of gamma and beta (a layer over
/// `k` trailing axes writes tensors with `k` axes) and the layer's element type (`F32` for an
/// `f32` layer, `F64` for `f64`), so that loading gives back the same layer bit for bit.
/// Epsilon is not written (safetensors holds tensors only): pass it again when loading.
///
/// A layer without gamma has no tensor to write (a PyTorch layer with
/// `elementwise_affine=False` has none in its state dict either), and adding it is an
/// [`Error::NothingToSave`]; such a layer is rebuilt with `new(epsilon)`. The header carries
/// the metadata `{"format": "pt"}`, which PyTorch-side loaders look for.
///
/// ```
/// use ndarray_layernorm::{LayerNorm, RmsNorm, SafetensorsReader, SafetensorsWriter};
/// # fn main() -> Result<(), ndarray_layernorm::Error> {
/// let ln = LayerNorm::<f32>::affine(4, 1e-5)?;
/// let rms = RmsNorm::<f64>::affine(4, 1e-6)?;
/// let mut writer = SafetensorsWriter::new();
/// writer.add_layer_norm("blocks.0.ln", &ln)?.add_rms_norm("blocks.0.rms", &rms)?;
/// let bytes = writer.to_bytes()?;
/// let reader = SafetensorsReader::new(&bytes)?;
/// assert_eq!(reader.names(), ["blocks.0.ln.bias", "blocks.0.ln.weight", "blocks.0.rms.weight"]);
/// assert_eq!(reader.rms_norm::<f64>("blocks.0.rms", 1e-6)?, rms);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct SafetensorsWriter {
    tensors: Vec<Tensor>,
}

impl fmt::Debug for SafetensorsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.tensors.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("SafetensorsWriter")
            .field("names", &names)
            .finish()
    }
}

impl SafetensorsWriter {
    /// A writer with no tensors.
    ///
    /// ```
    /// use ndarray_layernorm::SafetensorsWriter;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let bytes = SafetensorsWriter::new().to_bytes()?;
    /// let header = std::str::from_utf8(&bytes[8..]).unwrap();
    /// assert_eq!(header.trim_end(), r#"{"__metadata__":{"format":"pt"}}"#);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a [`LayerNorm`] as `prefix.weight` and, if it has beta, `prefix.bias`.
    ///
    /// ```
    /// use ndarray_layernorm::{LayerNorm, SafetensorsWriter};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let mut writer = SafetensorsWriter::new();
    /// writer.add_layer_norm("ln", &LayerNorm::<f32>::affine(2, 1e-5)?)?;
    /// assert!(writer.add_layer_norm("ln", &LayerNorm::<f32>::affine(2, 1e-5)?).is_err());
    /// assert!(writer.add_layer_norm("plain", &LayerNorm::<f32>::new(1e-5)?).is_err());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::NothingToSave`] if the layer has no gamma.
    /// * [`Error::TensorDuplicate`] if a tensor of one of the names was added before.
    ///
    /// On error nothing is added.
    pub fn add_layer_norm<F: SafetensorsElement>(
        &mut self,
        prefix: &str,
        layer: &LayerNorm<F>,
    ) -> Result<&mut Self, Error> {
        self.add(prefix, layer.gamma(), layer.beta())
    }

    /// Adds an [`RmsNorm`] as `prefix.weight`.
    ///
    /// ```
    /// use ndarray_layernorm::{RmsNorm, SafetensorsWriter};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let mut writer = SafetensorsWriter::new();
    /// writer.add_rms_norm("norm", &RmsNorm::<f64>::affine(2, 1e-6)?)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`add_layer_norm`](Self::add_layer_norm).
    pub fn add_rms_norm<F: SafetensorsElement>(
        &mut self,
        prefix: &str,
        layer: &RmsNorm<F>,
    ) -> Result<&mut Self, Error> {
        self.add(prefix, layer.gamma(), None)
    }

    fn add<F: SafetensorsElement>(
        &mut self,
        prefix: &str,
        gamma: Option<&ArrayD<F>>,
        beta: Option<&ArrayD<F>>,
    ) -> Result<&mut Self, Error> {
        let Some(gamma) = gamma else {
            return Err(Error::NothingToSave {
                prefix: prefix.to_string(),
            });
        };
        let mut new = vec![Tensor::from((tensor_name(prefix, "weight"), gamma))];
        if let Some(beta) = beta {
            new.push(Tensor::from((tensor_name(prefix, "bias"), beta)));
        }
        if let Some(t) = new
            .iter()
            .find(|t| self.tensors.iter().any(|old| old.name == t.name))
        {
            return Err(Error::TensorDuplicate {
                name: t.name.clone(),
            });
        }
        self.tensors.extend(new);
        Ok(self)
    }

    /// The safetensors file of the layers added, as bytes.
    ///
    /// ```
    /// use ndarray_layernorm::{RmsNorm, SafetensorsWriter};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let mut writer = SafetensorsWriter::new();
    /// writer.add_rms_norm("norm", &RmsNorm::<f32>::affine(2, 1e-6)?)?;
    /// let bytes = writer.to_bytes()?;
    /// // 8 bytes of header length, the header padded to a multiple of 8, then 2 x 4 bytes.
    /// let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    /// assert_eq!((n % 8, bytes.len()), (0, 8 + n + 8));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSafetensors`] if the `safetensors` crate refuses to write the file (a
    /// header above its limit of 100 MB).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let metadata = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        ::safetensors::serialize(
            self.tensors.iter().map(|t| (t.name.as_str(), t)),
            Some(metadata),
        )
        .map_err(invalid)
    }

    /// Writes the safetensors file of the layers added to `path` (replacing any file there).
    ///
    /// ```
    /// use ndarray_layernorm::{LayerNorm, SafetensorsWriter};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let path = std::env::temp_dir().join("ndarray_layernorm_writer_doctest.safetensors");
    /// let mut writer = SafetensorsWriter::new();
    /// writer.add_layer_norm("ln", &LayerNorm::<f32>::affine(3, 1e-5)?)?;
    /// writer.save(&path)?;
    /// assert_eq!(LayerNorm::<f32>::load_safetensors(&path, "ln", 1e-5)?, LayerNorm::affine(3, 1e-5)?);
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`to_bytes`](Self::to_bytes), and [`Error::Io`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|e| io_error(path, e))
    }
}

/// Reads a whole file into memory.
fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| io_error(path, e))
}

/// Loading and saving with safetensors (feature `safetensors`), for `F` = `f32` or `f64`
/// (`SafetensorsElement` is the crate's internal list of the element types a file loads into);
/// the rules are in the docs of [`SafetensorsReader`] and [`SafetensorsWriter`].
#[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
impl<F: SafetensorsElement> LayerNorm<F> {
    /// The layer stored under `prefix` in the safetensors file `bytes`
    /// (`prefix.weight`/`prefix.bias`, or `prefix.gamma`/`prefix.beta`), with the given
    /// epsilon: [`SafetensorsReader::layer_norm`] of the file. Tensors of dtype `F16`, `BF16`,
    /// `F32` or `F64` are converted to `F` (exactly, except `F64` into `f32`: rounded to
    /// nearest).
    ///
    /// ```
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f32>::affine(4, 1e-12)?;
    /// let bytes = ln.to_safetensors("encoder.layer.0.output.LayerNorm")?;
    /// let loaded = LayerNorm::<f32>::from_safetensors(&bytes, "encoder.layer.0.output.LayerNorm", 1e-12)?;
    /// assert_eq!(loaded, ln);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`SafetensorsReader::new`] and [`SafetensorsReader::layer_norm`].
    pub fn from_safetensors(bytes: &[u8], prefix: &str, epsilon: F) -> Result<Self, Error> {
        SafetensorsReader::new(bytes)?.layer_norm(prefix, epsilon)
    }

    /// [`from_safetensors`](Self::from_safetensors) of the file at `path`, read whole.
    ///
    /// ```
    /// use ndarray_layernorm::{Error, LayerNorm};
    /// let missing = LayerNorm::<f32>::load_safetensors("no/such/file.safetensors", "ln", 1e-5);
    /// assert!(matches!(missing, Err(Error::Io { .. })));
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read, and as
    /// [`from_safetensors`](Self::from_safetensors).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        prefix: &str,
        epsilon: F,
    ) -> Result<Self, Error> {
        Self::from_safetensors(&read(path.as_ref())?, prefix, epsilon)
    }

    /// The layer as a safetensors file of its own: `prefix.weight` (gamma) and, if it has
    /// beta, `prefix.bias`, in the layer's element type and gamma's shape. See
    /// [`SafetensorsWriter`], which puts several layers in one file.
    ///
    /// ```
    /// use ndarray_layernorm::{LayerNorm, SafetensorsReader};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let bytes = LayerNorm::<f64>::affine_shape(&[2, 3], 1e-5)?.to_safetensors("ln")?;
    /// assert_eq!(SafetensorsReader::new(&bytes)?.names(), ["ln.bias", "ln.weight"]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::NothingToSave`] if the layer has no gamma.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>, Error> {
        SafetensorsWriter::new()
            .add_layer_norm(prefix, self)?
            .to_bytes()
    }

    /// Writes [`to_safetensors`](Self::to_safetensors) to the file at `path`.
    ///
    /// ```
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let path = std::env::temp_dir().join("ndarray_layernorm_ln_doctest.safetensors");
    /// let ln = LayerNorm::<f32>::affine(3, 1e-5)?;
    /// ln.save_safetensors(&path, "ln")?;
    /// assert_eq!(LayerNorm::load_safetensors(&path, "ln", 1e-5)?, ln);
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`to_safetensors`](Self::to_safetensors), and [`Error::Io`] if the file cannot be
    /// written.
    pub fn save_safetensors(&self, path: impl AsRef<Path>, prefix: &str) -> Result<(), Error> {
        SafetensorsWriter::new()
            .add_layer_norm(prefix, self)?
            .save(path)
    }
}

/// Loading and saving with safetensors (feature `safetensors`), for `F` = `f32` or `f64`
/// (`SafetensorsElement` is the crate's internal list of the element types a file loads into);
/// the rules are in the docs of [`SafetensorsReader`] and [`SafetensorsWriter`].
#[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
impl<F: SafetensorsElement> RmsNorm<F> {
    /// The layer stored under `prefix` in the safetensors file `bytes` (`prefix.weight`, or
    /// `prefix.gamma`), with the given epsilon: [`SafetensorsReader::rms_norm`] of the file.
    ///
    /// ```
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let rms = RmsNorm::<f64>::affine(4, 1e-6)?;
    /// let bytes = rms.to_safetensors("model.layers.0.input_layernorm")?;
    /// let loaded = RmsNorm::<f64>::from_safetensors(&bytes, "model.layers.0.input_layernorm", 1e-6)?;
    /// assert_eq!(loaded, rms);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`SafetensorsReader::new`] and [`SafetensorsReader::rms_norm`].
    pub fn from_safetensors(bytes: &[u8], prefix: &str, epsilon: F) -> Result<Self, Error> {
        SafetensorsReader::new(bytes)?.rms_norm(prefix, epsilon)
    }

    /// [`from_safetensors`](Self::from_safetensors) of the file at `path`, read whole.
    ///
    /// ```
    /// use ndarray_layernorm::{Error, RmsNorm};
    /// let missing = RmsNorm::<f32>::load_safetensors("no/such/file.safetensors", "norm", 1e-6);
    /// assert!(matches!(missing, Err(Error::Io { .. })));
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read, and as
    /// [`from_safetensors`](Self::from_safetensors).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        prefix: &str,
        epsilon: F,
    ) -> Result<Self, Error> {
        Self::from_safetensors(&read(path.as_ref())?, prefix, epsilon)
    }

    /// The layer as a safetensors file of its own: `prefix.weight` (gamma), in the layer's
    /// element type and gamma's shape. See [`SafetensorsWriter`].
    ///
    /// ```
    /// use ndarray_layernorm::{RmsNorm, SafetensorsReader};
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let bytes = RmsNorm::<f32>::affine(2, 1e-6)?.to_safetensors("")?;
    /// assert_eq!(SafetensorsReader::new(&bytes)?.names(), ["weight"]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::NothingToSave`] if the layer has no gamma.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>, Error> {
        SafetensorsWriter::new()
            .add_rms_norm(prefix, self)?
            .to_bytes()
    }

    /// Writes [`to_safetensors`](Self::to_safetensors) to the file at `path`.
    ///
    /// ```
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let path = std::env::temp_dir().join("ndarray_layernorm_rms_doctest.safetensors");
    /// let rms = RmsNorm::<f32>::affine(3, 1e-6)?;
    /// rms.save_safetensors(&path, "norm")?;
    /// assert_eq!(RmsNorm::load_safetensors(&path, "norm", 1e-6)?, rms);
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`to_safetensors`](Self::to_safetensors), and [`Error::Io`] if the file cannot be
    /// written.
    pub fn save_safetensors(&self, path: impl AsRef<Path>, prefix: &str) -> Result<(), Error> {
        SafetensorsWriter::new()
            .add_rms_norm(prefix, self)?
            .save(path)
    }
}
