//! Normalizing rows, and computing their moments.
//!
//! Each function here takes a batch of consecutive rows of length `n` and is compiled for
//! several instruction sets (`multiversion`), picked once at run time. Nothing in the
//! arithmetic depends on the instruction set: no fused multiply-add, no reassociation, the same
//! lanes in the same order, so every version returns the same bits.

use multiversion::multiversion;

use super::moments::{row_stats, Plan, RowStats};
use crate::float::Float;

/// Normalizes the consecutive rows of length `n` in `x` into `y`, and calls
/// `record(slot, stats)` with each row's statistics and its element of `slots`.
#[multiversion(targets = "simd")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_rows<F: Float, T>(
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
    for ((x, y), slot) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).zip(slots) {
        let stats = row_stats(x, eps);
        write_row(x.iter().copied().zip(y), &stats.plan, gamma, beta);
        record(slot, &stats);
    }
}

/// Normalizes the consecutive rows of length `n` in `y` in place (see [`normalize_rows`]).
#[multiversion(targets = "simd")]
pub(crate) fn normalize_rows_inplace<F: Float, T>(
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
    for (y, slot) in y.chunks_exact_mut(n).zip(slots) {
        let stats = row_stats(y, eps);
        write_row(y.iter_mut().map(|r| (*r, r)), &stats.plan, gamma, beta);
        record(slot, &stats);
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
    for (x, slot) in x.chunks_exact(n).zip(slots) {
        record(slot, &row_stats(x, 0.0));
    }
}

/// Writes `y = plan(x) * gamma + beta` for every `(x, y)` pair of a row.
///
/// The pairs come from two slices or from one slice read and written in place; both go through
/// this one loop, so both give the same bits. All arithmetic is in `f64`, rounded to `F` once
/// per element.
#[inline(always)]
fn write_row<'a, F: Float>(
    pairs: impl ExactSizeIterator<Item = (F, &'a mut F)>,
    plan: &Plan,
    gamma: Option<&[F]>,
    beta: Option<&[F]>,
) {
    let n = pairs.len();
    debug_assert!(gamma.is_none_or(|g| g.len() == n));
    debug_assert!(beta.is_none_or(|b| b.len() == n));
    match (gamma, beta) {
        (None, None) => pairs.for_each(|(x, y)| *y = F::narrow(plan.apply(x.wide()))),
        (Some(g), None) => pairs
            .zip(g)
            .for_each(|((x, y), g)| *y = F::narrow(plan.apply(x.wide()) * g.wide())),
        (None, Some(b)) => pairs
            .zip(b)
            .for_each(|((x, y), b)| *y = F::narrow(plan.apply(x.wide()) + b.wide())),
        (Some(g), Some(b)) => pairs.zip(g).zip(b).for_each(|(((x, y), g), b)| {
            *y = F::narrow(plan.apply(x.wide()) * g.wide() + b.wide())
        }),
    }
}
