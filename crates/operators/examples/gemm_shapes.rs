//! Quick single-thread GEMM throughput check: Strata's f32 GEMM vs `matrixmultiply::sgemm` on
//! square and convolution-like shapes. `cargo run --release -p strata-ops --example
//! gemm_shapes [M K N ...]`; prints GFLOP/s (median of 5 timed runs).

use std::time::Instant;
use strata_ops::kernels::gemm;
use strata_ops::kernels::linalg::{MatMut, MatRef};

fn median_gflops(m: usize, k: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let flops = 2.0 * (m * k * n) as f64;
    f();
    let reps = ((2e8 / flops) as usize).clamp(1, 100_000);
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let shapes: Vec<(usize, usize, usize)> = if args.len() >= 3 {
        args.chunks_exact(3).map(|c| (c[0], c[1], c[2])).collect()
    } else {
        vec![
            (1024, 1024, 1024),
            (256, 256, 256),
            (64, 576, 3136),
            (256, 64, 3136),
            (64, 64, 3136),
            (16, 27, 12544),
            (512, 4608, 49),
            (2048, 512, 49),
            (1000, 2048, 1),
            (1, 2048, 1000),
            (1, 64, 64),
            (8, 8, 8),
        ]
    };
    println!("isa: {:?}", gemm::selected_isa());
    println!(
        "{:>18} {:>12} {:>12} {:>7}",
        "M x K x N", "mm GF/s", "strata GF/s", "ratio"
    );
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let mm = median_gflops(m, k, n, || {
            // SAFETY: row-major m x k, k x n and m x n buffers of exactly those sizes.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        });
        let ours = median_gflops(m, k, n, || {
            gemm::gemm(
                1.0,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                0.0,
                MatMut::row_major(&mut c, m, n),
            )
            .expect("shapes agree");
        });
        println!(
            "{:>18} {mm:>12.1} {ours:>12.1} {:>7.2}",
            format!("{m}x{k}x{n}"),
            ours / mm
        );
    }
}
