//! System control port A (port 0x92, "fast A20 and reset").
//!
//! # Offsets
//!
//! Offset 0 is port 0x92. Bit 1 gates A20 (reported through `ctx.requests.a20` on every write, as the
//! board's A20 logic takes the port's output directly); a 0 → 1 transition of bit 0 requests a fast reset
//! (`ctx.requests.reset`). Reads return the A20 bit as last written; bit 0 reads 0 after the reset pulse,
//! the other bits read 0.

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter};

/// System control port A.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Port92 {
    /// Bit 1 as last written.
    a20: bool,
}

impl Port92 {
    /// The port in its power-on state (A20 bit clear).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the A20 state after the machine changed it elsewhere (so reads report it).
    pub fn set_a20_state(&mut self, enabled: bool) {
        self.a20 = enabled;
    }
}

impl Device for Port92 {
    fn name(&self) -> &str {
        "port92"
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0
            && let Some(first) = data.first_mut()
        {
            *first = u8::from(self.a20) << 1;
        }
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        if offset != 0 {
            return;
        }
        let Some(&v) = data.first() else { return };
        self.a20 = v & 0x02 != 0;
        ctx.requests.a20 = Some(self.a20);
        // Bit 0 always reads back 0, so every write with bit 0 set is a 0 → 1 transition.
        if v & 0x01 != 0 {
            ctx.requests.reset = true;
        }
    }

    fn reset(&mut self) {
        self.a20 = false;
    }
}

impl Snapshot for Port92 {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.bool(self.a20);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("port92")?;
        self.a20 = r.bool()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    #[test]
    fn fast_a20() {
        let mut p = Port92::new();
        let mut b = Bus::new();
        assert_eq!(b.rd(&mut p, 0, 0), 0);
        b.wr(&mut p, 0, 0, 0x02);
        assert_eq!(b.req.a20, Some(true));
        assert!(!b.req.reset);
        assert_eq!(b.rd(&mut p, 0, 0), 0x02);
        b.wr(&mut p, 0, 0, 0x00);
        assert_eq!(b.req.a20, Some(false));
        assert_eq!(b.rd(&mut p, 0, 1), 0xff);
    }

    #[test]
    fn fast_reset() {
        let mut p = Port92::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 0, 0x03);
        assert!(b.req.reset);
        assert_eq!(b.rd(&mut p, 0, 0), 0x02, "reset bit reads 0");
    }

    #[test]
    fn snapshot_and_hostile_input() {
        let mut p = Port92::new();
        p.set_a20_state(true);
        let mut fresh = Port92::new();
        roundtrip(&p, &mut fresh);
        assert_eq!(fresh, p);
        hammer(&mut p, &[0], false, 1);
    }
}
