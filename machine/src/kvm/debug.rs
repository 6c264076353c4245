//! A debugger on the KVM engine: single-step (`KVM_GUESTDBG_SINGLESTEP`) and the four hardware
//! breakpoint slots (DR0-DR3 through `KVM_GUESTDBG_USE_HW_BP`), programmed with KVM_SET_GUEST_DEBUG
//! at every entry where they changed, and the debug exits (`KVM_EXIT_DEBUG`) they cause, which end
//! the engine's run with [`Exit::ReachedStop`] and leave a [`DebugHit`] to take.
//!
//! While a debugger uses the slots the guest's own DR0-DR3/DR7 do not act (KVM loads the debugger's
//! into the hardware; the guest still reads and writes its own values). With nothing requested, guest
//! debugging is off and the guest's debug registers work as without a debugger. Software breakpoints
//! (`KVM_GUESTDBG_USE_SW_BP`) are never enabled, so every INT3 the guest executes reaches the guest.

use super::*;
use kvm_bindings::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_DB, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
    kvm_guest_debug, kvm_guest_debug_arch,
};

/// Hardware breakpoint slots (DR0-DR3).
pub const HW_SLOTS: usize = 4;

/// DR6.BS: the #DB came from a single step.
const DR6_BS: u64 = 1 << 14;

/// What one of DR0-DR3 watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwSlot {
    /// An execution breakpoint at this RIP value: the vCPU stops before the instruction there. The
    /// slot holds the linear address, CS base + RIP (truncated to 32 bits) outside 64-bit mode, as
    /// the code segment is at each entry.
    Exec(u64),
    /// A data breakpoint on `len` (1, 2, 4 or 8) bytes at the linear address `addr`, aligned to
    /// `len`: the vCPU stops after the instruction that wrote them (`write_only`) or accessed them.
    Data {
        /// Linear address, a multiple of `len`.
        addr: u64,
        /// 1, 2, 4 or 8.
        len: u8,
        /// Writes only (DR7 R/W = 01); otherwise reads and writes (R/W = 11: x86 has no read-only
        /// data breakpoint).
        write_only: bool,
    },
}

/// What a debugger asks of the vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestDebugRequest {
    /// Stop after every instruction.
    pub single_step: bool,
    /// DR0, DR1... in order, at most [`HW_SLOTS`].
    pub slots: Vec<HwSlot>,
}

impl GuestDebugRequest {
    /// Whether the request asks for nothing (guest debugging off).
    pub fn is_empty(&self) -> bool {
        !self.single_step && self.slots.is_empty()
    }
}

/// Why the vCPU stopped on a debug exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugHit {
    /// The exception vector (1: #DB).
    pub exception: u32,
    /// DR6 as the exit reported it.
    pub dr6: u64,
    /// The slots (bit `i`: slot `i` of the request) whose condition was met.
    pub slots: u8,
    /// The single step requested completed (DR6.BS).
    pub step: bool,
}

/// The aligned 1/2/4/8-byte pieces covering `len` bytes from `addr` (what DR0-DR3 can watch), or
/// `None` when more than `max` pieces would be needed (or `len` is 0).
pub fn data_pieces(addr: u64, len: u64, max: usize) -> Option<Vec<(u64, u8)>> {
    if len == 0 {
        return None;
    }
    let end = addr.checked_add(len)?;
    let mut pieces = Vec::new();
    let mut at = addr;
    while at < end {
        let size = [8u64, 4, 2, 1].into_iter().find(|&s| at.is_multiple_of(s) && at + s <= end).unwrap_or(1);
        if pieces.len() == max {
            return None;
        }
        pieces.push((at, size as u8));
        at += size;
    }
    Some(pieces)
}

/// The linear address of `rip` in the code segment of `cpu` (the address DR0-DR3 compare).
pub fn exec_linear(cpu: &CpuState, rip: u64) -> u64 {
    if cpu.code_bits() == 64 {
        rip
    } else {
        cpu.seg[cpu::state::Seg::Cs as usize].base.wrapping_add(rip) & 0xffff_ffff
    }
}

/// The KVM_SET_GUEST_DEBUG argument for `req` with the CPU in `cpu`'s mode (no guest debugging for an
/// empty request).
pub fn guest_debug_arg(req: &GuestDebugRequest, cpu: &CpuState) -> kvm_guest_debug {
    if req.is_empty() {
        return kvm_guest_debug::default();
    }
    let mut control = KVM_GUESTDBG_ENABLE;
    if req.single_step {
        control |= KVM_GUESTDBG_SINGLESTEP;
    }
    let mut arch = kvm_guest_debug_arch::default();
    if !req.slots.is_empty() {
        control |= KVM_GUESTDBG_USE_HW_BP;
        // LE and GE: exact data breakpoints (recommended by the SDM whenever data breakpoints are set).
        let mut dr7: u64 = 0x300;
        for (i, s) in req.slots.iter().take(HW_SLOTS).enumerate() {
            let (addr, rw, len) = match *s {
                HwSlot::Exec(rip) => (exec_linear(cpu, rip), 0b00, 0b00),
                HwSlot::Data { addr, len, write_only } => {
                    let lenbits = match len {
                        1 => 0b00,
                        2 => 0b01,
                        8 => 0b10,
                        _ => 0b11,
                    };
                    (addr, if write_only { 0b01 } else { 0b11 }, lenbits)
                }
            };
            arch.debugreg[i] = addr;
            // Ln enables the slot; R/Wn at 16 + 4n, LENn at 18 + 4n.
            dr7 |= 1 << (2 * i);
            dr7 |= (rw as u64) << (16 + 4 * i);
            dr7 |= (len as u64) << (18 + 4 * i);
        }
        arch.debugreg[7] = dr7;
    }
    kvm_guest_debug { control, pad: 0, arch }
}

/// The hit a debug exit with `dr6` and `exception` means for `req`; `None` when the #DB was not the
/// debugger's (the guest's own single step or breakpoint): it goes to the guest.
pub fn classify_debug_exit(req: &GuestDebugRequest, exception: u32, dr6: u64) -> Option<DebugHit> {
    // B0-B3 can be set for a condition whose slot is not enabled: only the requested slots count.
    let used = (1u8 << req.slots.len().min(HW_SLOTS)) - 1;
    let slots = (dr6 as u8) & 0xf & used;
    let step = req.single_step && dr6 & DR6_BS != 0;
    if exception == 1 && slots == 0 && !step {
        return None;
    }
    Some(DebugHit { exception, dr6, slots, step })
}

impl KvmEngine {
    /// Asks for single-stepping and hardware breakpoints from the next run on (an empty request turns
    /// guest debugging off). Refused when more than [`HW_SLOTS`] slots are asked for or a data slot is
    /// not an aligned 1, 2, 4 or 8 bytes.
    pub fn set_guest_debug(&mut self, req: GuestDebugRequest) -> Result<(), String> {
        if req.slots.len() > HW_SLOTS {
            return Err(format!(
                "{} hardware breakpoints and watchpoints asked for; the CPU has {HW_SLOTS} (DR0-DR3)",
                req.slots.len()
            ));
        }
        for s in &req.slots {
            if let HwSlot::Data { addr, len, .. } = *s
                && (![1, 2, 4, 8].contains(&len) || !addr.is_multiple_of(u64::from(len)))
            {
                return Err(format!(
                    "a data breakpoint of {len} bytes at {addr:#x}: not an aligned 1, 2, 4 or 8"
                ));
            }
        }
        self.debug_req = req;
        Ok(())
    }

    /// The guest debugging asked for.
    pub fn guest_debug(&self) -> &GuestDebugRequest {
        &self.debug_req
    }

    /// Why the last run ended on a debug exit ([`Exit::ReachedStop`]), once.
    pub fn take_debug_hit(&mut self) -> Option<DebugHit> {
        self.debug_hit.take()
    }

    /// Programs KVM_SET_GUEST_DEBUG for the request, if it differs from what KVM holds (called at
    /// every entry, after the CPU state is loaded: the slots' linear addresses follow CS).
    pub(super) fn arm_debug(&mut self, cpu: &CpuState) -> Result<(), String> {
        let arg = guest_debug_arg(&self.debug_req, cpu);
        let same = |a: &kvm_guest_debug| a.control == arg.control && a.arch.debugreg == arg.arch.debugreg;
        if self.debug_armed.as_ref().is_some_and(same) {
            return Ok(());
        }
        // Never armed and nothing asked: KVM's default is off already.
        if self.debug_armed.is_none() && arg.control == 0 {
            return Ok(());
        }
        self.vcpu.set_guest_debug(&arg).map_err(|e| format!("KVM_SET_GUEST_DEBUG failed: {e}"))?;
        self.debug_armed = Some(arg);
        Ok(())
    }

    /// Single-stepping, the stepped instruction exited for port I/O or MMIO, which the board has
    /// carried out: KVM completes the instruction (RIP past it) at the next KVM_RUN, entered here with
    /// `immediate_exit` so that no further instruction runs, and that ends the step. (Hardware KVM
    /// reports the step as a debug exit on that completion; PVM does not, and without this a step over
    /// an `out` ran on through the next instruction too.)
    pub(super) fn step_through_io(&mut self, board: &mut Board) -> Result<Exit, String> {
        self.complete_pending(board)?;
        if self.debug_hit.is_none() {
            self.debug_hit = Some(DebugHit { exception: 1, dr6: DR6_BS, slots: 0, step: true });
        }
        Ok(Exit::ReachedStop)
    }

    /// A debug exit: the debugger's hit ends the run; a #DB of the guest's own is handed to the guest
    /// (`KVM_GUESTDBG_INJECT_DB`) and the run goes on.
    pub(super) fn debug_exit(&mut self, arch: kvm_bindings::kvm_debug_exit_arch) -> Result<Ev, String> {
        if self.debug_req.is_empty() {
            return Err(format!(
                "KVM_EXIT_DEBUG (exception {}, dr6 {:#x}) with guest debugging off",
                arch.exception, arch.dr6
            ));
        }
        match classify_debug_exit(&self.debug_req, arch.exception, arch.dr6) {
            Some(hit) => {
                self.debug_hit = Some(hit);
                Ok(Ev::Done(Exit::ReachedStop))
            }
            None => {
                let mut arg = self.debug_armed.unwrap_or_default();
                arg.control |= KVM_GUESTDBG_INJECT_DB;
                self.vcpu
                    .set_guest_debug(&arg)
                    .map_err(|e| format!("KVM_SET_GUEST_DEBUG (injecting #DB) failed: {e}"))?;
                Ok(Ev::Continue)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_pieces_are_aligned_and_bounded() {
        assert_eq!(data_pieces(0x600, 2, 4), Some(vec![(0x600, 2)]));
        assert_eq!(data_pieces(0x1000, 8, 4), Some(vec![(0x1000, 8)]));
        // Unaligned: a byte, a word, a dword, a byte.
        assert_eq!(data_pieces(0x601, 8, 4), Some(vec![(0x601, 1), (0x602, 2), (0x604, 4), (0x608, 1)]));
        assert_eq!(data_pieces(0x601, 8, 3), None);
        assert_eq!(data_pieces(0x600, 0, 4), None);
        assert_eq!(data_pieces(u64::MAX, 2, 4), None);
        assert_eq!(data_pieces(0, 64, 4), None);
    }

    #[test]
    fn the_request_becomes_dr0_to_dr3_and_dr7() {
        let mut cpu = CpuState::default();
        cpu.reset();
        // Real mode after reset: CS base 0xFFFF0000; the slot holds CS base + IP.
        let req = GuestDebugRequest {
            single_step: false,
            slots: vec![
                HwSlot::Exec(0xfff0),
                HwSlot::Data { addr: 0x600, len: 2, write_only: true },
                HwSlot::Data { addr: 0x608, len: 8, write_only: false },
                HwSlot::Data { addr: 0x610, len: 4, write_only: false },
            ],
        };
        let a = guest_debug_arg(&req, &cpu);
        assert_eq!(a.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP);
        assert_eq!(a.arch.debugreg[..4], [0xffff_fff0, 0x600, 0x608, 0x610]);
        // L0-L3, LE|GE; slot 1 R/W=01 LEN=01, slot 2 R/W=11 LEN=10, slot 3 R/W=11 LEN=11.
        let dr7 = 0x55 | 0x300 | (0b0101 << 20) | (0b1011 << 24) | (0b1111 << 28);
        assert_eq!(a.arch.debugreg[7], dr7);
        let step = GuestDebugRequest { single_step: true, slots: Vec::new() };
        let a = guest_debug_arg(&step, &cpu);
        assert_eq!(a.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP);
        assert_eq!(a.arch.debugreg, [0; 8]);
        assert_eq!(guest_debug_arg(&GuestDebugRequest::default(), &cpu).control, 0);
        // 64-bit mode: the slot is RIP itself.
        cpu.cr0 |= cpu::state::cr0::PE;
        cpu.efer |= cpu::state::efer::LMA;
        cpu.seg[cpu::state::Seg::Cs as usize].attr |= cpu::state::attr::L;
        cpu.seg[cpu::state::Seg::Cs as usize].base = 0x1000;
        assert_eq!(exec_linear(&cpu, 0xffff_8000_0000_0000), 0xffff_8000_0000_0000);
    }

    #[test]
    fn a_debug_exit_is_the_debuggers_only_for_its_own_slots_and_step() {
        let req = GuestDebugRequest { single_step: false, slots: vec![HwSlot::Exec(0x100)] };
        assert_eq!(classify_debug_exit(&req, 1, 0xffff_0ff1).map(|h| h.slots), Some(1));
        // B2 set for a slot not requested, BS without a requested step: the guest's own #DB.
        assert_eq!(classify_debug_exit(&req, 1, 0xffff_0ff4), None);
        assert_eq!(classify_debug_exit(&req, 1, 0xffff_4ff0), None);
        let step = GuestDebugRequest { single_step: true, slots: Vec::new() };
        assert!(classify_debug_exit(&step, 1, 0xffff_4ff0).is_some_and(|h| h.step && h.slots == 0));
    }
}
