//! The backward passes of [`LayerNorm`] and [`RmsNorm`](crate::RmsNorm).
//!
//! # Derivation
//! For one row of length `n`, write `mu = sum(x) / n`, `var = sum((x - mu)^2) / n`,
//! `s = sqrt(var + eps)`, `xhat_i = (x_i - mu) / s` and `y_i = gamma_i * xhat_i + beta_i`. Given
//! `dy = dL/dy`, let `g_i = dy_i * gamma_i = dL/dxhat_i`.
//!
//! The parameters: `dL/dgamma_i = sum over rows of dy_i * xhat_i` and
//! `dL/dbeta_i = sum over rows of dy_i`.
//!
//! The input: `d mu / d x_j = 1/n`, and `d var / d x_j = (2/n) sum_i (x_i - mu)(delta_ij - 1/n)
//! = 2 (x_j - mu) / n` (the `-1/n` terms sum to zero because `sum_i (x_i - mu) = 0`). So
//! `d s / d x_j = (x_j - mu) / (n s) = xhat_j / n`, and
//!
//! ```text
//! d xhat_i / d x_j = (delta_ij - 1/n) / s - (x_i - mu) / s^2 * xhat_j / n
//!                  = (delta_ij - 1/n - xhat_i * xhat_j / n) / s
//! dL/dx_j = sum_i g_i * d xhat_i / d x_j
//!         = (g_j - mean(g) - xhat_j * mean(g * xhat)) / s
//! ```
//!
//! This centred form is what the kernel evaluates: `xhat` exactly as the forward pass writes it,
//! both means as compensated sums divided once by `n`, and a division by `s`. It never forms the
//! uncentred `sum(g * x)`, whose cancellation loses digits in proportion to `|mean| / std`.
//!
//! `f32` rows first try a fast path: their values widen exactly to `f64`, so plain `f64` sums
//! (of the row shifted by a pivot: its first element, or the saved mean) carry an error that an
//! a-posteriori bound computed with them can limit. Where the bound shows every element of `dx`
//! within `2^-30 max(1, |dx|)` of the exact value (and `xhat` within `2^-31` relative plus
//! `2^-32` absolute), the fast result is kept; elsewhere (most often where `dx` cancels far
//! below its terms, e.g. `dy = c x` with a large `c`, or rows offset by `2^21` standard
//! deviations) the row is computed as described here. The bound is written out term by term in
//! the kernel (`kernels/backward_fast.rs`).
//!
//! Two checks of the formula: with `gamma = 1`, `sum_j dL/dx_j = (n mean(g) - n mean(g) -
//! mean(g xhat) sum_j xhat_j) / s = 0`, and `sum_j xhat_j dL/dx_j = (sum g xhat - 0 - mean(g xhat)
//! sum xhat^2) / s = sum(g xhat) (1 - var/(var + eps)) / s`, which is 0 when `eps = 0`.
//!
//! # RMSNorm
//! Without centring, `ms = sum(x^2) / n`, `s = sqrt(ms + eps)`, `xhat_i = x_i / s`. Then
//! `d s / d x_j = x_j / (n s) = xhat_j / n` as before, but `xhat_i` has no `-1/n` term:
//!
//! ```text
//! d xhat_i / d x_j = (delta_ij - xhat_i * xhat_j / n) / s
//! dL/dx_j = (g_j - xhat_j * mean(g * xhat)) / s
//! ```
//!
//! which is the LayerNorm formula without `mean(g)`; the kernel evaluates it the same way. An
//! all-zero row (the RMSNorm counterpart of a constant row) has `xhat = 0`, so its gradient is
//! `g / sqrt(eps)`, and is defined as 0 when `eps = 0`.
//!
//! # Degenerate rows
//! A row of one element has `xhat = 0` and `g - mean(g) = 0`, so its input gradient is exactly 0
//! and it adds exactly 0 to `dgamma`. A constant row has `xhat = 0`; with `eps > 0` its input
//! gradient is the exact `(g - mean(g)) / sqrt(eps)`; with `eps = 0` the gradient does not exist
//! (the output jumps), and it is defined as 0, consistently with its output being defined as 0.
//!
//! # Order of the parameter sums
//! `dgamma` and `dbeta` are sums over rows. Rows are visited in logical order, summed in blocks
//! of a fixed number of rows (64), and the blocks are merged in order with compensation, so the
//! result does not depend on the layout of the input (nor, with threads, on their number).
//! Within a block the sums are compensated for `f64` input; for `f32` input they are plain `f64`
//! sums, whose error is bounded by `64 u` of the sum of the magnitudes of their terms: below
//! the `dgamma` contract for any number of rows, and checked against `dbeta` for each column
//! at the end (a column that fails the check is summed again, with compensation).

use ndarray::{ArrayRef, Dimension};

use crate::error::Error;
use crate::float::Float;
use crate::kernels::RowPlan;
use crate::layer_norm::LayerNorm;
use crate::norm::{Core, LAYER};
use crate::outputs::{Gradients, Stats};
use crate::validate;

impl<F: Float> LayerNorm<F> {
    /// The gradients of a loss with respect to the input, gamma and beta, given the input `x`
    /// and the gradient `dy` of the loss with respect to the output.
    ///
    /// ```text
    /// xhat   = (x - mean) / sqrt(var + eps),   g = dy * gamma
    /// dx     = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)   (means over the row)
    /// dgamma = sum over rows of dy * xhat
    /// dbeta  = sum over rows of dy
    /// ```
    ///
    /// The statistics are recomputed from `x` in twice the precision of the data (`f64` for
    /// `f32` input, double-double for `f64` input), and so are `xhat`, `g` and both means: the
    /// subtraction in `dx`, whose terms can be far larger than its result, costs nothing
    /// visible: measured against exact arithmetic, every gradient is within 0.5 units of
    /// `F::EPSILON * max(1, |exact|)` for `f64` input, offsets included, and within 4 units for
    /// `f32` input (0.5 on centred rows; up to 2.8 where `|mean| / std` reaches 1e5). For `f32`
    /// input the sums are plain `f64` sums wherever an a-posteriori bound shows that each
    /// result is within `2^-30 max(1, |exact|)` before its rounding (most rows), and
    /// compensated sums elsewhere, such as where `dx` cancels far below its terms.
    /// [`backward_with_stats`](Self::backward_with_stats) reuses saved statistics instead. The
    /// result is bitwise the same for every layout of `x` and `dy`, every number of threads
    /// and every instruction set.
    ///
    /// A row of one element has an input gradient of exactly 0; so does a constant row when
    /// `eps == 0` (where the true gradient does not exist). A NaN or an infinity in a row of `x`
    /// makes that row of the input gradient NaN, and the parameter gradients, which sum over all
    /// rows, NaN in every element; one in `dy` makes its row of the input gradient NaN and its
    /// column of the parameter gradients. A NaN in gamma makes every row's input gradient NaN
    /// (each row's `mean(g)` includes it). With zero rows, the input gradient is empty and the
    /// parameter gradients are zeros.
    ///
    /// ```
    /// use approx::assert_abs_diff_eq;
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f64>::affine(3, 0.0)?;
    /// let x = array![[1.0, 2.0, 3.0]];
    /// let dy = array![[0.0, 0.0, 1.0]];
    /// let grads = ln.backward(&x, &dy)?;
    /// // xhat = (-a, 0, a) with a = sqrt(3/2); dbeta = dy; dgamma = dy * xhat.
    /// let a = 1.5f64.sqrt();
    /// assert_eq!(grads.beta.unwrap(), array![0.0, 0.0, 1.0].into_dyn());
    /// assert_abs_diff_eq!(grads.gamma.unwrap()[2], a, epsilon = 1e-15);
    /// // dx = (g - 1/3 - xhat * a/3) / s with s = sqrt(2/3).
    /// let s = (2.0f64 / 3.0).sqrt();
    /// let expected = [
    ///     (-1.0 / 3.0 + a * a / 3.0) / s,
    ///     (-1.0 / 3.0) / s,
    ///     (1.0 - 1.0 / 3.0 - a * a / 3.0) / s,
    /// ];
    /// for (got, want) in grads.input.iter().zip(expected) {
    ///     assert_abs_diff_eq!(*got, want, epsilon = 1e-15);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::ZeroDimensional`] if `x` has no axis, [`Error::TooFewAxes`] if it has fewer
    ///   than the layer normalizes over.
    /// * [`Error::ParamLength`] (one normalized axis) or [`Error::ParamShape`] (several) if gamma
    ///   or beta does not have the shape of the normalized axes of `x`.
    /// * [`Error::ShapeMismatch`] if `dy` does not have the shape of `x`.
    pub fn backward<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        self.core.backward_recomputed::<LAYER, _>(x, dy)
    }

    /// [`backward`](Self::backward) with the statistics saved by
    /// [`forward_with_stats`](Self::forward_with_stats), which saves one pass over each row.
    ///
    /// `xhat` is computed as `(x - mean) * rstd` from the saved values, which carry the rounding
    /// of `F`: the gradient is as accurate as they allow. Where the terms of `dx` cancel, that
    /// can be far less accurate than [`backward`](Self::backward), which recomputes the
    /// statistics in twice the precision of the data (the tests bound the difference element
    /// by element). A saved `rstd` of `+inf` (1/std beyond the range of `F`, e.g. a constant row
    /// with `eps == 0`) makes that row recomputed as `backward` would. Other saved values are
    /// used as given (only their shape is checked): pass the ones `forward_with_stats` returned
    /// for the same `x` and layer.
    ///
    /// ```
    /// use approx::assert_abs_diff_eq;
    /// use ndarray::array;
    /// use ndarray_layernorm::LayerNorm;
    /// # fn main() -> Result<(), ndarray_layernorm::Error> {
    /// let ln = LayerNorm::<f64>::affine(4, 1e-5)?;
    /// let x = array![[1.0, -2.0, 0.5, 4.0], [0.0, 1.0, 2.0, 3.0]];
    /// let dy = array![[0.1, 0.2, -0.3, 0.4], [1.0, 0.0, 0.0, -1.0]];
    /// let (_, stats) = ln.forward_with_stats(&x)?;
    /// let saved = ln.backward_with_stats(&x, &stats, &dy)?;
    /// let fresh = ln.backward(&x, &dy)?;
    /// for (a, b) in saved.input.iter().zip(&fresh.input) {
    ///     assert_abs_diff_eq!(*a, *b, epsilon = 1e-14);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// * [`Error::ZeroDimensional`] if `x` has no axis, [`Error::TooFewAxes`] if it has fewer
    ///   than the layer normalizes over.
    /// * [`Error::ParamLength`] (one normalized axis) or [`Error::ParamShape`] (several) if gamma
    ///   or beta does not have the shape of the normalized axes of `x`.
    /// * [`Error::ShapeMismatch`] if `dy` does not have the shape of `x`, or `stats.mean` or
    ///   `stats.rstd` does not have the shape [`forward_with_stats`](Self::forward_with_stats)
    ///   gives them.
    pub fn backward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        stats: &Stats<F, D::Smaller>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        self.core.check_backward(x, dy)?;
        let plans = self.core.saved_plans(x, Some(&stats.mean), &stats.rstd)?;
        Ok(self.core.backward::<LAYER, _>(x, dy, |i| plans[i]))
    }
}

impl<F: Float> Core<F> {
    /// The shared checks of every backward entry point.
    pub(crate) fn check_backward<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<(), Error> {
        self.check(x)?;
        validate::same_shape(x.shape(), dy.shape())
    }

    /// The saved statistics (the mean, or 0 without one) as row plans, in the logical order in
    /// which rows are visited, after checking their shapes. A saved rstd of +inf says only
    /// that 1/std is beyond the range of F (a constant row with eps == 0, or a row whose
    /// spread is that small): those rows are recomputed, which gives each its true gradient,
    /// or 0 for the constant row.
    pub(crate) fn saved_plans<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        mean: Option<&ArrayRef<F, D::Smaller>>,
        rstd: &ArrayRef<F, D::Smaller>,
    ) -> Result<Vec<RowPlan>, Error> {
        let dim = self.stats_dim(x);
        if let Some(mean) = mean {
            validate::same_shape(dim.slice(), mean.shape())?;
        }
        validate::same_shape(dim.slice(), rstd.shape())?;
        let eps = self.epsilon.wide();
        let plan = |m: F, r: F| match r.wide() {
            f64::INFINITY => RowPlan::Recompute(eps),
            rstd => RowPlan::Saved {
                mean: m.wide(),
                rstd,
                eps,
            },
        };
        Ok(match mean {
            Some(mean) => mean.iter().zip(rstd).map(|(&m, &r)| plan(m, r)).collect(),
            None => rstd.iter().map(|&r| plan(F::zero(), r)).collect(),
        })
    }
}
