//! The guest CPU benchmark (`benches/guest/cpubench.c`, issue 13) under the JIT with a bounded scale:
//! built static here, put into the initramfs with `ferrite images --add`, run in Linux, and every
//! kernel's checksum line compared with the same binary run natively on this host. The timed run beside
//! QEMU is `benches/guest/cpu_bench.py`; this test only proves the JIT computes what the CPU does.
//!
//! Like `linux_boot.rs`, it fails (never passes) when the images cannot be made.

use machine::{Accel, HostEvent, LinuxBoot, Machine, MachineConfig, RunOutcome};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

const CMDLINE: &str = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1 i8042.noaux tsc=reliable";
const PROMPT: &str = "/ # ";
/// The scale the test runs (each kernel does its fixed problem once or a few times).
const SCALE: &str = "1";
/// Instruction budget for the whole session.
const MAX_INSTRUCTIONS: u64 = 20_000_000_000;
const KERNELS: [&str; 8] = ["sieve", "crc32", "matmul", "qsort", "strhash", "chase", "syscall", "pagefault"];

fn build() -> PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/guest/cpubench.c");
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cpubench");
    let out = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .expect("run gcc (scripts/setup.sh installs gcc and libc6-dev)");
    assert!(
        out.status.success(),
        "gcc -O2 -static cpubench.c failed (scripts/setup.sh installs gcc and libc6-dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// The `CPUBENCH-SUM` lines of some output, as (kernel, checksum).
fn sums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("CPUBENCH-SUM "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect()
}

#[test]
fn cpubench_checksums_under_jit_equal_the_host_cpus() {
    let bin = build();
    let native = Command::new(&bin).arg(SCALE).output().expect("run cpubench natively");
    assert!(native.status.success(), "cpubench failed natively: {native:?}");
    let want = sums(&String::from_utf8_lossy(&native.stdout));
    assert_eq!(want.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), KERNELS, "native sums: {want:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .arg("images")
        .arg("--add")
        .arg(format!("{}:/bin/cpubench", bin.display()))
        .output()
        .expect("run ferrite images");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Linux guest images could not be made, so Linux was not booted; `ferrite images` said: {}\n\
         It needs apt-get with Debian's package lists (`apt-get update`, which scripts/setup.sh runs).",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        let v = stdout.lines().find_map(|l| l.strip_prefix(&format!("{k}=")));
        std::fs::read(v.unwrap_or_else(|| panic!("`ferrite images` printed no {k}=: {stdout}")))
            .unwrap_or_else(|e| panic!("read the {k}: {e}"))
    };

    let console = Arc::new(Mutex::new(Vec::new()));
    let c2 = console.clone();
    let mut cfg = MachineConfig::new(512 << 20, Vec::new());
    cfg.accel = Accel::Jit;
    cfg.com1 = Box::new(move |b| c2.lock().unwrap().push(b));
    cfg.linux = Some(LinuxBoot {
        kernel: field("kernel"),
        initrd: Some(field("initrd")),
        cmdline: CMDLINE.into(),
        ..Default::default()
    });
    let mut m = Machine::new(cfg).expect("machine");
    let (tx, rx) = std::sync::mpsc::channel();
    m.attach_input(rx);
    let text = || String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    // Runs until `pat` appears at or after byte `from` of the console; returns where it ends.
    let run_until = |m: &mut Machine, pat: &str, from: usize| -> usize {
        loop {
            if let Some(i) = text().get(from..).and_then(|t| t.find(pat)) {
                return from + i + pat.len();
            }
            assert!(m.cpu.icount < MAX_INSTRUCTIONS, "instruction budget spent before {pat:?}:\n{}", text());
            match m.run(Some(m.cpu.icount + 50_000_000)) {
                RunOutcome::InstructionLimit => {}
                other => panic!("machine stopped before {pat:?}: {other:?}\nconsole:\n{}", text()),
            }
        }
    };
    let at = run_until(&mut m, PROMPT, 0);
    for b in format!("cpubench {SCALE}\n").bytes() {
        tx.send(HostEvent::Input(b)).unwrap();
    }
    let start = m.cpu.icount;
    let end = run_until(&mut m, "CPUBENCH-DONE", at);
    let got = sums(&text()[at..end]);
    assert_eq!(got, want, "cpubench's checksums under the JIT differ from this host's; console:\n{}", text());
    println!(
        "cpubench {SCALE} under the JIT: about {} instructions (run in 50M slices), every checksum the host's; {}",
        m.cpu.icount - start,
        m.engine().stats().unwrap_or_default()
    );
}
