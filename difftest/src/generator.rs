//! Random instruction-sequence generator.
//!
//! Encodings are enumerated from iced-x86's tables: every [`Code`] whose mnemonic belongs to a [`Family`],
//! that is valid in the mode, legacy- or VEX-encoded, whose CPUID requirements the host meets, and whose
//! operand kinds the generator knows how to fill (see [`Generator::codes`]). Each case is a deterministic
//! function of `(seed, case index)` and the host's feature set.
//!
//! Operands: registers are biased away from RSP (the stack pointer must stay usable) and their initial values
//! toward edge values (0, 1, -1, sign boundaries, small shift counts). Memory operands are aimed into a data
//! region by choosing base/index registers and displacement together and *pinning* the registers' initial
//! values; registers already written by an earlier instruction of the sequence are not used as address
//! registers (when that is impossible the operand may point elsewhere and fault, and the fault is compared).

use crate::case::{
    Case, DATA_ADDR, DATA_SIZE, LOW_DATA_ADDR, LOW_DATA_SIZE, MemRegion, Mode, PAGE_SIZE, RegState, gpr,
};
use crate::hostcpu::HostFeatures;
use crate::rng::Rng;
use iced_x86::{
    Code, Encoder, EncodingKind, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpCodeOperandKind as K, OpKind, Register, RepPrefixKind,
};
use std::collections::BTreeMap;
use std::fmt;

/// A group of related instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// ADD ADC SUB SBB AND OR XOR CMP TEST INC DEC NEG NOT.
    Alu,
    /// ROL ROR RCL RCR SHL SAL SHR SAR SHLD SHRD (immediate, 1 and CL counts).
    Shift,
    /// MUL IMUL DIV IDIV (#DE allowed).
    MulDiv,
    /// DAA DAS AAA AAS AAM AAD (compatibility mode only).
    Bcd,
    /// BT BTS BTR BTC BSF BSR.
    BitOps,
    /// ANDN BEXTR BLSI BLSMSK BLSR (BMI1).
    Bmi1,
    /// BZHI MULX PDEP PEXT RORX SARX SHLX SHRX (BMI2).
    Bmi2,
    /// POPCNT LZCNT TZCNT.
    BitCount,
    /// ADCX ADOX.
    Adx,
    /// MOVBE.
    Movbe,
    /// CMOVcc and SETcc.
    CondMove,
    /// XCHG XADD CMPXCHG CMPXCHG8B CMPXCHG16B.
    Exchange,
    /// MOVSX MOVZX MOVSXD.
    MovExt,
    /// LEA.
    Lea,
    /// MOVS CMPS SCAS LODS STOS, with and without REP/REPE/REPNE.
    String,
    /// PUSH POP PUSHF POPF (POPF only changes arithmetic flags), PUSHA POPA (compatibility mode).
    Stack,
    /// CBW CWDE CDQE CWD CDQ CQO.
    Convert,
    /// BSWAP.
    Bswap,
    /// SAHF LAHF CLC STC CMC CLD STD.
    FlagOps,
    /// INTO BOUND (compatibility mode only).
    Legacy,
    /// x87: arithmetic, loads/stores of every memory format, compares (FCOM/FUCOM/FCOMI/FTST/FXAM), FCMOVcc,
    /// constants, transcendentals, FXCH/FFREE/FINCSTP/FDECSTP, control/status stores (not FLDCW or the
    /// environment/state images).
    X87,
    /// MMX, and the SSE/SSE2 instructions on MMX registers.
    Mmx,
    /// SSE and SSE2 on XMM registers: floating point and integer.
    Sse,
    /// SSE3 (FISTTP is in [`Family::X87`]).
    Sse3,
    /// SSSE3 (XMM and MMX forms).
    Ssse3,
    /// SSE4.1.
    Sse41,
    /// SSE4.2: PCMPESTRI/M, PCMPISTRI/M, PCMPGTQ, CRC32.
    Sse42,
    /// AES-NI.
    Aes,
    /// PCLMULQDQ.
    Pclmul,
    /// AVX (VEX-encoded; the VEX.128 AES and PCLMULQDQ forms too).
    Avx,
    /// AVX2.
    Avx2,
    /// FMA.
    Fma,
    /// F16C.
    F16c,
    /// LDS LES LSS LFS LGS: far pointers whose selector is one of Linux's user-visible GDT selectors
    /// (or null, a kernel one, the TSS, an LDT or out-of-limit one), so every SDM check is exercised.
    FarPtr,
    /// System instructions a user-mode guest can reach, each of which faults at CPL 3 or where the CPU
    /// lacks it: RDPMC (#GP with CR4.PCE clear), MONITOR/MWAIT (#UD at CPL 3), SERIALIZE and INVPCID
    /// (#UD where absent, else #GP at CPL 3). The interpreter runs the `host-compatible` model, so it
    /// must raise exactly what this CPU raises. RDPID is left out: it returns IA32_TSC_AUX, which
    /// Linux sets to the number of whichever host CPU the sandbox runs on (unit tests cover it).
    Sys,
}

impl Family {
    /// Every family: [`Family::INTEGER`], [`Family::FP_SIMD`], then [`Family::VEX`].
    pub const ALL: [Family; 35] = [
        Family::Alu,
        Family::Shift,
        Family::MulDiv,
        Family::Bcd,
        Family::BitOps,
        Family::Bmi1,
        Family::Bmi2,
        Family::BitCount,
        Family::Adx,
        Family::Movbe,
        Family::CondMove,
        Family::Exchange,
        Family::MovExt,
        Family::Lea,
        Family::String,
        Family::Stack,
        Family::Convert,
        Family::Bswap,
        Family::FlagOps,
        Family::Legacy,
        Family::X87,
        Family::Mmx,
        Family::Sse,
        Family::Sse3,
        Family::Ssse3,
        Family::Sse41,
        Family::Sse42,
        Family::Aes,
        Family::Pclmul,
        Family::Avx,
        Family::Avx2,
        Family::Fma,
        Family::F16c,
        Family::FarPtr,
        Family::Sys,
    ];

    /// The VEX-encoded vector families (x86-64-v3): their cases carry an [`crate::FpState`] with YMM upper
    /// halves. Selected with `--families vex`.
    pub const VEX: [Family; 4] = [Family::Avx, Family::Avx2, Family::Fma, Family::F16c];

    /// The families with x87, MMX or SSE instructions: their cases carry an [`crate::FpState`].
    pub const FP_SIMD: [Family; 9] = [
        Family::X87,
        Family::Mmx,
        Family::Sse,
        Family::Sse3,
        Family::Ssse3,
        Family::Sse41,
        Family::Sse42,
        Family::Aes,
        Family::Pclmul,
    ];

    /// The general-purpose-register families: the default set ([`GenConfig::default`]), whose output for a
    /// seed is pinned by the generator's golden test.
    pub const INTEGER: [Family; 20] = [
        Family::Alu,
        Family::Shift,
        Family::MulDiv,
        Family::Bcd,
        Family::BitOps,
        Family::Bmi1,
        Family::Bmi2,
        Family::BitCount,
        Family::Adx,
        Family::Movbe,
        Family::CondMove,
        Family::Exchange,
        Family::MovExt,
        Family::Lea,
        Family::String,
        Family::Stack,
        Family::Convert,
        Family::Bswap,
        Family::FlagOps,
        Family::Legacy,
    ];

    /// Lower-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Family::Alu => "alu",
            Family::Shift => "shift",
            Family::MulDiv => "muldiv",
            Family::Bcd => "bcd",
            Family::BitOps => "bitops",
            Family::Bmi1 => "bmi1",
            Family::Bmi2 => "bmi2",
            Family::BitCount => "bitcount",
            Family::Adx => "adx",
            Family::Movbe => "movbe",
            Family::CondMove => "condmove",
            Family::Exchange => "exchange",
            Family::MovExt => "movext",
            Family::Lea => "lea",
            Family::String => "string",
            Family::Stack => "stack",
            Family::Convert => "convert",
            Family::Bswap => "bswap",
            Family::FlagOps => "flagops",
            Family::Legacy => "legacy",
            Family::X87 => "x87",
            Family::Mmx => "mmx",
            Family::Sse => "sse",
            Family::Sse3 => "sse3",
            Family::Ssse3 => "ssse3",
            Family::Sse41 => "sse41",
            Family::Sse42 => "sse42",
            Family::Aes => "aes",
            Family::Pclmul => "pclmul",
            Family::Avx => "avx",
            Family::Avx2 => "avx2",
            Family::Fma => "fma",
            Family::F16c => "f16c",
            Family::FarPtr => "farptr",
            Family::Sys => "sys",
        }
    }

    /// Whether the family's cases carry FP/SIMD state.
    pub fn is_fp_simd(self) -> bool {
        Family::FP_SIMD.contains(&self) || Family::VEX.contains(&self)
    }

    /// The mnemonics that make up an integer family (empty for the FP/SIMD families, which are defined by
    /// CPUID feature, see [`Family::of_code`]).
    pub fn mnemonics(self) -> &'static [Mnemonic] {
        use Mnemonic as M;
        match self {
            Family::Alu => &[
                M::Add,
                M::Adc,
                M::Sub,
                M::Sbb,
                M::And,
                M::Or,
                M::Xor,
                M::Cmp,
                M::Test,
                M::Inc,
                M::Dec,
                M::Neg,
                M::Not,
            ],
            Family::Shift => {
                &[M::Rol, M::Ror, M::Rcl, M::Rcr, M::Shl, M::Sal, M::Shr, M::Sar, M::Shld, M::Shrd]
            }
            Family::MulDiv => &[M::Mul, M::Imul, M::Div, M::Idiv],
            Family::Bcd => &[M::Daa, M::Das, M::Aaa, M::Aas, M::Aam, M::Aad],
            Family::BitOps => &[M::Bt, M::Bts, M::Btr, M::Btc, M::Bsf, M::Bsr],
            Family::Bmi1 => &[M::Andn, M::Bextr, M::Blsi, M::Blsmsk, M::Blsr],
            Family::Bmi2 => &[M::Bzhi, M::Mulx, M::Pdep, M::Pext, M::Rorx, M::Sarx, M::Shlx, M::Shrx],
            Family::BitCount => &[M::Popcnt, M::Lzcnt, M::Tzcnt],
            Family::Adx => &[M::Adcx, M::Adox],
            Family::Movbe => &[M::Movbe],
            Family::CondMove => &[
                M::Cmovo,
                M::Cmovno,
                M::Cmovb,
                M::Cmovae,
                M::Cmove,
                M::Cmovne,
                M::Cmovbe,
                M::Cmova,
                M::Cmovs,
                M::Cmovns,
                M::Cmovp,
                M::Cmovnp,
                M::Cmovl,
                M::Cmovge,
                M::Cmovle,
                M::Cmovg,
                M::Seto,
                M::Setno,
                M::Setb,
                M::Setae,
                M::Sete,
                M::Setne,
                M::Setbe,
                M::Seta,
                M::Sets,
                M::Setns,
                M::Setp,
                M::Setnp,
                M::Setl,
                M::Setge,
                M::Setle,
                M::Setg,
            ],
            Family::Exchange => &[M::Xchg, M::Xadd, M::Cmpxchg, M::Cmpxchg8b, M::Cmpxchg16b],
            Family::MovExt => &[M::Movsx, M::Movzx, M::Movsxd],
            Family::Lea => &[M::Lea],
            Family::String => &[
                M::Movsb,
                M::Movsw,
                M::Movsd,
                M::Movsq,
                M::Cmpsb,
                M::Cmpsw,
                M::Cmpsd,
                M::Cmpsq,
                M::Scasb,
                M::Scasw,
                M::Scasd,
                M::Scasq,
                M::Lodsb,
                M::Lodsw,
                M::Lodsd,
                M::Lodsq,
                M::Stosb,
                M::Stosw,
                M::Stosd,
                M::Stosq,
            ],
            Family::Stack => &[
                M::Push,
                M::Pop,
                M::Pushf,
                M::Pushfd,
                M::Pushfq,
                M::Popf,
                M::Popfd,
                M::Popfq,
                M::Pusha,
                M::Pushad,
                M::Popa,
                M::Popad,
            ],
            Family::Convert => &[M::Cbw, M::Cwde, M::Cdqe, M::Cwd, M::Cdq, M::Cqo],
            Family::Bswap => &[M::Bswap],
            Family::FlagOps => &[M::Sahf, M::Lahf, M::Clc, M::Stc, M::Cmc, M::Cld, M::Std],
            Family::Legacy => &[M::Into, M::Bound],
            Family::FarPtr => &[M::Lds, M::Les, M::Lss, M::Lfs, M::Lgs],
            Family::Sys => &[M::Rdpmc, M::Monitor, M::Mwait, M::Serialize, M::Invpcid, M::Rdpkru, M::Wrpkru],
            Family::X87
            | Family::Mmx
            | Family::Sse
            | Family::Sse3
            | Family::Ssse3
            | Family::Sse41
            | Family::Sse42
            | Family::Aes
            | Family::Pclmul
            | Family::Avx
            | Family::Avx2
            | Family::Fma
            | Family::F16c => &[],
        }
    }

    /// Whether the family can appear in `mode` at all.
    pub fn valid_in(self, mode: Mode) -> bool {
        !matches!((self, mode), (Family::Bcd | Family::Legacy, Mode::Long64))
    }

    /// The integer family containing a mnemonic, if any.
    pub fn of_mnemonic(m: Mnemonic) -> Option<Family> {
        Family::INTEGER.into_iter().chain([Family::FarPtr, Family::Sys]).find(|f| f.mnemonics().contains(&m))
    }

    /// The family of an encoding: FP/SIMD families by the encoding's CPUID features (legacy encodings only),
    /// integer families by mnemonic.
    pub fn of_code(code: Code) -> Option<Family> {
        fp_family_of(code).or_else(|| vex_family_of(code)).or_else(|| Family::of_mnemonic(code.mnemonic()))
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// FP/SIMD family of a legacy encoding, from its CPUID features (see [`Family::of_code`]).
fn fp_family_of(code: Code) -> Option<Family> {
    use iced_x86::CpuidFeature as F;
    let op = code.op_code();
    if op.encoding() != EncodingKind::Legacy {
        return None;
    }
    let feats = code.cpuid_features();
    let has = |f: F| feats.contains(&f);
    let kinds = op.op_kinds();
    let x87_operand = kinds.iter().any(|k| matches!(k, K::st0 | K::sti_opcode));
    if has(F::FPU) || has(F::FPU287) || has(F::FPU387) || x87_operand || code.mnemonic() == Mnemonic::Fisttp {
        return Some(Family::X87);
    }
    let mm_operand = kinds.iter().any(|k| matches!(k, K::mm_reg | K::mm_rm | K::mm_or_mem));
    let fam = if has(F::AES) {
        Family::Aes
    } else if has(F::PCLMULQDQ) {
        Family::Pclmul
    } else if has(F::SSE4_2) {
        Family::Sse42
    } else if has(F::SSE4_1) {
        Family::Sse41
    } else if has(F::SSSE3) {
        Family::Ssse3
    } else if has(F::SSE3) {
        Family::Sse3
    } else if has(F::MMX) || ((has(F::SSE) || has(F::SSE2)) && mm_operand) {
        Family::Mmx
    } else if has(F::SSE) || has(F::SSE2) {
        Family::Sse
    } else {
        return None;
    };
    Some(fam)
}

/// VEX family of an encoding: AVX, AVX2, FMA or F16C by its CPUID features (the same set the
/// interpreter's AVX family handles, `cpu::exec::avx::is_avx_code`).
fn vex_family_of(code: Code) -> Option<Family> {
    use iced_x86::CpuidFeature as F;
    if !cpu::exec::avx::is_avx_code(code) {
        return None;
    }
    let feats = code.cpuid_features();
    Some(if feats.contains(&F::FMA) {
        Family::Fma
    } else if feats.contains(&F::F16C) {
        Family::F16c
    } else if feats.contains(&F::AVX2) {
        Family::Avx2
    } else {
        Family::Avx
    })
}

/// The VEX operand kinds the generator fills (vector registers, VEX.vvvv, the is4 register, and the VSIB
/// memory operands of the gathers, see [`Builder::gather_insn`]).
fn vex_operand_supported(k: K) -> bool {
    matches!(
        k,
        K::ymm_reg
            | K::ymm_rm
            | K::ymm_or_mem
            | K::xmm_vvvv
            | K::ymm_vvvv
            | K::xmm_is4
            | K::ymm_is4
            | K::mem_vsib32x
            | K::mem_vsib64x
            | K::mem_vsib32y
            | K::mem_vsib64y
    )
}

/// The VSIB operand of a gather encoding: (index element bits, index register is a YMM register).
fn vsib_kind(code: Code) -> Option<(u32, bool)> {
    code.op_code().op_kinds().iter().find_map(|&k| match k {
        K::mem_vsib32x => Some((32, false)),
        K::mem_vsib64x => Some((64, false)),
        K::mem_vsib32y => Some((32, true)),
        K::mem_vsib64y => Some((64, true)),
        _ => None,
    })
}

/// A vector register for a VEX operand kind, if `k` is one.
fn vex_register(rng: &mut Rng, mode: Mode, k: K) -> Option<Register> {
    let n = if mode == Mode::Long64 { 16 } else { 8 };
    let i = rng.below(n) as usize;
    match k {
        K::xmm_vvvv | K::xmm_is4 => Some(xmm_register(i)),
        K::ymm_reg | K::ymm_rm | K::ymm_or_mem | K::ymm_vvvv | K::ymm_is4 => {
            Some(Register::try_from(Register::YMM0 as usize + i).unwrap_or(Register::YMM0))
        }
        _ => None,
    }
}

/// Encodings of the FP/SIMD families that the generator leaves out: the FPU environment and state images
/// (they hold FIP/FDP/FCS/FDS, which are not modelled in the comparison), FLDCW (a random control word would
/// unmask x87 exceptions), the WAIT-prefixed forms, the memory-ordering and cache hints, and the
/// implicit-RDI stores.
fn fp_excluded(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fxsave
            | M::Fxsave64
            | M::Fxrstor
            | M::Fxrstor64
            | M::Fsave
            | M::Fnsave
            | M::Frstor
            | M::Fldenv
            | M::Fstenv
            | M::Fnstenv
            | M::Fldcw
            // WAIT-prefixed forms decode as WAIT + FN*: the FN* forms are generated instead.
            | M::Finit
            | M::Fclex
            | M::Fstcw
            | M::Fstsw
            | M::Feni
            | M::Fdisi
            | M::Fsetpm
            | M::Maskmovq
            | M::Maskmovdqu
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Lfence
            | M::Sfence
            | M::Mfence
            | M::Pause
    )
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let l = s.to_ascii_lowercase();
        Family::ALL.into_iter().find(|f| f.name() == l).ok_or_else(|| {
            let names: Vec<_> = Family::ALL.iter().map(|f| f.name()).collect();
            format!("unknown family `{s}` (expected one of {})", names.join(", "))
        })
    }
}

/// Generator settings.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Instructions per case: uniformly 1..=max_insns.
    pub max_insns: usize,
    /// Families to draw from.
    pub families: Vec<Family>,
    /// Modes to draw from.
    pub modes: Vec<Mode>,
    /// Percentage of cases that mix instructions from all selected families (the rest use one family each).
    pub mixed_percent: u64,
    /// Give compatibility-mode cases the low data region at [`LOW_DATA_ADDR`] for 16-bit addressing. Needs
    /// `vm.mmap_min_addr <= LOW_DATA_ADDR` on the host running the native engine; without it, 16-bit
    /// addresses still aim at that range but fault (#PF), which is compared like any other outcome.
    pub low_region: bool,
    /// Only encodings of these mnemonics (empty: every one of the families).
    pub mnemonics: Vec<Mnemonic>,
}

/// Whether this host lets a process map the low data region (`vm.mmap_min_addr <= LOW_DATA_ADDR`).
pub fn host_allows_low_region() -> bool {
    std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|v| v <= LOW_DATA_ADDR)
}

impl Default for GenConfig {
    /// The integer families ([`Family::INTEGER`]), both modes, 8 instructions at most.
    fn default() -> Self {
        GenConfig {
            max_insns: 8,
            families: Family::INTEGER.to_vec(),
            modes: Mode::ALL.to_vec(),
            mixed_percent: 25,
            low_region: host_allows_low_region(),
            mnemonics: Vec::new(),
        }
    }
}

/// A generated case with its provenance.
#[derive(Clone, Debug)]
pub struct GeneratedCase {
    /// Index of the case within the run.
    pub index: u64,
    /// The family, or `None` for a mixed-family case.
    pub family: Option<Family>,
    /// The case itself.
    pub case: Case,
    /// Family of each instruction, in order.
    pub insn_families: Vec<Family>,
    /// Byte offset of each instruction within `case.code`.
    pub insn_offsets: Vec<usize>,
}

/// Deterministic case generator (see the module documentation).
pub struct Generator {
    config: GenConfig,
    tables: BTreeMap<(Family, Mode), Vec<Code>>,
    skipped: Vec<(Family, String)>,
}

const GPR64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];
const GPR32: [Register; 16] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::ESP,
    Register::EBP,
    Register::ESI,
    Register::EDI,
    Register::R8D,
    Register::R9D,
    Register::R10D,
    Register::R11D,
    Register::R12D,
    Register::R13D,
    Register::R14D,
    Register::R15D,
];
const GPR16: [Register; 16] = [
    Register::AX,
    Register::CX,
    Register::DX,
    Register::BX,
    Register::SP,
    Register::BP,
    Register::SI,
    Register::DI,
    Register::R8W,
    Register::R9W,
    Register::R10W,
    Register::R11W,
    Register::R12W,
    Register::R13W,
    Register::R14W,
    Register::R15W,
];
const GPR8: [Register; 16] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::SPL,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
];
const GPR8_HIGH: [Register; 4] = [Register::AH, Register::CH, Register::DH, Register::BH];

fn xmm_register(i: usize) -> Register {
    Register::try_from(Register::XMM0 as usize + i).unwrap_or(Register::XMM0)
}

fn mm_register(i: usize) -> Register {
    Register::try_from(Register::MM0 as usize + i).unwrap_or(Register::MM0)
}

fn st_register(i: usize) -> Register {
    Register::try_from(Register::ST0 as usize + i).unwrap_or(Register::ST0)
}

/// Index (encoding order) of the 64-bit register containing `r`, if it is a GPR.
pub fn gpr_index(r: Register) -> Option<usize> {
    let full = r.full_register();
    GPR64.iter().position(|&g| g == full)
}

fn operand_supported(k: K) -> bool {
    matches!(
        k,
        K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_rm
            | K::r16_opcode
            | K::r32_reg
            | K::r32_rm
            | K::r32_opcode
            | K::r32_vvvv
            | K::r64_reg
            | K::r64_rm
            | K::r64_opcode
            | K::r64_vvvv
            | K::mem
            | K::al
            | K::cl
            | K::ax
            | K::eax
            | K::rax
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64
            | K::seg_rSI
            | K::es_rDI
            | K::seg_rDI
            | K::xmm_reg
            | K::xmm_rm
            | K::xmm_or_mem
            | K::mm_reg
            | K::mm_rm
            | K::mm_or_mem
            | K::st0
            | K::sti_opcode
    )
}

fn new_insn(code: Code) -> Instruction {
    let mut i = Instruction::default();
    i.set_code(code);
    i
}

fn is_popf(code: Code) -> bool {
    matches!(code, Code::Popfw | Code::Popfd | Code::Popfq)
}

fn is_string(code: Code) -> bool {
    Family::String.mnemonics().contains(&code.mnemonic())
        && code.op_code().op_kinds().iter().any(|k| matches!(k, K::seg_rSI | K::es_rDI | K::seg_rDI))
}

impl Generator {
    /// Builds the encoding tables for the host CPU. Families the host cannot run are left out and listed in
    /// [`Generator::skipped`].
    pub fn new(config: GenConfig) -> Self {
        Self::with_features(config, HostFeatures::detect())
    }

    /// Like [`Generator::new`] with an explicit feature set.
    pub fn with_features(config: GenConfig, host: HostFeatures) -> Self {
        let mut tables: BTreeMap<(Family, Mode), Vec<Code>> = BTreeMap::new();
        let mut unsupported_by_host: BTreeMap<Family, Vec<String>> = BTreeMap::new();
        for code in Code::values() {
            let op = code.op_code();
            if !op.is_instruction() || !matches!(op.encoding(), EncodingKind::Legacy | EncodingKind::VEX) {
                continue;
            }
            let Some(fam) = Family::of_code(code) else { continue };
            if !config.mnemonics.is_empty() && !config.mnemonics.contains(&code.mnemonic()) {
                continue;
            }
            if fam.is_fp_simd() && fp_excluded(code.mnemonic()) {
                continue;
            }
            // The system family is there to compare the faults of privileged instructions at CPL 3.
            if (op.is_privileged() && fam != Family::Sys)
                || op.is_input_output()
                || !op.op_kinds().iter().all(|&k| operand_supported(k) || vex_operand_supported(k))
            {
                continue;
            }
            let feats = code.cpuid_features();
            if let Some(missing) = feats.iter().find(|&&f| !host.supports(f)) {
                unsupported_by_host.entry(fam).or_default().push(format!("{code:?} needs {missing:?}"));
                continue;
            }
            for mode in Mode::ALL {
                let ok = match mode {
                    Mode::Long64 => op.mode64(),
                    Mode::Compat32 => op.mode32(),
                };
                // LAHF/SAHF in 64-bit mode need their own CPUID bit.
                let lahf = matches!(code.mnemonic(), Mnemonic::Lahf | Mnemonic::Sahf);
                if ok && fam.valid_in(mode) && !(lahf && mode == Mode::Long64 && !host.lahf64) {
                    tables.entry((fam, mode)).or_default().push(code);
                }
            }
        }
        let mut skipped = Vec::new();
        for &f in &config.families {
            let any = Mode::ALL.iter().any(|&m| tables.get(&(f, m)).is_some_and(|v| !v.is_empty()));
            if !any {
                let why = unsupported_by_host
                    .get(&f)
                    .map(|v| {
                        format!(
                            "host CPU lacks it: {}",
                            v.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                        )
                    })
                    .unwrap_or_else(|| "no usable encodings".into());
                skipped.push((f, why));
            }
        }
        Generator { config, tables, skipped }
    }

    /// Families requested but not generated, with the reason.
    pub fn skipped(&self) -> &[(Family, String)] {
        &self.skipped
    }

    /// The encodings used for a family in a mode.
    pub fn codes(&self, family: Family, mode: Mode) -> &[Code] {
        self.tables.get(&(family, mode)).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// The configuration.
    pub fn config(&self) -> &GenConfig {
        &self.config
    }

    fn families_for(&self, mode: Mode) -> Vec<Family> {
        self.config.families.iter().copied().filter(|&f| !self.codes(f, mode).is_empty()).collect()
    }

    /// Generates case `index` of the run with seed `seed`.
    pub fn generate(&self, seed: u64, index: u64) -> GeneratedCase {
        let mut rng = Rng::for_case(seed, index);
        let mut modes: Vec<Mode> = self.config.modes.clone();
        modes.retain(|&m| !self.families_for(m).is_empty());
        if modes.is_empty() {
            modes.push(Mode::Long64);
        }
        let mode = *rng.pick(&modes);
        let fams = self.families_for(mode);
        let family = if fams.is_empty() || (fams.len() > 1 && rng.chance(self.config.mixed_percent)) {
            None
        } else {
            Some(*rng.pick(&fams))
        };
        let n = 1 + rng.index(self.config.max_insns.max(1));
        let mut b = Builder::new(mode, &mut rng);
        let mut insn_families = Vec::new();
        let mut attempts = 0;
        while insn_families.len() < n && attempts < n * 20 && !fams.is_empty() {
            attempts += 1;
            let fam = family.unwrap_or_else(|| *b.rng.pick(&fams));
            let codes = self.codes(fam, mode);
            let code = *b.rng.pick(codes);
            if let Some(k) = b.emit(code, fam) {
                insn_families.extend(std::iter::repeat_n(fam, k));
                b.fp_used |= fam.is_fp_simd();
                b.vex_used |= Family::VEX.contains(&fam);
            }
        }
        let insn_offsets = b.offsets.clone();
        let case = b.finish(self.config.low_region);
        GeneratedCase { index, family, case, insn_families, insn_offsets }
    }
}

/// Per-case construction state.
struct Builder<'r> {
    rng: &'r mut Rng,
    mode: Mode,
    code: Vec<u8>,
    offsets: Vec<usize>,
    /// Initial values chosen so far (pinned registers).
    init: [Option<u64>; 16],
    /// Registers possibly modified by instructions emitted so far.
    written: u16,
    rflags: u64,
    info: InstructionInfoFactory,
    /// An FP/SIMD instruction was emitted: the case gets an initial FP state.
    fp_used: bool,
    /// A VEX instruction was emitted: the initial FP state gets random YMM upper halves.
    vex_used: bool,
    /// Initial memory contents chosen for FP/SIMD memory operands: (address, bytes).
    fills: Vec<(u64, Vec<u8>)>,
    /// Address the last memory operand was aimed at.
    last_target: u64,
    /// Vector registers possibly modified by instructions emitted so far (bit per XMM/YMM number).
    vwritten: u16,
    /// Initial vector register values chosen so far: (register number, low 128 bits, upper 128 bits).
    vpins: Vec<(usize, u128, u128)>,
}

/// Saved pinning state so a failed instruction leaves no trace.
#[derive(Clone, Copy)]
struct Snapshot {
    init: [Option<u64>; 16],
    fills: usize,
    vpins: usize,
}

fn edge_value(rng: &mut Rng) -> u64 {
    const EDGES: [u64; 22] = [
        0,
        1,
        2,
        3,
        0x7F,
        0x80,
        0xFF,
        0x100,
        0x7FFF,
        0x8000,
        0xFFFF,
        0x1_0000,
        0x7FFF_FFFF,
        0x8000_0000,
        0xFFFF_FFFF,
        0x1_0000_0000,
        0x7FFF_FFFF_FFFF_FFFF,
        0x8000_0000_0000_0000,
        u64::MAX,
        u64::MAX - 1,
        0x5555_5555_5555_5555,
        0xAAAA_AAAA_AAAA_AAAA,
    ];
    match rng.below(10) {
        0..=2 => *rng.pick(&EDGES),
        3 => rng.below(72), // shift/rotate/bit counts around the widths
        4 => (rng.below(72) as i64).wrapping_neg() as u64, // small negative
        5 => 1u64 << rng.below(64),
        6 => (1u64 << rng.below(64)).wrapping_sub(1),
        7 => rng.next_u64() as i8 as i64 as u64, // sign-extended byte
        8 => rng.next_u64() & rng.next_u64(),
        _ => rng.next_u64(),
    }
}

fn count_value(rng: &mut Rng) -> u64 {
    const COUNTS: [u64; 18] = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 255];
    if rng.chance(70) { *rng.pick(&COUNTS) } else { rng.below(256) }
}

/// Memory layout of the data region(s) a case uses.
struct Target {
    base: u64,
    size: u64,
}

impl<'r> Builder<'r> {
    fn new(mode: Mode, rng: &'r mut Rng) -> Self {
        let mut b = Builder {
            rng,
            mode,
            code: Vec::new(),
            offsets: Vec::new(),
            init: [None; 16],
            written: 0,
            rflags: 0,
            info: InstructionInfoFactory::new(),
            fp_used: false,
            vex_used: false,
            fills: Vec::new(),
            last_target: 0,
            vwritten: 0,
            vpins: Vec::new(),
        };
        // Stack pointer in the middle of the main data region (usually 8-aligned).
        let mut sp = (DATA_ADDR + 2 * PAGE_SIZE).wrapping_add(b.rng.range_i64(-256, 256) as u64);
        if b.rng.chance(90) {
            sp &= !7;
        }
        b.init[gpr::RSP] = Some(sp);
        b.rflags = 0x202 | (b.rng.next_u64() & 0x08D5);
        if b.rng.chance(15) {
            b.rflags |= 0x400; // DF
        }
        b
    }

    fn ip(&self) -> u64 {
        crate::case::CODE_ADDR + self.code.len() as u64
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot { init: self.init, fills: self.fills.len(), vpins: self.vpins.len() }
    }

    fn restore(&mut self, s: Snapshot) {
        self.init = s.init;
        self.fills.truncate(s.fills);
        self.vpins.truncate(s.vpins);
    }

    fn nregs(&self) -> usize {
        if self.mode == Mode::Long64 { 16 } else { 8 }
    }

    /// Chooses a register index for an explicit operand (RSP rarely).
    fn reg_index(&mut self) -> usize {
        loop {
            let i = self.rng.index(self.nregs());
            if i != gpr::RSP || self.rng.chance(3) {
                return i;
            }
        }
    }

    fn reg_of_size(&mut self, bits: u32) -> Register {
        if bits == 8 && self.rng.chance(20) {
            return *self.rng.pick(&GPR8_HIGH);
        }
        let i = self.reg_index();
        match bits {
            8 => {
                if self.mode == Mode::Compat32 && i >= 4 {
                    GPR8_HIGH[i - 4]
                } else {
                    GPR8[i]
                }
            }
            16 => GPR16[i],
            32 => GPR32[i],
            _ => GPR64[i],
        }
    }

    fn is_written(&self, i: usize) -> bool {
        self.written >> i & 1 == 1
    }

    /// Value of register `i` at the start of the case if it is still known at this point of the sequence.
    fn known(&self, i: usize) -> Option<u64> {
        if self.is_written(i) && i != gpr::RSP { None } else { self.init[i] }
    }

    /// Pins register `i` to `v` if it is unconstrained; returns false if it is already pinned or modified.
    fn pin(&mut self, i: usize, v: u64) -> bool {
        if self.init[i].is_some() || self.is_written(i) {
            return false;
        }
        let v = if self.mode == Mode::Compat32 { v & 0xFFFF_FFFF } else { v };
        self.init[i] = Some(v);
        true
    }

    fn region_for(&self, addr_bits: u32) -> Target {
        if addr_bits == 16 {
            Target { base: LOW_DATA_ADDR, size: LOW_DATA_SIZE }
        } else {
            Target { base: DATA_ADDR, size: DATA_SIZE }
        }
    }

    /// Picks an address inside the region for an access of `size` bytes.
    fn pick_target(&mut self, t: &Target, size: u64, align: u64) -> u64 {
        let size = size.max(1);
        let margin = 64;
        let r = self.rng.below(100);
        let mut a = if r < 25 {
            // Straddle an internal page boundary.
            let page = 1 + self.rng.below(t.size / PAGE_SIZE - 1);
            t.base + page * PAGE_SIZE - self.rng.below(size)
        } else if r < 27 {
            // Straddle the end of the region (faults).
            t.base + t.size - self.rng.below(size)
        } else {
            t.base + margin + self.rng.below(t.size - 2 * margin - size)
        };
        if align > 1 && self.rng.chance(90) {
            a &= !(align - 1);
        }
        a
    }

    /// Garbage for the address-register bits above the address size.
    fn garbage(&mut self, addr_bits: u32) -> u64 {
        if !self.rng.chance(30) {
            return 0;
        }
        match (self.mode, addr_bits) {
            (Mode::Long64, 32) => self.rng.next_u64() << 32,
            (Mode::Compat32, 16) => (self.rng.next_u64() & 0xFFFF) << 16,
            _ => 0,
        }
    }

    /// Builds a memory operand aimed at the data region, setting the instruction's memory fields.
    /// `size` is the access size, `align` a preferred alignment.
    fn memory(&mut self, ins: &mut Instruction, size: u64, align: u64, for_lea: bool) -> bool {
        let addr_bits = match self.mode {
            Mode::Long64 => {
                if self.rng.chance(10) {
                    32
                } else {
                    64
                }
            }
            Mode::Compat32 => {
                if self.rng.chance(15) {
                    16
                } else {
                    32
                }
            }
        };
        let region = self.region_for(addr_bits);
        let target = self.pick_target(&region, size, align);
        self.last_target = target;
        let mask: u64 = match addr_bits {
            16 => 0xFFFF,
            32 => 0xFFFF_FFFF,
            _ => u64::MAX,
        };
        // Segment override prefixes that are harmless in this setting (not FS/GS).
        if self.rng.chance(6) {
            let seg = *self.rng.pick(&[Register::DS, Register::ES, Register::SS, Register::CS]);
            ins.set_segment_prefix(seg);
        }
        ins.set_memory_index_scale(1);
        // RIP/EIP-relative and absolute forms.
        if self.mode == Mode::Long64 && self.rng.chance(15) {
            let base = if addr_bits == 32 { Register::EIP } else { Register::RIP };
            ins.set_memory_base(base);
            ins.set_memory_index(Register::None);
            ins.set_memory_displ_size(if addr_bits == 32 { 4 } else { 8 });
            ins.set_memory_displacement64(target);
            return true;
        }
        if addr_bits == 16 {
            return self.memory16(ins, target, for_lea);
        }
        let regs: &[Register; 16] = if addr_bits == 64 { &GPR64 } else { &GPR32 };
        for _ in 0..8 {
            let snap = self.snapshot();
            let use_base = !self.rng.chance(8);
            let use_index = self.rng.chance(45) || !use_base;
            let base = if use_base {
                let i = if self.rng.chance(10) { gpr::RSP } else { self.rng.index(self.nregs()) };
                Some(i)
            } else {
                None
            };
            let index = if use_index {
                let mut i = self.rng.index(self.nregs());
                if i == gpr::RSP {
                    i = gpr::RBP;
                }
                Some((i, 1u64 << self.rng.below(4)))
            } else {
                None
            };
            if let (Some(b), Some((i, _))) = (base, index)
                && b == i
            {
                continue;
            }
            let disp_class = match self.rng.below(10) {
                0..=3 => 0,
                4..=6 => 1,
                _ => 4,
            };
            let disp_class = if base.is_none() { 4 } else { disp_class };
            if for_lea {
                // LEA computes without accessing memory: any registers and displacement will do.
                let disp = match disp_class {
                    0 => 0,
                    1 => self.rng.range_i64(-128, 127),
                    _ => self.rng.next_u64() as i32 as i64,
                };
                return self.set_mem(ins, regs, base, index, disp, disp_class, addr_bits);
            }
            let mut sum = 0u64;
            let mut ok = true;
            if let Some((i, s)) = index {
                let v = match self.known(i) {
                    Some(v) => v,
                    None => {
                        let v = if self.rng.chance(30) { 0 } else { self.rng.range_i64(-64, 64) as u64 };
                        let v = (v & mask) | self.garbage(addr_bits);
                        ok &= self.pin(i, v);
                        v
                    }
                };
                sum = sum.wrapping_add(v.wrapping_mul(s));
            }
            let disp: i64;
            if let Some(b) = base {
                match self.known(b) {
                    Some(v) => {
                        sum = sum.wrapping_add(v);
                        disp = Self::fit_disp(target.wrapping_sub(sum) & mask, addr_bits);
                    }
                    None => {
                        disp = match disp_class {
                            0 => 0,
                            1 => self.rng.range_i64(-128, 127),
                            _ => self.rng.range_i64(-0x1_0000, 0x1_0000),
                        };
                        let v = (target.wrapping_sub(sum).wrapping_sub(disp as u64) & mask)
                            | self.garbage(addr_bits);
                        ok &= self.pin(b, v);
                    }
                }
            } else {
                disp = Self::fit_disp(target.wrapping_sub(sum) & mask, addr_bits);
            }
            let fits = match disp_class {
                0 => disp == 0,
                1 => (-128..=127).contains(&disp),
                _ => i32::try_from(disp).is_ok(),
            };
            // Widen the displacement class if the pinned values need it.
            let class = if fits {
                disp_class
            } else if i32::try_from(disp).is_ok() {
                4
            } else {
                ok = false;
                4
            };
            if !ok {
                self.restore(snap);
                continue;
            }
            return self.set_mem(ins, regs, base, index, disp, class, addr_bits);
        }
        // Fall back to an absolute address.
        ins.set_memory_base(Register::None);
        ins.set_memory_index(Register::None);
        ins.set_memory_displ_size(if addr_bits == 64 { 8 } else { 4 });
        ins.set_memory_displacement64(target);
        true
    }

    /// Interprets an address-size-masked difference as a signed displacement.
    fn fit_disp(d: u64, addr_bits: u32) -> i64 {
        match addr_bits {
            16 => d as u16 as i16 as i64,
            32 => d as u32 as i32 as i64,
            _ => d as i64,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn set_mem(
        &mut self,
        ins: &mut Instruction,
        regs: &[Register; 16],
        base: Option<usize>,
        index: Option<(usize, u64)>,
        disp: i64,
        class: u32,
        addr_bits: u32,
    ) -> bool {
        ins.set_memory_base(base.map(|b| regs[b]).unwrap_or(Register::None));
        match index {
            Some((i, s)) => {
                ins.set_memory_index(regs[i]);
                ins.set_memory_index_scale(s as u32);
            }
            None => ins.set_memory_index(Register::None),
        }
        let size = match class {
            0 => 0,
            1 => 1,
            _ => addr_bits / 8,
        };
        ins.set_memory_displ_size(size);
        let d = if addr_bits == 32 { disp as i32 as u32 as u64 } else { disp as u64 };
        ins.set_memory_displacement64(d);
        true
    }

    /// 16-bit addressing forms (compatibility mode with the 0x67 prefix).
    fn memory16(&mut self, ins: &mut Instruction, target: u64, for_lea: bool) -> bool {
        const FORMS: [(Option<usize>, Option<usize>); 9] = [
            (Some(gpr::RBX), Some(gpr::RSI)),
            (Some(gpr::RBX), Some(gpr::RDI)),
            (Some(gpr::RBP), Some(gpr::RSI)),
            (Some(gpr::RBP), Some(gpr::RDI)),
            (Some(gpr::RSI), None),
            (Some(gpr::RDI), None),
            (Some(gpr::RBP), None),
            (Some(gpr::RBX), None),
            (None, None),
        ];
        for _ in 0..8 {
            let snap = self.snapshot();
            let (base, index) = *self.rng.pick(&FORMS);
            let class = if base.is_none() {
                2
            } else {
                match self.rng.below(3) {
                    0 => 0,
                    1 => 1,
                    _ => 2,
                }
            };
            let mut disp: i64 = match class {
                0 => 0,
                1 => self.rng.range_i64(-128, 127),
                _ => self.rng.range_i64(-0x8000, 0x7FFF),
            };
            let mut ok = true;
            if !for_lea {
                let mut sum = 0u64;
                let mut free = None;
                for r in [index, base].into_iter().flatten() {
                    match self.known(r) {
                        Some(v) => sum = sum.wrapping_add(v),
                        None => free = Some(r),
                    }
                }
                match free {
                    Some(r) => {
                        // Give the other free register (if any) a small value first.
                        for o in [index, base].into_iter().flatten() {
                            if o != r && self.known(o).is_none() {
                                let v = self.rng.below(64) | self.garbage(16);
                                ok &= self.pin(o, v);
                                sum = sum.wrapping_add(v);
                            }
                        }
                        let v =
                            (target.wrapping_sub(sum).wrapping_sub(disp as u64) & 0xFFFF) | self.garbage(16);
                        ok &= self.pin(r, v);
                    }
                    None => {
                        disp = Self::fit_disp(target.wrapping_sub(sum) & 0xFFFF, 16);
                    }
                }
                let fits = match class {
                    0 => disp == 0,
                    1 => (-128..=127).contains(&disp),
                    _ => true,
                };
                if !fits {
                    ok = false;
                }
            }
            if !ok {
                self.restore(snap);
                continue;
            }
            ins.set_memory_base(base.map(|b| GPR16[b]).unwrap_or(Register::None));
            ins.set_memory_index(index.map(|i| GPR16[i]).unwrap_or(Register::None));
            ins.set_memory_index_scale(1);
            ins.set_memory_displ_size(class);
            ins.set_memory_displacement64(disp as u16 as u64);
            return true;
        }
        ins.set_memory_base(Register::None);
        ins.set_memory_index(Register::None);
        ins.set_memory_displ_size(2);
        ins.set_memory_displacement64(target & 0xFFFF);
        true
    }

    /// Emits one instruction (or a short fixed unit such as `push imm; popf`) for `code`. Returns the number of
    /// instructions emitted, or `None` if this attempt failed (nothing is emitted then).
    fn emit(&mut self, code: Code, fam: Family) -> Option<usize> {
        let snap = self.snapshot();
        let insns = if is_popf(code) {
            self.popf_unit(code)
        } else if is_string(code) {
            self.string_insn(code).map(|i| vec![i])
        } else if vsib_kind(code).is_some() {
            self.gather_insn(code).map(|i| vec![i])
        } else if code == Code::VEX_Vmaskmovdqu_rDI_xmm_xmm {
            self.maskmov_insn()
        } else {
            self.generic(code, fam).map(|i| vec![i])
        };
        let Some(insns) = insns else {
            self.restore(snap);
            return None;
        };
        let mut enc = Encoder::new(self.mode.bitness());
        let mut ip = self.ip();
        let mut lens = Vec::new();
        for ins in &insns {
            match enc.encode(ins, ip) {
                Ok(n) => {
                    lens.push(n);
                    ip += n as u64;
                }
                Err(_) => {
                    self.restore(snap);
                    return None;
                }
            }
        }
        let bytes = enc.take_buffer();
        if self.code.len() + bytes.len() > 2048 {
            self.restore(snap);
            return None;
        }
        let mut off = self.code.len();
        for (ins, n) in insns.iter().zip(&lens) {
            self.offsets.push(off);
            off += n;
            self.note_writes(ins);
        }
        self.code.extend_from_slice(&bytes);
        Some(insns.len())
    }

    fn note_writes(&mut self, ins: &Instruction) {
        let info = self.info.info(ins);
        let mut w = 0u16;
        let mut vw = 0u16;
        for u in info.used_registers() {
            if !matches!(
                u.access(),
                OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
            ) {
                continue;
            }
            let r = u.register();
            if let Some(i) = gpr_index(r) {
                w |= 1 << i;
            }
            if r.is_xmm() || r.is_ymm() || r.is_zmm() {
                vw |= 1 << (r.number() & 15);
            }
        }
        self.written |= w;
        self.vwritten |= vw;
    }

    /// A vector register whose initial value is still unchosen and unmodified, pinned to (`lo`, `hi`); its
    /// number, or `None` if every candidate is taken.
    fn pin_vector(&mut self, avoid: &[usize], lo: u128, hi: u128) -> Option<usize> {
        let n = self.nregs();
        let start = self.rng.index(n);
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let free =
                self.vwritten >> i & 1 == 0 && !self.vpins.iter().any(|p| p.0 == i) && !avoid.contains(&i);
            if free {
                self.vpins.push((i, lo, hi));
            }
            free
        })
    }

    /// A gather (VGATHER*/VPGATHER*): the index register is pinned so that every element addresses the data
    /// region around a pinned base (now and then one element points past the region's end, or partly over
    /// it, so that element faults), and the mask register is pinned with most element sign bits set.
    /// Destination, index and mask are distinct registers except now and then (which is #UD).
    fn gather_insn(&mut self, code: Code) -> Option<Instruction> {
        let (ibits, iy) = vsib_kind(code)?;
        let op = code.op_code();
        let ebits = op.memory_size().element_size() as u32 * 8;
        let dy = op.op_kind(0) == K::ymm_reg;
        let elems = ((if dy { 256 } else { 128 }) / ebits).min((if iy { 256 } else { 128 }) / ibits) as usize;
        let addr_bits = if self.mode == Mode::Long64 && self.rng.chance(90) { 64 } else { 32 };
        let amask = if addr_bits == 64 { u64::MAX } else { 0xFFFF_FFFF };
        let scale = 1u64 << self.rng.below(4);
        let esize = u64::from(ebits / 8);
        let region_end = DATA_ADDR + DATA_SIZE;
        let center = DATA_ADDR + DATA_SIZE / 2 + self.rng.below(0x400) - 0x200;
        let disp = self.rng.range_i64(-128, 127);
        // Base: a pinned GPR, or none (then the displacement carries the address).
        let mut base = None;
        for _ in 0..4 {
            let i = self.reg_index();
            let v = (center.wrapping_sub(disp as u64) & amask) | self.garbage(addr_bits);
            if i != gpr::RSP && self.pin(i, v) {
                base = Some(i);
                break;
            }
        }
        let base_value = if base.is_some() { center.wrapping_sub(disp as u64) } else { 0 };
        let disp = if base.is_some() { disp } else { center as i64 };
        // Index elements: small offsets, or one element sent past the end of the region.
        // VGATHERQPS/VPGATHERQD with a YMM index leave mask bits 191:128 in a host-specific state on a
        // fault (the SDM only says "partially updated"): their elements stay in the region.
        let quirky = ibits == 64 && iy && ebits == 32;
        let faulting = if !quirky && self.rng.chance(10) { Some(self.rng.index(elems)) } else { None };
        let mut index = [0u128; 2];
        let mut mask = [0u128; 2];
        for k in 0..elems {
            let target = if faulting == Some(k) {
                if self.rng.chance(50) { region_end - esize / 2 } else { region_end + self.rng.below(0x1000) }
            } else {
                center.wrapping_add(self.rng.range_i64(-64, 64) as u64 * 8)
            };
            // index * scale = target - base - disp, rounded down to a multiple of the scale.
            let want = target.wrapping_sub(base_value).wrapping_sub(disp as u64) as i64 / scale as i64;
            let v = if ibits == 32 { want as i32 as u32 as u64 } else { want as u64 };
            let (lane, sh) = ((k as u32 * ibits / 128) as usize, k as u32 * ibits % 128);
            index[lane] |= u128::from(v) << sh;
            let on = self.rng.chance(80);
            let (ml, msh) = ((k as u32 * ebits / 128) as usize, k as u32 * ebits % 128);
            let mv = if on { 1u128 << (ebits - 1) } else { 0 }
                | (self.rng.next_u64() as u128 & ((1 << (ebits - 1)) - 1));
            mask[ml] |= mv << msh;
        }
        // Random bits above the used elements (the instruction ignores or zeroes them).
        let index_hi = if iy { index[1] } else { self.rng.next_u64() as u128 };
        let xi = self.pin_vector(&[], index[0], index_hi)?;
        let collide = self.rng.chance(3);
        let mask_hi = if ebits as usize * elems > 128 { mask[1] } else { self.rng.next_u64() as u128 };
        let mi = if collide { xi } else { self.pin_vector(&[xi], mask[0], mask_hi)? };
        let n = self.nregs();
        let di = if collide && self.rng.chance(50) { xi } else { self.rng.index(n) };
        if !collide && (di == xi || di == mi) {
            return None;
        }
        let vreg = |i: usize, y: bool| {
            let first = if y { Register::YMM0 } else { Register::XMM0 };
            Register::try_from(first as usize + i).unwrap_or(first)
        };
        let mut ins = new_insn(code);
        ins.set_op0_kind(OpKind::Register);
        ins.set_op0_register(vreg(di, dy));
        ins.set_op1_kind(OpKind::Memory);
        ins.set_op2_kind(OpKind::Register);
        ins.set_op2_register(vreg(mi, op.op_kind(2) == K::ymm_vvvv));
        let regs: &[Register; 16] = if addr_bits == 64 { &GPR64 } else { &GPR32 };
        ins.set_memory_base(base.map(|b| regs[b]).unwrap_or(Register::None));
        ins.set_memory_index(vreg(xi, iy));
        ins.set_memory_index_scale(scale as u32);
        let small = base.is_some() && (-128..=127).contains(&disp);
        ins.set_memory_displ_size(if small { 1 } else { 4 });
        ins.set_memory_displacement64(if addr_bits == 32 { disp as i32 as u32 as u64 } else { disp as u64 });
        if addr_bits == 32 && self.mode == Mode::Long64 {
            // The 0x67 prefix comes from the 32-bit base register; with no base it must be asked for.
            base?;
        }
        Some(ins)
    }

    /// VMASKMOVDQU: its implicit DS:rDI destination pinned into the data region (now and then across a
    /// page boundary or the region's end, see [`Builder::pick_target`]), any address size.
    fn maskmov_insn(&mut self) -> Option<Vec<Instruction>> {
        let addr_bits = match self.mode {
            Mode::Long64 if self.rng.chance(15) => 32,
            Mode::Long64 => 64,
            Mode::Compat32 if self.rng.chance(15) => 16,
            Mode::Compat32 => 32,
        };
        let region = self.region_for(addr_bits);
        let target = self.pick_target(&region, 16, 1);
        let mask = match addr_bits {
            16 => 0xFFFF,
            32 => 0xFFFF_FFFF,
            _ => u64::MAX,
        };
        let v = (target & mask) | self.garbage(addr_bits);
        if !self.pin(gpr::RDI, v) {
            return None;
        }
        let n = self.nregs();
        let (a, b) = (xmm_register(self.rng.index(n)), xmm_register(self.rng.index(n)));
        let seg =
            if self.rng.chance(6) { *self.rng.pick(&[Register::ES, Register::SS]) } else { Register::None };
        Some(vec![Instruction::with_vmaskmovdqu(addr_bits, a, b, seg).ok()?])
    }

    /// `push imm; popf` with only arithmetic flags, DF and ignored bits (IF, IOPL, reserved) varying.
    fn popf_unit(&mut self, code: Code) -> Option<Vec<Instruction>> {
        let mut v = (self.rng.next_u64() & 0x0CD5) | 2;
        if self.rng.chance(20) {
            v |= self.rng.next_u64() & 0x3228; // IF, IOPL, reserved bits 3 and 5: ignored or fixed
        }
        let push = match code {
            Code::Popfw => Code::Push_imm16,
            Code::Popfd => Code::Pushd_imm32,
            _ => Code::Pushq_imm32,
        };
        let mut p = new_insn(push);
        p.set_op_kind(0, if push == Code::Push_imm16 { OpKind::Immediate16 } else { OpKind::Immediate32 });
        if push == Code::Pushq_imm32 {
            p.set_op_kind(0, OpKind::Immediate32to64);
        }
        p.set_immediate_u64(0, v);
        Some(vec![p, Instruction::with(code)])
    }

    fn string_insn(&mut self, code: Code) -> Option<Instruction> {
        let addr_bits = match self.mode {
            Mode::Long64 => {
                if self.rng.chance(15) {
                    32
                } else {
                    64
                }
            }
            Mode::Compat32 => {
                if self.rng.chance(15) {
                    16
                } else {
                    32
                }
            }
        };
        let rep = match self.rng.below(10) {
            0..=3 => RepPrefixKind::None,
            4..=7 => RepPrefixKind::Repe,
            _ => RepPrefixKind::Repne,
        };
        let m = code.mnemonic();
        let seg = if self.rng.chance(10) {
            *self.rng.pick(&[Register::ES, Register::SS, Register::CS])
        } else {
            Register::None
        };
        use Mnemonic as M;
        let r = match m {
            M::Movsb => Instruction::with_movsb(addr_bits, seg, rep),
            M::Movsw => Instruction::with_movsw(addr_bits, seg, rep),
            M::Movsd => Instruction::with_movsd(addr_bits, seg, rep),
            M::Movsq => Instruction::with_movsq(addr_bits, seg, rep),
            M::Cmpsb => Instruction::with_cmpsb(addr_bits, seg, rep),
            M::Cmpsw => Instruction::with_cmpsw(addr_bits, seg, rep),
            M::Cmpsd => Instruction::with_cmpsd(addr_bits, seg, rep),
            M::Cmpsq => Instruction::with_cmpsq(addr_bits, seg, rep),
            M::Lodsb => Instruction::with_lodsb(addr_bits, seg, rep),
            M::Lodsw => Instruction::with_lodsw(addr_bits, seg, rep),
            M::Lodsd => Instruction::with_lodsd(addr_bits, seg, rep),
            M::Lodsq => Instruction::with_lodsq(addr_bits, seg, rep),
            M::Scasb => Instruction::with_scasb(addr_bits, rep),
            M::Scasw => Instruction::with_scasw(addr_bits, rep),
            M::Scasd => Instruction::with_scasd(addr_bits, rep),
            M::Scasq => Instruction::with_scasq(addr_bits, rep),
            M::Stosb => Instruction::with_stosb(addr_bits, rep),
            M::Stosw => Instruction::with_stosw(addr_bits, rep),
            M::Stosd => Instruction::with_stosd(addr_bits, rep),
            M::Stosq => Instruction::with_stosq(addr_bits, rep),
            _ => return None,
        };
        let ins = r.ok()?;
        let region = self.region_for(addr_bits);
        let mask = match addr_bits {
            16 => 0xFFFF,
            32 => 0xFFFF_FFFF,
            _ => u64::MAX,
        };
        // Point RSI/RDI into the region (with room for a few elements either way) and keep RCX small.
        for r in [gpr::RSI, gpr::RDI] {
            let p = region.base + 128 + self.rng.below(region.size - 256);
            let v = (p & mask) | self.garbage(addr_bits);
            self.pin(r, v);
        }
        if rep != RepPrefixKind::None {
            let c = if self.rng.chance(15) { 0 } else { self.rng.below(9) };
            let g = self.garbage(addr_bits);
            self.pin(gpr::RCX, c | g);
        }
        Some(ins)
    }

    /// A far pointer of `size` bytes (offset of `size - 2` bytes, then a selector) for LDS..LGS.
    fn far_pointer(&mut self, size: usize) -> Vec<u8> {
        // Linux's GDT (see `interp::LINUX_GDT`) at CPL 3: null with every RPL; USER_DS 0x2b (and with
        // RPL 0-2: fine for DS..GS, #GP for SS); USER32_CS 0x23 and USER_CS 0x33 (readable code: DS..GS
        // only); kernel segments (DPL 0: #GP); the TSS (system: #GP); empty TLS entries; entry 7 (zero);
        // LDT selectors (no LDT: #GP); beyond the GDT limit. CPUNODE (0x78-0x7f) is never used: its limit
        // is the CPU number.
        const SELECTORS: [u16; 24] = [
            0x00, 0x01, 0x02, 0x03, 0x2b, 0x28, 0x29, 0x2a, 0x23, 0x33, 0x08, 0x0b, 0x10, 0x13, 0x18, 0x1b,
            0x40, 0x38, 0x63, 0x6b, 0x2f, 0x04, 0x83, 0xfffb,
        ];
        let sel = if self.rng.chance(75) { 0x2b } else { *self.rng.pick(&SELECTORS) };
        let mut v = edge_value(self.rng).to_le_bytes()[..size.saturating_sub(2).min(8)].to_vec();
        v.extend_from_slice(&sel.to_le_bytes());
        v
    }

    fn imm_value(&mut self, fam: Family, k: K) -> u64 {
        if fam.is_fp_simd() {
            // Selector/control bytes: small values (lane selectors, rounding controls, string-compare
            // modes) or any byte.
            return if self.rng.chance(50) { self.rng.below(16) } else { self.rng.below(256) };
        }
        if matches!(fam, Family::Shift | Family::Bmi2) || (fam == Family::BitOps && k == K::imm8) {
            return count_value(self.rng);
        }
        edge_value(self.rng)
    }

    fn generic(&mut self, code: Code, fam: Family) -> Option<Instruction> {
        let op = code.op_code();
        let mut ins = new_insn(code);
        let mem_size = op.memory_size().size() as u64;
        let mut has_mem = false;
        for (n, &k) in op.op_kinds().iter().enumerate() {
            let n = n as u32;
            let reg_bits = match k {
                K::r8_or_mem | K::r8_reg | K::r8_opcode => Some(8),
                K::r16_or_mem | K::r16_reg | K::r16_rm | K::r16_opcode => Some(16),
                K::r32_or_mem | K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_vvvv => Some(32),
                K::r64_or_mem | K::r64_reg | K::r64_rm | K::r64_opcode | K::r64_vvvv => Some(64),
                _ => None,
            };
            let may_mem = matches!(
                k,
                K::r8_or_mem
                    | K::r16_or_mem
                    | K::r32_or_mem
                    | K::r64_or_mem
                    | K::xmm_or_mem
                    | K::mm_or_mem
                    | K::ymm_or_mem
            );
            if k == K::mem || (may_mem && self.rng.chance(45)) {
                ins.set_op_kind(n, OpKind::Memory);
                let align = match code {
                    Code::Cmpxchg16b_m128 => 16,
                    _ if fam.is_fp_simd() => mem_size.clamp(1, 32),
                    _ => mem_size.clamp(1, 8),
                };
                if !self.memory(&mut ins, mem_size, align, fam == Family::Lea) {
                    return None;
                }
                if fam.is_fp_simd() {
                    let bytes = crate::fpvalues::memory_value(self.rng, op.memory_size());
                    self.fills.push((self.last_target, bytes));
                }
                if fam == Family::FarPtr {
                    let bytes = self.far_pointer(mem_size as usize);
                    self.fills.push((self.last_target, bytes));
                }
                has_mem = true;
                continue;
            }
            let vec_reg = match k {
                K::xmm_reg | K::xmm_rm | K::xmm_or_mem => {
                    let n = if self.mode == Mode::Long64 { 16 } else { 8 };
                    Some(xmm_register(self.rng.below(n) as usize))
                }
                K::mm_reg | K::mm_rm | K::mm_or_mem => Some(mm_register(self.rng.below(8) as usize)),
                K::st0 => Some(Register::ST0),
                K::sti_opcode => Some(st_register(self.rng.below(8) as usize)),
                _ => vex_register(self.rng, self.mode, k),
            };
            if let Some(r) = vec_reg {
                ins.set_op_kind(n, OpKind::Register);
                ins.set_op_register(n, r);
                continue;
            }
            if let Some(bits) = reg_bits {
                let r = self.reg_of_size(bits);
                ins.set_op_kind(n, OpKind::Register);
                ins.set_op_register(n, r);
                continue;
            }
            let fixed = match k {
                K::al => Some(Register::AL),
                K::cl => Some(Register::CL),
                K::ax => Some(Register::AX),
                K::eax => Some(Register::EAX),
                K::rax => Some(Register::RAX),
                _ => None,
            };
            if let Some(r) = fixed {
                ins.set_op_kind(n, OpKind::Register);
                ins.set_op_register(n, r);
                continue;
            }
            let kind = match k {
                K::imm8 | K::imm8_const_1 => OpKind::Immediate8,
                K::imm8sex16 => OpKind::Immediate8to16,
                K::imm8sex32 => OpKind::Immediate8to32,
                K::imm8sex64 => OpKind::Immediate8to64,
                K::imm16 => OpKind::Immediate16,
                K::imm32 => OpKind::Immediate32,
                K::imm32sex64 => OpKind::Immediate32to64,
                K::imm64 => OpKind::Immediate64,
                _ => return None,
            };
            ins.set_op_kind(n, kind);
            let v = if k == K::imm8_const_1 { 1 } else { self.imm_value(fam, k) };
            ins.set_immediate_u64(n, v);
        }
        // BT* with a register bit offset and a memory operand: keep the offset small so the access stays near.
        if has_mem
            && fam == Family::BitOps
            && op.op_count() == 2
            && op.op_kind(1) != K::imm8
            && let Some(i) = gpr_index(ins.op_register(1))
        {
            let v = self.rng.range_i64(-96, 96) as u64;
            self.pin(i, v);
        }
        // RDPKRU/WRPKRU: ECX (and EDX) mostly 0, else the #GP case. WRPKRU writes only the PKRU the
        // host process runs with: a native WRPKRU of anything else would outlive the case (the
        // signal frame restores it) and could shut the sandbox out of its own key-0 pages.
        if matches!(code.mnemonic(), Mnemonic::Rdpkru | Mnemonic::Wrpkru) {
            for r in [gpr::RCX, gpr::RDX] {
                if self.rng.chance(85) {
                    self.pin(r, 0);
                }
            }
        }
        if code.mnemonic() == Mnemonic::Wrpkru {
            let v = u64::from(crate::hostcpu::host_pkru().unwrap_or(0));
            if self.known(gpr::RAX).map(|x| x & 0xffff_ffff) != Some(v) && !self.pin(gpr::RAX, v) {
                return None;
            }
        }
        // Explicit-length string compares: keep the EAX/EDX lengths near the 8/16-element range.
        if matches!(code.mnemonic(), Mnemonic::Pcmpestri | Mnemonic::Pcmpestrm) {
            for r in [gpr::RAX, gpr::RDX] {
                let v = self.rng.range_i64(-20, 20) as u64;
                self.pin(r, v);
            }
        }
        // LOCK: valid on memory-destination read-modify-write forms, and occasionally anywhere (#UD).
        if (has_mem && op.can_use_lock_prefix() && ins.op0_kind() == OpKind::Memory && self.rng.chance(8))
            || self.rng.chance(1)
        {
            ins.set_has_lock_prefix(true);
        }
        Some(ins)
    }

    fn finish(self, low_region: bool) -> Case {
        let mut gprs = [0u64; 16];
        for (i, g) in gprs.iter_mut().enumerate() {
            *g = match self.init[i] {
                Some(v) => v,
                None => edge_value(self.rng),
            };
            if self.mode == Mode::Compat32 {
                *g = if i < 8 { *g & 0xFFFF_FFFF } else { 0 };
            }
        }
        let mut data = vec![MemRegion { addr: DATA_ADDR, bytes: random_bytes(self.rng, DATA_SIZE as usize) }];
        if self.mode == Mode::Compat32 && low_region {
            data.insert(
                0,
                MemRegion { addr: LOW_DATA_ADDR, bytes: random_bytes(self.rng, LOW_DATA_SIZE as usize) },
            );
        }
        // The operand values chosen for memory (FP/SIMD values, far pointers; integer cases have none,
        // so they are unchanged), then for FP/SIMD cases (drawn after everything else) the initial
        // x87/SSE state.
        for (addr, bytes) in &self.fills {
            for r in data.iter_mut() {
                if *addr >= r.addr && addr + bytes.len() as u64 <= r.end() {
                    let o = (addr - r.addr) as usize;
                    r.bytes[o..o + bytes.len()].copy_from_slice(bytes);
                }
            }
        }
        let fp = if self.fp_used {
            let mut fp = crate::fpvalues::initial_state(self.rng, self.mode);
            if self.vex_used {
                crate::fpvalues::upper_halves(&mut fp, self.rng, self.mode);
            }
            for &(i, lo, hi) in &self.vpins {
                fp.xmm[i] = lo;
                fp.ymm_hi[i] = hi;
            }
            Some(fp)
        } else {
            None
        };
        Case {
            mode: self.mode,
            code_addr: crate::case::CODE_ADDR,
            code: self.code,
            regs: RegState { gprs, rip: crate::case::CODE_ADDR, rflags: self.rflags },
            data,
            fp,
        }
    }
}

/// Data bytes with a mix of patterns (zeros, ones, small numbers, random) per 16-byte chunk.
fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    for chunk in v.chunks_mut(16) {
        match rng.below(6) {
            0 => {}
            1 => chunk.fill(0xFF),
            2 => {
                for c in chunk.iter_mut() {
                    *c = rng.below(4) as u8;
                }
            }
            3 => {
                let x = edge_value(rng).to_le_bytes();
                for (i, c) in chunk.iter_mut().enumerate() {
                    *c = x[i % 8];
                }
            }
            _ => {
                for c in chunk.iter_mut() {
                    *c = rng.next_u64() as u8;
                }
            }
        }
    }
    v
}
