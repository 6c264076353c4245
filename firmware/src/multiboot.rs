//! Multiboot (version 1, specification 0.6.96) kernels booted directly, as QEMU's `-kernel` does it.
//!
//! [`load`] finds the multiboot header in the first 8 KiB of the image, loads the kernel (ELF32 or
//! ELF64 program headers at their physical addresses, or the "a.out kludge": the header's
//! `load_addr`/`load_end_addr`/`bss_end_addr`/`entry_addr` when flag 16 is set, which takes precedence
//! over ELF, as in GRUB and QEMU), places the modules, and builds the multiboot information structure.
//! It returns what to write into RAM and the CPU state at the entry point; the machine does the writes
//! and loads the registers. [`is_multiboot`] is the cheap test a boot dispatch makes first.
//!
//! # What the kernel gets (QEMU's choices, so QEMU test kernels see the same thing)
//!
//! - Info flags: memory (0), boot device (1, `0x8000FFFF` as QEMU), command line (2), modules (3),
//!   memory map (6), boot loader name (9, `"ferrite"`; QEMU says `"qemu"`). No symbol tables, drives, APM
//!   or video information. A header asking for video (flag 2) is accepted and the request ignored, as
//!   QEMU does; any other unknown requirement flag (3-15) is refused, as the specification demands.
//! - `mem_lower`/`mem_upper`: the usable RAM at 0 and at 1 MiB, in KiB, from the machine's e820 map.
//! - The memory map is that e820 map ([`crate::linux::MemoryLayout::e820`], the one a Linux boot gets).
//! - The command line is passed as given; QEMU passes `"<kernel path> <append>"` — see
//!   [`qemu_cmdline`]. Module command lines are the `--initrd` entries, `"path args"`; [`split_modules`]
//!   splits a QEMU-style list at commas (`,,` is a literal comma).
//! - Layout: QEMU's where it can be: the memory map at 0x9000, the information structure at 0x9500, a
//!   GDT at 0x9600; after the kernel's last byte (page-aligned) the module list, then the command lines
//!   and the boot loader name, then each module on its own page. Everything is clear of every loaded
//!   segment (bss included), as the specification (3.3) requires: a kernel with a segment on the page
//!   at 0x9000 gets that page's contents on the lowest free page of RAM instead (not page 0, not the
//!   page under the entry stack), and the module area moves above it when it lies above the kernel.
//!   QEMU 7.2 keeps 0x9000/0x9500 and loads the kernel over them (the kernel then finds its own bytes at
//!   EBX); Ferrite follows the specification, and `test-roms/src/kernels/mb_low.asm` checks it.
//!
//! # Entry state
//!
//! EAX = 0x2BADB002, EBX = the information structure; 32-bit protected mode with flat 4 GiB code (CS =
//! 0x08) and data (DS = ES = FS = GS = SS = 0x10) segments from the GDT at 0x9600, paging off, A20 on,
//! EFLAGS = 0x2 (interrupts off). The specification leaves ESP undefined; it is 0x7C00 here.
//!
//! Every value from the image is checked: a truncated header, a program header past the end of the
//! file, or a segment outside usable RAM is a one-line error, never a panic.

use crate::linux::{E820_RAM, E820Entry, MemoryLayout};

/// The header magic.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The value EAX holds at the entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie entirely within this many bytes from the start of the image.
pub const SEARCH_LIMIT: usize = 8192;
/// Where the memory map goes.
pub const MMAP_ADDR: u64 = 0x9000;
/// Where the multiboot information structure goes.
pub const INFO_ADDR: u64 = 0x9500;
/// Where the GDT goes.
pub const GDT_ADDR: u64 = 0x9600;
/// Size of the page holding the memory map, the information structure and the GDT.
pub const LOW_AREA_SIZE: u64 = 0x1000;
/// Initial ESP.
pub const STACK_TOP: u32 = 0x7C00;
/// The name in `boot_loader_name`.
pub const LOADER_NAME: &str = "ferrite";
/// Flat 32-bit code selector.
pub const CODE_SEL: u16 = 0x08;
/// Flat data selector.
pub const DATA_SEL: u16 = 0x10;

/// Header flag: page-align modules (always done).
const HF_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag: memory information wanted (always given).
const HF_MEMORY_INFO: u32 = 1 << 1;
/// Header flag: video mode wanted (ignored, as QEMU does).
const HF_VIDEO: u32 = 1 << 2;
/// Header flag: the address fields are valid (a.out kludge).
const HF_AOUT_KLUDGE: u32 = 1 << 16;

/// Info flag bits.
const MBI_MEMORY: u32 = 1 << 0;
const MBI_BOOT_DEVICE: u32 = 1 << 1;
const MBI_CMDLINE: u32 = 1 << 2;
const MBI_MODS: u32 = 1 << 3;
const MBI_MMAP: u32 = 1 << 6;
const MBI_LOADER_NAME: u32 = 1 << 9;

/// Size of the information structure written (through the 0.6.96 framebuffer fields).
const INFO_SIZE: usize = 120;

/// A module: its contents and its command line (`"path args"`, as QEMU passes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The module's bytes.
    pub data: Vec<u8>,
    /// Its command line.
    pub cmdline: String,
}

/// The multiboot header as found in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset of the header in the image.
    pub offset: usize,
    /// Header flags.
    pub flags: u32,
    /// The a.out-kludge fields (`header_addr`, `load_addr`, `load_end_addr`, `bss_end_addr`,
    /// `entry_addr`), when flag 16 is set.
    pub addresses: Option<[u32; 5]>,
}

/// CPU state at the kernel's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// EIP.
    pub eip: u32,
    /// EAX: [`BOOTLOADER_MAGIC`].
    pub eax: u32,
    /// EBX: the information structure.
    pub ebx: u32,
    /// ESP.
    pub esp: u32,
    /// GDTR base.
    pub gdt_base: u32,
    /// GDTR limit.
    pub gdt_limit: u16,
    /// CS (flat 32-bit code, base 0, limit 4 GiB).
    pub cs: u16,
    /// DS, ES, FS, GS, SS (flat data, base 0, limit 4 GiB).
    pub ds: u16,
}

/// What the loader leaves behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSetup {
    /// (guest physical address, bytes) to copy into RAM.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// (guest physical address, length) to clear (the kernel's bss).
    pub zero: Vec<(u64, u64)>,
    /// Registers at the entry.
    pub entry: EntryState,
    /// The memory the kernel occupies (start, end exclusive).
    pub kernel: (u64, u64),
    /// Where each module was placed (start, end exclusive).
    pub modules: Vec<(u64, u64)>,
    /// The memory map given to the kernel.
    pub e820: Vec<E820Entry>,
    /// Things the loader did not do that the header asked for (video mode).
    pub warnings: Vec<String>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// QEMU's multiboot command line: the kernel's path, a space, then `-append`.
pub fn qemu_cmdline(kernel_path: &str, append: &str) -> String {
    format!("{kernel_path} {append}")
}

/// Splits a QEMU `-initrd` module list at commas; `,,` stands for a literal comma. Each entry is
/// `"path args"`: the path is the part before the first space.
pub fn split_modules(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Finds the multiboot header: 4-byte aligned, within the first 8 KiB, magic + flags + checksum summing
/// to zero. `Ok(None)` when there is no magic at all.
pub fn find_header(image: &[u8]) -> Result<Option<Header>, String> {
    let limit = image.len().min(SEARCH_LIMIT);
    let mut bad_checksum = None;
    let mut off = 0;
    while off + 12 <= limit {
        if u32_at(image, off) == Some(HEADER_MAGIC) {
            let flags = u32_at(image, off + 4).unwrap_or(0);
            let sum = u32_at(image, off + 8).unwrap_or(0);
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(sum) == 0 {
                let addresses = if flags & HF_AOUT_KLUDGE != 0 {
                    if off + 32 > limit {
                        return Err(format!(
                            "multiboot header at {off:#x} is truncated: its address fields end past {limit:#x}"
                        ));
                    }
                    let mut a = [0u32; 5];
                    for (i, v) in a.iter_mut().enumerate() {
                        *v = u32_at(image, off + 12 + 4 * i).unwrap_or(0);
                    }
                    Some(a)
                } else {
                    None
                };
                return Ok(Some(Header { offset: off, flags, addresses }));
            }
            bad_checksum.get_or_insert(off);
        }
        off += 4;
    }
    match bad_checksum {
        Some(o) => Err(format!("multiboot header at {o:#x} has a bad checksum")),
        None => Ok(None),
    }
}

/// Whether `image` carries a valid multiboot header.
pub fn is_multiboot(image: &[u8]) -> bool {
    matches!(find_header(image), Ok(Some(_)))
}

/// A piece of the kernel to place: file bytes at `addr`, then zeros up to `addr + memsz`.
struct Segment<'a> {
    addr: u64,
    bytes: &'a [u8],
    memsz: u64,
}

/// The kernel's segments and entry point from the a.out-kludge fields.
fn aout_segments<'a>(image: &'a [u8], h: &Header, a: [u32; 5]) -> Result<(Vec<Segment<'a>>, u64), String> {
    let [header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr] = a.map(u64::from);
    if header_addr < load_addr {
        return Err(format!("multiboot header_addr {header_addr:#x} is below load_addr {load_addr:#x}"));
    }
    let back = header_addr - load_addr;
    let Some(text_offset) = (h.offset as u64).checked_sub(back) else {
        return Err(format!(
            "multiboot load_addr {load_addr:#x} would start {back:#x} bytes before the header, before the file"
        ));
    };
    let file_left = image.len() as u64 - text_offset;
    let load_size = if load_end_addr == 0 {
        file_left
    } else {
        if load_end_addr < load_addr {
            return Err(format!(
                "multiboot load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}"
            ));
        }
        load_end_addr - load_addr
    };
    if load_size > file_left {
        return Err(format!(
            "multiboot image is truncated: {load_size:#x} bytes to load from offset {text_offset:#x}, the file has {file_left:#x}"
        ));
    }
    let memsz = if bss_end_addr == 0 {
        load_size
    } else {
        if bss_end_addr < load_addr + load_size {
            return Err(format!(
                "multiboot bss_end_addr {bss_end_addr:#x} is below the end of the loaded image {:#x}",
                load_addr + load_size
            ));
        }
        bss_end_addr - load_addr
    };
    let start = text_offset as usize;
    let seg = Segment { addr: load_addr, bytes: &image[start..start + load_size as usize], memsz };
    Ok((vec![seg], entry_addr))
}

/// The kernel's segments and entry point from its ELF program headers (ELF32 i386 or ELF64 x86-64).
fn elf_segments(image: &[u8]) -> Result<(Vec<Segment<'_>>, u64), String> {
    if image.len() < 52 || &image[0..4] != b"\x7fELF" {
        return Err(
            "multiboot kernel is neither ELF nor has the a.out-kludge address fields (header flag 16)".into(),
        );
    }
    let class64 = match image[4] {
        1 => false,
        2 => true,
        c => return Err(format!("multiboot kernel: unknown ELF class {c}")),
    };
    if image[5] != 1 {
        return Err("multiboot kernel: ELF is not little-endian".into());
    }
    let trunc = || "multiboot kernel: ELF header truncated".to_string();
    let machine = u16_at(image, 18).ok_or_else(trunc)?;
    let (want, name) = if class64 { (62, "x86-64") } else { (3, "i386") };
    if machine != want {
        return Err(format!("multiboot kernel: ELF machine {machine} is not {name}"));
    }
    let (entry, phoff, phentsize, phnum) = if class64 {
        (
            u64_at(image, 24).ok_or_else(trunc)?,
            u64_at(image, 32).ok_or_else(trunc)?,
            u16_at(image, 54).ok_or_else(trunc)?,
            u16_at(image, 56).ok_or_else(trunc)?,
        )
    } else {
        (
            u64::from(u32_at(image, 24).ok_or_else(trunc)?),
            u64::from(u32_at(image, 28).ok_or_else(trunc)?),
            u16_at(image, 42).ok_or_else(trunc)?,
            u16_at(image, 44).ok_or_else(trunc)?,
        )
    };
    let min_ent = if class64 { 56 } else { 32 };
    if usize::from(phentsize) < min_ent {
        return Err(format!("multiboot kernel: ELF program header size {phentsize} is below {min_ent}"));
    }
    let table_end = phoff.checked_add(u64::from(phentsize) * u64::from(phnum));
    if table_end.is_none_or(|e| e > image.len() as u64) {
        return Err(format!(
            "multiboot kernel: ELF program headers ({phnum} at {phoff:#x}) run past the end of the file"
        ));
    }
    let mut segs = Vec::new();
    let mut entry_phys = None;
    for i in 0..usize::from(phnum) {
        let p = phoff as usize + i * usize::from(phentsize);
        let (ptype, offset, vaddr, paddr, filesz, memsz) = if class64 {
            (
                u32_at(image, p).ok_or_else(trunc)?,
                u64_at(image, p + 8).ok_or_else(trunc)?,
                u64_at(image, p + 16).ok_or_else(trunc)?,
                u64_at(image, p + 24).ok_or_else(trunc)?,
                u64_at(image, p + 32).ok_or_else(trunc)?,
                u64_at(image, p + 40).ok_or_else(trunc)?,
            )
        } else {
            let f = |o| u32_at(image, p + o).map(u64::from).ok_or_else(trunc);
            (u32_at(image, p).ok_or_else(trunc)?, f(4)?, f(8)?, f(12)?, f(16)?, f(20)?)
        };
        if ptype != 1 || memsz == 0 {
            continue;
        }
        if filesz > memsz {
            return Err(format!(
                "multiboot kernel: ELF segment {i} has file size {filesz:#x} above its memory size {memsz:#x}"
            ));
        }
        if offset.checked_add(filesz).is_none_or(|e| e > image.len() as u64) {
            return Err(format!(
                "multiboot kernel: ELF segment {i} ({filesz:#x} bytes at {offset:#x}) runs past the end of the file"
            ));
        }
        if paddr.checked_add(memsz).is_none_or(|e| e > 1 << 32) {
            return Err(format!(
                "multiboot kernel: ELF segment {i} at {paddr:#x} (+{memsz:#x}) is not below 4 GiB"
            ));
        }
        // A kernel linked high (vaddr != paddr) is entered at the physical alias of its entry point.
        if entry >= vaddr && entry - vaddr < memsz {
            entry_phys.get_or_insert(paddr + (entry - vaddr));
        }
        segs.push(Segment { addr: paddr, bytes: &image[offset as usize..(offset + filesz) as usize], memsz });
    }
    if segs.is_empty() {
        return Err("multiboot kernel: ELF has no loadable segment".into());
    }
    Ok((segs, entry_phys.unwrap_or(entry)))
}

/// Whether `start..start+len` lies inside one usable RAM range of `e820`.
fn in_ram(e820: &[E820Entry], start: u64, len: u64) -> bool {
    let Some(end) = start.checked_add(len) else { return false };
    e820.iter().any(|e| e.kind == E820_RAM && start >= e.addr && end <= e.addr + e.size)
}

fn page_align(x: u64) -> u64 {
    x.div_ceil(4096) * 4096
}

/// The page for the memory map, the information structure and the GDT: [`MMAP_ADDR`] if it is RAM
/// clear of every segment, else the lowest such page below 4 GiB, never page 0 (the real-mode IVT) nor
/// the page under the entry stack. The lowest free page starts where RAM starts, right after a segment,
/// or right after one of the two excluded pages, so only those candidates are tried (a hostile image
/// with many segments costs O(n log n)).
fn info_page(segs: &[Segment<'_>], e820: &[E820Entry]) -> Option<u64> {
    let mut busy: Vec<(u64, u64)> =
        segs.iter().map(|s| (s.addr & !0xfff, page_align(s.addr + s.memsz))).collect();
    busy.push((0, 0x1000));
    let stack_page = u64::from(STACK_TOP - 1) & !0xfff;
    busy.push((stack_page, stack_page + 0x1000));
    busy.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(busy.len());
    for (a, b) in busy {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let free = |a: u64| {
        let i = merged.partition_point(|&(start, _)| start < a + LOW_AREA_SIZE);
        a + LOW_AREA_SIZE <= 1 << 32 && in_ram(e820, a, LOW_AREA_SIZE) && (i == 0 || merged[i - 1].1 <= a)
    };
    if free(MMAP_ADDR) {
        return Some(MMAP_ADDR);
    }
    let mut candidates: Vec<u64> = merged.iter().map(|m| m.1).collect();
    candidates.extend(e820.iter().filter(|e| e.kind == E820_RAM).map(|e| page_align(e.addr)));
    candidates.sort_unstable();
    candidates.into_iter().find(|&a| free(a))
}

/// Loads the multiboot kernel `image` with `cmdline` and `modules` on a machine laid out as `mem`.
pub fn load(
    image: &[u8],
    cmdline: &str,
    modules: &[Module],
    mem: &MemoryLayout,
) -> Result<BootSetup, String> {
    let h = find_header(image)?
        .ok_or_else(|| "not a multiboot kernel: no multiboot header in the first 8 KiB".to_string())?;
    let unknown = h.flags & 0xffff & !(HF_PAGE_ALIGN | HF_MEMORY_INFO | HF_VIDEO);
    if unknown != 0 {
        return Err(format!("multiboot header requires features this loader lacks (flags {unknown:#x})"));
    }
    let mut warnings = Vec::new();
    if h.flags & HF_VIDEO != 0 {
        warnings
            .push("multiboot kernel asks for a video mode; it is left in text mode (as QEMU does)".into());
    }
    if cmdline.contains('\0') || modules.iter().any(|m| m.cmdline.contains('\0')) {
        return Err("multiboot command line contains a NUL byte".into());
    }
    let (segs, entry) = match h.addresses {
        Some(a) => aout_segments(image, &h, a)?,
        None => elf_segments(image)?,
    };
    let e820 = mem.e820();
    let mut writes = Vec::new();
    let mut zero = Vec::new();
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for s in &segs {
        let end = s.addr + s.memsz;
        if !in_ram(&e820, s.addr, s.memsz) {
            return Err(format!("multiboot kernel segment {:#x}-{:#x} is not in usable RAM", s.addr, end));
        }
        if !s.bytes.is_empty() {
            writes.push((s.addr, s.bytes.to_vec()));
        }
        if s.memsz > s.bytes.len() as u64 {
            zero.push((s.addr + s.bytes.len() as u64, s.memsz - s.bytes.len() as u64));
        }
        lo = lo.min(s.addr);
        hi = hi.max(end);
    }
    if entry > u64::from(u32::MAX) {
        return Err(format!("multiboot entry point {entry:#x} is not a 32-bit address"));
    }

    // The page with the memory map, the information structure and the GDT: QEMU's 0x9000 unless a
    // segment lies there, else the lowest free page of RAM, so it is clear of every loaded segment.
    let low = info_page(&segs, &e820)
        .ok_or_else(|| "multiboot kernel leaves no free page of RAM for the boot information".to_string())?;
    let (mmap_addr, info_addr, gdt_addr) = (low, low + (INFO_ADDR - MMAP_ADDR), low + (GDT_ADDR - MMAP_ADDR));

    // After the kernel: the module list, the strings, then the modules, each on its own page.
    // (A kernel loaded below the information page gets them above it.)
    let mods_addr = if low >= hi { page_align(hi).max(low + LOW_AREA_SIZE) } else { page_align(hi) };
    let mut strings: Vec<u8> = Vec::new();
    let strings_addr = mods_addr + 16 * modules.len() as u64;
    let mut add_string = |s: &str| {
        let a = strings_addr + strings.len() as u64;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        a
    };
    let cmdline_addr = add_string(cmdline);
    let name_addr = add_string(LOADER_NAME);
    let mod_cmdlines: Vec<u64> = modules.iter().map(|m| add_string(&m.cmdline)).collect();
    let mut next = page_align(strings_addr + strings.len() as u64);
    let mut mod_list = Vec::with_capacity(16 * modules.len());
    let mut placed = Vec::new();
    for (m, c) in modules.iter().zip(&mod_cmdlines) {
        let start = next;
        let end = start + m.data.len() as u64;
        placed.push((start, end));
        if !m.data.is_empty() {
            writes.push((start, m.data.clone()));
        }
        for v in [start, end, *c, 0] {
            mod_list.extend_from_slice(&(v as u32).to_le_bytes());
        }
        next = page_align(end);
    }
    let area_end = next.max(strings_addr + strings.len() as u64);
    if area_end > u64::from(u32::MAX) || !in_ram(&e820, mods_addr, area_end - mods_addr) {
        return Err(format!(
            "multiboot modules and command lines ({mods_addr:#x}-{area_end:#x}) do not fit in RAM after the kernel"
        ));
    }
    if !mod_list.is_empty() {
        writes.push((mods_addr, mod_list));
    }
    writes.push((strings_addr, strings));

    // The memory map.
    let mut mmap = Vec::with_capacity(24 * e820.len());
    for e in &e820 {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&e.addr.to_le_bytes());
        mmap.extend_from_slice(&e.size.to_le_bytes());
        mmap.extend_from_slice(&e.kind.to_le_bytes());
    }
    if MMAP_ADDR + mmap.len() as u64 > INFO_ADDR {
        return Err(format!("multiboot memory map of {} entries does not fit", e820.len()));
    }
    let ram_at =
        |addr: u64| e820.iter().find(|e| e.kind == E820_RAM && e.addr == addr).map_or(0, |e| e.size >> 10);
    let mem_lower = ram_at(0).min(640) as u32;
    let mem_upper = ram_at(0x10_0000).min(u64::from(u32::MAX)) as u32;

    let mut info = vec![0u8; INFO_SIZE];
    let mut put = |off: usize, v: u32| info[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(0, MBI_MEMORY | MBI_BOOT_DEVICE | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER_NAME);
    put(4, mem_lower);
    put(8, mem_upper);
    put(12, 0x8000_ffff);
    put(16, cmdline_addr as u32);
    put(20, modules.len() as u32);
    put(24, mods_addr as u32);
    put(44, mmap.len() as u32);
    put(48, mmap_addr as u32);
    put(64, name_addr as u32);

    // GDT: null, flat 32-bit code (0x08), flat data (0x10).
    let gdt: [u64; 3] = [0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();

    writes.push((mmap_addr, mmap));
    writes.push((info_addr, info));
    writes.push((gdt_addr, gdt_bytes));
    Ok(BootSetup {
        writes,
        zero,
        entry: EntryState {
            eip: entry as u32,
            eax: BOOTLOADER_MAGIC,
            ebx: info_addr as u32,
            esp: STACK_TOP,
            gdt_base: gdt_addr as u32,
            gdt_limit: (gdt.len() * 8 - 1) as u16,
            cs: CODE_SEL,
            ds: DATA_SEL,
        },
        kernel: (lo, hi),
        modules: placed,
        e820,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: u64) -> MemoryLayout {
        MemoryLayout { below_4g: size, above_4g: 0, ebda_start: 0x9_e000, rom_size: 0x1_0000 }
    }

    fn header(flags: u32, addrs: Option<[u32; 5]>) -> Vec<u8> {
        let mut h = Vec::new();
        for v in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        for v in addrs.unwrap_or_default() {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    /// A flat a.out-kludge kernel: 16 bytes of padding, the header at 16, code after; loaded at 1 MiB.
    fn aout(len: usize, bss: u32) -> Vec<u8> {
        let base = 0x10_0000u32;
        let mut img = vec![0x90u8; 16];
        img.extend(header(
            HF_AOUT_KLUDGE | HF_MEMORY_INFO,
            Some([base + 16, base, 0, base + len as u32 + bss, base + 0x40]),
        ));
        img.resize(len, 0xcc);
        img
    }

    fn elf32(paddr: u32, vaddr: u32, entry: u32, code: &[u8], memsz: u32) -> Vec<u8> {
        let mut e = vec![0u8; 0x1000];
        e[0..4].copy_from_slice(b"\x7fELF");
        e[4] = 1;
        e[5] = 1;
        e[6] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes());
        e[18..20].copy_from_slice(&3u16.to_le_bytes());
        e[24..28].copy_from_slice(&entry.to_le_bytes());
        e[28..32].copy_from_slice(&52u32.to_le_bytes());
        e[42..44].copy_from_slice(&32u16.to_le_bytes());
        e[44..46].copy_from_slice(&2u16.to_le_bytes());
        // PT_NOTE (ignored), then PT_LOAD from file offset 0x1000.
        e[52..56].copy_from_slice(&4u32.to_le_bytes());
        let p = 84;
        for (i, v) in [1u32, 0x1000, vaddr, paddr, code.len() as u32, memsz, 5, 0x1000].iter().enumerate() {
            e[p + 4 * i..p + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let h = header(0, None);
        e[0x200..0x200 + h.len()].copy_from_slice(&h);
        e.extend_from_slice(code);
        e
    }

    fn elf64(paddr: u64, entry: u64, code: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 0x1000];
        e[0..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[18..20].copy_from_slice(&62u16.to_le_bytes());
        e[24..32].copy_from_slice(&entry.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        let p = 64;
        e[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
        for (i, v) in
            [0x1000u64, paddr, paddr, code.len() as u64, code.len() as u64 + 0x100].iter().enumerate()
        {
            e[p + 8 + 8 * i..p + 16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let h = header(HF_PAGE_ALIGN, None);
        e[0x800..0x800 + h.len()].copy_from_slice(&h);
        e.extend_from_slice(code);
        e
    }

    fn write_at(s: &BootSetup, addr: u64) -> &[u8] {
        &s.writes.iter().find(|(a, _)| *a == addr).unwrap_or_else(|| panic!("no write at {addr:#x}")).1
    }

    fn rd32(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    /// Reads a NUL-terminated string at `addr` from the writes.
    fn string_at(s: &BootSetup, addr: u64) -> String {
        for (a, b) in &s.writes {
            if addr >= *a && addr < *a + b.len() as u64 {
                let rest = &b[(addr - a) as usize..];
                let n = rest.iter().position(|c| *c == 0).expect("NUL");
                return String::from_utf8(rest[..n].to_vec()).unwrap();
            }
        }
        panic!("no string at {addr:#x}");
    }

    #[test]
    fn finds_header_and_splits_module_lists() {
        let img = aout(0x400, 0);
        let h = find_header(&img).unwrap().unwrap();
        assert_eq!(h.offset, 16);
        assert!(is_multiboot(&img));
        assert!(!is_multiboot(&[0u8; 9000]));
        // Past 8 KiB the header is not looked for.
        let mut far = vec![0u8; 8192];
        far.extend(header(0, None));
        assert_eq!(find_header(&far).unwrap(), None);
        // Unaligned magic does not count.
        let mut un = vec![0u8; 2];
        un.extend(header(0, None));
        assert_eq!(find_header(&un).unwrap(), None);
        let mut bad = header(0, None);
        bad[8] ^= 1;
        assert!(find_header(&bad).unwrap_err().contains("bad checksum"));
        assert_eq!(split_modules("a.bin x=1,b.bin"), vec!["a.bin x=1", "b.bin"]);
        assert_eq!(split_modules("odd,,name,c"), vec!["odd,name", "c"]);
        assert_eq!(qemu_cmdline("k.elf", "hello"), "k.elf hello");
    }

    #[test]
    fn aout_kludge_kernel_with_modules() {
        let img = aout(0x1234, 0x2000);
        let mods = vec![
            Module { data: b"first module".to_vec(), cmdline: "m1.bin arg".into() },
            Module { data: vec![7; 5000], cmdline: "m2.bin".into() },
        ];
        let s = load(&img, "k.elf test=1", &mods, &mem(64 << 20)).unwrap();
        assert!(s.warnings.is_empty());
        assert_eq!(s.entry.eip, 0x10_0040);
        assert_eq!(s.entry.eax, 0x2BAD_B002);
        assert_eq!(s.entry.ebx, 0x9500);
        // The whole file from load_addr (the header is at offset 16 = header_addr - load_addr).
        assert_eq!(write_at(&s, 0x10_0000), &img[..]);
        assert_eq!(s.zero, vec![(0x10_1234, 0x2000)]);
        assert_eq!(s.kernel, (0x10_0000, 0x10_3234));
        // Modules page-aligned after the kernel, list and strings first.
        assert_eq!(s.modules, vec![(0x10_5000, 0x10_500c), (0x10_6000, 0x10_7388)]);
        assert_eq!(write_at(&s, 0x10_5000), b"first module");
        let info = write_at(&s, 0x9500);
        let flags = rd32(info, 0);
        assert_eq!(flags, 0x24f);
        assert_eq!(rd32(info, 4), 0x9_e000 >> 10);
        assert_eq!(rd32(info, 8), (63 << 20) >> 10);
        assert_eq!(rd32(info, 12), 0x8000_ffff);
        assert_eq!(string_at(&s, u64::from(rd32(info, 16))), "k.elf test=1");
        assert_eq!(rd32(info, 20), 2);
        let list_addr = u64::from(rd32(info, 24));
        assert_eq!(list_addr, 0x10_4000);
        let list = write_at(&s, list_addr);
        assert_eq!((rd32(list, 0), rd32(list, 4)), (0x10_5000, 0x10_500c));
        assert_eq!(string_at(&s, u64::from(rd32(list, 8))), "m1.bin arg");
        assert_eq!((rd32(list, 16), rd32(list, 20)), (0x10_6000, 0x10_7388));
        assert_eq!(string_at(&s, u64::from(rd32(list, 24))), "m2.bin");
        assert_eq!(string_at(&s, u64::from(rd32(info, 64))), "ferrite");
        // The memory map is the machine's e820 map.
        let mmap = write_at(&s, u64::from(rd32(info, 48)));
        assert_eq!(rd32(info, 44) as usize, mmap.len());
        assert_eq!(mmap.len(), 24 * s.e820.len());
        for (i, e) in s.e820.iter().enumerate() {
            let o = 24 * i;
            assert_eq!(rd32(mmap, o), 20);
            assert_eq!(u64::from_le_bytes(mmap[o + 4..o + 12].try_into().unwrap()), e.addr);
            assert_eq!(u64::from_le_bytes(mmap[o + 12..o + 20].try_into().unwrap()), e.size);
            assert_eq!(rd32(mmap, o + 20), e.kind);
        }
        // The GDT's code and data descriptors are flat.
        let gdt = write_at(&s, 0x9600);
        assert_eq!(&gdt[8..16], &0x00cf_9b00_0000_ffffu64.to_le_bytes());
        assert_eq!((s.entry.cs, s.entry.ds, s.entry.gdt_limit), (8, 0x10, 23));
    }

    #[test]
    fn elf32_higher_half_and_elf64() {
        let code = [0xf4u8; 0x300];
        let img = elf32(0x20_0000, 0xc020_0000, 0xc020_0010, &code, 0x1000);
        let s = load(&img, "", &[], &mem(32 << 20)).unwrap();
        assert_eq!(s.entry.eip, 0x20_0010, "entry translated to its physical alias");
        assert_eq!(write_at(&s, 0x20_0000), &code[..]);
        assert_eq!(s.zero, vec![(0x20_0300, 0xd00)]);
        let info = write_at(&s, 0x9500);
        assert_eq!(rd32(info, 20), 0);
        assert_eq!(string_at(&s, u64::from(rd32(info, 16))), "");
        let img = elf64(0x40_0000, 0x40_0000, &code);
        let s = load(&img, "x", &[], &mem(32 << 20)).unwrap();
        assert_eq!(s.entry.eip, 0x40_0000);
        assert_eq!(write_at(&s, 0x40_0000), &code[..]);
        // A video request is accepted with a warning.
        let mut v = aout(0x200, 0);
        let h = header(HF_AOUT_KLUDGE | HF_VIDEO, Some([0x10_0010, 0x10_0000, 0, 0, 0x10_0040]));
        v[16..16 + h.len()].copy_from_slice(&h);
        v.resize(0x200, 0);
        let s = load(&v, "", &[], &mem(32 << 20)).unwrap();
        assert_eq!(s.warnings.len(), 1);
    }

    /// Every place the loader writes (memory map, information structure, GDT, module list, strings,
    /// modules) must be clear of every segment the kernel occupies, bss included.
    fn assert_clear_of_kernel(s: &BootSetup, segs: &[(u64, u64)]) {
        let info = write_at(s, u64::from(s.entry.ebx));
        let mut placed: Vec<(u64, u64)> = vec![
            (u64::from(rd32(info, 48)), u64::from(rd32(info, 48) + rd32(info, 44))),
            (u64::from(s.entry.ebx), u64::from(s.entry.ebx) + INFO_SIZE as u64),
            (u64::from(s.entry.gdt_base), u64::from(s.entry.gdt_base) + 24),
        ];
        placed.extend(s.modules.iter().copied());
        for (a, bytes) in &s.writes {
            if !segs.iter().any(|&(k, _)| k == *a) {
                placed.push((*a, a + bytes.len() as u64));
            }
        }
        for &(a, b) in &placed {
            for &(k, e) in segs {
                assert!(b <= k || a >= e, "{a:#x}-{b:#x} overlaps the kernel's {k:#x}-{e:#x}");
            }
        }
    }

    /// QEMU's layout puts the boot information at 0x9000-0x9FFF; a kernel loaded there gets it on the
    /// lowest free page instead, and everything else after the kernel.
    #[test]
    fn boot_information_is_placed_clear_of_a_low_kernel() {
        let m = mem(16 << 20);
        let kludge = |a: [u32; 5], len: usize| {
            let mut img = vec![0u8; 16];
            img.extend(header(HF_AOUT_KLUDGE, Some(a)));
            img.resize(len, 0);
            img
        };
        let mods = vec![Module { data: b"module".to_vec(), cmdline: "m.bin arg".into() }];
        // Loaded at 0x9000 (4 KiB of image, 4 KiB of bss): the page at 0x1000 is the first free one.
        let img = kludge([0x9010, 0x9000, 0, 0xb000, 0x9040], 0x1000);
        let s = load(&img, "k.bin low", &mods, &m).unwrap();
        assert_eq!(s.kernel, (0x9000, 0xb000));
        assert_eq!(s.entry.ebx, 0x1500);
        assert_eq!(s.entry.gdt_base, 0x1600);
        let info = write_at(&s, 0x1500);
        assert_eq!(rd32(info, 48), 0x1000, "memory map on the same page");
        assert_eq!(string_at(&s, u64::from(rd32(info, 16))), "k.bin low");
        assert_eq!(rd32(info, 24), 0xb000, "module list right after the bss");
        assert_eq!(s.modules, vec![(0xc000, 0xc006)]);
        assert_clear_of_kernel(&s, &[(0x9000, 0xb000)]);
        // A kernel from 0x1000 to past 0xA000 (over the entry stack's page too): the information page
        // goes after it.
        let img = kludge([0x1010, 0x1000, 0, 0xa800, 0x1040], 0x3000);
        let s = load(&img, "", &mods, &m).unwrap();
        assert_eq!(s.entry.ebx, 0xb500);
        assert_eq!(s.modules[0].0, 0xd000);
        assert_eq!(rd32(write_at(&s, 0xb500), 24), 0xc000);
        assert_clear_of_kernel(&s, &[(0x1000, 0xa800)]);
        // ELF with segments at 0x1000-0x3000 and 0x4000-0xC000 (the PT_NOTE made a second PT_LOAD):
        // the gap at 0x3000 is used.
        let mut x = elf32(0x1000, 0x1000, 0x1000, &[0x90u8; 0x100], 0x2000);
        for (i, v) in [1u32, 0x1000, 0x4000, 0x4000, 0x100, 0x8000, 5, 0x1000].iter().enumerate() {
            x[52 + 4 * i..56 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        let s = load(&x, "", &[], &m).unwrap();
        assert_eq!(s.entry.ebx, 0x3500);
        assert_clear_of_kernel(&s, &[(0x1000, 0x3000), (0x4000, 0xc000)]);
        // No free page at all: one line.
        let tiny = MemoryLayout { below_4g: 0xa0000, above_4g: 0, ebda_start: 0x9_e000, rom_size: 0x1_0000 };
        let whole = kludge([0x1010, 0x1000, 0, 0x9_e000, 0x1040], 0x1000);
        assert!(load(&whole, "", &[], &tiny).unwrap_err().contains("no free page"));
    }

    #[test]
    fn hostile_images_are_one_line_errors() {
        let m = mem(16 << 20);
        let e = |img: &[u8]| load(img, "", &[], &m).unwrap_err();
        assert!(e(&[0u8; 100]).contains("no multiboot header"));
        // Unknown requirement flag.
        let mut img = aout(0x200, 0);
        let h = header(HF_AOUT_KLUDGE | (1 << 5), Some([0x10_0010, 0x10_0000, 0, 0, 0x10_0040]));
        img[16..16 + h.len()].copy_from_slice(&h);
        assert!(e(&img).contains("requires features"));
        let kludge = |a: [u32; 5]| {
            let mut img = vec![0u8; 16];
            img.extend(header(HF_AOUT_KLUDGE, Some(a)));
            img.resize(0x400, 0);
            img
        };
        assert!(e(&kludge([0x10_0000, 0x10_0010, 0, 0, 0])).contains("below load_addr"));
        assert!(e(&kludge([0x10_0100, 0x10_0000, 0, 0, 0])).contains("before the file"));
        assert!(e(&kludge([0x10_0010, 0x10_0000, 0x10_8000, 0, 0])).contains("truncated"));
        assert!(e(&kludge([0x10_0010, 0x10_0000, 0x0f_0000, 0, 0])).contains("load_end_addr"));
        assert!(e(&kludge([0x10_0010, 0x10_0000, 0x10_0100, 0x10_0080, 0])).contains("bss_end_addr"));
        // Outside RAM: above the machine's 16 MiB, in the EBDA, in the PCI hole.
        assert!(e(&kludge([0x2000_0010, 0x2000_0000, 0, 0, 0])).contains("not in usable RAM"));
        assert!(e(&kludge([0x9_e010, 0x9_e000, 0, 0, 0])).contains("not in usable RAM"));
        assert!(e(&kludge([0xfff_fff0, 0xfff_ffe0, 0, 0xffff_fff0, 0])).contains("not in usable RAM"));
        // A kernel below the information page is fine; what follows it goes above that page.
        let low = load(&kludge([0x8010, 0x8000, 0, 0, 0x8000]), "c", &[], &m).unwrap();
        assert_eq!(low.entry.ebx, 0x9500);
        assert_eq!(string_at(&low, 0xa000), "c");
        // Modules that do not fit after the kernel.
        let big = Module { data: vec![0; 15 << 20], cmdline: "big".into() };
        assert!(load(&aout(0x400, 0), "", &[big], &m).unwrap_err().contains("do not fit"));
        assert!(load(&aout(0x400, 0), "a\0b", &[], &m).unwrap_err().contains("NUL"));
        // ELF problems.
        let code = [0u8; 16];
        let mut x = elf32(0x20_0000, 0x20_0000, 0x20_0000, &code, 16);
        x[18] = 40;
        assert!(e(&x).contains("not i386"));
        let mut x = elf32(0x20_0000, 0x20_0000, 0x20_0000, &code, 16);
        x[44] = 200;
        assert!(e(&x).contains("program headers"));
        let mut x = elf32(0x20_0000, 0x20_0000, 0x20_0000, &code, 16);
        x[84 + 16..84 + 20].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert!(e(&x).contains("file size"));
        let x = elf32(0xffff_f000, 0x20_0000, 0x20_0000, &code, 0x2000);
        assert!(e(&x).contains("below 4 GiB"));
        let mut x = elf32(0x20_0000, 0x20_0000, 0x20_0000, &code, 16);
        x[84 + 4..84 + 8].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert!(e(&x).contains("past the end of the file"));
        let mut x = elf32(0x20_0000, 0x20_0000, 0x20_0000, &code, 16);
        x[0] = 0;
        assert!(e(&x).contains("neither ELF"));
        // Every truncation of valid images is an error or a load, never a panic.
        for img in [
            aout(0x400, 0x100),
            elf32(0x20_0000, 0xc020_0000, 0xc020_0000, &code, 64),
            elf64(0x40_0000, 0x40_0000, &code),
        ] {
            for n in 0..img.len() {
                let _ = load(&img[..n], "", &[], &m);
            }
            // And bytes flipped one at a time in the headers.
            for i in 0..0x240.min(img.len()) {
                let mut c = img.clone();
                c[i] ^= 0xa5;
                let _ = load(&c, "", &[], &m);
            }
        }
    }
}
