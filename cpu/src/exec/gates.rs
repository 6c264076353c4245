//! Far JMP/CALL through system descriptors: call gates (with privilege change and parameter copy),
//! task gates and TSS descriptors (hardware task switch).

use super::Insn;
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::seg::Desc;

/// A far JMP (`call` = false) or CALL to the system descriptor `d` named by `sel`.
pub fn far_through_system(
    ctx: &mut Ctx<'_>,
    insn: &Insn,
    sel: u16,
    d: Desc,
    call: bool,
    osz: u32,
) -> Result<(), Fault> {
    let _ = (ctx, insn, sel, d, call, osz);
    Err(Fault::unimplemented("far transfer through a call gate, task gate or TSS"))
}
