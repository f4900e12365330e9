//! Row kernels. They see plain slices only; layout handling lives in [`crate::driver`].

mod forward;
mod moments;
mod sum;

pub(crate) use forward::normalize_row;
pub(crate) use moments::{row_stats, RowStats};
