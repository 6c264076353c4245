use super::*;

#[test]
fn new_jit_on_this_host() {
    let j = Jit::new().expect("cranelift supports x86-64");
    assert_eq!(j.stats(), Stats::default());
}

/// `bytes` decoded at `ip` as one block (64-bit code).
fn block(bytes: &[u8], ip: u64) -> Vec<Insn> {
    iced_x86::Decoder::with_ip(64, bytes, ip, iced_x86::DecoderOptions::NONE)
        .into_iter()
        .map(|i| Insn::new(i, cpu::exec::handler_for(i.code()), 64, i.next_ip()))
        .collect()
}

/// A link into a block that runs as a saved region entered at another member than its first
/// names the region's instructions, which are not the block's: region recording must not take the
/// first `len` of them for the block (it took them, and recorded a block that ends mid-block).
#[test]
fn links_into_a_region_entered_at_another_member_record_no_block() {
    let mut j = Jit::new().expect("cranelift supports x86-64");
    // a: add rax,1; add rax,2; jmp b.  b: inc rbx; jmp a.
    let a = block(&[0x48, 0x83, 0xc0, 0x01, 0x48, 0x83, 0xc0, 0x02, 0xeb, 0x00], 0x1000);
    let b = block(&[0x48, 0xff, 0xc3, 0xeb, 0xf1], 0x100a);
    assert_eq!((a.len(), b.len(), b[1].i.near_branch_target()), (3, 2, 0x1000));
    let install = |j: &mut Jit, insns: &[Insn]| {
        let code = j.code_bytes(insns).expect("translated");
        j.install(&code, insns.len(), insns[0].next_rip).expect("placed")
    };
    let (ja, jb) = (install(&mut j, &a), install(&mut j, &b));
    assert_eq!((ja.recorded_len(&a), jb.recorded_len(&b)), (3, 2), "blocks of their own");
    let region = |j: &mut Jit, members: &[&[Insn]]| {
        let bytes = j.code_bytes(&a).expect("translated");
        region::State::Ready(region::Region {
            code: j.arena.copy_in(&bytes).expect("placed"),
            insns: members.iter().flat_map(|m| m.iter().copied()).collect(),
            links: Box::default(),
        })
    };
    // Regions headed by their own block: their instructions start with it.
    *ja.region.state.borrow_mut() = region(&mut j, &[&a, &b]);
    *jb.region.state.borrow_mut() = region(&mut j, &[&b, &a]);
    assert_eq!((ja.recorded_len(&a), jb.recorded_len(&b)), (3, 2), "regions headed by the block");
    // `b` runs the saved region `[a, b]`: its first two instructions are `a`'s.
    *jb.region.state.borrow_mut() = region(&mut j, &[&a, &b]);
    assert_eq!(jb.recorded_len(&b), 0, "a region entered at its second member");
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
