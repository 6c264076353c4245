//! Executable memory for generated code, shared by the blocks whose code they hold and unmapped
//! when the last of those blocks is dropped. No mapping is ever writable and executable at once:
//! a chunk is shared memory mapped twice, read-execute where code runs and read-write where code
//! is copied in, so placing a translation is a `memcpy` and no system call. Where the host refuses
//! the second mapping, the chunk is one anonymous mapping flipped to
//! read-write while code is copied in and back to read-execute (two `mprotect` calls per placement:
//! 3.4% of a warm-cache Linux boot's CPU time, docs/PERF.md). (Raw `mmap`/`mprotect`: memmap2's
//! protection changes consume the mapping, and a failed change would unmap code that other blocks
//! still hold.)

use std::cell::Cell;
use std::rc::Rc;

/// Size of one chunk of code memory.
const CHUNK: usize = 256 << 10;
/// Most code memory mapped at once. A chunk lives while any of its blocks does, so a guest that
/// invalidates all but one block of every chunk could otherwise pin up to one chunk per cached block;
/// past this bound the JIT declines to translate (the blocks stay interpreted).
pub(crate) const MAX_MAPPED: usize = 256 << 20;
/// Alignment of each function (Cranelift's constant pools assume 16).
const ALIGN: usize = 16;

struct Chunk {
    /// The read-execute view: where code runs.
    base: *mut u8,
    /// The read-write view of the same memory, or null when the chunk is a single mapping whose
    /// protection [`Chunk::protect`] flips.
    write: *mut u8,
    size: usize,
    /// The arena's count of mapped bytes, lowered when this chunk is unmapped.
    mapped: Rc<Cell<usize>>,
}

/// Maps `size` bytes of shared memory twice, read-execute and read-write; `None` if the host
/// refuses any step (nothing stays mapped then). The second view is made by `mremap` with an old
/// size of 0, which maps the same pages of a shared mapping again; both views are then shared
/// anonymous memory, which perf treats as anonymous, so `FERRITE_JIT_PERFMAP`'s map names the code
/// (a `memfd_create` object would be a named file to perf, and the map ignored).
#[cfg(target_os = "linux")]
fn map_two_views(size: usize) -> Option<(*mut u8, *mut u8)> {
    // SAFETY: a new shared anonymous mapping at an address of the kernel's choice touches no
    // existing memory; the result is checked.
    let write = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if write == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `write` is the shared mapping just made; an old size of 0 asks for a second mapping
    // of its pages at an address of the kernel's choice, leaving the first in place.
    let exec = unsafe { libc::mremap(write, 0, size, libc::MREMAP_MAYMOVE) };
    // SAFETY: `exec` (when mapped) is the mapping just made, which holds no code yet. Neither view
    // is inherited by a forked child (difftest forks one to run random code natively): a shared
    // writable view would let the child's stray writes reach the parent's code, where the private
    // mapping before gave the child a copy.
    let ok = exec != libc::MAP_FAILED
        && unsafe { libc::mprotect(exec, size, libc::PROT_READ | libc::PROT_EXEC) } == 0
        && [exec, write].iter().all(|&v| unsafe { libc::madvise(v, size, libc::MADV_DONTFORK) } == 0);
    if !ok {
        // SAFETY: the mappings made above, which nothing refers to yet.
        unsafe {
            if exec != libc::MAP_FAILED {
                libc::munmap(exec, size);
            }
            libc::munmap(write, size);
        }
        return None;
    }
    Some((exec as *mut u8, write as *mut u8))
}

#[cfg(not(target_os = "linux"))]
fn map_two_views(_size: usize) -> Option<(*mut u8, *mut u8)> {
    None
}

impl Chunk {
    fn map(size: usize, mapped: Rc<Cell<usize>>, two_views: bool) -> Option<Chunk> {
        let (base, write) = match two_views.then(|| map_two_views(size)).flatten() {
            Some(views) => views,
            None => {
                // SAFETY: an anonymous private mapping at an address of the kernel's choice touches
                // no existing memory; the result is checked.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        size,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return None;
                }
                (p as *mut u8, std::ptr::null_mut())
            }
        };
        mapped.set(mapped.get() + size);
        Some(Chunk { base, write, size, mapped })
    }

    fn protect(&self, prot: libc::c_int) -> bool {
        // SAFETY: `base..base+size` is this chunk's own mapping, alive until `drop`.
        unsafe { libc::mprotect(self.base as *mut libc::c_void, self.size, prot) == 0 }
    }

    /// Copies `bytes` to `offset`, which lies past every function already in the chunk.
    fn write_at(&self, offset: usize, bytes: &[u8]) -> bool {
        if !self.write.is_null() {
            // SAFETY: `offset + bytes.len() <= size` (the caller checked), the write view maps the
            // chunk read-write, and the bytes lie past every function already in it, so no live
            // function changes. The execute view sees the same physical pages (x86 keeps
            // instruction fetch coherent with stores through any mapping).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.write.add(offset), bytes.len()) };
            return true;
        }
        // No code of this chunk runs while it is writable: code runs only from `JitBlock::run`, and
        // translation happens between blocks on the same thread (`Chunk` is behind an `Rc`, so it
        // is not `Send`).
        if !self.protect(libc::PROT_READ | libc::PROT_WRITE) {
            return false;
        }
        // SAFETY: as above; the chunk is writable now.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(offset), bytes.len()) };
        // Other blocks' code in this chunk must run again: a host that refuses to give back the
        // permission it gave a moment ago leaves no correct way on.
        assert!(
            self.protect(libc::PROT_READ | libc::PROT_EXEC),
            "jit: mprotect(PROT_READ|PROT_EXEC) of a code chunk failed: {}",
            std::io::Error::last_os_error()
        );
        true
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: the mappings are ours, and no `Code` handle (the only way to reach them) is left.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.size);
            if !self.write.is_null() {
                libc::munmap(self.write as *mut libc::c_void, self.size);
            }
        }
        self.mapped.set(self.mapped.get() - self.size);
    }
}

/// A function's code, alive while this handle is.
pub(crate) struct Code {
    chunk: Rc<Chunk>,
    offset: usize,
    len: usize,
}

impl Code {
    /// The first byte of the code.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.chunk.base.wrapping_add(self.offset)
    }

    /// Bytes of code.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Arena {
    /// Bounds the code memory mapped at once to `bytes` (at most [`MAX_MAPPED`], at least a chunk).
    pub(crate) fn set_limit(&mut self, bytes: usize) {
        self.limit = Some(bytes.clamp(CHUNK, MAX_MAPPED));
    }

    /// The bound on mapped code memory.
    pub(crate) fn limit(&self) -> usize {
        self.limit.unwrap_or(MAX_MAPPED)
    }

    /// Bytes of code memory mapped now (live chunks).
    pub(crate) fn mapped(&self) -> usize {
        self.mapped.get()
    }
}

/// Bump allocator over chunks.
#[derive(Default)]
pub(crate) struct Arena {
    current: Option<Rc<Chunk>>,
    used: usize,
    /// Bytes of all live chunks.
    mapped: Rc<Cell<usize>>,
    /// A bound below [`MAX_MAPPED`] (`None`: that one), set by [`Arena::set_limit`].
    limit: Option<usize>,
    /// Map new chunks as one view whose protection is flipped for each copy (the fallback where
    /// the host refuses a second mapping; tests set it to cover that path).
    single_view: bool,
}

impl Arena {
    /// Copies `bytes` into executable memory; `None` if the host refuses the mapping.
    pub(crate) fn copy_in(&mut self, bytes: &[u8]) -> Option<Code> {
        let need = bytes.len().div_ceil(ALIGN) * ALIGN;
        let fits = self.current.as_ref().is_some_and(|c| self.used + need <= c.size);
        if !fits {
            let size = need.max(CHUNK).div_ceil(4096) * 4096;
            // The current chunk is dropped from the arena first, so that it counts only while blocks
            // still hold it.
            self.current = None;
            if self.mapped.get() + size > self.limit() {
                return None;
            }
            self.current = Some(Rc::new(Chunk::map(size, self.mapped.clone(), !self.single_view)?));
            self.used = 0;
        }
        let chunk = self.current.clone()?;
        let offset = self.used;
        if !chunk.write_at(offset, bytes) {
            return None;
        }
        self.used += need;
        Some(Code { chunk, offset, len: bytes.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mov eax, imm32; ret`.
    fn ret_const(v: u32) -> Vec<u8> {
        let mut b = vec![0xb8];
        b.extend_from_slice(&v.to_le_bytes());
        b.push(0xc3);
        b
    }

    fn call(code: &Code) -> u32 {
        // SAFETY: `code` holds `mov eax, imm32; ret` (from `ret_const`) in executable memory, alive
        // while the handle is: a function of no arguments returning in eax.
        let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(code.as_ptr()) };
        f()
    }

    /// The permissions /proc/self/maps gives the mapping holding `addr` ("r-xs", ...).
    fn perms(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            if let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                && (lo..hi).contains(&addr)
            {
                return perms.to_string();
            }
        }
        panic!("{addr:#x} is not mapped");
    }

    #[test]
    fn code_copied_in_runs_and_no_view_is_writable_and_executable() {
        for single_view in [false, true] {
            let mut a = Arena { single_view, ..Arena::default() };
            let first = a.copy_in(&ret_const(42)).expect("mapped");
            assert_eq!(call(&first), 42);
            // A second function into the same chunk after the first ran: both run.
            let second = a.copy_in(&ret_const(7)).expect("mapped");
            assert!(Rc::ptr_eq(&first.chunk, &second.chunk));
            assert_eq!((call(&second), call(&first)), (7, 42));
            let chunk = &first.chunk;
            assert_eq!(&perms(chunk.base as usize)[..3], "r-x", "single view: {single_view}");
            if single_view {
                assert!(chunk.write.is_null());
            } else {
                // On Linux (where this project runs), the copy went through the second view, which
                // is never executable.
                assert!(!chunk.write.is_null(), "no second view");
                assert_eq!(&perms(chunk.write as usize)[..3], "rw-");
            }
        }
    }

    /// A forked child inherits neither view of a two-view chunk.
    #[test]
    fn a_forked_child_does_not_inherit_the_views() {
        let mut a = Arena::default();
        let code = a.copy_in(&ret_const(1)).expect("mapped");
        let (exec, write) = (code.chunk.base as usize, code.chunk.write as usize);
        assert_ne!(write, 0, "no second view");
        // SAFETY: the child makes only system calls (async-signal-safe) and ends with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: madvise on an address range only asks; ENOMEM says it is not mapped.
            let mapped =
                |p: usize| unsafe { libc::madvise(p as *mut libc::c_void, 4096, libc::MADV_NORMAL) == 0 };
            let status = if mapped(exec) || mapped(write) { 1 } else { 0 };
            // SAFETY: ending the forked child without running the parent's destructors.
            unsafe { libc::_exit(status) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child saw a view: {status:#x}"
        );
        assert_eq!(call(&code), 1, "the parent's code still runs");
    }

    #[test]
    fn mapped_code_memory_is_bounded_and_returned() {
        for single_view in [false, true] {
            bounded_and_returned(Arena { single_view, ..Arena::default() });
        }
    }

    fn bounded_and_returned(mut a: Arena) {
        let big = vec![0xc3u8; CHUNK];
        let mut live = Vec::new();
        while let Some(c) = a.copy_in(&big) {
            live.push(c);
            assert!(live.len() <= MAX_MAPPED / CHUNK, "the arena mapped past its bound");
        }
        assert_eq!(live.len(), MAX_MAPPED / CHUNK);
        assert!(a.mapped() <= MAX_MAPPED);
        // The bytes are there, executable memory readable as data.
        // SAFETY: `live[0]` holds its chunk mapped (PROT_READ | PROT_EXEC) for `CHUNK` bytes.
        assert_eq!(unsafe { *live[0].as_ptr() }, 0xc3);
        live.truncate(1);
        assert_eq!(a.mapped(), CHUNK, "dropped blocks return their chunks");
        assert!(a.copy_in(&[0x90; 16]).is_some(), "room again once code is dropped");
    }
}
