//! Conversions, row generators and table formatting shared by the accuracy tests
//! (`tests/accuracy.rs`, `tests/backward_accuracy.rs`) and the accuracy examples
//! (`examples/accuracy.rs`, `examples/backward_accuracy.rs`).
//!
//! The examples include this file with `#[path = "../tests/common/harness.rs"] mod harness;`
//! next to `mod exact;`, as the tests declare both in `tests/common/mod.rs`: it refers to the
//! reference only as `super::exact`, which resolves in both.
//!
//! Every generator draws from the `StdRng` it is given, in a fixed order: the seeded tests and
//! examples depend on that order for their rows.

use std::ops::RangeInclusive;

use ndarray::Array2;
use ndarray_layernorm::Float;
use ndarray_rand::rand_distr::StandardNormal;
use rand::rngs::StdRng;
use rand::Rng;

use super::exact::Format;

// ----------------------------------------------------------------------------------------------
// Conversions.

/// `v` rounded to `F`.
pub fn of<F: Float>(v: f64) -> F {
    F::from_f64(v).expect("representable")
}

/// `v` as `f64` (exact).
pub fn wide<F: Float>(v: F) -> f64 {
    v.to_f64().expect("f32/f64 converts")
}

/// The [`Format`] of `F`.
pub fn format<F: Float>() -> Format {
    if wide(F::epsilon()) == f64::EPSILON {
        Format::F64
    } else {
        Format::F32
    }
}

/// A draw from `N(0, 1)`.
pub fn normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

// ----------------------------------------------------------------------------------------------
// Rows.

/// The distributions of the "random rows" scenarios.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `N(mu, sigma)`, `sigma = 2^U(-8, 8)`, `|mu| <= sigma / 2`.
    Normal,
    /// `U(-s, s)`, `s = 2^U(-8, 8)`.
    Uniform,
    /// Small integers in `-3..=3` (many exact and tied results).
    Integers,
}

/// A row of `n` values of distribution `kind`. The scale is drawn first for every kind,
/// `Integers` included (which ignores it).
pub fn random_row(rng: &mut StdRng, kind: Kind, n: usize) -> Vec<f64> {
    let scale = 2f64.powf(rng.random_range(-8.0..8.0));
    match kind {
        Kind::Normal => {
            let mu = scale * rng.random_range(-0.5..0.5);
            (0..n).map(|_| mu + scale * normal(rng)).collect()
        }
        Kind::Uniform => (0..n)
            .map(|_| scale * rng.random_range(-1.0..1.0))
            .collect(),
        Kind::Integers => integer_row(rng, n),
    }
}

/// Integers in `-3..=3`, without the scale that [`random_row`] draws first.
pub fn integer_row(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| f64::from(rng.random_range(-3..=3)))
        .collect()
}

/// `offset + sigma * N(0, 1)` with a random sign on the offset (one per row).
pub fn offset_row(rng: &mut StdRng, n: usize, offset: f64, sigma: f64) -> Vec<f64> {
    let offset = if rng.random::<bool>() {
        offset
    } else {
        -offset
    };
    (0..n).map(|_| offset + sigma * normal(rng)).collect()
}

/// `scale * N(0, 1)`.
pub fn scaled_row(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| scale * normal(rng)).collect()
}

/// `2^U{-e..=e} * N(0, 1)`, one scale per row.
pub fn scales_row(rng: &mut StdRng, n: usize, e: i32) -> Vec<f64> {
    let scale = 2f64.powi(rng.random_range(-e..=e));
    scaled_row(rng, n, scale)
}

/// Values with random sign and significand whose biased exponent is uniform in `exponents`
/// (for example `0..=0` gives subnormals, the whole range gives mixed exponents).
pub fn bits_row<F: Float>(rng: &mut StdRng, n: usize, exponents: RangeInclusive<u64>) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let sign = u64::from(rng.random::<bool>());
            let e = rng.random_range(exponents.clone());
            match format::<F>() {
                Format::F32 => {
                    let frac = rng.random_range(0..1u64 << 23);
                    f64::from(f32::from_bits(((sign << 31) | (e << 23) | frac) as u32))
                }
                Format::F64 => {
                    let frac = rng.random_range(0..1u64 << 52);
                    f64::from_bits((sign << 63) | (e << 52) | frac)
                }
            }
        })
        .collect()
}

/// `m` rows from `gen`, each rounded to `F`, as a matrix.
pub fn batch<F: Float>(m: usize, n: usize, mut gen: impl FnMut() -> Vec<f64>) -> Array2<F> {
    let mut x = Array2::<F>::zeros((m, n));
    for mut row in x.rows_mut() {
        for (o, v) in row.iter_mut().zip(gen()) {
            *o = of(v);
        }
    }
    x
}

// ----------------------------------------------------------------------------------------------
// The row functions as generators `gen(rng, n)`.

/// A row generator: `gen(rng, n)` is a row of length `n`.
pub type RowGen = Box<dyn Fn(&mut StdRng, usize) -> Vec<f64>>;

/// [`random_row`] of `kind`.
pub fn random(kind: Kind) -> RowGen {
    Box::new(move |rng, n| random_row(rng, kind, n))
}

/// [`integer_row`].
pub fn integers() -> RowGen {
    Box::new(integer_row)
}

/// [`offset_row`].
pub fn offset(offset: f64, sigma: f64) -> RowGen {
    Box::new(move |rng, n| offset_row(rng, n, offset, sigma))
}

/// [`scaled_row`].
pub fn scaled(scale: f64) -> RowGen {
    Box::new(move |rng, n| scaled_row(rng, n, scale))
}

/// [`scales_row`].
pub fn scales(e: i32) -> RowGen {
    Box::new(move |rng, n| scales_row(rng, n, e))
}

/// [`bits_row`].
pub fn bits<F: Float>(exponents: RangeInclusive<u64>) -> RowGen {
    Box::new(move |rng, n| bits_row::<F>(rng, n, exponents.clone()))
}

// ----------------------------------------------------------------------------------------------
// Table cells of the examples.

/// A compact number: fixed for moderate values, scientific otherwise.
pub fn sci(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if (1e-3..1e4).contains(&v) {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// `error / bound`, flagged when the bound is exceeded.
pub fn flag(ratio: f64) -> String {
    if ratio <= 1.0 {
        sci(ratio)
    } else {
        format!("**{}** ✗", sci(ratio))
    }
}
