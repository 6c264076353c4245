//! The PIIX3's PCI functions: the ISA bridge (00:01.0, with the PIRQ routing registers) and the IDE
//! function (00:01.1) with its bus-master register block.

use super::*;
use vmcore::Snapshot;

/// The PIIX3 PCI-to-ISA bridge, 00:01.0 (8086:7000), multi-function.
///
/// PIRQRC[A:D] at 0x60-0x63: bit 7 set disables the route, bits 3:0 select the ISA IRQ (3-7, 9-12, 14,
/// 15 are valid; others are reserved and route nowhere). Power-on value 0x80 each. Also read/write:
/// IORT 0x4C, XBCS 0x4E-0x4F, TOM 0x69, MSTAT 0x6A-0x6B, MBIRQ 0x70-0x71, MBDMA 0x76-0x77, APICBASE
/// 0x80, DLC 0x82, SMI/clock registers 0xA0-0xAF.
#[derive(Clone, Debug)]
pub struct Piix3Isa {
    cfg: ConfigSpace,
}

impl Default for Piix3Isa {
    fn default() -> Self {
        Self::new()
    }
}

/// Offset of PIRQRC[A].
pub const PIRQRC: usize = 0x60;

impl Piix3Isa {
    /// The bridge in its power-on state.
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x8086, 0x7000, 0x06_01_00, 0x00, 0x80);
        cfg.set_u16(reg::COMMAND, 0x0007);
        cfg.set_u16(reg::STATUS, 0x0200);
        for r in
            [0x4C..0x50, 0x60..0x64, 0x69..0x6C, 0x70..0x72, 0x76..0x78, 0x80..0x81, 0x82..0x83, 0xA0..0xB0]
        {
            cfg.set_writable(r);
        }
        cfg.set_bytes(0x4C, &[0x4D, 0x00, 0x03, 0x00]);
        cfg.set_bytes(PIRQRC, &[0x80; 4]);
        cfg.set_bytes(0x69, &[0x02]);
        cfg.set_bytes(0x70, &[0x80, 0x80]);
        cfg.set_bytes(0x76, &[0x0C, 0x0C]);
        Piix3Isa { cfg }
    }

    /// Decodes a PIRQRC value: the ISA IRQ it routes to, if enabled and valid.
    pub fn decode_route(v: u8) -> Option<u8> {
        let irq = v & 0x0F;
        (v & 0x80 == 0 && matches!(irq, 3..=7 | 9..=12 | 14 | 15)).then_some(irq)
    }

    /// The ISA IRQ PIRQ `n` (0 = A) is routed to.
    pub fn pirq_route(&self, n: usize) -> Option<u8> {
        Self::decode_route(self.cfg.u8(PIRQRC + n))
    }
}

impl PciFunction for Piix3Isa {
    fn name(&self) -> &str {
        "piix3-isa"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
}

impl Snapshot for Piix3Isa {
    type Restored = Vec<BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        self.config().save(w);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag(self.name())?;
        self.config_mut().restore(r)
    }
}

/// The PIIX3 IDE function, 00:01.1 (8086:7010), legacy mode only: the command/control blocks stay at
/// the ISA addresses; BAR4 is the 16-byte bus-master IDE I/O block. This is the configuration space only;
/// `storage::Piix3IdeFunction` wraps it with the channels, the drives and the bus master behind it.
#[derive(Clone, Debug)]
pub struct Piix3Ide {
    cfg: ConfigSpace,
}

impl Default for Piix3Ide {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3Ide {
    /// The function in its power-on state (BAR4 at 0, I/O decode off).
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x8086, 0x7010, 0x01_01_80, 0x00, 0x00);
        cfg.set_u16(reg::STATUS, 0x0280);
        cfg.add_bar(4, BarDef { kind: BarKind::Io, size: 16, prefetchable: false });
        cfg.set_writable(0x40..0x45); // IDETIM primary/secondary, SIDETIM
        Piix3Ide { cfg }
    }
}

impl PciFunction for Piix3Ide {
    fn name(&self) -> &str {
        "piix3-ide"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
}

impl Snapshot for Piix3Ide {
    type Restored = Vec<BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        self.config().save(w);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag(self.name())?;
        self.config_mut().restore(r)
    }
}
