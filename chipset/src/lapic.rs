//! Local APIC (xAPIC register page and x2APIC MSR view).
//!
//! # Registers
//!
//! Registers are 16 bytes apart; `index` below is the xAPIC MMIO offset >> 4, which is also the x2APIC MSR
//! number - 0x800. [`LocalApic::read_reg`] / [`LocalApic::write_reg`] give the x2APIC view (64-bit ICR at
//! index 0x30, full 32-bit ID, LDR derived from the ID, no DFR/ICR-high/APR, SELF IPI at 0x3F, reserved
//! bits checked; `None` / `false` mean the access must raise #GP; the CPU makes the whole MSR range raise
//! #GP outside x2APIC mode). The [`Device`] MMIO window (not decoded in x2APIC mode) (offsets 0x000-0xFF0) gives the
//! xAPIC view: 32-bit accesses at the start of each 16-byte slot; other writes are ignored, other reads
//! return all ones.
//!
//! | Index | Register |
//! |---|---|
//! | 0x02 | ID (xAPIC bits 31:24) |
//! | 0x03 | version 0x0105_0014: version 0x14, six LVT entries, EOI-broadcast suppression (bit 24) |
//! | 0x08 | TPR |
//! | 0x09 | APR (reads 0, xAPIC only) |
//! | 0x0A | PPR |
//! | 0x0B | EOI |
//! | 0x0D | LDR |
//! | 0x0E | DFR (xAPIC only) |
//! | 0x0F | spurious vector register (bit 8: software enable, bit 9: focus checking disable, bit 12: EOI-broadcast suppression) |
//! | 0x10-0x17, 0x18-0x1F, 0x20-0x27 | ISR, TMR, IRR (256 bits each, 32 per register) |
//! | 0x28 | ESR (write latches the errors collected since the previous write) |
//! | 0x30, 0x31 | ICR low, high |
//! | 0x32-0x37 | LVT timer, thermal, performance counter, LINT0, LINT1, error |
//! | 0x38, 0x39, 0x3E | timer initial count, current count, divide configuration |
//! | 0x3F | SELF IPI (x2APIC only) |
//!
//! # Machine interface
//!
//! * Interrupts arrive with [`LocalApic::accept`] (I/O APIC and IPI messages) and on the LINT pins with
//!   [`LocalApic::set_lint`]. The CPU checks [`LocalApic::extint_pending`] (LINT0 in ExtINT mode: take the
//!   vector from the PIC) and [`LocalApic::take_nmi`], then [`LocalApic::has_interrupt`] (the highest IRR
//!   vector whose priority class beats PPR) and [`LocalApic::acknowledge`] (IRR → ISR).
//! * EOI of a level-triggered vector (TMR set) is queued for [`LocalApic::take_eois`]; the machine passes
//!   each vector to the I/O APIC's `eoi`. With SVR bit 12 set the broadcast is suppressed: the OS ends
//!   the I/O APIC's level interrupt through that APIC's EOI register instead (SDM vol. 3 11.8.5).
//! * IPIs written to ICR are queued as [`IpiMessage`]s for [`LocalApic::take_ipis`], except fixed IPIs
//!   with the "self" shorthand, which are accepted locally. A single-processor board calls
//!   [`LocalApic::deliver_own_ipis`] instead, which accepts those addressed to this APIC (NMIs to its
//!   own ID, "all including self", ...) and drops the rest.
//! * The timer runs from a bus clock (`timer_hz`) through the divide configuration in one-shot and
//!   periodic modes, and from the TSC in TSC-deadline mode. The TSC is `now.ticks(tsc_hz) + tsc_offset`
//!   (wrapping); [`LocalApic::set_tsc_offset`] follows guest writes to the TSC, and
//!   [`LocalApic::set_tsc_deadline`] is the IA32_TSC_DEADLINE MSR (ignored outside TSC-deadline mode,
//!   reads 0 after it fires). Timer expiries are delivered by [`Device::advance`] at
//!   [`Device::next_deadline`]; missed periodic expiries coalesce into one interrupt.
//! * While the APIC is software-disabled all LVT entries stay masked; interrupts in IRR/ISR are held and
//!   remain deliverable, and (a simplification) fixed messages are still accepted. [`LocalApic::set_hw_enabled`] follows IA32_APIC_BASE bit 11 (disabling resets the APIC)
//!   and [`LocalApic::set_x2apic_mode`] bit 10.

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::{le_value, note_deadline, put_le};

const VERSION: u32 = 0x0105_0014;
/// Nanoseconds per second (a 1 GHz timer clock ticks once per nanosecond).
const NS_PER_S: u64 = 1_000_000_000;
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_ERROR: usize = 5;
const LVT_MASKED: u32 = 1 << 16;
/// Writable bits of each LVT entry.
const LVT_WRITABLE: [u32; 6] = [0x0007_00ff, 0x0001_07ff, 0x0001_07ff, 0x0001_a7ff, 0x0001_a7ff, 0x0001_00ff];
const LVT_REMOTE_IRR: u32 = 1 << 14;
/// LVT delivery status (read-only).
const LVT_DELIVERY_STATUS: u32 = 1 << 12;
/// Reserved ICR bits in x2APIC mode: 31:20, 17:16, 13.
const X2APIC_ICR_RESERVED: u64 = 0xfff0_0000 | (3 << 16) | (1 << 13);
const SVR_ENABLE: u32 = 1 << 8;
/// SVR bit 12: suppress the EOI broadcast of level-triggered vectors.
const SVR_SUPPRESS_EOI_BROADCAST: u32 = 1 << 12;
/// Writable SVR bits: vector, software enable, focus checking, EOI-broadcast suppression.
const SVR_WRITABLE: u32 = 0x13ff;

const ESR_SEND_ILLEGAL: u32 = 1 << 5;
const ESR_RECV_ILLEGAL: u32 = 1 << 6;
const ESR_ILLEGAL_REG: u32 = 1 << 7;

const MAX_QUEUE: usize = 4096;

/// An inter-processor interrupt written to ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpiMessage {
    /// Vector (fixed, lowest priority) or start page (SIPI).
    pub vector: u8,
    /// 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 6 start-up.
    pub delivery_mode: u8,
    /// Logical destination mode.
    pub dest_logical: bool,
    /// Level bit (assert = true; INIT level de-assert has it clear).
    pub level: bool,
    /// Trigger mode bit (level = true).
    pub trigger_level: bool,
    /// Destination shorthand: 0 none, 1 self, 2 all including self, 3 all excluding self.
    pub shorthand: u8,
    /// Destination (8 bits in xAPIC mode, 32 in x2APIC mode).
    pub dest: u32,
}

/// A local APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalApic {
    name: String,
    initial_id: u32,
    tsc_hz: u64,
    timer_hz: u64,
    tsc_offset: u64,
    hw_enabled: bool,
    x2apic: bool,
    id: u32,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    irr: [u32; 8],
    isr: [u32; 8],
    tmr: [u32; 8],
    esr: u32,
    esr_pending: u32,
    icr: u64,
    lvt: [u32; 6],
    initial_count: u32,
    divide: u32,
    /// One-shot/periodic timer: running since `timer_start` with `timer_start_count` left.
    timer_running: bool,
    timer_start: VirtTime,
    timer_start_count: u32,
    /// Expiries already delivered since `timer_start`.
    timer_fired: u64,
    tsc_deadline: u64,
    lint: [bool; 2],
    nmi_pending: bool,
    ipis: Vec<IpiMessage>,
    eois: Vec<u8>,
}

fn bit_set(a: &[u32; 8], v: u8) -> bool {
    a[usize::from(v >> 5)] & (1 << (v & 31)) != 0
}

fn set_bit(a: &mut [u32; 8], v: u8, on: bool) {
    let w = &mut a[usize::from(v >> 5)];
    if on {
        *w |= 1 << (v & 31);
    } else {
        *w &= !(1 << (v & 31));
    }
}

fn highest(a: &[u32; 8]) -> Option<u8> {
    (0..8).rev().find(|&i| a[i] != 0).map(|i| (i as u8) * 32 + (31 - a[i].leading_zeros() as u8))
}

impl LocalApic {
    /// A local APIC named `lapic<id>` with APIC ID `apic_id`, a TSC of `tsc_hz` and a timer bus clock of
    /// `timer_hz`, in its power-on state (xAPIC mode, hardware enabled, software disabled).
    pub fn new(apic_id: u32, tsc_hz: u64, timer_hz: u64) -> Self {
        LocalApic {
            name: format!("lapic{apic_id}"),
            initial_id: apic_id,
            tsc_hz,
            timer_hz,
            tsc_offset: 0,
            hw_enabled: true,
            x2apic: false,
            id: apic_id,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            irr: [0; 8],
            isr: [0; 8],
            tmr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [LVT_MASKED; 6],
            initial_count: 0,
            divide: 0,
            timer_running: false,
            timer_start: VirtTime::ZERO,
            timer_start_count: 0,
            timer_fired: 0,
            tsc_deadline: 0,
            lint: [false; 2],
            nmi_pending: false,
            ipis: Vec::new(),
            eois: Vec::new(),
        }
    }

    fn power_on(&mut self) {
        let keep = (self.tsc_offset, self.lint);
        *self = LocalApic::new(self.initial_id, self.tsc_hz, self.timer_hz);
        (self.tsc_offset, self.lint) = keep;
    }

    /// The APIC ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether x2APIC mode is on.
    pub fn x2apic_mode(&self) -> bool {
        self.x2apic
    }

    /// IA32_APIC_BASE bit 10.
    pub fn set_x2apic_mode(&mut self, on: bool) {
        self.x2apic = on;
    }

    /// Whether the APIC is hardware enabled (IA32_APIC_BASE bit 11).
    pub fn hw_enabled(&self) -> bool {
        self.hw_enabled
    }

    /// IA32_APIC_BASE bit 11. Disabling returns the APIC to its power-on state (kept disabled).
    pub fn set_hw_enabled(&mut self, on: bool) {
        if !on && self.hw_enabled {
            self.power_on();
        }
        self.hw_enabled = on;
        if !on {
            self.x2apic = false;
        }
    }

    /// Whether the APIC is software enabled (SVR bit 8).
    pub fn sw_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// The TSC at `now`.
    pub fn tsc(&self, now: VirtTime) -> u64 {
        now.ticks(self.tsc_hz).wrapping_add(self.tsc_offset)
    }

    /// Sets the offset between the TSC and virtual time (after a guest write to the TSC).
    pub fn set_tsc_offset(&mut self, offset: u64) {
        self.tsc_offset = offset;
    }

    /// IA32_TSC_DEADLINE as the guest reads it.
    pub fn tsc_deadline(&self) -> u64 {
        self.tsc_deadline
    }

    /// A guest write to IA32_TSC_DEADLINE: arms (non-zero) or disarms (0) the timer in TSC-deadline mode;
    /// ignored in the other timer modes.
    pub fn set_tsc_deadline(&mut self, value: u64) {
        if self.timer_mode() == 2 {
            self.tsc_deadline = value;
        }
    }

    fn tsc_deadline_time(&self) -> Option<VirtTime> {
        if self.timer_mode() != 2 || self.tsc_deadline == 0 {
            return None;
        }
        // tsc(t) = ticks(t) + offset, so the deadline is reached after `deadline - offset` ticks.
        let ticks = self.tsc_deadline.wrapping_sub(self.tsc_offset);
        if ticks > u64::MAX / 2 {
            // The deadline is "behind" the offset: already passed.
            return Some(VirtTime::ZERO);
        }
        Some(VirtTime::from_ticks(ticks, self.tsc_hz))
    }

    fn timer_mode(&self) -> u32 {
        (self.lvt[LVT_TIMER] >> 17) & 3
    }

    fn divisor(&self) -> u64 {
        match ((self.divide & 8) >> 1) | (self.divide & 3) {
            7 => 1,
            n => 2 << n,
        }
    }

    /// Divided timer ticks elapsed at `now` since the timer started.
    fn timer_elapsed(&self, now: VirtTime) -> u64 {
        let ns = now.since(self.timer_start);
        // With a 1 GHz bus clock (the machine's) this is `ns / divisor` exactly, without the 128-bit
        // division of the general form (`timer_elapsed_wide`, the definition; a test compares them).
        if self.timer_hz == NS_PER_S {
            return ns / self.divisor();
        }
        self.timer_elapsed_wide(ns)
    }

    fn timer_elapsed_wide(&self, ns: u64) -> u64 {
        let t = u128::from(ns) * u128::from(self.timer_hz) / (u128::from(self.divisor()) * 1_000_000_000);
        t.min(u128::from(u64::MAX)) as u64
    }

    /// Time at which `ticks` divided ticks have elapsed since the timer started.
    fn timer_time(&self, ticks: u64) -> VirtTime {
        if self.timer_hz == 0 {
            return VirtTime::NEVER;
        }
        // At 1 GHz the nanoseconds are the bus ticks (`timer_time_wide` is the definition).
        let ns = if self.timer_hz == NS_PER_S {
            ticks.saturating_mul(self.divisor())
        } else {
            self.timer_time_wide(ticks)
        };
        VirtTime(self.timer_start.0.saturating_add(ns))
    }

    /// Nanoseconds from the timer's start to `ticks` divided ticks, 128-bit, saturated.
    fn timer_time_wide(&self, ticks: u64) -> u64 {
        let ns = (u128::from(ticks) * u128::from(self.divisor()) * 1_000_000_000)
            .div_ceil(u128::from(self.timer_hz));
        ns.min(u128::from(u64::MAX)) as u64
    }

    fn periodic(&self) -> bool {
        self.timer_mode() == 1
    }

    /// Expiries that have happened by `now`.
    fn timer_expiries(&self, now: VirtTime) -> u64 {
        if !self.timer_running {
            return 0;
        }
        let e = self.timer_elapsed(now);
        let sc = u64::from(self.timer_start_count);
        if e < sc {
            0
        } else if self.periodic() && self.initial_count > 0 {
            (e - sc) / u64::from(self.initial_count) + 1
        } else {
            1
        }
    }

    fn current_count(&self, now: VirtTime) -> u32 {
        if !self.timer_running || self.timer_mode() == 2 {
            return 0;
        }
        let e = self.timer_elapsed(now);
        let sc = u64::from(self.timer_start_count);
        if e < sc {
            (sc - e) as u32
        } else if self.periodic() && self.initial_count > 0 {
            let ic = u64::from(self.initial_count);
            (ic - (e - sc) % ic) as u32
        } else {
            0
        }
    }

    fn timer_next(&self) -> Option<VirtTime> {
        if self.lvt[LVT_TIMER] & LVT_MASKED != 0 {
            return None;
        }
        if self.timer_mode() == 2 {
            return self.tsc_deadline_time();
        }
        if !self.timer_running {
            return None;
        }
        let sc = u64::from(self.timer_start_count);
        let target = if self.periodic() {
            sc.checked_add(self.timer_fired.checked_mul(u64::from(self.initial_count))?)?
        } else if self.timer_fired == 0 {
            sc
        } else {
            return None;
        };
        Some(self.timer_time(target))
    }

    /// Delivers timer expiries up to `now`.
    fn run_timer(&mut self, now: VirtTime) {
        if self.timer_mode() == 2 {
            if let Some(t) = self.tsc_deadline_time()
                && now >= t
            {
                self.tsc_deadline = 0;
                self.deliver_lvt(LVT_TIMER);
            }
            return;
        }
        let n = self.timer_expiries(now);
        if n > self.timer_fired {
            self.timer_fired = n;
            if !self.periodic() {
                self.timer_running = false;
            }
            self.deliver_lvt(LVT_TIMER);
        }
    }

    fn start_timer(&mut self, now: VirtTime, count: u32) {
        self.timer_running = count != 0 && self.timer_mode() != 2;
        self.timer_start = now;
        self.timer_start_count = count;
        self.timer_fired = 0;
    }

    fn deliver_lvt(&mut self, i: usize) {
        let v = self.lvt[i];
        if v & LVT_MASKED != 0 {
            return;
        }
        let mode = if i == LVT_TIMER || i == LVT_ERROR { 0 } else { (v >> 8) & 7 };
        match mode {
            0 => {
                let vector = v as u8;
                if vector < 16 {
                    if i != LVT_ERROR {
                        self.error(ESR_RECV_ILLEGAL);
                    } else {
                        self.esr_pending |= ESR_RECV_ILLEGAL;
                    }
                } else {
                    self.set_irr(vector, false);
                }
            }
            4 => self.nmi_pending = true,
            _ => {}
        }
    }

    fn error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        self.deliver_lvt(LVT_ERROR);
    }

    fn set_irr(&mut self, vector: u8, level: bool) {
        set_bit(&mut self.irr, vector, true);
        set_bit(&mut self.tmr, vector, level);
    }

    /// Accepts a fixed or lowest-priority interrupt `vector` (from the I/O APIC or an IPI); `level` sets
    /// TMR so the EOI is reported through [`LocalApic::take_eois`]. Vectors 0-15 are illegal and set ESR.
    pub fn accept(&mut self, vector: u8, level: bool) {
        if !self.hw_enabled {
            return;
        }
        if vector < 16 {
            self.error(ESR_RECV_ILLEGAL);
        } else {
            self.set_irr(vector, level);
        }
    }

    /// Whether an interrupt message with the 8-bit xAPIC-format destination `dest` (MSI address bits
    /// 19:12, an I/O APIC entry's bits 63:56) in physical or logical mode is for this APIC (SDM vol. 3A
    /// 10.6.2): 0xFF is a broadcast in both modes; physical mode compares the APIC ID; logical mode
    /// matches LDR by the flat model (DFR bits 31:28 = 1111b: any common bit) or the cluster model
    /// (0000b: same cluster in bits 7:4, a common bit in 3:0). In x2APIC mode the logical ID is the
    /// derived cluster/bit form, which an 8-bit destination reaches in cluster 0 only.
    pub fn matches_destination(&self, logical: bool, dest: u8) -> bool {
        if dest == 0xFF {
            return true;
        }
        if !logical {
            return self.id == u32::from(dest);
        }
        if self.x2apic {
            let ldr = self.ldr_value(true);
            return ldr >> 16 == 0 && ldr & u32::from(dest) != 0;
        }
        let ldr = (self.ldr >> 24) as u8;
        if self.dfr >> 28 == 0xF { ldr & dest != 0 } else { ldr >> 4 == dest >> 4 && ldr & dest & 0xF != 0 }
    }

    /// Queues an NMI (delivery mode NMI from an IPI or the I/O APIC).
    pub fn accept_nmi(&mut self) {
        if self.hw_enabled {
            self.nmi_pending = true;
        }
    }

    /// Takes a pending NMI.
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.nmi_pending)
    }

    /// Puts LINT0 in ExtINT mode, unmasked (virtual wire), bypassing the rule that LVT writes are masked
    /// while the APIC is software-disabled: the state a PC's bootstrap processor is left in at reset by the
    /// platform (QEMU does the same in its APIC reset), so that the 8259's interrupts reach a CPU whose
    /// software never touches the APIC.
    pub fn set_virtual_wire(&mut self) {
        self.lvt[LVT_LINT0] = 0x700;
    }

    /// Sets LINT0 (`pin` 0, normally the PIC's INTR) or LINT1 (`pin` 1, normally NMI) to `level`.
    pub fn set_lint(&mut self, pin: usize, level: bool) {
        let Some(old) = self.lint.get(pin).copied() else { return };
        self.lint[pin] = level;
        let v = self.lvt[LVT_LINT0 + pin];
        let active_low = v & (1 << 13) != 0;
        let (was, is) = (old != active_low, level != active_low);
        if v & LVT_MASKED != 0 || !self.hw_enabled || !is {
            return;
        }
        match (v >> 8) & 7 {
            0 => {
                let level_trig = v & (1 << 15) != 0;
                if level_trig {
                    if v & LVT_REMOTE_IRR == 0 {
                        self.lvt[LVT_LINT0 + pin] |= LVT_REMOTE_IRR;
                        self.accept(v as u8, true);
                    }
                } else if !was {
                    self.accept(v as u8, false);
                }
            }
            4 if !was => self.nmi_pending = true,
            _ => {}
        }
    }

    /// Whether PIC interrupts reach the CPU through LINT0: the APIC is hardware disabled (the PIC is wired
    /// straight to the CPU) or LINT0 is unmasked in ExtINT mode.
    pub fn accepts_pic_interrupts(&self) -> bool {
        let v = self.lvt[LVT_LINT0];
        !self.hw_enabled || (v & LVT_MASKED == 0 && (v >> 8) & 7 == 7)
    }

    /// LINT0 is in ExtINT mode, unmasked and asserted: the CPU should run an INTA cycle on the PIC.
    pub fn extint_pending(&self) -> bool {
        let v = self.lvt[LVT_LINT0];
        self.hw_enabled && v & LVT_MASKED == 0 && (v >> 8) & 7 == 7 && self.lint[0] != (v & (1 << 13) != 0)
    }

    fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 { self.tpr } else { isrv & 0xf0 }
    }

    /// The highest-priority pending vector that can interrupt now (its priority class beats PPR).
    pub fn has_interrupt(&self) -> Option<u8> {
        if !self.hw_enabled {
            return None;
        }
        let v = highest(&self.irr)?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// The CPU's interrupt acknowledge: moves the vector from IRR to ISR and returns it, or returns the
    /// spurious vector (SVR bits 7:0) if nothing is deliverable any more.
    pub fn acknowledge(&mut self) -> u8 {
        match self.has_interrupt() {
            Some(v) => {
                set_bit(&mut self.irr, v, false);
                set_bit(&mut self.isr, v, true);
                v
            }
            None => self.svr as u8,
        }
    }

    /// Takes the vectors of level-triggered interrupts EOIed since the last call (for the I/O APIC).
    pub fn take_eois(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.eois)
    }

    /// Takes the IPIs sent since the last call.
    pub fn take_ipis(&mut self) -> Vec<IpiMessage> {
        std::mem::take(&mut self.ipis)
    }

    fn eoi(&mut self) {
        let Some(v) = highest(&self.isr) else { return };
        set_bit(&mut self.isr, v, false);
        if bit_set(&self.tmr, v) {
            for pin in 0..2 {
                let e = &mut self.lvt[LVT_LINT0 + pin];
                if *e as u8 == v {
                    *e &= !LVT_REMOTE_IRR;
                }
            }
            if self.svr & SVR_SUPPRESS_EOI_BROADCAST == 0 && self.eois.len() < MAX_QUEUE {
                self.eois.push(v);
            }
        }
    }

    fn send_ipi(&mut self) {
        let icr = self.icr;
        let vector = icr as u8;
        let mode = ((icr >> 8) & 7) as u8;
        let shorthand = ((icr >> 18) & 3) as u8;
        if mode <= 1 && vector < 16 {
            self.error(ESR_SEND_ILLEGAL);
            return;
        }
        if shorthand == 1 {
            if mode == 0 {
                self.set_irr(vector, false);
            }
            return;
        }
        let dest = if self.x2apic { (icr >> 32) as u32 } else { (icr >> 56) as u32 };
        if self.ipis.len() < MAX_QUEUE {
            self.ipis.push(IpiMessage {
                vector,
                delivery_mode: mode,
                dest_logical: icr & (1 << 11) != 0,
                level: icr & (1 << 14) != 0,
                trigger_level: icr & (1 << 15) != 0,
                shorthand,
                dest,
            });
        }
    }

    /// Whether IPI `m`, sent by this APIC, is addressed to this APIC itself: the "self" and "all
    /// including self" shorthands, or no shorthand and a destination that names it (physical: its ID or
    /// the broadcast ID; logical: [`LocalApic::matches_destination`] in xAPIC mode, the cluster and a
    /// common bit of the derived logical ID in x2APIC mode).
    pub fn ipi_targets_self(&self, m: &IpiMessage) -> bool {
        match m.shorthand {
            1 | 2 => true,
            3 => false,
            _ if self.x2apic => {
                if m.dest == u32::MAX {
                    true
                } else if m.dest_logical {
                    let ldr = self.ldr_value(true);
                    m.dest >> 16 == ldr >> 16 && m.dest & ldr & 0xffff != 0
                } else {
                    m.dest == self.id
                }
            }
            _ => self.matches_destination(m.dest_logical, m.dest as u8),
        }
    }

    /// Delivers the queued IPIs that this APIC addresses to itself (the board of a single processor
    /// calls this after every APIC access: no other processor could take the rest, which are
    /// dropped): fixed and lowest-priority set IRR, NMI raises an NMI; INIT, start-up, SMI and ExtINT
    /// have nothing to act on here.
    pub fn deliver_own_ipis(&mut self) {
        for m in std::mem::take(&mut self.ipis) {
            if !self.ipi_targets_self(&m) {
                continue;
            }
            match m.delivery_mode {
                0 | 1 => self.accept(m.vector, m.trigger_level),
                4 => self.accept_nmi(),
                _ => {}
            }
        }
    }

    fn ldr_value(&self, x2: bool) -> u32 {
        if x2 { ((self.id >> 4) << 16) | (1 << (self.id & 0xf)) } else { self.ldr }
    }

    /// A 32-bit register in the xAPIC (`x2` false) or x2APIC view.
    fn read32(&mut self, now: VirtTime, index: u32, x2: bool) -> Option<u32> {
        self.run_timer(now);
        let idx = index as usize;
        Some(match index {
            0x02 => {
                if x2 {
                    self.id
                } else {
                    (self.id & 0xff) << 24
                }
            }
            0x03 => VERSION,
            0x08 => u32::from(self.tpr),
            0x09 | 0x0b | 0x0c if !x2 => 0,
            0x0a => u32::from(self.ppr()),
            0x0d => self.ldr_value(x2),
            0x0e if !x2 => self.dfr,
            0x0f => self.svr,
            0x10..=0x17 => self.isr[idx - 0x10],
            0x18..=0x1f => self.tmr[idx - 0x18],
            0x20..=0x27 => self.irr[idx - 0x20],
            0x28 => self.esr,
            0x30 => self.icr as u32 & !(1 << 12),
            0x31 if !x2 => (self.icr >> 32) as u32 & 0xff00_0000,
            0x32..=0x37 => self.lvt[idx - 0x32],
            0x38 => self.initial_count,
            0x39 => self.current_count(now),
            0x3e => self.divide,
            _ => return None,
        })
    }

    /// Writes a 32-bit register; `false` means the register is invalid or read-only in x2APIC mode.
    fn write32(&mut self, now: VirtTime, index: u32, v: u32, x2: bool) -> bool {
        self.run_timer(now);
        let idx = index as usize;
        match index {
            0x02 if !x2 => self.id = v >> 24,
            0x08 => self.tpr = v as u8,
            0x0b => {
                if x2 && v != 0 {
                    return false;
                }
                self.eoi();
            }
            0x0d if !x2 => self.ldr = v & 0xff00_0000,
            0x0e if !x2 => self.dfr = v | 0x0fff_ffff,
            0x0f => {
                self.svr = v & SVR_WRITABLE;
                if !self.sw_enabled() {
                    for e in &mut self.lvt {
                        *e |= LVT_MASKED;
                    }
                }
            }
            0x28 => {
                if x2 && v != 0 {
                    return false;
                }
                self.esr = std::mem::take(&mut self.esr_pending);
            }
            0x30 if !x2 => {
                self.icr = (self.icr & 0xffff_ffff_0000_0000) | u64::from(v & 0x000c_cfff);
                self.send_ipi();
            }
            0x31 if !x2 => self.icr = (self.icr & 0xffff_ffff) | (u64::from(v & 0xff00_0000) << 32),
            0x32..=0x37 => {
                let i = idx - 0x32;
                let old_mode = self.timer_mode();
                let mut new = (v & LVT_WRITABLE[i]) | (self.lvt[i] & LVT_REMOTE_IRR);
                if !self.sw_enabled() {
                    new |= LVT_MASKED;
                }
                self.lvt[i] = new;
                if i == LVT_TIMER && self.timer_mode() != old_mode {
                    // Changing the timer mode disarms the timer.
                    self.timer_running = false;
                    self.initial_count = 0;
                    self.tsc_deadline = 0;
                }
            }
            0x38 => {
                if self.timer_mode() != 2 {
                    self.initial_count = v;
                    self.start_timer(now, v);
                }
            }
            0x3e => {
                let count = self.current_count(now);
                let running = self.timer_running;
                self.divide = v & 0xb;
                if running {
                    // Continue from the current count at the new rate.
                    self.start_timer(now, count.max(1));
                }
            }
            0x3f if x2 => self.accept(v as u8, false),
            0x03 | 0x0a | 0x10..=0x27 | 0x39 if !x2 => {}
            _ => {
                if !x2 {
                    self.error(ESR_ILLEGAL_REG);
                }
                return false;
            }
        }
        true
    }

    /// x2APIC MSR read of register `index` (MSR - 0x800); `None` = #GP.
    pub fn read_reg(&mut self, now: VirtTime, index: u32) -> Option<u64> {
        if index == 0x30 {
            self.run_timer(now);
            return Some(self.icr & !(1 << 12));
        }
        self.read32(now, index, true).map(u64::from)
    }

    /// x2APIC MSR write of register `index` (MSR - 0x800); `false` = #GP: no such register, a
    /// read-only one, or a non-zero write to a reserved bit (SDM vol. 3A 11.12.1.3, "Reserved Bit
    /// Checking": bits 63:32 of every register but the ICR; TPR 31:8; SVR 31:13, 11:10; each LVT entry's
    /// reserved bits (figure 11-8; its read-only delivery-status and remote-IRR bits are ignored); DCR
    /// 31:4 and 2; SELF IPI 31:8; ICR 31:20, 17:16 and 13 (delivery status, bit 12, is ignored); EOI
    /// and ESR take only zero). Whether x2APIC mode is on is the CPU's check (IA32_APIC_BASE).
    pub fn write_reg(&mut self, now: VirtTime, index: u32, value: u64) -> bool {
        if index == 0x30 {
            if value & X2APIC_ICR_RESERVED != 0 {
                return false;
            }
            self.run_timer(now);
            self.icr = value & 0xffff_ffff_000c_cfff;
            self.send_ipi();
            return true;
        }
        let v = value as u32;
        let reserved = match index {
            0x08 => !0xff,
            0x0f => !SVR_WRITABLE,
            0x32..=0x37 => !(LVT_WRITABLE[index as usize - 0x32] | LVT_DELIVERY_STATUS | LVT_REMOTE_IRR),
            0x3e => !0xb,
            0x3f => !0xff,
            _ => 0,
        };
        if value >> 32 != 0 || v & reserved != 0 {
            return false;
        }
        self.write32(now, index, v, true)
    }
}

impl Device for LocalApic {
    fn name(&self) -> &str {
        &self.name
    }

    fn mmio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u64, data: &mut [u8]) {
        // In x2APIC mode the MMIO page is not decoded, as in the globally disabled state (SDM vol. 3A
        // 11.12.2): reads float high, writes are dropped.
        let value = if offset & 0xf == 0 && offset < 0x1000 && !self.x2apic {
            self.read32(ctx.now, (offset >> 4) as u32, false)
                .map_or(u64::MAX, |v| u64::from(v) | !0xffff_ffffu64)
        } else {
            u64::MAX
        };
        put_le(data, value);
    }

    fn mmio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u64, data: &[u8]) {
        if offset & 0xf != 0 || offset >= 0x1000 || data.len() < 4 || self.x2apic {
            return;
        }
        let before = self.next_deadline();
        let had_ipis = self.ipis.len();
        let had_interrupt = self.has_interrupt();
        self.write32(ctx.now, (offset >> 4) as u32, le_value(&data[..4]) as u32, false);
        note_deadline(ctx, before, self.next_deadline());
        // New IPIs to route, or a newly deliverable vector (TPR lowered, EOI, self IPI).
        if self.ipis.len() != had_ipis || self.has_interrupt() != had_interrupt {
            ctx.requests.reschedule = true;
        }
    }

    fn reset(&mut self) {
        self.power_on();
    }

    fn next_deadline(&self) -> Option<VirtTime> {
        self.timer_next()
    }

    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        self.run_timer(ctx.now);
    }
}

impl Snapshot for LocalApic {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(&self.name);
        w.u64(self.tsc_offset);
        for v in
            [self.hw_enabled, self.x2apic, self.timer_running, self.nmi_pending, self.lint[0], self.lint[1]]
        {
            w.bool(v);
        }
        w.u32(self.id);
        w.u8(self.tpr);
        for v in [self.ldr, self.dfr, self.svr, self.esr, self.esr_pending, self.initial_count, self.divide] {
            w.u32(v);
        }
        for a in [&self.irr, &self.isr, &self.tmr] {
            for v in a {
                w.u32(*v);
            }
        }
        for v in &self.lvt {
            w.u32(*v);
        }
        w.u64(self.icr);
        w.u64(self.timer_start.0);
        w.u32(self.timer_start_count);
        w.u64(self.timer_fired);
        w.u64(self.tsc_deadline);
        w.u64(self.ipis.len() as u64);
        for m in &self.ipis {
            w.u8(m.vector);
            w.u8(m.delivery_mode);
            w.bool(m.dest_logical);
            w.bool(m.level);
            w.bool(m.trigger_level);
            w.u8(m.shorthand);
            w.u32(m.dest);
        }
        w.bytes(&self.eois);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag(&self.name)?;
        let mut s = LocalApic::new(self.initial_id, self.tsc_hz, self.timer_hz);
        s.tsc_offset = r.u64()?;
        [s.hw_enabled, s.x2apic, s.timer_running, s.nmi_pending, s.lint[0], s.lint[1]] =
            [r.bool()?, r.bool()?, r.bool()?, r.bool()?, r.bool()?, r.bool()?];
        s.id = r.u32()?;
        s.tpr = r.u8()?;
        [s.ldr, s.dfr, s.svr, s.esr, s.esr_pending, s.initial_count, s.divide] =
            [r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?];
        for a in [&mut s.irr, &mut s.isr, &mut s.tmr] {
            for v in a.iter_mut() {
                *v = r.u32()?;
            }
        }
        for (i, v) in s.lvt.iter_mut().enumerate() {
            *v = r.u32()? & (LVT_WRITABLE[i] | LVT_REMOTE_IRR);
        }
        s.icr = r.u64()?;
        s.timer_start = VirtTime(r.u64()?);
        s.timer_start_count = r.u32()?;
        s.timer_fired = r.u64()?;
        s.tsc_deadline = r.u64()?;
        let n = r.u64()?;
        if n > MAX_QUEUE as u64 {
            return Err(SnapshotError::Invalid("lapic ipis".into()));
        }
        for _ in 0..n {
            s.ipis.push(IpiMessage {
                vector: r.u8()?,
                delivery_mode: r.u8()? & 7,
                dest_logical: r.bool()?,
                level: r.bool()?,
                trigger_level: r.bool()?,
                shorthand: r.u8()? & 3,
                dest: r.u32()?,
            });
        }
        let eois = r.bytes()?;
        if eois.len() > MAX_QUEUE {
            return Err(SnapshotError::Invalid("lapic eois".into()));
        }
        s.eois = eois.to_vec();
        s.divide &= 0xb;
        s.svr &= SVR_WRITABLE;
        *self = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timer's 1 GHz forms give the 128-bit definitions' bits for every divisor, at the start of
    /// time and near the ends of the 64-bit range.
    #[test]
    fn timer_conversions_match_the_128_bit_forms() {
        let mut a = LocalApic::new(0, NS_PER_S, NS_PER_S);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for divide in [0u32, 1, 2, 3, 8, 9, 10, 11] {
            a.divide = divide;
            for start in [0u64, 12_345, u64::MAX / 2, u64::MAX - 10] {
                a.timer_start = VirtTime(start);
                let mut values =
                    vec![0u64, 1, 2, 127, 128, u64::MAX / 256, u64::MAX / 128, u64::MAX / 2, u64::MAX];
                for _ in 0..500 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    values.push(x >> (x % 64));
                }
                for &v in &values {
                    let wide_t = VirtTime(start.saturating_add(a.timer_time_wide(v)));
                    assert_eq!(a.timer_time(v), wide_t, "timer_time({v}), divide {divide}");
                    let now = VirtTime(start.saturating_add(v));
                    assert_eq!(
                        a.timer_elapsed(now),
                        a.timer_elapsed_wide(now.since(a.timer_start)),
                        "timer_elapsed({v}), divide {divide}"
                    );
                }
            }
        }
    }
    use crate::testutil::{Bus, hammer, roundtrip};

    const TSC_HZ: u64 = 2_000_000_000;
    const BUS_HZ: u64 = 1_000_000_000;

    fn apic() -> LocalApic {
        let mut a = LocalApic::new(1, TSC_HZ, BUS_HZ);
        assert!(a.write_reg(VirtTime(0), 0x0f, 0x1ff));
        a
    }

    #[test]
    fn virtual_wire_at_reset_passes_pic_interrupts() {
        // Software-disabled after reset: a guest write to LINT0 is forced masked, the platform reset is not.
        let mut a = LocalApic::new(0, TSC_HZ, BUS_HZ);
        assert!(a.write_reg(VirtTime(0), 0x35, 0x700));
        assert!(!a.accepts_pic_interrupts(), "software LVT writes stay masked while disabled");
        a.set_virtual_wire();
        assert!(a.accepts_pic_interrupts());
        a.set_lint(0, true);
        assert!(a.extint_pending());
    }

    fn mmio_rd(b: &mut Bus, a: &mut LocalApic, ns: u64, off: u64) -> u32 {
        let mut d = [0u8; 4];
        a.mmio_read(&mut b.ctx(ns), off, &mut d);
        u32::from_le_bytes(d)
    }

    fn mmio_wr(b: &mut Bus, a: &mut LocalApic, ns: u64, off: u64, v: u32) {
        a.mmio_write(&mut b.ctx(ns), off, &v.to_le_bytes());
    }

    #[test]
    fn message_destinations_physical_logical_broadcast() {
        let mut b = Bus::new();
        let mut a = apic(); // ID 1
        assert!(a.matches_destination(false, 1));
        assert!(!a.matches_destination(false, 0));
        assert!(a.matches_destination(false, 0xFF), "physical broadcast");
        assert!(!a.matches_destination(true, 0x01), "LDR 0 matches no logical destination");
        assert!(a.matches_destination(true, 0xFF), "logical broadcast");
        mmio_wr(&mut b, &mut a, 0, 0xD0, 0x0400_0000); // LDR bit 2, flat model
        assert!(a.matches_destination(true, 0x04));
        assert!(a.matches_destination(true, 0x0C));
        assert!(!a.matches_destination(true, 0x03));
        mmio_wr(&mut b, &mut a, 0, 0xE0, 0x0FFF_FFFF); // cluster model
        mmio_wr(&mut b, &mut a, 0, 0xD0, 0x3200_0000); // cluster 3, bit 1
        assert!(a.matches_destination(true, 0x32));
        assert!(a.matches_destination(true, 0x33));
        assert!(!a.matches_destination(true, 0x22), "other cluster");
        assert!(!a.matches_destination(true, 0x31));
        mmio_wr(&mut b, &mut a, 0, 0x20, 0x0500_0000); // ID 5
        assert!(a.matches_destination(false, 5));
        assert!(!a.matches_destination(false, 1));
        a.set_x2apic_mode(true); // logical ID 0x0000_0020 (cluster 0, bit 5)
        assert!(a.matches_destination(true, 0x20));
        assert!(!a.matches_destination(true, 0x10));
        assert!(a.matches_destination(false, 5));
    }

    #[test]
    fn reset_state_and_identification() {
        let mut a = LocalApic::new(3, TSC_HZ, BUS_HZ);
        let mut b = Bus::new();
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x20), 0x0300_0000);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x30), 0x0105_0014);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0xe0), 0xffff_ffff);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0xf0), 0xff);
        for off in (0x320..=0x370).step_by(0x10) {
            assert_eq!(mmio_rd(&mut b, &mut a, 0, off), 0x0001_0000);
        }
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x24), 0xffff_ffff, "unaligned");
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x400), 0xffff_ffff, "reserved");
        assert_eq!(a.read_reg(VirtTime(0), 0x02), Some(3));
        assert_eq!(a.read_reg(VirtTime(0), 0x0d), Some(1 << 3), "x2APIC logical ID");
        assert_eq!(a.read_reg(VirtTime(0), 0x0e), None, "no DFR in x2APIC");
        assert!(!a.write_reg(VirtTime(0), 0x03, 0), "version is read-only");
        assert!(!a.write_reg(VirtTime(0), 0x0b, 1), "x2APIC EOI must be 0");
        mmio_wr(&mut b, &mut a, 0, 0x20, 0x0700_0000);
        assert_eq!(a.id(), 7);
        mmio_wr(&mut b, &mut a, 0, 0xd0, 0x1234_5678);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0xd0), 0x1200_0000);
        mmio_wr(&mut b, &mut a, 0, 0xe0, 0x0000_0000);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0xe0), 0x0fff_ffff);
    }

    #[test]
    fn software_disable_masks_lvts() {
        let mut a = LocalApic::new(0, TSC_HZ, BUS_HZ);
        let mut b = Bus::new();
        mmio_wr(&mut b, &mut a, 0, 0x350, 0x700);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x350), 0x0001_0700, "mask sticks while disabled");
        mmio_wr(&mut b, &mut a, 0, 0xf0, 0x1ff);
        mmio_wr(&mut b, &mut a, 0, 0x350, 0x700);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x350), 0x700);
        mmio_wr(&mut b, &mut a, 0, 0xf0, 0x0ff);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x350), 0x0001_0700);
    }

    #[test]
    fn priority_tpr_ppr_and_eoi() {
        let mut a = apic();
        let mut b = Bus::new();
        a.accept(0x31, false);
        a.accept(0x52, true);
        a.accept(0x55, false);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x210), 1 << 0x11);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x220), (1 << 0x12) | (1 << 0x15));
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x180 + 0x20), 1 << 0x12, "TMR for level vector");
        assert_eq!(a.has_interrupt(), Some(0x55));
        assert_eq!(a.acknowledge(), 0x55);
        assert_eq!(a.read_reg(VirtTime(0), 0x0a), Some(0x50));
        assert_eq!(a.has_interrupt(), None, "0x52 same class as in-service 0x55");
        a.accept(0x61, false);
        assert_eq!(a.acknowledge(), 0x61, "higher class nests");
        mmio_wr(&mut b, &mut a, 0, 0xb0, 0);
        mmio_wr(&mut b, &mut a, 0, 0xb0, 0);
        assert!(a.take_eois().is_empty(), "edge vectors are not reported");
        mmio_wr(&mut b, &mut a, 0, 0x80, 0x60);
        assert_eq!(a.read_reg(VirtTime(0), 0x0a), Some(0x60));
        assert_eq!(a.has_interrupt(), None, "TPR blocks 0x52");
        assert_eq!(a.acknowledge(), 0xff, "spurious vector");
        mmio_wr(&mut b, &mut a, 0, 0x80, 0x00);
        assert_eq!(a.acknowledge(), 0x52);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x120), 1 << 0x12, "ISR");
        mmio_wr(&mut b, &mut a, 0, 0xb0, 0);
        assert_eq!(a.take_eois(), [0x52]);
        assert_eq!(a.acknowledge(), 0x31);
    }

    #[test]
    fn eoi_broadcast_suppression() {
        let mut a = apic();
        let mut b = Bus::new();
        assert_ne!(mmio_rd(&mut b, &mut a, 0, 0x30) & (1 << 24), 0, "advertised in the version register");
        mmio_wr(&mut b, &mut a, 0, 0xf0, 0x11ff);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0xf0), 0x11ff, "SVR bit 12 is writable");
        a.accept(0x52, true);
        assert_eq!(a.acknowledge(), 0x52);
        mmio_wr(&mut b, &mut a, 0, 0xb0, 0);
        assert!(a.take_eois().is_empty(), "suppressed broadcast");
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x100 + 0x20), 0, "the EOI still clears ISR");
        mmio_wr(&mut b, &mut a, 0, 0xf0, 0x1ff);
        a.accept(0x52, true);
        assert_eq!(a.acknowledge(), 0x52);
        mmio_wr(&mut b, &mut a, 0, 0xb0, 0);
        assert_eq!(a.take_eois(), [0x52], "broadcast again once the bit is cleared");
    }

    #[test]
    fn illegal_vectors_and_esr() {
        let mut a = apic();
        let mut b = Bus::new();
        mmio_wr(&mut b, &mut a, 0, 0x370, 0xfe); // error LVT vector 0xFE
        a.accept(5, false);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x280), 0, "ESR updates on write");
        mmio_wr(&mut b, &mut a, 0, 0x280, 0);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x280), ESR_RECV_ILLEGAL);
        assert_eq!(a.has_interrupt(), Some(0xfe));
        mmio_wr(&mut b, &mut a, 0, 0x300, 0x0000_4003); // fixed IPI vector 3
        mmio_wr(&mut b, &mut a, 0, 0x280, 0);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x280), ESR_SEND_ILLEGAL);
        assert!(a.take_ipis().is_empty());
    }

    #[test]
    fn ipis_self_and_others() {
        let mut a = apic();
        let mut b = Bus::new();
        mmio_wr(&mut b, &mut a, 0, 0x300, 0x0004_0040); // self, fixed 0x40
        assert_eq!(a.has_interrupt(), Some(0x40));
        mmio_wr(&mut b, &mut a, 0, 0x310, 0x0200_0000);
        mmio_wr(&mut b, &mut a, 0, 0x300, 0x0000_c500); // INIT assert level
        mmio_wr(&mut b, &mut a, 0, 0x300, 0x0000_0612); // SIPI page 0x12
        mmio_wr(&mut b, &mut a, 0, 0x300, 0x000c_0030); // fixed to all excluding self
        let ipis = a.take_ipis();
        assert_eq!(ipis.len(), 3);
        assert_eq!(
            ipis[0],
            IpiMessage {
                vector: 0,
                delivery_mode: 5,
                dest_logical: false,
                level: true,
                trigger_level: true,
                shorthand: 0,
                dest: 2
            }
        );
        assert_eq!((ipis[1].delivery_mode, ipis[1].vector, ipis[1].dest), (6, 0x12, 2));
        assert_eq!((ipis[2].shorthand, ipis[2].vector), (3, 0x30));
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x310), 0x0200_0000);
        // x2APIC: 64-bit ICR with a 32-bit destination, and SELF IPI.
        a.set_x2apic_mode(true);
        assert!(a.write_reg(VirtTime(0), 0x30, 0x0000_1234_0000_0050));
        assert_eq!(a.take_ipis()[0].dest, 0x1234);
        assert!(a.write_reg(VirtTime(0), 0x3f, 0x66));
        assert_eq!(a.has_interrupt(), Some(0x66));
        assert_eq!(a.read_reg(VirtTime(0), 0x3f), None, "SELF IPI is write-only");
    }

    /// On a single-processor board the APIC delivers its own IPIs: an NMI to its own ID, a fixed IPI
    /// to "all including self" or to its logical ID; others (another ID, "all excluding self", INIT)
    /// are dropped.
    #[test]
    fn own_ipis_are_delivered_locally() {
        let mut a = LocalApic::new(2, TSC_HZ, BUS_HZ);
        let mut b = Bus::new();
        mmio_wr(&mut b, &mut a, 0, 0xf0, 0x1ff);
        let send = |a: &mut LocalApic, b: &mut Bus, hi: u32, lo: u32| {
            mmio_wr(b, a, 0, 0x310, hi);
            mmio_wr(b, a, 0, 0x300, lo);
            a.deliver_own_ipis();
        };
        send(&mut a, &mut b, 2 << 24, 0x4400);
        assert!(a.take_nmi(), "NMI to its own ID");
        send(&mut a, &mut b, 3 << 24, 0x4400);
        assert!(!a.take_nmi(), "NMI to another ID");
        send(&mut a, &mut b, 0, 0xc_4400);
        assert!(!a.take_nmi(), "NMI to all excluding self");
        send(&mut a, &mut b, 0, 0x8_0051);
        assert_eq!(a.has_interrupt(), Some(0x51), "fixed to all including self");
        a.acknowledge();
        mmio_wr(&mut b, &mut a, 0, 0xb0, 0);
        mmio_wr(&mut b, &mut a, 0, 0xd0, 0x0400_0000); // LDR: logical ID bit 2 (flat model)
        send(&mut a, &mut b, 0x0400_0000, 0x0852);
        assert_eq!(a.has_interrupt(), Some(0x52), "fixed to its logical ID");
        send(&mut a, &mut b, 2 << 24, 0x4500);
        assert!(!a.take_nmi() && a.take_ipis().is_empty(), "INIT dropped, queue empty");
    }

    /// x2APIC reserved-bit checking (SDM vol. 3A 11.12.1.3): a non-zero reserved bit is #GP and the
    /// register keeps its value; read-only bits inside an LVT entry are ignored. In x2APIC mode the
    /// MMIO page is not decoded.
    #[test]
    fn x2apic_reserved_bits_and_no_mmio() {
        let mut a = LocalApic::new(0, TSC_HZ, BUS_HZ);
        let mut b = Bus::new();
        assert!(a.write_reg(VirtTime(0), 0x0f, 0x1ff));
        a.set_x2apic_mode(true);
        let t = VirtTime(0);
        for (idx, bad) in [
            (0x08, 0x100u64),          // TPR 31:8
            (0x08, 1 << 32),           // upper half
            (0x0f, 0x1ff | (1 << 10)), // SVR bit 10
            (0x0f, 0x1ff | (1 << 13)), // SVR 31:13
            (0x32, 0x20 | (1 << 19)),  // LVT timer 31:19
            (0x35, 0x700 | (1 << 11)), // LVT LINT0 bit 11
            (0x37, 0x40 | (1 << 8)),   // LVT error: delivery mode bits are reserved
            (0x3e, 0x4),               // DCR bit 2
            (0x3e, 0x10),              // DCR 31:4
            (0x3f, 0x100),             // SELF IPI 31:8
            (0x30, (1 << 13) | 0x30),  // ICR bit 13
            (0x30, (1 << 16) | 0x30),  // ICR 17:16
            (0x30, (1 << 20) | 0x30),  // ICR 31:20
            (0x28, 1),                 // ESR takes only 0
            (0x38, 1 << 32),           // initial count: upper half
        ] {
            let before = a.read_reg(t, idx);
            assert!(!a.write_reg(t, idx, bad), "index {idx:#x} <- {bad:#x}");
            assert_eq!(a.read_reg(t, idx), before, "index {idx:#x} unchanged");
        }
        assert!(a.take_ipis().is_empty(), "a refused ICR write sends nothing");
        // Accepted: full TPR, LINT0 with the read-only delivery-status and remote-IRR bits set, ICR with
        // the delivery-status bit.
        assert!(a.write_reg(t, 0x08, 0xff));
        assert!(a.write_reg(t, 0x35, 0x0001_0700 | (1 << 12) | (1 << 14)));
        assert_eq!(a.read_reg(t, 0x35), Some(0x0001_0700));
        assert!(a.write_reg(t, 0x30, (5 << 32) | (1 << 12) | 0x40));
        assert_eq!(a.take_ipis().len(), 1);
        // MMIO: reads float, writes are dropped.
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x30), 0xffff_ffff);
        mmio_wr(&mut b, &mut a, 0, 0x80, 0x10);
        assert_eq!(a.read_reg(t, 0x08), Some(0xff));
        a.set_x2apic_mode(false);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x30), VERSION);
    }

    #[test]
    fn one_shot_timer() {
        let mut a = apic();
        let mut b = Bus::new();
        mmio_wr(&mut b, &mut a, 0, 0x3e0, 0x3); // divide by 16
        mmio_wr(&mut b, &mut a, 0, 0x320, 0x30);
        mmio_wr(&mut b, &mut a, 1000, 0x380, 1000);
        assert!(b.req.reschedule);
        // 1000 ticks at 1 GHz / 16 = 16 µs.
        assert_eq!(a.next_deadline(), Some(VirtTime(1000 + 16_000)));
        assert_eq!(mmio_rd(&mut b, &mut a, 1000 + 8_000, 0x390), 500);
        b.advance(&mut a, 1000 + 15_999);
        assert_eq!(a.has_interrupt(), None);
        b.advance(&mut a, 1000 + 16_000);
        assert_eq!(a.has_interrupt(), Some(0x30));
        assert_eq!(a.next_deadline(), None);
        assert_eq!(mmio_rd(&mut b, &mut a, 1000 + 20_000, 0x390), 0);
        assert_eq!(mmio_rd(&mut b, &mut a, 1000 + 20_000, 0x380), 1000);
    }

    #[test]
    fn periodic_timer_and_divide_1() {
        let mut a = apic();
        let mut b = Bus::new();
        mmio_wr(&mut b, &mut a, 0, 0x3e0, 0xb); // divide by 1
        mmio_wr(&mut b, &mut a, 0, 0x320, 0x0002_0040);
        mmio_wr(&mut b, &mut a, 0, 0x380, 100);
        assert_eq!(a.next_deadline(), Some(VirtTime(100)));
        b.advance(&mut a, 100);
        assert_eq!(a.acknowledge(), 0x40);
        mmio_wr(&mut b, &mut a, 100, 0xb0, 0);
        assert_eq!(a.next_deadline(), Some(VirtTime(200)));
        assert_eq!(mmio_rd(&mut b, &mut a, 130, 0x390), 70);
        b.advance(&mut a, 1050);
        assert_eq!(a.acknowledge(), 0x40, "coalesced");
        assert_eq!(a.next_deadline(), Some(VirtTime(1100)));
        // Masking stops deadlines; writing 0 stops the timer.
        mmio_wr(&mut b, &mut a, 1050, 0x380, 0);
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut a = apic();
        let mut b = Bus::new();
        a.set_tsc_deadline(5000);
        assert_eq!(a.tsc_deadline(), 0, "ignored outside TSC-deadline mode");
        mmio_wr(&mut b, &mut a, 0, 0x320, 0x0004_0050);
        mmio_wr(&mut b, &mut a, 0, 0x380, 1234);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x380), 0, "initial count ignored");
        a.set_tsc_offset(1000);
        assert_eq!(a.tsc(VirtTime(10)), 1020);
        a.set_tsc_deadline(5000);
        // 4000 ticks at 2 GHz = 2000 ns.
        assert_eq!(a.next_deadline(), Some(VirtTime(2000)));
        b.advance(&mut a, 1999);
        assert_eq!(a.has_interrupt(), None);
        b.advance(&mut a, 2000);
        assert_eq!(a.has_interrupt(), Some(0x50));
        assert_eq!(a.tsc_deadline(), 0);
        assert_eq!(a.next_deadline(), None);
        // A deadline in the past fires at once.
        a.acknowledge();
        a.set_tsc_deadline(1);
        b.advance(&mut a, 3000);
        assert_eq!(a.has_interrupt(), None, "0x50 in service");
        assert_eq!(mmio_rd(&mut b, &mut a, 3000, 0x200 + 0x20), 1 << 0x10);
        // Leaving the mode disarms.
        a.set_tsc_deadline(1 << 40);
        mmio_wr(&mut b, &mut a, 3000, 0x320, 0x50);
        assert_eq!(a.tsc_deadline(), 0);
    }

    #[test]
    fn lint_pins_extint_and_nmi() {
        let mut a = apic();
        let mut b = Bus::new();
        assert!(!a.accepts_pic_interrupts());
        mmio_wr(&mut b, &mut a, 0, 0x350, 0x700); // LINT0 ExtINT
        mmio_wr(&mut b, &mut a, 0, 0x360, 0x400); // LINT1 NMI
        assert!(a.accepts_pic_interrupts());
        a.set_lint(0, true);
        assert!(a.extint_pending());
        assert_eq!(a.has_interrupt(), None);
        a.set_lint(0, false);
        assert!(!a.extint_pending());
        a.set_lint(1, true);
        assert!(a.take_nmi());
        assert!(!a.take_nmi());
        a.set_lint(1, true);
        assert!(!a.take_nmi(), "NMI is edge triggered");
        // Level-triggered fixed LINT0 with remote IRR.
        mmio_wr(&mut b, &mut a, 0, 0x350, 0x8070);
        a.set_lint(0, true);
        assert_eq!(a.acknowledge(), 0x70);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x350) & LVT_REMOTE_IRR, LVT_REMOTE_IRR);
        mmio_wr(&mut b, &mut a, 0, 0xb0, 0);
        assert_eq!(mmio_rd(&mut b, &mut a, 0, 0x350) & LVT_REMOTE_IRR, 0);
        assert_eq!(a.take_eois(), [0x70]);
        a.set_hw_enabled(false);
        assert!(a.accepts_pic_interrupts());
        assert!(!a.extint_pending());
    }

    #[test]
    fn snapshot_and_hostile_input() {
        let mut a = apic();
        let mut b = Bus::new();
        a.accept(0x40, true);
        mmio_wr(&mut b, &mut a, 0, 0x320, 0x0002_0040);
        mmio_wr(&mut b, &mut a, 0, 0x380, 77);
        mmio_wr(&mut b, &mut a, 0, 0x300, 0x0000_4050);
        let mut fresh = LocalApic::new(1, TSC_HZ, BUS_HZ);
        roundtrip(&a, &mut fresh);
        assert_eq!(fresh, a);
        hammer(&mut a, &[], true, 23);
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..20_000u64 {
            x = x.rotate_left(7) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let idx = (x % 0x48) as u32;
            let _ = a.write_reg(VirtTime(i * 10), idx, x >> (x % 64));
            let _ = a.read_reg(VirtTime(i * 10), idx);
            a.set_tsc_deadline(x);
            a.set_tsc_offset(x.rotate_left(13));
            let _ = a.next_deadline();
            a.run_timer(VirtTime(i * 10));
            a.acknowledge();
        }
    }
}
