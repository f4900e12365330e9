//! LayerNorm throughput as a fraction of memory-copy bandwidth, measured in one run.
//!
//! ```text
//! cargo run --release --example bandwidth                 # full table, ~2-4 minutes
//! cargo run --release --example bandwidth -- --quick      # fewer shapes and repetitions, < 1 minute
//! cargo run --release --features rayon --example bandwidth -- --threads 2  # two threads
//! cargo run --release --example bandwidth -- --backward   # backward passes only, more shapes
//! ```
//!
//! `--backward` (combinable with `--quick` and `--threads`) measures only the backward passes
//! (`LayerNorm::backward`, `backward_with_stats`, and the same two of `RmsNorm`, all with gamma;
//! LayerNorm also with beta) on the shapes of [`BACKWARD_ONLY`], and prints the time per call
//! next to each ratio.
//!
//! # What it measures
//!
//! LayerNorm is memory-bound: its physical floor is one read of `x` and one write of `y`, which
//! is exactly what copying the array costs. So every operation is timed next to the copy that
//! moves the same bytes into the same kind of destination, and the two are interleaved in the
//! same run (round after round: baseline, operations, baseline, operations, ...), so that both
//! see the same machine state. Each timing repeats a call enough times to last about 100 ms
//! (50 ms with `--quick`; a single call that takes longer is timed alone), after one untimed warm-up call; the best of K timings (K = 7, or 3
//! with `--quick`) is kept, for the operation and for its baseline alike.
//!
//! * `GB/s` is (bytes read + bytes written) / time per call, counting each array once:
//!   `2 * len * size_of::<F>()` for forward, `3 * len * size_of::<F>()` for backward (`x` and
//!   `dy` read, `dx` written; the gamma/beta gradients are negligible).
//! * `copy GB/s` is the same byte count over the time of the matching baseline:
//!   * `forward`, `forward_noaffine` (fresh output) — `x.to_owned()`, a copy into a newly
//!     allocated array (so page faults and allocation are in both);
//!   * `forward_into` — `out.assign(&x)` into an existing standard-layout array;
//!   * `forward_inplace` — `assign` into an existing array with the layout of `x`;
//!   * `backward`, `backward_with_stats` — `&x + &dy` into a fresh array (three arrays' traffic).
//! * `ratio` = `GB/s / copy GB/s` = baseline time / operation time. 1.0 means the operation runs
//!   at the speed of the memory copy, the floor for a memory-bound kernel; 0.5 means it takes
//!   twice as long as the copy. Above 1.0 is possible (a baseline is a real copy with its own
//!   overheads, and small shapes live in cache where the bus is not the limit).
//!
//! Absolute GB/s swing ~25% from run to run on a shared machine; only ratios from the same run
//! mean something. For the transposed input (`4096x768T`, `x.t()` of a 768x4096 array) the
//! fresh-copy baseline keeps the column-major layout (a plain memory copy, the true floor), while
//! `forward` writes a standard-layout output.
//!
//! Fresh outputs of 32 MB or more are typically mapped fresh from the OS on every call (glibc's
//! `malloc` never reuses such blocks), so their page faults are part of both `forward` and
//! `x.to_owned()`: expect the fresh-copy GB/s to drop sharply above that size. Smaller shapes may
//! sit in the last-level cache, in which case the "bus" of that row is the cache.
//!
//! # Threads
//!
//! By default everything runs on one thread: the operations (with the `rayon` feature, inside a
//! one-thread pool, so the crate does not go parallel) and the baselines above.
//!
//! `--threads N` (N > 1) needs the `rayon` feature. It builds a rayon pool of N threads and runs
//! every measurement inside `pool.install`: the operations (which go parallel from
//! `PARALLEL_MIN_ELEMENTS` elements, sequential below), and baselines doing the same copies
//! with ndarray's parallel `Zip` on the same pool, so a ratio still compares like with like:
//!
//! * fresh copy — `Array::uninit` with the layout of `x`, filled by `Zip::par_for_each`;
//! * copy into an existing array — `Zip::from(&mut out).and(&x).par_for_each`;
//! * backward — `par_azip!` of `x + dy` into an `Array::uninit`.
//!
//! Without the feature, `--threads N` with N > 1 is refused (exit status 2) rather than
//! silently measured on one thread. `--threads 1` is the default.
//!
//! `rms_norm*` rows have the forward baselines. `residual_*` rows read `x` and `r` and write `h`
//! and `y` (`4 * len * size_of::<F>()` bytes). The allocating forms, `*_add_then_norm` (`&x + &r`,
//! then `forward`) and `*_fused` (`forward_residual`), have the baseline `&x + &r` plus
//! `x.to_owned()` (the same four arrays' traffic into fresh arrays); the in-place forms,
//! `*_add_then_norm_inplace` (`stream += &x`, then `forward_into(&stream, &mut x)`) and
//! `*_fused_inplace` (`forward_residual_inplace`), have two copies into existing arrays. The
//! ratio of an `add_then_norm` time to its `fused` time is the gain of fusing.

use ndarray::Array2;
use ndarray_layernorm::{Float, LayerNorm};
use ndarray_rand::rand_distr::{Distribution, StandardNormal};
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

#[path = "../benches/common/shapes.rs"]
mod shapes;
use shapes::{
    affine, rms_affine, shape, Shape, BACKWARD_SHAPES, FORWARD_SHAPES, RESIDUAL_SHAPES, RMS_SHAPES,
    TRANSPOSED,
};

/// The shapes of the criterion benchmark (`benches/layer_norm.rs`).
const FULL_SHAPES: &[Shape] = FORWARD_SHAPES;

/// `--quick`: one of each kind (small, medium, long rows, short rows, transposed).
const QUICK_SHAPES: &[Shape] = &[
    shape(32, 768),
    shape(4096, 768),
    shape(65536, 64),
    shape(256, 65536),
    shape(1_000_000, 5),
    TRANSPOSED,
];

const FULL_BACKWARD: &[Shape] = BACKWARD_SHAPES;
const QUICK_RMS: &[Shape] = &[shape(32, 768), shape(4096, 768)];
const QUICK_RESIDUAL: &[Shape] = &[shape(4096, 768)];
const QUICK_BACKWARD: &[Shape] = &[shape(4096, 768)];
/// `--backward`: the backward shapes of the speed issue (small, medium, short rows, long rows).
const BACKWARD_ONLY: &[Shape] = &[
    shape(32, 768),
    shape(4096, 768),
    shape(65536, 64),
    shape(8192, 1024),
];

/// How long and how often to time.
#[derive(Clone, Copy)]
struct Config {
    /// Target duration of one timing (a batch of calls).
    target: Duration,
    /// Timings per case; the best is kept.
    reps: usize,
}

/// One timed operation: a closure doing a single call.
struct Case<'a> {
    call: Box<dyn FnMut() + 'a>,
    iters: u64,
    /// Best seconds per call so far.
    best: f64,
}

impl<'a> Case<'a> {
    fn new(call: impl FnMut() + 'a) -> Self {
        Case {
            call: Box::new(call),
            iters: 1,
            best: f64::INFINITY,
        }
    }

    /// Seconds for `n` calls.
    fn run(&mut self, n: u64) -> f64 {
        let start = Instant::now();
        for _ in 0..n {
            (self.call)();
        }
        start.elapsed().as_secs_f64()
    }

    /// One warm-up call, then the number of calls that lasts about `target`.
    fn calibrate(&mut self, target: f64) {
        (self.call)();
        let mut n = 1u64;
        loop {
            let t = self.run(n);
            if t >= target / 8.0 || n >= 1 << 40 {
                self.iters = ((target / t.max(1e-9)) * n as f64).round().max(1.0) as u64;
                return;
            }
            n *= 8;
        }
    }
}

/// Times all cases interleaved: calibrate each, then `reps` rounds of one timing per case.
fn measure(cases: &mut [Case<'_>], cfg: Config) {
    let target = cfg.target.as_secs_f64();
    for case in cases.iter_mut() {
        case.calibrate(target);
    }
    for _ in 0..cfg.reps {
        for case in cases.iter_mut() {
            let n = case.iters;
            let per_call = case.run(n) / n as f64;
            case.best = case.best.min(per_call);
        }
    }
}

/// One line of the table.
struct Row {
    op: &'static str,
    ty: &'static str,
    shape: String,
    bytes: usize,
    /// Seconds per call of the operation and of its baseline.
    op_time: f64,
    copy_time: f64,
}

impl Row {
    fn print(&self) {
        self.print_with(false)
    }

    /// The line, with the time per call of the operation and of its baseline if `times`.
    fn print_with(&self, times: bool) {
        let gbs = self.bytes as f64 / self.op_time / 1e9;
        let copy = self.bytes as f64 / self.copy_time / 1e9;
        let extra = if times {
            format!(" {:.1} | {:.1} |", self.op_time * 1e6, self.copy_time * 1e6)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2} |{extra}",
            self.op,
            self.ty,
            self.shape,
            gbs,
            copy,
            gbs / copy
        );
        let _ = std::io::stdout().flush();
    }
}

/// Forward, forward_noaffine, forward_into and forward_inplace of one shape, with their
/// baselines, interleaved.
fn forward_rows<F: Float>(s: Shape, ty: &'static str, cfg: Config, th: &Threads) -> Vec<Row>
where
    StandardNormal: Distribution<F>,
{
    let x = s.input::<F>(1);
    let ln = affine::<F>(s.cols);
    let plain = LayerNorm::<F>::default();
    let mut copy_out = Array2::<F>::zeros((s.rows, s.cols));
    let mut ln_out = Array2::<F>::zeros((s.rows, s.cols));
    // `clone` keeps the layout of `x`: the in-place buffer and its baseline's destination.
    let mut y = x.clone();
    let mut same_out = if s.transposed {
        x.clone()
    } else {
        Array2::zeros((0, 0))
    };
    let x = &x;

    // One round: the baselines, then the operations, then (transposed input only) the
    // same-layout baseline of `forward_inplace`.
    let mut cases = vec![
        Case::new(|| drop(black_box(th.copy_fresh(black_box(x))))),
        Case::new(|| {
            th.copy_into(&mut copy_out, black_box(x));
            black_box(&mut copy_out);
        }),
        Case::new(|| drop(black_box(ln.forward(black_box(x)).expect("valid input")))),
        Case::new(|| drop(black_box(plain.forward(black_box(x)).expect("valid input")))),
        Case::new(|| {
            ln.forward_into(black_box(x), &mut ln_out)
                .expect("valid input");
            black_box(&mut ln_out);
        }),
        // Normalizing already-normalized rows costs the same as normalizing fresh ones.
        Case::new(|| {
            ln.forward_inplace(black_box(&mut y)).expect("valid input");
        }),
    ];
    if s.transposed {
        // For a standard-layout `x` this is the same copy as `copy_into`: timed only here.
        cases.push(Case::new(|| {
            th.copy_into(&mut same_out, black_box(x));
            black_box(&mut same_out);
        }));
    }
    measure(&mut cases, cfg);
    let t: Vec<f64> = cases.iter().map(|c| c.best).collect();
    let (fresh, into) = (t[0], t[1]);
    let same = t.get(6).copied().unwrap_or(into);

    let bytes = 2 * s.len() * std::mem::size_of::<F>();
    let row = |op, op_time, copy_time| Row {
        op,
        ty,
        shape: s.name(),
        bytes,
        op_time,
        copy_time,
    };
    vec![
        row("forward", t[2], fresh),
        row("forward_noaffine", t[3], fresh),
        row("forward_into", t[4], into),
        row("forward_inplace", t[5], same),
    ]
}

/// Backward (statistics recomputed, and saved) of one shape against the three-array baseline,
/// and (`with_rms`) the same two for RMSNorm.
fn backward_rows<F: Float>(
    s: Shape,
    ty: &'static str,
    cfg: Config,
    th: &Threads,
    with_rms: bool,
) -> Vec<Row>
where
    StandardNormal: Distribution<F>,
{
    let x = s.input::<F>(1);
    let dy = s.input::<F>(4);
    let ln = affine::<F>(s.cols);
    let rms = rms_affine::<F>(s.cols);
    let (_, stats) = ln.forward_with_stats(&x).expect("valid input");
    let (_, rstd) = rms.forward_with_stats(&x).expect("valid input");
    let (x, dy, stats, rstd) = (&x, &dy, &stats, &rstd);

    let mut cases = vec![
        Case::new(|| drop(black_box(th.add_fresh(black_box(x), black_box(dy))))),
        Case::new(|| drop(black_box(ln.backward(black_box(x), dy).expect("valid")))),
        Case::new(|| {
            let g = ln.backward_with_stats(black_box(x), stats, dy);
            drop(black_box(g.expect("valid")));
        }),
    ];
    if with_rms {
        cases.push(Case::new(|| {
            drop(black_box(rms.backward(black_box(x), dy).expect("valid")))
        }));
        cases.push(Case::new(|| {
            let g = rms.backward_with_stats(black_box(x), rstd, dy);
            drop(black_box(g.expect("valid")));
        }));
    }
    measure(&mut cases, cfg);

    let bytes = 3 * s.len() * std::mem::size_of::<F>();
    let row = |op, op_time| Row {
        op,
        ty,
        shape: s.name(),
        bytes,
        op_time,
        copy_time: cases[0].best,
    };
    let mut rows = vec![
        row("backward", cases[1].best),
        row("backward_with_stats", cases[2].best),
    ];
    if with_rms {
        rows.push(row("rms_backward", cases[3].best));
        rows.push(row("rms_backward_with_stats", cases[4].best));
    }
    rows
}

/// RmsNorm (with gamma) of one shape: fresh output, into an existing array and in place, with
/// the forward baselines.
fn rms_rows<F: Float>(s: Shape, ty: &'static str, cfg: Config, th: &Threads) -> Vec<Row>
where
    StandardNormal: Distribution<F>,
{
    let x = s.input::<F>(1);
    let rms = rms_affine::<F>(s.cols);
    let mut copy_out = Array2::<F>::zeros((s.rows, s.cols));
    let mut out = Array2::<F>::zeros((s.rows, s.cols));
    let mut y = x.clone();
    let x = &x;
    let mut cases = vec![
        Case::new(|| drop(black_box(th.copy_fresh(black_box(x))))),
        Case::new(|| {
            th.copy_into(&mut copy_out, black_box(x));
            black_box(&mut copy_out);
        }),
        Case::new(|| drop(black_box(rms.forward(black_box(x)).expect("valid input")))),
        Case::new(|| {
            rms.forward_into(black_box(x), &mut out)
                .expect("valid input");
            black_box(&mut out);
        }),
        Case::new(|| {
            rms.forward_inplace(black_box(&mut y)).expect("valid input");
        }),
    ];
    measure(&mut cases, cfg);
    let t: Vec<f64> = cases.iter().map(|c| c.best).collect();
    let bytes = 2 * s.len() * std::mem::size_of::<F>();
    let row = |op, op_time, copy_time| Row {
        op,
        ty,
        shape: s.name(),
        bytes,
        op_time,
        copy_time,
    };
    vec![
        row("rms_norm", t[2], t[0]),
        row("rms_norm_into", t[3], t[1]),
        row("rms_norm_inplace", t[4], t[1]),
    ]
}

/// The residual add & norm of one shape, fused (`forward_residual*`) and not (add, then
/// normalize), for both layers. Allocating forms against copying the same four arrays' traffic
/// into fresh arrays (`&x + &r` and `x.to_owned()`); in-place forms (`stream += &x`, then
/// `forward_into(&stream, &mut x)`, against `forward_residual_inplace(&mut x, &mut stream)`)
/// against two copies into existing arrays.
fn residual_rows<F: Float>(s: Shape, ty: &'static str, cfg: Config, th: &Threads) -> Vec<Row>
where
    StandardNormal: Distribution<F>,
{
    let x = s.input::<F>(1);
    let r = s.input::<F>(2);
    let ln = affine::<F>(s.cols);
    let rms = rms_affine::<F>(s.cols);
    let (mut out_a, mut out_b) = (x.clone(), x.clone());
    // Each in-place case owns its stream and input; the stream grows by about one unit per
    // call, which changes no timing.
    let mut owned = [(); 4].map(|()| (x.clone(), r.clone()));
    let [ln_un, ln_fu, rms_un, rms_fu] = &mut owned;
    let (x, r) = (&x, &r);
    let mut cases = vec![
        Case::new(|| {
            drop(black_box(th.add_fresh(black_box(x), black_box(r))));
            drop(black_box(th.copy_fresh(black_box(x))));
        }),
        Case::new(|| {
            let h = th.add_fresh(black_box(x), black_box(r));
            drop(black_box(ln.forward(&h).expect("valid input")));
        }),
        Case::new(|| {
            drop(black_box(
                ln.forward_residual(black_box(x), r).expect("valid"),
            ))
        }),
        Case::new(|| {
            let h = th.add_fresh(black_box(x), black_box(r));
            drop(black_box(rms.forward(&h).expect("valid input")));
        }),
        Case::new(|| {
            drop(black_box(
                rms.forward_residual(black_box(x), r).expect("valid"),
            ))
        }),
        Case::new(|| {
            th.copy_into(&mut out_a, black_box(x));
            th.copy_into(&mut out_b, black_box(r));
            black_box((&mut out_a, &mut out_b));
        }),
        Case::new(|| {
            let (x, stream) = (&mut ln_un.0, &mut ln_un.1);
            *stream += black_box(&*x);
            ln.forward_into(stream, x).expect("valid input");
        }),
        Case::new(|| {
            let (x, stream) = (&mut ln_fu.0, &mut ln_fu.1);
            ln.forward_residual_inplace(black_box(x), stream)
                .expect("valid input");
        }),
        Case::new(|| {
            let (x, stream) = (&mut rms_un.0, &mut rms_un.1);
            *stream += black_box(&*x);
            rms.forward_into(stream, x).expect("valid input");
        }),
        Case::new(|| {
            let (x, stream) = (&mut rms_fu.0, &mut rms_fu.1);
            rms.forward_residual_inplace(black_box(x), stream)
                .expect("valid input");
        }),
    ];
    measure(&mut cases, cfg);
    let t: Vec<f64> = cases.iter().map(|c| c.best).collect();
    let bytes = 4 * s.len() * std::mem::size_of::<F>();
    let row = |op, op_time, copy_time| Row {
        op,
        ty,
        shape: s.name(),
        bytes,
        op_time,
        copy_time,
    };
    vec![
        row("residual_add_then_norm", t[1], t[0]),
        row("residual_fused", t[2], t[0]),
        row("rms_residual_add_then_norm", t[3], t[0]),
        row("rms_residual_fused", t[4], t[0]),
        row("residual_add_then_norm_inplace", t[6], t[5]),
        row("residual_fused_inplace", t[7], t[5]),
        row("rms_residual_add_then_norm_inplace", t[8], t[5]),
        row("rms_residual_fused_inplace", t[9], t[5]),
    ]
}

/// The single-thread baselines (the default, and `--threads 1`).
fn copy_fresh_1<F: Float>(x: &Array2<F>) -> Array2<F> {
    x.to_owned()
}

fn copy_into_1<F: Float>(out: &mut Array2<F>, x: &Array2<F>) {
    out.assign(x);
}

fn add_fresh_1<F: Float>(x: &Array2<F>, dy: &Array2<F>) -> Array2<F> {
    x + dy
}

struct Args {
    quick: bool,
    backward: bool,
    threads: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        backward: false,
        threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--backward" => args.backward = true,
            "--threads" => {
                let n = it.next().ok_or("--threads needs a number")?;
                args.threads = Some(parse_threads(&n)?);
            }
            s if s.starts_with("--threads=") => {
                args.threads = Some(parse_threads(&s["--threads=".len()..])?);
            }
            "-h" | "--help" => {
                println!(
                    "usage: cargo run --release [--features rayon] --example bandwidth \
                     [-- --threads N] [--quick] [--backward]\n(--threads N with N > 1 needs --features rayon)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn parse_threads(n: &str) -> Result<usize, String> {
    match n.parse() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("bad thread count {n:?} (expected an integer >= 1)")),
    }
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bandwidth: {e}");
        std::process::exit(2);
    });
    let start = Instant::now();
    let (rms_shapes, residual_shapes) = if args.quick {
        (QUICK_RMS, QUICK_RESIDUAL)
    } else {
        (RMS_SHAPES, RESIDUAL_SHAPES)
    };
    let (cfg, shapes, backward_shapes) = if args.quick {
        let cfg = Config {
            target: Duration::from_millis(50),
            reps: 3,
        };
        (cfg, QUICK_SHAPES, QUICK_BACKWARD)
    } else {
        let cfg = Config {
            target: Duration::from_millis(100),
            reps: 7,
        };
        (cfg, FULL_SHAPES, FULL_BACKWARD)
    };

    let th = Threads::new(args.threads.unwrap_or(1)).unwrap_or_else(|e| {
        eprintln!("bandwidth: {e}");
        std::process::exit(2);
    });
    let threads = match th.n() {
        1 => "single thread".to_string(),
        n => format!("{n} threads (rayon pool; baselines parallel on the same pool)"),
    };
    println!(
        "LayerNorm bandwidth{}: {threads}, best of {} timings of ~{} ms each, \
         operation and baseline interleaved in this run.\n",
        if args.quick { " (--quick)" } else { "" },
        cfg.reps,
        cfg.target.as_millis()
    );
    if args.backward {
        println!("| op | type | shape | GB/s | copy GB/s | ratio | µs | copy µs |");
        println!("|---|---|---|---:|---:|---:|---:|---:|");
        for &s in BACKWARD_ONLY {
            for row in th.install(|| backward_rows::<f32>(s, "f32", cfg, &th, true)) {
                row.print_with(true);
            }
            for row in th.install(|| backward_rows::<f64>(s, "f64", cfg, &th, true)) {
                row.print_with(true);
            }
        }
        eprintln!("bandwidth: done in {:.0} s", start.elapsed().as_secs_f64());
        return;
    }
    println!("| op | type | shape | GB/s | copy GB/s | ratio |");
    println!("|---|---|---|---:|---:|---:|");

    let mut small_forward = None;
    for &s in shapes {
        for row in th.install(|| forward_rows::<f32>(s, "f32", cfg, &th)) {
            row.print();
            if row.op == "forward" && s.rows == 32 && s.cols == 768 && !s.transposed {
                small_forward = Some((row.op_time, row.copy_time));
            }
        }
        for row in th.install(|| forward_rows::<f64>(s, "f64", cfg, &th)) {
            row.print();
        }
    }
    for &s in rms_shapes {
        for row in th.install(|| rms_rows::<f32>(s, "f32", cfg, &th)) {
            row.print();
        }
        for row in th.install(|| rms_rows::<f64>(s, "f64", cfg, &th)) {
            row.print();
        }
    }
    for &s in residual_shapes {
        for row in th.install(|| residual_rows::<f32>(s, "f32", cfg, &th)) {
            row.print();
        }
        for row in th.install(|| residual_rows::<f64>(s, "f64", cfg, &th)) {
            row.print();
        }
    }
    for &s in backward_shapes {
        for row in th.install(|| backward_rows::<f32>(s, "f32", cfg, &th, false)) {
            row.print();
        }
        for row in th.install(|| backward_rows::<f64>(s, "f64", cfg, &th, false)) {
            row.print();
        }
    }

    println!();
    println!(
        "GB/s = (bytes read + written) / time per call. Baselines: `forward`, `forward_noaffine` \
         vs `x.to_owned()`; `forward_into` vs `out.assign(&x)`; `forward_inplace` vs `assign` \
         into an array of the layout of `x`; `rms_norm*` likewise; `residual_*` vs `&x + &r` plus \
         `x.to_owned()` (in place: two copies into existing arrays); `backward*` vs `&x + &dy` (fresh). \
         ratio = GB/s / copy GB/s (1.0 = copy speed). `4096x768T` = `x.t()` of a 768x4096 array."
    );
    if th.n() > 1 {
        println!(
            "With {} threads each baseline is the same copy done in parallel on the same pool: \
             `Zip::par_for_each` into an `Array::uninit` with the layout of `x` (fresh) or into \
             the existing array (into, inplace); `par_azip!` of `x + dy` (backward).",
            th.n()
        );
    }
    if let Some((op, copy)) = small_forward {
        println!();
        println!(
            "32x768 f32 forward: {:.2} µs per call (x.to_owned(): {:.2} µs).",
            op * 1e6,
            copy * 1e6
        );
    }
    eprintln!("bandwidth: done in {:.0} s", start.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// Threads: the only place with `cfg(feature = "rayon")`. Both versions of `Threads` have the same
// API; with one thread, both run the single-thread baselines above.
// ---------------------------------------------------------------------------------------------

use threads::Threads;

/// `--threads N` on a rayon pool of N threads.
#[cfg(feature = "rayon")]
mod threads {
    use super::{add_fresh_1, copy_fresh_1, copy_into_1};
    use ndarray::{par_azip, Array, Array2, ShapeBuilder, Zip};
    use ndarray_layernorm::Float;
    use std::mem::MaybeUninit;

    pub struct Threads {
        n: usize,
        pool: rayon::ThreadPool,
    }

    impl Threads {
        pub fn new(n: usize) -> Result<Self, String> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| format!("cannot build a pool of {n} threads: {e}"))?;
            Ok(Threads { n, pool })
        }

        pub fn n(&self) -> usize {
            self.n
        }

        /// Runs `f` on the pool: the crate and the parallel baselines use its `n` threads.
        pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
            self.pool.install(f)
        }

        /// `x.to_owned()`: a fresh array with the layout of `x` (column-major stays column-major).
        pub fn copy_fresh<F: Float>(&self, x: &Array2<F>) -> Array2<F> {
            if self.n == 1 {
                return copy_fresh_1(x);
            }
            let fortran = !x.is_standard_layout() && x.t().is_standard_layout();
            let mut out = Array::uninit(x.raw_dim().set_f(fortran));
            Zip::from(&mut out)
                .and(x)
                .par_for_each(|o, &v| *o = MaybeUninit::new(v));
            // SAFETY: the `Zip` above wrote every element.
            unsafe { out.assume_init() }
        }

        /// `out.assign(x)`.
        pub fn copy_into<F: Float>(&self, out: &mut Array2<F>, x: &Array2<F>) {
            if self.n == 1 {
                return copy_into_1(out, x);
            }
            Zip::from(out).and(x).par_for_each(|o, &v| *o = v);
        }

        /// `x + dy` into a fresh array.
        pub fn add_fresh<F: Float>(&self, x: &Array2<F>, dy: &Array2<F>) -> Array2<F> {
            if self.n == 1 {
                return add_fresh_1(x, dy);
            }
            let mut out = Array::uninit(x.raw_dim());
            par_azip!((o in &mut out, &a in x, &b in dy) *o = MaybeUninit::new(a + b));
            // SAFETY: `par_azip!` wrote every element.
            unsafe { out.assume_init() }
        }
    }
}

/// Without the `rayon` feature: one thread only.
#[cfg(not(feature = "rayon"))]
mod threads {
    use super::{add_fresh_1, copy_fresh_1, copy_into_1};
    use ndarray::Array2;
    use ndarray_layernorm::Float;

    pub struct Threads;

    impl Threads {
        pub fn new(n: usize) -> Result<Self, String> {
            if n == 1 {
                Ok(Threads)
            } else {
                Err(format!(
                    "--threads {n}: this build has no `rayon` feature, so the crate runs on one \
                     thread only; rerun with `--features rayon` (or drop --threads)"
                ))
            }
        }

        pub fn n(&self) -> usize {
            1
        }

        pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
            f()
        }

        pub fn copy_fresh<F: Float>(&self, x: &Array2<F>) -> Array2<F> {
            copy_fresh_1(x)
        }

        pub fn copy_into<F: Float>(&self, out: &mut Array2<F>, x: &Array2<F>) {
            copy_into_1(out, x)
        }

        pub fn add_fresh<F: Float>(&self, x: &Array2<F>, dy: &Array2<F>) -> Array2<F> {
            add_fresh_1(x, dy)
        }
    }
}
