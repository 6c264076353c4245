//! Image backends: what a drive reads and writes.
//!
//! [`BlockBackend`] is byte-addressed (the controllers only ever pass whole 512-byte sectors) and
//! synchronous: the controllers call it at the instant a transfer is carried out, and the guest sees the
//! command complete at a virtual-time deadline that does not depend on how long the host took (see the
//! crate docs). [`ImageBackend`] opens raw and qcow2 files through the `imago` crate (sync mode), takes
//! QEMU-compatible image locks ([`crate::lock`]) and, with `snapshot`, keeps every write in a temporary
//! qcow2 overlay that is unlinked as soon as it is created, so it disappears when Ferrite exits (even by
//! SIGKILL). [`MemBackend`] is a RAM disk for tests.
//!
//! # Durability
//!
//! `flush` writes imago's cached metadata (qcow2 L2 and refcount tables) and then calls `fsync` on the
//! files, so a guest FLUSH CACHE completes only after its data reached stable storage. Dropping an
//! [`ImageBackend`] does the same. Between two flushes imago keeps qcow2 metadata in its caches; a host
//! crash then loses writes the guest had not flushed, and imago orders its metadata updates so the file
//! stays a consistent qcow2 (checked by `qemu-img check` in the tests).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{
    DenyImplicitOpenGate, DynStorage, FormatAccess, FormatCreateBuilder, FormatDriverBuilder,
    PermissiveImplicitOpenGate, Storage, StorageCreateOptions, StorageOpenOptions,
};

use crate::lock::ImageLock;
use crate::qcow2_guard::Qcow2Guard;

/// Bytes in a disk sector.
pub const SECTOR: u64 = 512;

/// A disk image as a drive sees it.
///
/// Offsets and lengths are in bytes; callers keep them inside [`BlockBackend::size`]. Errors are host
/// I/O errors, which the controllers report to the guest as an uncorrectable-data or write error.
pub trait BlockBackend: Send {
    /// Size of the image in bytes.
    fn size(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable (metadata written, then `fsync`).
    fn flush(&mut self) -> io::Result<()>;
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "access beyond the end of the image")
}

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "image is read-only")
}

fn check_range(offset: u64, len: usize, size: u64) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(out_of_range()),
    }
}

/// A disk held in host memory (tests, scratch disks).
#[derive(Clone, Debug, Default)]
pub struct MemBackend {
    data: Vec<u8>,
    read_only: bool,
    /// How many times [`BlockBackend::flush`] ran.
    pub flushes: u64,
}

impl MemBackend {
    /// A zero-filled disk of `size` bytes.
    pub fn new(size: usize) -> Self {
        MemBackend { data: vec![0; size], read_only: false, flushes: 0 }
    }

    /// A disk with these contents.
    pub fn from_bytes(data: Vec<u8>, read_only: bool) -> Self {
        MemBackend { data, read_only, flushes: 0 }
    }

    /// The contents.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl BlockBackend for MemBackend {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size())?;
        let o = offset as usize;
        buf.copy_from_slice(&self.data[o..o + buf.len()]);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        check_range(offset, data.len(), self.size())?;
        let o = offset as usize;
        self.data[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

/// An image file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// Sectors stored 1:1.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

impl ImageFormat {
    /// The format's name as QEMU spells it.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }

    /// Guesses the format from the first bytes of `path` (the qcow2 magic, else raw), as QEMU's probing
    /// does.
    pub fn probe(path: &Path) -> io::Result<ImageFormat> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic)?;
        Ok(if n == 4 && magic == *b"QFI\xfb" { ImageFormat::Qcow2 } else { ImageFormat::Raw })
    }
}

/// How to open an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOptions {
    /// The image file.
    pub path: PathBuf,
    /// Its format; `None` probes.
    pub format: Option<ImageFormat>,
    /// Refuse guest writes (the file is opened read-only).
    pub read_only: bool,
    /// Keep writes in a temporary overlay, dropped on exit; the image is opened read-only.
    pub snapshot: bool,
}

impl ImageOptions {
    /// A writable image of probed format.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ImageOptions { path: path.into(), format: None, read_only: false, snapshot: false }
    }
}

type Access = FormatAccess<Box<dyn DynStorage>>;

/// A raw or qcow2 image file opened through imago.
pub struct ImageBackend {
    access: Access,
    format: ImageFormat,
    read_only: bool,
    size: u64,
    /// Crash ordering for a writable qcow2 file (not for the throw-away snapshot overlay).
    guard: Option<Qcow2Guard>,
    /// Held for as long as the image is open.
    _lock: ImageLock,
    /// Read locks on the backing chain, as QEMU takes them.
    _backing_locks: Vec<ImageLock>,
}

impl std::fmt::Debug for ImageBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBackend")
            .field("format", &self.format)
            .field("read_only", &self.read_only)
            .field("size", &self.size)
            .finish()
    }
}

fn storage_opts(path: &Path, write: bool) -> StorageOpenOptions {
    StorageOpenOptions::new().filename(path).write(write)
}

fn open_storage(path: &Path, write: bool) -> io::Result<Box<dyn DynStorage>> {
    Ok(Box::new(ImagoFile::open(storage_opts(path, write))?))
}

fn open_format(path: &Path, format: ImageFormat, write: bool) -> io::Result<Access> {
    let storage = open_storage(path, write)?;
    Ok(match format {
        ImageFormat::Raw => {
            let raw = Raw::<Box<dyn DynStorage>>::builder(storage)
                .write(write)
                .open(DenyImplicitOpenGate::default())?;
            FormatAccess::new(raw)
        }
        ImageFormat::Qcow2 => {
            // Backing files named in the header are opened read-only by imago (the gate allows it).
            let q = Qcow2::<Box<dyn DynStorage>>::builder(storage)
                .write(write)
                .open(PermissiveImplicitOpenGate::default())?;
            FormatAccess::new(q)
        }
    })
}

static OVERLAY_SEQ: AtomicU32 = AtomicU32::new(0);

/// A temporary qcow2 overlay over `base`: created in the temporary directory, opened, and unlinked at
/// once.
fn snapshot_overlay(base: Access) -> io::Result<Access> {
    let size = base.size();
    let path = std::env::temp_dir().join(format!(
        "ferrite-snapshot-{}-{}.qcow2",
        std::process::id(),
        OVERLAY_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    // Create the file exclusively so nothing else's file is ever overwritten.
    OpenOptions::new().write(true).create_new(true).open(&path)?;
    let storage = open_storage(&path, true);
    let _ = std::fs::remove_file(&path);
    let storage = storage?;
    let q = Qcow2::<Box<dyn DynStorage>>::create_builder(storage)
        .size(size)
        .create_open(DenyImplicitOpenGate::default(), |image| {
            Ok(Qcow2::<Box<dyn DynStorage>>::builder(image).backing(Some(base)).write(true))
        })?;
    Ok(FormatAccess::new(q))
}

impl ImageBackend {
    /// Opens an image; errors are one line, naming the file.
    pub fn open(opts: &ImageOptions) -> Result<ImageBackend, String> {
        let p = &opts.path;
        let shown = p.display();
        let meta = std::fs::metadata(p).map_err(|e| format!("{shown}: {e}"))?;
        if !meta.is_file() && !meta.file_type().is_block_device() {
            return Err(format!("{shown}: not a regular file"));
        }
        let format = match opts.format {
            Some(f) => f,
            None => ImageFormat::probe(p).map_err(|e| format!("{shown}: {e}"))?,
        };
        let write_file = !opts.read_only && !opts.snapshot;
        let lock = ImageLock::acquire(p, write_file)?;
        let backing_locks = match format {
            ImageFormat::Qcow2 => lock_backing_chain(p)?,
            ImageFormat::Raw => Vec::new(),
        };
        let access = open_format(p, format, write_file)
            .map_err(|e| format!("{shown}: cannot open as {}: {e}", format.name()))?;
        let access = if opts.snapshot && !opts.read_only {
            snapshot_overlay(access)
                .map_err(|e| format!("{shown}: cannot create the snapshot overlay: {e}"))?
        } else {
            access
        };
        let size = access.size();
        let guard = if write_file && format == ImageFormat::Qcow2 {
            Some(Qcow2Guard::open(p).map_err(|e| format!("{shown}: {e}"))?)
        } else {
            None
        };
        Ok(ImageBackend {
            access,
            format,
            read_only: opts.read_only,
            size,
            guard,
            _lock: lock,
            _backing_locks: backing_locks,
        })
    }

    /// The image's format.
    pub fn format(&self) -> ImageFormat {
        self.format
    }
}

impl BlockBackend for ImageBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.access.read(buf, offset)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        check_range(offset, data.len(), self.size)?;
        let new_l2 = self.guard.as_ref().is_some_and(|g| g.touches_new_l2(offset, data.len()));
        self.access.write(data, offset)?;
        if let Some(g) = self.guard.as_mut() {
            // See `qcow2_guard`: metadata imago wrote out of order gets its refcounts written now.
            if new_l2 || g.grew_past_refblock()? {
                self.access.flush()?;
                g.mark(offset, data.len());
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.access.flush()?;
        self.access.sync()
    }
}

impl Drop for ImageBackend {
    fn drop(&mut self) {
        // FormatAccess flushes its caches when dropped; sync as well so a clean exit is durable.
        if let Err(e) = self.flush() {
            eprintln!("ferrite: flushing disk image at exit: {e}");
        }
    }
}

/// Longest backing chain followed for locking (a loop in the chain cannot hang the open).
const MAX_CHAIN: usize = 16;

/// The backing file named in a qcow2 header, resolved against the image's directory.
fn backing_of(path: &Path) -> io::Result<Option<PathBuf>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut h = [0u8; 20];
    f.read_exact_at(&mut h, 0)?;
    if h[..4] != *b"QFI\xfb" {
        return Ok(None);
    }
    let off = u64::from_be_bytes(h[8..16].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap_or_default());
    if off == 0 || len == 0 || len > 1023 {
        return Ok(None);
    }
    let mut name = vec![0u8; len as usize];
    f.read_exact_at(&mut name, off)?;
    let name = PathBuf::from(String::from_utf8_lossy(&name).into_owned());
    Ok(Some(if name.is_absolute() { name } else { path.parent().unwrap_or(Path::new(".")).join(name) }))
}

/// Read locks on every file of `path`'s backing chain, so nobody writes a base under an overlay.
fn lock_backing_chain(path: &Path) -> Result<Vec<ImageLock>, String> {
    let mut locks = Vec::new();
    let mut cur = path.to_path_buf();
    for _ in 0..MAX_CHAIN {
        let next = backing_of(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
        let Some(next) = next else { break };
        locks.push(ImageLock::acquire(&next, false)?);
        cur = next;
    }
    Ok(locks)
}

/// Creates an empty image of `size` bytes (used by tests and `snapshot`).
pub fn create_image(path: &Path, format: ImageFormat, size: u64) -> io::Result<()> {
    match format {
        ImageFormat::Raw => {
            let f = OpenOptions::new().write(true).create_new(true).open(path)?;
            f.set_len(size)
        }
        ImageFormat::Qcow2 => {
            let s = <Box<dyn DynStorage> as Storage>::create_open(
                StorageCreateOptions::new().filename(path).size(0),
            )?;
            Qcow2::<Box<dyn DynStorage>>::create_builder(s).size(size).create()
        }
    }
}
