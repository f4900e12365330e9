//! The backward pass of one row, and the per-column sums of the parameter gradients.

use multiversion::multiversion;

use super::moments::{row_stats, Plan};
use super::sum::{accumulate, compensated_sum, compensated_sum_zip, div_by_len, two_sum};
use crate::float::Float;

/// Compensated per-column sums over rows (one `hi + lo` pair per column).
#[derive(Debug, Clone)]
pub(crate) struct ColumnSums {
    hi: Vec<f64>,
    lo: Vec<f64>,
}

impl ColumnSums {
    /// `n` zero sums.
    pub(crate) fn new(n: usize) -> Self {
        ColumnSums {
            hi: vec![0.0; n],
            lo: vec![0.0; n],
        }
    }

    /// Adds `f(a_i, b_i)` to column `i`.
    #[inline]
    fn add<A: Float, B: Float>(&mut self, a: &[A], b: &[B], f: impl Fn(f64, f64) -> f64) {
        debug_assert_eq!(a.len(), self.hi.len());
        debug_assert_eq!(b.len(), self.hi.len());
        for (((hi, lo), a), b) in self.hi.iter_mut().zip(&mut self.lo).zip(a).zip(b) {
            accumulate(hi, lo, f(a.wide(), b.wide()));
        }
    }

    /// Adds the sums `part` (of a later block of rows) into these.
    pub(crate) fn merge(&mut self, part: &ColumnSums) {
        debug_assert_eq!(self.hi.len(), part.hi.len());
        let parts = part.hi.iter().zip(&part.lo);
        for ((t_hi, t_lo), (hi, lo)) in self.hi.iter_mut().zip(&mut self.lo).zip(parts) {
            let (s, e) = two_sum(*t_hi, *hi);
            *t_hi = s;
            *t_lo += e + *lo;
        }
    }

    /// The sums, each rounded once to `F`.
    pub(crate) fn finish<F: Float>(&self) -> Vec<F> {
        self.hi
            .iter()
            .zip(&self.lo)
            .map(|(hi, lo)| F::narrow(hi + lo))
            .collect()
    }
}

/// The running sums of the parameter gradients of one block of rows.
pub(crate) struct ParamSums<'a> {
    /// `sum over rows of dy * xhat`, if the layer has gamma.
    pub(crate) gamma: Option<&'a mut ColumnSums>,
    /// `sum over rows of dy`, if the layer has beta.
    pub(crate) beta: Option<&'a mut ColumnSums>,
}

/// Where the backward pass of a row takes its statistics from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowPlan {
    /// Recompute them from the row, as the forward pass does, with this epsilon.
    Recompute(f64),
    /// Use statistics saved by a forward pass.
    Saved(Plan),
}

/// The input gradient of one row, and its contributions to the parameter gradients.
///
/// With `xhat_i = (x_i - mean) / s` (written by `plan` exactly as the forward pass writes it),
/// `g_i = dy_i * gamma_i` and `s = sqrt(var + eps)`:
///
/// ```text
/// dx_i = (g_i - mean(g) - xhat_i * mean(g * xhat)) / s
/// ```
///
/// Both means are compensated sums divided once by `n`; `g` is a scratch buffer reused across
/// rows.
#[multiversion(targets = "simd")]
pub(crate) fn backward_row<F: Float>(
    x: &[F],
    dy: &[F],
    dx: &mut [F],
    plan: RowPlan,
    gamma: Option<&[F]>,
    g: &mut Vec<f64>,
    sums: ParamSums<'_>,
) {
    let plan = match plan {
        RowPlan::Recompute(eps) => row_stats(x, eps).plan,
        RowPlan::Saved(plan) => plan,
    };
    let n = x.len();
    debug_assert_eq!(dy.len(), n);
    debug_assert_eq!(dx.len(), n);
    g.clear();
    match gamma {
        Some(w) => {
            debug_assert_eq!(w.len(), n);
            g.extend(dy.iter().zip(w).map(|(d, w)| d.wide() * w.wide()));
        }
        None => g.extend(dy.iter().map(|d| d.wide())),
    }
    let (hi, lo) = compensated_sum(g, |v| v);
    let mean_g = div_by_len(hi, lo, n);
    let (hi, lo) = compensated_sum_zip(g, x, |g, x| g * plan.apply(x));
    let mean_gx = div_by_len(hi, lo, n);
    for ((dx, g), x) in dx.iter_mut().zip(g.iter()).zip(x) {
        let t = (g - mean_g) - plan.apply(x.wide()) * mean_gx;
        *dx = F::narrow(plan.apply_rstd(t));
    }
    if let Some(acc) = sums.gamma {
        acc.add(dy, x, |dy, x| dy * plan.apply(x));
    }
    if let Some(acc) = sums.beta {
        acc.add(dy, dy, |dy, _| dy);
    }
}
