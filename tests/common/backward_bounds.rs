//! The layers, statistics sources and error bounds of `tests/backward_accuracy.rs`, in the
//! units of its module doc, and the measurement of a batch against them
//! ([`backward_errors`]): the test asserts the bounds, `examples/backward_accuracy.rs` reports
//! the same errors against the same bounds.
//!
//! The example includes this file with `#[path = "../tests/common/backward_bounds.rs"]` next to
//! `mod exact;`, `mod exact_backward;` and `mod harness;`, as `tests/common/mod.rs` declares
//! them: it refers to them only as `super::exact`, `super::exact_backward` and
//! `super::harness`.

use ndarray::{Array1, Array2, Ix2};
use ndarray_layernorm::{Float, Gradients, LayerNorm};
use num_traits::Zero;
use rand::rngs::StdRng;
use rand::Rng;

use super::exact::{forward_units, mean_rounding_units, ExactRow, Format};
use super::exact_backward::{input_gradient, sum_units, ParamGradients, RowTerms};
use super::harness::{format, normal, of, wide};

/// The target of the issue, in the units of `tests/backward_accuracy.rs`: `f32` input, and
/// `f64` rows with `|mean| <= std`, for `dx`, `dgamma` and `dbeta`.
pub const TARGET_UNITS: f64 = 4.0;

// ----------------------------------------------------------------------------------------------
// The layer under test.

/// The parameters of the layer under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Params {
    /// `LayerNorm::new`: no gamma, no beta, no parameter gradients.
    Plain,
    /// `LayerNorm::affine`: gamma = 1, beta = 0.
    Ones,
    /// gamma uniform in `[0.5, 2]`, beta `N(0, 1)`.
    Random,
}

/// Where `backward` takes the statistics from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `backward`: recomputed from `x` in `f64`.
    Recompute,
    /// `backward_with_stats` with the statistics of `forward_with_stats` (in `F`).
    Saved,
}

/// A layer for rows of length `n` with the parameters `params` (drawn from `rng` if random).
pub fn layer<F: Float>(rng: &mut StdRng, n: usize, eps: F, params: Params) -> LayerNorm<F> {
    match params {
        Params::Plain => LayerNorm::new(eps),
        Params::Ones => LayerNorm::affine(n, eps),
        Params::Random => {
            let gamma = Array1::from_iter((0..n).map(|_| of::<F>(rng.random_range(0.5..=2.0))));
            let beta = Array1::from_iter((0..n).map(|_| of::<F>(normal(rng))));
            LayerNorm::affine(n, eps)
                .and_then(|l| l.with_gamma(gamma))
                .and_then(|l| l.with_beta(beta))
        }
    }
    .expect("valid layer")
}

/// The gradients of `layer` at `x` for the output gradient `dy`, with the statistics of
/// `source`.
pub fn run<F: Float>(
    layer: &LayerNorm<F>,
    x: &Array2<F>,
    dy: &Array2<F>,
    source: Source,
) -> Gradients<F, Ix2> {
    match source {
        Source::Recompute => layer.backward(x, dy),
        Source::Saved => {
            let (_, stats) = layer.forward_with_stats(x).expect("forward succeeds");
            layer.backward_with_stats(x, &stats, dy)
        }
    }
    .expect("backward succeeds")
}

// ----------------------------------------------------------------------------------------------
// Bounds.

/// `c`: a bound on the shift of `xhat` caused by the rounding of the mean that `source` uses,
/// `|delta| / sqrt(var + eps)` with `delta` the error of that mean, in units of `F::EPSILON`;
/// 0 where the target alone is asserted.
///
/// * `Recompute` for `f32`: the mean is the correctly rounded `f64` mean; its effect is part of
///   the target (the shift is below `2^-30 |mean| / s` units of `f32::EPSILON`, a fraction of a
///   unit of `dx` on the rows tested here, offsets up to `1e6`).
/// * `Recompute` for `f64`: the statistics are recomputed in double-double; no shift.
/// * `Saved` for `f64`: the saved mean is the correctly rounded `f64` mean, on every row:
///   [`mean_rounding_units`], as in the forward tests.
/// * `Saved` for `f32`: the mean is that `f64` mean rounded again to `f32`, so within
///   `0.5 ulp_32(mean) (1 + 2^-28)` of the exact mean (the `f64` rounding adds at most
///   `2^-29` ulp_32), on every row.
///
/// A row with `var == 0` (constant, or one element) has an exact mean in every format: 0.
pub fn mean_shift_units<F: Float>(exact: &ExactRow, eps: f64, source: Source) -> f64 {
    let (mean, var) = (exact.mean(), exact.var());
    if var.is_zero() {
        return 0.0;
    }
    match (format::<F>(), source) {
        (Format::F32, Source::Recompute) => 0.0,
        (Format::F32, Source::Saved) => {
            mean_rounding_units(&mean, &var, eps, Format::F32) * (1.0 + 2f64.powi(-28))
        }
        // f64 input is recomputed in double-double: the mean carries ~106 bits, no shift.
        (Format::F64, Source::Recompute) => 0.0,
        // The saved f64 mean is the correctly rounded mean, on every row.
        (Format::F64, Source::Saved) => mean_rounding_units(&mean, &var, eps, Format::F64),
    }
}

/// `rho`: a bound on the relative error of `1 / sqrt(var + eps)` beyond what the target covers,
/// in units of `F::EPSILON`. For `f32` saved statistics, `rstd` is `1 / sqrt(var + eps)`
/// computed in `f64` (a few `f64` roundings, and the `f64` variance) and rounded to `f32`:
/// relative error at most `2^-24 + 2^-50`, i.e. `0.5 (1 + 2^-26)` units. Otherwise 0: the
/// `f64` roundings are part of the target.
///
/// For `f64` saved statistics, `rstd = fl(1 / fl(sqrt(fl(var' + eps))))` from the forward pass,
/// whose variance `var'` (the once-rounded sum of rounded squared deviations from the rounded
/// mean) is within `3.5 u` of `var + delta^2` (`u = 2^-53`; `delta^2` is covered by `c'`):
/// `var' + eps` within `4.5 u`, the square root halves that and adds `u`, the reciprocal adds
/// `u`: `4.25 u`, i.e. `2.125` units of `f64::EPSILON = 2 u`; 2.25 is asserted.
pub fn rstd_units<F: Float>(source: Source) -> f64 {
    match (format::<F>(), source) {
        (Format::F32, Source::Saved) => 0.5 * (1.0 + 2f64.powi(-26)),
        (Format::F64, Source::Saved) => 2.25,
        _ => 0.0,
    }
}

/// `(c', rho')` of a row in absolute terms: `c'` of [`mean_shift_units`] and `rho'` of
/// [`rstd_units`] times `F::EPSILON`, with `c'^2 / 2` added to `rho'` for the `f64` mean (see
/// [`dx_tol`]).
pub fn stats_bounds<F: Float>(exact: &ExactRow, eps: f64, source: Source) -> (f64, f64) {
    let fmt = format::<F>();
    let unit = fmt.epsilon();
    let c = mean_shift_units::<F>(exact, eps, source) * unit;
    let rho_stored = rstd_units::<F>(source) * unit;
    let rho = match fmt {
        Format::F64 => rho_stored + c * c / 2.0,
        Format::F32 => rho_stored,
    };
    (c, rho)
}

/// Tolerance of `dx_i`, in units of `EPSILON * max(1, |dx_i|)`: the target, plus the effect of
/// the statistics that the target does not cover ([`RowTerms::perturbed_stats_error`] with
/// `c = c'` of [`mean_shift_units`] and `rho = rho'` of [`rstd_units`], in absolute terms).
///
/// With the `f64` mean (`Recompute`, and `f64` `Saved`) the variance is that of the shifted
/// deviations, `var + delta^2`, so `1/s` is also off by a relative `c'^2 / 2`: added to `rho'`
/// by the caller ([`stats_bounds`]). The factor `1 + 1e-9` covers the evaluation of the bound in
/// `f64`. The extra terms grow where `dx_i` cancels (`|dx_i|` small next to `|A| / s`): the
/// error of the statistics is relative to the terms, not to their difference.
pub fn dx_tol(terms: &RowTerms, i: usize, dx: f64, c: f64, rho: f64, unit: f64) -> f64 {
    if c == 0.0 && rho == 0.0 {
        return TARGET_UNITS;
    }
    let extra = terms.perturbed_stats_error(i, dx, c, rho);
    TARGET_UNITS + extra / (unit * dx.abs().max(1.0)) * (1.0 + 1e-9)
}

/// `dx` error rescaled from units of `EPSILON * max(1, |dx_i|)` to units of
/// `EPSILON * max(1, T_i)` ([`RowTerms::terms`]: the sum of the magnitudes of the terms of
/// `dx_i`), which shows how much of the error is cancellation. Reported, not asserted.
pub fn terms_units(units: f64, terms: &RowTerms, i: usize, dx: f64) -> f64 {
    units * dx.abs().max(1.0) / terms.terms(i).max(1.0)
}

/// Adds the shift of the `dgamma` terms of one row to `shift` (per column, for [`dgamma_tol`]):
/// `|dy_j| (c' (1 + rho') + rho' |xhat_j|)`, since each term `dy_j xhat'_j` is off by
/// `dy_j (xhat_j rho - c (1 + rho))` with `|c| <= c'`, `|rho| <= rho'` (the bounds of the row,
/// as for [`dx_tol`]).
pub fn add_dgamma_shift(shift: &mut [f64], dy: &[f64], terms: &RowTerms, c: f64, rho: f64) {
    for ((s, d), y) in shift.iter_mut().zip(dy).zip(&terms.xhat_f64) {
        *s += d.abs() * (c * (1.0 + rho) + rho * y.abs());
    }
}

/// `dgamma_j` tolerance, in units of `EPSILON * max(1, sum_r |dy_rj xhat_rj|)` (`magnitude`):
/// the target, plus (with the bounds `c'_r` and `rho'_r` of row `r`, as for [`dx_tol`])
/// `sum_r |dy_rj| (c'_r (1 + rho'_r) + rho'_r |xhat_rj|)` (`shift`, from
/// [`add_dgamma_shift`]) in those units, since each term `dy_rj xhat'_rj` is off by
/// `dy_rj (xhat_rj rho_r - c_r (1 + rho_r))` with `|c_r| <= c'_r`, `|rho_r| <= rho'_r`.
pub fn dgamma_tol(shift: f64, magnitude: f64, unit: f64) -> f64 {
    TARGET_UNITS + shift / (unit * magnitude.max(1.0)) * (1.0 + 1e-9)
}

// ----------------------------------------------------------------------------------------------
// Measuring a batch.

/// One computed value against the reference: the error `units` and its tolerance `tol`.
pub struct Measured<F> {
    pub got: F,
    /// The nearest `f64` of the exact value.
    pub exact: f64,
    pub units: f64,
    pub tol: f64,
}

/// `dx_i` against [`dx_tol`], with its error in units of the terms ([`terms_units`], reported
/// only).
pub struct DxError<F> {
    pub error: Measured<F>,
    pub terms_units: f64,
}

/// The `dx` errors of one row, and the bounds they use.
pub struct RowErrors<F> {
    /// The reference row (for its statistics).
    pub exact: ExactRow,
    /// `c'` and `rho'` of the row ([`stats_bounds`]).
    pub c: f64,
    pub rho: f64,
    pub dx: Vec<DxError<F>>,
}

/// `dgamma_j` in units of `EPSILON * max(1, sum_r |dy_rj xhat_rj|)` against [`dgamma_tol`], with
/// its error in units of `EPSILON * max(1, |exact|)` (reported only) and the scale
/// `sum_r |dy_rj xhat_rj|` (`magnitude`).
pub struct DgammaError<F> {
    pub error: Measured<F>,
    pub own_units: f64,
    pub magnitude: f64,
}

/// The errors of one batch.
pub struct BatchErrors<F> {
    /// gamma of the layer, as `f64` (`None` for [`Params::Plain`]).
    pub gamma: Option<Vec<f64>>,
    pub rows: Vec<RowErrors<F>>,
    /// Per column; empty without parameters, like `dbeta`.
    pub dgamma: Vec<DgammaError<F>>,
    /// `dbeta_j` against the target.
    pub dbeta: Vec<Measured<F>>,
}

/// One backward call to measure: rows `x` with output gradients `dy`, through a layer with
/// epsilon `eps` and parameters `params`, with the statistics of `source`.
pub struct Batch<'a, F> {
    pub x: &'a Array2<F>,
    pub dy: &'a Array2<F>,
    pub eps: F,
    pub params: Params,
    pub source: Source,
}

impl<'a, F> Batch<'a, F> {
    pub fn new(
        x: &'a Array2<F>,
        dy: &'a Array2<F>,
        eps: F,
        params: Params,
        source: Source,
    ) -> Self {
        Batch {
            x,
            dy,
            eps,
            params,
            source,
        }
    }
}

/// Runs backward on the batch (the layer's parameters drawn from `rng` if random) and measures
/// `dx`, `dgamma` and `dbeta` against the exact reference, each with its tolerance: [`dx_tol`],
/// [`dgamma_tol`] and the target.
pub fn backward_errors<F: Float>(rng: &mut StdRng, batch: &Batch<F>) -> BatchErrors<F> {
    let Batch {
        x,
        dy,
        eps,
        params,
        source,
    } = *batch;
    let fmt = format::<F>();
    let unit = fmt.epsilon();
    let n = x.ncols();
    let layer = layer(rng, n, eps, params);
    let grads = run(&layer, x, dy, source);
    let eps = wide(eps);
    let gamma: Option<Vec<f64>> = layer.gamma().map(|g| g.iter().map(|&v| wide(v)).collect());
    let mut sums = ParamGradients::new(n);
    // sum_r |dy_rj| c'_r (1 + rho'_r) and sum_r |dy_rj xhat_rj| rho'_r per column, for the
    // dgamma tolerance.
    let mut shift = vec![0.0f64; n];
    let mut rows = Vec::with_capacity(x.nrows());
    for ((xr, dyr), computed) in x.rows().into_iter().zip(dy.rows()).zip(grads.input.rows()) {
        let xv: Vec<f64> = xr.iter().map(|&v| wide(v)).collect();
        let dyv: Vec<f64> = dyr.iter().map(|&v| wide(v)).collect();
        let exact = ExactRow::new(&xv);
        let (c, rho) = stats_bounds::<F>(&exact, eps, source);
        let terms = RowTerms::new(&xv, &dyv, gamma.as_deref(), eps);
        let exact_dx = input_gradient(&xv, &dyv, gamma.as_deref(), eps);
        let dx = computed
            .iter()
            .zip(&exact_dx)
            .enumerate()
            .map(|(i, (&got, want))| {
                let units = forward_units(wide(got), want, fmt);
                let want = want.to_f64();
                DxError {
                    error: Measured {
                        got,
                        exact: want,
                        units,
                        tol: dx_tol(&terms, i, want, c, rho, unit),
                    },
                    terms_units: terms_units(units, &terms, i, want),
                }
            })
            .collect();
        sums.add_normalized(&terms.xhat, &dyv);
        add_dgamma_shift(&mut shift, &dyv, &terms, c, rho);
        rows.push(RowErrors { exact, c, rho, dx });
    }
    let mut dgamma = Vec::new();
    if let Some(computed) = &grads.gamma {
        let exact = sums.gamma();
        for (((&got, want), scale), &shift) in computed
            .iter()
            .zip(&exact)
            .zip(sums.gamma_magnitude())
            .zip(&shift)
        {
            let magnitude = scale.to_f64();
            dgamma.push(DgammaError {
                error: Measured {
                    got,
                    exact: want.to_f64(),
                    units: sum_units(wide(got), want, scale, fmt),
                    tol: dgamma_tol(shift, magnitude, unit),
                },
                own_units: forward_units(wide(got), want, fmt),
                magnitude,
            });
        }
    }
    let mut dbeta = Vec::new();
    if let Some(computed) = &grads.beta {
        for (&got, want) in computed.iter().zip(sums.beta()) {
            dbeta.push(Measured {
                got,
                exact: want.to_f64(),
                units: forward_units(wide(got), &want, fmt),
                tol: TARGET_UNITS,
            });
        }
    }
    BatchErrors {
        gamma,
        rows,
        dgamma,
        dbeta,
    }
}
