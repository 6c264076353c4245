//! Image locking compatible with QEMU's (`raw_apply_lock_bytes` in QEMU's file-posix driver).
//!
//! QEMU takes open-file-description (OFD) read locks on single bytes of the image file: byte
//! `100 + p` while it holds permission `p`, byte `200 + p` while it refuses to share `p`, with
//! `p` = 0 for consistent read and 1 for write. Before it uses a permission it checks that nobody
//! holds the "refuses to share" byte of it, and before it refuses to share one that nobody holds it.
//! Ferrite does the same, so a second Ferrite, or a QEMU, opening an image Ferrite writes is refused:
//!
//! - writable: holds 100, 101 (read, write) and 201 (does not share write); conflicts with anyone
//!   holding 101 (a writer) or 201 or 200;
//! - read-only (also `snapshot=on` and CD-ROMs): holds 100 and 201, like QEMU's read-only devices;
//!   conflicts with a writer (101) or with someone refusing consistent read (200). Two readers coexist.
//!
//! OFD locks belong to the open file description, so two opens in one process conflict too (the unit
//! tests rely on that), and they vanish when the descriptor closes, including on SIGKILL.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;
const READ: i64 = 0;
const WRITE: i64 = 1;

/// A held image lock; released when dropped (the descriptor closes).
#[derive(Debug)]
pub struct ImageLock {
    _file: File,
}

fn flock_at(byte: i64, kind: libc::c_short) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value (l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

fn set_read_lock(f: &File, byte: i64) -> std::io::Result<()> {
    let mut fl = flock_at(byte, libc::F_RDLCK as libc::c_short);
    // SAFETY: the descriptor is open for the duration of the call and `fl` is a valid flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Whether someone else (another open file description) holds a lock on `byte`.
fn held_by_other(f: &File, byte: i64) -> std::io::Result<bool> {
    let mut fl = flock_at(byte, libc::F_WRLCK as libc::c_short);
    // SAFETY: as above; F_OFD_GETLK only writes into `fl`.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

impl ImageLock {
    /// Locks `path` for reading, or for writing when `write`. The error is one line.
    pub fn acquire(path: &Path, write: bool) -> Result<ImageLock, String> {
        let shown = path.display();
        let f = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let mut held = vec![PERM_BASE + READ, SHARED_BASE + WRITE];
        let mut check = vec![SHARED_BASE + READ];
        if write {
            held.push(PERM_BASE + WRITE);
            check.push(SHARED_BASE + WRITE);
        }
        // Refusing to share write conflicts with any writer.
        check.push(PERM_BASE + WRITE);
        let err = |e: std::io::Error| format!("{shown}: cannot lock the image: {e}");
        for b in &held {
            set_read_lock(&f, *b).map_err(err)?;
        }
        for b in &check {
            if held_by_other(&f, *b).map_err(err)? {
                let what = if write { "write" } else { "read" };
                return Err(format!(
                    "{shown}: failed to get the \"{what}\" lock: the image is in use by another process \
                     (another Ferrite or QEMU)"
                ));
            }
        }
        Ok(ImageLock { _file: f })
    }
}
