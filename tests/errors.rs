//! Every `Error` variant, every rejected input, and the documented non-error policies for
//! non-finite values and empty inputs.

#[path = "common/support.rs"]
mod support;

use ndarray_layernorm::{Error, Param};

macro_rules! error_tests {
    ($module:ident, $float:ty) => {
        mod $module {
            use ndarray::{arr0, arr1, arr2, s, Array1, Array2, Array3, ArrayD, Axis, IxDyn};
            use ndarray_layernorm::{moments, Error, LayerNorm, Param};

            use super::support::{assert_bitwise_eq, random_rows, TestFloat};

            type F = $float;

            fn invalid_epsilon(result: Result<LayerNorm<F>, Error>) -> f64 {
                match result {
                    Err(Error::InvalidEpsilon { epsilon }) => epsilon,
                    other => panic!("expected InvalidEpsilon, got {other:?}"),
                }
            }

            #[test]
            fn new_rejects_negative_epsilon() {
                assert_eq!(invalid_epsilon(LayerNorm::<F>::new(F::of(-1.0))), -1.0);
                assert_eq!(
                    LayerNorm::<F>::new(F::of(-1.0)).unwrap_err(),
                    Error::InvalidEpsilon { epsilon: -1.0 }
                );
                let tiny = F::MIN_POSITIVE;
                assert_eq!(invalid_epsilon(LayerNorm::<F>::new(-tiny)), -tiny.f64());
            }

            #[test]
            fn new_rejects_nan_epsilon() {
                assert!(invalid_epsilon(LayerNorm::<F>::new(F::NAN)).is_nan());
            }

            #[test]
            fn new_rejects_positive_infinite_epsilon() {
                assert_eq!(
                    invalid_epsilon(LayerNorm::<F>::new(F::INFINITY)),
                    f64::INFINITY
                );
            }

            #[test]
            fn new_rejects_negative_infinite_epsilon() {
                assert_eq!(
                    invalid_epsilon(LayerNorm::<F>::new(F::NEG_INFINITY)),
                    f64::NEG_INFINITY
                );
            }

            #[test]
            fn affine_rejects_negative_epsilon() {
                assert_eq!(
                    LayerNorm::<F>::affine(4, F::of(-1.0)).unwrap_err(),
                    Error::InvalidEpsilon { epsilon: -1.0 }
                );
            }

            #[test]
            fn affine_rejects_nan_epsilon() {
                assert!(invalid_epsilon(LayerNorm::<F>::affine(4, F::NAN)).is_nan());
            }

            #[test]
            fn affine_rejects_positive_infinite_epsilon() {
                assert_eq!(
                    invalid_epsilon(LayerNorm::<F>::affine(4, F::INFINITY)),
                    f64::INFINITY
                );
            }

            #[test]
            fn affine_rejects_negative_infinite_epsilon() {
                assert_eq!(
                    invalid_epsilon(LayerNorm::<F>::affine(0, F::NEG_INFINITY)),
                    f64::NEG_INFINITY
                );
            }

            #[test]
            fn zero_and_large_finite_epsilons_are_accepted() {
                for eps in [F::of(0.0), F::MIN_POSITIVE, F::of(1e-5), F::MAX] {
                    assert_eq!(LayerNorm::<F>::new(eps).unwrap().epsilon(), eps);
                    assert_eq!(LayerNorm::<F>::affine(3, eps).unwrap().epsilon(), eps);
                }
                let x = arr2(&[[F::of(1.0), F::of(2.0), F::of(3.0)]]);
                assert!(LayerNorm::<F>::new(F::of(0.0)).unwrap().forward(&x).is_ok());
            }

            #[test]
            fn with_beta_rejects_beta_shorter_than_existing_gamma() {
                let err = LayerNorm::<F>::default()
                    .with_gamma(Array1::ones(3))
                    .unwrap()
                    .with_beta(Array1::zeros(4))
                    .unwrap_err();
                assert_eq!(
                    err,
                    Error::ParamMismatch {
                        gamma: vec![3],
                        beta: vec![4]
                    }
                );
            }

            #[test]
            fn with_gamma_rejects_gamma_disagreeing_with_existing_beta() {
                let err = LayerNorm::<F>::default()
                    .with_beta(Array1::zeros(4))
                    .unwrap()
                    .with_gamma(Array1::ones(3))
                    .unwrap_err();
                assert_eq!(
                    err,
                    Error::ParamMismatch {
                        gamma: vec![3],
                        beta: vec![4]
                    }
                );
            }

            #[test]
            fn with_gamma_and_with_beta_reject_lengths_disagreeing_with_affine_parameters() {
                let affine = LayerNorm::<F>::affine(3, F::of(1e-5)).unwrap();
                assert_eq!(
                    affine.clone().with_gamma(Array1::ones(5)).unwrap_err(),
                    Error::ParamMismatch {
                        gamma: vec![5],
                        beta: vec![3]
                    }
                );
                assert_eq!(
                    affine.clone().with_beta(Array1::zeros(2)).unwrap_err(),
                    Error::ParamMismatch {
                        gamma: vec![3],
                        beta: vec![2]
                    }
                );
                // Equal lengths are fine, and gamma / beta may be set in either order.
                assert!(affine.with_gamma(Array1::ones(3)).is_ok());
                assert!(LayerNorm::<F>::default()
                    .with_beta(Array1::zeros(6))
                    .unwrap()
                    .with_gamma(Array1::ones(6))
                    .is_ok());
            }

            fn x_4_cols() -> Array2<F> {
                random_rows(3, 4, 7)
            }

            #[test]
            fn forward_rejects_gamma_length_different_from_last_axis() {
                let ln = LayerNorm::<F>::default()
                    .with_gamma(Array1::ones(5))
                    .unwrap();
                let expected = Error::ParamLength {
                    param: Param::Gamma,
                    expected: 4,
                    actual: 5,
                };
                let x = x_4_cols();
                assert_eq!(ln.forward(&x).unwrap_err(), expected);
                assert_eq!(ln.forward_with_stats(&x).unwrap_err(), expected);
                let mut y = x.clone();
                assert_eq!(ln.forward_inplace(&mut y).unwrap_err(), expected);
                assert_bitwise_eq(&y, &x, "input after a rejected forward_inplace");
            }

            #[test]
            fn forward_rejects_beta_length_different_from_last_axis() {
                let ln = LayerNorm::<F>::default()
                    .with_beta(Array1::zeros(3))
                    .unwrap();
                let expected = Error::ParamLength {
                    param: Param::Beta,
                    expected: 4,
                    actual: 3,
                };
                let x = x_4_cols();
                assert_eq!(ln.forward(&x).unwrap_err(), expected);
                assert_eq!(ln.forward_with_stats(&x).unwrap_err(), expected);
                let mut y = x.clone();
                assert_eq!(ln.forward_inplace(&mut y).unwrap_err(), expected);
                assert_bitwise_eq(&y, &x, "input after a rejected forward_inplace");
            }

            #[test]
            fn forward_rejects_affine_parameters_of_the_wrong_length_for_every_dimension() {
                let ln = LayerNorm::<F>::affine(3, F::of(1e-5)).unwrap();
                let check = |r: Result<(), Error>| match r {
                    Err(Error::ParamLength {
                        expected: 4,
                        actual: 3,
                        ..
                    }) => {}
                    other => {
                        panic!("expected ParamLength {{ expected: 4, actual: 3 }}, got {other:?}")
                    }
                };
                check(ln.forward(&Array1::<F>::zeros(4)).map(drop));
                check(ln.forward(&Array3::<F>::zeros((2, 3, 4))).map(drop));
                check(
                    ln.forward(&ArrayD::<F>::zeros(IxDyn(&[2, 1, 2, 4])))
                        .map(drop),
                );
                check(
                    ln.forward_with_stats(&Array3::<F>::zeros((2, 3, 4)))
                        .map(drop),
                );
                // The last axis is the one that counts, even when another axis has length 3.
                check(ln.forward(&Array2::<F>::zeros((3, 4))).map(drop));
                // Zero rows do not exempt the parameters from matching the last axis.
                check(ln.forward(&Array2::<F>::zeros((0, 4))).map(drop));
                check(ln.forward_inplace(&mut Array2::<F>::zeros((0, 4))));
            }

            #[test]
            fn zero_dimensional_input_is_rejected_by_forward() {
                assert_eq!(
                    LayerNorm::<F>::default()
                        .forward(&arr0(F::of(1.0)))
                        .unwrap_err(),
                    Error::ZeroDimensional
                );
                let x = ArrayD::from_elem(IxDyn(&[]), F::of(1.0));
                assert_eq!(
                    LayerNorm::<F>::default().forward(&x).unwrap_err(),
                    Error::ZeroDimensional
                );
            }

            #[test]
            fn zero_dimensional_input_is_rejected_by_forward_inplace_and_left_unchanged() {
                let mut x = arr0(F::of(1.0));
                assert_eq!(
                    LayerNorm::<F>::default()
                        .forward_inplace(&mut x)
                        .unwrap_err(),
                    Error::ZeroDimensional
                );
                assert_eq!(x[()], F::of(1.0));
                let mut xd = ArrayD::from_elem(IxDyn(&[]), F::of(2.0));
                assert_eq!(
                    LayerNorm::<F>::default()
                        .forward_inplace(&mut xd)
                        .unwrap_err(),
                    Error::ZeroDimensional
                );
                assert_eq!(xd[IxDyn(&[])], F::of(2.0));
            }

            #[test]
            fn zero_dimensional_input_is_rejected_by_forward_with_stats() {
                assert_eq!(
                    LayerNorm::<F>::default()
                        .forward_with_stats(&arr0(F::of(1.0)))
                        .unwrap_err(),
                    Error::ZeroDimensional
                );
            }

            #[test]
            fn zero_dimensional_input_is_rejected_by_moments() {
                assert_eq!(
                    moments(&arr0(F::of(1.0))).unwrap_err(),
                    Error::ZeroDimensional
                );
                let x = ArrayD::from_elem(IxDyn(&[]), F::of(1.0));
                assert_eq!(moments(&x).unwrap_err(), Error::ZeroDimensional);
            }

            /// Checks that row `bad` of `x` gives NaN outputs and statistics and that every other
            /// row is bitwise what it is without row `bad`.
            fn assert_row_isolated(x: &Array2<F>, bad: usize, ln: &LayerNorm<F>) {
                let (y, stats) = ln.forward_with_stats(x).unwrap();
                let m = moments(x).unwrap();
                assert!(y.row(bad).iter().all(|v| v.is_nan()), "row {bad}: {y:?}");
                assert!(stats.mean[bad].is_nan(), "{stats:?}");
                assert!(stats.rstd[bad].is_nan(), "{stats:?}");
                assert!(m.mean[bad].is_nan(), "{m:?}");
                assert!(m.var[bad].is_nan(), "{m:?}");

                let mut good = x.clone();
                good.remove_index(Axis(0), bad);
                let (gy, gstats) = ln.forward_with_stats(&good).unwrap();
                let gm = moments(&good).unwrap();
                let mut y_rest = y.clone();
                y_rest.remove_index(Axis(0), bad);
                assert_bitwise_eq(&y_rest, &gy, "output of the other rows");
                let mut rest = stats.mean.clone();
                rest.remove_index(Axis(0), bad);
                assert_bitwise_eq(&rest, &gstats.mean, "mean of the other rows");
                let mut rest = stats.rstd.clone();
                rest.remove_index(Axis(0), bad);
                assert_bitwise_eq(&rest, &gstats.rstd, "rstd of the other rows");
                let mut rest = m.var.clone();
                rest.remove_index(Axis(0), bad);
                assert_bitwise_eq(&rest, &gm.var, "variance of the other rows");

                let mut inplace = x.clone();
                ln.forward_inplace(&mut inplace).unwrap();
                assert_bitwise_eq(&inplace, &y, "forward_inplace");
                assert_bitwise_eq(&ln.forward(x).unwrap(), &y, "forward");
            }

            #[test]
            fn nan_makes_only_its_own_row_nan() {
                let ln = LayerNorm::<F>::default();
                for cols in [1, 2, 5, 9, 33] {
                    for col in [0, cols / 2, cols - 1] {
                        let mut x = random_rows::<F>(4, cols, 11);
                        x[[2, col]] = F::NAN;
                        assert_row_isolated(&x, 2, &ln);
                    }
                }
            }

            #[test]
            fn nan_row_isolation_holds_with_gamma_and_beta() {
                let ln = LayerNorm::<F>::affine(6, F::of(1e-3))
                    .unwrap()
                    .with_gamma(Array1::from_elem(6, F::of(1.5)))
                    .unwrap()
                    .with_beta(Array1::from_elem(6, F::of(-0.5)))
                    .unwrap();
                let mut x = random_rows::<F>(3, 6, 12);
                x[[0, 4]] = F::NAN;
                assert_row_isolated(&x, 0, &ln);
            }

            #[test]
            fn positive_infinity_makes_only_its_own_row_nan() {
                let ln = LayerNorm::<F>::new(F::of(0.0)).unwrap();
                let mut x = random_rows::<F>(5, 8, 13);
                x[[4, 3]] = F::INFINITY;
                assert_row_isolated(&x, 4, &ln);
            }

            #[test]
            fn negative_infinity_makes_only_its_own_row_nan() {
                let ln = LayerNorm::<F>::default();
                let mut x = random_rows::<F>(5, 8, 14);
                x[[1, 0]] = F::NEG_INFINITY;
                assert_row_isolated(&x, 1, &ln);
            }

            #[test]
            fn row_of_opposite_infinities_is_nan() {
                let ln = LayerNorm::<F>::default();
                let mut x = random_rows::<F>(3, 4, 15);
                x[[1, 0]] = F::INFINITY;
                x[[1, 3]] = F::NEG_INFINITY;
                assert_row_isolated(&x, 1, &ln);
                let mut x = random_rows::<F>(3, 4, 15);
                x.row_mut(1).fill(F::INFINITY);
                assert_row_isolated(&x, 1, &ln);
            }

            #[test]
            fn non_finite_single_row_input_is_all_nan() {
                let ln = LayerNorm::<F>::default();
                for bad in [F::NAN, F::INFINITY, F::NEG_INFINITY] {
                    let x = arr1(&[F::of(1.0), bad, F::of(3.0)]);
                    let (y, stats) = ln.forward_with_stats(&x).unwrap();
                    assert!(y.iter().all(|v| v.is_nan()), "{bad}: {y:?}");
                    assert!(
                        stats.mean[()].is_nan() && stats.rstd[()].is_nan(),
                        "{stats:?}"
                    );
                    let m = moments(&x).unwrap();
                    assert!(m.mean[()].is_nan() && m.var[()].is_nan(), "{m:?}");
                    let single = arr1(&[bad]);
                    assert!(ln.forward(&single).unwrap()[0].is_nan());
                }
            }

            #[test]
            fn zero_length_last_axis_gives_empty_output_and_nan_statistics() {
                let ln = LayerNorm::<F>::default();
                let x = Array2::<F>::zeros((3, 0));
                let (y, stats) = ln.forward_with_stats(&x).unwrap();
                assert_eq!(y.shape(), &[3, 0]);
                assert_eq!(ln.forward(&x).unwrap().shape(), &[3, 0]);
                assert_eq!(stats.mean.shape(), &[3]);
                assert_eq!(stats.rstd.shape(), &[3]);
                assert!(
                    stats.mean.iter().chain(&stats.rstd).all(|v| v.is_nan()),
                    "{stats:?}"
                );
                let m = moments(&x).unwrap();
                assert_eq!(m.mean.shape(), &[3]);
                assert!(m.mean.iter().chain(&m.var).all(|v| v.is_nan()), "{m:?}");
                let mut z = x.clone();
                ln.forward_inplace(&mut z).unwrap();
                assert_eq!(z.shape(), &[3, 0]);

                // An affine layer of length 0 fits.
                let affine = LayerNorm::<F>::affine(0, F::of(1e-5)).unwrap();
                assert_eq!(affine.forward(&x).unwrap().shape(), &[3, 0]);
            }

            #[test]
            fn zero_length_one_dimensional_input_has_one_nan_row() {
                let x = Array1::<F>::zeros(0);
                let (y, stats) = LayerNorm::<F>::default().forward_with_stats(&x).unwrap();
                assert_eq!(y.shape(), &[0]);
                assert_eq!(stats.mean.ndim(), 0);
                assert!(
                    stats.mean[()].is_nan() && stats.rstd[()].is_nan(),
                    "{stats:?}"
                );
                let m = moments(&x).unwrap();
                assert!(m.mean[()].is_nan() && m.var[()].is_nan(), "{m:?}");
            }

            #[test]
            fn zero_rows_give_empty_output_and_empty_statistics() {
                let ln = LayerNorm::<F>::affine(4, F::of(1e-5)).unwrap();
                let x = Array2::<F>::zeros((0, 4));
                let (y, stats) = ln.forward_with_stats(&x).unwrap();
                assert_eq!(y.shape(), &[0, 4]);
                assert_eq!(stats.mean.shape(), &[0]);
                assert_eq!(stats.rstd.shape(), &[0]);
                assert_eq!(moments(&x).unwrap().var.shape(), &[0]);
                let mut z = x.clone();
                ln.forward_inplace(&mut z).unwrap();
                assert_eq!(z.shape(), &[0, 4]);

                let x3 = Array3::<F>::zeros((2, 0, 5));
                let (y3, s3) = LayerNorm::<F>::default().forward_with_stats(&x3).unwrap();
                assert_eq!(y3.shape(), &[2, 0, 5]);
                assert_eq!(s3.mean.shape(), &[2, 0]);
                assert_eq!(moments(&x3).unwrap().mean.shape(), &[2, 0]);

                let xd = ArrayD::<F>::zeros(IxDyn(&[0, 3, 0]));
                let (yd, sd) = LayerNorm::<F>::default().forward_with_stats(&xd).unwrap();
                assert_eq!(yd.shape(), &[0, 3, 0]);
                assert_eq!(sd.rstd.shape(), &[0, 3]);
            }

            #[test]
            fn empty_views_of_nonempty_arrays_are_accepted() {
                let base = random_rows::<F>(4, 6, 16);
                let ln = LayerNorm::<F>::default();
                let cols = base.slice(s![.., 3..3]);
                let (y, stats) = ln.forward_with_stats(&cols).unwrap();
                assert_eq!(y.shape(), &[4, 0]);
                assert!(stats.mean.iter().all(|v| v.is_nan()));
                let rows = base.slice(s![2..2, ..]);
                let (y, stats) = ln.forward_with_stats(&rows).unwrap();
                assert_eq!(y.shape(), &[0, 6]);
                assert_eq!(stats.rstd.shape(), &[0]);
            }
        }
    };
}

error_tests!(f32_errors, f32);
error_tests!(f64_errors, f64);

#[test]
fn invalid_epsilon_display_contains_the_value() {
    let text = Error::InvalidEpsilon { epsilon: -2.5 }.to_string();
    assert!(text.contains("-2.5"), "{text}");
    let text = Error::InvalidEpsilon { epsilon: f64::NAN }.to_string();
    assert!(text.to_lowercase().contains("nan"), "{text}");
    let text = Error::InvalidEpsilon {
        epsilon: f64::NEG_INFINITY,
    }
    .to_string();
    assert!(text.contains("-inf"), "{text}");
}

#[test]
fn param_length_display_names_the_parameter_and_both_lengths() {
    for (param, name) in [(Param::Gamma, "gamma"), (Param::Beta, "beta")] {
        let text = Error::ParamLength {
            param,
            expected: 17,
            actual: 23,
        }
        .to_string();
        assert!(text.contains(name), "{text}");
        assert!(text.contains("17") && text.contains("23"), "{text}");
    }
}

#[test]
fn param_mismatch_display_contains_both_lengths() {
    let text = Error::ParamMismatch {
        gamma: vec![31],
        beta: vec![47],
    }
    .to_string();
    assert!(text.contains("gamma") && text.contains("beta"), "{text}");
    let (g, b) = (text.find("31").unwrap(), text.find("47").unwrap());
    // Whatever the wording, both numbers are present (and distinguishable).
    assert_ne!(g, b, "{text}");
}

#[test]
fn zero_dimensional_display_is_not_empty() {
    let text = Error::ZeroDimensional.to_string();
    assert!(!text.is_empty());
    let lower = text.to_lowercase();
    assert!(lower.contains('0') || lower.contains("zero"), "{text}");
}

#[test]
fn shape_mismatch_display_contains_both_shapes() {
    let text = Error::ShapeMismatch {
        expected: vec![2, 13],
        actual: vec![2, 19],
    }
    .to_string();
    assert!(text.contains("13") && text.contains("19"), "{text}");
}

#[test]
fn param_displays_as_lowercase_name() {
    assert_eq!(Param::Gamma.to_string(), "gamma");
    assert_eq!(Param::Beta.to_string(), "beta");
}

#[test]
fn error_is_a_std_error_without_source() {
    fn fails() -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        ndarray_layernorm::LayerNorm::<f64>::new(-1.0)?;
        Ok(())
    }
    let boxed = fails().unwrap_err();
    assert!(boxed.source().is_none());
    let err = boxed
        .downcast::<Error>()
        .expect("the boxed error is an Error");
    assert_eq!(*err, Error::InvalidEpsilon { epsilon: -1.0 });
}

#[test]
fn error_clones_compare_equal_and_differ_from_other_values() {
    let errors = [
        Error::InvalidEpsilon { epsilon: -1.0 },
        Error::ParamLength {
            param: Param::Gamma,
            expected: 4,
            actual: 3,
        },
        Error::ParamLength {
            param: Param::Beta,
            expected: 4,
            actual: 3,
        },
        Error::ParamMismatch {
            gamma: vec![3],
            beta: vec![4],
        },
        Error::ZeroDimensional,
        Error::ShapeMismatch {
            expected: vec![1],
            actual: vec![2],
        },
        Error::ParamShape {
            param: Param::Gamma,
            expected: vec![2, 3],
            actual: vec![3, 2],
        },
        Error::ParamAxes {
            param: Param::Beta,
            expected: 2,
            actual: 1,
        },
        Error::InvalidAxes { axes: 0 },
        Error::TooFewAxes { axes: 3, ndim: 2 },
        Error::ShapeTooLarge {
            shape: vec![1 << 40, 1 << 40],
        },
    ];
    for (i, a) in errors.iter().enumerate() {
        assert_eq!(a.clone(), *a);
        assert!(!format!("{a:?}").is_empty());
        for (j, b) in errors.iter().enumerate() {
            assert_eq!(i == j, a == b, "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn constructors_reject_parameter_shapes_too_large_for_an_array_instead_of_panicking() {
    use ndarray_layernorm::{LayerNorm, RmsNorm};
    let huge = [1usize << 33, 1 << 33];
    let expected = Error::ShapeTooLarge {
        shape: huge.to_vec(),
    };
    assert_eq!(
        LayerNorm::<f32>::affine_shape(&huge, 0.0).unwrap_err(),
        expected
    );
    assert_eq!(
        RmsNorm::<f64>::affine_shape(&huge, 0.0).unwrap_err(),
        expected
    );
    let too_long = Error::ShapeTooLarge {
        shape: vec![usize::MAX],
    };
    assert_eq!(
        LayerNorm::<f64>::affine(usize::MAX, 1e-5).unwrap_err(),
        too_long
    );
    assert_eq!(
        RmsNorm::<f32>::affine(usize::MAX, 1e-5).unwrap_err(),
        too_long
    );
    let text = too_long.to_string();
    assert!(text.contains("more elements"), "{text}");
    // ndarray's limit counts the non-zero lengths even when another axis is empty.
    assert!(LayerNorm::<f32>::affine_shape(&[0, usize::MAX], 0.0).is_err());
    assert!(LayerNorm::<f32>::affine_shape(&[0, 1 << 40], 0.0).is_ok());
}

#[test]
fn param_shape_display_names_the_parameter_and_both_shapes() {
    let text = Error::ParamShape {
        param: Param::Beta,
        expected: vec![3, 4],
        actual: vec![4, 3],
    }
    .to_string();
    assert!(text.contains("beta"), "{text}");
    assert!(text.contains("[3, 4]") && text.contains("[4, 3]"), "{text}");
}

#[test]
fn param_axes_display_names_the_parameter_and_both_counts() {
    let text = Error::ParamAxes {
        param: Param::Gamma,
        expected: 2,
        actual: 3,
    }
    .to_string();
    assert!(text.contains("gamma"), "{text}");
    assert!(text.contains('2') && text.contains('3'), "{text}");
}

#[test]
fn axes_displays_contain_their_counts() {
    let text = Error::InvalidAxes { axes: 0 }.to_string();
    assert!(
        text.contains("at least one axis") && text.contains('0'),
        "{text}"
    );
    let text = Error::TooFewAxes { axes: 3, ndim: 2 }.to_string();
    assert!(text.contains('3') && text.contains('2'), "{text}");
}

#[test]
fn param_mismatch_display_contains_both_shapes() {
    let text = Error::ParamMismatch {
        gamma: vec![2, 3],
        beta: vec![3, 2],
    }
    .to_string();
    assert!(text.contains("[2, 3]") && text.contains("[3, 2]"), "{text}");
}
