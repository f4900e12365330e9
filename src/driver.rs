//! Walks the rows (lanes of the last axis) of an array of any dimension and layout.
//!
//! Kernels see plain slices. A row that is contiguous in memory is handed over as it is; any
//! other row (transposed, stepped, reversed) is copied in logical order into one scratch buffer
//! that is reused for every row, and copied back when it is written. Both paths run the same
//! kernel on the same values in the same order, so the results are bitwise identical.

use ndarray::{ArrayRef, Axis, Dimension, Zip};

/// The last axis of an array with at least one dimension.
#[inline]
pub(crate) fn last_axis<D: Dimension>(dim: &D) -> Axis {
    debug_assert!(dim.ndim() > 0);
    Axis(dim.ndim() - 1)
}

/// Calls `f(row, slot)` for every row of `x` and the matching element of `per_row`, whose shape
/// is the shape of `x` without its last axis.
pub(crate) fn for_each_row<F, T, D>(
    x: &ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    mut f: impl FnMut(&[F], &mut T),
) where
    F: Copy,
    D: Dimension,
{
    let axis = last_axis(&x.raw_dim());
    let mut scratch = Vec::new();
    Zip::from(x.lanes(axis))
        .and(per_row)
        .for_each(|row, slot| match row.as_slice() {
            Some(row) => f(row, slot),
            None => {
                scratch.clear();
                scratch.extend(row.iter().copied());
                f(&scratch, slot)
            }
        });
}

/// Calls `f(x_row, y_row, slot)` for every row of `x`, the matching row of `y` (same shape) and
/// the matching element of `per_row`.
pub(crate) fn for_each_row_pair<F, T, D>(
    x: &ArrayRef<F, D>,
    y: &mut ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    mut f: impl FnMut(&[F], &mut [F], &mut T),
) where
    F: Copy + num_traits::Zero,
    D: Dimension,
{
    debug_assert_eq!(x.shape(), y.shape());
    let axis = last_axis(&x.raw_dim());
    let n = x.len_of(axis);
    // The common case, both arrays in standard layout: rows are consecutive chunks.
    if let (Some(xs), Some(ys), Some(slots)) =
        (x.as_slice(), y.as_slice_mut(), per_row.as_slice_mut())
    {
        if n > 0 {
            for ((xr, yr), slot) in xs.chunks_exact(n).zip(ys.chunks_exact_mut(n)).zip(slots) {
                f(xr, yr, slot);
            }
            return;
        }
    }
    let mut x_scratch = Vec::new();
    let mut y_scratch = vec![F::zero(); n];
    Zip::from(x.lanes(axis))
        .and(y.lanes_mut(axis))
        .and(per_row)
        .for_each(|xr, mut yr, slot| {
            let xr = match xr.to_slice() {
                Some(s) => s,
                None => {
                    x_scratch.clear();
                    x_scratch.extend(xr.iter().copied());
                    &x_scratch[..]
                }
            };
            match yr.as_slice_mut() {
                Some(yr) => f(xr, yr, slot),
                None => {
                    f(xr, &mut y_scratch, slot);
                    yr.iter_mut()
                        .zip(&y_scratch)
                        .for_each(|(dst, &src)| *dst = src);
                }
            }
        });
}

/// Calls `f(row, slot)` for every row of `y`, which `f` may overwrite, and the matching element
/// of `per_row`.
pub(crate) fn for_each_row_mut<F, T, D>(
    y: &mut ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    mut f: impl FnMut(&mut [F], &mut T),
) where
    F: Copy,
    D: Dimension,
{
    let axis = last_axis(&y.raw_dim());
    let mut scratch = Vec::new();
    Zip::from(y.lanes_mut(axis))
        .and(per_row)
        .for_each(|mut row, slot| match row.as_slice_mut() {
            Some(row) => f(row, slot),
            None => {
                scratch.clear();
                scratch.extend(row.iter().copied());
                f(&mut scratch, slot);
                row.iter_mut()
                    .zip(&scratch)
                    .for_each(|(dst, &src)| *dst = src);
            }
        });
}
