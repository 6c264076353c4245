//! Pure conversions between [`CpuState`] and KVM's structures (registers, segments, FPU, MSRs, debug
//! registers), and the CPUID table given to the vCPU.

use super::*;

/// A segment register (with its hidden part) in KVM's layout. A segment that is not present is
/// passed as unusable (KVM's and VMX's notion of a null/unloaded segment).
pub fn seg_to_kvm(s: &Segment) -> kvm_segment {
    let a = s.attr;
    let bit = |m: u16| u8::from(a & m != 0);
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & attr::TYPE) as u8,
        present: bit(attr::P),
        dpl: ((a & attr::DPL) >> attr::DPL_SHIFT) as u8,
        db: bit(attr::DB),
        s: bit(attr::S),
        l: bit(attr::L),
        g: bit(attr::G),
        avl: bit(attr::AVL),
        unusable: u8::from(a & attr::P == 0),
        padding: 0,
    }
}

/// A segment register from KVM's layout (an unusable segment reads back as not present).
pub fn seg_from_kvm(k: &kvm_segment) -> Segment {
    let flag = |v: u8, m: u16| if v != 0 { m } else { 0 };
    let mut a = (k.type_ as u16 & attr::TYPE)
        | flag(k.s, attr::S)
        | ((k.dpl as u16 & 3) << attr::DPL_SHIFT)
        | flag(k.present, attr::P)
        | flag(k.avl, attr::AVL)
        | flag(k.l, attr::L)
        | flag(k.db, attr::DB)
        | flag(k.g, attr::G);
    if k.unusable != 0 {
        a &= !attr::P;
    }
    Segment { selector: k.selector, attr: a, limit: k.limit, base: k.base }
}

pub(super) fn dtable_to_kvm(d: &DescTable) -> kvm_dtable {
    kvm_dtable { base: d.base, limit: d.limit.min(0xffff) as u16, padding: [0; 3] }
}

pub(super) fn dtable_from_kvm(d: &kvm_dtable) -> DescTable {
    DescTable { base: d.base, limit: d.limit as u32, _pad: 0 }
}

/// General registers, RIP and RFLAGS in KVM's layout (Ferrite's GPR order is the encoding order:
/// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15).
pub fn regs_to_kvm(cpu: &CpuState) -> kvm_regs {
    let g = &cpu.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: cpu.rip,
        rflags: cpu.rflags,
    }
}

/// Writes KVM's general registers into `cpu`.
pub fn regs_from_kvm(k: &kvm_regs, cpu: &mut CpuState) {
    cpu.gpr = [
        k.rax, k.rcx, k.rdx, k.rbx, k.rsp, k.rbp, k.rsi, k.rdi, k.r8, k.r9, k.r10, k.r11, k.r12, k.r13,
        k.r14, k.r15,
    ];
    cpu.rip = k.rip;
    cpu.rflags = k.rflags;
}

/// Segments, descriptor tables, control registers, EFER and the APIC base in KVM's layout.
pub fn sregs_to_kvm(cpu: &CpuState) -> kvm_sregs {
    let s = |i: usize| seg_to_kvm(&cpu.seg[i]);
    kvm_sregs {
        es: s(0),
        cs: s(1),
        ss: s(2),
        ds: s(3),
        fs: s(4),
        gs: s(5),
        tr: seg_to_kvm(&cpu.tr),
        ldt: seg_to_kvm(&cpu.ldtr),
        gdt: dtable_to_kvm(&cpu.gdtr),
        idt: dtable_to_kvm(&cpu.idtr),
        cr0: cpu.cr0,
        cr2: cpu.cr2,
        cr3: cpu.cr3,
        cr4: cpu.cr4,
        cr8: cpu.cr8,
        efer: cpu.efer,
        apic_base: cpu.msr.apic_base,
        interrupt_bitmap: [0; 4],
    }
}

/// Writes KVM's special registers into `cpu` and derives the CPL as KVM does (SS.DPL in protected
/// mode; 0 in real mode; 3 in virtual-8086 mode). Call after [`regs_from_kvm`] (RFLAGS.VM matters).
pub fn sregs_from_kvm(k: &kvm_sregs, cpu: &mut CpuState) {
    for (i, s) in [&k.es, &k.cs, &k.ss, &k.ds, &k.fs, &k.gs].into_iter().enumerate() {
        cpu.seg[i] = seg_from_kvm(s);
    }
    cpu.tr = seg_from_kvm(&k.tr);
    cpu.ldtr = seg_from_kvm(&k.ldt);
    cpu.gdtr = dtable_from_kvm(&k.gdt);
    cpu.idtr = dtable_from_kvm(&k.idt);
    cpu.cr0 = k.cr0;
    cpu.cr2 = k.cr2;
    cpu.cr3 = k.cr3;
    cpu.cr4 = k.cr4;
    cpu.cr8 = k.cr8;
    cpu.efer = k.efer;
    cpu.msr.apic_base = k.apic_base;
    cpu.cpl = if cpu.cr0 & cr0::PE == 0 {
        0
    } else if cpu.rflags & flags::VM != 0 {
        3
    } else {
        k.ss.dpl & 3
    };
}

/// The x87 tag (00 valid, 01 zero, 10 special) of an 80-bit register value, as FSTENV reports it.
pub(super) fn x87_tag(v: u128) -> u16 {
    let exp = ((v >> 64) & 0x7fff) as u16;
    let mant = v as u64;
    if exp == 0x7fff {
        2
    } else if exp == 0 {
        if mant == 0 { 1 } else { 2 }
    } else if mant >> 63 == 0 {
        2 // unnormal
    } else {
        0
    }
}

/// x87/SSE state in KVM_GET/SET_FPU's layout (the FXSAVE image: registers in stack order, abridged tag
/// word indexed by physical register).
pub fn fpu_to_kvm(f: &FpuState) -> kvm_fpu {
    let top = ((f.fsw >> 11) & 7) as usize;
    let mut fpr = [[0u8; 16]; 8];
    for (i, r) in fpr.iter_mut().enumerate() {
        r[..10].copy_from_slice(&f.st[(top + i) & 7].to_le_bytes()[..10]);
    }
    let mut ftwx = 0u8;
    for phys in 0..8 {
        if (f.ftw >> (2 * phys)) & 3 != 3 {
            ftwx |= 1 << phys;
        }
    }
    let mut xmm = [[0u8; 16]; 16];
    for (d, s) in xmm.iter_mut().zip(f.xmm.iter()) {
        *d = s.to_le_bytes();
    }
    kvm_fpu {
        fpr,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx,
        pad1: 0,
        last_opcode: f.fop,
        last_ip: f.fip,
        last_dp: f.fdp,
        xmm,
        mxcsr: f.mxcsr,
        pad2: 0,
    }
}

/// x87/SSE state from KVM's layout. The full tag word is rebuilt from the abridged one and the register
/// contents; the x87 CS/DS selectors are not in KVM's image (64-bit FXSAVE format) and are kept from
/// `prev`.
pub fn fpu_from_kvm(k: &kvm_fpu, prev: &FpuState) -> FpuState {
    let top = ((k.fsw >> 11) & 7) as usize;
    let mut st = [0u128; 8];
    for (i, r) in k.fpr.iter().enumerate() {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&r[..10]);
        st[(top + i) & 7] = u128::from_le_bytes(b);
    }
    let mut ftw = 0u16;
    for (phys, v) in st.iter().enumerate() {
        let tag = if k.ftwx & (1 << phys) == 0 { 3 } else { x87_tag(*v) };
        ftw |= tag << (2 * phys);
    }
    let mut xmm = [0u128; 16];
    for (d, s) in xmm.iter_mut().zip(k.xmm.iter()) {
        *d = u128::from_le_bytes(*s);
    }
    FpuState {
        st,
        xmm,
        fcw: k.fcw,
        fsw: k.fsw,
        ftw,
        fop: k.last_opcode & 0x7ff,
        mxcsr: k.mxcsr,
        fip: k.last_ip,
        fdp: k.last_dp,
        ..*prev
    }
}

/// IA32_SYSENTER_CS.
pub(super) const MSR_SYSENTER_CS: u32 = 0x174;
/// IA32_TSC.
pub(super) const MSR_TSC: u32 = 0x10;
/// IA32_APIC_BASE.
pub(super) const MSR_APIC_BASE: u32 = 0x1b;

/// The MSRs of [`Msrs`] that move between KVM and `CpuState` (the APIC base moves with the special
/// registers), as (index, value) pairs.
pub fn msrs_to_kvm(m: &Msrs) -> Vec<kvm_msr_entry> {
    let mut v = vec![
        (MSR_SYSENTER_CS, m.sysenter_cs),
        (0x175, m.sysenter_esp),
        (0x176, m.sysenter_eip),
        (0xc000_0081, m.star),
        (0xc000_0082, m.lstar),
        (0xc000_0083, m.cstar),
        (0xc000_0084, m.sfmask),
        (0xc000_0102, m.kernel_gs_base),
        (0xc000_0103, m.tsc_aux),
        (0x277, m.pat),
        (0x1a0, m.misc_enable),
        (0x2ff, m.mtrr_def_type),
        (0x3a, m.feature_control),
        (0x1d9, m.debugctl),
    ];
    for (i, idx) in MTRR_FIXED.iter().enumerate() {
        v.push((*idx, m.mtrr_fixed[i]));
    }
    for i in 0..16 {
        v.push((0x200 + i as u32, m.mtrr_var[i]));
    }
    v.into_iter().map(|(index, data)| kvm_msr_entry { index, reserved: 0, data }).collect()
}

pub(super) const MTRR_FIXED: [u32; 11] =
    [0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f];

/// Stores MSR `index` = `data` into `m`; false for an MSR that [`msrs_to_kvm`] does not list.
pub fn msr_from_kvm(m: &mut Msrs, index: u32, data: u64) -> bool {
    let slot = match index {
        MSR_SYSENTER_CS => &mut m.sysenter_cs,
        0x175 => &mut m.sysenter_esp,
        0x176 => &mut m.sysenter_eip,
        0xc000_0081 => &mut m.star,
        0xc000_0082 => &mut m.lstar,
        0xc000_0083 => &mut m.cstar,
        0xc000_0084 => &mut m.sfmask,
        0xc000_0102 => &mut m.kernel_gs_base,
        0xc000_0103 => &mut m.tsc_aux,
        0x277 => &mut m.pat,
        0x1a0 => &mut m.misc_enable,
        0x2ff => &mut m.mtrr_def_type,
        0x3a => &mut m.feature_control,
        0x1d9 => &mut m.debugctl,
        0x200..=0x20f => &mut m.mtrr_var[(index - 0x200) as usize],
        _ => match MTRR_FIXED.iter().position(|&i| i == index) {
            Some(i) => &mut m.mtrr_fixed[i],
            None => return false,
        },
    };
    *slot = data;
    true
}

/// DR0-DR3, DR6, DR7 in KVM's layout.
pub fn debugregs_to_kvm(cpu: &CpuState) -> kvm_debugregs {
    kvm_debugregs {
        db: [cpu.dr[0], cpu.dr[1], cpu.dr[2], cpu.dr[3]],
        dr6: cpu.dr[6],
        dr7: cpu.dr[7],
        flags: 0,
        reserved: [0; 9],
    }
}

/// Debug registers from KVM (DR4/DR5 alias DR6/DR7).
pub fn debugregs_from_kvm(k: &kvm_debugregs, cpu: &mut CpuState) {
    cpu.dr[..4].copy_from_slice(&k.db);
    cpu.dr[6] = k.dr6;
    cpu.dr[7] = k.dr7;
    cpu.dr[4] = k.dr6;
    cpu.dr[5] = k.dr7;
}

/// The whole vCPU state that moves between `CpuState` and KVM.
#[derive(Clone, Debug, PartialEq)]
pub struct KvmState {
    /// GPRs, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segments, tables, control registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// x87/SSE.
    pub fpu: kvm_fpu,
    /// The MSRs of `CpuState::msr` (see [`msrs_to_kvm`]).
    pub msrs: Vec<kvm_msr_entry>,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
    /// Interrupt shadow: 0, `KVM_X86_SHADOW_INT_STI` or `KVM_X86_SHADOW_INT_MOV_SS`.
    pub shadow: u8,
    /// NMIs blocked (an NMI handler is running).
    pub nmi_masked: bool,
    /// XCR0.
    pub xcr0: u64,
    /// Bits 255:128 of YMM0-15 (the XSAVE AVX component), moved with KVM_GET/SET_XSAVE.
    pub ymm_hi: [u128; 16],
    /// PKRU (the XSAVE PKRU component), moved with KVM_GET/SET_XSAVE.
    pub pkru: u32,
}

impl KvmState {
    /// Converts `cpu` to KVM's structures.
    pub fn from_cpu(cpu: &CpuState) -> KvmState {
        let shadow = if cpu.irq_shadow_icount != cpu.icount {
            0
        } else if cpu.rflags & flags::IF != 0 {
            // VMX refuses STI blocking with IF=0; an STI shadow always has IF=1.
            KVM_X86_SHADOW_INT_STI as u8
        } else {
            KVM_X86_SHADOW_INT_MOV_SS as u8
        };
        KvmState {
            regs: regs_to_kvm(cpu),
            sregs: sregs_to_kvm(cpu),
            fpu: fpu_to_kvm(&cpu.fpu),
            msrs: msrs_to_kvm(&cpu.msr),
            debugregs: debugregs_to_kvm(cpu),
            shadow,
            nmi_masked: cpu.nmi_blocked,
            xcr0: cpu.xcr0,
            ymm_hi: cpu.vec.ymm_hi,
            pkru: cpu.pkru,
        }
    }

    /// Writes this state into `cpu` (whose `icount` must already be current: the interrupt shadow is
    /// expressed relative to it).
    pub fn apply_to(&self, cpu: &mut CpuState) {
        regs_from_kvm(&self.regs, cpu);
        sregs_from_kvm(&self.sregs, cpu);
        cpu.fpu = fpu_from_kvm(&self.fpu, &cpu.fpu);
        for e in &self.msrs {
            msr_from_kvm(&mut cpu.msr, e.index, e.data);
        }
        debugregs_from_kvm(&self.debugregs, cpu);
        cpu.irq_shadow_icount = if self.shadow != 0 { cpu.icount } else { u64::MAX };
        cpu.nmi_blocked = self.nmi_masked;
        cpu.xcr0 = self.xcr0;
        cpu.vec.ymm_hi = self.ymm_hi;
        cpu.pkru = self.pkru;
    }
}

/// Byte offset of the XSAVE header's XSTATE_BV in the standard-format area KVM_GET/SET_XSAVE use.
const XSTATE_BV: usize = 512;
/// Byte offset of the AVX component (YMM_Hi128) in the standard format (CPUID.(0Dh,2).EBX on every
/// x86-64 CPU with AVX, Intel and AMD alike).
const XSAVE_AVX: usize = 576;

/// Bits 255:128 of YMM0-15 from a KVM XSAVE image (`region` as `kvm_xsave` holds it): zero when the
/// image's XSTATE_BV says the AVX component is in its initial state.
pub fn ymm_hi_from_xsave(region: &[u32; 1024]) -> [u128; 16] {
    let word = |byte: usize| region[byte / 4] as u128;
    let bv = word(XSTATE_BV) | (word(XSTATE_BV + 4) << 32);
    let mut out = [0u128; 16];
    if bv & 4 != 0 {
        for (i, v) in out.iter_mut().enumerate() {
            let b = XSAVE_AVX + 16 * i;
            *v = word(b) | (word(b + 4) << 32) | (word(b + 8) << 64) | (word(b + 12) << 96);
        }
    }
    out
}

/// Writes bits 255:128 of YMM0-15 into a KVM XSAVE image and marks the AVX component present in
/// XSTATE_BV (clears the bit when every value is zero: the component's initial state).
pub fn ymm_hi_into_xsave(region: &mut [u32; 1024], ymm_hi: &[u128; 16]) {
    for (i, v) in ymm_hi.iter().enumerate() {
        for w in 0..4 {
            region[(XSAVE_AVX + 16 * i) / 4 + w] = (v >> (32 * w)) as u32;
        }
    }
    if ymm_hi.iter().any(|&v| v != 0) {
        region[XSTATE_BV / 4] |= 4;
    } else {
        region[XSTATE_BV / 4] &= !4;
    }
}

/// Byte offset of the PKRU component (9) in the standard format (CPUID.(0Dh,9).EBX).
const XSAVE_PKRU: usize = 2688;

/// PKRU from a KVM XSAVE image: 0 (its initial value) when XSTATE_BV bit 9 is clear.
pub fn pkru_from_xsave(region: &[u32; 1024]) -> u32 {
    if region[XSTATE_BV / 4] & (1 << 9) != 0 { region[XSAVE_PKRU / 4] } else { 0 }
}

/// Writes PKRU into a KVM XSAVE image, marking the component present in XSTATE_BV unless the value is
/// the initial 0.
pub fn pkru_into_xsave(region: &mut [u32; 1024], pkru: u32) {
    region[XSAVE_PKRU / 4] = pkru;
    region[XSAVE_PKRU / 4 + 1] = 0;
    if pkru != 0 {
        region[XSTATE_BV / 4] |= 1 << 9;
    } else {
        region[XSTATE_BV / 4] &= !(1 << 9);
    }
}

// ---------------------------------------------------------------------------------------------------
// CPUID.
// ---------------------------------------------------------------------------------------------------

/// Leaves whose subleaf (ECX) KVM must match.
pub(super) fn index_significant(leaf: u32) -> bool {
    matches!(
        leaf,
        4 | 7 | 0xb | 0xd | 0xf | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1d | 0x1e | 0x1f | 0x8000_001d
    )
}

/// The guest's CPUID table: Ferrite's model (`cpu::cpuid`) for every leaf it defines (vendor, signature,
/// brand, leaf limits), with each feature register ANDed with what KVM supports on this host, so the
/// guest is told about a feature only if Ferrite's platform has it *and* the host can run it. The
/// physical address width is the smaller of Ferrite's and the host's. KVM's own leaves (0x40000000,
/// kvmclock) and every host feature outside Ferrite's model are not advertised.
pub fn guest_cpuid(host: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
    let host_reg = |leaf: u32, sub: u32| -> [u32; 4] {
        host.iter()
            .find(|e| {
                e.function == leaf && (e.index == sub || e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
            })
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
            .unwrap_or([0; 4])
    };
    let max_basic = cpu::cpuid::cpuid(0, 0, 0)[0];
    let max_ext = cpu::cpuid::cpuid(0x8000_0000, 0, 0)[0];
    let mut out = Vec::new();
    for leaf in (0..=max_basic).chain(0x8000_0000..=max_ext) {
        let significant = index_significant(leaf);
        for sub in 0..if significant { 64 } else { 1 } {
            let mut r = cpu::cpuid::cpuid(leaf, sub, 0);
            if sub > 0 && r == [0; 4] {
                continue;
            }
            let h = host_reg(leaf, sub);
            match (leaf, sub) {
                (1, _) | (0x8000_0001, _) => {
                    r[2] &= h[2];
                    r[3] &= h[3];
                }
                (7, 0) => {
                    r[1] &= h[1];
                    r[2] &= h[2];
                    r[3] &= h[3];
                }
                // XSAVE: the state components (XCR0 bits) and the XSAVE variants both support.
                (0xd, 0) => {
                    r[0] &= h[0];
                    r[3] &= h[3];
                }
                (0xd, 1) => r[0] &= h[0],
                // The TSC and crystal clock: under KVM the TSC and the APIC timer run at KVM's rates,
                // not Ferrite's 1 GHz, so neither leaf is given and the guest calibrates (as before).
                (0x15, _) | (0x16, _) => r = [0; 4],
                (0x8000_0008, _) => {
                    let host_bits = h[0] & 0xff;
                    if host_bits != 0 && host_bits < (r[0] & 0xff) {
                        r[0] = (r[0] & !0xff) | host_bits;
                    }
                }
                _ => {}
            }
            out.push(kvm_cpuid_entry2 {
                function: leaf,
                index: sub,
                flags: if significant { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 },
                eax: r[0],
                ebx: r[1],
                ecx: r[2],
                edx: r[3],
                padding: [0; 3],
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Host plumbing: anonymous mappings, raw ioctls, the slice timer.
// ---------------------------------------------------------------------------------------------------
