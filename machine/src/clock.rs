//! The virtual clock. Under the interpreter (and later the JIT) virtual time is a pure function of the
//! instruction count: `ns = (retired + idle) * 1e9 / ips`, where `idle` counts the instruction slots
//! spent halted. Two runs of the same guest with the same inputs therefore see identical time.
//!
//! Under KVM there is no instruction counter: the clock is in host-time mode ([`Clock::host`]), where
//! time is the host's monotonic time since the clock was created and the "instruction count" the
//! machine works with is a count of instruction *slots*: `slots = elapsed_ns * ips / 1e9`. The KVM
//! engine sets `cpu.icount` to the slot count at every exit ([`Clock::icount_now`]), so the machine's
//! slice arithmetic (`until`, `--max-instructions`) keeps working and becomes host-time arithmetic.

use std::time::{Duration, Instant};
use vmcore::VirtTime;

/// Where time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSource {
    /// Time is a function of the retired-instruction count (interpreter, JIT): deterministic.
    Instructions,
    /// Time is host monotonic time since `start` (KVM): not deterministic.
    Host {
        /// The host instant that is virtual time zero.
        start: Instant,
    },
}

/// Longest single sleep while idle in host-time mode, so the machine looks at host input regularly.
const MAX_IDLE_SLEEP: Duration = Duration::from_millis(10);

/// Nanoseconds per second: the instruction rate at which one instruction slot is one nanosecond.
const NS_PER_S: u64 = 1_000_000_000;

/// The reference forms of the conversions: 128-bit products, saturated to `u64`. Used where the
/// 64-bit product would overflow, and by the tests as the definition the fast forms must match.
mod wide {
    const NS_PER_S: u128 = super::NS_PER_S as u128;

    fn sat(v: u128) -> u64 {
        v.min(u64::MAX as u128) as u64
    }

    pub(super) fn slots_to_ns(ips: u64, slots: u64) -> u64 {
        sat(slots as u128 * NS_PER_S / ips as u128)
    }

    pub(super) fn ns_to_slots(ips: u64, ns: u64) -> u64 {
        sat(ns as u128 * ips as u128 / NS_PER_S)
    }

    pub(super) fn ns_to_slots_ceil(ips: u64, ns: u64) -> u64 {
        sat((ns as u128 * ips as u128).div_ceil(NS_PER_S))
    }
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Virtual instructions per second (the guest's notion of CPU speed).
    pub ips: u64,
    /// Instruction slots spent halted (added to the retired count to make time advance while idle).
    /// Always 0 in host-time mode, where idling sleeps instead.
    pub idle: u64,
    /// Where time comes from.
    pub source: TimeSource,
}

impl Clock {
    /// A clock running at `ips` virtual instructions per second.
    pub fn new(ips: u64) -> Clock {
        Clock { ips: ips.max(1), idle: 0, source: TimeSource::Instructions }
    }

    /// A host-time clock (for KVM): time is host monotonic time from now on; `ips` converts it to
    /// instruction slots for the machine's slice arithmetic.
    pub fn host(ips: u64) -> Clock {
        Clock { ips: ips.max(1), idle: 0, source: TimeSource::Host { start: Instant::now() } }
    }

    /// Whether time is host time.
    pub fn is_host(&self) -> bool {
        matches!(self.source, TimeSource::Host { .. })
    }

    // The three conversions below are on the run loop's hot path (every slice and every device
    // access asks for the time). Each is exactly `floor`/`ceil` of the same rational as the 128-bit
    // form kept in `wide`, computed cheaply where that gives the same bits: the default 1e9 ips is the
    // identity, and a product that fits in 64 bits uses a 64-bit division (no `__udivti3` call).
    // `conversions_match_the_128_bit_forms` checks the equality over many values and rates.

    fn slots_to_ns(&self, slots: u64) -> u64 {
        if self.ips == NS_PER_S {
            return slots;
        }
        match slots.checked_mul(NS_PER_S) {
            Some(p) => p / self.ips,
            None => wide::slots_to_ns(self.ips, slots),
        }
    }

    fn ns_to_slots(&self, ns: u64) -> u64 {
        if self.ips == NS_PER_S {
            return ns;
        }
        match ns.checked_mul(self.ips) {
            Some(p) => p / NS_PER_S,
            None => wide::ns_to_slots(self.ips, ns),
        }
    }

    /// The smallest slot count at which time reaches `ns`: `ceil(ns * ips / 1e9)`.
    fn ns_to_slots_ceil(&self, ns: u64) -> u64 {
        if self.ips == NS_PER_S {
            return ns;
        }
        match ns.checked_mul(self.ips) {
            Some(p) => p.div_ceil(NS_PER_S),
            None => wide::ns_to_slots_ceil(self.ips, ns),
        }
    }

    /// Virtual time after `icount` retired instructions. In host-time mode `icount` is ignored: the
    /// result is the host time elapsed since the clock was created.
    pub fn now(&self, icount: u64) -> VirtTime {
        match self.source {
            TimeSource::Instructions => VirtTime(self.slots_to_ns(icount.saturating_add(self.idle))),
            TimeSource::Host { start } => VirtTime(start.elapsed().as_nanos().min(u64::MAX as u128) as u64),
        }
    }

    /// The smallest retired-instruction count (instruction-slot count in host-time mode) at which time
    /// reaches `t` (given the current idle count).
    pub fn icount_at(&self, t: VirtTime) -> u64 {
        if t == VirtTime::NEVER {
            return u64::MAX;
        }
        self.ns_to_slots_ceil(t.0).saturating_sub(self.idle)
    }

    /// The instruction count to use now: `icount` itself with instruction-driven time; in host-time
    /// mode the slot count of the current host time (never less than `icount`, so it stays monotonic).
    pub fn icount_now(&self, icount: u64) -> u64 {
        match self.source {
            TimeSource::Instructions => icount,
            TimeSource::Host { .. } => self.ns_to_slots(self.now(0).0).max(icount),
        }
    }

    /// The host instant at which the slot count reaches `icount` (host-time mode); `None` for
    /// instruction-driven time or a count that is never reached.
    pub fn host_deadline(&self, icount: u64) -> Option<Instant> {
        match self.source {
            TimeSource::Instructions => None,
            TimeSource::Host { start } => {
                if icount == u64::MAX {
                    return None;
                }
                start.checked_add(Duration::from_nanos(self.slots_to_ns(icount)))
            }
        }
    }

    /// The CPU is halted at `icount` and the next device deadline is at instruction count `target`:
    /// with instruction-driven time the halted slots are skipped (time jumps); in host-time mode the
    /// thread sleeps towards the deadline (at most [`MAX_IDLE_SLEEP`] at a time).
    pub fn idle_until(&mut self, icount: u64, target: u64) {
        match self.source {
            TimeSource::Instructions => {
                if target > icount {
                    self.idle += target - icount;
                }
            }
            TimeSource::Host { .. } => {
                if let Some(d) = self.host_deadline(target) {
                    let left = d.saturating_duration_since(Instant::now());
                    if !left.is_zero() {
                        std::thread::sleep(left.min(MAX_IDLE_SLEEP));
                    }
                } else {
                    std::thread::sleep(MAX_IDLE_SLEEP);
                }
            }
        }
    }

    /// Time-stamp counter value: one tick per nanosecond (a 1 GHz TSC).
    pub fn tsc(&self, icount: u64) -> u64 {
        self.now(icount).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icount_at_is_inverse_of_now() {
        let mut c = Clock::new(100_000_000);
        for t in [0u64, 1, 9, 10, 11, 1_000_000, 123_456_789] {
            let i = c.icount_at(VirtTime(t));
            assert!(c.now(i) >= VirtTime(t), "t={t}");
            if i > 0 {
                assert!(c.now(i - 1) < VirtTime(t), "t={t}");
            }
        }
        c.idle = 50;
        assert_eq!(c.now(50), VirtTime(1000));
        assert_eq!(c.icount_at(VirtTime::NEVER), u64::MAX);
    }

    /// The fast conversions give the same bits as the 128-bit definitions (any difference would
    /// change guest-visible time): every rate class (the 1e9 identity, divisors and multiples of 1e9,
    /// rates sharing no factor with it, the extremes) over edge values and a pseudo-random spread
    /// that crosses the 64-bit overflow boundary of each product.
    #[test]
    fn conversions_match_the_128_bit_forms() {
        let rates = [
            1u64,
            3,
            7,
            1_000,
            999_999_937,
            100_000_000,
            500_000_000,
            1_000_000_000,
            1_000_000_001,
            2_500_000_000,
            3_000_000_000,
            123_456_789_012,
            u64::MAX / 1_000_000_000,
            u64::MAX / 1_000_000_000 + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut values = vec![0u64, 1, 2, 999_999_999, 1_000_000_000, 1_000_000_001, u64::MAX - 1, u64::MAX];
        for k in [1u64, 1_000, 1_000_000_000, 3_000_000_000] {
            // Around the largest value whose product with k fits in 64 bits.
            let edge = u64::MAX / k;
            values.extend([edge.saturating_sub(1), edge, edge.saturating_add(1)]);
        }
        // xorshift64*, fixed seed: values of every magnitude (the shift spreads them over 0..64 bits).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            values.push(r >> (r % 64));
        }
        for &ips in &rates {
            let c = Clock::new(ips);
            for &v in &values {
                assert_eq!(c.slots_to_ns(v), wide::slots_to_ns(ips, v), "slots_to_ns ips={ips} v={v}");
                assert_eq!(c.ns_to_slots(v), wide::ns_to_slots(ips, v), "ns_to_slots ips={ips} v={v}");
                assert_eq!(c.ns_to_slots_ceil(v), wide::ns_to_slots_ceil(ips, v), "ceil ips={ips} v={v}");
            }
        }
    }

    #[test]
    fn instruction_time_ignores_the_host() {
        let mut c = Clock::new(1_000_000_000);
        assert!(!c.is_host());
        assert_eq!(c.icount_now(42), 42);
        assert_eq!(c.host_deadline(42), None);
        c.idle_until(10, 110);
        assert_eq!(c.idle, 100);
        assert_eq!(c.now(10), VirtTime(110));
        c.idle_until(500, 400);
        assert_eq!(c.idle, 100, "a deadline in the past adds nothing");
    }

    #[test]
    fn host_time_follows_the_host_clock() {
        // 1e6 slots per second: one slot per microsecond.
        let mut c = Clock::host(1_000_000);
        assert!(c.is_host());
        let t0 = c.now(0);
        std::thread::sleep(Duration::from_millis(3));
        let t1 = c.now(0);
        assert!(t1.0 >= t0.0 + 3_000_000, "{t0:?} -> {t1:?}");
        // The instruction count argument does not move host time.
        assert!(c.now(u64::MAX / 2).0 < 60_000_000_000);
        let i = c.icount_now(0);
        assert!(i >= 3_000, "slots after 3 ms at 1e6/s: {i}");
        assert_eq!(c.icount_now(u64::MAX - 1), u64::MAX - 1, "monotonic: never below the argument");
        // The deadline for a slot count is start + count / ips.
        let TimeSource::Host { start } = c.source else { unreachable!() };
        assert_eq!(c.host_deadline(2_000_000), Some(start + Duration::from_secs(2)));
        assert_eq!(c.host_deadline(u64::MAX), None);
        // icount_at and icount_now agree: the slot count at time t is icount_at(t).
        assert_eq!(c.icount_at(VirtTime(5_000_000)), 5_000);
        // Idling sleeps towards the deadline and never adds idle slots.
        let before = Instant::now();
        let now = c.icount_now(0);
        c.idle_until(now, now + 2_000);
        assert!(before.elapsed() >= Duration::from_millis(2));
        assert_eq!(c.idle, 0);
    }
}
