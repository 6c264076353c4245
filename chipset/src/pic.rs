//! Intel 8259A programmable interrupt controller pair, cascaded on IRQ2, with the PIIX edge/level control
//! registers (ELCR).
//!
//! # Offsets
//!
//! Offsets are `port - 0x20`, so the three port ranges can be registered with `offset_base = start - 0x20`:
//!
//! | Port | Offset | Register |
//! |---|---|---|
//! | 0x20 | 0x000 | master: ICW1, OCW2, OCW3 (write); IRR / ISR / poll (read) |
//! | 0x21 | 0x001 | master: ICW2-4, OCW1 (write); IMR (read) |
//! | 0xA0 | 0x080 | slave: as 0x20 |
//! | 0xA1 | 0x081 | slave: as 0x21 |
//! | 0x4D0 | 0x4B0 | ELCR1: edge (0) / level (1) for IRQ 0-7 (IRQ 0, 1, 2 always edge) |
//! | 0x4D1 | 0x4B1 | ELCR2: for IRQ 8-15 (IRQ 8, 13 always edge) |
//!
//! # Machine interface
//!
//! * Line levels come in through [`DualPic::set_irq_levels`] (an [`IrqLevels`] snapshot: its `rising`
//!   bits are the edges since the last call) or per line with [`DualPic::set_line`] / [`DualPic::pulse_line`].
//! * [`DualPic::has_interrupt`] is the master's INTR output; [`DualPic::acknowledge`] is the INTA cycle and
//!   returns the vector (spurious IRQ 7 / IRQ 15 vectors when the request vanished).
//!
//! # Model
//!
//! Power-on state is uninitialised: no interrupt is signalled until the chip has received its whole
//! initialisation sequence (ICW1, ICW2, then ICW3 unless ICW1 said single, then ICW4 if ICW1 asked for
//! it); an ICW1 while initialised starts a new sequence, silent until its last ICW. ICW1 clears the IMR,
//! the ISR, the edge latches and the special mask mode (8259A datasheet, "Initialization Command
//! Words"), so a chip is fully unmasked right after initialisation until OCW1 masks it. [`DualPic::program_like_bios`] performs the usual BIOS initialisation. The slave's INT output
//! feeds the master's IRQ2 input as a level. In edge mode an edge sets IRR, which stays set until the
//! interrupt is acknowledged (a short pulse is not lost); in level mode IRR follows the line. The 8080/85
//! call mode, buffered mode and the ADI bit are accepted and ignored (the x86 INTA protocol is always used).

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, IrqLevels, SnapshotError, SnapshotReader, SnapshotWriter};

/// One 8259A.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Chip {
    irr: u8,
    isr: u8,
    imr: u8,
    /// Edge/level control: set bits are level triggered.
    elcr: u8,
    /// Bits of `elcr` that may be written.
    elcr_mask: u8,
    /// Input line levels last seen.
    lines: u8,
    /// 0 = ready for OCWs, 2/3/4 = expecting ICW2/3/4.
    init_step: u8,
    /// ICW1 IC4: an ICW4 follows.
    expect_icw4: bool,
    single: bool,
    /// ICW1 LTIM: level-triggered mode for all inputs.
    ltim: bool,
    vector_base: u8,
    icw3: u8,
    auto_eoi: bool,
    rotate_on_aeoi: bool,
    /// Special fully nested mode (ICW4 SFNM).
    sfnm: bool,
    /// The IRQ with the highest priority.
    priority_base: u8,
    special_mask: bool,
    poll: bool,
    read_isr: bool,
    initialized: bool,
}

impl Chip {
    fn new(elcr_mask: u8) -> Self {
        Chip { elcr_mask, ..Chip::default() }
    }

    /// Power-on state (ELCR and line levels are board state and are kept by the caller if desired).
    fn power_on(&mut self) {
        *self = Chip::new(self.elcr_mask);
    }

    fn level_mask(&self) -> u8 {
        if self.ltim { 0xff } else { self.elcr }
    }

    /// Highest-priority set bit of `mask` under the current rotation, as an IRQ number.
    fn highest(&self, mask: u8) -> Option<u8> {
        (0..8u8).map(|i| (i + self.priority_base) & 7).find(|&irq| mask & (1 << irq) != 0)
    }

    /// Priority rank of `irq` (0 = highest).
    fn rank(&self, irq: u8) -> u8 {
        irq.wrapping_sub(self.priority_base) & 7
    }

    /// The IRQ that would be delivered now, given the request bits `irr` (with the cascade input folded
    /// in by the caller), or `None`. `cascade` is the master's slave-input mask (for SFNM).
    fn pending(&self, irr: u8, cascade: u8) -> Option<u8> {
        if !self.initialized {
            return None;
        }
        let req = self.highest(irr & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.sfnm {
            // A slave input in service does not block further requests from the same slave.
            in_service &= !cascade;
        }
        match self.highest(in_service) {
            Some(cur) if self.rank(cur) <= self.rank(req) => None,
            _ => Some(req),
        }
    }

    /// Records acceptance of `irq` (INTA or poll).
    fn ack(&mut self, irq: u8) {
        let bit = 1u8 << (irq & 7);
        if self.level_mask() & bit == 0 {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_aeoi {
                self.priority_base = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    /// A new level on input `irq`; `edge` forces a rising edge (a pulse).
    fn set_line(&mut self, irq: u8, high: bool, edge: bool) {
        let bit = 1u8 << (irq & 7);
        let was = self.lines & bit != 0;
        if high {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        if self.level_mask() & bit != 0 {
            if high {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if edge || (high && !was) {
            self.irr |= bit;
        }
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1
            let elcr = self.elcr;
            let lines = self.lines;
            // The chip is in its initialisation sequence until the last ICW it expects: it signals
            // nothing until then (a re-initialisation silences it too).
            self.power_on();
            self.elcr = elcr;
            self.lines = lines;
            self.expect_icw4 = v & 0x01 != 0;
            self.single = v & 0x02 != 0;
            self.ltim = v & 0x08 != 0;
            // Level inputs that are high keep requesting; edge requests need a fresh edge.
            self.irr = self.lines & self.level_mask();
            self.init_step = 2;
        } else if v & 0x08 == 0 {
            // OCW2
            let level = v & 7;
            match v >> 5 {
                0b001 => {
                    if let Some(irq) = self.highest(self.isr) {
                        self.isr &= !(1 << irq);
                    }
                }
                0b011 => self.isr &= !(1 << level),
                0b101 => {
                    if let Some(irq) = self.highest(self.isr) {
                        self.isr &= !(1 << irq);
                        self.priority_base = (irq + 1) & 7;
                    }
                }
                0b100 => self.rotate_on_aeoi = true,
                0b000 => self.rotate_on_aeoi = false,
                0b111 => {
                    self.isr &= !(1 << level);
                    self.priority_base = (level + 1) & 7;
                }
                0b110 => self.priority_base = (level + 1) & 7,
                _ => {}
            }
        } else {
            // OCW3
            if v & 0x40 != 0 {
                self.special_mask = v & 0x20 != 0;
            }
            if v & 0x02 != 0 {
                self.read_isr = v & 0x01 != 0;
            }
            self.poll = v & 0x04 != 0;
        }
    }

    fn write_data(&mut self, v: u8) {
        let in_sequence = self.init_step != 0;
        match self.init_step {
            2 => {
                self.vector_base = v & 0xf8;
                self.init_step = if !self.single {
                    3
                } else if self.expect_icw4 {
                    4
                } else {
                    0
                };
            }
            3 => {
                self.icw3 = v;
                self.init_step = if self.expect_icw4 { 4 } else { 0 };
            }
            4 => {
                self.auto_eoi = v & 0x02 != 0;
                self.sfnm = v & 0x10 != 0;
                self.init_step = 0;
            }
            _ => self.imr = v,
        }
        if in_sequence && self.init_step == 0 {
            self.initialized = true;
        }
    }

    fn save(&self, w: &mut SnapshotWriter) {
        for v in [
            self.irr,
            self.isr,
            self.imr,
            self.elcr,
            self.lines,
            self.init_step,
            self.vector_base,
            self.icw3,
            self.priority_base,
        ] {
            w.u8(v);
        }
        for v in [
            self.expect_icw4,
            self.single,
            self.ltim,
            self.auto_eoi,
            self.rotate_on_aeoi,
            self.sfnm,
            self.special_mask,
            self.poll,
            self.read_isr,
            self.initialized,
        ] {
            w.bool(v);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        let mut c = Chip::new(self.elcr_mask);
        [c.irr, c.isr, c.imr, c.elcr, c.lines, c.init_step, c.vector_base, c.icw3, c.priority_base] =
            r.u8s::<9>()?;
        [
            c.expect_icw4,
            c.single,
            c.ltim,
            c.auto_eoi,
            c.rotate_on_aeoi,
            c.sfnm,
            c.special_mask,
            c.poll,
            c.read_isr,
            c.initialized,
        ] = r.bools::<10>()?;
        if c.init_step > 4 || c.init_step == 1 || c.priority_base > 7 {
            return Err(SnapshotError::Invalid("pic state".into()));
        }
        c.elcr &= c.elcr_mask;
        *self = c;
        Ok(())
    }
}

/// The master/slave 8259A pair of a PC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DualPic {
    chips: [Chip; 2],
    /// The master's IRR latch for the cascade input (set on a rising edge of the slave's INT output).
    cascade_latch: bool,
    /// The slave's INT output as last seen, for edge detection.
    slave_out_prev: bool,
}

impl Default for DualPic {
    fn default() -> Self {
        Self::new()
    }
}

/// Master IRQ input that the slave is wired to.
const CASCADE_IRQ: u8 = 2;

impl DualPic {
    /// A PIC pair in its power-on (uninitialised) state.
    pub fn new() -> Self {
        DualPic { chips: [Chip::new(0xf8), Chip::new(0xde)], cascade_latch: false, slave_out_prev: false }
    }

    /// Initialises both chips as a PC BIOS does: edge triggered, cascaded on IRQ2, 8086 mode, normal
    /// EOI, vector bases `master_base` and `slave_base`; all lines masked except the cascade.
    pub fn program_like_bios(&mut self, master_base: u8, slave_base: u8) {
        for (i, (base, icw3, imr)) in
            [(master_base, 0x04, 0xfb), (slave_base, 0x02, 0xff)].into_iter().enumerate()
        {
            let c = &mut self.chips[i];
            c.write_command(0x11);
            c.write_data(base);
            c.write_data(icw3);
            c.write_data(0x01);
            c.write_data(imr);
        }
        self.sync_cascade();
    }

    /// Latches a rising edge of the slave's INT output into the master's cascade request.
    fn sync_cascade(&mut self) {
        let out = self.slave_output();
        if out && !self.slave_out_prev {
            self.cascade_latch = true;
        }
        self.slave_out_prev = out;
    }

    /// Whether the slave's INT output is asserted.
    fn slave_output(&self) -> bool {
        self.chips[1].pending(self.chips[1].irr, 0).is_some()
    }

    fn master_irr(&self) -> u8 {
        let m = &self.chips[0];
        if m.single {
            return m.irr;
        }
        let cascade = 1u8 << CASCADE_IRQ;
        // The request stays latched after the slave withdraws (giving the IRQ 15 spurious case) and is
        // also kept alive while the slave's output stays asserted, so no slave request is lost.
        let requested = self.cascade_latch || self.slave_output();
        (m.irr & !cascade) | if requested { cascade } else { 0 }
    }

    fn cascade_mask(&self) -> u8 {
        if self.chips[0].single { 0 } else { 1 << CASCADE_IRQ }
    }

    /// Sets ISA line `irq` (0-15) to `high`. Out-of-range lines are ignored. The cascade line (IRQ2) is
    /// driven by the slave, so external levels on it are ignored unless the master is in single mode.
    pub fn set_line(&mut self, irq: u32, high: bool) {
        if irq < 16 {
            self.chips[(irq / 8) as usize].set_line((irq % 8) as u8, high, false);
            self.sync_cascade();
        }
    }

    /// A rising-and-falling pulse on ISA line `irq`.
    pub fn pulse_line(&mut self, irq: u32) {
        if irq < 16 {
            self.chips[(irq / 8) as usize].set_line((irq % 8) as u8, false, true);
            self.sync_cascade();
        }
    }

    /// Applies the machine's line levels (lines 0-15). `levels.rising` marks the edges since the last call,
    /// so pulses that left the line low are seen too.
    pub fn set_irq_levels(&mut self, levels: &IrqLevels) {
        for irq in 0..16u32 {
            let chip = &mut self.chips[(irq / 8) as usize];
            let bit = 1u8 << (irq % 8);
            let high = levels.is_high(irq);
            let edge = levels.rising & (1 << irq) != 0;
            if high != (chip.lines & bit != 0) || edge {
                chip.set_line((irq % 8) as u8, high, edge);
            }
        }
        self.sync_cascade();
    }

    /// The master's INTR output: an interrupt is waiting for [`DualPic::acknowledge`].
    pub fn has_interrupt(&self) -> bool {
        self.chips[0].pending(self.master_irr(), self.cascade_mask()).is_some()
    }

    /// The CPU's interrupt-acknowledge cycle: returns the vector and moves the request into service. When
    /// no request is pending any more, returns the spurious vector (IRQ 7 of the master, or IRQ 15 of the
    /// slave when the master delivered the cascade input) without setting the corresponding ISR bit.
    pub fn acknowledge(&mut self) -> u8 {
        let v = self.acknowledge_inner();
        self.sync_cascade();
        v
    }

    fn acknowledge_inner(&mut self) -> u8 {
        let cascade = self.cascade_mask();
        let Some(irq) = self.chips[0].pending(self.master_irr(), cascade) else {
            return self.chips[0].vector_base | 7;
        };
        if cascade & (1 << irq) != 0 {
            self.cascade_latch = false;
            self.chips[0].ack(irq);
            let slave = &mut self.chips[1];
            match slave.pending(slave.irr, 0) {
                Some(sirq) => {
                    slave.ack(sirq);
                    slave.vector_base | sirq
                }
                None => slave.vector_base | 7,
            }
        } else {
            self.chips[0].ack(irq);
            self.chips[0].vector_base | irq
        }
    }

    /// Interrupt mask register of the master (`chip` 0) or slave (1).
    pub fn imr(&self, chip: usize) -> u8 {
        self.chips.get(chip).map_or(0xff, |c| c.imr)
    }

    /// In-service register of the master (0) or slave (1).
    pub fn isr(&self, chip: usize) -> u8 {
        self.chips.get(chip).map_or(0, |c| c.isr)
    }

    /// Interrupt request register of the master (0) or slave (1), with the cascade input folded in.
    pub fn irr(&self, chip: usize) -> u8 {
        match chip {
            0 => self.master_irr(),
            1 => self.chips[1].irr,
            _ => 0,
        }
    }

    /// Edge/level control of lines 0-15 (bit n set: line n is level triggered).
    pub fn elcr(&self) -> u16 {
        u16::from_le_bytes([self.chips[0].elcr, self.chips[1].elcr])
    }

    fn poll_read(&mut self, which: usize) -> u8 {
        self.chips[which].poll = false;
        let irr = if which == 0 { self.master_irr() } else { self.chips[1].irr };
        let cascade = if which == 0 { self.cascade_mask() } else { 0 };
        match self.chips[which].pending(irr, cascade) {
            Some(irq) => {
                if cascade & (1 << irq) != 0 {
                    self.cascade_latch = false;
                }
                self.chips[which].ack(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    fn read(&mut self, offset: u16) -> u8 {
        match offset {
            0x000 | 0x080 => {
                let which = usize::from(offset == 0x080);
                if self.chips[which].poll {
                    self.poll_read(which)
                } else if self.chips[which].read_isr {
                    self.chips[which].isr
                } else {
                    self.irr(which)
                }
            }
            0x001 | 0x081 => {
                let which = usize::from(offset == 0x081);
                if self.chips[which].poll { self.poll_read(which) } else { self.chips[which].imr }
            }
            0x4b0 => self.chips[0].elcr,
            0x4b1 => self.chips[1].elcr,
            _ => 0xff,
        }
    }

    fn write(&mut self, offset: u16, v: u8) {
        match offset {
            0x000 => self.chips[0].write_command(v),
            0x001 => self.chips[0].write_data(v),
            0x080 => self.chips[1].write_command(v),
            0x081 => self.chips[1].write_data(v),
            0x4b0 | 0x4b1 => {
                let c = &mut self.chips[usize::from(offset == 0x4b1)];
                c.elcr = v & c.elcr_mask;
                // Re-evaluate IRR for lines that became level triggered.
                c.irr = (c.irr & !c.elcr) | (c.lines & c.elcr);
            }
            _ => {}
        }
    }
}

impl Device for DualPic {
    fn name(&self) -> &str {
        "pic"
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = self.read(offset);
            self.sync_cascade();
        }
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.write(offset, v);
            self.sync_cascade();
            // A changed mask or EOI may make an interrupt deliverable.
            ctx.requests.reschedule |= self.has_interrupt();
        }
    }

    /// Power-on state, including the remembered line levels (the machine resets its lines with it).
    fn reset(&mut self) {
        *self = DualPic::new();
    }
}

impl Snapshot for DualPic {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        for c in &self.chips {
            c.save(w);
        }
        w.bool(self.cascade_latch);
        w.bool(self.slave_out_prev);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("pic")?;
        let mut chips = self.chips.clone();
        for c in &mut chips {
            c.restore(r)?;
        }
        let latch = r.bool()?;
        let prev = r.bool()?;
        self.chips = chips;
        self.cascade_latch = latch;
        self.slave_out_prev = prev;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    fn bios_pic() -> (DualPic, Bus) {
        let mut p = DualPic::new();
        let mut b = Bus::new();
        for (off, v) in [(0x00, 0x11), (0x01, 0x08), (0x01, 0x04), (0x01, 0x01), (0x80, 0x11), (0x81, 0x70)] {
            b.wr(&mut p, 0, off, v);
        }
        b.wr(&mut p, 0, 0x81, 0x02);
        b.wr(&mut p, 0, 0x81, 0x01);
        b.wr(&mut p, 0, 0x01, 0x00);
        b.wr(&mut p, 0, 0x81, 0x00);
        (p, b)
    }

    #[test]
    fn uninitialised_pic_is_silent() {
        let mut p = DualPic::new();
        p.set_line(1, true);
        assert!(!p.has_interrupt());
        p.program_like_bios(0x08, 0x70);
        assert_eq!(p.imr(0), 0xfb);
        p.set_line(0, true);
        assert!(!p.has_interrupt(), "masked");
        let mut b = Bus::new();
        b.wr(&mut p, 0, 1, 0xfa);
        assert!(p.has_interrupt());
        assert_eq!(p.acknowledge(), 0x08);
    }

    /// Nothing is signalled in the middle of the ICW sequence, however long it takes, even with IRQ
    /// edges arriving and the IMR cleared by ICW1; the pending edge is delivered at the end.
    #[test]
    fn silent_until_the_last_icw() {
        let mut p = DualPic::new();
        let mut b = Bus::new();
        p.pulse_line(0);
        assert!(!p.has_interrupt(), "power-on");
        b.wr(&mut p, 0, 1, 0x00); // OCW1 before any ICW1 does not initialise
        assert!(!p.has_interrupt(), "OCW1 at power-on");
        b.wr(&mut p, 0, 0, 0x11); // ICW1: cascade, ICW4 needed
        p.pulse_line(0);
        assert!(!p.has_interrupt(), "after ICW1");
        b.wr(&mut p, 0, 1, 0x20);
        p.pulse_line(0);
        assert!(!p.has_interrupt(), "after ICW2");
        b.wr(&mut p, 0, 1, 0x04);
        assert!(!p.has_interrupt(), "after ICW3");
        b.wr(&mut p, 0, 1, 0x01);
        assert!(p.has_interrupt(), "after ICW4, IRQ0 unmasked by ICW1");
        assert_eq!(p.acknowledge(), 0x20);
        // Single mode without ICW4: initialised after ICW2.
        let mut q = DualPic::new();
        b.wr(&mut q, 0, 0, 0x12);
        q.pulse_line(3);
        assert!(!q.has_interrupt());
        b.wr(&mut q, 0, 1, 0x40);
        assert_eq!(q.acknowledge(), 0x43);
        // A re-initialisation silences the chip until it completes.
        let (mut r, mut b) = bios_pic();
        b.wr(&mut r, 0, 0, 0x11);
        r.pulse_line(1);
        b.wr(&mut r, 0, 1, 0x08);
        b.wr(&mut r, 0, 1, 0x04);
        assert!(!r.has_interrupt(), "re-initialisation in progress");
        b.wr(&mut r, 0, 1, 0x01);
        assert_eq!(r.acknowledge(), 0x09);
    }

    #[test]
    fn edge_priority_and_nonspecific_eoi() {
        let (mut p, mut b) = bios_pic();
        p.set_line(3, true);
        p.set_line(1, true);
        assert!(p.has_interrupt());
        assert_eq!(b.rd(&mut p, 0, 0), 0x0a, "IRR");
        assert_eq!(p.acknowledge(), 0x09);
        assert_eq!(p.isr(0), 0x02);
        assert!(!p.has_interrupt(), "IRQ3 lower priority than IRQ1 in service");
        b.wr(&mut p, 0, 0, 0x0b); // OCW3 read ISR
        assert_eq!(b.rd(&mut p, 0, 0), 0x02);
        b.wr(&mut p, 0, 0, 0x20); // EOI
        assert!(p.has_interrupt());
        assert_eq!(p.acknowledge(), 0x0b);
        // Edge: holding the line high does not re-request.
        b.wr(&mut p, 0, 0, 0x20);
        assert!(!p.has_interrupt());
        p.set_line(3, false);
        p.set_line(3, true);
        assert!(p.has_interrupt());
    }

    #[test]
    fn cascade_and_slave_eoi() {
        let (mut p, mut b) = bios_pic();
        p.set_line(12, true);
        assert!(p.has_interrupt());
        assert_eq!(b.rd(&mut p, 0, 0) & 0x04, 0x04, "cascade input in master IRR");
        assert_eq!(p.acknowledge(), 0x74);
        assert_eq!(p.isr(0), 0x04);
        assert_eq!(p.isr(1), 0x10);
        p.set_line(8, true);
        assert!(!p.has_interrupt(), "master IRQ2 in service blocks slave");
        b.wr(&mut p, 0, 0x80, 0x20);
        b.wr(&mut p, 0, 0x00, 0x20);
        assert_eq!(p.acknowledge(), 0x70);
    }

    #[test]
    fn master_spurious_irq7() {
        let (mut p, mut b) = bios_pic();
        assert!(!p.has_interrupt());
        assert_eq!(p.acknowledge(), 0x0f);
        b.wr(&mut p, 0, 0x4b0, 0x08);
        p.set_line(3, true);
        assert!(p.has_interrupt());
        p.set_line(3, false); // level request withdrawn before INTA
        assert_eq!(p.acknowledge(), 0x0f);
        assert_eq!(p.isr(0), 0, "no ISR bit for spurious IRQ7");
    }

    #[test]
    fn slave_spurious_irq15_sets_master_isr() {
        let (mut p, mut b) = bios_pic();
        p.set_line(9, true);
        assert!(p.has_interrupt());
        b.wr(&mut p, 0, 0x81, 0x02); // slave request disappears (masked) after the master latched it
        assert!(p.has_interrupt(), "master IRR2 latched");
        assert_eq!(p.acknowledge(), 0x77);
        assert_eq!(p.isr(0), 0x04, "master must still be EOIed");
        assert_eq!(p.isr(1), 0);
    }

    #[test]
    fn level_triggered_via_elcr() {
        let (mut p, mut b) = bios_pic();
        b.wr(&mut p, 0, 0x4b1, 0xff);
        assert_eq!(b.rd(&mut p, 0, 0x4b1), 0xde, "IRQ8 and IRQ13 are edge only");
        b.wr(&mut p, 0, 0x4b0, 0xff);
        assert_eq!(b.rd(&mut p, 0, 0x4b0), 0xf8);
        p.set_line(11, true);
        assert_eq!(p.acknowledge(), 0x73);
        b.wr(&mut p, 0, 0x80, 0x20);
        b.wr(&mut p, 0, 0x00, 0x20);
        assert!(p.has_interrupt(), "level still high requests again");
        assert_eq!(p.acknowledge(), 0x73);
        b.wr(&mut p, 0, 0x80, 0x20);
        b.wr(&mut p, 0, 0x00, 0x20);
        // The slave's output rose again at the EOI (latched by the master); if the device drops its line
        // before INTA, the CPU sees the slave's spurious vector, as on real hardware.
        p.set_line(11, false);
        assert_eq!(p.acknowledge(), 0x77);
        b.wr(&mut p, 0, 0x00, 0x20);
        assert!(!p.has_interrupt());
        assert_eq!(p.elcr(), 0xdef8);
    }

    #[test]
    fn irq_levels_with_pulses() {
        let (mut p, _) = bios_pic();
        let mut l = IrqLevels::default();
        l.pulse(0);
        l.set(4, true);
        p.set_irq_levels(&l);
        assert_eq!(p.acknowledge(), 0x08);
        assert_eq!(p.irr(0), 0x10);
    }

    #[test]
    fn specific_eoi_rotation_and_priority() {
        let (mut p, mut b) = bios_pic();
        // Set priority: IRQ4 lowest, so IRQ5 highest.
        b.wr(&mut p, 0, 0, 0xc4);
        p.set_line(3, true);
        p.set_line(6, true);
        assert_eq!(p.acknowledge(), 0x0e, "IRQ6 outranks IRQ3 after rotation");
        b.wr(&mut p, 0, 0, 0x66); // specific EOI IRQ6
        assert_eq!(p.isr(0), 0);
        assert_eq!(p.acknowledge(), 0x0b);
        b.wr(&mut p, 0, 0, 0xa0); // rotate on non-specific EOI: IRQ3 lowest
        assert_eq!(p.chips[0].priority_base, 4);
        p.set_line(0, true);
        p.set_line(5, true);
        assert_eq!(p.acknowledge(), 0x0d);
        b.wr(&mut p, 0, 0, 0xe5); // rotate on specific EOI
        assert_eq!(p.chips[0].priority_base, 6);
        assert_eq!(p.acknowledge(), 0x08);
    }

    #[test]
    fn auto_eoi_with_rotation() {
        let mut p = DualPic::new();
        let mut b = Bus::new();
        for (off, v) in [(0, 0x13), (1, 0x20), (1, 0x03), (1, 0)] {
            b.wr(&mut p, 0, off, v); // single, ICW4, AEOI
        }
        b.wr(&mut p, 0, 0, 0x80); // rotate in AEOI
        p.set_line(2, true);
        assert_eq!(p.acknowledge(), 0x22, "single mode: IRQ2 is an ordinary input");
        assert_eq!(p.isr(0), 0);
        assert_eq!(p.chips[0].priority_base, 3);
    }

    #[test]
    fn special_mask_mode() {
        let (mut p, mut b) = bios_pic();
        p.set_line(1, true);
        assert_eq!(p.acknowledge(), 0x09);
        p.set_line(5, true);
        assert!(!p.has_interrupt());
        b.wr(&mut p, 0, 1, 0x02); // mask IRQ1 (in service)
        b.wr(&mut p, 0, 0, 0x68); // set special mask
        assert!(p.has_interrupt(), "lower priority allowed while IRQ1 masked");
        assert_eq!(p.acknowledge(), 0x0d);
        b.wr(&mut p, 0, 0, 0x48); // reset special mask
        assert!(!p.chips[0].special_mask);
    }

    #[test]
    fn poll_mode() {
        let (mut p, mut b) = bios_pic();
        p.set_line(6, true);
        b.wr(&mut p, 0, 0, 0x0c);
        assert_eq!(b.rd(&mut p, 0, 0), 0x86);
        assert_eq!(p.isr(0), 0x40, "poll acknowledges");
        b.wr(&mut p, 0, 0, 0x0c);
        assert_eq!(b.rd(&mut p, 0, 1), 0x00, "nothing pending");
        assert_eq!(b.rd(&mut p, 0, 1), 0x00, "IMR after poll cleared");
    }

    #[test]
    fn icw1_reinit_clears_state() {
        let (mut p, mut b) = bios_pic();
        b.wr(&mut p, 0, 1, 0x55);
        p.set_line(1, true);
        p.acknowledge();
        b.wr(&mut p, 0, 0, 0x11);
        assert_eq!(b.rd(&mut p, 0, 1), 0, "IMR cleared");
        assert_eq!(p.isr(0), 0);
        b.wr(&mut p, 0, 1, 0x40);
        b.wr(&mut p, 0, 1, 0x04);
        b.wr(&mut p, 0, 1, 0x01);
        p.set_line(1, false);
        p.set_line(1, true);
        assert_eq!(p.acknowledge(), 0x41);
    }

    #[test]
    fn sfnm_allows_nested_slave() {
        let (mut p, mut b) = bios_pic();
        for (off, v) in [(0, 0x11), (1, 0x08), (1, 0x04), (1, 0x11)] {
            b.wr(&mut p, 0, off, v);
        }
        p.set_line(12, true);
        assert_eq!(p.acknowledge(), 0x74);
        p.set_line(9, true);
        assert!(p.has_interrupt(), "higher-priority slave request nests under SFNM");
        assert_eq!(p.acknowledge(), 0x71);
    }

    #[test]
    fn snapshot_reset_and_hostile_input() {
        let (mut p, _) = bios_pic();
        p.set_line(4, true);
        let mut fresh = DualPic::new();
        roundtrip(&p, &mut fresh);
        assert_eq!(fresh, p);
        p.reset();
        assert!(!p.has_interrupt());
        hammer(&mut p, &[0, 1, 0x80, 0x81, 0x4b0, 0x4b1], false, 3);
    }
}
