//! The PIIX4 power-management function (00:01.3): the ACPI PM I/O window and SMBus window it decodes.

use super::*;
use vmcore::Snapshot;

/// Window index of the PIIX4 power-management I/O block (PMBA).
pub const PM_WINDOW: u8 = FIRST_CHIPSET_WINDOW;
/// Window index of the PIIX4 SMBus I/O block (SMBBA).
pub const SMB_WINDOW: u8 = FIRST_CHIPSET_WINDOW + 1;
/// Size of the PIIX4 PM I/O block.
pub const PM_IO_SIZE: u64 = 64;

/// The PIIX4 power-management function, 00:01.3 (8086:7113), as QEMU's `pc` machine has it next to the
/// PIIX3.
///
/// PMBA at 0x40 (bits 15:6 read/write, bit 0 reads 1) places the 64-byte PM I/O block, decoded when
/// PMREGMISC (0x80) bit 0 is set; SMBBA at 0x90 (bits 15:4, bit 0 reads 1) places the 16-byte SMBus block,
/// decoded when SMBHSTCFG (0xD2) bit 0 and the command register's I/O enable are set. Both report their
/// windows as [`PM_WINDOW`] and [`SMB_WINDOW`]. The PM block itself is [`crate::acpi::PmDevice`].
#[derive(Clone, Debug)]
pub struct Piix4Pm {
    cfg: ConfigSpace,
    pm_mapped: Option<u64>,
    smb_mapped: Option<u64>,
}

impl Default for Piix4Pm {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix4Pm {
    /// The function in its power-on state (PMBA 0, decode off).
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x8086, 0x7113, 0x06_80_00, 0x03, 0x00);
        cfg.set_u16(reg::STATUS, 0x0280);
        cfg.set_bytes(reg::INTERRUPT_PIN, &[1]);
        cfg.set_bytes(reg::INTERRUPT_LINE, &[9]);
        cfg.set_u32(0x40, 1);
        cfg.set_wmask(0x40, 0xC0);
        cfg.set_wmask(0x41, 0xFF);
        cfg.set_u32(0x90, 1);
        cfg.set_wmask(0x90, 0xF0);
        cfg.set_wmask(0x91, 0xFF);
        cfg.set_wmask(0x80, 0x01);
        cfg.set_wmask(0xD2, 0x0F);
        cfg.set_writable(0x44..0x4C); // CNTA, CNTB
        cfg.set_writable(0x4C..0x80); // GPICTL, DEVRESD..DEVRESJ, DEVACTA/B
        // DEVACTB bit 25 (APMC_EN) set at reset, as QEMU's PIIX4 has it without SMM: firmware takes SMM
        // set-up as done and never raises an SMI, which this board does not deliver.
        cfg.set_bytes(0x5B, &[0x02]);
        Piix4Pm { cfg, pm_mapped: None, smb_mapped: None }
    }

    /// Where the PM block is decoded.
    pub fn pm_base(&self) -> Option<u64> {
        let base = u64::from(self.cfg.u32(0x40) & 0xFFC0);
        window_base(BarKind::Io, base, PM_IO_SIZE, self.cfg.u8(0x80) & 1 != 0)
    }

    fn smb_base(&self) -> Option<u64> {
        let base = u64::from(self.cfg.u32(0x90) & 0xFFF0);
        let en = self.cfg.u8(0xD2) & 1 != 0 && self.cfg.u16(reg::COMMAND) & CMD_IO != 0;
        window_base(BarKind::Io, base, 16, en)
    }

    fn update(&mut self) -> Vec<BarChange> {
        let mut out = Vec::new();
        let pm = self.pm_base();
        if pm != self.pm_mapped {
            out.push(BarChange {
                window: PM_WINDOW,
                kind: BarKind::Io,
                size: PM_IO_SIZE,
                old: self.pm_mapped,
                new: pm,
            });
            self.pm_mapped = pm;
        }
        let smb = self.smb_base();
        if smb != self.smb_mapped {
            out.push(BarChange {
                window: SMB_WINDOW,
                kind: BarKind::Io,
                size: 16,
                old: self.smb_mapped,
                new: smb,
            });
            self.smb_mapped = smb;
        }
        out
    }
}

impl PciFunction for Piix4Pm {
    fn name(&self) -> &str {
        "piix4-pm"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
    fn config_write(&mut self, off: usize, data: &[u8]) -> Vec<BarChange> {
        let mut ch = self.cfg.write(off, data);
        ch.extend(self.update());
        ch
    }
    fn reset(&mut self) -> Vec<BarChange> {
        let mut ch = self.cfg.reset();
        ch.extend(self.update());
        ch
    }
}

impl Snapshot for Piix4Pm {
    type Restored = Vec<BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        self.config().save(w);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("piix4-pm")?;
        let mut ch = self.cfg.restore(r)?;
        ch.extend(self.update());
        Ok(ch)
    }
}
