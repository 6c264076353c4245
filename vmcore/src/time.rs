//! Virtual time.
//!
//! All device time is expressed as [`VirtTime`], nanoseconds since machine power-on. Under the
//! interpreter and JIT it is a pure function of the retired-instruction count (see the `machine` crate's
//! clock); devices never read the host clock.

/// A point on the machine's virtual clock, in nanoseconds since power-on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtTime(pub u64);

impl VirtTime {
    /// Time zero (power-on).
    pub const ZERO: VirtTime = VirtTime(0);
    /// The far future: a deadline that never fires.
    pub const NEVER: VirtTime = VirtTime(u64::MAX);

    /// Nanoseconds since power-on.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// This time plus `ns` nanoseconds, saturating at [`VirtTime::NEVER`].
    pub fn add_nanos(self, ns: u64) -> VirtTime {
        VirtTime(self.0.saturating_add(ns))
    }

    /// Nanoseconds from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: VirtTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Number of whole ticks of a clock of `hz` that have elapsed at this time.
    pub fn ticks(self, hz: u64) -> u64 {
        ((self.0 as u128 * hz as u128) / 1_000_000_000u128) as u64
    }

    /// The earliest time at which `ticks` whole ticks of a clock of `hz` have elapsed.
    pub fn from_ticks(ticks: u64, hz: u64) -> VirtTime {
        if hz == 0 {
            return VirtTime::NEVER;
        }
        let ns = (ticks as u128 * 1_000_000_000u128).div_ceil(hz as u128);
        VirtTime(ns.min(u64::MAX as u128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_trip() {
        let hz = 1_193_182;
        for t in [0u64, 1, 2, 100, 65536, 1 << 30] {
            let at = VirtTime::from_ticks(t, hz);
            assert_eq!(at.ticks(hz), t, "tick {t}");
            if at.0 > 0 {
                assert_eq!(VirtTime(at.0 - 1).ticks(hz), t - 1);
            }
        }
    }

    #[test]
    fn saturates() {
        assert_eq!(VirtTime::NEVER.add_nanos(5), VirtTime::NEVER);
        assert_eq!(VirtTime(3).since(VirtTime(5)), 0);
    }
}
