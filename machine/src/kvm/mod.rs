//! The KVM engine: runs the CPU with hardware virtualization through /dev/kvm, with the same guest RAM
//! mapping and the same userspace devices (port and MMIO exits go to the [`Board`]).
//!
//! How it works (see also `docs/KVM.md`):
//! - One VM with one vCPU and no in-kernel irqchip: the PIC, I/O APIC and local APIC stay Ferrite's
//!   own. Interrupts are injected with `KVM_INTERRUPT` when `ready_for_interrupt_injection` says the
//!   vCPU can take one, otherwise `request_interrupt_window` asks KVM to exit when it can.
//! - Guest RAM regions of the board's address map become KVM memory slots backed by the board's own
//!   RAM mapping (devices, DMA and the interpreter see the same bytes). ROM regions become read-only
//!   slots (writes exit as MMIO and are dropped by the board). Everything else is unmapped: accesses
//!   exit as MMIO and go to [`Board`]'s `read_phys`/`write_phys`, port I/O to `io_in`/`io_out`.
//! - State moves between KVM and [`CpuState`] at the entry and exit of [`KvmEngine::run`], through the
//!   pure conversion functions of `state.rs` ([`KvmState`]), so the machine can switch engine between
//!   slices.
//!
//! Files: `state.rs` (conversions, CPUID), `vcpu.rs` ([`KvmEngine`]: memory slots, entry/exit, the exit
//! loop), `kick.rs` (the deadline signal), `probe.rs` ([`probe`] for `--accel auto`, and
//! [`probe_guest_debug`]), `debug.rs` (single-step and DR0-DR3 for a debugger: [`GuestDebugRequest`]).
//! - Time is host time (the machine puts its clock in host-time mode): `cpu.icount` is the clock's
//!   instruction-slot count (host nanoseconds scaled by the configured speed), updated at every exit,
//!   and a POSIX timer kicks the vCPU out of `KVM_RUN` when the slice's deadline passes.

use crate::board::Board;
use crate::engine::Engine;
use cpu::state::{DescTable, FpuState, Msrs, Segment, attr, cr0, flags};
use cpu::{CpuBus, CpuState, Exit, Stop};
use kvm_bindings::{
    CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY,
    KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW,
    KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI, kvm_cpuid_entry2, kvm_debugregs, kvm_dtable,
    kvm_enable_cap, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use vmcore::map::{Region, RegionKind};

mod debug;
mod kick;
mod probe;
mod state;
#[cfg(test)]
mod tests;
mod vcpu;

pub use debug::*;
use kick::*;
pub use probe::*;
pub use state::*;
pub use vcpu::*;

/// `_IOW(KVMIO, nr, size)`.
const fn kvm_iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | (0xae << 8) | nr
}
/// KVM_INTERRUPT (struct kvm_interrupt: one u32).
const KVM_INTERRUPT: u64 = kvm_iow(0x86, 4);
/// KVM_SET_SIGNAL_MASK (struct kvm_signal_mask: u32 len + the set).
const KVM_SET_SIGNAL_MASK: u64 = kvm_iow(0x8b, 4);

/// A page-aligned anonymous host mapping (ROM copies, the calibration guest's RAM).
struct AnonMap {
    ptr: *mut u8,
    len: usize,
}

impl AnonMap {
    fn new(len: usize) -> Result<AnonMap, String> {
        let len = len.div_ceil(4096).max(1) * 4096;
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory; the result
        // is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap of {len} bytes failed: {}", std::io::Error::last_os_error()));
        }
        Ok(AnonMap { ptr: p as *mut u8, len })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live read-write mapping of `len` bytes owned by `self`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; KVM slots that pointed into it were removed
        // (or the VM closed) before, see `KvmEngine`'s field order and `unmap_all`.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

fn open_kvm() -> Result<Kvm, String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    if kvm.get_api_version() < 0 {
        return Err("/dev/kvm is not a KVM device (KVM_GET_API_VERSION failed)".into());
    }
    if kvm.get_api_version() != 12 {
        return Err(format!("/dev/kvm speaks KVM API version {}, not 12", kvm.get_api_version()));
    }
    Ok(kvm)
}

// ---------------------------------------------------------------------------------------------------
// The engine.
// ---------------------------------------------------------------------------------------------------
