//! Control and debug registers (MOV CRn/DRn, SMSW/LMSW/CLTS, the CR4 bits a model allows, CR0
//! writes), and the cache and TLB instructions (INVLPG, WBINVD/INVD, CLFLUSH).

use super::*;

pub(super) fn smsw(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::UMIP != 0 && ctx.st.cpl > 0 && protected(ctx) {
        return Err(Fault::gp0());
    }
    let v = ctx.st.cr0;
    if insn.i.op0_kind() == OpKind::Memory {
        let off = ea(ctx, insn);
        ctx.write_mem(mem_seg(insn), off, 2, v & 0xffff)
    } else {
        let size = op_size(insn, 0);
        write_op(ctx, insn, 0, v & size_mask(size))
    }
}

pub(super) fn lmsw(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let v = read_op(ctx, insn, 0)? & 0xf;
    // LMSW can set PE but never clear it.
    let new = (ctx.st.cr0 & !0xe) | (v & 0xf) | (ctx.st.cr0 & cr0::PE);
    write_cr0(ctx, new)
}

pub(super) fn clts(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    ctx.st.cr0 &= !cr0::TS;
    Ok(())
}

pub(super) fn invlpg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let off = ea(ctx, insn);
    let s = mem_seg(insn);
    let lin = if ctx.st.mode() == Mode::Long64 {
        let b = if matches!(s, Seg::Fs | Seg::Gs) { ctx.st.sreg(s).base } else { 0 };
        b.wrapping_add(off)
    } else {
        ctx.st.sreg(s).base.wrapping_add(off) & 0xffff_ffff
    };
    ctx.mmu.tlb.flush_page(lin);
    ctx.break_block = true;
    Ok(())
}

pub(super) fn privileged_nop(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)
}

pub(super) fn clflush(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    // Checks the address like a byte read; caches are not modelled.
    let off = ea(ctx, insn);
    let lin = ctx.seg_lin(mem_seg(insn), off, 1, crate::paging::AccessKind::Read)?;
    ctx.lin_to_phys(lin, crate::paging::AccessKind::Read)?;
    Ok(())
}

pub(super) fn cr_index(r: Register) -> Option<usize> {
    let n = (r as u32).wrapping_sub(Register::CR0 as u32);
    (n < 16).then_some(n as usize)
}

pub(super) fn mov_from_cr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let n = cr_index(insn.i.op1_register()).ok_or_else(Fault::ud)?;
    let v = match n {
        0 => ctx.st.cr0,
        2 => ctx.st.cr2,
        3 => ctx.st.cr3,
        4 => ctx.st.cr4,
        8 => ctx.st.cr8,
        _ => return Err(Fault::ud()),
    };
    let g = reg_op(insn, 0)?;
    ctx.st.write_gpr(g, v & size_mask(g.size));
    Ok(())
}

/// CR4 bits software may set on the default model (only features Ferrite implements and advertises;
/// [`crate::model::CpuModel::cr4_valid`] adjusts them to a model).
pub const CR4_VALID: u64 = cr4::TSD
    | cr4::DE
    | cr4::PSE
    | cr4::PAE
    | cr4::PGE
    | cr4::PCE
    | cr4::OSFXSR
    | cr4::OSXMMEXCPT
    | cr4::OSXSAVE
    | cr4::FSGSBASE
    | cr4::SMEP
    | cr4::SMAP;

/// The CR4 bits this CPU lets software set: [`CR4_VALID`] adjusted to its model (VME and PVI only
/// while the model advertises VME, CPUID.1:EDX[1]).
pub fn cr4_valid(st: &crate::state::CpuState) -> u64 {
    st.model.cr4_valid(CR4_VALID)
}

/// Writes CR0 with the architectural checks and side effects (long-mode activation, TLB flush).
pub fn write_cr0(ctx: &mut Ctx<'_>, v: u64) -> Result<(), Fault> {
    if v >> 32 != 0 {
        return Err(Fault::gp0());
    }
    let v = v | cr0::ET;
    if v & cr0::PG != 0 && v & cr0::PE == 0 {
        return Err(Fault::gp0());
    }
    if v & cr0::NW != 0 && v & cr0::CD == 0 {
        return Err(Fault::gp0());
    }
    let old = ctx.st.cr0;
    let pg_on = v & cr0::PG != 0 && old & cr0::PG == 0;
    let pg_off = v & cr0::PG == 0 && old & cr0::PG != 0;
    if pg_on && ctx.st.efer & efer::LME != 0 {
        if ctx.st.cr4 & cr4::PAE == 0 {
            return Err(Fault::gp0());
        }
        if ctx.st.sreg(Seg::Cs).long() {
            return Err(Fault::gp0());
        }
        ctx.st.efer |= efer::LMA;
    }
    if pg_off && ctx.st.cr4 & cr4::PCIDE != 0 {
        // Paging cannot be turned off with PCIDs enabled (SDM MOV to CR0).
        return Err(Fault::gp0());
    }
    if pg_off && ctx.st.efer & efer::LMA != 0 {
        if ctx.st.mode() == Mode::Long64 {
            return Err(Fault::gp0());
        }
        ctx.st.efer &= !efer::LMA;
    }
    ctx.st.cr0 = v;
    // CR0.AM counts at CPL 3 only, where CR0 cannot be written, so this changes nothing today;
    // it keeps the tag a function of the state should the tag ever depend on more of CR0.
    ctx.privilege_changed();
    if (old ^ v) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
        ctx.mmu.tlb.flush(false);
    }
    ctx.break_block = true;
    Ok(())
}

pub(super) fn mov_to_cr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let n = cr_index(insn.i.op0_register()).ok_or_else(Fault::ud)?;
    let g = reg_op(insn, 1)?;
    let v = ctx.st.read_gpr(g);
    ctx.break_block = true;
    match n {
        0 => write_cr0(ctx, v),
        2 => {
            ctx.st.cr2 = v;
            Ok(())
        }
        3 => {
            // With CR4.PCIDE = 1, bit 63 asks to keep the PCID's TLB entries; it is not stored.
            let pcide = ctx.st.cr4 & cr4::PCIDE != 0;
            let no_flush = pcide && v >> 63 != 0;
            let v = if pcide { v & !(1 << 63) } else { v };
            if ctx.st.efer & efer::LMA != 0 && v >> crate::cpuid::PHYS_ADDR_BITS != 0 {
                return Err(Fault::gp0());
            }
            let old = ctx.st.cr3;
            ctx.st.cr3 = v;
            // The TLB holds the current PCID's entries only, plus global ones (which every PCID
            // shares): every change of PCID drops the others. So a no-flush write that keeps the
            // PCID keeps them, as the SDM allows (Vol. 3A 4.10.4.1); one that changes it drops them
            // (they belong to the old PCID, which the TLB does not tag); any other write drops every
            // non-global entry, as it must.
            if !(no_flush && (old ^ v) & 0xfff == 0) {
                ctx.mmu.tlb.flush(true);
            }
            Ok(())
        }
        4 => {
            if v & !cr4_valid(ctx.st) != 0 {
                return Err(Fault::gp0());
            }
            let old = ctx.st.cr4;
            // PCIDE can be set only in IA-32e mode with CR3[11:0] = 0 (SDM MOV to CR4).
            if v & !old & cr4::PCIDE != 0 && (ctx.st.efer & efer::LMA == 0 || ctx.st.cr3 & 0xfff != 0) {
                return Err(Fault::gp0());
            }
            if ctx.st.efer & efer::LMA != 0 && v & cr4::PAE == 0 {
                return Err(Fault::gp0());
            }
            ctx.st.cr4 = v;
            let paging_bits = cr4::PGE | cr4::PAE | cr4::PSE | cr4::SMEP | cr4::SMAP | cr4::PCIDE | cr4::PKE;
            if (old ^ v) & paging_bits != 0 {
                ctx.mmu.tlb.flush(false);
            }
            Ok(())
        }
        8 => {
            if v >> 4 != 0 {
                return Err(Fault::gp0());
            }
            ctx.st.cr8 = v;
            Ok(())
        }
        _ => Err(Fault::ud()),
    }
}

/// RDPKRU: EDX:EAX = 0:PKRU. #UD with CR4.PKE = 0, #GP(0) unless ECX = 0; at any privilege level
/// (SDM vol. 2 RDPKRU). Whether the instruction exists at all is the model's (PKU).
pub(super) fn rdpkru(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::PKE == 0 {
        return Err(Fault::ud());
    }
    if ctx.st.gpr[1] as u32 != 0 {
        return Err(Fault::gp0());
    }
    ctx.st.gpr[0] = u64::from(ctx.st.pkru);
    ctx.st.gpr[2] = 0;
    Ok(())
}

/// WRPKRU: PKRU = EAX. #UD with CR4.PKE = 0, #GP(0) unless ECX = EDX = 0; at any privilege level.
pub(super) fn wrpkru(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::PKE == 0 {
        return Err(Fault::ud());
    }
    if ctx.st.gpr[1] as u32 != 0 || ctx.st.gpr[2] as u32 != 0 {
        return Err(Fault::gp0());
    }
    crate::exec::fpstate::set_pkru(ctx, ctx.st.gpr[0] as u32);
    // Later accesses of this block must see the new rights.
    ctx.break_block = true;
    Ok(())
}

pub(super) fn dr_index(r: Register) -> Option<usize> {
    let n = (r as u32).wrapping_sub(Register::DR0 as u32);
    (n < 16).then_some(n as usize)
}

/// General detect (DR7.GD): any MOV to or from a debug register is a fault-class #DB with DR6.BD set
/// (SDM Vol. 3B 17.2.4); it comes after the CPL check and before the DR4/DR5 #UD. The processor clears
/// GD when it enters the #DB handler (done by the interpreter on every #DB delivery).
pub(super) fn general_detect(ctx: &mut Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.dr[7] & crate::debug::dr7::GD != 0 {
        ctx.st.dr[6] |= crate::debug::dr6::BD;
        return Err(Fault::Exc { vector: crate::fault::vec::DB, error: None });
    }
    Ok(())
}

/// The checks common to MOV from/to DRn, in the SDM's order: CPL 0 (#GP), general detect (#DB), then
/// the register: DR4/DR5 alias DR6/DR7 unless CR4.DE (then #UD); DR8-15 are #UD. Returns the index.
pub(super) fn dr_operand(ctx: &mut Ctx<'_>, r: Register) -> Result<usize, Fault> {
    require_cpl0(ctx)?;
    general_detect(ctx)?;
    let mut n = dr_index(r).ok_or_else(Fault::ud)?;
    if n == 4 || n == 5 {
        if ctx.st.cr4 & cr4::DE != 0 {
            return Err(Fault::ud());
        }
        n += 2;
    }
    if n > 7 {
        return Err(Fault::ud());
    }
    Ok(n)
}

pub(super) fn mov_from_dr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let n = dr_operand(ctx, insn.i.op1_register())?;
    let v = ctx.st.dr[n];
    let g = reg_op(insn, 0)?;
    ctx.st.write_gpr(g, v & size_mask(g.size));
    Ok(())
}

pub(super) fn mov_to_dr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let n = dr_operand(ctx, insn.i.op0_register())?;
    let g = reg_op(insn, 1)?;
    let v = ctx.st.read_gpr(g);
    if (n == 6 || n == 7) && v >> 32 != 0 {
        return Err(Fault::gp0());
    }
    ctx.st.dr[n] = match n {
        6 => (v & 0x0001_e00f) | 0xffff_0ff0,
        7 => (v & 0xffff_2bff) | 0x400,
        _ => v,
    };
    if ctx.mmu.debug.sync(ctx.st) {
        // A newly watched data page may be cached in the TLB.
        ctx.mmu.tlb.flush(false);
    }
    Ok(())
}

#[cfg(test)]
mod pku_tests {
    use crate::exec::string::testkit::Machine;
    use crate::fault::Fault;
    use crate::mem::Ctx;
    use crate::model::CpuModel;
    use crate::paging::{AccessKind, pf};
    use crate::state::{cr0, cr4};
    use crate::testutil::{PD, TestMode};

    const RDPKRU: &[u8] = &[0x0f, 0x01, 0xee];
    const WRPKRU: &[u8] = &[0x0f, 0x01, 0xef];
    /// A 4 KiB page table for linear 2 MiB..4 MiB: page k maps [`USER`] + k * 4 KiB to physical
    /// 0x40000 + k * 4 KiB, a present user page with protection key k (read-only for k = 7).
    const PT: u64 = 0x120000;
    const USER: u64 = 0x200000;

    fn machine(code: &[u8]) -> Machine {
        let mut m = Machine::new(TestMode::Long64, code);
        m.st.model = CpuModel::max();
        m.st.cr4 |= cr4::PKE;
        m
    }

    /// A machine whose linear 2 MiB..4 MiB are user pages with keys (see [`PT`]).
    fn paged() -> Machine {
        let mut m = machine(WRPKRU);
        // The test setup maps the first GiB as supervisor pages: make the path to the table user.
        let pml4 = m.st.cr3;
        let pdpt = m.peek_le(pml4, 8) & !0xfff;
        m.poke(pml4, &(pdpt | 7).to_le_bytes());
        m.poke(pdpt, &(PD | 7).to_le_bytes());
        m.poke(PD + 8, &(PT | 7).to_le_bytes());
        for k in 0..16u64 {
            let rw = if k == 7 { 0 } else { 2 };
            let pte = (0x40000 + k * 0x1000) | 5 | rw | (k << 59);
            m.poke(PT + k * 8, &pte.to_le_bytes());
        }
        m
    }

    /// One data access (or fetch) at `lin` with privilege `cpl`, through the TLB.
    fn access(m: &mut Machine, lin: u64, kind: AccessKind, cpl: u8) -> Result<(), Fault> {
        m.st.cpl = cpl;
        let mut ctx =
            Ctx { st: &mut m.st, bus: &mut m.bus, mmu: &mut m.mmu, next_rip: 0, break_block: false };
        let r = match kind {
            AccessKind::Read => ctx.read_lin(lin, 4).map(|_| ()),
            AccessKind::Write => ctx.write_lin(lin, 4, 0x5a5a),
            AccessKind::Exec => ctx.lin_to_phys(lin, AccessKind::Exec).map(|_| ()),
        };
        m.st.cpl = 0;
        r
    }

    fn wrpkru(m: &mut Machine, v: u32) {
        m.st.rip = crate::testutil::CODE;
        m.st.gpr[0] = u64::from(v);
        m.st.gpr[1] = 0;
        m.st.gpr[2] = 0;
        let s = m.step().expect("wrpkru");
        assert!(s.break_block, "WRPKRU ends the block");
    }

    /// RDPKRU/WRPKRU: #UD without CR4.PKE, #GP(0) for ECX (and EDX for WRPKRU) not 0, at any CPL;
    /// RDPKRU zeroes RDX and the upper half of RAX.
    #[test]
    fn rdpkru_wrpkru_rules() {
        for code in [RDPKRU, WRPKRU] {
            let mut m = machine(code);
            m.st.cr4 &= !cr4::PKE;
            assert_eq!(m.step(), Err(Fault::ud()), "{code:x?} without CR4.PKE");
            let mut m = machine(code);
            m.st.gpr[1] = 1;
            assert_eq!(m.step(), Err(Fault::gp0()), "{code:x?} ECX = 1");
        }
        let mut m = machine(WRPKRU);
        m.st.gpr[2] = 1 << 32; // EDX = 0: the upper half does not count
        m.st.gpr[0] = 0xffff_ffff_1234_5678;
        m.st.cpl = 3;
        m.step().expect("wrpkru at CPL 3");
        assert_eq!(m.st.pkru, 0x1234_5678);
        let mut m2 = machine(WRPKRU);
        m2.st.gpr[2] = 1;
        assert_eq!(m2.step(), Err(Fault::gp0()), "WRPKRU EDX = 1");
        let mut m = machine(RDPKRU);
        m.st.pkru = 0x8000_0004;
        m.st.gpr[0] = u64::MAX;
        m.st.gpr[2] = u64::MAX;
        m.st.cpl = 3;
        m.step().expect("rdpkru");
        assert_eq!((m.st.gpr[0], m.st.gpr[2]), (0x8000_0004, 0));
    }

    /// Keys in the page walk: AD refuses data accesses, WD writes by user mode or with CR0.WP; the
    /// error code has P, W, U as usual plus PK (bit 5); fetches ignore keys; CR4.PKE = 0 ignores
    /// them; and the PK bit reports the key's verdict even when the page refuses the write anyway.
    #[test]
    fn protection_keys_in_the_page_walk() {
        use AccessKind::{Exec, Read, Write};
        let page = |k: u64| USER + k * 0x1000;
        let (p, w, u, pk) = (pf::P, pf::W, pf::U, pf::PK);
        // Key 1: AD; key 2: WD; key 7's page is read-only and WD; key 0 unrestricted.
        let pkru = (1 << 2) | (2 << 4) | (2 << 14);
        /// (key, access, CPL, CR0.WP, expected #PF error code or success).
        type Case = (u64, AccessKind, u8, bool, Result<(), u32>);
        let cases: &[Case] = &[
            (0, Read, 3, true, Ok(())),
            (0, Write, 3, true, Ok(())),
            (1, Read, 3, true, Err(p | u | pk)),
            (1, Write, 3, true, Err(p | w | u | pk)),
            (1, Read, 0, true, Err(p | pk)),
            (1, Write, 0, false, Err(p | w | pk)),
            (1, Exec, 3, true, Ok(())),
            (2, Read, 3, true, Ok(())),
            (2, Write, 3, true, Err(p | w | u | pk)),
            (2, Write, 0, true, Err(p | w | pk)),
            (2, Write, 0, false, Ok(())),
            (2, Read, 0, true, Ok(())),
            (7, Write, 3, true, Err(p | w | u | pk)),
            (7, Read, 3, true, Ok(())),
        ];
        for &(k, kind, cpl, wp, want) in cases {
            let mut m = paged();
            m.st.pkru = pkru;
            if !wp {
                m.st.cr0 &= !cr0::WP;
            } else {
                m.st.cr0 |= cr0::WP;
            }
            let got = access(&mut m, page(k) + 0x10, kind, cpl);
            assert_eq!(got, want.map_err(Fault::pf), "key {k} {kind:?} CPL {cpl} WP {wp}");
            if want.is_err() {
                assert_eq!(m.st.cr2, page(k) + 0x10);
            }
        }
        // Read-only page, key 0: the write fails without PK.
        let mut m = paged();
        m.poke(PT, &(0x40000u64 | 5).to_le_bytes());
        assert_eq!(access(&mut m, page(0), Write, 3), Err(Fault::pf(p | w | u)));
        // CR4.PKE = 0: keys mean nothing.
        let mut m = paged();
        m.st.pkru = u32::MAX;
        m.st.cr4 &= !cr4::PKE;
        assert_eq!(access(&mut m, page(1), Read, 3), Ok(()));
        assert_eq!(access(&mut m, page(1), Write, 3), Ok(()));
        // Supervisor pages have no key: AD for key 0 leaves them alone.
        let mut m = paged();
        m.st.pkru = 3;
        assert_eq!(access(&mut m, 0x10000, Write, 0), Ok(()));
        assert_eq!(access(&mut m, page(0), Read, 0), Err(Fault::pf(p | pk)));
    }

    /// WRPKRU takes effect on the next access even where the TLB already holds the page.
    #[test]
    fn wrpkru_applies_to_cached_translations() {
        let mut m = paged();
        assert_eq!(access(&mut m, USER + 0x1000, AccessKind::Write, 3), Ok(()));
        wrpkru(&mut m, 1 << 2);
        assert_eq!(
            access(&mut m, USER + 0x1000, AccessKind::Read, 3),
            Err(Fault::pf(pf::P | pf::U | pf::PK))
        );
        wrpkru(&mut m, 0);
        assert_eq!(access(&mut m, USER + 0x1000, AccessKind::Read, 3), Ok(()));
        // CR4.PKE going on applies the rights to what the TLB holds too (MOV CR4 drops it).
        m.st.pkru = 1 << 2;
        m.st.cr4 &= !cr4::PKE;
        m.mmu.tlb.flush(false);
        assert_eq!(access(&mut m, USER + 0x1000, AccessKind::Read, 3), Ok(()));
        let code = crate::testutil::asm(64, |a| {
            use iced_x86::code_asm::*;
            a.mov(cr4, rax).unwrap();
        });
        let mut m2 = Machine::new(TestMode::Long64, &code);
        m2.st.model = CpuModel::max();
        std::mem::swap(&mut m2.bus, &mut m.bus);
        std::mem::swap(&mut m2.mmu, &mut m.mmu);
        m2.st.cr4 = m.st.cr4;
        m2.st.pkru = m.st.pkru;
        m2.st.gpr[0] = m.st.cr4 | cr4::PKE;
        m2.bus.ram[crate::testutil::CODE as usize..][..code.len()].copy_from_slice(&code);
        m2.step().expect("mov cr4");
        assert_eq!(
            access(&mut m2, USER + 0x1000, AccessKind::Read, 3),
            Err(Fault::pf(pf::P | pf::U | pf::PK))
        );
    }

    /// CR4.PKE exists only where the model advertises PKU; CPUID.7.ECX has PKU and, with CR4.PKE,
    /// OSPKE; leaf 0xD describes the PKRU component (9) and XSETBV accepts XCR0 bit 9 only then.
    #[test]
    fn cpuid_cr4_and_xcr0_follow_the_model() {
        use crate::cpuid::{cpuid_for_model, cpuid_model};
        let (max, def) = (CpuModel::max(), CpuModel::ferrite());
        assert_ne!(max.cr4_valid(super::CR4_VALID) & cr4::PKE, 0);
        assert_eq!(def.cr4_valid(super::CR4_VALID) & cr4::PKE, 0);
        assert_eq!(cpuid_for_model(&max, 7, 0, 0, 0)[2] & 0x18, 0x08);
        assert_eq!(cpuid_for_model(&max, 7, 0, 0, cr4::PKE)[2] & 0x18, 0x18);
        assert_eq!(cpuid_for_model(&def, 7, 0, 0, cr4::PKE)[2] & 0x18, 0);
        assert_eq!(cpuid_model(&max, 0xd, 0, 0), [0x207, 576, 2696, 0]);
        assert_eq!(cpuid_model(&max, 0xd, 9, 0), [8, 2688, 0, 0]);
        assert_eq!(cpuid_model(&def, 0xd, 0, 0), [7, 576, 832, 0]);
        assert_eq!(cpuid_model(&def, 0xd, 9, 0), [0; 4]);
        assert_eq!(crate::cpuid::with_xcr0(cpuid_model(&max, 0xd, 1, 0), 0xd, 1, 0x207)[1], 840);
        assert_eq!(crate::cpuid::with_xcr0(cpuid_model(&max, 0xd, 0, 0), 0xd, 0, 0x203)[1], 2696);
        const XSETBV: &[u8] = &[0x0f, 0x01, 0xd1];
        for (model, want) in [(max, Ok(())), (def, Err(Fault::gp0()))] {
            let mut m = Machine::new(TestMode::Long64, XSETBV);
            m.st.model = model;
            m.st.cr4 |= cr4::OSXSAVE;
            m.st.gpr[0] = 0x203;
            m.st.gpr[1] = 0;
            m.st.gpr[2] = 0;
            assert_eq!(m.step().map(|_| ()), want, "{:?}", model.base);
        }
    }

    /// XSAVE/XSAVEC/XRSTOR of component 9: PKRU at 2688 in the standard form, after AVX (832) in the
    /// compacted one; XSTATE_BV[9] = (PKRU != 0); XRSTOR with the bit clear loads the initial 0.
    #[test]
    fn xsave_component_9_holds_pkru() {
        use iced_x86::code_asm::*;
        const AREA: u64 = 0x20000;
        for compact in [false, true] {
            let code = crate::testutil::asm(64, |a| {
                if compact {
                    a.xsavec64(ptr(rbx)).unwrap();
                } else {
                    a.xsave64(ptr(rbx)).unwrap();
                }
                a.xrstor64(ptr(rbx)).unwrap();
            });
            let mut m = machine(&code);
            m.st.cr4 |= cr4::OSXSAVE;
            m.st.xcr0 = 0x207;
            m.st.pkru = 0x5555_5554;
            m.st.gpr[3] = AREA;
            m.st.gpr[0] = 0x207;
            m.st.gpr[2] = 0;
            m.step().expect("xsave");
            let off = if compact { 832 } else { 2688 };
            assert_eq!(m.peek_le(AREA + off, 8), 0x5555_5554, "compact {compact}");
            assert_ne!(m.peek_le(AREA + 512, 8) & 0x200, 0, "XSTATE_BV[9]");
            // XRSTOR loads it back; then with XSTATE_BV[9] clear, the initial value.
            m.st.pkru = 0;
            m.step().expect("xrstor");
            assert_eq!(m.st.pkru, 0x5555_5554);
            let bv = m.peek_le(AREA + 512, 8) & !0x200;
            m.poke(AREA + 512, &bv.to_le_bytes());
            let xrstor_len = 4;
            m.st.rip = crate::testutil::CODE + code.len() as u64 - xrstor_len;
            m.step().expect("xrstor with component 9 in its initial state");
            assert_eq!(m.st.pkru, 0, "compact {compact}");
        }
    }
}
