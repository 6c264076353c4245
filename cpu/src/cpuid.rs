//! CPUID: the leaves a [`CpuModel`] presents, advertising only what Ferrite implements.
//!
//! Every feature bit a model may set has its instructions and state implemented in the interpreter
//! (see [`crate::model::FEATURES`]); when a family lands (x87/SSE, XSAVE, x2APIC) its bit is marked
//! implemented there. [`feat`] holds the default model's bits (the CPUID Ferrite always presented).

use crate::model::{Base, CpuModel, Reg, Vendor};

/// Family 6, model 0x3A, stepping 9: the default model's value of EDX at reset and of CPUID.1:EAX.
pub const SIGNATURE: u32 = 0x0003_06a9;

/// Maximum physical address width advertised (CPUID.80000008:EAX[7:0]).
pub const PHYS_ADDR_BITS: u32 = 40;

/// The time-stamp counter's rate and the local APIC timer's input clock: 1 GHz, one tick per virtual
/// nanosecond (the machine's clock counts nanoseconds). CPUID leaves 15H/16H report it on the Intel
/// models Ferrite defines itself (`ferrite`, `max`).
pub const TSC_HZ: u64 = 1_000_000_000;

/// Feature bits the default model advertises.
pub mod feat {
    /// CPUID.1:EDX bits actually set.
    pub const LEAF1_EDX: u32 = (1 << 0) // FPU
        | (1 << 1) // VME
        | (1 << 3) // PSE
        | (1 << 4) // TSC
        | (1 << 5) // MSR
        | (1 << 6) // PAE
        | (1 << 8) // CX8
        | (1 << 9) // APIC
        | (1 << 11) // SEP
        | (1 << 12) // MTRR
        | (1 << 13) // PGE
        | (1 << 15) // CMOV
        | (1 << 16) // PAT
        | (1 << 19) // CLFSH
        | (1 << 23) // MMX
        | (1 << 24) // FXSR
        | (1 << 25) // SSE
        | (1 << 26); // SSE2
    /// CPUID.1:ECX.
    pub const LEAF1_ECX: u32 = (1 << 0) // SSE3
        | (1 << 1) // PCLMULQDQ
        | (1 << 9) // SSSE3
        | (1 << 12) // FMA
        | (1 << 13) // CMPXCHG16B
        | (1 << 19) // SSE4.1
        | (1 << 20) // SSE4.2
        | (1 << 22) // MOVBE
        | (1 << 23) // POPCNT
        | (1 << 25) // AES
        | (1 << 26) // XSAVE
        | (1 << 28) // AVX
        | (1 << 29) // F16C
        | (1 << 30) // RDRAND
        | (1 << 31); // hypervisor: a virtual CPU (no signature at 0x40000000: no paravirt interface)
    /// CPUID.1:ECX.OSXSAVE: not a constant feature, it reflects CR4.OSXSAVE (see [`super::cpuid_for`]).
    pub const OSXSAVE: u32 = 1 << 27;
    /// CPUID.7.0:EBX.
    pub const LEAF7_EBX: u32 = (1 << 0) // FSGSBASE
        | (1 << 3) // BMI1
        | (1 << 5) // AVX2
        | (1 << 7) // SMEP
        | (1 << 8) // BMI2
        | (1 << 9) // ERMS
        | (1 << 18) // RDSEED
        | (1 << 19) // ADX
        | (1 << 20); // SMAP
    /// CPUID.7.0:EDX.
    pub const LEAF7_EDX: u32 = 1 << 29; // IA32_ARCH_CAPABILITIES
    /// CPUID.80000001:ECX.
    pub const EXT1_ECX: u32 = (1 << 0) // LAHF/SAHF in 64-bit mode
        | (1 << 5); // ABM (LZCNT)
    /// CPUID.80000001:EDX.
    pub const EXT1_EDX: u32 = (1 << 11) // SYSCALL
        | (1 << 20) // NX
        | (1 << 26) // 1 GiB pages
        | (1 << 27) // RDTSCP
        | (1 << 29); // LM
}

/// IA32_ARCH_CAPABILITIES (MSR 0x10A): the interpreter has none of the microarchitectural side channels
/// (it executes nothing speculatively and shares no buffers with another logical CPU), so it says so, as
/// a CPU without the flaws does: RDCL_NO (Meltdown), SKIP_L1DFL_VMENTRY, SSB_NO, MDS_NO,
/// IF_PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO (MMIO stale data), BHI_NO, PBRSB_NO,
/// GDS_NO, RFDS_NO, ITS_NO.
pub const ARCH_CAPABILITIES: u64 = (1 << 0)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 20)
    | (1 << 24)
    | (1 << 26)
    | (1 << 27)
    | (1 << 62);

/// The result of CPUID for leaf `eax`, subleaf `ecx`, for the default model's CPU with local APIC ID
/// `apic_id`.
pub fn cpuid(leaf: u32, subleaf: u32, apic_id: u32) -> [u32; 4] {
    cpuid_model(&CpuModel::ferrite(), leaf, subleaf, apic_id)
}

/// Leaf 1 EDX bits an AMD CPU repeats in leaf 0x80000001 EDX (FPU..PAT, PSE36, MMX, FXSR; AMD APM
/// vol. 3 appendix E), as QEMU does for an AMD-vendor model.
const AMD_EXT1_ALIASES: u32 = 0x0183_f3ff;

/// The result of CPUID for leaf `eax`, subleaf `ecx`, on `model` with local APIC ID `apic_id`.
pub fn cpuid_model(model: &CpuModel, leaf: u32, subleaf: u32, apic_id: u32) -> [u32; 4] {
    let vendor = *model.vendor.id();
    let v = |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
    let r = |x: Reg| model.regs[x as usize];
    let xsave = model.has(Reg::L1Ecx, 26);
    let tsc_leaves = model.vendor == Vendor::Intel && matches!(model.base, Base::Ferrite | Base::Max);
    match leaf {
        0 => [if tsc_leaves { 0x16 } else { 0xd }, v(0), v(8), v(4)],
        1 => [model.signature, (apic_id << 24) | (1 << 16) | (8 << 8), r(Reg::L1Ecx), r(Reg::L1Edx)],
        7 if subleaf == 0 => [0, r(Reg::L7Ebx), r(Reg::L7Ecx), r(Reg::L7Edx)],
        // XSAVE: components x87 and SSE (the 512-byte legacy region) and AVX (YMM_Hi128, 256 bytes at
        // offset 576): 576-byte areas with XCR0 = 3, 832 with XCR0 = 7 (EBX of sub-leaves 0 and 1 follow
        // XCR0, see [`with_xcr0`]; here they are for XCR0's reset value). Sub-leaf 1: XSAVEOPT, XSAVEC and
        // XGETBV with ECX = 1; no XSAVES, no supervisor components. The AVX component exists whether or
        // not CPUID.1 advertises AVX (Linux enables only components whose feature is advertised). A
        // model without XSAVE has no leaf 0xD.
        //
        // A model with PKU also has the PKRU component (9): 8 bytes at offset 2688 in the standard form,
        // so the largest area (ECX) is 2696 bytes.
        0xd if xsave => {
            use crate::exec::fpstate as fp;
            let supported = fp::xcr0_supported(model);
            match subleaf {
                0 => [supported as u32, XSAVE_LEGACY, fp::xsave_size(supported), 0],
                1 => [0b111, XSAVE_LEGACY, 0, 0],
                2 => [fp::XSAVE_AVX_SIZE, fp::XSAVE_AVX_OFFSET, 0, 0],
                9 if supported & fp::XCR0_PKRU != 0 => [fp::XSAVE_PKRU_SIZE, fp::XSAVE_PKRU_OFFSET, 0, 0],
                _ => [0, 0, 0, 0],
            }
        }
        // Time-stamp counter and core crystal clock (SDM vol. 2A, CPUID leaf 15H): TSC = crystal x
        // EBX / EAX, and the local APIC timer runs from the crystal. Both are [`TSC_HZ`] here (one tick
        // per virtual nanosecond). Linux reads it (`native_calibrate_tsc`, Intel only) and then neither
        // measures the TSC against the PIT nor the APIC timer against the PIT or PM timer: about 150 ms
        // of busy-waiting in virtual time at every boot, and no calibration error.
        0x15 if tsc_leaves => [1, 1, TSC_HZ as u32, 0],
        // Processor frequency information (leaf 16H): base, maximum and bus (reference) MHz.
        0x16 if tsc_leaves => {
            let mhz = (TSC_HZ / 1_000_000) as u32;
            [mhz, mhz, mhz, 0]
        }
        0x8000_0000 => [0x8000_0008, 0, 0, 0],
        0x8000_0001 => {
            let mut edx = r(Reg::E1Edx);
            if model.vendor == Vendor::Amd {
                edx |= r(Reg::L1Edx) & AMD_EXT1_ALIASES;
            }
            [0, 0, r(Reg::E1Ecx), edx]
        }
        0x8000_0002..=0x8000_0004 => {
            let mut name = [0u8; 48];
            name[..19].copy_from_slice(b"Ferrite Virtual CPU");
            let base = ((leaf - 0x8000_0002) * 16) as usize;
            let w = |i: usize| {
                u32::from_le_bytes([
                    name[base + i],
                    name[base + i + 1],
                    name[base + i + 2],
                    name[base + i + 3],
                ])
            };
            [w(0), w(4), w(8), w(12)]
        }
        0x8000_0008 => [PHYS_ADDR_BITS | (48 << 8), 0, 0, 0],
        _ => [0, 0, 0, 0],
    }
}

/// Size of the XSAVE area for x87 and SSE (CPUID.0xD.0:EBX with XCR0 = 3).
const XSAVE_LEGACY: u32 = crate::exec::fpstate::XSAVE_LEGACY_SIZE;

/// CPUID result `r` for (`leaf`, `subleaf`) adjusted to the current XCR0: CPUID.0xD.0:EBX and
/// CPUID.0xD.1:EBX give the area size for the enabled components (standard and compacted form).
pub fn with_xcr0(mut r: [u32; 4], leaf: u32, subleaf: u32, xcr0: u64) -> [u32; 4] {
    if leaf == 0xd && subleaf == 0 {
        r[1] = crate::exec::fpstate::xsave_size(xcr0);
    } else if leaf == 0xd && subleaf == 1 {
        r[1] = crate::exec::fpstate::xsavec_size(xcr0);
    }
    r
}

/// CPUID as a CPU with control register 4 `cr4` sees it: CPUID.1:ECX.OSXSAVE reflects CR4.OSXSAVE.
pub fn cpuid_for(leaf: u32, subleaf: u32, apic_id: u32, cr4: u64) -> [u32; 4] {
    cpuid_for_model(&CpuModel::ferrite(), leaf, subleaf, apic_id, cr4)
}

/// [`cpuid_for`] on `model`.
pub fn cpuid_for_model(model: &CpuModel, leaf: u32, subleaf: u32, apic_id: u32, cr4: u64) -> [u32; 4] {
    let mut r = cpuid_model(model, leaf, subleaf, apic_id);
    if leaf == 1 && cr4 & crate::state::cr4::OSXSAVE != 0 && model.has(Reg::L1Ecx, 26) {
        r[2] |= feat::OSXSAVE;
    }
    // CPUID.(7,0):ECX.OSPKE (bit 4) reflects CR4.PKE.
    if leaf == 7 && subleaf == 0 && cr4 & crate::state::cr4::PKE != 0 && model.has(Reg::L7Ecx, 3) {
        r[2] |= 1 << 4;
    }
    r
}

/// Whether 1 GiB pages are advertised.
pub fn has_1g_pages() -> bool {
    feat::EXT1_EDX & (1 << 26) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_and_max_leaves() {
        let r = cpuid(0, 0, 0);
        let mut s = Vec::new();
        for x in [r[1], r[3], r[2]] {
            s.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(&s, b"GenuineIntel");
        assert_eq!(cpuid(0x8000_0000, 0, 0)[0], 0x8000_0008);
        assert_eq!(cpuid(1, 0, 3)[1] >> 24, 3);
        // Nothing beyond the advertised leaves.
        assert_eq!(cpuid(0x4000_0000, 0, 0), [0; 4]);
    }

    #[test]
    fn tsc_and_crystal_clock_leaves() {
        // Leaf 15H: TSC = crystal x EBX / EAX must be the rate the machine's TSC runs at, and the
        // crystal the APIC timer's clock (both TSC_HZ); leaf 16H gives the same in MHz.
        let r = cpuid(0, 0, 0);
        assert_eq!(r[0], 0x16);
        let [den, num, crystal, _] = cpuid(0x15, 0, 0);
        assert!(den != 0 && num != 0 && crystal != 0, "Linux ignores a leaf 15H with a zero field");
        assert_eq!(crystal as u64 * num as u64 / den as u64, TSC_HZ);
        assert_eq!(crystal as u64, TSC_HZ);
        assert_eq!(cpuid(0x16, 0, 0)[..3], [1000; 3]);
        // Models that copy a product Ferrite does not define keep their own leaf limit and no 15H.
        for m in [CpuModel::qemu64(), CpuModel::parse("ferrite,vendor=amd").unwrap()] {
            assert_eq!(cpuid_model(&m, 0, 0, 0)[0], 0xd);
            assert_eq!(cpuid_model(&m, 0x15, 0, 0), [0; 4]);
        }
        assert_eq!(cpuid_model(&CpuModel::max(), 0x15, 0, 0), cpuid(0x15, 0, 0));
    }

    #[test]
    fn hypervisor_bit_and_arch_capabilities() {
        // A virtual CPU says so (Linux then skips PMU and microcode probing a VM cannot do), and
        // enumerates IA32_ARCH_CAPABILITIES with the not-affected bits.
        assert_ne!(cpuid(1, 0, 0)[2] & (1 << 31), 0);
        assert_ne!(cpuid(7, 0, 0)[3] & (1 << 29), 0);
        assert_eq!(ARCH_CAPABILITIES & 1, 1, "RDCL_NO");
        assert_ne!(ARCH_CAPABILITIES & (1 << 5), 0, "MDS_NO");
    }

    #[test]
    fn simd_features_advertised() {
        // MMX, SSE..SSE4.2, AES and PCLMULQDQ are implemented (exec/sse.rs), AVX, AVX2, FMA and F16C
        // too (exec/avx*.rs, with the XSAVE AVX component); OSXSAVE follows CR4 (not a constant bit).
        for (bit, name) in [(23, "MMX"), (25, "SSE"), (26, "SSE2")] {
            assert_ne!(feat::LEAF1_EDX & (1 << bit), 0, "{name}");
        }
        for (bit, name) in
            [(0, "SSE3"), (1, "PCLMULQDQ"), (9, "SSSE3"), (19, "SSE4.1"), (20, "SSE4.2"), (25, "AES")]
        {
            assert_ne!(feat::LEAF1_ECX & (1 << bit), 0, "{name}");
        }
        for (bit, name) in [(12, "FMA"), (28, "AVX"), (29, "F16C")] {
            assert_ne!(feat::LEAF1_ECX & (1 << bit), 0, "{name}");
        }
        assert_eq!(feat::LEAF1_ECX & (1 << 27), 0, "OSXSAVE");
        assert_ne!(cpuid(7, 0, 0)[1] & (1 << 5), 0, "AVX2");
        // The AVX state component is supported in XCR0 (bit 2), so a kernel that sees AVX can enable it.
        assert_ne!(cpuid(0xd, 0, 0)[0] & 4, 0, "XCR0.AVX");
    }

    #[test]
    fn x87_fxsr_xsave_advertised_exactly() {
        assert_ne!(feat::LEAF1_EDX & 1, 0, "FPU");
        assert_ne!(feat::LEAF1_EDX & (1 << 24), 0, "FXSR");
        assert_ne!(feat::LEAF1_ECX & (1 << 26), 0, "XSAVE");
        assert_eq!(feat::LEAF1_ECX & feat::OSXSAVE, 0, "OSXSAVE is not constant");
        assert!(cpuid(0, 0, 0)[0] >= 0xd);
        // Leaf 0xD: x87 | SSE | AVX, 576-byte areas for XCR0 = 3 and 832 for XCR0 = 7 (EBX follows
        // XCR0), the AVX component at 576, XSAVEOPT/XSAVEC/XGETBV1, no XSAVES, no components >= 3.
        assert_eq!(cpuid(0xd, 0, 0), [7, 576, 832, 0]);
        assert_eq!(cpuid(0xd, 1, 0), [0b111, 576, 0, 0]);
        assert_eq!(with_xcr0(cpuid(0xd, 0, 0), 0xd, 0, 7), [7, 832, 832, 0]);
        assert_eq!(with_xcr0(cpuid(0xd, 1, 0), 0xd, 1, 7), [0b111, 832, 0, 0]);
        assert_eq!(with_xcr0(cpuid(0xd, 0, 0), 0xd, 0, 3), [7, 576, 832, 0]);
        assert_eq!(cpuid(0xd, 2, 0), [256, 576, 0, 0]);
        for sub in 3..64 {
            assert_eq!(cpuid(0xd, sub, 0), [0; 4], "sub-leaf {sub}");
        }
        assert_eq!(cpuid_for(1, 0, 0, 0)[2] & feat::OSXSAVE, 0);
        assert_ne!(cpuid_for(1, 0, 0, crate::state::cr4::OSXSAVE)[2] & feat::OSXSAVE, 0);
    }
}
