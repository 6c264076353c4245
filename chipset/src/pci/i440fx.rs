//! The i440FX host bridge (00:00.0).

use super::*;

/// The i440FX PCI and memory controller (PMC), host bridge 00:00.0 (8086:1237).
///
/// Registers 0x50-0x7F (PMCCFG, DRAM control and timing, PAM0-6 at 0x59-0x5F, DRB0-7, SMRAM at 0x72)
/// accept writes and read back. The PAM attributes are stored only: the BIOS area is read-only
/// firmware on this board and is not shadowed into RAM.
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
        I440fx { cfg }
    }
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
