//! Intel 8042 keyboard controller with a PS/2 keyboard and a PS/2 mouse attached.
//!
//! # Offsets
//!
//! Offsets are `port - 0x60`:
//!
//! | Port | Offset | Read | Write |
//! |---|---|---|---|
//! | 0x60 | 0 | output buffer | data: to the keyboard, or the parameter of a controller command |
//! | 0x64 | 4 | status register | controller command |
//!
//! # Controller
//!
//! Status: bit 0 output buffer full, bit 1 input buffer full (always 0: writes are processed at once),
//! bit 2 system flag, bit 3 last write was a command, bit 4 keyboard not inhibited, bit 5 output buffer
//! holds mouse data. Commands: 0x20-0x3F read RAM (0x20 = command byte), 0x60-0x7F write RAM, 0xA4
//! password test (none installed), 0xA7/0xA8 disable/enable the mouse port, 0xA9 mouse interface test,
//! 0xAA self test (0x55), 0xAB keyboard interface test, 0xAD/0xAE disable/enable the keyboard port, 0xC0
//! read input port, 0xD0/0xD1 read/write output port (bit 0 low = system reset, bit 1 = A20), 0xD2/0xD3
//! write the keyboard/mouse output buffer, 0xD4 write to the mouse, 0xDD/0xDF A20 off/on, 0xE0 read test
//! inputs, 0xF0-0xFF pulse output port bits (0xFE = reset). A20 changes go to `ctx.requests.a20`,
//! resets to `ctx.requests.reset`.
//!
//! Command byte: bit 0 keyboard interrupt (IRQ 1), bit 1 mouse interrupt (IRQ 12), bit 2 system flag, bit 4
//! keyboard disabled, bit 5 mouse disabled, bit 6 translate scan code set 2 to set 1. Power-on value 0x43:
//! translation on and both interrupts enabled, as firmware leaves it. IRQ 1 / IRQ 12 are levels that follow
//! "output buffer full with keyboard / mouse data", so each byte refilled after a read is a new edge.
//! Controller replies are delivered as keyboard data.
//!
//! # Devices
//!
//! Host keyboard input ([`vmcore::Device::host_input`]) is **scan code set 2** (make codes, `0xF0` break
//! prefix, `0xE0`/`0xE1` extended prefixes), what a PS/2 keyboard natively sends. If the guest selects set
//! 1 on the keyboard, the keyboard converts; independently the controller translates to set 1 when command
//! byte bit 6 is set. Set 3 is acknowledged but not implemented (the keyboard stays in its current set).
//! The keyboard implements reset (0xFF → 0xFA 0xAA), resend, set defaults, enable/disable scanning, set
//! LEDs, typematic rate, echo, identify (0xAB 0x83) and scan code set get/set. The mouse implements reset
//! (0xFA 0xAA 0x00), identify (with the IntelliMouse 200-100-80 and Explorer 200-200-80 sample rate knocks
//! giving IDs 3 and 4), set sample rate, resolution and scaling, status request, enable/disable reporting,
//! stream/remote/wrap modes and read data; host motion enters through [`I8042::mouse_event`], or as
//! host input built by [`I8042::mouse_input`] (how the machine's input port delivers it).

use std::collections::VecDeque;
use vmcore::Snapshot;

use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter};

const ST_OBF: u8 = 0x01;
const ST_SYS: u8 = 0x04;
const ST_CMD: u8 = 0x08;
const ST_UNLOCKED: u8 = 0x10;
const ST_AUX: u8 = 0x20;

const CB_KBD_INT: u8 = 0x01;
const CB_AUX_INT: u8 = 0x02;
const CB_SYS: u8 = 0x04;
const CB_KBD_OFF: u8 = 0x10;
const CB_AUX_OFF: u8 = 0x20;
const CB_XLATE: u8 = 0x40;

const ACK: u8 = 0xfa;
/// In host input, introduces a mouse event ([`I8042::mouse_input`]).
const MOUSE_MARK: u8 = 0xff;
const RESEND: u8 = 0xfe;
const BAT_OK: u8 = 0xaa;
/// Most bytes a device queues before dropping further input.
const QUEUE_MAX: usize = 256;

/// Set 2 to set 1 translation for the keys of a 102-key keyboard (and the identify/status bytes that
/// pass through the translator). Unlisted codes pass unchanged.
const SET2_TO_SET1: &[(u8, u8)] = &[
    (0x01, 0x43),
    (0x02, 0x41),
    (0x03, 0x3f),
    (0x04, 0x3d),
    (0x05, 0x3b),
    (0x06, 0x3c),
    (0x07, 0x58),
    (0x09, 0x44),
    (0x0a, 0x42),
    (0x0b, 0x40),
    (0x0c, 0x3e),
    (0x0d, 0x0f),
    (0x0e, 0x29),
    (0x11, 0x38),
    (0x12, 0x2a),
    (0x14, 0x1d),
    (0x15, 0x10),
    (0x16, 0x02),
    (0x1a, 0x2c),
    (0x1b, 0x1f),
    (0x1c, 0x1e),
    (0x1d, 0x11),
    (0x1e, 0x03),
    (0x21, 0x2e),
    (0x22, 0x2d),
    (0x23, 0x20),
    (0x24, 0x12),
    (0x25, 0x05),
    (0x26, 0x04),
    (0x29, 0x39),
    (0x2a, 0x2f),
    (0x2b, 0x21),
    (0x2c, 0x14),
    (0x2d, 0x13),
    (0x2e, 0x06),
    (0x31, 0x31),
    (0x32, 0x30),
    (0x33, 0x23),
    (0x34, 0x22),
    (0x35, 0x15),
    (0x36, 0x07),
    (0x3a, 0x32),
    (0x3b, 0x24),
    (0x3c, 0x16),
    (0x3d, 0x08),
    (0x3e, 0x09),
    (0x41, 0x33),
    (0x42, 0x25),
    (0x43, 0x17),
    (0x44, 0x18),
    (0x45, 0x0b),
    (0x46, 0x0a),
    (0x49, 0x34),
    (0x4a, 0x35),
    (0x4b, 0x26),
    (0x4c, 0x27),
    (0x4d, 0x19),
    (0x4e, 0x0c),
    (0x52, 0x28),
    (0x54, 0x1a),
    (0x55, 0x0d),
    (0x58, 0x3a),
    (0x59, 0x36),
    (0x5a, 0x1c),
    (0x5b, 0x1b),
    (0x5d, 0x2b),
    (0x61, 0x56),
    (0x66, 0x0e),
    (0x69, 0x4f),
    (0x6b, 0x4b),
    (0x6c, 0x47),
    (0x70, 0x52),
    (0x71, 0x53),
    (0x72, 0x50),
    (0x73, 0x4c),
    (0x74, 0x4d),
    (0x75, 0x48),
    (0x76, 0x01),
    (0x77, 0x45),
    (0x78, 0x57),
    (0x79, 0x4e),
    (0x7a, 0x51),
    (0x7b, 0x4a),
    (0x7c, 0x37),
    (0x7d, 0x49),
    (0x7e, 0x46),
    (0x83, 0x41),
    (0x84, 0x54),
];

/// Translates one set 2 code (without prefix) to set 1.
fn xlate(code: u8) -> u8 {
    SET2_TO_SET1.iter().find(|(s2, _)| *s2 == code).map_or(code, |(_, s1)| *s1)
}

/// A set 2 → set 1 translator (the controller's, or the keyboard's when set 1 is selected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Translator {
    /// A 0xF0 break prefix is pending.
    release: bool,
}

impl Translator {
    /// Feeds one byte; returns the translated byte, or `None` for a swallowed break prefix.
    fn feed(&mut self, b: u8) -> Option<u8> {
        if b == 0xf0 {
            self.release = true;
            return None;
        }
        let v = xlate(b);
        if std::mem::take(&mut self.release) && !matches!(b, 0xe0 | 0xe1) { Some(v | 0x80) } else { Some(v) }
    }
}

/// What a PS/2 device expects the next byte written to it to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Command,
    /// Parameter of this command.
    Param(u8),
}

impl Expect {
    fn encode(self) -> u16 {
        match self {
            Expect::Command => 0,
            Expect::Param(c) => 0x100 | u16::from(c),
        }
    }
    fn decode(v: u16) -> Expect {
        if v & 0x100 != 0 { Expect::Param(v as u8) } else { Expect::Command }
    }
}

/// A PS/2 keyboard.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Keyboard {
    queue: VecDeque<u8>,
    expect: Expect,
    scanning: bool,
    set: u8,
    leds: u8,
    typematic: u8,
    last_sent: u8,
    /// Converter used when scan code set 1 is selected on the keyboard.
    to_set1: Translator,
}

impl Keyboard {
    fn new() -> Self {
        Keyboard {
            queue: VecDeque::new(),
            expect: Expect::Command,
            scanning: true,
            set: 2,
            leds: 0,
            typematic: 0x2b,
            last_sent: 0,
            to_set1: Translator::default(),
        }
    }

    fn push(&mut self, b: u8) {
        if self.queue.len() < QUEUE_MAX {
            self.queue.push_back(b);
        }
        self.last_sent = b;
    }

    fn defaults(&mut self) {
        self.typematic = 0x2b;
        self.leds = 0;
        self.set = 2;
    }

    fn write(&mut self, v: u8) {
        if let Expect::Param(cmd) = self.expect {
            self.expect = Expect::Command;
            match cmd {
                0xed => {
                    self.leds = v & 7;
                    self.push(ACK);
                }
                0xf3 => {
                    self.typematic = v & 0x7f;
                    self.push(ACK);
                }
                _ => {
                    // 0xF0: scan code set.
                    self.push(ACK);
                    match v {
                        0 => self.push(self.set),
                        1 | 2 => self.set = v,
                        _ => {}
                    }
                }
            }
            return;
        }
        match v {
            0xed | 0xf0 | 0xf3 => {
                self.expect = Expect::Param(v);
                self.push(ACK);
            }
            0xee => self.push(0xee),
            0xf2 => {
                self.push(ACK);
                self.push(0xab);
                self.push(0x83);
            }
            0xf4 => {
                self.scanning = true;
                self.queue.clear();
                self.push(ACK);
            }
            0xf5 => {
                self.scanning = false;
                self.defaults();
                self.queue.clear();
                self.push(ACK);
            }
            0xf6 => {
                self.defaults();
                self.queue.clear();
                self.push(ACK);
            }
            0xf7..=0xfd => self.push(ACK),
            0xfe => {
                let b = self.last_sent;
                self.push(b);
            }
            0xff => {
                self.defaults();
                self.queue.clear();
                self.scanning = true;
                self.push(ACK);
                self.push(BAT_OK);
            }
            _ => self.push(RESEND),
        }
    }

    /// Host scan codes (set 2).
    fn input(&mut self, codes: &[u8]) {
        if !self.scanning {
            return;
        }
        for &c in codes {
            if self.set == 1 {
                if let Some(b) = self.to_set1.feed(c) {
                    self.push(b);
                }
            } else {
                self.push(c);
            }
        }
    }
}

/// A PS/2 mouse (stream mode, optional IntelliMouse extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mouse {
    queue: VecDeque<u8>,
    expect: Expect,
    reporting: bool,
    remote: bool,
    wrap: bool,
    scaling21: bool,
    resolution: u8,
    sample_rate: u8,
    id: u8,
    /// Last three sample rates set, for the IntelliMouse knock.
    rate_history: [u8; 3],
    buttons: u8,
    dx: i32,
    dy: i32,
    dz: i32,
}

impl Mouse {
    fn new() -> Self {
        Mouse {
            queue: VecDeque::new(),
            expect: Expect::Command,
            reporting: false,
            remote: false,
            wrap: false,
            scaling21: false,
            resolution: 2,
            sample_rate: 100,
            id: 0,
            rate_history: [0; 3],
            buttons: 0,
            dx: 0,
            dy: 0,
            dz: 0,
        }
    }

    fn push(&mut self, b: u8) {
        if self.queue.len() < QUEUE_MAX {
            self.queue.push_back(b);
        }
    }

    fn defaults(&mut self) {
        self.reporting = false;
        self.remote = false;
        self.scaling21 = false;
        self.resolution = 2;
        self.sample_rate = 100;
    }

    fn packet(&mut self) {
        let dx = self.dx.clamp(-256, 255);
        let dy = self.dy.clamp(-256, 255);
        let dz = self.dz.clamp(-8, 7);
        self.dx = 0;
        self.dy = 0;
        self.dz = 0;
        let b0 = 0x08 | (self.buttons & 7) | (u8::from(dx < 0) << 4) | (u8::from(dy < 0) << 5);
        self.push(b0);
        self.push(dx as u8);
        self.push(dy as u8);
        match self.id {
            3 => self.push(dz as u8),
            4 => self.push((dz as u8 & 0x0f) | ((self.buttons & 0x18) << 1)),
            _ => {}
        }
    }

    fn write(&mut self, v: u8) {
        if self.wrap && v != 0xec && v != 0xff {
            self.push(v);
            return;
        }
        if let Expect::Param(cmd) = self.expect {
            self.expect = Expect::Command;
            self.push(ACK);
            if cmd == 0xf3 {
                self.sample_rate = v;
                self.rate_history = [self.rate_history[1], self.rate_history[2], v];
                match self.rate_history {
                    [200, 100, 80] if self.id == 0 => self.id = 3,
                    [200, 200, 80] if self.id == 3 => self.id = 4,
                    _ => {}
                }
            } else {
                self.resolution = v & 3;
            }
            return;
        }
        match v {
            0xe6 | 0xe7 => {
                self.scaling21 = v == 0xe7;
                self.push(ACK);
            }
            0xe8 | 0xf3 => {
                self.expect = Expect::Param(v);
                self.push(ACK);
            }
            0xe9 => {
                self.push(ACK);
                let status = (u8::from(self.remote) << 6)
                    | (u8::from(self.reporting) << 5)
                    | (u8::from(self.scaling21) << 4)
                    | ((self.buttons & 1) << 2)
                    | (self.buttons & 4) >> 1
                    | (self.buttons & 2) >> 1;
                self.push(status);
                self.push(self.resolution);
                self.push(self.sample_rate);
            }
            0xea => {
                self.remote = false;
                self.push(ACK);
            }
            0xeb => {
                self.push(ACK);
                self.packet();
            }
            0xec => {
                self.wrap = false;
                self.push(ACK);
            }
            0xee => {
                self.wrap = true;
                self.push(ACK);
            }
            0xf0 => {
                self.remote = true;
                self.push(ACK);
            }
            0xf2 => {
                self.push(ACK);
                self.push(self.id);
            }
            0xf4 => {
                self.reporting = true;
                self.push(ACK);
            }
            0xf5 => {
                self.reporting = false;
                self.push(ACK);
            }
            0xf6 => {
                self.defaults();
                self.push(ACK);
            }
            0xff => {
                self.defaults();
                self.wrap = false;
                self.id = 0;
                self.queue.clear();
                self.push(ACK);
                self.push(BAT_OK);
                self.push(0x00);
            }
            _ => self.push(RESEND),
        }
    }
}

/// Who filled the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Controller,
    Keyboard,
    Aux,
}

/// The 8042 keyboard controller with its keyboard and mouse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I8042 {
    /// Internal RAM; byte 0 is the command byte.
    ram: [u8; 32],
    output_port: u8,
    sys_flag: bool,
    last_was_cmd: bool,
    /// Command waiting for its data byte at port 0x60.
    pending_cmd: Option<u8>,
    /// Controller replies waiting for the output buffer: (byte, delivered as mouse data).
    replies: VecDeque<(u8, bool)>,
    out: Option<(u8, Source)>,
    /// Last byte read from the output buffer (returned again when it is empty).
    last_out: u8,
    xlate: Translator,
    kbd: Keyboard,
    mouse: Mouse,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// A controller in its power-on state.
    pub fn new() -> Self {
        let mut ram = [0u8; 32];
        ram[0] = CB_XLATE | CB_KBD_INT | CB_AUX_INT;
        I8042 {
            ram,
            output_port: 0xcf,
            sys_flag: false,
            last_was_cmd: false,
            pending_cmd: None,
            replies: VecDeque::new(),
            out: None,
            last_out: 0,
            xlate: Translator::default(),
            kbd: Keyboard::new(),
            mouse: Mouse::new(),
        }
    }

    /// Host mouse motion: `dx` right, `dy` up, `dz` wheel, `buttons` bit 0 left, 1 right, 2 middle, 3-4
    /// extra buttons. Queued as a movement packet when the mouse is reporting in stream mode.
    pub fn mouse_event(&mut self, ctx: &mut DeviceCtx<'_>, dx: i32, dy: i32, dz: i32, buttons: u8) {
        let m = &mut self.mouse;
        m.dx = m.dx.saturating_add(dx);
        m.dy = m.dy.saturating_add(dy);
        m.dz = m.dz.saturating_add(dz);
        m.buttons = buttons & 0x1f;
        if m.reporting && !m.remote && !m.wrap {
            m.packet();
        }
        self.pump(ctx);
    }

    /// Host input carrying mouse event (`dx`, `dy`, `dz`, `buttons` as for [`I8042::mouse_event`]): the
    /// marker byte 0xFF and six bytes. Host input is otherwise set 2 scan codes, where a key never
    /// gives 0xFF (the keyboard sends it only for its own buffer overrun), so the two mix in one stream.
    pub fn mouse_input(dx: i16, dy: i16, dz: i8, buttons: u8) -> [u8; 7] {
        let [x0, x1] = dx.to_le_bytes();
        let [y0, y1] = dy.to_le_bytes();
        [MOUSE_MARK, x0, x1, y0, y1, dz as u8, buttons]
    }

    fn cmd_byte(&self) -> u8 {
        self.ram[0]
    }

    fn status(&self) -> u8 {
        let mut s = ST_UNLOCKED;
        if let Some((_, src)) = self.out {
            s |= ST_OBF;
            if src == Source::Aux {
                s |= ST_AUX;
            }
        }
        if self.sys_flag {
            s |= ST_SYS;
        }
        if self.last_was_cmd {
            s |= ST_CMD;
        }
        s
    }

    /// Fills an empty output buffer and sets the IRQ lines.
    fn pump(&mut self, ctx: &mut DeviceCtx<'_>) {
        if self.out.is_none() {
            let cb = self.cmd_byte();
            if let Some((b, aux)) = self.replies.pop_front() {
                self.out = Some((b, if aux { Source::Aux } else { Source::Controller }));
            } else if cb & CB_KBD_OFF == 0 {
                while let Some(raw) = self.kbd.queue.pop_front() {
                    let b = if cb & CB_XLATE != 0 { self.xlate.feed(raw) } else { Some(raw) };
                    if let Some(b) = b {
                        self.out = Some((b, Source::Keyboard));
                        break;
                    }
                }
            }
            if self.out.is_none()
                && cb & CB_AUX_OFF == 0
                && let Some(b) = self.mouse.queue.pop_front()
            {
                self.out = Some((b, Source::Aux));
            }
        }
        let cb = self.cmd_byte();
        let (kbd, aux) = match self.out {
            Some((_, Source::Aux)) => (false, true),
            Some(_) => (true, false),
            None => (false, false),
        };
        ctx.irq.set(1, kbd && cb & CB_KBD_INT != 0);
        ctx.irq.set(12, aux && cb & CB_AUX_INT != 0);
    }

    fn reply(&mut self, b: u8) {
        if self.replies.len() < QUEUE_MAX {
            self.replies.push_back((b, false));
        }
    }

    fn output_port_value(&self) -> u8 {
        let mut v = self.output_port & !0x30;
        match self.out {
            Some((_, Source::Aux)) => v |= 0x20,
            Some(_) => v |= 0x10,
            None => {}
        }
        v
    }

    fn write_output_port(&mut self, ctx: &mut DeviceCtx<'_>, v: u8) {
        let old = self.output_port;
        self.output_port = v;
        if (old ^ v) & 0x02 != 0 {
            ctx.requests.a20 = Some(v & 0x02 != 0);
        }
        if v & 0x01 == 0 {
            ctx.requests.reset = true;
        }
    }

    fn command(&mut self, ctx: &mut DeviceCtx<'_>, c: u8) {
        match c {
            0x20..=0x3f => self.reply(self.ram[usize::from(c & 0x1f)]),
            0x60..=0x7f | 0xd1..=0xd4 => self.pending_cmd = Some(c),
            0xa4 => self.reply(0xf1),
            0xa7 => self.ram[0] |= CB_AUX_OFF,
            0xa8 => self.ram[0] &= !CB_AUX_OFF,
            0xa9 | 0xab => self.reply(0x00),
            0xaa => {
                self.sys_flag = true;
                self.reply(0x55);
            }
            0xad => self.ram[0] |= CB_KBD_OFF,
            0xae => self.ram[0] &= !CB_KBD_OFF,
            0xc0 => self.reply(0x80),
            0xd0 => self.reply(self.output_port_value()),
            0xdd => self.write_output_port(ctx, self.output_port & !0x02),
            0xdf => self.write_output_port(ctx, self.output_port | 0x02),
            0xe0 => self.reply(0x00),
            // Pulse output port bits 3:0 low for each clear bit; only bit 0 (reset) has an effect.
            0xf0..=0xff if c & 0x01 == 0 => ctx.requests.reset = true,
            _ => {}
        }
    }

    fn data(&mut self, ctx: &mut DeviceCtx<'_>, v: u8) {
        match self.pending_cmd.take() {
            Some(c @ 0x60..=0x7f) => {
                self.ram[usize::from(c & 0x1f)] = v;
                if c == 0x60 {
                    self.sys_flag = v & CB_SYS != 0;
                }
            }
            Some(0xd1) => self.write_output_port(ctx, v),
            Some(0xd2) => self.reply(v),
            Some(0xd3) => {
                if self.replies.len() < QUEUE_MAX {
                    self.replies.push_back((v, true));
                }
            }
            Some(0xd4) => self.mouse.write(v),
            _ => {
                // Sending to the keyboard re-enables its interface.
                self.ram[0] &= !CB_KBD_OFF;
                self.kbd.write(v);
            }
        }
    }
}

impl Device for I8042 {
    fn name(&self) -> &str {
        "i8042"
    }

    fn pio_access_width(&self) -> usize {
        1
    }

    fn pio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else { return };
        match offset {
            0 => {
                if let Some((b, _)) = self.out.take() {
                    self.last_out = b;
                    // Reading the output buffer clears OBF, which drops IRQ 1/12; a byte waiting behind
                    // it raises the line again in `pump`, a fresh edge for the edge-triggered PIC and
                    // I/O APIC. Without the drop a multi-byte reply (ACK, 0xAB, 0x83 for GET ID) would
                    // interrupt only once.
                    ctx.irq.set(1, false);
                    ctx.irq.set(12, false);
                }
                *first = self.last_out;
            }
            4 => *first = self.status(),
            _ => {}
        }
        self.pump(ctx);
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 => {
                self.last_was_cmd = false;
                self.data(ctx, v);
            }
            4 => {
                self.last_was_cmd = true;
                self.pending_cmd = None;
                self.command(ctx, v);
            }
            _ => {}
        }
        self.pump(ctx);
    }

    fn reset(&mut self) {
        *self = I8042::new();
    }

    fn host_input(&mut self, ctx: &mut DeviceCtx<'_>, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == MOUSE_MARK) {
                None => {
                    self.kbd.input(rest);
                    rest = &[];
                }
                Some(i) => {
                    self.kbd.input(&rest[..i]);
                    // A record cut short is dropped (only a broken host sends one).
                    let Some(r) = rest.get(i + 1..i + 7) else { break };
                    let dx = i16::from_le_bytes([r[0], r[1]]);
                    let dy = i16::from_le_bytes([r[2], r[3]]);
                    self.mouse_event(ctx, dx.into(), dy.into(), (r[4] as i8).into(), r[5]);
                    rest = &rest[i + 7..];
                }
            }
        }
        self.pump(ctx);
    }
}

impl Snapshot for I8042 {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.bytes(&self.ram);
        w.u8(self.output_port);
        w.bool(self.sys_flag);
        w.bool(self.last_was_cmd);
        w.u16(self.pending_cmd.map_or(0, |c| 0x100 | u16::from(c)));
        w.u64(self.replies.len() as u64);
        for &(b, aux) in &self.replies {
            w.u8(b);
            w.bool(aux);
        }
        let (ob, src) = match self.out {
            None => (0, 0),
            Some((b, Source::Controller)) => (b, 1),
            Some((b, Source::Keyboard)) => (b, 2),
            Some((b, Source::Aux)) => (b, 3),
        };
        w.u8(ob);
        w.u8(src);
        w.u8(self.last_out);
        w.bool(self.xlate.release);
        let k = &self.kbd;
        w.bytes(&k.queue.iter().copied().collect::<Vec<_>>());
        w.u16(k.expect.encode());
        w.bool(k.scanning);
        for v in [k.set, k.leds, k.typematic, k.last_sent] {
            w.u8(v);
        }
        w.bool(k.to_set1.release);
        let m = &self.mouse;
        w.bytes(&m.queue.iter().copied().collect::<Vec<_>>());
        w.u16(m.expect.encode());
        for v in [m.reporting, m.remote, m.wrap, m.scaling21] {
            w.bool(v);
        }
        for v in [
            m.resolution,
            m.sample_rate,
            m.id,
            m.rate_history[0],
            m.rate_history[1],
            m.rate_history[2],
            m.buttons,
        ] {
            w.u8(v);
        }
        for v in [m.dx, m.dy, m.dz] {
            w.u32(v as u32);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("i8042")?;
        let bad = |what: &str| SnapshotError::Invalid(format!("i8042 {what}"));
        let mut s = I8042::new();
        s.ram = r.bytes()?.try_into().map_err(|_| bad("ram"))?;
        s.output_port = r.u8()?;
        s.sys_flag = r.bool()?;
        s.last_was_cmd = r.bool()?;
        let pc = r.u16()?;
        s.pending_cmd = (pc & 0x100 != 0).then_some(pc as u8);
        let n = r.u64()?;
        if n > QUEUE_MAX as u64 {
            return Err(bad("replies"));
        }
        for _ in 0..n {
            let b = r.u8()?;
            let aux = r.bool()?;
            s.replies.push_back((b, aux));
        }
        let ob = r.u8()?;
        s.out = match r.u8()? {
            0 => None,
            1 => Some((ob, Source::Controller)),
            2 => Some((ob, Source::Keyboard)),
            3 => Some((ob, Source::Aux)),
            _ => return Err(bad("output source")),
        };
        s.last_out = r.u8()?;
        s.xlate.release = r.bool()?;
        let q = r.bytes()?;
        if q.len() > QUEUE_MAX {
            return Err(bad("keyboard queue"));
        }
        s.kbd.queue = q.iter().copied().collect();
        s.kbd.expect = Expect::decode(r.u16()?);
        s.kbd.scanning = r.bool()?;
        [s.kbd.set, s.kbd.leds, s.kbd.typematic, s.kbd.last_sent] = [r.u8()?, r.u8()?, r.u8()?, r.u8()?];
        s.kbd.to_set1.release = r.bool()?;
        let q = r.bytes()?;
        if q.len() > QUEUE_MAX {
            return Err(bad("mouse queue"));
        }
        let m = &mut s.mouse;
        m.queue = q.iter().copied().collect();
        m.expect = Expect::decode(r.u16()?);
        [m.reporting, m.remote, m.wrap, m.scaling21] = [r.bool()?, r.bool()?, r.bool()?, r.bool()?];
        [
            m.resolution,
            m.sample_rate,
            m.id,
            m.rate_history[0],
            m.rate_history[1],
            m.rate_history[2],
            m.buttons,
        ] = [r.u8()?, r.u8()?, r.u8()?, r.u8()?, r.u8()?, r.u8()?, r.u8()?];
        [m.dx, m.dy, m.dz] = [r.u32()? as i32, r.u32()? as i32, r.u32()? as i32];
        *self = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    fn cmd(b: &mut Bus, k: &mut I8042, c: u8) {
        b.wr(k, 0, 4, c);
    }

    fn read_all(b: &mut Bus, k: &mut I8042) -> Vec<u8> {
        let mut v = Vec::new();
        while b.rd(k, 0, 4) & ST_OBF != 0 {
            v.push(b.rd(k, 0, 0));
        }
        v
    }

    #[test]
    fn self_test_and_interface_tests() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        assert_eq!(b.rd(&mut k, 0, 4), ST_UNLOCKED);
        cmd(&mut b, &mut k, 0xaa);
        assert_eq!(b.rd(&mut k, 0, 4), ST_UNLOCKED | ST_CMD | ST_SYS | ST_OBF);
        assert!(b.high(1));
        assert_eq!(b.rd(&mut k, 0, 0), 0x55);
        assert!(!b.high(1));
        cmd(&mut b, &mut k, 0xab);
        cmd(&mut b, &mut k, 0xa9);
        assert_eq!(read_all(&mut b, &mut k), [0x00, 0x00]);
        assert_eq!(b.rd(&mut k, 0, 0), 0x00, "empty buffer rereads last byte");
        assert_eq!(b.rd(&mut k, 0, 2), 0xff);
    }

    #[test]
    fn command_byte_read_write() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        cmd(&mut b, &mut k, 0x20);
        assert_eq!(read_all(&mut b, &mut k), [0x43]);
        cmd(&mut b, &mut k, 0x60);
        b.wr(&mut k, 0, 0, 0x30 | CB_SYS);
        assert_eq!(b.rd(&mut k, 0, 4) & ST_CMD, 0);
        cmd(&mut b, &mut k, 0x20);
        assert!(!b.high(1), "keyboard interrupt disabled");
        assert_eq!(read_all(&mut b, &mut k), [0x34]);
        cmd(&mut b, &mut k, 0xae);
        cmd(&mut b, &mut k, 0xa8);
        cmd(&mut b, &mut k, 0x20);
        assert_eq!(read_all(&mut b, &mut k), [0x04]);
        cmd(&mut b, &mut k, 0xad);
        cmd(&mut b, &mut k, 0xa7);
        cmd(&mut b, &mut k, 0x20);
        assert_eq!(read_all(&mut b, &mut k), [0x34]);
    }

    #[test]
    fn output_port_a20_and_reset() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        cmd(&mut b, &mut k, 0xd0);
        assert_eq!(read_all(&mut b, &mut k), [0xcf]);
        cmd(&mut b, &mut k, 0xd1);
        b.wr(&mut k, 0, 0, 0xcd);
        assert_eq!(b.req.a20, Some(false));
        assert!(!b.req.reset);
        cmd(&mut b, &mut k, 0xdf);
        assert_eq!(b.req.a20, Some(true));
        cmd(&mut b, &mut k, 0xd1);
        b.wr(&mut k, 0, 0, 0xce);
        assert!(b.req.reset, "output port bit 0 low resets");
        b.req.reset = false;
        cmd(&mut b, &mut k, 0xff);
        assert!(!b.req.reset);
        cmd(&mut b, &mut k, 0xfe);
        assert!(b.req.reset);
    }

    #[test]
    fn write_output_buffers() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        cmd(&mut b, &mut k, 0xd2);
        b.wr(&mut k, 0, 0, 0x12);
        assert!(b.high(1));
        assert_eq!(read_all(&mut b, &mut k), [0x12]);
        cmd(&mut b, &mut k, 0xd3);
        b.wr(&mut k, 0, 0, 0x34);
        assert!(b.high(12));
        assert_eq!(b.rd(&mut k, 0, 4) & ST_AUX, ST_AUX);
        assert_eq!(read_all(&mut b, &mut k), [0x34]);
        assert!(!b.high(12));
    }

    #[test]
    fn keyboard_commands_translated() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        b.wr(&mut k, 0, 0, 0xff);
        assert_eq!(read_all(&mut b, &mut k), [ACK, BAT_OK]);
        b.wr(&mut k, 0, 0, 0xf2);
        assert_eq!(read_all(&mut b, &mut k), [ACK, 0xab, 0x41], "translated identify");
        b.wr(&mut k, 0, 0, 0xf0);
        b.wr(&mut k, 0, 0, 0x00);
        assert_eq!(read_all(&mut b, &mut k), [ACK, ACK, 0x41], "set 2, translated");
        b.wr(&mut k, 0, 0, 0xed);
        b.wr(&mut k, 0, 0, 0x07);
        b.wr(&mut k, 0, 0, 0xf3);
        b.wr(&mut k, 0, 0, 0x00);
        b.wr(&mut k, 0, 0, 0xee);
        b.wr(&mut k, 0, 0, 0x01);
        assert_eq!(read_all(&mut b, &mut k), [ACK, ACK, ACK, ACK, 0xee, RESEND]);
        assert_eq!(k.kbd.leds, 7);
    }

    #[test]
    fn every_reply_byte_is_an_interrupt_edge() {
        // Linux's atkbd reads each byte of a reply in its IRQ 1 handler: GET ID's ACK, 0xAB and the
        // translated 0x41 must each be a rising edge, as must each byte of the mouse's reset reply.
        let mut k = I8042::new();
        let mut b = Bus::new();
        b.wr(&mut k, 0, 0, 0xf2);
        let mut got = Vec::new();
        while b.took_edge(1) {
            got.push(b.rd(&mut k, 0, 0));
        }
        assert_eq!(got, [ACK, 0xab, 0x41]);
        assert!(!b.high(1));
        b.wr(&mut k, 0, 4, 0xd4);
        b.wr(&mut k, 0, 0, 0xff);
        let mut got = Vec::new();
        while b.took_edge(12) {
            got.push(b.rd(&mut k, 0, 0));
        }
        assert_eq!(got, [ACK, BAT_OK, 0x00]);
        // A status read takes nothing and makes no edge.
        b.wr(&mut k, 0, 0, 0xee);
        assert!(b.took_edge(1));
        b.rd(&mut k, 0, 4);
        assert!(!b.took_edge(1) && b.high(1));
        assert_eq!(b.rd(&mut k, 0, 0), 0xee);
    }

    #[test]
    fn host_scancodes_and_translation() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        // 'A' press/release, then Up arrow press/release, in set 2.
        k.host_input(&mut b.ctx(0), &[0x1c, 0xf0, 0x1c, 0xe0, 0x75, 0xe0, 0xf0, 0x75]);
        assert!(b.high(1));
        assert_eq!(read_all(&mut b, &mut k), [0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0xc8]);
        // Untranslated.
        cmd(&mut b, &mut k, 0x60);
        b.wr(&mut k, 0, 0, 0x01);
        k.host_input(&mut b.ctx(0), &[0x1c, 0xf0, 0x1c]);
        assert_eq!(read_all(&mut b, &mut k), [0x1c, 0xf0, 0x1c]);
        // Keyboard in set 1 itself.
        b.wr(&mut k, 0, 0, 0xf0);
        b.wr(&mut k, 0, 0, 0x01);
        assert_eq!(read_all(&mut b, &mut k), [ACK, ACK]);
        k.host_input(&mut b.ctx(0), &[0x76, 0xf0, 0x76]);
        assert_eq!(read_all(&mut b, &mut k), [0x01, 0x81]);
        // Disabled scanning drops keys.
        b.wr(&mut k, 0, 0, 0xf5);
        k.host_input(&mut b.ctx(0), &[0x1c]);
        assert_eq!(read_all(&mut b, &mut k), [ACK]);
    }

    #[test]
    fn disabled_keyboard_port_holds_data() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        cmd(&mut b, &mut k, 0xad);
        k.host_input(&mut b.ctx(0), &[0x1c]);
        assert_eq!(b.rd(&mut k, 0, 4) & ST_OBF, 0);
        cmd(&mut b, &mut k, 0xae);
        assert_eq!(read_all(&mut b, &mut k), [0x1e]);
    }

    #[test]
    fn mouse_probe_like_linux() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        let aux = |b: &mut Bus, k: &mut I8042, v: u8| {
            b.wr(k, 0, 4, 0xd4);
            b.wr(k, 0, 0, v);
        };
        aux(&mut b, &mut k, 0xff);
        assert!(b.high(12));
        assert_eq!(read_all(&mut b, &mut k), [ACK, BAT_OK, 0x00]);
        aux(&mut b, &mut k, 0xf2);
        assert_eq!(read_all(&mut b, &mut k), [ACK, 0x00]);
        for r in [200, 100, 80] {
            aux(&mut b, &mut k, 0xf3);
            aux(&mut b, &mut k, r);
        }
        aux(&mut b, &mut k, 0xf2);
        assert_eq!(read_all(&mut b, &mut k), [ACK, ACK, ACK, ACK, ACK, ACK, ACK, 0x03]);
        aux(&mut b, &mut k, 0xe8);
        aux(&mut b, &mut k, 0x03);
        aux(&mut b, &mut k, 0xe7);
        aux(&mut b, &mut k, 0xf4);
        aux(&mut b, &mut k, 0xe9);
        assert_eq!(read_all(&mut b, &mut k), [ACK, ACK, ACK, ACK, ACK, 0x30, 0x03, 80]);
        k.mouse_event(&mut b.ctx(0), 5, -3, 1, 1);
        assert_eq!(read_all(&mut b, &mut k), [0x29, 5, 0xfd, 1]);
        // The same event through host input, between two keys; IRQ 12 rises for the packet.
        let mut input = vec![0x1c];
        input.extend_from_slice(&I8042::mouse_input(5, -3, 1, 1));
        input.push(0x32);
        k.host_input(&mut b.ctx(0), &input);
        assert!(b.high(1) && !b.high(12), "the key came first");
        // The keyboard goes first while it has data (as this controller serves its queues).
        assert_eq!(read_all(&mut b, &mut k), [0x1e, 0x30, 0x29, 5, 0xfd, 1]);
        // A mouse record cut short is dropped; the keys before it are delivered.
        k.host_input(&mut b.ctx(0), &[0x1c, 0xff, 1, 0]);
        assert_eq!(read_all(&mut b, &mut k), [0x1e]);
        aux(&mut b, &mut k, 0x42);
        assert_eq!(read_all(&mut b, &mut k), [RESEND]);
    }

    #[test]
    fn snapshot_and_hostile_input() {
        let mut k = I8042::new();
        let mut b = Bus::new();
        k.host_input(&mut b.ctx(0), &[0x1c, 0x1b]);
        b.wr(&mut k, 0, 4, 0xd4);
        let mut fresh = I8042::new();
        roundtrip(&k, &mut fresh);
        assert_eq!(fresh, k);
        hammer(&mut k, &[0, 4], false, 13);
    }
}
