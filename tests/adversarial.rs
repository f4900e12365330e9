//! Rows built to break a fast path, checked against closed forms.

use ndarray::Array1;
use ndarray_layernorm::LayerNorm;

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
