//! MMX register file and the x87 state effects of MMX instructions.
//!
//! MM0-MM7 alias the low 64 bits of the physical x87 registers R0-R7 (MMi = `st[i]`, independent of
//! TOP). Per SDM vol. 1 §9.5: every MMX instruction (other than EMMS, which the x87 family owns) sets
//! TOP to 0 and every tag to valid; a write to an MM register also sets bits 79:64 (sign and exponent)
//! of the physical register to all ones. MMX instructions raise #MF when an unmasked x87 exception
//! is pending (FSW.ES).
//!
//! The MMX instructions themselves (PADDB mm ... PSRLQ mm, MOVD/MOVQ mm, the SSE and SSSE3 additions
//! on MM registers) are dispatched by [`super::sse::lookup`] and share their lane arithmetic with the
//! 128-bit forms in [`super::sse_int`]; the operand width comes from the register kind.

use crate::fault::{Fault, vec};
use crate::mem::Ctx;
use iced_x86::Register;

/// FSW.ES (exception summary).
const FSW_ES: u16 = 1 << 7;
/// FSW.TOP field.
const FSW_TOP: u16 = 7 << 11;

/// Index of an MM register.
#[inline]
pub fn mm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::MM0 as usize) & 7
}

/// Reads MMi (the low 64 bits of physical register i).
#[inline]
pub fn read_mm(ctx: &Ctx<'_>, r: Register) -> u64 {
    ctx.st.fpu.st[mm_index(r)] as u64
}

/// Writes MMi: low 64 bits = `v`, bits 79:64 = 0xFFFF, bits above 80 cleared.
#[inline]
pub fn write_mm(ctx: &mut Ctx<'_>, r: Register, v: u64) {
    ctx.st.fpu.st[mm_index(r)] = (0xffffu128 << 64) | v as u128;
}

/// #MF if an unmasked x87 exception is pending.
#[inline]
pub fn check_pending_x87(ctx: &Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.fpu.fsw & FSW_ES != 0 {
        return Err(Fault::Exc { vector: vec::MF, error: None });
    }
    Ok(())
}

/// The MMX state transition: TOP = 0, all tags valid (full tag word 0).
#[inline]
pub fn enter_mmx_state(ctx: &mut Ctx<'_>) {
    ctx.st.fpu.fsw &= !FSW_TOP;
    ctx.st.fpu.ftw = 0;
}
