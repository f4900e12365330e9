//! What [`LayerNorm`](crate::LayerNorm) and [`RmsNorm`](crate::RmsNorm) share: their
//! parameters, the checks of an input against them, and the walk of the driver over the rows
//! with the row kernels.
//!
//! The two layers differ only in whether a row is centred on its mean before it is scaled. That
//! is the `CENTER` constant of every method here and of the kernels ([`LAYER`] or [`RMS`]),
//! chosen at compile time, so that each layer runs its own specialized code.

use std::cmp::Ordering;

use ndarray::{Array, ArrayD, ArrayRef, Dimension, IxDyn};

use crate::driver::{
    exact_column_sums, fold_row_blocks, for_each_row_mut, for_each_row_mut_pair, for_each_row_pair,
    for_each_row_quad, fresh_row_pair, rows_by_len, ROW_BLOCK,
};
use crate::error::{Error, Param};
use crate::float::Float;
use crate::kernels::{
    finish_sums, merge_plain, merge_sums, normalize_rows, normalize_rows_inplace, residual_rows,
    residual_rows_inplace, BackwardBlock, BackwardScratch, BlockSums, ColumnParts, Isa, Row,
    RowPlan,
};
use crate::outputs::Gradients;
use crate::validate;

/// `CENTER` for LayerNorm: rows are centred on their mean.
pub(crate) const LAYER: bool = true;
/// `CENTER` for RMSNorm: rows are scaled by their root mean square, not centred.
pub(crate) const RMS: bool = false;

/// The parameters of a normalization layer. One that exists is valid: epsilon finite and
/// non-negative, at least one normalized axis, gamma and beta (where present) with one axis per
/// normalized axis and the same shape as each other, in standard layout.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Core<F> {
    pub(crate) epsilon: F,
    pub(crate) axes: usize,
    pub(crate) gamma: Option<ArrayD<F>>,
    pub(crate) beta: Option<ArrayD<F>>,
    /// Gamma and beta widened to `f64`, as the forward kernels read them.
    wide: Widened,
}

/// Gamma and beta widened to `f64` once, when they are set, so that the forward kernels read
/// them without converting every element of every row (a function of gamma and beta, so it
/// adds nothing to comparisons).
#[derive(Clone, Default, PartialEq)]
struct Widened {
    gamma: Option<Vec<f64>>,
    beta: Option<Vec<f64>>,
}

impl Widened {
    fn of<F: Float>(gamma: Option<&ArrayD<F>>, beta: Option<&ArrayD<F>>) -> Self {
        let widen = |p: &ArrayD<F>| p.iter().map(|v| v.wide()).collect();
        Widened {
            gamma: gamma.map(widen),
            beta: beta.map(widen),
        }
    }
}

impl std::fmt::Debug for Widened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Widened(gamma, beta)")
    }
}

impl<F: Float> Core<F> {
    /// Epsilon `1e-5` (rounded to `F`), the last axis, no parameters.
    pub(crate) fn default_eps() -> Self {
        Core {
            epsilon: F::narrow(1e-5),
            axes: 1,
            gamma: None,
            beta: None,
            wide: Widened::default(),
        }
    }

    /// The given epsilon, the last axis, no parameters.
    pub(crate) fn new(epsilon: F) -> Result<Self, Error> {
        Ok(Core {
            epsilon: validate::epsilon(epsilon)?,
            ..Self::default_eps()
        })
    }

    /// `gamma = ones(shape)` and `beta = zeros(shape)` (if `with_beta`), normalizing over
    /// `shape.len()` trailing axes.
    pub(crate) fn affine(shape: &[usize], epsilon: F, with_beta: bool) -> Result<Self, Error> {
        let core = Core::new(epsilon)?.with_axes(shape.len())?;
        validate::array_size(shape)?;
        Ok(Core {
            gamma: Some(ArrayD::ones(IxDyn(shape))),
            beta: with_beta.then(|| ArrayD::zeros(IxDyn(shape))),
            ..core
        }
        .widened())
    }

    /// The same parameters, normalizing over the last `axes` axes.
    pub(crate) fn with_axes(self, axes: usize) -> Result<Self, Error> {
        if axes == 0 {
            return Err(Error::InvalidAxes { axes });
        }
        for (param, value) in [(Param::Gamma, &self.gamma), (Param::Beta, &self.beta)] {
            validate::param_axes(param, value.as_ref(), axes)?;
        }
        Ok(Core { axes, ..self })
    }

    /// The same parameters with `param` set to `value` (replacing any previous one).
    pub(crate) fn with_param<D: Dimension>(
        self,
        param: Param,
        value: Array<F, D>,
    ) -> Result<Self, Error> {
        let value = validate::standard(value.into_dyn());
        validate::param_axes(param, Some(&value), self.axes)?;
        let core = match param {
            Param::Gamma => {
                validate::params_agree(Some(&value), self.beta.as_ref())?;
                Core {
                    gamma: Some(value),
                    ..self
                }
            }
            Param::Beta => {
                validate::params_agree(self.gamma.as_ref(), Some(&value))?;
                Core {
                    beta: Some(value),
                    ..self
                }
            }
        };
        Ok(core.widened())
    }

    /// The same parameters with their widened copies made anew.
    fn widened(self) -> Self {
        Core {
            wide: Widened::of(self.gamma.as_ref(), self.beta.as_ref()),
            ..self
        }
    }

    /// Gamma and beta widened to `f64`, as flat slices in the logical order of a row.
    pub(crate) fn wide_params(&self) -> (Option<&[f64]>, Option<&[f64]>) {
        (self.wide.gamma.as_deref(), self.wide.beta.as_deref())
    }

    /// Checks an input against the layer: enough axes, and parameters of the shape of the
    /// normalized axes.
    pub(crate) fn check<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<(), Error> {
        let row_shape = validate::normalized_shape(x.shape(), self.axes)?;
        validate::param_shape(Param::Gamma, self.gamma.as_ref(), row_shape)?;
        validate::param_shape(Param::Beta, self.beta.as_ref(), row_shape)
    }

    /// Gamma and beta as flat slices, in the logical order of a row.
    pub(crate) fn params(&self) -> (Option<&[F]>, Option<&[F]>) {
        fn slice<F>(p: &Option<ArrayD<F>>) -> Option<&[F]> {
            p.as_ref().and_then(|p| p.as_slice())
        }
        (slice(&self.gamma), slice(&self.beta))
    }

    /// The shape of the per-row statistics of a checked input `x`: the leading (not
    /// normalized) axes, then `axes - 1` axes of length 1.
    pub(crate) fn stats_dim<D: Dimension>(&self, x: &ArrayRef<F, D>) -> D::Smaller {
        let shape = x.shape();
        let leading = shape.len() - self.axes;
        let mut dim = D::Smaller::zeros(shape.len() - 1);
        let slots = dim.slice_mut();
        slots[..leading].copy_from_slice(&shape[..leading]);
        slots[leading..].fill(1);
        dim
    }

    /// `forward`: checks `x` and normalizes it into a new array.
    pub(crate) fn forward<const CENTER: bool, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
    ) -> Result<Array<F, D>, Error> {
        self.check(x)?;
        let mut rows = Array::from_elem(self.stats_dim(x), ());
        Ok(self.normalize_fresh::<CENTER, _, _>(x, &mut rows, |_, _| {}))
    }

    /// `forward_into`: checks `x` and `out`, and normalizes `x` into `out`.
    pub(crate) fn forward_into<const CENTER: bool, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        self.check(x)?;
        validate::same_shape(x.shape(), out.shape())?;
        let mut rows = Array::from_elem(self.stats_dim(x), ());
        self.normalize::<CENTER, _, _>(x, out, &mut rows, |_, _| {});
        Ok(())
    }

    /// `forward_inplace`: checks `x` and normalizes it in place.
    pub(crate) fn forward_inplace<const CENTER: bool, D: Dimension>(
        &self,
        x: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        self.check(x)?;
        let mut rows = Array::from_elem(self.stats_dim(x), ());
        self.normalize_inplace::<CENTER, _, _>(x, &mut rows, |_, _| {});
        Ok(())
    }

    /// `forward_residual`: checks `x` and `residual`, and returns `(x + residual, norm(..))`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn forward_residual<const CENTER: bool, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        residual: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D>), Error> {
        self.check(x)?;
        validate::same_shape(x.shape(), residual.shape())?;
        Ok(self.residual::<CENTER, _>(x, residual))
    }

    /// `forward_residual_inplace`: checks both arrays, then `residual += x`, `x = norm(..)`.
    pub(crate) fn forward_residual_inplace<const CENTER: bool, D: Dimension>(
        &self,
        x: &mut ArrayRef<F, D>,
        residual: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        self.check(x)?;
        validate::same_shape(x.shape(), residual.shape())?;
        self.residual_inplace::<CENTER, _>(x, residual);
        Ok(())
    }

    /// `backward`: checks `x` and `dy`, and returns the gradients with the statistics
    /// recomputed from `x`.
    pub(crate) fn backward_recomputed<const CENTER: bool, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        self.check_backward(x, dy)?;
        let eps = self.epsilon.wide();
        Ok(self.backward::<CENTER, _>(x, dy, |_| RowPlan::Recompute(eps)))
    }

    /// Normalizes every row of a checked `x` into `y` (same shape), passing each row's
    /// statistics and its element of `per_row` to `record`.
    pub(crate) fn normalize<const CENTER: bool, D: Dimension, T: Send>(
        &self,
        x: &ArrayRef<F, D>,
        y: &mut ArrayRef<F, D>,
        per_row: &mut ArrayRef<T, D::Smaller>,
        record: impl Fn(&mut T, &Row<'_, F, CENTER>) + Copy + Sync,
    ) {
        let (_, n) = rows_by_len(x.shape(), self.axes);
        let (gamma, beta) = self.wide_params();
        let eps = self.epsilon.wide();
        let isa = Isa::best();
        for_each_row_pair(x, y, self.axes, per_row, |x, y, slots| {
            normalize_rows::<F, F, T, CENTER>(isa, x, y, n, eps, gamma, beta, slots, record)
        });
    }

    /// Normalizes every row of a checked `x` into a new array, as [`normalize`](Self::normalize)
    /// does, without zeroing the array first.
    #[allow(unsafe_code)]
    pub(crate) fn normalize_fresh<const CENTER: bool, D: Dimension, T: Send>(
        &self,
        x: &ArrayRef<F, D>,
        per_row: &mut ArrayRef<T, D::Smaller>,
        record: impl Fn(&mut T, &Row<'_, F, CENTER>) + Copy + Sync,
    ) -> Array<F, D> {
        let (_, n) = rows_by_len(x.shape(), self.axes);
        let (gamma, beta) = self.wide_params();
        let eps = self.epsilon.wide();
        let isa = Isa::best();
        // SAFETY: `normalize_rows` writes every element of its output: each of its rows is
        // written whole, by the group writer or by `write_row`, and with `n == 0` there is none.
        unsafe {
            fresh_row_pair(x, self.axes, per_row, |x, y, slots| {
                normalize_rows::<F, _, T, CENTER>(isa, x, y, n, eps, gamma, beta, slots, record)
            })
        }
    }

    /// Normalizes every row of a checked `x` in place (see [`normalize`](Self::normalize)).
    fn normalize_inplace<const CENTER: bool, D: Dimension, T: Send>(
        &self,
        x: &mut ArrayRef<F, D>,
        per_row: &mut ArrayRef<T, D::Smaller>,
        record: impl Fn(&mut T, &Row<'_, F, CENTER>) + Copy + Sync,
    ) {
        let (_, n) = rows_by_len(x.shape(), self.axes);
        let (gamma, beta) = self.wide_params();
        let eps = self.epsilon.wide();
        let isa = Isa::best();
        for_each_row_mut(x, self.axes, per_row, |y, slots| {
            normalize_rows_inplace::<F, T, CENTER>(isa, y, n, eps, gamma, beta, slots, record)
        });
    }

    /// `h = x + residual` and `y = norm(h)` for a checked `x` and a `residual` of its shape,
    /// block by block: each block of `h` is normalized while it is still in cache.
    fn residual<const CENTER: bool, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        residual: &ArrayRef<F, D>,
    ) -> (Array<F, D>, Array<F, D>) {
        let (_, n) = rows_by_len(x.shape(), self.axes);
        let (gamma, beta) = self.wide_params();
        let eps = self.epsilon.wide();
        let mut h = Array::zeros(x.raw_dim());
        let mut y = Array::zeros(x.raw_dim());
        let mut rows = Array::from_elem(self.stats_dim(x), ());
        for_each_row_quad(
            (x, residual),
            (&mut h, &mut y),
            self.axes,
            &mut rows,
            |x, r, h, y, _| {
                residual_rows::<F, CENTER>(Isa::best(), x, r, h, y, n, eps, gamma, beta)
            },
        );
        (h, y)
    }

    /// `residual += x`, then `x = norm(residual)`, block by block.
    fn residual_inplace<const CENTER: bool, D: Dimension>(
        &self,
        x: &mut ArrayRef<F, D>,
        residual: &mut ArrayRef<F, D>,
    ) {
        let (_, n) = rows_by_len(x.shape(), self.axes);
        let (gamma, beta) = self.wide_params();
        let eps = self.epsilon.wide();
        let mut rows = Array::from_elem(self.stats_dim(x), ());
        for_each_row_mut_pair(x, residual, self.axes, &mut rows, |x, h, _| {
            residual_rows_inplace::<F, CENTER>(Isa::best(), x, h, n, eps, gamma, beta)
        });
    }

    /// The gradients for a checked `x` and a `dy` of its shape, with `plan(i)` giving the
    /// statistics of row `i`. Each block of rows leaves its sums of the parameter gradients
    /// (`hi + lo` per column) in its own part of one buffer, and the parts are merged in block
    /// order, so that the result does not depend on the number of threads.
    #[allow(unsafe_code)]
    pub(crate) fn backward<const CENTER: bool, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
        plan: impl Fn(usize) -> RowPlan + Sync,
    ) -> Gradients<F, D> {
        let (rows, n) = rows_by_len(x.shape(), self.axes);
        let (gamma, beta) = self.params();
        // Written without being zeroed first: see the `assume_init` below.
        let mut input = Array::uninit(x.raw_dim());
        // Per block: gamma's hi and lo, then beta's, n values each (whether the layer has the
        // parameter or not, so that the kernel's loop has the same shape either way), then
        // the bound of the `f32` dbeta sums (`check_plain_dbeta`).
        let width = 4 * n + 1;
        // At least one block: the first block's sums become the totals (zeros without rows).
        let blocks = rows.div_ceil(ROW_BLOCK).max(1);
        let mut parts = vec![0.0f64; blocks * width.max(1)];
        // f32: gamma as f64 (ones without gamma), for the fast path; f64: nothing.
        let wide_gamma: Vec<f64> = match gamma {
            _ if !F::HAS_FAST => Vec::new(),
            Some(g) => g.iter().map(|v| v.wide()).collect(),
            None => vec![1.0; n],
        };
        let wmax = wide_gamma.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        // f64 rows all take the exact path, whose `backward_row` chooses its own instruction
        // set: the block loop runs as compiled (no vector loop of its own to widen).
        let isa = if F::HAS_FAST {
            Isa::best()
        } else {
            Isa::Baseline
        };
        fold_row_blocks(
            x,
            dy,
            &mut input,
            self.axes,
            (&mut parts, width),
            |first_row, x, dy, dx, part, scratch: &mut BackwardScratch<F::Wide>| {
                let (g, b) = part.split_at_mut(2 * n);
                let (b, bound) = b.split_at_mut(2 * n);
                fn columns(p: &mut [f64], n: usize) -> ColumnParts<'_> {
                    let (hi, lo) = p.split_at_mut(n);
                    ColumnParts { hi, lo }
                }
                let sums = BlockSums {
                    gamma: columns(g, n),
                    beta: columns(b, n),
                    has_gamma: gamma.is_some(),
                    has_beta: beta.is_some(),
                    dy_bound: &mut bound[0],
                };
                isa.run(BackwardBlock::<F, _, _, CENTER> {
                    x,
                    dy,
                    dx,
                    n,
                    plan: |r| plan(first_row + r),
                    gamma,
                    wide_gamma: &wide_gamma,
                    wmax,
                    sums,
                    scratch,
                });
            },
        );
        // SAFETY: the blocks of `fold_row_blocks` cover every row of `input`, and the kernel
        // writes every element of each row it is given: the fast path's second pass writes all
        // `n` (it zips `dx` with slices of `n` elements), and the exact path (`backward_row`)
        // writes all `n` on each of its branches; with `n == 0` there is no element.
        let input = unsafe { input.assume_init() };
        // The block sums, merged in block order into those of the first block (which are
        // what merging them into zeros would give: TwoSum of 0 and a sum is that sum, and no
        // sum here is -0, since each starts at +0).
        let (total, rest) = parts.split_at_mut(width);
        let (g, b) = total.split_at_mut(2 * n);
        let (b, bound) = b.split_at_mut(2 * n);
        let ((g_hi, g_lo), (b_hi, b_lo)) = (g.split_at_mut(n), b.split_at_mut(n));
        for part in rest.chunks_exact(width) {
            if gamma.is_some() {
                merge_sums(g_hi, g_lo, &part[..n], &part[n..2 * n]);
            }
            if beta.is_some() && F::HAS_FAST {
                merge_plain(b_hi, b_lo, &part[2 * n..3 * n]);
                bound[0] += part[4 * n];
            } else if beta.is_some() {
                merge_sums(b_hi, b_lo, &part[2 * n..3 * n], &part[3 * n..4 * n]);
            }
        }
        if beta.is_some() && F::HAS_FAST {
            self.check_plain_dbeta(dy, (b_hi, b_lo), bound[0]);
        }
        // The sums in the shape of their parameter.
        let finish = |(hi, lo): (&[f64], &[f64]), like: &Option<ArrayD<F>>| {
            like.as_ref().map(|p| {
                ArrayD::from_shape_vec(p.raw_dim(), finish_sums::<F>(hi, lo))
                    .expect("one sum per element of the parameter")
            })
        };
        Gradients {
            input,
            gamma: finish((g_hi, g_lo), &self.gamma),
            beta: finish((b_hi, b_lo), &self.beta),
        }
    }

    /// Checks `dbeta` of `f32` rows, `hi + lo`, the block sums merged in block order (`S_b`, the
    /// plain `f64` sum of `dy` over the block's rows, column by column, merged with
    /// compensation), against the bound from `magnitude`, the sum over the blocks of `A_b`, the
    /// sum over the block's rows of `max |dy|` of the row; and sums the columns that fail it
    /// again.
    ///
    /// A block has at most 64 rows, so every column of `S_b` is within `63 u A_b` of its exact
    /// value (`u = 2^-53`; `A_b` bounds the sum of the magnitudes of every column); the merge
    /// adds nothing visible (its own error is below `B^2 u^2 sum A_b` for `B` blocks). So the
    /// total `T` is within `E = 1.02 * 64 u A` of the exact sum, `A` the sum of the `A_b` (the
    /// factor covers the roundings of `A` and of each `A_b` for up to `2^30` blocks). Where
    /// `E <= 2^-30 max(1, |T|)` the result, rounded to `f32`, is within `0.5 + 2^-6` units of
    /// `f32::EPSILON * max(1, |exact|)`; the columns where it is not (a column of `dy` that
    /// cancels to within `2^-17` of its magnitude) are summed again, with compensation, in
    /// the logical order of the rows.
    fn check_plain_dbeta<D: Dimension>(
        &self,
        dy: &ArrayRef<F, D>,
        (hi, lo): (&mut [f64], &mut [f64]),
        magnitude: f64,
    ) {
        const TOL: f64 = 1.0 / (1u64 << 30) as f64;
        let bound = 1.02 * 64.0 * (f64::EPSILON / 2.0);
        let redo: Vec<usize> = (0..hi.len())
            .filter(|&j| {
                let t = (hi[j] + lo[j]).abs();
                // The bound fails, or is NaN (a NaN or an infinity in the column).
                let scale = if t > 1.0 { t } else { 1.0 };
                let holds = (bound * magnitude).partial_cmp(&(TOL * scale));
                !matches!(holds, Some(Ordering::Less | Ordering::Equal))
            })
            .collect();
        if !redo.is_empty() {
            for (&j, v) in redo.iter().zip(exact_column_sums(dy, self.axes, &redo)) {
                (hi[j], lo[j]) = v;
            }
        }
    }
}
