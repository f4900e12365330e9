//! Walks the rows (lanes of the last axis) of an array of any dimension and layout.
//!
//! Every array is first seen as a 2-D view of `rows x n` (the leading axes merged, which costs
//! nothing for every layout whose leading axes can be merged: standard, transposed 2-D,
//! stepped, reversed; others are copied once into standard layout). Rows are then handed to the
//! kernels in blocks of [`ROW_BLOCK`] consecutive rows, as one contiguous slice: the block
//! itself where it is contiguous in memory, or else a copy gathered in logical order into a
//! scratch buffer that is reused from block to block (and copied back when it is written).
//! Every path runs the same kernel on the same values in the same order, so the results are
//! bitwise identical for every layout, and, because the blocks are fixed, for every number of
//! threads (see [`crate::parallel`]).

use ndarray::{
    ArrayBase, ArrayRef, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, CowArray, Dimension, Ix2,
    IxDyn, RawData,
};
use num_traits::Zero;

use crate::parallel;

/// Rows per block: the unit of work for a thread, and the unit of the fixed-order reduction of
/// the parameter gradients.
pub(crate) const ROW_BLOCK: usize = 64;

/// Scratch buffers of one thread, reused from block to block.
pub(crate) struct Scratch<F> {
    a: Vec<F>,
    b: Vec<F>,
    out: Vec<F>,
}

impl<F> Default for Scratch<F> {
    fn default() -> Self {
        Scratch {
            a: Vec::new(),
            b: Vec::new(),
            out: Vec::new(),
        }
    }
}

/// `x` as a `rows x n` view if its leading axes can be merged without a copy.
fn rows_view<F, D: Dimension>(x: &ArrayRef<F, D>) -> Option<ArrayView2<'_, F>> {
    if x.is_empty() {
        return ArrayView2::from_shape(rows_by_len(x.shape()), &[]).ok();
    }
    merge_leading_axes(x.view().into_dyn())
}

/// `x` as `rows x n`: a view where its leading axes merge, else a copy in standard layout.
fn rows_of<F: Clone, D: Dimension>(x: &ArrayRef<F, D>) -> CowArray<'_, F, Ix2> {
    match rows_view(x) {
        Some(v) => CowArray::from(v),
        None => CowArray::from(
            x.as_standard_layout()
                .into_owned()
                .into_shape_with_order(rows_by_len(x.shape()))
                .expect("a standard-layout array takes any shape of its size"),
        ),
    }
}

/// The mutable counterpart of [`rows_view`].
fn rows_view_mut<F, D: Dimension>(x: &mut ArrayRef<F, D>) -> Option<ArrayViewMut2<'_, F>> {
    if x.is_empty() {
        return ArrayViewMut2::from_shape(rows_by_len(x.shape()), &mut []).ok();
    }
    merge_leading_axes(x.view_mut().into_dyn())
}

/// A non-empty view (of at least one axis) with its leading axes merged into one, in logical
/// row-major order, or `None` if their strides do not allow it.
fn merge_leading_axes<S: RawData>(mut v: ArrayBase<S, IxDyn>) -> Option<ArrayBase<S, Ix2>> {
    let nd = v.ndim();
    debug_assert!(nd > 0 && !v.is_empty());
    if nd == 1 {
        v.insert_axis_inplace(Axis(0));
    }
    for k in 0..nd.saturating_sub(2) {
        if !v.merge_axes(Axis(k), Axis(k + 1)) && v.len_of(Axis(k)) > 1 {
            return None;
        }
    }
    while v.ndim() > 2 {
        v.index_axis_inplace(Axis(0), 0);
    }
    v.into_dimensionality::<Ix2>().ok()
}

/// `(rows, n)` for an array of the given shape (at least one axis).
fn rows_by_len(shape: &[usize]) -> (usize, usize) {
    match shape.split_last() {
        Some((&n, leading)) => (leading.iter().product(), n),
        None => (1, 1),
    }
}

/// The per-row array as a 1-D view (it is always created in standard layout).
fn slots_view<T, E: Dimension>(per_row: &mut ArrayRef<T, E>) -> ArrayViewMut1<'_, T> {
    let len = per_row.len();
    per_row
        .view_mut()
        .into_shape_with_order(len)
        .expect("per-row arrays are created in standard layout")
}

/// A block as a contiguous slice: itself where possible, else gathered into `scratch`.
fn block_slice<'a, F: Copy + Zero>(block: ArrayView2<'a, F>, scratch: &'a mut Vec<F>) -> &'a [F] {
    match block.to_slice() {
        Some(s) => s,
        None => {
            gather(block, scratch);
            scratch
        }
    }
}

/// Runs `f` on `block` as a contiguous mutable slice, copying through `scratch` if needed.
fn with_block_mut<F: Copy + Zero>(
    mut block: ArrayViewMut2<'_, F>,
    scratch: &mut Vec<F>,
    f: impl FnOnce(&mut [F]),
) {
    if let Some(s) = block.as_slice_mut() {
        return f(s);
    }
    gather(block.view(), scratch);
    f(scratch);
    scatter(scratch, block);
}

/// Whether a block is best walked column by column: its rows are closer in memory than the
/// elements of a row (a transposed input).
fn column_major<F>(block: &ArrayView2<'_, F>) -> bool {
    let s = block.strides();
    s[0].unsigned_abs() < s[1].unsigned_abs()
}

/// Copies a block into `scratch` in standard (row-major) order, reading it in its own memory
/// order so that a transposed input is read a cache line at a time.
fn gather<F: Copy + Zero>(block: ArrayView2<'_, F>, scratch: &mut Vec<F>) {
    let (rows, n) = block.dim();
    scratch.clear();
    if column_major(&block) {
        scratch.resize(rows * n, F::zero());
        for (j, column) in block.columns().into_iter().enumerate() {
            for (dst, &v) in scratch[j..].iter_mut().step_by(n).zip(column) {
                *dst = v;
            }
        }
    } else {
        scratch.extend(block.iter().copied());
    }
}

/// Copies `scratch` (row-major) back into `block`, in the block's own memory order.
fn scatter<F: Copy>(scratch: &[F], mut block: ArrayViewMut2<'_, F>) {
    let n = block.ncols();
    if column_major(&block.view()) {
        for (j, mut column) in block.columns_mut().into_iter().enumerate() {
            for (dst, &v) in column.iter_mut().zip(scratch[j..].iter().step_by(n)) {
                *dst = v;
            }
        }
    } else {
        block.iter_mut().zip(scratch).for_each(|(d, &s)| *d = s);
    }
}

/// Calls `f(rows, slots)` on blocks of rows of `x`, with the matching elements of `per_row`
/// (whose shape is the shape of `x` without its last axis).
pub(crate) fn for_each_row<F, T, D>(
    x: &ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    f: impl Fn(&[F], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
{
    let x2 = rows_of(x);
    let mut slots = slots_view(per_row);
    parallel::for_each_block(
        x2.len(),
        x2.axis_chunks_iter(Axis(0), ROW_BLOCK)
            .zip(slots.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)),
        |scratch: &mut Scratch<F>, (xb, mut sb): (ArrayView2<F>, ArrayViewMut1<T>)| {
            let slots = sb.as_slice_mut().expect("standard layout");
            f(block_slice(xb, &mut scratch.a), slots)
        },
    );
}

/// Calls `f(x_rows, y_rows, slots)` on blocks of rows of `x`, the matching rows of `y` (same
/// shape) and the matching elements of `per_row`.
pub(crate) fn for_each_row_pair<F, T, D>(
    x: &ArrayRef<F, D>,
    y: &mut ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    f: impl Fn(&[F], &mut [F], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
{
    debug_assert_eq!(x.shape(), y.shape());
    if rows_view_mut(y).is_none() {
        // An output whose leading axes cannot be merged: compute into standard layout first.
        let mut tmp = y.as_standard_layout().into_owned();
        for_each_row_pair(x, &mut tmp, per_row, f);
        return y.assign(&tmp);
    }
    let x2 = rows_of(x);
    let mut y2 = rows_view_mut(y).expect("checked above");
    let mut slots = slots_view(per_row);
    parallel::for_each_block(
        x2.len(),
        x2.axis_chunks_iter(Axis(0), ROW_BLOCK)
            .zip(y2.axis_chunks_iter_mut(Axis(0), ROW_BLOCK))
            .zip(slots.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)),
        |scratch: &mut Scratch<F>, ((xb, yb), mut sb): BlockPair<'_, F, T>| {
            let slots = sb.as_slice_mut().expect("standard layout");
            let xs = block_slice(xb, &mut scratch.a);
            with_block_mut(yb, &mut scratch.out, |ys| f(xs, ys, slots));
        },
    );
}

type BlockPair<'a, F, T> = (
    (ArrayView2<'a, F>, ArrayViewMut2<'a, F>),
    ArrayViewMut1<'a, T>,
);

/// Calls `f(rows, slots)` on blocks of rows of `y`, which `f` may overwrite, and the matching
/// elements of `per_row`.
pub(crate) fn for_each_row_mut<F, T, D>(
    y: &mut ArrayRef<F, D>,
    per_row: &mut ArrayRef<T, D::Smaller>,
    f: impl Fn(&mut [F], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
{
    if rows_view_mut(y).is_none() {
        let mut tmp = y.as_standard_layout().into_owned();
        for_each_row_mut(&mut tmp, per_row, f);
        return y.assign(&tmp);
    }
    let mut y2 = rows_view_mut(y).expect("checked above");
    let mut slots = slots_view(per_row);
    parallel::for_each_block(
        y2.len(),
        y2.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)
            .zip(slots.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)),
        |scratch: &mut Scratch<F>, (yb, mut sb): (ArrayViewMut2<F>, ArrayViewMut1<T>)| {
            let slots = sb.as_slice_mut().expect("standard layout");
            with_block_mut(yb, &mut scratch.out, |ys| f(ys, slots));
        },
    );
}

/// Calls `f(first_row, x_rows, dy_rows, dx_rows)` on blocks of [`ROW_BLOCK`] rows of `x` and
/// the matching rows of `dy` and `dx` (all three of the same shape), and returns the results
/// in block order, whatever the layout or the number of threads. `dx` must be in standard
/// layout. `reduce` receives the results in block order.
pub(crate) fn fold_row_blocks<F, R, D>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    dx: &mut ArrayRef<F, D>,
    f: impl Fn(usize, &[F], &[F], &mut [F]) -> R + Sync,
    reduce: impl FnMut(R),
) where
    F: Copy + Zero + Send + Sync,
    R: Send,
    D: Dimension,
{
    let (x2, dy2) = (rows_of(x), rows_of(dy));
    let mut dx2 = rows_view_mut(dx).expect("dx is created in standard layout");
    parallel::map_blocks_in_order(
        x2.len(),
        x2.axis_chunks_iter(Axis(0), ROW_BLOCK)
            .zip(dy2.axis_chunks_iter(Axis(0), ROW_BLOCK))
            .zip(dx2.axis_chunks_iter_mut(Axis(0), ROW_BLOCK))
            .enumerate(),
        |scratch: &mut Scratch<F>, (b, ((xb, dyb), mut dxb)): BlockTriple<'_, F>| {
            let xs = block_slice(xb, &mut scratch.a);
            let dys = block_slice(dyb, &mut scratch.b);
            let dxs = dxb
                .as_slice_mut()
                .expect("dx is created in standard layout");
            f(b * ROW_BLOCK, xs, dys, dxs)
        },
        reduce,
    );
}

type BlockTriple<'a, F> = (
    usize,
    ((ArrayView2<'a, F>, ArrayView2<'a, F>), ArrayViewMut2<'a, F>),
);
