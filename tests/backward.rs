//! The backward pass: gradients against central finite differences, an independent direct
//! evaluation of the parameter gradients, structural properties, degenerate rows, layouts and
//! errors.

// The f32/f64 test macro widens with `f64::from`, a no-op in its f64 instance.
#![allow(clippy::useless_conversion)]

use ndarray::{s, Array, Array1, Array2, Array3, ArrayD, Axis, IxDyn, ShapeBuilder};
use ndarray_layernorm::{Error, LayerNorm};
use ndarray_rand::rand_distr::{StandardNormal, Uniform};
use ndarray_rand::RandomExt;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `loss(x) = sum(forward(x) * w)`, whose gradient with respect to the output is `w`.
fn loss(ln: &LayerNorm<f64>, x: &ArrayD<f64>, w: &ArrayD<f64>) -> f64 {
    let y = ln.forward(x).unwrap();
    // Exact-ish dot product: the loss differences are tiny, so sum with compensation.
    let mut sum = 0.0f64;
    let mut c = 0.0f64;
    for (a, b) in y.iter().zip(w) {
        let t = a * b - c;
        let s = sum + t;
        c = (s - sum) - t;
        sum = s;
    }
    sum
}

/// Central differences of `loss` with respect to every element of `x`.
fn finite_diff_input(ln: &LayerNorm<f64>, x: &ArrayD<f64>, w: &ArrayD<f64>) -> ArrayD<f64> {
    let mut out = ArrayD::zeros(x.raw_dim());
    for (idx, o) in out.indexed_iter_mut() {
        let h = 1e-6 * x[&idx].abs().max(1.0);
        let mut xp = x.clone();
        xp[&idx] += h;
        let mut xm = x.clone();
        xm[&idx] -= h;
        *o = (loss(ln, &xp, w) - loss(ln, &xm, w)) / (xp[&idx] - xm[&idx]);
    }
    out
}

/// Max over elements of |a - b|, relative to the largest |b|.
fn rel_max_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn layers(n: usize, seed: u64) -> Vec<LayerNorm<f64>> {
    let mut r = rng(seed);
    let gamma = Array1::random_using(n, Uniform::new(0.5, 2.0).unwrap(), &mut r);
    let beta = Array1::random_using(n, StandardNormal, &mut r);
    vec![
        LayerNorm::new(1e-5).unwrap(),
        LayerNorm::new(1e-3)
            .unwrap()
            .with_gamma(gamma.clone())
            .unwrap(),
        LayerNorm::new(1e-5)
            .unwrap()
            .with_gamma(gamma)
            .unwrap()
            .with_beta(beta)
            .unwrap(),
    ]
}

#[test]
fn input_gradient_matches_central_differences() {
    for (k, shape) in [vec![1, 7], vec![3, 5], vec![2, 3, 9], vec![4, 1, 2, 17]]
        .into_iter()
        .enumerate()
    {
        let n = *shape.last().unwrap();
        let mut r = rng(100 + k as u64);
        let x = ArrayD::random_using(IxDyn(&shape), StandardNormal, &mut r) * 2.0 + 0.5;
        let w = ArrayD::random_using(IxDyn(&shape), StandardNormal, &mut r);
        for ln in layers(n, k as u64) {
            let grads = ln.backward(&x, &w).unwrap();
            let fd = finite_diff_input(&ln, &x, &w);
            let err = rel_max_diff(&grads.input, &fd);
            assert!(err < 1e-6, "shape {shape:?}: relative error {err:e}");
        }
    }
}

#[test]
fn parameter_gradients_match_central_differences() {
    let shape = [3, 4, 6];
    let mut r = rng(7);
    let x = ArrayD::random_using(IxDyn(&shape), StandardNormal, &mut r);
    let w = ArrayD::random_using(IxDyn(&shape), StandardNormal, &mut r);
    let gamma = Array1::random_using(6, Uniform::new(0.5, 2.0).unwrap(), &mut r);
    let beta = Array1::random_using(6, StandardNormal, &mut r);
    let make = |g: &Array1<f64>, b: &Array1<f64>| {
        LayerNorm::new(1e-5)
            .unwrap()
            .with_gamma(g.clone())
            .unwrap()
            .with_beta(b.clone())
            .unwrap()
    };
    let grads = make(&gamma, &beta).backward(&x, &w).unwrap();
    let (dgamma, dbeta) = (grads.gamma.unwrap(), grads.beta.unwrap());
    for j in 0..6 {
        let h = 1e-6;
        let (mut gp, mut gm) = (gamma.clone(), gamma.clone());
        gp[j] += h;
        gm[j] -= h;
        let fd =
            (loss(&make(&gp, &beta), &x, &w) - loss(&make(&gm, &beta), &x, &w)) / (gp[j] - gm[j]);
        assert!(
            (fd - dgamma[j]).abs() <= 1e-6 * dgamma[j].abs().max(1.0),
            "dgamma[{j}]: {fd} vs {}",
            dgamma[j]
        );
        let (mut bp, mut bm) = (beta.clone(), beta.clone());
        bp[j] += h;
        bm[j] -= h;
        let fd =
            (loss(&make(&gamma, &bp), &x, &w) - loss(&make(&gamma, &bm), &x, &w)) / (bp[j] - bm[j]);
        assert!(
            (fd - dbeta[j]).abs() <= 1e-6 * dbeta[j].abs().max(1.0),
            "dbeta[{j}]: {fd} vs {}",
            dbeta[j]
        );
    }
}

#[test]
fn parameter_gradients_are_some_exactly_when_the_layer_has_the_parameter() {
    let x = Array2::<f32>::ones((2, 3));
    let dy = Array2::<f32>::ones((2, 3));
    let plain = LayerNorm::<f32>::default().backward(&x, &dy).unwrap();
    assert!(plain.gamma.is_none() && plain.beta.is_none());
    let g = LayerNorm::<f32>::default()
        .with_gamma(Array1::ones(3))
        .unwrap();
    let grads = g.backward(&x, &dy).unwrap();
    assert!(grads.gamma.is_some() && grads.beta.is_none());
    let b = LayerNorm::<f32>::default()
        .with_beta(Array1::ones(3))
        .unwrap();
    let grads = b.backward(&x, &dy).unwrap();
    assert!(grads.gamma.is_none() && grads.beta.is_some());
    let both = LayerNorm::<f32>::affine(3, 1e-5)
        .unwrap()
        .backward(&x, &dy)
        .unwrap();
    assert!(both.gamma.is_some() && both.beta.is_some());
}

/// dbeta is the column sum of dy, dgamma the column sum of dy * xhat; computed here directly
/// with a naive two-pass normalization (sums in a different order than the library's).
#[test]
fn parameter_gradients_are_column_sums() {
    let mut r = rng(11);
    let x: Array2<f64> = Array::random_using((200, 7), StandardNormal, &mut r);
    let dy: Array2<f64> = Array::random_using((200, 7), StandardNormal, &mut r);
    let ln = LayerNorm::<f64>::affine(7, 1e-5).unwrap();
    let grads = ln.backward(&x, &dy).unwrap();
    let mut dgamma = Array1::<f64>::zeros(7);
    for (row, dyr) in x.outer_iter().zip(dy.outer_iter()) {
        let n = row.len() as f64;
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        for j in 0..7 {
            dgamma[j] += dyr[j] * (row[j] - mean) / (var + 1e-5).sqrt();
        }
    }
    let dbeta = dy.sum_axis(Axis(0));
    for j in 0..7 {
        assert!((grads.gamma.as_ref().unwrap()[j] - dgamma[j]).abs() < 1e-12);
        assert!((grads.beta.as_ref().unwrap()[j] - dbeta[j]).abs() < 1e-12);
    }
}

macro_rules! for_each_float {
    ($($name:ident => $body:item)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                mod f32 { #[allow(unused_imports)] use super::*; #[allow(dead_code)] type F = f32; $body }
                mod f64 { #[allow(unused_imports)] use super::*; #[allow(dead_code)] type F = f64; $body }
            }
        )*
    };
}

for_each_float! {
    input_gradient_rows_sum_to_zero_and_are_orthogonal_to_xhat => #[test] fn check() {
        // With gamma = 1 and eps = 0: sum_j dx_j = 0 and sum_j xhat_j dx_j = 0.
        let mut r = rng(3);
        let x: Array2<F> = Array::random_using((50, 33), StandardNormal, &mut r);
        let dy: Array2<F> = Array::random_using((50, 33), StandardNormal, &mut r);
        let ln = LayerNorm::<F>::new(0.0).unwrap();
        let dx = ln.backward(&x, &dy).unwrap().input;
        let xhat = ln.forward(&x).unwrap();
        for (row, xh) in dx.outer_iter().zip(xhat.outer_iter()) {
            let scale: f64 = row.iter().map(|v| f64::from(*v).abs()).sum::<f64>();
            let sum: f64 = row.iter().map(|v| f64::from(*v)).sum();
            let dot: f64 = row.iter().zip(&xh).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            let tol = 8.0 * f64::from(F::EPSILON) * scale;
            assert!(sum.abs() <= tol, "row sum {sum:e} > {tol:e}");
            assert!(dot.abs() <= 4.0 * tol, "dot with xhat {dot:e}");
        }
    }

    one_element_rows_have_exactly_zero_gradient => #[test] fn check() {
        let x: Array2<F> = Array2::from_shape_vec((3, 1), vec![1.5, -2.0, 1e6]).unwrap();
        let dy: Array2<F> = Array2::from_shape_vec((3, 1), vec![0.3, 7.0, -1.0]).unwrap();
        for eps in [0.0, 1e-5] {
            let ln = LayerNorm::<F>::affine(1, eps).unwrap();
            let grads = ln.backward(&x, &dy).unwrap();
            assert!(grads.input.iter().all(|v| *v == 0.0));
            assert_eq!(grads.gamma.unwrap()[0], 0.0);
            assert_eq!(grads.beta.unwrap()[0], 0.3 + 7.0 - 1.0);
        }
    }

    constant_rows_have_finite_gradients => #[test] fn check() {
        let x: Array2<F> = Array2::from_elem((2, 4), 3.7);
        let dy: Array2<F> = Array2::from_shape_vec((2, 4), vec![1.0, 2.0, 3.0, 6.0, 0.5, 0.5, 0.5, 0.5]).unwrap();
        // eps > 0: the true gradient (g - mean(g)) / sqrt(eps).
        let ln = LayerNorm::<F>::affine(4, 0.25).unwrap();
        let grads = ln.backward(&x, &dy).unwrap();
        let expected: [F; 8] = [-4.0, -2.0, 0.0, 6.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(grads.input.iter().copied().collect::<Vec<F>>(), expected.to_vec());
        assert!(grads.gamma.unwrap().iter().all(|v| *v == 0.0));
        // eps = 0: defined as 0.
        let ln = LayerNorm::<F>::affine(4, 0.0).unwrap();
        let grads = ln.backward(&x, &dy).unwrap();
        assert!(grads.input.iter().all(|v| *v == 0.0));
        assert!(grads.gamma.unwrap().iter().all(|v| *v == 0.0));
        let (_, stats) = ln.forward_with_stats(&x).unwrap();
        assert!(stats.rstd.iter().all(|r| *r == F::INFINITY));
        let saved = ln.backward_with_stats(&x, &stats, &dy).unwrap();
        assert!(saved.input.iter().all(|v| *v == 0.0));
    }

    layouts_give_the_same_bits => #[test] fn check() {
        let mut r = rng(5);
        let base: Array3<F> = Array::random_using((3, 130, 19), StandardNormal, &mut r);
        let dy: Array3<F> = Array::random_using((3, 130, 19), StandardNormal, &mut r);
        let gamma = Array1::random_using(19, StandardNormal, &mut r);
        let ln = LayerNorm::<F>::new(1e-5).unwrap().with_gamma(gamma).unwrap()
            .with_beta(Array1::ones(19)).unwrap();
        let reference = ln.backward(&base, &dy).unwrap();
        // Fortran order.
        let mut xf = Array3::<F>::zeros((3, 130, 19).f());
        xf.assign(&base);
        let mut dyf = Array3::<F>::zeros((3, 130, 19).f());
        dyf.assign(&dy);
        let g = ln.backward(&xf, &dyf).unwrap();
        assert_bits_eq(&g.input, &reference.input);
        assert_eq!(bits(g.gamma.as_ref().unwrap()), bits(reference.gamma.as_ref().unwrap()));
        assert_eq!(bits(g.beta.as_ref().unwrap()), bits(reference.beta.as_ref().unwrap()));
        // A permuted, stepped view of a larger array holding the same logical values.
        let mut big = Array3::<F>::zeros((19 * 2, 3, 130));
        big.slice_mut(s![..;2, .., ..]).assign(&base.view().permuted_axes([2, 0, 1]));
        let view = big.slice(s![..;2, .., ..]).permuted_axes([1, 2, 0]);
        let g = ln.backward(&view, &dy).unwrap();
        assert_bits_eq(&g.input, &reference.input);
        assert_eq!(bits(g.gamma.as_ref().unwrap()), bits(reference.gamma.as_ref().unwrap()));
        // Dynamic dimension.
        let g = ln.backward(&base.clone().into_dyn(), &dy.clone().into_dyn()).unwrap();
        assert_eq!(g.input.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                   reference.input.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        assert_eq!(bits(g.gamma.as_ref().unwrap()), bits(reference.gamma.as_ref().unwrap()));
    }

    backward_with_saved_stats_is_close_to_backward => #[test] fn check() {
        let mut r = rng(9);
        let x: Array2<F> = Array::random_using((40, 24), StandardNormal, &mut r);
        let dy: Array2<F> = Array::random_using((40, 24), StandardNormal, &mut r);
        let ln = LayerNorm::<F>::affine(24, 1e-5).unwrap();
        let (_, stats) = ln.forward_with_stats(&x).unwrap();
        let saved = ln.backward_with_stats(&x, &stats, &dy).unwrap();
        let fresh = ln.backward(&x, &dy).unwrap();
        for (a, b) in saved.input.iter().zip(&fresh.input) {
            assert!((*a - *b).abs() <= 16.0 * F::EPSILON * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    nan_rows_poison_their_input_gradient_only => #[test] fn check() {
        let mut x: Array2<F> = Array2::from_shape_fn((3, 5), |(i, j)| (i * 5 + j) as F * 0.25);
        let dy: Array2<F> = Array2::from_elem((3, 5), 1.0);
        x[[1, 2]] = F::NAN;
        let grads = LayerNorm::<F>::default().backward(&x, &dy).unwrap();
        assert!(grads.input.row(1).iter().all(|v| v.is_nan()));
        assert!(grads.input.row(0).iter().all(|v| v.is_finite()));
        assert!(grads.input.row(2).iter().all(|v| v.is_finite()));
    }

    mismatched_shapes_are_errors => #[test] fn check() {
        let ln = LayerNorm::<F>::affine(4, 1e-5).unwrap();
        let x = Array2::<F>::zeros((3, 4));
        let err = ln.backward(&x, &Array2::<F>::zeros((4, 3))).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { expected: vec![3, 4], actual: vec![4, 3] });
        let err = ln.backward(&Array2::<F>::zeros((3, 5)), &Array2::<F>::zeros((3, 5))).unwrap_err();
        assert!(matches!(err, Error::ParamLength { expected: 5, actual: 4, .. }));
        let (_, mut stats) = ln.forward_with_stats(&x).unwrap();
        stats.rstd = Array1::zeros(2);
        let err = ln.backward_with_stats(&x, &stats, &x).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { expected: vec![3], actual: vec![2] });
        let x0 = ndarray::arr0(F::one()).into_dyn();
        assert_eq!(LayerNorm::<F>::default().backward(&x0, &x0).unwrap_err(), Error::ZeroDimensional);
    }

    empty_inputs_give_empty_gradients => #[test] fn check() {
        let ln = LayerNorm::<F>::affine(0, 1e-5).unwrap();
        let x = Array2::<F>::zeros((3, 0));
        let g = ln.backward(&x, &x).unwrap();
        assert_eq!(g.input.shape(), &[3, 0]);
        assert_eq!(g.gamma.unwrap().len(), 0);
        let ln = LayerNorm::<F>::affine(4, 1e-5).unwrap();
        let x = Array2::<F>::zeros((0, 4));
        let g = ln.backward(&x, &x).unwrap();
        assert_eq!(g.input.shape(), &[0, 4]);
        assert_eq!(g.gamma.unwrap().into_raw_vec_and_offset().0, vec![0.0; 4]);
    }
}

use num_traits::One;

fn bits<F: ndarray_layernorm::Float>(a: &ndarray::ArrayD<F>) -> Vec<u64> {
    a.iter().map(|v| v.to_f64().unwrap().to_bits()).collect()
}

fn assert_bits_eq<F: ndarray_layernorm::Float>(
    a: &Array<F, ndarray::Ix3>,
    b: &Array<F, ndarray::Ix3>,
) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.to_f64().unwrap().to_bits(), y.to_f64().unwrap().to_bits());
    }
}
