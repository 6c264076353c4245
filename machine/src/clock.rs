//! The virtual clock. Under the interpreter (and later the JIT) virtual time is a pure function of the
//! instruction count: `ns = (retired + idle) * 1e9 / ips`, where `idle` counts the instruction slots
//! spent halted. Two runs of the same guest with the same inputs therefore see identical time.

use mmu::VirtTime;

/// Instruction-count based clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Virtual instructions per second (the guest's notion of CPU speed).
    pub ips: u64,
    /// Instruction slots spent halted (added to the retired count to make time advance while idle).
    pub idle: u64,
}

impl Clock {
    /// A clock running at `ips` virtual instructions per second.
    pub fn new(ips: u64) -> Clock {
        Clock { ips: ips.max(1), idle: 0 }
    }

    /// Virtual time after `icount` retired instructions.
    pub fn now(&self, icount: u64) -> VirtTime {
        let slots = icount.saturating_add(self.idle) as u128;
        VirtTime((slots * 1_000_000_000u128 / self.ips as u128).min(u64::MAX as u128) as u64)
    }

    /// The smallest retired-instruction count at which time reaches `t` (given the current idle count).
    pub fn icount_at(&self, t: VirtTime) -> u64 {
        if t == VirtTime::NEVER {
            return u64::MAX;
        }
        let slots = (t.0 as u128 * self.ips as u128).div_ceil(1_000_000_000u128);
        (slots.min(u64::MAX as u128) as u64).saturating_sub(self.idle)
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
}
