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
