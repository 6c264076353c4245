//! The GDB stub, end to end: Debian's gdb in batch mode against `ferrite run --gdb ... --wait-gdb` on a
//! small ROM assembled here (breakpoints, stepping, registers, a watchpoint, reverse-stepi and
//! reverse-continue landing on exact instruction counts, under interp and jit), and a malformed and
//! an oversized packet closing their connection while the guest runs on.
//!
//! The ROM (real mode, CS base 0xF0000): the far jump at the reset vector, 3 set-up instructions and
//! 249 NOPs, so the loop at IP 0x100 is first reached after 253 instructions; each iteration is
//! `inc word [0x600]`, `mov al, '0'+n`, `out 0xE9, al`, `dec cx`, `jnz` (5 instructions, the loop
//! head at 253 + 5k), 10 iterations, then `K` on 0xE9 and exit status 0x21 through port 0xF4.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ROM_ASM: &str = r#"
bits 16
org 0
start:
        xor ax, ax
        mov ds, ax
        mov cx, 10
        times 0x100 - ($ - $$) nop
top:
        inc word [0x600]
        mov al, '0'
        out 0xe9, al
        dec cx
        jnz top
        mov al, 'K'
        out 0xe9, al
        mov al, 0x10
        out 0xf4, al
        hlt
        times 0xfff0 - ($ - $$) db 0
        jmp 0xf000:start
        times 0x10000 - ($ - $$) db 0
"#;

/// First arrival at the loop head (IP 0x100).
const LOOP_FIRST: u64 = 253;
/// Instructions per iteration.
const ITER: u64 = 5;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrite-gdb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Assembles the ROM; `None` (the test says why) without nasm.
fn rom(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("rom.asm");
    let bin = dir.join("rom.bin");
    std::fs::write(&src, ROM_ASM).unwrap();
    match Command::new("nasm").args(["-f", "bin", "-o"]).arg(&bin).arg(&src).status() {
        Ok(s) if s.success() => Some(bin),
        Ok(s) => panic!("nasm failed: {s}"),
        Err(e) => {
            eprintln!("skipped: nasm not available ({e}); scripts/setup.sh installs it");
            None
        }
    }
}

fn have_gdb() -> bool {
    let ok = Command::new("gdb").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: gdb not available; scripts/setup.sh installs it");
    }
    ok
}

fn spawn(rom: &Path, sock: &Path, extra: &[&str]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrite"));
    c.arg("run")
        .arg("--memory")
        .arg("16M")
        .arg("--rom")
        .arg(rom)
        .arg("--gdb")
        .arg(format!("unix:{}", sock.display()))
        .arg("--wait-gdb");
    c.args(extra).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("run ferrite");
    for _ in 0..500 {
        if sock.exists() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("ferrite did not create {}", sock.display());
}

fn finish(mut child: Child) -> (i32, String, String) {
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), out, err)
}

/// Runs gdb in batch mode with `cmds` against the socket; returns its output.
fn gdb(sock: &Path, cmds: &[String]) -> String {
    let mut c = Command::new("gdb");
    c.args(["-batch", "-nx", "-ex", "set pagination off", "-ex"])
        .arg(format!("target remote {}", sock.display()));
    for cmd in cmds {
        c.arg("-ex").arg(cmd);
    }
    let out = c.output().expect("run gdb");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The values gdb printed for `p/x $icount` etc., in order (lines `$N = VALUE`).
fn printed(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            l.strip_prefix('$').and_then(|r| r.split_once(" = ")).map(|(_, v)| v.trim().to_string())
        })
        .collect()
}

fn session(accel: &str) {
    let dir = tmpdir(accel);
    let Some(rom) = rom(&dir) else { return };
    if !have_gdb() {
        return;
    }
    let sock = dir.join("gdb.sock");
    // The JIT translates a block on its first entry, so the loop runs as generated code.
    let child =
        spawn(&rom, &sock, &["--accel", accel, "--jit-threshold", "1", "--checkpoint-interval", "100"]);
    let p = |e: &str| format!("p {e}");
    let cmds: Vec<String> = vec![
        // At the reset vector, nothing retired.
        p("$icount"),
        p("/x $pc"),
        p("/x $cs_base"),
        p("/x $cs"),
        // Stepping.
        "stepi".into(),
        p("$icount"),
        p("/x $cs_base"),
        // A breakpoint at the loop head (IP 0x100), hit twice.
        "break *0x100".into(),
        "continue".into(),
        p("$icount"),
        "continue".into(),
        p("$icount"),
        // A register is written and read back.
        "set $rbx = 0x1234".into(),
        p("/x $rbx"),
        // A write watchpoint on the counter: met by the next `inc`, stop after it.
        "delete".into(),
        "watch *(short*)0x600".into(),
        "continue".into(),
        p("$icount"),
        p("*(short*)0x600"),
        "delete".into(),
        // Backwards: one instruction, then to the previous breakpoint hit.
        "reverse-stepi".into(),
        p("$icount"),
        p("*(short*)0x600"),
        "break *0x100".into(),
        "reverse-continue".into(),
        p("$icount"),
        "reverse-continue".into(),
        p("$icount"),
        // Forwards again from the start of the history: the same path (the register write went
        // with the past it was made in).
        "continue".into(),
        p("$icount"),
        p("*(short*)0x600"),
        "delete".into(),
        "monitor info history".into(),
        "continue".into(),
    ];
    let out = gdb(&sock, &cmds);
    let v = printed(&out);
    let want: Vec<String> = [
        "0".to_string(),
        "0xfff0".into(),
        "0xffff0000".into(),
        "0xf000".into(),
        "1".into(),
        "0xf0000".into(),
        LOOP_FIRST.to_string(),
        (LOOP_FIRST + ITER).to_string(),
        "0x1234".into(),
        (LOOP_FIRST + ITER + 1).to_string(),
        "2".into(),
        (LOOP_FIRST + ITER).to_string(),
        "1".into(),
        LOOP_FIRST.to_string(),
        "0".into(),
        LOOP_FIRST.to_string(),
        "0".into(),
    ]
    .into();
    assert_eq!(v, want, "gdb output:\n{out}");
    // The second reverse-continue had no earlier hit: it stops at the start of the history.
    assert!(out.contains("No more reverse-execution history"), "gdb output:\n{out}");
    let (code, stdout, stderr) = finish(child);
    // The guest finished as without a debugger; what re-execution ran again was not printed twice.
    assert_eq!(code, 0x21, "stderr:\n{stderr}\ngdb:\n{out}");
    assert_eq!(stdout, "0000000000K", "stderr:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gdb_batch_session_under_interp() {
    session("interp");
}

#[test]
fn gdb_batch_session_under_jit() {
    session("jit");
}

/// A malformed packet (bad checksum) and an oversized one each close their connection with a logged
/// reason; the guest, held by --wait-gdb, runs on to its normal end.
#[test]
fn malformed_and_oversized_packets_close_the_connection() {
    let dir = tmpdir("bad");
    let Some(rom) = rom(&dir) else { return };
    for (what, packet) in [
        ("malformed", b"$qSupported#00".to_vec()),
        ("oversized", {
            let mut p = b"$X0,1:".to_vec();
            p.extend(std::iter::repeat_n(b'a', 64 * 1024));
            p.extend_from_slice(b"#00");
            p
        }),
    ] {
        let sock = dir.join(format!("{what}.sock"));
        let child = spawn(&rom, &sock, &[]);
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // The stub may close the socket before all of it is written.
        let _ = s.write_all(&packet);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let (code, stdout, stderr) = finish(child);
        assert!(stderr.contains("closing the connection"), "{what}: {stderr}");
        assert_eq!(code, 0x21, "{what}: {stderr}");
        assert_eq!(stdout, "0000000000K", "{what}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
