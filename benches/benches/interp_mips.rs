//! Interpreter and JIT throughput in guest instructions per second on the CPU-bound `bench_int` ROM
//! (long mode, ~24 M instructions). Criterion's "thrpt" line is in instructions/s (elements = retired
//! instructions).
//!
//! Run: `cargo bench -p ferrite-benches --bench interp_mips`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn interp_mips(c: &mut Criterion) {
    let (_, icount) = ferrite_benches::run_rom("bench_int");
    let mut g = c.benchmark_group("interp");
    g.throughput(Throughput::Elements(icount));
    g.sample_size(10);
    g.bench_function("bench_int", |b| {
        b.iter(|| {
            let (out, n) = ferrite_benches::run_rom("bench_int");
            assert_eq!(out, machine::RunOutcome::Exited(1));
            n
        })
    });
    g.finish();
    let mut g = c.benchmark_group("jit");
    g.throughput(Throughput::Elements(icount));
    g.sample_size(10);
    g.bench_function("bench_int", |b| {
        b.iter(|| {
            let (out, n) = ferrite_benches::run_rom_on("bench_int", machine::Accel::Jit);
            assert_eq!(out, machine::RunOutcome::Exited(1));
            n
        })
    });
    g.finish();
}

criterion_group!(benches, interp_mips);
criterion_main!(benches);
