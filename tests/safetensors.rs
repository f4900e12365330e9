//! Loading and saving layers as safetensors (feature `safetensors`).
//!
//! Files are built here byte by byte (the 8-byte header length, a JSON header written with
//! `format!`, little-endian data), and files the library writes are read back with a parser
//! written here on `serde_json`, so that neither direction is checked against the code under
//! test. Converted values are compared with bit patterns and values worked out by hand.
#![cfg(feature = "safetensors")]

use ndarray::{arr1, Array1, ArrayD, IxDyn};
use ndarray_layernorm::{Error, LayerNorm, RmsNorm, SafetensorsReader, SafetensorsWriter};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Files written by hand.

/// A safetensors file: `header` (JSON) after its little-endian length, then `data`.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A file of the given tensors `(name, dtype, shape, bytes)`, their data in this order.
fn file(tensors: &[(&str, &str, &[u64], Vec<u8>)]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let (start, end) = (data.len(), data.len() + bytes.len());
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{start},{end}]}}"#
        ));
        data.extend_from_slice(bytes);
    }
    raw(&format!("{{{}}}", entries.join(",")), &data)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A typical LayerNorm file: `ln.weight` and `ln.bias` of 3 elements, in F32.
fn ln_file() -> Vec<u8> {
    file(&[
        ("ln.weight", "F32", &[3], f32_bytes(&[1.0, 2.0, 3.0])),
        ("ln.bias", "F32", &[3], f32_bytes(&[0.5, 0.0, -0.5])),
    ])
}

fn ln32(bytes: &[u8], prefix: &str) -> Result<LayerNorm<f32>, Error> {
    LayerNorm::<f32>::from_safetensors(bytes, prefix, 1e-5)
}

fn gamma_vec<F: Copy>(g: Option<&ArrayD<F>>) -> Vec<F> {
    g.expect("the layer has this parameter")
        .iter()
        .copied()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reading a file the library wrote, independently.

/// `(name, dtype, shape, bytes)` of every tensor of a safetensors file, sorted by name, read
/// with `serde_json` and slicing; also checks that the data is covered exactly.
fn parse(bytes: &[u8]) -> Vec<(String, String, Vec<u64>, Vec<u8>)> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = Vec::new();
    let mut covered = 0;
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            assert_eq!(info, &serde_json::json!({"format": "pt"}));
            continue;
        }
        let offsets = info["data_offsets"].as_array().unwrap();
        let (s, e) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
        covered += e - s;
        let shape = info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        out.push((
            name.clone(),
            info["dtype"].as_str().unwrap().to_string(),
            shape,
            data[s as usize..e as usize].to_vec(),
        ));
    }
    assert_eq!(covered as usize, data.len(), "the data is covered exactly");
    out.sort();
    out
}

#[test]
fn saved_tensors_have_pytorch_names_dtype_shape_and_bytes() {
    let gamma =
        ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0f32, -2.0, 0.5, 3.0, 0.0, 7.25]).unwrap();
    let beta = gamma.mapv(|v| v / 4.0);
    let ln = LayerNorm::new(1e-5)
        .unwrap()
        .with_trailing_axes(2)
        .unwrap()
        .with_gamma(gamma.clone())
        .unwrap()
        .with_beta(beta.clone())
        .unwrap();
    let rms = RmsNorm::<f64>::new(1e-6)
        .unwrap()
        .with_gamma(arr1(&[0.1, -0.0]))
        .unwrap();
    let mut writer = SafetensorsWriter::new();
    writer
        .add_layer_norm("encoder.layer.0.output.LayerNorm", &ln)
        .unwrap()
        .add_rms_norm("", &rms)
        .unwrap();
    let tensors = parse(&writer.to_bytes().unwrap());
    let expected = vec![
        (
            "encoder.layer.0.output.LayerNorm.bias".to_string(),
            "F32".to_string(),
            vec![2, 3],
            f32_bytes(&[0.25, -0.5, 0.125, 0.75, 0.0, 1.8125]),
        ),
        (
            "encoder.layer.0.output.LayerNorm.weight".to_string(),
            "F32".to_string(),
            vec![2, 3],
            f32_bytes(&[1.0, -2.0, 0.5, 3.0, 0.0, 7.25]),
        ),
        (
            "weight".to_string(),
            "F64".to_string(),
            vec![2],
            f64_bytes(&[0.1, -0.0]),
        ),
    ];
    assert_eq!(tensors, expected);
}

// ---------------------------------------------------------------------------------------------
// Loading, one rule at a time.

#[test]
fn loads_weight_and_bias() {
    let ln = ln32(&ln_file(), "ln").unwrap();
    assert_eq!(ln.trailing_axes(), 1);
    assert_eq!(ln.epsilon(), 1e-5);
    assert_eq!(gamma_vec(ln.gamma()), [1.0, 2.0, 3.0]);
    assert_eq!(gamma_vec(ln.beta()), [0.5, 0.0, -0.5]);
}

#[test]
fn loads_gamma_and_beta_of_older_files() {
    let bytes = file(&[
        (
            "bert.embeddings.LayerNorm.gamma",
            "F32",
            &[2],
            f32_bytes(&[4.0, 5.0]),
        ),
        (
            "bert.embeddings.LayerNorm.beta",
            "F32",
            &[2],
            f32_bytes(&[-1.0, 1.0]),
        ),
    ]);
    let ln = ln32(&bytes, "bert.embeddings.LayerNorm").unwrap();
    assert_eq!(gamma_vec(ln.gamma()), [4.0, 5.0]);
    assert_eq!(gamma_vec(ln.beta()), [-1.0, 1.0]);
}

#[test]
fn bias_is_optional_and_other_tensors_are_ignored() {
    let bytes = file(&[
        ("h.0.ln_1.weight", "F32", &[2], f32_bytes(&[4.0, 5.0])),
        ("h.0.ln_1.running_mean", "I64", &[], vec![0; 8]),
        ("h.0.attn.weight", "F16", &[2, 2], vec![0; 8]),
    ]);
    let ln = ln32(&bytes, "h.0.ln_1").unwrap();
    assert_eq!(gamma_vec(ln.gamma()), [4.0, 5.0]);
    assert!(ln.beta().is_none());
}

#[test]
fn empty_prefix_means_bare_names() {
    let bytes = file(&[("weight", "F32", &[1], f32_bytes(&[2.0]))]);
    let rms = RmsNorm::<f32>::from_safetensors(&bytes, "", 1e-6).unwrap();
    assert_eq!(gamma_vec(rms.gamma()), [2.0]);
}

#[test]
fn rank_two_tensor_gives_a_layer_over_two_axes() {
    let bytes = file(&[(
        "ln.weight",
        "F32",
        &[2, 3],
        f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    )]);
    let ln = ln32(&bytes, "ln").unwrap();
    assert_eq!(ln.trailing_axes(), 2);
    assert_eq!(ln.gamma().unwrap().shape(), &[2, 3]);
    // Row-major order: element [1, 0] is the fourth value.
    assert_eq!(ln.gamma().unwrap()[[1, 0]], 4.0);
}

#[test]
fn with_shape_reshapes_a_flat_tensor_and_checks_others() {
    let values: Vec<f32> = (1..=6).map(|v| v as f32).collect();
    let flat = file(&[
        ("ln.weight", "F32", &[6], f32_bytes(&values)),
        ("ln.bias", "F32", &[6], f32_bytes(&values)),
    ]);
    let reader = SafetensorsReader::new(&flat).unwrap();
    let ln = reader
        .layer_norm_with_shape::<f32>("ln", &[2, 3], 1e-5)
        .unwrap();
    assert_eq!(ln.trailing_axes(), 2);
    assert_eq!(ln.gamma().unwrap()[[1, 0]], 4.0);
    assert_eq!(ln.beta().unwrap()[[0, 2]], 3.0);
    // The shape as stored is accepted too.
    let ln1 = reader
        .layer_norm_with_shape::<f32>("ln", &[6], 1e-5)
        .unwrap();
    assert_eq!(ln1.trailing_axes(), 1);
    // Wrong total length.
    assert_eq!(
        reader.layer_norm_with_shape::<f32>("ln", &[2, 2], 1e-5),
        Err(Error::TensorShape {
            name: "ln.weight".into(),
            expected: vec![2, 2],
            actual: vec![6],
        })
    );
    // A rank-2 tensor of the right length but another shape is not reshaped.
    let square = file(&[("n.weight", "F32", &[3, 2], f32_bytes(&values))]);
    assert_eq!(
        SafetensorsReader::new(&square)
            .unwrap()
            .rms_norm_with_shape::<f32>("n", &[2, 3], 1e-6),
        Err(Error::TensorShape {
            name: "n.weight".into(),
            expected: vec![2, 3],
            actual: vec![3, 2],
        })
    );
    // An empty or impossible shape is the caller's error.
    assert_eq!(
        reader.layer_norm_with_shape::<f32>("ln", &[], 1e-5),
        Err(Error::InvalidAxes { axes: 0 })
    );
    assert!(matches!(
        reader.layer_norm_with_shape::<f32>("ln", &[usize::MAX, 2], 1e-5),
        Err(Error::ShapeTooLarge { .. })
    ));
}

#[test]
fn loaded_layer_normalizes() {
    let ln = ln32(&ln_file(), "ln").unwrap();
    let y = ln.forward(&arr1(&[1.0f32, 2.0, 3.0])).unwrap();
    // mean 2, var 2/3: xhat = (-1, 0, 1) / sqrt(2/3 + eps).
    let s = 1.0 / (2.0 / 3.0 + f64::from(1e-5f32)).sqrt();
    let expected = [-s * 1.0 + 0.5, 0.0, s * 3.0 - 0.5];
    for (a, b) in y.iter().zip(expected) {
        assert!((f64::from(*a) - b).abs() < 1e-6, "{a} vs {b}");
    }
}

// ---------------------------------------------------------------------------------------------
// Every error, one at a time, with its message.

#[track_caller]
fn assert_error<T: std::fmt::Debug>(result: Result<T, Error>, expected: Error, words: &[&str]) {
    let err = result.expect_err("an error");
    assert_eq!(err, expected);
    let message = err.to_string();
    for w in words {
        assert!(message.contains(w), "{message:?} does not contain {w:?}");
    }
}

#[test]
fn error_missing_tensor() {
    assert_error(
        ln32(&ln_file(), "encoder.layer.0.output.LayerNorm"),
        Error::TensorMissing {
            name: "encoder.layer.0.output.LayerNorm.weight".into(),
            alternative: Some("encoder.layer.0.output.LayerNorm.gamma".into()),
        },
        &[
            "no tensor",
            "`encoder.layer.0.output.LayerNorm.weight`",
            ".gamma",
        ],
    );
    // A bias alone is not a layer.
    let bias_only = file(&[("ln.bias", "F32", &[1], f32_bytes(&[1.0]))]);
    assert!(matches!(
        ln32(&bias_only, "ln"),
        Err(Error::TensorMissing { .. })
    ));
}

#[test]
fn error_ambiguous_names() {
    let both = file(&[
        ("ln.weight", "F32", &[1], f32_bytes(&[1.0])),
        ("ln.gamma", "F32", &[1], f32_bytes(&[2.0])),
    ]);
    assert_error(
        ln32(&both, "ln"),
        Error::TensorAmbiguous {
            name: "ln.weight".into(),
            other: "ln.gamma".into(),
        },
        &["both", "`ln.weight`", "`ln.gamma`"],
    );
    let both_bias = file(&[
        ("ln.weight", "F32", &[1], f32_bytes(&[1.0])),
        ("ln.bias", "F32", &[1], f32_bytes(&[1.0])),
        ("ln.beta", "F32", &[1], f32_bytes(&[2.0])),
    ]);
    assert_eq!(
        ln32(&both_bias, "ln"),
        Err(Error::TensorAmbiguous {
            name: "ln.bias".into(),
            other: "ln.beta".into(),
        })
    );
}

#[test]
fn error_bias_for_rms_norm() {
    assert_error(
        RmsNorm::<f32>::from_safetensors(&ln_file(), "ln", 1e-6),
        Error::TensorUnexpected {
            name: "ln.bias".into(),
        },
        &["`ln.bias`", "RMSNorm has no bias"],
    );
}

#[test]
fn error_bias_shape_differs_from_weight() {
    let bytes = file(&[
        ("ln.weight", "F32", &[4], f32_bytes(&[1.0; 4])),
        ("ln.bias", "F32", &[3], f32_bytes(&[0.0; 3])),
    ]);
    assert_error(
        ln32(&bytes, "ln"),
        Error::TensorShape {
            name: "ln.bias".into(),
            expected: vec![4],
            actual: vec![3],
        },
        &["`ln.bias`", "[3]", "[4]"],
    );
}

#[test]
fn error_unusable_shape() {
    let scalar = file(&[("ln.weight", "F32", &[], f32_bytes(&[1.0]))]);
    assert_error(
        ln32(&scalar, "ln"),
        Error::TensorShapeInvalid {
            name: "ln.weight".into(),
            shape: vec![],
        },
        &["`ln.weight`", "at least one axis"],
    );
    // No elements, but lengths whose product is beyond ndarray's limit.
    let huge = 1u64 << 62;
    let empty = file(&[("ln.weight", "F32", &[0, huge, 4], vec![])]);
    assert_eq!(
        ln32(&empty, "ln"),
        Err(Error::TensorShapeInvalid {
            name: "ln.weight".into(),
            shape: vec![0, huge as usize, 4],
        })
    );
}

#[test]
fn error_unsupported_dtype() {
    for (dtype, width) in [
        ("I64", 8),
        ("U8", 1),
        ("F8_E4M3", 1),
        ("BOOL", 1),
        ("C64", 8),
    ] {
        let bytes = file(&[("ln.weight", dtype, &[2], vec![0; 2 * width])]);
        assert_error(
            ln32(&bytes, "ln"),
            Error::TensorDtype {
                name: "ln.weight".into(),
                dtype: dtype.into(),
            },
            &["`ln.weight`", dtype, "F16, BF16, F32 or F64"],
        );
    }
}

#[test]
fn error_value_beyond_f32() {
    // f32::MAX = (2 - 2^-23) 2^127; half an ulp above it (2^103) ties to even, which is up.
    let max = f64::from(f32::MAX);
    let bytes = file(&[(
        "ln.weight",
        "F64",
        &[3],
        f64_bytes(&[1.0, max + 2f64.powi(103), 2.0]),
    )]);
    assert_error(
        ln32(&bytes, "ln"),
        Error::TensorOverflow {
            name: "ln.weight".into(),
            index: 1,
            value: max + 2f64.powi(103),
            target: "f32",
        },
        &["element 1", "`ln.weight`", "f32"],
    );
    let negative = file(&[("ln.weight", "F64", &[1], f64_bytes(&[-1e39]))]);
    assert!(matches!(
        ln32(&negative, "ln"),
        Err(Error::TensorOverflow { index: 0, .. })
    ));
    // Just below the tie rounds to f32::MAX; infinities and NaN load as themselves.
    let edge = file(&[(
        "ln.weight",
        "F64",
        &[4],
        f64_bytes(&[max + 2f64.powi(102), -max, f64::INFINITY, f64::NAN]),
    )]);
    let g = gamma_vec(ln32(&edge, "ln").unwrap().gamma());
    assert_eq!(&g[..3], &[f32::MAX, -f32::MAX, f32::INFINITY]);
    assert!(g[3].is_nan());
    // The same values load into f64 unchanged.
    let ln64 = LayerNorm::<f64>::from_safetensors(&bytes, "ln", 1e-5).unwrap();
    assert_eq!(gamma_vec(ln64.gamma())[1], max + 2f64.powi(103));
}

/// A header whose tensors' offsets add up to `u64::MAX`: eight U8 tensors of `2^61 - 1` bytes
/// and one of 7, over 8 bytes of data. `safetensors` 0.8.0 adds the last offset to the header
/// length unchecked when it reads this file.
fn offsets_near_u64_max() -> Vec<u8> {
    let chunk = (1u64 << 61) - 1;
    let mut entries = Vec::new();
    let mut start = 0u64;
    for i in 0..9 {
        let len = if i < 8 { chunk } else { 7 };
        let end = start + len;
        entries.push(format!(
            r#""t{i}":{{"dtype":"U8","shape":[{len}],"data_offsets":[{start},{end}]}}"#
        ));
        start = end;
    }
    assert_eq!(start, u64::MAX);
    raw(&format!("{{{}}}", entries.join(",")), &[0; 8])
}

#[test]
fn error_offsets_beyond_the_data() {
    assert_error(
        SafetensorsReader::new(&offsets_near_u64_max()),
        Error::TensorOffsets {
            name: "t0".into(),
            start: 0,
            end: (1 << 61) - 1,
            data_len: 8,
        },
        &["`t0`", "[0, 2305843009213693951]", "8 bytes"],
    );
    let short = raw(
        r#"{"ln.weight":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}}"#,
        &[0; 8],
    );
    assert!(matches!(
        ln32(&short, "ln"),
        Err(Error::TensorOffsets { end: 1000, .. })
    ));
    // The check visits duplicate keys too, whichever one the parser keeps.
    let duplicate = raw(
        r#"{"a":{"dtype":"U8","shape":[9],"data_offsets":[0,9]},"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert!(matches!(
        SafetensorsReader::new(&duplicate),
        Err(Error::TensorOffsets { end: 9, .. })
    ));
}

#[test]
fn error_invalid_files() {
    let good = ln_file();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut extra = good.clone();
    extra.push(0);
    let mut misdeclared = good.clone();
    misdeclared[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("seven bytes", good[..7].to_vec()),
        ("header cut", good[..8 + n / 2].to_vec()),
        ("one byte more", extra),
        ("header length beyond the file", misdeclared),
        ("not JSON", raw("not json", &[])),
        (
            "not UTF-8",
            [&2u64.to_le_bytes()[..], &[0xff, 0xfe]].concat(),
        ),
        ("an array", raw("[1, 2]", &[])),
        (
            "a dtype that does not exist",
            raw(
                r#"{"a":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}}"#,
                &[0],
            ),
        ),
        (
            "offsets that do not fit the shape",
            raw(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
        ),
        (
            "a gap between tensors",
            raw(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#,
                &[0; 3],
            ),
        ),
        (
            "a shape product that overflows",
            raw(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
        (
            "a negative offset",
            raw(
                r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[-1,0]}}"#,
                &[],
            ),
        ),
    ];
    for (what, bytes) in cases {
        match ln32(&bytes, "ln") {
            Err(Error::InvalidSafetensors { message }) => {
                assert!(!message.is_empty(), "{what}");
                let shown = Error::InvalidSafetensors { message }.to_string();
                assert!(
                    shown.starts_with("not a valid safetensors file: "),
                    "{what}: {shown}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Data cut short: the last tensor's offsets reach beyond it.
    assert_eq!(
        ln32(&good[..good.len() - 1], "ln"),
        Err(Error::TensorOffsets {
            name: "ln.bias".into(),
            start: 12,
            end: 24,
            data_len: 23,
        })
    );
    // A header length beyond 2^63 (not representable on some targets) is an error too.
    let mut big = vec![0xff; 8];
    big.extend_from_slice(b"{}");
    assert!(matches!(
        ln32(&big, "ln"),
        Err(Error::InvalidSafetensors { .. })
    ));
}

#[test]
fn error_epsilon_is_checked_first() {
    assert_eq!(
        LayerNorm::<f32>::from_safetensors(&ln_file(), "missing", -1.0),
        Err(Error::InvalidEpsilon { epsilon: -1.0 })
    );
    assert!(matches!(
        RmsNorm::<f64>::from_safetensors(&ln_file(), "ln", f64::NAN),
        Err(Error::InvalidEpsilon { .. })
    ));
}

#[test]
fn error_io() {
    let dir = std::env::temp_dir().join(format!("ndarray_layernorm_io_{}", std::process::id()));
    let missing = dir.join("no_such_dir").join("model.safetensors");
    match LayerNorm::<f32>::load_safetensors(&missing, "ln", 1e-5) {
        Err(Error::Io {
            path,
            kind,
            message,
        }) => {
            assert_eq!(path, missing);
            assert_eq!(kind, std::io::ErrorKind::NotFound);
            let shown = Error::Io {
                path,
                kind,
                message,
            }
            .to_string();
            assert!(shown.contains("model.safetensors"), "{shown}");
        }
        other => panic!("{other:?}"),
    }
    let ln = LayerNorm::<f32>::affine(2, 1e-5).unwrap();
    assert!(matches!(
        ln.save_safetensors(&missing, "ln"),
        Err(Error::Io {
            kind: std::io::ErrorKind::NotFound,
            ..
        })
    ));
    let rms = RmsNorm::<f32>::affine(2, 1e-5).unwrap();
    assert!(matches!(
        rms.save_safetensors(&missing, "n"),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        RmsNorm::<f32>::load_safetensors(&missing, "n", 1e-6),
        Err(Error::Io { .. })
    ));
}

#[test]
fn error_nothing_to_save() {
    let plain = LayerNorm::<f32>::new(1e-5).unwrap();
    assert_error(
        plain.to_safetensors("ln"),
        Error::NothingToSave {
            prefix: "ln".into(),
        },
        &["`ln`", "no gamma"],
    );
    let beta_only = plain.with_beta(arr1(&[1.0f32])).unwrap();
    assert!(matches!(
        beta_only.to_safetensors("ln"),
        Err(Error::NothingToSave { .. })
    ));
    let rms = RmsNorm::<f64>::new(1e-6).unwrap();
    assert!(matches!(
        rms.to_safetensors("n"),
        Err(Error::NothingToSave { .. })
    ));
}

#[test]
fn error_duplicate_tensor_adds_nothing() {
    let ln = LayerNorm::<f32>::affine(2, 1e-5).unwrap();
    let mut writer = SafetensorsWriter::new();
    writer
        .add_rms_norm("a", &RmsNorm::<f32>::affine(2, 1e-6).unwrap())
        .unwrap();
    let before = writer.clone();
    assert_error(
        writer.add_layer_norm("a", &ln).map(|_| ()),
        Error::TensorDuplicate {
            name: "a.weight".into(),
        },
        &["`a.weight`", "already"],
    );
    assert_eq!(writer, before);
}

// ---------------------------------------------------------------------------------------------
// Conversions, against values worked out by hand.

#[test]
fn f16_loads_exactly() {
    // (bits, value): sign, exponent (bias 15) and 10-bit mantissa decoded by hand.
    let cases: [(u16, f64); 9] = [
        (0x3C00, 1.0),
        (0xC000, -2.0),
        (0x7BFF, 65504.0),               // (2 - 2^-10) 2^15, the largest f16
        (0x0400, 6.103515625e-05),       // 2^-14, the smallest normal
        (0x0001, 5.960464477539063e-08), // 2^-24, the smallest subnormal
        (0x3555, 0.333251953125),        // 2^-2 (1 + 341/1024)
        (0x8000, -0.0),
        (0x7C00, f64::INFINITY),
        (0xFC00, f64::NEG_INFINITY),
    ];
    assert_eq!(2f64.powi(-24), 5.960464477539063e-08);
    let bits: Vec<u16> = cases.iter().map(|c| c.0).collect();
    let bytes = file(&[("n.weight", "F16", &[9], u16_bytes(&bits))]);
    let g32 = gamma_vec(
        RmsNorm::<f32>::from_safetensors(&bytes, "n", 1e-6)
            .unwrap()
            .gamma(),
    );
    let g64 = gamma_vec(
        RmsNorm::<f64>::from_safetensors(&bytes, "n", 1e-6)
            .unwrap()
            .gamma(),
    );
    for (i, &(b, v)) in cases.iter().enumerate() {
        assert_eq!(g64[i].to_bits(), v.to_bits(), "f16 {b:#06x} into f64");
        assert_eq!(
            g32[i].to_bits(),
            (v as f32).to_bits(),
            "f16 {b:#06x} into f32"
        );
        assert_eq!(f64::from(v as f32), v, "the value is an f32");
    }
    // A NaN stays a NaN.
    let nan = file(&[("n.weight", "F16", &[1], u16_bytes(&[0x7E00]))]);
    let g = gamma_vec(
        RmsNorm::<f32>::from_safetensors(&nan, "n", 1e-6)
            .unwrap()
            .gamma(),
    );
    assert!(g[0].is_nan());
}

#[test]
fn bf16_loads_exactly() {
    // A bf16 is the upper half of an f32: its f32 bits are its bits shifted by 16.
    let cases: [(u16, f64); 8] = [
        (0x3F80, 1.0),
        (0xC2F7, -123.5),                 // -2^6 (1 + 119/128)
        (0x4049, 3.140625),               // 2^1 (1 + 73/128)
        (0x7F7F, 3.3895313892515355e38),  // (2 - 2^-7) 2^127, the largest bf16
        (0x0080, 1.1754943508222875e-38), // 2^-126
        (0x0001, 9.183549615799121e-41),  // 2^-133, the smallest subnormal
        (0x8000, -0.0),
        (0xFF80, f64::NEG_INFINITY),
    ];
    assert_eq!(
        (2.0 - 2f64.powi(-7)) * 2f64.powi(127),
        3.3895313892515355e38
    );
    assert_eq!(2f64.powi(-133), 9.183549615799121e-41);
    let bits: Vec<u16> = cases.iter().map(|c| c.0).collect();
    let bytes = file(&[
        ("ln.gamma", "BF16", &[8], u16_bytes(&bits)),
        ("ln.beta", "BF16", &[8], u16_bytes(&bits)),
    ]);
    let l32 = ln32(&bytes, "ln").unwrap();
    let ln64 = LayerNorm::<f64>::from_safetensors(&bytes, "ln", 1e-5).unwrap();
    for (i, &(b, v)) in cases.iter().enumerate() {
        assert_eq!(
            gamma_vec(l32.gamma())[i].to_bits(),
            u32::from(b) << 16,
            "{b:#06x}"
        );
        assert_eq!(
            gamma_vec(l32.beta())[i].to_bits(),
            u32::from(b) << 16,
            "{b:#06x}"
        );
        assert_eq!(
            gamma_vec(ln64.gamma())[i].to_bits(),
            v.to_bits(),
            "{b:#06x} into f64"
        );
    }
}

#[test]
fn f64_rounds_to_nearest_f32() {
    let e = |k: i32| 2f64.powi(k);
    // (f64 value, the nearest f32 with ties to even, as bits worked out by hand)
    let cases: [(f64, u32); 9] = [
        (1.0 + e(-24), 0x3F80_0000),          // tie: to the even 1.0
        (1.0 + 3.0 * e(-24), 0x3F80_0002),    // tie: to the even 1 + 2^-22
        (1.0 + e(-24) + e(-52), 0x3F80_0001), // just above the tie: up
        (1.0 + e(-24) - e(-52), 0x3F80_0000), // just below: down
        (0.1, 0x3DCC_CCCD),
        (-(1.0 + e(-23)), 0xBF80_0001), // exact
        (e(-149), 0x0000_0001),         // the smallest subnormal, exact
        (e(-150), 0x0000_0000),         // tie between 0 and 2^-149: to 0
        (3.0 * e(-150), 0x0000_0002),   // tie between 2^-149 and 2^-148: to 2^-148
    ];
    let values: Vec<f64> = cases.iter().map(|c| c.0).collect();
    let bytes = file(&[("n.weight", "F64", &[9], f64_bytes(&values))]);
    let g = gamma_vec(
        RmsNorm::<f32>::from_safetensors(&bytes, "n", 1e-6)
            .unwrap()
            .gamma(),
    );
    for (i, &(v, bits)) in cases.iter().enumerate() {
        assert_eq!(g[i].to_bits(), bits, "{v:e}");
    }
}

#[test]
fn f32_loads_into_f64_exactly() {
    let values = [0.1f32, -3.5, f32::MIN_POSITIVE, f32::from_bits(1), f32::MAX];
    let bytes = file(&[("n.weight", "F32", &[5], f32_bytes(&values))]);
    let g = gamma_vec(
        RmsNorm::<f64>::from_safetensors(&bytes, "n", 1e-6)
            .unwrap()
            .gamma(),
    );
    let expected = [
        13421773.0 * 2f64.powi(-27), // 0x3DCCCCCD, the f32 nearest 0.1
        -3.5,
        2f64.powi(-126),
        2f64.powi(-149),
        (2.0 - 2f64.powi(-23)) * 2f64.powi(127),
    ];
    assert_eq!(g, expected);
}

// ---------------------------------------------------------------------------------------------
// Round trips, bit for bit.

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        (0usize..12).prop_map(|n| vec![n]),
        (1usize..5, 1usize..5).prop_map(|(a, b)| vec![a, b]),
        (1usize..4, 1usize..3, 1usize..4).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
}

/// `len` values from any bit patterns (NaNs with payloads, infinities, subnormals, -0).
fn f32_params(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(any::<u32>().prop_map(f32::from_bits), len)
}

fn f64_params(len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(any::<u64>().prop_map(f64::from_bits), len)
}

fn bits32(a: Option<&ArrayD<f32>>) -> Option<(Vec<usize>, Vec<u32>)> {
    a.map(|a| (a.shape().to_vec(), a.iter().map(|v| v.to_bits()).collect()))
}

fn bits64(a: Option<&ArrayD<f64>>) -> Option<(Vec<usize>, Vec<u64>)> {
    a.map(|a| (a.shape().to_vec(), a.iter().map(|v| v.to_bits()).collect()))
}

macro_rules! round_trip {
    ($name:ident, $float:ty, $params:ident, $bits:ident) => {
        proptest! {
            #[test]
            fn $name(
                (shape, gamma, beta, with_beta) in shapes().prop_flat_map(|shape| {
                    let n = shape.iter().product();
                    (Just(shape), $params(n), $params(n), any::<bool>())
                }),
                eps in 0.0..1e-3,
            ) {
                let eps = eps as $float;
                let g = ArrayD::from_shape_vec(IxDyn(&shape), gamma).unwrap();
                let b = ArrayD::from_shape_vec(IxDyn(&shape), beta).unwrap();
                let mut ln = LayerNorm::<$float>::new(eps).unwrap()
                    .with_trailing_axes(shape.len()).unwrap()
                    .with_gamma(g.clone()).unwrap();
                if with_beta {
                    ln = ln.with_beta(b).unwrap();
                }
                let bytes = ln.to_safetensors("encoder.layer.3.output.LayerNorm").unwrap();
                let back = LayerNorm::<$float>::from_safetensors(
                    &bytes, "encoder.layer.3.output.LayerNorm", eps).unwrap();
                prop_assert_eq!(back.trailing_axes(), shape.len());
                prop_assert_eq!(back.epsilon().to_bits(), eps.to_bits());
                prop_assert_eq!($bits(back.gamma()), $bits(ln.gamma()));
                prop_assert_eq!($bits(back.beta()), $bits(ln.beta()));
                prop_assert_eq!(back.beta().is_some(), with_beta);

                let rms = RmsNorm::<$float>::new(eps).unwrap()
                    .with_trailing_axes(shape.len()).unwrap()
                    .with_gamma(g).unwrap();
                let bytes = rms.to_safetensors("model.norm").unwrap();
                let back = RmsNorm::<$float>::from_safetensors(&bytes, "model.norm", eps).unwrap();
                prop_assert_eq!(back.trailing_axes(), shape.len());
                prop_assert_eq!($bits(back.gamma()), $bits(rms.gamma()));
            }
        }
    };
}

round_trip!(round_trip_f32, f32, f32_params, bits32);
round_trip!(round_trip_f64, f64, f64_params, bits64);

#[test]
fn round_trip_through_a_file_with_several_layers() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "ndarray_layernorm_test_{}.safetensors",
        std::process::id()
    ));
    let ln0 = LayerNorm::<f32>::new(1e-12)
        .unwrap()
        .with_gamma(arr1(&[0.5f32, 1.5, -2.0]))
        .unwrap()
        .with_beta(arr1(&[0.0f32, 0.1, -0.1]))
        .unwrap();
    let ln1 = LayerNorm::<f64>::affine_shape(&[2, 2], 1e-12).unwrap();
    let rms = RmsNorm::<f32>::affine(3, 1e-6).unwrap();
    let mut writer = SafetensorsWriter::new();
    writer
        .add_layer_norm("encoder.layer.0.output.LayerNorm", &ln0)
        .unwrap()
        .add_layer_norm("encoder.layer.1.output.LayerNorm", &ln1)
        .unwrap()
        .add_rms_norm("final_norm", &rms)
        .unwrap();
    writer.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(bytes, writer.to_bytes().unwrap());
    let reader = SafetensorsReader::new(&bytes).unwrap();
    assert_eq!(reader.names().len(), 5);
    assert_eq!(
        reader
            .layer_norm::<f32>("encoder.layer.0.output.LayerNorm", 1e-12)
            .unwrap(),
        ln0
    );
    assert_eq!(
        reader
            .layer_norm::<f64>("encoder.layer.1.output.LayerNorm", 1e-12)
            .unwrap(),
        ln1
    );
    assert_eq!(reader.rms_norm::<f32>("final_norm", 1e-6).unwrap(), rms);
    assert!(format!("{reader:?}").contains("final_norm.weight"));
    assert!(format!("{writer:?}").contains("final_norm.weight"));
}

#[test]
fn empty_gamma_round_trips() {
    let ln = LayerNorm::<f32>::affine(0, 1e-5).unwrap();
    let back = ln32(&ln.to_safetensors("ln").unwrap(), "ln").unwrap();
    assert_eq!(back, ln);
    assert_eq!(back.gamma().unwrap().shape(), &[0]);
}

// ---------------------------------------------------------------------------------------------
// Hostile bytes: an `Err` or a valid layer, never a panic.

/// Loads `bytes` every way there is; a layer that loads must be usable on a row of its shape.
fn load_everything(bytes: &[u8]) -> Result<(), TestCaseError> {
    let _ = SafetensorsReader::new(bytes).map(|r| r.names().len());
    for prefix in ["ln", "", "a", "t0"] {
        if let Ok(ln) = LayerNorm::<f32>::from_safetensors(bytes, prefix, 1e-5) {
            let shape = ln.gamma().unwrap().shape().to_vec();
            prop_assert!(ln.forward(&ArrayD::<f32>::ones(IxDyn(&shape))).is_ok());
        }
        if let Ok(ln) = LayerNorm::<f64>::from_safetensors(bytes, prefix, 1e-5) {
            let shape = ln.gamma().unwrap().shape().to_vec();
            prop_assert!(ln.forward(&ArrayD::<f64>::ones(IxDyn(&shape))).is_ok());
        }
        if let Ok(rms) = RmsNorm::<f32>::from_safetensors(bytes, prefix, 1e-6) {
            prop_assert!(rms.gamma().is_some());
        }
        let _ = SafetensorsReader::new(bytes)
            .and_then(|r| r.layer_norm_with_shape::<f64>(prefix, &[3], 1e-5));
    }
    Ok(())
}

fn dtypes() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["F32", "F16", "BF16", "F64", "U8", "I64", "F4", "XX"])
}

/// Numbers that make the arithmetic of a header interesting.
fn numbers() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..16,
        Just((1u64 << 61) - 1),
        Just(1u64 << 62),
        Just(u64::MAX),
        Just(u64::MAX - 7),
        any::<u64>(),
    ]
}

/// A header of a few tensors with arbitrary dtypes, shapes and offsets, and a little data.
fn hostile_headers() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(
            (
                prop::sample::select(vec!["ln.weight", "ln.bias", "ln.gamma", "weight", "a"]),
                dtypes(),
                prop::collection::vec(numbers(), 0..3),
                numbers(),
                numbers(),
            ),
            0..10,
        ),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(tensors, data)| {
            let entries: Vec<String> = tensors
                .iter()
                .map(|(name, dtype, shape, s, e)| {
                    format!(
                        r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{s},{e}]}}"#
                    )
                })
                .collect();
            raw(&format!("{{{}}}", entries.join(",")), &data)
        })
}

/// A valid file of several layers and dtypes.
fn valid_file() -> Vec<u8> {
    file(&[
        ("ln.weight", "F32", &[3], f32_bytes(&[1.0, 2.0, 3.0])),
        ("ln.bias", "F16", &[3], u16_bytes(&[0x3C00, 0x0001, 0xC000])),
        ("a.gamma", "BF16", &[2, 2], u16_bytes(&[0x3F80; 4])),
        ("weight", "F64", &[2], f64_bytes(&[1e300, -0.5])),
    ])
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        load_everything(&bytes)?;
    }

    #[test]
    fn random_bytes_after_a_plausible_length_never_panic(
        n in 0u64..300,
        rest in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend(rest);
        load_everything(&bytes)?;
    }

    #[test]
    fn truncations_are_errors(cut in 0usize..1000) {
        let good = valid_file();
        let cut = cut % good.len();
        let bytes = &good[..cut];
        prop_assert!(SafetensorsReader::new(bytes).is_err());
        prop_assert!(LayerNorm::<f32>::from_safetensors(bytes, "ln", 1e-5).is_err());
        load_everything(bytes)?;
    }

    #[test]
    fn bit_flips_never_panic(flips in prop::collection::vec((0usize..1000, 0u8..8), 1..5)) {
        let mut bytes = valid_file();
        for (at, bit) in flips {
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
        }
        load_everything(&bytes)?;
    }

    #[test]
    fn hostile_headers_never_panic(bytes in hostile_headers()) {
        load_everything(&bytes)?;
    }
}

#[test]
fn valid_file_loads_every_layer() {
    let bytes = valid_file();
    let ln = ln32(&bytes, "ln").unwrap();
    assert_eq!(gamma_vec(ln.beta()), [1.0, 2f32.powi(-24), -2.0]);
    let a = LayerNorm::<f64>::from_safetensors(&bytes, "a", 1e-5).unwrap();
    assert_eq!(a.trailing_axes(), 2);
    assert!(matches!(
        ln32(&bytes, ""),
        Err(Error::TensorOverflow { index: 0, .. })
    ));
    let rms = RmsNorm::<f64>::from_safetensors(&bytes, "", 1e-6).unwrap();
    assert_eq!(gamma_vec(rms.gamma()), [1e300, -0.5]);
    assert!(load_everything(&bytes).is_ok());
    assert!(load_everything(&offsets_near_u64_max()).is_ok());
}

#[test]
fn a_zero_length_gamma_from_a_file_is_fine() {
    let bytes = file(&[("ln.weight", "F32", &[0], vec![])]);
    let ln = ln32(&bytes, "ln").unwrap();
    assert_eq!(ln.gamma().unwrap().len(), 0);
    let x = Array1::<f32>::zeros(0);
    assert_eq!(ln.forward(&x).unwrap().len(), 0);
}
