//! The interrupt controller complex (what crosvm calls an `IrqChip`): the 8259A pair, the I/O APIC, CPU
//! 0's local APIC, the machine's interrupt lines (GSIs 0-23), the PIIX3's PIRQ routing of the PCI lines
//! to 8259 inputs, and the delivery of interrupt messages (MSI) to the local APIC.
//!
//! How an interrupt reaches the CPU: a device sets a line level in [`IrqChip::lines`] (through
//! `DeviceCtx::irq`); after every device call the board calls [`IrqChip::propagate`], which gives the ISA
//! lines (with the PCI lines merged in where PIRQRC routes them) to the 8259s and every line to the I/O
//! APIC (ISA IRQ0 on pin 2, the PCI lines active low); the I/O APIC's messages go to the local APIC, and
//! the 8259's INTR drives the local APIC's LINT0. The CPU asks [`IrqChip::interrupt_pending`] at every
//! instruction boundary and takes the vector with [`IrqChip::acknowledge`]: from the 8259 when LINT0 is in
//! ExtINT mode and it has one, else from the local APIC. A bus master's write into the MSI window is an
//! interrupt message ([`IrqChip::deliver_message`]).
//!
//! The PIC, I/O APIC and local APIC are also ordinary entries of the board's device registry (their
//! ports and MMIO windows are registered like any device's); the chip keeps them typed because the CPU
//! and the other controllers talk to them directly.

use chipset::msi::{X86Interrupt, delivery};
use chipset::{DualPic, IoApic, LocalApic};
use vmcore::Snapshot;
use vmcore::{Device, IrqLevels, MachineRequests, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

/// The local APIC's TSC and timer input clock: the TSC's rate (one tick per virtual ns), which CPUID
/// leaf 15H reports as the core crystal clock.
const APIC_HZ: u64 = cpu::cpuid::TSC_HZ;

/// PCI INTx lines PIRQA-D: GSIs 16-19 in [`IrqLevels`] (asserted = high there; wired active low to the
/// I/O APIC).
pub const PCI_LINES: u32 = 0xF << 16;

/// One of the chip's controllers, as a registry entry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqChipPart {
    /// The 8259A pair (ports 0x20-0x21, 0xA0-0xA1, ELCR 0x4D0-0x4D1).
    Pic,
    /// The I/O APIC (MMIO 0xFEC00000).
    IoApic,
    /// CPU 0's local APIC (MMIO 0xFEE00000; its MSRs come through [`IrqChip::read_msr`]).
    LocalApic,
}

fn new_lapic() -> LocalApic {
    let mut l = LocalApic::new(0, APIC_HZ, APIC_HZ);
    // The BSP's LINT0 starts in ExtINT mode (virtual-wire), as QEMU does, so that a guest that never
    // touches the APIC gets the 8259's interrupts.
    l.set_virtual_wire();
    l
}

/// The interrupt controllers and lines.
pub struct IrqChip {
    /// The 8259A pair.
    pub pic: DualPic,
    /// The I/O APIC.
    pub ioapic: IoApic,
    /// CPU 0's local APIC.
    pub lapic: LocalApic,
    /// Interrupt line levels (GSIs 0-23), written by devices.
    pub lines: IrqLevels,
    /// ISA IRQ each PIRQ line is routed to for the 8259s (PIIX3 PIRQRC), set by the board from config
    /// space.
    pirq_route: [Option<u8>; 4],
    /// An NMI taken from the local APIC, waiting for the CPU.
    nmi_latched: bool,
    /// Interrupt messages delivered to the local APIC (MSI and DMA writes into the MSI window).
    pub msi_delivered: u64,
}

impl Default for IrqChip {
    fn default() -> Self {
        Self::new()
    }
}

impl IrqChip {
    /// The controllers in their power-on state.
    pub fn new() -> IrqChip {
        IrqChip {
            pic: DualPic::new(),
            ioapic: IoApic::new(0),
            lapic: new_lapic(),
            lines: IrqLevels::default(),
            pirq_route: [None; 4],
            nmi_latched: false,
            msi_delivered: 0,
        }
    }

    /// Machine reset: every controller and line back to power-on (the PIRQ routing is the board's to
    /// re-read from the PIIX3).
    pub fn reset(&mut self) {
        self.pic.reset();
        self.ioapic.reset();
        self.lapic = new_lapic();
        self.lines = IrqLevels::default();
    }

    /// The controller `part`, as a device, and the lines it drives: for the registry's dispatch.
    pub fn part(&mut self, part: IrqChipPart) -> (&mut dyn Device, &mut IrqLevels) {
        let IrqChip { pic, ioapic, lapic, lines, .. } = self;
        let d: &mut dyn Device = match part {
            IrqChipPart::Pic => pic,
            IrqChipPart::IoApic => ioapic,
            IrqChipPart::LocalApic => lapic,
        };
        (d, lines)
    }

    /// Sets where the PIIX3 routes PIRQA-D for the 8259s; a change re-propagates the PCI lines.
    pub fn set_pirq_routes(&mut self, routes: [Option<u8>; 4]) {
        if routes != self.pirq_route {
            self.pirq_route = routes;
            // The 8259 inputs the PCI lines feed changed.
            self.lines.changed |= PCI_LINES;
            self.propagate();
        }
    }

    /// Re-sends the PCI lines' idle level to the I/O APIC (they are active low there) on the next
    /// propagation.
    pub fn mark_pci_lines_changed(&mut self) {
        self.lines.changed |= PCI_LINES;
    }

    /// Propagates changed lines to the controllers, I/O APIC messages to the local APIC and level EOIs
    /// back, and the 8259's INTR to LINT0.
    pub fn propagate(&mut self) {
        if self.lines.changed != 0 || self.lines.rising != 0 {
            // PIRQA-D also reach the 8259 inputs the PIIX3 routes them to (level, merged with the ISA line).
            let mut isa = self.lines;
            for (n, route) in self.pirq_route.iter().enumerate() {
                if let Some(irq) = route {
                    let (from, to) = (1u32 << (16 + n), 1u32 << irq);
                    if self.lines.level & from != 0 {
                        isa.level |= to;
                    }
                    if self.lines.rising & from != 0 {
                        isa.rising |= to;
                    }
                    if self.lines.changed & from != 0 {
                        isa.changed |= to;
                    }
                }
            }
            self.pic.set_irq_levels(&isa);
            // ISA IRQ0 (the PIT) is wired to I/O APIC pin 2, as on every PC with an I/O APIC (and as the
            // MADT's interrupt source override says); the other ISA lines map 1:1.
            let mut io = self.lines;
            for f in [&mut io.level, &mut io.rising, &mut io.changed] {
                let irq0 = *f & 1;
                *f = (*f & !0b101) | (irq0 << 2);
            }
            // PCI INTx# is active low at the I/O APIC pins (the tables declare pins 16-19 level, low).
            io.level ^= PCI_LINES;
            io.rising &= !PCI_LINES;
            self.ioapic.set_irq_levels(&io);
            self.lines.changed = 0;
            self.lines.rising = 0;
        }
        // I/O APIC messages to the local APIC, and level-triggered EOIs back (which may re-deliver).
        for _ in 0..4 {
            let msgs = self.ioapic.take_messages();
            for m in &msgs {
                match m.delivery_mode {
                    0 | 1 => self.lapic.accept(m.vector, m.trigger_level),
                    4 => self.lapic.accept_nmi(),
                    // ExtINT through the I/O APIC, SMI, INIT: not used by this board's guests.
                    _ => {}
                }
            }
            let eois = self.lapic.take_eois();
            for v in &eois {
                self.ioapic.eoi(*v);
            }
            if eois.is_empty() && !self.ioapic.has_messages() {
                break;
            }
        }
        // IPIs the one processor sends to itself (self-IPIs, NMIs to its own ID, broadcasts).
        self.lapic.deliver_own_ipis();
        let intr = self.pic.has_interrupt();
        self.lapic.set_lint(0, intr);
    }

    /// An interrupt message (MSI format, SDM vol. 3A 11.11) to the one local APIC: dropped unless the
    /// destination names it (APIC ID, logical destination or broadcast 0xFF). Fixed and lowest-priority
    /// messages set IRR (TMR too for level-triggered ones, whose EOI then goes to the I/O APIC like any
    /// level EOI; a level de-assert message does nothing), NMI raises an NMI. SMI (the CPU has no SMM),
    /// INIT (no INIT-without-reset path exists) and ExtINT (only meaningful from an 8259 on LINT0) are
    /// dropped, as are the reserved modes 3 and 6.
    pub fn deliver_message(&mut self, m: X86Interrupt) {
        if !self.lapic.matches_destination(m.dest_logical, m.dest) {
            return;
        }
        match m.delivery_mode {
            delivery::FIXED | delivery::LOWEST_PRIORITY => {
                if m.trigger_level && !m.level_assert {
                    return;
                }
                self.lapic.accept(m.vector, m.trigger_level);
            }
            delivery::NMI => self.lapic.accept_nmi(),
            _ => return,
        }
        self.msi_delivered += 1;
        self.propagate();
    }

    /// Whether the CPU's INTR has a vector for it (8259 through LINT0, or the local APIC).
    pub fn interrupt_pending(&self) -> bool {
        (self.lapic.accepts_pic_interrupts() && self.pic.has_interrupt())
            || self.lapic.has_interrupt().is_some()
    }

    /// The CPU's interrupt acknowledge: the vector, or `None` if the request went away.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = if self.lapic.accepts_pic_interrupts() && self.pic.has_interrupt() {
            self.pic.acknowledge()
        } else if self.lapic.has_interrupt().is_some() {
            self.lapic.acknowledge()
        } else {
            return None;
        };
        self.propagate();
        Some(v)
    }

    /// Whether an NMI waits for the CPU (latched until [`IrqChip::take_nmi`]).
    pub fn nmi_pending(&mut self) -> bool {
        if self.lapic.take_nmi() {
            self.nmi_latched = true;
        }
        self.nmi_latched
    }

    /// The CPU took the NMI.
    pub fn take_nmi(&mut self) {
        self.nmi_latched = false;
    }

    /// RDMSR of the local APIC's MSRs (TSC deadline, x2APIC registers); `None` for others.
    pub fn read_msr(&mut self, now: VirtTime, msr: u32) -> Option<u64> {
        match msr {
            0x6e0 => Some(self.lapic.tsc_deadline()),
            0x800..=0x8ff => self.lapic.read_reg(now, msr - 0x800),
            _ => None,
        }
    }

    /// WRMSR of the local APIC's MSRs (APIC base, TSC deadline, x2APIC registers); false for others or a
    /// refused value.
    pub fn write_msr(&mut self, now: VirtTime, msr: u32, value: u64, requests: &mut MachineRequests) -> bool {
        let ok = match msr {
            0x1b => {
                self.lapic.set_hw_enabled(value & (1 << 11) != 0);
                self.lapic.set_x2apic_mode(value & (1 << 10) != 0);
                true
            }
            0x6e0 => {
                self.lapic.set_tsc_deadline(value);
                requests.reschedule = true;
                true
            }
            0x800..=0x8ff => self.lapic.write_reg(now, msr - 0x800, value),
            _ => false,
        };
        self.propagate();
        ok
    }

    /// Writes the controllers' and lines' state.
    pub fn save(&self, w: &mut SnapshotWriter) {
        w.tag("irqchip");
        self.pic.save(w);
        self.ioapic.save(w);
        self.lapic.save(w);
        w.u32(self.lines.level);
        w.u32(self.lines.rising);
        w.u32(self.lines.changed);
        for r in self.pirq_route {
            w.u8(r.unwrap_or(0xFF));
        }
        w.bool(self.nmi_latched);
        w.u64(self.msi_delivered);
    }

    /// Restores [`IrqChip::save`].
    pub fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        r.tag("irqchip")?;
        self.pic.restore(r)?;
        self.ioapic.restore(r)?;
        self.lapic.restore(r)?;
        let mask = (1u32 << IrqLevels::LINES) - 1;
        self.lines = IrqLevels { level: r.u32()? & mask, rising: r.u32()? & mask, changed: r.u32()? & mask };
        for route in self.pirq_route.iter_mut() {
            *route = match r.u8()? {
                0xFF => None,
                irq @ 0..=15 => Some(irq),
                v => return Err(SnapshotError::Invalid(format!("PIRQ route {v}"))),
            };
        }
        self.nmi_latched = r.bool()?;
        self.msi_delivered = r.u64()?;
        Ok(())
    }

    /// The earliest deadline of the controllers (the local APIC timer).
    pub fn next_deadline(&self) -> Option<VirtTime> {
        [self.pic.next_deadline(), self.ioapic.next_deadline(), self.lapic.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}
