//! Host CPU feature detection (CPUID), used to skip instruction families the host cannot run.

use iced_x86::CpuidFeature;

/// The CPUID bits the generator cares about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFeatures {
    /// CMOVcc (leaf 1 EDX bit 15).
    pub cmov: bool,
    /// CMPXCHG8B (leaf 1 EDX bit 8).
    pub cx8: bool,
    /// CMPXCHG16B (leaf 1 ECX bit 13).
    pub cx16: bool,
    /// MOVBE (leaf 1 ECX bit 22).
    pub movbe: bool,
    /// POPCNT (leaf 1 ECX bit 23).
    pub popcnt: bool,
    /// BMI1: ANDN BEXTR BLSI BLSMSK BLSR TZCNT (leaf 7 EBX bit 3).
    pub bmi1: bool,
    /// BMI2: BZHI MULX PDEP PEXT RORX SARX SHLX SHRX (leaf 7 EBX bit 8).
    pub bmi2: bool,
    /// ADX: ADCX ADOX (leaf 7 EBX bit 19).
    pub adx: bool,
    /// LZCNT (leaf 0x8000_0001 ECX bit 5, "ABM").
    pub lzcnt: bool,
    /// LAHF/SAHF in 64-bit mode (leaf 0x8000_0001 ECX bit 0).
    pub lahf64: bool,
    /// SSE3 (leaf 1 ECX bit 0).
    pub sse3: bool,
    /// PKU with the OS's CR4.PKE (leaf 7 ECX bits 3 and 4, OSPKE): RDPKRU/WRPKRU run in user mode.
    pub pku: bool,
    /// SSSE3 (leaf 1 ECX bit 9).
    pub ssse3: bool,
    /// SSE4.1 (leaf 1 ECX bit 19).
    pub sse41: bool,
    /// SSE4.2 (leaf 1 ECX bit 20).
    pub sse42: bool,
    /// AES-NI (leaf 1 ECX bit 25).
    pub aes: bool,
    /// PCLMULQDQ (leaf 1 ECX bit 1).
    pub pclmul: bool,
    /// AVX, with the OS having enabled the YMM state (leaf 1 ECX bits 28 and 27, XCR0[2:1]).
    pub avx: bool,
    /// AVX2 (leaf 7 EBX bit 5; needs `avx`).
    pub avx2: bool,
    /// FMA (leaf 1 ECX bit 12; needs `avx`).
    pub fma: bool,
    /// F16C (leaf 1 ECX bit 29; needs `avx`).
    pub f16c: bool,
}

impl HostFeatures {
    /// Reads CPUID on the running CPU.
    pub fn detect() -> Self {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        // CPUID is available on every x86-64 CPU, and these intrinsics are safe on current toolchains.
        let max = __cpuid(0).eax;
        let l1 = __cpuid(1);
        let l7 = if max >= 7 { __cpuid_count(7, 0) } else { __cpuid(0) };
        let l7b = if max >= 7 { l7.ebx } else { 0 };
        let maxext = __cpuid(0x8000_0000).eax;
        let e1 = if maxext >= 0x8000_0001 { __cpuid(0x8000_0001).ecx } else { 0 };
        let bit = |v: u32, b: u32| v >> b & 1 == 1;
        HostFeatures {
            cmov: bit(l1.edx, 15),
            cx8: bit(l1.edx, 8),
            cx16: bit(l1.ecx, 13),
            movbe: bit(l1.ecx, 22),
            popcnt: bit(l1.ecx, 23),
            bmi1: bit(l7b, 3),
            bmi2: bit(l7b, 8),
            adx: bit(l7b, 19),
            lzcnt: bit(e1, 5),
            lahf64: bit(e1, 0),
            sse3: bit(l1.ecx, 0),
            pku: max >= 7 && bit(l7.ecx, 3) && bit(l7.ecx, 4),
            ssse3: bit(l1.ecx, 9),
            sse41: bit(l1.ecx, 19),
            sse42: bit(l1.ecx, 20),
            aes: bit(l1.ecx, 25),
            pclmul: bit(l1.ecx, 1),
            avx: std::arch::is_x86_feature_detected!("avx"),
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            fma: std::arch::is_x86_feature_detected!("fma"),
            f16c: std::arch::is_x86_feature_detected!("f16c"),
        }
    }

    /// Every feature the generator knows (for host-independent generator tests).
    pub fn all() -> Self {
        HostFeatures {
            cmov: true,
            cx8: true,
            cx16: true,
            movbe: true,
            popcnt: true,
            bmi1: true,
            bmi2: true,
            adx: true,
            lzcnt: true,
            lahf64: true,
            sse3: true,
            pku: true,
            ssse3: true,
            sse41: true,
            sse42: true,
            aes: true,
            pclmul: true,
            avx: true,
            avx2: true,
            fma: true,
            f16c: true,
        }
    }

    /// Whether an iced CPUID feature requirement is met. Unknown features count as unsupported, so only
    /// encodings the generator knows about are ever produced.
    pub fn supports(&self, f: CpuidFeature) -> bool {
        match f {
            CpuidFeature::INTEL8086
            | CpuidFeature::INTEL186
            | CpuidFeature::INTEL286
            | CpuidFeature::INTEL386
            | CpuidFeature::INTEL486
            | CpuidFeature::X64 => true,
            // x87, MMX, SSE, SSE2 and FXSAVE are part of the x86-64 baseline.
            CpuidFeature::FPU
            | CpuidFeature::FPU287
            | CpuidFeature::FPU387
            | CpuidFeature::MMX
            | CpuidFeature::SSE
            | CpuidFeature::SSE2
            | CpuidFeature::FXSR => true,
            CpuidFeature::SSE3 => self.sse3,
            CpuidFeature::SSSE3 => self.ssse3,
            CpuidFeature::SSE4_1 => self.sse41,
            CpuidFeature::SSE4_2 => self.sse42,
            CpuidFeature::AES => self.aes,
            CpuidFeature::PCLMULQDQ => self.pclmul,
            CpuidFeature::CMOV => self.cmov,
            CpuidFeature::CX8 => self.cx8,
            CpuidFeature::CMPXCHG16B => self.cx16,
            CpuidFeature::MOVBE => self.movbe,
            CpuidFeature::POPCNT => self.popcnt,
            CpuidFeature::BMI1 => self.bmi1,
            CpuidFeature::BMI2 => self.bmi2,
            CpuidFeature::ADX => self.adx,
            CpuidFeature::LZCNT => self.lzcnt,
            CpuidFeature::AVX => self.avx,
            CpuidFeature::AVX2 => self.avx && self.avx2,
            CpuidFeature::FMA => self.avx && self.fma,
            CpuidFeature::F16C => self.avx && self.f16c,
            // The system family's instructions fault at CPL 3 (or #UD where the CPU lacks them); either
            // outcome is what the interpreter, running the `host-compatible` model, must reproduce.
            CpuidFeature::RDPMC | CpuidFeature::MONITOR | CpuidFeature::SERIALIZE | CpuidFeature::INVPCID => {
                true
            }
            // RDPKRU/WRPKRU only where the host kernel enabled them (CR4.PKE): the interpreter then
            // runs with CR4.PKE and the host process's PKRU ([`host_pkru`]).
            CpuidFeature::PKU => self.pku,
            _ => false,
        }
    }
}

/// The PKRU this process runs with (Linux gives every process the same initial value), read with
/// RDPKRU; `None` when the host has no PKU or its kernel did not enable it.
pub fn host_pkru() -> Option<u32> {
    static PKRU: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *PKRU.get_or_init(read_pkru)
}

fn read_pkru() -> Option<u32> {
    if !HostFeatures::detect().pku {
        return None;
    }
    let eax: u32;
    // SAFETY: RDPKRU exists and CR4.PKE is set (CPUID.7.ECX PKU and OSPKE, checked above); with
    // ECX = 0 it only reads PKRU into EAX and zeroes EDX, touching no memory.
    unsafe {
        std::arch::asm!("rdpkru", in("ecx") 0u32, out("eax") eax, out("edx") _, options(nomem, nostack, preserves_flags));
    }
    Some(eax)
}
