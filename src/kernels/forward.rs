//! Normalizing rows, and computing their moments.
//!
//! Each entry point takes a batch of consecutive rows of length `n` and runs, under the
//! instruction set it is given ([`Isa`]), a few rows at a time (see [`batch_rows`]): the rows'
//! statistics (the fast path of `F` where it has one and the row meets its bound, see
//! [`super::fast`], else the exact compensated path of [`super::moments`]), then the rows are
//! written while they are still in cache. Nothing in the arithmetic
//! depends on the instruction set or on which rows share a call, so every version and every
//! split of the rows gives the same bits.

use std::mem::MaybeUninit;

use multiversion::multiversion;

use super::fast::{short_group_stats, FastStats, Form, GROUP, LANES};
use super::isa::{Isa, Kernel, Simd};
use super::moments::{row_stats, short_rows_stats, transpose_rows, RowStats, Saved, BATCH};
use super::sum::SHORT;
use crate::float::Float;

/// An element of an output row: an initialized `F` (an existing array, or a row normalized in
/// place) or a `MaybeUninit<F>` (a fresh array, which the kernels write without zeroing it
/// first). The kernels only ever store initialized values through it.
pub(crate) trait Out<F>: Copy + Send + Sync {
    /// Stores `v`.
    fn put(&mut self, v: F);
    /// The row as initialized values, if its type guarantees them: rows normalized in place
    /// are read from their output.
    fn init(row: &[Self]) -> Option<&[F]>;
    /// The mutable counterpart of [`init`](Out::init).
    fn init_mut(row: &mut [Self]) -> Option<&mut [F]>;
}

impl<F: Float> Out<F> for F {
    #[inline(always)]
    fn put(&mut self, v: F) {
        *self = v;
    }
    #[inline(always)]
    fn init(row: &[F]) -> Option<&[F]> {
        Some(row)
    }
    #[inline(always)]
    fn init_mut(row: &mut [F]) -> Option<&mut [F]> {
        Some(row)
    }
}

impl<F: Float> Out<F> for MaybeUninit<F> {
    #[inline(always)]
    fn put(&mut self, v: F) {
        *self = MaybeUninit::new(v);
    }
    #[inline(always)]
    fn init(_: &[Self]) -> Option<&[F]> {
        None
    }
    #[inline(always)]
    fn init_mut(_: &mut [Self]) -> Option<&mut [F]> {
        None
    }
}

/// The input of a row: `x` where it is given, else the output itself (in place, where the
/// output is always of initialized `F`).
#[inline(always)]
fn source<'s, F: Float, Y: Out<F>>(x: Option<&'s [F]>, y: &'s [Y]) -> &'s [F] {
    x.unwrap_or_else(|| Y::init(y).expect(IN_PLACE))
}

/// Rows are normalized in place only in arrays of initialized `F`.
const IN_PLACE: &str = "rows normalized in place are initialized";

/// How one row is normalized: by the fast path or by the exact one.
#[derive(Debug, Clone, Copy)]
enum RowNorm {
    Fast(FastStats),
    Exact(RowStats),
}

impl RowNorm {
    /// The plan of row `x`: fast where `F` has a fast path and the row meets its bound.
    #[inline(always)]
    fn of<S: Simd, F: Float, const CENTER: bool>(x: &[F], eps: f64) -> Self {
        match F::fast_stats::<S, CENTER>(x, eps) {
            Some(s) => RowNorm::Fast(s),
            None => RowNorm::Exact(row_stats::<F, CENTER>(x, eps)),
        }
    }

    /// Writes the row (see [`write_row`]).
    #[inline(always)]
    fn write<S: Simd, F: Float, Y: Out<F>>(
        &self,
        x: Option<&[F]>,
        y: &mut [Y],
        gamma: Option<&[f64]>,
        beta: Option<&[f64]>,
    ) {
        match self {
            RowNorm::Fast(s) => match s.form() {
                Form::Scale { r } => write_row::<S, F, Y, true>(x, y, |v| v * r, gamma, beta),
                Form::Direct { r, c } => {
                    write_row::<S, F, Y, true>(x, y, |v| v.mul_add(r, -c), gamma, beta)
                }
                Form::Pivot { p, m, r } => {
                    write_row::<S, F, Y, true>(x, y, |v| ((v - p) - m) * r, gamma, beta)
                }
            },
            RowNorm::Exact(s) => {
                write_row::<S, F, Y, false>(x, y, |v| s.plan.apply(v), gamma, beta)
            }
        }
    }
}

/// One row as the kernels hand it to a caller's `record`: its statistics are computed only
/// if asked for.
pub(crate) struct Row<'a, F, const CENTER: bool> {
    norm: &'a RowNorm,
    x: &'a [F],
    eps: f64,
}

impl<F: Float, const CENTER: bool> Row<'_, F, CENTER> {
    /// The row's mean and `rstd` (and, from the exact path, its variance), each within the
    /// rounding that narrowing to `F` adds of the exact value (see [`super::fast`]); on `f64`
    /// rows `rstd` is refined here, for callers that keep it
    /// ([`RowStats::recorded_rstd`]), and may differ from the one the row is written with.
    #[inline(always)]
    pub(crate) fn stats(&self) -> RowStats {
        match self.norm {
            RowNorm::Fast(s) => F::fast_recorded::<CENTER>(s, self.x, self.eps),
            RowNorm::Exact(s) => RowStats {
                rstd: s.recorded_rstd::<F, CENTER>(self.x, self.eps),
                saved: Saved::Rstd,
                ..*s
            },
        }
    }
}

/// Rows planned at a time, all still in cache when they are written: fast (`f32`) rows by
/// [`FAST_BATCH_BYTES`] (one row from 512 elements on), `f64` rows of at most [`SHORT`]
/// elements [`BATCH`] at a time (their compensated sums vectorize across rows), other `f64`
/// rows one at a time.
#[inline(always)]
fn batch_rows<F: Float>(n: usize) -> usize {
    if F::HAS_FAST {
        (FAST_BATCH_BYTES / (n * std::mem::size_of::<F>())).clamp(1, BATCH)
    } else if n > SHORT {
        1
    } else {
        BATCH
    }
}

/// Bytes of fast rows planned at a time: short rows are planned a few at a time, so that the
/// latency of one row's statistics (divisions, square root) overlaps the next row's sums.
const FAST_BATCH_BYTES: usize = 1 << 11;

/// The plans of the consecutive rows of length `n > 0` of `x` (at most [`BATCH`] rows, one
/// element of `out` each).
#[inline(always)]
fn plan_rows<S: Simd, F: Float, const CENTER: bool>(
    x: &[F],
    n: usize,
    eps: f64,
    out: &mut [RowNorm],
) {
    debug_assert_eq!(x.len(), n * out.len());
    if !F::HAS_FAST && n <= SHORT {
        let mut stats = [RowStats::nan(); BATCH];
        let stats = &mut stats[..out.len()];
        short_rows_stats::<F, CENTER>(&transpose_rows(x, n), x, eps, stats);
        out.iter_mut()
            .zip(stats.iter())
            .for_each(|(o, s)| *o = RowNorm::Exact(*s));
    } else {
        for (o, row) in out.iter_mut().zip(x.chunks_exact(n)) {
            *o = RowNorm::of::<S, F, CENTER>(row, eps);
        }
    }
}

/// Normalizes the consecutive rows of length `n` in `x` into `y`, and calls
/// `record(slot, row)` for each row with its element of `slots` (`row.stats()` gives its
/// statistics). `CENTER` selects LayerNorm (`true`) or RMSNorm (`false`, no mean).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn normalize_rows<F: Float, Y: Out<F>, T, const CENTER: bool>(
    isa: Isa,
    x: &[F],
    y: &mut [Y],
    n: usize,
    eps: f64,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    slots: &mut [T],
    record: impl Fn(&mut T, &Row<'_, F, CENTER>),
) {
    debug_assert_eq!(x.len(), y.len());
    let (x, params) = (Some(x), (gamma, beta));
    isa.run(Normalize::<F, Y, T, _, CENTER> {
        x,
        y,
        n,
        eps,
        params,
        slots,
        record,
    })
}

/// Normalizes the consecutive rows of length `n` in `y` in place (see [`normalize_rows`]).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn normalize_rows_inplace<F: Float, T, const CENTER: bool>(
    isa: Isa,
    y: &mut [F],
    n: usize,
    eps: f64,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    slots: &mut [T],
    record: impl Fn(&mut T, &Row<'_, F, CENTER>),
) {
    let params = (gamma, beta);
    isa.run(Normalize::<F, F, T, _, CENTER> {
        x: None,
        y,
        n,
        eps,
        params,
        slots,
        record,
    })
}

/// Gamma and beta, each optional, widened to `f64` (see `Core::wide_params`).
type Params<'a> = (Option<&'a [f64]>, Option<&'a [f64]>);

/// The kernel of [`normalize_rows`] (`x` given) and [`normalize_rows_inplace`] (`x` is `y`).
struct Normalize<'a, F, Y, T, R, const CENTER: bool> {
    x: Option<&'a [F]>,
    y: &'a mut [Y],
    n: usize,
    eps: f64,
    params: Params<'a>,
    slots: &'a mut [T],
    record: R,
}

impl<F: Float, Y: Out<F>, T, R, const CENTER: bool> Kernel for Normalize<'_, F, Y, T, R, CENTER>
where
    R: Fn(&mut T, &Row<'_, F, CENTER>),
{
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        let Normalize {
            x,
            y,
            n,
            eps,
            params: (gamma, beta),
            slots,
            record,
        } = self;
        debug_assert_eq!(y.len(), n * slots.len());
        if n == 0 {
            let nan = RowNorm::Exact(RowStats::nan());
            let row = Row {
                norm: &nan,
                x: &[],
                eps,
            };
            return slots.iter_mut().for_each(|s| record(s, &row));
        }
        let batch = batch_rows::<F>(n);
        let mut norms = [RowNorm::Exact(RowStats::nan()); BATCH];
        let mut start = 0;
        if F::HAS_FAST && n < LANES {
            // Short rows: groups of GROUP rows at once, where every row of the group meets the
            // bound (the others, and the rows after the last group, go on below).
            let mut flat = FlatParams::new(n, gamma, beta);
            while start + GROUP <= slots.len() {
                let (lo, hi) = (start * n, (start + GROUP) * n);
                let src = &source(x, y)[lo..hi];
                let stats = short_group_stats::<F, CENTER>(src, n, eps);
                if stats.iter().any(Option::is_none) {
                    break;
                }
                let stats = stats.map(|s| s.expect("checked above"));
                for (r, s) in stats.iter().enumerate() {
                    let xr = &src[r * n..][..n];
                    let norm = RowNorm::Fast(*s);
                    record(
                        &mut slots[start + r],
                        &Row {
                            norm: &norm,
                            x: xr,
                            eps,
                        },
                    );
                }
                flat.write_group::<S, F, Y>(x.map(|x| &x[lo..hi]), &mut y[lo..hi], &stats);
                start += GROUP;
            }
        }
        let x = x.map(|x| &x[start * n..]);
        let (y, slots) = (&mut y[start * n..], &mut slots[start..]);
        for (b, (y, slots)) in y
            .chunks_mut(batch * n)
            .zip(slots.chunks_mut(batch))
            .enumerate()
        {
            let x = x.map(|x| &x[b * batch * n..][..y.len()]);
            // Every plan of the batch is made before any of its rows is overwritten.
            let norms = &mut norms[..slots.len()];
            plan_rows::<S, F, CENTER>(source(x, y), n, eps, norms);
            for (r, (slot, norm)) in slots.iter_mut().zip(norms.iter()).enumerate() {
                let xr = x.map(|x| &x[r * n..][..n]);
                let yr = &mut y[r * n..][..n];
                record(
                    slot,
                    &Row {
                        norm,
                        x: source(xr, yr),
                        eps,
                    },
                );
                norm.write::<S, F, Y>(xr, yr, gamma, beta);
            }
        }
    }
}

/// Gamma and beta repeated over a group of [`GROUP`] short rows, widened, and the per-element
/// statistics of the group: the rows of a group are written as one flat loop, which
/// vectorizes where a loop over five elements would not.
struct FlatParams {
    n: usize,
    gamma: Option<[f64; GROUP * LANES]>,
    beta: Option<[f64; GROUP * LANES]>,
    pivot: [f64; GROUP * LANES],
    shift: [f64; GROUP * LANES],
    rstd: [f64; GROUP * LANES],
    offset: [f64; GROUP * LANES],
}

impl FlatParams {
    /// For rows of `n < LANES` elements.
    #[inline(always)]
    fn new(n: usize, gamma: Option<&[f64]>, beta: Option<&[f64]>) -> Self {
        let repeat = |p: &[f64]| std::array::from_fn(|k| p[k % n]);
        FlatParams {
            n,
            gamma: gamma.map(repeat),
            beta: beta.map(repeat),
            pivot: [0.0; GROUP * LANES],
            shift: [0.0; GROUP * LANES],
            rstd: [0.0; GROUP * LANES],
            offset: [0.0; GROUP * LANES],
        }
    }

    /// Writes the rows of a group with their fast statistics: for each element, exactly the
    /// operations of [`RowNorm::write`] on its row.
    // Index loops on purpose: no closures that LLVM could leave out of line (see `value`).
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn write_group<S: Simd, F: Float, Y: Out<F>>(
        &mut self,
        x: Option<&[F]>,
        y: &mut [Y],
        stats: &[FastStats; GROUP],
    ) {
        let n = self.n;
        for (r, s) in stats.iter().enumerate() {
            let [p, m, rstd, c] = s.form().parts();
            let row = r * n..(r + 1) * n;
            self.pivot[row.clone()].fill(p);
            self.shift[row.clone()].fill(m);
            self.rstd[row.clone()].fill(rstd);
            self.offset[row].fill(c);
        }
        debug_assert_eq!(y.len(), GROUP * n);
        // Plain loops, not iterator adaptors with closures (see `value`).
        match x {
            Some(x) => {
                let x = &x[..y.len()];
                for k in 0..y.len() {
                    y[k].put(self.value(k, x[k]));
                }
            }
            None => {
                let y = Y::init_mut(y).expect(IN_PLACE);
                for k in 0..y.len() {
                    y[k] = self.value(k, y[k]);
                }
            }
        }
    }

    /// Element `k` of the group, `v` normalized. A function that is always inlined, not a
    /// closure: a closure that LLVM leaves out of line is compiled without the instruction
    /// set's features, and its `mul_add` becomes a library call.
    #[inline(always)]
    fn value<F: Float>(&self, k: usize, v: F) -> F {
        let t = ((v.wide() - self.pivot[k]) - self.shift[k]).mul_add(self.rstd[k], -self.offset[k]);
        let (g, b) = (self.gamma.as_ref(), self.beta.as_ref());
        F::narrow(affine::<true>(t, g.map(|g| g[k]), b.map(|b| b[k])))
    }
}

/// The statistics of the consecutive rows of length `n` in `x` (the exact path), passed to
/// `record`.
#[multiversion(targets = "simd")]
pub(crate) fn rows_moments<F: Float, T>(
    x: &[F],
    n: usize,
    slots: &mut [T],
    record: impl Fn(&mut T, &RowStats),
) {
    debug_assert_eq!(x.len(), n * slots.len());
    if n == 0 {
        return slots.iter_mut().for_each(|s| record(s, &RowStats::nan()));
    }
    if n <= SHORT {
        let mut stats = [RowStats::nan(); BATCH];
        for (chunk, slots) in x.chunks(BATCH * n).zip(slots.chunks_mut(BATCH)) {
            let stats = &mut stats[..slots.len()];
            short_rows_stats::<F, true>(&transpose_rows(chunk, n), chunk, 0.0, stats);
            slots
                .iter_mut()
                .zip(stats.iter())
                .for_each(|(s, st)| record(s, st));
        }
    } else {
        for (row, slot) in x.chunks_exact(n).zip(slots) {
            record(slot, &row_stats::<F, true>(row, 0.0));
        }
    }
}

/// The residual kernels add and normalize chunks of at most this many bytes of rows (at least
/// one row, at most [`BATCH`]): small enough that a chunk of sums is still in the L2 cache when
/// it is normalized, large enough that the reads of `x` and `r` stream across pages. Measured
/// (f32, one thread) against chunks of 32 KiB, of one row, and of 64 rows: the only choice of
/// the four that was not slower than add-then-normalize on any of 4096x768, 512x8192,
/// 8192x1024 and 65536x64.
const RESIDUAL_CHUNK_BYTES: usize = 1 << 17;

/// Rows per chunk of the residual kernels, for rows of `n` elements of `F`.
#[inline(always)]
fn residual_chunk_rows<F>(n: usize) -> usize {
    (RESIDUAL_CHUNK_BYTES / (n * std::mem::size_of::<F>()).max(1)).clamp(1, BATCH)
}

/// `h = x + r` and `y = norm(h)` for the consecutive rows of length `n` of `x` and `r` (see
/// [`normalize_rows`]), a chunk of rows at a time (`RESIDUAL_CHUNK_BYTES`): each chunk of sums
/// is normalized while it is in cache.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn residual_rows<F: Float, const CENTER: bool>(
    isa: Isa,
    x: &[F],
    r: &[F],
    h: &mut [F],
    y: &mut [F],
    n: usize,
    eps: f64,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
) {
    debug_assert!(x.len() == r.len() && x.len() == h.len() && x.len() == y.len());
    let params = (gamma, beta);
    isa.run(Residual::<F, CENTER> {
        inputs: (x, r),
        outputs: (h, y),
        n,
        eps,
        params,
    })
}

/// The kernel of [`residual_rows`].
struct Residual<'a, F, const CENTER: bool> {
    inputs: (&'a [F], &'a [F]),
    outputs: (&'a mut [F], &'a mut [F]),
    n: usize,
    eps: f64,
    params: Params<'a>,
}

impl<F: Float, const CENTER: bool> Kernel for Residual<'_, F, CENTER> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        let Residual {
            inputs: (x, r),
            outputs: (h, y),
            n,
            eps,
            params,
        } = self;
        if n == 0 {
            return;
        }
        let len = residual_chunk_rows::<F>(n) * n;
        let chunks = x.chunks(len).zip(r.chunks(len));
        for ((x, r), (h, y)) in chunks.zip(h.chunks_mut(len).zip(y.chunks_mut(len))) {
            add(x, r, h);
            normalize_chunk::<S, F, CENTER>(h, y, n, eps, params);
        }
    }
}

/// [`residual_rows`] in place: `r += x`, then `x = norm(r)`.
#[inline]
pub(crate) fn residual_rows_inplace<F: Float, const CENTER: bool>(
    isa: Isa,
    x: &mut [F],
    r: &mut [F],
    n: usize,
    eps: f64,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
) {
    debug_assert_eq!(x.len(), r.len());
    let params = (gamma, beta);
    isa.run(ResidualInplace::<F, CENTER> {
        x,
        r,
        n,
        eps,
        params,
    })
}

/// The kernel of [`residual_rows_inplace`].
struct ResidualInplace<'a, F, const CENTER: bool> {
    x: &'a mut [F],
    r: &'a mut [F],
    n: usize,
    eps: f64,
    params: Params<'a>,
}

impl<F: Float, const CENTER: bool> Kernel for ResidualInplace<'_, F, CENTER> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        let ResidualInplace {
            x,
            r,
            n,
            eps,
            params,
        } = self;
        if n == 0 {
            return;
        }
        let len = residual_chunk_rows::<F>(n) * n;
        for (x, r) in x.chunks_mut(len).zip(r.chunks_mut(len)) {
            add_assign(x, r);
            normalize_chunk::<S, F, CENTER>(r, x, n, eps, params);
        }
    }
}

/// Normalizes the rows of `h` (at most [`BATCH`]) into `y`, as [`normalize_rows`] does.
#[inline(always)]
fn normalize_chunk<S: Simd, F: Float, const CENTER: bool>(
    h: &[F],
    y: &mut [F],
    n: usize,
    eps: f64,
    (gamma, beta): Params<'_>,
) {
    let mut norms = [RowNorm::Exact(RowStats::nan()); BATCH];
    let norms = &mut norms[..h.len() / n];
    plan_rows::<S, F, CENTER>(h, n, eps, norms);
    for (r, norm) in norms.iter().enumerate() {
        norm.write::<S, F, F>(Some(&h[r * n..][..n]), &mut y[r * n..][..n], gamma, beta);
    }
}

/// `h = x + r`, element by element, rounded to `F` (the residual sum, as it would be stored).
#[inline(always)]
fn add<F: Float>(x: &[F], r: &[F], h: &mut [F]) {
    h.iter_mut()
        .zip(x.iter().zip(r))
        .for_each(|(h, (&x, &r))| *h = x + r);
}

/// `r += x`, element by element.
#[inline(always)]
fn add_assign<F: Float>(x: &[F], r: &mut [F]) {
    r.iter_mut().zip(x).for_each(|(r, &x)| *r += x);
}

/// `t * gamma + beta`, either present: with one rounding (a fused multiply-add) where both are
/// and `FUSED` (the fast `f32` rows), else each operation rounded (the exact path, whose bits
/// are kept).
#[inline(always)]
fn affine<const FUSED: bool>(t: f64, gamma: Option<f64>, beta: Option<f64>) -> f64 {
    match (gamma, beta) {
        (Some(g), Some(b)) if FUSED => t.mul_add(g, b),
        (g, b) => {
            let t = g.map_or(t, |g| t * g);
            b.map_or(t, |b| t + b)
        }
    }
}

/// Writes `y_i = norm(x_i) * gamma_i + beta_i` for every element of a row, reading `x_i` from
/// `x`, or from `y` itself (in place) when `x` is `None`.
///
/// All arithmetic is in `f64`, rounded to `F` once per element. The element formula is written
/// once; the match only selects which slices the loop walks, so that each loop is a plain
/// element-wise loop that vectorizes.
#[inline(always)]
fn write_row<S: Simd, F: Float, Y: Out<F>, const FUSED: bool>(
    x: Option<&[F]>,
    y: &mut [Y],
    norm: impl Fn(f64) -> f64,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
) {
    let n = y.len();
    debug_assert!(x.is_none_or(|x| x.len() == n));
    debug_assert!(gamma.is_none_or(|g| g.len() == n));
    debug_assert!(beta.is_none_or(|b| b.len() == n));
    let norm = |x: F| norm(x.wide());
    let scale = |x: F, g: &f64| norm(x) * g;
    let shift = |v: f64, b: &f64| F::narrow(v + b);
    let both = |x: F, g: &f64, b: &f64| F::narrow(affine::<FUSED>(norm(x), Some(*g), Some(*b)));
    let Some(x) = x else {
        let y = Y::init_mut(y).expect(IN_PLACE);
        return match (gamma, beta) {
            (None, None) => y.iter_mut().for_each(|y| *y = F::narrow(norm(*y))),
            (Some(g), None) => y
                .iter_mut()
                .zip(g)
                .for_each(|(y, g)| *y = F::narrow(scale(*y, g))),
            (None, Some(b)) => y
                .iter_mut()
                .zip(b)
                .for_each(|(y, b)| *y = shift(norm(*y), b)),
            (Some(g), Some(b)) => y
                .iter_mut()
                .zip(g)
                .zip(b)
                .for_each(|((y, g), b)| *y = both(*y, g, b)),
        };
    };
    match (gamma, beta) {
        (None, None) => y
            .iter_mut()
            .zip(x)
            .for_each(|(y, &x)| y.put(F::narrow(norm(x)))),
        (Some(g), None) => y
            .iter_mut()
            .zip(x)
            .zip(g)
            .for_each(|((y, &x), g)| y.put(F::narrow(scale(x, g)))),
        (None, Some(b)) => y
            .iter_mut()
            .zip(x)
            .zip(b)
            .for_each(|((y, &x), b)| y.put(shift(norm(x), b))),
        (Some(g), Some(b)) => y
            .iter_mut()
            .zip(x)
            .zip(g)
            .zip(b)
            .for_each(|(((y, &x), g), b)| y.put(both(x, g, b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random f32 rows of many lengths (short, lane-sized, odd, long), with an offset.
    fn rows(n: usize, count: usize) -> Vec<f32> {
        rows_at(n, count, 100.0)
    }

    /// As [`rows`], uniform in `[offset - 3, offset + 5)`.
    fn rows_at(n: usize, count: usize, offset: f32) -> Vec<f32> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ n as u64;
        (0..n * count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 3.0 + offset
            })
            .collect()
    }

    /// Every compiled version (baseline, AVX2, AVX-512, as the processor has them) writes the
    /// same bits, with and without gamma and beta, LayerNorm and RMSNorm.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        // Offset 100 (|mean| ~ 40 std): LayerNorm rows of 16 or more take the unshifted sums;
        // offset 1e4: the shifted sums.
        for (n, offset) in [1, 2, 5, 15, 16, 17, 31, 64, 65, 100, 768, 1029]
            .into_iter()
            .flat_map(|n| [(n, 100.0), (n, 1e4)])
        {
            let x = rows_at(n, 19, offset);
            let g: Vec<f64> = rows(n, 1).iter().map(|v| f64::from(v - 100.0)).collect();
            let b: Vec<f64> = rows(n, 1)
                .iter()
                .map(|v| f64::from((v - 100.0) * 0.5))
                .collect();
            for params in [(None, None), (Some(&g[..]), Some(&b[..]))] {
                let run = |isa: Isa, center: bool| {
                    let mut y = vec![0.0f32; x.len()];
                    let mut slots = vec![(0u32, 0u32); 19];
                    let rec = |s: &mut (u32, u32), st: RowStats| {
                        *s = ((st.mean as f32).to_bits(), (st.rstd as f32).to_bits())
                    };
                    if center {
                        normalize_rows::<f32, f32, _, true>(
                            isa,
                            &x,
                            &mut y,
                            n,
                            1e-5,
                            params.0,
                            params.1,
                            &mut slots,
                            |s, r| rec(s, r.stats()),
                        );
                    } else {
                        normalize_rows::<f32, f32, _, false>(
                            isa,
                            &x,
                            &mut y,
                            n,
                            1e-5,
                            params.0,
                            params.1,
                            &mut slots,
                            |s, r| rec(s, r.stats()),
                        );
                    }
                    (y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), slots)
                };
                for center in [true, false] {
                    let base = run(Isa::Baseline, center);
                    for isa in Isa::available() {
                        assert_eq!(
                            run(isa, center),
                            base,
                            "{isa:?}, n = {n}, offset {offset}, center {center}"
                        );
                    }
                }
            }
        }
    }
}
