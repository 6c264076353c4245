//! The ATA command set (ATA/ATAPI-6, with the SATA NCQ commands of ATA8-ACS), written once for both
//! transports.
//!
//! A transport (the IDE channel of [`crate::ide`], the AHCI port of [`crate::ahci`]) collects a
//! [`TaskFile`] (the register values, with the "previous" bytes of 48-bit commands) and hands it to
//! [`Drive::decode`], which validates it against the drive and says what to do as an [`Action`]:
//! complete at once, fail with an error register value, or move sectors (by PIO, DMA or a queued DMA)
//! between the image and the host. The transport moves the data in bounded pieces with
//! [`Drive::read_sectors`] / [`Drive::write_sectors`], so no guest request allocates more than one
//! piece. ATAPI's PACKET command is decoded here; the packet itself goes to [`crate::atapi`].
//!
//! Out-of-range addresses give IDNF (with ABRT for commands whose count is zero-length-invalid), an
//! unknown or unsupported command ABRT, a host I/O error UNC on reads and ABRT on writes.

use vmcore::{SnapshotError, SnapshotReader, SnapshotWriter};

use crate::atapi::{AtapiState, MediaEvent};
use crate::backend::{BlockBackend, SECTOR};

/// Status register bits.
pub mod status {
    /// Busy.
    pub const BSY: u8 = 0x80;
    /// Device ready.
    pub const DRDY: u8 = 0x40;
    /// Device fault.
    pub const DF: u8 = 0x20;
    /// Seek complete / service (set with DRDY, as drives do).
    pub const DSC: u8 = 0x10;
    /// Data request.
    pub const DRQ: u8 = 0x08;
    /// Error.
    pub const ERR: u8 = 0x01;
}

/// Error register bits.
pub mod error {
    /// Uncorrectable data error.
    pub const UNC: u8 = 0x40;
    /// ID not found (address out of range).
    pub const IDNF: u8 = 0x10;
    /// Command aborted.
    pub const ABRT: u8 = 0x04;
}

/// Command opcodes.
#[allow(missing_docs)]
pub mod cmd {
    pub const NOP: u8 = 0x00;
    pub const DEVICE_RESET: u8 = 0x08;
    pub const RECALIBRATE: u8 = 0x10;
    pub const READ_SECTORS: u8 = 0x20;
    pub const READ_SECTORS_NR: u8 = 0x21;
    pub const READ_SECTORS_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE_SECTORS: u8 = 0x30;
    pub const WRITE_SECTORS_NR: u8 = 0x31;
    pub const WRITE_SECTORS_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const READ_VERIFY: u8 = 0x40;
    pub const READ_VERIFY_NR: u8 = 0x41;
    pub const READ_VERIFY_EXT: u8 = 0x42;
    pub const READ_FPDMA_QUEUED: u8 = 0x60;
    pub const WRITE_FPDMA_QUEUED: u8 = 0x61;
    pub const EXECUTE_DIAGNOSTIC: u8 = 0x90;
    pub const INIT_PARAMS: u8 = 0x91;
    pub const PACKET: u8 = 0xA0;
    pub const IDENTIFY_PACKET: u8 = 0xA1;
    pub const READ_MULTIPLE: u8 = 0xC4;
    pub const WRITE_MULTIPLE: u8 = 0xC5;
    pub const SET_MULTIPLE: u8 = 0xC6;
    pub const READ_DMA: u8 = 0xC8;
    pub const READ_DMA_NR: u8 = 0xC9;
    pub const WRITE_DMA: u8 = 0xCA;
    pub const WRITE_DMA_NR: u8 = 0xCB;
    pub const STANDBY_IMMEDIATE: u8 = 0xE0;
    pub const IDLE_IMMEDIATE: u8 = 0xE1;
    pub const STANDBY: u8 = 0xE2;
    pub const IDLE: u8 = 0xE3;
    pub const CHECK_POWER_MODE: u8 = 0xE5;
    pub const FLUSH_CACHE: u8 = 0xE7;
    pub const FLUSH_CACHE_EXT: u8 = 0xEA;
    pub const IDENTIFY: u8 = 0xEC;
    pub const SET_FEATURES: u8 = 0xEF;
}

/// Largest SET MULTIPLE block (sectors), reported in IDENTIFY word 47.
pub const MAX_MULTIPLE: u16 = 16;
/// NCQ queue depth reported in IDENTIFY word 75.
pub const NCQ_DEPTH: u8 = 32;
/// Bytes in a CD-ROM block.
pub const CD_BLOCK: u64 = 2048;
/// Fixed virtual-time cost of any command, in nanoseconds.
pub const COMMAND_NS: u64 = 10_000;
/// Virtual-time cost of each 512 bytes moved, in nanoseconds.
pub const SECTOR_NS: u64 = 1_000;

/// The virtual time a command moving `bytes` takes: a pure function of the request, so completions
/// land on the same instruction in every run.
pub fn latency_ns(bytes: u64) -> u64 {
    COMMAND_NS + bytes.div_ceil(SECTOR) * SECTOR_NS
}

/// The command block registers as written by the host: for 48-bit commands the `hob_` bytes are the
/// previous contents of each register ("high order bytes").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFile {
    /// Features.
    pub features: u8,
    /// Features, previous.
    pub hob_features: u8,
    /// Sector count.
    pub count: u8,
    /// Sector count, previous.
    pub hob_count: u8,
    /// LBA low (sector number).
    pub lba_low: u8,
    /// LBA mid (cylinder low).
    pub lba_mid: u8,
    /// LBA high (cylinder high).
    pub lba_high: u8,
    /// LBA low, previous.
    pub hob_lba_low: u8,
    /// LBA mid, previous.
    pub hob_lba_mid: u8,
    /// LBA high, previous.
    pub hob_lba_high: u8,
    /// Device/head.
    pub device: u8,
    /// Command.
    pub command: u8,
}

impl TaskFile {
    /// The 48-bit LBA.
    pub fn lba48(&self) -> u64 {
        u64::from_le_bytes([
            self.lba_low,
            self.lba_mid,
            self.lba_high,
            self.hob_lba_low,
            self.hob_lba_mid,
            self.hob_lba_high,
            0,
            0,
        ])
    }

    /// The 48-bit sector count (0 means 65536).
    pub fn count48(&self) -> u32 {
        match u32::from(self.count) | u32::from(self.hob_count) << 8 {
            0 => 65536,
            n => n,
        }
    }

    /// The 28-bit sector count (0 means 256).
    pub fn count28(&self) -> u32 {
        if self.count == 0 { 256 } else { u32::from(self.count) }
    }
}

/// What kind of device a drive is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveKind {
    /// An ATA hard disk.
    Disk,
    /// An ATAPI CD-ROM.
    Cdrom,
}

/// How a data command moves its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xfer {
    /// PIO, interrupting every `block` sectors (1, or the SET MULTIPLE value).
    Pio {
        /// Sectors per DRQ block.
        block: u32,
    },
    /// DMA (bus master / PRDT).
    Dma,
    /// First-party DMA queued (NCQ) with this tag.
    Queued {
        /// The NCQ tag (0-31).
        tag: u8,
    },
}

/// What the transport does with a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Completed without data; report success.
    Done,
    /// Completed with an error: the error register's value.
    Error(u8),
    /// Move `count` sectors from the image at `lba` to the host.
    Read {
        /// First sector.
        lba: u64,
        /// Number of sectors.
        count: u32,
        /// How.
        xfer: Xfer,
    },
    /// Move `count` sectors from the host to the image at `lba`.
    Write {
        /// First sector.
        lba: u64,
        /// Number of sectors.
        count: u32,
        /// How.
        xfer: Xfer,
    },
    /// Send this small buffer (IDENTIFY) to the host, by PIO or (`dma`) DMA.
    DataIn {
        /// The bytes.
        data: Vec<u8>,
        /// By DMA.
        dma: bool,
    },
    /// Flush the write cache, then report success (or an error if the host fails).
    Flush,
    /// Receive a 12-byte ATAPI packet, then run it (`dma`: its data moves by DMA).
    Packet {
        /// Data by DMA.
        dma: bool,
    },
    /// EXECUTE DEVICE DIAGNOSTIC or DEVICE RESET: the transport loads the signature; `diag` gives
    /// the diagnostic code for the error register (0x01: passed).
    Signature {
        /// Diagnostic code for the error register, if a diagnostic ran.
        diag: Option<u8>,
    },
}

/// An ATA or ATAPI device and its image.
pub struct Drive {
    kind: DriveKind,
    pub(crate) backend: Option<Box<dyn BlockBackend>>,
    /// Sectors (disk: 512 bytes).
    pub(crate) sectors: u64,
    /// SET MULTIPLE block size; 0: READ/WRITE MULTIPLE abort.
    multiple: u16,
    write_cache: bool,
    /// Selected transfer mode byte from SET FEATURES 03h.
    xfer_mode: u8,
    /// Whether the drive sits behind SATA (AHCI): IDENTIFY reports NCQ and SATA speeds.
    sata: bool,
    serial: String,
    model: String,
    /// ATAPI state (sense, media, lock).
    pub atapi: AtapiState,
}

impl std::fmt::Debug for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive").field("kind", &self.kind).field("sectors", &self.sectors).finish()
    }
}

fn put_string(id: &mut [u16], word: usize, words: usize, s: &str) {
    let mut bytes = s.as_bytes().to_vec();
    bytes.resize(words * 2, b' ');
    for i in 0..words {
        id[word + i] = u16::from(bytes[2 * i]) << 8 | u16::from(bytes[2 * i + 1]);
    }
}

fn words_to_bytes(id: &mut [u16; 256]) -> Vec<u8> {
    // Word 255: signature A5h and a checksum making all 512 bytes sum to zero.
    id[255] = 0x00A5;
    let sum = id.iter().flat_map(|w| w.to_le_bytes()).fold(0u8, |a, b| a.wrapping_add(b));
    id[255] |= u16::from(sum.wrapping_neg()) << 8;
    id.iter().flat_map(|w| w.to_le_bytes()).collect()
}

impl Drive {
    /// A hard disk over `backend`.
    pub fn disk(backend: Box<dyn BlockBackend>, serial: &str) -> Drive {
        let sectors = backend.size() / SECTOR;
        Drive {
            kind: DriveKind::Disk,
            backend: Some(backend),
            sectors,
            multiple: 0,
            write_cache: true,
            xfer_mode: 0,
            sata: false,
            serial: serial.into(),
            model: "FERRITE HARDDISK".into(),
            atapi: AtapiState::default(),
        }
    }

    /// A CD-ROM drive, with a disc (an ISO image) or empty.
    pub fn cdrom(media: Option<Box<dyn BlockBackend>>, serial: &str) -> Drive {
        let mut d = Drive {
            kind: DriveKind::Cdrom,
            backend: None,
            sectors: 0,
            multiple: 0,
            write_cache: false,
            xfer_mode: 0,
            sata: false,
            serial: serial.into(),
            model: "FERRITE DVD-ROM".into(),
            atapi: AtapiState::default(),
        };
        if let Some(m) = media {
            d.insert_media(m);
            // A disc present at power-on is no change.
            d.atapi = AtapiState::default();
        }
        d
    }

    /// Tells the drive it sits behind a SATA (AHCI) port.
    pub fn set_sata(&mut self, sata: bool) {
        self.sata = sata;
    }

    /// The kind of device.
    pub fn kind(&self) -> DriveKind {
        self.kind
    }

    /// Number of sectors (disk) or 2048-byte blocks (CD-ROM).
    pub fn capacity(&self) -> u64 {
        self.sectors
    }

    /// Whether a medium is present.
    pub fn has_media(&self) -> bool {
        self.backend.is_some()
    }

    /// Inserts a disc (CD-ROM): the next command reports a medium change.
    pub fn insert_media(&mut self, media: Box<dyn BlockBackend>) {
        self.sectors = media.size() / CD_BLOCK;
        self.backend = Some(media);
        self.atapi.media_changed(true);
    }

    /// Removes the disc (CD-ROM), unless the guest locked the tray. Returns whether it was removed.
    pub fn eject(&mut self) -> bool {
        if self.atapi.locked || self.backend.is_none() {
            return false;
        }
        self.backend = None;
        self.sectors = 0;
        self.atapi.media_changed(false);
        true
    }

    /// The device's signature in (count, lba low, lba mid, lba high).
    pub fn signature(&self) -> [u8; 4] {
        match self.kind {
            DriveKind::Disk => [1, 1, 0, 0],
            DriveKind::Cdrom => [1, 1, 0x14, 0xEB],
        }
    }

    /// Back to the power-on settings (hardware reset, SRST, COMRESET): multiple mode off, write cache
    /// on. The disc and its lock stay.
    pub fn reset(&mut self) {
        self.multiple = 0;
        self.write_cache = self.kind == DriveKind::Disk;
        self.xfer_mode = 0;
    }

    /// CHS geometry (cylinders, heads, sectors per track) for IDENTIFY and CHS addressing.
    pub fn geometry(&self) -> (u32, u32, u32) {
        let cyl = (self.sectors / (16 * 63)).clamp(1, 16383) as u32;
        (cyl, 16, 63)
    }

    /// IDENTIFY DEVICE data.
    pub fn identify(&self) -> Vec<u8> {
        let mut id = [0u16; 256];
        let (cyl, heads, spt) = self.geometry();
        id[0] = 0x0040;
        id[1] = cyl as u16;
        id[3] = heads as u16;
        id[6] = spt as u16;
        put_string(&mut id, 10, 10, &self.serial);
        put_string(&mut id, 23, 4, "1.0");
        put_string(&mut id, 27, 20, &self.model);
        id[47] = 0x8000 | MAX_MULTIPLE;
        id[49] = (1 << 9) | (1 << 8); // LBA, DMA
        id[50] = 0x4000;
        id[53] = 0x0007;
        let chs = u64::from(cyl) * u64::from(heads) * u64::from(spt);
        id[54] = cyl as u16;
        id[55] = heads as u16;
        id[56] = spt as u16;
        id[57] = chs as u16;
        id[58] = (chs >> 16) as u16;
        if self.multiple != 0 {
            id[59] = 0x0100 | self.multiple;
        }
        let lba28 = self.sectors.min(0x0FFF_FFFF);
        id[60] = lba28 as u16;
        id[61] = (lba28 >> 16) as u16;
        self.put_dma_words(&mut id);
        if self.sata {
            id[75] = u16::from(NCQ_DEPTH - 1);
            id[76] = (1 << 8) | (1 << 2) | (1 << 1); // NCQ, SATA 3 Gb/s and 1.5 Gb/s
        }
        id[80] = 0x00F0; // ATA/ATAPI-4 to -7
        id[82] = (1 << 5) | (1 << 6); // write cache, look-ahead
        id[83] = 0x4000 | (1 << 13) | (1 << 12) | (1 << 10); // FLUSH CACHE EXT, FLUSH CACHE, 48-bit
        id[84] = 0x4000;
        id[85] = (u16::from(self.write_cache) << 5) | (1 << 6);
        id[86] = (1 << 13) | (1 << 12) | (1 << 10);
        id[87] = 0x4000;
        id[93] = 0x6001; // master, 80-conductor cable
        for i in 0..4 {
            id[100 + i] = (self.sectors >> (16 * i)) as u16;
        }
        words_to_bytes(&mut id)
    }

    fn put_dma_words(&self, id: &mut [u16; 256]) {
        let sel = |class: u8| -> u16 {
            if self.xfer_mode >> 3 == class { 1 << (8 + (self.xfer_mode & 7)) } else { 0 }
        };
        id[63] = 0x0007 | sel(4); // multiword DMA 0-2
        id[64] = 0x0003; // PIO 3 and 4
        id[65] = 120;
        id[66] = 120;
        id[67] = 120;
        id[68] = 120;
        id[88] = 0x003F | sel(8); // Ultra DMA 0-5
    }

    /// IDENTIFY PACKET DEVICE data (CD-ROM).
    pub fn identify_packet(&self) -> Vec<u8> {
        let mut id = [0u16; 256];
        id[0] = 0x85C0; // ATAPI, CD-ROM, removable, 50 us DRQ, 12-byte packets
        put_string(&mut id, 10, 10, &self.serial);
        put_string(&mut id, 23, 4, "1.0");
        put_string(&mut id, 27, 20, &self.model);
        id[49] = (1 << 9) | (1 << 8);
        id[53] = 0x0007;
        self.put_dma_words(&mut id);
        id[71] = 30;
        id[72] = 30;
        id[80] = 0x0070; // ATAPI-4 to -6
        id[82] = (1 << 4) | (1 << 14); // PACKET feature set, NOP
        id[83] = 0x4000;
        id[84] = 0x4000;
        id[85] = 1 << 4;
        id[87] = 0x4000;
        id[93] = 0x6001;
        words_to_bytes(&mut id)
    }

    /// Checks that `count` sectors from `lba` lie inside the disk.
    fn in_range(&self, lba: u64, count: u32) -> bool {
        lba.checked_add(u64::from(count)).is_some_and(|e| e <= self.sectors)
    }

    /// The LBA of a 28-bit command: LBA mode, or CHS translated with [`Drive::geometry`].
    fn lba28(&self, tf: &TaskFile) -> Option<u64> {
        if tf.device & 0x40 != 0 {
            return Some(
                u64::from(tf.device & 0x0F) << 24
                    | u64::from(tf.lba_high) << 16
                    | u64::from(tf.lba_mid) << 8
                    | u64::from(tf.lba_low),
            );
        }
        let (_, heads, spt) = self.geometry();
        let cyl = u64::from(tf.lba_mid) | u64::from(tf.lba_high) << 8;
        let head = u64::from(tf.device & 0x0F);
        let sector = u64::from(tf.lba_low);
        if sector == 0 || sector > u64::from(spt) || head >= u64::from(heads) {
            return None;
        }
        Some((cyl * u64::from(heads) + head) * u64::from(spt) + sector - 1)
    }

    fn rw(&self, tf: &TaskFile, ext: bool, write: bool, xfer: Xfer) -> Action {
        if self.kind != DriveKind::Disk {
            return Action::Error(error::ABRT);
        }
        if matches!(xfer, Xfer::Pio { block: 0 }) {
            return Action::Error(error::ABRT); // MULTIPLE without SET MULTIPLE
        }
        let (lba, count) =
            if ext { (Some(tf.lba48()), tf.count48()) } else { (self.lba28(tf), tf.count28()) };
        match lba {
            Some(lba) if self.in_range(lba, count) => {
                if write {
                    Action::Write { lba, count, xfer }
                } else {
                    Action::Read { lba, count, xfer }
                }
            }
            _ => Action::Error(error::IDNF | error::ABRT),
        }
    }

    /// Decodes the command in `tf`. `ncq` says whether the transport can run queued commands (AHCI).
    pub fn decode(&mut self, tf: &TaskFile, ncq: bool) -> Action {
        use cmd::*;
        let disk = self.kind == DriveKind::Disk;
        let single = Xfer::Pio { block: 1 };
        let multiple = Xfer::Pio { block: u32::from(self.multiple) };
        match tf.command {
            IDENTIFY if disk => Action::DataIn { data: self.identify(), dma: false },
            IDENTIFY_PACKET if !disk => Action::DataIn { data: self.identify_packet(), dma: false },
            READ_SECTORS | READ_SECTORS_NR => self.rw(tf, false, false, single),
            READ_SECTORS_EXT => self.rw(tf, true, false, single),
            WRITE_SECTORS | WRITE_SECTORS_NR => self.rw(tf, false, true, single),
            WRITE_SECTORS_EXT => self.rw(tf, true, true, single),
            READ_MULTIPLE => self.rw(tf, false, false, multiple),
            READ_MULTIPLE_EXT => self.rw(tf, true, false, multiple),
            WRITE_MULTIPLE => self.rw(tf, false, true, multiple),
            WRITE_MULTIPLE_EXT => self.rw(tf, true, true, multiple),
            READ_DMA | READ_DMA_NR => self.rw(tf, false, false, Xfer::Dma),
            READ_DMA_EXT => self.rw(tf, true, false, Xfer::Dma),
            WRITE_DMA | WRITE_DMA_NR => self.rw(tf, false, true, Xfer::Dma),
            WRITE_DMA_EXT => self.rw(tf, true, true, Xfer::Dma),
            READ_FPDMA_QUEUED | WRITE_FPDMA_QUEUED if ncq && disk => {
                // Count in the features registers, tag in count bits 7:3, FUA in device bit 7.
                let q = TaskFile {
                    count: tf.features,
                    hob_count: tf.hob_features,
                    features: 0,
                    hob_features: 0,
                    ..*tf
                };
                self.rw(&q, true, tf.command == WRITE_FPDMA_QUEUED, Xfer::Queued { tag: tf.count >> 3 })
            }
            SET_MULTIPLE if disk => {
                let n = u16::from(tf.count);
                if n == 0 || (n.is_power_of_two() && n <= MAX_MULTIPLE) {
                    self.multiple = n;
                    Action::Done
                } else {
                    Action::Error(error::ABRT)
                }
            }
            READ_VERIFY | READ_VERIFY_NR => self.verify(tf, false),
            READ_VERIFY_EXT => self.verify(tf, true),
            FLUSH_CACHE | FLUSH_CACHE_EXT if disk => Action::Flush,
            SET_FEATURES => self.set_features(tf),
            EXECUTE_DIAGNOSTIC => {
                self.reset();
                Action::Signature { diag: Some(0x01) }
            }
            DEVICE_RESET if !disk => {
                self.reset();
                Action::Signature { diag: None }
            }
            PACKET if !disk => Action::Packet { dma: tf.features & 1 != 0 },
            INIT_PARAMS | RECALIBRATE if disk => Action::Done,
            STANDBY_IMMEDIATE | IDLE_IMMEDIATE | STANDBY | IDLE => Action::Done,
            CHECK_POWER_MODE => Action::Done, // count is set to FFh (active) by the transport
            // ATAPI devices abort IDENTIFY DEVICE and leave their signature, so hosts can tell them apart.
            IDENTIFY => Action::Error(error::ABRT),
            _ => Action::Error(error::ABRT),
        }
    }

    fn verify(&mut self, tf: &TaskFile, ext: bool) -> Action {
        match self.rw(tf, ext, false, Xfer::Dma) {
            Action::Read { .. } => Action::Done,
            other => other,
        }
    }

    fn set_features(&mut self, tf: &TaskFile) -> Action {
        match tf.features {
            0x02 => self.write_cache = true,
            0x82 => self.write_cache = false,
            0x03 => {
                // Transfer mode: 00h/01h PIO default, 08h-0Ch PIO n, 20h-22h MWDMA n, 40h-45h UDMA n.
                let mode = tf.count;
                let ok = match mode >> 3 {
                    0 => mode <= 1,
                    1 => mode & 7 <= 4,
                    4 => mode & 7 <= 2,
                    8 => mode & 7 <= 5,
                    _ => false,
                };
                if !ok {
                    return Action::Error(error::ABRT);
                }
                self.xfer_mode = mode;
            }
            // Read look-ahead on/off, reverting to defaults on/off, SATA feature enable/disable.
            0x55 | 0xAA | 0x66 | 0xCC | 0x10 | 0x90 => {}
            _ => return Action::Error(error::ABRT),
        }
        Action::Done
    }

    /// Whether the write cache is enabled (SET FEATURES 02h/82h).
    pub fn write_cache(&self) -> bool {
        self.write_cache
    }

    /// Bytes per sector: 512 (disk) or 2048 (CD-ROM).
    pub fn unit(&self) -> u64 {
        if self.kind == DriveKind::Disk { SECTOR } else { CD_BLOCK }
    }

    /// Reads `buf.len()` bytes at byte offset `off` of the medium. Errors are the ATA error register
    /// value (UNC for a host read error, ABRT without a medium).
    pub fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), u8> {
        let b = self.backend.as_mut().ok_or(error::ABRT)?;
        b.read(off, buf).map_err(|_| error::UNC)
    }

    /// Writes `data` at byte offset `off` (disk). With the write cache disabled the data is flushed
    /// before the write completes.
    pub fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), u8> {
        let wc = self.write_cache;
        let b = self.backend.as_mut().ok_or(error::ABRT)?;
        if b.read_only() {
            return Err(error::ABRT);
        }
        b.write(off, data).map_err(|_| error::ABRT)?;
        if !wc {
            b.flush().map_err(|_| error::ABRT)?;
        }
        Ok(())
    }

    /// Reads whole sectors at `lba` into `buf`.
    pub fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), u8> {
        let off = lba.checked_mul(self.unit()).ok_or(error::IDNF)?;
        self.read_at(off, buf)
    }

    /// Writes whole sectors at `lba`.
    pub fn write_sectors(&mut self, lba: u64, data: &[u8]) -> Result<(), u8> {
        let off = lba.checked_mul(SECTOR).ok_or(error::IDNF)?;
        self.write_at(off, data)
    }

    /// FLUSH CACHE: returns once the data is on stable storage.
    pub fn flush(&mut self) -> Result<(), u8> {
        match self.backend.as_mut() {
            Some(b) => b.flush().map_err(|_| error::ABRT),
            None => Ok(()),
        }
    }
}

/// Snapshot of the drive state the guest can change (the medium itself is the machine's configuration:
/// a snapshot is restored over the same images).
impl Drive {
    /// Writes the drive's guest-visible state: multiple mode, write cache, transfer mode, ATAPI state.
    pub fn save_state(&self, w: &mut SnapshotWriter) {
        w.tag("ata-drive");
        w.bool(self.kind == DriveKind::Cdrom);
        w.u64(self.sectors);
        w.u16(self.multiple);
        w.bool(self.write_cache);
        w.u8(self.xfer_mode);
        w.bytes(&self.atapi.sense);
        w.bool(self.atapi.unit_attention);
        w.bool(self.atapi.locked);
        w.u8(match self.atapi.event {
            MediaEvent::None => 0,
            MediaEvent::NewMedia => 1,
            MediaEvent::Removal => 2,
        });
    }

    /// Restores [`Drive::save_state`] into a drive of the same kind over a medium of the same size.
    pub fn restore_state(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        r.tag("ata-drive")?;
        let cdrom = r.bool()?;
        let sectors = r.u64()?;
        if cdrom != (self.kind == DriveKind::Cdrom) || sectors != self.sectors {
            return Err(SnapshotError::Invalid(format!(
                "drive {}: the snapshot has a {} of {sectors} sectors, the machine a {:?} of {}",
                self.serial,
                if cdrom { "CD-ROM" } else { "disk" },
                self.kind,
                self.sectors
            )));
        }
        let multiple = r.u16()?;
        if multiple > MAX_MULTIPLE {
            return Err(SnapshotError::Invalid(format!("drive multiple mode {multiple}")));
        }
        let write_cache = r.bool()?;
        let xfer_mode = r.u8()?;
        let sense = r.bytes()?;
        let sense: [u8; 3] =
            sense.try_into().map_err(|_| SnapshotError::Invalid("ATAPI sense length".into()))?;
        let unit_attention = r.bool()?;
        let locked = r.bool()?;
        let event = match r.u8()? {
            0 => MediaEvent::None,
            1 => MediaEvent::NewMedia,
            2 => MediaEvent::Removal,
            e => return Err(SnapshotError::Invalid(format!("ATAPI media event {e}"))),
        };
        self.multiple = multiple;
        self.write_cache = write_cache;
        self.xfer_mode = xfer_mode;
        self.atapi.sense = sense;
        self.atapi.unit_attention = unit_attention;
        self.atapi.locked = locked;
        self.atapi.event = event;
        Ok(())
    }
}

impl TaskFile {
    /// Writes the twelve registers.
    pub fn save(&self, w: &mut SnapshotWriter) {
        for v in self.bytes() {
            w.u8(v);
        }
    }

    /// Reads what [`TaskFile::save`] wrote.
    pub fn load(r: &mut SnapshotReader<'_>) -> Result<TaskFile, SnapshotError> {
        let b = r.u8s::<12>()?;
        Ok(TaskFile {
            features: b[0],
            hob_features: b[1],
            count: b[2],
            hob_count: b[3],
            lba_low: b[4],
            lba_mid: b[5],
            lba_high: b[6],
            hob_lba_low: b[7],
            hob_lba_mid: b[8],
            hob_lba_high: b[9],
            device: b[10],
            command: b[11],
        })
    }

    fn bytes(&self) -> [u8; 12] {
        [
            self.features,
            self.hob_features,
            self.count,
            self.hob_count,
            self.lba_low,
            self.lba_mid,
            self.lba_high,
            self.hob_lba_low,
            self.hob_lba_mid,
            self.hob_lba_high,
            self.device,
            self.command,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    fn disk(sectors: usize) -> Drive {
        Drive::disk(Box::new(MemBackend::new(sectors * 512)), "SN1")
    }

    fn tf(command: u8) -> TaskFile {
        TaskFile { command, device: 0x40, ..Default::default() }
    }

    fn word(id: &[u8], w: usize) -> u16 {
        u16::from_le_bytes([id[2 * w], id[2 * w + 1]])
    }

    #[test]
    fn identify_reports_capacity_and_checksum() {
        let mut d = disk(0x1234_5678 / 512 * 8 + 3);
        let Action::DataIn { data, .. } = d.decode(&tf(cmd::IDENTIFY), false) else { panic!() };
        assert_eq!(data.len(), 512);
        assert_eq!(data.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
        assert_eq!(data[510], 0xA5);
        let sectors = d.capacity();
        assert_eq!(u64::from(word(&data, 60)) | u64::from(word(&data, 61)) << 16, sectors.min(0x0FFF_FFFF));
        assert_eq!(u64::from(word(&data, 100)) | u64::from(word(&data, 101)) << 16, sectors);
        assert_eq!(word(&data, 83) & (1 << 10), 1 << 10, "48-bit");
        // Model string: byte-swapped ASCII.
        assert_eq!(&data[54..62], b"EFRRTI E");
        assert_eq!(word(&data, 76), 0, "no NCQ on PATA");
        d.set_sata(true);
        let Action::DataIn { data, .. } = d.decode(&tf(cmd::IDENTIFY), true) else { panic!() };
        assert_eq!(word(&data, 76) & (1 << 8), 1 << 8);
        assert_eq!(word(&data, 75), 31);
        // A disk aborts IDENTIFY PACKET; a CD-ROM aborts IDENTIFY.
        assert_eq!(d.decode(&tf(cmd::IDENTIFY_PACKET), false), Action::Error(error::ABRT));
        let mut cd = Drive::cdrom(None, "CD");
        assert_eq!(cd.decode(&tf(cmd::IDENTIFY), false), Action::Error(error::ABRT));
        let Action::DataIn { data, .. } = cd.decode(&tf(cmd::IDENTIFY_PACKET), false) else { panic!() };
        assert_eq!(word(&data, 0), 0x85C0);
        assert_eq!(cd.signature(), [1, 1, 0x14, 0xEB]);
    }

    #[test]
    fn lba28_lba48_chs_and_ranges() {
        let mut d = disk(1000);
        let mut t = tf(cmd::READ_SECTORS);
        t.lba_low = 0xE7;
        t.lba_mid = 0x03; // LBA 999
        t.count = 1;
        assert_eq!(d.decode(&t, false), Action::Read { lba: 999, count: 1, xfer: Xfer::Pio { block: 1 } });
        t.count = 2;
        assert_eq!(d.decode(&t, false), Action::Error(error::IDNF | error::ABRT), "runs past the end");
        t.count = 0; // 256 sectors
        t.lba_low = 0;
        t.lba_mid = 0;
        assert_eq!(d.decode(&t, false), Action::Read { lba: 0, count: 256, xfer: Xfer::Pio { block: 1 } });
        let mut e = tf(cmd::WRITE_DMA_EXT);
        e.hob_lba_low = 1; // LBA 2^24: out of range
        assert_eq!(d.decode(&e, false), Action::Error(error::IDNF | error::ABRT));
        e.hob_lba_low = 0;
        e.lba_low = 10;
        e.count = 0;
        e.hob_count = 0; // 65536 sectors
        assert_eq!(d.decode(&e, false), Action::Error(error::IDNF | error::ABRT));
        e.hob_count = 0;
        e.count = 5;
        assert_eq!(d.decode(&e, false), Action::Write { lba: 10, count: 5, xfer: Xfer::Dma });
        // Huge LBA48 values never overflow.
        let mut h = tf(cmd::READ_SECTORS_EXT);
        for b in [&mut h.lba_low, &mut h.lba_mid, &mut h.lba_high, &mut h.hob_lba_low, &mut h.hob_lba_mid] {
            *b = 0xFF;
        }
        h.hob_lba_high = 0xFF;
        assert_eq!(d.decode(&h, false), Action::Error(error::IDNF | error::ABRT));
        // CHS: cylinder 0, head 1, sector 1 = LBA 63; sector 0 is invalid.
        let mut c =
            TaskFile { command: cmd::READ_SECTORS, device: 0x01, lba_low: 1, count: 1, ..Default::default() };
        assert_eq!(d.decode(&c, false), Action::Read { lba: 63, count: 1, xfer: Xfer::Pio { block: 1 } });
        c.lba_low = 0;
        assert_eq!(d.decode(&c, false), Action::Error(error::IDNF | error::ABRT));
    }

    #[test]
    fn multiple_mode() {
        let mut d = disk(100);
        let mut t = tf(cmd::READ_MULTIPLE);
        t.count = 8;
        assert_eq!(d.decode(&t, false), Action::Error(error::ABRT), "multiple mode not set");
        let mut s = tf(cmd::SET_MULTIPLE);
        s.count = 3;
        assert_eq!(d.decode(&s, false), Action::Error(error::ABRT), "not a power of two");
        s.count = 32;
        assert_eq!(d.decode(&s, false), Action::Error(error::ABRT), "above the maximum");
        s.count = 4;
        assert_eq!(d.decode(&s, false), Action::Done);
        assert_eq!(d.decode(&t, false), Action::Read { lba: 0, count: 8, xfer: Xfer::Pio { block: 4 } });
        let Action::DataIn { data, .. } = d.decode(&tf(cmd::IDENTIFY), false) else { panic!() };
        assert_eq!(word(&data, 59), 0x0104);
        d.reset();
        assert_eq!(d.decode(&t, false), Action::Error(error::ABRT), "reset clears multiple mode");
    }

    #[test]
    fn ncq_only_on_sata_and_features_carry_the_count() {
        let mut d = disk(100);
        let mut t = tf(cmd::READ_FPDMA_QUEUED);
        t.features = 9;
        t.count = 5 << 3;
        t.lba_low = 7;
        assert_eq!(d.decode(&t, false), Action::Error(error::ABRT), "no NCQ on IDE");
        assert_eq!(d.decode(&t, true), Action::Read { lba: 7, count: 9, xfer: Xfer::Queued { tag: 5 } });
        t.features = 100;
        assert_eq!(d.decode(&t, true), Action::Error(error::IDNF | error::ABRT));
    }

    #[test]
    fn set_features_verify_flush_and_unknown() {
        let mut d = disk(100);
        let mut t = tf(cmd::SET_FEATURES);
        t.features = 0x82;
        assert_eq!(d.decode(&t, false), Action::Done);
        assert!(!d.write_cache());
        t.features = 0x03;
        t.count = 0x45; // UDMA 5
        assert_eq!(d.decode(&t, false), Action::Done);
        let Action::DataIn { data, .. } = d.decode(&tf(cmd::IDENTIFY), false) else { panic!() };
        assert_eq!(word(&data, 88), 0x203F);
        t.count = 0x46;
        assert_eq!(d.decode(&t, false), Action::Error(error::ABRT));
        t.features = 0x77;
        assert_eq!(d.decode(&t, false), Action::Error(error::ABRT));
        let mut v = tf(cmd::READ_VERIFY);
        v.count = 10;
        assert_eq!(d.decode(&v, false), Action::Done);
        v.lba_low = 95;
        assert_eq!(d.decode(&v, false), Action::Error(error::IDNF | error::ABRT));
        assert_eq!(d.decode(&tf(cmd::FLUSH_CACHE_EXT), false), Action::Flush);
        for op in [0x01u8, 0x2F, 0xB0, 0xF8, 0xFF, cmd::PACKET, cmd::DEVICE_RESET] {
            assert_eq!(d.decode(&tf(op), false), Action::Error(error::ABRT), "opcode {op:#x}");
        }
        assert_eq!(d.decode(&tf(cmd::EXECUTE_DIAGNOSTIC), false), Action::Signature { diag: Some(1) });
    }

    #[test]
    fn data_paths_and_errors() {
        let mut d = disk(16);
        d.write_sectors(3, &[0xAA; 1024]).unwrap();
        let mut buf = [0u8; 512];
        d.read_sectors(4, &mut buf).unwrap();
        assert_eq!(buf, [0xAA; 512]);
        assert_eq!(d.read_sectors(16, &mut buf), Err(error::UNC), "host error past the end");
        let mut ro = Drive::disk(Box::new(MemBackend::from_bytes(vec![0; 4096], true)), "RO");
        assert_eq!(ro.write_sectors(0, &[0; 512]), Err(error::ABRT));
        let mut wt = disk(16);
        let mut t = tf(cmd::SET_FEATURES);
        t.features = 0x82;
        wt.decode(&t, false);
        wt.write_sectors(0, &[1; 512]).unwrap();
        wt.flush().unwrap();
    }

    #[test]
    fn latency_depends_only_on_size() {
        assert_eq!(latency_ns(0), COMMAND_NS);
        assert_eq!(latency_ns(512), COMMAND_NS + SECTOR_NS);
        assert_eq!(latency_ns(513), COMMAND_NS + 2 * SECTOR_NS);
    }
}
