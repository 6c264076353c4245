//! The multiboot test kernels (`src/kernels`), booted with `--kernel` on the machine and under QEMU TCG.
//!
//! Each kernel is run the way its header says: `-append mbtest`, one module starting with
//! "FERRITE-MODULE" with the argument "modarg", pc-testdev, 128 MiB. Under QEMU:
//! `qemu-system-x86_64 -kernel K -append mbtest -initrd "MOD modarg" -m 128 -device pc-testdev
//! -device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon stdio` (skipped, with a message, when QEMU is
//! not installed). Under QEMU each kernel is assembled again with `-DQEMU_QUIRKS`, which skips only the
//! checks where QEMU departs from the Multiboot specification (each such place says why in the kernel).

use machine::{Accel, LinuxBoot, Machine, MachineConfig, MultibootModule, RunOutcome};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MODULE: &[u8] = b"FERRITE-MODULE\nsome module data\n";

/// The CPU model a kernel needs (QEMU's `-cpu` spelling, which `--cpu` shares), when not the default.
fn cpu_for(name: &str) -> Option<&'static str> {
    match name {
        "mb_pku" => Some("max"),
        _ => None,
    }
}

fn run_on_machine(name: &str, testdev: bool) -> (RunOutcome, String) {
    let (o, s, _) = run_counted(name, testdev, Accel::Interp, 1000);
    (o, s)
}

/// Runs kernel `name` under `accel`; returns the outcome, the output and the retired-instruction count.
fn run_counted(name: &str, testdev: bool, accel: Accel, threshold: u32) -> (RunOutcome, String, u64) {
    let model = cpu_for(name).map(|m| cpu::CpuModel::parse(m).expect("model"));
    run_on(name, testdev, accel, threshold, model.unwrap_or_default())
}

/// [`run_counted`] on CPU model `model`.
fn run_on(
    name: &str,
    testdev: bool,
    accel: Accel,
    threshold: u32,
    model: cpu::CpuModel,
) -> (RunOutcome, String, u64) {
    let image = test_roms::kernel(name).unwrap_or_else(|| panic!("no kernel named {name}"));
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(128 << 20, Vec::new());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    if testdev {
        cfg.devices.push(machine::DeviceSpec::named("testdev").unwrap());
    }
    cfg.accel = accel;
    cfg.model = model;
    cfg.jit_threshold = threshold;
    cfg.linux = Some(LinuxBoot {
        kernel: image.to_vec(),
        initrd: None,
        cmdline: format!("{name}.bin mbtest"),
        modules: vec![MultibootModule { data: MODULE.to_vec(), cmdline: "module.bin modarg".into() }],
    });
    let mut m = Machine::new(cfg).expect("machine");
    let outcome = m.run(Some(200_000_000));
    let output = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    (outcome, output, m.cpu.icount)
}

/// Kernels that need disk images: `tests/disk_kernel.rs` makes the images and runs them (on the machine
/// under both engines and under QEMU), so the generic loops here leave them out.
const DISK_KERNELS: &[&str] = &["mb_disk"];

/// Every kernel gives the same outcome, output and instruction count under the JIT (translating every
/// block on its first entry) as under the interpreter.
#[test]
fn every_kernel_runs_the_same_under_jit() {
    for (name, _) in test_roms::KERNELS.iter().filter(|(n, _)| !DISK_KERNELS.contains(n)) {
        let interp = run_counted(name, true, Accel::Interp, 1000);
        let jit = run_counted(name, true, Accel::Jit, 1);
        assert_eq!(interp, jit, "kernel {name}: interp vs jit");
        assert_passes(name, &jit.0, &jit.1);
    }
}

fn assert_passes(name: &str, outcome: &RunOutcome, output: &str) {
    let fails: Vec<&str> = output.lines().filter(|l| l.starts_with("FAIL")).collect();
    let passes = output.lines().filter(|l| l.starts_with("PASS")).count();
    assert!(
        *outcome == RunOutcome::Exited(1) && fails.is_empty() && passes > 0,
        "kernel {name}: outcome {outcome:?}, {passes} passed, failures:\n{}\n--- output ---\n{output}",
        fails.join("\n"),
    );
}

#[test]
fn every_kernel_assembles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels");
    let sources = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".asm")));
    assert_eq!(
        sources.count(),
        test_roms::KERNELS.len(),
        "a kernel failed to assemble (see the build warnings)"
    );
    assert!(test_roms::kernel("mb_testdev").is_some());
    assert!(test_roms::kernel("mb_low").is_some());
    for name in DISK_KERNELS {
        assert!(test_roms::kernel(name).is_some(), "disk kernel {name} is missing");
    }
}

/// A kernel loaded at 0x8000-0xB000, over QEMU's boot-information page: everything the loader passes
/// lies clear of it.
#[test]
fn mb_low_passes_on_the_machine() {
    let (outcome, output) = run_on_machine("mb_low", false);
    assert_passes("mb_low", &outcome, &output);
    assert!(output.contains("PASS: module clear of the kernel"), "output:\n{output}");
}

#[test]
fn mb_testdev_passes_on_the_machine() {
    let (outcome, output) = run_on_machine("mb_testdev", true);
    assert_passes("mb_testdev", &outcome, &output);
}

/// The harness can fail: without the test device, the testdev and IRQ cases fail.
#[test]
fn mb_testdev_fails_without_the_test_device() {
    let (outcome, output) = run_on_machine("mb_testdev", false);
    assert!(output.contains("FAIL: testdev scratch port dword"), "output:\n{output}");
    assert!(matches!(outcome, RunOutcome::Exited(s) if s != 1), "outcome {outcome:?}");
}

/// Protection keys (CR4.PKE, RDPKRU/WRPKRU, keys in the page walk, the PK error-code bit) on the
/// `max` model, under the interpreter (the JIT runs it in `every_kernel_runs_the_same_under_jit`).
#[test]
fn mb_pku_passes_on_the_machine() {
    let (outcome, output) = run_on_machine("mb_pku", false);
    assert_passes("mb_pku", &outcome, &output);
    assert!(output.contains("PASS: user write of a WD page: #PF P|W|U|PK"), "output:\n{output}");
}

/// The harness can fail: the default model has no PKU, so the kernel's first check fails.
#[test]
fn mb_pku_fails_without_pku() {
    let (outcome, output, _) = run_on("mb_pku", false, Accel::Interp, 1000, cpu::CpuModel::ferrite());
    assert!(output.contains("FAIL: CPUID.7.ECX.PKU"), "output:\n{output}");
    assert!(matches!(outcome, RunOutcome::Exited(s) if s != 1), "outcome {outcome:?}");
}

fn qemu_available() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn every_kernel_passes_under_qemu_tcg() {
    if !qemu_available() {
        eprintln!("qemu-system-x86_64 not installed: skipping the QEMU cross-check (run scripts/setup.sh)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrite-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("module.bin");
    std::fs::write(&module, MODULE).unwrap();
    let mut failures = Vec::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels");
    for (name, _) in test_roms::KERNELS.iter().filter(|(n, _)| !DISK_KERNELS.contains(n)) {
        let kernel = dir.join(format!("{name}.bin"));
        let st = Command::new("nasm")
            .args(["-f", "bin", "-DQEMU_QUIRKS", "-o"])
            .arg(&kernel)
            .arg(src.join(format!("{name}.asm")))
            .status()
            .expect("nasm");
        assert!(st.success(), "nasm -DQEMU_QUIRKS failed on {name}");
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-cpu", cpu_for(name).unwrap_or("qemu64")])
            .args(["-display", "none", "-nodefaults", "-no-reboot", "-m", "128", "-kernel"])
            .arg(&kernel)
            .args(["-append", "mbtest", "-initrd"])
            .arg(format!("{} modarg", module.display()))
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-device", "pc-testdev"])
            .args(["-debugcon", "stdio", "-serial", "none", "-monitor", "none"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ok = status.and_then(|s| s.code()) == Some(1)
            && !stdout.lines().any(|l| l.starts_with("FAIL"))
            && stdout.lines().any(|l| l.starts_with("PASS"));
        if !ok {
            failures.push(format!(
                "{name}: QEMU status {status:?}\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "kernels fail under QEMU:\n{}", failures.join("\n"));
}
