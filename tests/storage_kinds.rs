//! `forward`, `forward_inplace`, `forward_with_stats` and `moments` accept every ndarray storage
//! kind through `&ArrayRef` / `&mut ArrayRef` deref coercion, and the public types have the usual
//! auto traits.

#[path = "common/support.rs"]
mod support;

use std::fmt::Debug;

use ndarray::{s, ArcArray, Array2, ArrayD, ArrayView2, ArrayViewMut2, CowArray, Ix1, Ix2, IxDyn};
use ndarray_layernorm::{moments, Error, LayerNorm, Moments, Param, Stats};

use support::{assert_bitwise_eq, random_rows};

fn input() -> Array2<f64> {
    random_rows::<f64>(4, 9, 42)
}

fn expected() -> Array2<f64> {
    LayerNorm::<f64>::default().forward(&input()).unwrap()
}

#[test]
fn forward_accepts_an_owned_array() {
    let x: Array2<f64> = input();
    let y: Array2<f64> = LayerNorm::default().forward(&x).unwrap();
    assert_bitwise_eq(&y, &expected(), "Array");
}

#[test]
fn forward_accepts_an_array_view() {
    let x = input();
    let view: ArrayView2<'_, f64> = x.view();
    let y = LayerNorm::default().forward(&view).unwrap();
    assert_bitwise_eq(&y, &expected(), "ArrayView");
}

#[test]
fn forward_accepts_a_mutable_array_view() {
    let mut x = input();
    let view: ArrayViewMut2<'_, f64> = x.view_mut();
    let y = LayerNorm::default().forward(&view).unwrap();
    assert_bitwise_eq(&y, &expected(), "ArrayViewMut");
}

#[test]
fn forward_accepts_borrowed_and_owned_cow_arrays() {
    let x = input();
    let borrowed: CowArray<'_, f64, Ix2> = CowArray::from(x.view());
    assert_bitwise_eq(
        &LayerNorm::default().forward(&borrowed).unwrap(),
        &expected(),
        "CowArray (view)",
    );
    let owned: CowArray<'_, f64, Ix2> = CowArray::from(x.clone());
    assert_bitwise_eq(
        &LayerNorm::default().forward(&owned).unwrap(),
        &expected(),
        "CowArray (owned)",
    );
}

#[test]
fn forward_accepts_a_shared_arc_array() {
    let x: ArcArray<f64, Ix2> = input().into_shared();
    let y = LayerNorm::default().forward(&x).unwrap();
    assert_bitwise_eq(&y, &expected(), "ArcArray");
}

#[test]
fn forward_accepts_a_transposed_view() {
    let xt = input()
        .t()
        .as_standard_layout()
        .into_owned()
        .reversed_axes();
    let y = LayerNorm::default().forward(&xt.view()).unwrap();
    assert_bitwise_eq(&y, &expected(), "transposed view");
    let base = input().reversed_axes().as_standard_layout().into_owned();
    let y = LayerNorm::default().forward(&base.t()).unwrap();
    assert_bitwise_eq(&y, &expected(), "t() of the transposed copy");
}

#[test]
fn forward_accepts_a_stepped_slice() {
    let mut wide = Array2::<f64>::zeros((4, 18));
    wide.slice_mut(s![.., ..;2]).assign(&input());
    let y = LayerNorm::default()
        .forward(&wide.slice(s![.., ..;2]))
        .unwrap();
    assert_bitwise_eq(&y, &expected(), "stepped slice");
}

#[test]
fn forward_accepts_a_dynamic_dimension_array() {
    let x: ArrayD<f64> = input().into_dyn();
    let y: ArrayD<f64> = LayerNorm::default().forward(&x).unwrap();
    assert_bitwise_eq(&y, &expected().into_dyn(), "IxDyn");
    let stats: Stats<f64, IxDyn> = LayerNorm::default().forward_with_stats(&x).unwrap().1;
    assert_eq!(stats.mean.shape(), &[4]);
    let m: Moments<f64, IxDyn> = moments(&x.view()).unwrap();
    assert_eq!(m.var.shape(), &[4]);
}

#[test]
fn forward_accepts_f32_storage_kinds() {
    let x = random_rows::<f32>(3, 5, 43);
    let ln = LayerNorm::<f32>::new(1e-5).unwrap();
    let y = ln.forward(&x).unwrap();
    assert_bitwise_eq(&ln.forward(&x.view()).unwrap(), &y, "f32 view");
    assert_bitwise_eq(
        &ln.forward(&x.clone().into_shared()).unwrap(),
        &y,
        "f32 arc",
    );
    assert_bitwise_eq(
        &ln.forward(&CowArray::from(x.view())).unwrap(),
        &y,
        "f32 cow",
    );
}

#[test]
fn forward_with_stats_and_moments_accept_views() {
    let x = input();
    let (y, stats): (Array2<f64>, Stats<f64, Ix1>) =
        LayerNorm::default().forward_with_stats(&x.view()).unwrap();
    assert_bitwise_eq(&y, &expected(), "forward_with_stats(view)");
    let m: Moments<f64, Ix1> = moments(&x.view()).unwrap();
    assert_bitwise_eq(&stats.mean, &m.mean, "stats mean vs moments mean");
    let m_arc = moments(&x.clone().into_shared()).unwrap();
    assert_bitwise_eq(&m_arc.var, &m.var, "moments(ArcArray)");
}

#[test]
fn forward_inplace_accepts_owned_arrays_and_mutable_views() {
    let ln = LayerNorm::default();
    let mut x = input();
    ln.forward_inplace(&mut x).unwrap();
    assert_bitwise_eq(&x, &expected(), "in place on Array");

    let mut x = input();
    let mut view = x.view_mut();
    ln.forward_inplace(&mut view).unwrap();
    assert_bitwise_eq(&x, &expected(), "in place on ArrayViewMut");

    let mut x = input().into_dyn();
    ln.forward_inplace(&mut x).unwrap();
    assert_bitwise_eq(&x, &expected().into_dyn(), "in place on ArrayD");

    let mut wide = Array2::<f64>::zeros((4, 18));
    wide.slice_mut(s![.., ..;2]).assign(&input());
    ln.forward_inplace(&mut wide.slice_mut(s![.., ..;2]))
        .unwrap();
    assert_bitwise_eq(
        &wide.slice(s![.., ..;2]),
        &expected(),
        "in place on stepped view",
    );
    assert!(wide.slice(s![.., 1..;2]).iter().all(|&v| v == 0.0));
}

#[test]
fn forward_inplace_on_a_shared_arc_array_copies_on_write() {
    let shared: ArcArray<f64, Ix2> = input().into_shared();
    let mut written = shared.clone();
    LayerNorm::default().forward_inplace(&mut written).unwrap();
    assert_bitwise_eq(&written, &expected(), "written ArcArray");
    assert_bitwise_eq(&shared, &input(), "the other handle keeps the input");
}

#[test]
fn forward_inplace_on_a_cow_array_writes_its_own_copy() {
    let x = input();
    let mut cow: CowArray<'_, f64, Ix2> = CowArray::from(x.view());
    LayerNorm::default().forward_inplace(&mut cow).unwrap();
    assert_bitwise_eq(&cow, &expected(), "written CowArray");
    assert_bitwise_eq(&x, &input(), "the borrowed original");
}

fn assert_auto_traits<T: Send + Sync + Unpin + Clone + Debug + 'static>() {}

#[test]
fn public_types_are_send_sync_unpin_clone_and_debug() {
    assert_auto_traits::<LayerNorm<f32>>();
    assert_auto_traits::<LayerNorm<f64>>();
    assert_auto_traits::<Stats<f32, Ix1>>();
    assert_auto_traits::<Stats<f64, IxDyn>>();
    assert_auto_traits::<Moments<f32, IxDyn>>();
    assert_auto_traits::<Moments<f64, Ix1>>();
    assert_auto_traits::<Error>();
    assert_auto_traits::<Param>();
}

#[test]
fn layer_norm_can_be_shared_across_threads() {
    let ln = LayerNorm::<f64>::affine(9, 1e-5).unwrap();
    let x = input();
    let expected = ln.forward(&x).unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| ln.forward(&x).unwrap()))
            .collect();
        for h in handles {
            assert_bitwise_eq(&h.join().unwrap(), &expected, "forward on another thread");
        }
    });
}

#[test]
fn stats_and_moments_clone_and_debug() {
    let (_, stats) = LayerNorm::<f32>::default()
        .forward_with_stats(&random_rows::<f32>(2, 3, 44))
        .unwrap();
    let copy = stats.clone();
    assert_eq!(copy.mean, stats.mean);
    assert!(format!("{stats:?}").contains("rstd"));
    let m = moments(&random_rows::<f32>(2, 3, 44)).unwrap();
    assert!(format!("{:?}", m.clone()).contains("var"));
}
