//! The arithmetic backend of the x87 model: a small trait ([`Backend`]) that computes the numeric
//! outcome of one operation (result values, raised exception flags, condition codes), and its one
//! implementation ([`Host`]) that runs the operation on this machine's own x87 unit.
//!
//! The backend is a pure function of its inputs: it never sees guest memory or guest registers, only
//! the operand values and a control word. Everything architectural around it (stack faults, tags,
//! unmasked-exception responses, #MF, pointers) is Ferrite's, in the parent module.

/// One numeric operation. The operands are `a` (ST(0)) and `b` (ST(1)), plus a 16-byte memory
/// operand buffer for the memory forms. Names follow the host instruction that is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    // ST(0) = ST(0) op ST(1)
    Add,
    Mul,
    Sub,
    Subr,
    Div,
    Divr,
    // ST(1) = ST(1) op ST(0) (the DC/DE register forms)
    AddTo1,
    MulTo1,
    SubrTo1,
    SubTo1,
    DivrTo1,
    DivTo1,
    // ST(0) = ST(0) op m32fp / m64fp / m16int / m32int
    AddM32,
    MulM32,
    SubM32,
    SubrM32,
    DivM32,
    DivrM32,
    AddM64,
    MulM64,
    SubM64,
    SubrM64,
    DivM64,
    DivrM64,
    AddI16,
    MulI16,
    SubI16,
    SubrI16,
    DivI16,
    DivrI16,
    AddI32,
    MulI32,
    SubI32,
    SubrI32,
    DivI32,
    DivrI32,
    // Comparisons (condition codes in the returned FSW).
    Com,
    Ucom,
    ComM32,
    ComM64,
    ComI16,
    ComI32,
    Tst,
    Xam,
    // Loads (push).
    LdM32,
    LdM64,
    IldI16,
    IldI32,
    IldI64,
    Bld,
    Ldpi,
    Ldl2t,
    Ldl2e,
    Ldlg2,
    Ldln2,
    // Stores of ST(0) into the memory buffer (the host's own pop, if any, is ignored by callers).
    StM32,
    StM64,
    IstI16,
    IstI32,
    IstpI64,
    IsttpI16,
    IsttpI32,
    IsttpI64,
    Bstp,
    // Unary on ST(0).
    Sqrt,
    Sin,
    Cos,
    Sincos,
    Ptan,
    F2xm1,
    Rndint,
    Xtract,
    // Binary on ST(0), ST(1).
    Patan,
    Yl2x,
    Yl2xp1,
    Scale,
    Prem,
    Prem1,
}

/// What an operation produced. `st0`/`st1` are the two top registers after the operation, with the
/// stack moved by `delta` (-1 = one push, +1 = one pop) relative to the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// New ST(0).
    pub st0: u128,
    /// New ST(1).
    pub st1: u128,
    /// The status word: exception flags raised by this operation (bits 0-6) and C0-C3.
    pub fsw: u16,
    /// Stack movement.
    pub delta: i32,
}

/// Computes operations with exact x87 semantics.
///
/// Contract: `fcw` carries the precision and rounding control to use and the exception masks. I, D
/// and Z are always passed masked (Ferrite applies their unmasked responses itself); O and U may be
/// unmasked, in which case a register result that overflows or underflows must be delivered with
/// its exponent adjusted by the bias 24576 (SDM vol. 1 8.5.4/8.5.5), as the hardware does.
/// `cbits` are the C0-C3 bits before the operation (kept where the operation leaves them undefined).
pub trait Backend {
    /// Runs `op` on `a` = ST(0), `b` = ST(1) and the memory operand `mem`.
    fn run(&self, op: Op, fcw: u16, cbits: u16, a: u128, b: u128, mem: &mut [u8; 16]) -> Outcome;
}

/// The backend that executes on this host's x87 unit.
pub struct Host;

/// Stores the 108-byte FSAVE image `img` into the host x87 unit, runs one instruction, and saves
/// the state back (FNSAVE, which never waits, so a pending unmasked exception is captured, not
/// delivered, and leaves the unit in its FNINIT state as the ABI expects).
macro_rules! host_ops {
    ($($op:ident => $insn:literal,)*) => {
        fn exec(op: Op, img: &mut [u8; 108], mem: &mut [u8; 16]) {
            let ip = img.as_mut_ptr();
            let mp = mem.as_mut_ptr();
            match op {
                $(Op::$op => {
                    // SAFETY: `ip` points to a live 108-byte buffer (the FRSTOR source and FNSAVE
                    // destination, both 108 bytes in the 32-bit protected-mode format used in 64-bit
                    // mode) and `mp` to a live 16-byte buffer, which is the only memory the instruction
                    // addresses (at most 10 bytes). The image's status word carries no pending unmasked
                    // exception, so nothing traps; FNSAVE re-initialises the unit, leaving the x87 stack
                    // empty and the control word at its ABI default, and no Rust-visible register other
                    // than the clobbered x87 registers changes.
                    unsafe {
                        core::arch::asm!(
                            "frstor [{ip}]",
                            $insn,
                            "fnsave [{ip}]",
                            "# {mp}",
                            ip = in(reg) ip,
                            mp = in(reg) mp,
                            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                            options(nostack),
                        );
                    }
                })*
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
host_ops! {
    Add => ".byte 0xd8, 0xc1",
    Mul => ".byte 0xd8, 0xc9",
    Sub => ".byte 0xd8, 0xe1",
    Subr => ".byte 0xd8, 0xe9",
    Div => ".byte 0xd8, 0xf1",
    Divr => ".byte 0xd8, 0xf9",
    AddTo1 => ".byte 0xdc, 0xc1",
    MulTo1 => ".byte 0xdc, 0xc9",
    SubrTo1 => ".byte 0xdc, 0xe1",
    SubTo1 => ".byte 0xdc, 0xe9",
    DivrTo1 => ".byte 0xdc, 0xf1",
    DivTo1 => ".byte 0xdc, 0xf9",
    AddM32 => "fadd dword ptr [{mp}]",
    MulM32 => "fmul dword ptr [{mp}]",
    SubM32 => "fsub dword ptr [{mp}]",
    SubrM32 => "fsubr dword ptr [{mp}]",
    DivM32 => "fdiv dword ptr [{mp}]",
    DivrM32 => "fdivr dword ptr [{mp}]",
    AddM64 => "fadd qword ptr [{mp}]",
    MulM64 => "fmul qword ptr [{mp}]",
    SubM64 => "fsub qword ptr [{mp}]",
    SubrM64 => "fsubr qword ptr [{mp}]",
    DivM64 => "fdiv qword ptr [{mp}]",
    DivrM64 => "fdivr qword ptr [{mp}]",
    AddI16 => "fiadd word ptr [{mp}]",
    MulI16 => "fimul word ptr [{mp}]",
    SubI16 => "fisub word ptr [{mp}]",
    SubrI16 => "fisubr word ptr [{mp}]",
    DivI16 => "fidiv word ptr [{mp}]",
    DivrI16 => "fidivr word ptr [{mp}]",
    AddI32 => "fiadd dword ptr [{mp}]",
    MulI32 => "fimul dword ptr [{mp}]",
    SubI32 => "fisub dword ptr [{mp}]",
    SubrI32 => "fisubr dword ptr [{mp}]",
    DivI32 => "fidiv dword ptr [{mp}]",
    DivrI32 => "fidivr dword ptr [{mp}]",
    Com => ".byte 0xd8, 0xd1",
    Ucom => ".byte 0xdd, 0xe1",
    ComM32 => "fcom dword ptr [{mp}]",
    ComM64 => "fcom qword ptr [{mp}]",
    ComI16 => "ficom word ptr [{mp}]",
    ComI32 => "ficom dword ptr [{mp}]",
    Tst => "ftst",
    Xam => "fxam",
    LdM32 => "fld dword ptr [{mp}]",
    LdM64 => "fld qword ptr [{mp}]",
    IldI16 => "fild word ptr [{mp}]",
    IldI32 => "fild dword ptr [{mp}]",
    IldI64 => "fild qword ptr [{mp}]",
    Bld => "fbld tbyte ptr [{mp}]",
    Ldpi => "fldpi",
    Ldl2t => "fldl2t",
    Ldl2e => "fldl2e",
    Ldlg2 => "fldlg2",
    Ldln2 => "fldln2",
    StM32 => "fst dword ptr [{mp}]",
    StM64 => "fst qword ptr [{mp}]",
    IstI16 => "fist word ptr [{mp}]",
    IstI32 => "fist dword ptr [{mp}]",
    IstpI64 => "fistp qword ptr [{mp}]",
    IsttpI16 => "fisttp word ptr [{mp}]",
    IsttpI32 => "fisttp dword ptr [{mp}]",
    IsttpI64 => "fisttp qword ptr [{mp}]",
    Bstp => "fbstp tbyte ptr [{mp}]",
    Sqrt => "fsqrt",
    Sin => "fsin",
    Cos => "fcos",
    Sincos => "fsincos",
    Ptan => "fptan",
    F2xm1 => "f2xm1",
    Rndint => "frndint",
    Xtract => "fxtract",
    Patan => "fpatan",
    Yl2x => "fyl2x",
    Yl2xp1 => "fyl2xp1",
    Scale => "fscale",
    Prem => "fprem",
    Prem1 => "fprem1",
}

/// TOP used for the operands in the host image: ST(0) = R2, ST(1) = R3, R0/R1 free for pushes.
const HOST_TOP: u16 = 2;

#[cfg(target_arch = "x86_64")]
impl Backend for Host {
    fn run(&self, op: Op, fcw: u16, cbits: u16, a: u128, b: u128, mem: &mut [u8; 16]) -> Outcome {
        let mut img = [0u8; 108];
        img[0..2].copy_from_slice(&fcw.to_le_bytes());
        let fsw = (cbits & super::CBITS) | (HOST_TOP << 11);
        img[4..6].copy_from_slice(&fsw.to_le_bytes());
        // Tags: R2, R3 in use, the rest empty.
        img[8..10].copy_from_slice(&0xff0fu16.to_le_bytes());
        img[28..38].copy_from_slice(&a.to_le_bytes()[..10]);
        img[38..48].copy_from_slice(&b.to_le_bytes()[..10]);
        exec(op, &mut img, mem);
        let fsw = u16::from_le_bytes([img[4], img[5]]);
        let top = ((fsw >> 11) & 7) as i32;
        let delta = ((top - HOST_TOP as i32 + 4) & 7) - 4;
        let rd = |o: usize| {
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(&img[o..o + 10]);
            u128::from_le_bytes(b)
        };
        Outcome { st0: rd(28), st1: rd(38), fsw: fsw & !(7 << 11), delta }
    }
}
