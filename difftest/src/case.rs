//! Test cases, outcomes and the [`Engine`] trait that connects an implementation under test.
//!
//! # The machine an engine must model
//!
//! A [`Case`] describes a user-mode (CPL 3) x86-64 Linux-like process state:
//!
//! * **Mode.** [`Mode::Long64`]: 64-bit mode, CS = 0x33 (L=1). [`Mode::Compat32`]: compatibility mode, CS =
//!   0x23 (32-bit code segment, D=1). In both modes DS = ES = SS = 0x2b (flat, base 0, 4 GiB limit, writable);
//!   FS and GS are never used by generated code. A write through a CS override in compatibility mode is a
//!   #GP(0) (code segments are not writable); in 64-bit mode segmentation is ignored.
//! * **Privilege.** CPL 3, IOPL 0, EFLAGS.IF = 1. POPF therefore leaves IF and IOPL unchanged (no fault).
//!   EFLAGS.AC is never set by cases, so alignment checking never triggers.
//! * **Memory.** Paging with exactly these user pages present, everything else not present:
//!   - the code pages: every 4 KiB page overlapping `[code_addr, code_end]` (note: inclusive of
//!     `code_end`), readable and executable, **not writable**. Bytes of those pages outside `code` read as
//!     0xCC (so the byte at `code_end` is an `int3`).
//!   - each [`MemRegion`] in `data`: page-aligned, a whole number of pages, readable and writable, **not
//!     executable**.
//! * **Page-fault error codes** follow the hardware: bit 0 P (1 = protection violation on a present page),
//!   bit 1 W/R (1 = write), bit 2 U/S (always 1 here), bit 4 I/D (1 = instruction fetch). CR2 goes to
//!   [`ExceptionInfo::fault_addr`].
//!
//! # How a run ends
//!
//! The engine starts at `regs.rip` and executes instructions until one of:
//!
//! * `RIP == case.code_end()` **before** executing the instruction there: the run completed normally;
//!   report `exception: None` and `rip == code_end`. (The native runner places an `int3` at `code_end` and
//!   turns the resulting #BP with RIP = `code_end + 1` back into this normal completion; an engine under test
//!   simply stops when it reaches `code_end`.)
//! * an exception is raised: stop and report it (see [`ExceptionInfo`]); nothing after it is executed.
//! * the engine cannot execute an instruction: return [`Outcome::Unsupported`].
//!
//! Generated code never branches, so engines may also put a generous instruction limit in place as a guard.
//!
//! # State at an exception
//!
//! The state reported is the one the CPU pushes for the exception:
//!
//! * **Faults** (#DE, #UD, #BR, #GP, #SS, #PF, #AC, ...): registers, flags and memory as they were *before*
//!   the faulting instruction (no partial results of that instruction are visible), and `rip` = the address
//!   of the faulting instruction (including its prefixes). Exception: REP-prefixed string instructions keep
//!   the effect of the iterations completed before the faulting one (RCX/RSI/RDI updated accordingly), as on
//!   hardware.
//! * **Traps** (#BP from `int3`, #OF from `into`): state *after* the instruction, `rip` = the next
//!   instruction.
//!
//! # FP/SIMD state
//!
//! A case with x87, MMX or SSE instructions carries an initial [`FpState`] (the architectural part of an
//! FXSAVE image) in [`Case::fp`]. The machine then has CR0.EM = 0, CR0.MP = 1, CR0.TS = 0, CR0.NE = 1,
//! CR4.OSFXSR = 1 and CR4.OSXMMEXCPT = 1 (as Linux sets them): SSE instructions are available and an
//! unmasked SIMD floating-point exception is #XM (vector 19), an unmasked x87 exception #MF (vector 16), both
//! faults without error code. The engine loads the state as FXRSTOR would (x87 tags are recomputed from the
//! abridged tag word and the register contents, SDM vol. 1 §10.5.1.1) and reports the final state as FXSAVE
//! would store it. FOP, FIP, FDP, FCS and FDS are not part of the comparison.
//!
//! RFLAGS is compared in full (every bit, including the flags an instruction leaves "undefined": the host CPU
//! defines them) except RF (bit 16), which hardware sets in fault frames; report it clear.

use std::fmt;

/// Bytes per page of the emulated (and host) address space.
pub const PAGE_SIZE: u64 = 4096;
/// Where generated code is placed.
pub const CODE_ADDR: u64 = 0x1000_0000;
/// Main data region used by generated cases (both modes); also holds the stack.
pub const DATA_ADDR: u64 = 0x2000_0000;
/// Size of the main data region.
pub const DATA_SIZE: u64 = 4 * PAGE_SIZE;
/// Low data region used by compatibility-mode cases for 16-bit addressing (address-size prefix 0x67) and
/// 16-bit string instructions; 16-bit effective addresses can only reach the first 64 KiB.
pub const LOW_DATA_ADDR: u64 = 0x8000;
/// Size of the low data region.
pub const LOW_DATA_SIZE: u64 = 2 * PAGE_SIZE;
/// Address range the native runner reserves for its trampoline and state block; cases must not use it.
pub const RESERVED_RANGE: std::ops::Range<u64> = 0x0F00_0000..0x0F02_0000;
/// Maximum number of code bytes in a case.
pub const MAX_CODE_LEN: usize = 3072;
/// Maximum number of data regions in a case.
pub const MAX_REGIONS: usize = 8;
/// Maximum total number of data bytes in a case.
pub const MAX_DATA_LEN: usize = 256 * 1024;

/// RFLAGS bits a case may set initially: CF PF AF ZF SF DF OF, plus the always-one bit 1 and IF.
pub const RFLAGS_CASE_MASK: u64 = 0x0CD5 | 0x0202;
/// RFLAGS bit 16 (RF) is not compared.
pub const RFLAGS_RF: u64 = 1 << 16;

/// Names of the 16 GPRs in encoding order (the order used by every `[u64; 16]` in this crate).
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// Index of a GPR in the `[u64; 16]` arrays (encoding order).
pub mod gpr {
    #![allow(missing_docs)]
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
}

/// Processor mode a case runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// 64-bit mode (CS.L = 1).
    Long64,
    /// Compatibility mode with a 32-bit code segment (CS.L = 0, CS.D = 1): 16/32-bit operand and address
    /// sizes, legacy-only instructions (BCD, PUSHA/POPA, INTO, BOUND). Only the low 32 bits of RAX..RDI and
    /// RIP are meaningful; R8-R15 must be zero initially and are not compared.
    Compat32,
}

impl Mode {
    /// Code bitness for iced-x86 (64 or 32).
    pub fn bitness(self) -> u32 {
        match self {
            Mode::Long64 => 64,
            Mode::Compat32 => 32,
        }
    }

    /// Both modes.
    pub const ALL: [Mode; 2] = [Mode::Long64, Mode::Compat32];
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Long64 => "long64",
            Mode::Compat32 => "compat32",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "long64" | "64" | "long" => Ok(Mode::Long64),
            "compat32" | "32" | "compat" => Ok(Mode::Compat32),
            _ => Err(format!("unknown mode `{s}` (expected long64 or compat32)")),
        }
    }
}

/// Architectural register state: GPRs in encoding order, RIP and RFLAGS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RegState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15.
    pub gprs: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
}

/// A block of guest memory: `bytes.len()` bytes starting at `addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemRegion {
    /// Guest linear (= virtual) address of the first byte.
    pub addr: u64,
    /// Contents.
    pub bytes: Vec<u8>,
}

impl MemRegion {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.addr + self.bytes.len() as u64
    }
}

/// One test case: initial machine state plus the code to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Processor mode.
    pub mode: Mode,
    /// Address of `code[0]`.
    pub code_addr: u64,
    /// The instruction bytes. Execution ends when RIP reaches [`Case::code_end`].
    pub code: Vec<u8>,
    /// Initial registers. `regs.rip` is normally `code_addr`.
    pub regs: RegState,
    /// Initial contents of the writable data regions (page-aligned, whole pages, disjoint).
    pub data: Vec<MemRegion>,
    /// Initial x87/MMX/SSE state, for cases with FP/SIMD instructions; `None` for GPR-only cases (the FP
    /// state is then neither set up specially nor compared). See [`FpState`].
    pub fp: Option<FpState>,
}

impl Case {
    /// Address where the sequence ends (first byte after `code`).
    pub fn code_end(&self) -> u64 {
        self.code_addr + self.code.len() as u64
    }

    /// First and one-past-last page addresses covered by the code (including the byte at `code_end`).
    pub fn code_pages(&self) -> (u64, u64) {
        let lo = self.code_addr & !(PAGE_SIZE - 1);
        let hi = (self.code_end() + PAGE_SIZE) & !(PAGE_SIZE - 1);
        (lo, hi)
    }

    /// Checks the structural rules every engine may rely on; returns why the case is malformed.
    pub fn validate(&self) -> Result<(), String> {
        if self.code.len() > MAX_CODE_LEN {
            return Err(format!("code is {} bytes (max {MAX_CODE_LEN})", self.code.len()));
        }
        if self.data.len() > MAX_REGIONS {
            return Err(format!("{} data regions (max {MAX_REGIONS})", self.data.len()));
        }
        let total: usize = self.data.iter().map(|r| r.bytes.len()).sum();
        if total > MAX_DATA_LEN {
            return Err(format!("{total} data bytes (max {MAX_DATA_LEN})"));
        }
        let limit = match self.mode {
            Mode::Long64 => 0x7FFF_FFFF_F000,
            Mode::Compat32 => 1 << 32,
        };
        let (clo, chi) = self.code_pages();
        if clo < 0x10000 || chi > limit {
            return Err(format!("code pages {clo:#x}..{chi:#x} outside the usable range"));
        }
        if self.regs.rip < self.code_addr || self.regs.rip > self.code_end() {
            return Err(format!("rip {:#x} is not inside the code", self.regs.rip));
        }
        if self.regs.rflags & !RFLAGS_CASE_MASK != 0 || self.regs.rflags & 0x202 != 0x202 {
            return Err(format!(
                "initial rflags {:#x} must have bits 1 and 9 (IF) set and nothing outside {RFLAGS_CASE_MASK:#x}",
                self.regs.rflags
            ));
        }
        if self.mode == Mode::Compat32 {
            if self.regs.gprs[..8].iter().any(|&v| v > u32::MAX as u64)
                || self.regs.gprs[8..].iter().any(|&v| v != 0)
            {
                return Err("compat32 cases need 32-bit values in rax..rdi and zero r8..r15".into());
            }
            if self.regs.rip > u32::MAX as u64 {
                return Err("compat32 rip above 4 GiB".into());
            }
        }
        if let Some(fp) = &self.fp {
            fp.validate()?;
        }
        let mut ranges: Vec<(u64, u64, &str)> =
            vec![(clo, chi, "code"), (RESERVED_RANGE.start, RESERVED_RANGE.end, "reserved")];
        for r in &self.data {
            if !r.addr.is_multiple_of(PAGE_SIZE)
                || !(r.bytes.len() as u64).is_multiple_of(PAGE_SIZE)
                || r.bytes.is_empty()
            {
                return Err(format!("data region at {:#x} is not whole pages", r.addr));
            }
            if r.addr < 0x1000 || r.end() > limit {
                return Err(format!("data region at {:#x} outside the usable range", r.addr));
            }
            ranges.push((r.addr, r.end(), "data"));
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.0 < b.1 && b.0 < a.1 {
                    return Err(format!(
                        "{} {:#x}..{:#x} overlaps {} {:#x}..{:#x}",
                        a.2, a.0, a.1, b.2, b.0, b.1
                    ));
                }
            }
        }
        Ok(())
    }

    /// The same case with only the first `len` code bytes (used to shrink to a prefix of the sequence).
    pub fn truncated(&self, len: usize) -> Case {
        let mut c = self.clone();
        c.code.truncate(len);
        c
    }
}

/// An exception that ended a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionInfo {
    /// Exception vector (0 #DE, 3 #BP, 4 #OF, 5 #BR, 6 #UD, 12 #SS, 13 #GP, 14 #PF, 17 #AC, ...).
    pub vector: u8,
    /// The error code the CPU pushes: `Some` exactly for vectors 8, 10, 11, 12, 13, 14 and 17.
    pub error_code: Option<u64>,
    /// RIP pushed by the CPU: the faulting instruction for faults, the next instruction for traps. Always
    /// equal to [`FinalState::rip`].
    pub rip: u64,
    /// CR2 for #PF (the linear address that faulted), `None` otherwise. Compared only when both sides
    /// report it.
    pub fault_addr: Option<u64>,
}

/// Architectural result of running a case to its end or to an exception.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    /// Final GPRs (encoding order). In [`Mode::Compat32`] only the low 32 bits of the first eight count.
    pub gprs: [u64; 16],
    /// Final RIP: `code_end` on normal completion, otherwise as in [`ExceptionInfo::rip`].
    pub rip: u64,
    /// Final RFLAGS, RF (bit 16) clear.
    pub rflags: u64,
    /// Final contents of every data region of the case, same order, addresses and sizes.
    pub data: Vec<MemRegion>,
    /// The exception that stopped the run, if any (the end-of-sequence marker is not one).
    pub exception: Option<ExceptionInfo>,
    /// Final x87/MMX/SSE state: `Some` exactly when the case has an initial [`Case::fp`].
    pub fp: Option<FpState>,
}

/// What an engine reports for a case.
// `Ran` is large (the FP state); an outcome is built once per case and moved, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The case ran (to `code_end` or to an exception).
    Ran(FinalState),
    /// The engine stopped on something it does not implement (text says what, e.g. the mnemonic). Counted
    /// and listed, never a divergence.
    Unsupported(String),
    /// The engine or its harness failed (native child crashed or hung, mapping failed, ...). Counted and
    /// listed separately.
    HarnessError(String),
}

impl Outcome {
    /// The final state if the case ran.
    pub fn state(&self) -> Option<&FinalState> {
        match self {
            Outcome::Ran(s) => Some(s),
            _ => None,
        }
    }
}

/// An x86 implementation that can run cases: the native CPU or an engine under test.
///
/// Contract (see the module documentation for the machine model):
///
/// * `run` starts from `case.regs` with memory as described by the case and returns the state when RIP
///   reaches `case.code_end()` or when an exception is raised. It must not keep state between cases: every
///   call starts from a fresh machine.
/// * Cases passed to `run` satisfy [`Case::validate`].
/// * Return [`Outcome::Unsupported`] when the engine meets an instruction it does not implement, rather
///   than guessing; the tester counts and lists those separately.
pub trait Engine {
    /// Short name used in reports ("native", "interp", ...).
    fn name(&self) -> &str;
    /// Runs one case from a fresh machine state.
    fn run(&mut self, case: &Case) -> Outcome;
}

/// Architectural x87/MMX/SSE state in FXSAVE terms (SDM vol. 1 §10.5.1, table 10-2).
///
/// The x87 registers are kept in **stack order** as FXSAVE stores them (`st[i]` is ST(i), i.e. physical
/// register `(TOP + i) & 7`, TOP = `fsw[13:11]`), while the abridged tag word `ftw` is indexed by
/// **physical** register (bit `p` = 1: R`p` is not empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FpState {
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word (exception flags, SF, ES, C0-C3, TOP, B).
    pub fsw: u16,
    /// Abridged tag word: bit `p` set when physical register R`p` is not empty.
    pub ftw: u8,
    /// ST(0)..ST(7) as 80-bit values (little-endian: 64-bit significand, then sign and exponent).
    pub st: [[u8; 10]; 8],
    /// MXCSR.
    pub mxcsr: u32,
    /// XMM0-XMM15 (little-endian lanes).
    pub xmm: [u128; 16],
    /// Bits 255:128 of YMM0-YMM15 (the XSAVE AVX component; zero in cases without VEX instructions).
    pub ymm_hi: [u128; 16],
}

/// MXCSR bits a case may set (MXCSR_MASK of every SSE2-capable CPU with DAZ: 0xFFFF).
pub const MXCSR_VALID: u32 = 0xFFFF;

impl Default for FpState {
    /// The state after FNINIT and with MXCSR at its reset value: FCW 0x037F, empty stack, MXCSR 0x1F80.
    fn default() -> Self {
        FpState {
            fcw: 0x037F,
            fsw: 0,
            ftw: 0,
            st: [[0; 10]; 8],
            mxcsr: 0x1F80,
            xmm: [0; 16],
            ymm_hi: [0; 16],
        }
    }
}

impl FpState {
    /// TOP (FSW bits 13:11).
    pub fn top(&self) -> usize {
        ((self.fsw >> 11) & 7) as usize
    }

    /// Physical register holding ST(`i`).
    pub fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }

    /// Whether ST(`i`) is not empty.
    pub fn st_valid(&self, i: usize) -> bool {
        self.ftw >> self.phys(i) & 1 == 1
    }

    /// Checks what FXRSTOR would reject (reserved MXCSR bits raise #GP).
    pub fn validate(&self) -> Result<(), String> {
        if self.mxcsr & !MXCSR_VALID != 0 {
            return Err(format!("mxcsr {:#x} sets reserved bits", self.mxcsr));
        }
        Ok(())
    }

    /// The 512-byte FXSAVE image (64-bit format; FOP, FIP and FDP zero).
    pub fn to_fxsave(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&self.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&self.fsw.to_le_bytes());
        b[4] = self.ftw;
        b[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&MXCSR_VALID.to_le_bytes());
        for (i, r) in self.st.iter().enumerate() {
            b[32 + 16 * i..42 + 16 * i].copy_from_slice(r);
        }
        for (i, x) in self.xmm.iter().enumerate() {
            b[160 + 16 * i..176 + 16 * i].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    /// Parses an FXSAVE image (either format; only the fields of [`FpState`] are read; `ymm_hi` is
    /// zero).
    pub fn from_fxsave(b: &[u8; 512]) -> FpState {
        let mut st = [[0u8; 10]; 8];
        for (i, r) in st.iter_mut().enumerate() {
            r.copy_from_slice(&b[32 + 16 * i..42 + 16 * i]);
        }
        let mut xmm = [0u128; 16];
        for (i, x) in xmm.iter_mut().enumerate() {
            *x = u128::from_le_bytes(b[160 + 16 * i..176 + 16 * i].try_into().expect("16 bytes"));
        }
        FpState {
            fcw: u16::from_le_bytes([b[0], b[1]]),
            fsw: u16::from_le_bytes([b[2], b[3]]),
            ftw: b[4],
            st,
            mxcsr: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
            xmm,
            ymm_hi: [0; 16],
        }
    }

    /// Names of the differing fields under the comparison rules: FCW, FSW, abridged FTW, MXCSR, every XMM
    /// register and YMM upper half, and the ST(i) registers that are non-empty on both sides (an emptiness mismatch already
    /// shows in the tag word).
    pub fn diff(&self, other: &FpState) -> Vec<String> {
        let mut d = Vec::new();
        if self.fcw != other.fcw {
            d.push("fcw".to_string());
        }
        if self.fsw != other.fsw {
            d.push("fsw".to_string());
        }
        if self.ftw != other.ftw {
            d.push("ftw".to_string());
        }
        for i in 0..8 {
            if self.st_valid(i) && other.st_valid(i) && self.st[i] != other.st[i] {
                d.push(format!("st{i}"));
            }
        }
        if self.mxcsr != other.mxcsr {
            d.push("mxcsr".to_string());
        }
        for i in 0..16 {
            if self.xmm[i] != other.xmm[i] {
                d.push(format!("xmm{i}"));
            }
        }
        for i in 0..16 {
            if self.ymm_hi[i] != other.ymm_hi[i] {
                d.push(format!("ymm{i}_hi"));
            }
        }
        d
    }
}

/// Formats an 80-bit register as `sign exponent.significand`.
pub fn f80_text(r: &[u8; 10]) -> String {
    let sig = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
    let se = u16::from_le_bytes([r[8], r[9]]);
    format!("{}{:04x}.{sig:016x}", if se >> 15 == 1 { '-' } else { '+' }, se & 0x7FFF)
}
