//! Rows built to break a fast path, checked against closed forms.

mod common;

use std::collections::HashSet;

use common::exact::{Dyadic, ExactRow};
use ndarray::Array1;
use ndarray_layernorm::LayerNorm;
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, Zero};

/// `n - 1` values of `2^24` and one of `2^24 + 2`, `eps = 0`: the mean `2^24 + 2/n` is not an
/// `f32`, and its low part is the whole of the small outputs. Closed form:
/// `var = 4 (n - 1) / n^2`, so the common value normalizes to `-1 / sqrt(n - 1)`, the odd one
/// to `sqrt(n - 1)`, and `rstd = n / (2 sqrt(n - 1))`.
#[test]
fn a_row_of_two_to_the_24_with_one_outlier_is_within_one_unit() {
    let n = 57344usize;
    for at in [0, 1, n / 2, n - 1] {
        let mut x = Array1::from_elem(n, 16_777_216.0f32);
        x[at] = 16_777_218.0;
        let ln = LayerNorm::<f32>::new(0.0).unwrap();
        let (y, stats) = ln.forward_with_stats(&x).unwrap();
        let m = (n as f64 - 1.0).sqrt();
        let unit = |exact: f64| f64::from(f32::EPSILON) * exact.abs().max(1.0);
        for (i, &v) in y.iter().enumerate() {
            let exact = if i == at { m } else { -1.0 / m };
            let err = (f64::from(v) - exact).abs() / unit(exact);
            assert!(
                err <= 1.0,
                "outlier at {at}: y[{i}] = {v:e}, exact {exact:e}, {err} units"
            );
        }
        let rstd = n as f64 / (2.0 * m);
        let err = (f64::from(stats.rstd[()]) - rstd).abs() / (f64::from(f32::EPSILON) * rstd);
        assert!(
            err <= 1.0,
            "outlier at {at}: rstd {} vs {rstd}, {err} units",
            stats.rstd[()]
        );
    }
}

/// `|c - v| <= t`, with `v` the real number of sign `negative` whose square is `q`: checked on
/// squares in exact arithmetic, `(|c| - t)^2 <= q <= (|c| + t)^2` (and the sign of `c`).
fn within_of_sqrt(c: f64, q: &BigRational, negative: bool, t: f64) -> bool {
    let exact = |v: f64| Dyadic::from_f64(v).to_rational();
    let (c_abs, t) = (exact(c.abs()), exact(t));
    let lo = (&c_abs - &t).max(BigRational::zero());
    let hi = &c_abs + &t;
    (c < 0.0) == negative && &lo * &lo <= *q && *q <= &hi * &hi
}

/// The spacing of `f64` next to `c > 0`, the smaller of the two sides (a tight `ulp`).
fn ulp_at(c: f64) -> f64 {
    let up = f64::from_bits(c.to_bits() + 1) - c;
    let down = c - f64::from_bits(c.to_bits() - 1);
    up.min(down)
}

/// `n - 1` values of `c = ±1e9` and one of `c + 1`, `eps = 0`: the mean `c + 1/n` is not an
/// `f64` (unless `n` is a power of two), and normalizing with the rounded mean would shift every
/// output by up to `2^-24 n / sqrt(n - 1)` (`6e10` units at `n = 57344`). Closed form, with
/// deviations `-1/n` and `(n - 1)/n`: `var = ((n - 1)/n^2 + (n - 1)^2/n^2) / n = (n - 1)/n^2`,
/// so the common value normalizes to `-1 / sqrt(n - 1)`, the odd one to `sqrt(n - 1)`, and
/// `rstd = n / sqrt(n - 1)`. Outputs within 2 units of `f64::EPSILON * max(1, |y|)`, `rstd`
/// within 1 ulp.
#[test]
fn a_row_of_1e9_with_one_outlier_is_within_two_units() {
    for n in [2usize, 3, 7, 63, 64, 65, 100, 1029, 57344] {
        let nq = BigRational::from_integer(BigInt::from(n));
        let one = BigRational::one();
        for c in [1e9f64, -1e9] {
            for at in [0, n / 2, n - 1] {
                let mut x = Array1::from_elem(n, c);
                x[at] = c + 1.0;
                let (y, stats) = LayerNorm::<f64>::new(0.0)
                    .unwrap()
                    .forward_with_stats(&x)
                    .unwrap();
                let m = (n as f64 - 1.0).sqrt(); // for the units only
                let mut seen = HashSet::new();
                for (i, &v) in y.iter().enumerate() {
                    if !seen.insert((i == at, v.to_bits())) {
                        continue;
                    }
                    let (q, negative, unit) = if i == at {
                        (&nq - &one, false, f64::EPSILON * m.max(1.0))
                    } else {
                        (&one / (&nq - &one), true, f64::EPSILON)
                    };
                    assert!(
                        within_of_sqrt(v, &q, negative, 2.0 * unit),
                        "n = {n}, c = {c:e}, outlier at {at}: y[{i}] = {v:e}, exact ±sqrt({q})"
                    );
                }
                let rstd = stats.rstd[()];
                let q = &nq * &nq / (&nq - &one);
                assert!(
                    within_of_sqrt(rstd, &q, false, ulp_at(rstd)),
                    "n = {n}, c = {c:e}, outlier at {at}: rstd {rstd:e}, exact sqrt({q})"
                );
            }
        }
    }
}

/// The closed form above, against the exact reference of the accuracy tests.
#[test]
fn the_closed_form_of_the_1e9_row_matches_the_exact_reference() {
    for n in [2usize, 3, 7, 100] {
        let nq = BigRational::from_integer(BigInt::from(n));
        let one = BigRational::one();
        let mut x = vec![1e9; n];
        x[1] += 1.0;
        let exact = ExactRow::new(&x);
        let c = BigRational::from_integer(BigInt::from(1_000_000_000));
        assert_eq!(exact.mean(), &c + &one / &nq);
        assert_eq!(exact.var(), (&nq - &one) / (&nq * &nq));
        let rstd = exact.rstd(0.0).unwrap().approx.to_rational();
        let closed = &nq * &nq / (&nq - &one);
        let rel = ((&rstd * &rstd - &closed) / &closed).abs();
        assert!(rel < BigRational::new(BigInt::one(), BigInt::one() << 130));
    }
}
