//! Closed-form values of `forward`, `forward_inplace`, `forward_with_stats` and `moments`.
//!
//! Every expected value is derived by hand (exact arithmetic, written out in the comments) and
//! evaluated in `f64`; nothing is computed by the library under test. Each test is instantiated for
//! `f32` and `f64`, with tolerances in units of the type's machine epsilon (see `support::tol`).

#[path = "common/support.rs"]
mod support;

/// Tolerance, in units of `F::EPSILON` (relative, floored at 1), of every closed-form comparison.
/// The library computes in `f64` and rounds once, so `f32` results are within one rounding of the
/// exact value; `f64` results are within a few roundings.
const ULPS: f64 = 4.0;

macro_rules! closed_form_tests {
    ($module:ident, $float:ty) => {
        mod $module {
            use ndarray::{arr1, arr2, arr3, Array1, Ix0};
            use ndarray_layernorm::{moments, LayerNorm};

            use super::support::{assert_close, TestFloat};
            use super::ULPS;

            type F = $float;

            fn ln(eps: f64) -> LayerNorm<F> {
                LayerNorm::<F>::new(F::of(eps)).expect("valid epsilon")
            }

            fn a1(v: &[f64]) -> Array1<F> {
                v.iter().map(|&x| F::of(x)).collect()
            }

            #[test]
            fn row_1_2_3_with_zero_epsilon_normalizes_to_plus_minus_sqrt_three_halves() {
                // mean 2, var ((-1)^2 + 0 + 1^2) / 3 = 2/3, y = d / sqrt(2/3) = d * sqrt(3/2).
                let x = arr2(&[[F::of(1.0), F::of(2.0), F::of(3.0)]]);
                let y = ln(0.0).forward(&x).unwrap();
                let s = 1.5f64.sqrt();
                assert_eq!(y.shape(), &[1, 3]);
                assert_close(&y, &[-s, 0.0, s], ULPS);
            }

            #[test]
            fn row_1_2_3_4_with_zero_epsilon_normalizes_to_odd_multiples_of_inverse_sqrt5() {
                // mean 5/2, var (9/4 + 1/4 + 1/4 + 9/4) / 4 = 5/4,
                // y = (-3/2, -1/2, 1/2, 3/2) / sqrt(5/4) = (-3, -1, 1, 3) / sqrt(5).
                let x = arr2(&[[F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)]]);
                let y = ln(0.0).forward(&x).unwrap();
                let r = 1.0 / 5f64.sqrt();
                assert_close(&y, &[-3.0 * r, -r, r, 3.0 * r], ULPS);
            }

            #[test]
            fn epsilon_is_added_to_the_variance_before_the_square_root() {
                // var 5/4 + eps 3/4 = 2, so y = (-3/2, -1/2, 1/2, 3/2) / sqrt(2).
                let x = arr2(&[[F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)]]);
                let y = ln(0.75).forward(&x).unwrap();
                let r = 1.0 / 2f64.sqrt();
                assert_close(&y, &[-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r], ULPS);

                // eps 1e-5 (as rounded to F): y = d / sqrt(5/4 + eps).
                let eps = F::of(1e-5);
                let y = LayerNorm::<F>::new(eps).unwrap().forward(&x).unwrap();
                let r = 1.0 / (1.25 + eps.f64()).sqrt();
                assert_close(&y, &[-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r], ULPS);
            }

            #[test]
            fn default_has_epsilon_1e_5_and_no_gamma_or_beta() {
                let ln = LayerNorm::<F>::default();
                assert_eq!(ln.epsilon(), F::of(1e-5));
                assert!(ln.gamma().is_none());
                assert!(ln.beta().is_none());

                let x = arr2(&[[F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)]]);
                let y = ln.forward(&x).unwrap();
                let r = 1.0 / (1.25 + F::of(1e-5).f64()).sqrt();
                assert_close(&y, &[-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r], ULPS);
            }

            #[test]
            fn new_stores_epsilon_without_gamma_or_beta() {
                let ln = ln(0.25);
                assert_eq!(ln.epsilon(), F::of(0.25));
                assert!(ln.gamma().is_none());
                assert!(ln.beta().is_none());
            }

            #[test]
            fn affine_starts_with_unit_gamma_and_zero_beta_which_leave_output_unchanged() {
                let ln = LayerNorm::<F>::affine(4, F::of(0.75)).unwrap();
                assert_eq!(ln.epsilon(), F::of(0.75));
                assert_eq!(ln.gamma(), Some(&Array1::<F>::ones(4).into_dyn()));
                assert_eq!(ln.beta(), Some(&Array1::<F>::zeros(4).into_dyn()));

                let x = arr2(&[
                    [F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)],
                    [F::of(4.0), F::of(4.0), F::of(0.0), F::of(0.0)],
                ]);
                // y * 1 + 0 == y (== also equates the zeros' signs).
                let plain = LayerNorm::<F>::new(F::of(0.75)).unwrap();
                assert_eq!(ln.forward(&x).unwrap(), plain.forward(&x).unwrap());
            }

            #[test]
            fn gamma_scales_and_beta_shifts_each_column_of_every_row() {
                let gamma = [2.0, -1.0, 0.5, 0.0];
                let beta = [0.25, 1.0, -2.0, 3.0];
                let ln = ln(0.75)
                    .with_gamma(a1(&gamma))
                    .unwrap()
                    .with_beta(a1(&beta))
                    .unwrap();
                assert_eq!(ln.gamma(), Some(&a1(&gamma).into_dyn()));
                assert_eq!(ln.beta(), Some(&a1(&beta).into_dyn()));

                let x = arr2(&[
                    [F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)],
                    [F::of(4.0), F::of(4.0), F::of(0.0), F::of(0.0)],
                ]);
                let y = ln.forward(&x).unwrap();
                // Row 0: mean 5/2, var 5/4 + 3/4 = 2.  Row 1: mean 2, var 4 + 3/4 = 19/4.
                let r0 = 1.0 / 2f64.sqrt();
                let r1 = 1.0 / 4.75f64.sqrt();
                let n0 = [-1.5 * r0, -0.5 * r0, 0.5 * r0, 1.5 * r0];
                let n1 = [2.0 * r1, 2.0 * r1, -2.0 * r1, -2.0 * r1];
                let expected: Vec<f64> = n0
                    .iter()
                    .chain(&n1)
                    .enumerate()
                    .map(|(i, n)| n * gamma[i % 4] + beta[i % 4])
                    .collect();
                assert_close(&y, &expected, ULPS);
            }

            #[test]
            fn gamma_alone_scales_without_shifting() {
                let gamma = [3.0, -2.0, 0.25, 1.0];
                let ln = ln(0.75).with_gamma(a1(&gamma)).unwrap();
                assert!(ln.beta().is_none());
                let x = arr1(&[F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)]);
                let r = 1.0 / 2f64.sqrt();
                let n = [-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r];
                let expected: Vec<f64> = n.iter().zip(&gamma).map(|(n, g)| n * g).collect();
                assert_close(&ln.forward(&x).unwrap(), &expected, ULPS);
            }

            #[test]
            fn beta_alone_shifts_without_scaling() {
                let beta = [-1.0, 0.5, 10.0, 0.0];
                let ln = ln(0.75).with_beta(a1(&beta)).unwrap();
                assert!(ln.gamma().is_none());
                let x = arr1(&[F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)]);
                let r = 1.0 / 2f64.sqrt();
                let n = [-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r];
                let expected: Vec<f64> = n.iter().zip(&beta).map(|(n, b)| n + b).collect();
                assert_close(&ln.forward(&x).unwrap(), &expected, ULPS);
            }

            #[test]
            fn with_gamma_replaces_the_gamma_of_an_affine_layer() {
                let ln = LayerNorm::<F>::affine(3, F::of(0.0))
                    .unwrap()
                    .with_gamma(a1(&[2.0, 2.0, -2.0]))
                    .unwrap();
                assert_eq!(ln.beta(), Some(&Array1::<F>::zeros(3).into_dyn()));
                let x = arr1(&[F::of(1.0), F::of(2.0), F::of(3.0)]);
                let s = 1.5f64.sqrt();
                assert_close(&ln.forward(&x).unwrap(), &[-2.0 * s, 0.0, -2.0 * s], ULPS);
            }

            #[test]
            fn forward_with_stats_returns_row_means_and_reciprocal_standard_deviations() {
                let x = arr2(&[
                    [F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)],
                    [F::of(4.0), F::of(4.0), F::of(0.0), F::of(0.0)],
                ]);
                let (y, stats) = ln(0.75).forward_with_stats(&x).unwrap();
                let r0 = 1.0 / 2f64.sqrt();
                let r1 = 1.0 / 4.75f64.sqrt();
                assert_eq!(stats.mean.shape(), &[2]);
                assert_eq!(stats.rstd.shape(), &[2]);
                assert_close(&stats.mean, &[2.5, 2.0], ULPS);
                assert_close(&stats.rstd, &[r0, r1], ULPS);
                assert_close(
                    &y,
                    &[
                        -1.5 * r0,
                        -0.5 * r0,
                        0.5 * r0,
                        1.5 * r0,
                        2.0 * r1,
                        2.0 * r1,
                        -2.0 * r1,
                        -2.0 * r1,
                    ],
                    ULPS,
                );
            }

            #[test]
            fn moments_returns_row_means_and_biased_variances() {
                let x = arr2(&[
                    [F::of(1.0), F::of(2.0), F::of(3.0)],
                    [F::of(-4.0), F::of(0.0), F::of(1.0)],
                    [F::of(7.0), F::of(7.0), F::of(7.0)],
                ]);
                let m = moments(&x).unwrap();
                // Row 1: mean -1, deviations (-3, 1, 2), var (9 + 1 + 4) / 3 = 14/3 (not 14/2).
                assert_close(&m.mean, &[2.0, -1.0, 7.0], ULPS);
                assert_close(&m.var, &[2.0 / 3.0, 14.0 / 3.0, 0.0], ULPS);
                assert_eq!(
                    m.var[2],
                    F::of(0.0),
                    "constant row has exactly zero variance"
                );
            }

            #[test]
            fn one_dimensional_input_is_normalized_as_a_single_row_with_0d_stats() {
                let x = arr1(&[F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)]);
                let (y, stats) = ln(0.0).forward_with_stats(&x).unwrap();
                let r = 1.0 / 5f64.sqrt();
                assert_eq!(y.shape(), &[4]);
                assert_close(&y, &[-3.0 * r, -r, r, 3.0 * r], ULPS);
                let mean: ndarray::Array<F, Ix0> = stats.mean;
                assert_close(&mean, &[2.5], ULPS);
                assert_close(&stats.rstd, &[1.0 / 1.25f64.sqrt()], ULPS);

                let m = moments(&x).unwrap();
                assert_eq!(m.mean.ndim(), 0);
                assert_close(&m.mean, &[2.5], ULPS);
                assert_close(&m.var, &[1.25], ULPS);
            }

            #[test]
            fn three_dimensional_input_normalizes_every_last_axis_row() {
                let x = arr3(&[
                    [
                        [F::of(1.0), F::of(2.0), F::of(3.0)],
                        [F::of(3.0), F::of(2.0), F::of(1.0)],
                    ],
                    [
                        [F::of(10.0), F::of(20.0), F::of(30.0)],
                        [F::of(5.0), F::of(5.0), F::of(5.0)],
                    ],
                ]);
                let (y, stats) = ln(0.0).forward_with_stats(&x).unwrap();
                let s = 1.5f64.sqrt();
                assert_eq!(y.shape(), &[2, 2, 3]);
                assert_close(
                    &y,
                    &[-s, 0.0, s, s, 0.0, -s, -s, 0.0, s, 0.0, 0.0, 0.0],
                    ULPS,
                );
                assert_eq!(stats.mean.shape(), &[2, 2]);
                assert_close(&stats.mean, &[2.0, 2.0, 20.0, 5.0], ULPS);
                // var 2/3, 2/3, 200/3, 0 -> rstd sqrt(3/2), sqrt(3/2), sqrt(3/200), +inf.
                let rstd = stats.rstd.as_slice().unwrap();
                assert_close(
                    &ndarray::aview1(&rstd[..3]),
                    &[s, s, (3.0f64 / 200.0).sqrt()],
                    ULPS,
                );
                assert_eq!(rstd[3], F::INFINITY);

                let m = moments(&x).unwrap();
                assert_close(&m.mean, &[2.0, 2.0, 20.0, 5.0], ULPS);
                assert_close(&m.var, &[2.0 / 3.0, 2.0 / 3.0, 200.0 / 3.0, 0.0], ULPS);
            }

            #[test]
            fn constant_row_normalizes_to_exact_zero_for_every_epsilon() {
                let x = arr2(&[
                    [F::of(3.25); 5],
                    [F::of(-1e4); 5],
                    [F::of(0.0); 5],
                    [F::of(0.1); 5],
                ]);
                for eps in [0.0, 1e-30, 1e-5, 1.0, 1e6] {
                    let y = ln(eps).forward(&x).unwrap();
                    assert!(y.iter().all(|&v| v == 0.0), "eps {eps}: {y:?}");
                }
            }

            #[test]
            fn constant_row_output_is_exactly_beta() {
                let beta = [0.5, -7.0, 0.0, 1e3];
                let ln = ln(0.0)
                    .with_gamma(a1(&[2.0, -3.0, 1e3, 1.0]))
                    .unwrap()
                    .with_beta(a1(&beta))
                    .unwrap();
                let x = arr2(&[[F::of(0.3); 4], [F::of(-9.0); 4]]);
                let y = ln.forward(&x).unwrap();
                for row in y.rows() {
                    assert_eq!(row, a1(&beta));
                }
            }

            #[test]
            fn single_element_row_normalizes_to_exact_zero_for_every_epsilon() {
                let x = arr2(&[[F::of(3.0)], [F::of(-1e-3)], [F::of(1e20)], [F::of(0.0)]]);
                for eps in [0.0, 1e-5, 1.0] {
                    let y = ln(eps).forward(&x).unwrap();
                    assert_eq!(y.shape(), &[4, 1]);
                    assert!(y.iter().all(|&v| v == 0.0), "eps {eps}: {y:?}");
                }
                let y = ln(0.0).with_beta(a1(&[-2.5])).unwrap().forward(&x).unwrap();
                assert!(y.iter().all(|&v| v == F::of(-2.5)), "{y:?}");
            }

            #[test]
            fn zero_epsilon_constant_row_has_zero_variance_and_infinite_rstd() {
                let x = arr2(&[[F::of(2.5); 3], [F::of(-4.0); 3]]);
                let (y, stats) = ln(0.0).forward_with_stats(&x).unwrap();
                assert!(y.iter().all(|&v| v == 0.0), "{y:?}");
                assert_close(&stats.mean, &[2.5, -4.0], 0.0);
                assert!(stats.rstd.iter().all(|&r| r == F::INFINITY), "{stats:?}");
                let m = moments(&x).unwrap();
                assert!(m.var.iter().all(|&v| v == 0.0), "{m:?}");

                // The same for a single-element row.
                let x1 = arr1(&[F::of(6.0)]);
                let (y1, s1) = ln(0.0).forward_with_stats(&x1).unwrap();
                assert_eq!(y1[0], 0.0);
                assert_eq!(s1.mean[()], F::of(6.0));
                assert_eq!(s1.rstd[()], F::INFINITY);
                assert_eq!(moments(&x1).unwrap().var[()], 0.0);
            }

            #[test]
            fn large_offset_rows_normalize_like_the_unshifted_rows() {
                // 2^(p-3) + (1, 2, 3, 4) is exact in F and its mean 2^(p-3) + 5/2 too; the exact
                // result is (-3, -1, 1, 3) / sqrt(5), which a naive E[x^2] - E[x]^2 misses.
                let offset = 2f64.powi(F::MANTISSA_DIGITS as i32 - 3);
                let x = arr2(&[
                    [1.0, 2.0, 3.0, 4.0].map(|v| F::of(offset + v)),
                    [1.0, 2.0, 3.0, 4.0].map(|v| F::of(-offset - v)),
                ]);
                let (y, stats) = ln(0.0).forward_with_stats(&x).unwrap();
                let r = 1.0 / 5f64.sqrt();
                assert_close(
                    &y,
                    &[-3.0 * r, -r, r, 3.0 * r, 3.0 * r, r, -r, -3.0 * r],
                    ULPS,
                );
                assert_eq!(stats.mean[0], F::of(offset + 2.5));
                assert_eq!(stats.mean[1], F::of(-offset - 2.5));
                assert_close(&moments(&x).unwrap().var, &[1.25, 1.25], ULPS);
            }

            #[test]
            fn forward_inplace_overwrites_the_input_with_the_normalized_values() {
                let mut x = arr2(&[
                    [F::of(1.0), F::of(2.0), F::of(3.0), F::of(4.0)],
                    [F::of(4.0), F::of(4.0), F::of(0.0), F::of(0.0)],
                ]);
                ln(0.75).forward_inplace(&mut x).unwrap();
                let r0 = 1.0 / 2f64.sqrt();
                let r1 = 1.0 / 4.75f64.sqrt();
                assert_close(
                    &x,
                    &[
                        -1.5 * r0,
                        -0.5 * r0,
                        0.5 * r0,
                        1.5 * r0,
                        2.0 * r1,
                        2.0 * r1,
                        -2.0 * r1,
                        -2.0 * r1,
                    ],
                    ULPS,
                );
            }

            #[test]
            fn stats_mean_equals_moments_mean_and_rstd_matches_moments_variance() {
                let x = arr2(&[
                    [F::of(0.1), F::of(-2.7), F::of(3.3), F::of(1e3)],
                    [F::of(-5.5), F::of(1e-3), F::of(2.0), F::of(7.0)],
                ]);
                let eps = F::of(1e-3);
                let (_, stats) = LayerNorm::<F>::new(eps)
                    .unwrap()
                    .forward_with_stats(&x)
                    .unwrap();
                let m = moments(&x).unwrap();
                assert_eq!(stats.mean, m.mean);
                let expected: Vec<f64> = m
                    .var
                    .iter()
                    .map(|v| 1.0 / (v.f64() + eps.f64()).sqrt())
                    .collect();
                assert_close(&stats.rstd, &expected, ULPS);
            }
        }
    };
}

closed_form_tests!(f32_closed_form, f32);
closed_form_tests!(f64_closed_form, f64);

mod seed_data {
    use ndarray::{arr2, Array2};
    use ndarray_layernorm::{moments, LayerNorm};

    use super::support::{assert_close, TestFloat};
    use super::ULPS;

    const SEED: [[f64; 5]; 2] = [[0.5, -1.2, 3.3, 0.8, -0.5], [2.0, -0.7, 1.2, -3.5, 0.6]];

    fn seed<F: TestFloat>() -> Array2<F> {
        arr2(&SEED).mapv(F::of)
    }

    #[test]
    fn f64_seed_data_has_exactly_rounded_means_and_variances() {
        let x = seed::<f64>();
        let m = moments(&x).unwrap();
        assert_eq!(m.mean[0], 0.58);
        assert_eq!(m.mean[1], -0.08);
        assert_eq!(m.var[0], 2.3575999999999997);
        assert_eq!(m.var[1], 3.7016);

        let (_, stats) = LayerNorm::<f64>::new(1e-5)
            .unwrap()
            .forward_with_stats(&x)
            .unwrap();
        assert_eq!(stats.mean[0], 0.58);
        assert_eq!(stats.mean[1], -0.08);
    }

    // Expected values: the exact mean and variance of the (rounded) inputs, with eps 1e-5 as
    // rounded to the type, evaluated with 60-digit decimal arithmetic and rounded to f64.

    #[test]
    fn f64_seed_data_normalizes_to_the_exactly_computed_values() {
        let x = seed::<f64>();
        let (y, stats) = LayerNorm::<f64>::default().forward_with_stats(&x).unwrap();
        assert_close(&stats.rstd, &[0.6512744151021872, 0.5197621738171289], ULPS);
        assert_close(
            &y,
            &[
                -0.05210195320817496,
                -1.1592684588818931,
                1.7714664090779488,
                0.14328037132248123,
                -0.7033763683103621,
                1.081105321539628,
                -0.3222525477666199,
                0.6652955824859249,
                -1.7775866344545808,
                0.3534382781956476,
            ],
            ULPS,
        );
    }

    #[test]
    fn f32_seed_data_normalizes_to_the_exactly_computed_values() {
        let x = seed::<f32>();
        let m = moments(&x).unwrap();
        // The f32 inputs differ from the decimal literals, so their means and variances do too.
        assert_close(&m.mean, &[0.5799999833106995, -0.07999998331069946], 1.0);
        assert_close(&m.var, &[2.3575999831199654, 3.701600027942658], 1.0);
        let (y, stats) = LayerNorm::<f32>::default().forward_with_stats(&x).unwrap();
        assert_close(
            &stats.mean,
            &[0.5799999833106995, -0.07999998331069946],
            1.0,
        );
        assert_close(&stats.rstd, &[0.6512744174337218, 0.5197621718553602], 1.0);
        assert_close(
            &y,
            &[
                -0.05210194252538326,
                -1.1592684832178948,
                1.7714663952338539,
                0.14328039046852936,
                -0.7033763599591052,
                1.081105308784682,
                -0.32225254902874245,
                0.6652955960845857,
                -1.777586636419799,
                0.3534382805792737,
            ],
            1.0,
        );
    }
}
