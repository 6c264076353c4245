//! `ferrite run --record/--snapshot-at/--restore/--lockstep` and `ferrite replay` from the command
//! line: a ROM recorded and replayed under both engines prints the same and ends in the same state; a
//! corrupt, a truncated and an other-version recording each give one line and exit status 2; an
//! injected divergence is reported at its count by lockstep and by replay; and a Linux session with
//! shell input typed through a pipe, with pauses, replays under the JIT and the interpreter with the
//! same console, count and final hash, also from a snapshot taken mid-run. A bounded Linux boot runs
//! in lockstep without a difference, and so does every test ROM, whose plain runs under each engine
//! end with the lockstep run's count and hash; a lockstep run is recorded and replays; the stdin
//! monitor escape keeps the monitor's keys out of the guest and out of the recording. A Linux boot
//! prefix replays to the same state however the replay's runs are sliced.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ferrite(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ferrite");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("ferrite-cli-rr-{}-{name}", std::process::id()))
        .to_string_lossy()
        .into_owned()
}

fn rom(name: &str) -> String {
    let p = temp(&format!("{name}.bin"));
    std::fs::write(&p, test_roms::rom(name).expect("ROM")).unwrap();
    p
}

/// The `--stats` state hash and instruction count printed on stderr.
fn count_and_hash(stderr: &str) -> (String, String) {
    let hash = stderr.lines().find_map(|l| l.strip_prefix("ferrite: state hash ")).unwrap_or_default();
    let count = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("ferrite: ").and_then(|r| r.split_once(" instructions in ")).map(|(n, _)| n)
        })
        .unwrap_or_default();
    (count.to_string(), hash.to_string())
}

#[test]
fn a_rom_recorded_replays_under_both_engines_and_in_lockstep() {
    let r = rom("chip_rtc");
    let rec = temp("rtc.rec");
    let snap = temp("rtc.snap");
    let (code, out, err) = ferrite(&[
        "run",
        "--rom",
        &r,
        "--memory",
        "32M",
        "--stats",
        "--record",
        &rec,
        "--record-interval",
        "2000000",
        "--snapshot-at",
        "5000000",
        &snap,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ferrite: recorded"), "{err}");
    let want = count_and_hash(&err);
    assert!(!want.1.is_empty(), "{err}");
    for accel in ["interp", "jit"] {
        let (c, o, e) = ferrite(&["replay", &rec, "--accel", accel, "--stats"]);
        assert_eq!((c, &o), (0, &out), "{accel}: {e}");
        assert_eq!(count_and_hash(&e), want, "{accel}: {e}");
        assert!(e.contains("matched the recording"), "{e}");
    }
    let (c, o, e) = ferrite(&["replay", &rec, "--lockstep", "--lockstep-interval", "1000000"]);
    assert_eq!((c, &o), (0, &out), "{e}");
    // From the snapshot: the rest of the run, to the same end.
    let (c, o, e) = ferrite(&["replay", &rec, "--restore", &snap, "--stats"]);
    assert_eq!(c, 0, "{e}");
    assert!(out.ends_with(&o), "the restored replay prints the end of the output");
    assert_eq!(count_and_hash(&e), want, "{e}");
    // A plain run restored from the snapshot under the other engine ends the same way.
    let (c, o, e) =
        ferrite(&["run", "--rom", &r, "--memory", "32M", "--accel", "jit", "--restore", &snap, "--stats"]);
    assert_eq!(c, 1, "{e}");
    assert!(out.ends_with(&o));
    assert_eq!(count_and_hash(&e), want, "{e}");
    for f in [&r, &rec, &snap] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn corrupt_truncated_and_other_version_recordings_are_one_line_and_exit_2() {
    let r = rom("smoke");
    let rec = temp("smoke.rec");
    let (code, _, err) = ferrite(&["run", "--rom", &r, "--memory", "32M", "--record", &rec]);
    assert_eq!(code, 1, "{err}");
    let good = std::fs::read(&rec).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 3].to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("not a Ferrite recording", b"hello".to_vec()),
        ("not a Ferrite recording", Vec::new()),
    ];
    let mut corrupt = good.clone();
    corrupt[40] ^= 0x40;
    cases.push(("corrupt", corrupt));
    let mut v9 = good.clone();
    v9[8] = 9;
    cases.push(("version 9", v9));
    for (want, bytes) in cases {
        let p = temp("bad.rec");
        std::fs::write(&p, &bytes).unwrap();
        let (code, out, err) = ferrite(&["replay", &p]);
        assert_eq!(code, 2, "{want}: {err}");
        assert!(out.is_empty(), "{want}: nothing replayed");
        assert_eq!(err.lines().count(), 1, "{want}: one line: {err}");
        assert!(err.contains(want), "{want}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, err) = ferrite(&["replay", &temp("missing.rec")]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    // A recorded image that changed since is refused the same way.
    std::fs::write(&r, test_roms::rom("chip_rtc").unwrap()).unwrap();
    let (code, _, err) = ferrite(&["replay", &rec]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(err.contains("firmware is not what was recorded"), "{err}");
    let _ = std::fs::remove_file(&r);
    let _ = std::fs::remove_file(&rec);
}

#[test]
fn an_injected_divergence_is_reported_at_its_count() {
    let r = rom("chip_pit_pic");
    let (code, _, err) = ferrite(&[
        "run",
        "--rom",
        &r,
        "--memory",
        "32M",
        "--lockstep",
        "--lockstep-interval",
        "3000000",
        "--debug-inject-divergence",
        "4567891",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("first divergence: the states first differ after instruction 4567891 "), "{err}");
    let rec = temp("pit.rec");
    let (code, _, err) =
        ferrite(&["run", "--rom", &r, "--memory", "32M", "--record", &rec, "--record-interval", "1000000"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = ferrite(&["replay", &rec, "--accel", "jit", "--debug-inject-divergence", "2345678"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("mismatch: state differs from the recording at count 3000000"), "{err}");
    assert!(err.contains("RAM"), "{err}");
    assert!(err.contains("first divergence: the states first differ after instruction 2345678 "), "{err}");
    let _ = std::fs::remove_file(&r);
    let _ = std::fs::remove_file(&rec);
}

/// CI's lockstep and determinism check over the whole ROM suite, through the CLI: every ROM runs
/// under `ferrite run --lockstep` (the JIT's and the interpreter's whole states compared every 2M
/// instructions) without a difference, and a plain run under each engine ends with the same exit,
/// output, count and state hash as the lockstep run, so the same guest run twice gives the same count
/// and hash under the interpreter and under the JIT. Bounded at 100M instructions a ROM (a ROM
/// that runs longer, such as the `bench_int` benchmark, is compared at that bound).
#[test]
fn every_rom_runs_in_lockstep_and_twice_alike_under_each_engine() {
    let mut failures = Vec::new();
    for (name, image) in test_roms::ROMS {
        let path = temp(&format!("suite-{name}.bin"));
        std::fs::write(&path, image).unwrap();
        let mut base =
            vec!["run", "--rom", &path, "--memory", "32M", "--stats", "--max-instructions", "100000000"];
        // The ROMs' `; ferrite-devices:` lines.
        if *name == "chip_msi" {
            base.extend(["--device", "edu"]);
        }
        let mut ls = base.clone();
        ls.extend(["--lockstep", "--lockstep-interval", "2000000"]);
        let (code, out, err) = ferrite(&ls);
        let want = count_and_hash(&err);
        if !err.contains("lockstep: jit and interp agreed") || want.1.is_empty() {
            failures.push(format!("{name}: lockstep: {err}"));
            continue;
        }
        for accel in ["interp", "jit"] {
            let mut plain = base.clone();
            plain.extend(["--accel", accel]);
            let (c, o, e) = ferrite(&plain);
            if (c, &o, count_and_hash(&e)) != (code, &out, want.clone()) {
                failures.push(format!("{name}: {accel} ended otherwise than the lockstep run: {e}"));
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--record` with `--lockstep`: the JIT's run is recorded while the interpreter checks it, and the
/// recording replays under each engine and in lockstep to the same count and hash; with a divergence
/// injected into the interpreter twin, lockstep still finds it at its count and the recording (the
/// JIT's run, cut where the divergence was seen) replays.
#[test]
fn a_lockstep_run_is_recorded_and_replays() {
    // Its own copy of the ROM: another test removes `rom("chip_pit_pic")`'s when it ends.
    let r = temp("ls-chip_pit_pic.bin");
    std::fs::write(&r, test_roms::rom("chip_pit_pic").expect("ROM")).unwrap();
    let rec = temp("ls.rec");
    let (code, out, err) = ferrite(&[
        "run",
        "--rom",
        &r,
        "--memory",
        "32M",
        "--stats",
        "--lockstep",
        "--lockstep-interval",
        "1500000",
        "--record",
        &rec,
        "--record-interval",
        "2000000",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("lockstep: jit and interp agreed"), "{err}");
    assert!(err.contains("ferrite: recorded"), "{err}");
    let want = count_and_hash(&err);
    assert!(!want.1.is_empty(), "{err}");
    for extra in
        [&["--accel", "interp"][..], &["--accel", "jit"], &["--lockstep", "--lockstep-interval", "700000"]]
    {
        let mut args = vec!["replay", &rec, "--stats"];
        args.extend_from_slice(extra);
        let (c, o, e) = ferrite(&args);
        assert_eq!((c, &o), (0, &out), "{extra:?}: {e}");
        if extra[0] == "--accel" {
            assert_eq!(count_and_hash(&e), want, "{extra:?}: {e}");
        }
    }
    let (code, _, err) = ferrite(&[
        "run",
        "--rom",
        &r,
        "--memory",
        "32M",
        "--lockstep",
        "--lockstep-interval",
        "3000000",
        "--debug-inject-divergence",
        "4567891",
        "--record",
        &rec,
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("first divergence: the states first differ after instruction 4567891 "), "{err}");
    let (c, _, e) = ferrite(&["replay", &rec, "--accel", "jit"]);
    assert_eq!(c, 0, "the JIT's side of the diverged run replays: {e}");
    let _ = std::fs::remove_file(&r);
    let _ = std::fs::remove_file(&rec);
}

/// A ROM that echoes every COM1 byte to the debug console and exits (status 0x21) after `q`.
const ECHO_ASM: &str = r#"
bits 16
org 0
start:
        xor ax, ax
        mov ds, ax
poll:   mov dx, 0x3fd
        in al, dx
        test al, 1
        jz poll
        mov dx, 0x3f8
        in al, dx
        out 0xe9, al
        cmp al, 'q'
        jne poll
        mov al, 0x10
        out 0xf4, al
        hlt
        times 0xfff0 - ($ - $$) db 0
        jmp 0xf000:start
        times 0x10000 - ($ - $$) db 0
"#;

/// The stdin monitor escape (QEMU's `-serial mon:stdio`), driven through a pipe with pauses: the
/// guest echoes what it gets; Ctrl-A c switches to the monitor, whose lines (`info registers`,
/// `savevm`, `xp`) run and print without reaching the guest; Ctrl-A c switches back, Ctrl-A Ctrl-A
/// sends one Ctrl-A. The run is recorded: its replay prints exactly the guest's echo (the monitor's
/// keys are not in the recording, the guest's are), and the savevm file restores with --restore.
#[test]
fn the_stdin_monitor_escape_switches_between_console_and_monitor() {
    let src = temp("echo.asm");
    let bin = temp("echo.bin");
    std::fs::write(&src, ECHO_ASM).unwrap();
    match Command::new("nasm").args(["-f", "bin", "-o", &bin, &src]).status() {
        Ok(s) => assert!(s.success(), "nasm failed"),
        Err(e) => {
            eprintln!("skipped: nasm not available ({e}); scripts/setup.sh installs it");
            return;
        }
    }
    let rec = temp("echo.rec");
    let snap = temp("echo.snap");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--rom", &bin, "--memory", "16M", "--record", &rec])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrite");
    let mut stdin = child.stdin.take().unwrap();
    let savevm = format!("savevm {snap}\n");
    let pieces: [&[u8]; 7] =
        [b"ab", b"\x01c", b"info registers\nxp /2b 0x0\n", savevm.as_bytes(), b"\x01c", b"c\x01\x01d", b"q"];
    for piece in pieces {
        stdin.write_all(piece).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0x21), "{stderr}");
    // The guest's echo, in order, around the monitor's output.
    let guest: String = stdout.chars().filter(|c| "abcdq\u{1}".contains(*c)).collect();
    assert!(stdout.starts_with("ab"), "{stdout}");
    assert!(stdout.ends_with("c\u{1}dq"), "{stdout}");
    assert!(stdout.contains("QEMU-style monitor"), "{stdout}");
    assert!(stdout.to_lowercase().contains("rip"), "info registers: {stdout}");
    assert!(stdout.contains("0000000000000000: 0x"), "xp: {stdout}");
    assert!(stdout.contains("saved ") && stdout.contains(&snap), "savevm: {stdout}");
    assert!(!stdout.contains("info registersxp"), "monitor keys reached the guest: {stdout}");
    // Replayed: only what the guest was given, in order.
    let (c, o, e) = ferrite(&["replay", &rec]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(o, "abc\u{1}dq", "the replay's guest output (monitor text: {guest:?})");
    // The monitor's savevm file is a snapshot file: a run restored from it gets only `q`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--rom", &bin, "--memory", "16M", "--restore", &snap])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrite");
    child.stdin.take().unwrap().write_all(b"q").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0x21), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "q");
    // `stop` in the monitor, then Ctrl-A x: the stopped guest quits, and the recording (which ends
    // with that quit) replays.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--rom", &bin, "--memory", "16M", "--record", &rec])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrite");
    let mut stdin = child.stdin.take().unwrap();
    for piece in [&b"xy"[..], b"\x01cstop\n", b"\x01x"] {
        stdin.write_all(piece).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("xy"), "{stderr}");
    assert!(stderr.contains("ferrite: recorded"), "{stderr}");
    let (c, o, e) = ferrite(&["replay", &rec]);
    assert_eq!((c, o.as_str()), (0, "xy"), "{e}");
    for f in [&src, &bin, &rec, &snap] {
        let _ = std::fs::remove_file(f);
    }
}

/// The Linux images (`ferrite images`), or `None` with the reason printed when they cannot be had.
fn linux_images() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite")).arg("images").output().expect("run ferrite images");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the Linux guest images could not be made (`ferrite images` needs apt-get and Debian's mirrors): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap().to_string();
    (field("kernel"), field("initrd"))
}

const CMDLINE: &str = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1 i8042.noaux tsc=reliable";

/// Waits until `pat` is in what the child printed so far.
fn wait_for(buf: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>, pat: &str, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if String::from_utf8_lossy(&buf.lock().unwrap()).contains(pat) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_linux_session_typed_through_a_pipe_replays_under_jit_and_interp() {
    let (kernel, initrd) = linux_images();
    let rec = temp("linux.rec");
    let snap = temp("linux.snap");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--kernel", &kernel, "--initrd", &initrd, "--append", CMDLINE, "--accel", "jit"])
        .args(["--memory", "256M", "--max-instructions", "20000000000", "--stats", "--record", &rec])
        .args(["--record-interval", "200000000", "--snapshot-at", "500000000", &snap])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrite");
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let o2 = out.clone();
    let reader = std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut b) {
            if n == 0 {
                break;
            }
            o2.lock().unwrap().extend_from_slice(&b[..n]);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut stdin = child.stdin.take().unwrap();
    assert!(
        wait_for(&out, "FERRITE-READY", deadline),
        "no ready marker: {}",
        String::from_utf8_lossy(&out.lock().unwrap())
    );
    // Typed in pieces with pauses: where each piece lands depends on host timing, which the recording
    // captures.
    for piece in ["echo rec", "orded-$((6*7))\n", "cat /proc/cpuinfo | grep -c proc", "essor\n"] {
        std::thread::sleep(Duration::from_millis(300));
        stdin.write_all(piece.as_bytes()).unwrap();
    }
    assert!(wait_for(&out, "recorded-42", deadline), "{}", String::from_utf8_lossy(&out.lock().unwrap()));
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"poweroff -f\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let console = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    assert_eq!(status.code(), Some(0), "{err}\n{console}");
    let want = count_and_hash(&err);
    for accel in ["jit", "interp"] {
        let (c, o, e) = ferrite(&["replay", &rec, "--accel", accel, "--stats"]);
        assert_eq!(c, 0, "{accel}: {e}");
        assert!(o == console, "{accel}: the replayed console differs:\n{o}\n--- recorded ---\n{console}");
        assert_eq!(count_and_hash(&e), want, "{accel}: {e}");
    }
    let (c, o, e) = ferrite(&["replay", &rec, "--restore", &snap, "--accel", "interp", "--stats"]);
    assert_eq!(c, 0, "{e}");
    assert!(console.ends_with(&o) && o.contains("recorded-42"), "{o}");
    assert_eq!(count_and_hash(&e), want, "{e}");
    let _ = std::fs::remove_file(&rec);
    let _ = std::fs::remove_file(&snap);
}

#[test]
fn a_bounded_linux_boot_runs_in_lockstep() {
    let (kernel, initrd) = linux_images();
    let (code, out, err) = ferrite(&[
        "run",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--append",
        CMDLINE,
        "--memory",
        "256M",
        "--max-instructions",
        "300000000",
        "--lockstep",
        "--lockstep-interval",
        "50000000",
    ]);
    assert_eq!(code, 124, "{err}\n{out}");
    assert!(err.contains("jit and interp agreed over 6 comparisons (300000000 instructions)"), "{err}");
}

#[test]
fn a_bounded_linux_boot_gives_the_same_count_and_hash_twice_under_each_engine() {
    let (kernel, initrd) = linux_images();
    let mut seen = Vec::new();
    for accel in ["interp", "interp", "jit", "jit"] {
        let (code, out, err) = ferrite(&[
            "run",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--append",
            CMDLINE,
            "--memory",
            "256M",
            "--max-instructions",
            "200000000",
            "--accel",
            accel,
            "--stats",
        ]);
        assert_eq!(code, 124, "{accel}: {err}");
        let (count, hash) = count_and_hash(&err);
        assert_eq!(count, "200000000", "{err}");
        seen.push((accel, out, hash));
    }
    for s in &seen[1..] {
        assert_eq!((&s.1, &s.2), (&seen[0].1, &seen[0].2), "{} differs from the first interp run", s.0);
    }
}

/// Where a replay's runs end: given the count, the length of the next run.
type Cut<'a> = &'a dyn Fn(u64) -> u64;

/// What a bounded Linux run ends in: the console, the count, the state hash and its parts.
type LinuxEnd = (Vec<u8>, u64, u64, machine::record::StateHashes);

/// A direct Linux boot under `accel` whose console output goes to the returned buffer.
fn linux_machine(accel: machine::Accel) -> (machine::Machine, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let (kernel, initrd) = linux_images();
    let con = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let c2 = con.clone();
    let mut cfg = machine::MachineConfig::new(256 << 20, Vec::new());
    cfg.accel = accel;
    cfg.com1 = Box::new(move |b| c2.lock().unwrap().push(b));
    cfg.linux = Some(machine::LinuxBoot {
        kernel: std::fs::read(kernel).unwrap(),
        initrd: Some(std::fs::read(initrd).unwrap()),
        cmdline: CMDLINE.into(),
        ..Default::default()
    });
    (machine::Machine::new(cfg).unwrap(), con)
}

fn linux_end(m: &machine::Machine, con: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> LinuxEnd {
    (con.lock().unwrap().clone(), m.cpu.icount, m.state_hash(), machine::record::state_hashes(m))
}

/// Replay must not depend on how the run is sliced: a Linux boot prefix run live in irregular slices
/// (the live run slices by host events), with console bytes sent before some of them (so they are
/// stamped at slice starts, not at input points), is replayed from its recorded inputs in one run and in
/// short odd slices (and, for a stretch, slices of a few instructions) under the JIT, and in one run
/// under the interpreter: the console, the count and every part of the state hash are the live run's.
#[test]
fn a_linux_boot_prefix_replays_alike_however_its_runs_are_sliced() {
    use machine::{Accel, HostEvent, RunOutcome};
    const END: u64 = 300_000_000;
    let (mut m, con) = linux_machine(Accel::Jit);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = log.clone();
    m.record_inputs(Box::new(move |s| l2.lock().unwrap().push(s.clone())));
    let (tx, rx) = std::sync::mpsc::channel();
    m.attach_input(rx);
    let lengths = [1_234_567u64, 9_876_543, 333_331, 5_000_011, 17];
    let mut typed = b"echo sliced\n".iter();
    for i in 0.. {
        if m.cpu.icount >= END {
            break;
        }
        if i % 7 == 3
            && let Some(&b) = typed.next()
        {
            tx.send(HostEvent::Input(b)).unwrap();
        }
        let to = (m.cpu.icount + lengths[i % lengths.len()]).min(END);
        assert_eq!(m.run(Some(to)), RunOutcome::InstructionLimit, "live run at {}", m.cpu.icount);
    }
    let want = linux_end(&m, &con);
    drop(m);
    let inputs = log.lock().unwrap().clone();
    let off_grid = inputs.iter().filter(|s| s.slot % machine::input::INPUT_QUANTUM != 0).count();
    assert!(off_grid >= 6, "the live run's inputs should be stamped at slice starts: {inputs:?}");
    // Slices of 1 to 13 instructions over 200,000 instructions from 150M: runs cut inside blocks, at
    // every kind of instruction.
    let tiny = |at: u64| if (150_000_000..150_200_000).contains(&at) { at % 13 + 1 } else { 7_000_003 };
    let cuts: [(&str, Accel, Cut); 4] = [
        ("one run, jit", Accel::Jit, &|_| END),
        ("slices of 7,000,003, jit", Accel::Jit, &|_| 7_000_003),
        ("slices of 1 to 13 for a stretch, jit", Accel::Jit, &tiny),
        ("one run, interp", Accel::Interp, &|_| END),
    ];
    for (what, accel, slice) in cuts {
        let (mut r, rcon) = linux_machine(accel);
        r.replay_inputs(inputs.clone());
        while r.cpu.icount < END {
            let to = (r.cpu.icount + slice(r.cpu.icount)).min(END);
            assert_eq!(r.run(Some(to)), RunOutcome::InstructionLimit, "{what} at {}", r.cpu.icount);
        }
        let got = linux_end(&r, &rcon);
        assert!(
            got.0 == want.0,
            "{what}: the console differs:\n{}\n--- live ---\n{}",
            String::from_utf8_lossy(&got.0),
            String::from_utf8_lossy(&want.0)
        );
        assert_eq!(
            (got.1, got.3.differences(&want.3), got.2),
            (want.1, vec![], want.2),
            "{what}: count, differing parts, state hash"
        );
    }
}
