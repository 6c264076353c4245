//! Architectural CPU state.
//!
//! `CpuState` is `#[repr(C)]` so that generated code (the JIT) can read and write it at fixed offsets;
//! the offsets it uses are named in [`crate::offsets`] and checked there against `offset_of!`.

/// Index of a segment register in [`CpuState::seg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Seg {
    /// ES
    Es = 0,
    /// CS
    Cs = 1,
    /// SS
    Ss = 2,
    /// DS
    Ds = 3,
    /// FS
    Fs = 4,
    /// GS
    Gs = 5,
}

impl Seg {
    /// All six, in encoding order.
    pub const ALL: [Seg; 6] = [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs];

    /// From the 3-bit encoding used by MOV Sreg (0=ES ... 5=GS).
    pub fn from_index(i: usize) -> Option<Seg> {
        Self::ALL.get(i).copied()
    }

    /// Name for diagnostics.
    pub fn name(self) -> &'static str {
        ["es", "cs", "ss", "ds", "fs", "gs"][self as usize]
    }
}

/// Segment descriptor attribute bits, in the VMX "access rights" layout (descriptor bits 40-47 in
/// bits 0-7, bits 52-55 in bits 12-15).
pub mod attr {
    /// Type field (4 bits).
    pub const TYPE: u16 = 0x000f;
    /// Accessed (type bit 0).
    pub const ACCESSED: u16 = 0x0001;
    /// Code/data: writable (data) or readable (code): type bit 1.
    pub const RW: u16 = 0x0002;
    /// Expand-down (data) or conforming (code): type bit 2.
    pub const DC: u16 = 0x0004;
    /// Code segment: type bit 3.
    pub const CODE: u16 = 0x0008;
    /// Descriptor type: 1 = code/data, 0 = system.
    pub const S: u16 = 0x0010;
    /// DPL shift.
    pub const DPL_SHIFT: u16 = 5;
    /// DPL mask.
    pub const DPL: u16 = 0x0060;
    /// Present.
    pub const P: u16 = 0x0080;
    /// Available for software.
    pub const AVL: u16 = 0x1000;
    /// 64-bit code segment.
    pub const L: u16 = 0x2000;
    /// Default operation size / big.
    pub const DB: u16 = 0x4000;
    /// Granularity.
    pub const G: u16 = 0x8000;
}

/// A segment register with its hidden descriptor cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Segment {
    /// Visible selector.
    pub selector: u16,
    /// Attributes (see [`attr`]).
    pub attr: u16,
    /// Byte-granular limit (already expanded by G).
    pub limit: u32,
    /// Base address.
    pub base: u64,
}

impl Segment {
    /// A real-mode style segment: base = selector * 16, 64 KiB limit, present writable data.
    pub fn real(selector: u16) -> Segment {
        Segment {
            selector,
            attr: attr::P | attr::S | attr::RW | attr::ACCESSED,
            limit: 0xffff,
            base: (selector as u64) << 4,
        }
    }
    /// Descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.attr & attr::DPL) >> attr::DPL_SHIFT) as u8
    }
    /// Present bit.
    pub fn present(&self) -> bool {
        self.attr & attr::P != 0
    }
    /// Code segment (S=1, type bit 3).
    pub fn is_code(&self) -> bool {
        self.attr & (attr::S | attr::CODE) == (attr::S | attr::CODE)
    }
    /// Expand-down data segment.
    pub fn is_expand_down(&self) -> bool {
        self.attr & (attr::S | attr::CODE | attr::DC) == (attr::S | attr::DC)
    }
    /// D/B bit.
    pub fn big(&self) -> bool {
        self.attr & attr::DB != 0
    }
    /// L bit.
    pub fn long(&self) -> bool {
        self.attr & attr::L != 0
    }
}

/// GDTR/IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DescTable {
    /// Base linear address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u32,
    /// Padding (keeps the layout explicit for generated code).
    pub _pad: u32,
}

/// RFLAGS bits.
pub mod flags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Always 1.
    pub const FIXED1: u64 = 1 << 1;
    /// Parity.
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry.
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Trap (single-step).
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level (2 bits).
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u64 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u64 = 1 << 20;
    /// CPUID available.
    pub const ID: u64 = 1 << 21;
    /// The six arithmetic status flags.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
    /// Every flag software can ever set.
    pub const ALL: u64 = ARITH | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
}

/// CR0 bits.
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// Emulation.
    pub const EM: u64 = 1 << 2;
    /// Task switched.
    pub const TS: u64 = 1 << 3;
    /// Extension type (always 1).
    pub const ET: u64 = 1 << 4;
    /// Numeric error.
    pub const NE: u64 = 1 << 5;
    /// Write protect.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u64 = 1 << 0;
    /// Protected-mode virtual interrupts.
    pub const PVI: u64 = 1 << 1;
    /// Time stamp disable.
    pub const TSD: u64 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// Page size extensions.
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Machine check enable.
    pub const MCE: u64 = 1 << 6;
    /// Page global enable.
    pub const PGE: u64 = 1 << 7;
    /// Performance counter enable.
    pub const PCE: u64 = 1 << 8;
    /// OS supports FXSAVE/FXRSTOR.
    pub const OSFXSR: u64 = 1 << 9;
    /// OS supports unmasked SIMD exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// User-mode instruction prevention.
    pub const UMIP: u64 = 1 << 11;
    /// FSGSBASE instructions.
    pub const FSGSBASE: u64 = 1 << 16;
    /// PCID enable.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE enable.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Supervisor-mode execution prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-mode access prevention.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user-mode pages (IA-32e paging; RDPKRU/WRPKRU).
    pub const PKE: u64 = 1 << 22;
}

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
}

/// The operating mode, derived from CR0, EFER, RFLAGS.VM and CS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real-address mode.
    Real,
    /// Virtual-8086 mode.
    V86,
    /// Protected mode (legacy, 16- or 32-bit code by CS.D).
    Protected,
    /// Long mode, compatibility sub-mode.
    Compat,
    /// Long mode, 64-bit code.
    Long64,
}

/// Model-specific registers the CPU itself owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Msrs {
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// STAR.
    pub star: u64,
    /// LSTAR.
    pub lstar: u64,
    /// CSTAR.
    pub cstar: u64,
    /// SFMASK.
    pub sfmask: u64,
    /// KERNEL_GS_BASE.
    pub kernel_gs_base: u64,
    /// IA32_TSC_AUX.
    pub tsc_aux: u64,
    /// IA32_TSC_ADJUST-style offset: guest TSC = machine TSC + this.
    pub tsc_offset: u64,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// Fixed-range MTRRs (0x250, 0x258, 0x259, 0x268-0x26F).
    pub mtrr_fixed: [u64; 11],
    /// Variable-range MTRR base/mask pairs (8 pairs).
    pub mtrr_var: [u64; 16],
    /// IA32_FEATURE_CONTROL.
    pub feature_control: u64,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
}

/// Which vendor's CPUs Ferrite copies where the SDM and the APM leave a result undefined: arithmetic
/// flags the manuals call undefined (MUL, DIV, shifts and rotates by more than one, BCD adjustments,
/// BSF/BSR/TZCNT/LZCNT, BMI), and a few corner cases (a 32-bit-address REP with a zero count). The
/// differential tests run with the host's vendor, whose CPU is the oracle; a machine follows Intel by
/// default, as its CPUID vendor string says, so a guest behaves the same on every host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Quirks {
    /// Intel Core (what Ferrite's CPUID presents).
    #[default]
    Intel = 0,
    /// AMD Zen.
    Amd = 1,
}

impl Quirks {
    /// The vendor of the CPU this process runs on (Intel for any vendor but AMD and Hygon).
    pub fn host() -> Quirks {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID leaf 0 exists on every x86-64 CPU and has no side effects.
            let r = core::arch::x86_64::__cpuid(0);
            let mut v = [0u8; 12];
            v[..4].copy_from_slice(&r.ebx.to_le_bytes());
            v[4..8].copy_from_slice(&r.edx.to_le_bytes());
            v[8..].copy_from_slice(&r.ecx.to_le_bytes());
            if &v == b"AuthenticAMD" || &v == b"HygonGenuine" {
                return Quirks::Amd;
            }
        }
        Quirks::Intel
    }

    /// Parses `intel`, `amd` or `host`.
    pub fn parse(s: &str) -> Option<Quirks> {
        match s {
            "intel" => Some(Quirks::Intel),
            "amd" => Some(Quirks::Amd),
            "host" => Some(Quirks::host()),
            _ => None,
        }
    }
}

/// Complete architectural state of one CPU.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct CpuState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15.
    pub gpr: [u64; 16],
    /// Instruction pointer (offset in CS).
    pub rip: u64,
    /// RFLAGS: complete whenever `lazy` has nothing pending, which is everywhere outside the
    /// JIT's block runner (`crate::lazyflags`).
    pub rflags: u64,
    /// Retired-instruction counter (exact; the basis of virtual time).
    pub icount: u64,
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [Segment; 6],
    /// LDTR.
    pub ldtr: Segment,
    /// Task register.
    pub tr: Segment,
    /// GDTR.
    pub gdtr: DescTable,
    /// IDTR.
    pub idtr: DescTable,
    /// CR0.
    pub cr0: u64,
    /// CR2 (page-fault linear address).
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8 / task priority (shadowed to the local APIC by the machine).
    pub cr8: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// DR0-DR3, DR6, DR7 (index 4/5 alias 6/7).
    pub dr: [u64; 8],
    /// XCR0.
    pub xcr0: u64,
    /// Current privilege level.
    pub cpl: u8,
    /// Halted (HLT) until an interrupt.
    pub halted: bool,
    /// An NMI is being handled (blocks further NMIs until IRET).
    pub nmi_blocked: bool,
    /// Whose behaviour the CPU follows where the architecture leaves results undefined (a model
    /// setting, not guest state: it survives reset and is kept in snapshots like the rest).
    pub quirks: Quirks,
    /// MONITOR has armed the address-range monitor (cleared by MWAIT).
    pub monitor_armed: bool,
    /// Padding.
    pub _pad: [u8; 3],
    /// Interrupts are inhibited while `icount` equals this value (STI / MOV SS shadow).
    pub irq_shadow_icount: u64,
    /// A20 mask applied to every physical address (all ones when A20 is enabled).
    pub a20_mask: u64,
    /// Model-specific registers.
    pub msr: Msrs,
    /// State of the deterministic RDRAND/RDSEED generator.
    pub rng_state: u64,
    /// x87, MMX and SSE state (the FXSAVE image's contents, unpacked).
    pub fpu: FpuState,
    /// The vector registers beyond XMM0-15's low 128 bits (AVX, and room for AVX-512).
    pub vec: VecState,
    /// The CPU model: CPUID, which instructions exist, the vendor's differences (a model setting, not
    /// guest state: it survives reset). Set it before the first instruction is decoded: the
    /// interpreter gates instructions by it at decode time.
    pub model: crate::model::CpuModel,
    /// PKRU: for each protection key i, access-disable (bit 2i) and write-disable (bit 2i+1) of
    /// user-mode pages with that key (CR4.PKE, IA-32e paging); XSAVE component 9.
    pub pkru: u32,
    /// The JIT's lazy flag state between two linked translated blocks (`crate::lazyflags`): never
    /// pending outside its block runner, so no other reader sees it (not saved in snapshots, not
    /// hashed).
    pub lazy: crate::lazyflags::LazyFlags,
}

/// The vector register file beyond [`FpuState::xmm`], laid out as the XSAVE components that hold it, so
/// that XSAVE/XRSTOR copy fields and AVX-512 needs no change of layout:
///
/// | register bits | field | XSAVE component |
/// |---|---|---|
/// | 127:0 of (X/Y/Z)MM0-15 | [`FpuState::xmm`] | 1 (SSE) |
/// | 255:128 of YMM0-15 | [`VecState::ymm_hi`] | 2 (YMM_Hi128) |
/// | 511:256 of ZMM0-15 | [`VecState::zmm_hi256`] | 6 (ZMM_Hi256) |
/// | 511:0 of ZMM16-31 | [`VecState::hi16_zmm`] | 7 (Hi16_ZMM) |
/// | k0-k7 | [`VecState::k`] | 5 (opmask) |
///
/// Ferrite implements AVX/AVX2 today (XCR0 components 0-2); the AVX-512 fields exist so that a VEX
/// instruction can zero "bits MAXVL-1:128" of its destination exactly as on a CPU with AVX-512, and stay
/// zero until EVEX instructions are implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct VecState {
    /// Bits 255:128 of YMM0-YMM15.
    pub ymm_hi: [u128; 16],
    /// Bits 511:256 of ZMM0-ZMM15 (low 128 bits first).
    pub zmm_hi256: [[u128; 2]; 16],
    /// ZMM16-ZMM31, all 512 bits (low 128 bits first).
    pub hi16_zmm: [[u128; 4]; 16],
    /// Opmask registers k0-k7.
    pub k: [u64; 8],
}

impl VecState {
    /// Sets bits MAXVL-1:128 of vector register `i` (0-15) to zero: what every VEX.128 write does to its
    /// destination, and VZEROUPPER to every register.
    #[inline]
    pub fn clear_above_128(&mut self, i: usize) {
        let i = i & 15;
        self.ymm_hi[i] = 0;
        self.zmm_hi256[i] = [0; 2];
    }

    /// Sets bits MAXVL-1:256 of vector register `i` (0-15) to zero (a VEX.256 write).
    #[inline]
    pub fn clear_above_256(&mut self, i: usize) {
        self.zmm_hi256[i & 15] = [0; 2];
    }
}

/// x87/MMX/SSE register state. The x87 registers are stored as 80-bit values in physical register order
/// (ST(i) = `st[(top + i) & 7]`); MMX registers alias their low 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct FpuState {
    /// Physical x87 registers R0-R7, 80-bit values in the low 10 bytes (little-endian) of each u128.
    pub st: [u128; 8],
    /// XMM0-XMM15.
    pub xmm: [u128; 16],
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word (TOP in bits 11-13).
    pub fsw: u16,
    /// x87 tag word, full 2-bit form (00 valid, 01 zero, 10 special, 11 empty).
    pub ftw: u16,
    /// Last x87 opcode (11 bits).
    pub fop: u16,
    /// MXCSR.
    pub mxcsr: u32,
    /// Padding.
    pub _pad: u32,
    /// Last x87 instruction pointer (offset) and its CS selector.
    pub fip: u64,
    /// Last x87 data pointer (offset) and its DS selector.
    pub fdp: u64,
    /// CS selector of the last x87 instruction.
    pub fcs: u16,
    /// DS selector of the last x87 data operand.
    pub fds: u16,
    /// Padding.
    pub _pad2: u32,
}

impl Default for FpuState {
    fn default() -> Self {
        // Power-on state (SDM vol. 3 table 9-1): FCW 0x0040, FTW all empty, MXCSR 0x1F80.
        FpuState {
            st: [0; 8],
            xmm: [0; 16],
            fcw: 0x0040,
            fsw: 0,
            ftw: 0xffff,
            fop: 0,
            mxcsr: 0x1f80,
            _pad: 0,
            fip: 0,
            fdp: 0,
            fcs: 0,
            fds: 0,
            _pad2: 0,
        }
    }
}

impl Default for CpuState {
    fn default() -> Self {
        let mut s = CpuState {
            gpr: [0; 16],
            rip: 0,
            rflags: flags::FIXED1,
            icount: 0,
            seg: [Segment::default(); 6],
            ldtr: Segment::default(),
            tr: Segment::default(),
            gdtr: DescTable::default(),
            idtr: DescTable::default(),
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            dr: [0; 8],
            xcr0: 1,
            cpl: 0,
            halted: false,
            nmi_blocked: false,
            quirks: Quirks::Intel,
            monitor_armed: false,
            _pad: [0; 3],
            irq_shadow_icount: u64::MAX,
            a20_mask: !0,
            msr: Msrs::default(),
            rng_state: 0x243f_6a88_85a3_08d3,
            fpu: FpuState::default(),
            vec: VecState::default(),
            model: crate::model::CpuModel::ferrite(),
            pkru: 0,
            lazy: crate::lazyflags::LazyFlags::NONE,
        };
        s.reset();
        s
    }
}

impl CpuState {
    /// A CPU of `model` in its power-on state, following the model vendor's quirks.
    pub fn with_model(model: crate::model::CpuModel) -> CpuState {
        let mut s = CpuState { model, quirks: model.vendor.quirks(), ..CpuState::default() };
        s.reset();
        s
    }

    /// Puts the CPU in its power-on/RESET state (Intel SDM vol. 3 table 9-1): real mode, CS:IP =
    /// F000:FFF0 with CS base 0xFFFF0000, EDX = family/model/stepping signature.
    pub fn reset(&mut self) {
        self.gpr = [0; 16];
        self.gpr[2] = self.model.signature as u64;
        self.rip = 0xfff0;
        self.rflags = flags::FIXED1;
        for s in &mut self.seg {
            *s = Segment::real(0);
        }
        self.seg[Seg::Cs as usize] = Segment {
            selector: 0xf000,
            attr: attr::P | attr::S | attr::CODE | attr::RW | attr::ACCESSED,
            limit: 0xffff,
            base: 0xffff_0000,
        };
        self.ldtr = Segment { selector: 0, attr: attr::P | 2, limit: 0xffff, base: 0 };
        self.tr = Segment { selector: 0, attr: attr::P | 0xb, limit: 0xffff, base: 0 };
        self.gdtr = DescTable { base: 0, limit: 0xffff, _pad: 0 };
        self.idtr = DescTable { base: 0, limit: 0xffff, _pad: 0 };
        self.cr0 = cr0::ET | cr0::CD | cr0::NW;
        self.cr2 = 0;
        self.cr3 = 0;
        self.cr4 = 0;
        self.cr8 = 0;
        self.efer = 0;
        self.dr = [0, 0, 0, 0, 0xffff_0ff0, 0x400, 0xffff_0ff0, 0x400];
        self.xcr0 = 1;
        self.fpu = FpuState::default();
        // RESET clears the upper halves too (SDM vol. 3 table 9-1: YMM/ZMM registers 0; INIT keeps them,
        // but Ferrite's reset path is RESET).
        self.vec = VecState::default();
        self.pkru = 0;
        self.cpl = 0;
        self.halted = false;
        self.nmi_blocked = false;
        self.monitor_armed = false;
        self.irq_shadow_icount = u64::MAX;
        self.a20_mask = !0;
        self.msr = Msrs {
            apic_base: 0xfee0_0000 | (1 << 11) | (1 << 8),
            pat: 0x0007_0406_0007_0406,
            misc_enable: 1,
            ..Msrs::default()
        };
    }

    /// The current operating mode.
    #[inline]
    pub fn mode(&self) -> Mode {
        if self.cr0 & cr0::PE == 0 {
            Mode::Real
        } else if self.efer & efer::LMA != 0 {
            if self.seg[Seg::Cs as usize].long() { Mode::Long64 } else { Mode::Compat }
        } else if self.rflags & flags::VM != 0 {
            Mode::V86
        } else {
            Mode::Protected
        }
    }

    /// Default code size in bits (16, 32 or 64) for decoding.
    #[inline]
    pub fn code_bits(&self) -> u32 {
        match self.mode() {
            Mode::Long64 => 64,
            Mode::Real | Mode::V86 => 16,
            _ => {
                if self.seg[Seg::Cs as usize].big() {
                    32
                } else {
                    16
                }
            }
        }
    }

    /// Stack address size in bytes (2, 4 or 8).
    #[inline]
    pub fn stack_size(&self) -> u32 {
        match self.mode() {
            Mode::Long64 => 8,
            Mode::Real | Mode::V86 => 2,
            _ => {
                if self.seg[Seg::Ss as usize].big() {
                    4
                } else {
                    2
                }
            }
        }
    }

    /// Segment register `s`.
    #[inline]
    pub fn sreg(&self, s: Seg) -> &Segment {
        &self.seg[s as usize]
    }

    /// Segment register `s`, mutable.
    #[inline]
    pub fn sreg_mut(&mut self, s: Seg) -> &mut Segment {
        &mut self.seg[s as usize]
    }

    /// Whether paging is on.
    #[inline]
    pub fn paging(&self) -> bool {
        self.cr0 & cr0::PG != 0
    }

    /// The IOPL field of RFLAGS.
    #[inline]
    pub fn iopl(&self) -> u8 {
        ((self.rflags & flags::IOPL) >> 12) as u8
    }

    /// A one-screen register dump for diagnostics.
    pub fn dump(&self) -> String {
        use std::fmt::Write;
        let names = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
            "r14", "r15",
        ];
        let mut s = String::new();
        for (i, n) in names.iter().enumerate() {
            let _ = write!(s, "{n:>3}={:016x}{}", self.gpr[i], if i % 4 == 3 { "\n" } else { " " });
        }
        let _ = writeln!(
            s,
            "rip={:016x} rflags={:08x} cpl={} mode={:?} icount={}",
            self.rip,
            self.rflags,
            self.cpl,
            self.mode(),
            self.icount
        );
        for sg in Seg::ALL {
            let r = self.sreg(sg);
            let _ = writeln!(
                s,
                " {}={:04x} base={:016x} limit={:08x} attr={:04x}",
                sg.name(),
                r.selector,
                r.base,
                r.limit,
                r.attr
            );
        }
        let _ = writeln!(
            s,
            "cr0={:08x} cr2={:016x} cr3={:016x} cr4={:08x} efer={:x}",
            self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        );
        let _ = write!(
            s,
            "gdt={:x}/{:x} idt={:x}/{:x} ldtr={:04x} tr={:04x}",
            self.gdtr.base,
            self.gdtr.limit,
            self.idtr.base,
            self.idtr.limit,
            self.ldtr.selector,
            self.tr.selector
        );
        s
    }
}
