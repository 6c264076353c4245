//! Exceptions as values. Instruction handlers return `Result<_, Fault>`; nothing panics.

/// Exception vectors.
pub mod vec {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint.
    pub const BP: u8 = 3;
    /// Overflow.
    pub const OF: u8 = 4;
    /// BOUND range exceeded.
    pub const BR: u8 = 5;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// x87 floating-point error.
    pub const MF: u8 = 16;
    /// Alignment check.
    pub const AC: u8 = 17;
    /// Machine check.
    pub const MC: u8 = 18;
    /// SIMD floating-point.
    pub const XM: u8 = 19;
}

/// Why the CPU cannot go on: reported to the machine, never delivered to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// An instruction Ferrite does not implement yet (mnemonic/description).
    Unimplemented(String),
    /// A fault while delivering a double fault.
    TripleFault,
    /// Shutdown requested by the CPU for another reason.
    Shutdown(String),
}

/// How a software interrupt was raised (affects privilege checks and the saved RIP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftKind {
    /// INT n (CD ib): DPL checked, v86 IOPL rules.
    IntN,
    /// INT3 (CC): DPL checked, not subject to v86 IOPL.
    Int3,
    /// INTO (CE): DPL checked.
    Into,
    /// INT1 / ICEBP (F1): no DPL check.
    Icebp,
}

/// A fault raised while executing an instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A fault-class exception: the saved RIP is the faulting instruction's.
    Exc {
        /// Vector.
        vector: u8,
        /// Error code, for vectors that push one.
        error: Option<u32>,
    },
    /// A software interrupt (trap-class): the saved RIP is the next instruction's.
    Soft {
        /// Vector.
        vector: u8,
        /// Which instruction raised it.
        kind: SoftKind,
    },
    /// A condition that stops the machine.
    Stop(Stop),
}

impl Fault {
    /// #GP(error).
    pub fn gp(error: u32) -> Fault {
        Fault::Exc { vector: vec::GP, error: Some(error) }
    }
    /// #GP(0).
    pub fn gp0() -> Fault {
        Fault::gp(0)
    }
    /// #SS(error).
    pub fn ss(error: u32) -> Fault {
        Fault::Exc { vector: vec::SS, error: Some(error) }
    }
    /// #NP(error).
    pub fn np(error: u32) -> Fault {
        Fault::Exc { vector: vec::NP, error: Some(error) }
    }
    /// #TS(error).
    pub fn ts(error: u32) -> Fault {
        Fault::Exc { vector: vec::TS, error: Some(error) }
    }
    /// #UD.
    pub fn ud() -> Fault {
        Fault::Exc { vector: vec::UD, error: None }
    }
    /// #DE.
    pub fn de() -> Fault {
        Fault::Exc { vector: vec::DE, error: None }
    }
    /// #NM.
    pub fn nm() -> Fault {
        Fault::Exc { vector: vec::NM, error: None }
    }
    /// #PF(error); CR2 is set by the page walker before this is returned.
    pub fn pf(error: u32) -> Fault {
        Fault::Exc { vector: vec::PF, error: Some(error) }
    }
    /// #AC(0).
    pub fn ac() -> Fault {
        Fault::Exc { vector: vec::AC, error: Some(0) }
    }
    /// An unimplemented instruction.
    pub fn unimplemented(what: impl Into<String>) -> Fault {
        Fault::Stop(Stop::Unimplemented(what.into()))
    }
}

/// Whether exception `vector` pushes an error code (protected and long mode).
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// Exception class for double-fault detection (SDM vol. 3 table 6-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Benign.
    Benign,
    /// Contributory (#DE, #TS, #NP, #SS, #GP).
    Contributory,
    /// Page fault.
    PageFault,
    /// Double fault.
    DoubleFault,
}

/// The class of `vector`.
pub fn class_of(vector: u8) -> Class {
    match vector {
        0 | 10 | 11 | 12 | 13 => Class::Contributory,
        14 => Class::PageFault,
        8 => Class::DoubleFault,
        _ => Class::Benign,
    }
}
