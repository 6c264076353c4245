//! Linux's own account of the hardware: boots Debian's cloud kernel with the busybox initramfs from
//! `ferrite images` at full log verbosity, under Ferrite's interpreter and under QEMU (TCG, `-M pc` with
//! a CPU model matching Ferrite's CPUID), up to the initramfs's ready marker, and checks
//!
//! 1. that Ferrite's log shows the devices Linux must find: the local APIC, the I/O APIC, the ACPI tables
//!    (RSDP, XSDT, FACP, APIC, DSDT), SMBIOS, the TSC calibrated against the PIT, ttyS0 and ttyS1 as
//!    16550A, and the AT keyboard behind the i8042;
//! 2. that every line of Ferrite's log that reads like a warning, an error or a fallback also appears
//!    (normalised: timestamps, numbers) in QEMU's log on the same hardware, so it is the kernel's view of
//!    that hardware rather than an emulation gap.
//!
//! When `qemu-system-x86_64` is missing (scripts/setup.sh installs it) or the images cannot be made,
//! the test fails and says so. docs/LINUX-LOG.md lists the remaining differences and why.

use machine::{LinuxBoot, Machine, MachineConfig, RunOutcome};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Full verbosity, no `quiet`, every 8250 port, the i8042 AUX probe and the clocksource watchdog left on.
const CMDLINE: &str = "console=ttyS0 loglevel=8 ignore_loglevel panic=-1";
const MARKER: &str = "FERRITE-READY";
/// Ferrite's instruction budget for the boot to the marker (it takes about 1.4e9 virtual ns).
const MAX_INSTRUCTIONS: u64 = 12_000_000_000;
/// Host-time budget for each side on a loaded 2-core machine.
const MAX_WALL: Duration = Duration::from_secs(600);

/// QEMU's CPU: Ivy Bridge (family 6 model 58 stepping 9, as Ferrite) with what Ferrite does not
/// advertise turned off (DE, MCE, MCA, PSE36, x2APIC, TSC deadline, AVX, F16C, ARAT) and what it
/// adds turned on (MOVBE, BMI1/2, ADX, SMAP, ABM, 1 GiB pages, XGETBV1), and Ferrite's brand string.
/// TCG (QEMU 7.2) lacks three of Ferrite's bits: RDSEED, XSAVEC and IA32_ARCH_CAPABILITIES.
const QEMU_CPU: &str = "IvyBridge,-de,-mce,-mca,-pse36,-x2apic,-tsc-deadline,-avx,-f16c,+movbe,+bmi1,\
+bmi2,+adx,+smap,+abm,+pdpe1gb,+xgetbv1,-arat,model-id=Ferrite Virtual CPU";

/// The board Ferrite is: i440FX/PIIX3, 512 MiB, no HPET, no VGA, no NIC, COM1 and COM2.
fn qemu_args(kernel: &str, initrd: &str) -> Vec<String> {
    [
        "-M",
        "pc,hpet=off",
        "-nodefaults",
        "-m",
        "512",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-serial",
        "null",
        "-no-reboot",
        "-cpu",
        QEMU_CPU,
        "-kernel",
        kernel,
        "-initrd",
        initrd,
        "-append",
        CMDLINE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Lines that report a problem, a missing feature or a fallback. Matched case-sensitively.
const WARN_EXACT: &[&str] = &["WARNING", "Oops", "BUG", "Call Trace", "[Firmware Bug]", "[Firmware Warn]"];
/// Matched case-insensitively.
const WARN_ANY_CASE: &[&str] = &[
    "unknown",
    "unsupported",
    "not supported",
    "fail",
    "error",
    "fallback",
    "falling back",
    "using software",
    "firmware bug",
    "invalid",
    "not present",
    "unable",
    "cannot",
    "can't",
    "timeout",
    "timed out",
    "broken",
    "bogus",
    "mismatch",
];

fn is_warning(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    WARN_EXACT.iter().any(|p| line.contains(p)) || WARN_ANY_CASE.iter().any(|p| lower.contains(p))
}

/// A log line without what differs between runs and machines: the carriage return, terminal escape
/// sequences, the `[    1.234567] ` timestamp; hexadecimal numbers become `0x#` and decimal runs `#`.
fn normalise(line: &str) -> String {
    // Terminal escapes: ESC c, ESC [ params final-byte.
    let mut clean = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                while let Some(&n) = chars.peek() {
                    chars.next();
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c != '\r' {
            clean.push(c);
        }
    }
    let mut s = clean.trim();
    if let Some(rest) = s.strip_prefix('[')
        && let Some((stamp, after)) = rest.split_once(']')
        && stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        s = after.trim_start();
    }
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'0' && b.get(i + 1) == Some(&b'x') && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) {
            out.push_str("0x#");
            i += 2;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
        } else if b[i].is_ascii_digit() {
            out.push('#');
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out.trim_end().to_string()
}

/// The warning-like lines of `ferrite`'s log whose normalised form is not in `qemu`'s log.
fn unexplained(ferrite: &str, qemu: &str) -> Vec<String> {
    let theirs: std::collections::HashSet<String> = qemu.lines().map(normalise).collect();
    ferrite
        .lines()
        .filter(|l| is_warning(l))
        .filter(|l| !theirs.contains(&normalise(l)))
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// The kernel's log up to the marker: what follows it is the shell's.
fn up_to_marker(log: &str) -> &str {
    log.find(MARKER).map_or(log, |i| &log[..i])
}

fn images() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite")).arg("images").output().expect("run ferrite images");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Linux guest images could not be made, so Linux was not booted.\n`ferrite images` said: {}\n\
         It needs apt-get with Debian's package lists (scripts/setup.sh) and access to Debian's mirrors.",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("`ferrite images` printed no {k}=: {stdout}"))
            .to_string()
    };
    (field("kernel"), field("initrd"))
}

/// QEMU booting the same images, its COM1 collected by a thread.
struct Qemu {
    child: std::process::Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Qemu {
    fn start(kernel: &str, initrd: &str) -> Qemu {
        let mut child = Command::new("qemu-system-x86_64")
            .args(qemu_args(kernel, initrd))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "qemu-system-x86_64 could not be run ({e}); the comparison with QEMU needs it: \
                     scripts/setup.sh installs qemu-system-x86"
                )
            });
        let mut stdout = child.stdout.take().expect("QEMU's stdout");
        let out = Arc::new(Mutex::new(Vec::new()));
        let o2 = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Qemu { child, out }
    }

    /// Waits for the marker (or QEMU's exit, or the deadline) and stops QEMU; returns its console.
    fn finish(&mut self, start: Instant) -> String {
        loop {
            let text = String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned();
            let exited = self.child.try_wait().ok().flatten();
            if text.contains(MARKER) || exited.is_some() || start.elapsed() > MAX_WALL {
                let _ = self.child.kill();
                let _ = self.child.wait();
                assert!(
                    text.contains(MARKER),
                    "QEMU did not reach {MARKER} (exit {exited:?}, {:?}); console:\n{text}",
                    start.elapsed()
                );
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Qemu {
    /// A failure on Ferrite's side must not leave QEMU running at the guest's shell prompt.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn boot_ferrite(kernel: Vec<u8>, initrd: Vec<u8>) -> String {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(512 << 20, Vec::new());
    cfg.com1 = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.linux =
        Some(LinuxBoot { kernel, initrd: Some(initrd), cmdline: CMDLINE.into(), ..Default::default() });
    let mut m = Machine::new(cfg).expect("machine");
    let start = Instant::now();
    let text = || String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    loop {
        if text().contains(MARKER) {
            println!(
                "Ferrite: {MARKER} after {} instructions, {:.1} s host time",
                m.cpu.icount,
                start.elapsed().as_secs_f64()
            );
            return text();
        }
        assert!(
            start.elapsed() < MAX_WALL,
            "no {MARKER} under Ferrite after {:?}:\n{}",
            start.elapsed(),
            text()
        );
        match m.run(Some((m.cpu.icount + 50_000_000).min(MAX_INSTRUCTIONS))) {
            RunOutcome::InstructionLimit if m.cpu.icount >= MAX_INSTRUCTIONS => {
                panic!("instruction budget spent before {MARKER}; console:\n{}", text())
            }
            RunOutcome::InstructionLimit => {}
            other => panic!("Ferrite stopped before {MARKER}: {other:?}\nconsole:\n{}", text()),
        }
    }
}

#[test]
fn linux_log_shows_the_devices_and_no_warning_qemu_lacks() {
    let (kernel_path, initrd_path) = images();
    let start = Instant::now();
    // QEMU runs in its own process meanwhile.
    let mut qemu = Qemu::start(&kernel_path, &initrd_path);
    let kernel = std::fs::read(&kernel_path).expect("read kernel");
    let initrd = std::fs::read(&initrd_path).expect("read initrd");
    let ferrite_console = boot_ferrite(kernel, initrd);
    let qemu_console = qemu.finish(start);
    println!("both logs after {:.1} s", start.elapsed().as_secs_f64());
    let ferrite = up_to_marker(&ferrite_console);
    let qemu = up_to_marker(&qemu_console);

    let has = |want: &str| ferrite.lines().any(|l| l.contains(want));
    let mut missing = Vec::new();
    for want in [
        // Local APIC: the MADT's LINT1 NMI entry, the switch to APIC mode, the timer's check through it.
        "ACPI: LAPIC_NMI (acpi_id[0xff] dfl dfl lint[0x1])",
        "APIC: Switch to symmetric I/O mode setup",
        "..TIMER: vector=0x30 apic1=0 pin1=2 apic2=-1 pin2=-1",
        // I/O APIC.
        "IOAPIC[0]: apic_id 0, version 32, address 0xfec00000, GSI 0-23",
        "ACPI: Using IOAPIC for interrupt routing",
        // ACPI tables and the interpreter.
        "ACPI: RSDP 0x",
        "ACPI: XSDT 0x",
        "ACPI: FACP 0x",
        "ACPI: APIC 0x",
        "ACPI: DSDT 0x",
        "ACPI: Interpreter enabled",
        // SMBIOS.
        "DMI: Ferrite",
        // The TSC's rate from CPUID leaf 15H (TSC = core crystal = 1 GHz), exactly: a calibration
        // against the PIT would give 999.99x MHz (machine/tests/linux_entry.rs checks the PIT's
        // channel 2 against the TSC the way Linux's quick_pit_calibrate does).
        "tsc: Detected 1000.000 MHz processor",
        // Both UARTs as 16550A.
        "ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A",
        "ttyS1 at I/O 0x2f8 (irq = 3, base_baud = 115200) is a 16550A",
        // The i8042 and the keyboard behind it (atkbd's GET ID answered 0xAB 0x41).
        "serio: i8042 KBD port at 0x60,0x64 irq 1",
        "serio: i8042 AUX port at 0x60,0x64 irq 12",
        "input: AT Translated Set 2 keyboard as /devices/platform/i8042/serio0/input/input0",
    ] {
        if !has(want) {
            missing.push(want);
        }
    }
    // The QEMU side must be a real log too, else everything would look "explained".
    assert!(qemu.lines().any(|l| l.contains("Linux version")), "QEMU's console has no kernel log:\n{qemu}");
    let bad = unexplained(ferrite, qemu);
    assert!(
        missing.is_empty() && bad.is_empty(),
        "Ferrite's kernel log lacks:\n{}\n\nlines of Ferrite's kernel log that report a problem or fallback \
         and do not appear in QEMU's log for the same hardware:\n{}\n\nFerrite's log:\n{ferrite}\n\n\
         QEMU's log:\n{qemu}",
        missing.join("\n"),
        bad.join("\n")
    );
}

#[test]
fn comparison_flags_what_qemu_does_not_print() {
    let ferrite = "[    0.237560] Performance Events: unsupported p6 CPU model 58 no PMU driver, software events only.\r\n\
                   [    0.330293] acpi PNP0A03:00: fail to add MMCONFIG information\n\
                   [    0.000000] DMI not present or invalid.\n\
                   [    0.458653] intel_pstate: CPU model not supported\n\
                   [    1.000000] i8042: Can't read CTR while initializing i8042\n\
                   [    0.329014] PCI: Using host bridge windows from ACPI; if necessary, use \"pci=nocrs\" and report a bug\n";
    let qemu = "\x1b[2J[    0.990247] Performance Events: unsupported p6 CPU model 58 no PMU driver, software events only.\n\
                [    1.326264] acpi PNP0A03:00: fail to add MMCONFIG information\n\
                [    1.931866] intel_pstate: CPU model not supported\n\
                [    1.274476] PCI: Using host bridge windows from ACPI; if necessary, use \"pci=nocrs\" and report a bug\n";
    assert_eq!(
        unexplained(ferrite, qemu),
        [
            "[    0.000000] DMI not present or invalid.",
            "[    1.000000] i8042: Can't read CTR while initializing i8042"
        ]
    );
    // Numbers are normalised, words are not.
    assert_eq!(normalise("[   12.5] ttyS1 at I/O 0x2f8 (irq = 3)"), "ttyS# at I/O 0x# (irq = #)");
    assert_ne!(normalise("model 58 unsupported"), normalise("model 58 not supported"));
    assert!(is_warning("Fallback order for Node 0: 0") && !is_warning("ttyS0 is a 16550A"));
    assert_eq!(up_to_marker("a\nFERRITE-READY\nWARNING"), "a\n");
}
