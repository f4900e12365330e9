//! Walks the rows (lanes of the last axis) of an array of any dimension and layout.
//!
//! Every array is first seen as a 2-D view of `rows x n` (the leading axes merged, which costs
//! nothing for every layout whose leading axes can be merged: standard, transposed 2-D,
//! stepped, reversed; others are copied once into standard layout). Rows are then handed to the
//! kernels in blocks of consecutive rows, as one contiguous slice: the block itself where it is
//! contiguous in memory, or else a copy gathered in logical order into a scratch buffer that is
//! reused from block to block (and copied back when it is written). The forward passes use
//! blocks of about [`FORWARD_BLOCK_BYTES`] (their rows are independent, so the blocks decide
//! only which thread writes a row); the backward pass and `moments` use blocks of
//! [`ROW_BLOCK`] rows, whose per-block results are reduced in block order. Every path runs the
//! same kernel on the same values in the same order, so the results are bitwise identical for
//! every layout and every number of threads (see [`crate::parallel`]).

use std::mem::MaybeUninit;

use ndarray::{
    Array, ArrayBase, ArrayRef, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, CowArray,
    Dimension, Ix2, IxDyn, RawData,
};
use num_traits::Zero;

use crate::float::Float;
use crate::parallel;

/// Rows per block of the backward pass and of `moments`: the unit of work for a thread, and
/// the unit of the fixed-order reduction of the parameter gradients.
pub(crate) const ROW_BLOCK: usize = 64;

/// Bytes of input per block of the forward passes, whose rows are independent of each other:
/// enough that handing a block to a thread costs little next to its work (short rows), small
/// enough that a gathered copy of a non-contiguous block stays in the L2 cache and that there
/// are many blocks to share between threads.
const FORWARD_BLOCK_BYTES: usize = 1 << 16;

/// Rows per block of the forward passes, for rows of `n` elements of `F`: at least one. The
/// blocks decide only which thread normalizes a row, never its bits.
pub(crate) fn forward_block_rows<F>(n: usize) -> usize {
    (FORWARD_BLOCK_BYTES / (n * std::mem::size_of::<F>()).max(1)).max(1)
}

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

/// `x` as a `rows x n` view, its last `axes` axes merged into the row and the others into the
/// rows, if that needs no copy.
fn rows_view<F, D: Dimension>(x: &ArrayRef<F, D>, axes: usize) -> Option<ArrayView2<'_, F>> {
    if x.is_empty() {
        return ArrayView2::from_shape(rows_by_len(x.shape(), axes), &[]).ok();
    }
    merge_into_rows(x.view().into_dyn(), axes)
}

/// `x` as `rows x n`: a view where its axes merge, else a copy in standard layout.
fn rows_of<F: Clone, D: Dimension>(x: &ArrayRef<F, D>, axes: usize) -> CowArray<'_, F, Ix2> {
    match rows_view(x, axes) {
        Some(v) => CowArray::from(v),
        None => CowArray::from(
            x.as_standard_layout()
                .into_owned()
                .into_shape_with_order(rows_by_len(x.shape(), axes))
                .expect("a standard-layout array takes any shape of its size"),
        ),
    }
}

/// The mutable counterpart of [`rows_view`].
fn rows_view_mut<F, D: Dimension>(
    x: &mut ArrayRef<F, D>,
    axes: usize,
) -> Option<ArrayViewMut2<'_, F>> {
    if x.is_empty() {
        return ArrayViewMut2::from_shape(rows_by_len(x.shape(), axes), &mut []).ok();
    }
    merge_into_rows(x.view_mut().into_dyn(), axes)
}

/// A non-empty view with its last `axes` axes merged into one (the row) and the others into
/// another (the rows), both in logical row-major order, or `None` if the strides do not allow
/// it (`1 <= axes <= ndim`).
fn merge_into_rows<S: RawData>(
    mut v: ArrayBase<S, IxDyn>,
    axes: usize,
) -> Option<ArrayBase<S, Ix2>> {
    let nd = v.ndim();
    debug_assert!(axes >= 1 && axes <= nd && !v.is_empty());
    // The normalized axes, each merged into the next (faster) one, end in the last axis; the
    // axes they leave behind have length 1 and are dropped.
    for k in nd - axes..nd - 1 {
        if !v.merge_axes(Axis(k), Axis(k + 1)) {
            return None;
        }
    }
    for k in (nd - axes..nd - 1).rev() {
        v.index_axis_inplace(Axis(k), 0);
    }
    merge_leading_axes(v)
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

/// `(rows, n)` for an array of the given shape (at least `axes` axes) whose last `axes` axes
/// are normalized.
pub(crate) fn rows_by_len(shape: &[usize], axes: usize) -> (usize, usize) {
    let (leading, row) = shape.split_at(shape.len() - axes);
    (leading.iter().product(), row.iter().product())
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

/// Calls `f(rows, slots)` on blocks of rows of `x` (its last `axes` axes merged into the row),
/// with the matching elements of `per_row` (one per row, in standard layout).
pub(crate) fn for_each_row<F, T, D, E>(
    x: &ArrayRef<F, D>,
    axes: usize,
    per_row: &mut ArrayRef<T, E>,
    f: impl Fn(&[F], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
    E: Dimension,
{
    let x2 = rows_of(x, axes);
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
pub(crate) fn for_each_row_pair<F, T, D, E>(
    x: &ArrayRef<F, D>,
    y: &mut ArrayRef<F, D>,
    axes: usize,
    per_row: &mut ArrayRef<T, E>,
    f: impl Fn(&[F], &mut [F], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
    E: Dimension,
{
    debug_assert_eq!(x.shape(), y.shape());
    match rows_view_mut(y, axes) {
        Some(y2) => pair_blocks(x, y2, axes, per_row, gathered_out, f),
        None => {
            // An output whose axes cannot be merged: compute into standard layout first.
            let mut tmp = y.as_standard_layout().into_owned();
            for_each_row_pair(x, &mut tmp, axes, per_row, f);
            y.assign(&tmp);
        }
    }
}

/// A new array of the shape of `x` (standard layout), written by `f(x_rows, y_rows, slots)` on
/// blocks of rows as [`for_each_row_pair`] does, without being zeroed first.
///
/// # Safety
/// `f` must write every element of each `y_rows` it is given.
#[allow(unsafe_code)]
pub(crate) unsafe fn fresh_row_pair<F, T, D, E>(
    x: &ArrayRef<F, D>,
    axes: usize,
    per_row: &mut ArrayRef<T, E>,
    f: impl Fn(&[F], &mut [MaybeUninit<F>], &mut [T]) + Sync,
) -> Array<F, D>
where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
    E: Dimension,
{
    let mut y = Array::uninit(x.raw_dim());
    let y2 = rows_view_mut(&mut y, axes).expect("a new array is in standard layout");
    pair_blocks(x, y2, axes, per_row, contiguous_out, f);
    // SAFETY: the blocks of `y2` cover `y`, and `f` writes every element of each block.
    unsafe { y.assume_init() }
}

/// Hands an output block to `g` as a contiguous slice, gathered into `scratch` if it is not.
fn gathered_out<F: Copy + Zero>(
    yb: ArrayViewMut2<'_, F>,
    scratch: &mut Vec<F>,
    g: &mut dyn FnMut(&mut [F]),
) {
    with_block_mut(yb, scratch, g)
}

/// Hands a block of a new (standard-layout) array to `g` as the slice it is.
fn contiguous_out<F, Y>(yb: ArrayViewMut2<'_, Y>, _: &mut Vec<F>, g: &mut dyn FnMut(&mut [Y])) {
    g(yb.into_slice().expect("a new array is in standard layout"))
}

/// The walk of [`for_each_row_pair`] and [`fresh_row_pair`] over the rows of `x` and those of
/// an output `y2` (`rows x n`), which `with_out` hands to its callback as a contiguous slice.
fn pair_blocks<F, Y, T, D, E>(
    x: &ArrayRef<F, D>,
    mut y2: ArrayViewMut2<'_, Y>,
    axes: usize,
    per_row: &mut ArrayRef<T, E>,
    with_out: impl Fn(ArrayViewMut2<'_, Y>, &mut Vec<F>, &mut dyn FnMut(&mut [Y])) + Sync,
    f: impl Fn(&[F], &mut [Y], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    Y: Send,
    T: Send,
    D: Dimension,
    E: Dimension,
{
    let block = forward_block_rows::<F>(rows_by_len(x.shape(), axes).1);
    let x2 = rows_of(x, axes);
    let mut slots = slots_view(per_row);
    parallel::for_each_block(
        x2.len(),
        x2.axis_chunks_iter(Axis(0), block)
            .zip(y2.axis_chunks_iter_mut(Axis(0), block))
            .zip(slots.axis_chunks_iter_mut(Axis(0), block)),
        |scratch: &mut Scratch<F>, ((xb, yb), mut sb): BlockPair<'_, F, Y, T>| {
            let slots = sb.as_slice_mut().expect("standard layout");
            let xs = block_slice(xb, &mut scratch.a);
            with_out(yb, &mut scratch.out, &mut |ys| f(xs, ys, slots));
        },
    );
}

type BlockPair<'a, F, Y, T> = (
    (ArrayView2<'a, F>, ArrayViewMut2<'a, Y>),
    ArrayViewMut1<'a, T>,
);

/// Calls `f(x_rows, r_rows, h_rows, y_rows, slots)` on blocks of rows of two inputs `x` and
/// `r` and two outputs `h` and `y` (all four of the same shape), with the matching elements of
/// `per_row`.
pub(crate) fn for_each_row_quad<F, T, D, E>(
    (x, r): (&ArrayRef<F, D>, &ArrayRef<F, D>),
    (h, y): (&mut ArrayRef<F, D>, &mut ArrayRef<F, D>),
    axes: usize,
    per_row: &mut ArrayRef<T, E>,
    f: impl Fn(&[F], &[F], &mut [F], &mut [F], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
    E: Dimension,
{
    let block = forward_block_rows::<F>(rows_by_len(x.shape(), axes).1);
    debug_assert!(x.shape() == r.shape() && x.shape() == h.shape() && x.shape() == y.shape());
    let (x2, r2) = (rows_of(x, axes), rows_of(r, axes));
    let mut h2 = rows_view_mut(h, axes).expect("h is created in standard layout");
    let mut y2 = rows_view_mut(y, axes).expect("y is created in standard layout");
    let mut slots = slots_view(per_row);
    parallel::for_each_block(
        x2.len(),
        x2.axis_chunks_iter(Axis(0), block)
            .zip(r2.axis_chunks_iter(Axis(0), block))
            .zip(h2.axis_chunks_iter_mut(Axis(0), block))
            .zip(y2.axis_chunks_iter_mut(Axis(0), block))
            .zip(slots.axis_chunks_iter_mut(Axis(0), block)),
        |scratch: &mut Scratch<F>, ((((xb, rb), mut hb), mut yb), mut sb): BlockQuad<'_, F, T>| {
            let slots = sb.as_slice_mut().expect("standard layout");
            let hs = hb.as_slice_mut().expect("h is created in standard layout");
            let ys = yb.as_slice_mut().expect("y is created in standard layout");
            let xs = block_slice(xb, &mut scratch.a);
            let rs = block_slice(rb, &mut scratch.b);
            f(xs, rs, hs, ys, slots)
        },
    );
}

type BlockQuad<'a, F, T> = (
    (
        ((ArrayView2<'a, F>, ArrayView2<'a, F>), ArrayViewMut2<'a, F>),
        ArrayViewMut2<'a, F>,
    ),
    ArrayViewMut1<'a, T>,
);

/// Calls `f(rows, slots)` on blocks of rows of `y`, which `f` may overwrite, and the matching
/// elements of `per_row`.
pub(crate) fn for_each_row_mut<F, T, D, E>(
    y: &mut ArrayRef<F, D>,
    axes: usize,
    per_row: &mut ArrayRef<T, E>,
    f: impl Fn(&mut [F], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
    E: Dimension,
{
    let block = forward_block_rows::<F>(rows_by_len(y.shape(), axes).1);
    if rows_view_mut(y, axes).is_none() {
        let mut tmp = y.as_standard_layout().into_owned();
        for_each_row_mut(&mut tmp, axes, per_row, f);
        return y.assign(&tmp);
    }
    let mut y2 = rows_view_mut(y, axes).expect("checked above");
    let mut slots = slots_view(per_row);
    parallel::for_each_block(
        y2.len(),
        y2.axis_chunks_iter_mut(Axis(0), block)
            .zip(slots.axis_chunks_iter_mut(Axis(0), block)),
        |scratch: &mut Scratch<F>, (yb, mut sb): (ArrayViewMut2<F>, ArrayViewMut1<T>)| {
            let slots = sb.as_slice_mut().expect("standard layout");
            with_block_mut(yb, &mut scratch.out, |ys| f(ys, slots));
        },
    );
}

/// Calls `f(x_rows, r_rows, slots)` on blocks of rows of `x` and `r` (same shape), both of
/// which `f` may overwrite, and the matching elements of `per_row`.
pub(crate) fn for_each_row_mut_pair<F, T, D, E>(
    x: &mut ArrayRef<F, D>,
    r: &mut ArrayRef<F, D>,
    axes: usize,
    per_row: &mut ArrayRef<T, E>,
    f: impl Fn(&mut [F], &mut [F], &mut [T]) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    T: Send,
    D: Dimension,
    E: Dimension,
{
    let block = forward_block_rows::<F>(rows_by_len(x.shape(), axes).1);
    debug_assert_eq!(x.shape(), r.shape());
    if rows_view_mut(x, axes).is_none() || rows_view_mut(r, axes).is_none() {
        let mut xt = x.as_standard_layout().into_owned();
        let mut rt = r.as_standard_layout().into_owned();
        for_each_row_mut_pair(&mut xt, &mut rt, axes, per_row, f);
        x.assign(&xt);
        return r.assign(&rt);
    }
    let mut x2 = rows_view_mut(x, axes).expect("checked above");
    let mut r2 = rows_view_mut(r, axes).expect("checked above");
    let mut slots = slots_view(per_row);
    parallel::for_each_block(
        x2.len(),
        x2.axis_chunks_iter_mut(Axis(0), block)
            .zip(r2.axis_chunks_iter_mut(Axis(0), block))
            .zip(slots.axis_chunks_iter_mut(Axis(0), block)),
        |scratch: &mut Scratch<F>, ((xb, rb), mut sb): BlockMutPair<'_, F, T>| {
            let slots = sb.as_slice_mut().expect("standard layout");
            let Scratch { a, out, .. } = scratch;
            with_block_mut(xb, out, |xs| with_block_mut(rb, a, |rs| f(xs, rs, slots)));
        },
    );
}

type BlockMutPair<'a, F, T> = (
    (ArrayViewMut2<'a, F>, ArrayViewMut2<'a, F>),
    ArrayViewMut1<'a, T>,
);

/// Calls `f(first_row, x_rows, dy_rows, dx_rows, part, state)` on blocks of [`ROW_BLOCK`] rows
/// of `x` and the matching rows of `dy` and `dx` (all three of the same shape), whatever the
/// layout or the number of threads. `dx` must be in standard layout. Block `b` also gets
/// `parts[b * w..b * w + width]` with `w = max(width, 1)` (`parts` holds `w` values per
/// block), where it
/// leaves its per-block results for the caller to reduce in block order, and `state`, scratch
/// space of the thread that runs it (`T::default()` once per thread).
pub(crate) fn fold_row_blocks<F, Y, T, D>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    dx: &mut ArrayRef<Y, D>,
    axes: usize,
    (parts, width): (&mut [f64], usize),
    f: impl Fn(usize, &[F], &[F], &mut [Y], &mut [f64], &mut T) + Sync,
) where
    F: Copy + Zero + Send + Sync,
    Y: Send,
    T: Default + Send,
    D: Dimension,
{
    let (x2, dy2) = (rows_of(x, axes), rows_of(dy, axes));
    let mut dx2 = rows_view_mut(dx, axes).expect("dx is created in standard layout");
    debug_assert!(parts.len() >= x2.nrows().div_ceil(ROW_BLOCK) * width.max(1));
    // `chunks_mut` needs a nonzero size: with `width == 0` every block gets an empty slice.
    let chunks = parts.chunks_mut(width.max(1)).map(|c| &mut c[..width]);
    parallel::map_blocks_in_order(
        x2.len(),
        x2.axis_chunks_iter(Axis(0), ROW_BLOCK)
            .zip(dy2.axis_chunks_iter(Axis(0), ROW_BLOCK))
            .zip(dx2.axis_chunks_iter_mut(Axis(0), ROW_BLOCK))
            .zip(chunks)
            .enumerate(),
        |(scratch, state): &mut (Scratch<F>, T),
         (b, (((xb, dyb), mut dxb), part)): BlockTriple<'_, F, Y>| {
            let xs = block_slice(xb, &mut scratch.a);
            let dys = block_slice(dyb, &mut scratch.b);
            let dxs = dxb
                .as_slice_mut()
                .expect("dx is created in standard layout");
            f(b * ROW_BLOCK, xs, dys, dxs, part, state)
        },
        |()| (),
    );
}

type BlockTriple<'a, F, Y> = (
    usize,
    (
        ((ArrayView2<'a, F>, ArrayView2<'a, F>), ArrayViewMut2<'a, Y>),
        &'a mut [f64],
    ),
);

/// The compensated sums `hi + lo` of the given columns of the rows of `x` (its last `axes` axes
/// merged into the row), over the rows in logical order: one TwoSum accumulation per column,
/// whatever the layout.
pub(crate) fn exact_column_sums<F, D>(
    x: &ArrayRef<F, D>,
    axes: usize,
    columns: &[usize],
) -> Vec<(f64, f64)>
where
    F: Float,
    D: Dimension,
{
    let x2 = rows_of(x, axes);
    let mut sums = vec![(0.0, 0.0); columns.len()];
    for row in x2.rows() {
        for ((hi, lo), &j) in sums.iter_mut().zip(columns) {
            crate::kernels::accumulate(hi, lo, row[j].wide());
        }
    }
    sums
}
