//! Saving and loading `LayerNorm` and `RmsNorm` with serde (feature `serde`), through
//! `serde_json`.
//!
//! Round trips must give back the same layer, parameters bit for bit, and the same forward output
//! bit for bit. Documents written by hand (the format's field names and order are pinned by exact
//! strings) must load to the layer the constructors build, and every invalid document must be an
//! `Err` whose message names the problem, never a layer. Each test runs for `f32` and `f64`.
#![cfg(feature = "serde")]

#[path = "common/support.rs"]
mod support;

macro_rules! serde_tests {
    ($module:ident, $float:ty) => {
        mod $module {
            use ndarray::{arr1, arr2, Array1, ArrayD, IxDyn};
            use ndarray_layernorm::{Error, LayerNorm, Param, RmsNorm};

            use super::support::{assert_bitwise_eq, random_array, TestFloat};

            type F = $float;

            fn a1(v: &[f64]) -> Array1<F> {
                v.iter().map(|&x| F::of(x)).collect()
            }

            /// Values whose decimal forms are long or extreme: each must come back bitwise.
            fn awkward(n: usize, seed: u64) -> Array1<F> {
                let mut v = random_array::<F, _>(n, seed);
                let special = [
                    -0.0,
                    F::MIN_POSITIVE,
                    F::MIN_POSITIVE / F::of(1024.0), // subnormal
                    F::MAX,
                    -F::MAX,
                    F::EPSILON,
                    F::of(0.1),
                    F::of(1.0) / F::of(3.0),
                    // Two f64 values that serde_json misreads by one ulp without its
                    // `float_roundtrip` feature (0 and -0 in f32).
                    F::of(1.0715660391465826e-75),
                    F::of(-1.81996730402717e-179),
                ];
                for (slot, s) in v.iter_mut().zip(special) {
                    *slot = s;
                }
                v
            }

            fn to_json<T: serde::Serialize>(layer: &T) -> String {
                serde_json::to_string(layer).expect("a layer serializes")
            }

            /// Asserts that two optional parameters are both absent, or the same arrays bit for bit.
            fn assert_same_param(a: Option<&ArrayD<F>>, b: Option<&ArrayD<F>>, what: &str) {
                match (a, b) {
                    (Some(a), Some(b)) => assert_bitwise_eq(a, b, what),
                    (None, None) => {}
                    _ => panic!("{} {what}: present in one layer only", F::NAME),
                }
            }

            #[track_caller]
            fn assert_layer_round_trips(layer: &LayerNorm<F>, x: &ArrayD<F>) {
                let json = to_json(layer);
                let back: LayerNorm<F> = serde_json::from_str(&json)
                    .unwrap_or_else(|e| panic!("{json} does not load: {e}"));
                assert_eq!(&back, layer, "{json}");
                assert_eq!(back.epsilon().bits(), layer.epsilon().bits(), "{json}");
                assert_eq!(back.trailing_axes(), layer.trailing_axes());
                assert_same_param(back.gamma(), layer.gamma(), "gamma");
                assert_same_param(back.beta(), layer.beta(), "beta");
                let y = layer.forward(x).expect("valid input");
                assert_bitwise_eq(&back.forward(x).unwrap(), &y, "forward after a round trip");
                // The same through serde_json's Value, a different deserializer.
                let value = serde_json::to_value(layer).unwrap();
                assert_eq!(
                    &serde_json::from_value::<LayerNorm<F>>(value).unwrap(),
                    layer
                );
            }

            #[track_caller]
            fn assert_rms_round_trips(layer: &RmsNorm<F>, x: &ArrayD<F>) {
                let json = to_json(layer);
                let back: RmsNorm<F> = serde_json::from_str(&json)
                    .unwrap_or_else(|e| panic!("{json} does not load: {e}"));
                assert_eq!(&back, layer, "{json}");
                assert_eq!(back.epsilon().bits(), layer.epsilon().bits(), "{json}");
                assert_eq!(back.trailing_axes(), layer.trailing_axes());
                assert_same_param(back.gamma(), layer.gamma(), "gamma");
                let y = layer.forward(x).expect("valid input");
                assert_bitwise_eq(&back.forward(x).unwrap(), &y, "forward after a round trip");
                let value = serde_json::to_value(layer).unwrap();
                assert_eq!(&serde_json::from_value::<RmsNorm<F>>(value).unwrap(), layer);
            }

            /// Seeded input: 6 rows of 12 elements for one axis, 2 blocks of 3 x 4 for two.
            fn input(axes: usize) -> ArrayD<F> {
                let shape: &[usize] = if axes == 1 { &[6, 12] } else { &[2, 3, 4] };
                random_array::<F, _>(IxDyn(shape), 7)
            }

            #[track_caller]
            fn load_layer(json: &str) -> LayerNorm<F> {
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json} does not load: {e}"))
            }

            #[track_caller]
            fn load_rms(json: &str) -> RmsNorm<F> {
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json} does not load: {e}"))
            }

            /// The message of the error that loading `json` as `T` gives; fails if it loads.
            #[track_caller]
            fn load_error<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
                match serde_json::from_str::<T>(json) {
                    Ok(layer) => panic!("{} {json} loaded as {layer:?}", F::NAME),
                    Err(e) => e.to_string(),
                }
            }

            #[track_caller]
            fn assert_mentions(message: &str, parts: &[&str]) {
                for part in parts {
                    assert!(
                        message.contains(part),
                        "{}: {message:?} does not mention {part:?}",
                        F::NAME
                    );
                }
            }

            // ---- round trips ----

            #[test]
            fn default_layer_norm_round_trips() {
                assert_layer_round_trips(&LayerNorm::default(), &input(1));
            }

            #[test]
            fn layer_norm_with_an_awkward_epsilon_round_trips_bitwise() {
                // 1/3 * 1e-5 has a full-length significand in both types.
                let layer = LayerNorm::new(F::of(1e-5 / 3.0)).unwrap();
                assert_layer_round_trips(&layer, &input(1));
                let layer = LayerNorm::new(F::MIN_POSITIVE / F::of(8.0)).unwrap();
                assert_layer_round_trips(&layer, &input(1));
            }

            #[test]
            fn affine_layer_norm_round_trips() {
                assert_layer_round_trips(&LayerNorm::affine(12, F::of(1e-6)).unwrap(), &input(1));
            }

            #[test]
            fn affine_layer_norm_with_trained_parameters_round_trips_bitwise() {
                let layer = LayerNorm::affine(12, F::of(1e-5))
                    .unwrap()
                    .with_gamma(awkward(12, 1))
                    .unwrap()
                    .with_beta(awkward(12, 2))
                    .unwrap();
                // F::MAX in gamma overflows some outputs to inf; that is still bitwise output.
                assert_layer_round_trips(&layer, &input(1));
            }

            #[test]
            fn affine_shape_3_by_4_round_trips_with_its_shape() {
                let layer = LayerNorm::affine_shape(&[3, 4], F::of(1e-5)).unwrap();
                assert_layer_round_trips(&layer, &input(2));
                let trained = layer
                    .with_gamma(random_array::<F, _>((3, 4), 3))
                    .unwrap()
                    .with_beta(random_array::<F, _>((3, 4), 4))
                    .unwrap();
                assert_layer_round_trips(&trained, &input(2));
                let json = to_json(&trained);
                let back: LayerNorm<F> = serde_json::from_str(&json).unwrap();
                assert_eq!(back.trailing_axes(), 2);
                assert_eq!(back.gamma().unwrap().shape(), &[3, 4]);
                assert_eq!(back.beta().unwrap().shape(), &[3, 4]);
            }

            #[test]
            fn layer_norm_with_gamma_only_round_trips() {
                let layer = LayerNorm::default().with_gamma(awkward(12, 5)).unwrap();
                assert!(layer.beta().is_none());
                assert_layer_round_trips(&layer, &input(1));
            }

            #[test]
            fn layer_norm_with_beta_only_round_trips() {
                let layer = LayerNorm::new(F::of(0.0))
                    .unwrap()
                    .with_beta(awkward(12, 6))
                    .unwrap();
                assert!(layer.gamma().is_none());
                assert_layer_round_trips(&layer, &input(1));
            }

            #[test]
            fn layer_norm_over_two_axes_without_parameters_round_trips() {
                let layer = LayerNorm::default().with_trailing_axes(2).unwrap();
                assert_layer_round_trips(&layer, &input(2));
            }

            #[test]
            fn default_rms_norm_round_trips() {
                assert_rms_round_trips(&RmsNorm::default(), &input(1));
            }

            #[test]
            fn rms_norm_with_gamma_round_trips_bitwise() {
                let layer = RmsNorm::new(F::of(1e-6))
                    .unwrap()
                    .with_gamma(awkward(12, 8))
                    .unwrap();
                assert_rms_round_trips(&layer, &input(1));
                let layer = RmsNorm::affine_shape(&[3, 4], F::of(1e-5))
                    .unwrap()
                    .with_gamma(random_array::<F, _>((3, 4), 9))
                    .unwrap();
                assert_rms_round_trips(&layer, &input(2));
            }

            // ---- the format, written and read by hand ----

            #[test]
            fn written_format_has_stable_field_names_in_order() {
                let layer = LayerNorm::new(F::of(0.25))
                    .unwrap()
                    .with_gamma(a1(&[1.5, -2.0]))
                    .unwrap();
                assert_eq!(
                    to_json(&layer),
                    concat!(
                        r#"{"epsilon":0.25,"trailing_axes":1,"#,
                        r#""gamma":{"v":1,"dim":[2],"data":[1.5,-2.0]},"beta":null}"#
                    )
                );
                let rms = RmsNorm::affine_shape(&[1, 2], F::of(0.5)).unwrap();
                assert_eq!(
                    to_json(&rms),
                    concat!(
                        r#"{"epsilon":0.5,"trailing_axes":2,"#,
                        r#""gamma":{"v":1,"dim":[1,2],"data":[1.0,1.0]}}"#
                    )
                );
            }

            #[test]
            fn default_epsilon_is_written_as_its_shortest_decimal() {
                // 1e-5 rounded to f32 or to f64: its shortest decimal is 1e-5 in both, which
                // serde_json writes without an exponent.
                assert_eq!(
                    to_json(&LayerNorm::<F>::default()),
                    r#"{"epsilon":0.00001,"trailing_axes":1,"gamma":null,"beta":null}"#
                );
                assert_eq!(
                    to_json(&RmsNorm::<F>::default()),
                    r#"{"epsilon":0.00001,"trailing_axes":1,"gamma":null}"#
                );
            }

            #[test]
            fn examples_in_the_docs_are_what_is_written_and_load() {
                // The JSON shown in src/serde_impl.rs, copied here.
                let affine = r#"{
                  "epsilon": 0.00001,
                  "trailing_axes": 2,
                  "gamma": {"v": 1, "dim": [2, 2], "data": [1.0, 1.0, 1.0, 1.0]},
                  "beta": {"v": 1, "dim": [2, 2], "data": [0.0, 0.0, 0.0, 0.0]}
                }"#;
                let layer = LayerNorm::<F>::affine_shape(&[2, 2], F::of(1e-5)).unwrap();
                // Compared as parsed JSON (whitespace aside), from the text written for F.
                let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
                assert_eq!(parse(&to_json(&layer)), parse(affine));
                assert_eq!(load_layer(affine), layer);
                let rms = r#"{"epsilon": 0.00001, "trailing_axes": 1, "gamma": null}"#;
                assert_eq!(parse(&to_json(&RmsNorm::<F>::default())), parse(rms));
                assert_eq!(load_rms(rms), RmsNorm::default());
                let gamma = r#"{"epsilon": 0.00001, "trailing_axes": 1,
                    "gamma": {"v": 1, "dim": [3], "data": [1.0, 2.0, 3.0]}}"#;
                assert_eq!(
                    load_layer(gamma),
                    LayerNorm::default()
                        .with_gamma(a1(&[1.0, 2.0, 3.0]))
                        .unwrap()
                );
                let gamma = r#"{"epsilon": 1e-6, "trailing_axes": 2,
                    "gamma": {"v": 1, "dim": [1, 2], "data": [0.5, 2.0]}}"#;
                assert_eq!(
                    load_rms(gamma),
                    RmsNorm::new(F::of(1e-6))
                        .unwrap()
                        .with_trailing_axes(2)
                        .unwrap()
                        .with_gamma(arr2(&[[0.5, 2.0]]).mapv(F::of))
                        .unwrap()
                );
            }

            #[test]
            fn epsilon_1e_minus_5_loads_to_the_default_layer() {
                let full = r#"{"epsilon": 1e-5, "trailing_axes": 1, "gamma": null, "beta": null}"#;
                assert_eq!(load_layer(full), LayerNorm::<F>::default());
                assert_eq!(
                    load_layer(r#"{"epsilon": 0.00001}"#),
                    LayerNorm::<F>::default()
                );
                assert_eq!(load_rms(r#"{"epsilon": 1e-5}"#), RmsNorm::<F>::default());
            }

            #[test]
            fn hand_written_layer_norm_loads_to_the_layer_the_constructors_build() {
                let json = r#"{
                    "epsilon": 0.001,
                    "trailing_axes": 2,
                    "gamma": {"v": 1, "dim": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
                    "beta": {"v": 1, "dim": [2, 3], "data": [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0]}
                }"#;
                let expected = LayerNorm::new(F::of(0.001))
                    .unwrap()
                    .with_trailing_axes(2)
                    .unwrap()
                    .with_gamma(arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).mapv(F::of))
                    .unwrap()
                    .with_beta(arr2(&[[-0.5, 0.0, 0.5], [1.0, 1.5, 2.0]]).mapv(F::of))
                    .unwrap();
                let layer = load_layer(json);
                assert_eq!(layer, expected);
                assert_eq!(layer.epsilon().bits(), F::of(0.001).bits());
            }

            #[test]
            fn fields_may_come_in_any_order_and_trailing_axes_defaults_to_one() {
                let json = r#"{"beta": {"data": [3.0], "dim": [1], "v": 1}, "epsilon": 0.5}"#;
                let expected = LayerNorm::new(F::of(0.5))
                    .unwrap()
                    .with_beta(a1(&[3.0]))
                    .unwrap();
                let layer = load_layer(json);
                assert_eq!(layer, expected);
                assert_eq!(layer.trailing_axes(), 1);
            }

            #[test]
            fn hand_written_rms_norm_loads_to_the_layer_the_constructors_build() {
                let json =
                    r#"{"epsilon": 1e-6, "gamma": {"v": 1, "dim": [4], "data": [0.5, 1, 2, 4]}}"#;
                let expected = RmsNorm::new(F::of(1e-6))
                    .unwrap()
                    .with_gamma(a1(&[0.5, 1.0, 2.0, 4.0]))
                    .unwrap();
                assert_eq!(load_rms(json), expected);
                let zero = RmsNorm::new(F::of(0.0)).unwrap();
                assert_eq!(load_rms(r#"{"epsilon": 0, "gamma": null}"#), zero);
            }

            #[test]
            fn negative_zero_epsilon_loads_as_positive_zero_like_new() {
                let layer = load_layer(r#"{"epsilon": -0.0}"#);
                assert_eq!(layer.epsilon().bits(), F::of(0.0).bits());
            }

            // ---- invalid documents ----

            #[test]
            fn negative_epsilon_is_rejected_with_the_invalid_epsilon_message() {
                let expected = Error::InvalidEpsilon { epsilon: -0.5 }.to_string();
                let m = load_error::<LayerNorm<F>>(r#"{"epsilon": -0.5}"#);
                assert_mentions(&m, &["invalid LayerNorm", &expected, "invalid epsilon"]);
                let m = load_error::<RmsNorm<F>>(r#"{"epsilon": -0.5}"#);
                assert_mentions(&m, &["invalid RmsNorm", &expected]);
            }

            #[test]
            fn nan_epsilon_as_a_string_or_null_is_rejected() {
                // JSON has no NaN: the attempts to write one are a string, null (what
                // serde_json writes for NaN) and a bare token.
                let m = load_error::<LayerNorm<F>>(r#"{"epsilon": "NaN"}"#);
                assert_mentions(&m, &["invalid type", "string \"NaN\""]);
                let m = load_error::<RmsNorm<F>>(r#"{"epsilon": null}"#);
                assert_mentions(&m, &["invalid type", "null"]);
                let m = load_error::<LayerNorm<F>>(r#"{"epsilon": NaN}"#);
                assert_mentions(&m, &["expected value"]);
            }

            #[test]
            fn epsilon_beyond_the_range_of_f_is_rejected() {
                // Finite in JSON, infinite as F: an error either from the parser or from the
                // epsilon check, never a layer.
                let too_big = if F::NAME == "f32" { "1e39" } else { "1e309" };
                let json = format!(r#"{{"epsilon": {too_big}}}"#);
                let m = load_error::<LayerNorm<F>>(&json);
                assert!(
                    m.contains("out of range") || m.contains("invalid epsilon"),
                    "{}: {m}",
                    F::NAME
                );
            }

            #[test]
            fn missing_epsilon_is_rejected() {
                let m = load_error::<LayerNorm<F>>(r#"{"trailing_axes": 1}"#);
                assert_mentions(&m, &["missing field `epsilon`"]);
                let m = load_error::<RmsNorm<F>>(r#"{}"#);
                assert_mentions(&m, &["missing field `epsilon`"]);
            }

            #[test]
            fn zero_trailing_axes_is_rejected() {
                let expected = Error::InvalidAxes { axes: 0 }.to_string();
                let m = load_error::<LayerNorm<F>>(r#"{"epsilon": 1e-5, "trailing_axes": 0}"#);
                assert_mentions(&m, &[&expected, "at least one axis"]);
                let m = load_error::<RmsNorm<F>>(r#"{"epsilon": 1e-5, "trailing_axes": 0}"#);
                assert_mentions(&m, &[&expected]);
            }

            #[test]
            fn negative_or_fractional_trailing_axes_is_rejected() {
                let m = load_error::<LayerNorm<F>>(r#"{"epsilon": 1e-5, "trailing_axes": -1}"#);
                assert_mentions(&m, &["invalid value", "-1"]);
                let m = load_error::<LayerNorm<F>>(r#"{"epsilon": 1e-5, "trailing_axes": 1.5}"#);
                assert_mentions(&m, &["invalid type", "1.5"]);
            }

            #[test]
            fn gamma_and_beta_of_different_shapes_are_rejected() {
                let json = r#"{"epsilon": 1e-5,
                    "gamma": {"v": 1, "dim": [3], "data": [1, 1, 1]},
                    "beta": {"v": 1, "dim": [4], "data": [0, 0, 0, 0]}}"#;
                let expected = Error::ParamMismatch {
                    gamma: vec![3],
                    beta: vec![4],
                }
                .to_string();
                let m = load_error::<LayerNorm<F>>(json);
                assert_mentions(&m, &["invalid LayerNorm", &expected]);
                // Same number of elements, different shapes.
                let json = r#"{"epsilon": 1e-5, "trailing_axes": 2,
                    "gamma": {"v": 1, "dim": [2, 3], "data": [1, 1, 1, 1, 1, 1]},
                    "beta": {"v": 1, "dim": [3, 2], "data": [0, 0, 0, 0, 0, 0]}}"#;
                let m = load_error::<LayerNorm<F>>(json);
                assert_mentions(&m, &["gamma has shape [2, 3] but beta has shape [3, 2]"]);
            }

            #[test]
            fn gamma_with_two_axes_for_one_trailing_axis_is_rejected() {
                let json = r#"{"epsilon": 1e-5, "trailing_axes": 1,
                    "gamma": {"v": 1, "dim": [2, 2], "data": [1, 1, 1, 1]}}"#;
                let expected = Error::ParamAxes {
                    param: Param::Gamma,
                    expected: 1,
                    actual: 2,
                }
                .to_string();
                let m = load_error::<LayerNorm<F>>(json);
                assert_mentions(&m, &[&expected, "gamma has 2 axes"]);
                assert_mentions(
                    &load_error::<RmsNorm<F>>(json),
                    &["invalid RmsNorm", &expected],
                );
                // Left out, trailing_axes is 1, so the same document without it fails too.
                let json =
                    r#"{"epsilon": 1e-5, "gamma": {"v": 1, "dim": [2, 2], "data": [1, 1, 1, 1]}}"#;
                assert_mentions(&load_error::<LayerNorm<F>>(json), &[&expected]);
            }

            #[test]
            fn beta_with_one_axis_for_two_trailing_axes_is_rejected() {
                let json = r#"{"epsilon": 1e-5, "trailing_axes": 2,
                    "beta": {"v": 1, "dim": [4], "data": [0, 0, 0, 0]}}"#;
                let expected = Error::ParamAxes {
                    param: Param::Beta,
                    expected: 2,
                    actual: 1,
                }
                .to_string();
                assert_mentions(&load_error::<LayerNorm<F>>(json), &[&expected]);
            }

            #[test]
            fn zero_dimensional_gamma_is_rejected() {
                let json = r#"{"epsilon": 1e-5, "gamma": {"v": 1, "dim": [], "data": [2.0]}}"#;
                assert_mentions(&load_error::<RmsNorm<F>>(json), &["gamma has 0 axes"]);
            }

            #[test]
            fn unknown_field_is_rejected() {
                let m = load_error::<LayerNorm<F>>(r#"{"epsilon": 1e-5, "scale": 2.0}"#);
                assert_mentions(
                    &m,
                    &["unknown field `scale`", "`epsilon`", "`trailing_axes`"],
                );
                let m = load_error::<RmsNorm<F>>(r#"{"epsilon": 1e-5, "eps": 1e-6}"#);
                assert_mentions(&m, &["unknown field `eps`"]);
            }

            #[test]
            fn beta_in_a_rms_norm_document_is_rejected() {
                let m = load_error::<RmsNorm<F>>(r#"{"epsilon": 1e-5, "beta": null}"#);
                assert_mentions(&m, &["unknown field `beta`"]);
                // A LayerNorm document, with a beta, is not a RmsNorm.
                let layer = LayerNorm::<F>::affine(3, F::of(1e-5)).unwrap();
                let m = load_error::<RmsNorm<F>>(&to_json(&layer));
                assert_mentions(&m, &["unknown field `beta`"]);
            }

            #[test]
            fn duplicate_field_is_rejected() {
                let m = load_error::<LayerNorm<F>>(r#"{"epsilon": 1e-5, "epsilon": 1e-6}"#);
                assert_mentions(&m, &["duplicate field `epsilon`"]);
            }

            #[test]
            fn data_length_not_matching_the_shape_is_rejected() {
                let json = r#"{"epsilon": 1e-5, "gamma": {"v": 1, "dim": [3], "data": [1, 1]}}"#;
                let m = load_error::<LayerNorm<F>>(json);
                assert_mentions(&m, &["data and dimension must match in size"]);
                let json = r#"{"epsilon": 1e-5, "trailing_axes": 2,
                    "gamma": {"v": 1, "dim": [2, 2], "data": [1, 1, 1, 1, 1]}}"#;
                let m = load_error::<RmsNorm<F>>(json);
                assert_mentions(&m, &["data and dimension must match in size"]);
            }

            #[test]
            fn array_without_its_version_or_with_another_is_rejected() {
                let json = r#"{"epsilon": 1e-5, "gamma": {"dim": [1], "data": [1]}}"#;
                assert_mentions(&load_error::<LayerNorm<F>>(json), &["missing field `v`"]);
                let json = r#"{"epsilon": 1e-5, "gamma": {"v": 2, "dim": [1], "data": [1]}}"#;
                assert_mentions(
                    &load_error::<LayerNorm<F>>(json),
                    &["unknown array version: 2"],
                );
            }

            #[test]
            fn gamma_holding_nan_is_written_as_null_and_does_not_load_back() {
                // serde_json writes NaN and infinities as null: such a layer cannot be saved to
                // JSON, and loading what was written fails instead of giving another layer.
                let layer = LayerNorm::default()
                    .with_gamma(a1(&[1.0, f64::NAN]))
                    .unwrap();
                let json = to_json(&layer);
                assert!(json.contains("[1.0,null]"), "{json}");
                assert_mentions(&load_error::<LayerNorm<F>>(&json), &["invalid type: null"]);
            }

            #[test]
            fn a_failed_load_leaves_no_layer_behind_and_the_array_shape_check_comes_first() {
                // Both the array (data length) and the layer (epsilon) are wrong: the array is
                // read first, so its error is the one reported, and no layer results.
                let json = r#"{"gamma": {"v": 1, "dim": [3], "data": [1]}, "epsilon": -1}"#;
                let m = load_error::<LayerNorm<F>>(json);
                assert_mentions(&m, &["data and dimension must match in size"]);
            }

            #[test]
            fn loaded_parameters_are_in_standard_layout() {
                let json = r#"{"epsilon": 1e-5, "trailing_axes": 2,
                    "gamma": {"v": 1, "dim": [2, 3], "data": [1, 2, 3, 4, 5, 6]}}"#;
                let layer = load_layer(json);
                let gamma = layer.gamma().unwrap();
                assert!(gamma.is_standard_layout());
                let expected = arr1(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).mapv(F::of);
                assert_eq!(gamma.as_slice().unwrap(), expected.as_slice().unwrap());
            }
        }
    };
}

serde_tests!(f32_tests, f32);
serde_tests!(f64_tests, f64);
