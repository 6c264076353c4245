//! Bus 0 behind configuration mechanism #1 (ports 0xCF8-0xCFF): CONFIG_ADDRESS, the functions by devfn,
//! and the window changes the board applies.

use super::*;
use vmcore::Snapshot;

/// Bus 0 and the configuration mechanism #1 ports.
pub struct PciBus {
    /// CONFIG_ADDRESS.
    address: u32,
    functions: Vec<Option<Box<dyn PciFunction>>>,
    events: Vec<PciBarEvent>,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<(u8, &str)> = self
            .functions
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((i as u8, f.as_ref()?.name())))
            .collect();
        f.debug_struct("PciBus").field("address", &self.address).field("functions", &names).finish()
    }
}

impl PciBus {
    /// An empty bus.
    pub fn new() -> Self {
        PciBus { address: 0, functions: (0..256).map(|_| None).collect(), events: Vec::new() }
    }

    /// Puts `f` at `devfn` (device << 3 | function), replacing what was there.
    pub fn add(&mut self, devfn: u8, f: Box<dyn PciFunction>) {
        self.functions[usize::from(devfn)] = Some(f);
    }

    /// The function at `devfn`.
    pub fn function(&self, devfn: u8) -> Option<&dyn PciFunction> {
        self.functions[usize::from(devfn)].as_deref()
    }

    /// The function at `devfn`, mutable.
    pub fn function_mut(&mut self, devfn: u8) -> Option<&mut (dyn PciFunction + 'static)> {
        self.functions[usize::from(devfn)].as_deref_mut()
    }

    /// The devfns with a function, in order.
    pub fn devfns(&self) -> impl Iterator<Item = u8> + '_ {
        self.functions.iter().enumerate().filter(|(_, f)| f.is_some()).map(|(i, _)| i as u8)
    }

    /// Calls `f` with every function on the bus, in devfn order.
    pub fn for_each_function(&mut self, mut f: impl FnMut(u8, &mut dyn PciFunction)) {
        for (i, func) in self.functions.iter_mut().enumerate() {
            if let Some(func) = func {
                f(i as u8, func.as_mut());
            }
        }
    }

    /// Calls `f` with every function on the bus, in devfn order, read-only.
    pub fn for_each_function_ref(&self, mut f: impl FnMut(u8, &dyn PciFunction)) {
        for (i, func) in self.functions.iter().enumerate() {
            if let Some(func) = func {
                f(i as u8, func.as_ref());
            }
        }
    }

    /// Host-side configuration read (for the board and firmware set-up); all ones if absent.
    pub fn read_config(&mut self, devfn: u8, off: usize, data: &mut [u8]) {
        match self.functions[usize::from(devfn)].as_mut() {
            Some(f) => f.config_read(off, data),
            None => data.fill(0xFF),
        }
    }

    /// Host-side configuration write; queues the resulting window changes like a guest write.
    pub fn write_config(&mut self, devfn: u8, off: usize, data: &[u8]) {
        if let Some(f) = self.functions[usize::from(devfn)].as_mut() {
            let ch = f.config_write(off, data);
            self.events.extend(ch.into_iter().map(|change| PciBarEvent { devfn, change }));
        }
    }

    /// Window changes since the last call, in order.
    pub fn take_events(&mut self) -> Vec<PciBarEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether window changes are waiting.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The configuration register the current CONFIG_ADDRESS selects: (devfn, dword offset), if the
    /// enable bit is set and bus 0 is selected.
    fn selected(&self) -> Option<(u8, usize)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 || (a >> 16) & 0xFF != 0 {
            return None;
        }
        Some(((a >> 8) as u8, (a & 0xFC) as usize))
    }
}

impl Device for PciBus {
    fn name(&self) -> &str {
        "pci-bus"
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xFF);
        match offset {
            0 if data.len() == 4 => put_le(data, u64::from(self.address)),
            4..=7 => {
                let Some((devfn, reg)) = self.selected() else { return };
                let o = usize::from(offset - 4);
                let n = data.len().min(4 - o);
                self.read_config(devfn, reg + o, &mut data[..n]);
            }
            _ => {}
        }
    }

    fn pio_write(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        match offset {
            // Bits 1:0 and 30:24 are reserved and read as zero.
            0 if data.len() == 4 => self.address = (le_value(data) as u32) & 0x80FF_FFFC,
            4..=7 => {
                let Some((devfn, reg)) = self.selected() else { return };
                let o = usize::from(offset - 4);
                let n = data.len().min(4 - o);
                self.write_config(devfn, reg + o, &data[..n]);
            }
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.address = 0;
        for (devfn, f) in self.functions.iter_mut().enumerate() {
            if let Some(f) = f {
                let ch = f.reset();
                self.events.extend(ch.into_iter().map(|change| PciBarEvent { devfn: devfn as u8, change }));
            }
        }
    }
}

impl Snapshot for PciBus {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.u32(self.address);
        for f in self.functions.iter().flatten() {
            f.save(w);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("pci-bus")?;
        self.address = r.u32()? & 0x80FF_FFFC;
        for (devfn, f) in self.functions.iter_mut().enumerate() {
            if let Some(f) = f {
                let ch = f.restore(r)?;
                self.events.extend(ch.into_iter().map(|change| PciBarEvent { devfn: devfn as u8, change }));
            }
        }
        Ok(())
    }
}
