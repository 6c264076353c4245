//! The i440FX host bridge (00:00.0).

use super::*;
use vmcore::Snapshot;

/// The i440FX PCI and memory controller (PMC), host bridge 00:00.0 (8086:1237).
///
/// Registers 0x50-0x7F (PMCCFG, DRAM control and timing, PAM0-6 at 0x59-0x5F, DRB0-7, SMRAM at 0x72)
/// accept writes and read back. The subsystem IDs are QEMU's (1af4:1100, "Qemu virtual machine"),
/// which SeaBIOS checks before it trusts fw_cfg. The PAM registers decide, per segment of
/// 0xC0000-0xFFFFF, whether reads and writes reach DRAM or the PCI side (the BIOS ROM); the function
/// only stores them, and [`pam_segments`] decodes them for the board, which routes the memory (see
/// `machine`'s board: shadowing is on with `--bios`).
#[derive(Clone, Debug)]
pub struct I440fx {
    cfg: ConfigSpace,
}

impl Default for I440fx {
    fn default() -> Self {
        Self::new()
    }
}

impl I440fx {
    /// The host bridge in its power-on state.
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x8086, 0x1237, 0x06_00_00, 0x02, 0x00);
        cfg.set_u16(reg::COMMAND, CMD_MEM | CMD_MASTER);
        cfg.set_u16(reg::STATUS, 0x0280);
        cfg.set_writable(0x50..0x80);
        cfg.set_bytes(0x50, &[0x80]); // PMCCFG
        cfg.set_bytes(0x72, &[0x02]); // SMRAM: C_BASE_SEG = 010
        cfg.set_u16(0x2C, 0x1af4); // subsystem vendor: Red Hat (QEMU's default for every function)
        cfg.set_u16(0x2E, 0x1100); // subsystem: Qemu virtual machine
        I440fx { cfg }
    }
}

/// Offset of PAM0, the first of the seven Programmable Attribute Map registers (0x59-0x5F).
pub const PAM0: usize = 0x59;

/// What a PAM attribute field lets through to DRAM (i440FX datasheet, 3.2.18): bit 0 RE, bit 1 WE.
/// Accesses the field does not let through go to the PCI side, where the BIOS ROM answers reads in
/// 0xE0000-0xFFFFF and writes are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PamAttr {
    /// Reads come from DRAM (else from the PCI side).
    pub read_ram: bool,
    /// Writes go to DRAM (else to the PCI side).
    pub write_ram: bool,
}

impl PamAttr {
    fn from_field(f: u8) -> PamAttr {
        PamAttr { read_ram: f & 1 != 0, write_ram: f & 2 != 0 }
    }
}

/// The 13 segments the PAM registers `pam` (PAM0..PAM6, config bytes 0x59-0x5F) control, as (start,
/// size, attribute): 0xF0000-0xFFFFF (64 KiB, PAM0 bits 5:4), then 0xC0000-0xEFFFF in 16 KiB segments,
/// two per register from PAM1 (low nibble first).
pub fn pam_segments(pam: &[u8; 7]) -> [(u64, u64, PamAttr); 13] {
    let mut out = [(0xF_0000u64, 0x1_0000u64, PamAttr::from_field(pam[0] >> 4)); 13];
    for (i, seg) in out.iter_mut().enumerate().skip(1) {
        let k = i - 1;
        let reg = pam[1 + k / 2];
        let field = if k % 2 == 0 { reg & 0xF } else { reg >> 4 };
        *seg = (0xC_0000 + 0x4000 * k as u64, 0x4000, PamAttr::from_field(field));
    }
    out
}

impl PciFunction for I440fx {
    fn name(&self) -> &str {
        "i440fx"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
}

impl Snapshot for I440fx {
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

#[cfg(test)]
mod pam_tests {
    use super::*;

    #[test]
    fn pam_registers_decode_to_segments() {
        let f = I440fx::new();
        assert_eq!(f.config().u16(0x2C), 0x1af4);
        assert_eq!(f.config().u16(0x2E), 0x1100);
        // Power-on: everything on the PCI side.
        let segs = pam_segments(&[0; 7]);
        assert!(segs.iter().all(|s| !s.2.read_ram && !s.2.write_ram));
        assert_eq!(segs.iter().map(|s| s.1).sum::<u64>(), 0x4_0000);
        // SeaBIOS's "make writable": PAM1-6 = 0x33, PAM0 = 0x30.
        let segs = pam_segments(&[0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        assert!(segs.iter().all(|s| s.2 == PamAttr { read_ram: true, write_ram: true }));
        // Each nibble controls its own segment: PAM3 high nibble is 0xD4000.
        let segs = pam_segments(&[0x10, 0, 0, 0x20, 0, 0, 0x01]);
        assert_eq!(segs[0], (0xF_0000, 0x1_0000, PamAttr { read_ram: true, write_ram: false }));
        assert_eq!(segs[6], (0xD_4000, 0x4000, PamAttr { read_ram: false, write_ram: true }));
        assert_eq!(segs[11], (0xE_8000, 0x4000, PamAttr { read_ram: true, write_ram: false }));
        assert_eq!(segs.iter().filter(|s| s.2.read_ram || s.2.write_ram).count(), 3);
        // Segments tile 0xC0000-0xEFFFF in order.
        for (k, s) in segs[1..].iter().enumerate() {
            assert_eq!(s.0, 0xC_0000 + 0x4000 * k as u64);
        }
    }
}
