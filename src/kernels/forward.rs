//! Normalizing rows, and computing their moments.
//!
//! Each function here takes a batch of consecutive rows of length `n` and is compiled for
//! several instruction sets (`multiversion`), picked once at run time. Nothing in the
//! arithmetic depends on the instruction set: no fused multiply-add, no reassociation, the same
//! lanes in the same order, so every version returns the same bits.

use multiversion::multiversion;

use super::moments::{row_stats, short_rows_stats, transpose_rows, Plan, RowStats, BATCH};
use super::sum::SHORT;
use crate::float::Float;

/// Normalizes the consecutive rows of length `n` in `x` into `y`, and calls
/// `record(slot, stats)` with each row's statistics and its element of `slots`. `CENTER`
/// selects LayerNorm (`true`) or RMSNorm (`false`, no mean: see [`row_stats`]).
#[multiversion(targets = "simd")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_rows<F: Float, T, const CENTER: bool>(
    x: &[F],
    y: &mut [F],
    n: usize,
    eps: f64,
    gamma: Option<&[F]>,
    beta: Option<&[F]>,
    slots: &mut [T],
    record: impl Fn(&mut T, &RowStats),
) {
    debug_assert_eq!(x.len(), y.len());
    debug_assert_eq!(x.len(), n * slots.len());
    if n == 0 {
        return slots.iter_mut().for_each(|s| record(s, &RowStats::nan()));
    }
    let mut rows = y.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(slots);
    for_each_stats::<F, CENTER>(x, n, eps, |stats| {
        let ((y, x), slot) = rows.next().expect("one row per statistics");
        write_row(Some(x), y, &stats.plan, gamma, beta);
        record(slot, stats);
    });
}

/// Normalizes the consecutive rows of length `n` in `y` in place (see [`normalize_rows`]).
#[multiversion(targets = "simd")]
pub(crate) fn normalize_rows_inplace<F: Float, T, const CENTER: bool>(
    y: &mut [F],
    n: usize,
    eps: f64,
    gamma: Option<&[F]>,
    beta: Option<&[F]>,
    slots: &mut [T],
    record: impl Fn(&mut T, &RowStats),
) {
    debug_assert_eq!(y.len(), n * slots.len());
    if n == 0 {
        return slots.iter_mut().for_each(|s| record(s, &RowStats::nan()));
    }
    // Statistics of a batch of rows first, then the rows are overwritten.
    for (y, slots) in y.chunks_mut(BATCH * n).zip(slots.chunks_mut(BATCH)) {
        let mut stats = [RowStats::nan(); BATCH];
        let stats = &mut stats[..slots.len()];
        block_stats::<F, CENTER>(y, n, eps, stats);
        for ((y, slot), stats) in y.chunks_exact_mut(n).zip(slots).zip(stats.iter()) {
            write_row(None, y, &stats.plan, gamma, beta);
            record(slot, stats);
        }
    }
}

/// The statistics of the consecutive rows of length `n` in `x`, passed to `record`.
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
    let mut slots = slots.iter_mut();
    for_each_stats::<F, true>(x, n, 0.0, |stats| {
        record(slots.next().expect("one slot per row"), stats)
    });
}

/// The statistics of up to [`BATCH`] consecutive rows of length `n` (one per element of `out`).
#[inline(always)]
fn block_stats<F: Float, const CENTER: bool>(x: &[F], n: usize, eps: f64, out: &mut [RowStats]) {
    if n <= SHORT {
        short_rows_stats::<F, CENTER>(&transpose_rows(x, n), x, eps, out);
    } else {
        for (out, row) in out.iter_mut().zip(x.chunks_exact(n)) {
            *out = row_stats::<F, CENTER>(row, eps);
        }
    }
}

/// Calls `f` with the statistics of every row of length `n` of `x`, in order.
#[inline(always)]
fn for_each_stats<F: Float, const CENTER: bool>(
    x: &[F],
    n: usize,
    eps: f64,
    mut f: impl FnMut(&RowStats),
) {
    let mut stats = [RowStats::nan(); BATCH];
    for chunk in x.chunks(BATCH * n) {
        let stats = &mut stats[..chunk.len() / n];
        block_stats::<F, CENTER>(chunk, n, eps, stats);
        stats.iter().for_each(&mut f);
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
#[multiversion(targets = "simd")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn residual_rows<F: Float, const CENTER: bool>(
    x: &[F],
    r: &[F],
    h: &mut [F],
    y: &mut [F],
    n: usize,
    eps: f64,
    gamma: Option<&[F]>,
    beta: Option<&[F]>,
) {
    debug_assert!(x.len() == r.len() && x.len() == h.len() && x.len() == y.len());
    if n == 0 {
        return;
    }
    let len = residual_chunk_rows::<F>(n) * n;
    let chunks = x.chunks(len).zip(r.chunks(len));
    for ((x, r), (h, y)) in chunks.zip(h.chunks_mut(len).zip(y.chunks_mut(len))) {
        add(x, r, h);
        normalize_chunk::<F, CENTER>(h, y, n, eps, gamma, beta);
    }
}

/// [`residual_rows`] in place: `r += x`, then `x = norm(r)`.
#[multiversion(targets = "simd")]
pub(crate) fn residual_rows_inplace<F: Float, const CENTER: bool>(
    x: &mut [F],
    r: &mut [F],
    n: usize,
    eps: f64,
    gamma: Option<&[F]>,
    beta: Option<&[F]>,
) {
    debug_assert_eq!(x.len(), r.len());
    if n == 0 {
        return;
    }
    let len = residual_chunk_rows::<F>(n) * n;
    for (x, r) in x.chunks_mut(len).zip(r.chunks_mut(len)) {
        add_assign(x, r);
        normalize_chunk::<F, CENTER>(r, x, n, eps, gamma, beta);
    }
}

/// Normalizes up to [`BATCH`] rows of `h` into `y`, as [`normalize_rows`] does.
#[inline(always)]
fn normalize_chunk<F: Float, const CENTER: bool>(
    h: &[F],
    y: &mut [F],
    n: usize,
    eps: f64,
    gamma: Option<&[F]>,
    beta: Option<&[F]>,
) {
    let mut stats = [RowStats::nan(); BATCH];
    let stats = &mut stats[..h.len() / n];
    block_stats::<F, CENTER>(h, n, eps, stats);
    for ((y, h), stats) in y
        .chunks_exact_mut(n)
        .zip(h.chunks_exact(n))
        .zip(stats.iter())
    {
        write_row(Some(h), y, &stats.plan, gamma, beta);
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

/// Writes `y_i = plan(x_i) * gamma_i + beta_i` for every element of a row, reading `x_i` from
/// `x`, or from `y` itself (in place) when `x` is `None`.
///
/// All arithmetic is in `f64`, rounded to `F` once per element. The element formula is written
/// once; the match only selects which slices the loop walks, so that each loop is a plain
/// element-wise loop that vectorizes.
#[inline(always)]
fn write_row<F: Float>(
    x: Option<&[F]>,
    y: &mut [F],
    plan: &Plan,
    gamma: Option<&[F]>,
    beta: Option<&[F]>,
) {
    let n = y.len();
    debug_assert!(x.is_none_or(|x| x.len() == n));
    debug_assert!(gamma.is_none_or(|g| g.len() == n));
    debug_assert!(beta.is_none_or(|b| b.len() == n));
    let norm = |x: F| plan.apply(x.wide());
    let scale = |x: F, g: &F| norm(x) * g.wide();
    let shift = |v: f64, b: &F| F::narrow(v + b.wide());
    match (x, gamma, beta) {
        (Some(x), None, None) => y
            .iter_mut()
            .zip(x)
            .for_each(|(y, &x)| *y = F::narrow(norm(x))),
        (None, None, None) => y.iter_mut().for_each(|y| *y = F::narrow(norm(*y))),
        (Some(x), Some(g), None) => y
            .iter_mut()
            .zip(x)
            .zip(g)
            .for_each(|((y, &x), g)| *y = F::narrow(scale(x, g))),
        (None, Some(g), None) => y
            .iter_mut()
            .zip(g)
            .for_each(|(y, g)| *y = F::narrow(scale(*y, g))),
        (Some(x), None, Some(b)) => y
            .iter_mut()
            .zip(x)
            .zip(b)
            .for_each(|((y, &x), b)| *y = shift(norm(x), b)),
        (None, None, Some(b)) => y
            .iter_mut()
            .zip(b)
            .for_each(|(y, b)| *y = shift(norm(*y), b)),
        (Some(x), Some(g), Some(b)) => y
            .iter_mut()
            .zip(x)
            .zip(g)
            .zip(b)
            .for_each(|(((y, &x), g), b)| *y = shift(scale(x, g), b)),
        (None, Some(g), Some(b)) => y
            .iter_mut()
            .zip(g)
            .zip(b)
            .for_each(|((y, g), b)| *y = shift(scale(*y, g), b)),
    }
}
