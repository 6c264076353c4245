//! The loader targets: a guest image (bzImage or multiboot kernel) given to the loader, which must
//! refuse it with an error or plan a boot that stays inside the machine's RAM.

use crate::rng::Rng;
use firmware::linux::{self, E820Entry, MemoryLayout};
use firmware::multiboot::{self, Module};

/// The layout of a 64 MiB machine as the board lays it out.
fn layout() -> MemoryLayout {
    MemoryLayout { below_4g: 64 << 20, above_4g: 0, ebda_start: 0x9_e000, rom_size: 0x1_0000 }
}

/// Whether `[addr, addr+len)` lies inside usable RAM of `e820` (type 1).
fn in_ram(e820: &[E820Entry], addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    len == 0 || e820.iter().any(|e| e.kind == 1 && addr >= e.addr && end <= e.addr + e.size)
}

/// A bzImage: refused, or planned with every write inside the machine's low RAM.
pub fn bzimage(input: &[u8]) -> Result<u64, String> {
    let mem = layout();
    let (initrd, cmdline) = match input.first() {
        Some(b) if b & 1 == 1 => (Some(&input[..input.len().min(4096)]), "console=ttyS0"),
        _ => (None, ""),
    };
    match linux::plan(input, initrd, cmdline, &mem, Some(0xe_0000)) {
        Err(e) => {
            let text = e.to_string();
            if text.is_empty() || text.contains('\n') {
                return Err(format!("the loader's error is not one line: {text:?}"));
            }
            Ok(1 + text.len() as u64)
        }
        Ok(plan) => {
            for (addr, bytes) in &plan.writes {
                // The loader writes its own structures (zero page, command line, page tables, GDT)
                // below 1 MiB and the kernel and initrd above it: all must be RAM the board has.
                let end = addr.checked_add(bytes.len() as u64).ok_or("a write wraps around")?;
                if end > mem.below_4g {
                    return Err(format!("the plan writes {:#x}..{end:#x}, past low RAM", addr));
                }
            }
            Ok(0x1000 + plan.writes.len() as u64)
        }
    }
}

/// A multiboot kernel: refused, or loaded with its segments, modules and zeroed bss inside RAM.
pub fn multiboot(input: &[u8]) -> Result<u64, String> {
    let mem = layout();
    let modules = if input.len() > 64 && input[0] & 1 == 1 {
        vec![Module { data: input[..64].to_vec(), cmdline: "mod".into() }]
    } else {
        Vec::new()
    };
    match multiboot::load(input, "kernel", &modules, &mem) {
        Err(e) => {
            if e.is_empty() || e.contains('\n') {
                return Err(format!("the loader's error is not one line: {e:?}"));
            }
            Ok(1 + e.len() as u64)
        }
        Ok(b) => {
            for (addr, bytes) in &b.writes {
                if !in_ram(&b.e820, *addr, bytes.len() as u64) {
                    return Err(format!("a write at {addr:#x} (+{:#x}) is outside RAM", bytes.len()));
                }
            }
            for &(addr, len) in &b.zero {
                if !in_ram(&b.e820, addr, len) {
                    return Err(format!("bss {addr:#x} (+{len:#x}) is outside RAM"));
                }
            }
            Ok(0x1000 + b.writes.len() as u64)
        }
    }
}

/// A plausible bzImage: boot flag, "HdrS", protocol 2.15, LOADED_HIGH, XLF_KERNEL_64, random sizes.
pub fn seed_bzimage(r: &mut Rng) -> Vec<u8> {
    let sects = 1 + r.below(8);
    let n = (sects + 1) * 512 + r.below(8192);
    let mut v = r.bytes(n);
    v[0x1f1] = sects as u8;
    v[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    v[0x201] = 0x6a;
    v[0x202..0x206].copy_from_slice(b"HdrS");
    v[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    v[0x211] = 1;
    v[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
    v[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
    let init = [0u32, 0x1000, 0x10_0000, 0x400_0000, u32::MAX][r.below(5)];
    v[0x260..0x264].copy_from_slice(&init.to_le_bytes());
    v
}

/// A plausible multiboot kernel using the a.out kludge (header at offset 0, load addresses in the
/// header), with random addresses that are sometimes sensible.
pub fn seed_multiboot(r: &mut Rng) -> Vec<u8> {
    let n = 256 + r.below(8192);
    let mut v = r.bytes(n);
    let flags: u32 = (1 << 16) | (r.below(4) as u32);
    let magic: u32 = 0x1bad_b002;
    let checksum = 0u32.wrapping_sub(magic).wrapping_sub(flags);
    let load = [0x10_0000u32, 0x1000, 0x9000, 0x20_0000, r.next_u64() as u32][r.below(5)];
    let len = v.len() as u32;
    let fields = [
        magic,
        flags,
        checksum,
        load,
        load,
        load.wrapping_add(len),
        load.wrapping_add(len + r.below(0x10000) as u32),
        load + 64,
    ];
    for (i, f) in fields.iter().enumerate() {
        v[i * 4..i * 4 + 4].copy_from_slice(&f.to_le_bytes());
    }
    v
}
