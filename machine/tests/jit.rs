//! Every test ROM under the JIT engine must do exactly what it does under the interpreter: the same
//! outcome, debug-console output, interrupt trace (vector and instruction count of each delivery),
//! final retired-instruction count and registers. Run with the JIT translating every block on its first
//! entry (threshold 1) and after a few entries (threshold 3, which mixes interpreted and translated
//! runs of the same block).

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
    gpr: [u64; 16],
    rip: u64,
    rflags: u64,
}

fn run(image: &[u8], accel: Accel, threshold: u32) -> (Run, u64) {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(32 << 20, image.to_vec());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.accel = accel;
    cfg.jit_threshold = threshold;
    let mut m = Machine::new(cfg).expect("machine");
    let irqs = Rc::new(RefCell::new(Vec::new()));
    let i2 = irqs.clone();
    m.board.irq_trace = Some(Box::new(move |v, icount| i2.borrow_mut().push((v, icount))));
    let outcome = m.run(Some(200_000_000));
    let output = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let irqs = irqs.borrow().clone();
    let r = Run {
        outcome,
        output,
        irqs,
        icount: m.cpu.icount,
        gpr: m.cpu.gpr,
        rip: m.cpu.rip,
        rflags: m.cpu.rflags,
    };
    (r, m.interp().expect("an interpreter engine").compiled_blocks())
}

#[test]
fn every_rom_runs_the_same_under_jit_and_interp() {
    let mut failures = Vec::new();
    let mut compiled_total = 0;
    for (name, image) in test_roms::ROMS {
        let (interp, none) = run(image, Accel::Interp, 1);
        assert_eq!(none, 0, "{name}: the interpreter alone translates nothing");
        for threshold in [1, 3] {
            let (jit, compiled) = run(image, Accel::Jit, threshold);
            compiled_total += compiled;
            println!("{name:<16} threshold {threshold}: {compiled:>5} blocks translated, {:?}", jit.outcome);
            if jit != interp {
                failures
                    .push(format!("{name} (threshold {threshold}):\n  interp {interp:?}\n  jit    {jit:?}"));
            } else if compiled == 0 {
                failures.push(format!("{name} (threshold {threshold}): no block was translated"));
            }
        }
    }
    assert!(compiled_total > 0);
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}
