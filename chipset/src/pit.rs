//! Intel 8254 programmable interval timer and the PC's port B (0x61).
//!
//! # Offsets
//!
//! Offsets are `port - 0x40`:
//!
//! | Port | Offset | Register |
//! |---|---|---|
//! | 0x40-0x42 | 0-2 | counters 0-2 |
//! | 0x43 | 3 | control word (write only) |
//! | 0x61 | 0x21 | port B: bit 0 = channel 2 gate, bit 1 = speaker data, bits 2-3 stored; reads add the refresh toggle (bit 4, every 15.085 µs) and OUT2 (bit 5) |
//!
//! # Model
//!
//! The counters run at 1.193182 MHz and are computed from virtual time: counter values and OUT levels are a
//! function of the tick at which the count was loaded, never of per-tick events. Following the datasheet,
//! a count is loaded into the counting element on the clock edge after it is written, so in mode 0 OUT goes
//! high N+1 clocks after the write. Reads in the window between the write and that edge (less than one PIT
//! clock, 838 ns) return the new count: the datasheet leaves the counting element undefined there, and on a
//! PC no read can land in it, since an ISA I/O cycle takes longer than a PIT clock; Ferrite's port accesses
//! take one instruction slot, and Linux's `quick_pit_calibrate` relies on that ("the PIT starts counting at
//! the next edge, so we need to delay for a microsecond ... just read back the 16-bit counter once"): with
//! the stale value it fails with "Fast TSC calibration failed". All six modes (6 and 7 alias 2 and 3), binary and BCD counting, the
//! three access modes, counter latch, read-back (status with OUT and null count) and the gate inputs are
//! implemented. In modes 2 and 3 a new count written while counting takes effect at the end of the current
//! period (for mode 3 the datasheet says half-period; the difference is not visible to software that waits
//! for OUT). OUT0 drives ISA line 0: each rising edge of OUT0 is delivered as an edge on `ctx.irq`, and
//! [`Device::next_deadline`] is the next rising edge; several edges that pass between two
//! [`Device::advance`] calls coalesce into one, as they would behind a busy interrupt controller.
//! Power-on state: every counter idle (no count loaded, OUT low), gates of counters 0 and 1 tied high.

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::note_deadline;

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// Period of the DRAM refresh toggle in port B bit 4, in nanoseconds.
const REFRESH_NS: u64 = 15_085;

/// One 8254 counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Channel {
    /// Control word bits 5:0 as programmed (for the status byte).
    control: u8,
    /// Mode 0-5 (6 and 7 folded into 2 and 3).
    mode: u8,
    bcd: bool,
    /// 1 = LSB, 2 = MSB, 3 = LSB then MSB.
    access: u8,
    /// Count register.
    cr: u16,
    /// A count has been written since the control word.
    have_count: bool,
    write_msb_next: bool,
    write_lsb: u8,
    read_msb_next: bool,
    latched: Option<u16>,
    latch_msb_next: bool,
    status_latch: Option<u8>,
    gate: bool,
    // Counting element timeline.
    loaded: bool,
    /// Clock edge (tick index) after which the counting element holds `n`.
    start: u64,
    n: u32,
    /// One-shot modes: terminal count already passed before `start`.
    fired: bool,
    /// Counting stopped by the gate: remaining count, OUT level, fired flag.
    frozen: Option<(u32, bool, bool)>,
    /// OUT and counting-element value while nothing is loaded (or before `start`).
    out_idle: bool,
    ce_idle: u32,
    /// Modes 2/3: a new count `n` becomes current at tick `.0`.
    pending: Option<(u64, u32)>,
    null_count: bool,
    /// Tick at which the null-count flag clears (`u64::MAX`: on a later event).
    null_clear: u64,
}

fn to_bcd(v: u32) -> u16 {
    let v = v % 10_000;
    (((v / 1000) << 12) | ((v / 100 % 10) << 8) | ((v / 10 % 10) << 4) | (v % 10)) as u16
}

fn from_bcd(v: u16) -> u32 {
    let d = |s: u16| u32::from((v >> s) & 0xf);
    d(12) * 1000 + d(8) * 100 + d(4) * 10 + d(0)
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel { access: 3, gate, null_clear: u64::MAX, ..Channel::default() }
    }

    fn modulus(&self) -> u32 {
        if self.bcd { 10_000 } else { 65_536 }
    }

    /// The count register as a period: 0 means the full modulus.
    fn period(&self) -> u32 {
        let v = if self.bcd { from_bcd(self.cr) } else { u32::from(self.cr) };
        if v == 0 { self.modulus() } else { v }
    }

    /// Counting-element value at tick `t` (0..modulus).
    fn ce_at(&self, t: u64) -> u32 {
        let m = u64::from(self.modulus());
        if let Some((ce, _, _)) = self.frozen {
            return (u64::from(ce) % m) as u32;
        }
        if !self.loaded {
            return self.ce_idle;
        }
        // Before the load edge the counting element already reads as the new count (see the module docs:
        // no ISA read can land in that window on a PC).
        let k = t.saturating_sub(self.start);
        let n = u64::from(self.n);
        let v = match self.mode {
            2 if n >= 2 => n - k % n,
            3 if n >= 2 => {
                let p = k % n;
                let half_hi = n.div_ceil(2);
                let (q, top) = if p < half_hi { (p, n) } else { (p - half_hi, n - (n & 1)) };
                if q == 0 { top } else { (top + (n & 1)).saturating_sub(2 * q) }
            }
            2 | 3 => n,
            _ => (n % m + m - k % m) % m,
        };
        (v % m) as u32
    }

    /// OUT at tick `t`.
    fn out_at(&self, t: u64) -> bool {
        if let Some((_, out, _)) = self.frozen {
            return out;
        }
        if !self.loaded || t < self.start {
            return self.out_idle;
        }
        let k = t - self.start;
        let n = u64::from(self.n);
        match self.mode {
            0 | 1 => self.fired || k >= n,
            4 | 5 => self.fired || k != n,
            _ if n < 2 => true,
            2 => k % n != n - 1,
            _ => k % n < n.div_ceil(2),
        }
    }

    /// The first clock edge after tick `t` at which OUT rises.
    fn next_rising_after(&self, t: u64) -> Option<u64> {
        if self.frozen.is_some() || !self.loaded {
            return None;
        }
        if let Some((at, _)) = self.pending
            && at > t
        {
            return Some(at);
        }
        let n = u64::from(self.n);
        match self.mode {
            0 | 1 if !self.fired => self.start.checked_add(n).filter(|&e| e > t),
            4 | 5 if !self.fired => self.start.checked_add(n + 1).filter(|&e| e > t),
            2 | 3 if n >= 2 => {
                let periods = if t < self.start { 1 } else { (t - self.start) / n + 1 };
                periods.checked_mul(n).and_then(|d| self.start.checked_add(d))
            }
            _ => None,
        }
    }

    /// Folds changes scheduled at or before tick `t`.
    fn sync(&mut self, t: u64) {
        if let Some((at, n)) = self.pending
            && at <= t
        {
            self.start = at;
            self.n = n;
            self.pending = None;
        }
        if self.null_count && self.null_clear <= t {
            self.null_count = false;
        }
    }

    fn display(&self, ce: u32) -> u16 {
        if self.bcd { to_bcd(ce) } else { ce as u16 }
    }

    fn status(&self, t: u64) -> u8 {
        (u8::from(self.out_at(t)) << 7) | (u8::from(self.null_count) << 6) | self.control
    }

    fn write_control(&mut self, t: u64, cw: u8) {
        self.ce_idle = self.ce_at(t);
        self.control = cw & 0x3f;
        self.access = (cw >> 4) & 3;
        self.mode = match (cw >> 1) & 7 {
            m @ 6..=7 => m - 4,
            m => m,
        };
        self.bcd = cw & 1 != 0;
        self.have_count = false;
        self.write_msb_next = false;
        self.read_msb_next = false;
        self.latched = None;
        self.status_latch = None;
        self.loaded = false;
        self.frozen = None;
        self.pending = None;
        self.fired = false;
        self.out_idle = self.mode != 0;
        self.null_count = true;
        self.null_clear = u64::MAX;
    }

    /// Loads the counting element with a fresh count on the clock after tick `t`.
    fn load(&mut self, t: u64, n: u32) {
        self.loaded = true;
        self.start = t.saturating_add(1);
        self.n = n;
        self.fired = false;
        self.frozen = None;
        self.pending = None;
        self.null_clear = self.start;
    }

    fn write_count_byte(&mut self, t: u64, v: u8) {
        match self.access {
            1 => self.cr = u16::from(v),
            2 => self.cr = u16::from(v) << 8,
            _ if !self.write_msb_next => {
                self.write_lsb = v;
                self.write_msb_next = true;
                if self.mode == 0 {
                    // Writing the first byte stops the count and sets OUT low at once.
                    self.ce_idle = self.ce_at(t);
                    self.out_idle = false;
                    self.loaded = false;
                    self.frozen = None;
                }
                return;
            }
            _ => {
                self.cr = u16::from_le_bytes([self.write_lsb, v]);
                self.write_msb_next = false;
            }
        }
        self.commit(t);
    }

    /// A complete count has been written to the count register.
    fn commit(&mut self, t: u64) {
        self.null_count = true;
        self.have_count = true;
        let p = self.period();
        match self.mode {
            0 | 4 => {
                self.ce_idle = self.ce_at(t);
                self.out_idle = self.mode == 4;
                self.load(t, p);
                if !self.gate {
                    self.frozen = Some((p, self.mode == 4, false));
                }
            }
            1 | 5 => self.null_clear = u64::MAX,
            _ => {
                if self.loaded && self.frozen.is_none() {
                    if t < self.start {
                        self.n = p;
                        self.null_clear = self.start;
                    } else {
                        let n = u64::from(self.n.max(1));
                        let at = ((t - self.start) / n + 1)
                            .checked_mul(n)
                            .and_then(|d| self.start.checked_add(d))
                            .unwrap_or(u64::MAX);
                        self.pending = Some((at, p));
                        self.null_clear = at;
                    }
                } else if self.gate {
                    self.load(t, p);
                } else {
                    self.null_clear = u64::MAX;
                }
            }
        }
    }

    fn set_gate(&mut self, t: u64, level: bool) {
        if level == self.gate {
            return;
        }
        self.gate = level;
        match self.mode {
            0 | 4 => {
                if !level {
                    if self.loaded && self.frozen.is_none() {
                        let (ce, fired) = if t < self.start {
                            (self.n, false)
                        } else {
                            let k = t - self.start;
                            let n = u64::from(self.n);
                            let fired = self.fired || if self.mode == 0 { k >= n } else { k > n };
                            (self.ce_at(t), fired)
                        };
                        self.frozen = Some((ce, self.out_at(t), fired));
                    }
                } else if let Some((ce, _, fired)) = self.frozen.take() {
                    self.start = t.saturating_add(1);
                    self.n = ce;
                    self.fired = fired;
                }
            }
            1 | 5 => {
                if level && self.have_count {
                    self.ce_idle = self.ce_at(t);
                    self.out_idle = self.out_at(t);
                    let p = self.period();
                    self.load(t, p);
                }
            }
            _ => {
                if !level {
                    if self.loaded && self.frozen.is_none() {
                        self.frozen = Some((self.ce_at(t), true, false));
                    }
                    self.out_idle = true;
                } else if self.have_count {
                    let p = self.period();
                    self.load(t, p);
                }
            }
        }
    }

    fn latch_count(&mut self, t: u64) {
        if self.latched.is_none() {
            self.latched = Some(self.display(self.ce_at(t)));
            self.latch_msb_next = false;
        }
    }

    fn read_byte(&mut self, t: u64) -> u8 {
        if let Some(s) = self.status_latch.take() {
            return s;
        }
        let (value, from_latch) = match self.latched {
            Some(v) => (v, true),
            None => (self.display(self.ce_at(t)), false),
        };
        let [lo, hi] = value.to_le_bytes();
        match self.access {
            1 => {
                if from_latch {
                    self.latched = None;
                }
                lo
            }
            2 => {
                if from_latch {
                    self.latched = None;
                }
                hi
            }
            _ => {
                let msb = if from_latch { self.latch_msb_next } else { self.read_msb_next };
                if from_latch {
                    self.latch_msb_next = !msb;
                    if msb {
                        self.latched = None;
                    }
                } else {
                    self.read_msb_next = !msb;
                }
                if msb { hi } else { lo }
            }
        }
    }

    fn save(&self, w: &mut SnapshotWriter) {
        for v in [self.control, self.mode, self.access, self.write_lsb] {
            w.u8(v);
        }
        w.u16(self.cr);
        for v in [
            self.bcd,
            self.have_count,
            self.write_msb_next,
            self.read_msb_next,
            self.latch_msb_next,
            self.gate,
            self.loaded,
            self.fired,
            self.out_idle,
            self.null_count,
        ] {
            w.bool(v);
        }
        w.bool(self.latched.is_some());
        w.u16(self.latched.unwrap_or(0));
        w.bool(self.status_latch.is_some());
        w.u8(self.status_latch.unwrap_or(0));
        w.u64(self.start);
        w.u32(self.n);
        w.bool(self.frozen.is_some());
        let (fc, fo, ff) = self.frozen.unwrap_or((0, false, false));
        w.u32(fc);
        w.bool(fo);
        w.bool(ff);
        w.u32(self.ce_idle);
        w.bool(self.pending.is_some());
        let (pa, pn) = self.pending.unwrap_or((0, 0));
        w.u64(pa);
        w.u32(pn);
        w.u64(self.null_clear);
    }

    fn restore(r: &mut SnapshotReader<'_>) -> Result<Channel, SnapshotError> {
        let mut c = Channel::default();
        [c.control, c.mode, c.access, c.write_lsb] = r.u8s::<4>()?;
        c.cr = r.u16()?;
        [
            c.bcd,
            c.have_count,
            c.write_msb_next,
            c.read_msb_next,
            c.latch_msb_next,
            c.gate,
            c.loaded,
            c.fired,
            c.out_idle,
            c.null_count,
        ] = r.bools::<10>()?;
        let has_latch = r.bool()?;
        let latch = r.u16()?;
        c.latched = has_latch.then_some(latch);
        let has_status = r.bool()?;
        let status = r.u8()?;
        c.status_latch = has_status.then_some(status);
        c.start = r.u64()?;
        c.n = r.u32()?;
        let has_frozen = r.bool()?;
        let frozen = (r.u32()?, r.bool()?, r.bool()?);
        c.frozen = has_frozen.then_some(frozen);
        c.ce_idle = r.u32()?;
        let has_pending = r.bool()?;
        let pending = (r.u64()?, r.u32()?);
        c.pending = has_pending.then_some(pending);
        c.null_clear = r.u64()?;
        if c.mode > 5 || c.access == 0 || c.access > 3 || c.control > 0x3f {
            return Err(SnapshotError::Invalid("pit channel".into()));
        }
        Ok(c)
    }
}

/// The 8254 PIT with port B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pit8254 {
    channels: [Channel; 3],
    /// Port B bits 3:0 as written.
    port_b: u8,
    /// Last tick for which OUT0 edges have been delivered.
    irq_tick: u64,
}

impl Default for Pit8254 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit8254 {
    /// A PIT in its power-on state.
    pub fn new() -> Self {
        Pit8254 {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port_b: 0,
            irq_tick: 0,
        }
    }

    /// OUT of `channel` (0-2) at `now`.
    pub fn out(&self, channel: usize, now: VirtTime) -> bool {
        self.channels.get(channel).is_some_and(|c| c.out_at(now.ticks(PIT_HZ)))
    }

    /// Whether the speaker is sounding: port B enables both the channel 2 gate and speaker data, and OUT2 is
    /// high.
    pub fn speaker_on(&self, now: VirtTime) -> bool {
        self.port_b & 3 == 3 && self.out(2, now)
    }

    /// Delivers OUT0 edges up to `ctx.now` and folds scheduled changes.
    fn catch_up(&mut self, ctx: &mut DeviceCtx<'_>) {
        let t = ctx.now.ticks(PIT_HZ);
        if t > self.irq_tick {
            if self.channels[0].next_rising_after(self.irq_tick).is_some_and(|e| e <= t) {
                ctx.irq.pulse(0);
            }
            self.irq_tick = t;
        }
        for c in &mut self.channels {
            c.sync(t);
        }
    }

    fn update_irq(&self, ctx: &mut DeviceCtx<'_>) {
        ctx.irq.set(0, self.channels[0].out_at(self.irq_tick));
    }

    fn write_control(&mut self, t: u64, cw: u8) {
        let sel = cw >> 6;
        if sel == 3 {
            // Read-back command.
            for (i, c) in self.channels.iter_mut().enumerate() {
                if cw & (2 << i) == 0 {
                    continue;
                }
                if cw & 0x20 == 0 {
                    c.latch_count(t);
                }
                if cw & 0x10 == 0 && c.status_latch.is_none() {
                    c.status_latch = Some(c.status(t));
                }
            }
            return;
        }
        let c = &mut self.channels[usize::from(sel)];
        if cw & 0x30 == 0 {
            c.latch_count(t);
        } else {
            c.write_control(t, cw);
        }
    }
}

impl Device for Pit8254 {
    fn name(&self) -> &str {
        "pit"
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xff);
        self.catch_up(ctx);
        let t = self.irq_tick.max(ctx.now.ticks(PIT_HZ));
        let Some(first) = data.first_mut() else { return };
        *first = match offset {
            0..=2 => self.channels[usize::from(offset)].read_byte(t),
            0x21 => {
                let refresh = (ctx.now.as_nanos() / REFRESH_NS) & 1 == 1;
                self.port_b | (u8::from(refresh) << 4) | (u8::from(self.channels[2].out_at(t)) << 5)
            }
            _ => 0xff,
        };
        self.update_irq(ctx);
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        let before = self.next_deadline();
        self.catch_up(ctx);
        let t = self.irq_tick.max(ctx.now.ticks(PIT_HZ));
        let Some(&v) = data.first() else { return };
        match offset {
            0..=2 => self.channels[usize::from(offset)].write_count_byte(t, v),
            3 => self.write_control(t, v),
            0x21 => {
                self.port_b = v & 0x0f;
                self.channels[2].set_gate(t, v & 1 != 0);
            }
            _ => {}
        }
        self.update_irq(ctx);
        note_deadline(ctx, before, self.next_deadline());
    }

    fn reset(&mut self) {
        *self = Pit8254 { irq_tick: self.irq_tick, ..Pit8254::new() };
    }

    fn next_deadline(&self) -> Option<VirtTime> {
        self.channels[0].next_rising_after(self.irq_tick).map(|e| VirtTime::from_ticks(e, PIT_HZ))
    }

    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        self.catch_up(ctx);
        self.update_irq(ctx);
    }
}

impl Snapshot for Pit8254 {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        for c in &self.channels {
            c.save(w);
        }
        w.u8(self.port_b);
        w.u64(self.irq_tick);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("pit")?;
        let channels = [Channel::restore(r)?, Channel::restore(r)?, Channel::restore(r)?];
        let port_b = r.u8()? & 0x0f;
        let irq_tick = r.u64()?;
        *self = Pit8254 { channels, port_b, irq_tick };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    /// Time of tick `t`.
    fn at(t: u64) -> u64 {
        VirtTime::from_ticks(t, PIT_HZ).0
    }

    fn read16(b: &mut Bus, p: &mut Pit8254, ns: u64, ch: u16) -> u16 {
        let lo = b.rd(p, ns, ch);
        let hi = b.rd(p, ns, ch);
        u16::from_le_bytes([lo, hi])
    }

    #[test]
    fn mode0_interrupt_on_terminal_count() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, at(10), 3, 0x30); // ch0, LSB/MSB, mode 0
        b.wr(&mut p, at(10), 0, 100);
        b.wr(&mut p, at(10), 0, 0);
        assert!(!b.high(0));
        // Loaded at tick 11, reaches 0 at tick 111.
        assert_eq!(p.next_deadline(), Some(VirtTime(at(111))));
        assert_eq!(read16(&mut b, &mut p, at(11), 0), 100);
        assert_eq!(read16(&mut b, &mut p, at(61), 0), 50);
        b.advance(&mut p, at(111) - 1);
        assert!(!b.high(0));
        b.advance(&mut p, at(111));
        assert!(b.high(0));
        assert!(b.took_edge(0));
        assert_eq!(p.next_deadline(), None);
        // Counting continues, wrapping through 0xFFFF.
        assert_eq!(read16(&mut b, &mut p, at(112), 0), 0xffff);
    }

    #[test]
    fn mode2_rate_generator_deadlines_and_irq() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0x34);
        b.wr(&mut p, 0, 0, 0x9c);
        b.wr(&mut p, 0, 0, 0x2e); // 11932: ~100 Hz
        assert!(b.high(0), "mode 2 OUT high");
        b.took_edge(0);
        let d1 = p.next_deadline().unwrap();
        assert_eq!(d1, VirtTime(at(1 + 11932)));
        assert_eq!(read16(&mut b, &mut p, at(1), 0), 11932);
        assert_eq!(read16(&mut b, &mut p, at(1 + 11931), 0), 1);
        assert!(!p.out(0, VirtTime(at(1 + 11931))), "OUT low for the clock with count 1");
        b.advance(&mut p, d1.0);
        assert!(b.took_edge(0));
        assert!(b.high(0));
        assert_eq!(p.next_deadline(), Some(VirtTime(at(1 + 2 * 11932))));
        // A late advance coalesces missed edges into one.
        b.advance(&mut p, at(1 + 10 * 11932 + 5));
        assert!(b.took_edge(0));
        assert_eq!(p.next_deadline(), Some(VirtTime(at(1 + 11 * 11932))));
        // A new count takes effect at the end of the current period.
        b.wr(&mut p, at(1 + 10 * 11932 + 5), 0, 100);
        b.wr(&mut p, at(1 + 10 * 11932 + 5), 0, 0);
        assert_eq!(p.next_deadline(), Some(VirtTime(at(1 + 11 * 11932))));
        b.advance(&mut p, at(1 + 11 * 11932));
        assert_eq!(p.next_deadline(), Some(VirtTime(at(1 + 11 * 11932 + 100))));
    }

    #[test]
    fn mode3_square_wave_on_channel2_via_port61() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0xb6); // ch2 LSB/MSB mode 3
        b.wr(&mut p, 0, 2, 10);
        b.wr(&mut p, 0, 2, 0);
        assert!(p.next_deadline().is_none(), "only channel 0 has deadlines");
        assert_eq!(b.rd(&mut p, at(100), 0x21) & 0x20, 0x20, "gate low: OUT2 stays high");
        b.wr(&mut p, at(100), 0x21, 0x03);
        assert!(p.speaker_on(VirtTime(at(101))));
        // Loaded at tick 101: high for 5 ticks, low for 5.
        let out2 = |b: &mut Bus, p: &mut Pit8254, t| b.rd(p, at(t), 0x21) & 0x20 != 0;
        assert_eq!(read16(&mut b, &mut p, at(101), 2), 10);
        assert_eq!(read16(&mut b, &mut p, at(102), 2), 8);
        assert!(out2(&mut b, &mut p, 105));
        assert!(!out2(&mut b, &mut p, 106));
        assert!(!out2(&mut b, &mut p, 110));
        assert!(out2(&mut b, &mut p, 111));
        // Gate low forces OUT high (even in the low half) and stops counting.
        assert!(!out2(&mut b, &mut p, 117));
        b.wr(&mut p, at(117), 0x21, 0x00);
        assert!(out2(&mut b, &mut p, 118));
        assert_eq!(b.rd(&mut p, at(118), 0x21) & 0x0f, 0);
    }

    #[test]
    fn mode0_gate_pauses_counting() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0xb0); // ch2 mode 0
        b.wr(&mut p, 0, 0x21, 0x01);
        b.wr(&mut p, 0, 2, 50);
        b.wr(&mut p, 0, 2, 0);
        b.wr(&mut p, at(21), 0x21, 0x00); // pause with 30 left
        assert_eq!(read16(&mut b, &mut p, at(500), 2), 30);
        b.wr(&mut p, at(1000), 0x21, 0x01);
        assert_eq!(b.rd(&mut p, at(1030), 0x21) & 0x20, 0);
        assert_eq!(b.rd(&mut p, at(1031), 0x21) & 0x20, 0x20);
    }

    #[test]
    fn mode1_hardware_retriggerable_one_shot() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0x92); // ch2 LSB only, mode 1
        b.wr(&mut p, 0, 2, 20);
        assert_eq!(b.rd(&mut p, at(5), 0x21) & 0x20, 0x20, "OUT high until triggered");
        b.wr(&mut p, at(10), 0x21, 0x01);
        assert_eq!(b.rd(&mut p, at(11), 0x21) & 0x20, 0, "OUT low after trigger");
        b.wr(&mut p, at(15), 0x21, 0x00);
        b.wr(&mut p, at(16), 0x21, 0x01); // retrigger: reload at 17
        assert_eq!(b.rd(&mut p, at(36), 0x21) & 0x20, 0);
        assert_eq!(b.rd(&mut p, at(37), 0x21) & 0x20, 0x20);
    }

    #[test]
    fn modes_4_and_5_strobes() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0x18); // ch0 LSB mode 4
        b.wr(&mut p, 0, 0, 5);
        b.took_edge(0);
        assert!(b.high(0));
        assert!(!p.out(0, VirtTime(at(6))), "strobe while count is 0");
        assert_eq!(p.next_deadline(), Some(VirtTime(at(7))));
        b.advance(&mut p, at(7));
        assert!(b.took_edge(0));
        assert_eq!(p.next_deadline(), None, "one strobe only");
        b.wr(&mut p, at(20), 3, 0x9a); // ch2 mode 5
        b.wr(&mut p, at(20), 2, 3);
        b.wr(&mut p, at(30), 0x21, 1);
        assert_eq!(b.rd(&mut p, at(33), 0x21) & 0x20, 0x20);
        assert_eq!(b.rd(&mut p, at(34), 0x21) & 0x20, 0);
        assert_eq!(b.rd(&mut p, at(35), 0x21) & 0x20, 0x20);
    }

    #[test]
    fn bcd_and_access_modes() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0x71); // ch1 LSB/MSB mode 0 BCD
        b.wr(&mut p, 0, 1, 0x00);
        b.wr(&mut p, 0, 1, 0x10); // 1000
        assert_eq!(read16(&mut b, &mut p, at(2), 1), 0x0999);
        b.wr(&mut p, at(2), 3, 0x61); // MSB only BCD
        b.wr(&mut p, at(2), 1, 0x00); // 0 = 10000
        assert_eq!(b.rd(&mut p, at(4), 1), 0x99, "9999 after one clock, MSB");
        b.wr(&mut p, at(4), 3, 0x50); // LSB only binary
        b.wr(&mut p, at(4), 1, 0x80);
        assert_eq!(b.rd(&mut p, at(5 + 0x10), 1), 0x70);
    }

    #[test]
    fn counter_latch_and_read_back() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0x34);
        assert_eq!(b.rd(&mut p, 0, 3), 0xff, "control word is write-only");
        b.wr(&mut p, 0, 3, 0xe2); // read-back status of ch0
        assert_eq!(b.rd(&mut p, 0, 0), 0x80 | 0x40 | 0x34, "OUT high, null count");
        b.wr(&mut p, 0, 0, 0x00);
        b.wr(&mut p, 0, 0, 0x10);
        b.wr(&mut p, at(1), 3, 0xe2);
        assert_eq!(b.rd(&mut p, at(1), 0) & 0x40, 0, "count loaded");
        b.wr(&mut p, at(5), 3, 0x00); // latch ch0
        b.wr(&mut p, at(9), 3, 0x00); // ignored while latched
        assert_eq!(read16(&mut b, &mut p, at(100), 0), 0x1000 - 4);
        assert_eq!(read16(&mut b, &mut p, at(100), 0), 0x1000 - 99, "live again");
        // Read-back of count and status together: status first.
        b.wr(&mut p, at(200), 3, 0xc2);
        assert_eq!(b.rd(&mut p, at(300), 0), 0xb4);
        assert_eq!(read16(&mut b, &mut p, at(300), 0), 0x1000 - 199);
    }

    #[test]
    fn mode0_first_byte_stops_count_and_control_word_edges() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0x30);
        b.wr(&mut p, 0, 0, 10);
        b.wr(&mut p, 0, 0, 0);
        b.wr(&mut p, at(5), 0, 50); // first byte: counting stops, OUT stays low
        assert_eq!(p.next_deadline(), None);
        assert_eq!(read16(&mut b, &mut p, at(100), 0), 6);
        b.wr(&mut p, at(100), 0, 0); // second byte: 50 loaded at tick 101
        assert_eq!(p.next_deadline(), Some(VirtTime(at(151))));
        assert!(b.req.reschedule, "a newly armed deadline asks for a reschedule");
        b.took_edge(0);
        b.wr(&mut p, at(110), 3, 0x34); // mode 2: OUT goes high at once
        assert!(b.high(0));
        assert!(b.took_edge(0), "the control word itself is an OUT0 edge");
    }

    /// Linux's quick_pit_calibrate writes channel 2 (mode 0, 0xFFFF) and reads it back at once, expecting
    /// the new count: a read before the load edge returns it, not the counter's stale contents, while OUT
    /// and the terminal count still follow the load on the next clock.
    #[test]
    fn read_before_the_load_edge_sees_the_new_count() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, at(10), 0x21, 0x01); // gate 2 on
        b.wr(&mut p, at(10), 3, 0xb0); // ch2, LSB/MSB, mode 0
        b.wr(&mut p, at(10), 2, 0xff);
        b.wr(&mut p, at(10) + 1, 2, 0xff);
        assert_eq!(read16(&mut b, &mut p, at(10) + 2, 2), 0xffff);
        assert_eq!(read16(&mut b, &mut p, at(11), 2), 0xffff);
        assert_eq!(read16(&mut b, &mut p, at(12), 2), 0xfffe);
        assert_eq!(read16(&mut b, &mut p, at(11 + 256), 2) >> 8, 0xfe);
        assert!(!p.out(2, VirtTime(at(11 + 0xffff) - 1)));
        assert!(p.out(2, VirtTime(at(11 + 0xffff))));
    }

    #[test]
    fn port61_refresh_toggle() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        let a = b.rd(&mut p, 0, 0x21) & 0x10;
        let c = b.rd(&mut p, REFRESH_NS, 0x21) & 0x10;
        assert_ne!(a, c);
        b.wr(&mut p, 0, 0x21, 0xfc);
        assert_eq!(b.rd(&mut p, 0, 0x21) & 0x0f, 0x0c);
    }

    /// After power-on and after a reset (here of a running channel 0), nothing counts: no IRQ0 edge and
    /// no deadline however long the clock runs; a control word alone loads nothing (it only sets OUT's
    /// initial level); the first count written starts the counter and so the interrupts.
    #[test]
    fn counts_nothing_until_programmed() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        let check_silent = |p: &mut Pit8254, b: &mut Bus, from: u64| {
            assert_eq!(p.next_deadline(), None);
            for s in 1..=10 {
                b.advance(p, from + s * 1_000_000_000);
                assert!(!b.took_edge(0), "IRQ0 edge {s} s after reset at {from} ns");
                assert!(!b.high(0), "OUT0 high {s} s after reset");
            }
        };
        check_silent(&mut p, &mut b, 0);
        b.wr(&mut p, 10_000_000_000, 3, 0x34);
        b.wr(&mut p, 10_000_000_000, 0, 100);
        b.wr(&mut p, 10_000_000_000, 0, 0);
        assert!(p.next_deadline().is_some());
        b.took_edge(0);
        p.reset();
        check_silent(&mut p, &mut b, 10_000_000_000);
        let t = 20_000_000_000;
        b.wr(&mut p, t, 3, 0x34);
        assert_eq!(p.next_deadline(), None, "control word without a count");
        // 82C54 datasheet, mode 2: "OUT will be initially high" after the control word (one edge).
        assert!(b.took_edge(0) && b.high(0));
        b.advance(&mut p, t + 1_000_000_000);
        assert!(!b.took_edge(0), "no count loaded, no further edge");
        let t = t + 1_000_000_000;
        b.wr(&mut p, t, 0, 100);
        b.wr(&mut p, t, 0, 0);
        let first = p.next_deadline().expect("counting");
        b.took_edge(0);
        b.advance(&mut p, first.0);
        assert!(b.took_edge(0), "IRQ0 once programmed");
    }

    #[test]
    fn snapshot_and_hostile_input() {
        let mut p = Pit8254::new();
        let mut b = Bus::new();
        b.wr(&mut p, 0, 3, 0x34);
        b.wr(&mut p, 0, 0, 0x34);
        b.wr(&mut p, 0, 0, 0x12);
        let mut fresh = Pit8254::new();
        roundtrip(&p, &mut fresh);
        assert_eq!(fresh, p);
        hammer(&mut p, &[0, 1, 2, 3, 0x21], false, 11);
    }
}
