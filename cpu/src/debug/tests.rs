//! Debug-architecture tests on the interpreter: instruction, data and I/O breakpoints, general detect,
//! single step together with breakpoints, REP string iterations and the MOV SS hold-off.
//!
//! Every test installs a #DB handler (32-bit interrupt gate, or a 64-bit one in long mode) that logs
//! the pushed RIP and RFLAGS, DR6, DR7 and RCX, clears DR6, sets RF in the pushed RFLAGS unless DR6
//! showed only BS, and returns with IRET.

use crate::debug::dr6;
use crate::interp::{Exit, Interpreter};
use crate::state::{CpuState, cr4, flags};
use crate::testutil::*;
use iced_x86::BlockEncoderOptions;
use iced_x86::code_asm::*;

const IDT: u64 = 0x800;
const HANDLER: u64 = 0x3000;
/// Log of #DB events: count at LOG, then 32-byte records from LOG + 0x20.
const LOG: u64 = 0x20000;
/// Watched data (its own page, away from code, stack and log).
const W: u64 = DATA + 0x40;

/// Assembles at `ip`, returning the bytes and the addresses of `labels` (in the order `f` returns them).
fn asm_at(bits: u32, ip: u64, f: impl FnOnce(&mut CodeAssembler) -> Vec<CodeLabel>) -> (Vec<u8>, Vec<u64>) {
    let mut a = CodeAssembler::new(bits).expect("bitness");
    let labels = f(&mut a);
    let r = a.assemble_options(ip, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS).expect("assemble");
    let addrs = labels.iter().map(|l| r.label_ip(l).expect("label")).collect();
    (r.inner.code_buffer, addrs)
}

fn label_here(a: &mut CodeAssembler) -> CodeLabel {
    let mut l = a.create_label();
    a.set_label(&mut l).unwrap();
    a.nop().unwrap();
    l
}

struct Rec {
    rip: u64,
    rflags: u64,
    dr6: u64,
    dr7: u64,
    rcx: u64,
}

struct Dbg {
    st: CpuState,
    bus: TestBus,
    it: Interpreter,
}

impl Dbg {
    fn new(mode: TestMode, code: &[u8]) -> Dbg {
        let mut bus = TestBus::default();
        let mut st = cpu_in(mode, &mut bus);
        bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
        bus.ram[CODE as usize + code.len()] = 0xf4;
        let long = mode == TestMode::Long64;
        let handler = if long {
            asm_at(64, HANDLER, |a| {
                a.push(rax).unwrap();
                a.push(rbx).unwrap();
                a.mov(rbx, qword_ptr(LOG)).unwrap();
                a.shl(rbx, 5).unwrap();
                a.mov(rax, qword_ptr(rsp + 16)).unwrap();
                a.mov(qword_ptr(rbx + (LOG + 0x20) as i32), rax).unwrap();
                a.mov(rax, qword_ptr(rsp + 32)).unwrap();
                a.mov(dword_ptr(rbx + (LOG + 0x28) as i32), eax).unwrap();
                a.mov(rax, dr6).unwrap();
                a.mov(dword_ptr(rbx + (LOG + 0x2c) as i32), eax).unwrap();
                a.mov(rax, dr7).unwrap();
                a.mov(dword_ptr(rbx + (LOG + 0x30) as i32), eax).unwrap();
                a.mov(qword_ptr(rbx + (LOG + 0x38) as i32), rcx).unwrap();
                a.inc(qword_ptr(LOG)).unwrap();
                let mut skip = a.create_label();
                a.mov(rax, dr6).unwrap();
                a.and(eax, 0x400f).unwrap();
                a.cmp(eax, 0x4000).unwrap();
                a.je(skip).unwrap();
                a.or(qword_ptr(rsp + 32), 0x10000).unwrap();
                a.set_label(&mut skip).unwrap();
                a.xor(eax, eax).unwrap();
                a.mov(dr6, rax).unwrap();
                a.pop(rbx).unwrap();
                a.pop(rax).unwrap();
                a.iretq().unwrap();
                vec![]
            })
        } else {
            asm_at(32, HANDLER, |a| {
                a.push(eax).unwrap();
                a.push(ebx).unwrap();
                a.mov(ebx, dword_ptr(LOG as u32)).unwrap();
                a.shl(ebx, 5).unwrap();
                a.mov(eax, dword_ptr(esp + 8)).unwrap();
                a.mov(dword_ptr(ebx + (LOG + 0x20) as i32), eax).unwrap();
                a.mov(eax, dword_ptr(esp + 16)).unwrap();
                a.mov(dword_ptr(ebx + (LOG + 0x28) as i32), eax).unwrap();
                a.mov(eax, dr6).unwrap();
                a.mov(dword_ptr(ebx + (LOG + 0x2c) as i32), eax).unwrap();
                a.mov(eax, dr7).unwrap();
                a.mov(dword_ptr(ebx + (LOG + 0x30) as i32), eax).unwrap();
                a.mov(dword_ptr(ebx + (LOG + 0x38) as i32), ecx).unwrap();
                a.inc(dword_ptr(LOG as u32)).unwrap();
                let mut skip = a.create_label();
                a.mov(eax, dr6).unwrap();
                a.and(eax, 0x400f).unwrap();
                a.cmp(eax, 0x4000).unwrap();
                a.je(skip).unwrap();
                a.or(dword_ptr(esp + 16), 0x10000).unwrap();
                a.set_label(&mut skip).unwrap();
                a.xor(eax, eax).unwrap();
                a.mov(dr6, eax).unwrap();
                a.pop(ebx).unwrap();
                a.pop(eax).unwrap();
                a.iretd().unwrap();
                vec![]
            })
        }
        .0;
        bus.ram[HANDLER as usize..HANDLER as usize + handler.len()].copy_from_slice(&handler);
        // Gate for vector 1 (interrupt gate, DPL0, selector 0x08).
        let off = HANDLER;
        let lo = (off & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((off >> 16) << 48);
        if long {
            bus.ram[IDT as usize + 16..IDT as usize + 24].copy_from_slice(&lo.to_le_bytes());
            st.idtr.limit = 0x1ff;
        } else {
            bus.ram[IDT as usize + 8..IDT as usize + 16].copy_from_slice(&lo.to_le_bytes());
            st.idtr.limit = 0xff;
        }
        st.idtr.base = IDT;
        Dbg { st, bus, it: Interpreter::new() }
    }

    fn run(&mut self) -> Exit {
        self.it.run(&mut self.st, &mut self.bus, 100_000)
    }

    fn rd(&self, a: u64, n: usize) -> u64 {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.bus.ram[a as usize..a as usize + n]);
        u64::from_le_bytes(b)
    }

    fn log(&self) -> Vec<Rec> {
        (0..self.rd(LOG, 4))
            .map(|k| {
                let r = LOG + 0x20 + k * 32;
                Rec {
                    rip: self.rd(r, 8) & if self.st.code_bits() == 64 { u64::MAX } else { 0xffff_ffff },
                    rflags: self.rd(r + 8, 4),
                    dr6: self.rd(r + 12, 4),
                    dr7: self.rd(r + 16, 4),
                    rcx: self.rd(r + 24, 4),
                }
            })
            .collect()
    }
}

/// DR7 for breakpoint `n` with R/W `rw` and LEN field `len`, locally enabled.
fn dr7_for(n: usize, rw: u64, len: u64) -> u64 {
    0x400 | (1 << (2 * n)) | (rw << (16 + 4 * n)) | (len << (18 + 4 * n))
}

/// LEN field for a length in bytes.
fn len_field(bytes: u64) -> u64 {
    match bytes {
        1 => 0,
        2 => 1,
        8 => 2,
        _ => 3,
    }
}

#[test]
fn instruction_breakpoint_faults_before_and_rf_resumes() {
    for mode in [TestMode::Prot32, TestMode::Long64] {
        let bits = if mode == TestMode::Long64 { 64 } else { 32 };
        let (code, l) = asm_at(bits, CODE, |a| {
            a.mov(eax, 5).unwrap();
            a.nop().unwrap();
            let brk = label_here(a); // a NOP in the middle of the block
            a.add(eax, 1).unwrap();
            a.add(eax, 1).unwrap();
            vec![brk]
        });
        let mut m = Dbg::new(mode, &code);
        m.st.dr[0] = l[0];
        m.st.dr[7] = dr7_for(0, 0, 0);
        assert_eq!(m.run(), Exit::Halted, "{mode:?}");
        let log = m.log();
        assert_eq!(log.len(), 1, "{mode:?}: one #DB, and RF let the instruction run");
        assert_eq!(log[0].rip, l[0], "{mode:?}: fault: RIP of the instruction");
        assert_eq!(log[0].rflags & flags::RF, 0, "{mode:?}: instruction-breakpoint #DB pushes RF as it was");
        assert_eq!(log[0].dr6 & 0xf, 1, "{mode:?}: B0");
        assert_eq!(m.st.gpr[0] as u32, 7, "{mode:?}");
        assert_eq!(m.st.rflags & flags::RF, 0, "{mode:?}: RF cleared after the instruction");
    }
}

#[test]
fn disabled_or_rf_suppressed_instruction_breakpoints_do_not_fire() {
    let (code, l) = asm_at(32, CODE, |a| {
        let brk = label_here(a);
        a.mov(eax, 1).unwrap();
        vec![brk]
    });
    // Address set but L0/G0 clear.
    let mut m = Dbg::new(TestMode::Prot32, &code);
    m.st.dr[0] = l[0];
    m.st.dr[7] = 0x400; // R/W0 = 00, L0 and G0 clear
    assert_eq!(m.run(), Exit::Halted);
    assert_eq!(m.log().len(), 0);
    // Enabled, but RF is set on the first instruction.
    let mut m = Dbg::new(TestMode::Prot32, &code);
    m.st.dr[0] = l[0];
    m.st.dr[7] = dr7_for(0, 0, 0) | 0x300; // LE/GE are ignored
    m.st.rflags |= flags::RF;
    assert_eq!(m.run(), Exit::Halted);
    assert_eq!(m.log().len(), 0);
    assert_eq!(m.st.gpr[0], 1);
}

#[test]
fn data_write_breakpoints_of_each_length_trap_after_the_access() {
    for mode in [TestMode::Prot32, TestMode::Long64] {
        let bits = if mode == TestMode::Long64 { 64 } else { 32 };
        for len in [1u64, 2, 4, 8] {
            // Offsets relative to the (aligned) breakpoint and whether a 1-byte write there hits.
            let cases = [(-1i64, false), (0, true), (len as i64 - 1, true), (len as i64, false)];
            for (off, hit) in cases {
                let (code, l) = asm_at(bits, CODE, |a| {
                    a.mov(byte_ptr(W.wrapping_add(off as u64)), 0x55).unwrap();
                    let after = label_here(a);
                    a.mov(eax, 1).unwrap();
                    vec![after]
                });
                let mut m = Dbg::new(mode, &code);
                // The low address bits beyond the length's alignment are ignored.
                m.st.dr[1] = W + (len - 1);
                m.st.dr[7] = dr7_for(1, 1, len_field(len));
                assert_eq!(m.run(), Exit::Halted);
                let log = m.log();
                assert_eq!(log.len(), hit as usize, "{mode:?} len {len} off {off}");
                if hit {
                    assert_eq!(log[0].rip, l[0], "trap: RIP after the instruction");
                    assert_eq!(log[0].dr6 & 0xf, 2, "B1");
                    assert_eq!(log[0].rflags & flags::RF, 0);
                }
                assert_eq!(m.bus.ram[W.wrapping_add(off as u64) as usize], 0x55, "the write happened");
            }
            // A wider access that overlaps the watched bytes from below hits; a read does not (R/W=01).
            let (code, _) = asm_at(bits, CODE, |a| {
                a.mov(eax, dword_ptr(W)).unwrap();
                a.mov(dword_ptr(W - 3), eax).unwrap();
                vec![]
            });
            let mut m = Dbg::new(mode, &code);
            m.st.dr[0] = W;
            m.st.dr[7] = dr7_for(0, 1, len_field(len));
            assert_eq!(m.run(), Exit::Halted);
            assert_eq!(m.log().len(), 1, "{mode:?} len {len}: overlap from below, not the read");
        }
    }
}

#[test]
fn data_read_write_breakpoints_hit_reads_and_writes() {
    let (code, l) = asm_at(32, CODE, |a| {
        a.mov(eax, dword_ptr(W + 4)).unwrap();
        let r1 = label_here(a);
        a.add(dword_ptr(W + 6), 1).unwrap(); // read-modify-write: one #DB
        let r2 = label_here(a);
        a.push(dword_ptr(W + 4)).unwrap(); // read of the memory operand
        let r3 = label_here(a);
        a.mov(eax, dword_ptr(W + 8)).unwrap(); // outside
        vec![r1, r2, r3]
    });
    let mut m = Dbg::new(TestMode::Prot32, &code);
    m.st.dr[3] = W + 4;
    m.st.dr[7] = dr7_for(3, 3, len_field(4));
    assert_eq!(m.run(), Exit::Halted);
    let log = m.log();
    assert_eq!(log.iter().map(|r| r.rip).collect::<Vec<_>>(), l);
    assert!(log.iter().all(|r| r.dr6 & 0xf == 8), "B3");
}

#[test]
fn data_breakpoint_in_rep_movsb_traps_after_that_iteration() {
    let (code, l) = asm_at(32, CODE, |a| {
        a.cld().unwrap();
        a.mov(esi, (DATA + 0x800) as u32).unwrap();
        a.mov(edi, (W - 5) as u32).unwrap();
        a.mov(ecx, 16).unwrap();
        let rep = label_here(a);
        a.rep().movsb().unwrap();
        let after = label_here(a);
        a.rep().stosb().unwrap(); // ECX = 0: nothing
        vec![rep, after]
    });
    let rep_at = l[0] + 1; // after the NOP marker
    let mut m = Dbg::new(TestMode::Prot32, &code);
    for k in 0..16 {
        m.bus.ram[DATA as usize + 0x800 + k] = 0xa0 + k as u8;
    }
    m.st.dr[0] = W;
    m.st.dr[7] = dr7_for(0, 1, 0);
    assert_eq!(m.run(), Exit::Halted);
    let log = m.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].rip, rep_at, "not the last iteration: RIP stays on the REP instruction");
    assert_eq!(log[0].rcx, 10, "after the 6th iteration");
    assert_eq!(log[0].rflags & flags::RF, flags::RF, "trap between iterations pushes RF=1");
    assert_eq!(m.st.gpr[1], 0, "the copy finished after the handler returned");
    let copied: Vec<u8> = m.bus.ram[W as usize - 5..W as usize + 11].to_vec();
    assert_eq!(copied, (0..16).map(|k| 0xa0 + k as u8).collect::<Vec<_>>());

    // A hit in the last iteration: trap after the instruction.
    let (code, l) = asm_at(32, CODE, |a| {
        a.mov(edi, (W - 3) as u32).unwrap();
        a.mov(ecx, 4).unwrap();
        a.rep().stosb().unwrap();
        let after = label_here(a);
        vec![after]
    });
    let mut m = Dbg::new(TestMode::Prot32, &code);
    m.st.dr[2] = W;
    m.st.dr[7] = dr7_for(2, 1, 0);
    assert_eq!(m.run(), Exit::Halted);
    let log = m.log();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].rip, log[0].rcx, log[0].rflags & flags::RF, log[0].dr6 & 0xf), (l[0], 0, 0, 4));
}

#[test]
fn io_breakpoints_need_cr4_de() {
    let (code, l) = asm_at(32, CODE, |a| {
        a.out(0x80, al).unwrap();
        let r1 = label_here(a);
        a.in_(ax, 0x7f).unwrap(); // bytes 0x7f-0x80: overlaps
        let r2 = label_here(a);
        a.out(0x82, al).unwrap(); // outside
        vec![r1, r2]
    });
    for de in [false, true] {
        let mut m = Dbg::new(TestMode::Prot32, &code);
        if de {
            m.st.cr4 |= cr4::DE;
        }
        m.st.dr[0] = 0x81; // LEN 2: ports 0x80-0x81
        m.st.dr[7] = dr7_for(0, 2, 1);
        assert_eq!(m.run(), Exit::Halted);
        let log = m.log();
        if de {
            assert_eq!(log.iter().map(|r| r.rip).collect::<Vec<_>>(), l);
            assert!(log.iter().all(|r| r.dr6 & 0xf == 1));
        } else {
            assert!(log.is_empty());
        }
    }
}

#[test]
fn general_detect_faults_on_mov_dr_and_clears_gd() {
    let (code, l) = asm_at(32, CODE, |a| {
        let mv = label_here(a);
        a.mov(eax, dr0).unwrap();
        vec![mv]
    });
    let mut m = Dbg::new(TestMode::Prot32, &code);
    m.st.dr[0] = 0x1234;
    m.st.dr[7] = 0x400 | crate::debug::dr7::GD;
    assert_eq!(m.run(), Exit::Halted);
    let log = m.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].rip, l[0] + 1, "fault: RIP of the MOV");
    assert_ne!(log[0].dr6 & dr6::BD, 0, "BD");
    assert_eq!(log[0].dr7 & crate::debug::dr7::GD, 0, "GD cleared for the handler");
    assert_eq!(log[0].rflags & flags::RF, flags::RF, "fault-class: RF=1 pushed");
    assert_eq!(m.st.gpr[0], 0x1234, "the MOV ran after the handler");
}

#[test]
fn single_step_and_data_breakpoint_share_one_db() {
    let (code, l) = asm_at(32, CODE, |a| {
        a.pushfd().unwrap();
        a.or(dword_ptr(esp), 0x100).unwrap();
        a.popfd().unwrap(); // sets TF: no trap after it
        a.mov(byte_ptr(W), 1).unwrap(); // BS | B0
        let r1 = label_here(a); // BS (the NOP marker)
        let r2 = label_here(a);
        a.pushfd().unwrap();
        let r3 = label_here(a);
        a.and(dword_ptr(esp), !0x100).unwrap();
        let r4 = label_here(a);
        a.popfd().unwrap(); // clears TF: still traps (TF was set when it started)
        let r5 = label_here(a);
        vec![r1, r2, r3, r4, r5]
    });
    let mut m = Dbg::new(TestMode::Prot32, &code);
    m.st.dr[0] = W;
    m.st.dr[7] = dr7_for(0, 1, 0);
    assert_eq!(m.run(), Exit::Halted);
    let got: Vec<(u64, u64)> = m.log().iter().map(|r| (r.rip, r.dr6 & 0x400f)).collect();
    // One #DB per instruction from the MOV (BS and B0 together) to the POPF that clears TF.
    assert_eq!(got.len(), 8, "{got:x?}");
    assert_eq!(got[0], (l[0], dr6::BS | 1));
    assert!(got[1..].iter().all(|&(_, b)| b == dr6::BS), "{got:x?}");
    assert_eq!(got[7].0, l[4]);
    let _ = (l[1], l[2], l[3]);
}

#[test]
fn single_step_then_instruction_breakpoint_are_separate_db() {
    let (code, l) = asm_at(32, CODE, |a| {
        a.pushfd().unwrap();
        a.or(dword_ptr(esp), 0x100).unwrap();
        a.popfd().unwrap();
        a.mov(ebx, 1).unwrap(); // trap BS after it
        let mut brk = a.create_label();
        a.set_label(&mut brk).unwrap();
        a.mov(ecx, 2).unwrap(); // instruction breakpoint, then BS after it
        let after = label_here(a);
        a.pushfd().unwrap();
        a.and(dword_ptr(esp), !0x100).unwrap();
        a.popfd().unwrap();
        vec![brk, after]
    });
    let mut m = Dbg::new(TestMode::Prot32, &code);
    m.st.dr[2] = l[0];
    m.st.dr[7] = dr7_for(2, 0, 0);
    assert_eq!(m.run(), Exit::Halted);
    let log = m.log();
    let got: Vec<(u64, u64)> = log.iter().take(3).map(|r| (r.rip, r.dr6 & 0x400f)).collect();
    assert_eq!(got, vec![(l[0], dr6::BS), (l[0], 4), (l[1], dr6::BS)]);
}

#[test]
fn mov_ss_holds_its_data_breakpoint_until_after_the_next_instruction() {
    let (code, l) = asm_at(32, CODE, |a| {
        a.mov(ss, word_ptr(W)).unwrap();
        a.mov(eax, 1).unwrap();
        let after = label_here(a);
        vec![after]
    });
    let mut m = Dbg::new(TestMode::Prot32, &code);
    m.bus.ram[W as usize] = 0x10;
    m.st.dr[0] = W;
    m.st.dr[7] = dr7_for(0, 3, 1);
    assert_eq!(m.run(), Exit::Halted);
    let log = m.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].rip, l[0], "delivered after the instruction following MOV SS");
}

#[test]
fn breakpoints_change_with_mov_dr7_and_no_stale_tlb_entry_hides_a_hit() {
    let (code, l) = asm_at(32, CODE, |a| {
        a.mov(byte_ptr(W), 1).unwrap(); // caches W's page in the TLB
        a.mov(eax, (W) as u32).unwrap();
        a.mov(dr0, eax).unwrap();
        a.mov(eax, dr7_for(0, 1, 0) as u32).unwrap();
        a.mov(dr7, eax).unwrap();
        a.mov(byte_ptr(W), 2).unwrap();
        let after = label_here(a);
        a.xor(eax, eax).unwrap();
        a.mov(dr7, eax).unwrap();
        a.mov(byte_ptr(W), 3).unwrap();
        vec![after]
    });
    let mut m = Dbg::new(TestMode::Prot32, &code);
    assert_eq!(m.run(), Exit::Halted);
    let log = m.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].rip, l[0]);
    assert_eq!(m.bus.ram[W as usize], 3);
}
