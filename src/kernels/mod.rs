//! Row kernels. They see plain slices only; layout handling lives in [`crate::driver`].

mod backward;
mod forward;
mod moments;
mod sum;
mod wide;

pub(crate) use backward::{backward_row, BackwardScratch, ColumnSums, ParamSums, RowPlan};
pub(crate) use forward::{
    normalize_rows, normalize_rows_inplace, residual_rows, residual_rows_inplace, rows_moments,
};
pub(crate) use moments::RowStats;
pub(crate) use wide::{DoubleF64, Wide};
