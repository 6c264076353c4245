//! The standard VGA with the Bochs VBE ("DISPI") extension, as QEMU's `-vga std`: PCI function
//! 1234:1111 (class 0x0300), which Debian's `vgabios-stdvga.bin` drives and Linux's bochs-drm binds to.
//!
//! # Windows
//!
//! | Window | Where | What |
//! |---|---|---|
//! | 0 (BAR0) | 16 MiB prefetchable memory | the linear framebuffer: video memory byte for byte |
//! | 2 (BAR2) | 4 KiB memory | QEMU's MMIO block: 0x400-0x41F the VGA ports 0x3C0-0x3DF, 0x500-0x515 the DISPI registers (16-bit) |
//! | [`PORTS_WINDOW`] | ports 0x3B0-0x3DF | the VGA registers (offset = port - 0x3B0) |
//! | [`DISPI_WINDOW`] | ports 0x1CE-0x1D0 | DISPI index (0x1CE) and data (0x1CF, and 0x1D0 as on old Bochs) |
//! | [`MEMORY_WINDOW`] | memory 0xA0000-0xBFFFF | the legacy window, decoded by the graphics controller's memory map |
//!
//! The machine maps the three fixed windows once (see `machine::devices`).
//!
//! # Video memory
//!
//! Video memory is kept as QEMU keeps it: planar address `a`, plane `p` is byte `4a + p`, so in chain-4
//! modes (mode 13h, VBE) the CPU's byte address is the video memory offset. Odd/even modes (text) put
//! CPU address `a` in plane `a & 1` (or 2/3 with the read map's bit 1) at planar address `a >> 1`.
//! Planar writes go through the four write modes with data rotate, the logical function, set/reset, the
//! bit mask and the latches; reads through read modes 0 and 1 (color compare), loading the latches.
//!
//! # Display
//!
//! [`Vga::render`] turns the state into an RGB image: VBE modes (8 bpp through the DAC, 15/16/24/32 bpp),
//! 256-color chained modes, 16-color planar modes, and text modes with the font from plane 2 (8 or 9
//! dots wide, line-graphics duplication, the cursor drawn steadily). It is a pure function of the
//! registers and memory, so a screenshot at a given instruction count is the same in every run. The
//! retrace bits of input status 1 follow the virtual clock: a 70 Hz frame (14.3 ms) with the vertical
//! retrace in its first 64 us, lines of 31.8 us with 3.8 us of horizontal blanking.

use crate::pci::{BarDef, BarKind, ConfigSpace, FIRST_CHIPSET_WINDOW, PciFunction};
use crate::{le_value, put_le};
use vmcore::Snapshot;
use vmcore::{DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter};

#[cfg(test)]
mod tests;

/// Window index of the VGA ports 0x3B0-0x3DF.
pub const PORTS_WINDOW: u8 = FIRST_CHIPSET_WINDOW;
/// Window index of the DISPI ports 0x1CE-0x1D0.
pub const DISPI_WINDOW: u8 = FIRST_CHIPSET_WINDOW + 1;
/// Window index of the legacy memory window 0xA0000-0xBFFFF.
pub const MEMORY_WINDOW: u8 = FIRST_CHIPSET_WINDOW + 2;
/// The fixed windows: (window, start, length, is memory).
pub const LEGACY_WINDOWS: [(u8, u64, u64, bool); 3] = [
    (PORTS_WINDOW, 0x3B0, 0x30, false),
    (DISPI_WINDOW, 0x1CE, 3, false),
    (MEMORY_WINDOW, 0xA_0000, 0x2_0000, true),
];
/// Video memory: 16 MiB, as QEMU's default `vgamem_mb`.
pub const VRAM_SIZE: usize = 16 << 20;

/// DISPI register indices.
mod dispi {
    pub const ID: usize = 0;
    pub const XRES: usize = 1;
    pub const YRES: usize = 2;
    pub const BPP: usize = 3;
    pub const ENABLE: usize = 4;
    pub const BANK: usize = 5;
    pub const VIRT_WIDTH: usize = 6;
    pub const VIRT_HEIGHT: usize = 7;
    pub const X_OFFSET: usize = 8;
    pub const Y_OFFSET: usize = 9;
    pub const VIDEO_MEMORY_64K: usize = 10;
    pub const COUNT: usize = 11;
    pub const ENABLED: u16 = 0x01;
    pub const GETCAPS: u16 = 0x02;
    pub const DAC_8BIT: u16 = 0x20;
    pub const NOCLEARMEM: u16 = 0x80;
    pub const ID5: u16 = 0xB0C5;
    pub const MAX_XRES: u16 = 16000;
    pub const MAX_YRES: u16 = 12000;
    pub const MAX_BPP: u16 = 32;
}

/// Length of a virtual frame (70 Hz) and of a scan line, in nanoseconds.
const FRAME_NS: u64 = 14_285_714;
const LINE_NS: u64 = 31_778;
const VRETRACE_NS: u64 = 64_000;
const HBLANK_NS: u64 = 3_800;

/// A rendered screen: `width` x `height` pixels, RGB, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub rgb: Vec<u8>,
}

/// One text-mode cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Code page 437 character.
    pub ch: u8,
    /// Attribute: foreground in bits 3:0, background in 7:4.
    pub attr: u8,
}

/// The text screen: `cols` x `rows` cells row by row, and the cursor (column, row) if shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextScreen {
    /// Columns.
    pub cols: usize,
    /// Rows.
    pub rows: usize,
    /// The cells.
    pub cells: Vec<Cell>,
    /// Cursor position, when enabled and on the screen.
    pub cursor: Option<(usize, usize)>,
}

impl TextScreen {
    /// Row `r` as text (characters outside printable ASCII as '.', trailing blanks kept).
    pub fn row_text(&self, r: usize) -> String {
        self.cells[r * self.cols..(r + 1) * self.cols]
            .iter()
            .map(|c| {
                if (0x20..0x7f).contains(&c.ch) {
                    c.ch as char
                } else if c.ch == 0 {
                    ' '
                } else {
                    '.'
                }
            })
            .collect()
    }
}

/// The standard VGA plus Bochs VBE (see the module docs).
pub struct Vga {
    cfg: ConfigSpace,
    vram: Vec<u8>,
    misc: u8,
    feature: u8,
    seq_index: u8,
    seq: [u8; 8],
    gc_index: u8,
    gc: [u8; 16],
    crtc_index: u8,
    crtc: [u8; 32],
    ar_index: u8,
    ar_flip: bool,
    ar: [u8; 21],
    dac_read: u8,
    dac_write: u8,
    dac_sub: u8,
    dac_reading: bool,
    dac: [u8; 768],
    pel_mask: u8,
    latch: u32,
    vbe_index: u16,
    vbe: [u16; dispi::COUNT],
}

impl Default for Vga {
    fn default() -> Self {
        Self::new()
    }
}

impl Vga {
    /// The VGA at power-on (registers zero, DISPI off; the VGA BIOS sets a mode).
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x1234, 0x1111, 0x03_00_00, 0x02, 0x00);
        cfg.set_u16(0x2C, 0x1af4);
        cfg.set_u16(0x2E, 0x1100);
        cfg.add_bar(0, BarDef { kind: BarKind::Mem32, size: VRAM_SIZE as u64, prefetchable: true });
        cfg.add_bar(2, BarDef { kind: BarKind::Mem32, size: 0x1000, prefetchable: false });
        let mut v = Vga {
            cfg,
            vram: vec![0; VRAM_SIZE],
            misc: 0,
            feature: 0,
            seq_index: 0,
            seq: [0; 8],
            gc_index: 0,
            gc: [0; 16],
            crtc_index: 0,
            crtc: [0; 32],
            ar_index: 0,
            ar_flip: false,
            ar: [0; 21],
            dac_read: 0,
            dac_write: 0,
            dac_sub: 0,
            dac_reading: false,
            dac: [0; 768],
            pel_mask: 0xFF,
            latch: 0,
            vbe_index: 0,
            vbe: [0; dispi::COUNT],
        };
        v.reset_registers();
        v
    }

    fn reset_registers(&mut self) {
        self.misc = 0;
        self.feature = 0;
        self.seq_index = 0;
        self.seq = [0; 8];
        self.gc_index = 0;
        self.gc = [0; 16];
        self.crtc_index = 0;
        self.crtc = [0; 32];
        self.ar_index = 0;
        self.ar_flip = false;
        self.ar = [0; 21];
        self.dac_read = 0;
        self.dac_write = 0;
        self.dac_sub = 0;
        self.dac_reading = false;
        self.dac = [0; 768];
        self.pel_mask = 0xFF;
        self.latch = 0;
        self.vbe_index = 0;
        self.vbe = [0; dispi::COUNT];
        self.vbe[dispi::ID] = dispi::ID5;
        self.vbe[dispi::VIDEO_MEMORY_64K] = (VRAM_SIZE >> 16) as u16;
    }

    /// Video memory (QEMU's layout, see the module docs).
    pub fn vram(&self) -> &[u8] {
        &self.vram
    }

    fn vbe_enabled(&self) -> bool {
        self.vbe[dispi::ENABLE] & dispi::ENABLED != 0
    }

    // ----- ports -----

    /// Reads VGA port `port` (0x3B0-0x3DF).
    pub fn port_read(&mut self, now_ns: u64, port: u16) -> u8 {
        let color = self.misc & 1 != 0;
        // Mono ports answer only in mono mode, colour ones only in colour mode.
        if (matches!(port, 0x3B4 | 0x3B5 | 0x3BA) && color)
            || (matches!(port, 0x3D4 | 0x3D5 | 0x3DA) && !color)
        {
            return 0xFF;
        }
        match port {
            0x3C0 => self.ar_index,
            0x3C1 => self.ar.get(usize::from(self.ar_index & 0x1F)).copied().unwrap_or(0),
            0x3C2 => 0x10, // input status 0: switch sense (a colour monitor is attached)
            0x3C4 => self.seq_index,
            0x3C5 => self.seq.get(usize::from(self.seq_index)).copied().unwrap_or(0xFF),
            0x3C6 => self.pel_mask,
            0x3C7 => {
                if self.dac_reading {
                    3
                } else {
                    0
                }
            }
            0x3C8 => self.dac_write,
            0x3C9 => {
                let i = usize::from(self.dac_read) * 3 + usize::from(self.dac_sub);
                let v = self.dac[i];
                self.dac_sub += 1;
                if self.dac_sub == 3 {
                    self.dac_sub = 0;
                    self.dac_read = self.dac_read.wrapping_add(1);
                }
                v
            }
            0x3CA => self.feature,
            0x3CC => self.misc,
            0x3CE => self.gc_index,
            0x3CF => self.gc.get(usize::from(self.gc_index)).copied().unwrap_or(0xFF),
            0x3B4 | 0x3D4 => self.crtc_index,
            0x3B5 | 0x3D5 => self.crtc.get(usize::from(self.crtc_index)).copied().unwrap_or(0xFF),
            0x3BA | 0x3DA => {
                self.ar_flip = false;
                let t = now_ns % FRAME_NS;
                let mut v = 0;
                if t < VRETRACE_NS {
                    v |= 0x08 | 0x01;
                } else if t % LINE_NS < HBLANK_NS {
                    v |= 0x01;
                }
                v
            }
            _ => 0xFF,
        }
    }

    /// Writes VGA port `port` (0x3B0-0x3DF).
    pub fn port_write(&mut self, port: u16, v: u8) {
        let color = self.misc & 1 != 0;
        if (matches!(port, 0x3B4 | 0x3B5 | 0x3BA) && color)
            || (matches!(port, 0x3D4 | 0x3D5 | 0x3DA) && !color)
        {
            return;
        }
        match port {
            0x3C0 => {
                if !self.ar_flip {
                    self.ar_index = v & 0x3F;
                } else {
                    let i = usize::from(self.ar_index & 0x1F);
                    if let Some(r) = self.ar.get_mut(i) {
                        *r = match i {
                            0..=0x0F => v & 0x3F,
                            0x10 => v & !0x10,
                            0x11 => v,
                            0x12 => v & 0x3F,
                            0x13 => v & 0x0F,
                            _ => v & 0x0F,
                        };
                    }
                }
                self.ar_flip = !self.ar_flip;
            }
            0x3C2 => self.misc = v,
            0x3C4 => self.seq_index = v & 7,
            0x3C5 => {
                if let Some(r) = self.seq.get_mut(usize::from(self.seq_index)) {
                    *r = v;
                }
            }
            0x3C6 => self.pel_mask = v,
            0x3C7 => {
                self.dac_read = v;
                self.dac_sub = 0;
                self.dac_reading = true;
            }
            0x3C8 => {
                self.dac_write = v;
                self.dac_sub = 0;
                self.dac_reading = false;
            }
            0x3C9 => {
                let i = usize::from(self.dac_write) * 3 + usize::from(self.dac_sub);
                let dac8 = self.vbe[dispi::ENABLE] & dispi::DAC_8BIT != 0;
                self.dac[i] = if dac8 { v } else { v & 0x3F };
                self.dac_sub += 1;
                if self.dac_sub == 3 {
                    self.dac_sub = 0;
                    self.dac_write = self.dac_write.wrapping_add(1);
                }
            }
            0x3CE => self.gc_index = v & 0x0F,
            0x3CF => self.gc[usize::from(self.gc_index)] = v,
            0x3B4 | 0x3D4 => self.crtc_index = v & 0x1F,
            0x3B5 | 0x3D5 => {
                let i = usize::from(self.crtc_index);
                // CR11 bit 7 write-protects CR00-CR07, except CR07's line-compare bit 4.
                if self.crtc[0x11] & 0x80 != 0 && i <= 7 {
                    if i == 7 {
                        self.crtc[7] = (self.crtc[7] & !0x10) | (v & 0x10);
                    }
                    return;
                }
                self.crtc[i] = v;
            }
            0x3BA | 0x3DA => self.feature = v,
            _ => {}
        }
    }

    // ----- DISPI -----

    fn dispi_read(&self) -> u16 {
        let i = usize::from(self.vbe_index);
        if self.vbe[dispi::ENABLE] & dispi::GETCAPS != 0 {
            match i {
                dispi::XRES => return dispi::MAX_XRES,
                dispi::YRES => return dispi::MAX_YRES,
                dispi::BPP => return dispi::MAX_BPP,
                _ => {}
            }
        }
        self.vbe.get(i).copied().unwrap_or(0)
    }

    fn dispi_write(&mut self, v: u16) {
        let i = usize::from(self.vbe_index);
        match i {
            dispi::ID if (0xB0C0..=dispi::ID5).contains(&v) => self.vbe[i] = v,
            dispi::XRES | dispi::YRES | dispi::BPP | dispi::VIRT_WIDTH | dispi::VIRT_HEIGHT
                if !self.vbe_enabled() =>
            {
                // Only while the mode is off, and only values the interface supports.
                let v = if i == dispi::BPP && v == 0 { 8 } else { v };
                let ok = match i {
                    dispi::XRES => v <= dispi::MAX_XRES && v % 8 == 0,
                    dispi::YRES => v <= dispi::MAX_YRES,
                    dispi::BPP => matches!(v, 4 | 8 | 15 | 16 | 24 | 32),
                    _ => true,
                };
                if ok {
                    self.vbe[i] = v;
                }
            }
            dispi::BANK => {
                let banks = (VRAM_SIZE >> 16) as u16;
                self.vbe[i] = v.min(banks - 1);
            }
            dispi::X_OFFSET | dispi::Y_OFFSET => self.vbe[i] = v,
            dispi::ENABLE => {
                let was = self.vbe_enabled();
                if v & dispi::ENABLED != 0 && !was {
                    if self.vbe[dispi::VIRT_WIDTH] < self.vbe[dispi::XRES] {
                        self.vbe[dispi::VIRT_WIDTH] = self.vbe[dispi::XRES];
                    }
                    self.vbe[dispi::VIRT_HEIGHT] = self.vbe[dispi::VIRT_HEIGHT].max(self.vbe[dispi::YRES]);
                    self.vbe[dispi::X_OFFSET] = 0;
                    self.vbe[dispi::Y_OFFSET] = 0;
                    if v & dispi::NOCLEARMEM == 0 {
                        let n = self.vbe_frame_bytes().min(VRAM_SIZE);
                        self.vram[..n].fill(0);
                    }
                    // Graphics, A0000 64 KiB window, chain 4: banked access to video memory.
                    self.gc[6] = (self.gc[6] & !0x0C) | 0x05;
                    self.seq[4] |= 0x08;
                }
                self.vbe[i] = v & (dispi::ENABLED | dispi::GETCAPS | dispi::DAC_8BIT | 0x40);
            }
            _ => {}
        }
    }

    fn vbe_bytes_per_pixel(&self) -> usize {
        usize::from(self.vbe[dispi::BPP]).div_ceil(8).max(1)
    }

    fn vbe_line_bytes(&self) -> usize {
        let w = usize::from(self.vbe[dispi::VIRT_WIDTH]);
        if self.vbe[dispi::BPP] == 4 { w / 2 } else { w * self.vbe_bytes_per_pixel() }
    }

    fn vbe_frame_bytes(&self) -> usize {
        self.vbe_line_bytes() * usize::from(self.vbe[dispi::VIRT_HEIGHT])
    }

    // ----- legacy memory window -----

    /// The offset into the graphics controller's memory map of `off` (from 0xA0000), if it decodes.
    fn map_offset(&self, off: u64) -> Option<u64> {
        let (base, size) = match (self.gc[6] >> 2) & 3 {
            0 => (0, 0x2_0000),
            1 => (0, 0x1_0000),
            2 => (0x1_0000, 0x8000),
            _ => (0x1_8000, 0x8000),
        };
        (off >= base && off - base < size).then(|| off - base)
    }

    /// A CPU read of the legacy window at `off` (0 = 0xA0000).
    pub fn mem_read(&mut self, off: u64) -> u8 {
        let Some(mut a) = self.map_offset(off) else { return 0xFF };
        if self.seq[4] & 0x08 != 0 {
            if self.vbe_enabled() {
                a += u64::from(self.vbe[dispi::BANK]) << 16;
            }
            return self.vram.get(a as usize).copied().unwrap_or(0xFF);
        }
        if self.seq[4] & 0x04 == 0 {
            let plane = (self.gc[4] & 2) | (a & 1) as u8;
            let i = ((a & !1) << 1) | u64::from(plane);
            return self.vram.get(i as usize).copied().unwrap_or(0xFF);
        }
        let i = (a as usize) * 4;
        let Some(b) = self.vram.get(i..i + 4) else { return 0xFF };
        self.latch = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if self.gc[5] & 0x08 == 0 {
            (self.latch >> (8 * u32::from(self.gc[4] & 3))) as u8
        } else {
            // Read mode 1: bits whose colour (in the planes the don't-care register selects) matches
            // the colour-compare register read 1.
            let cc = expand(self.gc[2] & 0x0F);
            let dc = expand(self.gc[7] & 0x0F);
            let diff = (self.latch ^ cc) & dc;
            !((diff as u8) | ((diff >> 8) as u8) | ((diff >> 16) as u8) | ((diff >> 24) as u8))
        }
    }

    /// A CPU write of the legacy window at `off`.
    pub fn mem_write(&mut self, off: u64, v: u8) {
        let Some(mut a) = self.map_offset(off) else { return };
        let map_mask = self.seq[2] & 0x0F;
        if self.seq[4] & 0x08 != 0 {
            if self.vbe_enabled() {
                a += u64::from(self.vbe[dispi::BANK]) << 16;
            }
            if map_mask & (1 << (a & 3)) != 0
                && let Some(b) = self.vram.get_mut(a as usize)
            {
                *b = v;
            }
            return;
        }
        if self.seq[4] & 0x04 == 0 {
            let plane = (self.gc[4] & 2) | (a & 1) as u8;
            if map_mask & (1 << plane) != 0 {
                let i = ((a & !1) << 1) | u64::from(plane);
                if let Some(b) = self.vram.get_mut(i as usize) {
                    *b = v;
                }
            }
            return;
        }
        let mode = self.gc[5] & 3;
        let rotate = self.gc[3] & 7;
        let func = (self.gc[3] >> 3) & 3;
        let mut bit_mask = u32::from(self.gc[8]);
        let data: u32 = match mode {
            0 => {
                let r = u32::from(v.rotate_right(u32::from(rotate)));
                let r = r * 0x0101_0101;
                let esr = expand(self.gc[1] & 0x0F);
                (r & !esr) | (expand(self.gc[0] & 0x0F) & esr)
            }
            1 => self.latch,
            2 => expand(v & 0x0F),
            _ => {
                let r = v.rotate_right(u32::from(rotate));
                bit_mask &= u32::from(r);
                expand(self.gc[0] & 0x0F)
            }
        };
        let out = if mode == 1 {
            data
        } else {
            let d = match func {
                0 => data,
                1 => data & self.latch,
                2 => data | self.latch,
                _ => data ^ self.latch,
            };
            let m = bit_mask * 0x0101_0101;
            (d & m) | (self.latch & !m)
        };
        let i = (a as usize) * 4;
        if let Some(b) = self.vram.get_mut(i..i + 4) {
            for (p, byte) in b.iter_mut().enumerate() {
                if map_mask & (1 << p) != 0 {
                    *byte = (out >> (8 * p)) as u8;
                }
            }
        }
    }

    // ----- display -----

    fn dac_rgb(&self, index: u8) -> [u8; 3] {
        let i = usize::from(index & self.pel_mask) * 3;
        let c = |v: u8| {
            if self.vbe[dispi::ENABLE] & dispi::DAC_8BIT != 0 { v } else { (v << 2) | (v >> 4) }
        };
        [c(self.dac[i]), c(self.dac[i + 1]), c(self.dac[i + 2])]
    }

    /// The DAC index of 4-bit colour `c` through the attribute controller's palette and colour select.
    fn attr_to_dac(&self, c: u8) -> u8 {
        let p = self.ar[usize::from(c & 0x0F)];
        let mode = self.ar[0x10];
        let cs = self.ar[0x14];
        if mode & 0x80 != 0 { (p & 0x0F) | ((cs & 0x0F) << 4) } else { (p & 0x3F) | ((cs & 0x0C) << 4) }
    }

    fn vertical_display_end(&self) -> usize {
        let c = &self.crtc;
        (usize::from(c[0x12]) | (usize::from(c[7] & 0x02) << 7) | (usize::from(c[7] & 0x40) << 3)) + 1
    }

    fn start_address(&self) -> usize {
        (usize::from(self.crtc[0x0C]) << 8) | usize::from(self.crtc[0x0D])
    }

    /// The text screen, when the VGA is in a text mode.
    pub fn text_screen(&self) -> Option<TextScreen> {
        if self.vbe_enabled() || self.gc[6] & 1 != 0 {
            return None;
        }
        let cols = usize::from(self.crtc[1]) + 1;
        let char_h = usize::from(self.crtc[9] & 0x1F) + 1;
        let rows = (self.vertical_display_end() / char_h).max(1);
        let stride = (usize::from(self.crtc[0x13]) * 2).max(cols);
        let start = self.start_address();
        let mut cells = Vec::with_capacity(cols * rows);
        for r in 0..rows {
            for c in 0..cols {
                let a = ((start + r * stride + c) * 4) % VRAM_SIZE;
                cells.push(Cell { ch: self.vram[a], attr: self.vram[a + 1] });
            }
        }
        let cur = (usize::from(self.crtc[0x0E]) << 8) | usize::from(self.crtc[0x0F]);
        let cursor = (self.crtc[0x0A] & 0x20 == 0 && cur >= start)
            .then(|| ((cur - start) % stride, (cur - start) / stride))
            .filter(|(x, y)| *x < cols && *y < rows);
        Some(TextScreen { cols, rows, cells, cursor })
    }

    /// Renders the screen (see the module docs). A blank 640x480 frame when nothing is displayed
    /// (sequencer screen-off, or the attribute controller's palette access).
    pub fn render(&self) -> Frame {
        if self.vbe_enabled() {
            return self.render_vbe();
        }
        if self.ar_index & 0x20 == 0 || self.seq[1] & 0x20 != 0 {
            return Frame { width: 640, height: 480, rgb: vec![0; 640 * 480 * 3] };
        }
        if self.gc[6] & 1 == 0 {
            return self.render_text();
        }
        self.render_graphics()
    }

    fn render_vbe(&self) -> Frame {
        let w = usize::from(self.vbe[dispi::XRES]).clamp(1, 4096);
        let h = usize::from(self.vbe[dispi::YRES]).clamp(1, 4096);
        let bpp = self.vbe[dispi::BPP];
        let line = self.vbe_line_bytes();
        let bytes = self.vbe_bytes_per_pixel();
        let base =
            usize::from(self.vbe[dispi::Y_OFFSET]) * line + usize::from(self.vbe[dispi::X_OFFSET]) * bytes;
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let a = (base + y * line + x * bytes) % VRAM_SIZE;
                let px = |n: usize| self.vram[(a + n) % VRAM_SIZE];
                let c = match bpp {
                    8 => self.dac_rgb(px(0)),
                    15 => {
                        let v = u16::from_le_bytes([px(0), px(1)]);
                        let e = |x: u16| ((x & 0x1F) << 3 | (x & 0x1F) >> 2) as u8;
                        [e(v >> 10), e(v >> 5), e(v)]
                    }
                    16 => {
                        let v = u16::from_le_bytes([px(0), px(1)]);
                        let e5 = |x: u16| ((x & 0x1F) << 3 | (x & 0x1F) >> 2) as u8;
                        let g = ((v >> 5) & 0x3F) as u8;
                        [e5(v >> 11), (g << 2) | (g >> 4), e5(v)]
                    }
                    24 | 32 => [px(2), px(1), px(0)],
                    _ => {
                        let b = px(0);
                        let n = if x % 2 == 0 { b >> 4 } else { b & 0x0F };
                        self.dac_rgb(n)
                    }
                };
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
            }
        }
        Frame { width: w, height: h, rgb }
    }

    fn render_text(&self) -> Frame {
        let Some(t) = self.text_screen() else { return Frame { width: 0, height: 0, rgb: Vec::new() } };
        let char_h = usize::from(self.crtc[9] & 0x1F) + 1;
        let char_w = if self.seq[1] & 1 != 0 { 8 } else { 9 };
        let (cols, rows) = (t.cols.min(256), t.rows.min(128));
        let (w, h) = (cols * char_w, rows * char_h);
        let mut rgb = vec![0u8; w * h * 3];
        // Character map select (SR03): map A for attribute bit 3 set, map B for it clear.
        let sel = self.seq[3];
        let map_a = usize::from(((sel >> 3) & 4) | ((sel >> 2) & 3));
        let map_b = usize::from(((sel >> 2) & 4) | (sel & 3));
        let font_base = |m: usize| [0usize, 0x4000, 0x8000, 0xC000, 0x2000, 0x6000, 0xA000, 0xE000][m];
        let line_gfx = self.ar[0x10] & 0x04 != 0;
        let blink = self.ar[0x10] & 0x08 != 0;
        let (cur_start, cur_end) = (usize::from(self.crtc[0x0A] & 0x1F), usize::from(self.crtc[0x0B] & 0x1F));
        for r in 0..rows {
            for c in 0..cols {
                let cell = t.cells[r * t.cols + c];
                let fg = self.dac_rgb(self.attr_to_dac(cell.attr & 0x0F));
                let bg_c = if blink { (cell.attr >> 4) & 7 } else { cell.attr >> 4 };
                let bg = self.dac_rgb(self.attr_to_dac(bg_c));
                let map = if cell.attr & 0x08 != 0 { map_a } else { map_b };
                let glyph = font_base(map) + usize::from(cell.ch) * 32;
                let is_cursor = t.cursor == Some((c, r));
                for y in 0..char_h {
                    let mut bits = self.vram[((glyph + y) * 4 + 2) % VRAM_SIZE];
                    if is_cursor && y >= cur_start && y <= cur_end {
                        bits = 0xFF;
                    }
                    for x in 0..char_w {
                        let on = if x < 8 {
                            bits & (0x80 >> x) != 0
                        } else {
                            line_gfx && (0xC0..=0xDF).contains(&cell.ch) && bits & 1 != 0
                        };
                        let o = ((r * char_h + y) * w + c * char_w + x) * 3;
                        rgb[o..o + 3].copy_from_slice(if on { &fg } else { &bg });
                    }
                }
            }
        }
        Frame { width: w, height: h, rgb }
    }

    fn render_graphics(&self) -> Frame {
        let scan_double = self.crtc[9] & 0x80 != 0;
        let lines_per_row = usize::from(self.crtc[9] & 0x1F) + 1;
        let mut h = self.vertical_display_end();
        if scan_double {
            h /= 2;
        }
        h = (h / lines_per_row).clamp(1, 1024);
        let chars = usize::from(self.crtc[1]) + 1;
        let start = self.start_address();
        let mode256 = self.gc[5] & 0x40 != 0;
        let w = if mode256 { chars * 4 } else { chars * 8 }.min(2048);
        let mut rgb = vec![0u8; w * h * 3];
        let offset = usize::from(self.crtc[0x13]) * 2; // planar bytes per row
        for y in 0..h {
            for x in 0..w {
                let c = if mode256 {
                    // Pixel x of a row is at planar address x/4, plane x%4, chained (mode 13h) or
                    // not (mode X): video memory byte 4 * (row start + x/4) + x%4.
                    let a = ((start + y * offset) * 4 + x) % VRAM_SIZE;
                    self.dac_rgb(self.vram[a])
                } else {
                    let a = ((start + y * offset + x / 8) * 4) % VRAM_SIZE;
                    let bit = 7 - (x % 8);
                    let mut idx = 0u8;
                    for p in 0..4 {
                        idx |= ((self.vram[a + p] >> bit) & 1) << p;
                    }
                    self.dac_rgb(self.attr_to_dac(idx & self.ar[0x12]))
                };
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
            }
        }
        Frame { width: w, height: h, rgb }
    }
}

/// Copies a saved byte string into `dst`, which it must fill exactly.
fn copy_exact(src: &[u8], dst: &mut [u8]) -> Result<(), SnapshotError> {
    if src.len() != dst.len() {
        return Err(SnapshotError::Invalid(format!(
            "vga: {} bytes saved where {} belong",
            src.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// Each of the low four bits of `v` as a byte of 0xFF or 0 (plane 0 in the low byte).
fn expand(v: u8) -> u32 {
    let mut out = 0;
    for p in 0..4 {
        if v & (1 << p) != 0 {
            out |= 0xFF << (8 * p);
        }
    }
    out
}

impl PciFunction for Vga {
    fn name(&self) -> &str {
        "vga"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn reset(&mut self) -> Vec<crate::pci::BarChange> {
        self.reset_registers();
        self.cfg.reset()
    }

    fn bar_read(&mut self, ctx: &mut DeviceCtx<'_>, window: u8, off: u64, data: &mut [u8]) {
        let now = ctx.now.as_nanos();
        match window {
            0 => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.vram.get(off as usize + i).copied().unwrap_or(0xFF);
                }
            }
            2 => match off {
                0x400..=0x41F => {
                    for (i, b) in data.iter_mut().enumerate() {
                        *b = self.port_read(now, 0x3C0 + off as u16 - 0x400 + i as u16);
                    }
                }
                0x500..=0x515 => {
                    self.vbe_index = ((off - 0x500) / 2) as u16;
                    put_le(data, u64::from(self.dispi_read()));
                }
                _ => data.fill(0xFF),
            },
            PORTS_WINDOW => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.port_read(now, 0x3B0 + off as u16 + i as u16);
                }
            }
            DISPI_WINDOW => {
                let v = if off == 0 { self.vbe_index } else { self.dispi_read() };
                put_le(data, u64::from(v));
            }
            MEMORY_WINDOW => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.mem_read(off + i as u64);
                }
            }
            _ => data.fill(0xFF),
        }
    }

    fn bar_write(&mut self, _ctx: &mut DeviceCtx<'_>, window: u8, off: u64, data: &[u8]) {
        match window {
            0 => {
                for (i, b) in data.iter().enumerate() {
                    if let Some(d) = self.vram.get_mut(off as usize + i) {
                        *d = *b;
                    }
                }
            }
            2 => match off {
                0x400..=0x41F => {
                    for (i, b) in data.iter().enumerate() {
                        self.port_write(0x3C0 + off as u16 - 0x400 + i as u16, *b);
                    }
                }
                0x500..=0x515 => {
                    self.vbe_index = ((off - 0x500) / 2) as u16;
                    self.dispi_write(le_value(data) as u16);
                }
                _ => {}
            },
            PORTS_WINDOW => {
                // A 16-bit OUT to an index port writes the index, then the data port (as on a VGA).
                for (i, b) in data.iter().enumerate() {
                    self.port_write(0x3B0 + off as u16 + i as u16, *b);
                }
            }
            DISPI_WINDOW => {
                let v = le_value(data) as u16;
                if off == 0 {
                    self.vbe_index = v;
                } else {
                    self.dispi_write(v);
                }
            }
            MEMORY_WINDOW => {
                for (i, b) in data.iter().enumerate() {
                    self.mem_write(off + i as u64, *b);
                }
            }
            _ => {}
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl Snapshot for Vga {
    type Restored = Vec<crate::pci::BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag("vga");
        self.cfg.save(w);
        w.bytes(&self.vram);
        for b in [self.misc, self.feature, self.seq_index, self.gc_index, self.crtc_index, self.ar_index] {
            w.u8(b);
        }
        w.bool(self.ar_flip);
        w.bytes(&self.seq);
        w.bytes(&self.gc);
        w.bytes(&self.crtc);
        w.bytes(&self.ar);
        for b in [self.dac_read, self.dac_write, self.dac_sub, self.pel_mask] {
            w.u8(b);
        }
        w.bool(self.dac_reading);
        w.bytes(&self.dac);
        w.u32(self.latch);
        w.u32(u32::from(self.vbe_index));
        for v in self.vbe {
            w.u32(u32::from(v));
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("vga")?;
        let changes = self.cfg.restore(r)?;
        copy_exact(r.bytes()?, &mut self.vram)?;
        let mut b = [0u8; 6];
        for x in b.iter_mut() {
            *x = r.u8()?;
        }
        [self.misc, self.feature, self.seq_index, self.gc_index, self.crtc_index, self.ar_index] = b;
        self.seq_index &= 7;
        self.gc_index &= 0x0F;
        self.crtc_index &= 0x1F;
        self.ar_index &= 0x3F;
        self.ar_flip = r.bool()?;
        copy_exact(r.bytes()?, &mut self.seq)?;
        copy_exact(r.bytes()?, &mut self.gc)?;
        copy_exact(r.bytes()?, &mut self.crtc)?;
        copy_exact(r.bytes()?, &mut self.ar)?;
        self.dac_read = r.u8()?;
        self.dac_write = r.u8()?;
        self.dac_sub = r.u8()? % 3;
        self.pel_mask = r.u8()?;
        self.dac_reading = r.bool()?;
        copy_exact(r.bytes()?, &mut self.dac)?;
        self.latch = r.u32()?;
        self.vbe_index = r.u32()? as u16;
        for v in self.vbe.iter_mut() {
            *v = r.u32()? as u16;
        }
        Ok(changes)
    }
}
