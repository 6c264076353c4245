//! Cross-check: every ROM also passes under QEMU TCG, so the expectations are not ours alone.
//!
//! Each ROM is assembled again with `-DQEMU_QUIRKS` (which relaxes only the checks where QEMU is known to
//! differ from the Intel SDM; each such place cites the SDM in the ROM) and run with
//! `qemu-system-x86_64 -bios ROM -device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon stdio` plus the
//! arguments on the ROM's `; qemu-args:` line, if any. ROMs that measure interrupt timing run QEMU with
//! `-icount shift=3,sleep=off -rtc clock=vm`: QEMU's time then follows its instruction count, as Ferrite's
//! does, so the check does not depend on how loaded the host is. Skipped, with a message, when QEMU is not installed.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn qemu_available() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_under_qemu(name: &str) -> Result<(), String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/roms");
    let src = dir.join(format!("{name}.asm"));
    let text = std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let extra: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("; qemu-args:"))
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let tmp = std::env::temp_dir().join(format!("ferrite-qemu-{}-{name}.bin", std::process::id()));
    let st = Command::new("nasm")
        .args(["-f", "bin", "-DQEMU_QUIRKS", "-I"])
        .arg(format!("{}/", dir.display()))
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .status()
        .map_err(|e| format!("nasm: {e}"))?;
    if !st.success() {
        return Err(format!("nasm failed on {name}"));
    }
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-display", "none", "-nodefaults", "-no-reboot", "-bios"])
        .arg(&tmp)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-debugcon", "stdio"])
        // A ROM that tests the UART asks for its own `-serial` backend on its `; qemu-args:` line.
        .args(if extra.iter().any(|a| a == "-serial") { &[][..] } else { &["-serial", "none"][..] })
        .args(["-monitor", "none"])
        .args(&extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("{name}: QEMU did not finish within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&tmp);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if status.code() != Some(1) || stdout.lines().any(|l| l.starts_with("FAIL")) {
        return Err(format!(
            "{name}: QEMU exit {:?}\n{stdout}{}",
            status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

#[test]
fn every_rom_passes_under_qemu_tcg() {
    if !qemu_available() {
        eprintln!("qemu-system-x86_64 not installed: skipping the QEMU cross-check (run scripts/setup.sh)");
        return;
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, _) in test_roms::ROMS {
        if *name == "selftest_wrong" {
            continue;
        }
        ran += 1;
        if let Err(e) = run_under_qemu(name) {
            failures.push(e);
        }
    }
    assert!(ran > 0);
    assert!(
        failures.is_empty(),
        "{} of {ran} ROMs fail under QEMU:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
