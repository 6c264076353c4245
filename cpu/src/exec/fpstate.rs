//! FP/SIMD state management: FXSAVE/FXRSTOR (32- and 64-bit layouts), the XSAVE feature set for
//! the x87, SSE and AVX components (XSAVE, XSAVEOPT, XSAVEC, XRSTOR in standard and compacted form),
//! XGETBV/XSETBV, and EMMS.
//!
//! Ferrite implements three XSAVE components, x87 (0), SSE (1) and AVX (2, YMM_Hi128: bits 255:128 of
//! YMM0-15, [`crate::state::VecState::ymm_hi`]): XCR0 can hold at most 7, with bit 2 only beside bit 1
//! (SDM vol. 1 §13.3). CPUID leaf 0xD ([`crate::cpuid`]) describes exactly that: the AVX component at
//! offset 576, 256 bytes, so an area is 576 bytes for x87+SSE and 832 with AVX, in either format (the
//! compacted form puts component 2 at 576 as well, it being the first extended component). XINUSE is
//! computed from the register contents: a component is "in use" unless it is in its initial
//! configuration (x87: FCW 037FH, FSW 0, all registers empty and zero, pointers and FOP 0; SSE: all XMM
//! registers 0 and MXCSR 1F80H; AVX: bits 255:128 of every YMM register 0), which is an allowed
//! implementation of the tracking the SDM describes (XINUSE[i] = 0 only when component i is in its
//! initial configuration). Outside 64-bit mode only registers 0-7 of the SSE and AVX components are
//! saved and restored, as for FXSAVE.

use super::ops::{ea, mem_seg};
use super::x87::{MASK80, check_pending};
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::paging::AccessKind;
use crate::state::{CpuState, FpuState, Mode, cr0, cr4};
use iced_x86::Code;

/// MXCSR bits that may be set (MXCSR_MASK as FXSAVE reports it; DAZ is supported).
pub const MXCSR_MASK: u32 = 0x0000_ffff;
/// The XCR0 bits Ferrite supports on every model with XSAVE: x87, SSE and AVX.
pub const XCR0_SUPPORTED: u64 = 0b111;
/// XCR0 bit of the PKRU component (9), supported when the model advertises PKU.
pub const XCR0_PKRU: u64 = 1 << 9;
/// Offset of the PKRU component in the standard (non-compacted) form (CPUID.(0xD,9):EBX).
pub const XSAVE_PKRU_OFFSET: u32 = 2688;
/// Size of the PKRU component (PKRU in its low four bytes).
pub const XSAVE_PKRU_SIZE: u32 = 8;
/// The largest area any model needs (standard form with PKRU).
const XSAVE_MAX: usize = (XSAVE_PKRU_OFFSET + XSAVE_PKRU_SIZE) as usize;
/// Size of the legacy region and the XSAVE header (the area for x87 and SSE alone).
pub const XSAVE_LEGACY_SIZE: u32 = 576;
/// Offset of the AVX component (YMM_Hi128) in an XSAVE area, standard and compacted form alike.
pub const XSAVE_AVX_OFFSET: u32 = 576;
/// Size of the AVX component.
pub const XSAVE_AVX_SIZE: u32 = 256;
/// Size of an XSAVE area for every supported component, either format (CPUID.0xD.0:ECX).
pub const XSAVE_SIZE: u32 = XSAVE_AVX_OFFSET + XSAVE_AVX_SIZE;

/// The XCR0 bits `model` supports: x87, SSE and AVX, and PKRU when it advertises PKU.
pub fn xcr0_supported(model: &crate::model::CpuModel) -> u64 {
    XCR0_SUPPORTED | if model.has(crate::model::Reg::L7Ecx, 3) { XCR0_PKRU } else { 0 }
}

/// Size of a standard-form XSAVE area for the components enabled in `xcr0` (CPUID.0xD.0:EBX): up to
/// the end of the highest one.
pub fn xsave_size(xcr0: u64) -> u32 {
    if xcr0 & XCR0_PKRU != 0 {
        XSAVE_PKRU_OFFSET + XSAVE_PKRU_SIZE
    } else if xcr0 & 4 != 0 {
        XSAVE_SIZE
    } else {
        XSAVE_LEGACY_SIZE
    }
}

/// Size of a compacted-form area for the components in `xcomp` (CPUID.0xD.1:EBX for XCR0): the
/// extended components follow each other from offset 576 with no alignment (none asks for it).
pub fn xsavec_size(xcomp: u64) -> u32 {
    XSAVE_LEGACY_SIZE
        + if xcomp & 4 != 0 { XSAVE_AVX_SIZE } else { 0 }
        + if xcomp & XCR0_PKRU != 0 { XSAVE_PKRU_SIZE } else { 0 }
}

/// Offset of the PKRU component: fixed in the standard form, after AVX (if present) in the compacted
/// form with components `xcomp`.
fn pkru_offset(compact: bool, xcomp: u64) -> usize {
    if compact {
        (XSAVE_LEGACY_SIZE + if xcomp & 4 != 0 { XSAVE_AVX_SIZE } else { 0 }) as usize
    } else {
        XSAVE_PKRU_OFFSET as usize
    }
}

/// Sets PKRU; a change with CR4.PKE = 1 drops the TLB, whose entries were filled under the old
/// access rights (a CPU checks the key on every access; the software TLB checks permissions when it
/// fills an entry).
pub fn set_pkru(ctx: &mut Ctx<'_>, v: u32) {
    if v != ctx.st.pkru {
        ctx.st.pkru = v;
        if ctx.st.cr4 & cr4::PKE != 0 {
            ctx.mmu.tlb.flush(false);
            ctx.break_block = true;
        }
    }
}

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Fxsave_m512byte | C::Fxsave64_m512byte => fxsave,
        C::Fxrstor_m512byte | C::Fxrstor64_m512byte => fxrstor,
        C::Xsave_mem
        | C::Xsave64_mem
        | C::Xsaveopt_mem
        | C::Xsaveopt64_mem
        | C::Xsavec_mem
        | C::Xsavec64_mem => xsave,
        C::Xrstor_mem | C::Xrstor64_mem => xrstor,
        C::Xsaves_mem | C::Xsaves64_mem | C::Xrstors_mem | C::Xrstors64_mem => ud,
        C::Xgetbv => xgetbv,
        C::Xsetbv => xsetbv,
        C::Emms => emms,
        _ => return None,
    })
}

fn ud(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::ud())
}

/// Whether the x87 component is in its initial configuration.
pub fn x87_is_init(f: &FpuState) -> bool {
    f.fcw == 0x037f
        && f.fsw == 0
        && f.ftw == 0xffff
        && f.fop == 0
        && f.fip == 0
        && f.fdp == 0
        && f.fcs == 0
        && f.fds == 0
        && f.st.iter().all(|&r| r & MASK80 == 0)
}

/// Whether the SSE component is in its initial configuration.
pub fn sse_is_init(f: &FpuState) -> bool {
    f.mxcsr == 0x1f80 && f.xmm.iter().all(|&x| x == 0)
}

/// Whether the AVX component (bits 255:128 of YMM0-15) is in its initial configuration.
pub fn avx_is_init(st: &CpuState) -> bool {
    st.vec.ymm_hi.iter().all(|&x| x == 0)
}

/// XINUSE for the supported components (PKRU's initial value is 0).
pub fn xinuse(st: &CpuState) -> u64 {
    let f = &st.fpu;
    (!x87_is_init(f) as u64)
        | ((!sse_is_init(f) as u64) << 1)
        | ((!avx_is_init(st) as u64) << 2)
        | if st.pkru != 0 { XCR0_PKRU } else { 0 }
}

/// Number of XMM registers visible in the current mode.
fn nxmm(ctx: &Ctx<'_>) -> usize {
    if ctx.st.mode() == Mode::Long64 { 16 } else { 8 }
}

/// The x87 part of the legacy region (bytes 0-23 except 4-bit fields, and 32-159).
fn put_x87(f: &FpuState, wide: bool, img: &mut [u8; 512]) {
    img[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    img[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    let mut abridged = 0u8;
    for r in 0..8 {
        if (f.ftw >> (2 * r)) & 3 != 3 {
            abridged |= 1 << r;
        }
    }
    img[4] = abridged;
    img[5] = 0;
    img[6..8].copy_from_slice(&(f.fop & 0x7ff).to_le_bytes());
    if wide {
        img[8..16].copy_from_slice(&f.fip.to_le_bytes());
        img[16..24].copy_from_slice(&f.fdp.to_le_bytes());
    } else {
        img[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
        img[12..14].copy_from_slice(&f.fcs.to_le_bytes());
        img[14..16].fill(0);
        img[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
        img[20..22].copy_from_slice(&f.fds.to_le_bytes());
        img[22..24].fill(0);
    }
    for i in 0..8 {
        let v = f.st[f.phys(i)] & MASK80;
        let o = 32 + 16 * i;
        img[o..o + 16].copy_from_slice(&v.to_le_bytes());
    }
}

/// Loads the x87 part of a legacy region.
fn get_x87(f: &mut FpuState, wide: bool, img: &[u8; 512]) {
    let r16 = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
    let r32 = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
    let r64 = |o: usize| r32(o) as u64 | (r32(o + 4) as u64) << 32;
    f.fcw = super::x87::fcw_value(r16(0));
    f.fsw = r16(2);
    let abridged = img[4];
    f.fop = r16(6) & 0x7ff;
    if wide {
        f.fip = r64(8);
        f.fdp = r64(16);
        f.fcs = 0;
        f.fds = 0;
    } else {
        f.fip = r32(8) as u64;
        f.fcs = r16(12);
        f.fdp = r32(16) as u64;
        f.fds = r16(20);
    }
    for i in 0..8 {
        let o = 32 + 16 * i;
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&img[o..o + 10]);
        let r = f.phys(i);
        f.st[r] = u128::from_le_bytes(b);
    }
    let mut tags = 0u16;
    for r in 0..8 {
        if abridged & (1 << r) == 0 {
            tags |= 3 << (2 * r);
        }
    }
    f.load_tags(tags);
    f.update_es();
}

/// The x87 initial configuration (XRSTOR with XSTATE_BV[0] = 0).
fn init_x87(f: &mut FpuState) {
    f.finit();
    f.st = [0; 8];
}

/// Writes `ranges` of `img` at `lin`, after checking the whole area is writable.
fn write_ranges(
    ctx: &mut Ctx<'_>,
    lin: u64,
    size: usize,
    img: &[u8],
    ranges: &[(usize, usize)],
) -> Result<(), Fault> {
    let mut o = 0;
    while o < size {
        let a = lin.wrapping_add(o as u64);
        let n = (size - o).min(0x1000 - (a & 0xfff) as usize);
        ctx.probe_write(a, n as u32)?;
        o += n;
    }
    for &(s, e) in ranges {
        if e > s {
            ctx.write_bytes(lin.wrapping_add(s as u64), &img[s..e])?;
        }
    }
    Ok(())
}

/// The linear address of the memory operand, checked for `kind` over `size` bytes and for
/// `align`-byte alignment (#GP).
fn area(ctx: &mut Ctx<'_>, insn: &Insn, size: u32, align: u64, kind: AccessKind) -> Result<u64, Fault> {
    let off = ea(ctx, insn);
    let lin = ctx.seg_lin(mem_seg(insn), off, size, kind)?;
    if lin & (align - 1) != 0 {
        return Err(Fault::gp0());
    }
    Ok(lin)
}

fn es_changed(ctx: &mut Ctx<'_>, before: u16) {
    if before & super::x87::sw::ES != 0 && ctx.st.fpu.fsw & super::x87::sw::ES == 0 {
        ctx.bus.ferr(false);
    }
}

// ------------------------------------------------------------------------------ FXSAVE/FXRSTOR

fn fxsave(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if ctx.st.cr0 & (cr0::EM | cr0::TS) != 0 {
        return Err(Fault::nm());
    }
    let wide = insn.i.code() == Code::Fxsave64_m512byte;
    let lin = area(ctx, insn, 512, 16, AccessKind::Write)?;
    let mut img = [0u8; 512];
    let f = &ctx.st.fpu;
    put_x87(f, wide, &mut img);
    img[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    img[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    let n = nxmm(ctx);
    for i in 0..n {
        img[160 + 16 * i..176 + 16 * i].copy_from_slice(&f.xmm[i].to_le_bytes());
    }
    write_ranges(ctx, lin, 512, &img, &[(0, 160 + 16 * n)])
}

fn fxrstor(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if ctx.st.cr0 & (cr0::EM | cr0::TS) != 0 {
        return Err(Fault::nm());
    }
    let wide = insn.i.code() == Code::Fxrstor64_m512byte;
    let lin = area(ctx, insn, 512, 16, AccessKind::Read)?;
    let mut img = [0u8; 512];
    ctx.read_bytes(lin, &mut img)?;
    let mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    let n = nxmm(ctx);
    let before = ctx.st.fpu.fsw;
    let f = &mut ctx.st.fpu;
    get_x87(f, wide, &img);
    f.mxcsr = mxcsr;
    for i in 0..n {
        let mut b = [0u8; 16];
        b.copy_from_slice(&img[160 + 16 * i..176 + 16 * i]);
        f.xmm[i] = u128::from_le_bytes(b);
    }
    es_changed(ctx, before);
    Ok(())
}

// ------------------------------------------------------------------------------------ XSAVE

/// #UD without CR4.OSXSAVE, #NM with CR0.TS.
fn xsave_checks(ctx: &Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::OSXSAVE == 0 {
        return Err(Fault::ud());
    }
    if ctx.st.cr0 & cr0::TS != 0 {
        return Err(Fault::nm());
    }
    Ok(())
}

fn rfbm(ctx: &Ctx<'_>) -> u64 {
    let edx_eax = (ctx.st.gpr[2] & 0xffff_ffff) << 32 | (ctx.st.gpr[0] & 0xffff_ffff);
    edx_eax & ctx.st.xcr0
}

fn xsave(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    use Code as C;
    xsave_checks(ctx)?;
    let code = insn.i.code();
    let wide = matches!(code, C::Xsave64_mem | C::Xsaveopt64_mem | C::Xsavec64_mem);
    let opt = matches!(code, C::Xsaveopt_mem | C::Xsaveopt64_mem);
    let compact = matches!(code, C::Xsavec_mem | C::Xsavec64_mem);
    let rfbm = rfbm(ctx);
    // The area's extent: the AVX and PKRU components are part of it when requested (in the compacted
    // form their space is reserved by XCOMP_BV = RFBM even when they are not written).
    let size = if compact { xsavec_size(rfbm) } else { xsave_size(rfbm) };
    let lin = area(ctx, insn, size, 64, AccessKind::Write)?;
    let inuse = xinuse(ctx.st);
    let n = nxmm(ctx);
    let mut img = [0u8; XSAVE_MAX];
    let mut legacy = [0u8; 512];
    let f = &ctx.st.fpu;
    // Which components are written.
    let save = if opt || compact { rfbm & inuse } else { rfbm };
    let mut ranges = [(0usize, 0usize); 7];
    if save & 1 != 0 {
        put_x87(f, wide, &mut legacy);
        ranges[0] = (0, 24);
        ranges[1] = (32, 160);
    }
    if rfbm & 2 != 0 && (!compact || save & 2 != 0) {
        legacy[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        legacy[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
        ranges[2] = (24, 32);
    }
    if save & 2 != 0 {
        for i in 0..n {
            legacy[160 + 16 * i..176 + 16 * i].copy_from_slice(&f.xmm[i].to_le_bytes());
        }
        ranges[3] = (160, 160 + 16 * n);
    }
    img[..512].copy_from_slice(&legacy);
    if save & 4 != 0 {
        let o = XSAVE_AVX_OFFSET as usize;
        for i in 0..n {
            img[o + 16 * i..o + 16 * i + 16].copy_from_slice(&ctx.st.vec.ymm_hi[i].to_le_bytes());
        }
        ranges[5] = (o, o + 16 * n);
    }
    if save & XCR0_PKRU != 0 {
        let o = pkru_offset(compact, rfbm);
        img[o..o + 8].copy_from_slice(&u64::from(ctx.st.pkru).to_le_bytes());
        ranges[6] = (o, o + 8);
    }
    // The header.
    if compact {
        let bv = rfbm & inuse;
        img[512..520].copy_from_slice(&bv.to_le_bytes());
        img[520..528].copy_from_slice(&(rfbm | 1 << 63).to_le_bytes());
        ranges[4] = (512, 576);
    } else {
        let old = ctx.read_lin(lin.wrapping_add(512), 8)?;
        let bv = (old & !rfbm) | (inuse & rfbm);
        img[512..520].copy_from_slice(&bv.to_le_bytes());
        ranges[4] = (512, 520);
    }
    write_ranges(ctx, lin, size as usize, &img, &ranges)
}

fn xrstor(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    xsave_checks(ctx)?;
    let wide = insn.i.code() == Code::Xrstor64_mem;
    let lin = area(ctx, insn, XSAVE_LEGACY_SIZE, 64, AccessKind::Read)?;
    let mut img = [0u8; XSAVE_SIZE as usize];
    ctx.read_bytes(lin, &mut img[..XSAVE_LEGACY_SIZE as usize])?;
    let r64 = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap_or([0; 8]));
    let bv = r64(512);
    let comp = r64(520);
    let compact = comp >> 63 != 0;
    let xcr0 = ctx.st.xcr0;
    if compact {
        let cbv = comp & !(1 << 63);
        if cbv & !xcr0 != 0 || bv & !cbv != 0 || img[528..576].iter().any(|&b| b != 0) {
            return Err(Fault::gp0());
        }
    } else if bv & !xcr0 != 0 || comp != 0 || img[528..536].iter().any(|&b| b != 0) {
        return Err(Fault::gp0());
    }
    let rfbm = rfbm(ctx);
    let n = nxmm(ctx);
    // The AVX component is read (before any state changes) when requested and present; in both forms
    // it sits at offset 576 (in the compacted form it is the first extended component).
    let load_avx = rfbm & 4 != 0 && bv & 4 != 0;
    if load_avx {
        // The segment check now covers the whole area.
        let lin = area(ctx, insn, XSAVE_SIZE, 64, AccessKind::Read)?;
        let o = lin.wrapping_add(XSAVE_AVX_OFFSET as u64);
        let (lo, hi) = (XSAVE_AVX_OFFSET as usize, XSAVE_SIZE as usize);
        ctx.read_bytes(o, &mut img[lo..hi])?;
    }
    // PKRU likewise (standard form at 2688; compacted after AVX when XCOMP_BV has it).
    let load_pkru = rfbm & XCR0_PKRU != 0 && bv & XCR0_PKRU != 0;
    let mut pkru = 0u32;
    if load_pkru {
        let o = pkru_offset(compact, comp);
        area(ctx, insn, (o + 8) as u32, 64, AccessKind::Read)?;
        pkru = ctx.read_lin(lin.wrapping_add(o as u64), 4)? as u32;
    }
    let mut legacy = [0u8; 512];
    legacy.copy_from_slice(&img[..512]);
    let mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
    // MXCSR comes from memory when SSE is requested (standard form) or present (compacted form).
    let load_mxcsr = rfbm & 2 != 0 && (!compact || bv & 2 != 0);
    if load_mxcsr && mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    let before = ctx.st.fpu.fsw;
    let f = &mut ctx.st.fpu;
    if rfbm & 1 != 0 {
        if bv & 1 != 0 {
            get_x87(f, wide, &legacy);
        } else {
            init_x87(f);
        }
    }
    if rfbm & 2 != 0 {
        if bv & 2 != 0 {
            for i in 0..n {
                let mut b = [0u8; 16];
                b.copy_from_slice(&legacy[160 + 16 * i..176 + 16 * i]);
                f.xmm[i] = u128::from_le_bytes(b);
            }
        } else {
            for x in f.xmm.iter_mut().take(n) {
                *x = 0;
            }
        }
        f.mxcsr = if load_mxcsr { mxcsr } else { 0x1f80 };
    }
    if rfbm & 4 != 0 {
        let o = XSAVE_AVX_OFFSET as usize;
        for i in 0..n {
            ctx.st.vec.ymm_hi[i] = if load_avx {
                u128::from_le_bytes(img[o + 16 * i..o + 16 * i + 16].try_into().unwrap_or([0; 16]))
            } else {
                0
            };
        }
    }
    if rfbm & XCR0_PKRU != 0 {
        set_pkru(ctx, pkru);
    }
    es_changed(ctx, before);
    Ok(())
}

fn xgetbv(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::OSXSAVE == 0 {
        return Err(Fault::ud());
    }
    let v = match ctx.st.gpr[1] as u32 {
        0 => ctx.st.xcr0,
        1 => ctx.st.xcr0 & xinuse(ctx.st),
        _ => return Err(Fault::gp0()),
    };
    ctx.st.gpr[0] = v & 0xffff_ffff;
    ctx.st.gpr[2] = v >> 32;
    Ok(())
}

fn xsetbv(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::OSXSAVE == 0 {
        return Err(Fault::ud());
    }
    if ctx.st.cpl != 0 || ctx.st.mode() == Mode::V86 {
        return Err(Fault::gp0());
    }
    if ctx.st.gpr[1] as u32 != 0 {
        return Err(Fault::gp0());
    }
    let v = (ctx.st.gpr[2] & 0xffff_ffff) << 32 | (ctx.st.gpr[0] & 0xffff_ffff);
    // x87 must stay enabled, only supported components, and AVX state only with SSE state (SDM vol. 1
    // §13.3: XCR0[2:1] = 10b is #GP).
    if v & 1 == 0 || v & !xcr0_supported(&ctx.st.model) != 0 || v & 0b110 == 0b100 {
        return Err(Fault::gp0());
    }
    ctx.st.xcr0 = v;
    Ok(())
}

fn emms(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if ctx.st.cr0 & cr0::EM != 0 {
        return Err(Fault::ud());
    }
    if ctx.st.cr0 & cr0::TS != 0 {
        return Err(Fault::nm());
    }
    if !check_pending(ctx, insn)? {
        return Ok(());
    }
    // SDM vol. 1 table 9-3: EMMS empties every tag and also sets TOP to 0.
    ctx.st.fpu.ftw = 0xffff;
    ctx.st.fpu.fsw &= !(7 << 11);
    Ok(())
}

#[cfg(test)]
mod tests;
