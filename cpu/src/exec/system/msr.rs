//! CPUID, the TSC (RDTSC/RDTSCP), the MSRs the CPU keeps with their #GP rules (RDMSR/WRMSR, the rest
//! going to the board), and SWAPGS.

use super::*;

pub(super) fn cpuid_(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    let leaf = ctx.st.gpr[0] as u32;
    let sub = ctx.st.gpr[1] as u32;
    let apic_id = 0;
    let r = cpuid::with_xcr0(
        cpuid::cpuid_for_model(&ctx.st.model, leaf, sub, apic_id, ctx.st.cr4),
        leaf,
        sub,
        ctx.st.xcr0,
    );
    for (i, idx) in [0usize, 3, 1, 2].iter().enumerate() {
        ctx.st.gpr[*idx] = r[i] as u64;
    }
    Ok(())
}

/// The guest-visible TSC.
pub fn read_tsc(ctx: &mut Ctx<'_>) -> u64 {
    let icount = ctx.st.icount;
    tsc_at(ctx, icount)
}

/// The guest-visible TSC at retired-instruction count `icount`: the machine's counter at that count
/// (virtual time, idle included) plus IA32_TSC_ADJUST/the TSC offset.
fn tsc_at(ctx: &mut Ctx<'_>, icount: u64) -> u64 {
    ctx.bus.tsc(icount).wrapping_add(ctx.st.msr.tsc_offset)
}

/// RDTSC (`rdtscp` false) or RDTSCP as the instruction at retired count `icount` runs it: #GP(0)
/// with CR4.TSD at CPL > 0 in protected mode (SDM vol. 2B, RDTSC), else EDX:EAX = the TSC and, for
/// RDTSCP, ECX = IA32_TSC_AUX[31:0]. The handlers call it with `st.icount`; the JIT calls it from
/// generated code (which keeps the count in a register) with the count at the instruction, so that
/// RDTSC neither syncs nor ends anything. Reads of the state: CR4, CPL, the mode, the MSRs; writes:
/// RAX, RDX (RCX) only.
pub fn rdtsc_at(ctx: &mut Ctx<'_>, icount: u64, rdtscp: bool) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::TSD != 0 && ctx.st.cpl != 0 && protected(ctx) {
        return Err(Fault::gp0());
    }
    let t = tsc_at(ctx, icount);
    ctx.st.gpr[0] = t & 0xffff_ffff;
    ctx.st.gpr[2] = t >> 32;
    if rdtscp {
        ctx.st.gpr[1] = ctx.st.msr.tsc_aux & 0xffff_ffff;
    }
    Ok(())
}

pub(super) fn rdtsc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    let icount = ctx.st.icount;
    rdtsc_at(ctx, icount, false)
}

pub(super) fn rdtscp(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    let icount = ctx.st.icount;
    rdtsc_at(ctx, icount, true)
}

/// IA32_APIC_BASE.BSP: this processor is the bootstrap processor.
pub(super) const APIC_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE.EXTD: x2APIC mode (with EN).
pub(super) const APIC_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE.EN: the local APIC is globally enabled.
pub(super) const APIC_EN: u64 = 1 << 11;

/// Whether the local APIC is in x2APIC mode (IA32_APIC_BASE.EN and EXTD both set): only then do the
/// x2APIC MSRs (0x800-0xBFF) exist; otherwise RDMSR and WRMSR of them raise #GP(0) (SDM vol. 3A
/// 11.12.1.2, "x2APIC Register Address Space").
pub fn x2apic_mode(st: &crate::state::CpuState) -> bool {
    st.msr.apic_base & (APIC_EN | APIC_EXTD) == APIC_EN | APIC_EXTD
}

/// Whether IA32_TSC_DEADLINE (0x6E0) exists: CPUID.1:ECX.TSC_Deadline[bit 24].
pub(super) fn tsc_deadline_supported(st: &crate::state::CpuState) -> bool {
    cpuid::cpuid_for(1, 0, 0, st.cr4)[2] & (1 << 24) != 0
}

/// Bits of an MSR holding a physical address that lie above MAXPHYADDR (reserved).
pub(super) fn above_maxphyaddr() -> u64 {
    !((1u64 << crate::cpuid::PHYS_ADDR_BITS) - 1)
}

/// A valid MTRR memory type: UC, WC, WT, WP, WB (SDM vol. 3A table 12-8; 2, 3 and 7+ are reserved).
pub(super) fn mtrr_type_ok(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// The rules of an IA32_APIC_BASE write (SDM vol. 3A 11.12.5, figure 11-27): reserved bits (0-7, 9,
/// above MAXPHYADDR, and EXTD when CPUID.1:ECX.x2APIC[bit 21] is clear), the invalid state EXTD without
/// EN, and the two forbidden transitions x2APIC -> xAPIC and disabled -> x2APIC all raise #GP(0).
pub(super) fn apic_base_ok(st: &crate::state::CpuState, v: u64) -> bool {
    let x2apic_supported = cpuid::cpuid_for(1, 0, 0, st.cr4)[2] & (1 << 21) != 0;
    let mut valid = (!above_maxphyaddr() & !0xfff) | APIC_BSP | APIC_EN;
    if x2apic_supported {
        valid |= APIC_EXTD;
    }
    if v & !valid != 0 || v & (APIC_EN | APIC_EXTD) == APIC_EXTD {
        return false;
    }
    let old = st.msr.apic_base;
    let new_x2 = v & (APIC_EN | APIC_EXTD) == APIC_EN | APIC_EXTD;
    let x2_to_xapic = x2apic_mode(st) && v & (APIC_EN | APIC_EXTD) == APIC_EN;
    let disabled_to_x2 = old & APIC_EN == 0 && new_x2;
    !x2_to_xapic && !disabled_to_x2
}

/// Reads MSR `msr`, or `None` if it does not exist (#GP).
pub fn msr_read(ctx: &mut Ctx<'_>, msr: u32) -> Option<u64> {
    let m = &ctx.st.msr;
    Some(match msr {
        0x10 => return Some(read_tsc(ctx)),
        0x17 => 0,
        0x1b => m.apic_base,
        0x3a => m.feature_control,
        0x8b => 0,
        0x10a => crate::cpuid::ARCH_CAPABILITIES,
        0xfe => 0x508, // MTRRcap: 8 variable ranges, fixed ranges, write-combining.
        0x174 => m.sysenter_cs,
        0x175 => m.sysenter_esp,
        0x176 => m.sysenter_eip,
        0x179 => 0,
        0x17a => 0,
        0x1a0 => m.misc_enable,
        0x1d9 => m.debugctl,
        0x200..=0x20f => m.mtrr_var[(msr - 0x200) as usize],
        0x250 => m.mtrr_fixed[0],
        0x258 => m.mtrr_fixed[1],
        0x259 => m.mtrr_fixed[2],
        0x268..=0x26f => m.mtrr_fixed[(msr - 0x268 + 3) as usize],
        0x277 => m.pat,
        0x2ff => m.mtrr_def_type,
        0xc000_0080 => ctx.st.efer,
        0xc000_0081 => m.star,
        0xc000_0082 => m.lstar,
        0xc000_0083 => m.cstar,
        0xc000_0084 => m.sfmask,
        0xc000_0100 => ctx.st.sreg(Seg::Fs).base,
        0xc000_0101 => ctx.st.sreg(Seg::Gs).base,
        0xc000_0102 => m.kernel_gs_base,
        0xc000_0103 => m.tsc_aux,
        0x800..=0xbff if !x2apic_mode(ctx.st) => return None,
        0x6e0 if !tsc_deadline_supported(ctx.st) => return None,
        _ => return ctx.bus.read_msr(msr),
    })
}

/// Writes MSR `msr`; false = #GP (no such MSR, a read-only one, or a reserved bit set: SDM vol. 4
/// tables 2-2 and 2-3, and the WRMSR reference: "#GP(0) if ... an attempt is made to write a non-zero
/// value into a reserved bit").
pub fn msr_write(ctx: &mut Ctx<'_>, msr: u32, v: u64) -> bool {
    let canon = is_canonical(v);
    match msr {
        0x10 => {
            let now = ctx.bus.tsc(ctx.st.icount);
            ctx.st.msr.tsc_offset = v.wrapping_sub(now);
        }
        0x1b => {
            if !apic_base_ok(ctx.st, v) {
                return false;
            }
            ctx.st.msr.apic_base = v;
            let _ = ctx.bus.write_msr(msr, v);
        }
        0x3a => {
            // IA32_FEATURE_CONTROL: no write once the lock bit is set; with no VMX, SMX, SGX or LMCE
            // advertised, every bit but the lock is reserved.
            if ctx.st.msr.feature_control & 1 != 0 || v & !1 != 0 {
                return false;
            }
            ctx.st.msr.feature_control = v;
        }
        0x8b => {}
        // IA32_SYSENTER_CS: bits 63:16 are "not used (can be read and written)".
        0x174 => ctx.st.msr.sysenter_cs = v,
        0x175 if canon => ctx.st.msr.sysenter_esp = v,
        0x176 if canon => ctx.st.msr.sysenter_eip = v,
        // IA32_MCG_STATUS: RIPV, EIPV, MCIP, LMCE_S; the rest reserved. (IA32_MCG_CAP is read-only.)
        0x17a if v & !0xf == 0 => {}
        0x1a0 => ctx.st.msr.misc_enable = v,
        // IA32_DEBUGCTL: LBR and BTF; the branch-trace-store and freeze bits need features not
        // advertised, so they are reserved here.
        0x1d9 if v & !0x3 == 0 => ctx.st.msr.debugctl = v,
        0x200..=0x20f => {
            let reserved = if msr & 1 == 0 {
                // PHYSBASE: type in 7:0, 11:8 reserved.
                if !mtrr_type_ok(v & 0xff) {
                    return false;
                }
                above_maxphyaddr() | 0xf00
            } else {
                // PHYSMASK: valid in bit 11, 10:0 reserved.
                above_maxphyaddr() | 0x7ff
            };
            if v & reserved != 0 {
                return false;
            }
            ctx.st.msr.mtrr_var[(msr - 0x200) as usize] = v;
        }
        0x250 | 0x258 | 0x259 | 0x268..=0x26f if !(0..8).all(|i| mtrr_type_ok((v >> (8 * i)) & 0xff)) => {
            return false;
        }
        0x250 => ctx.st.msr.mtrr_fixed[0] = v,
        0x258 => ctx.st.msr.mtrr_fixed[1] = v,
        0x259 => ctx.st.msr.mtrr_fixed[2] = v,
        0x268..=0x26f => ctx.st.msr.mtrr_fixed[(msr - 0x268 + 3) as usize] = v,
        0x277 => {
            // Each PAT entry must be a valid memory type (0, 1, 4, 5, 6, 7).
            if (0..8).any(|i| matches!((v >> (i * 8)) & 0xff, 2 | 3 | 8..=255)) {
                return false;
            }
            ctx.st.msr.pat = v;
            ctx.mmu.tlb.flush(false);
        }
        0x2ff => {
            if v & !0xcff != 0 || !mtrr_type_ok(v & 0xff) {
                return false;
            }
            ctx.st.msr.mtrr_def_type = v;
        }
        0xc000_0080 => {
            let valid = efer::SCE | efer::LME | efer::LMA | efer::NXE;
            if v & !valid != 0 {
                return false;
            }
            let old = ctx.st.efer;
            if ctx.st.paging() && (old ^ v) & efer::LME != 0 {
                return false;
            }
            ctx.st.efer = (v & !efer::LMA) | (old & efer::LMA);
            if (old ^ v) & efer::NXE != 0 {
                ctx.mmu.tlb.flush(false);
            }
        }
        0xc000_0081 => ctx.st.msr.star = v,
        0xc000_0082 if canon => ctx.st.msr.lstar = v,
        0xc000_0083 if canon => ctx.st.msr.cstar = v,
        // IA32_FMASK: bits 63:32 reserved.
        0xc000_0084 if v >> 32 == 0 => ctx.st.msr.sfmask = v,
        0xc000_0100 if canon => ctx.st.sreg_mut(Seg::Fs).base = v,
        0xc000_0101 if canon => ctx.st.sreg_mut(Seg::Gs).base = v,
        0xc000_0102 if canon => ctx.st.msr.kernel_gs_base = v,
        0xc000_0103 => {
            if v >> 32 != 0 {
                return false;
            }
            ctx.st.msr.tsc_aux = v;
        }
        // Known MSRs whose rule refused the value (non-canonical bases, reserved bits).
        0x174..=0x176
        | 0x17a
        | 0x1d9
        | 0xc000_0082
        | 0xc000_0083
        | 0xc000_0084
        | 0xc000_0100..=0xc000_0102 => {
            return false;
        }
        0x800..=0xbff if !x2apic_mode(ctx.st) => return false,
        0x6e0 if !tsc_deadline_supported(ctx.st) => return false,
        _ => return ctx.bus.write_msr(msr, v),
    }
    true
}

pub(super) fn rdmsr(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let msr = ctx.st.gpr[1] as u32;
    let v = msr_read(ctx, msr).ok_or_else(Fault::gp0)?;
    ctx.st.gpr[0] = v & 0xffff_ffff;
    ctx.st.gpr[2] = v >> 32;
    Ok(())
}

pub(super) fn wrmsr(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let msr = ctx.st.gpr[1] as u32;
    let v = (ctx.st.gpr[0] & 0xffff_ffff) | (ctx.st.gpr[2] << 32);
    ctx.break_block = true;
    if msr_write(ctx, msr, v) { Ok(()) } else { Err(Fault::gp0()) }
}

pub(super) fn swapgs(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.mode() != Mode::Long64 {
        return Err(Fault::ud());
    }
    require_cpl0(ctx)?;
    let g = ctx.st.sreg(Seg::Gs).base;
    ctx.st.sreg_mut(Seg::Gs).base = ctx.st.msr.kernel_gs_base;
    ctx.st.msr.kernel_gs_base = g;
    Ok(())
}

#[cfg(test)]
mod msr_tests {
    use super::{msr_read, msr_write};
    use crate::bus::CpuBus;
    use crate::mem::{Ctx, Mmu};
    use crate::state::CpuState;
    use crate::testutil::{TestBus, TestMode, cpu_in};
    use std::ptr::NonNull;

    /// A bus whose machine serves every x2APIC MSR and IA32_TSC_DEADLINE (reads 0x42, accepts writes) and logs
    /// IA32_APIC_BASE writes, so the CPU's own gating is what a test observes.
    #[derive(Default)]
    struct ApicBus {
        inner: TestBus,
        apic_base_writes: Vec<u64>,
    }

    impl CpuBus for ApicBus {
        fn ram_page(&mut self, page: u64, write: bool) -> Option<NonNull<u8>> {
            self.inner.ram_page(page, write)
        }
        fn read_phys(&mut self, addr: u64, data: &mut [u8]) {
            self.inner.read_phys(addr, data)
        }
        fn write_phys(&mut self, addr: u64, data: &[u8]) {
            self.inner.write_phys(addr, data)
        }
        fn io_in(&mut self, port: u16, size: u8) -> u32 {
            self.inner.io_in(port, size)
        }
        fn io_out(&mut self, port: u16, size: u8, value: u32) {
            self.inner.io_out(port, size, value)
        }
        fn interrupt_pending(&mut self) -> bool {
            false
        }
        fn acknowledge_interrupt(&mut self) -> Option<u8> {
            None
        }
        fn tsc(&mut self, icount: u64) -> u64 {
            icount
        }
        fn read_msr(&mut self, msr: u32) -> Option<u64> {
            ((0x800..=0x8ff).contains(&msr) || msr == 0x6e0).then_some(0x42)
        }
        fn write_msr(&mut self, msr: u32, value: u64) -> bool {
            if msr == 0x1b {
                self.apic_base_writes.push(value);
            }
            (0x800..=0x8ff).contains(&msr) || msr == 0x6e0
        }
    }

    fn with_ctx<R>(st: &mut CpuState, bus: &mut ApicBus, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let mut mmu = Mmu::default();
        let mut ctx = Ctx { st, bus, mmu: &mut mmu, next_rip: 0, break_block: false };
        f(&mut ctx)
    }

    fn machine() -> (CpuState, ApicBus) {
        let mut bus = ApicBus::default();
        let st = cpu_in(TestMode::Long64, &mut bus.inner);
        (st, bus)
    }

    /// Without x2APIC mode (the reset state: xAPIC, EXTD clear) every MSR of 0x800-0xBFF raises #GP,
    /// even where the machine would serve it; in x2APIC mode they reach the local APIC.
    #[test]
    fn x2apic_msrs_exist_only_in_x2apic_mode() {
        let (mut st, mut bus) = machine();
        assert_eq!(st.msr.apic_base & (3 << 10), 1 << 11, "reset: xAPIC mode");
        with_ctx(&mut st, &mut bus, |ctx| {
            for msr in [0x800, 0x802, 0x803, 0x808, 0x80b, 0x830, 0x83f, 0x8ff, 0x900, 0xbff] {
                assert_eq!(msr_read(ctx, msr), None, "rdmsr {msr:#x}");
                assert!(!msr_write(ctx, msr, 0), "wrmsr {msr:#x}");
            }
        });
        st.msr.apic_base |= 1 << 10;
        with_ctx(&mut st, &mut bus, |ctx| {
            assert_eq!(msr_read(ctx, 0x802), Some(0x42));
            assert!(msr_write(ctx, 0x808, 0));
            // Globally disabled (EN clear): gone again.
            ctx.st.msr.apic_base &= !(1 << 11);
            assert_eq!(msr_read(ctx, 0x802), None);
        });
    }

    /// IA32_APIC_BASE (SDM vol. 3A 11.12.5): reserved bits, EXTD without x2APIC support, EXTD without
    /// EN, x2APIC -> xAPIC and disabled -> x2APIC are #GP; xAPIC <-> disabled and a base move are not.
    #[test]
    fn apic_base_rules() {
        let (mut st, mut bus) = machine();
        let x2_supported = crate::cpuid::cpuid_for(1, 0, 0, 0)[2] & (1 << 21) != 0;
        with_ctx(&mut st, &mut bus, |ctx| {
            let base = 0xfee0_0000u64;
            for bad in [base | 0x900 | 1, base | 0x900 | (1 << 9), base | 0x900 | (1 << 40), base | (1 << 10)]
            {
                assert!(!msr_write(ctx, 0x1b, bad), "{bad:#x}");
            }
            assert_eq!(ctx.st.msr.apic_base, base | 0x900, "refused writes change nothing");
            assert!(msr_write(ctx, 0x1b, 0xfed0_0000 | 0x900), "base move");
            assert!(msr_write(ctx, 0x1b, base | 0x100), "xAPIC -> disabled");
            assert!(!msr_write(ctx, 0x1b, base | 0xd00), "disabled -> x2APIC");
            assert!(msr_write(ctx, 0x1b, base | 0x900), "disabled -> xAPIC");
            assert_eq!(msr_write(ctx, 0x1b, base | 0xd00), x2_supported, "xAPIC -> x2APIC");
            if x2_supported {
                assert!(!msr_write(ctx, 0x1b, base | 0x900), "x2APIC -> xAPIC");
                assert!(msr_write(ctx, 0x1b, base | 0x100), "x2APIC -> disabled");
            }
        });
        assert!(
            bus.apic_base_writes.iter().all(|v| v & (1 << 9) == 0),
            "refused writes never reach the APIC"
        );
    }

    /// A non-canonical base is #GP for every base MSR; a canonical one is stored.
    #[test]
    fn base_msrs_reject_non_canonical_values() {
        let (mut st, mut bus) = machine();
        with_ctx(&mut st, &mut bus, |ctx| {
            for msr in [0x175, 0x176, 0xc000_0082, 0xc000_0083, 0xc000_0100, 0xc000_0101, 0xc000_0102] {
                for bad in [0x0000_8000_0000_0000u64, 0x7fff_0000_0000_0000, 0xffff_7fff_ffff_ffff] {
                    assert!(!msr_write(ctx, msr, bad), "{msr:#x} <- {bad:#x}");
                }
                for good in [0xffff_8000_0000_0000u64, 0x0000_7fff_ffff_f000] {
                    assert!(msr_write(ctx, msr, good), "{msr:#x} <- {good:#x}");
                    assert_eq!(msr_read(ctx, msr), Some(good), "{msr:#x}");
                }
            }
        });
    }

    /// Reserved bits of the MSRs the CPU keeps: #GP, the old value kept.
    #[test]
    fn reserved_bits_raise_gp() {
        let (mut st, mut bus) = machine();
        with_ctx(&mut st, &mut bus, |ctx| {
            let refuse = |ctx: &mut Ctx<'_>, msr: u32, v: u64| {
                let before = msr_read(ctx, msr);
                assert!(!msr_write(ctx, msr, v), "{msr:#x} <- {v:#x}");
                assert_eq!(msr_read(ctx, msr), before, "{msr:#x} unchanged");
            };
            refuse(ctx, 0xc000_0084, 1 << 32); // FMASK 63:32
            refuse(ctx, 0xc000_0103, 1 << 32); // TSC_AUX 63:32
            refuse(ctx, 0xc000_0080, 1 << 1); // EFER bit 1
            refuse(ctx, 0x1d9, 1 << 6); // DEBUGCTL.TR: no branch trace messages
            refuse(ctx, 0x277, 0x0007_0406_0002_0406); // PAT entry 2 holds type 2
            refuse(ctx, 0x2ff, 0xc02); // MTRRdefType: type 2
            refuse(ctx, 0x2ff, 0x1006); // MTRRdefType bit 12
            refuse(ctx, 0x200, 0x1000 | 7); // PHYSBASE0: type 7
            refuse(ctx, 0x200, 0x1000 | 6 | (1 << 8)); // PHYSBASE0: bit 8
            refuse(ctx, 0x200, (1 << 40) | 6); // PHYSBASE0: above MAXPHYADDR
            refuse(ctx, 0x201, 0xffff_f000 | 0x800 | 1); // PHYSMASK0: bit 0
            refuse(ctx, 0x250, 0x0606_0606_0606_0603); // MTRRfix64K: a byte of type 3
            assert!(!msr_write(ctx, 0x179, 0), "MCG_CAP is read-only");
            assert!(!msr_write(ctx, 0xfe, 0), "MTRRcap is read-only");
            if crate::cpuid::cpuid_for(1, 0, 0, 0)[2] & (1 << 24) == 0 {
                assert_eq!(msr_read(ctx, 0x6e0), None, "no TSC deadline without its CPUID bit");
                assert!(!msr_write(ctx, 0x6e0, 1), "no TSC deadline without its CPUID bit");
            }
            // The valid neighbours are accepted.
            for (msr, v) in [
                (0xc000_0084, 0xffff_ffffu64),
                (0x1d9, 3),
                (0x2ff, 0xc06),
                (0x200, 0xff_ffff_f006),
                (0x201, 0xff_ffff_f800),
                (0x250, 0x0606_0606_0606_0606),
                (0x174, 0xdead_beef_0010),
            ] {
                assert!(msr_write(ctx, msr, v), "{msr:#x} <- {v:#x}");
                assert_eq!(msr_read(ctx, msr), Some(v), "{msr:#x}");
            }
            // FEATURE_CONTROL: only the lock bit, and nothing once locked.
            refuse(ctx, 0x3a, 1 << 2);
            assert!(msr_write(ctx, 0x3a, 1));
            refuse(ctx, 0x3a, 1);
        });
    }
}
