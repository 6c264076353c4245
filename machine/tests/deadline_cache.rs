//! The board's cached earliest deadline (`Board::next_deadline`) follows every change of a device's
//! deadline: a guest access that arms or cancels a timer, an advance that fires it, a reset and a
//! snapshot restore; and `advance_devices` before the earliest deadline advances nothing.

use cpu::CpuBus;
use machine::board::Board;
use machine::clock::Clock;
use vmcore::{
    AddressMap, Device, DeviceCtx, GuestRam, Snapshot, SnapshotError, SnapshotReader, SnapshotWriter,
    VirtTime,
};

/// A one-shot timer on one port: writing `n` arms it `n` µs from now (0 cancels); it raises IRQ 5 when
/// it fires and counts its firings.
#[derive(Default)]
struct OneShot {
    due: Option<VirtTime>,
    fired: u64,
}

impl Device for OneShot {
    fn name(&self) -> &str {
        "oneshot"
    }
    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, _: u16, data: &[u8]) {
        self.due = (data[0] != 0).then(|| ctx.now.add_nanos(u64::from(data[0]) * 1000));
    }
    fn reset(&mut self) {
        self.due = None;
    }
    fn next_deadline(&self) -> Option<VirtTime> {
        self.due
    }
    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        if self.due.is_some_and(|t| t <= ctx.now) {
            self.due = None;
            self.fired += 1;
            ctx.irq.pulse(5);
        }
    }
}

impl Snapshot for OneShot {
    type Restored = ();
    fn save(&self, w: &mut SnapshotWriter) {
        w.tag("oneshot");
        w.u64(self.due.map_or(u64::MAX, |t| t.0));
        w.u64(self.fired);
    }
    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        r.tag("oneshot")?;
        self.due = match r.u64()? {
            u64::MAX => None,
            t => Some(VirtTime(t)),
        };
        self.fired = r.u64()?;
        Ok(())
    }
}

const PORT: u16 = 0x700;

fn board() -> Board {
    let mut b = Board::new(GuestRam::new(1 << 20).unwrap(), AddressMap::new(), Clock::new(1_000_000_000));
    let id = b.add_device(Box::new(OneShot::default()));
    b.map_ports(id, PORT, 1, 0);
    b
}

/// Moves the board's time to `ns` (1 instruction per ns).
fn at(b: &mut Board, ns: u64) {
    b.sync(ns);
}

#[test]
fn the_cached_deadline_follows_arming_firing_cancelling_reset_and_restore() {
    let mut b = board();
    assert_eq!(b.next_deadline(), VirtTime::NEVER, "nothing armed");
    at(&mut b, 1_000);
    b.io_out(PORT, 1, 5);
    assert_eq!(b.next_deadline(), VirtTime(6_000), "armed by a guest write");
    assert_eq!(b.next_deadline(), VirtTime(6_000), "asked again: the same");
    // Before the deadline nothing advances; at it, the timer fires once.
    at(&mut b, 5_999);
    assert!(!b.advance_devices());
    assert_eq!(b.next_deadline(), VirtTime(6_000));
    at(&mut b, 6_000);
    assert!(b.advance_devices());
    assert_eq!(b.next_deadline(), VirtTime::NEVER, "fired: no deadline left");
    assert!(!b.advance_devices(), "fires once");

    // Re-armed, then moved earlier, then cancelled: each write is seen.
    b.io_out(PORT, 1, 200);
    assert_eq!(b.next_deadline(), VirtTime(206_000));
    b.io_out(PORT, 1, 1);
    assert_eq!(b.next_deadline(), VirtTime(7_000));
    b.io_out(PORT, 1, 0);
    assert_eq!(b.next_deadline(), VirtTime::NEVER);

    // A snapshot with the timer armed, restored over a board where it is not.
    b.io_out(PORT, 1, 9);
    let mut w = SnapshotWriter::new();
    b.save(&mut w);
    let snap = w.finish();
    let mut c = board();
    assert_eq!(c.next_deadline(), VirtTime::NEVER);
    c.restore(&mut SnapshotReader::new(&snap)).unwrap();
    assert_eq!(c.next_deadline(), VirtTime(15_000), "the restored deadline, recomputed");
    // And the other way: restoring a board with nothing armed over an armed one.
    let mut w = SnapshotWriter::new();
    board().save(&mut w);
    let idle = w.finish();
    c.restore(&mut SnapshotReader::new(&idle)).unwrap();
    assert_eq!(c.next_deadline(), VirtTime::NEVER);

    // A reset cancels it.
    b.reset_devices();
    assert_eq!(b.next_deadline(), VirtTime::NEVER);
}

/// Many random arm/cancel/advance steps: the cached deadline always equals the one a fresh board
/// restored from the same state computes (a scan).
#[test]
fn the_cached_deadline_equals_a_fresh_scan_at_every_step() {
    let mut b = board();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut now = 0u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 4 {
            0 => b.io_out(PORT, 1, (x >> 8) as u32 & 0xff),
            1 => {
                b.advance_devices();
            }
            _ => {
                // Ask without any change: the cache answers.
                b.next_deadline();
            }
        }
        now += (x >> 16) % 3000;
        at(&mut b, now);
        let mut w = SnapshotWriter::new();
        b.save(&mut w);
        let snap = w.finish();
        let mut fresh = board();
        fresh.restore(&mut SnapshotReader::new(&snap)).unwrap();
        assert_eq!(b.next_deadline(), fresh.next_deadline(), "at {now} ns");
    }
}

/// Without a change, the deadline is not recomputed: asking again and advancing early cost no scan.
#[test]
fn asking_again_without_a_change_scans_nothing() {
    let mut b = board();
    b.io_out(PORT, 1, 50);
    b.next_deadline();
    let scans = b.counters().deadline_scans;
    for t in 0..100 {
        at(&mut b, t * 10);
        assert_eq!(b.next_deadline(), VirtTime(50_000));
        assert!(!b.advance_devices());
    }
    let c = b.counters();
    assert_eq!(c.deadline_scans, scans, "{c:?}");
    assert_eq!(c.advance_walks, 0, "{c:?}");
    // A guest access drops the cache: the next question scans once.
    b.io_out(PORT, 1, 60);
    b.next_deadline();
    b.next_deadline();
    assert_eq!(b.counters().deadline_scans, scans + 1);
}
