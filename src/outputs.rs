//! Plain data returned by the crate's functions.

use ndarray::{Array, ArrayD, Dimension};

/// Per-row statistics saved by [`LayerNorm::forward_with_stats`](crate::LayerNorm::forward_with_stats).
///
/// Both arrays have the shape of the input without its last axis; for a layer over `k > 1`
/// trailing axes, the other `k - 1` normalized axes have length 1 there (the leading shape,
/// then `k - 1` ones). For a row that holds a NaN or
/// an infinity, or has no elements, both entries are NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats<F, E: Dimension> {
    /// The mean of each row.
    pub mean: Array<F, E>,
    /// The reciprocal standard deviation of each row, `1 / sqrt(var + eps)`, rounded to `F`.
    /// It is `+inf` where that value is beyond the range of `F`: a constant row with
    /// `eps == 0` (whose normalized output is defined as 0), or a row whose spread is smaller
    /// than about `1 / F::MAX`. [`backward_with_stats`](crate::LayerNorm::backward_with_stats)
    /// recomputes such rows.
    pub rstd: Array<F, E>,
}

/// The mean and the biased variance of each row, as returned by [`moments`](crate::moments).
///
/// Both arrays have the shape of the input without its last axis. For a row that holds a NaN or
/// an infinity, or has no elements, both entries are NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments<F, E: Dimension> {
    /// The mean of each row, `sum(x) / n`.
    pub mean: Array<F, E>,
    /// The biased variance of each row, `sum((x - mean)^2) / n`.
    pub var: Array<F, E>,
}

/// The gradients returned by [`LayerNorm::backward`](crate::LayerNorm::backward) and
/// [`RmsNorm::backward`](crate::RmsNorm::backward).
///
/// `gamma` and `beta` are `Some` exactly when the layer has that parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<F, D: Dimension> {
    /// The gradient of the loss with respect to the input, of the input's shape (standard
    /// layout).
    pub input: Array<F, D>,
    /// The gradient with respect to gamma, `sum over rows of dy * xhat`, in gamma's shape.
    pub gamma: Option<ArrayD<F>>,
    /// The gradient with respect to beta, `sum over rows of dy`, in beta's shape (always `None`
    /// for [`RmsNorm`](crate::RmsNorm), which has no beta).
    pub beta: Option<ArrayD<F>>,
}
