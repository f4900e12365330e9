//! Accurate, validated layer normalization for [`ndarray`].
//!
//! [`LayerNorm`] normalizes every lane of the last axis of an array of any dimension and layout:
//!
//! ```text
//! y = (x - mean) / sqrt(var + eps) * gamma + beta
//! ```
//!
//! with the mean and the biased variance taken over the last axis, `eps` (default `1e-5`) and
//! optional `gamma` (scale) and `beta` (shift) of the length of that axis. [`RmsNorm`] is the
//! same without the centring and without beta, `y = x / sqrt(mean(x^2) + eps) * gamma`.
//!
//! Both layers can normalize over the last `k` axes taken together
//! ([`LayerNorm::with_trailing_axes`], PyTorch's `normalized_shape`, ONNX's `axis`), fuse the
//! residual add of a transformer block into one pass ([`LayerNorm::forward_residual`],
//! [`LayerNorm::forward_residual_inplace`]), and have backward passes.
//!
//! ```
//! use ndarray::{Array, Array3};
//! use ndarray_layernorm::{LayerNorm, RmsNorm};
//! # fn main() -> Result<(), ndarray_layernorm::Error> {
//! // 2 sequences of 3 tokens with 4 features, and a residual stream of the same shape.
//! let x: Array3<f64> = Array::linspace(-1.0, 1.0, 24).into_shape_with_order((2, 3, 4)).unwrap();
//! let mut stream: Array3<f64> = Array::ones((2, 3, 4));
//!
//! // RMSNorm over the features: y = x / sqrt(mean(x^2) + eps) * gamma.
//! let rms = RmsNorm::affine(4, 1e-6)?;
//! let y = rms.forward(&x)?;
//!
//! // Add & norm in one pass: the stream becomes x + stream, x becomes its normalization.
//! let mut h = x.clone();
//! rms.forward_residual_inplace(&mut h, &mut stream)?;
//! assert_eq!(h, rms.forward(&stream)?);
//!
//! // LayerNorm over the last two axes (PyTorch's normalized_shape = [3, 4]).
//! let ln = LayerNorm::affine_shape(&[3, 4], 1e-5)?;
//! let (z, stats) = ln.forward_with_stats(&y)?;
//! assert_eq!((z.shape(), stats.mean.shape()), (&[2, 3, 4][..], &[2, 1][..]));
//! # Ok(())
//! # }
//! ```
//!
//! ```
//! use approx::assert_abs_diff_eq;
//! use ndarray::array;
//! use ndarray_layernorm::{moments, LayerNorm};
//! # fn main() -> Result<(), ndarray_layernorm::Error> {
//! let x = array![[0.5, -1.2, 3.3, 0.8, -0.5], [2.0, -0.7, 1.2, -3.5, 0.6]];
//! let y = LayerNorm::default().forward(&x)?;
//! let m = moments(&y)?;
//! for (mean, var) in m.mean.iter().zip(&m.var) {
//!     assert_abs_diff_eq!(*mean, 0.0, epsilon = 1e-15);
//!     assert_abs_diff_eq!(*var, 1.0, epsilon = 1e-5);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Accuracy
//! The textbook formula, evaluated so that every sum is exact before it is rounded:
//!
//! 1. `mean`: the compensated sum of the row (eight TwoSum lanes), divided by `n` with one
//!    rounding;
//! 2. `d_i = x_i - mean`, rounded once; `var`: the compensated sum of the `d_i * d_i`, each
//!    rounded once, divided by `n` with one rounding;
//! 3. `y_i = d_i / sqrt(var + eps)`, a true division (multiplying by a reciprocal rounds twice),
//!    then `* gamma + beta`.
//!
//! For `f32` input the same steps run in `f64` and each output is rounded to `f32` once. The
//! one-pass `E[x^2] - E[x]^2` is never used. Measured against exact rational arithmetic (the
//! tests carry that reference), the error of `y` is at most one unit of
//! `f32::EPSILON * max(1, |y|)` for `f32` input, and at most two units of
//! `f64::EPSILON * max(1, |y|)` for `f64` input, on rows with a large offset too: where
//! `|mean| > std`, an `f64` row is also shifted by what the rounding of its mean left out, and
//! normalized by the variance about the exact mean (`rstd` within one ulp there), so that its
//! error does not grow with `|mean| / std`. Rows near the ends of the floating-point range (`1e300`,
//! `1e-300`, subnormals) are rescaled by a power of two on a rare slow path and are as accurate
//! as rows near 1. Results are bitwise identical for every memory layout of the input.
//!
//! [`RmsNorm`] follows the same steps without the mean (a compensated sum of squares, rounded
//! once, and a true division), with the same accuracy targets.
//!
//! # Errors and special values
//! Bad input returns an [`Error`]; nothing panics. Epsilon must be finite and non-negative, gamma
//! and beta must agree in shape with each other and with the normalized axes, and an input
//! needs at least as many axes as the layer normalizes over. Values are not errors: a row with a
//! NaN or an infinity normalizes to NaN (only that row), a constant or one-element row (for
//! RMSNorm, an all-zero row) normalizes to exactly 0 (`0 / 0` is defined as 0, for every epsilon
//! including 0), and an empty axis gives an empty result.
//!
//! # Backward
//! [`LayerNorm::backward`] and [`LayerNorm::backward_with_stats`] return the [`Gradients`] of a
//! loss with respect to the input and, where the layer has them, gamma and beta, in the centred
//! form `dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)`, `g = dy * gamma`,
//! evaluated in twice the precision of the data (double-double for `f64`), so that the
//! gradients stay within a few units (half a unit for `f64`) of the exact ones even where the
//! terms cancel.
//!
//! # Speed
//! Rows are processed in blocks, by kernels compiled for several instruction sets (SSE2, AVX2,
//! AVX-512, ...) and chosen at run time; none of them fuses or reorders an operation, so every
//! instruction set gives the same bits.
//!
//! # Features
//! * `rayon`: blocks of rows run on rayon's pool when the input has at least
//!   [`PARALLEL_MIN_ELEMENTS`] elements. Results are bitwise identical to one thread, including
//!   the parameter gradients, which are reduced over fixed blocks of rows in order.
//! * `serde`: `Serialize` and `Deserialize` for [`LayerNorm`] and [`RmsNorm`]; loading checks
//!   the layer as the constructors do (the format is in the docs of those impls).
//! * `safetensors`: [`LayerNorm`] and [`RmsNorm`] load from and save to safetensors files
//!   (`from_safetensors`, `load_safetensors`, `to_safetensors`, `save_safetensors`), under
//!   PyTorch's tensor names (`{prefix}.weight`, `{prefix}.bias`, or `gamma`/`beta`), from `F16`,
//!   `BF16`, `F32` or `F64` tensors converted to the layer's type; `SafetensorsReader` and
//!   `SafetensorsWriter` handle files of many layers. Every problem with a file is an
//!   [`Error`] naming the tensor, never a panic. The rules are in the docs of those two types.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod backward;
mod driver;
mod error;
mod float;
mod kernels;
mod layer_norm;
mod moments;
mod norm;
mod outputs;
mod parallel;
mod rms_norm;
#[cfg(feature = "safetensors")]
mod safetensors;
#[cfg(feature = "serde")]
mod serde_impl;
mod validate;

#[cfg(feature = "safetensors")]
pub use crate::safetensors::{SafetensorsReader, SafetensorsWriter};
pub use error::{Error, Param};
pub use float::Float;
pub use layer_norm::LayerNorm;
pub use moments::moments;
pub use outputs::{Gradients, Moments, Stats};
pub use parallel::PARALLEL_MIN_ELEMENTS;
pub use rms_norm::RmsNorm;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
