//! QEMU's `pc-testdev` (the device kvm-unit-tests use) and the Bochs shutdown port.
//!
//! # pc-testdev
//!
//! The machine maps, when asked for (`--device testdev`):
//!
//! | Where | Offset | Access | Meaning |
//! |---|---|---|---|
//! | ports 0xE0-0xE3 | 0-3 | read/write, 1-4 bytes | a 32-bit scratch register; byte `k` of an access at 0xE0+`a` is byte `a+k` of the register (bytes past 0xE3 are dropped on writes and read 0) |
//! | port 0xE4 | 4 | 32-bit write | flush the page at the written address: the machine drops its TLB and decoded code (`ctx.requests.flush_tlb`) |
//! | ports 0x2000-0x2017 | 0x100-0x117 | 8-bit write | ISA IRQ line `n` (port 0x2000+`n`) set to `value != 0` |
//! | MMIO 0xFF000000 | 0-0xFFFF | any width | 64 KiB of scratch memory |
//!
//! Differences from QEMU: QEMU also decodes the scratch register at 0xE8-0xEB, where this board has
//! the 0xE9 debug console, so Ferrite leaves that alias out. QEMU asserts on lines 16-23 (an ISA device
//! has 16 IRQs); here writes to 0x2010-0x2017 are ignored. A page-flush write of another width is
//! ignored (QEMU rejects it). The MMIO window ends where firmware images of 16 MiB - 64 KiB or less
//! start, so a larger `--rom` cannot be combined with the test device (the machine reports it).
//!
//! # Bochs shutdown port
//!
//! [`ShutdownPort`] at port 0x8900, offset 0: writing the bytes of `Shutdown` one after another asks
//! the machine to exit with status 0 (Bochs' APM power-off, also honoured by older QEMU BIOSes). Any
//! other byte starts the match over. Reads return all ones.

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter};

use crate::le_value;

/// Size of the MMIO scratch window.
pub const IOMEM_SIZE: usize = 0x1_0000;
/// Where QEMU puts the MMIO scratch window.
pub const IOMEM_BASE: u64 = 0xFF00_0000;
/// Device offset of port 0x2000 (the machine maps 0x2000-0x2017 with this offset base).
pub const IRQ_OFFSET: u16 = 0x100;
/// Number of IRQ-line ports (0x2000-0x2017).
pub const IRQ_PORTS: u16 = 24;

/// The pc-testdev device.
#[derive(Clone, Debug)]
pub struct TestDev {
    scratch: u32,
    /// Lines this device holds high (bit n = ISA IRQ n).
    lines: u16,
    iomem: Box<[u8]>,
}

impl Default for TestDev {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDev {
    /// The device with its registers and scratch memory zeroed.
    pub fn new() -> Self {
        TestDev { scratch: 0, lines: 0, iomem: vec![0u8; IOMEM_SIZE].into_boxed_slice() }
    }
}

impl Device for TestDev {
    fn name(&self) -> &str {
        "pc-testdev"
    }

    fn pio_access_width(&self) -> usize {
        4
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        if offset < 4 {
            let reg = self.scratch.to_le_bytes();
            for (k, b) in data.iter_mut().enumerate() {
                *b = reg.get(usize::from(offset) + k).copied().unwrap_or(0);
            }
        } else {
            data.fill(0xff);
        }
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        match offset {
            0..4 => {
                let mut reg = self.scratch.to_le_bytes();
                for (k, b) in data.iter().enumerate() {
                    if let Some(r) = reg.get_mut(usize::from(offset) + k) {
                        *r = *b;
                    }
                }
                self.scratch = u32::from_le_bytes(reg);
            }
            4 if data.len() == 4 => ctx.requests.flush_tlb = true,
            o if (IRQ_OFFSET..IRQ_OFFSET + 16).contains(&o) && data.len() == 1 => {
                let n = o - IRQ_OFFSET;
                let high = data[0] != 0;
                if high {
                    self.lines |= 1 << n;
                } else {
                    self.lines &= !(1 << n);
                }
                ctx.irq.set(u32::from(n), high);
            }
            _ => {}
        }
    }

    fn mmio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u64, data: &mut [u8]) {
        for (k, b) in data.iter_mut().enumerate() {
            let a = offset.saturating_add(k as u64);
            *b = if a < IOMEM_SIZE as u64 { self.iomem[a as usize] } else { 0xff };
        }
    }

    fn mmio_write(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u64, data: &[u8]) {
        for (k, b) in data.iter().enumerate() {
            let a = offset.saturating_add(k as u64);
            if a < IOMEM_SIZE as u64 {
                self.iomem[a as usize] = *b;
            }
        }
    }

    fn reset(&mut self) {
        // The machine lowers every line on reset; the scratch memory is RAM-like and keeps nothing either.
        self.scratch = 0;
        self.lines = 0;
        self.iomem.fill(0);
    }
}

impl Snapshot for TestDev {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.u32(self.scratch);
        w.u16(self.lines);
        w.bytes(&self.iomem);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("pc-testdev")?;
        let scratch = r.u32()?;
        let lines = r.u16()?;
        let mem = r.bytes()?;
        if mem.len() != IOMEM_SIZE {
            return Err(SnapshotError::Invalid(format!("pc-testdev scratch memory of {} bytes", mem.len())));
        }
        self.scratch = scratch;
        self.lines = lines;
        self.iomem.copy_from_slice(mem);
        Ok(())
    }
}

/// The Bochs shutdown port (0x8900).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownPort {
    /// How many bytes of `Shutdown` have matched so far.
    matched: u8,
}

const SHUTDOWN: &[u8] = b"Shutdown";

impl ShutdownPort {
    /// The port, nothing matched yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Device for ShutdownPort {
    fn name(&self) -> &str {
        "bochs-shutdown"
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        if offset != 0 || data.is_empty() {
            return;
        }
        let b = le_value(&data[..1]) as u8;
        if SHUTDOWN.get(usize::from(self.matched)) == Some(&b) {
            self.matched += 1;
        } else {
            self.matched = u8::from(b == SHUTDOWN[0]);
        }
        if usize::from(self.matched) == SHUTDOWN.len() {
            self.matched = 0;
            ctx.requests.exit = Some(0);
        }
    }

    fn reset(&mut self) {
        self.matched = 0;
    }
}

impl Snapshot for ShutdownPort {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.u8(self.matched);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("bochs-shutdown")?;
        let m = r.u8()?;
        if usize::from(m) >= SHUTDOWN.len() {
            return Err(SnapshotError::Invalid(format!("shutdown match length {m}")));
        }
        self.matched = m;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    #[test]
    fn scratch_register_widths() {
        let mut d = TestDev::new();
        let mut b = Bus::new();
        d.pio_write(&mut b.ctx(0), 0, &0x1234_5678u32.to_le_bytes());
        let mut w = [0u8; 4];
        d.pio_read(&mut b.ctx(0), 0, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0x1234_5678);
        assert_eq!(b.rd(&mut d, 0, 2), 0x34);
        b.wr(&mut d, 0, 3, 0xab);
        d.pio_write(&mut b.ctx(0), 1, &[0xcd, 0xef]);
        d.pio_read(&mut b.ctx(0), 0, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0xabef_cd78);
        // A dword at 0xE2: bytes past 0xE3 are dropped and read 0.
        d.pio_write(&mut b.ctx(0), 2, &[1, 2, 3, 4]);
        d.pio_read(&mut b.ctx(0), 2, &mut w);
        assert_eq!(w, [1, 2, 0, 0]);
        assert_eq!(b.rd(&mut d, 0, 5), 0xff);
    }

    #[test]
    fn flush_port_requests_tlb_flush() {
        let mut d = TestDev::new();
        let mut b = Bus::new();
        d.pio_write(&mut b.ctx(0), 4, &[0, 0x10, 0, 0]);
        assert!(b.req.flush_tlb);
        b.req.flush_tlb = false;
        b.wr(&mut d, 0, 4, 1);
        assert!(!b.req.flush_tlb, "only dword writes flush");
    }

    #[test]
    fn irq_lines_follow_writes() {
        let mut d = TestDev::new();
        let mut b = Bus::new();
        b.wr(&mut d, 0, IRQ_OFFSET + 5, 1);
        assert!(b.high(5));
        assert!(b.took_edge(5));
        b.wr(&mut d, 0, IRQ_OFFSET + 5, 0x80);
        assert!(!b.took_edge(5), "still high: no new edge");
        b.wr(&mut d, 0, IRQ_OFFSET + 5, 0);
        assert!(!b.high(5));
        b.wr(&mut d, 0, IRQ_OFFSET + 15, 1);
        assert!(b.high(15));
        b.wr(&mut d, 0, IRQ_OFFSET + 16, 1);
        b.wr(&mut d, 0, IRQ_OFFSET + 23, 1);
        assert_eq!(b.irq.level & 0xff_0000, 0, "lines 16-23 are not ISA lines");
        d.pio_write(&mut b.ctx(0), IRQ_OFFSET + 3, &[1, 0]);
        assert!(!b.high(3), "word writes are rejected");
    }

    #[test]
    fn mmio_scratch() {
        let mut d = TestDev::new();
        let mut b = Bus::new();
        d.mmio_write(&mut b.ctx(0), 0x100, &0x1122_3344_5566_7788u64.to_le_bytes());
        let mut q = [0u8; 8];
        d.mmio_read(&mut b.ctx(0), 0x100, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1122_3344_5566_7788);
        d.mmio_write(&mut b.ctx(0), 0xfffe, &[1, 2, 3, 4]);
        let mut w = [0u8; 4];
        d.mmio_read(&mut b.ctx(0), 0xfffe, &mut w);
        assert_eq!(w, [1, 2, 0xff, 0xff]);
        d.mmio_read(&mut b.ctx(0), u64::MAX, &mut w);
        assert_eq!(w, [0xff; 4]);
        let mut fresh = TestDev::new();
        roundtrip(&d, &mut fresh);
        fresh.mmio_read(&mut b.ctx(0), 0x100, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1122_3344_5566_7788);
        d.reset();
        d.mmio_read(&mut b.ctx(0), 0x100, &mut q);
        assert_eq!(q, [0; 8]);
        hammer(&mut d, &[0, 1, 2, 3, 4, IRQ_OFFSET, IRQ_OFFSET + 9, IRQ_OFFSET + 23], true, 11);
    }

    #[test]
    fn shutdown_string_exits_zero() {
        let mut s = ShutdownPort::new();
        let mut b = Bus::new();
        for &c in b"ShutShutdow" {
            b.wr(&mut s, 0, 0, c);
        }
        assert_eq!(b.req.exit, None);
        let mut fresh = ShutdownPort::new();
        roundtrip(&s, &mut fresh);
        b.wr(&mut fresh, 0, 0, b'n');
        assert_eq!(b.req.exit, Some(0));
        b.req.exit = None;
        for &c in b"SSShutdown" {
            b.wr(&mut s, 0, 1, c);
        }
        assert_eq!(b.req.exit, None, "other offsets ignored");
        assert_eq!(b.rd(&mut s, 0, 0), 0xff);
        hammer(&mut s, &[0], false, 3);
    }
}
