//! The [`LayerNorm`] layer: its parameters and its forward pass.

use ndarray::{Array, Array1, ArrayRef, Dimension};

use crate::driver::{for_each_row_mut, for_each_row_pair};
use crate::error::{Error, Param};
use crate::float::Float;
use crate::kernels::{normalize_rows, normalize_rows_inplace, RowStats};
use crate::outputs::Stats;
use crate::validate;

/// Layer normalization over the last axis of an array.
///
/// ```text
/// mean = sum(x) / n                       (over the last axis, n = its length)
/// var  = sum((x - mean)^2) / n            (biased)
/// y    = (x - mean) / sqrt(var + eps) * gamma + beta
/// ```
///
/// A `LayerNorm` that exists is valid: epsilon is finite and non-negative, and gamma and beta,
/// where present, have the same length. Each forward call checks only its input.
///
/// # Accuracy
/// Statistics are computed in `f64` with compensated sums: the mean and the variance are rounded
/// once, and each output is `(x - mean) / sqrt(var + eps)` with a true division. For `f32` input
/// the output is within one unit of `f32::EPSILON * max(1, |y|)` of the exact value; for `f64`
/// input within two units of `f64::EPSILON * max(1, |y|)` when `|mean| <= std`. Values near the
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
    epsilon: F,
    gamma: Option<Array1<F>>,
    beta: Option<Array1<F>>,
}

impl<F: Float> Default for LayerNorm<F> {
    /// Epsilon `1e-5` (rounded to `F`), no gamma, no beta.
    fn default() -> Self {
        LayerNorm {
            epsilon: F::narrow(1e-5),
            gamma: None,
            beta: None,
        }
    }
}

impl<F: Float> LayerNorm<F> {
    /// A layer with the given epsilon and no gamma or beta.
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
            epsilon: validate::epsilon(epsilon)?,
            gamma: None,
            beta: None,
        })
    }

    /// A layer with `gamma = ones(size)` and `beta = zeros(size)`: the initial state of a
    /// trainable layer for rows of length `size`.
    ///
    /// ```
    /// use ndarray::Array1;
    /// use ndarray_layernorm::LayerNorm;
    /// let ln = LayerNorm::<f64>::affine(3, 1e-5).unwrap();
    /// assert_eq!(ln.gamma(), Some(&Array1::ones(3)));
    /// assert_eq!(ln.beta(), Some(&Array1::zeros(3)));
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidEpsilon`] if `epsilon` is negative, NaN or infinite.
    pub fn affine(size: usize, epsilon: F) -> Result<Self, Error> {
        Ok(LayerNorm {
            epsilon: validate::epsilon(epsilon)?,
            gamma: Some(Array1::ones(size)),
            beta: Some(Array1::zeros(size)),
        })
    }

    /// The same layer with the scale `gamma` (replacing any previous one).
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// let ln = LayerNorm::<f64>::default().with_gamma(array![1.0, 2.0]).unwrap();
    /// assert_eq!(ln.gamma(), Some(&array![1.0, 2.0]));
    /// ```
    ///
    /// # Errors
    /// * [`Error::ParamMismatch`] if the layer has a beta of another length.
    pub fn with_gamma(self, gamma: Array1<F>) -> Result<Self, Error> {
        let gamma = standard(gamma);
        validate::params_agree(Some(&gamma), self.beta.as_ref())?;
        Ok(LayerNorm {
            gamma: Some(gamma),
            ..self
        })
    }

    /// The same layer with the shift `beta` (replacing any previous one).
    ///
    /// ```
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// let ln = LayerNorm::<f64>::default().with_beta(array![0.5, -0.5]).unwrap();
    /// assert_eq!(ln.beta(), Some(&array![0.5, -0.5]));
    /// ```
    ///
    /// # Errors
    /// * [`Error::ParamMismatch`] if the layer has a gamma of another length.
    pub fn with_beta(self, beta: Array1<F>) -> Result<Self, Error> {
        let beta = standard(beta);
        validate::params_agree(self.gamma.as_ref(), Some(&beta))?;
        Ok(LayerNorm {
            beta: Some(beta),
            ..self
        })
    }

    /// The epsilon added to the variance.
    pub fn epsilon(&self) -> F {
        self.epsilon
    }

    /// The scale, if the layer has one.
    pub fn gamma(&self) -> Option<&Array1<F>> {
        self.gamma.as_ref()
    }

    /// The shift, if the layer has one.
    pub fn beta(&self) -> Option<&Array1<F>> {
        self.beta.as_ref()
    }

    /// Normalizes every row (lane of the last axis) of `x` into a new array in standard layout.
    ///
    /// `x` may be any array of at least one dimension, in any layout: an owned array, a view, a
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
    /// * [`Error::ZeroDimensional`] if `x` has no axis.
    /// * [`Error::ParamLength`] if gamma or beta is not as long as the last axis of `x`.
    ///
    /// NaN or infinite input is not an error: see the type-level docs.
    pub fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error> {
        self.check(x)?;
        let mut y = Array::zeros(x.raw_dim());
        self.normalize(x, &mut y, &mut Array::from_elem(row_dim(x), ()), |_, _| {});
        Ok(y)
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
    /// * [`Error::ZeroDimensional`] if `x` has no axis.
    /// * [`Error::ParamLength`] if gamma or beta is not as long as the last axis of `x`.
    /// * [`Error::ShapeMismatch`] if `out` does not have the shape of `x`.
    ///
    /// On error `out` is left unchanged.
    pub fn forward_into<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        self.check(x)?;
        validate::same_shape(x.shape(), out.shape())?;
        self.normalize(x, out, &mut Array::from_elem(row_dim(x), ()), |_, _| {});
        Ok(())
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
    /// * [`Error::ZeroDimensional`] if `x` has no axis.
    /// * [`Error::ParamLength`] if gamma or beta is not as long as the last axis of `x`.
    ///
    /// On error `x` is left unchanged.
    pub fn forward_inplace<D: Dimension>(&self, x: &mut ArrayRef<F, D>) -> Result<(), Error> {
        let n = self.check(x)?;
        let (gamma, beta) = self.params();
        let eps = self.epsilon.wide();
        let mut rows = Array::from_elem(row_dim(x), ());
        for_each_row_mut(x, &mut rows, |y, slots| {
            normalize_rows_inplace(y, n, eps, gamma, beta, slots, |_, _| {})
        });
        Ok(())
    }

    /// Normalizes like [`forward`](Self::forward) and also returns each row's mean and
    /// `rstd = 1 / sqrt(var + eps)`, the statistics a backward pass reuses.
    ///
    /// The statistics have the shape of `x` without its last axis.
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
    /// * [`Error::ZeroDimensional`] if `x` has no axis.
    /// * [`Error::ParamLength`] if gamma or beta is not as long as the last axis of `x`.
    #[allow(clippy::type_complexity)]
    pub fn forward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Stats<F, D::Smaller>), Error> {
        self.check(x)?;
        let mut y = Array::zeros(x.raw_dim());
        let mut rows = Array::from_elem(row_dim(x), (F::zero(), F::zero()));
        self.normalize(x, &mut y, &mut rows, |slot, stats| {
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

    /// Checks an input against the layer: at least one axis, and parameters as long as the last.
    /// Returns the length of that last axis.
    pub(crate) fn check<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<usize, Error> {
        let n = validate::last_axis_len(x)?;
        validate::param_len(Param::Gamma, self.gamma.as_ref(), n)?;
        validate::param_len(Param::Beta, self.beta.as_ref(), n)?;
        Ok(n)
    }

    /// Gamma and beta as slices (they are kept in standard layout).
    pub(crate) fn params(&self) -> (Option<&[F]>, Option<&[F]>) {
        fn slice<F>(p: &Option<Array1<F>>) -> Option<&[F]> {
            p.as_ref().and_then(|p| p.as_slice())
        }
        (slice(&self.gamma), slice(&self.beta))
    }

    /// Normalizes every row of `x` into `y` (same shape, checked), passing each row's
    /// statistics and its element of `per_row` to `record`.
    fn normalize<D: Dimension, T: Send>(
        &self,
        x: &ArrayRef<F, D>,
        y: &mut ArrayRef<F, D>,
        per_row: &mut ArrayRef<T, D::Smaller>,
        record: impl Fn(&mut T, &RowStats) + Copy + Sync,
    ) {
        let n = x.shape()[x.ndim() - 1];
        let (gamma, beta) = self.params();
        let eps = self.epsilon.wide();
        for_each_row_pair(x, y, per_row, |x, y, slots| {
            normalize_rows(x, y, n, eps, gamma, beta, slots, record)
        });
    }
}

/// A parameter vector in standard layout, so that it is always available as a slice.
fn standard<F: Float>(p: Array1<F>) -> Array1<F> {
    if p.as_slice().is_some() {
        p
    } else {
        p.as_standard_layout().into_owned()
    }
}

/// The shape of the per-row statistics: `x`'s shape without its last axis.
///
/// Only called after the input was checked to have at least one axis.
pub(crate) fn row_dim<F, D: Dimension>(x: &ArrayRef<F, D>) -> D::Smaller {
    let (_, leading) = x.shape().split_last().unwrap_or((&0, &[]));
    let mut dim = D::Smaller::zeros(leading.len());
    dim.slice_mut().copy_from_slice(leading);
    dim
}
