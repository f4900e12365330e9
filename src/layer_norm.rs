//! The [`LayerNorm`] layer: its parameters and its forward pass.

use ndarray::{Array, ArrayD, ArrayRef, Dimension};

use crate::error::{Error, Param};
use crate::float::Float;
use crate::norm::{Core, LAYER};
use crate::outputs::Stats;

/// Layer normalization over the last axis of an array, or over its last `k` axes.
///
/// ```text
/// mean = sum(x) / n                       (over each row: the last axis, n = its length)
/// var  = sum((x - mean)^2) / n            (biased)
/// y    = (x - mean) / sqrt(var + eps) * gamma + beta
/// ```
///
/// A `LayerNorm` that exists is valid: epsilon is finite and non-negative, and gamma and beta,
/// where present, have the same shape. Each forward call checks only its input.
///
/// # Several trailing axes
/// [`with_trailing_axes(k)`](Self::with_trailing_axes) makes a "row" the last `k` axes taken
/// together (in row-major order): the statistics are over all their elements, and gamma and
/// beta have their shape. This is PyTorch's `normalized_shape` (of length `k`) and ONNX's
/// `axis` attribute, which normalizes over axes `axis..rank`: `k = rank - axis` for
/// `axis >= 0`, `k = -axis` for a negative `axis`. Statistics have the shape of the input's
/// leading axes followed by `k - 1` axes of length 1 (the input's shape with its last axis
/// removed and the other normalized axes set to 1); inserting one more axis of length 1 at
/// the end gives ONNX's shape of `Mean` and `InvStdDev`.
/// ONNX stores `epsilon` as an `f32`: for `f64` data, `f64::from(eps_f32)` reproduces a node.
///
/// ```
/// use ndarray::Array;
/// use ndarray_layernorm::LayerNorm;
/// # fn main() -> Result<(), ndarray_layernorm::Error> {
/// // PyTorch: nn.LayerNorm([4, 5]); ONNX: LayerNormalization(axis = -2) or axis = 1 here.
/// let ln = LayerNorm::<f32>::affine_shape(&[4, 5], 1e-5)?;
/// let x = Array::linspace(0.0, 1.0, 3 * 4 * 5).into_shape_with_order((3, 4, 5)).unwrap();
/// let (y, stats) = ln.forward_with_stats(&x)?;
/// assert_eq!(stats.mean.shape(), &[3, 1]);
/// // Each 4 x 5 block has mean 0 and variance 1.
/// let block = y.index_axis(ndarray::Axis(0), 1);
/// assert!(block.mean().unwrap().abs() < 1e-6);
/// # Ok(())
/// # }
/// ```
///
/// # Accuracy
/// Statistics are computed in `f64` with compensated sums: the mean and the variance are rounded
/// once, and each output is `(x - mean) / sqrt(var + eps)` with a true division. For `f32` input
/// the output is within one unit of `f32::EPSILON * max(1, |y|)` of the exact value; for `f64`
/// input within two units of `f64::EPSILON * max(1, |y|)`, however large `|mean| / std` (rows
/// with `|mean| > std` are also shifted by what the rounding of the mean left out, and
/// normalized by the variance about the exact mean). Values near the
/// ends of the floating-point range are rescaled internally and normalize as accurately as values
/// near 1.
///
/// # Special rows
/// * A constant row, or a row of one element, normalizes to exactly 0 (then `* gamma + beta`),
///   for every epsilon including 0: its mean is exact and every deviation is 0, and `0 / 0` is
///   defined as 0 here.
/// * A row that holds a NaN or an infinity gives NaN in every element of that row, and in its
///   statistics; the other rows are not affected. Gamma and beta are not checked for NaN: a
///   NaN there gives NaN in its column of every row.
/// * A zero-length last axis, or zero rows, gives an empty output of the same shape.
///
/// # Example
/// ```
/// use approx::assert_abs_diff_eq;
/// use ndarray::{array, Array1};
/// use ndarray_layernorm::LayerNorm;
/// # fn main() -> Result<(), ndarray_layernorm::Error> {
/// let ln = LayerNorm::<f64>::new(0.0)?
///     .with_gamma(Array1::from_elem(4, 2.0))?
///     .with_beta(Array1::from_elem(4, 1.0))?;
/// let x = array![[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]];
/// let y = ln.forward(&x)?;
/// // mean 2.5, variance 1.25: y = (x - 2.5) / sqrt(1.25) * 2 + 1.
/// let s = 1.25f64.sqrt();
/// assert_abs_diff_eq!(y[[0, 0]], -1.5 / s * 2.0 + 1.0, epsilon = 1e-15);
/// // A constant row is exactly beta.
/// assert_eq!(y.row(1).to_vec(), vec![1.0; 4]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm<F: Float> {
    pub(crate) core: Core<F>,
}

impl<F: Float> Default for LayerNorm<F> {
    /// Epsilon `1e-5` (rounded to `F`, as in PyTorch), the last axis, no gamma, no beta.
    fn default() -> Self {
        LayerNorm {
            core: Core::default_eps(),
        }
    }
}

impl<F: Float> LayerNorm<F> {
    /// A layer with the given epsilon and no gamma or beta, over the last axis.
    ///
    /// ```
    /// use ndarray_layernorm::LayerNorm;
    /// let ln = LayerNorm::<f32>::new(1e-6).unwrap();
    /// assert_eq!(ln.epsilon(), 1e-6);
    /// assert!(LayerNorm::<f32>::new(-1.0).is_err());
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidEpsilon`] if `epsilon` is negative, NaN or infinite.
    pub fn new(epsilon: F) -> Result<Self, Error> {
        Ok(LayerNorm {
            core: Core::new(epsilon)?,
        })
    }

    /// A layer with `gamma = ones(size)` and `beta = zeros(size)`: the initial state of a
    /// trainable layer for rows of length `size`.
    ///
    /// ```
    /// use ndarray::Array1;
    /// use ndarray_layernorm::LayerNorm;
    /// let ln = LayerNorm::<f64>::affine(3, 1e-5).unwrap();
    /// assert_eq!(ln.gamma(), Some(&Array1::ones(3).into_dyn()));
    /// assert_eq!(ln.beta(), Some(&Array1::zeros(3).into_dyn()));
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidEpsilon`] if `epsilon` is negative, NaN or infinite.
    /// * [`Error::ShapeTooLarge`] if `size` exceeds `isize::MAX`.
    pub fn affine(size: usize, epsilon: F) -> Result<Self, Error> {
        Self::affine_shape(&[size], epsilon)
    }

    /// A layer over the last `shape.len()` axes with `gamma = ones(shape)` and
    /// `beta = zeros(shape)`: PyTorch's `nn.LayerNorm(normalized_shape, eps)`.
    ///
    /// ```
    /// use ndarray_layernorm::LayerNorm;
    /// let ln = LayerNorm::<f32>::affine_shape(&[4, 8], 1e-5).unwrap();
    /// assert_eq!(ln.trailing_axes(), 2);
    /// assert_eq!(ln.gamma().unwrap().shape(), &[4, 8]);
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidEpsilon`] if `epsilon` is negative, NaN or infinite.
    /// * [`Error::InvalidAxes`] if `shape` is empty.
    /// * [`Error::ShapeTooLarge`] if the product of the non-zero lengths of `shape` exceeds
    ///   `isize::MAX` (ndarray's limit, which counts them even when another length is 0).
    pub fn affine_shape(shape: &[usize], epsilon: F) -> Result<Self, Error> {
        Ok(LayerNorm {
            core: Core::affine(shape, epsilon, true)?,
        })
    }

    /// The same layer, normalizing over the last `axes` axes taken together (see the
    /// type-level docs for the mapping to PyTorch and ONNX). Set it before gamma and beta,
    /// which must then have `axes` axes.
    ///
    /// ```
    /// use ndarray::Array3;
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f64>::new(0.0)?.with_trailing_axes(2)?;
    /// let x = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i + j * k) as f64);
    /// let y = ln.forward(&x)?;
    /// // Each 3 x 4 block is normalized as one row of 12 elements.
    /// let flat = x.into_shape_with_order((2, 12)).unwrap();
    /// let expected = LayerNorm::new(0.0)?.forward(&flat)?;
    /// assert_eq!(y.into_shape_with_order((2, 12)).unwrap(), expected);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidAxes`] if `axes` is 0.
    /// * [`Error::ParamAxes`] if the layer has a gamma or beta with another number of axes.
    pub fn with_trailing_axes(self, axes: usize) -> Result<Self, Error> {
        Ok(LayerNorm {
            core: self.core.with_axes(axes)?,
        })
    }

    /// The same layer with the scale `gamma` (replacing any previous one): one axis per
    /// normalized axis (an `Array1` for the default of one axis), in any layout.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// let ln = LayerNorm::<f64>::default().with_gamma(array![1.0, 2.0]).unwrap();
    /// assert_eq!(ln.gamma().unwrap().as_slice(), Some(&[1.0, 2.0][..]));
    /// ```
    ///
    /// # Errors
    /// * [`Error::ParamAxes`] if `gamma` does not have one axis per normalized axis.
    /// * [`Error::ParamMismatch`] if the layer has a beta of another shape.
    pub fn with_gamma<D: Dimension>(self, gamma: Array<F, D>) -> Result<Self, Error> {
        Ok(LayerNorm {
            core: self.core.with_param(Param::Gamma, gamma)?,
        })
    }

    /// The same layer with the shift `beta` (replacing any previous one), shaped like gamma.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// let ln = LayerNorm::<f64>::default().with_beta(array![0.5, -0.5]).unwrap();
    /// assert_eq!(ln.beta().unwrap().as_slice(), Some(&[0.5, -0.5][..]));
    /// ```
    ///
    /// # Errors
    /// * [`Error::ParamAxes`] if `beta` does not have one axis per normalized axis.
    /// * [`Error::ParamMismatch`] if the layer has a gamma of another shape.
    pub fn with_beta<D: Dimension>(self, beta: Array<F, D>) -> Result<Self, Error> {
        Ok(LayerNorm {
            core: self.core.with_param(Param::Beta, beta)?,
        })
    }

    /// The epsilon added to the variance.
    pub fn epsilon(&self) -> F {
        self.core.epsilon
    }

    /// The number of trailing axes normalized together (1 unless set otherwise).
    pub fn trailing_axes(&self) -> usize {
        self.core.axes
    }

    /// The scale, if the layer has one, in standard layout.
    pub fn gamma(&self) -> Option<&ArrayD<F>> {
        self.core.gamma.as_ref()
    }

    /// The shift, if the layer has one, in standard layout.
    pub fn beta(&self) -> Option<&ArrayD<F>> {
        self.core.beta.as_ref()
    }

    /// Normalizes every row (lane of the last axis, or block of the normalized axes) of `x`
    /// into a new array in standard layout.
    ///
    /// `x` may be any array with at least as many axes as the layer normalizes over (one by
    /// default), in any layout: an owned array, a view, a
    /// stepped slice, a transpose. The result is bitwise the same for every layout.
    ///
    /// ```
    /// use approx::assert_abs_diff_eq;
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let x = array![[1.0f32, 2.0, 3.0], [3.0, 3.0, 3.0]];
    /// let y = LayerNorm::new(0.0)?.forward(&x)?;
    /// // Row 0: mean 2, variance 2/3.
    /// assert_abs_diff_eq!(y[[0, 2]], 1.5f32.sqrt(), epsilon = 1e-7);
    /// assert_eq!(y[[1, 0]], 0.0);
    /// // The transposed view normalizes its own rows (the columns of x).
    /// let yt = LayerNorm::new(0.0)?.forward(&x.t())?;
    /// assert_eq!(yt.shape(), &[3, 2]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::ZeroDimensional`] if `x` has no axis, [`Error::TooFewAxes`] if it has fewer
    ///   than the layer normalizes over.
    /// * [`Error::ParamLength`] (one normalized axis) or [`Error::ParamShape`] (several) if gamma
    ///   or beta does not have the shape of the normalized axes of `x`.
    ///
    /// NaN or infinite input is not an error: see the type-level docs.
    pub fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error> {
        self.core.forward::<LAYER, _>(x)
    }

    /// Normalizes every row of `x` into `out`, an existing array of the same shape in any
    /// layout, so that a caller can reuse one output buffer across calls.
    ///
    /// The result is bitwise the same as [`forward`](Self::forward).
    ///
    /// ```
    /// use ndarray::{array, Array2};
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f32>::default();
    /// let x = array![[1.0, 2.0, 3.0], [4.0, 0.0, -4.0]];
    /// let mut out = Array2::zeros((2, 3));
    /// ln.forward_into(&x, &mut out)?;
    /// assert_eq!(out, ln.forward(&x)?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::ZeroDimensional`] if `x` has no axis, [`Error::TooFewAxes`] if it has fewer
    ///   than the layer normalizes over.
    /// * [`Error::ParamLength`] (one normalized axis) or [`Error::ParamShape`] (several) if gamma
    ///   or beta does not have the shape of the normalized axes of `x`.
    /// * [`Error::ShapeMismatch`] if `out` does not have the shape of `x`.
    ///
    /// On error `out` is left unchanged.
    pub fn forward_into<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        self.core.forward_into::<LAYER, _>(x, out)
    }

    /// Normalizes every row of `x` in place.
    ///
    /// The result is bitwise the same as [`forward`](Self::forward) on the same values.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f64>::default();
    /// let mut x = array![[1.0, 2.0, 3.0], [0.5, 0.25, 0.0]];
    /// let y = ln.forward(&x)?;
    /// ln.forward_inplace(&mut x)?;
    /// assert_eq!(x, y);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::ZeroDimensional`] if `x` has no axis, [`Error::TooFewAxes`] if it has fewer
    ///   than the layer normalizes over.
    /// * [`Error::ParamLength`] (one normalized axis) or [`Error::ParamShape`] (several) if gamma
    ///   or beta does not have the shape of the normalized axes of `x`.
    ///
    /// On error `x` is left unchanged.
    pub fn forward_inplace<D: Dimension>(&self, x: &mut ArrayRef<F, D>) -> Result<(), Error> {
        self.core.forward_inplace::<LAYER, _>(x)
    }

    /// Normalizes like [`forward`](Self::forward) and also returns each row's mean and
    /// `rstd = 1 / sqrt(var + eps)`, the statistics a backward pass reuses.
    ///
    /// The statistics have the shape of `x` without its last axis (with several normalized
    /// axes, the other normalized axes have length 1 there: see the type-level docs).
    ///
    /// ```
    /// use approx::assert_abs_diff_eq;
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let x = array![[1.0, 2.0, 3.0, 4.0]];
    /// let (y, stats) = LayerNorm::<f64>::new(0.0)?.forward_with_stats(&x)?;
    /// assert_eq!(stats.mean, array![2.5]);
    /// assert_abs_diff_eq!(stats.rstd[0], 1.0 / 1.25f64.sqrt(), epsilon = 1e-15);
    /// assert_eq!(y, LayerNorm::new(0.0)?.forward(&x)?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::ZeroDimensional`] if `x` has no axis, [`Error::TooFewAxes`] if it has fewer
    ///   than the layer normalizes over.
    /// * [`Error::ParamLength`] (one normalized axis) or [`Error::ParamShape`] (several) if gamma
    ///   or beta does not have the shape of the normalized axes of `x`.
    #[allow(clippy::type_complexity)]
    pub fn forward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Stats<F, D::Smaller>), Error> {
        self.core.check(x)?;
        let mut rows = Array::from_elem(self.core.stats_dim(x), (F::zero(), F::zero()));
        let y = self
            .core
            .normalize_fresh::<LAYER, _, _>(x, &mut rows, |slot, row| {
                let stats = row.stats();
                *slot = (
                    F::narrow_dd(stats.mean, stats.mean_lo),
                    F::narrow(stats.rstd),
                );
            });
        let stats = Stats {
            mean: rows.map(|s| s.0),
            rstd: rows.map(|s| s.1),
        };
        Ok((y, stats))
    }

    /// Adds `residual` to `x` and normalizes the sum, in one pass over memory: returns
    /// `(h, y)` with `h = x + residual` (rounded to `F`, as a separate addition would store it)
    /// and `y = self.forward(h)`, bitwise. This is the "add & norm" of a transformer block.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f32>::default();
    /// let x = array![[1.0, 2.0, 3.0], [0.5, 0.0, -0.5]];
    /// let residual = array![[0.5, 0.5, 0.5], [1.0, 2.0, 3.0]];
    /// let (h, y) = ln.forward_residual(&x, &residual)?;
    /// assert_eq!(h, &x + &residual);
    /// assert_eq!(y, ln.forward(&h)?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::ZeroDimensional`] if `x` has no axis, [`Error::TooFewAxes`] if it has fewer
    ///   than the layer normalizes over.
    /// * [`Error::ParamLength`] (one normalized axis) or [`Error::ParamShape`] (several) if gamma
    ///   or beta does not have the shape of the normalized axes of `x`.
    /// * [`Error::ShapeMismatch`] if `residual` does not have the shape of `x`.
    #[allow(clippy::type_complexity)]
    pub fn forward_residual<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        residual: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D>), Error> {
        self.core.forward_residual::<LAYER, _>(x, residual)
    }

    /// [`forward_residual`](Self::forward_residual) in place, for a residual stream: adds `x`
    /// into `residual` (which becomes `h = x + residual`) and overwrites `x` with the
    /// normalized sum, in one pass over memory.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f64>::default();
    /// let mut x = array![[1.0, 2.0, 3.0]];
    /// let mut stream = array![[0.5, 0.5, 0.5]];
    /// let (h, y) = ln.forward_residual(&x, &stream)?;
    /// ln.forward_residual_inplace(&mut x, &mut stream)?;
    /// assert_eq!((stream, x), (h, y));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`forward_residual`](Self::forward_residual). On error neither array is changed.
    pub fn forward_residual_inplace<D: Dimension>(
        &self,
        x: &mut ArrayRef<F, D>,
        residual: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        self.core.forward_residual_inplace::<LAYER, _>(x, residual)
    }
}
