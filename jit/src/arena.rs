//! Executable memory for generated code: chunks mapped read-write while code is copied in and
//! read-execute otherwise (never both), shared by the blocks whose code they hold and unmapped when
//! the last of those blocks is dropped. (Raw `mmap`/`mprotect`: memmap2's protection changes consume
//! the mapping, and a failed change would unmap code that other blocks still hold.)

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
    base: *mut u8,
    size: usize,
    /// The arena's count of mapped bytes, lowered when this chunk is unmapped.
    mapped: Rc<Cell<usize>>,
}

impl Chunk {
    fn map(size: usize, mapped: Rc<Cell<usize>>) -> Option<Chunk> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
        // existing memory; the result is checked.
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
        mapped.set(mapped.get() + size);
        Some(Chunk { base: p as *mut u8, size, mapped })
    }

    fn protect(&self, prot: libc::c_int) -> bool {
        // SAFETY: `base..base+size` is this chunk's own mapping, alive until `drop`.
        unsafe { libc::mprotect(self.base as *mut libc::c_void, self.size, prot) == 0 }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, and no `Code` handle (the only way to reach it) is left.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.size);
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
            self.current = Some(Rc::new(Chunk::map(size, self.mapped.clone())?));
            self.used = 0;
        }
        let chunk = self.current.clone()?;
        let offset = self.used;
        // No code of this chunk runs while it is writable: code runs only from `JitBlock::run`, and
        // translation happens between blocks on the same thread (`Chunk` is behind an `Rc`, so it
        // is not `Send`).
        if !chunk.protect(libc::PROT_READ | libc::PROT_WRITE) {
            return None;
        }
        // SAFETY: `offset + bytes.len() <= size` (checked above), the chunk is writable now, and the
        // bytes lie past every function already in it, so no live function changes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), chunk.base.add(offset), bytes.len()) };
        // Other blocks' code in this chunk must run again: a host that refuses to give back the
        // permission it gave a moment ago leaves no correct way on.
        assert!(
            chunk.protect(libc::PROT_READ | libc::PROT_EXEC),
            "jit: mprotect(PROT_READ|PROT_EXEC) of a code chunk failed: {}",
            std::io::Error::last_os_error()
        );
        self.used += need;
        Some(Code { chunk, offset, len: bytes.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_code_memory_is_bounded_and_returned() {
        let mut a = Arena::default();
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
