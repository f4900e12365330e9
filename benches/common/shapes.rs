//! The shapes and seeded data shared by `benches/layer_norm.rs` and `examples/bandwidth.rs`,
//! so that both measure the same inputs. Included with `#[path]` by each.
#![allow(dead_code)] // Each includer uses a subset.

use ndarray::{Array, Array1, Array2};
use ndarray_layernorm::{Float, LayerNorm, RmsNorm};
use ndarray_rand::rand_distr::{Distribution, StandardNormal};
use ndarray_rand::RandomExt;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A measured input shape: `rows x cols`, normalized over `cols`.
#[derive(Clone, Copy)]
pub struct Shape {
    pub rows: usize,
    pub cols: usize,
    /// The input is `x.t()` of a `cols x rows` array (column-major).
    pub transposed: bool,
}

pub const fn shape(rows: usize, cols: usize) -> Shape {
    Shape {
        rows,
        cols,
        transposed: false,
    }
}

/// The 4096x768 input as `x.t()` of a 768x4096 array.
pub const TRANSPOSED: Shape = Shape {
    rows: 4096,
    cols: 768,
    transposed: true,
};

/// Every forward shape of the issue.
pub const FORWARD_SHAPES: &[Shape] = &[
    shape(32, 768),
    shape(4096, 768),
    shape(8192, 1024),
    shape(2048, 4096),
    shape(65536, 64),
    shape(256, 65536),
    shape(1_000_000, 5),
    TRANSPOSED,
];

/// The six shapes of the kernel issue: medium, small, short-ish, very short, large and very
/// long rows. RMSNorm and backward are measured on all of them.
pub const ISSUE_SHAPES: &[Shape] = &[
    shape(4096, 768),
    shape(32, 768),
    shape(65536, 64),
    shape(1_000_000, 5),
    shape(8192, 1024),
    shape(256, 65536),
];

/// The RMSNorm forward shapes.
pub const RMS_SHAPES: &[Shape] = ISSUE_SHAPES;

/// The fused residual shapes.
pub const RESIDUAL_SHAPES: &[Shape] = &[shape(32, 768), shape(4096, 768), shape(8192, 1024)];

/// The backward shapes.
pub const BACKWARD_SHAPES: &[Shape] = ISSUE_SHAPES;

impl Shape {
    pub fn name(self) -> String {
        let t = if self.transposed { "T" } else { "" };
        format!("{}x{}{t}", self.rows, self.cols)
    }

    pub fn len(self) -> usize {
        self.rows * self.cols
    }

    /// Seeded standard-normal input of this shape and layout.
    pub fn input<F: Float>(self, seed: u64) -> Array2<F>
    where
        StandardNormal: Distribution<F>,
    {
        if self.transposed {
            // The owned equivalent of `base.t()`: same memory, axes swapped.
            random((self.cols, self.rows), seed).reversed_axes()
        } else {
            random((self.rows, self.cols), seed)
        }
    }
}

/// A seeded standard-normal array.
pub fn random<F: Float>(dim: (usize, usize), seed: u64) -> Array2<F>
where
    StandardNormal: Distribution<F>,
{
    let mut rng = StdRng::seed_from_u64(seed);
    Array::random_using(dim, StandardNormal, &mut rng)
}

/// A seeded standard-normal vector.
pub fn random_param<F: Float>(len: usize, seed: u64) -> Array1<F>
where
    StandardNormal: Distribution<F>,
{
    let mut rng = StdRng::seed_from_u64(seed);
    Array::random_using(len, StandardNormal, &mut rng)
}

/// A layer with seeded random gamma and beta.
pub fn affine<F: Float>(cols: usize) -> LayerNorm<F>
where
    StandardNormal: Distribution<F>,
{
    LayerNorm::<F>::default()
        .with_gamma(random_param(cols, 2))
        .and_then(|ln| ln.with_beta(random_param(cols, 3)))
        .expect("valid parameters")
}

/// An RMSNorm layer with seeded gamma for rows of `cols` elements (epsilon 1e-5).
pub fn rms_affine<F: Float>(cols: usize) -> RmsNorm<F>
where
    StandardNormal: Distribution<F>,
{
    RmsNorm::<F>::default()
        .with_gamma(random_param(cols, 2))
        .expect("valid parameters")
}
