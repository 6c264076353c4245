//! Emulator debug ports: the Bochs/QEMU 0xE9 console and QEMU's isa-debug-exit device.
//!
//! # Offsets
//!
//! * [`DebugConsole`] at port 0xE9, offset 0: a byte written goes to the sink; a read returns 0xE9 (the
//!   Bochs/QEMU presence check). Accesses are byte wide; a wider write emits only its low byte (the
//!   machine splits it and the upper bytes fall outside the window).
//! * [`DebugExit`] at port 0xF4, offset 0: a write of `v` (little-endian, any width up to 4 bytes) asks
//!   the machine to exit with status `(v << 1) | 1` through `ctx.requests.exit`. Reads return all ones.

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter};

use crate::{ByteSink, le_value};

/// The 0xE9 debug console.
pub struct DebugConsole {
    sink: ByteSink,
}

impl DebugConsole {
    /// A console that sends every byte written to `sink`.
    pub fn new(sink: ByteSink) -> Self {
        DebugConsole { sink }
    }
}

impl Device for DebugConsole {
    fn name(&self) -> &str {
        "debugcon"
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0
            && let Some(first) = data.first_mut()
        {
            *first = 0xe9;
        }
    }

    fn pio_write(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        if offset == 0
            && let Some(&v) = data.first()
        {
            (self.sink)(v);
        }
    }
}

impl Snapshot for DebugConsole {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag(self.name())
    }
}

/// QEMU's isa-debug-exit device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugExit;

impl DebugExit {
    /// The device (it has no state).
    pub fn new() -> Self {
        DebugExit
    }
}

impl Device for DebugExit {
    fn name(&self) -> &str {
        "debug-exit"
    }

    fn pio_access_width(&self) -> usize {
        4
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        if offset == 0 && !data.is_empty() {
            let v = le_value(&data[..data.len().min(4)]) as u32;
            ctx.requests.exit = Some((v.wrapping_shl(1) | 1) as i32);
        }
    }
}

impl Snapshot for DebugExit {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("debug-exit")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    #[test]
    fn console_writes_and_presence() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        let mut c = DebugConsole::new(Box::new(move |b| o.lock().unwrap().push(b)));
        let mut b = Bus::new();
        assert_eq!(b.rd(&mut c, 0, 0), 0xe9);
        for ch in b"ok\n" {
            b.wr(&mut c, 0, 0, *ch);
        }
        b.wr(&mut c, 0, 1, b'x');
        c.pio_write(&mut b.ctx(0), 0, &[]);
        assert_eq!(&*out.lock().unwrap(), b"ok\n");
        let mut fresh = DebugConsole::new(Box::new(|_| {}));
        roundtrip(&c, &mut fresh);
        hammer(&mut c, &[0], false, 2);
    }

    #[test]
    fn exit_codes_any_width() {
        let mut d = DebugExit::new();
        let mut b = Bus::new();
        b.wr(&mut d, 0, 0, 0x00);
        assert_eq!(b.req.exit, Some(1));
        d.pio_write(&mut b.ctx(0), 0, &[0x10, 0x00]);
        assert_eq!(b.req.exit, Some(0x21));
        d.pio_write(&mut b.ctx(0), 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(b.req.exit, Some(-1));
        b.req.exit = None;
        d.pio_write(&mut b.ctx(0), 1, &[1]);
        assert_eq!(b.req.exit, None);
        let mut out = [0u8; 4];
        d.pio_read(&mut b.ctx(0), 0, &mut out);
        assert_eq!(out, [0xff; 4]);
        roundtrip(&d, &mut DebugExit::new());
        hammer(&mut d, &[0], false, 4);
    }
}
