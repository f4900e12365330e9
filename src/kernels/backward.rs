//! The backward pass of one row, and the per-column sums of the parameter gradients.

use multiversion::multiversion;

use super::forward::Out;
use super::moments::{exponent, pow2};
use super::sum::{accumulate, compensated_sum, compensated_sum_zip, two_sum};
use super::wide::Wide;
use crate::float::private::Sealed;
use crate::float::Float;

/// Adds the sums `part_hi_j + part_lo_j` (of a later block of rows) into the totals
/// `hi_j + lo_j`: TwoSum of the high parts, the low parts added.
pub(crate) fn merge_sums(hi: &mut [f64], lo: &mut [f64], part_hi: &[f64], part_lo: &[f64]) {
    debug_assert!(hi.len() == lo.len() && hi.len() == part_hi.len() && hi.len() == part_lo.len());
    let parts = part_hi.iter().zip(part_lo);
    for ((t_hi, t_lo), (hi, lo)) in hi.iter_mut().zip(lo.iter_mut()).zip(parts) {
        let (s, e) = two_sum(*t_hi, *hi);
        *t_hi = s;
        *t_lo += e + *lo;
    }
}

/// Adds the plain sums `part_j` (of a later block of rows) into the totals `hi_j + lo_j`.
pub(crate) fn merge_plain(hi: &mut [f64], lo: &mut [f64], part: &[f64]) {
    debug_assert!(hi.len() == lo.len() && hi.len() == part.len());
    for ((t_hi, t_lo), v) in hi.iter_mut().zip(lo.iter_mut()).zip(part) {
        let (s, e) = two_sum(*t_hi, *v);
        *t_hi = s;
        *t_lo += e;
    }
}

/// The totals `hi_j + lo_j`, each rounded once to `F`.
pub(crate) fn finish_sums<F: Float>(hi: &[f64], lo: &[f64]) -> Vec<F> {
    hi.iter()
        .zip(lo)
        .map(|(hi, lo)| F::narrow(hi + lo))
        .collect()
}

/// The per-column sums of one block of rows, `hi + lo` per column, in a buffer of the caller.
#[derive(Debug)]
pub(crate) struct ColumnParts<'a> {
    pub(crate) hi: &'a mut [f64],
    pub(crate) lo: &'a mut [f64],
}

impl ColumnParts<'_> {
    /// Adds the value `hi_i + lo_i` of the `i`-th item to column `i`, with compensation.
    #[inline(always)]
    fn add_parts(&mut self, values: impl ExactSizeIterator<Item = (f64, f64)>) {
        debug_assert_eq!(values.len(), self.hi.len());
        for ((hi, lo), (v_hi, v_lo)) in self.hi.iter_mut().zip(self.lo.iter_mut()).zip(values) {
            accumulate(hi, lo, v_hi);
            *lo += v_lo;
        }
    }

    /// The same sums, borrowed for a shorter time.
    #[inline(always)]
    pub(crate) fn reborrow(&mut self) -> ColumnParts<'_> {
        ColumnParts {
            hi: self.hi,
            lo: self.lo,
        }
    }
}

/// The running sums of the parameter gradients of one block of rows.
pub(crate) struct ParamSums<'a> {
    /// `sum over rows of dy * xhat`, if the layer has gamma.
    pub(crate) gamma: Option<ColumnParts<'a>>,
    /// `sum over rows of dy`, if the layer has beta.
    pub(crate) beta: Option<ColumnParts<'a>>,
}

/// Where the backward pass of a row takes its statistics from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowPlan {
    /// Recompute them from the row, in the working precision, with this epsilon.
    Recompute(f64),
    /// Use the mean and `rstd` saved by a forward pass (a finite `rstd`) with this epsilon.
    Saved {
        /// The saved mean.
        mean: f64,
        /// The saved `1 / sqrt(var + eps)`.
        rstd: f64,
        /// The layer's epsilon (needed by rows whose gradient has a closed form).
        eps: f64,
    },
}

/// Buffers of one row, reused from row to row (empty until a row needs them).
pub(crate) struct BackwardScratch<W> {
    xhat: Vec<W>,
    g: Vec<W>,
    hi: Vec<f64>,
    lo: Vec<f64>,
}

impl<W> Default for BackwardScratch<W> {
    fn default() -> Self {
        BackwardScratch {
            xhat: Vec::new(),
            g: Vec::new(),
            hi: Vec::new(),
            lo: Vec::new(),
        }
    }
}

/// Rows whose largest magnitude lies in `[SAFE_LO, SAFE_HI]` need no rescaling: no square of a
/// deviation can overflow, and none that matters can underflow.
const SAFE_LO: f64 = f64::from_bits((1023 - 400) << 52); // 2^-400
const SAFE_HI: f64 = f64::from_bits((1023 + 400) << 52); // 2^400

/// How a row's input gradient is scaled back: `dx_i = t_i * r * scale`, with `r = 1 / s` in
/// the working precision (of the row scaled by `scale`, a power of two that keeps the squares in
/// range; `xhat`, left in the scratch, does not depend on it).
struct Norm<W> {
    scale: f64,
    r: W,
}

/// Stores the parts `hi + lo` of every value, in order.
#[inline(always)]
fn fill_parts<W: Wide>(
    hi: &mut Vec<f64>,
    lo: &mut Vec<f64>,
    values: impl ExactSizeIterator<Item = W>,
) {
    let n = values.len();
    hi.resize(n, 0.0);
    if !W::HAS_LO {
        hi.iter_mut()
            .zip(values)
            .for_each(|(h, v)| *h = v.parts().0);
        return;
    }
    lo.resize(n, 0.0);
    for ((h, l), v) in hi.iter_mut().zip(lo.iter_mut()).zip(values) {
        (*h, *l) = v.parts();
    }
}

/// The compensated sum of `op(a_i, b_i)` in the working precision: straight from the slices
/// when the values are plain `f64`, else through their parts (stored in `hi` and `lo`).
#[inline(always)]
fn sum_zip<W: Wide>(
    a: &[W],
    b: &[W],
    op: impl Fn(W, W) -> W,
    hi: &mut Vec<f64>,
    lo: &mut Vec<f64>,
) -> W {
    if let (Some(pa), Some(pb)) = (W::as_plain(a), W::as_plain(b)) {
        let (h, l) = compensated_sum_zip(pa, pb, |x, y| op(W::of(x), W::of(y)).round());
        return W::from_parts(h, l);
    }
    fill_parts(hi, lo, a.iter().zip(b).map(|(x, y)| op(*x, *y)));
    sum_parts(hi, lo)
}

/// The sum of the values `hi_i + lo_i`: a compensated sum of each part.
#[inline(always)]
fn sum_parts<W: Wide>(hi: &[f64], lo: &[f64]) -> W {
    let (h1, l1) = compensated_sum(hi, |v| v);
    if !W::HAS_LO {
        return W::from_parts(h1, l1);
    }
    let (h2, l2) = compensated_sum(lo, |v| v);
    W::from_parts(h1, l1).add(W::from_parts(h2, l2))
}

/// Recomputes a row's statistics in the working precision, leaving `xhat` in the scratch.
/// `None` for a constant row with `eps == 0`, whose gradient is defined as 0.
#[inline(always)]
fn recompute<F: Float, const CENTER: bool>(
    x: &[F],
    eps: f64,
    s: &mut BackwardScratch<F::Wide>,
) -> Option<Norm<F::Wide>> {
    type W<F> = <F as Sealed>::Wide;
    let n = W::<F>::of(x.len() as f64);
    // Plain f64 (f32 input) never needs rescaling: the squares of f32 deviations stay far
    // inside the f64 range.
    let amax = if W::<F>::HAS_LO {
        x.iter().fold(0.0f64, |a, v| a.max(v.wide().abs()))
    } else {
        1.0
    };
    let k = if amax == 0.0 || !amax.is_finite() || (SAFE_LO..=SAFE_HI).contains(&amax) {
        0
    } else {
        (-exponent(amax)).clamp(-1000, 1000)
    };
    let scale = pow2(k);
    let mean = if CENTER {
        let (hi, lo) = compensated_sum(x, |v| v * scale);
        W::<F>::from_parts(hi, lo).div(n)
    } else {
        W::<F>::of(0.0)
    };
    s.xhat.clear();
    s.xhat
        .extend(x.iter().map(|v| W::<F>::of(v.wide() * scale).sub(mean)));
    let var = sum_zip(&s.xhat, &s.xhat, |d, _| d.mul(d), &mut s.hi, &mut s.lo).div(n);
    if var.round() == 0.0 {
        // Every deviation is exactly 0 (a nonzero scaled deviation has a square in range): a
        // constant row (uncentred: an all-zero row). With eps == 0 its gradient is defined as 0;
        // otherwise xhat = 0 and dx = (g - mean(g)) / sqrt(eps), unscaled.
        if eps == 0.0 {
            return None;
        }
        let r = W::<F>::of(1.0).div(W::<F>::of(eps).sqrt());
        return Some(Norm { scale: 1.0, r });
    }
    let eps_scaled = eps * scale * scale;
    if !eps_scaled.is_finite() {
        // A tiny row whose variance is negligible next to eps: s = sqrt(eps) unscaled, so
        // xhat = (d * 2^k) / sqrt(eps) * 2^-k (tiny, and exactly that) and dx = t / sqrt(eps).
        let r = W::<F>::of(1.0).div(W::<F>::of(eps).sqrt());
        let unscale = W::<F>::of(pow2(-k));
        s.xhat.iter_mut().for_each(|d| *d = d.mul(r).mul(unscale));
        return Some(Norm { scale: 1.0, r });
    }
    // var + eps_scaled cannot overflow: var is at most ~4 after rescaling, or below 2^802 for
    // an unscaled f64 row, and for f32 input below 2^256; eps_scaled is finite.
    let r = W::<F>::of(1.0).div(var.add(W::<F>::of(eps_scaled)).sqrt());
    s.xhat.iter_mut().for_each(|d| *d = d.mul(r));
    Some(Norm { scale, r })
}

/// The input gradient of one row, and its contributions to the parameter gradients.
///
/// With `xhat_i = (x_i - mean) / s`, `g_i = dy_i * gamma_i` and `s = sqrt(var + eps)`:
///
/// ```text
/// dx_i = (g_i - mean(g) - xhat_i * mean(g * xhat)) / s
/// ```
///
/// With `CENTER == false` (RMSNorm) the mean is 0, `var` is the mean of the squares, and the
/// `mean(g)` term is absent (the derivation is in `crate::backward`).
///
/// Everything is evaluated in the working precision of `F` (see [`Wide`]): for `f64` input the
/// mean, the deviations, `1 / s`, `xhat`, `g` and both means carry about 106 bits, so the
/// subtraction, whose terms can be far larger than its result, loses nothing visible. Each
/// result is rounded to `F` once.
#[multiversion(targets = "simd")]
pub(crate) fn backward_row<F: Float, Y: Out<F>, const CENTER: bool>(
    x: &[F],
    dy: &[F],
    dx: &mut [Y],
    plan: RowPlan,
    gamma: Option<&[F]>,
    s: &mut BackwardScratch<F::Wide>,
    sums: ParamSums<'_>,
) {
    type W<F> = <F as Sealed>::Wide;
    let n = x.len();
    debug_assert_eq!(dy.len(), n);
    debug_assert_eq!(dx.len(), n);
    debug_assert!(gamma.is_none_or(|w| w.len() == n));
    if n == 0 {
        return;
    }
    let norm = match plan {
        RowPlan::Recompute(eps) => recompute::<F, CENTER>(x, eps, s),
        RowPlan::Saved { mean, rstd, .. } => {
            let (mean, r) = (W::<F>::of(mean), W::<F>::of(rstd));
            s.xhat.clear();
            s.xhat
                .extend(x.iter().map(|v| W::<F>::of(v.wide()).sub(mean).mul(r)));
            Some(Norm { scale: 1.0, r })
        }
    };
    let Some(Norm { scale, r }) = norm else {
        // A constant row with eps == 0: xhat and the input gradient are defined as 0, unless a
        // NaN or an infinity in dy (or gamma) poisons the row, as it does every other row.
        let finite = |v: &[F]| v.iter().all(|v| v.wide().is_finite());
        let poisoned = !finite(dy) || gamma.is_some_and(|w| !finite(w));
        let value = if poisoned { F::nan() } else { F::zero() };
        dx.iter_mut().for_each(|v| v.put(value));
        if let Some(mut acc) = sums.beta {
            acc.add_parts(dy.iter().map(|v| (v.wide(), 0.0)));
        }
        if let Some(mut acc) = sums.gamma {
            // dy * xhat with xhat = 0: a NaN or an infinity in dy still gives NaN.
            acc.add_parts(dy.iter().map(|v| (v.wide() * 0.0, 0.0)));
        }
        return;
    };
    let len = W::<F>::of(n as f64);
    s.g.clear();
    match gamma {
        Some(w) => s.g.extend(
            dy.iter()
                .zip(w)
                .map(|(d, w)| W::<F>::of(d.wide()).mul(W::<F>::of(w.wide()))),
        ),
        None => s.g.extend(dy.iter().map(|d| W::<F>::of(d.wide()))),
    }
    let (g, xhat) = (&s.g, &s.xhat);
    let mean_g = if CENTER {
        fill_parts(&mut s.hi, &mut s.lo, g.iter().copied());
        sum_parts::<W<F>>(&s.hi, &s.lo).div(len)
    } else {
        W::<F>::of(0.0)
    };
    fill_parts(
        &mut s.hi,
        &mut s.lo,
        g.iter().zip(xhat).map(|(g, x)| g.mul(*x)),
    );
    let mean_gx = sum_parts::<W<F>>(&s.hi, &s.lo).div(len);
    match plan {
        RowPlan::Recompute(eps) | RowPlan::Saved { eps, .. } if !CENTER && n == 1 => {
            dx[0].put(F::narrow(one_element_rms_dx::<F>(x[0], g[0], eps)));
        }
        _ => {
            for ((dx, g), xhat) in dx.iter_mut().zip(g).zip(xhat) {
                let t = g.sub(mean_g).sub(xhat.mul(mean_gx));
                dx.put(F::narrow(t.mul(r).round() * scale));
            }
        }
    }
    if let Some(mut acc) = sums.gamma {
        acc.add_parts(
            dy.iter()
                .zip(xhat)
                .map(|(d, xh)| W::<F>::of(d.wide()).mul(*xh).parts()),
        );
    }
    if let Some(mut acc) = sums.beta {
        acc.add_parts(dy.iter().map(|v| (v.wide(), 0.0)));
    }
}

/// The input gradient of an RMSNorm row of one element `x`, with `g = dy * gamma`:
/// `y = x / sqrt(x^2 + eps)`, so `dx = g * eps / t^(3/2)` with `t = x^2 + eps`.
///
/// The general formula `(g - xhat * mean(g * xhat)) / s` is `g * (1 - xhat^2) / s` here, whose
/// terms cancel exactly when `eps == 0` (the output is `sign(x)` and the gradient 0): what is
/// left is their rounding, times `|g / x|`, which is huge for a tiny `x`. This closed form is
/// exactly 0 there. Otherwise `x` is scaled by `2^k` into `[1, 2)` (exact), so that its square
/// neither overflows nor underflows: with `e = eps * 4^k` and `T = (x 2^k)^2 + e`,
/// `dx = g * (e / T) / sqrt(T) * 2^k`.
#[inline(always)]
fn one_element_rms_dx<F: Float>(x: F, g: F::Wide, eps: f64) -> f64 {
    type W<F> = <F as Sealed>::Wide;
    let v = x.wide();
    if !v.is_finite() {
        return f64::NAN;
    }
    if eps == 0.0 {
        // y = sign(x): the gradient is 0 (NaN if g is not finite).
        return g.round() * 0.0;
    }
    let k = if v == 0.0 {
        0
    } else {
        (-exponent(v.abs())).clamp(-1000, 1000)
    };
    let e = eps * pow2(k) * pow2(k);
    if !e.is_finite() {
        // x^2 is negligible next to eps: dx = g / sqrt(eps).
        return g.div(W::<F>::of(eps).sqrt()).round();
    }
    let xs = W::<F>::of(v * pow2(k));
    let t = xs.mul(xs).add(W::<F>::of(e));
    g.mul(W::<F>::of(e).div(t)).div(t.sqrt()).round() * pow2(k)
}
