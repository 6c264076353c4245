//! National Semiconductor 16550A UART.
//!
//! # Offsets
//!
//! Offsets 0-7 are the eight UART registers (COM1 0x3F8-0x3FF, COM2 0x2F8-0x2FF):
//!
//! | Offset | Read | Write |
//! |---|---|---|
//! | 0 | RBR (DLAB=0) / DLL (DLAB=1) | THR (DLAB=0) / DLL (DLAB=1) |
//! | 1 | IER (DLAB=0) / DLM (DLAB=1) | IER / DLM |
//! | 2 | IIR | FCR |
//! | 3 | LCR | LCR |
//! | 4 | MCR | MCR |
//! | 5 | LSR | (ignored) |
//! | 6 | MSR | (ignored) |
//! | 7 | SCR | SCR |
//!
//! # Model
//!
//! * Transmission is instantaneous: a byte written to THR goes to the sink at once (or into the receive
//!   path in loopback mode) and THRE/TEMT are set again before the write returns; a THR-empty interrupt
//!   follows immediately if enabled.
//! * Host bytes ([`vmcore::Device::host_input`]) wait in a host-side backlog and enter the receiver as the
//!   FIFO (or, with FIFOs off, the holding register) has room, so pasted input is never lost to overrun.
//!   Overrun (LSR.OE) only happens for loopback traffic.
//! * The character timeout interrupt fires after four character times (computed from the divisor and LCR
//!   at 1.8432 MHz) without receiver activity while the FIFO holds data below its trigger level.
//! * Interrupt priority: line status > received data / timeout > THR empty > modem status.
//! * As on PC boards, the interrupt output reaches the IRQ line only while MCR.OUT2 is set and loopback is
//!   off.
//! * With no modem attached the modem status inputs read CTS, DSR and DCD asserted, RI deasserted.

use std::collections::VecDeque;
use vmcore::Snapshot;

use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::{ByteSink, note_deadline};

/// UART input clock.
const XTAL_HZ: u64 = 1_843_200;
/// Depth of the receive FIFO.
const FIFO_DEPTH: usize = 16;
/// Most host bytes kept waiting for the receiver.
const BACKLOG_MAX: usize = 1 << 16;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IER_RLS: u8 = 0x04;
const IER_MS: u8 = 0x08;

const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const LSR_ERRORS: u8 = 0x1e;

const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;

const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;
/// Modem inputs with no modem attached.
const MSR_IDLE_INPUTS: u8 = MSR_CTS | MSR_DSR | MSR_DCD;

/// A 16550A UART.
pub struct Uart16550 {
    name: String,
    irq: u32,
    sink: ByteSink,
    dll: u8,
    dlm: u8,
    ier: u8,
    lcr: u8,
    mcr: u8,
    /// LSR error bits (OE, PE, FE, BI); DR/THRE/TEMT are derived.
    lsr_errors: u8,
    /// MSR: inputs in bits 7:4, deltas in bits 3:0.
    msr: u8,
    scr: u8,
    fifo_enabled: bool,
    /// FCR bits 7:6.
    trigger: u8,
    rx: VecDeque<u8>,
    backlog: VecDeque<u8>,
    /// THR-empty interrupt pending (cleared by IIR read naming it, or by a THR write).
    thre_pending: bool,
    timeout_pending: bool,
    /// Last receiver activity (character received or RBR read), for the character timeout.
    rx_activity: VirtTime,
}

impl Uart16550 {
    /// A UART named `name` (e.g. "uart-com1") that drives ISA line `irq` (COM1 = 4, COM2 = 3) and sends
    /// transmitted bytes to `sink`.
    pub fn new(name: &str, irq: u32, sink: ByteSink) -> Self {
        let mut u = Uart16550 {
            name: name.to_string(),
            irq,
            sink,
            dll: 0,
            dlm: 0,
            ier: 0,
            lcr: 0,
            mcr: 0,
            lsr_errors: 0,
            msr: MSR_IDLE_INPUTS,
            scr: 0,
            fifo_enabled: false,
            trigger: 0,
            rx: VecDeque::new(),
            backlog: VecDeque::new(),
            thre_pending: false,
            timeout_pending: false,
            rx_activity: VirtTime::ZERO,
        };
        u.reset_regs();
        u
    }

    fn reset_regs(&mut self) {
        self.dll = 0x0c; // 9600 baud, a common BIOS default
        self.dlm = 0;
        self.ier = 0;
        self.lcr = 0;
        self.mcr = 0;
        self.lsr_errors = 0;
        self.msr = MSR_IDLE_INPUTS;
        self.scr = 0;
        self.fifo_enabled = false;
        self.trigger = 0;
        self.rx.clear();
        self.thre_pending = false;
        self.timeout_pending = false;
        self.rx_activity = VirtTime::ZERO;
    }

    /// Number of host bytes waiting to enter the receiver.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    fn dlab(&self) -> bool {
        self.lcr & 0x80 != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled { FIFO_DEPTH } else { 1 }
    }

    fn trigger_level(&self) -> usize {
        match self.trigger {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    /// Nanoseconds of four character times at the current line settings.
    fn timeout_ns(&self) -> u64 {
        let divisor = u64::from(u16::from_le_bytes([self.dll, self.dlm])).max(1);
        let data_bits = 5 + u64::from(self.lcr & 3);
        let parity = u64::from(self.lcr >> 3 & 1);
        let stop = if self.lcr & 4 != 0 { 2 } else { 1 };
        let bits = 1 + data_bits + parity + stop;
        // At most 4 * 12 * 65535 * 16 * 1e9 < 2^56: the product fits in 64 bits (no 128-bit division).
        4 * bits * divisor * 16 * 1_000_000_000 / XTAL_HZ
    }

    /// Moves host bytes into the receiver while it has room.
    fn pump_backlog(&mut self, now: VirtTime) {
        if self.loopback() {
            return;
        }
        while self.rx.len() < self.rx_capacity() {
            let Some(b) = self.backlog.pop_front() else { break };
            self.rx.push_back(b);
            self.rx_activity = now;
        }
    }

    /// A character arrives at the receiver (loopback path): overruns if there is no room.
    fn receive(&mut self, now: VirtTime, b: u8) {
        if self.rx.len() >= self.rx_capacity() {
            self.lsr_errors |= LSR_OE;
            if !self.fifo_enabled {
                // The holding register is overwritten.
                self.rx.pop_front();
                self.rx.push_back(b);
            }
        } else {
            self.rx.push_back(b);
        }
        self.rx_activity = now;
    }

    fn lsr(&self) -> u8 {
        let mut v = self.lsr_errors | LSR_THRE | LSR_TEMT;
        if !self.rx.is_empty() {
            v |= LSR_DR;
        }
        v
    }

    fn rx_data_ready_int(&self) -> bool {
        if self.fifo_enabled { self.rx.len() >= self.trigger_level() } else { !self.rx.is_empty() }
    }

    /// The interrupt identification code (IIR bits 3:0) of the highest-priority pending interrupt.
    fn pending_id(&self) -> u8 {
        if self.ier & IER_RLS != 0 && self.lsr_errors & LSR_ERRORS != 0 {
            0x06
        } else if self.ier & IER_RDA != 0 && self.rx_data_ready_int() {
            0x04
        } else if self.ier & IER_RDA != 0 && self.timeout_pending {
            0x0c
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            0x02
        } else if self.ier & IER_MS != 0 && self.msr & 0x0f != 0 {
            0x00
        } else {
            0x01
        }
    }

    fn iir(&self) -> u8 {
        self.pending_id() | if self.fifo_enabled { 0xc0 } else { 0 }
    }

    fn update_irq(&self, ctx: &mut DeviceCtx<'_>) {
        let active = self.pending_id() & 1 == 0 && self.mcr & MCR_OUT2 != 0 && !self.loopback();
        ctx.irq.set(self.irq, active);
    }

    /// Sets the MSR inputs from MCR in loopback mode, recording deltas.
    fn update_msr_inputs(&mut self) {
        let new = if self.loopback() {
            let m = self.mcr;
            (if m & MCR_RTS != 0 { MSR_CTS } else { 0 })
                | (if m & MCR_DTR != 0 { MSR_DSR } else { 0 })
                | (if m & MCR_OUT1 != 0 { MSR_RI } else { 0 })
                | (if m & MCR_OUT2 != 0 { MSR_DCD } else { 0 })
        } else {
            MSR_IDLE_INPUTS
        };
        let old = self.msr & 0xf0;
        let changed = old ^ new;
        let mut delta = self.msr & 0x0f;
        if changed & MSR_CTS != 0 {
            delta |= 0x01;
        }
        if changed & MSR_DSR != 0 {
            delta |= 0x02;
        }
        if old & MSR_RI != 0 && new & MSR_RI == 0 {
            delta |= 0x04; // trailing edge of RI
        }
        if changed & MSR_DCD != 0 {
            delta |= 0x08;
        }
        self.msr = new | delta;
    }

    fn timeout_deadline(&self) -> Option<VirtTime> {
        if self.fifo_enabled && !self.timeout_pending && !self.rx.is_empty() {
            Some(self.rx_activity.add_nanos(self.timeout_ns()))
        } else {
            None
        }
    }

    fn read_reg(&mut self, now: VirtTime, offset: u16) -> u8 {
        match offset {
            0 if self.dlab() => self.dll,
            0 => {
                let b = self.rx.pop_front().unwrap_or(0);
                self.timeout_pending = false;
                self.rx_activity = now;
                self.pump_backlog(now);
                b
            }
            1 if self.dlab() => self.dlm,
            1 => self.ier,
            2 => {
                let v = self.iir();
                if v & 0x0f == 0x02 {
                    self.thre_pending = false;
                }
                v
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = self.lsr();
                self.lsr_errors = 0;
                v
            }
            6 => {
                let v = self.msr;
                self.msr &= 0xf0;
                v
            }
            7 => self.scr,
            _ => 0xff,
        }
    }

    fn write_reg(&mut self, now: VirtTime, offset: u16, v: u8) {
        match offset {
            0 if self.dlab() => self.dll = v,
            0 => {
                if self.loopback() {
                    self.receive(now, v);
                } else {
                    (self.sink)(v);
                }
                // Transmission completes at once; the holding register is empty again.
                self.thre_pending = true;
            }
            1 if self.dlab() => self.dlm = v,
            1 => {
                let old = self.ier;
                self.ier = v & 0x0f;
                // Enabling the THRE interrupt while THR is empty raises it (16550A behaviour).
                if old & IER_THRE == 0 && self.ier & IER_THRE != 0 {
                    self.thre_pending = true;
                }
            }
            2 => {
                let enable = v & 1 != 0;
                if enable != self.fifo_enabled {
                    self.rx.clear();
                    self.timeout_pending = false;
                }
                self.fifo_enabled = enable;
                if enable {
                    if v & 0x02 != 0 {
                        self.rx.clear();
                        self.timeout_pending = false;
                    }
                    self.trigger = v >> 6;
                }
                self.pump_backlog(now);
            }
            3 => self.lcr = v,
            4 => {
                let was_loop = self.loopback();
                self.mcr = v & 0x1f;
                self.update_msr_inputs();
                if was_loop && !self.loopback() {
                    self.pump_backlog(now);
                }
            }
            7 => self.scr = v,
            _ => {}
        }
    }
}

impl Device for Uart16550 {
    fn name(&self) -> &str {
        &self.name
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = self.read_reg(ctx.now, offset);
        }
        self.update_irq(ctx);
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        let before = self.next_deadline();
        if let Some(&v) = data.first() {
            self.write_reg(ctx.now, offset, v);
        }
        self.update_irq(ctx);
        note_deadline(ctx, before, self.next_deadline());
    }

    fn reset(&mut self) {
        self.reset_regs();
    }

    fn next_deadline(&self) -> Option<VirtTime> {
        self.timeout_deadline()
    }

    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        if let Some(t) = self.timeout_deadline()
            && ctx.now >= t
        {
            self.timeout_pending = true;
        }
        self.update_irq(ctx);
    }

    fn host_input(&mut self, ctx: &mut DeviceCtx<'_>, data: &[u8]) {
        let before = self.next_deadline();
        for &b in data {
            if self.backlog.len() < BACKLOG_MAX {
                self.backlog.push_back(b);
            }
        }
        self.pump_backlog(ctx.now);
        self.update_irq(ctx);
        note_deadline(ctx, before, self.next_deadline());
    }
}

impl Snapshot for Uart16550 {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(&self.name);
        for v in [self.dll, self.dlm, self.ier, self.lcr, self.mcr, self.lsr_errors, self.msr, self.scr] {
            w.u8(v);
        }
        w.bool(self.fifo_enabled);
        w.u8(self.trigger);
        w.bytes(&self.rx.iter().copied().collect::<Vec<_>>());
        w.bytes(&self.backlog.iter().copied().collect::<Vec<_>>());
        w.bool(self.thre_pending);
        w.bool(self.timeout_pending);
        w.u64(self.rx_activity.0);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag(&self.name)?;
        let mut regs = [0u8; 8];
        for v in &mut regs {
            *v = r.u8()?;
        }
        let fifo_enabled = r.bool()?;
        let trigger = r.u8()?;
        let rx = r.bytes()?;
        let backlog = r.bytes()?;
        if trigger > 3 || rx.len() > FIFO_DEPTH || backlog.len() > BACKLOG_MAX {
            return Err(SnapshotError::Invalid("uart state".into()));
        }
        let thre_pending = r.bool()?;
        let timeout_pending = r.bool()?;
        let rx_activity = VirtTime(r.u64()?);
        [self.dll, self.dlm, self.ier, self.lcr, self.mcr, self.lsr_errors, self.msr, self.scr] = regs;
        self.fifo_enabled = fifo_enabled;
        self.trigger = trigger;
        self.rx = rx.iter().copied().collect();
        self.backlog = backlog.iter().copied().collect();
        self.thre_pending = thre_pending;
        self.timeout_pending = timeout_pending;
        self.rx_activity = rx_activity;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    fn uart() -> (Uart16550, Arc<Mutex<Vec<u8>>>) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        (Uart16550::new("uart-com1", 4, Box::new(move |b| o.lock().unwrap().push(b))), out)
    }

    #[test]
    fn reset_values() {
        let (mut u, _) = uart();
        let mut b = Bus::new();
        assert_eq!(b.rd(&mut u, 0, 1), 0, "IER");
        assert_eq!(b.rd(&mut u, 0, 2), 0x01, "IIR: no interrupt");
        assert_eq!(b.rd(&mut u, 0, 3), 0, "LCR");
        assert_eq!(b.rd(&mut u, 0, 4), 0, "MCR");
        assert_eq!(b.rd(&mut u, 0, 5), 0x60, "LSR: THRE|TEMT");
        assert_eq!(b.rd(&mut u, 0, 6) & 0xf0, 0xb0, "MSR: DCD|DSR|CTS");
        assert_eq!(b.rd(&mut u, 0, 9), 0xff, "out of window");
    }

    #[test]
    fn divisor_latch_and_scratch() {
        let (mut u, out) = uart();
        let mut b = Bus::new();
        b.wr(&mut u, 0, 3, 0x83);
        b.wr(&mut u, 0, 0, 0x01);
        b.wr(&mut u, 0, 1, 0x02);
        assert_eq!(b.rd(&mut u, 0, 0), 0x01);
        assert_eq!(b.rd(&mut u, 0, 1), 0x02);
        b.wr(&mut u, 0, 3, 0x03);
        assert_eq!(b.rd(&mut u, 0, 1), 0, "IER untouched by DLM write");
        assert!(out.lock().unwrap().is_empty(), "DLL write is not a transmit");
        b.wr(&mut u, 0, 7, 0x5a);
        assert_eq!(b.rd(&mut u, 0, 7), 0x5a);
    }

    #[test]
    fn transmit_goes_to_sink_and_thre_interrupt() {
        let (mut u, out) = uart();
        let mut b = Bus::new();
        b.wr(&mut u, 0, 4, MCR_OUT2);
        b.wr(&mut u, 0, 0, b'h');
        b.wr(&mut u, 0, 0, b'i');
        assert_eq!(&*out.lock().unwrap(), b"hi");
        assert!(!b.high(4), "THRE interrupt not enabled");
        b.wr(&mut u, 0, 1, IER_THRE);
        assert!(b.high(4), "enabling ETBEI with THR empty raises THRE");
        assert_eq!(b.rd(&mut u, 0, 2), 0x02);
        assert!(!b.high(4), "IIR read clears THRE interrupt");
        assert_eq!(b.rd(&mut u, 0, 2), 0x01);
        b.wr(&mut u, 0, 0, b'!');
        assert!(b.high(4));
        b.wr(&mut u, 0, 4, 0);
        assert!(!b.high(4), "OUT2 gates the IRQ line");
    }

    #[test]
    fn receive_without_fifo() {
        let (mut u, _) = uart();
        let mut b = Bus::new();
        b.wr(&mut u, 0, 4, MCR_OUT2);
        b.wr(&mut u, 0, 1, IER_RDA);
        u.host_input(&mut b.ctx(0), b"ab");
        assert!(b.high(4));
        assert_eq!(b.rd(&mut u, 0, 2), 0x04);
        assert_eq!(b.rd(&mut u, 0, 5) & LSR_DR, 1);
        assert_eq!(b.rd(&mut u, 0, 0), b'a');
        assert!(b.high(4), "next byte moved from backlog");
        assert_eq!(b.rd(&mut u, 0, 0), b'b');
        assert!(!b.high(4));
        assert_eq!(b.rd(&mut u, 0, 5), 0x60);
        assert_eq!(b.rd(&mut u, 0, 2), 0x01);
    }

    #[test]
    fn fifo_trigger_levels_and_timeout() {
        let (mut u, _) = uart();
        let mut b = Bus::new();
        b.wr(&mut u, 0, 4, MCR_OUT2);
        b.wr(&mut u, 0, 1, IER_RDA);
        b.wr(&mut u, 0, 3, 0x03); // 8N1
        b.wr(&mut u, 0, 2, 0x81); // FIFO on, trigger 8
        assert_eq!(b.rd(&mut u, 0, 2), 0xc1);
        u.host_input(&mut b.ctx(1000), b"1234567");
        assert!(!b.high(4), "7 bytes below trigger 8");
        let t = u.next_deadline().expect("timeout armed");
        // 9600 8N1: 10 bits * 12 * 16 / 1.8432 MHz = 1.0417 ms per character, times four.
        assert_eq!(t.0, 1000 + 4_166_666);
        b.advance(&mut u, t.0 - 1);
        assert!(!b.high(4));
        b.advance(&mut u, t.0);
        assert!(b.high(4));
        assert_eq!(b.rd(&mut u, t.0, 2), 0xcc, "character timeout");
        assert_eq!(b.rd(&mut u, t.0, 0), b'1');
        assert!(!b.high(4), "RBR read clears the timeout");
        u.host_input(&mut b.ctx(t.0), b"89");
        assert_eq!(b.rd(&mut u, t.0, 2), 0xc4, "8 bytes reach the trigger");
        for want in b"2345678" {
            assert_eq!(b.rd(&mut u, t.0, 0), *want);
        }
        assert_eq!(b.rd(&mut u, t.0, 2), 0xc1);
        // Clearing the receive FIFO through FCR.
        b.wr(&mut u, t.0, 2, 0x03);
        assert_eq!(b.rd(&mut u, t.0, 5) & LSR_DR, 0);
        assert!(u.next_deadline().is_none());
    }

    #[test]
    fn fifo_disable_and_iir_bits() {
        let (mut u, _) = uart();
        let mut b = Bus::new();
        b.wr(&mut u, 0, 2, 0xc7);
        assert_eq!(b.rd(&mut u, 0, 2) & 0xc0, 0xc0);
        u.host_input(&mut b.ctx(0), b"abc");
        b.wr(&mut u, 0, 2, 0x00); // disabling the FIFOs clears them
        assert_eq!(b.rd(&mut u, 0, 2), 0x01);
        assert_eq!(b.rd(&mut u, 0, 5) & LSR_DR, 0, "received bytes were flushed");
        // With FIFOs off the holding register takes one byte; the rest waits in the backlog.
        u.host_input(&mut b.ctx(0), b"xy");
        assert_eq!(b.rd(&mut u, 0, 5) & LSR_DR, 1);
        assert_eq!(u.backlog_len(), 1);
        assert!(u.next_deadline().is_none(), "no character timeout without FIFOs");
    }

    #[test]
    fn backlog_fills_fifo_as_room_frees() {
        let (mut u, _) = uart();
        let mut b = Bus::new();
        b.wr(&mut u, 0, 2, 0x01);
        let data: Vec<u8> = (0..40).collect();
        u.host_input(&mut b.ctx(0), &data);
        assert_eq!(u.backlog_len(), 24);
        for want in 0..40u8 {
            assert_eq!(b.rd(&mut u, 0, 5) & LSR_DR, 1);
            assert_eq!(b.rd(&mut u, 0, 0), want);
        }
        assert_eq!(b.rd(&mut u, 0, 5), 0x60, "no overrun from host input");
    }

    #[test]
    fn loopback_overrun_and_line_status_priority() {
        let (mut u, out) = uart();
        let mut b = Bus::new();
        b.wr(&mut u, 0, 4, MCR_LOOP | MCR_OUT2);
        b.wr(&mut u, 0, 1, IER_RDA | IER_RLS | IER_THRE);
        b.wr(&mut u, 0, 0, 0x11);
        assert!(out.lock().unwrap().is_empty());
        b.wr(&mut u, 0, 0, 0x22);
        assert!(!b.high(4), "IRQ disconnected in loopback");
        assert_eq!(b.rd(&mut u, 0, 2), 0x06, "line status first");
        assert_eq!(b.rd(&mut u, 0, 5), LSR_OE | LSR_DR | LSR_THRE | LSR_TEMT);
        assert_eq!(b.rd(&mut u, 0, 2), 0x04, "then data");
        assert_eq!(b.rd(&mut u, 0, 0), 0x22, "holding register overwritten");
        assert_eq!(b.rd(&mut u, 0, 2), 0x02, "then THRE");
        assert_eq!(b.rd(&mut u, 0, 2), 0x01);
    }

    #[test]
    fn loopback_modem_status() {
        let (mut u, _) = uart();
        let mut b = Bus::new();
        b.rd(&mut u, 0, 6);
        b.wr(&mut u, 0, 1, IER_MS);
        b.wr(&mut u, 0, 4, MCR_LOOP);
        // All inputs drop: CTS, DSR, DCD deltas.
        assert_eq!(b.rd(&mut u, 0, 2), 0x00);
        assert_eq!(b.rd(&mut u, 0, 6), 0x0b);
        b.wr(&mut u, 0, 4, MCR_LOOP | MCR_DTR | MCR_RTS | MCR_OUT1 | MCR_OUT2);
        assert_eq!(b.rd(&mut u, 0, 6), 0xfb);
        b.wr(&mut u, 0, 4, MCR_LOOP | MCR_DTR | MCR_RTS | MCR_OUT2);
        assert_eq!(b.rd(&mut u, 0, 6), 0xb4, "RI trailing edge");
        assert_eq!(b.rd(&mut u, 0, 2), 0x01);
    }

    #[test]
    fn snapshot_and_hostile_input() {
        let (mut u, _) = uart();
        let mut b = Bus::new();
        b.wr(&mut u, 0, 2, 0xc1);
        u.host_input(&mut b.ctx(5), b"xyz");
        let (mut fresh, _) = uart();
        roundtrip(&u, &mut fresh);
        assert_eq!(b.rd(&mut fresh, 5, 0), b'x');
        hammer(&mut u, &[0, 1, 2, 3, 4, 5, 6, 7], false, 7);
    }
}
