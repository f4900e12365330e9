//! Two LayerNorm layers saved as a model export would save them, loaded back, and a batch run
//! through them in `f32` and in `f64`.
//!
//! ```text
//! cargo run --example safetensors --features safetensors
//! ```
//!
//! Writes one file to the system's temporary directory (and removes it); needs nothing else.

use ndarray::{Array1, Array2};
use ndarray_layernorm::{LayerNorm, SafetensorsReader, SafetensorsWriter};

const HIDDEN: usize = 64;
const TOKENS: usize = 4;
const EPS: f64 = 1e-12; // BERT's layer_norm_eps

fn prefix(layer: usize) -> String {
    format!("encoder.layer.{layer}.output.LayerNorm")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // "Trained" parameters, as an exporter holds them in f32.
    let mut writer = SafetensorsWriter::new();
    for layer in 0..2 {
        let s = layer as f32 + 1.0;
        let gamma = Array1::from_shape_fn(HIDDEN, |i| 1.0 + 0.1 * (s * i as f32).sin());
        let beta = Array1::from_shape_fn(HIDDEN, |i| 0.05 * (s * i as f32).cos());
        let ln = LayerNorm::new(EPS as f32)?
            .with_gamma(gamma)?
            .with_beta(beta)?;
        writer.add_layer_norm(&prefix(layer), &ln)?;
    }
    let path = std::env::temp_dir().join(format!(
        "ndarray_layernorm_example_{}.safetensors",
        std::process::id()
    ));
    writer.save(&path)?;
    let bytes = std::fs::read(&path)?;
    std::fs::remove_file(&path)?;
    let reader = SafetensorsReader::new(&bytes)?;
    println!(
        "wrote {} ({} bytes, {} tensors)",
        path.display(),
        bytes.len(),
        reader.names().len()
    );

    // The same tensors loaded into f32 and f64 layers (F32 into f64 is exact).
    let mut layers32 = Vec::new();
    let mut layers64 = Vec::new();
    for layer in 0..2 {
        layers32.push(reader.layer_norm::<f32>(&prefix(layer), EPS as f32)?);
        layers64.push(reader.layer_norm::<f64>(&prefix(layer), EPS)?);
    }
    let ln = &layers32[1];
    println!(
        "loaded {} and layer 0 as f32 and f64: gamma {:?}, beta {:?}",
        prefix(1),
        ln.gamma().map_or(&[][..], |g| g.shape()),
        ln.beta().map_or(&[][..], |b| b.shape())
    );

    // A batch of hidden states with an offset, as a residual stream has.
    let x32 = Array2::from_shape_fn((TOKENS, HIDDEN), |(t, i)| {
        3.0 + ((t * HIDDEN + i) as f32 * 0.37).sin() * (1.0 + t as f32)
    });
    let x64 = x32.mapv(f64::from);
    let mut y32 = x32;
    let mut y64 = x64;
    for (l32, l64) in layers32.iter().zip(&layers64) {
        l32.forward_inplace(&mut y32)?;
        l64.forward_inplace(&mut y64)?;
    }
    let diff = y32
        .iter()
        .zip(&y64)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    println!(
        "f32, 2 layers over {TOKENS} x {HIDDEN}: max |y32 - y64| = {diff:.2e} ({:.2} f32 ulps of 1)",
        diff / f64::from(f32::EPSILON)
    );
    // ---- bf16 -------------------------------------------------------------------------------
    // A bf16 run (`reader.layer_norm::<half::bf16>`, feature `half`) and its line of output go
    // here, once the layers take bf16.
    Ok(())
}
