//! The PIIX3 IDE controller in compatibility mode: two channels (task-file registers, status, error,
//! alternate status, device control with nIEN and SRST, master and slave, the PIO data port with DRQ
//! blocks as ATA/ATAPI-6 describes them) and the bus-master DMA engine (PRD tables).
//!
//! # Offsets
//!
//! [`IdeController`] is one [`vmcore::Device`] over five port windows; the board registers each with the
//! offset base given here:
//!
//! | Ports | Offset | Registers |
//! |---|---|---|
//! | BAR4 + 0..15 | 0x00-0x0F | bus master: per channel (+0 primary, +8 secondary) command, status, PRD table address |
//! | 0x1F0-0x1F7 | 0x10-0x17 | primary command block: data, error/features, count, LBA low/mid/high, device, status/command |
//! | 0x3F6 | 0x18 | primary alternate status / device control |
//! | 0x170-0x177 | 0x20-0x27 | secondary command block |
//! | 0x376 | 0x28 | secondary alternate status / device control |
//!
//! (The bus-master block sits at offset 0 so the PIIX3 function's BAR4 window, which the board routes
//! with offsets from 0, lands on it.)
//!
//! Interrupts: ISA IRQ 14 (primary) and 15 (secondary), high while the selected device's INTRQ is
//! pending and nIEN is clear; reading the status register (not the alternate one) or writing a command
//! clears it.
//!
//! # Timing
//!
//! Every command takes [`crate::ata::latency_ns`] of the bytes it moves (per DRQ block for PIO, the
//! whole transfer for DMA) from the access that started it; its completion (DRQ, INTRQ, status) is an
//! event at that virtual time, reported by [`vmcore::Device::next_deadline`]. Host I/O is synchronous:
//! reads happen when the event fires, DMA transfers when the board runs [`IdeController::run_dma`]
//! (right after the bus-master start), so what the guest sees depends only on its requests.
//!
//! # Errors
//!
//! Unknown commands and commands for the wrong device type: ABRT. Out-of-range sectors: IDNF|ABRT. A
//! PRD table that runs out before the transfer, points outside RAM or whose direction contradicts the
//! command: the bus master's error bit, and ABRT in the drive's error register.

use vmcore::Snapshot;
use vmcore::{Device, DeviceCtx, IrqLevels, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::ata::{Action, CD_BLOCK, Drive, DriveKind, TaskFile, Xfer, error, latency_ns, status};
use crate::atapi::PacketResult;
use crate::dma::{DmaError, DmaMemory, Region, from_memory, to_memory};

/// Offset of the bus-master registers (the BAR4 window).
pub const BUS_MASTER: u16 = 0x00;
/// Offset of the primary channel's command block (ports 0x1F0-0x1F7).
pub const PRIMARY: u16 = 0x10;
/// Offset of the secondary channel's command block (ports 0x170-0x177).
pub const SECONDARY: u16 = 0x20;
/// Offset of a channel's control register (alternate status / device control) from its command block.
pub const CONTROL: u16 = 0x08;
/// ISA IRQs of the two channels.
pub const IRQS: [u32; 2] = [14, 15];

/// Bus-master command: start.
pub const BM_START: u8 = 0x01;
/// Bus-master command: the bus master writes memory (a device read).
pub const BM_WRITE_MEM: u8 = 0x08;
/// Bus-master status: active.
pub const BM_ACTIVE: u8 = 0x01;
/// Bus-master status: error (write 1 to clear).
pub const BM_ERROR: u8 = 0x02;
/// Bus-master status: interrupt (write 1 to clear).
pub const BM_INT: u8 = 0x04;
/// Most PRD entries walked (a table may not cross 64 KiB, so 8192 entries is the hardware's limit).
pub const MAX_PRD: usize = 8192;

/// Device control: interrupts disabled.
const NIEN: u8 = 0x02;
/// Device control: software reset.
const SRST: u8 = 0x04;
/// Device control: read the previous (high order) bytes.
const HOB: u8 = 0x80;

/// ATAPI interrupt reason (count register): command/data and I/O bits.
const IREASON_COD: u8 = 0x01;
const IREASON_IO: u8 = 0x02;

#[derive(Clone, Debug)]
struct PioIn {
    buf: Vec<u8>,
    pos: usize,
    /// End of the current DRQ block in `buf`.
    end: usize,
    /// DRQ block size in bytes.
    chunk: usize,
    /// Still to load from the medium: byte offset and length.
    disk_off: u64,
    disk_left: u64,
    atapi: bool,
}

#[derive(Clone, Debug)]
enum Src {
    /// Bytes of the medium.
    Disk { off: u64, len: u64 },
    /// A buffer (ATAPI responses, IDENTIFY).
    Buf(Vec<u8>),
}

#[derive(Clone, Debug)]
enum State {
    Idle,
    PioIn(PioIn),
    PioOut {
        buf: Vec<u8>,
        pos: usize,
        lba: u64,
        left: u32,
        block: u32,
    },
    Cdb {
        buf: [u8; 12],
        pos: usize,
        dma: bool,
    },
    /// A DMA command waiting for the bus master; `write` means memory to disk.
    Dma {
        src: Src,
        write: bool,
        atapi: bool,
    },
    /// The DMA ran; completion is the pending event.
    DmaRan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    /// Complete the command; error register value (0: success).
    Done {
        err: u8,
        atapi: bool,
    },
    Flush,
    /// Present the next PIO data-in block.
    PioIn,
    /// Commit the PIO data-out block just received.
    PioOut,
    /// Run the ATAPI packet just received.
    Packet,
    /// The DMA transfer completed (ATA error value, bus-master error, regions longer than the data).
    DmaDone {
        err: u8,
        bm_err: bool,
        more_prd: bool,
        atapi: bool,
    },
    /// EXECUTE DEVICE DIAGNOSTIC finished.
    Diagnostic,
}

#[derive(Clone, Copy, Debug, Default)]
struct BusMaster {
    cmd: u8,
    status: u8,
    prdt: u32,
}

struct Channel {
    drives: [Option<Drive>; 2],
    /// Each device's copy of the registers (writes go to both, reads come from the selected one).
    tf: [TaskFile; 2],
    status: [u8; 2],
    error: [u8; 2],
    intrq: [bool; 2],
    devctl: u8,
    sel: usize,
    /// The device running the current command.
    active: usize,
    state: State,
    event: Option<(VirtTime, Ev)>,
    bm: BusMaster,
    /// ATAPI byte count limit of the current packet command.
    limit: usize,
}

impl Channel {
    fn new() -> Channel {
        Channel {
            drives: [None, None],
            tf: [TaskFile::default(); 2],
            status: [0; 2],
            error: [0; 2],
            intrq: [false; 2],
            devctl: 0,
            sel: 0,
            active: 0,
            state: State::Idle,
            event: None,
            bm: BusMaster::default(),
            limit: 0,
        }
    }

    fn empty(&self) -> bool {
        self.drives.iter().all(|d| d.is_none())
    }

    /// Power-on / SRST: every device loads its signature and diagnostic code.
    fn reset_devices(&mut self) {
        self.state = State::Idle;
        self.event = None;
        self.sel = 0;
        for i in 0..2 {
            self.intrq[i] = false;
            let Some(d) = self.drives[i].as_mut() else {
                self.status[i] = 0;
                self.error[i] = 0;
                self.tf[i] = TaskFile::default();
                continue;
            };
            d.reset();
            let [count, low, mid, high] = d.signature();
            self.tf[i] = TaskFile { count, lba_low: low, lba_mid: mid, lba_high: high, ..Default::default() };
            self.error[i] = 0x01;
            self.status[i] = match d.kind() {
                DriveKind::Disk => status::DRDY | status::DSC,
                DriveKind::Cdrom => 0,
            };
        }
    }

    fn line(&self) -> bool {
        !self.empty() && self.devctl & NIEN == 0 && self.intrq[self.sel]
    }

    fn update_irq(&self, irq: &mut IrqLevels, n: usize) {
        irq.set(IRQS[n], self.line());
    }

    fn raise(&mut self, dev: usize) {
        self.intrq[dev] = true;
        if self.devctl & NIEN == 0 {
            self.bm.status |= BM_INT;
        }
    }

    fn schedule(&mut self, at: VirtTime, ev: Ev) {
        self.event = Some((at, ev));
    }

    fn finish(&mut self, err: u8, atapi: bool) {
        let a = self.active;
        self.state = State::Idle;
        self.error[a] = err;
        self.status[a] = status::DRDY | status::DSC | if err != 0 { status::ERR } else { 0 };
        if atapi {
            self.tf[a].count = IREASON_IO | IREASON_COD;
        }
        self.raise(a);
    }

    fn drive(&mut self) -> Option<&mut Drive> {
        self.drives[self.active].as_mut()
    }

    /// A command register write.
    fn command(&mut self, now: VirtTime, op: u8) {
        let dev = self.sel;
        if self.drives[dev].is_none() || self.status[dev] & status::BSY != 0 {
            return;
        }
        self.active = dev;
        self.intrq[dev] = false;
        self.error[dev] = 0;
        self.state = State::Idle;
        self.event = None;
        let mut tf = self.tf[dev];
        tf.command = op;
        let Some(d) = self.drives[dev].as_mut() else { return };
        let action = d.decode(&tf, false);
        self.status[dev] = status::BSY;
        let at = |bytes: u64| now.add_nanos(latency_ns(bytes));
        match action {
            Action::Done => {
                if op == crate::ata::cmd::CHECK_POWER_MODE {
                    self.tf[dev].count = 0xFF;
                }
                self.schedule(at(0), Ev::Done { err: 0, atapi: false });
            }
            Action::Error(e) => self.schedule(at(0), Ev::Done { err: e, atapi: false }),
            Action::Flush => self.schedule(at(0), Ev::Flush),
            Action::Signature { diag: Some(_) } => self.schedule(at(0), Ev::Diagnostic),
            Action::Signature { diag: None } => {
                // DEVICE RESET: this device only, no interrupt.
                let [count, low, mid, high] = d.signature();
                self.tf[dev] =
                    TaskFile { count, lba_low: low, lba_mid: mid, lba_high: high, ..Default::default() };
                self.error[dev] = 0x01;
                self.status[dev] = 0;
            }
            Action::DataIn { data, dma: _ } => {
                let len = data.len();
                self.state = State::PioIn(PioIn {
                    buf: data,
                    pos: 0,
                    end: 0,
                    chunk: len,
                    disk_off: 0,
                    disk_left: 0,
                    atapi: false,
                });
                self.schedule(at(len as u64), Ev::PioIn);
            }
            Action::Read { lba, count, xfer: Xfer::Pio { block } } => {
                let chunk = block as usize * 512;
                self.state = State::PioIn(PioIn {
                    buf: Vec::new(),
                    pos: 0,
                    end: 0,
                    chunk,
                    disk_off: lba * 512,
                    disk_left: u64::from(count) * 512,
                    atapi: false,
                });
                self.schedule(at(chunk.min(count as usize * 512) as u64), Ev::PioIn);
            }
            Action::Write { lba, count, xfer: Xfer::Pio { block } } => {
                let n = block.min(count);
                self.state =
                    State::PioOut { buf: vec![0; n as usize * 512], pos: 0, lba, left: count, block };
                // The first block is requested at once, without an interrupt.
                self.status[dev] = status::DRDY | status::DSC | status::DRQ;
            }
            Action::Read { lba, count, xfer: _ } | Action::Write { lba, count, xfer: _ } => {
                let write = matches!(action, Action::Write { .. });
                let src = Src::Disk { off: lba * 512, len: u64::from(count) * 512 };
                self.state = State::Dma { src, write, atapi: false };
                self.status[dev] = status::DRDY | status::DSC | status::DRQ;
            }
            Action::Packet { dma } => {
                let lim = usize::from(self.tf[dev].lba_mid) | usize::from(self.tf[dev].lba_high) << 8;
                self.limit = match lim & !1 {
                    0 => 0xFFFE,
                    l => l,
                };
                self.state = State::Cdb { buf: [0; 12], pos: 0, dma };
                self.tf[dev].count = IREASON_COD;
                self.status[dev] = status::DRDY | status::DSC | status::DRQ;
            }
        }
    }

    /// Presents the next PIO data-in block, loading it from the medium if needed.
    fn next_pio_in(&mut self, now: VirtTime) {
        let a = self.active;
        let State::PioIn(mut p) = std::mem::replace(&mut self.state, State::Idle) else { return };
        if p.pos >= p.buf.len() {
            let n = p.disk_left.min(p.chunk as u64) as usize;
            if n == 0 {
                self.finish(0, p.atapi);
                return;
            }
            p.buf.resize(n, 0);
            p.pos = 0;
            let off = p.disk_off;
            let r = self.drives[a].as_mut().map_or(Err(error::ABRT), |d| d.read_at(off, &mut p.buf));
            if let Err(e) = r {
                let e = if p.atapi { sense_error(self.drives[a].as_mut(), e) } else { e };
                self.finish(e, p.atapi);
                return;
            }
            p.disk_off += n as u64;
            p.disk_left -= n as u64;
        }
        p.end = (p.pos + p.chunk).min(p.buf.len());
        if p.atapi {
            let n = (p.end - p.pos) as u16;
            self.tf[a].lba_mid = n as u8;
            self.tf[a].lba_high = (n >> 8) as u8;
            self.tf[a].count = IREASON_IO;
        }
        let _ = now;
        self.status[a] = status::DRDY | status::DSC | status::DRQ;
        self.state = State::PioIn(p);
        self.raise(a);
    }

    fn data_read(&mut self, now: VirtTime, out: &mut [u8]) {
        let a = self.active;
        let State::PioIn(p) = &mut self.state else {
            out.fill(0xFF);
            return;
        };
        if self.status[a] & status::DRQ == 0 {
            out.fill(0xFF);
            return;
        }
        for b in out.iter_mut() {
            *b = if p.pos < p.end {
                p.pos += 1;
                p.buf[p.pos - 1]
            } else {
                0xFF
            };
        }
        if p.pos >= p.end {
            let more = p.pos < p.buf.len() || p.disk_left > 0;
            if more {
                let next = (p.buf.len() - p.pos).max(p.disk_left.min(p.chunk as u64) as usize);
                self.status[a] = status::BSY;
                self.schedule(now.add_nanos(latency_ns(next as u64)), Ev::PioIn);
            } else {
                let atapi = p.atapi;
                if atapi {
                    // The packet's completion interrupt follows the last block.
                    self.status[a] = status::BSY;
                    self.schedule(now.add_nanos(latency_ns(0)), Ev::Done { err: 0, atapi: true });
                } else {
                    self.state = State::Idle;
                    self.status[a] = status::DRDY | status::DSC;
                }
            }
        }
    }

    fn data_write(&mut self, now: VirtTime, data: &[u8]) {
        let a = self.active;
        if self.status[a] & status::DRQ == 0 {
            return;
        }
        match &mut self.state {
            State::PioOut { buf, pos, .. } => {
                for &b in data {
                    if *pos < buf.len() {
                        buf[*pos] = b;
                        *pos += 1;
                    }
                }
                if *pos == buf.len() {
                    let n = buf.len() as u64;
                    self.status[a] = status::BSY;
                    self.schedule(now.add_nanos(latency_ns(n)), Ev::PioOut);
                }
            }
            State::Cdb { buf, pos, .. } => {
                for &b in data {
                    if *pos < 12 {
                        buf[*pos] = b;
                        *pos += 1;
                    }
                }
                if *pos == 12 {
                    self.status[a] = status::BSY;
                    self.schedule(now.add_nanos(latency_ns(0)), Ev::Packet);
                }
            }
            _ => {}
        }
    }

    fn commit_pio_out(&mut self) {
        let a = self.active;
        let State::PioOut { buf, lba, left, block, .. } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        let r = self.drives[a].as_mut().map_or(Err(error::ABRT), |d| d.write_sectors(lba, &buf));
        if let Err(e) = r {
            self.finish(e, false);
            return;
        }
        let n = (buf.len() / 512) as u32;
        let left = left - n;
        if left == 0 {
            self.finish(0, false);
            return;
        }
        let next = block.min(left);
        self.state =
            State::PioOut { buf: vec![0; next as usize * 512], pos: 0, lba: lba + u64::from(n), left, block };
        self.status[a] = status::DRDY | status::DSC | status::DRQ;
        self.raise(a);
    }

    fn run_packet(&mut self, now: VirtTime) {
        let a = self.active;
        let State::Cdb { buf, dma, .. } = std::mem::replace(&mut self.state, State::Idle) else { return };
        let Some(d) = self.drives[a].as_mut() else { return };
        match d.packet(&buf) {
            PacketResult::Done => self.finish(0, true),
            PacketResult::Check(e) => self.finish(e, true),
            PacketResult::Data(v) if dma => self.start_dma(Src::Buf(v), false, true),
            PacketResult::Read { lba, blocks } if dma => {
                let src = Src::Disk { off: lba * CD_BLOCK, len: u64::from(blocks) * CD_BLOCK };
                self.start_dma(src, false, true);
            }
            PacketResult::Data(v) => {
                self.state = State::PioIn(PioIn {
                    buf: v,
                    pos: 0,
                    end: 0,
                    chunk: self.limit,
                    disk_off: 0,
                    disk_left: 0,
                    atapi: true,
                });
                self.next_pio_in(now);
            }
            PacketResult::Read { lba, blocks } => {
                self.state = State::PioIn(PioIn {
                    buf: Vec::new(),
                    pos: 0,
                    end: 0,
                    chunk: self.limit,
                    disk_off: lba * CD_BLOCK,
                    disk_left: u64::from(blocks) * CD_BLOCK,
                    atapi: true,
                });
                self.next_pio_in(now);
            }
        }
    }

    fn start_dma(&mut self, src: Src, write: bool, atapi: bool) {
        let a = self.active;
        self.state = State::Dma { src, write, atapi };
        self.status[a] = status::DRDY | status::DSC | status::DRQ;
        if atapi {
            self.tf[a].count = IREASON_IO;
        }
    }

    fn fire(&mut self, now: VirtTime, ev: Ev) {
        let a = self.active;
        match ev {
            Ev::Done { err, atapi } => self.finish(err, atapi),
            Ev::Flush => {
                let r = self.drive().map_or(Ok(()), |d| d.flush());
                self.finish(r.err().unwrap_or(0), false);
            }
            Ev::PioIn => self.next_pio_in(now),
            Ev::PioOut => self.commit_pio_out(),
            Ev::Packet => self.run_packet(now),
            Ev::DmaDone { err, bm_err, more_prd, atapi } => {
                if !more_prd || bm_err {
                    self.bm.status &= !BM_ACTIVE;
                }
                if bm_err {
                    self.bm.status |= BM_ERROR;
                }
                self.finish(err, atapi);
            }
            Ev::Diagnostic => {
                self.reset_devices();
                let _ = a;
                self.active = 0;
                self.raise(0);
            }
        }
    }

    fn dma_pending(&self, bus_master: bool) -> bool {
        bus_master && self.bm.cmd & BM_START != 0 && matches!(self.state, State::Dma { .. })
    }

    /// The PRD table as regions, and whether it ended with EOT.
    fn prd_regions(&self, mem: &mut dyn DmaMemory) -> Result<Vec<Region>, DmaError> {
        let mut out = Vec::new();
        let mut addr = u64::from(self.bm.prdt & !3);
        for _ in 0..MAX_PRD {
            let mut e = [0u8; 8];
            if !mem.read(addr, &mut e) {
                return Err(DmaError::Memory);
            }
            let base = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & !1;
            let count = match u32::from(u16::from_le_bytes([e[4], e[5]])) & !1 {
                0 => 0x10000,
                c => c,
            };
            out.push(Region { addr: u64::from(base), len: count });
            if e[7] & 0x80 != 0 {
                return Ok(out);
            }
            // The table wraps within its 64 KiB page on real hardware; stopping at MAX_PRD bounds it too.
            addr = (addr & !0xFFFF) | ((addr + 8) & 0xFFFF);
        }
        Ok(out)
    }

    fn run_dma(&mut self, now: VirtTime, mem: &mut dyn DmaMemory) {
        let State::Dma { src, write, atapi } = std::mem::replace(&mut self.state, State::DmaRan) else {
            return;
        };
        let a = self.active;
        let to_mem = self.bm.cmd & BM_WRITE_MEM != 0;
        let len = match &src {
            Src::Disk { len, .. } => *len,
            Src::Buf(b) => b.len() as u64,
        };
        let done = |err: u8, bm_err: bool, more_prd: bool| Ev::DmaDone { err, bm_err, more_prd, atapi };
        let at = now.add_nanos(latency_ns(len));
        if to_mem == write {
            // The bus master's direction contradicts the command.
            self.schedule(at, done(error::ABRT, true, false));
            return;
        }
        let regions = match self.prd_regions(mem) {
            Ok(r) => r,
            Err(_) => {
                self.schedule(at, done(error::ABRT, true, false));
                return;
            }
        };
        let total: u64 = regions.iter().map(|r| u64::from(r.len)).sum();
        let Some(drive) = self.drives[a].as_mut() else { return };
        let r = match src {
            Src::Buf(b) => {
                let mut pos = 0usize;
                to_memory(mem, &regions, len, |piece| {
                    piece.copy_from_slice(&b[pos..pos + piece.len()]);
                    pos += piece.len();
                    Ok(())
                })
            }
            Src::Disk { off, .. } if !write => {
                let mut cur = off;
                to_memory(mem, &regions, len, |piece| {
                    drive.read_at(cur, piece)?;
                    cur += piece.len() as u64;
                    Ok(())
                })
            }
            Src::Disk { off, .. } => {
                let mut cur = off;
                from_memory(mem, &regions, len, |piece| {
                    drive.write_at(cur, piece)?;
                    cur += piece.len() as u64;
                    Ok(())
                })
            }
        };
        let ev = match r {
            Ok(_) => done(0, false, total > len),
            Err(DmaError::Device(e)) => {
                let e = if atapi { sense_error(Some(drive), e) } else { e };
                done(e, false, false)
            }
            Err(DmaError::Memory | DmaError::Short) => done(error::ABRT, true, false),
        };
        self.schedule(at, ev);
    }
}

/// An ATAPI read failure: sets MEDIUM ERROR sense and gives the error register value.
fn sense_error(d: Option<&mut Drive>, _ata: u8) -> u8 {
    if let Some(d) = d {
        d.atapi.sense = [crate::atapi::sense::MEDIUM_ERROR, crate::atapi::asc::READ_ERROR, 0];
    }
    crate::atapi::sense::MEDIUM_ERROR << 4 | error::ABRT
}

/// The PIIX3 IDE controller: two channels and the bus master.
pub struct IdeController {
    ch: [Channel; 2],
    pub(crate) bus_master: bool,
    now: VirtTime,
}

impl Default for IdeController {
    fn default() -> Self {
        Self::new()
    }
}

impl IdeController {
    /// A controller with no drives.
    pub fn new() -> Self {
        IdeController { ch: [Channel::new(), Channel::new()], bus_master: true, now: VirtTime::ZERO }
    }

    /// Attaches `drive` to `channel` (0 primary, 1 secondary) as `unit` (0 master, 1 slave), replacing
    /// what was there. Out-of-range positions are ignored.
    pub fn attach(&mut self, channel: usize, unit: usize, drive: Drive) {
        if channel < 2 && unit < 2 {
            self.ch[channel].drives[unit] = Some(drive);
            self.ch[channel].reset_devices();
        }
    }

    /// The drive at a position.
    pub fn drive_mut(&mut self, channel: usize, unit: usize) -> Option<&mut Drive> {
        self.ch.get_mut(channel)?.drives.get_mut(unit)?.as_mut()
    }

    /// Mirrors the PCI function's bus-master enable bit: without it no DMA reaches memory.
    pub fn set_bus_master_enabled(&mut self, on: bool) {
        self.bus_master = on;
    }

    /// Whether a bus-master transfer waits: the board then calls [`IdeController::run_dma`] before the
    /// guest's next instruction.
    pub fn dma_pending(&self) -> bool {
        self.ch.iter().any(|c| c.dma_pending(self.bus_master))
    }

    /// Runs waiting bus-master transfers over guest memory. Their completion is an event at a
    /// deadline computed from the request.
    pub fn run_dma(&mut self, mem: &mut dyn DmaMemory) {
        let now = self.now;
        for c in &mut self.ch {
            if c.dma_pending(self.bus_master) {
                c.run_dma(now, mem);
            }
        }
    }

    /// Flushes every drive (clean exit).
    pub fn flush_all(&mut self) -> std::io::Result<()> {
        for c in &mut self.ch {
            for d in c.drives.iter_mut().flatten() {
                d.flush().map_err(|e| std::io::Error::other(format!("ATA error {e:#x}")))?;
            }
        }
        Ok(())
    }

    fn reg_read(&mut self, n: usize, reg: u16, out: &mut [u8]) {
        let c = &mut self.ch[n];
        if c.empty() {
            out.fill(0xFF);
            return;
        }
        if reg == 0 {
            c.data_read(self.now, out);
            return;
        }
        let s = c.sel;
        let tf = &c.tf[s];
        let hob = c.devctl & HOB != 0;
        let v = match reg {
            1 => c.error[s],
            2 => {
                if hob {
                    tf.hob_count
                } else {
                    tf.count
                }
            }
            3 => {
                if hob {
                    tf.hob_lba_low
                } else {
                    tf.lba_low
                }
            }
            4 => {
                if hob {
                    tf.hob_lba_mid
                } else {
                    tf.lba_mid
                }
            }
            5 => {
                if hob {
                    tf.hob_lba_high
                } else {
                    tf.lba_high
                }
            }
            6 => tf.device | 0xA0,
            7 | 8 => {
                if reg == 7 {
                    c.intrq[s] = false;
                }
                // An absent device selected beside a present one reads 0.
                if c.drives[s].is_none() { 0 } else { c.status[s] }
            }
            _ => 0xFF,
        };
        out.fill(0);
        out[0] = v;
    }

    fn reg_write(&mut self, n: usize, reg: u16, data: &[u8]) {
        let now = self.now;
        let c = &mut self.ch[n];
        if reg == 0 {
            c.data_write(now, data);
            return;
        }
        let v = data[0];
        if reg == 8 {
            let old = c.devctl;
            c.devctl = v;
            if v & SRST != 0 && old & SRST == 0 {
                for i in 0..2 {
                    if c.drives[i].is_some() {
                        c.status[i] = status::BSY;
                    }
                }
                c.state = State::Idle;
                c.event = None;
            } else if v & SRST == 0 && old & SRST != 0 {
                c.reset_devices();
            }
            return;
        }
        if c.status[c.sel] & status::BSY != 0 && c.drives[c.sel].is_some() {
            return; // writes while busy are ignored
        }
        c.devctl &= !HOB;
        for tf in &mut c.tf {
            match reg {
                1 => (tf.hob_features, tf.features) = (tf.features, v),
                2 => (tf.hob_count, tf.count) = (tf.count, v),
                3 => (tf.hob_lba_low, tf.lba_low) = (tf.lba_low, v),
                4 => (tf.hob_lba_mid, tf.lba_mid) = (tf.lba_mid, v),
                5 => (tf.hob_lba_high, tf.lba_high) = (tf.lba_high, v),
                6 => tf.device = v,
                _ => {}
            }
        }
        match reg {
            6 => c.sel = usize::from(v >> 4 & 1),
            7 => c.command(now, v),
            _ => {}
        }
    }

    fn bm_read(&self, off: u16, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            let o = off + i as u16;
            let c = &self.ch[usize::from(o >> 3 & 1)];
            *b = match o & 7 {
                0 => c.bm.cmd,
                2 => c.bm.status,
                4..=7 => c.bm.prdt.to_le_bytes()[usize::from(o & 3)],
                _ => 0,
            };
        }
    }

    fn bm_write(&mut self, off: u16, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let o = off + i as u16;
            let c = &mut self.ch[usize::from(o >> 3 & 1)];
            match o & 7 {
                0 => {
                    let v = v & (BM_START | BM_WRITE_MEM);
                    if v & BM_START != 0 && c.bm.cmd & BM_START == 0 {
                        c.bm.status |= BM_ACTIVE;
                    } else if v & BM_START == 0 && c.bm.cmd & BM_START != 0 {
                        c.bm.status &= !BM_ACTIVE;
                    }
                    c.bm.cmd = v;
                }
                2 => {
                    // Bits 6:5 (drive DMA capable) are read/write, 2:1 write-one-to-clear.
                    c.bm.status = (c.bm.status & !0x60 & !(v & (BM_ERROR | BM_INT))) | (v & 0x60);
                }
                4..=7 => {
                    let mut b = c.bm.prdt.to_le_bytes();
                    b[usize::from(o & 3)] = v;
                    c.bm.prdt = u32::from_le_bytes(b) & !3;
                }
                _ => {}
            }
        }
    }

    fn sync_irqs(&self, irq: &mut IrqLevels) {
        for (n, c) in self.ch.iter().enumerate() {
            c.update_irq(irq, n);
        }
    }
}

impl Device for IdeController {
    fn name(&self) -> &str {
        "piix3-ide"
    }

    fn pio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        self.now = ctx.now;
        self.advance_to(ctx.now);
        match offset {
            0x00..=0x0F => self.bm_read(offset, data),
            0x10..=0x18 => self.reg_read(0, offset - PRIMARY, data),
            0x20..=0x28 => self.reg_read(1, offset - SECONDARY, data),
            _ => data.fill(0xFF),
        }
        self.sync_irqs(ctx.irq);
    }

    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        self.now = ctx.now;
        self.advance_to(ctx.now);
        let before = self.next_deadline();
        match offset {
            0x00..=0x0F => self.bm_write(offset, data),
            0x10..=0x18 => self.reg_write(0, offset - PRIMARY, data),
            0x20..=0x28 => self.reg_write(1, offset - SECONDARY, data),
            _ => {}
        }
        if self.next_deadline() != before {
            ctx.requests.reschedule = true;
        }
        self.sync_irqs(ctx.irq);
    }

    fn reset(&mut self) {
        for c in &mut self.ch {
            c.devctl = 0;
            c.bm = BusMaster::default();
            c.reset_devices();
        }
    }

    fn next_deadline(&self) -> Option<VirtTime> {
        self.ch.iter().filter_map(|c| c.event.map(|e| e.0)).min()
    }

    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        self.now = ctx.now;
        self.advance_to(ctx.now);
        self.sync_irqs(ctx.irq);
    }
}

impl Snapshot for IdeController {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        self.save_state(w);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        self.restore_state(r)
    }
}

impl IdeController {
    /// Fires every event due at `now` (an event may schedule another, which fires too if due).
    fn advance_to(&mut self, now: VirtTime) {
        for c in &mut self.ch {
            // Each firing either ends the command or schedules strictly later work, so this is bounded
            // by the number of DRQ blocks due; cap it anyway.
            for _ in 0..1024 {
                match c.event {
                    Some((t, ev)) if t <= now => {
                        c.event = None;
                        c.fire(t, ev);
                    }
                    _ => break,
                }
            }
        }
    }
}

// ---------------------------------------------------------------- snapshots

/// Largest buffer a restored transfer may hold (a PIO block, an ATAPI response, a 256-sector write).
const MAX_SNAPSHOT_BUF: usize = 1 << 24;

fn bad(what: &str) -> SnapshotError {
    SnapshotError::Invalid(format!("IDE: {what}"))
}

fn load_buf(r: &mut SnapshotReader<'_>) -> Result<Vec<u8>, SnapshotError> {
    let b = r.bytes()?;
    if b.len() > MAX_SNAPSHOT_BUF {
        return Err(bad("transfer buffer too large"));
    }
    Ok(b.to_vec())
}

fn load_usize(r: &mut SnapshotReader<'_>, max: usize, what: &str) -> Result<usize, SnapshotError> {
    let v = r.u64()?;
    if v > max as u64 {
        return Err(bad(what));
    }
    Ok(v as usize)
}

impl State {
    fn save(&self, w: &mut SnapshotWriter) {
        match self {
            State::Idle => w.u8(0),
            State::PioIn(p) => {
                w.u8(1);
                w.bytes(&p.buf);
                for v in [p.pos as u64, p.end as u64, p.chunk as u64, p.disk_off, p.disk_left] {
                    w.u64(v);
                }
                w.bool(p.atapi);
            }
            State::PioOut { buf, pos, lba, left, block } => {
                w.u8(2);
                w.bytes(buf);
                w.u64(*pos as u64);
                w.u64(*lba);
                w.u32(*left);
                w.u32(*block);
            }
            State::Cdb { buf, pos, dma } => {
                w.u8(3);
                w.bytes(buf);
                w.u64(*pos as u64);
                w.bool(*dma);
            }
            State::Dma { src, write, atapi } => {
                w.u8(4);
                match src {
                    Src::Disk { off, len } => {
                        w.u8(0);
                        w.u64(*off);
                        w.u64(*len);
                    }
                    Src::Buf(b) => {
                        w.u8(1);
                        w.bytes(b);
                    }
                }
                w.bool(*write);
                w.bool(*atapi);
            }
            State::DmaRan => w.u8(5),
        }
    }

    /// Reads [`State::save`], refusing states the controller could never be in (so that no index can
    /// run past a buffer afterwards).
    fn load(r: &mut SnapshotReader<'_>) -> Result<State, SnapshotError> {
        Ok(match r.u8()? {
            0 => State::Idle,
            1 => {
                let buf = load_buf(r)?;
                let pos = load_usize(r, buf.len(), "PIO-in position")?;
                let end = load_usize(r, buf.len(), "PIO-in block end")?;
                let chunk = load_usize(r, MAX_SNAPSHOT_BUF, "PIO-in block size")?;
                let (disk_off, disk_left) = (r.u64()?, r.u64()?);
                if pos > end || chunk == 0 || disk_left > MAX_SNAPSHOT_BUF as u64 {
                    return Err(bad("PIO-in state"));
                }
                State::PioIn(PioIn { buf, pos, end, chunk, disk_off, disk_left, atapi: r.bool()? })
            }
            2 => {
                let buf = load_buf(r)?;
                let pos = load_usize(r, buf.len(), "PIO-out position")?;
                let (lba, left, block) = (r.u64()?, r.u32()?, r.u32()?);
                if buf.len() % 512 != 0 || (buf.len() / 512) as u64 > u64::from(left) {
                    return Err(bad("PIO-out state"));
                }
                State::PioOut { buf, pos, lba, left, block }
            }
            3 => {
                let b = r.bytes()?;
                let buf: [u8; 12] = b.try_into().map_err(|_| bad("packet length"))?;
                let pos = load_usize(r, 12, "packet position")?;
                State::Cdb { buf, pos, dma: r.bool()? }
            }
            4 => {
                let src = match r.u8()? {
                    0 => Src::Disk { off: r.u64()?, len: r.u64()? },
                    1 => Src::Buf(load_buf(r)?),
                    _ => return Err(bad("DMA source")),
                };
                State::Dma { src, write: r.bool()?, atapi: r.bool()? }
            }
            5 => State::DmaRan,
            _ => return Err(bad("channel state")),
        })
    }
}

impl Ev {
    fn save(&self, w: &mut SnapshotWriter) {
        match *self {
            Ev::Done { err, atapi } => {
                w.u8(0);
                w.u8(err);
                w.bool(atapi);
            }
            Ev::Flush => w.u8(1),
            Ev::PioIn => w.u8(2),
            Ev::PioOut => w.u8(3),
            Ev::Packet => w.u8(4),
            Ev::DmaDone { err, bm_err, more_prd, atapi } => {
                w.u8(5);
                w.u8(err);
                w.bool(bm_err);
                w.bool(more_prd);
                w.bool(atapi);
            }
            Ev::Diagnostic => w.u8(6),
        }
    }

    fn load(r: &mut SnapshotReader<'_>) -> Result<Ev, SnapshotError> {
        Ok(match r.u8()? {
            0 => Ev::Done { err: r.u8()?, atapi: r.bool()? },
            1 => Ev::Flush,
            2 => Ev::PioIn,
            3 => Ev::PioOut,
            4 => Ev::Packet,
            5 => Ev::DmaDone { err: r.u8()?, bm_err: r.bool()?, more_prd: r.bool()?, atapi: r.bool()? },
            6 => Ev::Diagnostic,
            _ => return Err(bad("event")),
        })
    }
}

impl Channel {
    fn save(&self, w: &mut SnapshotWriter) {
        w.tag("ide-channel");
        for d in &self.drives {
            w.bool(d.is_some());
            if let Some(d) = d {
                d.save_state(w);
            }
        }
        for i in 0..2 {
            self.tf[i].save(w);
            w.u8(self.status[i]);
            w.u8(self.error[i]);
            w.bool(self.intrq[i]);
        }
        w.u8(self.devctl);
        w.u8(self.sel as u8);
        w.u8(self.active as u8);
        self.state.save(w);
        w.bool(self.event.is_some());
        if let Some((at, ev)) = self.event {
            w.u64(at.0);
            ev.save(w);
        }
        w.u8(self.bm.cmd);
        w.u8(self.bm.status);
        w.u32(self.bm.prdt);
        w.u64(self.limit as u64);
    }

    /// Restores [`Channel::save`]; the drives must be where the snapshot had them. Nothing changes
    /// unless all of it reads back.
    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        r.tag("ide-channel")?;
        let mut next = Channel::new();
        next.drives = std::mem::take(&mut self.drives);
        let res = (|| {
            for d in &mut next.drives {
                match (r.bool()?, d.as_mut()) {
                    (false, None) => {}
                    (true, Some(d)) => d.restore_state(r)?,
                    _ => return Err(bad("the snapshot's drives are not the machine's")),
                }
            }
            for i in 0..2 {
                next.tf[i] = TaskFile::load(r)?;
                next.status[i] = r.u8()?;
                next.error[i] = r.u8()?;
                next.intrq[i] = r.bool()?;
            }
            next.devctl = r.u8()?;
            next.sel = usize::from(r.u8()?);
            next.active = usize::from(r.u8()?);
            if next.sel > 1 || next.active > 1 {
                return Err(bad("selected device"));
            }
            next.state = State::load(r)?;
            next.event = if r.bool()? { Some((VirtTime(r.u64()?), Ev::load(r)?)) } else { None };
            next.bm = BusMaster { cmd: r.u8()?, status: r.u8()?, prdt: r.u32()? };
            next.limit = load_usize(r, 0x1_0000, "ATAPI byte count limit")?;
            Ok(())
        })();
        match res {
            Ok(()) => {
                *self = next;
                Ok(())
            }
            Err(e) => {
                self.drives = next.drives;
                Err(e)
            }
        }
    }
}

impl IdeController {
    /// Writes the controller's whole state: both channels (task files, status, the transfer under way,
    /// the pending completion and its time, the bus master) and each drive's guest-visible state.
    pub fn save_state(&self, w: &mut SnapshotWriter) {
        w.tag("ide");
        w.bool(self.bus_master);
        w.u64(self.now.0);
        for c in &self.ch {
            c.save(w);
        }
    }

    /// Restores [`IdeController::save_state`] into a controller with the same drives. A snapshot that
    /// does not read back whole changes nothing.
    pub fn restore_state(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        let mut w = SnapshotWriter::new();
        self.save_state(&mut w);
        let before = w.finish();
        let res = self.load_state(r);
        if res.is_err() {
            // What this controller itself wrote reads back.
            let _ = self.load_state(&mut SnapshotReader::new(&before));
        }
        res
    }

    fn load_state(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        r.tag("ide")?;
        let bus_master = r.bool()?;
        let now = VirtTime(r.u64()?);
        for c in &mut self.ch {
            c.restore(r)?;
        }
        self.bus_master = bus_master;
        self.now = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
