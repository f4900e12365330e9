//! The fused residual add: `forward_residual(&x, &r)` returns `(h, y)` with `h = x + r` rounded
//! in `F` and `y = forward(h)`, bitwise; `forward_residual_inplace(&mut x, &mut r)` leaves `h` in
//! `r` and `y` in `x`. For `LayerNorm` (with and without gamma/beta) and `RmsNorm`, `f32` and
//! `f64`.
//!
//! The expected `h` is ndarray's own elementwise `&x + &r` (one IEEE addition per element, not
//! the library's code), and the expected `y` is the unfused `forward(&h)`, which the other test
//! files check against exact arithmetic. Shapes cover 1-D inputs, every short row length
//! (1..=70, across the short-row path and the long one), rows of 768, row counts spanning several
//! blocks of 64 rows, and two trailing axes; layouts cover transposed, stepped, reversed and
//! Fortran-order inputs for both forms.

#[path = "common/support.rs"]
mod support;

use ndarray::{arr0, s, Array, Array1, Array2, Array3, ArrayD, ArrayRef, Dimension, Ix2, IxDyn};
use ndarray_layernorm::{Error, LayerNorm, Param, RmsNorm};

use support::{assert_bitwise_eq, fortran_copy, random_rows, same_bits, TestFloat};

// ----------------------------------------------------------------------------------------------
// The two layers behind one interface.

trait Norm<F: TestFloat>: Sized + Sync {
    const HAS_BETA: bool;
    fn new(eps: F) -> Result<Self, Error>;
    fn with_trailing_axes(self, axes: usize) -> Result<Self, Error>;
    fn with_gamma<D: Dimension>(self, gamma: Array<F, D>) -> Result<Self, Error>;
    /// Only called when `HAS_BETA`.
    fn with_beta<D: Dimension>(self, beta: Array<F, D>) -> Result<Self, Error>;
    fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error>;
    #[allow(clippy::type_complexity)]
    fn forward_residual<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        r: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D>), Error>;
    fn forward_residual_inplace<D: Dimension>(
        &self,
        x: &mut ArrayRef<F, D>,
        r: &mut ArrayRef<F, D>,
    ) -> Result<(), Error>;
}

impl<F: TestFloat> Norm<F> for LayerNorm<F> {
    const HAS_BETA: bool = true;
    fn new(eps: F) -> Result<Self, Error> {
        LayerNorm::<F>::new(eps)
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
    fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error> {
        LayerNorm::<F>::forward(self, x)
    }
    fn forward_residual<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        r: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D>), Error> {
        LayerNorm::<F>::forward_residual(self, x, r)
    }
    fn forward_residual_inplace<D: Dimension>(
        &self,
        x: &mut ArrayRef<F, D>,
        r: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        LayerNorm::<F>::forward_residual_inplace(self, x, r)
    }
}

impl<F: TestFloat> Norm<F> for RmsNorm<F> {
    const HAS_BETA: bool = false;
    fn new(eps: F) -> Result<Self, Error> {
        RmsNorm::<F>::new(eps)
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
    fn forward<D: Dimension>(&self, x: &ArrayRef<F, D>) -> Result<Array<F, D>, Error> {
        RmsNorm::<F>::forward(self, x)
    }
    fn forward_residual<D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        r: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D>), Error> {
        RmsNorm::<F>::forward_residual(self, x, r)
    }
    fn forward_residual_inplace<D: Dimension>(
        &self,
        x: &mut ArrayRef<F, D>,
        r: &mut ArrayRef<F, D>,
    ) -> Result<(), Error> {
        RmsNorm::<F>::forward_residual_inplace(self, x, r)
    }
}

// ----------------------------------------------------------------------------------------------
// Helpers (none of them calls the library).

/// Layers for rows of shape `row_shape` (the last `k = row_shape.len()` axes): no parameters
/// (eps 0 and the default 1e-5), gamma, and for LayerNorm gamma and beta.
fn layers<F: TestFloat, L: Norm<F>>(row_shape: &[usize]) -> Vec<L> {
    let k = row_shape.len();
    let n: usize = row_shape.iter().product();
    let values = |a: f64, b: f64| -> ArrayD<F> {
        Array1::from_iter((0..n).map(|i| F::of(a + b * ((i * 7 % 11) as f64))))
            .into_shape_with_order(IxDyn(row_shape))
            .unwrap()
    };
    let base = |eps: f64| L::new(F::of(eps)).unwrap().with_trailing_axes(k).unwrap();
    let mut out = vec![
        base(0.0),
        base(1e-5),
        base(1e-5).with_gamma(values(0.5, 0.125)).unwrap(),
    ];
    if L::HAS_BETA {
        out.push(
            base(0.1)
                .with_gamma(values(-1.5, 0.25))
                .unwrap()
                .with_beta(values(0.75, -0.0625))
                .unwrap(),
        );
    }
    out
}

/// Seeded data: rows with different offsets and scales.
fn data<F: TestFloat, D: Dimension>(dim: D, seed: u64) -> Array<F, D> {
    let n = dim.slice().last().copied().unwrap_or(1);
    let rows = dim.size().checked_div(n).unwrap_or(0);
    let x = random_rows::<F>(rows, n, seed);
    let values: Vec<F> = x.iter().copied().collect();
    Array::from_shape_vec(dim, values).unwrap()
}

/// The same logical array in standard layout.
fn standard_copy<F: TestFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Array<F, D> {
    Array::from_shape_vec(x.raw_dim(), x.iter().copied().collect()).unwrap()
}

/// The unfused reference: `h = x + r` by ndarray, and `y = forward(h)`.
fn reference<F: TestFloat, L: Norm<F>, D: Dimension>(
    layer: &L,
    x: &ArrayRef<F, D>,
    r: &ArrayRef<F, D>,
) -> (Array<F, D>, Array<F, D>) {
    let h = x + r;
    let y = layer.forward(&h).unwrap();
    (h, y)
}

/// Both forms on `x` and `r` (any layouts) against the unfused reference, for every layer.
fn check<F: TestFloat, L: Norm<F>, D: Dimension>(
    layers: &[L],
    x: &ArrayRef<F, D>,
    r: &ArrayRef<F, D>,
    what: &str,
) {
    for (i, layer) in layers.iter().enumerate() {
        let what = format!("{what}, shape {:?}, layer {i}", x.shape());
        let (h_ref, y_ref) = reference(layer, x, r);

        let (h, y) = layer.forward_residual(x, r).unwrap();
        assert_bitwise_eq(&h, &h_ref, &format!("{what}: h"));
        assert_bitwise_eq(&y, &y_ref, &format!("{what}: y"));

        let mut xi = standard_copy(x);
        let mut ri = standard_copy(r);
        layer.forward_residual_inplace(&mut xi, &mut ri).unwrap();
        assert_bitwise_eq(&ri, &h_ref, &format!("{what}: in place, r becomes h"));
        assert_bitwise_eq(&xi, &y_ref, &format!("{what}: in place, x becomes y"));
    }
}

fn check_shape<F: TestFloat, L: Norm<F>, D: Dimension>(dim: D, k: usize, seed: u64) {
    let x: Array<F, D> = data(dim.clone(), seed);
    let r: Array<F, D> = data(dim.clone(), seed + 1000);
    let row_shape = &dim.slice()[dim.ndim() - k..];
    check(&layers::<F, L>(row_shape), &x, &r, "standard");
}

// ----------------------------------------------------------------------------------------------
// Values.

fn one_dimensional_inputs_give_the_sum_and_its_normalization<F: TestFloat, L: Norm<F>>() {
    for n in [1, 2, 3, 7, 64, 65, 70, 100, 768] {
        check_shape::<F, L, _>(ndarray::Ix1(n), 1, n as u64);
    }
}

fn every_short_row_length_gives_the_sum_and_its_normalization<F: TestFloat, L: Norm<F>>() {
    // 67 rows: one full block of 64 rows and a ragged one.
    for n in 1..=70 {
        check_shape::<F, L, _>(Ix2(67, n), 1, 100 + n as u64);
    }
    for n in [1, 33, 64, 65] {
        check_shape::<F, L, _>(Ix2(3, n), 1, 200 + n as u64);
    }
}

fn rows_of_768_in_several_blocks_give_the_sum_and_its_normalization<F: TestFloat, L: Norm<F>>() {
    for rows in [1, 5, 63, 65, 130, 200] {
        check_shape::<F, L, _>(Ix2(rows, 768), 1, 300 + rows as u64);
    }
}

fn two_trailing_axes_give_the_sum_and_its_normalization<F: TestFloat, L: Norm<F>>() {
    check_shape::<F, L, _>(ndarray::Ix3(67, 3, 5), 2, 400);
    check_shape::<F, L, _>(ndarray::Ix3(5, 24, 32), 2, 401);
    check_shape::<F, L, _>(ndarray::Ix4(2, 65, 4, 6), 2, 402);
    check_shape::<F, L, _>(ndarray::Ix4(2, 3, 4, 6), 3, 403);
    check_shape::<F, L, _>(IxDyn(&[3, 70, 2, 3]), 2, 404);
    check_shape::<F, L, _>(IxDyn(&[4, 9]), 2, 405);
}

fn higher_dimensional_inputs_over_the_last_axis<F: TestFloat, L: Norm<F>>() {
    check_shape::<F, L, _>(ndarray::Ix3(3, 30, 17), 1, 500);
    check_shape::<F, L, _>(IxDyn(&[2, 3, 11, 5]), 1, 501);
}

// ----------------------------------------------------------------------------------------------
// Layouts.

/// The layouts of a `rows x cols` matrix used below, each a view of its own base: standard,
/// transposed, stepped rows and columns, reversed columns, and Fortran order.
#[derive(Clone)]
struct Views<F> {
    standard: Array2<F>,
    transposed_base: Array2<F>,
    stepped_base: Array2<F>,
    reversed_base: Array2<F>,
    fortran: Array2<F>,
}

impl<F: TestFloat> Views<F> {
    fn new(rows: usize, cols: usize, seed: u64) -> Self {
        Views {
            standard: data(Ix2(rows, cols), seed),
            transposed_base: data(Ix2(cols, rows), seed + 1),
            stepped_base: data(Ix2(2 * rows, 3 * cols), seed + 2),
            reversed_base: data(Ix2(rows, cols), seed + 3),
            fortran: fortran_copy(&data(Ix2(rows, cols), seed + 4)),
        }
    }

    fn all(&self) -> Vec<(&'static str, ndarray::ArrayView2<'_, F>)> {
        vec![
            ("standard", self.standard.view()),
            ("transposed", self.transposed_base.t()),
            ("stepped", self.stepped_base.slice(s![1..;2, ..;3])),
            ("reversed columns", self.reversed_base.slice(s![.., ..;-1])),
            ("Fortran", self.fortran.view()),
        ]
    }
}

fn mixed_layouts_of_x_and_r_give_identical_bits<F: TestFloat, L: Norm<F>>() {
    for (rows, cols) in [(7, 5), (67, 9), (3, 100), (70, 768)] {
        let layers = layers::<F, L>(&[cols]);
        let xs = Views::<F>::new(rows, cols, 600);
        let rs = Views::<F>::new(rows, cols, 700);
        for (xn, x) in xs.all() {
            for (rn, r) in rs.all() {
                let what = format!("{rows} x {cols}, x {xn}, r {rn}");
                for (i, layer) in layers.iter().enumerate() {
                    let what = format!("{what}, layer {i}");
                    let (h_ref, y_ref) = reference(layer, &x, &r);
                    let (h, y) = layer.forward_residual(&x, &r).unwrap();
                    assert!(h.is_standard_layout() && y.is_standard_layout(), "{what}");
                    assert_bitwise_eq(&h, &h_ref, &format!("{what}: h"));
                    assert_bitwise_eq(&y, &y_ref, &format!("{what}: y"));
                }
            }
        }
    }
}

fn inplace_on_non_contiguous_views_and_fortran_order<F: TestFloat, L: Norm<F>>() {
    for (rows, cols) in [(7, 5), (67, 9), (3, 100), (66, 80)] {
        let layers = layers::<F, L>(&[cols]);
        let xs = Views::<F>::new(rows, cols, 800);
        let rs = Views::<F>::new(rows, cols, 900);
        for (i, layer) in layers.iter().enumerate() {
            for (xn, _) in xs.all() {
                for (rn, _) in rs.all() {
                    let what = format!("{rows} x {cols}, layer {i}, x {xn}, r {rn}");
                    // Fresh copies of the bases, viewed mutably in the named layout.
                    let mut xb = xs.clone();
                    let mut rb = rs.clone();
                    let (x0, r0) = (standard_copy(&view(&xs, xn)), standard_copy(&view(&rs, rn)));
                    let (h_ref, y_ref) = reference(layer, &x0, &r0);
                    let mut x = view_mut(&mut xb, xn);
                    let mut r = view_mut(&mut rb, rn);
                    layer.forward_residual_inplace(&mut x, &mut r).unwrap();
                    assert_bitwise_eq(&r, &h_ref, &format!("{what}: r becomes h"));
                    assert_bitwise_eq(&x, &y_ref, &format!("{what}: x becomes y"));
                }
            }
        }
        // The stepped views write only their own elements.
        let layer = &layers[layers.len() - 1];
        let mut xb = xs.clone();
        let mut rb = rs.clone();
        let (xo, ro) = (xb.stepped_base.clone(), rb.stepped_base.clone());
        let mut x = xb.stepped_base.slice_mut(s![1..;2, ..;3]);
        let mut r = rb.stepped_base.slice_mut(s![1..;2, ..;3]);
        layer.forward_residual_inplace(&mut x, &mut r).unwrap();
        for (base, original) in [(&xb.stepped_base, &xo), (&rb.stepped_base, &ro)] {
            for ((i, j), v) in base.indexed_iter() {
                if i % 2 == 0 || j % 3 != 0 {
                    assert_eq!(v.bits(), original[[i, j]].bits(), "({i}, {j}) was written");
                }
            }
        }
    }
}

fn view<'a, F: TestFloat>(v: &'a Views<F>, name: &str) -> ndarray::ArrayView2<'a, F> {
    v.all()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap()
}

fn view_mut<'a, F: TestFloat>(v: &'a mut Views<F>, name: &str) -> ndarray::ArrayViewMut2<'a, F> {
    match name {
        "standard" => v.standard.view_mut(),
        "transposed" => v.transposed_base.view_mut().reversed_axes(),
        "stepped" => v.stepped_base.slice_mut(s![1..;2, ..;3]),
        "reversed columns" => v.reversed_base.slice_mut(s![.., ..;-1]),
        "Fortran" => v.fortran.view_mut(),
        _ => unreachable!(),
    }
}

fn inplace_over_two_trailing_axes_with_non_mergeable_layouts<F: TestFloat, L: Norm<F>>() {
    // Over the last two axes, a view with those axes swapped cannot be merged into rows.
    let layers = layers::<F, L>(&[4, 6]);
    let xb: Array3<F> = data(ndarray::Ix3(70, 6, 4), 1000);
    let rb: Array3<F> = data(ndarray::Ix3(70, 4, 6), 1001);
    for (i, layer) in layers.iter().enumerate() {
        let mut x_base = xb.clone();
        let mut x = x_base.view_mut();
        x.swap_axes(1, 2);
        let mut r = fortran_copy(&rb);
        let (h_ref, y_ref) = reference(layer, &standard_copy(&x), &rb);
        let (h, y) = layer.forward_residual(&x, &r).unwrap();
        assert_bitwise_eq(&h, &h_ref, &format!("layer {i}: h"));
        assert_bitwise_eq(&y, &y_ref, &format!("layer {i}: y"));
        layer.forward_residual_inplace(&mut x, &mut r).unwrap();
        assert_bitwise_eq(&r, &h_ref, &format!("layer {i}: in place h"));
        assert_bitwise_eq(&x, &y_ref, &format!("layer {i}: in place y"));
    }
}

// ----------------------------------------------------------------------------------------------
// Special values.

fn nan_in_x_or_r_poisons_only_its_row<F: TestFloat, L: Norm<F>>() {
    for (rows, cols, bad_row, bad_col) in [(70, 9, 66, 4), (5, 768, 2, 700), (3, 1, 1, 0)] {
        let layers = layers::<F, L>(&[cols]);
        let x: Array2<F> = data(Ix2(rows, cols), 1100);
        let r: Array2<F> = data(Ix2(rows, cols), 1101);
        let cases: [(F, F); 4] = [
            (F::nan(), F::of(0.0)),
            (F::of(0.0), F::nan()),
            (F::infinity(), F::of(0.0)),
            (F::infinity(), F::neg_infinity()),
        ];
        for (i, layer) in layers.iter().enumerate() {
            let (h_clean, y_clean) = reference(layer, &x, &r);
            for (c, &(xv, rv)) in cases.iter().enumerate() {
                let what = format!("{rows} x {cols}, layer {i}, case {c}");
                let (mut xp, mut rp) = (x.clone(), r.clone());
                xp[[bad_row, bad_col]] = xv;
                rp[[bad_row, bad_col]] = rv;
                let (h, y) = layer.forward_residual(&xp, &rp).unwrap();
                assert_bitwise_eq(&h, &(&xp + &rp), &format!("{what}: h"));
                assert_bitwise_eq(&y, &layer.forward(&h).unwrap(), &format!("{what}: y"));
                for row in 0..rows {
                    if row == bad_row {
                        assert!(y.row(row).iter().all(|v| v.is_nan()), "{what}: row not NaN");
                        for (j, v) in h.row(row).iter().enumerate() {
                            if j == bad_col {
                                assert!(same_bits(*v, xv + rv) && !v.is_finite(), "{what}");
                            } else {
                                assert_eq!(v.bits(), h_clean[[row, j]].bits(), "{what}: h");
                            }
                        }
                    } else {
                        let what = format!("{what}: row {row}");
                        assert_bitwise_eq(&h.row(row), &h_clean.row(row), &what);
                        assert_bitwise_eq(&y.row(row), &y_clean.row(row), &what);
                    }
                }
                layer.forward_residual_inplace(&mut xp, &mut rp).unwrap();
                assert_bitwise_eq(&rp, &h, &format!("{what}: in place h"));
                assert_bitwise_eq(&xp, &y, &format!("{what}: in place y"));
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Errors and empty inputs.

/// Asserts that both forms reject `(x, r)` with `expected`, and that the in-place form leaves
/// both arrays unchanged.
#[track_caller]
fn assert_rejected<F: TestFloat, L: Norm<F>, D: Dimension>(
    layer: &L,
    x: &Array<F, D>,
    r: &Array<F, D>,
    expected: &Error,
) {
    assert_eq!(&layer.forward_residual(x, r).unwrap_err(), expected);
    let (mut xi, mut ri) = (x.clone(), r.clone());
    assert_eq!(
        &layer
            .forward_residual_inplace(&mut xi, &mut ri)
            .unwrap_err(),
        expected
    );
    assert_bitwise_eq(&xi, x, "x after a failed in-place call");
    assert_bitwise_eq(&ri, r, "r after a failed in-place call");
}

fn residual_of_another_shape_is_shape_mismatch<F: TestFloat, L: Norm<F>>() {
    for layer in layers::<F, L>(&[3]) {
        let x: Array2<F> = data(Ix2(4, 3), 1);
        let r: Array2<F> = data(Ix2(5, 3), 2);
        let expected = Error::ShapeMismatch {
            expected: vec![4, 3],
            actual: vec![5, 3],
        };
        assert_rejected(&layer, &x, &r, &expected);
        // The residual's own last axis may have the parameters' length: still its shape.
        let x3: Array2<F> = data(Ix2(3, 3), 3);
        let r3: Array2<F> = data(Ix2(1, 3), 4);
        let expected = Error::ShapeMismatch {
            expected: vec![3, 3],
            actual: vec![1, 3],
        };
        assert_rejected(&layer, &x3, &r3, &expected);
        // IxDyn: another number of axes.
        let xd: ArrayD<F> = data(IxDyn(&[4, 3]), 5);
        let rd: ArrayD<F> = data(IxDyn(&[4, 3, 1]), 6);
        let expected = Error::ShapeMismatch {
            expected: vec![4, 3],
            actual: vec![4, 3, 1],
        };
        assert_rejected(&layer, &xd, &rd, &expected);
        let rd: ArrayD<F> = data(IxDyn(&[12]), 7);
        let expected = Error::ShapeMismatch {
            expected: vec![4, 3],
            actual: vec![12],
        };
        assert_rejected(&layer, &xd, &rd, &expected);
    }
    // A transposed residual of a non-square input.
    let layer = L::new(F::of(1e-5)).unwrap();
    let x: Array2<F> = data(Ix2(4, 6), 8);
    let r: Array2<F> = data(Ix2(6, 4), 9);
    let expected = Error::ShapeMismatch {
        expected: vec![4, 6],
        actual: vec![6, 4],
    };
    assert_rejected(&layer, &x, &r, &expected);
}

fn parameter_and_axes_errors_are_as_for_forward<F: TestFloat, L: Norm<F>>() {
    let eps = F::of(1e-5);
    // Gamma of the wrong length (k = 1).
    let layer = L::new(eps)
        .unwrap()
        .with_gamma(Array1::<F>::ones(5))
        .unwrap();
    let x: Array2<F> = data(Ix2(3, 6), 1);
    let r: Array2<F> = data(Ix2(3, 6), 2);
    let expected = Error::ParamLength {
        param: Param::Gamma,
        expected: 6,
        actual: 5,
    };
    assert_eq!(layer.forward(&x).unwrap_err(), expected);
    assert_rejected(&layer, &x, &r, &expected);
    // Gamma of the wrong shape (k = 2).
    let layer = L::new(eps)
        .unwrap()
        .with_trailing_axes(2)
        .unwrap()
        .with_gamma(Array2::<F>::ones((2, 3)))
        .unwrap();
    let x: Array3<F> = data(ndarray::Ix3(4, 3, 2), 3);
    let r: Array3<F> = data(ndarray::Ix3(4, 3, 2), 4);
    let expected = Error::ParamShape {
        param: Param::Gamma,
        expected: vec![3, 2],
        actual: vec![2, 3],
    };
    assert_eq!(layer.forward(&x).unwrap_err(), expected);
    assert_rejected(&layer, &x, &r, &expected);
    // Beta of the wrong length (LayerNorm).
    if L::HAS_BETA {
        let layer = L::new(eps)
            .unwrap()
            .with_beta(Array1::<F>::zeros(4))
            .unwrap();
        let x: Array2<F> = data(Ix2(3, 6), 5);
        let expected = Error::ParamLength {
            param: Param::Beta,
            expected: 6,
            actual: 4,
        };
        assert_eq!(layer.forward(&x).unwrap_err(), expected);
        assert_rejected(&layer, &x, &x.clone(), &expected);
    }
    // Too few axes, and no axis at all.
    let layer = L::new(eps).unwrap().with_trailing_axes(3).unwrap();
    let x: Array2<F> = data(Ix2(3, 6), 6);
    let expected = Error::TooFewAxes { axes: 3, ndim: 2 };
    assert_eq!(layer.forward(&x).unwrap_err(), expected);
    assert_rejected(&layer, &x, &x.mapv(|v| v + F::of(1.0)), &expected);
    for k in [1, 2] {
        let layer = L::new(eps).unwrap().with_trailing_axes(k).unwrap();
        let (x, r) = (arr0(F::of(1.5)), arr0(F::of(-0.5)));
        assert_eq!(layer.forward(&x).unwrap_err(), Error::ZeroDimensional);
        assert_rejected(&layer, &x, &r, &Error::ZeroDimensional);
        let (x, r) = (x.into_dyn(), r.into_dyn());
        assert_rejected(&layer, &x, &r, &Error::ZeroDimensional);
    }
}

fn empty_inputs_give_empty_outputs<F: TestFloat, L: Norm<F>>() {
    let check_empty = |shape: &[usize], k: usize| {
        let x = ArrayD::<F>::zeros(IxDyn(shape));
        let r = ArrayD::<F>::zeros(IxDyn(shape));
        for layer in layers::<F, L>(&shape[shape.len() - k..]) {
            let (h, y) = layer.forward_residual(&x, &r).unwrap();
            assert_eq!(h.shape(), shape);
            assert_eq!(y.shape(), shape);
            let (mut xi, mut ri) = (x.clone(), r.clone());
            layer.forward_residual_inplace(&mut xi, &mut ri).unwrap();
            assert_eq!(xi.shape(), shape);
            assert_eq!(ri.shape(), shape);
        }
    };
    check_empty(&[0], 1);
    check_empty(&[0, 5], 1);
    check_empty(&[5, 0], 1);
    check_empty(&[0, 0], 1);
    check_empty(&[2, 0, 3], 2);
    check_empty(&[0, 3, 4], 2);
    check_empty(&[3, 4, 0], 1);
    // Static dimensions and empty views of non-empty arrays.
    let base: Array2<F> = data(Ix2(4, 6), 1);
    for layer in layers::<F, L>(&[0]) {
        let v = base.slice(s![.., 2..2]);
        let (h, y) = layer.forward_residual(&v, &v).unwrap();
        assert_eq!((h.shape(), y.shape()), (&[4, 0][..], &[4, 0][..]));
    }
    for layer in layers::<F, L>(&[6]) {
        let v = base.slice(s![1..1, ..]);
        let (h, y) = layer.forward_residual(&v, &v).unwrap();
        assert_eq!((h.shape(), y.shape()), (&[0, 6][..], &[0, 6][..]));
        let mut b2 = base.clone();
        let mut b3 = base.clone();
        layer
            .forward_residual_inplace(
                &mut b2.slice_mut(s![3..3, ..]),
                &mut b3.slice_mut(s![1..1, ..]),
            )
            .unwrap();
        assert_bitwise_eq(&b2, &base, "empty in-place view wrote");
        assert_bitwise_eq(&b3, &base, "empty in-place view wrote");
    }
}

// ----------------------------------------------------------------------------------------------
// Instantiation: every test for LayerNorm and RmsNorm, f32 and f64.

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

both_layers!(
    one_dimensional_inputs_give_the_sum_and_its_normalization,
    every_short_row_length_gives_the_sum_and_its_normalization,
    rows_of_768_in_several_blocks_give_the_sum_and_its_normalization,
    two_trailing_axes_give_the_sum_and_its_normalization,
    higher_dimensional_inputs_over_the_last_axis,
    mixed_layouts_of_x_and_r_give_identical_bits,
    inplace_on_non_contiguous_views_and_fortran_order,
    inplace_over_two_trailing_axes_with_non_mergeable_layouts,
    nan_in_x_or_r_poisons_only_its_row,
    residual_of_another_shape_is_shape_mismatch,
    parameter_and_axes_errors_are_as_for_forward,
    empty_inputs_give_empty_outputs,
);

// ----------------------------------------------------------------------------------------------
// Threads.

#[cfg(feature = "rayon")]
mod threads {
    use ndarray::{Array, Dimension, Ix2, Ix3};
    use ndarray_layernorm::{LayerNorm, RmsNorm, PARALLEL_MIN_ELEMENTS};

    use super::support::TestFloat;
    use super::{data, fortran_copy, layers, reference, Norm};

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
    }

    fn bits<'a, F: TestFloat>(a: impl IntoIterator<Item = &'a F>) -> Vec<u64> {
        a.into_iter().map(|v| v.bits()).collect()
    }

    /// Both forms on `x` and `r`, and on a transposed-in-memory `r`, as bits.
    fn everything<F: TestFloat, L: Norm<F>, D: Dimension>(
        layer: &L,
        x: &Array<F, D>,
        r: &Array<F, D>,
    ) -> Vec<Vec<u64>> {
        let (h, y) = layer.forward_residual(x, r).unwrap();
        let (hf, yf) = layer.forward_residual(x, &fortran_copy(r)).unwrap();
        let (mut xi, mut ri) = (x.clone(), r.clone());
        layer.forward_residual_inplace(&mut xi, &mut ri).unwrap();
        let (mut xf, mut rf) = (fortran_copy(x), fortran_copy(r));
        layer.forward_residual_inplace(&mut xf, &mut rf).unwrap();
        vec![
            bits(&h),
            bits(&y),
            bits(&hf),
            bits(&yf),
            bits(&ri),
            bits(&xi),
            bits(&rf),
            bits(&xf),
        ]
    }

    fn check_dim<F: TestFloat, L: Norm<F>, D: Dimension>(dim: D, k: usize) {
        let x: Array<F, D> = data(dim.clone(), 1);
        let r: Array<F, D> = data(dim.clone(), 2);
        assert!(x.len() >= PARALLEL_MIN_ELEMENTS);
        let mut layers = layers::<F, L>(&dim.slice()[dim.ndim() - k..]);
        // Without parameters, and with all of them.
        layers.drain(1..layers.len() - 1);
        for layer in layers {
            let one = pool(1).install(|| everything(&layer, &x, &r));
            let (h, y) = pool(1).install(|| reference(&layer, &x, &r));
            assert_eq!(one[0], bits(&h), "h vs x + r");
            assert_eq!(one[1], bits(&y), "y vs forward(h)");
            for threads in [2, 3] {
                let many = pool(threads).install(|| everything(&layer, &x, &r));
                assert!(one == many, "{threads} threads differ from one");
                // And the unfused forward on that many threads.
                let y_many = pool(threads).install(|| layer.forward(&h).unwrap());
                assert_eq!(one[1], bits(&y_many), "{threads} threads: forward(h)");
            }
        }
    }

    fn check<F: TestFloat, L: Norm<F>>() {
        // 300 rows of 768: above the cut-off, four full blocks of 64 rows and a ragged one.
        check_dim::<F, L, _>(Ix2(300, 768), 1);
        check_dim::<F, L, _>(Ix3(90, 24, 32), 2);
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
