//! The [`RmsNorm`] layer: its parameters, forward and backward passes.

use ndarray::{Array, ArrayD, ArrayRef, Dimension};

use crate::error::{Error, Param};
use crate::float::Float;
use crate::norm::{Core, RMS};
use crate::outputs::Gradients;

/// Root-mean-square normalization (RMSNorm, as in LLaMA-style models) over the last axis of an
/// array, or over its last `k` axes.
///
/// ```text
/// ms = sum(x^2) / n                       (over each row: the last axis, n = its length)
/// y  = x / sqrt(ms + eps) * gamma
/// ```
///
/// It is [`LayerNorm`](crate::LayerNorm) without the centring and without beta, and shares its
/// conventions: a layer that exists is valid, gamma is optional and takes the shape of the
/// normalized axes, [`with_trailing_axes`](Self::with_trailing_axes) maps to PyTorch's
/// `normalized_shape` and ONNX's `axis` the same way, and every layout gives the same bits.
///
/// The default epsilon is `1e-5` rounded to `F`, as for `LayerNorm`. ONNX's
/// `RMSNormalization` defaults to `1e-5` as an `f32` (so for `f64` data pass
/// `f64::from(1e-5f32)` to reproduce it), and PyTorch's `nn.RMSNorm` to `eps=None`, which means
/// `torch.finfo(dtype).eps` (`1.19e-7` for `f32`): pass that to [`new`](Self::new) to match it.
///
/// # Accuracy
/// The mean square is a compensated sum of squares in `f64`, rounded once, and each output is
/// `x / sqrt(ms + eps)` with a true division (for `f32` input in `f64`, rounded once). Before
/// gamma, the output is within one unit of `f32::EPSILON * max(1, |y|)` of the exact value for
/// `f32` input, and within two units of `f64::EPSILON * max(1, |y|)` for `f64` input; gamma adds
/// the rounding of one product (the tests assert a per-element bound derived from both). Rows
/// of values near `1e-300` or `1e300`, whose squares leave the range, are rescaled internally
/// and are as accurate. The backward pass runs in twice the precision of the data (see
/// [`backward`](Self::backward)).
///
/// # Special rows
/// * An all-zero row normalizes to exactly 0 (then `* gamma`) for every epsilon including 0
///   (`0 / 0` is defined as 0 here).
/// * A row that holds a NaN or an infinity gives NaN in every element of that row, and in its
///   `rstd`; the other rows are not affected. A NaN in gamma gives NaN in its column.
/// * A zero-length row, or zero rows, gives an empty output of the same shape.
///
/// # Example
/// ```
/// use approx::assert_abs_diff_eq;
/// use ndarray::array;
/// use ndarray_layernorm::RmsNorm;
/// # fn main() -> Result<(), ndarray_layernorm::Error> {
/// let rms = RmsNorm::<f64>::new(0.0)?.with_gamma(array![1.0, 1.0, 2.0, 2.0])?;
/// let x = array![[1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]];
/// let y = rms.forward(&x)?;
/// // Row 0 has mean square 1: y = x * gamma.
/// assert_abs_diff_eq!(y.row(0), array![1.0, -1.0, 2.0, -2.0], epsilon = 1e-15);
/// // An all-zero row stays exactly zero.
/// assert_eq!(y.row(1).to_vec(), vec![0.0; 4]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RmsNorm<F: Float> {
    pub(crate) core: Core<F>,
}

impl<F: Float> Default for RmsNorm<F> {
    /// Epsilon `1e-5` (rounded to `F`; PyTorch's default differs, see the type-level docs), the
    /// last axis, no gamma.
    fn default() -> Self {
        RmsNorm {
            core: Core::default_eps(),
        }
    }
}

impl<F: Float> RmsNorm<F> {
    /// A layer with the given epsilon and no gamma, over the last axis.
    ///
    /// ```
    /// use ndarray_layernorm::RmsNorm;
    /// let rms = RmsNorm::<f32>::new(f32::EPSILON).unwrap(); // PyTorch's default
    /// assert_eq!(rms.epsilon(), f32::EPSILON);
    /// assert!(RmsNorm::<f32>::new(f32::NAN).is_err());
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidEpsilon`] if `epsilon` is negative, NaN or infinite.
    pub fn new(epsilon: F) -> Result<Self, Error> {
        Ok(RmsNorm {
            core: Core::new(epsilon)?,
        })
    }

    /// A layer with `gamma = ones(size)`: the initial state of a trainable layer for rows of
    /// length `size`.
    ///
    /// ```
    /// use ndarray_layernorm::RmsNorm;
    /// let rms = RmsNorm::<f64>::affine(3, 1e-6).unwrap();
    /// assert_eq!(rms.gamma().unwrap().as_slice(), Some(&[1.0; 3][..]));
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidEpsilon`] if `epsilon` is negative, NaN or infinite.
    /// * [`Error::ShapeTooLarge`] if `size` exceeds `isize::MAX`.
    pub fn affine(size: usize, epsilon: F) -> Result<Self, Error> {
        Self::affine_shape(&[size], epsilon)
    }

    /// A layer over the last `shape.len()` axes with `gamma = ones(shape)`: PyTorch's
    /// `nn.RMSNorm(normalized_shape, eps)`.
    ///
    /// ```
    /// use ndarray_layernorm::RmsNorm;
    /// let rms = RmsNorm::<f32>::affine_shape(&[4, 8], 1e-6).unwrap();
    /// assert_eq!(rms.trailing_axes(), 2);
    /// assert_eq!(rms.gamma().unwrap().shape(), &[4, 8]);
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidEpsilon`] if `epsilon` is negative, NaN or infinite.
    /// * [`Error::InvalidAxes`] if `shape` is empty.
    /// * [`Error::ShapeTooLarge`] if the product of the non-zero lengths of `shape` exceeds
    ///   `isize::MAX` (ndarray's limit, which counts them even when another length is 0).
    pub fn affine_shape(shape: &[usize], epsilon: F) -> Result<Self, Error> {
        Ok(RmsNorm {
            core: Core::affine(shape, epsilon, false)?,
        })
    }

    /// The same layer, normalizing over the last `axes` axes taken together (see
    /// [`LayerNorm`](crate::LayerNorm) for the mapping to PyTorch and ONNX). Set it before
    /// gamma, which must then have `axes` axes.
    ///
    /// ```
    /// use ndarray::Array3;
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let rms = RmsNorm::<f64>::new(0.0)?.with_trailing_axes(2)?;
    /// let x = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i + j * k) as f64);
    /// let (_, rstd) = rms.forward_with_stats(&x)?;
    /// assert_eq!(rstd.shape(), &[2, 1]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidAxes`] if `axes` is 0.
    /// * [`Error::ParamAxes`] if the layer has a gamma with another number of axes.
    pub fn with_trailing_axes(self, axes: usize) -> Result<Self, Error> {
        Ok(RmsNorm {
            core: self.core.with_axes(axes)?,
        })
    }

    /// The same layer with the scale `gamma` (replacing any previous one): one axis per
    /// normalized axis, in any layout.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::RmsNorm;
    /// let rms = RmsNorm::<f64>::default().with_gamma(array![1.0, 2.0]).unwrap();
    /// assert_eq!(rms.gamma().unwrap().as_slice(), Some(&[1.0, 2.0][..]));
    /// ```
    ///
    /// # Errors
    /// * [`Error::ParamAxes`] if `gamma` does not have one axis per normalized axis.
    pub fn with_gamma<D: Dimension>(self, gamma: Array<F, D>) -> Result<Self, Error> {
        Ok(RmsNorm {
            core: self.core.with_param(Param::Gamma, gamma)?,
        })
    }

    /// The epsilon added to the mean square.
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

    /// Normalizes every row of `x` into a new array in standard layout.
    ///
    /// `x` may be any array with at least as many axes as the layer normalizes over, in any
    /// layout. The result is bitwise the same for every layout.
    ///
    /// ```
    /// use approx::assert_abs_diff_eq;
    /// use ndarray::array;
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let x = array![[3.0f32, 4.0]];
    /// let y = RmsNorm::new(0.0)?.forward(&x)?;
    /// // Mean square 12.5.
    /// assert_abs_diff_eq!(y[[0, 1]], 4.0 / 12.5f32.sqrt(), epsilon = 1e-6);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::ZeroDimensional`] if `x` has no axis, [`Error::TooFewAxes`] if it has fewer
    ///   than the layer normalizes over.
    /// * [`Error::ParamLength`] (one normalized axis) or [`Error::ParamShape`] (several) if
    ///   gamma does not have the shape of the normalized axes of `x`.
    pub fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error> {
        self.core.forward::<RMS, _>(x)
    }

    /// Normalizes every row of `x` into `out`, an existing array of the same shape in any
    /// layout. Bitwise the same as [`forward`](Self::forward).
    ///
    /// ```
    /// use ndarray::{array, Array2};
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let rms = RmsNorm::<f32>::default();
    /// let x = array![[1.0, 2.0, 3.0]];
    /// let mut out = Array2::zeros((1, 3));
    /// rms.forward_into(&x, &mut out)?;
    /// assert_eq!(out, rms.forward(&x)?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::ShapeMismatch`] if `out` does not have the
    /// shape of `x`. On error `out` is left unchanged.
    pub fn forward_into<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        self.core.forward_into::<RMS, _>(x, out)
    }

    /// Normalizes every row of `x` in place. Bitwise the same as [`forward`](Self::forward).
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let rms = RmsNorm::<f64>::default();
    /// let mut x = array![[1.0, 2.0, 3.0]];
    /// let y = rms.forward(&x)?;
    /// rms.forward_inplace(&mut x)?;
    /// assert_eq!(x, y);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`forward`](Self::forward). On error `x` is left unchanged.
    pub fn forward_inplace<D: Dimension>(&self, x: &mut ArrayRef<F, D>) -> Result<(), Error> {
        self.core.forward_inplace::<RMS, _>(x)
    }

    /// Normalizes like [`forward`](Self::forward) and also returns each row's
    /// `rstd = 1 / sqrt(ms + eps)`, which [`backward_with_stats`](Self::backward_with_stats)
    /// reuses.
    ///
    /// `rstd` has the shape of `x` without its last axis (with several normalized axes, the
    /// other normalized axes have length 1 there). It is `+inf` where `1 / sqrt(ms + eps)` is
    /// beyond the range of `F`: an all-zero row with `eps == 0`, or a row whose root mean
    /// square is below about `1 / F::MAX` ([`backward_with_stats`](Self::backward_with_stats)
    /// recomputes such rows). It is NaN for a row with a NaN or an infinity, or with no
    /// elements.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let x = array![[2.0, -2.0], [0.0, 0.0]];
    /// let (y, rstd) = RmsNorm::<f64>::new(0.0)?.forward_with_stats(&x)?;
    /// assert_eq!(rstd, array![0.5, f64::INFINITY]);
    /// assert_eq!(y, array![[1.0, -1.0], [0.0, 0.0]]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    #[allow(clippy::type_complexity)]
    pub fn forward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D::Smaller>), Error> {
        self.core.check(x)?;
        let mut rstd = Array::from_elem(self.core.stats_dim(x), F::zero());
        let y = self
            .core
            .normalize_fresh::<RMS, _, _>(x, &mut rstd, |slot, row| {
                *slot = F::narrow(row.stats().rstd)
            });
        Ok((y, rstd))
    }

    /// Adds `residual` to `x` and normalizes the sum, in one pass over memory: returns
    /// `(h, y)` with `h = x + residual` (rounded to `F`) and `y = self.forward(h)`, bitwise.
    /// This is the "add & norm" of a pre-norm transformer block.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let rms = RmsNorm::<f32>::default();
    /// let x = array![[1.0, 2.0, 3.0]];
    /// let residual = array![[0.5, 0.5, 0.5]];
    /// let (h, y) = rms.forward_residual(&x, &residual)?;
    /// assert_eq!(h, &x + &residual);
    /// assert_eq!(y, rms.forward(&h)?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::ShapeMismatch`] if `residual` does not have
    /// the shape of `x`.
    #[allow(clippy::type_complexity)]
    pub fn forward_residual<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        residual: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D>), Error> {
        self.core.forward_residual::<RMS, _>(x, residual)
    }

    /// [`forward_residual`](Self::forward_residual) in place, for a residual stream: adds `x`
    /// into `residual` (which becomes `h`) and overwrites `x` with the normalized sum.
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let rms = RmsNorm::<f64>::default();
    /// let mut x = array![[1.0, 2.0, 3.0]];
    /// let mut stream = array![[0.5, 0.5, 0.5]];
    /// let (h, y) = rms.forward_residual(&x, &stream)?;
    /// rms.forward_residual_inplace(&mut x, &mut stream)?;
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
        self.core.forward_residual_inplace::<RMS, _>(x, residual)
    }

    /// The gradients of a loss with respect to the input and gamma, given the input `x` and
    /// the gradient `dy` of the loss with respect to the output.
    ///
    /// ```text
    /// xhat   = x / sqrt(ms + eps),   g = dy * gamma
    /// dx     = (g - xhat * mean(g * xhat)) / sqrt(ms + eps)     (mean over the row)
    /// dgamma = sum over rows of dy * xhat
    /// ```
    ///
    /// Computed as [`LayerNorm::backward`](crate::LayerNorm::backward) is, in twice the
    /// precision of the data (the derivation is in the docs of that module). An all-zero row
    /// has the gradient `g / sqrt(eps)`, and 0 when `eps == 0`; a row of one element `x` has
    /// the closed form `g * eps / (x^2 + eps)^(3/2)` (exactly 0 when `eps == 0`, where the
    /// output is `sign(x)`). A NaN or an infinity in a row of `x` makes that row of the input
    /// gradient NaN and all of `dgamma`; one in `dy` makes its row of the input gradient NaN
    /// and its column of `dgamma`; a NaN in gamma makes every row's input gradient NaN (each
    /// row's `mean(g * xhat)` includes it). With zero rows, the input gradient is empty and
    /// `dgamma` is zeros. The result is bitwise the same for every layout.
    /// [`Gradients::beta`] is always `None`.
    ///
    /// ```
    /// use approx::assert_abs_diff_eq;
    /// use ndarray::array;
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let rms = RmsNorm::<f64>::affine(2, 0.0)?;
    /// let x = array![[3.0, 4.0]];
    /// let dy = array![[1.0, 0.0]];
    /// let grads = rms.backward(&x, &dy)?;
    /// // s = sqrt(12.5), xhat = x / s; dx = (dy - xhat * mean(dy * xhat)) / s.
    /// let s = 12.5f64.sqrt();
    /// let m = 3.0 / s / 2.0;
    /// assert_abs_diff_eq!(grads.input[[0, 0]], (1.0 - 3.0 / s * m) / s, epsilon = 1e-15);
    /// assert_abs_diff_eq!(grads.input[[0, 1]], (0.0 - 4.0 / s * m) / s, epsilon = 1e-15);
    /// assert_abs_diff_eq!(grads.gamma.unwrap()[[0]], 3.0 / s, epsilon = 1e-15);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::ShapeMismatch`] if `dy` does not have the
    /// shape of `x`.
    pub fn backward<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        self.core.backward_recomputed::<RMS, _>(x, dy)
    }

    /// [`backward`](Self::backward) with the `rstd` saved by
    /// [`forward_with_stats`](Self::forward_with_stats), which saves one pass over each row.
    ///
    /// `xhat` is computed as `x * rstd` from the saved value, rounded to `F`, so the gradient
    /// is as accurate as that rounding allows. A saved `rstd` of `+inf` makes that row
    /// recomputed as `backward` would; rows of one element use their closed form whatever was
    /// saved. Other saved values are used as given (only their shape is checked): pass the
    /// `rstd` that `forward_with_stats` returned for the same `x` and layer.
    ///
    /// ```
    /// use approx::assert_abs_diff_eq;
    /// use ndarray::array;
    /// use ndarray_layernorm::RmsNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let rms = RmsNorm::<f64>::affine(3, 1e-5)?;
    /// let x = array![[1.0, -2.0, 0.5]];
    /// let dy = array![[0.1, 0.2, -0.3]];
    /// let (_, rstd) = rms.forward_with_stats(&x)?;
    /// let saved = rms.backward_with_stats(&x, &rstd, &dy)?;
    /// let fresh = rms.backward(&x, &dy)?;
    /// for (a, b) in saved.input.iter().zip(&fresh.input) {
    ///     assert_abs_diff_eq!(*a, *b, epsilon = 1e-14);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`backward`](Self::backward), and [`Error::ShapeMismatch`] if `rstd` does not have
    /// the shape [`forward_with_stats`](Self::forward_with_stats) gives it.
    pub fn backward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        rstd: &ArrayRef<F, D::Smaller>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        self.core.check_backward(x, dy)?;
        let plans = self.core.saved_plans(x, None, rstd)?;
        Ok(self.core.backward::<RMS, _>(x, dy, |i| plans[i]))
    }
}
