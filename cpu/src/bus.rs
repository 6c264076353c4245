//! What the CPU needs from the rest of the machine. The CPU never sees a device type.

use std::ptr::NonNull;

/// The CPU's view of the machine.
pub trait CpuBus {
    /// Host pointer to the 4 KiB page of plain RAM (or ROM, for reads) at page-aligned physical address
    /// `page`, valid until the machine's memory map changes (which flushes the CPU's TLB). `None` for
    /// MMIO, unassigned space, and ROM when `write` is set: those go through `read_phys`/`write_phys`.
    fn ram_page(&mut self, page: u64, write: bool) -> Option<NonNull<u8>>;

    /// Physical read of 1-8 bytes (any backing: RAM, ROM, MMIO, unassigned = all ones). Never crosses a
    /// page boundary.
    fn read_phys(&mut self, addr: u64, data: &mut [u8]);

    /// Physical write of 1-8 bytes (ROM and unassigned drop it). Never crosses a page boundary.
    fn write_phys(&mut self, addr: u64, data: &[u8]);

    /// Tells the machine the CPU's retired-instruction count before a device access, so devices see
    /// the exact virtual time of the access. `Ctx::io_in`/`io_out` and the MMIO slow path call it.
    fn sync(&mut self, icount: u64) {
        let _ = icount;
    }

    /// Port input of `size` (1, 2 or 4) bytes.
    fn io_in(&mut self, port: u16, size: u8) -> u32;

    /// Port output of `size` (1, 2 or 4) bytes.
    fn io_out(&mut self, port: u16, size: u8, value: u32);

    /// Whether the INTR line (PIC or local APIC) has an interrupt for the CPU.
    fn interrupt_pending(&mut self) -> bool;

    /// Interrupt acknowledge: the vector to deliver, or `None` if the request went away.
    fn acknowledge_interrupt(&mut self) -> Option<u8>;

    /// Whether an NMI is pending (consumed by `take_nmi`).
    fn nmi_pending(&mut self) -> bool {
        false
    }

    /// Consumes a pending NMI.
    fn take_nmi(&mut self) {}

    /// The machine's time-stamp counter at retired-instruction count `icount`.
    fn tsc(&mut self, icount: u64) -> u64;

    /// RDMSR for MSRs the machine owns (the local APIC's x2APIC range, TSC deadline). `None` = not a
    /// machine MSR (the CPU raises #GP).
    fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let _ = msr;
        None
    }

    /// WRMSR for machine-owned MSRs; false = not a machine MSR or invalid value (#GP).
    fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        let _ = (msr, value);
        false
    }

    /// The x87 FERR# output (numeric errors reported the legacy way, CR0.NE = 0): a PC routes it to
    /// IRQ13 through the chipset. Asserted at a waiting x87 instruction with an error pending, dropped
    /// when software clears the error.
    fn ferr(&mut self, asserted: bool) {
        let _ = asserted;
    }

    /// The IGNNE# input (asserted by a PC chipset after a write to port 0xF0): while asserted, a
    /// pending x87 error is ignored when CR0.NE = 0.
    fn ignne(&mut self) -> bool {
        false
    }

    /// A device asked the engine to end its slice early (reset, exit, a new deadline, an interrupt).
    fn stop_requested(&self) -> bool {
        false
    }
}
