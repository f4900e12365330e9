//! The instruction sets the row kernels are compiled for, and the choice among them at run
//! time.
//!
//! A kernel is written once, as an `#[inline(always)]` body, and [`Isa::run`] calls it inside a
//! function compiled with the target features of the chosen instruction set, so that LLVM
//! vectorizes the inlined body with the widest registers the processor has. The choice never
//! changes a result: the kernels use no reassociation, every lane and every merge is in a
//! fixed order, and conversions, additions, multiplications, divisions, square roots and
//! fused multiply-adds are correctly rounded in every instruction set. A fused multiply-add is
//! written as `f64::mul_add` (or the FMA intrinsic in [`Simd`]'s loops) where the kernel wants
//! one, never left to the compiler to contract: it is an FMA instruction on AVX2/AVX-512
//! (both require FMA here) and on aarch64, and on the x86-64 baseline (a processor without
//! FMA) the C library's exact software `fma`, slower but with the same bits. Tests call
//! every version that the processor supports on the same rows and compare the bits
//! (`Isa::available`).

// The one module with `unsafe`: calling a function compiled for features that the processor
// was checked to have at run time.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set a kernel can run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Whatever the crate is compiled for (SSE2 on a default x86-64 build).
    Baseline,
    /// AVX2 and FMA (256-bit vectors).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F/BW/DQ/VL and FMA (512-bit vectors).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The detected instruction set, 0 while not yet detected.
static DETECTED: AtomicU8 = AtomicU8::new(0);

impl Isa {
    fn code(self) -> u8 {
        match self {
            Isa::Baseline => 1,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 3,
        }
    }

    /// The widest instruction set this processor supports (detected once).
    #[inline]
    pub(crate) fn best() -> Isa {
        let code = DETECTED.load(Ordering::Relaxed);
        if let Some(isa) = Self::available().into_iter().find(|i| i.code() == code) {
            return isa;
        }
        let isa = *Self::available()
            .last()
            .expect("the baseline is always available");
        DETECTED.store(isa.code(), Ordering::Relaxed);
        isa
    }

    /// Every instruction set this processor supports, narrowest first.
    pub(crate) fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    /// Runs `kernel` compiled for this instruction set (which the processor must support: it
    /// is one of [`Isa::available`]).
    #[inline(always)]
    pub(crate) fn run<K: Kernel>(self, kernel: K) -> K::Output {
        match self {
            Isa::Baseline => kernel.run::<Baseline>(),
            // SAFETY: `self` comes from `available`, which checked the features at run time.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2(kernel) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512(kernel) },
        }
    }
}

/// A marker of the instruction set a kernel body is instantiated for. The body of a
/// [`Kernel`] is generic over it, so that every closure in the body is a distinct type per
/// instruction set, inlined into the one function compiled with that set's features (a closure
/// shared by several versions would be compiled once, for the baseline). It also carries the
/// few loops that LLVM does not vectorize well by itself, written with the set's intrinsics.
pub trait Simd {
    /// For every chunk `c` of `x`, in order, with `d = f64(c[j]) - p` (`d = f64(c[j])` if not
    /// `SHIFT`, where `p = 0`): `s1[j] += d` (if `CENTER`) and `s2[j] = fma(d, d, s2[j])` (one rounding),
    /// for `j` in `0..16`. Every version performs exactly these operations on
    /// each lane.
    fn lane_sums<const CENTER: bool, const SHIFT: bool>(
        x: &[[f32; 16]],
        p: f64,
        s1: &mut [f64; 16],
        s2: &mut [f64; 16],
    );

    /// For every chunk `k` of `x`, `dy` and `w` (in order), with `d = f64(x_k[j]) - p` and
    /// `g = f64(dy_k[j]) * w_k[j]`, for `j` in `0..8`: `acc[0][j] += d` and `acc[2][j] += g`
    /// (if `CENTER`), `acc[1][j] += d * d`, `acc[3][j] += g * d`, and
    /// `acc[4][j] = if |b| > acc[4][j] { |b| } else { acc[4][j] }` with `b = f64(dy_k[j])`
    /// (each product rounded, then the sum: no fused multiply-add). Every version performs exactly these operations on
    /// each lane.
    fn backward_sums<const CENTER: bool>(
        x: &[[f32; 8]],
        dy: &[[f32; 8]],
        w: &[[f64; 8]],
        p: f64,
        acc: &mut [[f64; 8]; 5],
    );
}

/// The operations of [`Simd::backward_sums`] on one element, into lane `j`.
#[inline(always)]
pub(crate) fn backward_element<const CENTER: bool>(
    acc: &mut [[f64; 8]; 5],
    j: usize,
    (x, dy, w): (f32, f32, f64),
    p: f64,
) {
    let d = f64::from(x) - p;
    let g = f64::from(dy) * w;
    if CENTER {
        acc[0][j] += d;
        acc[2][j] += g;
    }
    acc[1][j] += d * d;
    acc[3][j] += g * d;
    let b = f64::from(dy).abs();
    acc[4][j] = if b > acc[4][j] { b } else { acc[4][j] };
}

/// The marker of [`Isa::Baseline`].
pub(crate) struct Baseline;
impl Simd for Baseline {
    #[inline(always)]
    fn lane_sums<const CENTER: bool, const SHIFT: bool>(
        x: &[[f32; 16]],
        p: f64,
        s1: &mut [f64; 16],
        s2: &mut [f64; 16],
    ) {
        for c in x {
            for j in 0..16 {
                let d = super::fast::shifted::<SHIFT>(f64::from(c[j]), p);
                if CENTER {
                    s1[j] += d;
                }
                s2[j] = d.mul_add(d, s2[j]);
            }
        }
    }

    #[inline(always)]
    fn backward_sums<const CENTER: bool>(
        x: &[[f32; 8]],
        dy: &[[f32; 8]],
        w: &[[f64; 8]],
        p: f64,
        acc: &mut [[f64; 8]; 5],
    ) {
        for ((cx, cd), cw) in x.iter().zip(dy).zip(w) {
            for j in 0..8 {
                backward_element::<CENTER>(acc, j, (cx[j], cd[j], cw[j]), p);
            }
        }
    }
}

/// The marker of [`Isa::Avx2`].
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;
#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    #[inline(always)]
    fn lane_sums<const CENTER: bool, const SHIFT: bool>(
        x: &[[f32; 16]],
        p: f64,
        s1: &mut [f64; 16],
        s2: &mut [f64; 16],
    ) {
        use std::arch::x86_64::*;
        // SAFETY: only instantiated inside `avx2`, compiled with AVX2 on a processor that has
        // it; every load and store is of 4 values within a 16-element array.
        unsafe {
            let mut a: [__m256d; 4] =
                std::array::from_fn(|k| _mm256_loadu_pd(s1[4 * k..].as_ptr()));
            let mut b: [__m256d; 4] =
                std::array::from_fn(|k| _mm256_loadu_pd(s2[4 * k..].as_ptr()));
            let pv = _mm256_set1_pd(p);
            for c in x {
                for k in 0..4 {
                    let mut v = _mm256_cvtps_pd(_mm_loadu_ps(c[4 * k..].as_ptr()));
                    if SHIFT {
                        v = _mm256_sub_pd(v, pv);
                    }
                    if CENTER {
                        a[k] = _mm256_add_pd(a[k], v);
                    }
                    b[k] = _mm256_fmadd_pd(v, v, b[k]);
                }
            }
            for k in 0..4 {
                _mm256_storeu_pd(s1[4 * k..].as_mut_ptr(), a[k]);
                _mm256_storeu_pd(s2[4 * k..].as_mut_ptr(), b[k]);
            }
        }
    }

    #[inline(always)]
    fn backward_sums<const CENTER: bool>(
        x: &[[f32; 8]],
        dy: &[[f32; 8]],
        w: &[[f64; 8]],
        p: f64,
        acc: &mut [[f64; 8]; 5],
    ) {
        use std::arch::x86_64::*;
        // SAFETY: only instantiated inside `avx2`, compiled with AVX2 on a processor that has
        // it; every load and store is of 4 values within an 8-element array.
        unsafe {
            let mut v: [[__m256d; 2]; 5] = std::array::from_fn(|s| {
                std::array::from_fn(|k| _mm256_loadu_pd(acc[s][4 * k..].as_ptr()))
            });
            let pv = _mm256_set1_pd(p);
            let sign = _mm256_set1_pd(-0.0);
            for ((cx, cd), cw) in x.iter().zip(dy).zip(w) {
                for k in 0..2 {
                    let xv = _mm256_cvtps_pd(_mm_loadu_ps(cx[4 * k..].as_ptr()));
                    let dv = _mm256_cvtps_pd(_mm_loadu_ps(cd[4 * k..].as_ptr()));
                    let wv = _mm256_loadu_pd(cw[4 * k..].as_ptr());
                    let d = _mm256_sub_pd(xv, pv);
                    let g = _mm256_mul_pd(dv, wv);
                    if CENTER {
                        v[0][k] = _mm256_add_pd(v[0][k], d);
                        v[2][k] = _mm256_add_pd(v[2][k], g);
                    }
                    v[1][k] = _mm256_add_pd(v[1][k], _mm256_mul_pd(d, d));
                    v[3][k] = _mm256_add_pd(v[3][k], _mm256_mul_pd(g, d));
                    // max(a, m) is `a > m ? a : m` (the second operand where either is NaN).
                    v[4][k] = _mm256_max_pd(_mm256_andnot_pd(sign, dv), v[4][k]);
                }
            }
            for (s, vs) in v.iter().enumerate() {
                for (k, vk) in vs.iter().enumerate() {
                    _mm256_storeu_pd(acc[s][4 * k..].as_mut_ptr(), *vk);
                }
            }
        }
    }
}

/// The marker of [`Isa::Avx512`].
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;
#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    #[inline(always)]
    fn lane_sums<const CENTER: bool, const SHIFT: bool>(
        x: &[[f32; 16]],
        p: f64,
        s1: &mut [f64; 16],
        s2: &mut [f64; 16],
    ) {
        use std::arch::x86_64::*;
        // SAFETY: only instantiated inside `avx512`, compiled with AVX-512F on a processor
        // that has it; every load and store is of 8 values within a 16-element array.
        unsafe {
            let mut a: [__m512d; 2] =
                std::array::from_fn(|k| _mm512_loadu_pd(s1[8 * k..].as_ptr()));
            let mut b: [__m512d; 2] =
                std::array::from_fn(|k| _mm512_loadu_pd(s2[8 * k..].as_ptr()));
            let pv = _mm512_set1_pd(p);
            for c in x {
                for k in 0..2 {
                    let mut v = _mm512_cvtps_pd(_mm256_loadu_ps(c[8 * k..].as_ptr()));
                    if SHIFT {
                        v = _mm512_sub_pd(v, pv);
                    }
                    if CENTER {
                        a[k] = _mm512_add_pd(a[k], v);
                    }
                    b[k] = _mm512_fmadd_pd(v, v, b[k]);
                }
            }
            for k in 0..2 {
                _mm512_storeu_pd(s1[8 * k..].as_mut_ptr(), a[k]);
                _mm512_storeu_pd(s2[8 * k..].as_mut_ptr(), b[k]);
            }
        }
    }

    #[inline(always)]
    fn backward_sums<const CENTER: bool>(
        x: &[[f32; 8]],
        dy: &[[f32; 8]],
        w: &[[f64; 8]],
        p: f64,
        acc: &mut [[f64; 8]; 5],
    ) {
        use std::arch::x86_64::*;
        // SAFETY: only instantiated inside `avx512`, compiled with AVX-512F/DQ on a processor
        // that has them; every load and store is of 8 values within an 8-element array.
        unsafe {
            let mut v: [__m512d; 5] = std::array::from_fn(|s| _mm512_loadu_pd(acc[s].as_ptr()));
            let pv = _mm512_set1_pd(p);
            let sign = _mm512_set1_pd(-0.0);
            for ((cx, cd), cw) in x.iter().zip(dy).zip(w) {
                let xv = _mm512_cvtps_pd(_mm256_loadu_ps(cx.as_ptr()));
                let dv = _mm512_cvtps_pd(_mm256_loadu_ps(cd.as_ptr()));
                let wv = _mm512_loadu_pd(cw.as_ptr());
                let d = _mm512_sub_pd(xv, pv);
                let g = _mm512_mul_pd(dv, wv);
                if CENTER {
                    v[0] = _mm512_add_pd(v[0], d);
                    v[2] = _mm512_add_pd(v[2], g);
                }
                v[1] = _mm512_add_pd(v[1], _mm512_mul_pd(d, d));
                v[3] = _mm512_add_pd(v[3], _mm512_mul_pd(g, d));
                // max(a, m) is `a > m ? a : m` (the second operand where either is NaN).
                v[4] = _mm512_max_pd(_mm512_andnot_pd(sign, dv), v[4]);
            }
            for (s, vs) in v.iter().enumerate() {
                _mm512_storeu_pd(acc[s].as_mut_ptr(), *vs);
            }
        }
    }
}

/// A row kernel with its arguments, to be run under an instruction set.
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;
    /// The kernel's body, instantiated for the instruction set `S` (implementations are
    /// `#[inline(always)]`).
    fn run<S: Simd>(self) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,avx2,fma,sse3,ssse3,sse4.1,sse4.2,popcnt")]
unsafe fn avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run::<Avx2>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512bw,avx512dq,avx512vl,avx,avx2,fma,sse3,ssse3,sse4.1,sse4.2,popcnt"
)]
unsafe fn avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run::<Avx512>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_instruction_set_is_available_and_stable() {
        let best = Isa::best();
        assert!(Isa::available().contains(&best));
        assert_eq!(Isa::best(), best);
        assert_eq!(Isa::available()[0], Isa::Baseline);
    }
}
