//! The seed walkthrough (`shared/seed-walkthrough.txt`), asserted bit for bit.
//!
//! The expected numbers are the ones the original walkthrough printed, copied from it; none of
//! them comes from this crate. A plain sequential sum gives `0.5799999999999998` for the first
//! mean, and multiplying by `1 / s` instead of dividing by `s` gives `-1.7775866344545808`, so
//! these assertions fail for either shortcut.

use ndarray::{array, Array2};
use ndarray_layernorm::{moments, LayerNorm};

fn data() -> Array2<f64> {
    array![[0.5, -1.2, 3.3, 0.8, -0.5], [2.0, -0.7, 1.2, -3.5, 0.6]]
}

#[test]
fn means_are_the_walkthroughs_to_the_bit() {
    let m = moments(&data()).unwrap();
    assert_eq!(m.mean.to_vec(), vec![0.58, -0.08]);
}

#[test]
fn variances_are_the_walkthroughs_to_the_bit() {
    let m = moments(&data()).unwrap();
    assert_eq!(m.var.to_vec(), vec![2.3575999999999997, 3.7016]);
}

#[test]
fn normalized_rows_are_the_walkthroughs_to_the_bit() {
    let y = LayerNorm::new(1e-5).unwrap().forward(&data()).unwrap();
    let expected: Array2<f64> = array![
        [
            -0.05210195320817495,
            -1.1592684588818931,
            1.771466409077949,
            0.14328037132248123,
            -0.7033763683103622
        ],
        [
            1.081105321539628,
            -0.3222525477666199,
            0.6652955824859249,
            -1.7775866344545805,
            0.3534382781956476
        ]
    ];
    for (got, want) in y.iter().zip(&expected) {
        assert_eq!(got.to_bits(), want.to_bits(), "{got:?} != {want:?}");
    }
}

#[test]
fn the_check_after_normalization_is_the_walkthroughs_to_the_bit() {
    let y = LayerNorm::new(1e-5).unwrap().forward(&data()).unwrap();
    let m = moments(&y).unwrap();
    assert_eq!(
        m.mean.to_vec(),
        vec![1.3877787807814458e-18, 2.2204460492503132e-17]
    );
    assert_eq!(m.var.to_vec(), vec![0.9999957584163625, 0.9999972984728265]);
}

#[test]
fn the_default_epsilon_is_the_walkthroughs() {
    let ln = LayerNorm::<f64>::default();
    assert_eq!(ln.epsilon(), 1e-5);
    assert_eq!(
        ln.forward(&data()).unwrap(),
        LayerNorm::new(1e-5).unwrap().forward(&data()).unwrap()
    );
}
