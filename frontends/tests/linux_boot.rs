//! Boots Debian's cloud kernel with the busybox initramfs from `ferrite images` under the JIT and under
//! the interpreter, waits for the ready marker, types commands on COM1 through the machine's host-input path, checks
//! their output and powers the guest off (exit status 0).
//!
//! The images are downloaded on first use (Debian's mirrors through apt-get; see `ferrite images`). When
//! that is impossible the test fails and says why: it never passes without booting Linux.

use machine::{Accel, HostEvent, LinuxBoot, Machine, MachineConfig, RunOutcome};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The command line CI boots with: serial console only; `quiet` keeps the console (one port write per
/// character) short; one 8250 port; no i8042 AUX probe; the TSC is trusted (no clocksource watchdog).
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1 i8042.noaux tsc=reliable";
const MARKER: &str = "FERRITE-READY";
const PROMPT: &str = "/ # ";
/// Instruction budget for the whole session (boot + commands + power-off).
const MAX_INSTRUCTIONS: u64 = 30_000_000_000;
/// Host-time budget: generous for a 2-core CI machine under load.
const MAX_WALL: Duration = Duration::from_secs(900);

/// Operand sets per group of `fpcheck` (about 210,000 checked results per run).
const FPCHECK_N: &str = "200";

/// Compiles `tests/guest/fpcheck.c` into a static x86-64 Linux program (x87 and SSE edge cases folded
/// into hashes, and an x87/SSE context-switch check) and returns its path.
fn build_fpcheck() -> std::path::PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/guest/fpcheck.c");
    let bin = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fpcheck");
    let out = Command::new("cc")
        .args(["-static", "-O2", "-mno-red-zone", "-msse4.2", "-maes", "-mpclmul", "-mno-avx", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .expect("run cc (scripts/setup.sh installs gcc and libc6-dev)");
    assert!(
        out.status.success(),
        "cc -static fpcheck.c failed (scripts/setup.sh installs gcc and libc6-dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Rounds of `v3check` (each round: 1024-element vectorised loops, intrinsics, string functions).
const V3CHECK_ROUNDS: &str = "4";

/// Compiles `tests/guest/v3check.c` for the x86-64-v3 level (`-march=x86-64-v3`: AVX2, FMA, F16C, BMI
/// code paths from the compiler, glibc's AVX2 string functions chosen at run time from CPUID, a YMM
/// context-switch check) and returns its path.
fn build_v3check() -> std::path::PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/guest/v3check.c");
    let bin = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("v3check");
    let out = Command::new("gcc")
        .args(["-O2", "-march=x86-64-v3", "-static", "-o"])
        .arg(&bin)
        .arg(src)
        .arg("-lm")
        .output()
        .expect("run gcc (scripts/setup.sh installs gcc and libc6-dev)");
    assert!(
        out.status.success(),
        "gcc -march=x86-64-v3 -static v3check.c failed (scripts/setup.sh installs gcc and libc6-dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Whether this host runs x86-64-v3 code natively (the reference for `v3check`).
fn host_is_v3() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("lzcnt")
        && std::arch::is_x86_feature_detected!("movbe")
}

/// Runs a program natively on this host and returns its standard output.
fn native(prog: &std::path::Path, args: &[&str]) -> String {
    let out =
        Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("run {}: {e}", prog.display()));
    assert!(out.status.success(), "{} {args:?} failed natively: {:?}", prog.display(), out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of a guest command's output that `want` (native output) has, in order: the guest's copy
/// carries the echoed command line and CRLF line ends.
fn guest_lines(out: &str) -> Vec<String> {
    out.lines().map(|l| l.trim_end_matches('\r').to_string()).collect()
}

struct Images {
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    package: String,
    busybox: std::path::PathBuf,
}

fn images(fpcheck: &std::path::Path, v3check: &std::path::Path) -> Images {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .arg("images")
        .arg("--add")
        .arg(format!("{}:/bin/fpcheck", fpcheck.display()))
        .arg("--add")
        .arg(format!("{}:/bin/v3check", v3check.display()))
        .output()
        .expect("run ferrite images");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Linux guest images could not be made, so Linux was not booted.\n\
         `ferrite images` said: {stderr}\n\
         It needs apt-get with Debian's package lists (`apt-get update`, which scripts/setup.sh runs) and \
         access to Debian's mirrors."
    );
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("`ferrite images` printed no {k}=: {stdout}"))
            .to_string()
    };
    Images {
        kernel: std::fs::read(field("kernel")).expect("read kernel"),
        initrd: std::fs::read(field("initrd")).expect("read initrd"),
        package: field("package"),
        busybox: field("busybox").into(),
    }
}

struct Session {
    m: Machine,
    out: Arc<Mutex<Vec<u8>>>,
    tx: std::sync::mpsc::Sender<HostEvent>,
    /// Output already consumed by `wait_for`.
    seen: usize,
    start: Instant,
    exit: Option<i32>,
}

impl Session {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Runs until `pat` appears in the output after what was already seen; returns the output up to and
    /// including it.
    fn wait_for(&mut self, pat: &str) -> String {
        loop {
            {
                let out = self.out.lock().unwrap();
                let tail = String::from_utf8_lossy(&out[self.seen..]).into_owned();
                if let Some(i) = tail.find(pat) {
                    self.seen += i + pat.len();
                    return tail[..i + pat.len()].to_string();
                }
            }
            if self.exit.is_some() {
                panic!("the guest exited while waiting for {pat:?}; console:\n{}", self.text());
            }
            assert!(
                self.start.elapsed() < MAX_WALL,
                "no {pat:?} after {:?} ({} instructions); console:\n{}",
                self.start.elapsed(),
                self.m.cpu.icount,
                self.text()
            );
            let limit = (self.m.cpu.icount + 50_000_000).min(MAX_INSTRUCTIONS);
            match self.m.run(Some(limit)) {
                RunOutcome::InstructionLimit if self.m.cpu.icount >= MAX_INSTRUCTIONS => {
                    panic!("instruction budget spent waiting for {pat:?}; console:\n{}", self.text())
                }
                RunOutcome::InstructionLimit => {}
                RunOutcome::Exited(c) => self.exit = Some(c),
                other => panic!("machine stopped waiting for {pat:?}: {other:?}\nconsole:\n{}", self.text()),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        for b in line.bytes().chain([b'\n']) {
            self.tx.send(HostEvent::Input(b)).unwrap();
        }
    }

    /// Types `cmd`, followed by an echo of a unique end marker, and returns what the command printed.
    fn command(&mut self, cmd: &str, n: usize) -> String {
        let end = format!("END-{n}-OF-COMMAND");
        // The marker is split in the typed line so that the echo of the input does not match it.
        let (a, b) = end.split_at(4);
        self.type_line(&format!("{cmd}; echo {a}''{b}"));
        let out = self.wait_for(&end);
        self.wait_for(PROMPT);
        out
    }
}

/// The awk program and the value it must print, computed here with the same IEEE doubles.
fn awk_case() -> (String, String) {
    let mut x = 1.0f64;
    for i in 1..=30 {
        x = x * 1.5 + 0.25 / f64::from(i);
    }
    let prog = "awk 'BEGIN { x = 1; for (i = 1; i <= 30; i++) x = x * 1.5 + 0.25 / i; printf \"awk=%.6f\\n\", x / 7 }'";
    (prog.to_string(), format!("awk={:.6}", x / 7.0))
}

/// A longer busybox awk program (printf of doubles to 17 digits, division, int(), exponentiation,
/// string-to-number conversions) whose output under Ferrite must equal the same binary's on this host.
const AWK_NATIVE: &str = "BEGIN { x = 1; s = 0; for (i = 1; i <= 40; i++) { x = x * 1.37 + 1 / i; \
s += x / (i + 0.5); if (i % 8 == 0) printf \"%.17g %.17g %d %.10e %.17g\\n\", x, s, int(x * 1000) % 97, x / 3, \
(\"0.\" i) + 1e-300 * i } }";

#[test]
fn linux_boots_to_a_shell_and_powers_off_under_jit() {
    boot_and_check(Accel::Jit);
}

#[test]
fn linux_boots_to_a_shell_and_powers_off_under_interp() {
    boot_and_check(Accel::Interp);
}

/// Under KVM only where /dev/kvm runs guests on hardware: an emulating KVM (PVM) runs about 1 MIPS,
/// far too slow for a boot in CI.
#[test]
fn linux_boots_to_a_shell_and_powers_off_under_kvm() {
    match machine::kvm::probe() {
        Ok(p) if p.hardware() => boot_and_check(Accel::Kvm),
        Ok(p) => println!(
            "/dev/kvm emulates guests in software ({}): skipping the Linux boot under KVM",
            p.emulated.unwrap_or_default()
        ),
        Err(e) => println!("/dev/kvm not usable ({e}): skipping the Linux boot under KVM"),
    }
}

/// The images, `fpcheck` and `v3check`, made once per test process: the tests run in parallel, and two
/// compilers writing one output file, or two `ferrite images` racing on a fresh cache, are not a test
/// of Ferrite. (`ferrite images` also locks its cache, for separate processes.)
fn prepared() -> &'static (Images, std::path::PathBuf, std::path::PathBuf) {
    static ONCE: std::sync::OnceLock<(Images, std::path::PathBuf, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let fpcheck = build_fpcheck();
        let v3check = build_v3check();
        (images(&fpcheck, &v3check), fpcheck, v3check)
    })
}

fn boot_and_check(accel: Accel) {
    let (imgs, fpcheck, v3check) = prepared();
    let (kernel, initrd, package, busybox) =
        (imgs.kernel.clone(), imgs.initrd.clone(), imgs.package.clone(), imgs.busybox.clone());
    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(512 << 20, Vec::new());
    cfg.accel = accel;
    cfg.com1 = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.linux =
        Some(LinuxBoot { kernel, initrd: Some(initrd), cmdline: CMDLINE.into(), ..Default::default() });
    let mut m = Machine::new(cfg).expect("machine");
    let (tx, rx) = std::sync::mpsc::channel();
    m.attach_input(rx);
    let mut s = Session { m, out, tx, seen: 0, start: Instant::now(), exit: None };

    s.wait_for(MARKER);
    let (boot_icount, boot_wall) = (s.m.cpu.icount, s.start.elapsed());
    s.wait_for(PROMPT);
    println!(
        "{package} under {accel:?}: {MARKER} after {boot_icount} instructions, {:.1} s host time ({:.0} MIPS)",
        boot_wall.as_secs_f64(),
        boot_icount as f64 / boot_wall.as_secs_f64() / 1e6
    );

    let uname = s.command("uname -a", 1);
    assert!(uname.contains("Linux") && uname.contains("x86_64"), "uname -a:\n{uname}");

    let irqs = s.command("cat /proc/interrupts", 2);
    for want in ["timer", "ttyS0", "acpi", "LOC:"] {
        assert!(irqs.contains(want), "/proc/interrupts has no {want}:\n{irqs}");
    }

    let (prog, want) = awk_case();
    let awk = s.command(&prog, 3);
    assert!(awk.contains(&want), "awk printed:\n{awk}\nexpected {want}");

    // The same static busybox on this host and in the guest: identical floating-point output.
    let want = native(&busybox, &["awk", AWK_NATIVE]);
    assert_eq!(want.lines().count(), 5, "native awk printed:\n{want}");
    let got = guest_lines(&s.command(&format!("awk '{AWK_NATIVE}'"), 5));
    for line in want.lines() {
        assert!(
            got.iter().any(|g| g == line),
            "busybox awk under Ferrite lacks the native line {line:?}; got:\n{got:#?}"
        );
    }

    // x87 and SSE edge cases in a static C program: the guest's output must be the host's, line by line.
    let want = native(fpcheck, &[FPCHECK_N]);
    assert!(want.contains("ctxsw        ok"), "fpcheck natively:\n{want}");
    let got = guest_lines(&s.command(&format!("fpcheck {FPCHECK_N}"), 6));
    for line in want.lines() {
        assert!(
            got.iter().any(|g| g == line),
            "fpcheck under Ferrite differs from this host's CPU at {line:?}; native:\n{want}\nguest:\n{got:#?}"
        );
    }
    println!("fpcheck under Ferrite matches the host:\n{want}");

    // The x86-64-v3 program under the JIT (the boot already made, so no second boot in CI): CPUID must
    // offer AVX2/FMA/F16C/BMI2 (so glibc picks its AVX2 string functions), and every hash, and the
    // YMM context-switch check (the kernel's XSAVE of the AVX component), must be the host's.
    if accel == Accel::Jit {
        if host_is_v3() {
            let want = native(v3check, &[V3CHECK_ROUNDS]);
            assert!(want.contains("avx=1 avx2=1 fma=1 f16c=1 bmi2=1"), "v3check natively:\n{want}");
            assert!(want.contains("ymm-ctxsw    ok"), "v3check natively:\n{want}");
            let got = guest_lines(&s.command(&format!("v3check {V3CHECK_ROUNDS}"), 7));
            for line in want.lines() {
                assert!(
                    got.iter().any(|g| g == line),
                    "v3check under Ferrite differs from this host's CPU at {line:?}; native:\n{want}\nguest:\n{got:#?}"
                );
            }
            println!("v3check (x86-64-v3) under Ferrite matches the host:\n{want}");
        } else {
            println!(
                "skipped v3check: this host cannot run x86-64-v3 code natively, so there is no reference"
            );
        }
    }

    // `seq 1 10000` on a host gives the same bytes; its SHA-256:
    let sum = s.command("seq 1 10000 > /tmp/f && sha256sum /tmp/f && df /tmp | tail -1", 4);
    assert!(
        sum.contains("8060aa0ac20a3e5db2b67325c98a0122f2d09a612574458225dcb9a086f87cc3  /tmp/f"),
        "checksum of the tmpfs file:\n{sum}"
    );
    assert!(sum.contains("tmpfs"), "/tmp is not a tmpfs:\n{sum}");

    s.type_line("poweroff");
    s.wait_for("reboot: Power down");
    while s.exit.is_none() {
        match s.m.run(Some(s.m.cpu.icount + 50_000_000)) {
            RunOutcome::Exited(c) => s.exit = Some(c),
            RunOutcome::InstructionLimit if s.m.cpu.icount < MAX_INSTRUCTIONS => {}
            other => panic!("no power-off: {other:?}\nconsole:\n{}", s.text()),
        }
    }
    let log = s.text();
    assert_eq!(s.exit, Some(0), "poweroff must end the machine with status 0; console:\n{log}");
    println!(
        "whole session under {accel:?}: {} instructions, {:.1} s host time{}",
        s.m.cpu.icount,
        s.start.elapsed().as_secs_f64(),
        s.m.engine().stats().map(|b| format!("; {b}")).unwrap_or_default()
    );
    if accel == Accel::Jit {
        assert!(
            s.m.interp().map_or(0, |i| i.compiled_blocks()) > 1000,
            "the JIT translated only {} blocks",
            s.m.interp().map_or(0, |i| i.compiled_blocks())
        );
    }
    // The kernel's log (quiet: warnings and errors only) must be free of these.
    for bad in ["WARNING", "Oops", "BUG", "Call Trace", "unknown", "unsupported", "not supported"] {
        assert!(!log.contains(bad), "kernel log contains {bad:?}:\n{log}");
    }
}

/// Whole-machine save/restore in the middle of a Linux boot: a machine restored from a snapshot taken
/// at 800M instructions and run to 1.6G (past the ready marker) prints the same console output as an
/// uninterrupted run to 1.6G and ends in the same state (hash of CPU, devices and RAM).
#[test]
fn linux_restored_mid_boot_matches_an_uninterrupted_boot() {
    const SAVE_AT: u64 = 800_000_000;
    const END: u64 = 1_600_000_000;
    let (imgs, _, _) = prepared();
    let build = || {
        let out = Arc::new(Mutex::new(Vec::new()));
        let o2 = out.clone();
        let mut cfg = MachineConfig::new(512 << 20, Vec::new());
        cfg.accel = Accel::Jit;
        cfg.com1 = Box::new(move |b| o2.lock().unwrap().push(b));
        cfg.linux = Some(LinuxBoot {
            kernel: imgs.kernel.clone(),
            initrd: Some(imgs.initrd.clone()),
            cmdline: CMDLINE.into(),
            ..Default::default()
        });
        (Machine::new(cfg).expect("machine"), out)
    };
    let text = |o: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&o.lock().unwrap()).into_owned();
    let (mut whole, out) = build();
    assert_eq!(whole.run(Some(END)), RunOutcome::InstructionLimit);
    let whole_text = text(&out);
    assert!(
        whole_text.contains(MARKER),
        "the boot reaches {MARKER} within {END} instructions:\n{whole_text}"
    );

    let (mut first, out1) = build();
    assert_eq!(first.run(Some(SAVE_AT)), RunOutcome::InstructionLimit);
    let snap = first.save_state();
    drop(first);
    let (mut second, out2) = build();
    second.restore_state(&snap).expect("restore");
    assert_eq!(second.run(Some(END)), RunOutcome::InstructionLimit);
    assert_eq!(second.cpu.icount, whole.cpu.icount);
    assert_eq!(text(&out1) + &text(&out2), whole_text, "console output across the snapshot");
    assert_eq!(second.state_hash(), whole.state_hash(), "the whole machine state at {END} instructions");
    println!("Linux saved at {SAVE_AT} and restored: the same console and state hash at {END}");
}

/// When translations arrive and where they come from must not change the guest: a bounded boot
/// (past the ready marker) under the interpreter, under the JIT with random delays on the compile
/// thread filling a fresh translation cache, from that cache in a second boot, and from the cache
/// with one of its entries damaged, prints the same console output and ends with the same
/// instruction count and whole-machine state hash.
#[test]
fn linux_is_the_same_whenever_and_wherever_translations_come_from() {
    const END: u64 = 1_600_000_000;
    let (imgs, _, _) = prepared();
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("linux-jit-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let boot = |accel: Accel, opts: machine::JitOptions| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let o2 = out.clone();
        let mut cfg = MachineConfig::new(512 << 20, Vec::new());
        cfg.accel = accel;
        cfg.jit = opts;
        cfg.com1 = Box::new(move |b| o2.lock().unwrap().push(b));
        cfg.linux = Some(LinuxBoot {
            kernel: imgs.kernel.clone(),
            initrd: Some(imgs.initrd.clone()),
            cmdline: CMDLINE.into(),
            ..Default::default()
        });
        let mut m = Machine::new(cfg).expect("machine");
        let t0 = Instant::now();
        assert_eq!(m.run(Some(END)), RunOutcome::InstructionLimit);
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        let stats = m.engine().stats().unwrap_or_default();
        println!("{accel:?}: {:.1} s; {stats}", t0.elapsed().as_secs_f64());
        (text, m.cpu.icount, m.state_hash(), stats)
    };
    let want = boot(Accel::Interp, machine::JitOptions::default());
    assert!(want.0.contains(MARKER), "the boot reaches {MARKER} within {END} instructions:\n{}", want.0);
    let with_cache = |delay| machine::JitOptions { cache: Some(cache.clone()), delay, ..Default::default() };
    let delayed = boot(Accel::Jit, with_cache(Some(machine::CompileDelay { seed: 5, max_us: 2000 })));
    let warm = boot(Accel::Jit, with_cache(None));
    // One damaged entry in the middle of the file: it and the rest are ignored, with a warning.
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "fjc"))
        .expect("a cache file");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let damaged = boot(Accel::Jit, with_cache(None));
    for (what, got) in [("compile delays", &delayed), ("warm cache", &warm), ("damaged cache", &damaged)] {
        assert_eq!(got.0, want.0, "console output with {what}");
        assert_eq!((got.1, got.2), (want.1, want.2), "instruction count and state hash with {what}");
    }
    assert!(
        warm.3.contains("(0 compiled on the compile thread, 0 on the main thread"),
        "the warm boot compiled: {}",
        warm.3
    );
    // Warm blocks (run often, below the threshold) were compiled and saved by the first boot: the
    // warm boot finds them at their second entry and queues none.
    assert!(warm.3.contains("; 0 warm blocks queued;"), "the warm boot compiled warm blocks: {}", warm.3);
    // Regions come from saved code, most of them: a loop whose recorded blocks differ from the
    // first boot's (where chains of translations start differs) has its region compiled again.
    let count = |what: &str| -> u64 {
        let at = warm.3.find(what).unwrap_or_else(|| panic!("no {what:?} in {}", warm.3));
        warm.3[..at].rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let (compiled, saved) = (count(" regions compiled"), count(" from saved code"));
    assert!(saved > 0 && compiled < saved, "the warm boot compiled regions: {}", warm.3);
    assert!(damaged.3.contains(" 1 rejected"), "the damage went unnoticed: {}", damaged.3);
    let _ = std::fs::remove_dir_all(&cache);
}
