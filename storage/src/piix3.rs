//! The PIIX3 IDE function (00:01.1) with the IDE controller behind it, as one PCI function that serves
//! its own decode windows, so the board's one dispatch path carries its accesses, bus-master transfers
//! and deadlines like any other PCI device.
//!
//! The configuration space is `chipset`'s [`Piix3Ide`] (BAR4 = the bus-master block). The channels'
//! compatibility-mode ports are not BARs: the board maps them to the extra windows
//! [`LEGACY_WINDOWS`] names. In compatibility mode the channels interrupt on ISA IRQ 14 and 15 (which
//! the controller drives through the context's interrupt lines), never INTx#.

use chipset::DmaMemory;
use chipset::pci::{BarChange, CMD_MASTER, ConfigSpace, PciFunction, Piix3Ide, reg};
use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::IdeController;

/// The window the bus-master block (BAR4) is decoded as.
pub const BUS_MASTER_WINDOW: u8 = 4;

/// The compatibility-mode port windows: (window number, first port, number of ports, controller
/// offset). Window numbers from 8 up cannot collide with BARs 0-5.
pub const LEGACY_WINDOWS: [(u8, u16, u16, u16); 4] =
    [(8, 0x1F0, 8, 0x10), (9, 0x3F6, 1, 0x18), (10, 0x170, 8, 0x20), (11, 0x376, 1, 0x28)];

/// The controller offset of a window's first port.
fn window_base(window: u8) -> Option<u16> {
    if window == BUS_MASTER_WINDOW {
        return Some(0);
    }
    LEGACY_WINDOWS.iter().find(|w| w.0 == window).map(|w| w.3)
}

/// PIIX3 IDE: configuration space plus the two channels and the bus master.
pub struct Piix3IdeFunction {
    func: Piix3Ide,
    ide: IdeController,
}

impl Piix3IdeFunction {
    /// The function with `ide` behind it (bus mastering off until the guest enables it).
    pub fn new(ide: IdeController) -> Self {
        let mut f = Piix3IdeFunction { func: Piix3Ide::new(), ide };
        f.mirror_bus_master();
        f
    }

    /// The controller.
    pub fn controller_mut(&mut self) -> &mut IdeController {
        &mut self.ide
    }

    fn mirror_bus_master(&mut self) {
        let on = self.func.config().u16(reg::COMMAND) & CMD_MASTER != 0;
        self.ide.set_bus_master_enabled(on);
    }
}

impl PciFunction for Piix3IdeFunction {
    fn name(&self) -> &str {
        "piix3-ide"
    }

    fn config(&self) -> &ConfigSpace {
        self.func.config()
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        self.func.config_mut()
    }

    fn config_write(&mut self, off: usize, data: &[u8]) -> Vec<BarChange> {
        let ch = self.func.config_write(off, data);
        self.mirror_bus_master();
        ch
    }

    fn reset(&mut self) -> Vec<BarChange> {
        let ch = self.func.reset();
        Device::reset(&mut self.ide);
        self.mirror_bus_master();
        ch
    }

    fn bar_read(&mut self, ctx: &mut DeviceCtx<'_>, window: u8, off: u64, data: &mut [u8]) {
        let Some(base) = window_base(window) else {
            data.fill(0xFF);
            return;
        };
        // As the board does for port devices: wider accesses are split into the decoded width.
        let w = self.ide.pio_access_width().max(1);
        for (k, chunk) in data.chunks_mut(w).enumerate() {
            let o = base.wrapping_add(off as u16).wrapping_add((k * w) as u16);
            self.ide.pio_read(ctx, o, chunk);
        }
    }

    fn bar_write(&mut self, ctx: &mut DeviceCtx<'_>, window: u8, off: u64, data: &[u8]) {
        let Some(base) = window_base(window) else { return };
        let w = self.ide.pio_access_width().max(1);
        for (k, chunk) in data.chunks(w).enumerate() {
            let o = base.wrapping_add(off as u16).wrapping_add((k * w) as u16);
            self.ide.pio_write(ctx, o, chunk);
        }
        if self.ide.dma_pending() {
            ctx.requests.reschedule = true;
        }
    }

    fn intx(&self) -> bool {
        false
    }

    fn dma_pending(&self) -> bool {
        self.ide.dma_pending()
    }

    fn run_dma(&mut self, mem: &mut dyn DmaMemory) {
        self.ide.run_dma(mem);
    }

    fn next_deadline(&self) -> Option<VirtTime> {
        Device::next_deadline(&self.ide)
    }

    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        Device::advance(&mut self.ide, ctx);
    }
}

impl Snapshot for Piix3IdeFunction {
    type Restored = Vec<BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        self.func.save(w);
        self.ide.save_state(w);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        let ch = self.func.restore(r)?;
        self.ide.restore_state(r)?;
        self.mirror_bus_master();
        Ok(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_master_enable_follows_the_command_register() {
        let mut f = Piix3IdeFunction::new(IdeController::new());
        assert!(!f.ide.bus_master, "off at power-on, as the command register says");
        f.config_write(reg::COMMAND, &[0x05, 0x00]);
        assert!(f.ide.bus_master);
        f.config_write(reg::COMMAND, &[0x01, 0x00]);
        assert!(!f.ide.bus_master);
        f.config_write(reg::COMMAND, &[0x05, 0x00]);
        PciFunction::reset(&mut f);
        assert!(!f.ide.bus_master, "reset clears the command register");
    }

    #[test]
    fn windows_map_to_controller_offsets() {
        assert_eq!(window_base(4), Some(0));
        assert_eq!(window_base(8), Some(0x10));
        assert_eq!(window_base(9), Some(0x18));
        assert_eq!(window_base(10), Some(0x20));
        assert_eq!(window_base(11), Some(0x28));
        assert_eq!(window_base(0), None);
        assert_eq!(window_base(5), None);
    }
}
