//! Snapshot files (`--snapshot-at N FILE`, `--restore FILE`): a whole-machine snapshot
//! ([`Machine::save_head`] plus RAM) in a versioned file with checksums, RAM written sparsely and
//! compressed where it pays.
//!
//! Layout (little-endian):
//!
//! ```text
//! "FERRSNAP" | version u32 | flags u32 (0)
//! head:  len u64 | crc32 u32 | deflate(machine state without RAM)   (len = compressed length)
//! ram:   ram_len u64
//! runs:  { kind u8 = 1 | first page u64 | pages u32 | encoding u8 (0 raw, 1 deflate)
//!          | stored len u32 | crc32 of the pages' bytes u32 | stored bytes }*
//! end:   kind u8 = 0 | crc32 of every byte before this field u32
//! ```
//!
//! A run covers up to [`RUN_PAGES`] consecutive pages that are not all zero; pages in no run are
//! zero. A run is deflated (flate2's fastest level, miniz_oxide underneath: pure Rust, already in
//! Ferrite's dependency tree through the image fetcher) unless that does not make it smaller. Every
//! length is checked against the machine before anything is allocated, so a corrupt file is an
//! error, never a panic or a huge allocation.

use crate::Machine;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The file's first eight bytes.
pub const MAGIC: &[u8; 8] = b"FERRSNAP";
/// The format version this Ferrite writes and reads.
pub const VERSION: u32 = 1;
/// Most pages in one run.
pub const RUN_PAGES: usize = 256;
const PAGE: usize = 4096;
/// Largest machine state without RAM accepted (the interpreter's TLB is most of it).
const MAX_HEAD: u64 = 64 << 20;

/// Why a snapshot file cannot be written or restored.
#[derive(Debug)]
pub enum SnapfileError {
    /// Reading or writing the file failed.
    Io(std::io::Error),
    /// Not a snapshot file.
    NotASnapshot,
    /// Written by another version of the format.
    Version(u32),
    /// The file ends early.
    Truncated,
    /// A checksum or a value is wrong.
    Corrupt(String),
    /// The state does not fit this machine (another configuration).
    Mismatch(String),
}

impl fmt::Display for SnapfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapfileError::Io(e) => write!(f, "{e}"),
            SnapfileError::NotASnapshot => write!(f, "not a Ferrite snapshot file"),
            SnapfileError::Version(v) => {
                write!(f, "snapshot format version {v}; this Ferrite reads version {VERSION}")
            }
            SnapfileError::Truncated => write!(f, "snapshot file truncated"),
            SnapfileError::Corrupt(s) => write!(f, "snapshot file corrupt: {s}"),
            SnapfileError::Mismatch(s) => write!(f, "snapshot does not fit this machine: {s}"),
        }
    }
}

impl std::error::Error for SnapfileError {}

impl From<std::io::Error> for SnapfileError {
    fn from(e: std::io::Error) -> Self {
        SnapfileError::Io(e)
    }
}

/// What a save wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveStats {
    /// Bytes in the file.
    pub bytes: u64,
    /// RAM pages stored (the others are zero).
    pub pages: u64,
    /// RAM pages in the machine.
    pub total_pages: u64,
}

/// A writer that keeps the CRC of everything written and counts bytes.
struct Crc<W: Write> {
    w: W,
    crc: crc32fast::Hasher,
    n: u64,
}

impl<W: Write> Crc<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.n += b.len() as u64;
        self.w.write_all(b)
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::with_capacity(data.len() / 2), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// Inflates `data` into exactly `len` bytes; anything else (short, long, malformed) is corrupt.
fn inflate(data: &[u8], len: usize) -> Result<Vec<u8>, SnapfileError> {
    let mut out = vec![0u8; len];
    let mut d = DeflateDecoder::new(data);
    d.read_exact(&mut out).map_err(|e| SnapfileError::Corrupt(format!("deflate stream: {e}")))?;
    let mut extra = [0u8; 1];
    if d.read(&mut extra).map_err(|e| SnapfileError::Corrupt(format!("deflate stream: {e}")))? != 0 {
        return Err(SnapfileError::Corrupt("deflate stream longer than its pages".into()));
    }
    Ok(out)
}

/// Writes `m`'s whole state to `w`.
pub fn save(m: &Machine, w: impl Write) -> Result<SaveStats, SnapfileError> {
    let mut o = Crc { w, crc: crc32fast::Hasher::new(), n: 0 };
    o.put(MAGIC)?;
    o.put(&VERSION.to_le_bytes())?;
    o.put(&0u32.to_le_bytes())?;
    let head = m.save_head();
    let packed = deflate(&head);
    o.put(&(packed.len() as u64).to_le_bytes())?;
    o.put(&crc32fast::hash(&head).to_le_bytes())?;
    o.put(&packed)?;
    let ram = m.board.ram.as_slice();
    o.put(&(ram.len() as u64).to_le_bytes())?;
    let pages = ram.len().div_ceil(PAGE);
    let at = |p: usize| (p * PAGE).min(ram.len());
    let nonzero = |p: usize| !crate::record::page_is_zero(&ram[at(p)..at(p + 1)]);
    let mut stored = 0u64;
    let mut p = 0;
    while p < pages {
        if !nonzero(p) {
            p += 1;
            continue;
        }
        let first = p;
        while p < pages && p - first < RUN_PAGES && nonzero(p) {
            p += 1;
        }
        let bytes = &ram[at(first)..at(p)];
        stored += (p - first) as u64;
        let packed = deflate(bytes);
        let (enc, data) = if packed.len() < bytes.len() { (1u8, &packed[..]) } else { (0u8, bytes) };
        o.put(&[1])?;
        o.put(&(first as u64).to_le_bytes())?;
        o.put(&((p - first) as u32).to_le_bytes())?;
        o.put(&[enc])?;
        o.put(&(data.len() as u32).to_le_bytes())?;
        o.put(&crc32fast::hash(bytes).to_le_bytes())?;
        o.put(data)?;
    }
    o.put(&[0])?;
    let crc = o.crc.clone().finalize();
    o.put(&crc.to_le_bytes())?;
    o.w.flush()?;
    Ok(SaveStats { bytes: o.n, pages: stored, total_pages: pages as u64 })
}

/// Writes `m`'s whole state to the file at `path` (created or truncated).
pub fn save_file(m: &Machine, path: &Path) -> Result<SaveStats, SnapfileError> {
    let f = std::fs::File::create(path)?;
    save(m, std::io::BufWriter::new(f))
}

/// A cursor over the file's bytes that reports running off the end as truncation.
struct Cur<'a> {
    d: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapfileError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.d.len()).ok_or(SnapfileError::Truncated)?;
        let s = &self.d[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, SnapfileError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, SnapfileError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, SnapfileError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

/// Checks the whole file (header, version, every checksum, every run against the machine's RAM)
/// before anything in the machine changes, then restores it into `m`, a machine built from the same
/// configuration. On an error after that check (the state does not fit the machine) `m` may be partly
/// restored and should be dropped.
pub fn restore(m: &mut Machine, data: &[u8]) -> Result<(), SnapfileError> {
    let mut c = Cur { d: data, pos: 0 };
    let magic = c.take(MAGIC.len()).map_err(|_| SnapfileError::NotASnapshot)?;
    if magic != MAGIC {
        return Err(SnapfileError::NotASnapshot);
    }
    let version = c.u32()?;
    if version != VERSION {
        return Err(SnapfileError::Version(version));
    }
    let flags = c.u32()?;
    if flags != 0 {
        return Err(SnapfileError::Corrupt(format!("unknown flags {flags:#x}")));
    }
    let hlen = c.u64()?;
    let hcrc = c.u32()?;
    if hlen > MAX_HEAD {
        return Err(SnapfileError::Corrupt(format!("machine state of {hlen} bytes")));
    }
    let packed = c.take(hlen as usize)?;
    let ram_len = c.u64()?;
    if ram_len != m.board.ram.len() {
        return Err(SnapfileError::Mismatch(format!(
            "{ram_len} bytes of RAM in the snapshot, {} in this machine",
            m.board.ram.len()
        )));
    }
    let pages = ram_len.div_ceil(PAGE as u64);
    let at = |p: u64| (p * PAGE as u64).min(ram_len) as usize;
    // First pass: every run is checked (bounds, order, checksum) before the machine is touched.
    let mut runs = Vec::new();
    let mut next_free = 0u64;
    loop {
        match c.u8()? {
            0 => break,
            1 => {}
            k => return Err(SnapfileError::Corrupt(format!("record kind {k}"))),
        }
        let first = c.u64()?;
        let n = c.u32()? as usize;
        let enc = c.u8()?;
        let len = c.u32()? as usize;
        let crc = c.u32()?;
        let stored = c.take(len)?;
        if n == 0 || n > RUN_PAGES || first < next_free || first.saturating_add(n as u64) > pages {
            return Err(SnapfileError::Corrupt(format!("run of {n} pages at page {first}")));
        }
        next_free = first + n as u64;
        let size = at(first + n as u64) - at(first);
        let bytes = match enc {
            0 if len == size => stored.to_vec(),
            1 if len < size => inflate(stored, size)?,
            _ => return Err(SnapfileError::Corrupt(format!("run encoding {enc} of {len} bytes"))),
        };
        if crc32fast::hash(&bytes) != crc {
            return Err(SnapfileError::Corrupt(format!(
                "checksum of the pages at {:#x}",
                first * PAGE as u64
            )));
        }
        runs.push((first, n as u64, bytes));
    }
    let end = c.pos;
    let file_crc = c.u32()?;
    if crc32fast::hash(&data[..end]) != file_crc {
        return Err(SnapfileError::Corrupt("file checksum".into()));
    }
    if c.pos != data.len() {
        return Err(SnapfileError::Corrupt(format!("{} bytes after the end", data.len() - c.pos)));
    }
    // The head inflates to at most MAX_HEAD bytes; its length is not stored, so read to the end.
    let mut head = Vec::new();
    DeflateDecoder::new(packed)
        .take(MAX_HEAD)
        .read_to_end(&mut head)
        .map_err(|e| SnapfileError::Corrupt(format!("machine state: {e}")))?;
    if crc32fast::hash(&head) != hcrc {
        return Err(SnapfileError::Corrupt("checksum of the machine state".into()));
    }
    m.restore_head(&head).map_err(|e| SnapfileError::Mismatch(e.to_string()))?;
    // RAM: the stored runs, zero elsewhere (a page already zero is not written, so an untouched page
    // of a fresh machine stays unallocated).
    let ram = m.board.ram.as_mut_slice();
    let mut page = 0u64;
    let zero_until = |ram: &mut [u8], from: u64, to: u64| {
        for p in from..to {
            let s = &mut ram[at(p)..at(p + 1)];
            if !crate::record::page_is_zero(s) {
                s.fill(0);
            }
        }
    };
    for (first, n, bytes) in runs {
        zero_until(ram, page, first);
        ram[at(first)..at(first) + bytes.len()].copy_from_slice(&bytes);
        page = first + n;
    }
    zero_until(ram, page, pages);
    Ok(())
}

/// Restores the snapshot file at `path` into `m` (see [`restore`]).
pub fn restore_file(m: &mut Machine, path: &Path) -> Result<(), SnapfileError> {
    let data = std::fs::read(path)?;
    restore(m, &data)
}

/// A whole-machine snapshot in memory (reverse-execution checkpoints, lockstep's and replay's last
/// good state), RAM held as the file holds it: zero pages not at all, and each page equal to the
/// previous snapshot's shared with it (reference-counted), so a series of checkpoints costs the
/// machine state plus the pages that changed between them, where [`Machine::save_state`] costs all
/// of RAM every time.
#[derive(Clone)]
pub struct MemSnapshot {
    icount: u64,
    head: Vec<u8>,
    /// Page n of RAM; `None`: zero.
    pages: Vec<Option<Arc<[u8]>>>,
    /// Pages this snapshot was the first to hold (the others are shared with the previous one).
    fresh: usize,
}

impl MemSnapshot {
    /// Takes `m`'s state; pages equal to `prev`'s (a snapshot of the same machine) are shared with
    /// it.
    pub fn take(m: &Machine, prev: Option<&MemSnapshot>) -> MemSnapshot {
        let head = m.save_head();
        let ram = m.board.ram.as_slice();
        let n = ram.len().div_ceil(PAGE);
        let prev = prev.filter(|p| p.pages.len() == n);
        let mut pages = Vec::with_capacity(n);
        let mut fresh = 0;
        for (i, bytes) in ram.chunks(PAGE).enumerate() {
            if crate::record::page_is_zero(bytes) {
                pages.push(None);
                continue;
            }
            if let Some(Some(old)) = prev.map(|p| &p.pages[i])
                && **old == *bytes
            {
                pages.push(Some(old.clone()));
                continue;
            }
            fresh += 1;
            pages.push(Some(Arc::from(bytes)));
        }
        MemSnapshot { icount: m.cpu.icount, head, pages, fresh }
    }

    /// Puts `m` (built from the same configuration) back in this state. On error the machine may be
    /// partly restored and should be dropped.
    pub fn restore(&self, m: &mut Machine) -> Result<(), vmcore::SnapshotError> {
        if self.pages.len() != (m.board.ram.len() as usize).div_ceil(PAGE) {
            return Err(vmcore::SnapshotError::Invalid("a snapshot of another RAM size".into()));
        }
        m.restore_head(&self.head)?;
        let ram = m.board.ram.as_mut_slice();
        for (page, held) in ram.chunks_mut(PAGE).zip(&self.pages) {
            match held {
                Some(b) => page.copy_from_slice(b),
                // A page already zero is not written: an untouched page stays unallocated.
                None if !crate::record::page_is_zero(page) => page.fill(0),
                None => {}
            }
        }
        Ok(())
    }

    /// The retired-instruction count the snapshot was taken at.
    pub fn icount(&self) -> u64 {
        self.icount
    }

    /// Host memory the snapshot accounts for: its machine state, its page table, and each page it
    /// holds divided among the snapshots sharing it (so the sum over a series is what the series
    /// takes).
    pub fn bytes(&self) -> usize {
        let shared: usize = self.pages.iter().flatten().map(|p| p.len() / Arc::strong_count(p).max(1)).sum();
        self.head.len() + self.pages.len() * std::mem::size_of::<Option<Arc<[u8]>>>() + shared
    }

    /// Non-zero pages held, and how many of them this snapshot was the first to hold.
    pub fn page_counts(&self) -> (usize, usize) {
        (self.pages.iter().flatten().count(), self.fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineConfig;

    /// Real mode: `inc byte [0x500]; jmp short back to it` at F000:0000, reached from the reset vector.
    fn spinner(mem: u64) -> Machine {
        let mut rom = vec![0x90u8; 0x1_0000];
        rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, 0x00, 0x00, 0x00, 0xF0]);
        rom[0..6].copy_from_slice(&[0xFE, 0x06, 0x00, 0x05, 0xEB, 0xFA]);
        Machine::new(MachineConfig::new(mem, rom)).expect("machine")
    }

    #[test]
    fn mem_snapshots_skip_zero_pages_share_unchanged_ones_and_restore_exactly() {
        let mut m = spinner(32 << 20);
        // Two non-zero pages: page 0 (the counter, changing) and page 0x10 (constant).
        m.board.ram.write(0x10_000, b"constant");
        m.run(Some(1_000));
        let (c1, h1) = (m.cpu.icount, m.state_hash());
        let s1 = MemSnapshot::take(&m, None);
        assert_eq!(s1.page_counts(), (2, 2));
        assert_eq!(s1.icount(), c1);
        m.run(Some(5_000));
        let h2 = m.state_hash();
        let s2 = MemSnapshot::take(&m, Some(&s1));
        assert_eq!(s2.page_counts(), (2, 1), "only the counter's page is new");
        // A whole-RAM copy is 32 MiB; the two sparse snapshots hold three pages between them.
        let total = s1.bytes() + s2.bytes();
        assert!(total < 1 << 20, "{total} bytes");
        assert!(total > 3 * 4096);

        s1.restore(&mut m).unwrap();
        assert_eq!((m.cpu.icount, m.state_hash()), (c1, h1));
        s2.restore(&mut m).unwrap();
        assert_eq!(m.state_hash(), h2);
        // A page written after the snapshot is zeroed again by the restore.
        m.board.ram.write(0x200_000, b"late");
        s1.restore(&mut m).unwrap();
        assert_eq!(m.state_hash(), h1);
        // Another machine of another size refuses it and is not touched.
        let mut small = spinner(16 << 20);
        let hs = small.state_hash();
        assert!(s1.restore(&mut small).is_err());
        assert_eq!(small.state_hash(), hs);
    }
}
