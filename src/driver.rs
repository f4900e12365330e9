//! Walks the rows (lanes of the last axis) of an array of any dimension and layout.
//!
//! Kernels see plain slices of whole rows. When every array involved is in standard layout,
//! all rows are handed over at once as one slice; otherwise each row is handed over on its own,
//! as it is where it is contiguous in memory, or else copied in logical order into a scratch
//! buffer that is reused for every row (and copied back when it is written). Every path runs the
//! same kernel on the same values in the same order, so the results are bitwise identical.

use ndarray::{ArrayRef, ArrayView1, Axis, Dimension, Zip};
use num_traits::Zero;

/// The last axis of an array with at least one dimension.
#[inline]
fn last_axis<D: Dimension>(x: &ArrayRef<impl Sized, D>) -> Axis {
    debug_assert!(x.ndim() > 0);
    Axis(x.ndim() - 1)
}

/// Calls `f(rows, slots)` on the rows of `x`, with the matching elements of `per_row` (whose
/// shape is the shape of `x` without its last axis).
pub(crate) fn for_each_row<F, T, D>(
    x: &ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    mut f: impl FnMut(&[F], &mut [T]),
) where
    F: Copy,
    D: Dimension,
{
    if let (Some(xs), Some(slots)) = (x.as_slice(), per_row.as_slice_mut()) {
        return f(xs, slots);
    }
    let mut scratch = Vec::new();
    Zip::from(x.lanes(last_axis(x)))
        .and(per_row)
        .for_each(|row, slot| f(slice_or_copy(row, &mut scratch), std::slice::from_mut(slot)));
}

/// Calls `f(x_rows, y_rows, slots)` on the rows of `x`, the matching rows of `y` (same shape)
/// and the matching elements of `per_row`.
pub(crate) fn for_each_row_pair<F, T, D>(
    x: &ArrayRef<F, D>,
    y: &mut ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    mut f: impl FnMut(&[F], &mut [F], &mut [T]),
) where
    F: Copy + Zero,
    D: Dimension,
{
    debug_assert_eq!(x.shape(), y.shape());
    if let (Some(xs), Some(ys), Some(slots)) =
        (x.as_slice(), y.as_slice_mut(), per_row.as_slice_mut())
    {
        return f(xs, ys, slots);
    }
    let axis = last_axis(x);
    let mut x_scratch = Vec::new();
    let mut y_scratch = vec![F::zero(); x.len_of(axis)];
    Zip::from(x.lanes(axis))
        .and(y.lanes_mut(axis))
        .and(per_row)
        .for_each(|xr, mut yr, slot| {
            let xr = slice_or_copy(xr, &mut x_scratch);
            let slot = std::slice::from_mut(slot);
            match yr.as_slice_mut() {
                Some(yr) => f(xr, yr, slot),
                None => {
                    f(xr, &mut y_scratch, slot);
                    copy_back(&y_scratch, yr);
                }
            }
        });
}

/// Calls `f(rows, slots)` on the rows of `y`, which `f` may overwrite, and the matching elements
/// of `per_row`.
pub(crate) fn for_each_row_mut<F, T, D>(
    y: &mut ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    mut f: impl FnMut(&mut [F], &mut [T]),
) where
    F: Copy,
    D: Dimension,
{
    let axis = last_axis(y);
    if let (Some(ys), Some(slots)) = (y.as_slice_mut(), per_row.as_slice_mut()) {
        return f(ys, slots);
    }
    let mut scratch = Vec::new();
    Zip::from(y.lanes_mut(axis))
        .and(per_row)
        .for_each(|mut row, slot| {
            let slot = std::slice::from_mut(slot);
            match row.as_slice_mut() {
                Some(row) => f(row, slot),
                None => {
                    scratch.clear();
                    scratch.extend(row.iter().copied());
                    f(&mut scratch, slot);
                    copy_back(&scratch, row);
                }
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
    F: Copy + Zero,
    D: Dimension,
{
    debug_assert_eq!(x.shape(), dy.shape());
    debug_assert_eq!(x.shape(), dx.shape());
    let axis = last_axis(x);
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
                copy_back(&dx_scratch, dxr);
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

/// Copies a computed row back into its (non-contiguous) place.
fn copy_back<F: Copy>(src: &[F], mut dst: ndarray::ArrayViewMut1<'_, F>) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s);
}
