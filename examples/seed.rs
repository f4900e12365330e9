//! The seed walkthrough (`shared/seed-walkthrough.txt`), step by step, with the crate.
//!
//! Every number it prints equals, bit for bit, the number the original walkthrough printed:
//! `moments` gives the means and variances (steps 2, 3 and 5), `forward` the normalized rows
//! (step 4). Run it with `cargo run --release --example seed`.

use ndarray::{array, Array2};
use ndarray_layernorm::{moments, Error, LayerNorm};

fn main() -> Result<(), Error> {
    // Step 1: two data points of five numbers each.
    let data: Array2<f64> = array![[0.5, -1.2, 3.3, 0.8, -0.5], [2.0, -0.7, 1.2, -3.5, 0.6]];
    println!("Data: {:?}", rows(&data));

    // Steps 2 and 3: the mean and the (biased) variance of each data point.
    let before = moments(&data)?;
    for (i, mean) in before.mean.iter().enumerate() {
        println!("Mean of data point {}: {mean:?}", i + 1);
    }
    for (i, var) in before.var.iter().enumerate() {
        println!("Variance of data point {}: {var:?}", i + 1);
    }

    // Step 4: layer normalization, (x - mean) / sqrt(var + 1e-5).
    let normalized = LayerNorm::new(1e-5)?.forward(&data)?;
    for (i, row) in rows(&normalized).iter().enumerate() {
        println!("Normalized data point {}: {row:?}", i + 1);
    }

    // Step 5: the check that it worked: each row now has mean ~0 and variance ~1.
    let after = moments(&normalized)?;
    for (i, (mean, var)) in after.mean.iter().zip(&after.var).enumerate() {
        println!(
            "After normalization — Mean {}: {mean:?} , Variance {}: {var:?}",
            i + 1,
            i + 1
        );
    }
    Ok(())
}

/// The rows of a 2-D array as vectors, printed the way the walkthrough prints lists.
fn rows(a: &Array2<f64>) -> Vec<Vec<f64>> {
    a.outer_iter().map(|r| r.to_vec()).collect()
}
