//! Motorola MC146818 real-time clock with 128 bytes of CMOS RAM.
//!
//! # Offsets
//!
//! | Port | Offset | Register |
//! |---|---|---|
//! | 0x70 | 0 | index (bits 6:0) and NMI mask (bit 7, set = NMI disabled); write only, reads 0xFF |
//! | 0x71 | 1 | data at the selected index |
//!
//! # Model
//!
//! The time of day is `start_unix` (given at construction) plus elapsed virtual time; the registers are
//! computed from it when read, so no per-second events are needed. Registers 0x00-0x09 hold seconds,
//! seconds alarm, minutes, minutes alarm, hours, hours alarm, day of week (Sunday = 1), day of month,
//! month and year; 0x32 holds the century (the IBM/ACPI convention). Register B selects BCD or binary (DM)
//! and 12 or 24 hour mode; in 12 hour mode bit 7 of the hours is PM. SET (register B bit 7) freezes the
//! clock so the guest can write a new time, which then runs from the next update. The divider (register A
//! DV bits) runs only with the 32.768 kHz setting 010; other settings stop the clock, and releasing a reset
//! divider makes the first update happen 500 ms later.
//!
//! Updates happen once a second; UIP (register A bit 7) is set during the 2228 µs (244 µs setup plus
//! 1984 µs update cycle) before the time advances. The update-ended (UF), alarm (AF, with "don't care"
//! values 0xC0-0xFF) and periodic (PF, rate from register A bits 3:0) flags are set whether or not their
//! interrupts are enabled; reading register C returns and clears them. IRQ 8 is IRQF
//! (`PF&PIE | AF&AIE | UF&UIE`). Register D always reports valid RAM and time. Daylight-saving (DSE) and
//! square-wave output (SQWE) bits are stored but have no effect.
//!
//! [`Rtc::fill_bios_fields`] writes the CMOS fields firmware reads (memory sizes, equipment, boot order,
//! CPU count) and the checksum at 0x2E-0x2F over 0x10-0x2D.

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::note_deadline;

const NS_PER_SEC: i128 = 1_000_000_000;
/// Length of the window before an update during which UIP is set.
const UIP_NS: i128 = 2_228_000;
/// The ISA line of the RTC.
const IRQ: u32 = 8;

const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
/// Century register (IBM convention; ACPI FADT CENTURY).
pub const REG_CENTURY: usize = 0x32;

const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;

const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

/// Indices of the registers that hold the time and date.
const TIME_REGS: [usize; 8] = [0, 2, 4, 6, 7, 8, 9, REG_CENTURY];

/// Firmware-visible machine configuration stored in CMOS by [`Rtc::fill_bios_fields`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmosConfig {
    /// Bytes of RAM below 4 GiB (including the first MiB).
    pub ram_below_4g: u64,
    /// Bytes of RAM mapped above 4 GiB.
    pub ram_above_4g: u64,
    /// Equipment byte (0x14): bit 0 floppy present, bit 1 FPU, bit 2 PS/2 mouse, bits 5:4 video (00 =
    /// EGA/VGA), bits 7:6 floppies - 1.
    pub equipment: u8,
    /// Boot devices in order (SeaBIOS codes: 1 floppy, 2 hard disk, 3 CD-ROM, 4 network; 0 = none).
    pub boot_order: [u8; 3],
    /// Number of CPUs (stored at 0x5F as count - 1).
    pub cpus: u8,
}

impl Default for CmosConfig {
    fn default() -> Self {
        CmosConfig {
            ram_below_4g: 128 << 20,
            ram_above_4g: 0,
            equipment: 0x06,
            boot_order: [2, 3, 1],
            cpus: 1,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (days since 1970-01-01): (year, month 1-12, day 1-31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Limits on representable time: years 0-9999.
const MIN_SECS: i64 = -62_167_219_200; // 0000-01-01
const MAX_SECS: i64 = 253_402_300_799; // 9999-12-31 23:59:59

/// The MC146818 RTC and CMOS RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtc {
    cmos: [u8; 128],
    index: u8,
    nmi_masked: bool,
    /// While running: the time (UNIX seconds) during update interval `base_idx`.
    base_secs: i64,
    base_idx: i64,
    /// Whether the time advances (divider at 010 and SET clear). When stopped, the registers hold the time.
    running: bool,
    /// Virtual time (ns) at which the divider chain was last released.
    div_origin: i64,
    /// Virtual time (ns) up to which the flags have been evaluated.
    last_eval: u64,
}

fn bcd(v: u8) -> u8 {
    ((v / 10 % 10) << 4) | (v % 10)
}

impl Rtc {
    /// An RTC whose clock reads `start_unix` (UNIX seconds, UTC) at virtual time zero, in 24-hour BCD
    /// mode with the divider running and a 1024 Hz periodic rate selected.
    pub fn new(start_unix: i64) -> Self {
        let mut cmos = [0u8; 128];
        cmos[REG_A] = 0x26;
        cmos[REG_B] = B_24H;
        cmos[REG_D] = 0x80;
        Rtc {
            cmos,
            index: 0,
            nmi_masked: false,
            base_secs: start_unix.clamp(MIN_SECS, MAX_SECS),
            base_idx: 0,
            running: true,
            div_origin: -500_000_000,
            last_eval: 0,
        }
    }

    /// Whether the guest has disabled NMIs through bit 7 of port 0x70.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// A CMOS byte, without side effects (time registers may be stale while the clock runs).
    pub fn cmos(&self, index: usize) -> u8 {
        self.cmos.get(index).copied().unwrap_or(0xff)
    }

    /// Sets a CMOS RAM byte (0x0E-0x7F; the clock registers are not writable this way).
    pub fn set_cmos(&mut self, index: usize, value: u8) {
        if (0x0e..128).contains(&index) && index != REG_CENTURY {
            self.cmos[index] = value;
        }
    }

    /// Recomputes the standard checksum at 0x2E (high) and 0x2F (low) over bytes 0x10-0x2D.
    pub fn update_checksum(&mut self) {
        let sum: u16 = self.cmos[0x10..=0x2d].iter().map(|&b| u16::from(b)).sum();
        [self.cmos[0x2e], self.cmos[0x2f]] = sum.to_be_bytes();
    }

    /// Writes the CMOS fields a PC BIOS reads, then the checksum.
    pub fn fill_bios_fields(&mut self, cfg: &CmosConfig) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1 << 20;
        let [lo, hi] = 640u16.to_le_bytes();
        self.cmos[0x15] = lo;
        self.cmos[0x16] = hi;
        let ext_kib = (cfg.ram_below_4g.saturating_sub(MIB) / KIB).min(0xffff) as u16;
        let [lo, hi] = ext_kib.to_le_bytes();
        self.cmos[0x17] = lo;
        self.cmos[0x18] = hi;
        self.cmos[0x30] = lo;
        self.cmos[0x31] = hi;
        let above_16m = (cfg.ram_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff) as u16;
        let [lo, hi] = above_16m.to_le_bytes();
        self.cmos[0x34] = lo;
        self.cmos[0x35] = hi;
        let high = (cfg.ram_above_4g / (64 * KIB)).min(0xff_ffff) as u32;
        let [a, b, c, _] = high.to_le_bytes();
        self.cmos[0x5b] = a;
        self.cmos[0x5c] = b;
        self.cmos[0x5d] = c;
        self.cmos[0x14] = cfg.equipment;
        self.cmos[0x10] = 0; // no floppy drives described
        let [b1, b2, b3] = cfg.boot_order.map(|d| d & 0x0f);
        self.cmos[0x3d] = b1 | (b2 << 4);
        self.cmos[0x38] = (self.cmos[0x38] & 0x0f) | (b3 << 4);
        self.cmos[0x5f] = cfg.cpus.saturating_sub(1);
        self.update_checksum();
    }

    fn binary(&self) -> bool {
        self.cmos[REG_B] & B_DM_BINARY != 0
    }

    fn encode(&self, v: u8) -> u8 {
        if self.binary() { v } else { bcd(v) }
    }

    fn decode(&self, v: u8) -> i64 {
        if self.binary() { i64::from(v) } else { i64::from(v >> 4) * 10 + i64::from(v & 0x0f) }
    }

    fn encode_hour(&self, h: u8) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            self.encode(h)
        } else {
            let h12 = match h % 12 {
                0 => 12,
                x => x,
            };
            self.encode(h12) | if h >= 12 { 0x80 } else { 0 }
        }
    }

    fn decode_hour(&self, v: u8) -> i64 {
        if self.cmos[REG_B] & B_24H != 0 {
            self.decode(v)
        } else {
            let pm = v & 0x80 != 0;
            self.decode(v & 0x7f) % 12 + if pm { 12 } else { 0 }
        }
    }

    fn divider_running(&self) -> bool {
        (self.cmos[REG_A] >> 4) & 7 == 2
    }

    /// Index of the most recent update boundary at or before `now_ns`.
    fn boundary_index(&self, now_ns: u64) -> i64 {
        let rel = i128::from(now_ns) - i128::from(self.div_origin) - NS_PER_SEC / 2;
        rel.div_euclid(NS_PER_SEC).clamp(i128::from(i64::MIN / 2), i128::from(i64::MAX / 2)) as i64
    }

    fn boundary_time(&self, idx: i64) -> i128 {
        i128::from(self.div_origin) + NS_PER_SEC / 2 + i128::from(idx) * NS_PER_SEC
    }

    fn secs_at(&self, now_ns: u64) -> i64 {
        if self.running {
            self.base_secs.saturating_add(self.boundary_index(now_ns).saturating_sub(self.base_idx))
        } else {
            self.secs_from_regs()
        }
        .clamp(MIN_SECS, MAX_SECS)
    }

    /// The time held in the clock registers.
    fn secs_from_regs(&self) -> i64 {
        let r = |i: usize| self.decode(self.cmos[i]);
        let year = r(REG_CENTURY).clamp(0, 99) * 100 + r(9).clamp(0, 99);
        let month = r(8).clamp(1, 12);
        let day = r(7).clamp(1, 31);
        let days = days_from_civil(year, month, day);
        let sod =
            self.decode_hour(self.cmos[4]).clamp(0, 23) * 3600 + r(2).clamp(0, 59) * 60 + r(0).clamp(0, 59);
        (days * 86_400 + sod).clamp(MIN_SECS, MAX_SECS)
    }

    /// Writes the running clock's time into the registers.
    fn refresh(&mut self, now_ns: u64) {
        if !self.running {
            return;
        }
        let secs = self.secs_at(now_ns);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let wday = (days + 4).rem_euclid(7) + 1;
        self.cmos[0] = self.encode((sod % 60) as u8);
        self.cmos[2] = self.encode((sod / 60 % 60) as u8);
        self.cmos[4] = self.encode_hour((sod / 3600) as u8);
        self.cmos[6] = self.encode(wday as u8);
        self.cmos[7] = self.encode(day as u8);
        self.cmos[8] = self.encode(month as u8);
        self.cmos[9] = self.encode(year.rem_euclid(100) as u8);
        self.cmos[REG_CENTURY] = self.encode(year.div_euclid(100).clamp(0, 99) as u8);
    }

    fn alarm_matches(&self, secs: i64) -> bool {
        let sod = secs.rem_euclid(86_400);
        let want = [
            (1, self.encode((sod % 60) as u8)),
            (3, self.encode((sod / 60 % 60) as u8)),
            (5, self.encode_hour((sod / 3600) as u8)),
        ];
        want.iter().all(|&(reg, v)| self.cmos[reg] & 0xc0 == 0xc0 || self.cmos[reg] == v)
    }

    /// Periodic interrupt period in 32.768 kHz ticks, if enabled by the rate bits.
    fn periodic_ticks(&self) -> Option<u64> {
        match self.cmos[REG_A] & 0x0f {
            0 => None,
            1 => Some(1 << 7),
            2 => Some(1 << 8),
            r => Some(1 << (r - 1)),
        }
    }

    fn ticks32k(&self, ns: u64) -> i128 {
        let rel = i128::from(ns) - i128::from(self.div_origin);
        (rel * 32_768).div_euclid(NS_PER_SEC)
    }

    /// Sets the flags for everything that happened between the last evaluation and `now`.
    fn catch_up(&mut self, now: u64) {
        let prev = self.last_eval;
        if now <= prev {
            return;
        }
        if self.divider_running()
            && let Some(p) = self.periodic_ticks()
        {
            let p = i128::from(p);
            if self.ticks32k(now).div_euclid(p) > self.ticks32k(prev).div_euclid(p) {
                self.cmos[REG_C] |= C_PF;
            }
        }
        if self.running {
            let (ia, ib) = (self.boundary_index(prev), self.boundary_index(now));
            if ib > ia {
                self.cmos[REG_C] |= C_UF;
                let first = (ia + 1).max(ib - 86_399);
                if (first..=ib).any(|i| self.alarm_matches(self.base_secs.saturating_add(i - self.base_idx)))
                {
                    self.cmos[REG_C] |= C_AF;
                }
            }
        }
        self.last_eval = now;
    }

    fn irqf(&self) -> bool {
        self.cmos[REG_C] & self.cmos[REG_B] & 0x70 != 0
    }

    fn update_irq(&self, ctx: &mut DeviceCtx<'_>) {
        ctx.irq.set(IRQ, self.irqf());
    }

    fn uip(&self, now: u64) -> bool {
        if !self.running {
            return false;
        }
        let next = self.boundary_time(self.boundary_index(now).saturating_add(1));
        next - i128::from(now) <= UIP_NS
    }

    /// Starts or stops the clock after a register write.
    fn set_running(&mut self, now: u64, running: bool) {
        if running && !self.running {
            self.base_secs = self.secs_from_regs();
            self.base_idx = self.boundary_index(now);
        }
        self.running = running;
    }

    fn read_data(&mut self, now: u64) -> u8 {
        let i = usize::from(self.index);
        match i {
            REG_A => self.cmos[REG_A] & 0x7f | if self.uip(now) { 0x80 } else { 0 },
            REG_C => {
                let v = self.cmos[REG_C] | if self.irqf() { C_IRQF } else { 0 };
                self.cmos[REG_C] = 0;
                v
            }
            REG_D => 0x80,
            _ if TIME_REGS.contains(&i) => {
                self.refresh(now);
                self.cmos[i]
            }
            _ => self.cmos[i],
        }
    }

    fn write_data(&mut self, now: u64, v: u8) {
        let i = usize::from(self.index);
        match i {
            REG_A => {
                self.refresh(now);
                let was_div = self.divider_running();
                self.cmos[REG_A] = v & 0x7f;
                if self.divider_running() && !was_div {
                    // Releasing the divider: the first update comes 500 ms later.
                    self.div_origin = i64::try_from(now).unwrap_or(i64::MAX);
                    self.running = false;
                }
                let run = self.divider_running() && self.cmos[REG_B] & B_SET == 0;
                self.set_running(now, run);
            }
            REG_B => {
                self.refresh(now);
                // Switching BCD/binary or 12/24h reinterprets the stored registers, as on hardware.
                let mut v = v;
                if v & B_SET != 0 {
                    v &= !B_UIE;
                }
                self.cmos[REG_B] = v;
                let run = self.divider_running() && v & B_SET == 0;
                if self.running && (run || v & B_SET != 0) {
                    // Rewrite registers in the new format while the clock keeps its value.
                    let secs = self.secs_at(now);
                    let idx = self.boundary_index(now);
                    self.base_secs = secs;
                    self.base_idx = idx;
                    self.refresh(now);
                }
                self.set_running(now, run);
            }
            REG_C | REG_D => {}
            _ if TIME_REGS.contains(&i) => {
                self.refresh(now);
                self.cmos[i] = v;
                if self.running {
                    self.base_secs = self.secs_from_regs();
                    self.base_idx = self.boundary_index(now);
                }
            }
            _ => self.cmos[i] = v,
        }
    }
}

impl Device for Rtc {
    fn name(&self) -> &str {
        "rtc"
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xff);
        let before = self.next_deadline();
        self.catch_up(ctx.now.0);
        if offset == 1
            && let Some(first) = data.first_mut()
        {
            *first = self.read_data(ctx.now.0);
        }
        self.update_irq(ctx);
        // Reading register C re-arms the interrupt timers (no deadline is kept while IRQF is set).
        note_deadline(ctx, before, self.next_deadline());
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        let before = self.next_deadline();
        self.catch_up(ctx.now.0);
        if let Some(&v) = data.first() {
            match offset {
                0 => {
                    self.index = v & 0x7f;
                    self.nmi_masked = v & 0x80 != 0;
                }
                1 => self.write_data(ctx.now.0, v),
                _ => {}
            }
        }
        self.update_irq(ctx);
        note_deadline(ctx, before, self.next_deadline());
    }

    fn reset(&mut self) {
        // The RESET pin clears the interrupt enables and flags; time and RAM are battery backed.
        self.cmos[REG_B] &= !(B_PIE | B_AIE | B_UIE | 0x08);
        self.cmos[REG_C] = 0;
        self.nmi_masked = false;
    }

    fn next_deadline(&self) -> Option<VirtTime> {
        if self.irqf() {
            return None;
        }
        let b = self.cmos[REG_B];
        let mut best: Option<i128> = None;
        let mut consider = |t: i128| best = Some(best.map_or(t, |b: i128| b.min(t)));
        if b & B_PIE != 0
            && self.divider_running()
            && let Some(p) = self.periodic_ticks()
        {
            let p = i128::from(p);
            let k = (self.ticks32k(self.last_eval).div_euclid(p) + 1) * p;
            consider(i128::from(self.div_origin) + (k * NS_PER_SEC + 32_767) / 32_768);
        }
        if b & (B_UIE | B_AIE) != 0 && self.running {
            consider(self.boundary_time(self.boundary_index(self.last_eval).saturating_add(1)));
        }
        best.map(|t| VirtTime(t.clamp(0, i128::from(u64::MAX)) as u64))
    }

    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        self.catch_up(ctx.now.0);
        self.update_irq(ctx);
    }
}

impl Snapshot for Rtc {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.bytes(&self.cmos);
        w.u8(self.index);
        w.bool(self.nmi_masked);
        w.u64(self.base_secs as u64);
        w.u64(self.base_idx as u64);
        w.bool(self.running);
        w.u64(self.div_origin as u64);
        w.u64(self.last_eval);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("rtc")?;
        let cmos: [u8; 128] =
            r.bytes()?.try_into().map_err(|_| SnapshotError::Invalid("cmos size".into()))?;
        let index = r.u8()? & 0x7f;
        let nmi_masked = r.bool()?;
        let base_secs = (r.u64()? as i64).clamp(MIN_SECS, MAX_SECS);
        let base_idx = (r.u64()? as i64).clamp(i64::MIN / 2, i64::MAX / 2);
        let running = r.bool()?;
        let div_origin = r.u64()? as i64;
        let last_eval = r.u64()?;
        *self = Rtc { cmos, index, nmi_masked, base_secs, base_idx, running, div_origin, last_eval };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    const SEC: u64 = 1_000_000_000;
    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const START: i64 = 1_709_251_198;

    fn reg(b: &mut Bus, r: &mut Rtc, ns: u64, i: u8) -> u8 {
        b.wr(r, ns, 0, i);
        b.rd(r, ns, 1)
    }

    fn set(b: &mut Bus, r: &mut Rtc, ns: u64, i: u8, v: u8) {
        b.wr(r, ns, 0, i);
        b.wr(r, ns, 1, v);
    }

    #[test]
    fn civil_conversions() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(civil_from_days(START.div_euclid(86_400)), (2024, 2, 29));
        assert_eq!(civil_from_days(MIN_SECS / 86_400), (0, 1, 1));
    }

    #[test]
    fn time_in_bcd_then_rollover() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        let t = |b: &mut Bus, r: &mut Rtc, ns| [0, 2, 4, 6, 7, 8, 9, 0x32].map(|i| reg(b, r, ns, i));
        assert_eq!(t(&mut b, &mut r, 0), [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]);
        assert_eq!(t(&mut b, &mut r, 2 * SEC), [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]);
        assert_eq!(reg(&mut b, &mut r, 0, 0x0d), 0x80);
        assert_eq!(reg(&mut b, &mut r, 0, 0x0a), 0x26);
        assert_eq!(b.rd(&mut r, 0, 0), 0xff, "index port is write-only");
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        set(&mut b, &mut r, 0, 0x0b, B_DM_BINARY);
        assert_eq!(reg(&mut b, &mut r, 0, 4), 0x80 | 11, "11 PM binary");
        assert_eq!(reg(&mut b, &mut r, 0, 0), 58);
        set(&mut b, &mut r, 0, 0x0b, 0);
        assert_eq!(reg(&mut b, &mut r, 0, 4), 0x91, "11 PM BCD");
        assert_eq!(reg(&mut b, &mut r, 2 * SEC, 4), 0x12, "midnight is 12 AM");
    }

    #[test]
    fn set_bit_freezes_and_new_time_runs() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        set(&mut b, &mut r, 0, 0x0b, B_SET | B_24H);
        for (i, v) in [(0, 0x30), (2, 0x15), (4, 0x10), (7, 0x01), (8, 0x01), (9, 0x99), (0x32, 0x19)] {
            set(&mut b, &mut r, 0, i, v);
        }
        assert_eq!(reg(&mut b, &mut r, 5 * SEC, 0), 0x30, "frozen while SET");
        assert_eq!(reg(&mut b, &mut r, 5 * SEC, 0x0a) & 0x80, 0, "no UIP while SET");
        set(&mut b, &mut r, 5 * SEC + SEC / 4, 0x0b, B_24H);
        // Divider phase is kept: the next update is at 6 s.
        assert_eq!(reg(&mut b, &mut r, 6 * SEC - 1, 0), 0x30);
        assert_eq!(reg(&mut b, &mut r, 6 * SEC, 0), 0x31);
        assert_eq!(reg(&mut b, &mut r, 6 * SEC, 9), 0x99);
        assert_eq!(reg(&mut b, &mut r, 6 * SEC, 0x32), 0x19);
        // 1999-01-01 was a Friday (6).
        assert_eq!(reg(&mut b, &mut r, 6 * SEC, 6), 0x06);
        // Writing a register while running sets the time directly.
        set(&mut b, &mut r, 7 * SEC, 2, 0x45);
        assert_eq!(reg(&mut b, &mut r, 8 * SEC, 2), 0x45);
        assert_eq!(reg(&mut b, &mut r, 8 * SEC, 0), 0x33);
    }

    #[test]
    fn uip_window() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        assert_eq!(reg(&mut b, &mut r, SEC - 2_228_001, 0x0a) & 0x80, 0);
        assert_eq!(reg(&mut b, &mut r, SEC - 2_228_000, 0x0a) & 0x80, 0x80);
        assert_eq!(reg(&mut b, &mut r, SEC - 1, 0x0a) & 0x80, 0x80);
        assert_eq!(reg(&mut b, &mut r, SEC, 0x0a) & 0x80, 0);
    }

    #[test]
    fn update_ended_interrupt_and_reg_c() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        assert_eq!(r.next_deadline(), None);
        set(&mut b, &mut r, SEC / 2, 0x0b, B_24H | B_UIE);
        assert!(b.req.reschedule);
        assert_eq!(r.next_deadline(), Some(VirtTime(SEC)));
        b.advance(&mut r, SEC);
        assert!(b.high(8));
        assert_eq!(r.next_deadline(), None, "line already high");
        assert_eq!(reg(&mut b, &mut r, SEC, 0x0c), C_IRQF | C_UF | C_PF, "PF set although PIE is off");
        assert!(!b.high(8));
        assert_eq!(reg(&mut b, &mut r, SEC, 0x0c), 0);
    }

    #[test]
    fn periodic_interrupt_rate() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        set(&mut b, &mut r, 0, 0x0a, 0x2f); // 2 Hz
        set(&mut b, &mut r, 0, 0x0b, B_24H | B_PIE);
        assert_eq!(r.next_deadline(), Some(VirtTime(SEC / 2 - 500_000_000 % (SEC / 2))));
        let d = r.next_deadline().unwrap();
        b.advance(&mut r, d.0 - 1);
        assert!(!b.high(8));
        b.advance(&mut r, d.0);
        assert!(b.high(8));
        assert_eq!(reg(&mut b, &mut r, d.0, 0x0c) & 0xf0, C_IRQF | C_PF);
        // 1024 Hz.
        set(&mut b, &mut r, d.0, 0x0a, 0x26);
        let d2 = r.next_deadline().unwrap();
        assert!(d2.0 - d.0 <= 976_563, "{}", d2.0 - d.0);
        // Flags are set even with the interrupt disabled.
        set(&mut b, &mut r, d.0, 0x0b, B_24H);
        assert_eq!(reg(&mut b, &mut r, d.0 + SEC, 0x0c), C_PF | C_UF);
    }

    #[test]
    fn alarm_with_dont_care() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        set(&mut b, &mut r, 0, 1, 0x05); // seconds = 05
        set(&mut b, &mut r, 0, 3, 0xc0); // any minute
        set(&mut b, &mut r, 0, 5, 0xff); // any hour
        set(&mut b, &mut r, 0, 0x0b, B_24H | B_AIE);
        b.advance(&mut r, 6 * SEC);
        assert!(!b.high(8));
        b.advance(&mut r, 7 * SEC);
        assert!(b.high(8));
        assert_eq!(reg(&mut b, &mut r, 7 * SEC, 0x0c) & !C_PF, C_IRQF | C_AF | C_UF);
        // A missed match while nobody looked is still flagged.
        assert_eq!(reg(&mut b, &mut r, 200 * SEC, 0x0c) & C_AF, C_AF);
    }

    #[test]
    fn divider_reset_and_release() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        set(&mut b, &mut r, 0, 0x0a, 0x70); // divider reset
        assert_eq!(reg(&mut b, &mut r, 10 * SEC, 0), 0x58, "stopped");
        set(&mut b, &mut r, 10 * SEC, 0x0a, 0x26);
        assert_eq!(reg(&mut b, &mut r, 10 * SEC + SEC / 2 - 1, 0), 0x58);
        assert_eq!(reg(&mut b, &mut r, 10 * SEC + SEC / 2, 0), 0x59, "first update 500 ms after release");
    }

    #[test]
    fn nmi_mask_nvram_and_bios_fields() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        b.wr(&mut r, 0, 0, 0x80 | 0x40);
        assert!(r.nmi_masked());
        b.wr(&mut r, 0, 1, 0xab);
        b.wr(&mut r, 0, 0, 0x40);
        assert!(!r.nmi_masked());
        assert_eq!(b.rd(&mut r, 0, 1), 0xab);
        set(&mut b, &mut r, 0, 0x0d, 0);
        assert_eq!(reg(&mut b, &mut r, 0, 0x0d), 0x80, "reg D read-only");
        r.fill_bios_fields(&CmosConfig {
            ram_below_4g: 3 << 30,
            ram_above_4g: 1 << 30,
            equipment: 0x06,
            boot_order: [3, 2, 1],
            cpus: 4,
        });
        assert_eq!([r.cmos(0x15), r.cmos(0x16)], [0x80, 0x02]);
        assert_eq!([r.cmos(0x17), r.cmos(0x18)], [0xff, 0xff]);
        assert_eq!([r.cmos(0x30), r.cmos(0x31)], [0xff, 0xff]);
        assert_eq!(u16::from_le_bytes([r.cmos(0x34), r.cmos(0x35)]), 0xbf00);
        assert_eq!([r.cmos(0x5b), r.cmos(0x5c), r.cmos(0x5d)], [0x00, 0x40, 0x00]);
        assert_eq!(r.cmos(0x3d), 0x23);
        assert_eq!(r.cmos(0x38) >> 4, 1);
        assert_eq!(r.cmos(0x5f), 3);
        let sum: u16 = (0x10..=0x2d).map(|i| u16::from(r.cmos(i))).sum();
        assert_eq!(u16::from_be_bytes([r.cmos(0x2e), r.cmos(0x2f)]), sum);
    }

    #[test]
    fn snapshot_reset_and_hostile_input() {
        let mut r = Rtc::new(START);
        let mut b = Bus::new();
        set(&mut b, &mut r, 0, 0x0b, B_24H | B_PIE | B_UIE);
        let mut fresh = Rtc::new(0);
        roundtrip(&r, &mut fresh);
        assert_eq!(fresh, r);
        r.reset();
        assert_eq!(r.cmos(0x0b), B_24H);
        hammer(&mut r, &[0, 1], false, 5);
        let mut extreme = Rtc::new(i64::MAX);
        hammer(&mut extreme, &[0, 1], false, 9);
    }
}
