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
        // Device timers ask on every access and deadline: where the product fits in 64 bits, the same
        // quotient by a 64-bit division (no 128-bit division call); `wide_ticks` is the definition.
        if hz == NS_PER_S {
            return self.0;
        }
        match self.0.checked_mul(hz) {
            Some(p) => p / NS_PER_S,
            None => self.wide_ticks(hz),
        }
    }

    fn wide_ticks(self, hz: u64) -> u64 {
        ((self.0 as u128 * hz as u128) / 1_000_000_000u128) as u64
    }

    /// The earliest time at which `ticks` whole ticks of a clock of `hz` have elapsed.
    pub fn from_ticks(ticks: u64, hz: u64) -> VirtTime {
        if hz == 0 {
            return VirtTime::NEVER;
        }
        if hz == NS_PER_S {
            return VirtTime(ticks);
        }
        match ticks.checked_mul(NS_PER_S) {
            Some(p) => VirtTime(p.div_ceil(hz)),
            None => VirtTime::wide_from_ticks(ticks, hz),
        }
    }

    fn wide_from_ticks(ticks: u64, hz: u64) -> VirtTime {
        let ns = (ticks as u128 * 1_000_000_000u128).div_ceil(hz as u128);
        VirtTime(ns.min(u64::MAX as u128) as u64)
    }
}

/// Nanoseconds per second.
const NS_PER_S: u64 = 1_000_000_000;

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

    /// The 64-bit forms give the 128-bit definitions' bits, at the rates devices use and odd ones, for
    /// values around the point where the 64-bit product overflows.
    #[test]
    fn fast_conversions_match_the_128_bit_forms() {
        let rates = [
            1u64,
            3,
            32_768,
            1_193_182,
            1_843_200,
            14_318_180,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            2_000_000_000,
            3_579_545,
            u64::MAX / 3,
            u64::MAX,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for &hz in &rates {
            let mut values = vec![0u64, 1, 2, 999_999_999, 1_000_000_000, u64::MAX - 1, u64::MAX];
            if let Some(edge) = u64::MAX.checked_div(hz) {
                values.extend([edge.saturating_sub(1), edge, edge.saturating_add(1)]);
            }
            let edge_ns = u64::MAX / NS_PER_S;
            values.extend([edge_ns - 1, edge_ns, edge_ns + 1]);
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                values.push(x >> (x % 64));
            }
            for &v in &values {
                assert_eq!(VirtTime(v).ticks(hz), VirtTime(v).wide_ticks(hz), "ticks({v}, {hz})");
                assert_eq!(
                    VirtTime::from_ticks(v, hz),
                    VirtTime::wide_from_ticks(v, hz),
                    "from_ticks({v}, {hz})"
                );
            }
        }
    }

    #[test]
    fn saturates() {
        assert_eq!(VirtTime::NEVER.add_nanos(5), VirtTime::NEVER);
        assert_eq!(VirtTime(3).since(VirtTime(5)), 0);
    }
}
