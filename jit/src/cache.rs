//! The persistent translation cache (`--jit-cache DIR`): machine code of translated blocks saved to a
//! file, so that a second run of the same guest code places it instead of running Cranelift.
//!
//! - **Key.** A translation is a function of the block's decoded instructions (iced's whole
//!   `Instruction`, which the guest's code bytes, the code size and the RIP determine; the next RIPs;
//!   the address and operand sizes; and which interpreter handler each one has, which the CPU model
//!   decides) and of how it was compiled: Ferrite's own build (the linker's GNU build ID, else a hash of the running executable),
//!   Cranelift's settings and the host features it targets, and this file's format. The last group
//!   names the file (`<hash>.fjc`) and is repeated in its header; the first is each entry's key,
//!   stored whole and compared byte for byte on lookup (its hash only indexes), so a hash collision
//!   can cost a miss, never run another block's code.
//! - **Relocatable code.** Generated code holds no host address (`Outcome::helpers`), so it runs
//!   at whatever address the arena and the executable are mapped in the next process.
//! - **Validation.** Each entry carries its lengths and a checksum; the header a magic number, the
//!   format version and the build tag. A file or an entry that fails is ignored with one line on
//!   stderr, never trusted: the file is rewritten with the entries that passed. What the checksum
//!   cannot catch is a deliberate writer: the directory is trusted like the executable itself.
//! - **Writes.** Each new translation is appended as one `write` of a whole entry, so a crash leaves
//!   at worst a truncated last entry (ignored on the next load); past [`MAX_FILE`] bytes nothing more
//!   is stored.
//! - **In memory only.** Without `--jit-cache`, the same structure without a file
//!   ([`Cache::memory`]) keeps the run's own translations, so that code decoded again after its
//!   page was invalidated (a kernel patching or reloading its code, a loader) finds its
//!   translation at its second entry instead of being compiled again. Memory is bounded by
//!   [`MAX_MEMORY`]: past it nothing more is kept.

use cpu::exec::Insn;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The file's magic number.
const MAGIC: &[u8; 8] = b"FERRJITC";
/// The file format's version (2: entries have a kind, blocks or regions).
const VERSION: u32 = 2;
/// An entry's magic number.
const ENTRY_MAGIC: u32 = 0x4A43_5246;
/// Size of the file header: magic, version, reserved, tag.
const HEADER: usize = 24;
/// Size of an entry's header: magic, key length, code length, kind ([`Kind`]), checksum.
const ENTRY_HEADER: usize = 24;
/// Longest key an entry may have (a block is at most 64 instructions of about 60 bytes each; a
/// region at most `region::MAX_INSNS` instructions).
const MAX_KEY: usize = 64 << 10;
/// Longest code an entry may have.
const MAX_CODE: usize = 4 << 20;
/// Largest cache file: past it new translations are not stored.
pub(crate) const MAX_FILE: u64 = 512 << 20;

/// What an entry holds (the entry header's fourth word, covered by the checksum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A block's translation (`Jit::code_bytes`), keyed by [`key`].
    Block = 0,
    /// A region's function (`region.rs`), keyed by [`region_key`].
    Region = 1,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        match v {
            0 => Some(Kind::Block),
            1 => Some(Kind::Region),
            _ => None,
        }
    }
}

/// A 64-bit hash of `bytes` (not cryptographic: an index and a checksum against corruption).
pub(crate) fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        h = (h.rotate_left(29) ^ w).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h.rotate_left(29) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Collects what a `Hash` implementation feeds a hasher: an exact serialisation of the value.
struct Bytes<'a>(&'a mut Vec<u8>);

impl Hasher for Bytes<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// The key of a block's translation: everything about its instructions that code generation reads.
pub(crate) fn key(insns: &[Insn]) -> Vec<u8> {
    let mut k = Vec::with_capacity(insns.len() * 64);
    // Handlers are named by their distance from a function of this crate: the same for every load
    // address of the executable.
    let anchor = crate::call_handler as *const () as usize;
    for insn in insns {
        let i = &insn.i;
        // iced's `Hash` covers every field but the IP, length and code size.
        i.hash(&mut Bytes(&mut k));
        k.extend_from_slice(&i.ip().to_le_bytes());
        k.extend_from_slice(&insn.next_rip.to_le_bytes());
        k.extend_from_slice(&[i.len() as u8, i.code_size() as u8, insn.asize, insn.osize]);
        k.extend_from_slice(&((insn.handler as usize).wrapping_sub(anchor) as u64).to_le_bytes());
    }
    k
}

/// The key of a region's function: its members' [`key`]s in order, after their count and lengths
/// (so that [`split_region_key`] gives them back).
pub(crate) fn region_key(members: &[Vec<u8>]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + 4 * members.len() + members.iter().map(Vec::len).sum::<usize>());
    k.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for m in members {
        k.extend_from_slice(&(m.len() as u32).to_le_bytes());
    }
    for m in members {
        k.extend_from_slice(m);
    }
    k
}

/// The member keys of a [`region_key`]; `None` when `k` is not one (fewer than two members, or
/// lengths that do not add up).
pub(crate) fn split_region_key(k: &[u8]) -> Option<Vec<&[u8]>> {
    let n = u32::from_le_bytes(k.get(..4)?.try_into().ok()?) as usize;
    if !(2..=64).contains(&n) {
        return None;
    }
    let mut at = 4 + 4 * n;
    let mut out = Vec::with_capacity(n);
    for j in 0..n {
        let len = u32::from_le_bytes(k.get(4 + 4 * j..8 + 4 * j)?.try_into().ok()?) as usize;
        if len == 0 {
            return None;
        }
        out.push(k.get(at..at.checked_add(len)?)?);
        at += len;
    }
    (at == k.len()).then_some(out)
}

/// Ferrite's build identity: a rebuild changes the code any translation calls into, the offsets it
/// uses and the semantics it restates. It is the GNU build ID the linker wrote into the image that
/// holds this code (a SHA-1 of the whole linked output, read from the mapped image's notes: no
/// file is read), or, when the image has none, a hash of the running executable (reading 60 MB
/// costs about 0.1 s at every start). `None` when neither can be had.
fn build_id() -> Option<u64> {
    static ID: OnceLock<Option<u64>> = OnceLock::new();
    *ID.get_or_init(|| match loaded_build_id() {
        Some(id) => Some(hash64(0x0062_7569_6c64_6964, &id)),
        None => {
            let bytes =
                std::fs::read("/proc/self/exe").or_else(|_| std::fs::read(std::env::current_exe()?)).ok()?;
            Some(hash64(0x0062_7569_6c64, &bytes))
        }
    })
}

/// `NT_GNU_BUILD_ID`, the note type of a GNU build ID.
const NT_GNU_BUILD_ID: u32 = 3;

/// The descriptor of the first GNU build-ID note in the contents of an ELF note segment whose
/// entries are aligned to `align` bytes (4, or 8 in a segment aligned so); `None` when there is
/// none or the notes are malformed.
fn gnu_build_id(notes: &[u8], align: usize) -> Option<&[u8]> {
    let align = if align == 8 { 8 } else { 4 };
    let mut at = 0usize;
    while notes.len().checked_sub(at)? >= 12 {
        let namesz = u32_at(notes, at) as usize;
        let descsz = u32_at(notes, at + 4) as usize;
        let kind = u32_at(notes, at + 8);
        let name_at = at + 12;
        // The descriptor and the next note start aligned (the segment itself is).
        let desc_at = name_at.checked_add(namesz)?.checked_next_multiple_of(align)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc);
        }
        at = desc_at.checked_add(descsz)?.checked_next_multiple_of(align)?;
    }
    None
}

/// The GNU build ID of the loaded image (executable or shared object) that holds this function.
fn loaded_build_id() -> Option<Vec<u8>> {
    struct Find {
        /// An address inside the wanted image.
        addr: usize,
        id: Option<Vec<u8>>,
    }
    /// Called by `dl_iterate_phdr` for each loaded image; returns non-zero to stop at ours.
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `dl_iterate_phdr` passes a valid `dl_phdr_info` for the duration of the call, and
        // `data` is the `Find` that `loaded_build_id` passed it, borrowed by nothing else meanwhile.
        let (info, find) = unsafe { (&*info, &mut *(data as *mut Find)) };
        if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
            return 0;
        }
        // SAFETY: the loader's program headers of this image: `dlpi_phnum` entries at `dlpi_phdr`,
        // mapped for as long as the image is loaded (ours is, while this code runs).
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let base = info.dlpi_addr as usize;
        // The mapped range of each loadable segment.
        let loads: Vec<(usize, usize)> = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD)
            .map(|p| (base.wrapping_add(p.p_vaddr as usize), p.p_memsz as usize))
            .collect();
        let inside =
            |a: usize, len: usize| loads.iter().any(|&(s, n)| a >= s && a - s <= n && n - (a - s) >= len);
        if !inside(find.addr, 1) {
            return 0;
        }
        for p in phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE) {
            let (at, len) = (base.wrapping_add(p.p_vaddr as usize), p.p_memsz as usize);
            // Only notes inside a loaded segment are mapped.
            if len == 0 || !inside(at, len) {
                continue;
            }
            // SAFETY: `len` bytes at `at` lie inside one of this image's loaded segments (checked
            // just above), which stay mapped and readable while the image is loaded; nothing
            // writes them.
            let notes = unsafe { std::slice::from_raw_parts(at as *const u8, len) };
            if let Some(id) = gnu_build_id(notes, p.p_align as usize) {
                find.id = Some(id.to_vec());
                break;
            }
        }
        1
    }
    let mut find = Find { addr: loaded_build_id as *const () as usize, id: None };
    // SAFETY: `each` matches the callback's signature, does not unwind (no operation in it panics:
    // slices are taken with `get` or after range checks) and uses `data` only as the `Find` given.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut find as *mut Find).cast()) };
    find.id
}

/// One saved translation.
struct Entry {
    kind: Kind,
    key: Vec<u8>,
    code: Vec<u8>,
}

/// Most bytes of keys and code the cache holds in memory; past it nothing more is kept.
pub(crate) const MAX_MEMORY: u64 = 256 << 20;

/// The cache of one build and code-generation setting, loaded in memory, appended to on disk.
pub(crate) struct Cache {
    /// Bytes of keys and code held in memory.
    memory: u64,
    path: PathBuf,
    /// Open for appending; `None` once writing failed (the cache then only serves what it has).
    file: Option<File>,
    /// Entries by the hash of their key.
    entries: HashMap<u64, Vec<Entry>>,
    /// Bytes of the file.
    size: u64,
    /// Entries loaded from the file.
    pub loaded: u64,
    /// Entries (or whole files) found corrupt, truncated or stale and ignored.
    pub rejected: u64,
    /// Entries appended.
    pub stored: u64,
}

/// The checksum of an entry.
fn entry_sum(kind: Kind, key: &[u8], code: &[u8]) -> u64 {
    hash64(hash64(0x0065_6e74_7279 ^ ((kind as u64) << 56), key), code)
}

/// The index of an entry in memory: a hash of its kind and key.
fn index(kind: Kind, key: &[u8]) -> u64 {
    hash64(kind as u64, key)
}

/// An entry as written to the file.
fn entry_bytes(kind: Kind, key: &[u8], code: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_HEADER + key.len() + code.len());
    v.extend_from_slice(&ENTRY_MAGIC.to_le_bytes());
    v.extend_from_slice(&(key.len() as u32).to_le_bytes());
    v.extend_from_slice(&(code.len() as u32).to_le_bytes());
    v.extend_from_slice(&(kind as u32).to_le_bytes());
    v.extend_from_slice(&entry_sum(kind, key, code).to_le_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(code);
    v
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// The entries of a file's contents after its header, and whether all of it was valid.
fn parse_entries(b: &[u8]) -> (Vec<Entry>, bool) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        if b.len() - at < ENTRY_HEADER || u32_at(b, at) != ENTRY_MAGIC {
            return (out, false);
        }
        let (klen, clen) = (u32_at(b, at + 4) as usize, u32_at(b, at + 8) as usize);
        let sum = u64_at(b, at + 16);
        let Some(kind) = Kind::from_u32(u32_at(b, at + 12)) else { return (out, false) };
        if klen == 0 || klen > MAX_KEY || clen == 0 || clen > MAX_CODE {
            return (out, false);
        }
        let body = at + ENTRY_HEADER;
        if b.len() - body < klen + clen {
            return (out, false);
        }
        let (key, code) = (&b[body..body + klen], &b[body + klen..body + klen + clen]);
        if entry_sum(kind, key, code) != sum {
            return (out, false);
        }
        out.push(Entry { kind, key: key.to_vec(), code: code.to_vec() });
        at = body + klen + clen;
    }
    (out, true)
}

fn header(tag: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&tag.to_le_bytes());
    h
}

impl Cache {
    /// Opens (creating it if needed) the cache for code generated with `codegen_id` in `dir`.
    /// Fails only when the directory cannot be created or the executable cannot be read.
    pub(crate) fn open(dir: &Path, codegen_id: &str) -> Result<Cache, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("jit-cache: {}: {e}", dir.display()))?;
        let build =
            build_id().ok_or("jit-cache: cannot read ferrite's own executable to identify the build")?;
        let mut id = build.to_le_bytes().to_vec();
        id.extend_from_slice(&VERSION.to_le_bytes());
        id.extend_from_slice(codegen_id.as_bytes());
        let tag = hash64(0x0074_6167, &id);
        let path = dir.join(format!("{tag:016x}.fjc"));
        let mut cache = Cache {
            memory: 0,
            path,
            file: None,
            entries: HashMap::new(),
            size: 0,
            loaded: 0,
            rejected: 0,
            stored: 0,
        };
        let mut keep = Vec::new();
        let mut rewrite = true;
        match std::fs::read(&cache.path) {
            Ok(b) if b.len() >= HEADER && b[..HEADER] == header(tag)[..] => {
                let (entries, whole) = parse_entries(&b[HEADER..]);
                if !whole {
                    cache.rejected += 1;
                    eprintln!(
                        "ferrite: jit-cache: {}: a corrupt or truncated entry after {} good ones; it and the rest are ignored",
                        cache.path.display(),
                        entries.len()
                    );
                }
                rewrite = !whole;
                keep = entries;
            }
            Ok(b) if b.is_empty() => {}
            Ok(_) => {
                cache.rejected += 1;
                eprintln!(
                    "ferrite: jit-cache: {}: not a cache of this build and version; ignored and replaced",
                    cache.path.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                cache.rejected += 1;
                eprintln!("ferrite: jit-cache: {}: {e}; ignored and replaced", cache.path.display());
            }
        }
        if rewrite {
            // Write the good entries to a new file and rename it over the old one, so that a crash
            // meanwhile leaves one or the other.
            let mut bytes = header(tag);
            for e in &keep {
                bytes.extend_from_slice(&entry_bytes(e.kind, &e.key, &e.code));
            }
            let tmp = cache.path.with_extension(format!("tmp{}", std::process::id()));
            let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &cache.path));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                eprintln!("ferrite: jit-cache: {}: {e}; nothing will be saved", cache.path.display());
                keep.clear();
            }
        }
        cache.file = OpenOptions::new().append(true).open(&cache.path).ok();
        cache.size = cache.file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        for e in keep {
            cache.loaded += 1;
            cache.insert(e);
        }
        Ok(cache)
    }

    fn insert(&mut self, e: Entry) {
        self.memory += (e.key.len() + e.code.len()) as u64;
        self.entries.entry(index(e.kind, &e.key)).or_default().push(e);
    }

    /// The saved code of the block `key`, if any.
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<&[u8]> {
        self.lookup_kind(Kind::Block, key)
    }

    /// The saved code of the entry of `kind` with `key`, if any.
    pub(crate) fn lookup_kind(&self, kind: Kind, key: &[u8]) -> Option<&[u8]> {
        let list = self.entries.get(&index(kind, key))?;
        list.iter().find(|e| e.kind == kind && e.key == key).map(|e| &e.code[..])
    }

    /// Every saved region, as `(key, code)` (`region.rs` places them; the key is checked there).
    pub(crate) fn regions(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.values().flatten().filter(|e| e.kind == Kind::Region).map(|e| (&e.key[..], &e.code[..]))
    }

    /// A cache without a file: the translations of this run only (see the module documentation).
    pub(crate) fn memory() -> Cache {
        Cache {
            memory: 0,
            path: PathBuf::new(),
            file: None,
            entries: HashMap::new(),
            size: 0,
            loaded: 0,
            rejected: 0,
            stored: 0,
        }
    }

    /// Translations held.
    pub(crate) fn entry_count(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    /// Whether the cache has a file (`--jit-cache DIR`), not only memory.
    pub(crate) fn persistent(&self) -> bool {
        !self.path.as_os_str().is_empty()
    }

    /// Saves a block's translation (in memory while below [`MAX_MEMORY`], and appended to the
    /// file while it is below [`MAX_FILE`]).
    pub(crate) fn store(&mut self, key: Vec<u8>, code: Vec<u8>) {
        self.store_kind(Kind::Block, key, code);
    }

    /// Saves an entry of `kind` (as [`Cache::store`]).
    pub(crate) fn store_kind(&mut self, kind: Kind, key: Vec<u8>, code: Vec<u8>) {
        if key.is_empty()
            || code.is_empty()
            || key.len() > MAX_KEY
            || code.len() > MAX_CODE
            || self.memory >= MAX_MEMORY
            || self.lookup_kind(kind, &key).is_some()
        {
            return;
        }
        if let Some(f) = &mut self.file
            && self.size < MAX_FILE
        {
            let bytes = entry_bytes(kind, &key, &code);
            match f.write_all(&bytes) {
                Ok(()) => {
                    self.size += bytes.len() as u64;
                    self.stored += 1;
                }
                Err(e) => {
                    eprintln!("ferrite: jit-cache: {}: {e}; nothing more will be saved", self.path.display());
                    self.file = None;
                }
            }
        }
        self.insert(Entry { kind, key, code });
    }

    /// The cache file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let a = entry_bytes(Kind::Block, b"key-a", &[1, 2, 3]);
        let b = entry_bytes(Kind::Region, b"key-b", &[4; 100]);
        let all = [a.clone(), b.clone()].concat();
        let (e, whole) = parse_entries(&all);
        assert!(whole);
        assert_eq!(e.len(), 2);
        assert_eq!((&e[1].key[..], &e[1].code[..]), (&b"key-b"[..], &[4u8; 100][..]));
        assert_eq!((e[0].kind, e[1].kind), (Kind::Block, Kind::Region));
        // Every single-byte change and every truncation is caught: the good prefix survives.
        for at in 0..all.len() {
            let mut bad = all.clone();
            bad[at] ^= 0x40;
            let (e, whole) = parse_entries(&bad);
            assert!(!whole, "a flipped byte at {at} went unnoticed");
            assert_eq!(e.len(), usize::from(at >= a.len()));
            let (e, whole) = parse_entries(&all[..at]);
            assert_eq!(whole, at == 0 || at == a.len(), "truncation at {at}");
            assert_eq!(e.len(), usize::from(at >= a.len()));
        }
    }

    /// A note as the linker writes it.
    fn note(name: &[u8], kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(align), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(align), 0);
        v
    }

    #[test]
    fn the_build_id_note_is_found_among_others_and_malformed_notes_give_none() {
        let id = [0xabu8; 20];
        for align in [4, 8] {
            let notes = [
                note(b"GNU\0", 1, &[0, 0, 0, 0, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], align),
                note(b"Go\0", NT_GNU_BUILD_ID, &[9; 7], align),
                note(b"GNU\0", NT_GNU_BUILD_ID, &id, align),
                note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 8], align),
            ]
            .concat();
            assert_eq!(gnu_build_id(&notes, align), Some(&id[..]), "align {align}");
            // Cut anywhere before the ID's last byte: never an ID of the wrong bytes, never a panic.
            let before = note(b"GNU\0", 1, &[0; 16], align).len() + note(b"Go\0", 3, &[9; 7], align).len();
            let end = before + 16usize.next_multiple_of(align) + id.len();
            assert_eq!(gnu_build_id(&notes[..end], align), Some(&id[..]));
            for cut in 0..end {
                assert_eq!(gnu_build_id(&notes[..cut], align), None, "align {align}, cut at {cut}");
            }
            let mut huge = notes.clone();
            huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
            assert_eq!(gnu_build_id(&huge, align), None);
        }
        assert_eq!(gnu_build_id(&note(b"GNU\0", 4, &id, 4), 4), None, "another note type");
    }

    #[test]
    fn the_build_id_is_the_linkers_note_in_this_executable() {
        let Some(id) = loaded_build_id() else {
            // A linker without `--build-id` (the cache then hashes the executable).
            eprintln!("skipped: this test binary has no GNU build ID note");
            return;
        };
        assert!(id.len() >= 8, "{id:02x?}");
        // The same note, found in the file the process runs: "GNU\0" after its sizes and type.
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let mut needle = Vec::new();
        needle.extend_from_slice(&4u32.to_le_bytes());
        needle.extend_from_slice(&(id.len() as u32).to_le_bytes());
        needle.extend_from_slice(&NT_GNU_BUILD_ID.to_le_bytes());
        needle.extend_from_slice(b"GNU\0");
        needle.extend_from_slice(&id);
        assert!(
            exe.windows(needle.len()).any(|w| w == needle),
            "the in-memory build ID is not the file's note"
        );
        assert!(build_id().is_some());
    }

    #[test]
    fn region_keys_give_back_their_members_and_malformed_ones_give_none() {
        let members = vec![b"head".to_vec(), b"second member".to_vec(), b"x".to_vec()];
        let k = region_key(&members);
        let back = split_region_key(&k).expect("a region key");
        assert_eq!(back, members.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // Any truncation or extension is refused, as are counts of fewer than two members.
        for cut in 0..k.len() {
            assert_eq!(split_region_key(&k[..cut]), None, "cut at {cut}");
        }
        assert_eq!(split_region_key(&[k.clone(), vec![0]].concat()), None);
        assert_eq!(split_region_key(&region_key(&members[..1])), None);
        let mut huge = k.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(split_region_key(&huge), None);
        // A region and a block with the same key bytes are different entries.
        let mut c = Cache::memory();
        c.store_kind(Kind::Region, k.clone(), vec![1, 2]);
        assert_eq!(c.lookup(&k), None);
        assert_eq!(c.lookup_kind(Kind::Region, &k), Some(&[1u8, 2][..]));
        assert_eq!(c.regions().count(), 1);
    }

    #[test]
    fn the_hash_depends_on_every_byte() {
        let base = vec![7u8; 37];
        let h = hash64(1, &base);
        for at in 0..base.len() {
            let mut v = base.clone();
            v[at] = 8;
            assert_ne!(hash64(1, &v), h);
        }
        assert_ne!(hash64(1, &base[..36]), h);
        assert_ne!(hash64(2, &base), h);
    }
}
