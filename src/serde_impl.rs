//! `Serialize` and `Deserialize` for [`LayerNorm`] and [`RmsNorm`] (feature `serde`).
//!
//! # Format
//! A layer is a struct of these fields, always written, in this order; the names are part of
//! the format and stay stable:
//!
//! | field           | type                        | meaning                                   |
//! |-----------------|-----------------------------|-------------------------------------------|
//! | `epsilon`       | `F` (`f32` or `f64`)        | the epsilon, in the layer's own type      |
//! | `trailing_axes` | unsigned integer            | the number of normalized trailing axes    |
//! | `gamma`         | ndarray array or none       | the scale, with its shape                 |
//! | `beta`          | ndarray array or none       | the shift (`LayerNorm` only)              |
//!
//! Arrays use ndarray's own `serde` format (a version `v`, the shape `dim` and the elements
//! `data` in row-major order), so that their shape round-trips. In JSON (with `serde_json`) a
//! `LayerNorm::<f32>::affine_shape(&[2, 2], 1e-5)` is
//!
//! ```text
//! {
//!   "epsilon": 0.00001,
//!   "trailing_axes": 2,
//!   "gamma": {"v": 1, "dim": [2, 2], "data": [1.0, 1.0, 1.0, 1.0]},
//!   "beta": {"v": 1, "dim": [2, 2], "data": [0.0, 0.0, 0.0, 0.0]}
//! }
//! ```
//!
//! and a `RmsNorm::<f64>::default()` is `{"epsilon": 0.00001, "trailing_axes": 1, "gamma": null}`.
//!
//! # Loading validates
//! Reading a layer builds it with the public constructors (`new(epsilon)`, then
//! `with_trailing_axes`, `with_gamma`, `with_beta`), so a document that describes an invalid
//! layer is an error of the deserializer, carrying the [`Error`]'s message, never a layer that
//! fails later: a negative or non-finite epsilon, zero trailing axes, a gamma or beta with
//! another number of axes than `trailing_axes`, or gamma and beta of different shapes. Arrays
//! whose `data` does not fill their `dim` are rejected by ndarray. Unknown fields are rejected
//! (a `beta` in a `RmsNorm` among them), and so are duplicate ones. When reading,
//! `trailing_axes` may be left out (it is then 1), and so may `gamma` and `beta` (none).
//!
//! Floats are written as `F`: with `serde_json`, in the shortest form that reads back to the
//! same value. Reading them back bitwise needs a correctly rounding parser, which `serde_json`
//! is with its `float_roundtrip` feature (without it, it may misread an `f64` by one unit in the
//! last place). JSON has no NaN or infinity: `serde_json` writes them as `null`, so a layer whose
//! gamma or beta holds one writes a document that fails to load, not another layer.

use ndarray::ArrayD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::float::Float;
use crate::layer_norm::LayerNorm;
use crate::rms_norm::RmsNorm;

/// The value of `trailing_axes` when a document leaves it out.
fn one() -> usize {
    1
}

/// A [`LayerNorm`] as it is written: borrowed, no copy of the parameters.
#[derive(Serialize)]
#[serde(rename = "LayerNorm")]
struct LayerNormOut<'a, F> {
    epsilon: F,
    trailing_axes: usize,
    gamma: Option<&'a ArrayD<F>>,
    beta: Option<&'a ArrayD<F>>,
}

/// A [`LayerNorm`] as it is read, not yet validated.
#[derive(Deserialize)]
#[serde(rename = "LayerNorm", deny_unknown_fields)]
struct LayerNormIn<F> {
    epsilon: F,
    #[serde(default = "one")]
    trailing_axes: usize,
    gamma: Option<ArrayD<F>>,
    beta: Option<ArrayD<F>>,
}

/// A [`RmsNorm`] as it is written.
#[derive(Serialize)]
#[serde(rename = "RmsNorm")]
struct RmsNormOut<'a, F> {
    epsilon: F,
    trailing_axes: usize,
    gamma: Option<&'a ArrayD<F>>,
}

/// A [`RmsNorm`] as it is read, not yet validated.
#[derive(Deserialize)]
#[serde(rename = "RmsNorm", deny_unknown_fields)]
struct RmsNormIn<F> {
    epsilon: F,
    #[serde(default = "one")]
    trailing_axes: usize,
    gamma: Option<ArrayD<F>>,
}

impl<F: Float> LayerNormIn<F> {
    /// The layer, built by the public constructors, which check it.
    fn build(self) -> Result<LayerNorm<F>, Error> {
        let mut layer = LayerNorm::new(self.epsilon)?.with_trailing_axes(self.trailing_axes)?;
        if let Some(gamma) = self.gamma {
            layer = layer.with_gamma(gamma)?;
        }
        if let Some(beta) = self.beta {
            layer = layer.with_beta(beta)?;
        }
        Ok(layer)
    }
}

impl<F: Float> RmsNormIn<F> {
    /// The layer, built by the public constructors, which check it.
    fn build(self) -> Result<RmsNorm<F>, Error> {
        let mut layer = RmsNorm::new(self.epsilon)?.with_trailing_axes(self.trailing_axes)?;
        if let Some(gamma) = self.gamma {
            layer = layer.with_gamma(gamma)?;
        }
        Ok(layer)
    }
}

/// Writes the fields `epsilon` (as `F`), `trailing_axes`, `gamma` and `beta`, always and in
/// this order (`null` in JSON where the layer has no gamma or beta). The arrays are in
/// ndarray's own format: a version `v`, the shape `dim` and the elements `data` in row-major
/// order. `LayerNorm::<f32>::affine_shape(&[2, 2], 1e-5)` in JSON:
///
/// ```text
/// {
///   "epsilon": 0.00001,
///   "trailing_axes": 2,
///   "gamma": {"v": 1, "dim": [2, 2], "data": [1.0, 1.0, 1.0, 1.0]},
///   "beta": {"v": 1, "dim": [2, 2], "data": [0.0, 0.0, 0.0, 0.0]}
/// }
/// ```
///
/// Floats are written as `F`; with `serde_json` they read back bitwise when its
/// `float_roundtrip` feature is on. A NaN or an infinity in gamma or beta is written by
/// `serde_json` as `null`, which does not load back.
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<F: Float + Serialize> Serialize for LayerNorm<F> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        LayerNormOut {
            epsilon: self.core.epsilon,
            trailing_axes: self.core.axes,
            gamma: self.core.gamma.as_ref(),
            beta: self.core.beta.as_ref(),
        }
        .serialize(serializer)
    }
}

/// Reads `epsilon`, `trailing_axes` (1 if absent), `gamma` and `beta` (none if absent or
/// `null`), and builds the layer with [`LayerNorm::new`],
/// [`with_trailing_axes`](LayerNorm::with_trailing_axes), [`with_gamma`](LayerNorm::with_gamma)
/// and [`with_beta`](LayerNorm::with_beta): any [`Error`] of theirs, an unknown field or a
/// duplicate one is an error of the deserializer.
///
/// ```text
/// {"epsilon": 0.00001, "trailing_axes": 1, "gamma": {"v": 1, "dim": [3], "data": [1.0, 2.0, 3.0]}}
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de, F: Float + Deserialize<'de>> Deserialize<'de> for LayerNorm<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        LayerNormIn::deserialize(deserializer)?
            .build()
            .map_err(|e| D::Error::custom(format_args!("invalid LayerNorm: {e}")))
    }
}

/// Writes the fields `epsilon` (as `F`), `trailing_axes` and `gamma`, always and in this order
/// (`null` in JSON where the layer has no gamma), gamma in ndarray's own format as for
/// [`LayerNorm`]. `RmsNorm::<f64>::default()` in JSON:
///
/// ```text
/// {"epsilon": 0.00001, "trailing_axes": 1, "gamma": null}
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<F: Float + Serialize> Serialize for RmsNorm<F> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RmsNormOut {
            epsilon: self.core.epsilon,
            trailing_axes: self.core.axes,
            gamma: self.core.gamma.as_ref(),
        }
        .serialize(serializer)
    }
}

/// Reads `epsilon`, `trailing_axes` (1 if absent) and `gamma` (none if absent or `null`), and
/// builds the layer with [`RmsNorm::new`], [`with_trailing_axes`](RmsNorm::with_trailing_axes)
/// and [`with_gamma`](RmsNorm::with_gamma): any [`Error`] of theirs, an unknown field (`beta`
/// among them) or a duplicate one is an error of the deserializer.
///
/// ```text
/// {"epsilon": 1e-6, "trailing_axes": 2, "gamma": {"v": 1, "dim": [1, 2], "data": [0.5, 2.0]}}
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de, F: Float + Deserialize<'de>> Deserialize<'de> for RmsNorm<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RmsNormIn::deserialize(deserializer)?
            .build()
            .map_err(|e| D::Error::custom(format_args!("invalid RmsNorm: {e}")))
    }
}
