//! Helpers shared by the integration tests. Each test crate uses a subset.
#![allow(dead_code)]

pub mod backward_bounds;
pub mod exact;
pub mod exact_backward;
pub mod exact_rms;
pub mod forward_bounds;
pub mod harness;
pub mod tally;
