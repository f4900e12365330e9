//! Row kernels. They see plain slices only; layout handling lives in [`crate::driver`].

mod backward;
mod forward;
mod moments;
mod sum;

pub(crate) use backward::{backward_row, ColumnSums, ParamSums, ROW_BLOCK};
pub(crate) use forward::normalize_row;
pub(crate) use moments::{row_stats, Plan, RowStats};
