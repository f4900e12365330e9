//! Row kernels. They see plain slices only; layout handling lives in [`crate::driver`].

mod backward;
mod backward_fast;
mod fast;
mod forward;
mod isa;
mod moments;
mod sum;
mod wide;

pub(crate) use backward::{
    finish_sums, merge_plain, merge_sums, BackwardScratch, ColumnParts, RowPlan,
};
pub(crate) use backward_fast::{BackwardBlock, BlockSums};
pub(crate) use fast::{row_stats_f32, FastStats};
pub(crate) use forward::{
    normalize_rows, normalize_rows_inplace, residual_rows, residual_rows_inplace, rows_moments, Row,
};
pub(crate) use isa::{Isa, Simd};
pub(crate) use moments::{row_stats, RowStats};
pub(crate) use sum::accumulate;
pub(crate) use wide::{DoubleF64, Wide};
