//! The [`moments`] function: the statistics LayerNorm normalizes with.

use ndarray::{Array, ArrayRef, Dimension};

use crate::driver::for_each_row;
use crate::error::Error;
use crate::float::Float;
use crate::kernels::rows_moments;
use crate::outputs::Moments;
use crate::validate;

/// The mean and the biased variance of every row (lane of the last axis) of `x`.
///
/// ```text
/// mean = sum(x) / n
/// var  = sum((x - mean)^2) / n
/// ```
///
/// These are the statistics [`LayerNorm`](crate::LayerNorm) normalizes with, computed the same
/// way: in `f64`, with compensated sums, each rounded once (for `f32` input, rounded again to
/// `f32`). A row with a NaN or an infinity, or with no elements, has a NaN mean and variance. A
/// variance beyond the range of `F` is `+inf`; the mean never overflows for finite input.
///
/// ```
/// use ndarray::array;
/// use ndarray_layernorm::moments;
/// # fn main() -> Result<(), ndarray_layernorm::Error> {
/// let m = moments(&array![[0.5, -1.2, 3.3, 0.8, -0.5], [1.0, 1.0, 1.0, 1.0, 1.0]])?;
/// assert_eq!(m.mean, array![0.58, 1.0]);
/// assert_eq!(m.var, array![2.3575999999999997, 0.0]);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// * [`Error::ZeroDimensional`] if `x` has no axis.
pub fn moments<F: Float, D: Dimension>(
    x: &ArrayRef<F, D>,
) -> Result<Moments<F, D::Smaller>, Error> {
    let n = validate::last_axis_len(x)?;
    let mut rows = Array::from_elem(row_dim(x), (F::zero(), F::zero()));
    for_each_row(x, 1, &mut rows, |x, slots| {
        rows_moments(x, n, slots, |slot, stats| {
            *slot = (
                F::narrow_dd(stats.mean, stats.mean_lo),
                F::narrow_dd(stats.var, stats.var_lo),
            );
        })
    });
    Ok(Moments {
        mean: rows.map(|s| s.0),
        var: rows.map(|s| s.1),
    })
}

/// The shape of the per-row results: `x`'s shape without its last axis (at least one axis).
fn row_dim<F, D: Dimension>(x: &ArrayRef<F, D>) -> D::Smaller {
    let leading = &x.shape()[..x.ndim() - 1];
    let mut dim = D::Smaller::zeros(leading.len());
    dim.slice_mut().copy_from_slice(leading);
    dim
}
