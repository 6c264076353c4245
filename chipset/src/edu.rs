//! QEMU's `edu` educational PCI device (QEMU docs/specs/edu.rst), a PCI function with one MMIO BAR,
//! INTx and MSI, and a small DMA engine.
//!
//! # Configuration space
//!
//! Vendor 0x1234, device 0x11E8, revision 0x10, class 0xFF (unassigned), interrupt pin INTA#. BAR0: 1 MiB
//! of 32-bit, non-prefetchable memory. One MSI capability ([`crate::msi`]): one vector, 64-bit address, no
//! per-vector masking.
//!
//! # BAR0 registers
//!
//! Offsets below 0x80 take 32-bit accesses only, the DMA registers 32- or 64-bit ones (a 32-bit access at
//! +4 reaches the upper half; one at +0 leaves the upper half as it was). Other sizes, offsets and the
//! buffer itself read all ones and ignore writes.
//!
//! | Offset | Register |
//! |---|---|
//! | 0x00 | identification 0x010000ED (version 1.0), read-only |
//! | 0x04 | liveness check: reads the bitwise inverse of the last value written |
//! | 0x08 | factorial: a write stores n!, modulo 2^32 (ignored while bit 0 of the status is set) |
//! | 0x20 | status: bit 0 computing (read-only), bit 7 raise interrupt 0x001 when a factorial completes |
//! | 0x24 | interrupt status (read-only) |
//! | 0x60 | interrupt raise (write-only): ORed into the interrupt status |
//! | 0x64 | interrupt acknowledge (write-only): cleared from the interrupt status |
//! | 0x80, 0x88, 0x90 | DMA source, destination, count |
//! | 0x98 | DMA command: bit 0 start (reads 1 while running), bit 1 direction (0 RAM to device, 1 device to RAM), bit 2 raise interrupt 0x100 when done |
//!
//! # Timing
//!
//! The device has no clock: a factorial completes within the write that starts it, a DMA transfer before
//! the guest's next instruction (the guest polls bit 0 of either register, as the spec tells it to, and
//! finds it clear at once). Nothing depends on time, so every run is the same.
//!
//! # Interrupts
//!
//! While the interrupt status is not zero the function's interrupt condition holds. With MSI disabled it
//! drives INTA# (level) through [`crate::msi::intx_output`], so the command register's interrupt-disable
//! bit is honoured; with MSI enabled, every raise that leaves the status non-zero sends one message (a
//! factorial or DMA completion included) and INTx stays deasserted. The acknowledge register must be
//! written in either case.
//!
//! # DMA
//!
//! The device never touches memory itself: setting the start bit leaves a transfer that the board runs
//! over guest memory through [`PciFunction::run_dma`] before the next instruction. One side of a transfer
//! is the 4 KiB buffer at device address 0x40000; the other is a bus address, of which the device drives
//! only the low 28 bits (QEMU's default `dma_mask`, as the spec says). A transfer whose buffer side is not
//! entirely inside 0x40000-0x40FFF (QEMU stops the whole emulator then) moves nothing and raises no
//! interrupt: the start bit just clears. Without bus mastering (command bit 2) nothing reaches memory
//! either; the transfer still completes. A read of memory that is not RAM fills the buffer with all ones
//! (a master abort).

use vmcore::Snapshot;
use vmcore::{DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter};

use crate::fw_cfg::DmaMemory;
use crate::msi::{MsiCapability, MsiMessage, Signal, intx_output};
use crate::pci::{BarChange, BarDef, BarKind, CMD_MASTER, ConfigSpace, PciFunction, reg};
use crate::{le_value, put_le};

/// Vendor ID.
pub const VENDOR: u16 = 0x1234;
/// Device ID.
pub const DEVICE: u16 = 0x11E8;
/// BAR0 size.
pub const BAR0_SIZE: u64 = 1 << 20;
/// The identification register.
pub const ID: u32 = 0x0100_00ED;
/// Device address of the DMA buffer.
pub const DMA_BUFFER: u64 = 0x40000;
/// Size of the DMA buffer.
pub const DMA_BUFFER_SIZE: usize = 4096;
/// Bus address bits the DMA engine drives.
pub const DMA_MASK: u64 = (1 << 28) - 1;
/// Status: computing a factorial.
pub const STATUS_COMPUTING: u32 = 0x01;
/// Status: raise an interrupt when a factorial completes.
pub const STATUS_IRQ_FACT: u32 = 0x80;
/// Interrupt status value of a factorial completion.
pub const IRQ_FACT: u32 = 0x001;
/// Interrupt status value of a DMA completion.
pub const IRQ_DMA: u32 = 0x100;
/// DMA command: start / running.
pub const DMA_START: u64 = 1;
/// DMA command: direction, device to RAM.
pub const DMA_TO_RAM: u64 = 2;
/// DMA command: raise an interrupt when done.
pub const DMA_IRQ: u64 = 4;
/// Most MSI messages kept for the board between two drains (a raise loop cannot grow the queue).
const MAX_MSI_QUEUE: usize = 64;

/// `n!` modulo 2^32. From 34 on the product has at least 32 factors of two, so it is zero: no loop runs
/// longer than 33 steps whatever the guest writes.
pub fn factorial(n: u32) -> u32 {
    if n >= 34 {
        return 0;
    }
    (1..=n).fold(1u32, |acc, k| acc.wrapping_mul(k))
}

/// The edu device.
#[derive(Clone, Debug)]
pub struct Edu {
    cfg: ConfigSpace,
    msi: MsiCapability,
    /// What the liveness register reads (the inverse of the last write).
    liveness: u32,
    fact: u32,
    /// Bit 7 only: a factorial completes within its write, so bit 0 is never left set.
    status: u32,
    irq_status: u32,
    dma_src: u64,
    dma_dst: u64,
    dma_cnt: u64,
    dma_cmd: u64,
    buffer: Box<[u8]>,
    msi_out: Vec<MsiMessage>,
    /// The INTx# level, recomputed after every change.
    intx: bool,
}

impl Default for Edu {
    fn default() -> Self {
        Self::new()
    }
}

impl Edu {
    /// The device in its power-on state.
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(VENDOR, DEVICE, 0xFF_00_00, 0x10, 0x00);
        cfg.set_bytes(reg::INTERRUPT_PIN, &[1]);
        cfg.add_bar(0, BarDef { kind: BarKind::Mem32, size: BAR0_SIZE, prefetchable: false });
        let msi =
            MsiCapability::add(&mut cfg, 0, true, false).expect("an empty configuration space has room");
        Edu {
            cfg,
            msi,
            liveness: 0,
            fact: 0,
            status: 0,
            irq_status: 0,
            dma_src: 0,
            dma_dst: 0,
            dma_cnt: 0,
            dma_cmd: 0,
            buffer: vec![0u8; DMA_BUFFER_SIZE].into_boxed_slice(),
            msi_out: Vec::new(),
            intx: false,
        }
    }

    /// The MSI capability.
    pub fn msi(&self) -> MsiCapability {
        self.msi
    }

    /// The DMA buffer.
    pub fn buffer(&self) -> &[u8] {
        &self.buffer
    }

    fn update_intx(&mut self) {
        let msi_on = self.msi.enabled(&self.cfg);
        self.intx = intx_output(&mut self.cfg, self.irq_status != 0, msi_on);
    }

    fn raise(&mut self, v: u32) {
        self.irq_status |= v;
        if self.irq_status != 0
            && let Signal::Msi(m) = self.msi.signal(&mut self.cfg, 0)
            && self.msi_out.len() < MAX_MSI_QUEUE
        {
            self.msi_out.push(m);
        }
        self.update_intx();
    }

    fn read_reg(&self, off: u64, size: usize) -> Option<u64> {
        let r32 = |v: u32| (size == 4).then_some(u64::from(v));
        if off < 0x80 {
            return match off {
                0x00 => r32(ID),
                0x04 => r32(self.liveness),
                0x08 => r32(self.fact),
                0x20 => r32(self.status),
                0x24 => r32(self.irq_status),
                _ => None,
            };
        }
        let (base, half) = (off & !7, off & 7);
        let v = match base {
            0x80 => self.dma_src,
            0x88 => self.dma_dst,
            0x90 => self.dma_cnt,
            0x98 => self.dma_cmd,
            _ => return None,
        };
        match (size, half) {
            (8, 0) => Some(v),
            (4, 0) => Some(v & 0xFFFF_FFFF),
            (4, 4) => Some(v >> 32),
            _ => None,
        }
    }

    fn write_reg(&mut self, off: u64, size: usize, v: u64) {
        if off < 0x80 {
            if size != 4 {
                return;
            }
            let v = v as u32;
            match off {
                0x04 => self.liveness = !v,
                0x08 if self.status & STATUS_COMPUTING == 0 => {
                    self.fact = factorial(v);
                    if self.status & STATUS_IRQ_FACT != 0 {
                        self.raise(IRQ_FACT);
                    }
                }
                0x20 => self.status = v & STATUS_IRQ_FACT,
                0x60 => self.raise(v),
                0x64 => {
                    self.irq_status &= !v;
                    self.update_intx();
                }
                _ => {}
            }
            return;
        }
        // The DMA registers are frozen while a transfer waits (it runs before the next instruction).
        if self.dma_cmd & DMA_START != 0 {
            return;
        }
        let (base, half) = (off & !7, off & 7);
        let reg = match base {
            0x80 => &mut self.dma_src,
            0x88 => &mut self.dma_dst,
            0x90 => &mut self.dma_cnt,
            0x98 => &mut self.dma_cmd,
            _ => return,
        };
        *reg = match (size, half) {
            (8, 0) => v,
            (4, 0) => (*reg & !0xFFFF_FFFF) | (v & 0xFFFF_FFFF),
            (4, 4) => (*reg & 0xFFFF_FFFF) | (v << 32),
            _ => return,
        };
    }

    /// Where the buffer side of the waiting transfer lies in the buffer, if entirely inside it.
    fn buffer_range(addr: u64, count: u64) -> Option<std::ops::Range<usize>> {
        let start = addr.checked_sub(DMA_BUFFER)?;
        let end = start.checked_add(count)?;
        (end <= DMA_BUFFER_SIZE as u64).then_some(start as usize..end as usize)
    }
}

impl PciFunction for Edu {
    fn name(&self) -> &str {
        "edu"
    }

    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn config_write(&mut self, off: usize, data: &[u8]) -> Vec<BarChange> {
        let ch = self.cfg.write(off, data);
        // MSI enable and interrupt disable change what the pending condition drives.
        self.update_intx();
        ch
    }

    fn reset(&mut self) -> Vec<BarChange> {
        let ch = self.cfg.reset();
        let mut fresh = Edu::new();
        std::mem::swap(&mut fresh.cfg, &mut self.cfg);
        *self = fresh;
        self.update_intx();
        ch
    }

    fn bar_read(&mut self, _ctx: &mut DeviceCtx<'_>, window: u8, off: u64, data: &mut [u8]) {
        match (window, self.read_reg(off, data.len())) {
            (0, Some(v)) => put_le(data, v),
            _ => data.fill(0xFF),
        }
    }

    fn bar_write(&mut self, _ctx: &mut DeviceCtx<'_>, window: u8, off: u64, data: &[u8]) {
        if window == 0 {
            self.write_reg(off, data.len(), le_value(data));
        }
    }

    fn intx(&self) -> bool {
        self.intx
    }

    fn dma_pending(&self) -> bool {
        self.dma_cmd & DMA_START != 0
    }

    fn run_dma(&mut self, mem: &mut dyn DmaMemory) {
        if self.dma_cmd & DMA_START == 0 {
            return;
        }
        let to_ram = self.dma_cmd & DMA_TO_RAM != 0;
        let (dev, bus) = if to_ram { (self.dma_src, self.dma_dst) } else { (self.dma_dst, self.dma_src) };
        self.dma_cmd &= !DMA_START;
        let Some(range) = Self::buffer_range(dev, self.dma_cnt) else { return };
        let bus = bus & DMA_MASK;
        if self.cfg.u16(reg::COMMAND) & CMD_MASTER != 0 && !range.is_empty() {
            let buf = &mut self.buffer[range];
            if to_ram {
                mem.write(bus, buf);
            } else if !mem.read(bus, buf) {
                buf.fill(0xFF);
            }
        }
        if self.dma_cmd & DMA_IRQ != 0 {
            self.raise(IRQ_DMA);
        }
    }

    fn take_msi(&mut self) -> Vec<MsiMessage> {
        std::mem::take(&mut self.msi_out)
    }
}

impl Snapshot for Edu {
    type Restored = Vec<BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag("edu");
        self.cfg.save(w);
        for v in [self.liveness, self.fact, self.status, self.irq_status] {
            w.u32(v);
        }
        for v in [self.dma_src, self.dma_dst, self.dma_cnt, self.dma_cmd] {
            w.u64(v);
        }
        w.bytes(&self.buffer);
        w.u32(self.msi_out.len() as u32);
        for m in &self.msi_out {
            w.u64(m.address);
            w.u32(m.data);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("edu")?;
        let ch = self.cfg.restore(r)?;
        let mut s = [0u32; 4];
        for v in &mut s {
            *v = r.u32()?;
        }
        let mut d = [0u64; 4];
        for v in &mut d {
            *v = r.u64()?;
        }
        let buf = r.bytes()?;
        if buf.len() != DMA_BUFFER_SIZE {
            return Err(SnapshotError::Invalid(format!("edu DMA buffer of {} bytes", buf.len())));
        }
        let n = r.u32()? as usize;
        if n > MAX_MSI_QUEUE {
            return Err(SnapshotError::Invalid(format!("edu: {n} queued MSI messages")));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(MsiMessage { address: r.u64()?, data: r.u32()? });
        }
        [self.liveness, self.fact, self.irq_status] = [s[0], s[1], s[3]];
        self.status = s[2] & STATUS_IRQ_FACT;
        [self.dma_src, self.dma_dst, self.dma_cnt, self.dma_cmd] = d;
        self.buffer.copy_from_slice(buf);
        self.msi_out = out;
        self.update_intx();
        Ok(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msi::STATUS_INTERRUPT;
    use crate::pci::{CMD_INTX_DISABLE, CMD_MEM};
    use crate::testutil::Bus;

    fn rd(b: &mut Bus, d: &mut Edu, off: u64, size: usize) -> u64 {
        let mut buf = [0u8; 8];
        d.bar_read(&mut b.ctx(0), 0, off, &mut buf[..size]);
        le_value(&buf[..size])
    }

    fn wr(b: &mut Bus, d: &mut Edu, off: u64, size: usize, v: u64) {
        d.bar_write(&mut b.ctx(0), 0, off, &v.to_le_bytes()[..size]);
    }

    fn cfg_wr(d: &mut Edu, off: usize, v: &[u8]) {
        let _ = d.config_write(off, v);
    }

    /// Guest RAM for the DMA engine: `size` bytes from address 0.
    struct Ram(Vec<u8>);
    impl DmaMemory for Ram {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
            let Some(src) = usize::try_from(addr).ok().and_then(|a| self.0.get(a..a.checked_add(buf.len())?))
            else {
                return false;
            };
            buf.copy_from_slice(src);
            true
        }
        fn write(&mut self, addr: u64, data: &[u8]) -> bool {
            let Some(dst) =
                usize::try_from(addr).ok().and_then(|a| self.0.get_mut(a..a.checked_add(data.len())?))
            else {
                return false;
            };
            dst.copy_from_slice(data);
            true
        }
    }

    #[test]
    fn config_space_identity_bar_and_capability() {
        let mut d = Edu::new();
        let c = d.config();
        assert_eq!(c.u32(0), 0x11E8_1234);
        assert_eq!(c.u32(0x08), 0xFF00_0010, "class 0xFF, revision 0x10");
        assert_eq!(c.u8(reg::INTERRUPT_PIN), 1);
        assert_eq!(c.find_capability(0x05), Some(d.msi().offset));
        assert_eq!(c.u16(d.msi().offset + 2), 0x0080, "one vector, 64-bit, no masking");
        cfg_wr(&mut d, 0x10, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(d.config().u32(0x10), 0xFFF0_0000, "1 MiB memory BAR");
        cfg_wr(&mut d, 0x10, &0xFE00_0000u32.to_le_bytes());
        let ch = d.config_write(reg::COMMAND, &CMD_MEM.to_le_bytes());
        assert_eq!(ch[0].new, Some(0xFE00_0000));
    }

    #[test]
    fn identification_liveness_factorial() {
        let mut b = Bus::new();
        let mut d = Edu::new();
        assert_eq!(rd(&mut b, &mut d, 0x00, 4), 0x0100_00ED);
        wr(&mut b, &mut d, 0x00, 4, 0);
        assert_eq!(rd(&mut b, &mut d, 0x00, 4), 0x0100_00ED, "read-only");
        wr(&mut b, &mut d, 0x04, 4, 0x1234_5678);
        assert_eq!(rd(&mut b, &mut d, 0x04, 4), 0xEDCB_A987);
        assert_eq!(rd(&mut b, &mut d, 0x04, 2), 0xFFFF, "16-bit access: all ones");
        assert_eq!(rd(&mut b, &mut d, 0x04, 8), u64::MAX, "64-bit access below 0x80: all ones");
        wr(&mut b, &mut d, 0x04, 2, 0);
        assert_eq!(rd(&mut b, &mut d, 0x04, 4), 0xEDCB_A987, "16-bit write ignored");
        wr(&mut b, &mut d, 0x08, 4, 10);
        assert_eq!(rd(&mut b, &mut d, 0x08, 4), 3_628_800);
        assert_eq!(rd(&mut b, &mut d, 0x20, 4) & 1, 0, "done at once");
        wr(&mut b, &mut d, 0x08, 4, 0);
        assert_eq!(rd(&mut b, &mut d, 0x08, 4), 1);
        wr(&mut b, &mut d, 0x08, 4, 13);
        assert_eq!(rd(&mut b, &mut d, 0x08, 4), 6_227_020_800u64 as u32 as u64, "modulo 2^32");
        assert_eq!(factorial(33), (1..=33u64).fold(1u64, |a, k| a.wrapping_mul(k)) as u32);
        assert_ne!(factorial(33), 0);
        assert_eq!(factorial(34), 0);
        wr(&mut b, &mut d, 0x08, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut b, &mut d, 0x08, 4), 0);
        assert_eq!(rd(&mut b, &mut d, 0x0C, 4), 0xFFFF_FFFF, "unassigned offset");
        assert_eq!(rd(&mut b, &mut d, 0x40000, 4), 0xFFFF_FFFF, "the buffer is not mapped in BAR0");
        wr(&mut b, &mut d, 0x20, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut b, &mut d, 0x20, 4), 0x80, "only bit 7 of the status is writable");
    }

    #[test]
    fn intx_follows_the_interrupt_status() {
        let mut b = Bus::new();
        let mut d = Edu::new();
        assert!(!d.intx());
        wr(&mut b, &mut d, 0x60, 4, 0x12);
        assert_eq!(rd(&mut b, &mut d, 0x24, 4), 0x12);
        assert!(d.intx());
        assert_eq!(d.config().u16(reg::STATUS) & STATUS_INTERRUPT, STATUS_INTERRUPT);
        assert!(d.take_msi().is_empty(), "MSI disabled");
        assert_eq!(rd(&mut b, &mut d, 0x60, 4), 0xFFFF_FFFF, "raise is write-only");
        wr(&mut b, &mut d, 0x64, 4, 0x02);
        assert!(d.intx(), "0x10 still set");
        cfg_wr(&mut d, reg::COMMAND, &CMD_INTX_DISABLE.to_le_bytes());
        assert!(!d.intx(), "interrupt disable");
        assert_eq!(d.config().u16(reg::STATUS) & STATUS_INTERRUPT, STATUS_INTERRUPT);
        cfg_wr(&mut d, reg::COMMAND, &0u16.to_le_bytes());
        assert!(d.intx());
        wr(&mut b, &mut d, 0x64, 4, 0x10);
        assert!(!d.intx());
        assert_eq!(d.config().u16(reg::STATUS) & STATUS_INTERRUPT, 0);
        // Factorial completion raises 0x001 when asked to.
        wr(&mut b, &mut d, 0x20, 4, 0x80);
        wr(&mut b, &mut d, 0x08, 4, 5);
        assert_eq!(rd(&mut b, &mut d, 0x24, 4), u64::from(IRQ_FACT));
        assert!(d.intx());
        wr(&mut b, &mut d, 0x64, 4, 1);
        wr(&mut b, &mut d, 0x20, 4, 0);
        wr(&mut b, &mut d, 0x08, 4, 5);
        assert_eq!(rd(&mut b, &mut d, 0x24, 4), 0, "bit 7 clear: no interrupt");
    }

    #[test]
    fn msi_replaces_intx_when_enabled() {
        let mut b = Bus::new();
        let mut d = Edu::new();
        let o = d.msi().offset;
        cfg_wr(&mut d, o + 4, &0xFEE0_1000u32.to_le_bytes());
        cfg_wr(&mut d, o + 12, &0x0061u16.to_le_bytes());
        cfg_wr(&mut d, o + 2, &[1]);
        wr(&mut b, &mut d, 0x60, 4, 4);
        assert!(d.take_msi().is_empty(), "no bus mastering: no message");
        assert!(!d.intx(), "and no INTx with MSI enabled");
        cfg_wr(&mut d, reg::COMMAND, &(CMD_MEM | CMD_MASTER).to_le_bytes());
        wr(&mut b, &mut d, 0x60, 4, 8);
        wr(&mut b, &mut d, 0x60, 4, 0);
        let want = MsiMessage { address: 0xFEE0_1000, data: 0x61 };
        assert_eq!(d.take_msi(), vec![want, want], "one message per raise while the status is non-zero");
        assert_eq!(rd(&mut b, &mut d, 0x24, 4), 0xC);
        wr(&mut b, &mut d, 0x64, 4, 0xC);
        wr(&mut b, &mut d, 0x60, 4, 0);
        assert!(d.take_msi().is_empty(), "raising 0 with a clear status sends nothing");
        // Disabling MSI with the condition pending falls back to INTx.
        wr(&mut b, &mut d, 0x60, 4, 1);
        assert_eq!(d.take_msi().len(), 1);
        cfg_wr(&mut d, o + 2, &[0]);
        assert!(d.intx());
        // A raise loop cannot grow the queue without limit.
        cfg_wr(&mut d, o + 2, &[1]);
        for _ in 0..10_000 {
            wr(&mut b, &mut d, 0x60, 4, 1);
        }
        assert_eq!(d.take_msi().len(), MAX_MSI_QUEUE);
    }

    #[test]
    fn dma_both_directions() {
        let mut b = Bus::new();
        let mut d = Edu::new();
        let mut ram = Ram((0..0x10000u32).map(|i| (i * 7) as u8).collect());
        cfg_wr(&mut d, reg::COMMAND, &(CMD_MEM | CMD_MASTER).to_le_bytes());
        wr(&mut b, &mut d, 0x80, 8, 0x1000);
        wr(&mut b, &mut d, 0x88, 8, 0x40010);
        wr(&mut b, &mut d, 0x90, 8, 100);
        wr(&mut b, &mut d, 0x98, 8, DMA_START | DMA_IRQ);
        assert!(d.dma_pending());
        assert_eq!(rd(&mut b, &mut d, 0x98, 8), DMA_START | DMA_IRQ, "start reads 1 until the board runs it");
        wr(&mut b, &mut d, 0x90, 8, 4096);
        assert_eq!(rd(&mut b, &mut d, 0x90, 8), 100, "registers frozen while the transfer waits");
        d.run_dma(&mut ram);
        assert!(!d.dma_pending());
        assert_eq!(rd(&mut b, &mut d, 0x98, 8), DMA_IRQ);
        assert_eq!(&d.buffer()[0x10..0x10 + 100], &ram.0[0x1000..0x1000 + 100]);
        assert_eq!(d.buffer()[0x10 + 100], 0);
        assert_eq!(rd(&mut b, &mut d, 0x24, 4), u64::from(IRQ_DMA));
        assert!(d.intx());
        wr(&mut b, &mut d, 0x64, 4, u64::from(IRQ_DMA));
        // Back to RAM, with 32-bit halves and an address above the 28-bit mask.
        wr(&mut b, &mut d, 0x80, 4, 0x40010);
        wr(&mut b, &mut d, 0x84, 4, 0);
        wr(&mut b, &mut d, 0x88, 4, 0x3000_8000);
        wr(&mut b, &mut d, 0x8C, 4, 0);
        assert_eq!(rd(&mut b, &mut d, 0x88, 8), 0x3000_8000);
        assert_eq!(rd(&mut b, &mut d, 0x8C, 4), 0);
        wr(&mut b, &mut d, 0x90, 4, 100);
        wr(&mut b, &mut d, 0x98, 4, DMA_START | DMA_TO_RAM);
        d.run_dma(&mut ram);
        let copy: Vec<u8> = ram.0[0x1000..0x1000 + 100].to_vec();
        assert_eq!(&ram.0[0x8000..0x8000 + 100], &copy[..], "0x3000_8000 masked to 28 bits");
        assert_eq!(rd(&mut b, &mut d, 0x24, 4), 0, "no interrupt requested");
    }

    #[test]
    fn hostile_dma_is_contained() {
        let mut b = Bus::new();
        let mut d = Edu::new();
        let mut ram = Ram(vec![0x55; 0x2000]);
        cfg_wr(&mut d, reg::COMMAND, &(CMD_MEM | CMD_MASTER).to_le_bytes());
        for (dev, cnt) in
            [(0x40000u64, 4097u64), (0x40FFF, 2), (0x3FFFF, 1), (0x40001, u64::MAX), (u64::MAX, 2)]
        {
            wr(&mut b, &mut d, 0x80, 8, 0);
            wr(&mut b, &mut d, 0x88, 8, dev);
            wr(&mut b, &mut d, 0x90, 8, cnt);
            wr(&mut b, &mut d, 0x98, 8, DMA_START | DMA_IRQ);
            d.run_dma(&mut ram);
            assert!(!d.dma_pending());
            assert!(d.buffer().iter().all(|x| *x == 0), "nothing moved for {dev:#x}+{cnt:#x}");
            assert_eq!(rd(&mut b, &mut d, 0x24, 4), 0, "no interrupt for a rejected transfer");
        }
        // The whole buffer, from memory that is not RAM: master abort reads all ones.
        wr(&mut b, &mut d, 0x80, 8, 0x0FFF_F000);
        wr(&mut b, &mut d, 0x88, 8, 0x40000);
        wr(&mut b, &mut d, 0x90, 8, 4096);
        wr(&mut b, &mut d, 0x98, 8, DMA_START);
        d.run_dma(&mut ram);
        assert!(d.buffer().iter().all(|x| *x == 0xFF));
        // Without bus mastering nothing reaches memory.
        cfg_wr(&mut d, reg::COMMAND, &CMD_MEM.to_le_bytes());
        wr(&mut b, &mut d, 0x80, 8, 0x40000);
        wr(&mut b, &mut d, 0x88, 8, 0);
        wr(&mut b, &mut d, 0x98, 8, DMA_START | DMA_TO_RAM);
        d.run_dma(&mut ram);
        assert!(ram.0.iter().all(|x| *x == 0x55));
    }

    #[test]
    fn reset_snapshot_and_hammer() {
        let mut b = Bus::new();
        let mut d = Edu::new();
        cfg_wr(&mut d, 0x10, &0xFE00_0000u32.to_le_bytes());
        cfg_wr(&mut d, reg::COMMAND, &(CMD_MEM | CMD_MASTER).to_le_bytes());
        wr(&mut b, &mut d, 0x04, 4, 7);
        wr(&mut b, &mut d, 0x08, 4, 6);
        wr(&mut b, &mut d, 0x60, 4, 0x40);
        wr(&mut b, &mut d, 0x80, 8, 0x1234);
        let mut ram = Ram(vec![0xAB; 0x2000]);
        wr(&mut b, &mut d, 0x88, 8, 0x40000);
        wr(&mut b, &mut d, 0x90, 8, 16);
        wr(&mut b, &mut d, 0x98, 8, DMA_START);
        d.run_dma(&mut ram);
        let mut w = SnapshotWriter::new();
        d.save(&mut w);
        let buf = w.finish();
        let mut fresh = Edu::new();
        let ch = fresh.restore(&mut SnapshotReader::new(&buf)).unwrap();
        assert_eq!(ch[0].new, Some(0xFE00_0000), "restore re-maps BAR0");
        let mut w2 = SnapshotWriter::new();
        fresh.save(&mut w2);
        assert_eq!(w2.finish(), buf);
        assert!(fresh.intx());
        assert_eq!(rd(&mut b, &mut fresh, 0x08, 4), 720);
        assert_eq!(&fresh.buffer()[..16], &[0xAB; 16]);
        for cut in 0..buf.len() {
            let _ = Edu::new().restore(&mut SnapshotReader::new(&buf[..cut]));
        }
        let ch = d.reset();
        assert_eq!(ch[0].old, Some(0xFE00_0000));
        assert!(!d.intx());
        assert_eq!(rd(&mut b, &mut d, 0x04, 4), 0);
        assert!(d.buffer().iter().all(|x| *x == 0));
        // Hostile accesses never panic.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let size = [1usize, 2, 4, 8, 3][(x % 5) as usize];
            let off = ((x >> 8) % 0x120) | if x & (1 << 40) != 0 { 0xF_FF00 } else { 0 };
            let mut v = (x >> 3).to_le_bytes();
            match (x >> 50) % 4 {
                0 => d.bar_write(&mut b.ctx(0), (x >> 60) as u8 & 1, off, &v[..size]),
                1 => d.bar_read(&mut b.ctx(0), 0, off, &mut v[..size]),
                2 => {
                    let _ = d.config_write((x >> 20) as usize % 260, &v[..size]);
                }
                _ => d.run_dma(&mut ram),
            }
            let _ = d.take_msi();
        }
    }
}
