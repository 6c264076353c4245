//! ACPI hardware of the PIIX4 power-management function, and the PIIX reset control register.
//!
//! # [`PmDevice`] offsets
//!
//! Offsets are from the PM base (PMBA, PIIX4 function 3 register 0x40; the board places it at 0x600 as
//! a firmware would). Every register accepts byte, word and dword accesses at any byte lane.
//!
//! | Offset | Register | ACPI block |
//! |---|---|---|
//! | 0x00 | PMSTS (16): TMROF_STS 0, BM_STS 4, GBL_STS 5, PWRBTN_STS 8, RTC_STS 10, WAK_STS 15; write one to clear | PM1a_EVT_BLK status |
//! | 0x02 | PMEN (16): TMROF_EN 0, GBL_EN 5, PWRBTN_EN 8, RTC_EN 10 | PM1a_EVT_BLK enable |
//! | 0x04 | PMCNTRL (16): SCI_EN 0, BM_RLD 1, GBL_RLS 2 (write only), SUS_TYP 12:10, SUS_EN 13 (write only) | PM1a_CNT_BLK |
//! | 0x08 | PMTMR (32, read only): 24-bit counter at 3.579545 MHz | PM_TMR_BLK |
//! | 0x0C | GPSTS (16), write one to clear | GPE0_BLK status |
//! | 0x0E | GPEN (16) | GPE0_BLK enable |
//!
//! Other offsets read 0 and ignore writes.
//!
//! # Behaviour
//!
//! The PM timer is a function of virtual time: `floor(now * 3579545 Hz) mod 2^24`. Whenever its bit 23
//! toggles TMROF_STS is set (computed when the registers are accessed or the deadline passes). Writing
//! PMCNTRL with SUS_EN set and SUS_TYP = 0 (the PIIX4's soft-off encoding, `_S5 = {0, 0}`) powers the
//! machine off: `ctx.requests.exit = Some(0)`; the other sleep types are ignored (no suspend support).
//! SCI is ISA IRQ 9 (level, active high): asserted while SCI_EN is set and an enabled PM1 or GPE status
//! bit is set. The firmware's FADT has SMI_CMD = 0 (no legacy/ACPI mode transition), so a machine built
//! with ACPI tables starts with SCI_EN set ([`PmDevice::new`]'s `acpi_mode`).

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::note_deadline;

/// The PM timer's frequency.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The SCI's ISA IRQ.
pub const SCI_IRQ: u32 = 9;

/// PMSTS / PMEN bits.
pub mod pm1 {
    /// Timer carry (bit 23 toggled).
    pub const TMROF: u16 = 1 << 0;
    /// Bus master status.
    pub const BM: u16 = 1 << 4;
    /// Global (BIOS release) status.
    pub const GBL: u16 = 1 << 5;
    /// Power button.
    pub const PWRBTN: u16 = 1 << 8;
    /// RTC alarm.
    pub const RTC: u16 = 1 << 10;
    /// Wake status.
    pub const WAK: u16 = 1 << 15;
    /// Status bits software can clear.
    pub const STS_MASK: u16 = TMROF | BM | GBL | PWRBTN | RTC | (1 << 11) | WAK;
    /// Enable bits.
    pub const EN_MASK: u16 = TMROF | GBL | PWRBTN | RTC;
    /// PMCNTRL: SCI enable.
    pub const SCI_EN: u16 = 1 << 0;
    /// PMCNTRL: sleep enable (write only).
    pub const SLP_EN: u16 = 1 << 13;
}

/// The PIIX4 PM I/O block (PM1a event and control, PM timer, GPE0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PmDevice {
    acpi_mode: bool,
    sts: u16,
    en: u16,
    cnt: u16,
    gpsts: u16,
    gpen: u16,
    /// `ticks >> 23` when TMROF was last evaluated (None after reset: resynchronise silently).
    tmr_epoch: Option<u64>,
}

impl PmDevice {
    /// The block in its power-on state; with `acpi_mode`, SCI_EN starts set (see the module docs).
    pub fn new(acpi_mode: bool) -> Self {
        PmDevice {
            acpi_mode,
            sts: 0,
            en: 0,
            cnt: if acpi_mode { pm1::SCI_EN } else { 0 },
            gpsts: 0,
            gpen: 0,
            tmr_epoch: None,
        }
    }

    /// The PM timer value at `now` (24 bits).
    pub fn timer(now: VirtTime) -> u32 {
        (now.ticks(PM_TIMER_HZ) & 0xFF_FFFF) as u32
    }

    /// Host side: the power button was pressed.
    pub fn press_power_button(&mut self, ctx: &mut DeviceCtx<'_>) {
        self.sync(ctx.now);
        self.sts |= pm1::PWRBTN;
        self.update_sci(ctx);
    }

    /// Host side: general-purpose event `n` (0-15) fired.
    pub fn raise_gpe(&mut self, ctx: &mut DeviceCtx<'_>, n: u32) {
        self.sync(ctx.now);
        self.gpsts |= 1u16.checked_shl(n).unwrap_or(0);
        self.update_sci(ctx);
    }

    fn sync(&mut self, now: VirtTime) {
        let e = now.ticks(PM_TIMER_HZ) >> 23;
        if let Some(prev) = self.tmr_epoch
            && e != prev
        {
            self.sts |= pm1::TMROF;
        }
        self.tmr_epoch = Some(e);
    }

    fn sci(&self) -> bool {
        self.cnt & pm1::SCI_EN != 0 && (self.sts & self.en & pm1::EN_MASK != 0 || self.gpsts & self.gpen != 0)
    }

    fn update_sci(&self, ctx: &mut DeviceCtx<'_>) {
        ctx.irq.set(SCI_IRQ, self.sci());
    }

    fn read_byte(&self, now: VirtTime, off: usize) -> u8 {
        let w = |v: u16| (v >> (8 * (off & 1))) as u8;
        match off {
            0 | 1 => w(self.sts),
            2 | 3 => w(self.en),
            4 | 5 => w(self.cnt),
            8..=11 => (Self::timer(now) >> (8 * (off - 8))) as u8,
            0x0C | 0x0D => w(self.gpsts),
            0x0E | 0x0F => w(self.gpen),
            _ => 0,
        }
    }

    fn write_byte(&mut self, ctx: &mut DeviceCtx<'_>, off: usize, v: u8) {
        let sh = 8 * (off & 1);
        let v16 = u16::from(v) << sh;
        let lane = 0xFFu16 << sh;
        match off {
            0 | 1 => self.sts &= !(v16 & pm1::STS_MASK),
            2 | 3 => self.en = (self.en & !lane) | (v16 & pm1::EN_MASK),
            4 | 5 => {
                // SCI_EN, BM_RLD and SUS_TYP are stored; GBL_RLS and SUS_EN are write-only strobes.
                let keep = pm1::SCI_EN | 2 | (7 << 10);
                self.cnt = (self.cnt & !lane) | (v16 & keep);
                if off == 5 && v16 & pm1::SLP_EN != 0 && (self.cnt >> 10) & 7 == 0 {
                    ctx.requests.exit = Some(0);
                }
            }
            0x0C | 0x0D => self.gpsts &= !v16,
            0x0E | 0x0F => self.gpen = (self.gpen & !lane) | v16,
            _ => {}
        }
    }

    fn deadline(&self) -> Option<VirtTime> {
        let need = self.cnt & pm1::SCI_EN != 0 && self.en & pm1::TMROF != 0 && self.sts & pm1::TMROF == 0;
        let e = self.tmr_epoch?;
        need.then(|| VirtTime::from_ticks((e + 1) << 23, PM_TIMER_HZ))
    }
}

impl Device for PmDevice {
    fn name(&self) -> &str {
        "piix4-pm-io"
    }

    fn pio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        self.sync(ctx.now);
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(ctx.now, usize::from(offset) + i);
        }
        self.update_sci(ctx);
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        let before = self.deadline();
        self.sync(ctx.now);
        for (i, v) in data.iter().enumerate() {
            self.write_byte(ctx, usize::from(offset) + i, *v);
        }
        self.update_sci(ctx);
        note_deadline(ctx, before, self.deadline());
    }

    fn reset(&mut self) {
        *self = PmDevice::new(self.acpi_mode);
    }

    fn next_deadline(&self) -> Option<VirtTime> {
        self.deadline()
    }

    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        self.sync(ctx.now);
        self.update_sci(ctx);
    }
}

impl Snapshot for PmDevice {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.bool(self.acpi_mode);
        w.u16(self.sts);
        w.u16(self.en);
        w.u16(self.cnt);
        w.u16(self.gpsts);
        w.u16(self.gpen);
        w.bool(self.tmr_epoch.is_some());
        w.u64(self.tmr_epoch.unwrap_or(0));
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("piix4-pm-io")?;
        let acpi_mode = r.bool()?;
        let sts = r.u16()? & pm1::STS_MASK;
        let en = r.u16()? & pm1::EN_MASK;
        let cnt = r.u16()? & (pm1::SCI_EN | 2 | (7 << 10));
        let gpsts = r.u16()?;
        let gpen = r.u16()?;
        let has = r.bool()?;
        let e = r.u64()?;
        *self = PmDevice { acpi_mode, sts, en, cnt, gpsts, gpen, tmr_epoch: has.then_some(e) };
        Ok(())
    }
}

/// The PIIX reset control register (port 0xCF9, byte access; offset 0).
///
/// Bit 1 (SRST, system vs. CPU-only reset) and bit 3 (full reset) are stored and read back; writing bit
/// 2 (RCPU) set requests a machine reset (`ctx.requests.reset`), as QEMU's PIIX3 does. The FADT's reset
/// register points here with value 0x06.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetControl {
    rcr: u8,
}

impl ResetControl {
    /// The register in its power-on state (0).
    pub fn new() -> Self {
        Self::default()
    }
}

impl Device for ResetControl {
    fn name(&self) -> &str {
        "reset-control"
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xFF);
        if offset == 0
            && let Some(b) = data.first_mut()
        {
            *b = self.rcr;
        }
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        if offset != 0 {
            return;
        }
        let Some(&v) = data.first() else { return };
        self.rcr = v & 0x0A;
        if v & 0x04 != 0 {
            ctx.requests.reset = true;
        }
    }

    fn reset(&mut self) {
        self.rcr = 0;
    }
}

impl Snapshot for ResetControl {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.u8(self.rcr);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("reset-control")?;
        self.rcr = r.u8()? & 0x0A;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    fn rd16(b: &mut Bus, d: &mut PmDevice, ns: u64, off: u16) -> u16 {
        let mut v = [0u8; 2];
        d.pio_read(&mut b.ctx(ns), off, &mut v);
        u16::from_le_bytes(v)
    }
    fn wr16(b: &mut Bus, d: &mut PmDevice, ns: u64, off: u16, v: u16) {
        d.pio_write(&mut b.ctx(ns), off, &v.to_le_bytes());
    }
    fn tmr(b: &mut Bus, d: &mut PmDevice, ns: u64) -> u32 {
        let mut v = [0u8; 4];
        d.pio_read(&mut b.ctx(ns), 8, &mut v);
        u32::from_le_bytes(v)
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz() {
        let mut b = Bus::new();
        let mut d = PmDevice::new(false);
        assert_eq!(tmr(&mut b, &mut d, 0), 0);
        assert_eq!(tmr(&mut b, &mut d, 1_000_000_000), 3_579_545);
        assert_eq!(tmr(&mut b, &mut d, 1_000_000), 3579);
        // 24-bit wrap after 2^24 ticks (4.687 s).
        let wrap_ns = VirtTime::from_ticks(1 << 24, PM_TIMER_HZ).0;
        assert_eq!(tmr(&mut b, &mut d, wrap_ns), 0);
        assert_eq!(tmr(&mut b, &mut d, wrap_ns - 1), 0xFF_FFFF);
        // Byte reads see the same counter.
        let mut v = [0u8; 1];
        d.pio_read(&mut b.ctx(1_000_000_000), 9, &mut v);
        assert_eq!(v[0], (3_579_545u32 >> 8) as u8);
    }

    #[test]
    fn timer_overflow_status_and_sci() {
        let mut b = Bus::new();
        let mut d = PmDevice::new(false);
        assert_eq!(rd16(&mut b, &mut d, 0, 0), 0);
        let half = VirtTime::from_ticks(1 << 23, PM_TIMER_HZ).0;
        assert_eq!(rd16(&mut b, &mut d, half - 1, 0), 0);
        assert_eq!(rd16(&mut b, &mut d, half, 0), pm1::TMROF, "bit 23 toggled");
        assert!(!b.high(9), "not enabled");
        wr16(&mut b, &mut d, half, 0, pm1::TMROF);
        assert_eq!(rd16(&mut b, &mut d, half, 0), 0, "write one clears");
        wr16(&mut b, &mut d, half, 2, pm1::TMROF);
        assert_eq!(d.next_deadline(), None, "SCI_EN clear: no SCI, no deadline");
        wr16(&mut b, &mut d, half, 4, pm1::SCI_EN);
        assert!(b.req.reschedule);
        assert_eq!(d.next_deadline(), Some(VirtTime::from_ticks(2 << 23, PM_TIMER_HZ)));
        b.advance(&mut d, 2 * half + 10);
        assert!(b.high(9), "SCI asserted");
        assert_eq!(d.next_deadline(), None);
        wr16(&mut b, &mut d, 2 * half + 20, 0, 0xFFFF);
        assert!(!b.high(9), "SCI deasserts when the status clears");
    }

    #[test]
    fn power_button_and_gpe_raise_sci() {
        let mut b = Bus::new();
        let mut d = PmDevice::new(true);
        assert_eq!(rd16(&mut b, &mut d, 0, 4), pm1::SCI_EN, "ACPI mode at power-on");
        d.press_power_button(&mut b.ctx(5));
        assert_eq!(rd16(&mut b, &mut d, 5, 0), pm1::PWRBTN);
        assert!(!b.high(9));
        wr16(&mut b, &mut d, 5, 2, pm1::PWRBTN | 0x8000);
        assert_eq!(rd16(&mut b, &mut d, 5, 2), pm1::PWRBTN, "only enable bits stick");
        assert!(b.high(9));
        wr16(&mut b, &mut d, 5, 0, pm1::PWRBTN);
        assert!(!b.high(9));
        wr16(&mut b, &mut d, 5, 0xE, 0x0004);
        d.raise_gpe(&mut b.ctx(6), 2);
        assert!(b.high(9));
        assert_eq!(rd16(&mut b, &mut d, 6, 0xC), 4);
        wr16(&mut b, &mut d, 6, 0xC, 4);
        assert!(!b.high(9));
    }

    #[test]
    fn sleep_s5_powers_off() {
        let mut b = Bus::new();
        let mut d = PmDevice::new(true);
        // SLP_TYP = 1 (S3 on PIIX4) is ignored.
        wr16(&mut b, &mut d, 0, 4, pm1::SLP_EN | (1 << 10) | pm1::SCI_EN);
        assert_eq!(b.req.exit, None);
        assert_eq!(rd16(&mut b, &mut d, 0, 4), (1 << 10) | pm1::SCI_EN, "SLP_EN reads 0");
        wr16(&mut b, &mut d, 0, 4, pm1::SLP_EN | pm1::SCI_EN);
        assert_eq!(b.req.exit, Some(0));
        // Byte write of the high byte alone works too.
        let mut b = Bus::new();
        b.wr(&mut d, 0, 5, 0x20);
        assert_eq!(b.req.exit, Some(0));
    }

    #[test]
    fn reset_control_register() {
        let mut b = Bus::new();
        let mut r = ResetControl::new();
        b.wr(&mut r, 0, 0, 0x02);
        assert!(!b.req.reset);
        assert_eq!(b.rd(&mut r, 0, 0), 0x02);
        b.wr(&mut r, 0, 0, 0x06);
        assert!(b.req.reset);
        assert_eq!(b.rd(&mut r, 0, 0), 0x02, "RCPU reads 0");
        let mut fresh = ResetControl::new();
        roundtrip(&r, &mut fresh);
        assert_eq!(fresh, r);
        hammer(&mut r, &[0], false, 11);
    }

    #[test]
    fn snapshot_reset_and_hostile_input() {
        let mut b = Bus::new();
        let mut d = PmDevice::new(true);
        wr16(&mut b, &mut d, 100, 2, pm1::TMROF | pm1::RTC);
        d.press_power_button(&mut b.ctx(200));
        let mut fresh = PmDevice::new(false);
        roundtrip(&d, &mut fresh);
        assert_eq!(fresh, d);
        d.reset();
        assert_eq!(d, PmDevice::new(true));
        hammer(&mut d, &[0, 1, 2, 4, 5, 8, 0xC, 0xE], false, 5);
    }
}
