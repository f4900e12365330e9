//! Runs blocks of rows on the calling thread or, with the `rayon` feature, on rayon's pool.
//!
//! This is the only file with `cfg(feature = "rayon")`. The blocks are the same either way, and
//! so is every value computed from a block; results that are reduced over blocks (the parameter
//! gradients of the backward pass) are reduced in block order. So the feature, the size of the
//! input and the number of threads change the speed, never the bits of a result.

use crate::driver::Scratch;

/// Inputs with fewer elements than this run on the calling thread, with or without the `rayon`
/// feature: below it, handing work to other threads costs more than it saves.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Blocks handed to the pool at a time; bounds the memory held by block results waiting to be
/// reduced in order.
#[cfg(feature = "rayon")]
const WAVE: usize = 64;

/// Calls `f(scratch, block)` for every block.
pub(crate) fn for_each_block<F, B>(
    len: usize,
    blocks: impl Iterator<Item = B>,
    f: impl Fn(&mut Scratch<F>, B) + Sync,
) where
    F: Send,
    B: Send,
{
    map_blocks_in_order(len, blocks, f, |()| ());
}

/// Calls `f(scratch, block)` for every block and `reduce` with the results, in block order.
/// `scratch` is per-thread state (`S::default()` once per thread, reused from block to block).
pub(crate) fn map_blocks_in_order<S, B, R>(
    len: usize,
    blocks: impl Iterator<Item = B>,
    f: impl Fn(&mut S, B) -> R + Sync,
    mut reduce: impl FnMut(R),
) where
    S: Default + Send,
    B: Send,
    R: Send,
{
    #[cfg(feature = "rayon")]
    if len >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        let mut blocks = blocks.peekable();
        while blocks.peek().is_some() {
            let wave: Vec<B> = blocks.by_ref().take(WAVE).collect();
            let results: Vec<R> = wave
                .into_par_iter()
                .with_max_len(1)
                .map_init(S::default, &f)
                .collect();
            results.into_iter().for_each(&mut reduce);
        }
        return;
    }
    let _ = len;
    let mut scratch = S::default();
    for block in blocks {
        reduce(f(&mut scratch, block));
    }
}
