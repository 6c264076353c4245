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
