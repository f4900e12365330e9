//! Writing a normalized row.

use super::moments::Plan;
use crate::float::Float;

/// Writes `y = plan(x) * gamma + beta` for every `(x, y)` pair of a row.
///
/// The pairs come from two slices (`forward`) or from one slice read and written in place
/// (`forward_inplace`); both go through this one loop, so both give the same bits. All
/// arithmetic is in `f64`, rounded to `F` once per element.
#[inline]
pub(crate) fn normalize_row<'a, F: Float>(
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
