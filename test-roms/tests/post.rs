//! The `post` ROM's ALU results, byte for byte, against this host's CPU.
//!
//! The ROM (src/roms/post.asm) walks real mode, 32-bit protected mode, paging faults, a task switch into
//! a v86 task and back, and runs every case of src/roms/post_cases.inc in real mode (16-bit code), in
//! protected mode (32-bit code) and in the v86 task (16-bit code again), printing one line per case on
//! COM1. Here the same cases are assembled once more as 32-bit code (nasm; the 16-bit forms get their
//! operand-size prefixes, so each case is the same operation) and run natively in a compatibility-mode
//! segment through the differential tester's sandbox; the expected line for a case is the same in each
//! of the three modes, since none of the cases depends on the mode. Undefined flags follow this host's
//! CPU, so the machine runs with `Quirks::host()`: the comparison is exact, undefined bits included.

use difftest::{CODE_ADDR, Case, Engine, MemRegion, Mode, NativeEngine, Outcome, RegState};
use machine::{Accel, Machine, MachineConfig, RunOutcome};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Arithmetic flags (CF PF AF ZF SF OF), as the ROM prints them.
const FL_ARITH: u64 = 0x8D5;

/// One case from post_cases.inc: the inputs and the instruction bytes (32-bit code).
struct HostCase {
    regs: [u32; 4], // EAX, EBX, ECX, EDX
    flags: u32,
    code: Vec<u8>,
}

/// Assembles post_cases.inc as 32-bit code with a record layout of our own: per case
/// `dd len, eax, ebx, ecx, edx, eflags` then `len` instruction bytes.
fn host_cases() -> Vec<HostCase> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/roms");
    let tmp = std::env::temp_dir().join(format!("ferrite-post-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let src = tmp.join("host_cases.asm");
    std::fs::write(
        &src,
        "bits 32\n%macro CASE 6\n dd %%e - %%s, %2, %3, %4, %5, %6\n%%s: %1\n%%e:\n%endmacro\n\
         %include \"post_cases.inc\"\n",
    )
    .unwrap();
    let bin = tmp.join("host_cases.bin");
    let st = Command::new("nasm")
        .args(["-f", "bin", "-I"])
        .arg(format!("{}/", dir.display()))
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("nasm (installed by scripts/setup.sh)");
    assert!(st.success(), "nasm failed on the host copy of post_cases.inc");
    let b = std::fs::read(&bin).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    let dword = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let len = dword(i) as usize;
        let regs = [dword(i + 4), dword(i + 8), dword(i + 12), dword(i + 16)];
        let flags = dword(i + 20);
        out.push(HostCase { regs, flags, code: b[i + 24..i + 24 + len].to_vec() });
        i += 24 + len;
    }
    out
}

/// The line the ROM prints for case `i` in `mode`, computed on the host CPU.
fn expected_lines(cases: &[HostCase]) -> Vec<String> {
    let mut native = NativeEngine::new();
    let results: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut gprs = [0u64; 16];
            gprs[0] = c.regs[0] as u64; // RAX
            gprs[3] = c.regs[1] as u64; // RBX
            gprs[1] = c.regs[2] as u64; // RCX
            gprs[2] = c.regs[3] as u64; // RDX
            gprs[4] = 0x2000_0F00; // RSP: inside the (unused) data region
            let case = Case {
                mode: Mode::Compat32,
                code_addr: CODE_ADDR,
                code: c.code.clone(),
                regs: RegState { gprs, rip: CODE_ADDR, rflags: c.flags as u64 | 0x202 },
                data: vec![MemRegion { addr: 0x2000_0000, bytes: vec![0; 4096] }],
                fp: None,
            };
            case.validate().unwrap_or_else(|e| panic!("case {i}: {e}"));
            let f = match native.run(&case) {
                Outcome::Ran(f) if f.exception.is_none() => f,
                other => panic!("case {i} did not run natively to its end: {other:?}"),
            };
            let g = |r: usize| f.gprs[r] as u32;
            format!("{:08x} {:08x} {:08x} {:08x} {:08x}", g(0), g(3), g(1), g(2), f.rflags & FL_ARITH)
        })
        .collect();
    let mut lines = Vec::new();
    for mode in ['R', 'P', 'V'] {
        for (i, r) in results.iter().enumerate() {
            lines.push(format!("{mode} {i:03} {r}"));
        }
    }
    lines
}

/// Runs the ROM under `accel` with the host's quirks; returns (outcome, debug console, COM1).
fn run_post(accel: Accel) -> (RunOutcome, String, String) {
    let image = test_roms::rom("post").expect("the post ROM");
    let dbg = Arc::new(Mutex::new(Vec::<u8>::new()));
    let com1 = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (d2, c2) = (dbg.clone(), com1.clone());
    let mut cfg = MachineConfig::new(32 << 20, image.to_vec());
    cfg.debugcon = Box::new(move |b| d2.lock().unwrap().push(b));
    cfg.com1 = Box::new(move |b| c2.lock().unwrap().push(b));
    cfg.quirks = cpu::Quirks::host();
    cfg.accel = accel;
    cfg.jit_threshold = 1;
    let mut m = Machine::new(cfg).expect("machine");
    let outcome = m.run(Some(50_000_000));
    let text = |v: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&v.lock().unwrap()).into_owned();
    (outcome, text(&dbg), text(&com1))
}

/// The expected lines, computed once per test process (both tests share them: assembling and
/// running the cases natively twice at once would also race on the temporary directory).
fn expected() -> &'static [String] {
    static EXPECTED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    EXPECTED.get_or_init(|| expected_lines(&host_cases()))
}

fn check(accel: Accel) {
    let expected = expected();
    let (outcome, dbg, com1) = run_post(accel);
    assert!(
        outcome == RunOutcome::Exited(1) && !dbg.contains("FAIL"),
        "post ROM under {accel:?}: {outcome:?}\n{dbg}"
    );
    let got: Vec<&str> = com1.lines().collect();
    let mut diffs = Vec::new();
    for (i, e) in expected.iter().enumerate() {
        let g = got.get(i).copied().unwrap_or("<missing>");
        if g != e {
            diffs.push(format!("  host:    {e}\n  ferrite: {g}"));
        }
    }
    assert_eq!(got.len(), expected.len(), "post ROM under {accel:?}: COM1 line count");
    assert!(
        diffs.is_empty(),
        "post ROM under {accel:?}: {} of {} ALU lines differ from the host CPU:\n{}",
        diffs.len(),
        expected.len(),
        diffs[..diffs.len().min(20)].join("\n")
    );
}

#[test]
fn post_alu_matches_host_cpu_under_interp() {
    check(Accel::Interp);
}

#[test]
fn post_alu_matches_host_cpu_under_jit() {
    check(Accel::Jit);
}
