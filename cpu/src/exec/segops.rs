//! Segment-inspection instructions (LAR, LSL, VERR, VERW, ARPL) and the far-pointer loads
//! (LDS, LES, LSS, LFS, LGS) (Intel SDM vol. 2).
//!
//! LAR/LSL/VERR/VERW never fault on the selector: an unusable selector (null, beyond the GDT/LDT
//! limit, wrong descriptor type, or not visible at CPL/RPL) just clears ZF and leaves the destination
//! alone. Only the memory operand and the descriptor read itself can fault. All five are #UD in real
//! and virtual-8086 mode; ARPL is also #UD in 64-bit mode (where its opcode is MOVSXD).
//!
//! The far-pointer loads read an offset of the operand size (m16:16, m16:32, or m16:64 with REX.W)
//! followed by a 16-bit selector, load the segment register exactly as MOV Sreg does (every
//! protected-mode check, #GP/#SS/#NP on the selector, the null-SS rules of each mode), and only then
//! write the offset to the register, so a faulting load leaves both unchanged. LDS and LES do not
//! exist in 64-bit mode (C4/C5 are VEX prefixes there). REX.W selects m16:64 (the SDM; checked
//! natively on this project's Intel host, and by the differential tester). AMD's manual documents
//! only the 16- and 32-bit offsets for these loads; Ferrite uses m16:64 for both vendors.
//! LSS creates no interrupt shadow: the SDM (vol. 3A 6.8.3) gives the shadow to MOV SS and POP SS
//! only, because LSS loads SS and the stack pointer in one instruction, which is why it exists.

use super::ops::*;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::regs::{GprRef, size_mask};
use crate::seg::Desc;
use crate::state::{Mode, Seg, efer, flags};
use iced_x86::{Code, OpKind};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Lar_r16_rm16 | C::Lar_r32_r32m16 | C::Lar_r64_r64m16 => lar,
        C::Lsl_r16_rm16 | C::Lsl_r32_r32m16 | C::Lsl_r64_r64m16 => lsl,
        C::Verr_rm16 | C::Verr_r32m16 | C::Verr_r64m16 => verr,
        C::Verw_rm16 | C::Verw_r32m16 | C::Verw_r64m16 => verw,
        C::Arpl_rm16_r16 | C::Arpl_r32m16_r32 => arpl,
        C::Lds_r16_m1616 | C::Lds_r32_m1632 => lds,
        C::Les_r16_m1616 | C::Les_r32_m1632 => les,
        C::Lss_r16_m1616 | C::Lss_r32_m1632 | C::Lss_r64_m1664 => lss,
        C::Lfs_r16_m1616 | C::Lfs_r32_m1632 | C::Lfs_r64_m1664 => lfs,
        C::Lgs_r16_m1616 | C::Lgs_r32_m1632 | C::Lgs_r64_m1664 => lgs,
        _ => return None,
    })
}

fn require_protected(ctx: &Ctx<'_>) -> Result<(), Fault> {
    match ctx.st.mode() {
        Mode::Real | Mode::V86 => Err(Fault::ud()),
        _ => Ok(()),
    }
}

fn set_zf(ctx: &mut Ctx<'_>, ok: bool) {
    ctx.set_flags_masked(if ok { flags::ZF } else { 0 }, flags::ZF);
}

/// The descriptor `sel` names, or `None` if the selector is null or beyond its table's limit (or
/// names the LDT while none is loaded). The read is an implicit supervisor access and may page-fault.
fn lookup_desc(ctx: &mut Ctx<'_>, sel: u16) -> Result<Option<Desc>, Fault> {
    if sel & !3 == 0 || ctx.desc_addr(sel, 8).is_none() {
        return Ok(None);
    }
    ctx.read_desc(sel, Fault::gp0()).map(Some)
}

/// The privilege rule shared by all four: a conforming code segment is always visible; anything else
/// needs DPL >= CPL and DPL >= RPL.
fn visible(ctx: &Ctx<'_>, sel: u16, d: Desc) -> bool {
    d.conforming() || (d.dpl() >= ctx.st.cpl && d.dpl() >= (sel & 3) as u8)
}

fn ia32e(ctx: &Ctx<'_>) -> bool {
    ctx.st.efer & efer::LMA != 0
}

/// System-descriptor types LAR accepts (SDM table "Segment and Gate Types"): in legacy protected mode
/// TSSs, the LDT, call gates and task gates; in IA-32e mode only 64-bit TSSs and call gates.
fn lar_type_ok(long: bool, typ: u8) -> bool {
    if long {
        matches!(typ, 0x9 | 0xb | 0xc)
    } else {
        matches!(typ, 0x1 | 0x2 | 0x3 | 0x4 | 0x5 | 0x9 | 0xb | 0xc)
    }
}

/// System-descriptor types LSL accepts: TSSs and the LDT (gates have no limit). In IA-32e mode the SDM
/// also lists type 0 ("upper 8 bytes of a 16-byte descriptor") as valid, which we follow.
fn lsl_type_ok(long: bool, typ: u8) -> bool {
    if long { matches!(typ, 0x0 | 0x2 | 0x9 | 0xb) } else { matches!(typ, 0x1 | 0x2 | 0x3 | 0x9 | 0xb) }
}

/// Reads the 16-bit selector source operand (a register operand contributes its low 16 bits).
fn selector_operand(ctx: &mut Ctx<'_>, insn: &Insn, n: u32) -> Result<u16, Fault> {
    Ok(read_op(ctx, insn, n)? as u16)
}

fn lar(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_protected(ctx)?;
    let sel = selector_operand(ctx, insn, 1)?;
    let g = reg_op(insn, 0)?;
    let ok = match lookup_desc(ctx, sel)? {
        Some(d) if (d.s() || lar_type_ok(ia32e(ctx), d.typ())) && visible(ctx, sel, d) => {
            let hi = d.0 >> 32;
            let v = if g.size == 2 { hi & 0xff00 } else { hi & 0x00f0_ff00 };
            ctx.st.write_gpr(g, v);
            true
        }
        _ => false,
    };
    set_zf(ctx, ok);
    Ok(())
}

fn lsl(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_protected(ctx)?;
    let sel = selector_operand(ctx, insn, 1)?;
    let g = reg_op(insn, 0)?;
    let ok = match lookup_desc(ctx, sel)? {
        Some(d) if (d.s() || lsl_type_ok(ia32e(ctx), d.typ())) && visible(ctx, sel, d) => {
            let limit = d.limit() as u64;
            ctx.st.write_gpr(g, if g.size == 2 { limit & 0xffff } else { limit });
            true
        }
        _ => false,
    };
    set_zf(ctx, ok);
    Ok(())
}

/// VERR: ZF = 1 if the segment is a readable code or data segment visible at CPL/RPL (conforming
/// readable code is always visible). The present bit is not checked.
fn verr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_protected(ctx)?;
    let sel = selector_operand(ctx, insn, 0)?;
    let ok = match lookup_desc(ctx, sel)? {
        Some(d) => d.s() && d.readable() && visible(ctx, sel, d),
        None => false,
    };
    set_zf(ctx, ok);
    Ok(())
}

/// VERW: ZF = 1 if the segment is a writable data segment visible at CPL/RPL. Code segments are never
/// writable. The present bit is not checked.
fn verw(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_protected(ctx)?;
    let sel = selector_operand(ctx, insn, 0)?;
    let ok = match lookup_desc(ctx, sel)? {
        Some(d) => d.writable() && visible(ctx, sel, d),
        None => false,
    };
    set_zf(ctx, ok);
    Ok(())
}

/// ARPL r/m16, r16: if the destination's RPL is below the source's, raise it to match and set ZF;
/// otherwise clear ZF. The operation is 16-bit whatever the operand-size prefix says: a register
/// destination keeps its upper bits, and a memory destination is written only when it changes (it is
/// checked for writing either way).
fn arpl(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if matches!(ctx.st.mode(), Mode::Real | Mode::V86 | Mode::Long64) {
        return Err(Fault::ud());
    }
    let src = reg_op(insn, 1)?;
    let src_rpl = ctx.st.read_gpr(src) & 3;
    let l = match insn.i.op0_kind() {
        OpKind::Register => {
            let g = reg_op(insn, 0)?;
            Loc::Reg(GprRef { size: 2, ..g })
        }
        _ => loc(ctx, insn, 0)?,
    };
    let dst = loc_read(ctx, l)? & 0xffff;
    let adjust = dst & 3 < src_rpl;
    if adjust {
        loc_write(ctx, l, (dst & !3) | src_rpl)?;
    }
    set_zf(ctx, adjust);
    Ok(())
}

fn lds(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    load_far_pointer(ctx, insn, Seg::Ds)
}

fn les(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    load_far_pointer(ctx, insn, Seg::Es)
}

fn lss(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    load_far_pointer(ctx, insn, Seg::Ss)
}

fn lfs(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    load_far_pointer(ctx, insn, Seg::Fs)
}

fn lgs(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    load_far_pointer(ctx, insn, Seg::Gs)
}

/// LDS/LES/LSS/LFS/LGS r, m16:N: offset (operand size) then selector, read before anything changes;
/// the segment load's faults leave the register unchanged.
fn load_far_pointer(ctx: &mut Ctx<'_>, insn: &Insn, s: Seg) -> Result<(), Fault> {
    if insn.i.op1_kind() != OpKind::Memory {
        // Only the VEX-less encodings with a memory operand exist (a register form is #UD).
        return Err(Fault::ud());
    }
    if matches!(s, Seg::Ds | Seg::Es) && ctx.st.mode() == Mode::Long64 {
        return Err(Fault::ud());
    }
    let g = reg_op(insn, 0)?;
    let off = ea(ctx, insn);
    let ms = mem_seg(insn);
    let offset = ctx.read_mem(ms, off, g.size)?;
    let sel_off = off.wrapping_add(g.size as u64) & size_mask(insn.asize as u32);
    let sel = ctx.read_mem(ms, sel_off, 2)? as u16;
    ctx.load_seg(s, sel)?;
    ctx.st.write_gpr(g, offset);
    ctx.break_block = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::string::testkit::Machine;
    use crate::fault::Fault;
    use crate::state::{Segment, flags};
    use crate::testutil::*;
    use iced_x86::code_asm::{ax, cx, eax, ebx, ecx, rax, rcx, word_ptr};

    /// Builds a descriptor from base, raw limit, access byte (P, DPL, S, type) and flags nibble (G, D/B,
    /// L, AVL).
    fn desc(base: u32, limit: u32, access: u8, fl: u8) -> u64 {
        (limit & 0xffff) as u64
            | ((base & 0xff_ffff) as u64) << 16
            | (access as u64) << 40
            | (((limit >> 16) & 0xf) as u64) << 48
            | ((fl & 0xf) as u64) << 52
            | ((base >> 24) as u64) << 56
    }

    /// The test GDT beyond `cpu_in`'s first entries, by index.
    fn extra_gdt() -> Vec<(u16, u64)> {
        vec![
            (4, desc(0x1000, 0x1_2345, 0xf2, 0x4)),     // 0x20 data RW, DPL 3
            (5, desc(0, 0xf_ffff, 0x98, 0xc)),          // 0x28 execute-only code, DPL 0
            (6, desc(0, 0xffff, 0x9e, 0x4)),            // 0x30 conforming readable code, DPL 0
            (7, desc(0x3000, 0x67, 0x89, 0x0)),         // 0x38 available 32-bit TSS, DPL 0
            (8, desc(0x2000, 0x1f, 0x82, 0x0)),         // 0x40 LDT
            (9, desc(0x0008_1234, 0x5678, 0xec, 0x0)),  // 0x48 32-bit call gate, DPL 3
            (10, desc(0x0008_1234, 0x5678, 0xee, 0x0)), // 0x50 32-bit interrupt gate, DPL 3
            (11, desc(0, 0xf, 0x10, 0x8)),              // 0x58 read-only data, not present, G
            (12, desc(0x4000, 0x2b, 0xe1, 0x0)),        // 0x60 available 16-bit TSS, DPL 3
            (13, desc(0x0038_0000, 0, 0xe5, 0x0)),      // 0x68 task gate, DPL 3
            (14, desc(0, 0x100, 0xb2, 0x0)),            // 0x70 data RW, DPL 1
        ]
    }

    fn machine(mode: TestMode, code: &[u8]) -> Machine {
        let mut m = Machine::new(mode, code);
        for (i, d) in extra_gdt() {
            m.poke(0x500 + i as u64 * 8, &d.to_le_bytes());
        }
        m.st.gdtr.limit = 15 * 8 - 1;
        m
    }

    fn zf(m: &Machine) -> bool {
        m.st.rflags & flags::ZF != 0
    }

    /// Runs LAR r32, LSL r32, VERR, VERW on `sel` at `cpl`; returns (LAR result, LSL result, VERR, VERW)
    /// with `None` for a cleared ZF (after checking that the destination kept its old value).
    fn probe(mode: TestMode, cpl: u8, sel: u16) -> (Option<u64>, Option<u64>, bool, bool) {
        let bits = if mode == TestMode::Long64 { 64 } else { 32 };
        let code = asm(bits, |a| {
            if bits == 64 {
                a.lar(rax, rcx).unwrap();
            } else {
                a.lar(eax, ecx).unwrap();
            }
            a.lsl(ebx, ecx).unwrap();
            a.verr(cx).unwrap();
            a.verw(cx).unwrap();
        });
        let mut m = machine(mode, &code);
        m.st.cpl = cpl;
        m.st.gpr[1] = 0xffff_0000 | sel as u64;
        let sentinel = 0x5555_6666_7777_8888;
        m.st.gpr[0] = sentinel;
        m.st.gpr[3] = sentinel;
        let mut res = [false; 4];
        for r in res.iter_mut() {
            m.st.rflags ^= flags::ZF; // must be overwritten either way
            m.step().unwrap();
            *r = zf(&m);
        }
        let lar = if res[0] { Some(m.st.gpr[0]) } else { None };
        let lsl = if res[1] { Some(m.st.gpr[3]) } else { None };
        if !res[0] {
            assert_eq!(m.st.gpr[0], sentinel);
        }
        if !res[1] {
            assert_eq!(m.st.gpr[3], sentinel);
        }
        (lar, lsl, res[2], res[3])
    }

    /// (mode, CPL, selector, LAR result, LSL result, VERR, VERW)
    type Row = (TestMode, u8, u16, Option<u64>, Option<u64>, bool, bool);

    fn ar(d: u64) -> u64 {
        (d >> 32) & 0x00f0_ff00
    }

    #[test]
    fn lar_lsl_verr_verw_table() {
        let g = |i: u16| {
            if i < 4 {
                [0u64, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff, 0][i as usize]
            } else {
                extra_gdt().into_iter().find(|e| e.0 == i).map(|e| e.1).unwrap_or(0)
            }
        };
        let lng = TestMode::Long64;
        let pm = TestMode::Prot32;
        // (mode, cpl, selector, LAR value, LSL value, VERR, VERW)
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            (pm, 0, 0x00, None, None, false, false),               // null selector
            (pm, 0, 0x03, None, None, false, false),               // null with RPL 3
            (pm, 0, 0x08, Some(ar(g(1))), Some(0xffff_ffff), true, false),
            (pm, 0, 0x10, Some(ar(g(2))), Some(0xffff_ffff), true, true),
            (pm, 0, 0x18, None, None, false, false),               // type 0 system: invalid
            (pm, 0, 0x20, Some(ar(g(4))), Some(0x1_2345), true, true),
            (pm, 0, 0x28, Some(ar(g(5))), Some(0xffff_ffff), false, false), // execute-only
            (pm, 0, 0x30, Some(ar(g(6))), Some(0xffff), true, false),
            (pm, 0, 0x38, Some(ar(g(7))), Some(0x67), false, false),
            (pm, 0, 0x40, Some(ar(g(8))), Some(0x1f), false, false),
            (pm, 0, 0x48, Some(ar(g(9))), None, false, false),     // call gate: no limit
            (pm, 0, 0x50, None, None, false, false),               // interrupt gate
            (pm, 0, 0x58, Some(ar(g(11))), Some(0xffff), true, false), // P = 0 is not checked
            (pm, 0, 0x60, Some(ar(g(12))), Some(0x2b), false, false),
            (pm, 0, 0x68, Some(ar(g(13))), None, false, false),    // task gate
            (pm, 0, 0x70, Some(ar(g(14))), Some(0x100), true, true),
            (pm, 0, 0x78, None, None, false, false),               // beyond the GDT limit
            (pm, 0, 0x07, None, None, false, false),               // LDT selector, no LDT loaded
            // CPL 3: only DPL 3 and conforming code are visible.
            (pm, 3, 0x0b, None, None, false, false),
            (pm, 3, 0x23, Some(ar(g(4))), Some(0x1_2345), true, true),
            (pm, 3, 0x2b, None, None, false, false),
            (pm, 3, 0x33, Some(ar(g(6))), Some(0xffff), true, false),
            (pm, 3, 0x3b, None, None, false, false),
            (pm, 3, 0x4b, Some(ar(g(9))), None, false, false),
            (pm, 3, 0x63, Some(ar(g(12))), Some(0x2b), false, false),
            (pm, 3, 0x73, None, None, false, false),
            // RPL above DPL fails even at CPL 0; CPL 1 sees DPL 1.
            (pm, 0, 0x72, None, None, false, false),
            (pm, 0, 0x11, None, None, false, false),
            (pm, 1, 0x71, Some(ar(g(14))), Some(0x100), true, true),
            (pm, 0, 0x32, Some(ar(g(6))), Some(0xffff), true, false), // conforming ignores RPL
            // IA-32e mode: only 64-bit TSSs and call gates for LAR; LDT and TSSs for LSL (and type 0,
            // the upper half of a 16-byte descriptor, per the SDM).
            (lng, 0, 0x10, Some(ar(g(2))), Some(0xffff_ffff), true, true),
            (lng, 0, 0x18, None, Some(0), false, false),
            (lng, 0, 0x38, Some(ar(g(7))), Some(0x67), false, false),
            (lng, 0, 0x40, None, Some(0x1f), false, false),
            (lng, 0, 0x48, Some(ar(g(9))), None, false, false),
            (lng, 0, 0x60, None, None, false, false),
            (lng, 0, 0x68, None, None, false, false),
        ];
        for (mode, cpl, sel, lar, lsl, r, w) in table {
            assert_eq!(probe(mode, cpl, sel), (lar, lsl, r, w), "{mode:?} cpl {cpl} selector {sel:#x}");
        }
    }

    #[test]
    fn sixteen_bit_destinations_memory_sources_and_the_ldt() {
        let code = asm(32, |a| {
            a.lar(ax, cx).unwrap();
            a.lsl(bx_(), cx).unwrap();
            a.lar(eax, word_ptr(DATA as u32)).unwrap();
            a.verw(word_ptr(DATA as u32)).unwrap();
        });
        fn bx_() -> iced_x86::code_asm::AsmRegister16 {
            iced_x86::code_asm::bx
        }
        let mut m = machine(TestMode::Prot32, &code);
        m.st.gpr[0] = 0xaaaa_bbbb;
        m.st.gpr[3] = 0xcccc_dddd;
        m.st.gpr[1] = 0x20;
        // LDT at 0x2000 (GDT entry 8) whose entry 0 is a DPL 3 writable data segment.
        m.poke(0x2000, &desc(0, 0x7ff, 0xf3, 0x4).to_le_bytes());
        m.st.ldtr = Segment { selector: 0x40, attr: 0x82, limit: 0x1f, base: 0x2000 };
        m.poke(DATA, &0x0007u16.to_le_bytes()); // selector 0x07: LDT index 0, RPL 3
        m.step().unwrap();
        assert_eq!(m.st.gpr[0], 0xaaaa_f200, "16-bit LAR keeps bits 8..15 only");
        m.step().unwrap();
        assert_eq!(m.st.gpr[3], 0xcccc_2345, "16-bit LSL truncates the limit");
        m.step().unwrap();
        assert!(zf(&m));
        assert_eq!(m.st.gpr[0], 0x0040_f300);
        m.step().unwrap();
        assert!(zf(&m));
    }

    #[test]
    fn undefined_in_real_and_v86_mode() {
        let code = asm(16, |a| a.lar(ax, cx).unwrap());
        let mut m = machine(TestMode::Real, &code);
        assert_eq!(m.step(), Err(Fault::ud()));
        for code in [asm(16, |a| a.verr(cx).unwrap()), asm(16, |a| a.arpl(ax, cx).unwrap())] {
            let mut m = machine(TestMode::Prot32, &code);
            m.st.rflags |= flags::VM;
            assert_eq!(m.step(), Err(Fault::ud()));
        }
    }

    #[test]
    fn arpl_raises_rpl() {
        // (destination selector, source selector, result, ZF)
        let cases = [
            (0x10u64, 0x23u64, 0x13u64, true),
            (0x13, 0x20, 0x13, false),
            (0x11, 0x12, 0x12, true),
            (0x12, 0x12, 0x12, false),
        ];
        for (d, s, want, z) in cases {
            let code = asm(16, |a| a.arpl(ax, cx).unwrap());
            let mut m = machine(TestMode::Prot32, &code);
            // 16-bit code segment so the bytes decode as written.
            m.st.sreg_mut(crate::state::Seg::Cs).attr &= !crate::state::attr::DB;
            m.st.gpr[0] = 0x1234_0000 | d;
            m.st.gpr[1] = s;
            m.step().unwrap();
            assert_eq!(m.st.gpr[0], 0x1234_0000 | want);
            assert_eq!(zf(&m), z);
        }
        // 32-bit operand size (63 C8 = arpl eax, ecx in 32-bit code): still a 16-bit operation.
        let mut m = machine(TestMode::Prot32, &[0x63, 0xc8]);
        m.st.gpr[0] = 0xffff_0008;
        m.st.gpr[1] = 0x3;
        m.step().unwrap();
        assert_eq!(m.st.gpr[0], 0xffff_000b);
        assert!(zf(&m));
        // Memory destination.
        let code = asm(32, |a| a.arpl(word_ptr(DATA as u32), cx).unwrap());
        let mut m = machine(TestMode::Prot32, &code);
        m.poke(DATA, &[0x28, 0x00, 0x77]);
        m.st.gpr[1] = 0x1;
        m.step().unwrap();
        assert_eq!(m.peek(DATA, 3), vec![0x29, 0x00, 0x77]);
        // In 64-bit mode the opcode is MOVSXD; the ARPL handler itself refuses to run there.
        let mut m = machine(TestMode::Prot32, &[0x63, 0xc8]);
        let insn = m.decode();
        m.st.sreg_mut(crate::state::Seg::Cs).attr |= crate::state::attr::L;
        m.st.efer |= crate::state::efer::LMA;
        assert_eq!(m.exec(&insn), Err(Fault::ud()));
    }
}

#[cfg(test)]
mod far_pointer_tests {
    use super::super::string::testkit::Machine;
    use crate::fault::Fault;
    use crate::state::{Seg, Segment, attr, efer, flags};
    use crate::testutil::*;

    /// Builds a descriptor from base, raw limit, access byte and flags nibble.
    fn desc(base: u32, limit: u32, access: u8, fl: u8) -> u64 {
        (limit & 0xffff) as u64
            | ((base & 0xff_ffff) as u64) << 16
            | (access as u64) << 40
            | (((limit >> 16) & 0xf) as u64) << 48
            | ((fl & 0xf) as u64) << 52
            | ((base >> 24) as u64) << 56
    }

    /// Test GDT entries beyond `cpu_in`'s: (index, descriptor).
    fn gdt() -> Vec<(u16, u64)> {
        vec![
            (4, desc(0x1000, 0xffff, 0xf3, 0x4)),  // 0x20 data RW, DPL 3, base 0x1000
            (5, desc(0, 0xf_ffff, 0x98, 0xc)),     // 0x28 execute-only code, DPL 0
            (6, desc(0x2000, 0xffff, 0x9e, 0x4)),  // 0x30 conforming readable code, DPL 0
            (7, desc(0x3000, 0x67, 0x89, 0x0)),    // 0x38 32-bit TSS (system)
            (8, desc(0, 0xffff, 0x11, 0x4)),       // 0x40 read-only data, not present, DPL 0
            (9, desc(0, 0xffff, 0x13, 0x4)),       // 0x48 writable data, not present, DPL 0
            (10, desc(0x5000, 0xffff, 0xb3, 0x4)), // 0x50 data RW, DPL 1
            (11, desc(0x6000, 0xffff, 0x91, 0x4)), // 0x58 read-only data, DPL 0
            (12, desc(0x0007_0000, 0xff, 0x93, 0x4)), // 0x60 data RW, DPL 0, base 448 KiB, limit 0xff
        ]
    }

    /// A machine in `mode` running `code`, with the test GDT installed.
    fn machine(mode: TestMode, code: &[u8]) -> Machine {
        let mut m = Machine::new(mode, code);
        for (i, d) in gdt() {
            m.poke(0x500 + i as u64 * 8, &d.to_le_bytes());
        }
        m.st.gdtr.limit = 13 * 8 - 1;
        m
    }

    /// Writes the far pointer `offset:sel` with an offset of `osize` bytes at `DATA`.
    fn pointer(m: &mut Machine, at: u64, offset: u64, osize: usize, sel: u16) {
        m.poke(at, &offset.to_le_bytes()[..osize]);
        m.poke(at + osize as u64, &sel.to_le_bytes());
    }

    /// The encodings: (opcode bytes, segment) for LES, LDS, LSS, LFS, LGS with ModRM [disp] (no REX).
    fn ops() -> [(&'static [u8], Seg); 5] {
        [
            (&[0xc4], Seg::Es),
            (&[0xc5], Seg::Ds),
            (&[0x0f, 0xb2], Seg::Ss),
            (&[0x0f, 0xb4], Seg::Fs),
            (&[0x0f, 0xb5], Seg::Gs),
        ]
    }

    /// `prefix op /r` with reg = 1 (CX) and a disp16/disp32 memory operand at `addr`.
    fn enc(prefix: &[u8], op: &[u8], bits: u32, addr: u32) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.extend_from_slice(op);
        match bits {
            16 => {
                v.push(0x0e); // mod 00, reg 1, rm 110: [disp16]
                v.extend_from_slice(&(addr as u16).to_le_bytes());
            }
            32 => {
                v.push(0x0d); // mod 00, reg 1, rm 101: [disp32]
                v.extend_from_slice(&addr.to_le_bytes());
            }
            _ => {
                v.extend_from_slice(&[0x0c, 0x25]); // mod 00, reg 1, rm 100, SIB no base: [disp32]
                v.extend_from_slice(&addr.to_le_bytes());
            }
        }
        v
    }

    #[test]
    fn real_mode_every_register_and_operand_size() {
        for (op, s) in ops() {
            for (prefix, osize) in [(&[][..], 2usize), (&[0x66][..], 4)] {
                let mut m = machine(TestMode::Real, &enc(prefix, op, 16, 0x200));
                // An "unreal" limit survives a real-mode load; only the selector and base change.
                m.st.sreg_mut(s).limit = 0xffff_ffff;
                m.st.gpr[1] = 0xaaaa_bbbb_cccc_dddd;
                pointer(&mut m, 0x200, 0x8765_4321, osize, 0x1234);
                m.step().unwrap();
                // A 16-bit load keeps the upper bits; a 32-bit one zero-extends, as every 32-bit write does.
                let want = if osize == 2 { 0xaaaa_bbbb_cccc_4321 } else { 0x8765_4321 };
                assert_eq!(m.st.gpr[1], want, "{s:?} osize {osize}");
                let r = m.st.sreg(s);
                assert_eq!((r.selector, r.base, r.limit), (0x1234, 0x12340, 0xffff_ffff), "{s:?}");
                // No MOV-SS interrupt shadow, even for LSS.
                assert_eq!(m.st.irq_shadow_icount, u64::MAX, "{s:?}");
            }
        }
    }

    #[test]
    fn real_mode_limit_fault_changes_nothing() {
        // The selector word lies past the 64 KiB limit: #GP(0) (DS-relative), nothing loaded.
        let mut m = machine(TestMode::Real, &enc(&[], &[0x0f, 0xb2], 16, 0xfffd));
        m.st.gpr[1] = 0x55;
        let ss = *m.st.sreg(Seg::Ss);
        assert_eq!(m.step(), Err(Fault::gp0()));
        assert_eq!(m.st.gpr[1], 0x55);
        assert_eq!(*m.st.sreg(Seg::Ss), ss);
    }

    #[test]
    fn v86_mode_loads_dpl3_real_style_segments() {
        for (op, s) in ops() {
            let mut m = machine(TestMode::Prot32, &[]);
            m.st.rflags |= flags::VM;
            m.st.cpl = 3;
            for r in Seg::ALL {
                *m.st.sreg_mut(r) =
                    Segment { attr: Segment::real(0).attr | (3 << attr::DPL_SHIFT), ..Segment::real(0) };
            }
            let code = enc(&[], op, 16, 0x300);
            m.poke(CODE, &code);
            pointer(&mut m, 0x300, 0xbeef, 2, 0x0f00);
            m.step().unwrap();
            assert_eq!(m.st.gpr[1] & 0xffff, 0xbeef);
            let r = *m.st.sreg(s);
            assert_eq!((r.selector, r.base, r.limit, r.dpl()), (0x0f00, 0xf000, 0xffff, 3), "{s:?}");
        }
    }

    /// Runs `op` with selector `sel` in 32-bit protected mode at `cpl`; returns the result and the
    /// machine.
    fn prot(op: &[u8], sel: u16, cpl: u8) -> (Result<(), Fault>, Machine) {
        let mut m = machine(TestMode::Prot32, &enc(&[], op, 32, DATA as u32));
        m.st.cpl = cpl;
        if cpl != 0 {
            // Keep SS consistent with the CPL for the SS rules (its DPL must equal CPL).
            m.st.sreg_mut(Seg::Ss).attr |= (cpl as u16) << attr::DPL_SHIFT;
        }
        m.st.gpr[1] = 0x1111_2222;
        pointer(&mut m, DATA, 0x0bad_f00d, 4, sel);
        let r = m.step().map(|_| ());
        (r, m)
    }

    #[test]
    fn protected_mode_loads_and_faults() {
        let (lds, les, lss, lfs, lgs) =
            (&[0xc5][..], &[0xc4][..], &[0x0f, 0xb2][..], &[0x0f, 0xb4][..], &[0x0f, 0xb5][..]);
        // Success: the descriptor's base and limit, accessed bit set in the cache, offset written.
        for (op, s) in [(lds, Seg::Ds), (les, Seg::Es), (lfs, Seg::Fs), (lgs, Seg::Gs)] {
            let (r, m) = prot(op, 0x23, 0);
            assert_eq!(r, Ok(()), "{s:?}");
            assert_eq!(m.st.gpr[1], 0x0bad_f00d);
            let seg = *m.st.sreg(s);
            assert_eq!((seg.selector, seg.base, seg.limit), (0x23, 0x1000, 0xffff));
            assert_ne!(seg.attr & attr::ACCESSED, 0);
            // The descriptor in memory is marked accessed too.
            assert_ne!(m.peek(0x500 + 4 * 8 + 5, 1)[0] & 1, 0);
            // A readable conforming code segment may be loaded into a data segment register.
            let (r, m) = prot(op, 0x30, 3);
            assert_eq!(r, Ok(()), "{s:?} conforming code");
            assert_eq!(m.st.sreg(s).base, 0x2000);
            // A null selector loads and leaves an unusable register.
            let (r, m) = prot(op, 0x0003, 0);
            assert_eq!(r, Ok(()));
            assert_eq!(m.st.sreg(s).selector, 3);
            assert_eq!(m.st.sreg(s).attr & attr::P, 0);
        }
        // Data segment register faults: (selector, CPL, fault).
        let data_faults = [
            (0x28, 0, Fault::gp(0x28)), // execute-only code
            (0x38, 0, Fault::gp(0x38)), // system descriptor
            (0x78, 0, Fault::gp(0x78)), // beyond the GDT limit
            (0x54, 0, Fault::gp(0x54)), // LDT selector, no LDT loaded
            (0x52, 3, Fault::gp(0x50)), // DPL 1 < CPL 3
            (0x53, 1, Fault::gp(0x50)), // DPL 1 < RPL 3
            (0x40, 0, Fault::np(0x40)), // not present (checked after the type and privilege)
        ];
        for (op, s) in [(lds, Seg::Ds), (les, Seg::Es), (lfs, Seg::Fs), (lgs, Seg::Gs)] {
            for (sel, cpl, f) in data_faults.clone() {
                let (r, m) = prot(op, sel, cpl);
                assert_eq!(r, Err(f), "{s:?} selector {sel:#x} cpl {cpl}");
                assert_eq!(m.st.gpr[1], 0x1111_2222, "register unchanged on a fault");
                assert_eq!(m.st.sreg(s).selector, 0x10, "segment unchanged on a fault");
            }
        }
        // SS: writable data with DPL = RPL = CPL, present (else #SS), never null outside 64-bit mode.
        let (r, m) = prot(lss, 0x10, 0);
        assert_eq!(r, Ok(()));
        assert_eq!(m.st.gpr[1], 0x0bad_f00d);
        assert_eq!(m.st.irq_shadow_icount, u64::MAX, "LSS sets no interrupt shadow");
        let (r, m) = prot(lss, 0x23, 3);
        assert_eq!(r, Ok(()));
        assert_eq!(m.st.sreg(Seg::Ss).base, 0x1000);
        let ss_faults = [
            (0x00, 0, Fault::gp0()),
            (0x03, 3, Fault::gp0()),
            (0x13, 0, Fault::gp(0x10)), // RPL != CPL
            (0x20, 0, Fault::gp(0x20)), // RPL 0 = CPL, DPL 3 != CPL
            (0x58, 0, Fault::gp(0x58)), // read-only data
            (0x28, 0, Fault::gp(0x28)), // code
            (0x30, 0, Fault::gp(0x30)), // conforming code
            (0x40, 0, Fault::gp(0x40)), // read-only and not present: the type check comes first
            (0x48, 0, Fault::ss(0x48)), // writable, not present: #SS
            (0x78, 0, Fault::gp(0x78)),
        ];
        for (sel, cpl, f) in ss_faults {
            let (r, m) = prot(lss, sel, cpl);
            assert_eq!(r, Err(f), "LSS selector {sel:#x} cpl {cpl}");
            assert_eq!(m.st.gpr[1], 0x1111_2222);
        }
    }

    #[test]
    fn protected_mode_sixteen_bit_operand_and_segment_limit() {
        // 66 0F B4: LFS cx, m16:16; the selector follows a 2-byte offset.
        let mut m = machine(TestMode::Prot32, &enc(&[0x66], &[0x0f, 0xb4], 32, 0x40));
        m.st.gpr[1] = 0x7777_8888;
        // The pointer is read through DS = 0x60 (base 448 KiB, limit 0xff).
        m.st.sreg_mut(Seg::Ds).base = 0x0007_0000;
        m.st.sreg_mut(Seg::Ds).limit = 0xff;
        pointer(&mut m, 0x0007_0040, 0x4321, 2, 0x23);
        m.step().unwrap();
        assert_eq!(m.st.gpr[1], 0x7777_4321);
        assert_eq!(m.st.sreg(Seg::Fs).selector, 0x23);
        // A pointer whose selector word crosses the limit: #GP(0) before any load.
        let mut m = machine(TestMode::Prot32, &enc(&[], &[0x0f, 0xb5], 32, 0xfb));
        m.st.sreg_mut(Seg::Ds).limit = 0xff;
        assert_eq!(m.step(), Err(Fault::gp0()));
        assert_eq!(m.st.sreg(Seg::Gs).selector, 0x10);
    }

    #[test]
    fn long_mode_rex_w_pointer_null_ss_and_no_lds_les() {
        // REX.W 0F B2: LSS rcx, m16:64.
        let mut m = machine(TestMode::Long64, &enc(&[0x48], &[0x0f, 0xb2], 64, DATA as u32));
        pointer(&mut m, DATA, 0x1234_5678_9abc_def0, 8, 0x10);
        m.step().unwrap();
        assert_eq!(m.st.gpr[1], 0x1234_5678_9abc_def0);
        assert_eq!(m.st.sreg(Seg::Ss).selector, 0x10);
        // 32-bit operand size zero-extends; the selector follows 4 bytes.
        let mut m = machine(TestMode::Long64, &enc(&[], &[0x0f, 0xb4], 64, DATA as u32));
        m.st.gpr[1] = u64::MAX;
        pointer(&mut m, DATA, 0x8000_0001, 4, 0x23);
        m.step().unwrap();
        assert_eq!(m.st.gpr[1], 0x8000_0001);
        assert_eq!(m.st.sreg(Seg::Fs).selector, 0x23);
        // 64-bit mode: a null SS with RPL = CPL < 3 loads; RPL != CPL or CPL 3 is #GP(0).
        for (sel, cpl, ok) in [(0u16, 0u8, true), (1, 1, true), (3, 0, false), (3, 3, false), (1, 0, false)] {
            let mut m = machine(TestMode::Long64, &enc(&[0x48], &[0x0f, 0xb2], 64, DATA as u32));
            m.st.cpl = cpl;
            // The first 2 MiB become a user page so that CPL 3 can read the pointer.
            // (U at every level: the PML4 at PD - 0x2000, the PDPT at PD - 0x1000, and the PD.)
            m.poke(PD - 0x2000, &((PD - 0x1000) | 7).to_le_bytes());
            m.poke(PD - 0x1000, &(PD | 7).to_le_bytes());
            m.poke(PD, &0x87u64.to_le_bytes());
            m.st.gpr[1] = 7;
            pointer(&mut m, DATA, 0x42, 8, sel);
            let r = m.step().map(|_| ());
            if ok {
                assert_eq!(r, Ok(()), "null SS {sel} at CPL {cpl}");
                assert_eq!(m.st.gpr[1], 0x42);
            } else {
                assert_eq!(r, Err(Fault::gp0()), "null SS {sel} at CPL {cpl}");
                assert_eq!(m.st.gpr[1], 7);
            }
        }
        // C4/C5 are VEX prefixes in 64-bit mode, so LDS/LES cannot be encoded there; the handlers also
        // refuse to run in 64-bit mode.
        for op in [0xc4u8, 0xc5] {
            let mut m = machine(TestMode::Prot32, &enc(&[], &[op], 32, DATA as u32));
            let insn = m.decode();
            m.st.sreg_mut(Seg::Cs).attr |= attr::L;
            m.st.efer |= efer::LMA;
            assert_eq!(m.exec(&insn).map(|_| ()), Err(Fault::ud()));
        }
    }

    #[test]
    fn compatibility_mode_has_lds_and_no_null_ss() {
        let compat = |code: &[u8]| {
            let mut m = machine(TestMode::Long64, code);
            let cs = m.st.sreg_mut(Seg::Cs);
            cs.attr = (cs.attr & !attr::L) | attr::DB;
            m
        };
        let mut m = compat(&enc(&[], &[0xc5], 32, DATA as u32));
        pointer(&mut m, DATA, 0xcafe_f00d, 4, 0x23);
        m.step().unwrap();
        assert_eq!(m.st.gpr[1], 0xcafe_f00d);
        assert_eq!(m.st.sreg(Seg::Ds).base, 0x1000);
        let mut m = compat(&enc(&[], &[0x0f, 0xb2], 32, DATA as u32));
        pointer(&mut m, DATA, 0x1, 4, 0);
        assert_eq!(m.step().map(|_| ()), Err(Fault::gp0()), "null SS is 64-bit mode only");
    }

    #[test]
    fn register_source_is_undefined() {
        // 0F B2 C1 (mod = 11) has no meaning; iced decodes it as invalid, which raises #UD.
        let mut m = machine(TestMode::Prot32, &[0x0f, 0xb2, 0xc1]);
        assert_eq!(m.step().map(|_| ()), Err(Fault::ud()));
    }
}
