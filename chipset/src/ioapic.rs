//! Intel 82093AA I/O APIC (24 inputs, version 0x20).
//!
//! # MMIO offsets
//!
//! | Offset | Register |
//! |---|---|
//! | 0x00 | IOREGSEL: index of the register IOWIN accesses (bits 7:0) |
//! | 0x10 | IOWIN: the selected register |
//! | 0x40 | EOI: writing a vector clears remote IRR of level-triggered entries with that vector |
//!
//! Indirect registers: 0x00 ID (bits 27:24), 0x01 version (0x0017_0020: 24 entries, version 0x20), 0x02
//! arbitration ID (reads as the ID), 0x10 + 2n / 0x11 + 2n low / high half of redirection entry n (0-23).
//! Accesses are 32-bit; narrower reads return the addressed bytes and narrower writes merge into the
//! register (IOREGSEL takes its low byte). Unimplemented registers read all ones.
//!
//! # Delivery
//!
//! Inputs come from [`IoApic::set_irq_levels`] or [`IoApic::set_line`]. An unmasked edge-triggered entry
//! sends a message on each assertion (edges on masked entries are lost, per the datasheet). A level
//! entry sends one when its input is asserted, it is unmasked and remote IRR is clear, and sets remote IRR;
//! [`IoApic::eoi`] (the local APIC's EOI broadcast, or a write to the EOI register) clears remote IRR and
//! sends again if the input is still asserted. Messages queue until the machine takes them with
//! [`IoApic::take_messages`] and hands them to the local APICs; delivery status is therefore always idle.
//! Polarity (bit 13) inverts the input.

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, IrqLevels, SnapshotError, SnapshotReader, SnapshotWriter};

use crate::{le_value, put_le};

/// Number of redirection entries.
pub const IOAPIC_PINS: usize = 24;
/// Version register value.
const VERSION: u32 = 0x0017_0020;
/// Most messages kept undelivered.
const MAX_MESSAGES: usize = 1024;

const RTE_DEST_LOGICAL: u64 = 1 << 11;
const RTE_POLARITY_LOW: u64 = 1 << 13;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASK: u64 = 1 << 16;
/// Bits the guest can write (read-only: delivery status 12, remote IRR 14, reserved 17-55).
const RTE_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// An interrupt message from the I/O APIC to the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicMessage {
    /// Interrupt vector.
    pub vector: u8,
    /// Delivery mode: 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 7 ExtINT.
    pub delivery_mode: u8,
    /// Logical (true) or physical (false) destination.
    pub dest_logical: bool,
    /// Destination APIC ID (physical) or logical destination set.
    pub dest: u8,
    /// Level triggered: the receiving APIC sets TMR and broadcasts the EOI back.
    pub trigger_level: bool,
}

/// The 82093AA I/O APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoApic {
    id: u8,
    regsel: u8,
    redir: [u64; IOAPIC_PINS],
    /// Raw input levels (before polarity).
    lines: u32,
    messages: Vec<IoApicMessage>,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new(0)
    }
}

impl IoApic {
    /// An I/O APIC with APIC ID `id` (4 bits), all entries masked.
    pub fn new(id: u8) -> Self {
        IoApic { id: id & 0x0f, regsel: 0, redir: [RTE_MASK; IOAPIC_PINS], lines: 0, messages: Vec::new() }
    }

    /// Redirection entry `pin` (64 bits), or 0 for a pin that does not exist.
    pub fn redirection(&self, pin: usize) -> u64 {
        self.redir.get(pin).copied().unwrap_or(0)
    }

    /// Takes the messages sent since the last call, oldest first.
    pub fn take_messages(&mut self) -> Vec<IoApicMessage> {
        std::mem::take(&mut self.messages)
    }

    /// Whether messages are waiting.
    pub fn has_messages(&self) -> bool {
        !self.messages.is_empty()
    }

    fn asserted(&self, pin: usize) -> bool {
        let high = self.lines & (1 << pin) != 0;
        high != (self.redir[pin] & RTE_POLARITY_LOW != 0)
    }

    fn send(&mut self, pin: usize) {
        let e = self.redir[pin];
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(IoApicMessage {
                vector: e as u8,
                delivery_mode: ((e >> 8) & 7) as u8,
                dest_logical: e & RTE_DEST_LOGICAL != 0,
                dest: (e >> 56) as u8,
                trigger_level: e & RTE_LEVEL != 0,
            });
        }
        if e & RTE_LEVEL != 0 {
            self.redir[pin] |= RTE_REMOTE_IRR;
        }
    }

    /// Sends for a level entry if it is asserted, unmasked and not awaiting an EOI.
    fn service_level(&mut self, pin: usize) {
        let e = self.redir[pin];
        if e & RTE_LEVEL != 0 && e & (RTE_MASK | RTE_REMOTE_IRR) == 0 && self.asserted(pin) {
            self.send(pin);
        }
    }

    /// Sets input `gsi` to `high`. Out-of-range inputs are ignored.
    pub fn set_line(&mut self, gsi: u32, high: bool) {
        self.input(gsi, high, false);
    }

    fn input(&mut self, gsi: u32, high: bool, pulse: bool) {
        let pin = gsi as usize;
        if pin >= IOAPIC_PINS {
            return;
        }
        let was = self.asserted(pin);
        if high {
            self.lines |= 1 << pin;
        } else {
            self.lines &= !(1 << pin);
        }
        let now = self.asserted(pin);
        let e = self.redir[pin];
        if e & RTE_LEVEL != 0 {
            self.service_level(pin);
        } else if e & RTE_MASK == 0 && ((now && !was) || (pulse && e & RTE_POLARITY_LOW == 0)) {
            self.send(pin);
        }
    }

    /// Applies the machine's line levels; `levels.rising` edges are delivered even if the line is low
    /// again (pulses).
    pub fn set_irq_levels(&mut self, levels: &IrqLevels) {
        for gsi in 0..IOAPIC_PINS as u32 {
            let high = levels.is_high(gsi);
            let edge = levels.rising & (1 << gsi) != 0;
            let was = self.lines & (1 << gsi) != 0;
            if edge && was && high {
                // Already high and a fresh edge: the line pulsed low in between.
                self.input(gsi, false, false);
            }
            if high != (self.lines & (1 << gsi) != 0) || edge {
                self.input(gsi, high, edge && !high);
            }
        }
    }

    /// End of interrupt for `vector` (from a local APIC's EOI of a level-triggered vector): clears remote
    /// IRR of matching level entries and re-sends those whose input is still asserted.
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..IOAPIC_PINS {
            let e = self.redir[pin];
            if e as u8 == vector && e & RTE_REMOTE_IRR != 0 {
                self.redir[pin] &= !RTE_REMOTE_IRR;
                self.service_level(pin);
            }
        }
    }

    fn read_indirect(&self) -> u32 {
        match self.regsel {
            0x00 => u32::from(self.id) << 24,
            0x01 => VERSION,
            0x02 => u32::from(self.id) << 24,
            r @ 0x10..=0x3f => {
                let e = self.redir[usize::from((r - 0x10) / 2)];
                if r & 1 == 0 { e as u32 } else { (e >> 32) as u32 }
            }
            _ => 0xffff_ffff,
        }
    }

    fn write_indirect(&mut self, v: u32) {
        match self.regsel {
            0x00 => self.id = ((v >> 24) & 0x0f) as u8,
            r @ 0x10..=0x3f => {
                let pin = usize::from((r - 0x10) / 2);
                let old = self.redir[pin];
                let shift = if r & 1 == 0 { 0 } else { 32 };
                let merged = (old & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
                let mut new = (merged & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                if new & RTE_LEVEL == 0 {
                    new &= !RTE_REMOTE_IRR;
                }
                self.redir[pin] = new;
                self.service_level(pin);
            }
            _ => {}
        }
    }

    fn read_dword(&self, offset: u64) -> u32 {
        match offset {
            0x00 => u32::from(self.regsel),
            0x10 => self.read_indirect(),
            _ => 0xffff_ffff,
        }
    }

    fn write_dword(&mut self, offset: u64, v: u32) {
        match offset {
            0x00 => self.regsel = v as u8,
            0x10 => self.write_indirect(v),
            0x40 => self.eoi(v as u8),
            _ => {}
        }
    }
}

impl Device for IoApic {
    fn name(&self) -> &str {
        "ioapic"
    }

    fn mmio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u64, data: &mut [u8]) {
        let base = offset & !3;
        let shift = (offset & 3) * 8;
        let lo = u64::from(self.read_dword(base));
        let v = if data.len() > 4 - (offset & 3) as usize {
            lo | u64::from(self.read_dword(base.wrapping_add(4))) << 32
        } else {
            lo
        };
        put_le(data, v >> shift);
    }

    fn mmio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let before = self.messages.len();
        let base = offset & !3;
        let shift = (offset & 3) * 8;
        let len = data.len().min(8);
        let value = le_value(data);
        let mask = if len >= 8 { u64::MAX } else { (1u64 << (len * 8)) - 1 };
        let old = u64::from(self.read_dword(base));
        let merged = (old & !(mask << shift)) | ((value & mask) << shift);
        if base == 0x40 || base == 0x00 {
            self.write_dword(base, (value << shift) as u32);
        } else {
            self.write_dword(base, merged as u32);
        }
        if len + (offset & 3) as usize > 4 {
            self.write_dword(base.wrapping_add(4), ((value & mask) << shift >> 32) as u32);
        }
        if self.messages.len() > before {
            ctx.requests.reschedule = true;
        }
    }

    /// Power-on state (all entries masked, line levels forgotten, ID kept as board wiring).
    fn reset(&mut self) {
        *self = IoApic::new(self.id);
    }
}

impl Snapshot for IoApic {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.u8(self.id);
        w.u8(self.regsel);
        for e in &self.redir {
            w.u64(*e);
        }
        w.u32(self.lines);
        w.u64(self.messages.len() as u64);
        for m in &self.messages {
            w.u8(m.vector);
            w.u8(m.delivery_mode);
            w.bool(m.dest_logical);
            w.u8(m.dest);
            w.bool(m.trigger_level);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("ioapic")?;
        let mut s = IoApic::new(r.u8()?);
        s.regsel = r.u8()?;
        for e in &mut s.redir {
            *e = r.u64()? & (RTE_WRITABLE | RTE_REMOTE_IRR);
        }
        s.lines = r.u32()? & ((1 << IOAPIC_PINS) - 1);
        let n = r.u64()?;
        if n > MAX_MESSAGES as u64 {
            return Err(SnapshotError::Invalid("ioapic messages".into()));
        }
        for _ in 0..n {
            s.messages.push(IoApicMessage {
                vector: r.u8()?,
                delivery_mode: r.u8()? & 7,
                dest_logical: r.bool()?,
                dest: r.u8()?,
                trigger_level: r.bool()?,
            });
        }
        *self = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    fn rd(b: &mut Bus, io: &mut IoApic, reg: u8) -> u32 {
        io.mmio_write(&mut b.ctx(0), 0, &[reg]);
        let mut d = [0u8; 4];
        io.mmio_read(&mut b.ctx(0), 0x10, &mut d);
        u32::from_le_bytes(d)
    }

    fn wr(b: &mut Bus, io: &mut IoApic, reg: u8, v: u32) {
        io.mmio_write(&mut b.ctx(0), 0, &u32::from(reg).to_le_bytes());
        io.mmio_write(&mut b.ctx(0), 0x10, &v.to_le_bytes());
    }

    #[test]
    fn id_version_and_reset_state() {
        let mut io = IoApic::new(2);
        let mut b = Bus::new();
        assert_eq!(rd(&mut b, &mut io, 0), 0x0200_0000);
        assert_eq!(rd(&mut b, &mut io, 1), 0x0017_0020);
        assert_eq!(rd(&mut b, &mut io, 2), 0x0200_0000);
        wr(&mut b, &mut io, 0, 0x0f00_0000);
        assert_eq!(rd(&mut b, &mut io, 0), 0x0f00_0000);
        for pin in 0..24u8 {
            assert_eq!(rd(&mut b, &mut io, 0x10 + 2 * pin), 0x0001_0000);
            assert_eq!(rd(&mut b, &mut io, 0x11 + 2 * pin), 0);
        }
        assert_eq!(rd(&mut b, &mut io, 0x40), 0xffff_ffff);
        let mut d = [0u8; 4];
        io.mmio_read(&mut b.ctx(0), 0x00, &mut d);
        assert_eq!(d, [0x40, 0, 0, 0], "IOREGSEL reads back");
        io.mmio_read(&mut b.ctx(0), 0x20, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn edge_delivery_and_masking() {
        let mut io = IoApic::new(0);
        let mut b = Bus::new();
        wr(&mut b, &mut io, 0x11 + 2 * 4, 0x0100_0000);
        wr(&mut b, &mut io, 0x10 + 2 * 4, 0x0000_0831); // vector 0x31, logical
        io.set_line(4, true);
        io.set_line(4, true);
        io.set_line(4, false);
        assert_eq!(
            io.take_messages(),
            [IoApicMessage {
                vector: 0x31,
                delivery_mode: 0,
                dest_logical: true,
                dest: 1,
                trigger_level: false
            }]
        );
        wr(&mut b, &mut io, 0x10 + 2 * 4, 0x0001_0831);
        io.set_line(4, true);
        io.set_line(4, false);
        wr(&mut b, &mut io, 0x10 + 2 * 4, 0x0000_0831);
        assert!(!io.has_messages(), "masked edges are lost");
        let mut l = IrqLevels::default();
        l.pulse(4);
        io.set_irq_levels(&l);
        assert_eq!(io.take_messages().len(), 1, "pulse is an edge");
    }

    #[test]
    fn level_remote_irr_and_eoi() {
        let mut io = IoApic::new(0);
        let mut b = Bus::new();
        io.set_line(9, true);
        wr(&mut b, &mut io, 0x10 + 2 * 9, 0x0000_a041); // level, active low, vector 0x41
        assert!(!io.has_messages(), "active-low input high = deasserted");
        io.set_line(9, false);
        let m = io.take_messages();
        assert_eq!(m.len(), 1);
        assert!(m[0].trigger_level);
        assert_eq!(rd(&mut b, &mut io, 0x10 + 2 * 9) & (1 << 14), 1 << 14, "remote IRR");
        wr(&mut b, &mut io, 0x10 + 2 * 9, 0x0000_a041);
        assert_eq!(rd(&mut b, &mut io, 0x10 + 2 * 9) & (1 << 14), 1 << 14, "remote IRR is read-only");
        io.eoi(0x41);
        assert_eq!(io.take_messages().len(), 1, "still asserted: sent again");
        io.set_line(9, true);
        io.mmio_write(&mut b.ctx(0), 0x40, &[0x41, 0, 0, 0]);
        assert!(!io.has_messages());
        assert_eq!(rd(&mut b, &mut io, 0x10 + 2 * 9) & (1 << 14), 0);
    }

    #[test]
    fn unmasking_asserted_level_sends() {
        let mut io = IoApic::new(0);
        let mut b = Bus::new();
        wr(&mut b, &mut io, 0x10 + 2 * 20, 0x0001_8050);
        io.set_line(20, true);
        assert!(!io.has_messages());
        wr(&mut b, &mut io, 0x10 + 2 * 20, 0x0000_8050);
        assert!(b.req.reschedule);
        assert_eq!(io.take_messages()[0].vector, 0x50);
    }

    #[test]
    fn sub_and_wide_accesses() {
        let mut io = IoApic::new(0);
        let mut b = Bus::new();
        io.mmio_write(&mut b.ctx(0), 0, &[0x12]);
        io.mmio_write(&mut b.ctx(0), 0x11, &[0x77]); // byte 1 of the low dword of entry 1
        let mut d = [0u8; 2];
        io.mmio_read(&mut b.ctx(0), 0x10, &mut d);
        assert_eq!(d, [0x00, 0x27], "delivery mode and polarity written, bits 12 and 14 read-only");
        let mut q = [0u8; 8];
        io.mmio_read(&mut b.ctx(0), 0x0c, &mut q);
        assert_eq!(q[4], 0x00);
    }

    #[test]
    fn snapshot_and_hostile_input() {
        let mut io = IoApic::new(1);
        let mut b = Bus::new();
        wr(&mut b, &mut io, 0x10, 0x8030);
        io.set_line(0, true);
        let mut fresh = IoApic::new(0);
        roundtrip(&io, &mut fresh);
        assert_eq!(fresh, io);
        hammer(&mut io, &[], true, 17);
        for g in 0..40 {
            io.set_line(g, g % 3 == 0);
            io.eoi(g as u8);
        }
    }
}
