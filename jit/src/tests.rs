use super::*;

#[test]
fn new_jit_on_this_host() {
    let j = Jit::new().expect("cranelift supports x86-64");
    assert_eq!(j.stats(), Stats::default());
}

/// Whether `code` (x86-64 machine code) saves a callee-saved register of the System V/`tail`
/// conventions other than the frame pointer (Cranelift stores them below the frame after
/// `sub rsp`, or pushes them).
fn saves_callee_saved(code: &[u8]) -> Vec<String> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    let saved = [Register::RBX, Register::R12, Register::R13, Register::R14, Register::R15];
    Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
        .iter()
        .filter(|i| {
            let push = i.mnemonic() == Mnemonic::Push && saved.contains(&i.op0_register());
            let store = i.mnemonic() == Mnemonic::Mov
                && i.op0_kind() == OpKind::Memory
                && i.memory_base() == Register::RSP
                && i.op1_kind() == OpKind::Register
                && saved.contains(&i.op1_register());
            push || store
        })
        .map(|i| format!("{i}"))
        .collect()
}

/// The fixed cost of a block transition (docs/PERF.md, "Lean block ends"): an ordinary block's
/// link checks hold only the values they compare and load the rest where a check uses them, and
/// the MMU, TLB and access tag are loaded at entry only where something reads them, so a block
/// whose body calls nothing (ALU work, LEA, a branch) needs no callee-saved register (before: all five, saved and
/// restored on every block transition). (A block with any call still saves them, Cranelift doing
/// so in the prologue whatever path the call is on: an inline memory access's slow path, an
/// indirect JMP's handler fallback, or the lazy-flag helper of a DEC or ROL that keeps a flag of its predecessor's pending operation.)
#[test]
fn small_blocks_save_no_callee_saved_register() {
    use iced_x86::code_asm::*;
    let blocks: [fn(&mut CodeAssembler); 4] = [
        |a| {
            a.add(r12, rcx).unwrap();
            a.jmp(0x2000).unwrap();
        },
        |a| {
            a.test(eax, eax).unwrap();
            a.jg(0x2000).unwrap();
        },
        |a| {
            a.sub(ecx, 1).unwrap();
            a.jnz(0x2000).unwrap();
        },
        |a| {
            a.mov(eax, ecx).unwrap();
            a.and(eax, 1022).unwrap();
            a.lea(rdi, qword_ptr(rbx + rax * 4)).unwrap();
            a.lea(rsi, qword_ptr(rdi + 4)).unwrap();
            a.jmp(0x2000).unwrap();
        },
    ];
    for (k, f) in blocks.iter().enumerate() {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a);
        let code = a.assemble(0x1000).unwrap();
        let mut dec = iced_x86::Decoder::with_ip(64, &code, 0x1000, iced_x86::DecoderOptions::NONE);
        let insns: Vec<Insn> =
            dec.iter().map(|i| Insn::new(i, cpu::exec::handler_for(i.code()), 8, i.next_ip())).collect();
        let mut jit = Jit::new().unwrap();
        let bytes = jit.code_bytes(&insns).expect("compiled");
        assert_eq!(jit.stats().called, 0, "block {k} is inline");
        assert_eq!(saves_callee_saved(&bytes), Vec::<String>::new(), "block {k}");
    }
}
