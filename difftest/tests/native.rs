//! Known results of the native runner for hand-written cases.

use difftest::*;

fn case64(code: &[u8], set: &[(usize, u64)], rflags: u64) -> Case {
    let mut gprs = [0u64; 16];
    gprs[gpr::RSP] = DATA_ADDR + 0x2000;
    for &(i, v) in set {
        gprs[i] = v;
    }
    Case {
        mode: Mode::Long64,
        code_addr: CODE_ADDR,
        code: code.to_vec(),
        regs: RegState { gprs, rip: CODE_ADDR, rflags },
        data: vec![MemRegion { addr: DATA_ADDR, bytes: vec![0; DATA_SIZE as usize] }],
        fp: None,
    }
}

fn run(c: &Case) -> FinalState {
    let mut e = NativeEngine::new();
    match e.run(c) {
        Outcome::Ran(s) => s,
        o => panic!("unexpected outcome {o:?}"),
    }
}

#[test]
fn add_sets_flags() {
    // add rax, rbx: 0x7fff_ffff_ffff_ffff + 1 overflows into the sign bit.
    let s = run(&case64(&[0x48, 0x01, 0xD8], &[(gpr::RAX, i64::MAX as u64), (gpr::RBX, 1)], 0x202));
    assert_eq!(s.exception, None);
    assert_eq!(s.rip, CODE_ADDR + 3);
    assert_eq!(s.gprs[gpr::RAX], 0x8000_0000_0000_0000);
    // OF SF AF PF set, ZF CF clear, IF and bit 1 as always.
    assert_eq!(s.rflags, 0x202 | 0x800 | 0x80 | 0x10 | 0x4);
    // add rax, rbx with -1 + 1: ZF CF AF PF.
    let s = run(&case64(&[0x48, 0x01, 0xD8], &[(gpr::RAX, u64::MAX), (gpr::RBX, 1)], 0x202));
    assert_eq!(s.gprs[gpr::RAX], 0);
    assert_eq!(s.rflags, 0x202 | 0x40 | 0x10 | 0x4 | 0x1);
}

#[test]
fn initial_flags_and_registers_are_loaded() {
    // Empty sequence: the final state equals the initial state.
    let mut set = Vec::new();
    for i in 0..16 {
        if i != gpr::RSP {
            set.push((i, 0x1111_1111_1111_1111u64.wrapping_mul(i as u64 + 1)));
        }
    }
    let c = case64(&[], &set, 0x202 | 0xCD5);
    let s = run(&c);
    assert_eq!(s.gprs, c.regs.gprs);
    assert_eq!(s.rflags, c.regs.rflags);
    assert_eq!(s.rip, CODE_ADDR);
    assert_eq!(s.exception, None);
}

#[test]
fn div_by_zero_is_de() {
    // div rcx with rcx = 0
    let s = run(&case64(&[0x48, 0xF7, 0xF1], &[(gpr::RAX, 5)], 0x202));
    let e = s.exception.expect("exception");
    assert_eq!((e.vector, e.error_code, e.rip), (0, None, CODE_ADDR));
    assert_eq!(s.rip, CODE_ADDR);
    assert_eq!(s.gprs[gpr::RAX], 5);
}

#[test]
fn ud2_is_ud() {
    // nop; ud2
    let s = run(&case64(&[0x90, 0x0F, 0x0B], &[], 0x202));
    let e = s.exception.expect("exception");
    assert_eq!((e.vector, e.error_code, e.rip), (6, None, CODE_ADDR + 1));
}

#[test]
fn page_faults_report_error_code_and_address() {
    // mov rax, [rbx] with rbx unmapped: read of a not-present page, user mode -> error code 4.
    let s = run(&case64(&[0x48, 0x8B, 0x03], &[(gpr::RBX, 0x1234_5678)], 0x202));
    let e = s.exception.expect("exception");
    assert_eq!((e.vector, e.error_code, e.fault_addr), (14, Some(4), Some(0x1234_5678)));
    // mov [rbx], rax: write to unmapped -> 6.
    let s = run(&case64(&[0x48, 0x89, 0x03], &[(gpr::RBX, 0x1234_5678)], 0x202));
    assert_eq!(s.exception.unwrap().error_code, Some(6));
    // Write to the (read-only) code page -> present + write + user = 7.
    let s = run(&case64(&[0x48, 0x89, 0x03], &[(gpr::RBX, CODE_ADDR + 0x10)], 0x202));
    let e = s.exception.unwrap();
    assert_eq!((e.vector, e.error_code, e.fault_addr), (14, Some(7), Some(CODE_ADDR + 0x10)));
    // Data pages are readable and writable; stores land in the result.
    let s = run(&case64(
        &[0x48, 0x89, 0x03],
        &[(gpr::RBX, DATA_ADDR + 8), (gpr::RAX, 0x0102_0304_0506_0708)],
        0x202,
    ));
    assert_eq!(s.exception, None);
    assert_eq!(&s.data[0].bytes[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
}

#[test]
fn non_canonical_is_gp_and_int3_is_a_trap() {
    // mov rax, [rbx] with a non-canonical address -> #GP(0).
    let s = run(&case64(&[0x48, 0x8B, 0x03], &[(gpr::RBX, 0x8000_0000_0000_0000)], 0x202));
    let e = s.exception.unwrap();
    assert_eq!((e.vector, e.error_code), (13, Some(0)));
    // An int3 inside the sequence (not at its end) is #BP with RIP after it.
    let s = run(&case64(&[0xCC, 0x90], &[], 0x202));
    let e = s.exception.unwrap();
    assert_eq!((e.vector, e.rip), (3, CODE_ADDR + 1));
}

#[test]
fn compat_mode_daa_and_into() {
    let mut c = case64(&[0x00, 0xD8, 0x27], &[(gpr::RAX, 0x19), (gpr::RBX, 0x28)], 0x202); // add al,bl; daa
    c.mode = Mode::Compat32;
    let s = run(&c);
    assert_eq!(s.exception, None);
    assert_eq!(s.gprs[gpr::RAX] & 0xFF, 0x47);
    assert_eq!(s.rflags & 0x11, 0x10); // AF set, CF clear
    // into with OF set: #OF is a trap, RIP after the instruction.
    let mut c = case64(&[0xCE], &[], 0x202 | 0x800);
    c.mode = Mode::Compat32;
    let e = run(&c).exception.unwrap();
    assert_eq!((e.vector, e.rip), (4, CODE_ADDR + 1));
    // The same byte in 64-bit mode is invalid.
    let e = run(&case64(&[0xCE], &[], 0x202 | 0x800)).exception.unwrap();
    assert_eq!(e.vector, 6);
}

#[test]
fn invalid_cases_are_rejected_not_run() {
    let mut c = case64(&[0x90], &[], 0x202 | 0x100); // TF is not allowed
    assert!(c.validate().is_err());
    let mut e = NativeEngine::new();
    assert!(matches!(e.run(&c), Outcome::HarnessError(_)));
    c.regs.rflags = 0x202;
    c.data[0].addr = 0x0F00_0000; // reserved range
    assert!(matches!(e.run(&c), Outcome::HarnessError(_)));
}

#[test]
fn trampoline_decodes() {
    let t = difftest::native::trampoline_listing();
    assert!(t.contains("popfq"));
    assert!(t.contains("jmp far"));
    assert!(!t.contains("(bad)"));
}

#[test]
fn hung_child_is_reported_and_replaced() {
    let mut e = NativeEngine::new();
    e.timeout_ms = 300;
    // jmp $ never reaches the end marker.
    let o = e.run(&case64(&[0xEB, 0xFE], &[], 0x202));
    match o {
        Outcome::HarnessError(m) => assert!(m.contains("timed out"), "{m}"),
        o => panic!("expected a timeout, got {o:?}"),
    }
    // The next case runs in a fresh child.
    let s = e.run(&case64(&[0x90], &[], 0x202));
    assert_eq!(s.state().unwrap().rip, CODE_ADDR + 1);
    assert_eq!(e.children_started, 2);
}
