//! The test ROMs under the KVM engine, compared with the interpreter.
//!
//! Skipped (passing) when /dev/kvm cannot run a guest. Where KVM is emulated (PVM), a ROM that stops
//! on KVM_EXIT_INTERNAL_ERROR hit an instruction the host's emulator refuses: it is reported, not
//! counted as passing. Every other ROM that passes under the interpreter must pass under KVM with the
//! same debug-console output.

use machine::{Accel, Machine, MachineConfig, RunOutcome};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// ROMs where PVM (a software-emulated KVM) raises an exception that hardware does not: measured on a
/// PVM host, with what PVM does. Under emulated KVM a failure of these is reported, not counted.
const PVM_FAULTS: &[(&str, &str)] = &[
    ("lm_paging", "INT 0xF0 from CPL 3 raises #UD instead of entering the DPL-3 gate"),
    ("lm_msr", "RDMSR/WRMSR of x2APIC MSRs outside x2APIC mode and of non-canonical bases raise no #GP"),
    ("lm_syscall", "SYSRET (64-bit) raises #GP"),
    ("pm_escalate", "MOV CR0 enabling legacy 32-bit paging (no PAE) raises #GP"),
    ("pm_paging", "MOV CR0 enabling legacy 32-bit paging (no PAE) raises #GP"),
];

/// ROMs that time devices against the CPU's progress (interrupt latency, polling loops). Under an
/// emulated KVM the vCPU runs 250-1000 times slower than the interpreter's virtual speed relative to the
/// devices' (host) time, so their checks can miss; they must pass on hardware.
/// (chip_ioapic: a PIT edge accepted just before the ROM masks the entry is delivered at its STI.)
const TIMING_ROMS: &[&str] = &["chip_ioapic", "chip_lapic_timer", "chip_pit_pic", "chip_rtc"];

struct RomRun {
    outcome: RunOutcome,
    output: String,
    elapsed: Duration,
}

/// Host time a ROM may take under KVM (as instruction slots at the default 1e9 per second).
const KVM_BUDGET_SECS: u64 = 120;

fn kvm_budget_secs() -> u64 {
    std::env::var("FERRITE_KVM_BUDGET_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(KVM_BUDGET_SECS)
}

fn run_rom(image: &[u8], accel: Accel, limit: u64) -> RomRun {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(32 << 20, image.to_vec());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.accel = accel;
    let mut m = Machine::new(cfg).expect("machine");
    let start = Instant::now();
    let outcome = m.run(Some(limit));
    let elapsed = start.elapsed();
    let output = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    RomRun { outcome, output, elapsed }
}

/// Runs a ROM under KVM on its own thread; `None` if it has not finished a minute after its budget
/// (a hang: the engine must always come back by the slice deadline).
fn run_rom_kvm(image: &'static [u8], budget_secs: u64) -> Option<RomRun> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run_rom(image, Accel::Kvm, budget_secs * machine::DEFAULT_IPS));
    });
    rx.recv_timeout(Duration::from_secs(budget_secs + 60)).ok()
}

fn passes(r: &RomRun) -> bool {
    let fails = r.output.lines().any(|l| l.starts_with("FAIL"));
    let passes = r.output.lines().filter(|l| l.starts_with("PASS")).count();
    r.outcome == RunOutcome::Exited(1) && !fails && passes > 0
}

fn reason(r: &RomRun) -> String {
    match &r.outcome {
        RunOutcome::Stopped { reason, .. } => reason.clone(),
        o => format!("{o:?}"),
    }
}

#[test]
fn test_roms_under_kvm_match_the_interpreter() {
    let probe = match machine::kvm::probe() {
        Ok(p) => p,
        Err(e) => {
            println!("/dev/kvm not usable: skipping KVM tests ({e})");
            return;
        }
    };
    println!(
        "KVM: {:.1} MIPS in the calibration loop; {}",
        probe.mips,
        probe.emulated.as_deref().unwrap_or("hardware-assisted")
    );
    let only = std::env::var("FERRITE_KVM_ROMS").ok();
    let mut passed = Vec::new();
    let mut refused = Vec::new();
    let mut not_compared = Vec::new();
    let mut failures = Vec::new();
    let mut timing = Vec::new();
    for (name, image) in test_roms::ROMS {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|n| n == *name)) {
            continue;
        }
        let interp = run_rom(image, Accel::Interp, 200_000_000);
        let Some(kvm) = run_rom_kvm(image, kvm_budget_secs()) else {
            println!("{name:<16} kvm: HUNG");
            failures.push(format!("{name}: the KVM run did not come back"));
            continue;
        };
        let kvm_reason = reason(&kvm);
        // The demo and the harness self-test do not end with "exit 1, PASS lines": compare their outcome.
        let harness = *name == "demo" || *name == "selftest_wrong";
        let interp_ok = passes(&interp) || (harness && matches!(interp.outcome, RunOutcome::Exited(_)));
        let kvm_ok = if harness { kvm.outcome == interp.outcome } else { passes(&kvm) };
        let line = format!(
            "{name:<16} interp: {:<5} kvm: {:<5} in {:>6.2} s  {}",
            if interp_ok { "pass" } else { "FAIL" },
            if kvm_ok { "pass" } else { "FAIL" },
            kvm.elapsed.as_secs_f64(),
            if kvm_ok { String::new() } else { kvm_reason.clone() }
        );
        println!("{line}");
        if !interp_ok {
            not_compared.push(format!("{name}: {}", reason(&interp)));
            continue;
        }
        if !probe.hardware() && !kvm_ok {
            if kvm_reason.contains("KVM_EXIT_INTERNAL_ERROR") {
                refused.push(format!("{name}: {kvm_reason}"));
                continue;
            }
            if let Some((_, what)) = PVM_FAULTS.iter().find(|(n, _)| n == name) {
                let fail = kvm.output.lines().find(|l| l.starts_with("FAIL")).unwrap_or("");
                refused.push(format!("{name}: {what} ({fail})"));
                continue;
            }
            if TIMING_ROMS.contains(name) {
                let fails: Vec<&str> = kvm.output.lines().filter(|l| l.starts_with("FAIL")).collect();
                timing.push(format!("{name}: {}", fails.join("; ")));
                continue;
            }
        }
        if !kvm_ok {
            failures.push(format!("{name}: {kvm_reason}\n--- kvm output ---\n{}", kvm.output));
        } else if kvm.output != interp.output {
            failures.push(format!(
                "{name}: output differs\n--- interp ---\n{}\n--- kvm ---\n{}",
                interp.output, kvm.output
            ));
        } else {
            passed.push(*name);
        }
    }
    println!("passed under KVM with the interpreter's output: {}", passed.join(", "));
    if !refused.is_empty() {
        println!("refused by the host's KVM emulator (not counted as passing):");
        for r in &refused {
            println!("  {r}");
        }
    }
    if !timing.is_empty() {
        println!("timing-dependent checks that missed under the slow emulated vCPU (not counted):");
        for r in &timing {
            println!("  {r}");
        }
    }
    if !not_compared.is_empty() {
        println!("not compared (the interpreter does not pass them yet):");
        for r in &not_compared {
            println!("  {r}");
        }
    }
    assert!(failures.is_empty(), "{} ROM(s) differ under KVM:\n{}", failures.len(), failures.join("\n"));
}

/// `--accel kvm` when KVM cannot be used: a clear error, not a panic or a hang.
#[test]
fn kvm_engine_errors_are_reported() {
    if machine::kvm::probe().is_ok() {
        // Usable here: building the machine must work.
        let cfg = {
            let mut c = MachineConfig::new(32 << 20, test_roms::rom("smoke").unwrap().to_vec());
            c.accel = Accel::Kvm;
            c
        };
        assert!(Machine::new(cfg).is_ok());
    } else {
        let mut c = MachineConfig::new(32 << 20, test_roms::rom("smoke").unwrap().to_vec());
        c.accel = Accel::Kvm;
        let e = Machine::new(c).err().expect("KVM unusable, so the machine cannot be built");
        assert!(e.to_string().contains("kvm"), "{e}");
    }
}

/// A 64 KiB real-mode ROM for the debug-exit test: at the reset vector a far jump to F000:0000, where
/// `nop; inc ax; nop; mov [0x500], al; nop; hlt` (offsets 0, 1, 2, 3, 6, 7).
fn debug_rom() -> Vec<u8> {
    let mut rom = vec![0u8; 0x1_0000];
    rom[..8].copy_from_slice(&[0x90, 0x40, 0x90, 0xa2, 0x00, 0x05, 0x90, 0xf4]);
    rom[0xfff0..0xfff5].copy_from_slice(&[0xea, 0x00, 0x00, 0x00, 0xf0]);
    rom
}

/// The KVM engine's debug exits through the machine's run loop: a single step stops on the next
/// instruction (each step one instruction further, with the instruction's effect), an execution
/// breakpoint in DR0 stops before its instruction runs, a data breakpoint after the write, and with
/// guest debugging off again the guest runs to its HLT. Prints "skipped: ..." (and checks nothing)
/// when /dev/kvm cannot run a guest or the host refuses single-step or hardware breakpoints.
#[test]
fn kvm_debug_exits_stop_where_the_debugger_asked() {
    use machine::kvm::{GuestDebug, GuestDebugRequest, HwSlot};
    let found = match machine::kvm::probe_guest_debug() {
        Ok(f) => f,
        Err(why) => {
            println!("skipped: /dev/kvm unusable ({why})");
            return;
        }
    };
    for (what, d) in [("single-step", &found.single_step), ("hardware breakpoints", &found.hw_breakpoint)] {
        if *d != GuestDebug::Works {
            println!("skipped: {what} under KVM: {d:?}");
            return;
        }
    }
    let mut cfg = MachineConfig::new(16 << 20, debug_rom());
    cfg.accel = Accel::Kvm;
    let mut m = Machine::new(cfg).expect("machine");
    // Ten seconds of host time at most for each run: every one here ends on a debug exit at once.
    let budget = 10 * machine::DEFAULT_IPS;
    let run = |m: &mut Machine, req: GuestDebugRequest| {
        m.kvm_mut().expect("the KVM engine").set_guest_debug(req).expect("a valid request");
        let limit = m.cpu.icount + budget;
        let out = m.run(Some(limit));
        let hit = m.kvm_mut().and_then(|k| k.take_debug_hit());
        (out, hit)
    };
    let step = GuestDebugRequest { single_step: true, slots: Vec::new() };
    let cs_base = |m: &Machine| m.cpu.seg[cpu::state::Seg::Cs as usize].base;
    // The far jump at the reset vector.
    let (out, hit) = run(&mut m, step.clone());
    assert_eq!(out, RunOutcome::DebugStop);
    assert!(hit.is_some_and(|h| h.step && h.slots == 0), "{hit:?}");
    assert_eq!((cs_base(&m), m.cpu.rip), (0xf0000, 0));
    let (out, _) = run(&mut m, step.clone());
    assert_eq!((out, m.cpu.rip), (RunOutcome::DebugStop, 1));
    // `inc ax` ran, and only it.
    let (out, _) = run(&mut m, step.clone());
    assert_eq!((out, m.cpu.rip, m.cpu.gpr[0] & 0xffff), (RunOutcome::DebugStop, 2, 1));
    assert_eq!(m.cpu.rflags & cpu::state::flags::TF, 0, "the stepping TF leaked into the guest's RFLAGS");
    // DR0 on the store at 3: the vCPU stops before it (the byte is still 0).
    let (out, hit) = run(&mut m, GuestDebugRequest { single_step: false, slots: vec![HwSlot::Exec(3)] });
    assert_eq!((out, m.cpu.rip), (RunOutcome::DebugStop, 3));
    assert!(hit.is_some_and(|h| h.slots == 1 && !h.step), "{hit:?}");
    let mut b = [0xffu8];
    assert_eq!(machine::gdb::read_phys(&m, 0x500, &mut b), 1);
    assert_eq!(b[0], 0);
    // A write breakpoint on 0x500 in DR1 (DR0 on the hlt): the vCPU stops after the store.
    let watch = HwSlot::Data { addr: 0x500, len: 1, write_only: true };
    if found.hw_watchpoint == GuestDebug::Works {
        let (out, hit) =
            run(&mut m, GuestDebugRequest { single_step: false, slots: vec![HwSlot::Exec(7), watch] });
        assert_eq!((out, m.cpu.rip), (RunOutcome::DebugStop, 6));
        assert!(hit.is_some_and(|h| h.slots == 2), "{hit:?}");
        machine::gdb::read_phys(&m, 0x500, &mut b);
        assert_eq!(b[0], 1);
    } else {
        println!("skipped: the data breakpoint: {:?}", found.hw_watchpoint);
    }
    let (out, hit) =
        run(&mut m, GuestDebugRequest { single_step: false, slots: vec![HwSlot::Exec(7), watch] });
    assert_eq!((out, m.cpu.rip), (RunOutcome::DebugStop, 7));
    assert!(hit.is_some_and(|h| h.slots == 1), "{hit:?}");
    assert!(!m.cpu.halted);
    // Guest debugging off: the HLT (with IF=0) ends the run.
    let (out, hit) = run(&mut m, GuestDebugRequest::default());
    assert!(matches!(&out, RunOutcome::Stopped { reason, .. } if reason.contains("HLT")), "{out:?}");
    assert_eq!(hit, None);
    // More than four slots, or a misaligned one, is refused.
    let k = m.kvm_mut().unwrap();
    assert!(
        k.set_guest_debug(GuestDebugRequest { single_step: false, slots: vec![HwSlot::Exec(0); 5] }).is_err()
    );
    let bad = HwSlot::Data { addr: 0x501, len: 2, write_only: false };
    assert!(k.set_guest_debug(GuestDebugRequest { single_step: false, slots: vec![bad] }).is_err());
}
