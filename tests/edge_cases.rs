//! Edge cases found by an independent review: extreme epsilons, overflowing `rstd`, NaN in
//! `dy` on rows whose gradient is defined as 0, `f32` ties, odd shapes and layouts. Each test
//! asserts the documented behaviour.

use ndarray::Dimension;
use ndarray::{arr2, array, s, Array, Array1, Array2, Array3, ArrayD, Axis, IxDyn, ShapeBuilder};
use ndarray_layernorm::{moments, LayerNorm, Stats};

fn bits64(a: impl IntoIterator<Item = f64>) -> Vec<u64> {
    a.into_iter().map(f64::to_bits).collect()
}

// ---------------------------------------------------------------------------------------------
// Confirmed-bug candidates
// ---------------------------------------------------------------------------------------------

/// eps = f64::MAX (accepted by `new`) and a row with var >= ~2^970 on the fast path: var + eps
/// overflows to +inf, s = inf, every output is 0 and rstd is 0. The true y is d/sqrt(var+eps).
#[test]
fn a_huge_epsilon_with_a_huge_variance_does_not_overflow_to_zero() {
    let ln = LayerNorm::<f64>::new(f64::MAX).unwrap();
    let x = arr2(&[[-1e150, 1e150]]);
    let y = ln.forward(&x).unwrap();
    let (_, st) = ln.forward_with_stats(&x).unwrap();
    let exact = 1e150 / ((1e300 / 4.0 + f64::MAX / 4.0).sqrt() * 2.0);
    eprintln!("y = {y:?}, rstd = {:?}, expected |y| = {exact:e}", st.rstd);
    // backward recomputes with rescaling and is fine; compare with it for consistency
    let g = ln.backward(&x, &arr2(&[[1.0, 0.0]])).unwrap();
    eprintln!("backward dx = {:?}", g.input);
    assert!(
        (y[[0, 1]] - exact).abs() <= 1e-15 * exact,
        "y = {}",
        y[[0, 1]]
    );
}

/// eps = -0.0 is accepted (it is >= 0) but 1/sqrt(-0.0) = -inf: a constant row reports rstd = -inf,
/// and backward_with_stats of that row gives NaN where backward gives 0.
#[test]
fn negative_zero_epsilon_behaves_as_positive_zero() {
    let ln = LayerNorm::<f64>::new(-0.0).unwrap();
    let x = arr2(&[[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]]);
    let dy = arr2(&[[0.5, -1.0, 0.25], [0.5, -1.0, 0.25]]);
    let (y, st) = ln.forward_with_stats(&x).unwrap();
    eprintln!("y = {y:?}\nrstd = {:?}", st.rstd);
    let fresh = ln.backward(&x, &dy).unwrap();
    let saved = ln.backward_with_stats(&x, &st, &dy).unwrap();
    eprintln!(
        "backward = {:?}\nbackward_with_stats = {:?}",
        fresh.input, saved.input
    );
    let ln0 = LayerNorm::<f64>::new(0.0).unwrap();
    let (_, st0) = ln0.forward_with_stats(&x).unwrap();
    assert_eq!(st.rstd[0], st0.rstd[0], "rstd with eps=-0.0 vs eps=0.0");
    assert!(saved.input.row(0).iter().all(|v| *v == 0.0));
}

/// f32, eps = 0, a non-constant row with std < 2^-128: the f64 rstd (~1e39) overflows f32 to
/// +inf, which backward_with_stats reads as "constant row" and returns dx = 0. backward gives ~1e9.
#[test]
fn f32_saved_rstd_beyond_range_is_recomputed_in_backward() {
    let ln = LayerNorm::<f32>::new(0.0).unwrap();
    let x = arr2(&[[0.0f32, 1e-39, 3e-39]]);
    let dy = arr2(&[[1e-30f32, 0.0, 0.0]]);
    let (y, st) = ln.forward_with_stats(&x).unwrap();
    let fresh = ln.backward(&x, &dy).unwrap();
    let saved = ln.backward_with_stats(&x, &st, &dy).unwrap();
    eprintln!("y = {y:?} rstd = {:?}", st.rstd);
    eprintln!(
        "backward = {:?}\nbackward_with_stats = {:?}",
        fresh.input, saved.input
    );
    assert_eq!(st.rstd[0], f32::INFINITY);
    assert_eq!(saved.input, fresh.input);
    assert!(fresh.input[[0, 0]] != 0.0);
}

/// Same for f64 with subnormal rows: rstd = 2^1000 / den overflows f64.
#[test]
fn f64_saved_rstd_beyond_range_is_recomputed_in_backward() {
    let t = f64::from_bits(1);
    let ln = LayerNorm::<f64>::new(0.0).unwrap();
    let x = arr2(&[[0.0, t, 3.0 * t]]);
    let dy = arr2(&[[1e-310, 0.0, 0.0]]);
    let (y, st) = ln.forward_with_stats(&x).unwrap();
    let fresh = ln.backward(&x, &dy).unwrap();
    let saved = ln.backward_with_stats(&x, &st, &dy).unwrap();
    eprintln!(
        "y = {y:?} rstd = {:?} var = {:?}",
        st.rstd,
        moments(&x).unwrap().var
    );
    eprintln!(
        "backward = {:?}\nbackward_with_stats = {:?}",
        fresh.input, saved.input
    );
    assert_eq!(st.rstd[0], f64::INFINITY);
    assert_eq!(
        bits64(saved.input.iter().copied()),
        bits64(fresh.input.iter().copied())
    );
    assert!(fresh.input[[0, 0]] != 0.0);
}

/// Docs: "A NaN or an infinity in a row of x or dy makes that row of the input gradient NaN".
/// With eps = 0 a constant (or one-element) row ignores dy completely.
#[test]
fn nan_in_dy_poisons_rows_whose_gradient_is_defined_as_zero() {
    let ln = LayerNorm::<f64>::affine(3, 0.0).unwrap();
    let x = arr2(&[[1.0, 1.0, 1.0]]);
    let dy = arr2(&[[f64::NAN, 1.0, 2.0]]);
    let g = ln.backward(&x, &dy).unwrap();
    eprintln!(
        "dx = {:?} dgamma = {:?} dbeta = {:?}",
        g.input, g.gamma, g.beta
    );
    let ln1 = LayerNorm::<f64>::new(0.0).unwrap();
    let g1 = ln1
        .backward(&arr2(&[[5.0]]), &arr2(&[[f64::INFINITY]]))
        .unwrap();
    eprintln!("n=1: dx = {:?}", g1.input);
    assert!(g.input.iter().all(|v| v.is_nan()), "documented NaN row");
}

/// f32 moments: "correctly rounded (max 0.500 ulp)". Double rounding f64 -> f32 breaks it.
#[test]
fn f32_mean_on_a_tie_is_rounded_once() {
    let x = arr2(&[[2.5f32, 0.5 + 3.0 * 2f32.powi(-24), 2f32.powi(-100)]]);
    // exact mean = 1 + 2^-24 + 2^-100/3: just above the midpoint of 1 and 1 + 2^-23.
    let m = moments(&x).unwrap();
    eprintln!("mean = {:e} (bits {:x})", m.mean[0], m.mean[0].to_bits());
    assert_eq!(m.mean[0], 1.0 + f32::EPSILON);
}

// ---------------------------------------------------------------------------------------------
// Exploratory: constant rows in the double-double backward pass, eps = 0
// ---------------------------------------------------------------------------------------------

#[test]
fn constant_f64_rows_of_any_magnitude_have_zero_gradient_at_eps_zero() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ln = LayerNorm::<f64>::new(0.0).unwrap();
    let mut bad = 0;
    for _ in 0..4000 {
        let r = next();
        let mant = f64::from_bits((r >> 12) | 0x3ff0_0000_0000_0000);
        let e = ((next() % 2000) as i32) - 1000;
        let c = mant * 2f64.powi(e);
        let n = (next() % 300 + 1) as usize;
        let x = Array2::from_elem((1, n), c);
        let dy = Array2::from_shape_fn((1, n), |(_, j)| j as f64 * 0.37 - 1.0);
        let g = ln.backward(&x, &dy).unwrap();
        let y = ln.forward(&x).unwrap();
        if g.input.iter().any(|v| *v != 0.0) || y.iter().any(|v| *v != 0.0) {
            bad += 1;
            if bad < 5 {
                eprintln!(
                    "c = {c:e} n = {n}: dx[0] = {:e} y[0] = {:e}",
                    g.input[[0, 0]],
                    y[[0, 0]]
                );
            }
        }
        // eps > 0: must equal (g - mean g)/sqrt(eps), finite
        let lne = LayerNorm::<f64>::new(1e-5).unwrap();
        let ge = lne.backward(&x, &dy).unwrap();
        if ge.input.iter().any(|v| !v.is_finite() || v.abs() > 1e6) {
            bad += 1;
            eprintln!("eps>0 c = {c:e} n = {n}: dx[0] = {:e}", ge.input[[0, 0]]);
        }
    }
    assert_eq!(bad, 0);
}

// ---------------------------------------------------------------------------------------------
// Exploratory: shapes and layouts that must not panic and must agree bitwise
// ---------------------------------------------------------------------------------------------

fn all_ops(ln: &LayerNorm<f64>, x: &ArrayD<f64>) -> Vec<Vec<u64>> {
    let y = ln.forward(x).unwrap();
    let (y2, st) = ln.forward_with_stats(x).unwrap();
    let mut inp = x.to_owned();
    ln.forward_inplace(&mut inp).unwrap();
    let m = moments(x).unwrap();
    let dy = x.mapv(|v| v * 0.5 - 1.0);
    let g = ln.backward(x, &dy).unwrap();
    let gs = ln.backward_with_stats(x, &st, &dy).unwrap();
    let mut v = vec![
        bits64(y.iter().copied()),
        bits64(y2.iter().copied()),
        bits64(inp.iter().copied()),
        bits64(st.mean.iter().copied()),
        bits64(st.rstd.iter().copied()),
        bits64(m.mean.iter().copied()),
        bits64(m.var.iter().copied()),
        bits64(g.input.iter().copied()),
        bits64(gs.input.iter().copied()),
    ];
    if let Some(gg) = g.gamma {
        v.push(bits64(gg));
    }
    if let Some(gb) = g.beta {
        v.push(bits64(gb));
    }
    v
}

#[test]
fn odd_shapes_neither_panic_nor_depend_on_layout() {
    for shape in [
        vec![0usize],
        vec![1],
        vec![5],
        vec![0, 5],
        vec![5, 0],
        vec![2, 0, 3],
        vec![2, 3, 0],
        vec![0, 0, 0],
        vec![1, 1, 1, 1],
        vec![3, 1, 4, 1],
        vec![1, 130, 1],
        vec![130, 1],
        vec![2, 65, 3],
    ] {
        let n = *shape.last().unwrap();
        let x = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
            let k: usize = i.slice().iter().enumerate().map(|(a, b)| (a + 3) * b).sum();
            (k as f64 * 0.77).sin() * 3.0 + 1.0
        });
        for ln in [
            LayerNorm::<f64>::new(0.0).unwrap(),
            LayerNorm::<f64>::affine(n, 1e-5).unwrap(),
        ] {
            let base = all_ops(&ln, &x);
            // Fortran order copy
            let f = {
                let mut a = ArrayD::zeros(IxDyn(&shape).f());
                a.assign(&x);
                a
            };
            assert_eq!(base, all_ops(&ln, &f), "fortran {shape:?}");
            // reversed all axes
            let mut r = x.to_owned();
            for ax in 0..shape.len() {
                r.invert_axis(Axis(ax));
            }
            let mut rr = r.to_owned();
            for ax in 0..shape.len() {
                rr.invert_axis(Axis(ax));
            }
            assert_eq!(base, all_ops(&ln, &rr), "reversed {shape:?}");
            // forward_into with a Fortran output
            let mut out = ArrayD::zeros(IxDyn(&shape).f());
            ln.forward_into(&x, &mut out).unwrap();
            assert_eq!(base[0], bits64(out.iter().copied()), "into {shape:?}");
        }
    }
}

#[test]
fn saved_stats_in_any_layout_and_permuted_inputs_work() {
    let ln = LayerNorm::<f64>::affine(7, 1e-5).unwrap();
    let x = Array3::from_shape_fn((3, 70, 7), |(a, b, c)| {
        ((a * 131 + b * 17 + c) as f64).sin()
    });
    let dy = x.mapv(|v| v * v - 0.3);
    let (_, st) = ln.forward_with_stats(&x).unwrap();
    let base = ln.backward_with_stats(&x, &st, &dy).unwrap();
    // stats in Fortran layout
    let mut mf = Array2::zeros((3, 70).f());
    mf.assign(&st.mean);
    let mut rf = Array2::zeros((3, 70).f());
    rf.assign(&st.rstd);
    let st2 = Stats { mean: mf, rstd: rf };
    let g2 = ln.backward_with_stats(&x, &st2, &dy).unwrap();
    assert_eq!(base, g2);
    // permuted (non-mergeable) x and dy
    let xp = x.view().permuted_axes([1, 0, 2]).to_owned();
    let xp = xp.view().permuted_axes([1, 0, 2]);
    let dyp = dy.view().permuted_axes([1, 0, 2]).to_owned();
    let dyp = dyp.view().permuted_axes([1, 0, 2]);
    let g3 = ln.backward_with_stats(&xp, &st2, &dyp).unwrap();
    assert_eq!(base, g3);
    let g4 = ln.backward(&xp, &dyp).unwrap();
    assert_eq!(ln.backward(&x, &dy).unwrap(), g4);
    // stepped, negative-stride slice
    let big = Array3::from_shape_fn((6, 140, 14), |(a, b, c)| {
        let (a, b, c) = (a / 2, b / 2, c / 2);
        ((a * 131 + b * 17 + c) as f64).sin()
    });
    let _ = big.slice(s![..;2, ..;2, ..;2]);
    // Broadcast input (stride 0)
    let row = Array1::from_shape_fn(7, |i| i as f64 * 1.5);
    let b = row.broadcast((100, 7)).unwrap();
    let yb = ln.forward(&b).unwrap();
    let yo = ln.forward(&b.to_owned()).unwrap();
    assert_eq!(yb, yo);
    let gb = ln.backward(&b, &b).unwrap();
    assert_eq!(gb, ln.backward(&b.to_owned(), &b.to_owned()).unwrap());
}

#[test]
fn rows_near_the_top_of_the_range_stay_finite() {
    let m = f64::MAX;
    let rows: Vec<Vec<f64>> = vec![
        vec![m, m, -m],
        vec![m, 0.0, 0.0],
        vec![m, -m],
        vec![m; 100],
        (0..100)
            .map(|i| if i % 2 == 0 { m } else { -m * 0.5 })
            .collect(),
        vec![1e308, 1e-308, -1e308],
        vec![m, m, m, m, 1.0],
        vec![-m; 65],
    ];
    for row in rows {
        let n = row.len();
        let x = Array2::from_shape_vec((1, n), row.clone()).unwrap();
        for eps in [0.0, 1e-5, 1e300] {
            let ln = LayerNorm::<f64>::new(eps).unwrap();
            let y = ln.forward(&x).unwrap();
            let mm = moments(&x).unwrap();
            let g = ln.backward(&x, &x.mapv(|_| 1.0)).unwrap();
            assert!(
                y.iter().all(|v| v.is_finite()),
                "row {:?}.. eps {eps}: y = {:?}",
                &row[..3.min(n)],
                y.iter().take(4).collect::<Vec<_>>()
            );
            assert!(mm.mean[0].is_finite());
            assert!(
                g.input.iter().all(|v| v.is_finite()),
                "dx {:?}",
                &g.input.iter().take(3).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn negative_zero_rows_and_reversed_parameters_work() {
    let ln = LayerNorm::<f64>::new(0.0)
        .unwrap()
        .with_gamma(array![1.0, 2.0, 3.0, 4.0, 5.0].slice(s![..;-1]).to_owned())
        .unwrap()
        .with_beta(
            Array::from_vec(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
                .slice(s![..;2])
                .to_owned(),
        )
        .unwrap();
    let x = arr2(&[[-0.0, -0.0, -0.0, -0.0, -0.0], [1.0, 2.0, 3.0, 4.0, 5.0]]);
    let y = ln.forward(&x).unwrap();
    eprintln!("{y:?}");
    assert_eq!(y.row(0).to_vec(), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
}

#[cfg(feature = "rayon")]
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let x = Array3::from_shape_fn((7, 1001, 23), |(a, b, c)| {
        ((a * 7919 + b * 31 + c) as f64).sin() * 1e3
    });
    let xp = x.view().permuted_axes([1, 0, 2]).to_owned();
    let xp = xp.view().permuted_axes([1, 0, 2]);
    let ln = LayerNorm::<f64>::affine(23, 1e-5).unwrap();
    let run = |t: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap();
        pool.install(|| {
            let g = ln.backward(&xp, &x).unwrap();
            (ln.forward(&xp).unwrap(), g)
        })
    };
    let a = run(1);
    for t in [2, 3, 5] {
        let b = run(t);
        assert_eq!(bits64(a.0.iter().copied()), bits64(b.0.iter().copied()));
        assert_eq!(
            bits64(a.1.gamma.clone().unwrap()),
            bits64(b.1.gamma.clone().unwrap())
        );
        assert_eq!(
            bits64(a.1.input.iter().copied()),
            bits64(b.1.input.iter().copied())
        );
    }
}

/// backward, f64, a tiny row (amax < 2^-1000, so k is clamped to 1000) and a large eps: the
/// `eps_scaled` overflow branch folds 2^-k into r = 2^-k / sqrt(eps), which underflows (to 0 for
/// eps > 2^148, to a subnormal with few bits for eps > 2^48), so dx = t * r * 2^k loses digits or
/// becomes 0. Exact: xhat is negligible, dx = (g - mean(g)) / sqrt(eps).
#[test]
fn tiny_f64_rows_with_a_huge_epsilon_keep_their_gradient() {
    let t = f64::from_bits(1 << 14); // 2^-1060
    assert!(t > 0.0);
    let x = arr2(&[[0.0, t, 3.0 * t]]);
    let dy = arr2(&[[1.0, 0.0, 0.0]]);
    let mut fails = vec![];
    for eps in [1.0, 2f64.powi(60), 2f64.powi(100), 1e50, 1e300] {
        let ln = LayerNorm::<f64>::new(eps).unwrap();
        let g = ln.backward(&x, &dy).unwrap();
        let want = (2.0 / 3.0) / eps.sqrt();
        let got = g.input[[0, 0]];
        let units = ((got - want) / (want * f64::EPSILON)).abs();
        eprintln!("eps = {eps:e}: dx0 = {got:e}, want {want:e}, rel err {units:.1} ulps");
        let (_, st) = ln.forward_with_stats(&x).unwrap();
        let gs = ln.backward_with_stats(&x, &st, &dy).unwrap();
        eprintln!("   with_stats dx0 = {:e}", gs.input[[0, 0]]);
        if units > 2.0 {
            fails.push(eps);
        }
    }
    assert!(fails.is_empty(), "bad eps: {fails:?}");
}

#[test]
fn in_place_on_a_non_mergeable_view_matches_forward() {
    let ln = LayerNorm::<f64>::affine(5, 1e-5).unwrap();
    let x = Array3::from_shape_fn((4, 30, 5), |(a, b, c)| ((a * 37 + b * 5 + c) as f64).cos());
    let want = ln.forward(&x).unwrap();
    let mut f = Array3::zeros((4, 30, 5).f());
    f.assign(&x);
    ln.forward_inplace(&mut f).unwrap();
    assert_eq!(f, want);
    let mut p = x.view().permuted_axes([1, 0, 2]).to_owned();
    let mut pv = p.view_mut().permuted_axes([1, 0, 2]);
    ln.forward_inplace(&mut pv).unwrap();
    assert_eq!(pv, want);
    let mut big = Array3::<f64>::zeros((8, 60, 10));
    let mut sl = big.slice_mut(s![..;-2, ..;2, 1..;2]);
    sl.assign(&x);
    ln.forward_inplace(&mut sl).unwrap();
    assert_eq!(sl, want);
}

/// Informational (passes): a NaN in gamma is not rejected; forward makes that column NaN in
/// every row, and backward makes every element of dx NaN in every row (mean(g) includes it).
#[test]
fn nan_in_gamma_poisons_its_column_in_every_row() {
    let ln = LayerNorm::<f64>::new(1e-5)
        .unwrap()
        .with_gamma(array![1.0, f64::NAN, 1.0])
        .unwrap();
    let x = arr2(&[[1.0, 2.0, 4.0], [3.0, 0.0, 1.0]]);
    let y = ln.forward(&x).unwrap();
    let g = ln
        .backward(&x, &arr2(&[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
        .unwrap();
    eprintln!("y = {y:?}\ndx = {:?}", g.input);
    assert!(y.column(1).iter().all(|v| v.is_nan()) && y.column(0).iter().all(|v| v.is_finite()));
    assert!(g.input.iter().all(|v| v.is_nan()));
}
