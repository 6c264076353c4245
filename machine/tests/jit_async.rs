//! When a translation arrives must not change what the guest sees: every test ROM, run under the JIT
//! with translations made on the compile thread after random delays (so that each block runs
//! interpreted for an arbitrary stretch, then translated), and with compilation on the
//! interpreter's thread, does exactly what it does under the interpreter: the same outcome, debug
//! console output, interrupt trace (vector and instruction count of each delivery), retired count
//! and whole-machine state hash. The persistent cache is covered by `jit_cache.rs`.

use machine::{Accel, Machine, MachineConfig, RunOutcome};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

#[derive(Debug, PartialEq, Eq)]
struct Run {
    outcome: RunOutcome,
    output: String,
    irqs: Vec<(u8, u64)>,
    icount: u64,
    hash: u64,
}

fn run(image: &[u8], accel: Accel, threshold: u32, opts: jit::Options) -> (Run, u64) {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(32 << 20, image.to_vec());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.accel = accel;
    cfg.jit_threshold = threshold;
    cfg.jit = opts;
    let mut m = Machine::new(cfg).expect("machine");
    let irqs = Rc::new(RefCell::new(Vec::new()));
    let i2 = irqs.clone();
    m.board.irq_trace = Some(Box::new(move |v, icount| i2.borrow_mut().push((v, icount))));
    let outcome = m.run(Some(200_000_000));
    let output = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let irqs = irqs.borrow().clone();
    let r = Run { outcome, output, irqs, icount: m.cpu.icount, hash: m.state_hash() };
    (r, m.interp().expect("an interpreter engine").compiled_blocks())
}

#[test]
fn every_rom_is_the_same_whenever_translations_arrive() {
    // (What, options, threshold): compilation on the interpreter's thread, on the compile thread as
    // fast as it goes, and after random delays, translating every block on its first entry or after
    // a few interpreted runs.
    let delay =
        |seed, max_us| jit::Options { delay: Some(jit::CompileDelay { seed, max_us }), ..Default::default() };
    let configs: [(&str, jit::Options, u32); 4] = [
        ("main thread", jit::Options { background: false, ..Default::default() }, 1),
        ("compile thread", jit::Options::default(), 1),
        ("delays to 200 us", delay(1, 200), 1),
        ("delays to 3 ms", delay(7, 3000), 3),
    ];
    let mut failures = Vec::new();
    let mut with_irqs = 0;
    for (name, image) in test_roms::ROMS {
        let (interp, _) = run(image, Accel::Interp, 1, jit::Options::default());
        with_irqs += usize::from(!interp.irqs.is_empty());
        for (what, opts, threshold) in &configs {
            let (jit, compiled) = run(image, Accel::Jit, *threshold, opts.clone());
            println!("{name:<16} {what:<16} threshold {threshold}: {compiled:>5} blocks to translate");
            if jit != interp {
                failures.push(format!(
                    "{name} ({what}, threshold {threshold}):\n  interp {interp:?}\n  jit    {jit:?}"
                ));
            }
        }
    }
    assert!(with_irqs >= 3, "only {with_irqs} ROMs take interrupts: the test must cover asynchronous events");
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}
