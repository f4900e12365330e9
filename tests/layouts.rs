//! Results are bitwise identical whatever the memory layout of the input.
//!
//! Each test builds one logical array twice: once in standard (row-major, contiguous) layout and
//! once in another layout (Fortran order, transposed, stepped, negative strides, inverted axes,
//! dynamic dimension, permuted axes), and checks that `forward`, `forward_inplace`,
//! `forward_with_stats` and `moments` agree bit for bit. Row lengths cover the unrolled and the
//! remainder paths of the kernels.

#[path = "common/support.rs"]
mod support;

use ndarray::{s, Array, Array1, Array2, ArrayRef, Axis, Dimension, ShapeBuilder};
use ndarray_layernorm::{moments, LayerNorm};

use support::{assert_bitwise_eq, fortran_copy, random_array, random_rows, same_bits, TestFloat};

/// Row lengths: single element, shorter than any unroll, exact and off-by-one multiples of
/// typical unroll widths, and long rows.
const COLS: [usize; 8] = [1, 2, 3, 8, 9, 16, 33, 100];

/// The same logical array in standard layout (`to_owned` would keep the memory order).
fn standard_copy<F: TestFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Array<F, D> {
    let out = Array::from_shape_vec(x.raw_dim(), x.iter().copied().collect()).unwrap();
    assert!(out.is_standard_layout());
    out
}

/// Seeded random rows with varied offsets and scales, plus a constant row.
fn data<F: TestFloat>(rows: usize, cols: usize, seed: u64) -> Array2<F> {
    let mut x = random_rows::<F>(rows, cols, seed);
    if rows > 2 {
        x.row_mut(2).fill(F::of(2.5));
    }
    x
}

/// Layers exercised by every layout test: default, eps 0, and affine with non-trivial
/// parameters.
fn layers<F: TestFloat>(cols: usize) -> Vec<LayerNorm<F>> {
    let gamma: Array1<F> = (0..cols).map(|i| F::of(0.5 + 0.25 * i as f64)).collect();
    let beta: Array1<F> = (0..cols).map(|i| F::of(1.0 - 0.125 * i as f64)).collect();
    vec![
        LayerNorm::default(),
        LayerNorm::new(F::of(0.0)).unwrap(),
        LayerNorm::new(F::of(0.1))
            .unwrap()
            .with_gamma(gamma)
            .unwrap()
            .with_beta(beta)
            .unwrap(),
    ]
}

/// Asserts that every entry point gives bitwise the same results for `other` as for
/// `reference` (same logical array, standard layout), and that `forward`,
/// `forward_inplace` and `forward_with_stats` agree with each other.
fn assert_same_results<F: TestFloat, D: Dimension>(
    reference: &ArrayRef<F, D>,
    other: &ArrayRef<F, D>,
    what: &str,
) {
    assert!(reference.is_standard_layout(), "{what}: reference layout");
    assert_eq!(reference.shape(), other.shape(), "{what}: logical shapes");
    let cols = reference.shape().last().copied().unwrap();
    for (k, ln) in layers::<F>(cols).iter().enumerate() {
        let what = format!("{what}, layer {k}");
        let (y_ref, stats_ref) = ln.forward_with_stats(reference).unwrap();
        let y = ln.forward(reference).unwrap();
        assert_bitwise_eq(&y, &y_ref, &format!("{what}: forward vs with_stats"));
        let mut inplace = standard_copy(reference);
        ln.forward_inplace(&mut inplace).unwrap();
        assert_bitwise_eq(&inplace, &y_ref, &format!("{what}: in place vs with_stats"));

        let y = ln.forward(other).unwrap();
        assert!(y.is_standard_layout(), "{what}: output layout");
        assert_bitwise_eq(&y, &y_ref, &format!("{what}: forward"));
        let (y, stats) = ln.forward_with_stats(other).unwrap();
        assert!(y.is_standard_layout(), "{what}: with_stats output layout");
        assert_bitwise_eq(&y, &y_ref, &format!("{what}: with_stats output"));
        assert_bitwise_eq(&stats.mean, &stats_ref.mean, &format!("{what}: mean"));
        assert_bitwise_eq(&stats.rstd, &stats_ref.rstd, &format!("{what}: rstd"));
    }
    let m_ref = moments(reference).unwrap();
    let m = moments(other).unwrap();
    assert_bitwise_eq(&m.mean, &m_ref.mean, &format!("{what}: moments mean"));
    assert_bitwise_eq(&m.var, &m_ref.var, &format!("{what}: moments var"));
}

/// [`assert_same_results`] for `view` against a standard-layout copy of it.
fn assert_same_as_copy<F: TestFloat, D: Dimension>(view: &ArrayRef<F, D>, what: &str, cols: usize) {
    let what = format!("{what}, {cols} cols");
    assert_same_results(&standard_copy(view), view, &what);
}

/// Asserts that `forward_inplace` on `target` (any layout, logically equal to
/// `reference`) writes bitwise the result of `forward(reference)`.
fn assert_inplace_matches<F: TestFloat, D: Dimension>(
    ln: &LayerNorm<F>,
    reference: &ArrayRef<F, D>,
    target: &mut ArrayRef<F, D>,
    what: &str,
) {
    let expected = ln.forward(reference).unwrap();
    ln.forward_inplace(target).unwrap();
    assert_bitwise_eq(target, &expected, what);
}

fn fortran_order_copy_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x = data::<F>(7, cols, i as u64);
        let what = format!("fortran copy, {cols} cols");
        assert_same_results(&x, &fortran_copy(&x), &what);
    }
}

fn fortran_order_from_shape_vec_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x = data::<F>(5, cols, 100 + i as u64);
        let column_major: Vec<F> = x.t().iter().copied().collect();
        let f = Array2::from_shape_vec((5, cols).f(), column_major).unwrap();
        assert!(f.t().is_standard_layout() || cols == 1);
        assert_same_results(&x, &f, &format!("from_shape_vec f, {cols} cols"));
    }
}

fn reversed_axes_of_transposed_copy_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x = data::<F>(6, cols, 200 + i as u64);
        let f = standard_copy(&x.t()).reversed_axes();
        assert_same_results(&x, &f, &format!("reversed_axes, {cols} cols"));
    }
}

fn transposed_view_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let base = data::<F>(cols, 6, 300 + i as u64);
        let view = base.t();
        assert_same_as_copy(&view, "t()", cols);
    }
}

fn column_stepped_slice_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let base = data::<F>(5, 2 * cols, 400 + i as u64);
        let view = base.slice(s![.., ..;2]);
        assert_eq!(view.ncols(), cols);
        assert_same_as_copy(&view, "..;2", cols);
        let base = data::<F>(4, 3 * cols + 1, 450 + i as u64);
        let view = base.slice(s![1.., 1..;3]);
        assert_eq!(view.ncols(), cols);
        assert_same_as_copy(&view, "1..;3", cols);
    }
}

fn row_stepped_slice_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let base = data::<F>(9, cols, 500 + i as u64);
        let view = base.slice(s![..;3, ..]);
        assert_same_as_copy(&view, "rows ..;3", cols);
    }
}

fn negative_column_stride_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        // The view reverses each row; the reference holds the same reversed rows.
        let base = data::<F>(5, cols, 600 + i as u64);
        let view = base.slice(s![.., ..;-1]);
        assert_same_as_copy(&view, "..;-1", cols);
        let base = data::<F>(5, 2 * cols, 650 + i as u64);
        let view = base.slice(s![.., ..;-2]);
        assert_same_as_copy(&view, "..;-2", cols);
    }
}

fn negative_row_stride_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let base = data::<F>(6, cols, 700 + i as u64);
        let view = base.slice(s![..;-1, ..]);
        assert_same_as_copy(&view, "rows ..;-1", cols);
        let view = base.slice(s![..;-2, ..;-1]);
        assert_same_as_copy(&view, "both negative", cols);
    }
}

fn inverted_axes_give_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x = data::<F>(5, cols, 800 + i as u64);
        for axes in [&[1][..], &[0], &[0, 1]] {
            let mut inv = x.clone();
            for &a in axes {
                inv.invert_axis(Axis(a));
            }
            let what = format!("invert_axis {axes:?}, {cols} cols");
            assert_same_results(&standard_copy(&inv), &inv, &what);
        }
    }
}

fn dynamic_dimension_gives_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x = data::<F>(4, cols, 900 + i as u64);
        let dynamic = x.clone().into_dyn();
        for (k, ln) in layers::<F>(cols).iter().enumerate() {
            let (y, stats) = ln.forward_with_stats(&x).unwrap();
            let (yd, statsd) = ln.forward_with_stats(&dynamic).unwrap();
            let what = format!("IxDyn, {cols} cols, layer {k}");
            assert_bitwise_eq(&yd, &y.into_dyn(), &what);
            assert_bitwise_eq(&statsd.mean, &stats.mean.into_dyn(), &what);
            assert_bitwise_eq(&statsd.rstd, &stats.rstd.into_dyn(), &what);
        }
        let f = fortran_copy(&dynamic);
        assert_same_results(&dynamic, &f, &format!("IxDyn fortran, {cols} cols"));
        let t = x.t().into_dyn();
        assert_same_as_copy(&t, "IxDyn t()", cols);
    }
}

fn each_row_of_a_matrix_is_normalized_as_a_one_dimensional_array<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x = data::<F>(5, cols, 1000 + i as u64);
        let xt = standard_copy(&x.t());
        for ln in layers::<F>(cols) {
            let (y, stats) = ln.forward_with_stats(&x).unwrap();
            for r in 0..x.nrows() {
                let (yr, sr) = ln.forward_with_stats(&x.row(r)).unwrap();
                assert_bitwise_eq(&yr, &y.row(r), &format!("row {r}, {cols} cols"));
                assert!(same_bits(sr.mean[()], stats.mean[r]), "mean of row {r}");
                assert!(same_bits(sr.rstd[()], stats.rstd[r]), "rstd of row {r}");
                // A column of the transposed copy is the same row with stride > 1.
                let strided = xt.column(r);
                let ys = ln.forward(&strided).unwrap();
                let what = format!("strided row {r}, {cols} cols");
                assert_bitwise_eq(&ys, &y.row(r), &what);
            }
        }
    }
}

fn three_and_four_dimensional_inputs_match_their_two_dimensional_reshape<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x4 = random_array::<F, _>((2, 3, 2, cols), 1100 + i as u64);
        let x3 = x4.clone().into_shape_with_order((6, 2, cols)).unwrap();
        let x2 = x4.clone().into_shape_with_order((12, cols)).unwrap();
        for (k, ln) in layers::<F>(cols).iter().enumerate() {
            let what = format!("{cols} cols, layer {k}");
            let (y2, s2) = ln.forward_with_stats(&x2).unwrap();
            let (y3, s3) = ln.forward_with_stats(&x3).unwrap();
            let (y4, s4) = ln.forward_with_stats(&x4).unwrap();
            assert_eq!(s3.mean.shape(), &[6, 2]);
            assert_eq!(s4.rstd.shape(), &[2, 3, 2]);
            let flat = |a: &ArrayRef<F, _>| -> Array2<F> {
                standard_copy(a).into_shape_with_order((12, cols)).unwrap()
            };
            assert_bitwise_eq(&flat(&y3.view().into_dyn()), &y2, &what);
            assert_bitwise_eq(&flat(&y4.view().into_dyn()), &y2, &what);
            let flat_stats = |a: &ArrayRef<F, _>| -> Array1<F> { a.iter().copied().collect() };
            assert_bitwise_eq(&flat_stats(&s3.mean.view().into_dyn()), &s2.mean, &what);
            assert_bitwise_eq(&flat_stats(&s4.mean.view().into_dyn()), &s2.mean, &what);
            assert_bitwise_eq(&flat_stats(&s4.rstd.view().into_dyn()), &s2.rstd, &what);
        }
    }
}

fn non_standard_three_and_four_dimensional_layouts_give_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let seed = 1200 + i as u64;
        let x3 = random_array::<F, _>((3, 4, cols), seed);
        assert_same_results(&x3, &fortran_copy(&x3), &format!("3-D fortran, {cols}"));
        let base = random_array::<F, _>((cols, 4, 3), seed + 50);
        let t = base.t();
        assert_same_as_copy(&t, "3-D t()", cols);
        let v = x3.slice(s![..;-2, 1..;2, ..;-1]);
        assert_same_as_copy(&v, "3-D slice", cols);

        let x4 = random_array::<F, _>((2, 3, 4, cols), seed + 100);
        assert_same_results(&x4, &fortran_copy(&x4), &format!("4-D fortran, {cols}"));
        let p = x4.view().permuted_axes([2, 0, 1, 3]);
        assert_same_as_copy(&p, "4-D permuted", cols);
        let base = random_array::<F, _>((cols, 2, 3, 4), seed + 150);
        let p = base.view().permuted_axes([1, 2, 3, 0]);
        assert_same_as_copy(&p, "4-D last axis moved", cols);
        let d = p.into_dyn();
        assert_same_as_copy(&d, "4-D IxDyn permuted", cols);
    }
}

fn forward_inplace_on_non_standard_layouts_writes_bitwise_identical_results<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x = data::<F>(6, cols, 1300 + i as u64);
        for (k, ln) in layers::<F>(cols).iter().enumerate() {
            let what = |l: &str| format!("in place {l}, {cols} cols, layer {k}");

            let mut f = fortran_copy(&x);
            assert_inplace_matches(ln, &x, &mut f, &what("fortran"));
            assert!(f.t().is_standard_layout() || cols == 1, "layout kept");

            let mut base = standard_copy(&x.t());
            let mut t = base.view_mut().reversed_axes();
            assert_inplace_matches(ln, &x, &mut t, &what("transposed view"));

            let mut inv = x.clone();
            inv.invert_axis(Axis(1));
            let reference = standard_copy(&inv);
            assert_inplace_matches(ln, &reference, &mut inv, &what("inverted"));

            let mut dynamic = fortran_copy(&x).into_dyn();
            let reference = x.clone().into_dyn();
            assert_inplace_matches(ln, &reference, &mut dynamic, &what("IxDyn"));
        }
    }
}

fn forward_inplace_on_a_stepped_view_writes_only_the_viewed_elements<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let original = data::<F>(8, 2 * cols, 1400 + i as u64);
        let ln = &layers::<F>(cols)[2];

        let mut base = original.clone();
        let reference = standard_copy(&original.slice(s![..;2, ..;2]));
        let mut view = base.slice_mut(s![..;2, ..;2]);
        let what = format!("..;2, {cols} cols");
        assert_inplace_matches(ln, &reference, &mut view, &what);
        assert_bitwise_eq(
            &base.slice(s![.., 1..;2]),
            &original.slice(s![.., 1..;2]),
            "odd columns untouched",
        );
        assert_bitwise_eq(
            &base.slice(s![1..;2, ..]),
            &original.slice(s![1..;2, ..]),
            "odd rows untouched",
        );

        let mut base = original.clone();
        let reference = standard_copy(&original.slice(s![.., ..;-2]));
        let mut view = base.slice_mut(s![.., ..;-2]);
        let what = format!("..;-2, {cols} cols");
        assert_inplace_matches(ln, &reference, &mut view, &what);
        assert_bitwise_eq(
            &base.slice(s![.., ..;2]),
            &original.slice(s![.., ..;2]),
            "even columns untouched",
        );
    }
}

fn gamma_and_beta_with_non_standard_strides_act_in_logical_order<F: TestFloat>() {
    for (i, &cols) in COLS.iter().enumerate() {
        let x = data::<F>(5, cols, 1500 + i as u64);
        let g_std: Array1<F> = (0..cols).map(|j| F::of(1.0 + 0.5 * j as f64)).collect();
        let b_std: Array1<F> = (0..cols).map(|j| F::of(j as f64 / 4.0 - 1.0)).collect();
        let expected = LayerNorm::<F>::new(F::of(1e-3))
            .unwrap()
            .with_gamma(g_std.clone())
            .unwrap()
            .with_beta(b_std.clone())
            .unwrap()
            .forward(&x)
            .unwrap();

        // Owned parameters with a negative stride (same logical contents).
        let mut g_neg: Array1<F> = g_std.iter().rev().copied().collect();
        g_neg.invert_axis(Axis(0));
        let mut b_neg: Array1<F> = b_std.iter().rev().copied().collect();
        b_neg.invert_axis(Axis(0));
        assert_eq!(g_neg, g_std);
        // Owned parameters with stride 2.
        let mut g_step: Array1<F> = g_std.iter().flat_map(|&g| [g, F::nan()]).collect();
        g_step.slice_collapse(s![..;2]);
        let mut b_step: Array1<F> = b_std.iter().flat_map(|&b| [b, F::nan()]).collect();
        b_step.slice_collapse(s![..;2]);
        assert_eq!(b_step, b_std);

        let variants = [
            (g_neg, b_neg, "negative stride"),
            (g_step, b_step, "stride 2"),
        ];
        for (g, b, what) in variants {
            let ln = LayerNorm::<F>::new(F::of(1e-3))
                .unwrap()
                .with_gamma(g)
                .unwrap()
                .with_beta(b)
                .unwrap();
            let what = format!("{what} parameters, {cols} cols");
            assert_bitwise_eq(&ln.forward(&x).unwrap(), &expected, &what);
            let y = ln.forward(&fortran_copy(&x)).unwrap();
            assert_bitwise_eq(&y, &expected, &what);
            let mut y = x.clone();
            ln.forward_inplace(&mut y).unwrap();
            assert_bitwise_eq(&y, &expected, &what);
        }
    }
}

fn special_values_keep_layout_independence<F: TestFloat>() {
    // NaN, infinity, single-element and empty rows in a Fortran / reversed layout.
    for &cols in &COLS {
        let mut x = data::<F>(6, cols, 1600 + cols as u64);
        x[[0, cols / 2]] = F::nan();
        x[[4, cols - 1]] = F::infinity();
        assert_same_results(&x, &fortran_copy(&x), &format!("special, {cols} cols"));
        let v = x.slice(s![..;-1, ..;-1]);
        assert_same_as_copy(&v, "special rev", cols);
    }
    let empty = Array2::<F>::zeros((4, 0));
    let ln = LayerNorm::<F>::default();
    let (y, s) = ln.forward_with_stats(&fortran_copy(&empty)).unwrap();
    assert_eq!(y.shape(), &[4, 0]);
    assert!(s.mean.iter().all(|v| v.is_nan()));
}

/// Instantiates each generic test above for `f32` and `f64`.
macro_rules! for_f32_and_f64 {
    ($($name:ident),* $(,)?) => {
        mod f32_layouts {
            $(#[test]
            fn $name() {
                super::$name::<f32>();
            })*
        }
        mod f64_layouts {
            $(#[test]
            fn $name() {
                super::$name::<f64>();
            })*
        }
    };
}

for_f32_and_f64!(
    fortran_order_copy_gives_bitwise_identical_results,
    fortran_order_from_shape_vec_gives_bitwise_identical_results,
    reversed_axes_of_transposed_copy_gives_bitwise_identical_results,
    transposed_view_gives_bitwise_identical_results,
    column_stepped_slice_gives_bitwise_identical_results,
    row_stepped_slice_gives_bitwise_identical_results,
    negative_column_stride_gives_bitwise_identical_results,
    negative_row_stride_gives_bitwise_identical_results,
    inverted_axes_give_bitwise_identical_results,
    dynamic_dimension_gives_bitwise_identical_results,
    each_row_of_a_matrix_is_normalized_as_a_one_dimensional_array,
    three_and_four_dimensional_inputs_match_their_two_dimensional_reshape,
    non_standard_three_and_four_dimensional_layouts_give_bitwise_identical_results,
    forward_inplace_on_non_standard_layouts_writes_bitwise_identical_results,
    forward_inplace_on_a_stepped_view_writes_only_the_viewed_elements,
    gamma_and_beta_with_non_standard_strides_act_in_logical_order,
    special_values_keep_layout_independence,
);
