//! Measures what a series of in-memory checkpoints costs, whole-RAM copies ([`Machine::save_state`],
//! what reverse execution and lockstep kept before) against sparse ones
//! ([`machine::snapfile::MemSnapshot`]: zero pages skipped, unchanged pages shared with the previous
//! checkpoint), on a Linux boot under the JIT (docs/PERF.md).
//!
//! `cargo run --release -p machine --example checkpoint_cost -- KERNEL INITRD [MEMORY_MIB [INTERVAL [COUNT]]]`

use machine::snapfile::MemSnapshot;
use machine::{Accel, LinuxBoot, Machine, MachineConfig};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kernel, initrd, rest @ ..] = args.as_slice() else {
        eprintln!("usage: checkpoint_cost KERNEL INITRD [MEMORY_MIB [INTERVAL [COUNT]]]");
        std::process::exit(2);
    };
    let num = |i: usize, d: u64| rest.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (mib, interval, count) = (num(0, 256), num(1, 50_000_000), num(2, 20));
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut cfg = MachineConfig::new(mib << 20, Vec::new());
    cfg.accel = Accel::Jit;
    cfg.com1 = Box::new(|_| {});
    cfg.linux = Some(LinuxBoot {
        kernel: read(kernel),
        initrd: Some(read(initrd)),
        cmdline: "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1 i8042.noaux tsc=reliable".into(),
        ..Default::default()
    });
    let mut m = Machine::new(cfg).expect("machine");
    // Whole copies are counted, not kept (the series would take count x MiB of host memory).
    let (mut last_full, mut full_bytes, mut sparse) = (Vec::new(), 0usize, Vec::<MemSnapshot>::new());
    let (mut t_full, mut t_sparse) = (0f64, 0f64);
    println!("checkpoint  icount       whole-RAM ms  sparse ms  pages held  new pages");
    for i in 0..count {
        m.run(Some((i + 1) * interval));
        drop(std::mem::take(&mut last_full));
        let t = Instant::now();
        last_full = m.save_state();
        full_bytes += last_full.len();
        let a = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let s = MemSnapshot::take(&m, sparse.last());
        let b = t.elapsed().as_secs_f64() * 1e3;
        let (held, new) = s.page_counts();
        sparse.push(s);
        t_full += a;
        t_sparse += b;
        println!("{i:>10}  {:>11}  {a:>12.1}  {b:>9.1}  {held:>10}  {new:>9}", m.cpu.icount);
    }
    let sparse_bytes: usize = sparse.iter().map(MemSnapshot::bytes).sum();
    println!(
        "{count} checkpoints of {mib} MiB every {interval} instructions: whole-RAM {} MiB, {t_full:.0} ms; sparse {} MiB, {t_sparse:.0} ms",
        full_bytes >> 20,
        sparse_bytes >> 20
    );
    // The last sparse checkpoint restores the state the last whole copy holds.
    let h = m.state_hash();
    m.restore_state(&last_full).expect("restore");
    sparse[sparse.len() - 1].restore(&mut m).expect("restore");
    assert_eq!(m.state_hash(), h);
}
