//! Normalization over the last `k` axes taken together (`with_trailing_axes(k)`), for
//! `LayerNorm` and `RmsNorm`, `f32` and `f64`.
//!
//! The reference for every result here is the same layer over the last axis of the input
//! reshaped (by the test, in logical row-major order) to `rows x n`, `n` the product of the `k`
//! normalized lengths, with gamma and beta flattened the same way. That one-axis path is itself
//! checked against exact arithmetic (LayerNorm: `tests/accuracy.rs` and
//! `tests/backward_accuracy.rs`; RmsNorm: `tests/rms_accuracy.rs`), so bitwise agreement with
//! it is an independent check of the `k`-axis path: the merging of the normalized axes, the
//! order of the elements of a row, the shapes of the statistics and parameter gradients, and
//! layout handling.
//!
//! Also pinned down: the shape of the statistics (leading shape, then `k - 1` ones), every layout
//! (Fortran order, strided leading axes, permuted, stepped and reversed trailing axes, IxDyn,
//! non-standard outputs and in-place views), the backward pass, every error of the trailing-axes
//! API (and that failed calls write nothing), `affine_shape`, and the PyTorch/ONNX mapping.

#[path = "common/support.rs"]
mod support;

use ndarray::{
    arr0, Array, Array1, Array2, Array3, ArrayD, ArrayRef, Axis, Dimension, Ix1, Ix2, Ix3, Ix4,
    IxDyn, ShapeBuilder, Slice,
};
use ndarray_layernorm::{Error, Gradients, LayerNorm, Param, RmsNorm, Stats};

use support::{assert_bitwise_eq, fortran_copy, random_array, random_rows, same_bits, TestFloat};

// ----------------------------------------------------------------------------------------------
// The two layers behind one interface.

/// What the tests need of a layer. `forward_with_stats` returns its statistics as a list
/// (`[mean, rstd]` for LayerNorm, `[rstd]` for RmsNorm), and `backward_with_stats` takes them
/// back in the same form.
trait Norm<F: TestFloat>: Sized + Sync + PartialEq + std::fmt::Debug {
    const HAS_BETA: bool;
    fn new(eps: F) -> Result<Self, Error>;
    fn affine_shape(shape: &[usize], eps: F) -> Result<Self, Error>;
    fn with_trailing_axes(self, axes: usize) -> Result<Self, Error>;
    fn with_gamma<D: Dimension>(self, gamma: Array<F, D>) -> Result<Self, Error>;
    /// Only called when `HAS_BETA`.
    fn with_beta<D: Dimension>(self, beta: Array<F, D>) -> Result<Self, Error>;
    fn trailing_axes(&self) -> usize;
    fn gamma(&self) -> Option<&ArrayD<F>>;
    fn beta(&self) -> Option<&ArrayD<F>>;
    fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error>;
    fn forward_into<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<(), Error>;
    fn forward_inplace<D: Dimension>(&self, x: &mut ArrayRef<F, D>) -> Result<(), Error>;
    #[allow(clippy::type_complexity)]
    fn forward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Vec<Array<F, D::Smaller>>), Error>;
    fn backward<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error>;
    fn backward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        stats: &[Array<F, D::Smaller>],
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error>;
}

impl<F: TestFloat> Norm<F> for LayerNorm<F> {
    const HAS_BETA: bool = true;
    fn new(eps: F) -> Result<Self, Error> {
        LayerNorm::<F>::new(eps)
    }
    fn affine_shape(shape: &[usize], eps: F) -> Result<Self, Error> {
        LayerNorm::<F>::affine_shape(shape, eps)
    }
    fn with_trailing_axes(self, axes: usize) -> Result<Self, Error> {
        LayerNorm::<F>::with_trailing_axes(self, axes)
    }
    fn with_gamma<D: Dimension>(self, gamma: Array<F, D>) -> Result<Self, Error> {
        LayerNorm::<F>::with_gamma(self, gamma)
    }
    fn with_beta<D: Dimension>(self, beta: Array<F, D>) -> Result<Self, Error> {
        LayerNorm::<F>::with_beta(self, beta)
    }
    fn trailing_axes(&self) -> usize {
        LayerNorm::<F>::trailing_axes(self)
    }
    fn gamma(&self) -> Option<&ArrayD<F>> {
        LayerNorm::<F>::gamma(self)
    }
    fn beta(&self) -> Option<&ArrayD<F>> {
        LayerNorm::<F>::beta(self)
    }
    fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error> {
        LayerNorm::<F>::forward(self, x)
    }
    fn forward_into<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        LayerNorm::<F>::forward_into(self, x, out)
    }
    fn forward_inplace<D: Dimension>(&self, x: &mut ArrayRef<F, D>) -> Result<(), Error> {
        LayerNorm::<F>::forward_inplace(self, x)
    }
    fn forward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Vec<Array<F, D::Smaller>>), Error> {
        let (y, stats) = LayerNorm::<F>::forward_with_stats(self, x)?;
        Ok((y, vec![stats.mean, stats.rstd]))
    }
    fn backward<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        LayerNorm::<F>::backward(self, x, dy)
    }
    fn backward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        stats: &[Array<F, D::Smaller>],
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        let stats = Stats {
            mean: stats[0].clone(),
            rstd: stats[1].clone(),
        };
        LayerNorm::<F>::backward_with_stats(self, x, &stats, dy)
    }
}

impl<F: TestFloat> Norm<F> for RmsNorm<F> {
    const HAS_BETA: bool = false;
    fn new(eps: F) -> Result<Self, Error> {
        RmsNorm::<F>::new(eps)
    }
    fn affine_shape(shape: &[usize], eps: F) -> Result<Self, Error> {
        RmsNorm::<F>::affine_shape(shape, eps)
    }
    fn with_trailing_axes(self, axes: usize) -> Result<Self, Error> {
        RmsNorm::<F>::with_trailing_axes(self, axes)
    }
    fn with_gamma<D: Dimension>(self, gamma: Array<F, D>) -> Result<Self, Error> {
        RmsNorm::<F>::with_gamma(self, gamma)
    }
    fn with_beta<D: Dimension>(self, _beta: Array<F, D>) -> Result<Self, Error> {
        unreachable!("RmsNorm has no beta")
    }
    fn trailing_axes(&self) -> usize {
        RmsNorm::<F>::trailing_axes(self)
    }
    fn gamma(&self) -> Option<&ArrayD<F>> {
        RmsNorm::<F>::gamma(self)
    }
    fn beta(&self) -> Option<&ArrayD<F>> {
        None
    }
    fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error> {
        RmsNorm::<F>::forward(self, x)
    }
    fn forward_into<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        RmsNorm::<F>::forward_into(self, x, out)
    }
    fn forward_inplace<D: Dimension>(&self, x: &mut ArrayRef<F, D>) -> Result<(), Error> {
        RmsNorm::<F>::forward_inplace(self, x)
    }
    fn forward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Vec<Array<F, D::Smaller>>), Error> {
        let (y, rstd) = RmsNorm::<F>::forward_with_stats(self, x)?;
        Ok((y, vec![rstd]))
    }
    fn backward<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        RmsNorm::<F>::backward(self, x, dy)
    }
    fn backward_with_stats<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        stats: &[Array<F, D::Smaller>],
        dy: &ArrayRef<F, D>,
    ) -> Result<Gradients<F, D>, Error> {
        RmsNorm::<F>::backward_with_stats(self, x, &stats[0], dy)
    }
}

// ----------------------------------------------------------------------------------------------
// Helpers (none of them calls the library).

/// `(rows, n)`: the product of the leading lengths and of the last `k` lengths.
fn rows_n(shape: &[usize], k: usize) -> (usize, usize) {
    let split = shape.len() - k;
    (
        shape[..split].iter().product(),
        shape[split..].iter().product(),
    )
}

/// The logical elements of `x` as a `rows x n` matrix (row-major order), `n` the product of its
/// last `k` lengths.
fn flat<F: TestFloat, D: Dimension>(x: &ArrayRef<F, D>, k: usize) -> Array2<F> {
    Array2::from_shape_vec(rows_n(x.shape(), k), x.iter().copied().collect()).unwrap()
}

/// The logical elements of `x` as a vector (row-major order).
fn flat1<F: TestFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Array1<F> {
    x.iter().copied().collect()
}

/// The same logical array in standard layout.
fn standard_copy<F: TestFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Array<F, D> {
    let out = Array::from_shape_vec(x.raw_dim(), x.iter().copied().collect()).unwrap();
    assert!(out.is_standard_layout());
    out
}

/// The documented shape of the statistics: the leading lengths, then `k - 1` ones.
fn stats_shape(shape: &[usize], k: usize) -> Vec<usize> {
    let mut s = shape[..shape.len() - k].to_vec();
    s.resize(shape.len() - 1, 1);
    s
}

/// Asserts that `actual` and `expected` hold bitwise the same values in logical order (NaNs
/// equal), whatever their shapes.
#[track_caller]
fn assert_same_values<F: TestFloat, D1: Dimension, D2: Dimension>(
    actual: &ArrayRef<F, D1>,
    expected: &ArrayRef<F, D2>,
    what: &str,
) {
    assert_eq!(actual.len(), expected.len(), "{} {what}: lengths", F::NAME);
    for (i, (&a, &e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert!(
            same_bits(a, e),
            "{} {what}: element {i} is {a:e} ({:#x}), expected {e:e} ({:#x})",
            F::NAME,
            a.bits(),
            e.bits()
        );
    }
}

/// Seeded data of the given shape: rows (of the last axis) with different offsets and scales,
/// and the second row constant.
fn data<F: TestFloat, D: Dimension>(dim: D, seed: u64) -> Array<F, D> {
    let (rows, n) = rows_n(dim.slice(), 1);
    let mut x = random_rows::<F>(rows, n, seed);
    if rows > 1 {
        x.row_mut(1).fill(F::of(-3.25));
    }
    Array::from_shape_vec(dim, x.iter().copied().collect()).unwrap()
}

/// The parameters of a layer.
struct Setup<F> {
    eps: F,
    gamma: Option<ArrayD<F>>,
    beta: Option<ArrayD<F>>,
}

/// Layers for rows of shape `row_shape`: none, gamma only (in Fortran order), beta only, and
/// both (the beta variants for LayerNorm only).
fn setups<F: TestFloat, L: Norm<F>>(row_shape: &[usize], seed: u64) -> Vec<Setup<F>> {
    let gamma: ArrayD<F> = random_array(IxDyn(row_shape), seed);
    let beta: ArrayD<F> = random_array(IxDyn(row_shape), seed + 1);
    let mut out = vec![
        Setup {
            eps: F::of(0.0),
            gamma: None,
            beta: None,
        },
        Setup {
            eps: F::of(1e-5),
            gamma: Some(fortran_copy(&gamma)),
            beta: None,
        },
    ];
    if L::HAS_BETA {
        out.push(Setup {
            eps: F::of(1e-5),
            gamma: None,
            beta: Some(beta.clone()),
        });
        out.push(Setup {
            eps: F::of(0.1),
            gamma: Some(gamma),
            beta: Some(fortran_copy(&beta)),
        });
    } else {
        out.push(Setup {
            eps: F::of(0.1),
            gamma: Some(gamma),
            beta: None,
        });
    }
    out
}

/// The layer of `setup` over the last `k` axes.
fn build<F: TestFloat, L: Norm<F>>(setup: &Setup<F>, k: usize) -> L {
    let mut layer = L::new(setup.eps).unwrap().with_trailing_axes(k).unwrap();
    if let Some(g) = &setup.gamma {
        layer = layer.with_gamma(g.clone()).unwrap();
    }
    if let Some(b) = &setup.beta {
        layer = layer.with_beta(b.clone()).unwrap();
    }
    assert_eq!(layer.trailing_axes(), k);
    layer
}

/// The layer of `setup` over the last axis, with gamma and beta flattened in logical order.
fn build_flat<F: TestFloat, L: Norm<F>>(setup: &Setup<F>) -> L {
    let mut layer = L::new(setup.eps).unwrap();
    if let Some(g) = &setup.gamma {
        layer = layer.with_gamma(flat1(g)).unwrap();
    }
    if let Some(b) = &setup.beta {
        layer = layer.with_beta(flat1(b)).unwrap();
    }
    assert_eq!(layer.trailing_axes(), 1);
    layer
}

// ----------------------------------------------------------------------------------------------
// Forward over k axes against the flattened rows.

/// Every forward entry point of every setup over the last `k` axes of `x` (standard layout),
/// against the flattened layer on the flattened input.
fn check_against_flat<F: TestFloat, L: Norm<F>, D: Dimension>(x: &Array<F, D>, k: usize) {
    let shape = x.shape().to_vec();
    let row_shape = &shape[shape.len() - k..];
    let xf = flat(x, k);
    for (s, setup) in setups::<F, L>(row_shape, 7 * k as u64).iter().enumerate() {
        let what = format!("shape {shape:?}, k = {k}, setup {s}");
        let layer: L = build(setup, k);
        let reference: L = build_flat(setup);

        // The parameters keep their k-axis shape and their logical values.
        for (p, given) in [(layer.gamma(), &setup.gamma), (layer.beta(), &setup.beta)] {
            assert_eq!(p.is_some(), given.is_some(), "{what}: parameter presence");
            if let (Some(p), Some(given)) = (p, given) {
                assert_eq!(p.shape(), row_shape, "{what}: parameter shape");
                assert_bitwise_eq(p, given, &format!("{what}: parameter values"));
            }
        }

        let (yf, stats_f) = reference.forward_with_stats(&xf).unwrap();

        let y = layer.forward(x).unwrap();
        assert_eq!(y.shape(), &shape[..], "{what}: forward shape");
        assert_same_values(&y, &yf, &format!("{what}: forward"));

        let mut out = Array::from_elem(x.raw_dim(), F::of(7.5));
        layer.forward_into(x, &mut out).unwrap();
        assert_same_values(&out, &yf, &format!("{what}: forward_into"));

        let mut z = x.clone();
        layer.forward_inplace(&mut z).unwrap();
        assert_same_values(&z, &yf, &format!("{what}: forward_inplace"));

        let (y, stats) = layer.forward_with_stats(x).unwrap();
        assert_same_values(&y, &yf, &format!("{what}: forward_with_stats output"));
        assert_eq!(stats.len(), stats_f.len());
        for (i, (st, st_f)) in stats.iter().zip(&stats_f).enumerate() {
            assert_eq!(
                st.shape(),
                stats_shape(&shape, k),
                "{what}: stats {i} shape"
            );
            assert_same_values(st, st_f, &format!("{what}: stats {i}"));
        }
    }
}

fn check_all_k<F: TestFloat, L: Norm<F>, D: Dimension>(dims: &[D]) {
    for (i, dim) in dims.iter().enumerate() {
        let x: Array<F, D> = data(dim.clone(), 10 + i as u64);
        for k in 1..=x.ndim() {
            check_against_flat::<F, L, D>(&x, k);
        }
    }
}

fn two_dimensional_forward_over_k_axes_matches_the_flattened_rows<F: TestFloat, L: Norm<F>>() {
    // Short and long rows, one-element axes, more than one block of 64 rows.
    check_all_k::<F, L, Ix2>(&[
        Ix2(3, 5),
        Ix2(1, 1),
        Ix2(4, 1),
        Ix2(1, 9),
        Ix2(70, 9),
        Ix2(5, 67),
    ]);
}

fn three_dimensional_forward_over_k_axes_matches_the_flattened_rows<F: TestFloat, L: Norm<F>>() {
    check_all_k::<F, L, Ix3>(&[
        Ix3(2, 3, 4),
        Ix3(5, 9, 10),
        Ix3(67, 2, 3),
        Ix3(3, 1, 7),
        Ix3(2, 6, 1),
    ]);
}

fn four_dimensional_forward_over_k_axes_matches_the_flattened_rows<F: TestFloat, L: Norm<F>>() {
    check_all_k::<F, L, Ix4>(&[Ix4(2, 3, 4, 5), Ix4(3, 1, 6, 7), Ix4(33, 2, 1, 3)]);
}

fn dynamic_forward_over_k_axes_matches_the_flattened_rows<F: TestFloat, L: Norm<F>>() {
    check_all_k::<F, L, IxDyn>(&[
        IxDyn(&[7]),
        IxDyn(&[70]),
        IxDyn(&[3, 5]),
        IxDyn(&[2, 3, 4, 5]),
        IxDyn(&[2, 1, 3, 2, 4]),
        IxDyn(&[66, 2, 2]),
    ]);
}

fn one_dimensional_input_over_its_only_axis_matches_a_one_row_matrix<F: TestFloat, L: Norm<F>>() {
    for n in [1, 2, 5, 64, 65, 100] {
        let x: Array1<F> = data(Ix1(n), n as u64);
        check_against_flat::<F, L, Ix1>(&x, 1);
        let (_, stats) = build::<F, L>(&setups::<F, L>(&[n], 0)[0], 1)
            .forward_with_stats(&x)
            .unwrap();
        assert!(stats.iter().all(|s| s.ndim() == 0));
    }
}

// ----------------------------------------------------------------------------------------------
// The shape of the statistics.

fn statistics_have_the_leading_shape_followed_by_k_minus_1_ones<F: TestFloat, L: Norm<F>>() {
    // Written out by hand.
    let cases: [(&[usize], usize, &[usize]); 11] = [
        (&[2, 3, 4, 5], 1, &[2, 3, 4]),
        (&[2, 3, 4, 5], 2, &[2, 3, 1]),
        (&[2, 3, 4, 5], 3, &[2, 1, 1]),
        (&[2, 3, 4, 5], 4, &[1, 1, 1]),
        (&[6, 7], 1, &[6]),
        (&[6, 7], 2, &[1]),
        (&[5], 1, &[]),
        (&[4, 2, 3], 2, &[4, 1]),
        (&[4, 2, 3], 3, &[1, 1]),
        (&[0, 2, 3], 2, &[0, 1]),
        (&[2, 1, 3, 2, 4], 3, &[2, 1, 1, 1]),
    ];
    for (shape, k, expected) in cases {
        assert_eq!(stats_shape(shape, k), expected, "the helper itself");
        let x: ArrayD<F> = data(IxDyn(shape), 1);
        let layer = L::new(F::of(1e-5)).unwrap().with_trailing_axes(k).unwrap();
        let (_, stats) = layer.forward_with_stats(&x).unwrap();
        for st in &stats {
            assert_eq!(st.shape(), expected, "{shape:?}, k = {k}");
        }
    }
    // The same with static dimensions.
    let x: Array<F, Ix4> = data(Ix4(2, 3, 4, 5), 2);
    for (k, expected) in [
        (1, [2, 3, 4]),
        (2, [2, 3, 1]),
        (3, [2, 1, 1]),
        (4, [1, 1, 1]),
    ] {
        let layer = L::new(F::of(1e-5)).unwrap().with_trailing_axes(k).unwrap();
        let (_, stats) = layer.forward_with_stats(&x).unwrap();
        for st in &stats {
            assert_eq!(st.shape(), &expected, "k = {k}");
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Layouts.

/// Asserts that `view` gives bitwise the results of its standard-layout copy for every setup
/// over the last `k` axes (forward, forward_into, forward_with_stats, and the IxDyn view).
fn check_layout<F: TestFloat, L: Norm<F>, D: Dimension>(
    view: &ArrayRef<F, D>,
    k: usize,
    what: &str,
) {
    let reference = standard_copy(view);
    let shape = reference.shape().to_vec();
    let row_shape = &shape[shape.len() - k..];
    for (s, setup) in setups::<F, L>(row_shape, 3).iter().enumerate() {
        let what = format!("{what}, shape {shape:?}, k = {k}, setup {s}");
        let layer: L = build(setup, k);
        let (y_ref, stats_ref) = layer.forward_with_stats(&reference).unwrap();
        // The reference itself against the flattened rows.
        let yf = build_flat::<F, L>(setup)
            .forward(&flat(&reference, k))
            .unwrap();
        assert_same_values(&y_ref, &yf, &format!("{what}: reference vs flat"));

        let y = layer.forward(view).unwrap();
        assert!(y.is_standard_layout(), "{what}: output layout");
        assert_bitwise_eq(&y, &y_ref, &format!("{what}: forward"));

        let (y, stats) = layer.forward_with_stats(view).unwrap();
        assert_bitwise_eq(&y, &y_ref, &format!("{what}: forward_with_stats"));
        for (st, st_ref) in stats.iter().zip(&stats_ref) {
            assert_bitwise_eq(st, st_ref, &format!("{what}: stats"));
        }

        let mut out = Array::from_elem(view.raw_dim(), F::of(-9.0));
        layer.forward_into(view, &mut out).unwrap();
        assert_bitwise_eq(&out, &y_ref, &format!("{what}: forward_into"));

        let dynamic = view.view().into_dyn();
        let y = layer.forward(&dynamic).unwrap();
        assert_bitwise_eq(
            &y,
            &y_ref.view().into_dyn(),
            &format!("{what}: IxDyn forward"),
        );
        let (_, stats) = layer.forward_with_stats(&dynamic).unwrap();
        for (st, st_ref) in stats.iter().zip(&stats_ref) {
            assert_bitwise_eq(
                st,
                &st_ref.view().into_dyn(),
                &format!("{what}: IxDyn stats"),
            );
        }
    }
}

/// `dim` with the length of `axis` multiplied by `factor`.
fn widened<D: Dimension>(dim: &D, axis: usize, factor: usize) -> D {
    let mut d = dim.clone();
    d[axis] *= factor;
    d
}

/// Every layout of a logical array of shape `dim`, over every `k`.
fn check_layouts_of_shape<F: TestFloat, L: Norm<F>, D: Dimension>(dim: D, seed: u64) {
    let nd = dim.ndim();
    let x: Array<F, D> = data(dim.clone(), seed);
    for k in 1..=nd {
        check_layout::<F, L, D>(&x, k, "standard");
        check_layout::<F, L, D>(&fortran_copy(&x), k, "Fortran order");

        // Leading axis stepped: the trailing block stays contiguous for k < nd.
        let base: Array<F, D> = data(widened(&dim, 0, 2), seed + 1);
        let v = base.slice_axis(Axis(0), Slice::new(0, None, 2));
        assert_eq!(v.shape(), x.shape());
        check_layout::<F, L, D>(&v, k, "leading axis ..;2");

        // Last axis stepped (forwards and backwards).
        let base: Array<F, D> = data(widened(&dim, nd - 1, 2), seed + 2);
        check_layout::<F, L, D>(
            &base.slice_axis(Axis(nd - 1), Slice::new(0, None, 2)),
            k,
            "last axis ..;2",
        );
        check_layout::<F, L, D>(
            &base.slice_axis(Axis(nd - 1), Slice::new(1, None, -2)),
            k,
            "last axis 1..;-2",
        );

        // Last two axes swapped: a permuted (transposed) trailing block.
        let mut swapped = dim.clone();
        swapped.slice_mut().swap(nd - 2, nd - 1);
        let base: Array<F, D> = data(swapped, seed + 3);
        let mut v = base.view();
        v.swap_axes(nd - 2, nd - 1);
        assert_eq!(v.shape(), x.shape());
        check_layout::<F, L, D>(&v, k, "last two axes swapped");

        // Whole array transposed.
        let mut reversed = dim.clone();
        reversed.slice_mut().reverse();
        let base: Array<F, D> = data(reversed, seed + 4);
        let v = base.view().reversed_axes();
        assert_eq!(v.shape(), x.shape());
        check_layout::<F, L, D>(&v, k, "reversed_axes");

        // Each axis reversed (negative stride), a normalized one among them.
        for a in 0..nd {
            let mut v = x.view();
            v.invert_axis(Axis(a));
            check_layout::<F, L, D>(&v, k, &format!("axis {a} inverted"));
        }

        // A middle axis stepped.
        let base: Array<F, D> = data(widened(&dim, 1, 3), seed + 5);
        let v = base.slice_axis(Axis(1), Slice::new(1, None, 3));
        assert_eq!(v.shape(), x.shape());
        check_layout::<F, L, D>(&v, k, "axis 1 1..;3");
    }
}

fn every_layout_over_k_axes_gives_bitwise_identical_results<F: TestFloat, L: Norm<F>>() {
    check_layouts_of_shape::<F, L, Ix2>(Ix2(5, 7), 20);
    check_layouts_of_shape::<F, L, Ix3>(Ix3(3, 4, 5), 30);
    check_layouts_of_shape::<F, L, Ix3>(Ix3(66, 3, 2), 35);
    check_layouts_of_shape::<F, L, Ix4>(Ix4(2, 3, 4, 5), 40);
    check_layouts_of_shape::<F, L, IxDyn>(IxDyn(&[2, 3, 2, 5]), 50);
}

fn strided_leading_axes_with_a_contiguous_trailing_block_match_standard<
    F: TestFloat,
    L: Norm<F>,
>() {
    // The example of the brief: x.slice(s![..;2, .., ..]) over the last two axes.
    let base: Array3<F> = data(Ix3(10, 6, 13), 60);
    let v = base.slice(ndarray::s![..;2, .., ..]);
    check_layout::<F, L, Ix3>(&v, 2, "s![..;2, .., ..]");
    let v = base.slice(ndarray::s![1..;3, 2.., ..]);
    check_layout::<F, L, Ix3>(&v, 2, "s![1..;3, 2.., ..]");
    check_layout::<F, L, Ix3>(&v, 1, "s![1..;3, 2.., ..]");
}

fn forward_into_a_non_standard_output_writes_bitwise_identical_results<F: TestFloat, L: Norm<F>>() {
    let x: Array<F, Ix4> = data(Ix4(3, 4, 5, 6), 70);
    for k in 1..=4 {
        let row_shape = &x.shape()[4 - k..];
        for (s, setup) in setups::<F, L>(row_shape, 5).iter().enumerate() {
            let what = format!("k = {k}, setup {s}");
            let layer: L = build(setup, k);
            let expected = layer.forward(&x).unwrap();

            let mut out = Array::<F, Ix4>::from_elem((3, 4, 5, 6).f(), F::of(1.0));
            layer.forward_into(&x, &mut out).unwrap();
            assert_bitwise_eq(&out, &expected, &format!("{what}: Fortran out"));

            let mut base = Array::<F, Ix4>::from_elem((3, 4, 6, 5), F::of(2.0));
            let mut v = base.view_mut();
            v.swap_axes(2, 3);
            layer.forward_into(&x, &mut v).unwrap();
            assert_bitwise_eq(&v, &expected, &format!("{what}: swapped-axes out"));

            // A stepped output view: the elements in between are not touched.
            let sentinel = F::of(-123.0);
            let mut base = Array::<F, Ix4>::from_elem((3, 4, 5, 12), sentinel);
            let mut v = base.slice_mut(ndarray::s![.., .., .., ..;2]);
            layer.forward_into(&x, &mut v).unwrap();
            assert_bitwise_eq(&v, &expected, &format!("{what}: stepped out"));
            let gaps = base.slice(ndarray::s![.., .., .., 1..;2]);
            assert!(
                gaps.iter().all(|v| v.bits() == sentinel.bits()),
                "{what}: gaps"
            );

            // A non-standard output with a non-standard input.
            let mut out = Array::<F, Ix4>::from_elem((3, 4, 5, 6).f(), F::of(1.0));
            layer.forward_into(&fortran_copy(&x), &mut out).unwrap();
            assert_bitwise_eq(&out, &expected, &format!("{what}: Fortran in and out"));

            // IxDyn output.
            let mut out = ArrayD::<F>::zeros(IxDyn(&[3, 4, 5, 6]).f());
            layer.forward_into(&x.view().into_dyn(), &mut out).unwrap();
            assert_bitwise_eq(
                &out,
                &expected.view().into_dyn(),
                &format!("{what}: IxDyn out"),
            );
        }
    }
}

fn forward_inplace_on_non_contiguous_views_writes_bitwise_identical_results<
    F: TestFloat,
    L: Norm<F>,
>() {
    for k in 1..=3 {
        for (s, setup) in setups::<F, L>(&[4, 5, 6][3 - k..], 9).iter().enumerate() {
            let what = format!("k = {k}, setup {s}");
            let layer: L = build(setup, k);

            // Stepped last axis: only the viewed elements change.
            let original: Array3<F> = data(Ix3(4, 5, 12), 80);
            let mut base = original.clone();
            let mut v = base.slice_mut(ndarray::s![.., .., 1..;2]);
            let expected = layer.forward(&standard_copy(&v)).unwrap();
            layer.forward_inplace(&mut v).unwrap();
            assert_bitwise_eq(&v, &expected, &format!("{what}: stepped view"));
            assert_bitwise_eq(
                &base.slice(ndarray::s![.., .., ..;2]),
                &original.slice(ndarray::s![.., .., ..;2]),
                &format!("{what}: elements outside the stepped view"),
            );

            // Trailing axes swapped.
            let mut base: Array3<F> = data(Ix3(4, 6, 5), 81);
            let mut v = base.view_mut();
            v.swap_axes(1, 2);
            let expected = layer.forward(&standard_copy(&v)).unwrap();
            layer.forward_inplace(&mut v).unwrap();
            assert_bitwise_eq(&v, &expected, &format!("{what}: swapped view"));

            // Reversed middle axis, leading axis stepped, Fortran order, IxDyn.
            let mut base: Array3<F> = data(Ix3(8, 5, 6), 82);
            let mut v = base.slice_mut(ndarray::s![..;2, ..;-1, ..]);
            let expected = layer.forward(&standard_copy(&v)).unwrap();
            layer.forward_inplace(&mut v).unwrap();
            assert_bitwise_eq(&v, &expected, &format!("{what}: stepped and reversed view"));

            let x: Array3<F> = data(Ix3(4, 5, 6), 83);
            let expected = layer.forward(&x).unwrap();
            let mut f = fortran_copy(&x);
            layer.forward_inplace(&mut f).unwrap();
            assert_bitwise_eq(&f, &expected, &format!("{what}: Fortran order"));
            let mut d = fortran_copy(&x).into_dyn();
            layer.forward_inplace(&mut d).unwrap();
            assert_bitwise_eq(&d, &expected.into_dyn(), &format!("{what}: IxDyn"));
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Backward.

/// Backward and backward_with_stats over the last `k` axes of `x` (any layout) against the
/// flattened layer on the flattened arrays.
fn check_backward<F: TestFloat, L: Norm<F>, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    k: usize,
    what: &str,
) {
    let shape = x.shape().to_vec();
    let row_shape = &shape[shape.len() - k..];
    let (xf, dyf) = (flat(x, k), flat(dy, k));
    for (s, setup) in setups::<F, L>(row_shape, 11).iter().enumerate() {
        let what = format!("{what}, shape {shape:?}, k = {k}, setup {s}");
        let layer: L = build(setup, k);
        let reference: L = build_flat(setup);

        let expected = reference.backward(&xf, &dyf).unwrap();
        let grads = layer.backward(x, dy).unwrap();
        check_gradients(
            &grads,
            &expected,
            setup,
            row_shape,
            &format!("{what}: backward"),
        );

        let (_, stats_f) = reference.forward_with_stats(&xf).unwrap();
        let expected = reference.backward_with_stats(&xf, &stats_f, &dyf).unwrap();
        let (_, stats) = layer.forward_with_stats(x).unwrap();
        let grads = layer.backward_with_stats(x, &stats, dy).unwrap();
        let what = format!("{what}: backward_with_stats");
        check_gradients(&grads, &expected, setup, row_shape, &what);
    }
}

#[track_caller]
fn check_gradients<F: TestFloat, D: Dimension>(
    grads: &Gradients<F, D>,
    expected: &Gradients<F, ndarray::Ix2>,
    setup: &Setup<F>,
    row_shape: &[usize],
    what: &str,
) {
    assert!(
        grads.input.is_standard_layout(),
        "{what}: input gradient layout"
    );
    assert_same_values(&grads.input, &expected.input, &format!("{what}: input"));
    for (name, got, want, given) in [
        ("gamma", &grads.gamma, &expected.gamma, &setup.gamma),
        ("beta", &grads.beta, &expected.beta, &setup.beta),
    ] {
        assert_eq!(got.is_some(), given.is_some(), "{what}: d{name} presence");
        assert_eq!(
            want.is_some(),
            given.is_some(),
            "{what}: flat d{name} presence"
        );
        if let (Some(got), Some(want)) = (got, want) {
            assert_eq!(got.shape(), row_shape, "{what}: d{name} shape");
            assert_eq!(want.shape(), &[row_shape.iter().product::<usize>()]);
            assert_same_values(got, want, &format!("{what}: d{name}"));
        }
    }
}

fn backward_over_k_axes_matches_the_flattened_rows<F: TestFloat, L: Norm<F>>() {
    let x: Array<F, Ix4> = data(Ix4(2, 3, 4, 5), 90);
    let dy: Array<F, Ix4> = random_array(Ix4(2, 3, 4, 5), 91);
    for k in 1..=4 {
        check_backward::<F, L, Ix4>(&x, &dy, k, "standard");
        check_backward::<F, L, Ix4>(&fortran_copy(&x), &dy, k, "x in Fortran order");
        check_backward::<F, L, Ix4>(&x, &fortran_copy(&dy), k, "dy in Fortran order");
        let xd = x.view().into_dyn();
        check_backward::<F, L, IxDyn>(&xd, &dy.view().into_dyn(), k, "IxDyn");
    }
    // More than one block of 64 rows (the parameter gradients are summed block by block).
    let x: Array3<F> = data(Ix3(70, 3, 4), 92);
    let dy: Array3<F> = random_array((70, 3, 4), 93);
    for k in 1..=3 {
        check_backward::<F, L, Ix3>(&x, &dy, k, "70 rows");
        let mut v = x.view();
        v.swap_axes(1, 2);
        let mut w = dy.view();
        w.swap_axes(1, 2);
        check_backward::<F, L, Ix3>(&v, &w, k, "70 rows, trailing axes swapped");
    }
    // A one-dimensional input.
    let x: Array1<F> = data(Ix1(70), 94);
    let dy: Array1<F> = random_array(70, 95);
    check_backward::<F, L, Ix1>(&x, &dy, 1, "1-D");
}

fn backward_with_stats_rejects_statistics_of_another_shape<F: TestFloat, L: Norm<F>>() {
    let x: Array<F, Ix4> = data(Ix4(2, 3, 4, 5), 100);
    let dy: Array<F, Ix4> = random_array(Ix4(2, 3, 4, 5), 101);
    let layer = L::new(F::of(1e-5)).unwrap().with_trailing_axes(2).unwrap();
    let (_, stats) = layer.forward_with_stats(&x).unwrap();
    assert_eq!(stats[0].shape(), &[2, 3, 1]);
    assert!(layer.backward_with_stats(&x, &stats, &dy).is_ok());
    // The shape a one-axis layer would save, and a transposed one.
    for wrong in [Array3::<F>::zeros((2, 3, 4)), Array3::<F>::zeros((3, 2, 1))] {
        for i in 0..stats.len() {
            let mut bad = stats.clone();
            bad[i] = wrong.clone();
            assert_eq!(
                layer.backward_with_stats(&x, &bad, &dy).unwrap_err(),
                Error::ShapeMismatch {
                    expected: vec![2, 3, 1],
                    actual: wrong.shape().to_vec()
                },
                "statistic {i}"
            );
        }
    }
    // IxDyn statistics of another number of axes.
    let xd = x.view().into_dyn();
    let dyd = dy.view().into_dyn();
    let (_, stats) = layer.forward_with_stats(&xd).unwrap();
    assert!(layer.backward_with_stats(&xd, &stats, &dyd).is_ok());
    for i in 0..stats.len() {
        let mut bad = stats.clone();
        bad[i] = ArrayD::zeros(IxDyn(&[2, 3]));
        assert_eq!(
            layer.backward_with_stats(&xd, &bad, &dyd).unwrap_err(),
            Error::ShapeMismatch {
                expected: vec![2, 3, 1],
                actual: vec![2, 3]
            }
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Errors.

fn zero_trailing_axes_is_invalid_axes<F: TestFloat, L: Norm<F>>() {
    let err = L::new(F::of(1e-5))
        .unwrap()
        .with_trailing_axes(0)
        .unwrap_err();
    assert_eq!(err, Error::InvalidAxes { axes: 0 });
    let with_gamma = L::new(F::of(1e-5))
        .unwrap()
        .with_gamma(Array1::<F>::ones(3))
        .unwrap();
    assert_eq!(
        with_gamma.with_trailing_axes(0).unwrap_err(),
        Error::InvalidAxes { axes: 0 }
    );
    assert_eq!(
        L::affine_shape(&[], F::of(1e-5)).unwrap_err(),
        Error::InvalidAxes { axes: 0 }
    );
}

/// Asserts that every forward and backward entry point rejects `x` with `expected`, and that
/// forward_into and forward_inplace leave their arrays unchanged.
#[track_caller]
fn assert_rejected<F: TestFloat, L: Norm<F>, D: Dimension>(
    layer: &L,
    x: &Array<F, D>,
    expected: &Error,
) {
    assert_eq!(&layer.forward(x).unwrap_err(), expected, "forward");
    assert_eq!(
        &layer.forward_with_stats(x).unwrap_err(),
        expected,
        "forward_with_stats"
    );
    let sentinel = F::of(0.625);
    let mut out = Array::from_elem(x.raw_dim(), sentinel);
    assert_eq!(
        &layer.forward_into(x, &mut out).unwrap_err(),
        expected,
        "forward_into"
    );
    assert!(
        out.iter().all(|v| v.bits() == sentinel.bits()),
        "forward_into wrote"
    );
    let mut z = x.clone();
    assert_eq!(
        &layer.forward_inplace(&mut z).unwrap_err(),
        expected,
        "forward_inplace"
    );
    assert_bitwise_eq(&z, x, "forward_inplace wrote");
    let dy = x.clone();
    assert_eq!(&layer.backward(x, &dy).unwrap_err(), expected, "backward");
    let stats_dim = <D::Smaller as Dimension>::zeros(x.ndim().saturating_sub(1));
    let stats = vec![Array::zeros(stats_dim.clone()), Array::zeros(stats_dim)];
    assert_eq!(
        &layer.backward_with_stats(x, &stats, &dy).unwrap_err(),
        expected,
        "backward_with_stats"
    );
}

fn inputs_with_fewer_axes_than_k_are_too_few_axes<F: TestFloat, L: Norm<F>>() {
    let layer = L::new(F::of(1e-5)).unwrap().with_trailing_axes(3).unwrap();
    let x: Array2<F> = data(Ix2(3, 4), 1);
    assert_rejected(&layer, &x, &Error::TooFewAxes { axes: 3, ndim: 2 });
    assert_rejected(
        &layer,
        &x.into_dyn(),
        &Error::TooFewAxes { axes: 3, ndim: 2 },
    );
    let x: Array1<F> = data(Ix1(4), 2);
    assert_rejected(&layer, &x, &Error::TooFewAxes { axes: 3, ndim: 1 });
    let layer = L::affine_shape(&[2, 3, 4, 5], F::of(1e-5)).unwrap();
    let x: Array3<F> = data(Ix3(3, 4, 5), 3);
    assert_rejected(&layer, &x, &Error::TooFewAxes { axes: 4, ndim: 3 });
    // Exactly k axes is enough.
    let x: Array<F, Ix4> = data(Ix4(2, 3, 4, 5), 4);
    assert!(layer.forward(&x).is_ok());
}

fn zero_dimensional_inputs_are_zero_dimensional_for_every_k<F: TestFloat, L: Norm<F>>() {
    for k in [1, 2, 3] {
        let layer = L::new(F::of(1e-5)).unwrap().with_trailing_axes(k).unwrap();
        let x = arr0(F::of(1.5));
        assert_rejected(&layer, &x, &Error::ZeroDimensional);
        let xd = ArrayD::from_elem(IxDyn(&[]), F::of(-2.0));
        assert_rejected(&layer, &xd, &Error::ZeroDimensional);
    }
}

fn gamma_with_another_number_of_axes_is_param_axes_in_either_order<F: TestFloat, L: Norm<F>>() {
    let eps = F::of(1e-5);
    // with_gamma after with_trailing_axes.
    let two = || L::new(eps).unwrap().with_trailing_axes(2).unwrap();
    assert_eq!(
        two().with_gamma(Array1::<F>::ones(4)).unwrap_err(),
        Error::ParamAxes {
            param: Param::Gamma,
            expected: 2,
            actual: 1
        }
    );
    assert_eq!(
        two().with_gamma(Array3::<F>::ones((2, 3, 4))).unwrap_err(),
        Error::ParamAxes {
            param: Param::Gamma,
            expected: 2,
            actual: 3
        }
    );
    assert_eq!(
        two()
            .with_gamma(ArrayD::<F>::ones(IxDyn(&[6])))
            .unwrap_err(),
        Error::ParamAxes {
            param: Param::Gamma,
            expected: 2,
            actual: 1
        }
    );
    // The default of one axis takes a one-axis gamma only.
    assert_eq!(
        L::new(eps)
            .unwrap()
            .with_gamma(Array2::<F>::ones((3, 4)))
            .unwrap_err(),
        Error::ParamAxes {
            param: Param::Gamma,
            expected: 1,
            actual: 2
        }
    );
    // with_trailing_axes after with_gamma.
    let gamma2 = || {
        L::new(eps)
            .unwrap()
            .with_trailing_axes(2)
            .unwrap()
            .with_gamma(Array2::<F>::ones((3, 4)))
            .unwrap()
    };
    for k in [1, 3, 4] {
        assert_eq!(
            gamma2().with_trailing_axes(k).unwrap_err(),
            Error::ParamAxes {
                param: Param::Gamma,
                expected: k,
                actual: 2
            }
        );
    }
    assert_eq!(gamma2().with_trailing_axes(2).unwrap().trailing_axes(), 2);
    let gamma1 = L::new(eps)
        .unwrap()
        .with_gamma(Array1::<F>::ones(12))
        .unwrap();
    assert_eq!(
        gamma1.with_trailing_axes(2).unwrap_err(),
        Error::ParamAxes {
            param: Param::Gamma,
            expected: 2,
            actual: 1
        }
    );
    let gamma3 = L::affine_shape(&[2, 3, 4], eps).unwrap();
    assert_eq!(
        gamma3.with_trailing_axes(2).unwrap_err(),
        Error::ParamAxes {
            param: Param::Gamma,
            expected: 2,
            actual: 3
        }
    );
}

fn gamma_of_the_wrong_shape_for_the_input_is_param_shape_with_both_shapes<
    F: TestFloat,
    L: Norm<F>,
>() {
    let layer = L::new(F::of(1e-5))
        .unwrap()
        .with_trailing_axes(2)
        .unwrap()
        .with_gamma(Array2::<F>::ones((4, 5)))
        .unwrap();
    // Transposed normalized shape, and a wrong length in one axis.
    let x: Array<F, Ix4> = data(Ix4(2, 3, 5, 4), 1);
    let expected = Error::ParamShape {
        param: Param::Gamma,
        expected: vec![5, 4],
        actual: vec![4, 5],
    };
    assert_rejected(&layer, &x, &expected);
    assert_rejected(&layer, &x.into_dyn(), &expected);
    let x: Array3<F> = data(Ix3(2, 4, 6), 2);
    assert_rejected(
        &layer,
        &x,
        &Error::ParamShape {
            param: Param::Gamma,
            expected: vec![4, 6],
            actual: vec![4, 5],
        },
    );
    // The right shape is accepted, also with more leading axes.
    let x: Array<F, Ix4> = data(Ix4(2, 3, 4, 5), 3);
    assert!(layer.forward(&x).is_ok());

    // k = 1: the length, as ParamLength.
    let layer = L::new(F::of(1e-5))
        .unwrap()
        .with_gamma(Array1::<F>::ones(5))
        .unwrap();
    let x: Array2<F> = data(Ix2(2, 6), 4);
    let expected = Error::ParamLength {
        param: Param::Gamma,
        expected: 6,
        actual: 5,
    };
    assert_rejected(&layer, &x, &expected);
    assert_rejected(&layer, &x.into_dyn(), &expected);

    // k = 3.
    let layer = L::affine_shape(&[2, 3, 4], F::of(1e-5)).unwrap();
    let x: Array<F, Ix4> = data(Ix4(5, 2, 4, 3), 5);
    assert_rejected(
        &layer,
        &x,
        &Error::ParamShape {
            param: Param::Gamma,
            expected: vec![2, 4, 3],
            actual: vec![2, 3, 4],
        },
    );
}

fn beta_errors_name_beta<F: TestFloat>() {
    let eps = F::of(1e-5);
    let two = || {
        LayerNorm::<F>::new(eps)
            .unwrap()
            .with_trailing_axes(2)
            .unwrap()
    };
    assert_eq!(
        two().with_beta(Array1::<F>::zeros(4)).unwrap_err(),
        Error::ParamAxes {
            param: Param::Beta,
            expected: 2,
            actual: 1
        }
    );
    let beta2 = two().with_beta(Array2::<F>::zeros((3, 4))).unwrap();
    assert_eq!(
        beta2.clone().with_trailing_axes(3).unwrap_err(),
        Error::ParamAxes {
            param: Param::Beta,
            expected: 3,
            actual: 2
        }
    );
    let x: Array3<F> = data(Ix3(2, 4, 3), 1);
    assert_rejected(
        &beta2,
        &x,
        &Error::ParamShape {
            param: Param::Beta,
            expected: vec![4, 3],
            actual: vec![3, 4],
        },
    );
    let beta1 = LayerNorm::<F>::new(eps)
        .unwrap()
        .with_beta(Array1::<F>::zeros(3))
        .unwrap();
    let x: Array2<F> = data(Ix2(2, 4), 2);
    assert_rejected(
        &beta1,
        &x,
        &Error::ParamLength {
            param: Param::Beta,
            expected: 4,
            actual: 3,
        },
    );
    // With both, a gamma of the wrong shape is reported first.
    let both = LayerNorm::<F>::affine_shape(&[3, 4], eps).unwrap();
    assert_rejected(
        &both,
        &x.into_shape_with_order((2, 2, 2)).unwrap(),
        &Error::ParamShape {
            param: Param::Gamma,
            expected: vec![2, 2],
            actual: vec![3, 4],
        },
    );
}

fn gamma_and_beta_of_different_shapes_are_param_mismatch_with_both_shapes<F: TestFloat>() {
    let two = || {
        LayerNorm::<F>::new(F::of(1e-5))
            .unwrap()
            .with_trailing_axes(2)
            .unwrap()
    };
    let err = two()
        .with_gamma(Array2::<F>::ones((3, 4)))
        .unwrap()
        .with_beta(Array2::<F>::zeros((4, 3)))
        .unwrap_err();
    assert_eq!(
        err,
        Error::ParamMismatch {
            gamma: vec![3, 4],
            beta: vec![4, 3]
        }
    );
    let err = two()
        .with_beta(Array2::<F>::zeros((3, 5)))
        .unwrap()
        .with_gamma(Array2::<F>::ones((3, 4)))
        .unwrap_err();
    assert_eq!(
        err,
        Error::ParamMismatch {
            gamma: vec![3, 4],
            beta: vec![3, 5]
        }
    );
    // IxDyn parameters, three axes.
    let err = LayerNorm::<F>::affine_shape(&[2, 3, 4], F::of(1e-5))
        .unwrap()
        .with_beta(ArrayD::<F>::zeros(IxDyn(&[2, 4, 3])))
        .unwrap_err();
    assert_eq!(
        err,
        Error::ParamMismatch {
            gamma: vec![2, 3, 4],
            beta: vec![2, 4, 3]
        }
    );
    // The same shape in another layout is no mismatch.
    let ok = two()
        .with_gamma(Array2::<F>::ones((3, 4)))
        .unwrap()
        .with_beta(Array2::<F>::zeros((3, 4).f()));
    assert!(ok.is_ok());
}

// ----------------------------------------------------------------------------------------------
// affine_shape and the PyTorch / ONNX mapping.

fn affine_shape_equals_explicit_trailing_axes_with_ones_and_zeros<F: TestFloat, L: Norm<F>>() {
    for (a, b) in [(4, 5), (1, 7), (3, 1)] {
        for eps in [0.0, 1e-5, 0.25] {
            let eps = F::of(eps);
            let layer = L::affine_shape(&[a, b], eps).unwrap();
            let mut explicit = L::new(eps)
                .unwrap()
                .with_trailing_axes(2)
                .unwrap()
                .with_gamma(Array2::<F>::ones((a, b)))
                .unwrap();
            if L::HAS_BETA {
                explicit = explicit.with_beta(Array2::<F>::zeros((a, b))).unwrap();
            }
            assert_eq!(layer, explicit, "({a}, {b})");
            assert_eq!(layer.trailing_axes(), 2);
            assert_eq!(layer.gamma().unwrap(), &ArrayD::<F>::ones(IxDyn(&[a, b])));
            assert_eq!(
                layer.beta().cloned(),
                L::HAS_BETA.then(|| ArrayD::<F>::zeros(IxDyn(&[a, b])))
            );
            let x: Array3<F> = data(Ix3(3, a, b), 5);
            assert_bitwise_eq(
                &layer.forward(&x).unwrap(),
                &explicit.forward(&x).unwrap(),
                "affine_shape vs explicit",
            );
        }
    }
    // The one-axis and three-axis forms too.
    let explicit = L::new(F::of(1e-5))
        .unwrap()
        .with_gamma(Array1::<F>::ones(6))
        .unwrap();
    let explicit = if L::HAS_BETA {
        explicit.with_beta(Array1::<F>::zeros(6)).unwrap()
    } else {
        explicit
    };
    assert_eq!(L::affine_shape(&[6], F::of(1e-5)).unwrap(), explicit);
    let layer = L::affine_shape(&[2, 3, 4], F::of(1e-5)).unwrap();
    assert_eq!(layer.trailing_axes(), 3);
    assert_eq!(layer.gamma().unwrap().shape(), &[2, 3, 4]);
}

fn onnx_axis_maps_to_k_as_documented<F: TestFloat, L: Norm<F>>() {
    // ONNX LayerNormalization / RMSNormalization normalize over axes axis..rank; a negative
    // axis counts from the end. Written out by hand for rank 4: (axis, k).
    let shape = [2usize, 3, 4, 5];
    let rank = shape.len() as i64;
    let table: [(i64, usize); 8] = [
        (0, 4),
        (1, 3),
        (2, 2),
        (3, 1),
        (-1, 1),
        (-2, 2),
        (-3, 3),
        (-4, 4),
    ];
    let x: Array<F, Ix4> = data(Ix4(2, 3, 4, 5), 120);
    for (axis, k_by_hand) in table {
        let k = if axis >= 0 { rank - axis } else { -axis } as usize;
        assert_eq!(k, k_by_hand, "axis {axis}");
        // ONNX's own definition: the elements of axes axis..rank form one row.
        let first = if axis >= 0 { axis } else { rank + axis } as usize;
        let rows: usize = shape[..first].iter().product();
        let n: usize = shape[first..].iter().product();
        let xf = Array2::from_shape_vec((rows, n), x.iter().copied().collect()).unwrap();
        let normalized_shape = &shape[first..];
        for (s, setup) in setups::<F, L>(normalized_shape, 6).iter().enumerate() {
            let layer: L = build(setup, k);
            let (y, stats) = layer.forward_with_stats(&x).unwrap();
            let (yf, stats_f) = build_flat::<F, L>(setup).forward_with_stats(&xf).unwrap();
            let what = format!("axis {axis}, setup {s}");
            assert_same_values(&y, &yf, &what);
            // ONNX's Mean / InvStdDev have shape [d0 .. d(axis-1), 1, .., 1] of rank `rank`:
            // ours with one more axis of length 1 at the end.
            let mut onnx_shape = shape[..first].to_vec();
            onnx_shape.resize(shape.len(), 1);
            for (st, st_f) in stats.iter().zip(&stats_f) {
                let with_axis = st.view().insert_axis(Axis(st.ndim()));
                assert_eq!(with_axis.shape(), &onnx_shape[..], "{what}");
                assert_same_values(st, st_f, &what);
            }
        }
    }
}

fn pytorch_normalized_shape_is_the_last_k_lengths<F: TestFloat, L: Norm<F>>() {
    // nn.LayerNorm(normalized_shape) / nn.RMSNorm(normalized_shape) on an input of shape
    // (2, 3, 4, 5): normalized_shape = [5], [4, 5], [3, 4, 5], [2, 3, 4, 5].
    let x: Array<F, Ix4> = data(Ix4(2, 3, 4, 5), 130);
    for k in 1..=4 {
        let normalized_shape = &x.shape()[4 - k..];
        let layer = L::affine_shape(normalized_shape, F::of(1e-5)).unwrap();
        assert_eq!(layer.trailing_axes(), k);
        let explicit: L = build(
            &Setup {
                eps: F::of(1e-5),
                gamma: Some(ArrayD::ones(IxDyn(normalized_shape))),
                beta: L::HAS_BETA.then(|| ArrayD::zeros(IxDyn(normalized_shape))),
            },
            k,
        );
        assert_bitwise_eq(
            &layer.forward(&x).unwrap(),
            &explicit.forward(&x).unwrap(),
            &format!("k = {k}"),
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Instantiation: every generic test for LayerNorm and RmsNorm, f32 and f64.

macro_rules! both_layers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use ndarray_layernorm::{LayerNorm, RmsNorm};
            #[test]
            fn layer_norm_f32() {
                super::$name::<f32, LayerNorm<f32>>();
            }
            #[test]
            fn layer_norm_f64() {
                super::$name::<f64, LayerNorm<f64>>();
            }
            #[test]
            fn rms_norm_f32() {
                super::$name::<f32, RmsNorm<f32>>();
            }
            #[test]
            fn rms_norm_f64() {
                super::$name::<f64, RmsNorm<f64>>();
            }
        }
    )*};
}

macro_rules! layer_norm_only {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn layer_norm_f32() {
                super::$name::<f32>();
            }
            #[test]
            fn layer_norm_f64() {
                super::$name::<f64>();
            }
        }
    )*};
}

both_layers!(
    two_dimensional_forward_over_k_axes_matches_the_flattened_rows,
    three_dimensional_forward_over_k_axes_matches_the_flattened_rows,
    four_dimensional_forward_over_k_axes_matches_the_flattened_rows,
    dynamic_forward_over_k_axes_matches_the_flattened_rows,
    one_dimensional_input_over_its_only_axis_matches_a_one_row_matrix,
    statistics_have_the_leading_shape_followed_by_k_minus_1_ones,
    every_layout_over_k_axes_gives_bitwise_identical_results,
    strided_leading_axes_with_a_contiguous_trailing_block_match_standard,
    forward_into_a_non_standard_output_writes_bitwise_identical_results,
    forward_inplace_on_non_contiguous_views_writes_bitwise_identical_results,
    backward_over_k_axes_matches_the_flattened_rows,
    backward_with_stats_rejects_statistics_of_another_shape,
    zero_trailing_axes_is_invalid_axes,
    inputs_with_fewer_axes_than_k_are_too_few_axes,
    zero_dimensional_inputs_are_zero_dimensional_for_every_k,
    gamma_with_another_number_of_axes_is_param_axes_in_either_order,
    gamma_of_the_wrong_shape_for_the_input_is_param_shape_with_both_shapes,
    affine_shape_equals_explicit_trailing_axes_with_ones_and_zeros,
    onnx_axis_maps_to_k_as_documented,
    pytorch_normalized_shape_is_the_last_k_lengths,
);

layer_norm_only!(
    beta_errors_name_beta,
    gamma_and_beta_of_different_shapes_are_param_mismatch_with_both_shapes,
);

// ----------------------------------------------------------------------------------------------
// Threads.

#[cfg(feature = "rayon")]
mod threads {
    use ndarray::{Array3, Ix3};
    use ndarray_layernorm::{LayerNorm, RmsNorm, PARALLEL_MIN_ELEMENTS};

    use super::support::{random_array, TestFloat};
    use super::{build, build_flat, data, flat, setups, Norm};

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
    }

    fn bits<'a, F: TestFloat>(a: impl IntoIterator<Item = &'a F>) -> Vec<u64> {
        a.into_iter().map(|v| v.bits()).collect()
    }

    /// Everything a layer over the last two axes computes on `x` and `dy`, as bits.
    fn everything<F: TestFloat, L: Norm<F>>(
        layer: &L,
        x: &Array3<F>,
        dy: &Array3<F>,
    ) -> Vec<Vec<u64>> {
        let y = layer.forward(x).unwrap();
        let mut into = Array3::zeros(x.raw_dim());
        layer.forward_into(x, &mut into).unwrap();
        let mut inplace = x.clone();
        layer.forward_inplace(&mut inplace).unwrap();
        let (ys, stats) = layer.forward_with_stats(x).unwrap();
        let grads = layer.backward(x, dy).unwrap();
        let saved = layer.backward_with_stats(x, &stats, dy).unwrap();
        let fortran = layer.forward(&super::fortran_copy(x)).unwrap();
        let mut out = vec![
            bits(&y),
            bits(&into),
            bits(&inplace),
            bits(&ys),
            bits(&fortran),
            bits(&grads.input),
            bits(&saved.input),
        ];
        out.extend(stats.iter().map(|s| bits(s)));
        for g in [grads.gamma, grads.beta, saved.gamma, saved.beta]
            .iter()
            .flatten()
        {
            out.push(bits(g));
        }
        out
    }

    fn check<F: TestFloat, L: Norm<F>>() {
        // 300 rows of 24 x 32 = 768 elements, normalized over the last two axes: above the
        // cut-off, five blocks of 64 rows and a ragged one.
        let x: Array3<F> = data(Ix3(300, 24, 32), 1);
        assert!(x.len() >= PARALLEL_MIN_ELEMENTS);
        let dy: Array3<F> = random_array((300, 24, 32), 2);
        let mut setups = setups::<F, L>(&[24, 32], 3);
        // Without parameters, and with all of them.
        setups.drain(1..setups.len() - 1);
        for setup in &setups {
            let layer: L = build(setup, 2);
            let one = pool(1).install(|| everything(&layer, &x, &dy));
            // The flattened layer on one thread agrees with the k-axis layer.
            let flat_layer: L = build_flat(setup);
            let yf = pool(1).install(|| flat_layer.forward(&flat(&x, 2)).unwrap());
            assert_eq!(one[0], bits(&yf), "k axes vs flat");
            for threads in [2, 3] {
                let many = pool(threads).install(|| everything(&layer, &x, &dy));
                assert!(one == many, "{threads} threads differ from one");
            }
        }
    }

    #[test]
    fn layer_norm_f32_results_do_not_depend_on_the_number_of_threads() {
        check::<f32, LayerNorm<f32>>();
    }

    #[test]
    fn layer_norm_f64_results_do_not_depend_on_the_number_of_threads() {
        check::<f64, LayerNorm<f64>>();
    }

    #[test]
    fn rms_norm_f32_results_do_not_depend_on_the_number_of_threads() {
        check::<f32, RmsNorm<f32>>();
    }

    #[test]
    fn rms_norm_f64_results_do_not_depend_on_the_number_of_threads() {
        check::<f64, RmsNorm<f64>>();
    }
}
