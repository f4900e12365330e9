//! Walks the rows (lanes of the last axis) of an array of any dimension and layout.
//!
//! Kernels see plain slices. A row that is contiguous in memory is handed over as it is; any
//! other row (transposed, stepped, reversed) is copied in logical order into one scratch buffer
//! that is reused for every row, and copied back when it is written. Both paths run the same
//! kernel on the same values in the same order, so the results are bitwise identical.

use ndarray::{ArrayRef, ArrayView1, Axis, Dimension, Zip};

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
            let xr = slice_or_copy(xr, &mut x_scratch);
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

/// Calls `f(i, x_row, dy_row, dx_row)` for every row `i` of `x` and the matching rows of `dy`
/// and `dx` (all three of the same shape), in logical row-major order of the leading axes,
/// whatever the memory layout: reductions over rows then run in a fixed order.
pub(crate) fn for_each_row_triple<F, D>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    dx: &mut ArrayRef<F, D>,
    mut f: impl FnMut(usize, &[F], &[F], &mut [F]),
) where
    F: Copy + num_traits::Zero,
    D: Dimension,
{
    debug_assert_eq!(x.shape(), dy.shape());
    debug_assert_eq!(x.shape(), dx.shape());
    let axis = last_axis(&x.raw_dim());
    let n = x.len_of(axis);
    if let (Some(xs), Some(dys), Some(dxs)) = (x.as_slice(), dy.as_slice(), dx.as_slice_mut()) {
        if n > 0 {
            let rows = xs.chunks_exact(n).zip(dys.chunks_exact(n));
            for (i, ((xr, dyr), dxr)) in rows.zip(dxs.chunks_exact_mut(n)).enumerate() {
                f(i, xr, dyr, dxr);
            }
            return;
        }
    }
    let mut x_scratch = Vec::new();
    let mut dy_scratch = Vec::new();
    let mut dx_scratch = vec![F::zero(); n];
    let rows = x.lanes(axis).into_iter().zip(dy.lanes(axis));
    for (i, ((xr, dyr), mut dxr)) in rows.zip(dx.lanes_mut(axis)).enumerate() {
        let xr = slice_or_copy(xr, &mut x_scratch);
        let dyr = slice_or_copy(dyr, &mut dy_scratch);
        match dxr.as_slice_mut() {
            Some(dxr) => f(i, xr, dyr, dxr),
            None => {
                f(i, xr, dyr, &mut dx_scratch);
                dxr.iter_mut()
                    .zip(&dx_scratch)
                    .for_each(|(dst, &src)| *dst = src);
            }
        }
    }
}

/// The row as a slice: itself where it is contiguous, else a copy in `scratch`.
fn slice_or_copy<'a, F: Copy>(row: ArrayView1<'a, F>, scratch: &'a mut Vec<F>) -> &'a [F] {
    match row.to_slice() {
        Some(s) => s,
        None => {
            scratch.clear();
            scratch.extend(row.iter().copied());
            scratch
        }
    }
}
