//! Hardware task switching through a TSS (Intel SDM vol. 3 ch. 8): JMP/CALL to a TSS descriptor or a
//! task gate, interrupts through a task gate, and IRET with NT set.

use crate::fault::Fault;
use crate::mem::Ctx;

/// Why a task switch happens (it decides busy-bit, NT and back-link handling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// JMP to a TSS or task gate.
    Jmp,
    /// CALL to a TSS or task gate.
    Call,
    /// Interrupt or exception through a task gate.
    Interrupt,
    /// IRET with NT set.
    Iret,
}

/// Interrupt or exception delivered through a task gate naming TSS selector `sel`; `error` is pushed on
/// the new task's stack.
pub fn task_gate_interrupt(ctx: &mut Ctx<'_>, sel: u16, error: Option<u32>) -> Result<(), Fault> {
    switch_task(ctx, sel, SwitchReason::Interrupt, error)
}

/// Switches to the task whose TSS selector is `sel`.
pub fn switch_task(
    ctx: &mut Ctx<'_>,
    sel: u16,
    reason: SwitchReason,
    error: Option<u32>,
) -> Result<(), Fault> {
    let _ = (ctx, sel, reason, error);
    Err(Fault::unimplemented("hardware task switch"))
}
