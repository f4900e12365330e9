//! The fast backward pass of an `f32` row: plain `f64` sums, accepted where an a-posteriori
//! bound shows that they meet the accuracy contract, and otherwise left to the exact path
//! ([`super::backward::backward_row`]).
//!
//! # The method
//!
//! Every `f32` input widens exactly to `f64`, and so does every product `g_i = dy_i * gamma_i`
//! (24 + 24 significant bits). With a pivot `p` (LayerNorm recomputing its statistics: `p =
//! x_0`; with saved statistics: `p` = the saved mean; RMSNorm: `p = 0`), one pass computes, in
//! `f64`, `d_i = x_i - p` and the sums
//!
//! ```text
//! S1 = sum d_i,   S2 = sum d_i^2,   G = sum g_i,   P = sum g_i d_i,   dymax = max |dy_i|
//! ```
//!
//! element `i` into lane `i % LANES` (`LANES = 8`), then the lanes in a fixed pairwise tree
//! ([`Simd::backward_sums`], the one loop written with each instruction set's intrinsics). The
//! first passes of a group of rows (about 256 KiB of `x` and `dy`) run before their second
//! passes, so that they stream from memory back to back and the second passes find the rows
//! in the L2 cache.
//!
//! `gmax = dymax * max |gamma|` (exact: a product of two `f32` values) bounds every `|g_i|`
//! (below, `gmax` is this bound, not the largest `|g_i|`; gamma is widened to `f64` once per
//! call). Then (`n` the row length; hats on computed values are dropped where no confusion
//! arises):
//!
//! * statistics recomputed: `a = S1 / n` (LayerNorm; 0 for RMSNorm), `q = S2 / n`,
//!   `var = q - a^2` (RMSNorm: `q`), `v = var + eps`, `R = 1 / sqrt(v)`, `M = p + a`;
//!   saved statistics: `a = 0`, `M = p`, `R` = the saved `rstd`;
//! * `MG = G / n` (LayerNorm; 0 for RMSNorm), `c = P - a G`, `MGX = (c / n) R`;
//!
//! and a second pass writes, for every element,
//!
//! ```text
//! XH_i = (x_i - M) R,   DX_i = ((g_i - MG) - XH_i MGX) R   (rounded once to f32)
//! ```
//!
//! and adds `dy_i XH_i` to the `dgamma` sum of its column and `dy_i` to the `dbeta` sum (plain
//! `f64` sums over the rows of a block of at most 64 rows, in the order of the rows; the blocks
//! are merged with compensation, see `Core::backward`). The second pass walks the columns in
//! chunks of 16 (`COLUMNS`) across a run of consecutive fast rows, so that each chunk of the column
//! sums stays in registers from row to row: the same additions in the same order as row by
//! row. These are the formulas of the exact path with `mean(g) = MG` and
//! `mean(g xhat) = MGX`. The operations are the same in every instruction set (no fused
//! multiply-add; a fixed order), so every version gives the same bits.
//!
//! # The bound
//!
//! Let `u = 2^-53` and `h = ceil(n / LANES) + log2(LANES)`, the largest number of additions any
//! term goes through. The exact values are `mu` (mean; 0 for RMSNorm), `r = 1 / sqrt(var +
//! eps)` (or the saved `rstd`, taken as exact with the saved mean: the contract of
//! `backward_with_stats` is relative to the statistics it is given), `xhat_i = (x_i - mu) r`,
//! `mg = mean(g)`, `mgx = mean(g xhat)` and `dx_i = (g_i - mg - xhat_i mgx) r`. Every bound
//! below is first order in `u`; the factor `1.01` in each covers the higher-order terms, since
//! every relative error involved is below `2^-20` where a row is accepted (Higham, *Accuracy
//! and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4, for the sums in a tree of depth
//! `h`: `|S^ - S| <= gamma_h sum |terms|`).
//!
//! 1. The statistics (recomputed). As in `super::fast` (the forward pass, with the same `S1`,
//!    `S2` and depth `h`): `|v^ - (var + eps)| <= C q + 2.1 u v^` with `C = 1.01 (3h + 10) u`,
//!    so `R = r (1 + rho)` with `|rho| <= rho_R = 1.01 ((C q / v^ + 2.1 u) / 2 + 2 u)` (the
//!    square root halves the relative error and adds `u`, the reciprocal adds `u`). The shift
//!    `a` is within `E_a = 1.02 (h + 3) u sqrt(q) + u |a|` of `mu - p`, so `M` is within
//!    `E_M = 1.01 (E_a + u |M|)` of `mu`. Saved statistics and RMSNorm: `a = 0` exactly,
//!    `E_a = E_M = 0`; saved: `rho_R = 0`.
//! 2. `xhat`: `XH_i = (x_i - mu - delta) (1 + t1) r (1 + rho) (1 + t2)` with `|delta| <= E_M`,
//!    `|t1|, |t2| <= u`, so `|XH_i - xhat_i| <= rho_x |xhat_i| + eps_x` with
//!    `rho_x = 1.01 (rho_R + 2u)` and `eps_x = 1.01 E_M R`.
//! 3. `mean(g)`: the `g_i` are exact, so `|G^ - G| <= gamma_h sum |g_i| <= h u n gmax` and
//!    `|MG - mg| <= E_mg = 1.01 h u gmax + u |MG|` (0 for RMSNorm).
//! 4. `mean(g xhat) = r (P - (mu - p) G) / n`, with `P` exact in `P = sum g_i (x_i - p)`. The
//!    terms `g_i d^_i` carry two roundings (`d_i`, the product), so
//!    `|P^ - P| <= 1.01 (h + 2) u sum |g_i d_i| <= 1.01 (h + 2) u gmax sqrt(n S2)`
//!    (Cauchy-Schwarz); `a^ G^ - (mu - p) G = a^ (G^ - G) + (a^ - (mu - p)) G` is within
//!    `n gmax (|a| h u + E_a)`; the product `a G` and the subtraction round by `u |a G|` and
//!    `u |c|`. Altogether `|c - n r^-1 mgx| <= E_c = 1.01 ((h + 2) u gmax sqrt(n S2) +
//!    n gmax (|a| h u + E_a) + u |a G| + u |c|)`, and
//!    `|MGX - mgx| <= E_mgx = 1.01 (E_c R / n + (rho_R + 2u) |MGX|)`.
//! 5. `dx`: `g_i - MG` is off by `E_mg + u (|g_i| + |MG|)`; `XH_i MGX` by
//!    `|XH_i| ((rho_x + u) |MGX| + E_mgx) + eps_x |MGX|` (items 2 and 4, and its rounding);
//!    their difference rounds by `u |T_i|`, and the product with `R` adds `rho_R + u`:
//!
//!    ```text
//!    |DX_i - dx_i| <= alpha + beta |g_i| + gam |XH_i| + delta |DX_i|,
//!    alpha = 1.01 R (E_mg + u |MG| + eps_x |MGX|),   beta = 1.01 R u,
//!    gam   = 1.01 R ((rho_x + u) |MGX| + E_mgx),     delta = 1.01 (rho_R + 2u).
//!    ```
//!
//! A row takes the fast path only where
//!
//! ```text
//! v^ > 0 (recomputed), every constant above finite, delta <= TOL / 2, eps_x <= TOL / 4,
//! and, for every element, alpha + beta |g_i| + gam |XH_i| <= (TOL / 2) max(1, |DX_i|),
//! ```
//!
//! with `TOL = 2^-30` (the last line holds for the whole row at once where
//! `alpha + beta gmax + gam XHMAX <= TOL / 2`, with `XHMAX = 1.01 (sqrt(S2) + |a| + u |M|) R`
//! a bound of every `|XH_i|`, since `|d_i| <= sqrt(S2)`; the second pass then tests nothing),
//! all written so that a NaN fails them (a NaN or an infinity anywhere in
//! the row makes a sum, and so a constant, non-finite). Where it is taken, `DX_i` is within
//! `TOL max(1, |DX_i|)` of the exact `dx_i`, and after its rounding to `f32` the result is
//! within `0.5 + 2^-6` units of `f32::EPSILON * max(1, |dx_i|)`, against the contract's 4.
//! The per-element test is what catches cancellation: where `dx_i` is tiny next to its terms
//! (`dy = c x` makes every `dx_i` almost 0), `gam |XH_i|` and `alpha` are relative to the terms
//! and exceed `TOL max(1, |DX_i|)` unless the terms themselves are below about `2^30 u^-1 / h`
//! times `max(1, |dx_i|)`, and the row is then redone on the exact path.
//!
//! The row-level part of the test (everything but the last line) also bounds `xhat`, on which
//! `dgamma` depends, and is decided before the second pass: a row that passes it gives
//! `XH_i` within `rho_x |xhat_i| + eps_x` of `xhat_i`, with `rho_x <= TOL / 2` and
//! `eps_x <= TOL / 4`; of `eps_x`, the part `1.01 u |M| R` is the rounding of the mean to
//! `f64`, which the exact path has too. Such a row adds `dy_i XH_i` to `dgamma` even if its
//! `dx` is then redone on the exact path (which then adds nothing more). A row that fails it is
//! left to the exact path whole.
//!
//! The parameter sums. `dgamma_j` is a sum over rows of `dy_j XH_j`: within a block of at most
//! 64 rows its plain sum is within `63 u` of the sum of the magnitudes of its terms (products
//! rounded once more: `64 u`), and the compensated merge of the blocks adds nothing visible, so
//! beyond the error of `XH` above its error is about `2^-47` of `sum |dy xhat|`, the unit of
//! the `dgamma` contract. `dbeta` is a plain sum of the exact `dy` in the same way, and the
//! block also sums `dymax` over its rows (a bound of every column's sum of magnitudes): its
//! bound, and the columns summed again where it fails, are in `Core::check_plain_dbeta`. Rows on the
//! exact path add `dy` to the same plain `dbeta` sums (and `dymax` to the bound), and add their
//! `dgamma` terms with TwoSum.

use super::backward::{backward_row, BackwardScratch, ColumnParts, ParamSums, RowPlan};
use super::fast::tree;
use super::forward::Out;
use super::isa::{backward_element, Kernel, Simd};
use crate::driver::ROW_BLOCK;
use crate::float::Float;

/// Independent accumulators of each sum: element `i` of a row goes to lane `i % LANES`.
const LANES: usize = 8;
/// `log2(LANES)`: the depth of the tree that merges the lanes.
const TREE: usize = 3;
/// `u = 2^-53`, the unit roundoff of `f64`.
const U: f64 = f64::EPSILON / 2.0;
/// The accepted error of `DX_i`, relative to `max(1, |DX_i|)`: `2^-30`.
const TOL: f64 = 1.0 / (1u64 << 30) as f64;

/// The sums of the first pass (see the module doc).
struct Sums {
    s1: f64,
    s2: f64,
    g: f64,
    p: f64,
    gmax: f64,
    dymax: f64,
}

/// The first pass over a row with pivot `p` (`w` is gamma as `f64`, or ones, and `wmax` its
/// largest magnitude), lanes through
/// [`Simd::backward_sums`] and the tail element by element, into the first lanes.
#[inline(always)]
fn row_sums<S: Simd, const CENTER: bool>(
    x: &[f32],
    dy: &[f32],
    (w, wmax): (&[f64], f64),
    p: f64,
) -> Sums {
    let mut acc = [[0.0f64; LANES]; 5];
    let (xc, xt) = x.as_chunks::<LANES>();
    let (dc, dt) = dy.as_chunks::<LANES>();
    let (wc, wt) = w.as_chunks::<LANES>();
    S::backward_sums::<CENTER>(xc, dc, wc, p, &mut acc);
    for (j, ((&vx, &vd), &vw)) in xt.iter().zip(dt).zip(wt).enumerate() {
        backward_element::<CENTER>(&mut acc, j, (vx, vd, vw), p);
    }
    let [s1, s2, g, pp, ym] = acc;
    let max = |m: [f64; LANES]| m.into_iter().fold(0.0f64, |a, v| if v > a { v } else { a });
    Sums {
        s1: tree(s1),
        s2: tree(s2),
        g: tree(g),
        p: tree(pp),
        // |g_i| = |dy_i| |w_i| <= dymax wmax, a product of two f32 values: exact.
        gmax: max(ym) * wmax,
        dymax: max(ym),
    }
}

/// The constants of a row that passed the row-level test (see the module doc).
#[derive(Debug, Clone, Copy)]
struct Consts {
    m: f64,
    r: f64,
    mg: f64,
    mgx: f64,
    alpha: f64,
    beta: f64,
    gam: f64,
    /// Whether every element passes its test (`alpha + beta gmax + gam XHMAX <= TOL / 2`), so
    /// that the second pass need not test them.
    all: bool,
    /// `max |dy_i|`, for the bound of `dbeta`.
    dymax: f64,
}

/// The first pass and the row-level test: the constants of the row, or `None` where the row
/// goes to the exact path whole.
#[inline(always)]
fn row_consts<S: Simd, const CENTER: bool>(
    x: &[f32],
    dy: &[f32],
    w: (&[f64], f64),
    plan: RowPlan,
) -> Option<Consts> {
    let n = x.len();
    if n == 0 || (!CENTER && n == 1) {
        // RMSNorm rows of one element have their own closed form on the exact path.
        return None;
    }
    let (p, saved) = match plan {
        RowPlan::Recompute(_) if CENTER => (f64::from(x[0]), None),
        RowPlan::Recompute(_) => (0.0, None),
        RowPlan::Saved { mean, rstd, .. } => (if CENTER { mean } else { 0.0 }, Some(rstd)),
    };
    let s = row_sums::<S, CENTER>(x, dy, w, p);
    let nf = n as f64;
    let h = (n.div_ceil(LANES) + TREE) as f64;
    let q = s.s2 / nf;
    // Item 1 of the bound: a, E_a, M, E_M, R, rho_R.
    let (a, e_a, m, e_m, r, rho_r) = match (plan, saved) {
        (RowPlan::Recompute(eps), _) => {
            let (a, var) = if CENTER {
                let a = s.s1 / nf;
                (a, q - a * a)
            } else {
                (0.0, q)
            };
            let v = var + eps;
            // `v > 0`, written so that a NaN fails it too.
            if v.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return None;
            }
            let r = 1.0 / v.sqrt();
            let c = 1.01 * (3.0 * h + 10.0) * U;
            let rho_r = 1.01 * ((c * q / v + 2.1 * U) / 2.0 + 2.0 * U);
            if CENTER {
                let e_a = 1.02 * (h + 3.0) * U * q.sqrt() + U * a.abs();
                let m = p + a;
                (a, e_a, m, 1.01 * (e_a + U * m.abs()), r, rho_r)
            } else {
                (0.0, 0.0, 0.0, 0.0, r, rho_r)
            }
        }
        (_, Some(rstd)) => (0.0, 0.0, p, 0.0, rstd, 0.0),
        (_, None) => unreachable!("a saved plan has a saved rstd"),
    };
    // Item 2: rho_x, eps_x.
    let rho_x = 1.01 * (rho_r + 2.0 * U);
    let eps_x = 1.01 * e_m * r;
    // Item 3: MG, E_mg.
    let (mg, e_mg) = if CENTER {
        let mg = s.g / nf;
        (mg, 1.01 * h * U * s.gmax + U * mg.abs())
    } else {
        (0.0, 0.0)
    };
    // Item 4: c, E_c, MGX, E_mgx.
    let ag = a * s.g;
    let c = s.p - ag;
    let e_c = 1.01
        * ((h + 2.0) * U * s.gmax * (nf * s.s2).sqrt()
            + nf * s.gmax * (a.abs() * h * U + e_a)
            + U * ag.abs()
            + U * c.abs());
    let mgx = (c / nf) * r;
    let e_mgx = 1.01 * (e_c * r / nf + (rho_r + 2.0 * U) * mgx.abs());
    // Item 5.
    let alpha = 1.01 * r * (e_mg + U * mg.abs() + eps_x * mgx.abs());
    let beta = 1.01 * r * U;
    let gam = 1.01 * r * ((rho_x + U) * mgx.abs() + e_mgx);
    let delta = 1.01 * (rho_r + 2.0 * U);
    let finite = |v: f64| v.abs() < f64::INFINITY;
    let ok = [m, r, mg, mgx, alpha, beta, gam].into_iter().all(finite)
        && delta <= TOL / 2.0
        && eps_x <= TOL / 4.0;
    // |XH_i| <= (|d_i| + |a| + u |M|) R (1 + 4u) (d_i and M carry one rounding each), and
    // |d_i| <= sqrt(S2) (1 + gamma_(h+1)).
    let xh_max = 1.01 * (s.s2.sqrt() + a.abs() + U * m.abs()) * r;
    let all = alpha + beta * s.gmax + gam * xh_max <= TOL / 2.0;
    ok.then_some(Consts {
        m,
        r,
        mg,
        mgx,
        alpha,
        beta,
        gam,
        all,
        dymax: s.dymax,
    })
}

/// The second passes of the consecutive rows `rows` of a group (each with its constants in
/// `consts`, all `Some`): writes their `dx`, adds `dy * XH` to `dgamma` (if `DG`) and `dy` to
/// `dbeta` (if `DB`), and clears `ok[r]` for every row with an element that fails its test.
///
/// The columns are walked in chunks of `CW`, and each chunk of the sums is added to row after
/// row in registers, in the order of the rows: the same additions, in the same order, as row
/// by row (so `CW` changes no bit).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn write_rows<F: Float, Y: Out<F>, const DG: bool, const DB: bool, const CW: usize>(
    (x, dy, w): (&[F], &[F], &[f64]),
    dx: &mut [Y],
    n: usize,
    rows: std::ops::Range<usize>,
    consts: &[Option<Consts>],
    ok: &mut [bool],
    dgamma: &mut [f64],
    dbeta: &mut [f64],
) {
    /// `(XH, dy, DX)` of one element.
    #[inline(always)]
    fn value<F: Float>(k: &Consts, x: F, dy: F, w: f64) -> (f64, f64, f64) {
        let xh = (x.wide() - k.m) * k.r;
        let dyw = dy.wide();
        let d = ((dyw * w - k.mg) - xh * k.mgx) * k.r;
        (xh, dyw, d)
    }
    /// `value`, and whether the element passes its test.
    #[inline(always)]
    fn element<F: Float>(k: &Consts, x: F, dy: F, w: f64) -> (f64, f64, f64, bool) {
        let (xh, dyw, d) = value(k, x, dy, w);
        let g = dyw * w;
        let e = k.alpha + k.beta * g.abs() + k.gam * xh.abs();
        let a = d.abs();
        let scale = if a > 1.0 { a } else { 1.0 };
        (xh, dyw, d, e <= TOL / 2.0 * scale)
    }
    let chunks = n / CW;
    for c in 0..chunks {
        let cols = c * CW..(c + 1) * CW;
        let mut sg = [0.0f64; CW];
        let mut sb = [0.0f64; CW];
        if DG {
            sg.copy_from_slice(&dgamma[cols.clone()]);
        }
        if DB {
            sb.copy_from_slice(&dbeta[cols.clone()]);
        }
        let wc = &w[cols.clone()];
        for r in rows.clone() {
            let k = consts[r].as_ref().expect("a fast row");
            let at = r * n + c * CW;
            let xr = &x[at..at + CW];
            let yr = &dy[at..at + CW];
            let out = &mut dx[at..at + CW];
            if k.all {
                // Every element passes: no test.
                for j in 0..CW {
                    let (xh, dyw, d) = value(k, xr[j], yr[j], wc[j]);
                    out[j].put(F::narrow(d));
                    if DG {
                        sg[j] += dyw * xh;
                    }
                    if DB {
                        sb[j] += dyw;
                    }
                }
                continue;
            }
            let mut good = true;
            for j in 0..CW {
                let (xh, dyw, d, pass) = element(k, xr[j], yr[j], wc[j]);
                out[j].put(F::narrow(d));
                good &= pass;
                if DG {
                    sg[j] += dyw * xh;
                }
                if DB {
                    sb[j] += dyw;
                }
            }
            ok[r] &= good;
        }
        if DG {
            dgamma[cols.clone()].copy_from_slice(&sg);
        }
        if DB {
            dbeta[cols].copy_from_slice(&sb);
        }
    }
    // The last `n % CW` columns, each over the rows in order.
    for j in chunks * CW..n {
        for r in rows.clone() {
            let k = consts[r].as_ref().expect("a fast row");
            let at = r * n + j;
            let (xh, dyw, d, pass) = element(k, x[at], dy[at], w[j]);
            dx[at].put(F::narrow(d));
            if !k.all {
                ok[r] &= pass;
            }
            if DG {
                dgamma[j] += dyw * xh;
            }
            if DB {
                dbeta[j] += dyw;
            }
        }
    }
}

/// The per-block sums of the parameter gradients: `hi` and `lo` of each column, for both
/// parameters whether the layer has them or not (`has_gamma`, `has_beta`).
pub(crate) struct BlockSums<'a> {
    /// `dgamma`.
    pub(crate) gamma: ColumnParts<'a>,
    /// `dbeta`.
    pub(crate) beta: ColumnParts<'a>,
    pub(crate) has_gamma: bool,
    pub(crate) has_beta: bool,
    /// `f32` rows: the sum over the block's rows of `max |dy|` (see `Core::check_plain_dbeta`).
    pub(crate) dy_bound: &'a mut f64,
}

/// The backward pass of a block of rows of length `n`: `dx` for every row, and the rows'
/// contributions to the block's parameter sums. `f32` rows take the fast path where its bound
/// holds (see the module doc); every other row the exact path.
pub(crate) struct BackwardBlock<'a, F: Float, Y, P, const CENTER: bool> {
    pub(crate) x: &'a [F],
    pub(crate) dy: &'a [F],
    /// The output rows: `F`, or `MaybeUninit<F>` (every element is written).
    pub(crate) dx: &'a mut [Y],
    pub(crate) n: usize,
    /// The plan of row `r` of the block.
    pub(crate) plan: P,
    pub(crate) gamma: Option<&'a [F]>,
    /// Gamma as `f64`, or `n` ones where the layer has none (`f32` only: empty for `f64`).
    pub(crate) wide_gamma: &'a [f64],
    /// The largest magnitude in `wide_gamma`.
    pub(crate) wmax: f64,
    pub(crate) sums: BlockSums<'a>,
    pub(crate) scratch: &'a mut BackwardScratch<F::Wide>,
}

/// Columns per chunk of the second pass (see [`write_rows`]).
const COLUMNS: usize = 16;

/// Bytes of `x` and `dy` whose first passes run before their second passes: the first passes
/// stream the rows from memory back to back, and the second passes find them in the L2 cache.
const GROUP_BYTES: usize = 1 << 18;

impl<F: Float, Y: Out<F>, P: Fn(usize) -> RowPlan, const CENTER: bool>
    BackwardBlock<'_, F, Y, P, CENTER>
{
    /// The rows, with the parameter sums the layer has (`DG`: gamma, `DB`: beta).
    #[inline(always)]
    fn rows<S: Simd, const DG: bool, const DB: bool>(self) {
        let BackwardBlock {
            x,
            dy,
            dx,
            n,
            plan,
            gamma,
            wide_gamma: w,
            wmax,
            mut sums,
            scratch,
        } = self;
        let group = (GROUP_BYTES / (2 * n * std::mem::size_of::<F>())).clamp(1, ROW_BLOCK);
        let mut consts = [None; ROW_BLOCK];
        let mut ok = [true; ROW_BLOCK];
        let groups = x.chunks(group * n).zip(dy.chunks(group * n));
        for (k, ((xg, dyg), dxg)) in groups.zip(dx.chunks_mut(group * n)).enumerate() {
            let rows = xg.len() / n;
            let row = |r: usize| (&xg[r * n..(r + 1) * n], &dyg[r * n..(r + 1) * n]);
            // The first passes of the group.
            for (r, c) in consts.iter_mut().enumerate().take(rows) {
                let (x, dy) = row(r);
                *c = match (F::as_f32(x), F::as_f32(dy)) {
                    (Some(x), Some(dy)) => {
                        row_consts::<S, CENTER>(x, dy, (w, wmax), plan(k * group + r))
                    }
                    _ => None,
                };
            }
            ok.fill(true);
            // The second passes, in runs of consecutive fast rows; the exact path for the
            // others, in their place in the order of the rows (it adds to the sums).
            let mut r = 0;
            while r < rows {
                let end = (r..rows).find(|&e| consts[e].is_none()).unwrap_or(rows);
                if end > r {
                    write_rows::<F, Y, DG, DB, COLUMNS>(
                        (xg, dyg, w),
                        dxg,
                        n,
                        r..end,
                        &consts,
                        &mut ok,
                        sums.gamma.hi,
                        sums.beta.hi,
                    );
                    if DB {
                        *sums.dy_bound += consts[r..end]
                            .iter()
                            .map(|c| c.as_ref().map_or(0.0, |c| c.dymax))
                            .fold(0.0, |a, v| a + v);
                    }
                    r = end;
                    continue;
                }
                // An exact row. `f32` rows add to dbeta here, in the form of the fast path
                // (see `Core::check_plain_dbeta`); `f64` rows with compensation.
                let (x, dy) = row(r);
                if DB && F::HAS_FAST {
                    add_plain_dbeta(dy, &mut sums.beta, sums.dy_bound);
                }
                let param_sums = ParamSums {
                    gamma: DG.then(|| sums.gamma.reborrow()),
                    beta: (DB && !F::HAS_FAST).then(|| sums.beta.reborrow()),
                };
                let dx = &mut dxg[r * n..(r + 1) * n];
                backward_row::<F, Y, CENTER>(
                    x,
                    dy,
                    dx,
                    plan(k * group + r),
                    gamma,
                    scratch,
                    param_sums,
                );
                r += 1;
            }
            // Fast rows with an element that failed its test: `dx` again on the exact path
            // (their sums are in).
            for r in (0..rows).filter(|&r| !ok[r]) {
                let (x, dy) = row(r);
                let dx = &mut dxg[r * n..(r + 1) * n];
                let none = ParamSums {
                    gamma: None,
                    beta: None,
                };
                backward_row::<F, Y, CENTER>(x, dy, dx, plan(k * group + r), gamma, scratch, none);
            }
        }
    }
}

/// Adds `dy` to the plain sums `beta.hi` and `max |dy|` to `bound` (the `dbeta` sums of `f32`
/// rows).
#[inline(always)]
fn add_plain_dbeta<F: Float>(dy: &[F], beta: &mut ColumnParts<'_>, bound: &mut f64) {
    let mut m = 0.0f64;
    for (s, v) in beta.hi.iter_mut().zip(dy) {
        *s += v.wide();
        let a = v.wide().abs();
        m = if a > m { a } else { m };
    }
    *bound += m;
}

impl<F: Float, Y: Out<F>, P: Fn(usize) -> RowPlan, const CENTER: bool> Kernel
    for BackwardBlock<'_, F, Y, P, CENTER>
{
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        if self.n == 0 {
            return;
        }
        match (self.sums.has_gamma, self.sums.has_beta) {
            (true, true) => self.rows::<S, true, true>(),
            (true, false) => self.rows::<S, true, false>(),
            (false, true) => self.rows::<S, false, true>(),
            (false, false) => self.rows::<S, false, false>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::isa::{Baseline, Isa};
    use super::*;

    /// Deterministic pseudo-random values in about `[-2, 2]` (no RNG crate in unit tests).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32
            })
            .collect()
    }

    /// Rows of every kind, `n` elements each: random, `dy = c x` with `c` from 1 to 1e6
    /// (cancellation), an offset of 1e4 and of 1e8 (the latter fails the row-level test),
    /// constant, a NaN in `x`, an infinity in `dy`.
    fn mixed_rows(n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut x = Vec::new();
        let mut dy = Vec::new();
        for r in 0..20u64 {
            let xr = values(n, 2 * r + 1);
            let mut yr = values(n, 2 * r + 2);
            let xr: Vec<f32> = match r % 10 {
                3 => xr.iter().map(|v| v + 1e4).collect(),
                4 => xr.iter().map(|v| v + 1e8).collect(),
                5 => vec![1.5; n],
                6 if n > 1 => {
                    let mut v = xr.clone();
                    v[n / 2] = f32::NAN;
                    v
                }
                _ => xr,
            };
            match r % 10 {
                1 | 2 | 8 => {
                    let c = [1.0f32, 1e3, 1e6][(r % 10 % 3) as usize];
                    yr = xr.iter().map(|v| v * c).collect();
                }
                7 => yr[0] = f32::INFINITY,
                _ => {}
            }
            x.extend(xr);
            dy.extend(yr);
        }
        (x, dy)
    }

    /// `dx` and the block sums (as bits) of one block through `isa`.
    fn run_block<const CENTER: bool>(
        isa: Isa,
        (x, dy): (&[f32], &[f32]),
        n: usize,
        gamma: Option<&[f32]>,
        params: (bool, bool),
        saved: bool,
    ) -> Vec<u64> {
        let rows = x.len() / n;
        let mut dx = vec![0.0f32; x.len()];
        let mut part = vec![0.0f64; 4 * n + 1];
        let (g, rest) = part.split_at_mut(2 * n);
        let (b, bound) = rest.split_at_mut(2 * n);
        let (g_hi, g_lo) = g.split_at_mut(n);
        let (b_hi, b_lo) = b.split_at_mut(n);
        let wide: Vec<f64> = match gamma {
            Some(g) => g.iter().map(|&v| f64::from(v)).collect(),
            None => vec![1.0; n],
        };
        let wmax = wide.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let mut scratch = BackwardScratch::default();
        // Saved statistics: those of a plain f64 evaluation (any values will do: they are
        // used as given).
        let plans: Vec<RowPlan> = (0..rows)
            .map(|r| {
                let row = &x[r * n..(r + 1) * n];
                if !saved {
                    return RowPlan::Recompute(1e-5);
                }
                let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
                let c = if CENTER { mean } else { 0.0 };
                let var = row.iter().map(|&v| (f64::from(v) - c).powi(2)).sum::<f64>() / n as f64;
                RowPlan::Saved {
                    mean: f64::from(c as f32),
                    rstd: f64::from((1.0 / (var + 1e-5).sqrt()) as f32),
                    eps: 1e-5,
                }
            })
            .collect();
        isa.run(BackwardBlock::<f32, f32, _, CENTER> {
            x,
            dy,
            dx: &mut dx,
            n,
            plan: |r| plans[r],
            gamma,
            wide_gamma: &wide,
            wmax,
            sums: BlockSums {
                gamma: ColumnParts { hi: g_hi, lo: g_lo },
                beta: ColumnParts { hi: b_hi, lo: b_lo },
                has_gamma: params.0,
                has_beta: params.1,
                dy_bound: &mut bound[0],
            },
            scratch: &mut scratch,
        });
        let mut out: Vec<u64> = dx.iter().map(|v| u64::from(v.to_bits())).collect();
        out.extend(part.iter().map(|v| v.to_bits()));
        out
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        for n in [1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 100, 768, 1029] {
            let (x, dy) = mixed_rows(n);
            let gamma: Vec<f32> = values(n, 99).iter().map(|v| v + 2.5).collect();
            for (gamma, params) in [(None, (false, false)), (Some(&gamma[..]), (true, true))] {
                for saved in [false, true] {
                    let base = run_block::<true>(Isa::Baseline, (&x, &dy), n, gamma, params, saved);
                    let rms = run_block::<false>(Isa::Baseline, (&x, &dy), n, gamma, params, saved);
                    for isa in Isa::available() {
                        let got = run_block::<true>(isa, (&x, &dy), n, gamma, params, saved);
                        assert!(got == base, "{isa:?}, n = {n}, {params:?}, saved {saved}");
                        let got = run_block::<false>(isa, (&x, &dy), n, gamma, params, saved);
                        assert!(
                            got == rms,
                            "{isa:?} RMS, n = {n}, {params:?}, saved {saved}"
                        );
                    }
                }
            }
        }
    }

    /// The constants of a LayerNorm row (statistics recomputed, eps 1e-5, no gamma), and
    /// whether every element passes its test.
    fn path(x: &[f32], dy: &[f32]) -> Option<(Consts, bool)> {
        let n = x.len();
        let w = vec![1.0f64; n];
        let k = row_consts::<Baseline, true>(x, dy, (&w, 1.0), RowPlan::Recompute(1e-5))?;
        let mut dx = vec![0.0f32; n];
        let (mut g, mut b) = (vec![0.0; n], vec![0.0; n]);
        let mut ok = [true];
        write_rows::<f32, f32, true, true, COLUMNS>(
            (x, dy, &w),
            &mut dx,
            n,
            0..1,
            &[Some(k)],
            &mut ok,
            &mut g,
            &mut b,
        );
        Some((k, ok[0]))
    }

    #[test]
    fn each_kind_of_row_takes_its_path() {
        for n in [2, 7, 8, 9, 100, 768] {
            let x = values(n, 1);
            let dy = values(n, 2);
            // Random rows: the fast path, every element passing at row level.
            let (k, ok) = path(&x, &dy).expect("row-level test passes");
            assert!(k.all && ok, "n = {n}");
            // dy = x: cancellation, but small enough terms: still fast.
            assert!(path(&x, &x).is_some_and(|(_, ok)| ok), "n = {n}");
            // dy = 1e6 x: dx is ~ 1e6 * 1e-5 xhat while its terms are ~ 1e6 xhat; the
            // per-element test fails and the row goes to the exact path.
            let big: Vec<f32> = x.iter().map(|v| v * 1e6).collect();
            let (k, ok) = path(&x, &big).expect("row-level test passes");
            assert!(!k.all && !ok, "n = {n}");
            // An offset of 1e8: the rounding of the mean shifts xhat by more than TOL / 4.
            let far: Vec<f32> = x.iter().map(|v| v + 1e8).collect();
            assert!(path(&far, &dy).is_none(), "n = {n}");
            // An offset of 1e4 is fine.
            let near: Vec<f32> = x.iter().map(|v| v + 1e4).collect();
            assert!(path(&near, &dy).is_some_and(|(_, ok)| ok), "n = {n}");
            // NaN and infinity anywhere, and constant rows with eps = 0.
            let mut nan = x.clone();
            nan[n - 1] = f32::NAN;
            assert!(path(&nan, &dy).is_none());
            let mut inf = dy.clone();
            inf[0] = f32::INFINITY;
            assert!(path(&x, &inf).is_none());
            let w = vec![1.0f64; n];
            let flat = vec![3.0f32; n];
            let plan = RowPlan::Recompute(0.0);
            assert!(row_consts::<Baseline, true>(&flat, &dy, (&w, 1.0), plan).is_none());
        }
        // RMSNorm rows of one element have their own closed form.
        let plan = RowPlan::Recompute(1e-5);
        let one = (&[1.0f64][..], 1.0);
        assert!(row_consts::<Baseline, false>(&[2.0], &[1.0], one, plan).is_none());
        let two = (&[1.0f64; 2][..], 1.0);
        assert!(row_consts::<Baseline, false>(&[2.0, 1.0], &[1.0, 3.0], two, plan).is_some());
    }

    #[test]
    fn the_tolerance_is_two_to_the_minus_thirty() {
        assert_eq!(TOL, 2f64.powi(-30));
        assert_eq!(1 << TREE, LANES);
    }
}
