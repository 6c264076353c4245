//! CPU models: what the virtual CPU says it is (vendor, family/model/stepping, CPUID feature bits) and
//! so which instructions it has, and whose architectural differences it follows.
//!
//! A [`CpuModel`] is held in [`crate::CpuState::model`] and read by CPUID ([`crate::cpuid`]), by the
//! #UD gate at decode time ([`CpuModel::allows`]: an instruction whose CPUID feature the model does not
//! advertise raises #UD, as on a CPU without it) and by the handlers whose behaviour differs between
//! vendors (SYSCALL in compatibility mode, SYSENTER/SYSEXIT in long mode). A model never advertises
//! a feature Ferrite does not implement: `+feature` of an unimplemented feature is refused.
//!
//! Models are named as QEMU names them (`--cpu qemu64,+pcid,-x2apic,vendor=intel`); see
//! docs/CONFORMANCE.md for what each advertises and how it differs from the hardware it names.

use crate::state::Quirks;
use iced_x86::{Code, CpuidFeature, Instruction};

/// The CPU vendor a model presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Vendor {
    /// "GenuineIntel".
    #[default]
    Intel = 0,
    /// "AuthenticAMD".
    Amd = 1,
}

impl Vendor {
    /// The 12-byte CPUID vendor string.
    pub fn id(self) -> &'static [u8; 12] {
        match self {
            Vendor::Intel => b"GenuineIntel",
            Vendor::Amd => b"AuthenticAMD",
        }
    }

    /// The quirks (undefined-result choices) that follow this vendor.
    pub fn quirks(self) -> Quirks {
        match self {
            Vendor::Intel => Quirks::Intel,
            Vendor::Amd => Quirks::Amd,
        }
    }
}

/// Which named model a [`CpuModel`] started from (kept for diagnostics and the state hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Base {
    /// `ferrite`, the default: the CPUID Ferrite has always presented (an Ivy Bridge-like Intel part).
    #[default]
    Ferrite = 0,
    /// `qemu64`: QEMU's default 64-bit model (AMD vendor, family 15), less what Ferrite lacks.
    Qemu64 = 1,
    /// `max`: everything Ferrite implements.
    Max = 2,
    /// `host-compatible`: what both this host's CPU and Ferrite have, with the host's vendor.
    HostCompatible = 3,
}

/// A CPUID feature register: index into [`CpuModel::regs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// CPUID.1:ECX.
    L1Ecx = 0,
    /// CPUID.1:EDX.
    L1Edx = 1,
    /// CPUID.(7,0):EBX.
    L7Ebx = 2,
    /// CPUID.(7,0):ECX.
    L7Ecx = 3,
    /// CPUID.(7,0):EDX.
    L7Edx = 4,
    /// CPUID.80000001h:ECX.
    E1Ecx = 5,
    /// CPUID.80000001h:EDX.
    E1Edx = 6,
}

/// One named feature bit: QEMU's name(s), where it lives, and whether Ferrite implements it.
#[derive(Clone, Copy, Debug)]
pub struct FeatureBit {
    /// QEMU's property names (the first is canonical).
    pub names: &'static [&'static str],
    /// Register.
    pub reg: Reg,
    /// Bit number.
    pub bit: u32,
    /// Ferrite implements it (so `max` and `+name` may advertise it).
    pub implemented: bool,
}

const fn fb(names: &'static [&'static str], reg: Reg, bit: u32, implemented: bool) -> FeatureBit {
    FeatureBit { names, reg, bit, implemented }
}

/// Every feature bit `--cpu` knows by name.
pub const FEATURES: &[FeatureBit] = {
    use Reg::*;
    &[
        fb(&["fpu"], L1Edx, 0, true),
        fb(&["vme"], L1Edx, 1, true),
        fb(&["de"], L1Edx, 2, false),
        fb(&["pse"], L1Edx, 3, true),
        fb(&["tsc"], L1Edx, 4, true),
        fb(&["msr"], L1Edx, 5, true),
        fb(&["pae"], L1Edx, 6, true),
        fb(&["mce"], L1Edx, 7, false),
        fb(&["cx8"], L1Edx, 8, true),
        fb(&["apic"], L1Edx, 9, true),
        fb(&["sep"], L1Edx, 11, true),
        fb(&["mtrr"], L1Edx, 12, true),
        fb(&["pge"], L1Edx, 13, true),
        fb(&["mca"], L1Edx, 14, false),
        fb(&["cmov"], L1Edx, 15, true),
        fb(&["pat"], L1Edx, 16, true),
        fb(&["pse36"], L1Edx, 17, false),
        fb(&["clflush"], L1Edx, 19, true),
        fb(&["mmx"], L1Edx, 23, true),
        fb(&["fxsr"], L1Edx, 24, true),
        fb(&["sse"], L1Edx, 25, true),
        fb(&["sse2"], L1Edx, 26, true),
        fb(&["ss"], L1Edx, 27, false),
        fb(&["ht"], L1Edx, 28, false),
        fb(&["pni", "sse3"], L1Ecx, 0, true),
        fb(&["pclmulqdq", "pclmuldq"], L1Ecx, 1, true),
        fb(&["monitor"], L1Ecx, 3, true),
        fb(&["vmx"], L1Ecx, 5, false),
        fb(&["smx"], L1Ecx, 6, false),
        fb(&["ssse3"], L1Ecx, 9, true),
        fb(&["fma"], L1Ecx, 12, true),
        fb(&["cx16"], L1Ecx, 13, true),
        fb(&["pdcm"], L1Ecx, 15, false),
        fb(&["pcid"], L1Ecx, 17, true),
        fb(&["sse4.1", "sse4_1"], L1Ecx, 19, true),
        fb(&["sse4.2", "sse4_2"], L1Ecx, 20, true),
        fb(&["x2apic"], L1Ecx, 21, false),
        fb(&["movbe"], L1Ecx, 22, true),
        fb(&["popcnt"], L1Ecx, 23, true),
        fb(&["tsc-deadline"], L1Ecx, 24, false),
        fb(&["aes"], L1Ecx, 25, true),
        fb(&["xsave"], L1Ecx, 26, true),
        fb(&["avx"], L1Ecx, 28, true),
        fb(&["f16c"], L1Ecx, 29, true),
        fb(&["rdrand"], L1Ecx, 30, true),
        fb(&["hypervisor"], L1Ecx, 31, true),
        fb(&["fsgsbase"], L7Ebx, 0, true),
        fb(&["bmi1"], L7Ebx, 3, true),
        fb(&["hle"], L7Ebx, 4, false),
        fb(&["avx2"], L7Ebx, 5, true),
        fb(&["smep"], L7Ebx, 7, true),
        fb(&["bmi2"], L7Ebx, 8, true),
        fb(&["erms"], L7Ebx, 9, true),
        fb(&["invpcid"], L7Ebx, 10, true),
        fb(&["rtm"], L7Ebx, 11, false),
        fb(&["mpx"], L7Ebx, 14, false),
        fb(&["avx512f"], L7Ebx, 16, false),
        fb(&["rdseed"], L7Ebx, 18, true),
        fb(&["adx"], L7Ebx, 19, true),
        fb(&["smap"], L7Ebx, 20, true),
        fb(&["clflushopt"], L7Ebx, 23, true),
        fb(&["clwb"], L7Ebx, 24, true),
        fb(&["sha-ni"], L7Ebx, 29, false),
        fb(&["umip"], L7Ecx, 2, false),
        fb(&["pku"], L7Ecx, 3, true),
        fb(&["waitpkg"], L7Ecx, 5, false),
        fb(&["gfni"], L7Ecx, 8, false),
        fb(&["vaes"], L7Ecx, 9, false),
        fb(&["vpclmulqdq"], L7Ecx, 10, false),
        fb(&["rdpid"], L7Ecx, 22, true),
        fb(&["movdiri"], L7Ecx, 27, false),
        fb(&["movdir64b"], L7Ecx, 28, false),
        fb(&["serialize"], L7Edx, 14, true),
        fb(&["arch-capabilities"], L7Edx, 29, true),
        fb(&["lahf-lm", "lahf_lm"], E1Ecx, 0, true),
        fb(&["svm"], E1Ecx, 2, false),
        fb(&["abm", "lzcnt"], E1Ecx, 5, true),
        fb(&["sse4a"], E1Ecx, 6, false),
        fb(&["3dnowprefetch"], E1Ecx, 8, true),
        fb(&["xop"], E1Ecx, 11, false),
        fb(&["skinit"], E1Ecx, 12, false),
        fb(&["fma4"], E1Ecx, 16, false),
        fb(&["tbm"], E1Ecx, 21, false),
        fb(&["mwaitx"], E1Ecx, 29, false),
        fb(&["syscall"], E1Edx, 11, true),
        fb(&["nx", "xd"], E1Edx, 20, true),
        fb(&["mmxext"], E1Edx, 22, false),
        fb(&["pdpe1gb"], E1Edx, 26, true),
        fb(&["rdtscp"], E1Edx, 27, true),
        fb(&["lm"], E1Edx, 29, true),
        fb(&["3dnowext"], E1Edx, 30, false),
        fb(&["3dnow"], E1Edx, 31, false),
    ]
};

/// The feature bits of the default model (`ferrite`): exactly the CPUID Ferrite presented before
/// models existed, so nothing changes by default.
const FERRITE_REGS: [u32; 7] = [
    crate::cpuid::feat::LEAF1_ECX,
    crate::cpuid::feat::LEAF1_EDX,
    crate::cpuid::feat::LEAF7_EBX,
    0,
    crate::cpuid::feat::LEAF7_EDX,
    crate::cpuid::feat::EXT1_ECX,
    crate::cpuid::feat::EXT1_EDX,
];

/// A CPU model: identity, feature bits and vendor behaviour. Small and `Copy`, so it lives in
/// [`crate::CpuState`] and is part of the state the machine hashes and snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct CpuModel {
    /// CPUID feature registers, indexed by [`Reg`].
    pub regs: [u32; 7],
    /// CPUID.1:EAX (and EDX at reset): stepping, model, family, extended model/family.
    pub signature: u32,
    /// Vendor: the CPUID vendor string and the vendor's architectural differences.
    pub vendor: Vendor,
    /// The named model this one started from.
    pub base: Base,
    /// Padding.
    pub _pad: [u8; 2],
}

impl Default for CpuModel {
    fn default() -> Self {
        CpuModel::ferrite()
    }
}

/// Family 6, model 0x3A, stepping 9 (the default model's signature).
const FERRITE_SIGNATURE: u32 = 0x0003_06a9;

impl CpuModel {
    /// The default model: today's CPUID (Intel, family 6 model 0x3A, the features in
    /// [`crate::cpuid::feat`]).
    pub const fn ferrite() -> CpuModel {
        CpuModel {
            regs: FERRITE_REGS,
            signature: FERRITE_SIGNATURE,
            vendor: Vendor::Intel,
            base: Base::Ferrite,
            _pad: [0; 2],
        }
    }

    /// `max`: every feature Ferrite implements, Intel vendor, the default signature.
    pub fn max() -> CpuModel {
        let mut regs = [0u32; 7];
        for f in FEATURES.iter().filter(|f| f.implemented) {
            regs[f.reg as usize] |= 1 << f.bit;
        }
        CpuModel { regs, signature: FERRITE_SIGNATURE, vendor: Vendor::Intel, base: Base::Max, _pad: [0; 2] }
    }

    /// `qemu64` as QEMU 7.2 defines it (AMD vendor, family 15 model 107 stepping 1; FPU DE PSE TSC
    /// MSR PAE MCE CX8 APIC SEP MTRR PGE MCA CMOV PAT PSE36 CLFLUSH MMX FXSR SSE SSE2, SSE3 CX16,
    /// SYSCALL NX LM, LAHF_LM SVM) without the bits Ferrite does not implement (DE, MCE, MCA, PSE36,
    /// SVM), plus the hypervisor bit QEMU sets for every model.
    pub fn qemu64() -> CpuModel {
        let mut m = CpuModel {
            regs: [0; 7],
            signature: 0x0006_0fb1,
            vendor: Vendor::Amd,
            base: Base::Qemu64,
            _pad: [0; 2],
        };
        for name in [
            "fpu",
            "pse",
            "tsc",
            "msr",
            "pae",
            "cx8",
            "apic",
            "sep",
            "mtrr",
            "pge",
            "cmov",
            "pat",
            "clflush",
            "mmx",
            "fxsr",
            "sse",
            "sse2",
            "pni",
            "cx16",
            "hypervisor",
            "syscall",
            "nx",
            "lm",
            "lahf-lm",
        ] {
            let f = feature(name).expect("qemu64 feature names are in FEATURES");
            m.regs[f.reg as usize] |= 1 << f.bit;
        }
        m
    }

    /// `host-compatible`: the features both this host's CPU and Ferrite have, the host's vendor and
    /// signature (the differential tester's model: an instruction the guest may use then runs natively
    /// too). On a non-x86 host it is `max` without host features.
    pub fn host_compatible() -> CpuModel {
        let max = CpuModel::max();
        let host = host_regs();
        let mut regs = [0u32; 7];
        for (r, (m, h)) in regs.iter_mut().zip(max.regs.iter().zip(host.0.iter())) {
            *r = m & h;
        }
        // Ferrite is a virtual CPU whatever the host says.
        regs[Reg::L1Ecx as usize] |= 1 << 31;
        CpuModel { regs, signature: host.1, vendor: host.2, base: Base::HostCompatible, _pad: [0; 2] }
    }

    /// Whether feature bit `reg`:`bit` is advertised.
    #[inline]
    pub fn has(&self, reg: Reg, bit: u32) -> bool {
        self.regs[reg as usize] >> bit & 1 != 0
    }

    /// The CR4 bits MOV to CR4 accepts on this model: `base` (the default model's set) without the
    /// bits of features this model does not advertise, plus CR4.PCIDE when it advertises PCID,
    /// CR4.VME/PVI when it advertises VME and CR4.PKE when it advertises PKU.
    pub fn cr4_valid(&self, base: u64) -> u64 {
        use crate::state::cr4;
        let mut v = base;
        for (reg, bit, c) in [
            (Reg::L1Edx, 3, cr4::PSE),
            (Reg::L1Edx, 6, cr4::PAE),
            (Reg::L1Edx, 13, cr4::PGE),
            (Reg::L1Edx, 24, cr4::OSFXSR),
            (Reg::L1Ecx, 26, cr4::OSXSAVE),
            (Reg::L7Ebx, 0, cr4::FSGSBASE),
            (Reg::L7Ebx, 7, cr4::SMEP),
            (Reg::L7Ebx, 20, cr4::SMAP),
        ] {
            if !self.has(reg, bit) {
                v &= !c;
            }
        }
        if self.has(Reg::L1Ecx, 17) {
            v |= cr4::PCIDE;
        }
        if self.has(Reg::L1Edx, 1) {
            v |= cr4::VME | cr4::PVI;
        }
        if self.has(Reg::L7Ecx, 3) {
            v |= cr4::PKE;
        }
        v
    }

    /// Whether the named feature is advertised.
    pub fn has_named(&self, name: &str) -> bool {
        feature(name).is_some_and(|f| self.has(f.reg, f.bit))
    }

    /// Parses QEMU's `-cpu` spelling: `MODEL[,+feature][,-feature][,feature=on|off][,vendor=intel|amd]`.
    /// Models: `ferrite` (also `default`), `qemu64`, `max`, `host-compatible`.
    pub fn parse(spec: &str) -> Result<CpuModel, String> {
        let mut parts = spec.split(',');
        let name = parts.next().unwrap_or("").trim();
        let mut asked: Vec<&str> = Vec::new();
        let mut m = match name {
            "ferrite" | "default" => CpuModel::ferrite(),
            "qemu64" => CpuModel::qemu64(),
            "max" => CpuModel::max(),
            "host-compatible" => CpuModel::host_compatible(),
            _ => {
                return Err(format!(
                    "unknown CPU model `{name}` (expected ferrite, qemu64, max or host-compatible)"
                ));
            }
        };
        for p in parts {
            let p = p.trim();
            let (feat, on) = if let Some(f) = p.strip_prefix('+') {
                (f, true)
            } else if let Some(f) = p.strip_prefix('-') {
                (f, false)
            } else if let Some(v) = p.strip_prefix("vendor=") {
                m.vendor = match v {
                    "intel" | "GenuineIntel" => Vendor::Intel,
                    "amd" | "AuthenticAMD" => Vendor::Amd,
                    _ => return Err(format!("unknown vendor `{v}` (expected intel or amd)")),
                };
                continue;
            } else if let Some((f, v)) = p.split_once('=') {
                match v {
                    "on" | "true" => (f, true),
                    "off" | "false" => (f, false),
                    _ => return Err(format!("bad value in `{p}` (expected on or off)")),
                }
            } else {
                return Err(format!("bad CPU option `{p}` (expected +feature, -feature or vendor=...)"));
            };
            let f = feature(feat).ok_or_else(|| format!("unknown CPU feature `{feat}`"))?;
            if on {
                if !f.implemented {
                    return Err(format!("Ferrite does not implement CPU feature `{feat}`"));
                }
                m.regs[f.reg as usize] |= 1 << f.bit;
                asked.push(f.names[0]);
            } else {
                m.regs[f.reg as usize] &= !(1 << f.bit);
                asked.retain(|a| *a != f.names[0]);
            }
        }
        let (m, dropped) = m.executable_with(host_executes);
        if let Some(f) = dropped.iter().find(|d| asked.contains(d)) {
            return Err(format!(
                "CPU feature `{f}` needs this host's CPU to have it (Ferrite computes it with the host's \
                 instructions), and this host lacks it"
            ));
        }
        Ok(m)
    }

    /// This model without the features Ferrite computes with the host's own instructions when the host
    /// lacks them (`host_has` answers for `avx`, `fma` and `f16c`): FMA and F16C need the host's, and
    /// the AVX compare predicates 8-31 need the host's AVX, so a host without AVX takes the whole VEX
    /// set (AVX, AVX2, FMA, F16C) away. A guest then sees a CPU without them (#UD, as on such a CPU)
    /// instead of a machine that stops. Returns the model and the names of the features dropped.
    pub fn executable_with(mut self, host_has: impl Fn(&str) -> bool) -> (CpuModel, Vec<&'static str>) {
        let mut drop: Vec<&'static str> = Vec::new();
        if !host_has("avx") {
            drop.extend(["avx", "avx2", "fma", "f16c"]);
        }
        if !host_has("fma") {
            drop.push("fma");
        }
        if !host_has("f16c") {
            drop.push("f16c");
        }
        let mut dropped = Vec::new();
        for name in drop {
            if let Some(f) = feature(name)
                && self.has(f.reg, f.bit)
            {
                self.regs[f.reg as usize] &= !(1 << f.bit);
                dropped.push(f.names[0]);
            }
        }
        (self, dropped)
    }

    /// [`CpuModel::executable_with`] this host's CPU: what every model the machine runs goes through.
    pub fn executable_here(self) -> CpuModel {
        self.executable_with(host_executes).0
    }

    /// A one-line description: model name, vendor and the advertised features by name.
    pub fn describe(&self) -> String {
        let names: Vec<&str> =
            FEATURES.iter().filter(|f| self.has(f.reg, f.bit)).map(|f| f.names[0]).collect();
        format!("{:?} ({:?}, signature {:#x}): {}", self.base, self.vendor, self.signature, names.join(" "))
    }

    /// Whether an instruction with code `code` exists on this model: every CPUID feature iced lists
    /// for it is advertised (see [`feature_available`]). `false` means #UD.
    pub fn allows(&self, code: Code) -> bool {
        let mut i = Instruction::default();
        i.set_code(code);
        i.cpuid_features().iter().all(|&f| self.feature_available(f))
    }

    /// Whether iced's `f` is present on this model. Features that every x86-64 CPU has (8086..486,
    /// CPUID, RDPMC, PAUSE, multi-byte NOP) are always present; features of obsolete or other-vendor
    /// parts that no model has (the `_ONLY` sets, Cyrix/Centaur/VIA, IA-64, Knights Corner) never are.
    pub fn feature_available(&self, f: CpuidFeature) -> bool {
        use CpuidFeature as F;
        use Reg::*;
        let bit = |r: Reg, b: u32| self.has(r, b);
        match f {
            F::INTEL8086 | F::INTEL186 | F::INTEL286 | F::INTEL386 | F::INTEL486 | F::CPUID => true,
            // RDPMC exists since the Pentium Pro without a CPUID bit (its use is gated by CR4.PCE).
            F::RDPMC => true,
            // PAUSE is REP NOP: a NOP on every CPU before it. The long NOP (0F 1F) has no CPUID bit.
            F::PAUSE | F::MULTIBYTENOP => true,
            // Encodings that run on CPUs without the feature as something older, so no model can
            // make them #UD: ENDBR32/64 are hint NOPs (F3 0F 1E) without CET; WBNOINVD (F3 0F 09) is
            // WBINVD with an ignored REP prefix; PREFETCH/PREFETCHW (0F 0D) execute as NOPs on Intel
            // parts that do not enumerate PREFETCHW (QEMU TCG runs all three unconditionally too).
            F::CET_IBT | F::WBNOINVD | F::PREFETCHW => true,
            F::FPU | F::FPU287 | F::FPU387 => bit(L1Edx, 0),
            F::TSC => bit(L1Edx, 4),
            F::MSR => bit(L1Edx, 5),
            F::CX8 => bit(L1Edx, 8),
            F::SEP => bit(L1Edx, 11),
            F::CMOV => bit(L1Edx, 15),
            F::CLFSH => bit(L1Edx, 19),
            F::MMX => bit(L1Edx, 23),
            F::FXSR => bit(L1Edx, 24),
            F::SSE => bit(L1Edx, 25),
            F::SSE2 => bit(L1Edx, 26),
            F::SSE3 => bit(L1Ecx, 0),
            F::PCLMULQDQ => bit(L1Ecx, 1),
            F::MONITOR => bit(L1Ecx, 3),
            F::VMX => bit(L1Ecx, 5),
            F::SMX => bit(L1Ecx, 6),
            F::SSSE3 => bit(L1Ecx, 9),
            F::FMA => bit(L1Ecx, 12),
            F::CMPXCHG16B => bit(L1Ecx, 13),
            F::SSE4_1 => bit(L1Ecx, 19),
            F::SSE4_2 => bit(L1Ecx, 20),
            F::MOVBE => bit(L1Ecx, 22),
            F::POPCNT => bit(L1Ecx, 23),
            F::AES => bit(L1Ecx, 25),
            // XSAVEOPT and XSAVEC are enumerated in leaf 0xD sub-leaf 1, which every model with XSAVE
            // reports as Ferrite implements them.
            F::XSAVE | F::XSAVEOPT | F::XSAVEC => bit(L1Ecx, 26),
            F::AVX => bit(L1Ecx, 28),
            F::F16C => bit(L1Ecx, 29),
            F::RDRAND => bit(L1Ecx, 30),
            F::FSGSBASE => bit(L7Ebx, 0),
            F::BMI1 => bit(L7Ebx, 3),
            F::HLE => bit(L7Ebx, 4),
            F::AVX2 => bit(L7Ebx, 5),
            F::BMI2 => bit(L7Ebx, 8),
            F::INVPCID => bit(L7Ebx, 10),
            F::RTM => bit(L7Ebx, 11),
            F::MPX => bit(L7Ebx, 14),
            F::RDSEED => bit(L7Ebx, 18),
            F::ADX => bit(L7Ebx, 19),
            F::SMAP => bit(L7Ebx, 20),
            F::CLFLUSHOPT => bit(L7Ebx, 23),
            F::CLWB => bit(L7Ebx, 24),
            F::SHA => bit(L7Ebx, 29),
            F::PREFETCHWT1 => bit(L7Ecx, 0),
            F::PKU => bit(L7Ecx, 3),
            F::WAITPKG => bit(L7Ecx, 5),
            F::GFNI => bit(L7Ecx, 8),
            F::VAES => bit(L7Ecx, 9),
            F::VPCLMULQDQ => bit(L7Ecx, 10),
            F::RDPID => bit(L7Ecx, 22),
            F::CLDEMOTE => bit(L7Ecx, 25),
            F::MOVDIRI => bit(L7Ecx, 27),
            F::MOVDIR64B => bit(L7Ecx, 28),
            F::ENQCMD => bit(L7Ecx, 29),
            F::SERIALIZE => bit(L7Edx, 14),
            F::TSXLDTRK => bit(L7Edx, 16),
            F::PCONFIG => bit(L7Edx, 18),
            F::SVM => bit(E1Ecx, 2),
            F::LZCNT => bit(E1Ecx, 5),
            F::SSE4A => bit(E1Ecx, 6),
            F::XOP => bit(E1Ecx, 11),
            F::SKINIT => bit(E1Ecx, 12),
            F::LWP => bit(E1Ecx, 15),
            F::FMA4 => bit(E1Ecx, 16),
            F::TBM => bit(E1Ecx, 21),
            F::MONITORX => bit(E1Ecx, 29),
            F::SYSCALL => bit(E1Edx, 11),
            F::D3NOWEXT => bit(E1Edx, 30),
            F::D3NOW => bit(E1Edx, 31),
            F::RDTSCP => bit(E1Edx, 27),
            F::X64 => bit(E1Edx, 29),
            // Everything else (AVX-512, AMX, VMX/SVM companions, SGX, CET, TDX, key locker, RDPRU,
            // WBNOINVD, CLZERO, MCOMMIT, INVLPGB, SEV, the _ONLY sets of obsolete parts, other
            // vendors' extensions, ...) has no bit in any model: #UD.
            _ => false,
        }
    }
}

/// The feature named `name` (any of its QEMU spellings).
pub fn feature(name: &str) -> Option<&'static FeatureBit> {
    FEATURES.iter().find(|f| f.names.contains(&name))
}

/// Whether this host's CPU (and OS) can execute `name` (one of the features
/// [`CpuModel::executable_with`] asks about).
fn host_executes(name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            _ => true,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}

/// The host's feature registers, signature and vendor.
fn host_regs() -> ([u32; 7], u32, Vendor) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        // CPUID exists on every x86-64 CPU and has no side effects.
        let l0 = __cpuid(0);
        let l1 = __cpuid(1);
        let l7 = if l0.eax >= 7 { __cpuid_count(7, 0) } else { __cpuid_count(0, 0) };
        let (b7, c7, d7) = if l0.eax >= 7 { (l7.ebx, l7.ecx, l7.edx) } else { (0, 0, 0) };
        let e0 = __cpuid(0x8000_0000).eax;
        let e1 = if e0 >= 0x8000_0001 { __cpuid(0x8000_0001) } else { __cpuid(0) };
        let (c1, d1) = if e0 >= 0x8000_0001 { (e1.ecx, e1.edx) } else { (0, 0) };
        let vendor = match Quirks::host() {
            Quirks::Amd => Vendor::Amd,
            Quirks::Intel => Vendor::Intel,
        };
        ([l1.ecx, l1.edx, b7, c7, d7, c1, d1], l1.eax, vendor)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (CpuModel::max().regs, FERRITE_SIGNATURE, Vendor::Intel)
    }
}

#[cfg(test)]
mod tests;
