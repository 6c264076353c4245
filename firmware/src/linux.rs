//! Direct Linux boot, as QEMU's `-kernel/-initrd/-append` does it, through the x86 boot protocol's
//! 64-bit entry (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol").
//!
//! [`plan`] parses a bzImage's setup header and returns what a boot loader leaves behind: the
//! protected-mode kernel at 1 MiB, the zero page (`struct boot_params`) with the setup header, an e820
//! map matching the machine's memory map, the command line and the initrd; identity page tables for the
//! low 4 GiB, a GDT with `__BOOT_CS` (0x10) and `__BOOT_DS` (0x18); and the register state for the
//! 64-bit entry point (`code32_start + 0x200`, RSI = zero page, interrupts off). The machine copies the
//! writes into RAM and loads the registers.
//!
//! Hand-written rather than `linux-loader`: that crate loads into a `vm-memory` `GuestMemory`, which
//! Ferrite's RAM (one mapping with the PC's holes) does not implement, and it covers only the kernel copy
//! and header read; the zero page, e820 map, initrd placement, page tables and GDT are the loader's own
//! job either way. The header is read field by field at the offsets boot.rst gives, and every value from
//! the image is checked: a bad image is a one-line error, never a panic.
//!
//! Low-memory layout (the one Firecracker and cloud-hypervisor use for the same entry; all below the
//! 16 MiB minimum where the decompressor may place the kernel, so nothing here is overwritten early):
//!
//! | address | what |
//! |---|---|
//! | 0x0500 | GDT (null, null, `__BOOT_CS`, `__BOOT_DS`) |
//! | 0x7000 | zero page (`boot_params`) |
//! | 0x8FF0 | initial stack pointer |
//! | 0x9000 | PML4, then PDPT (0xA000), then four page directories (0xB000-0xEFFF): 4 GiB, 2 MiB pages |
//! | 0x20000 | command line |
//! | 0x100000 | protected-mode kernel |

use std::fmt;

/// Where the GDT goes.
pub const GDT_ADDR: u64 = 0x500;
/// Where the zero page goes.
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer.
pub const STACK_TOP: u64 = 0x8ff0;
/// The PML4.
pub const PML4_ADDR: u64 = 0x9000;
/// Where the command line goes.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Where the protected-mode kernel goes (the protocol's default `code32_start`).
pub const KERNEL_ADDR: u64 = 0x10_0000;
/// `__BOOT_CS`.
pub const BOOT_CS: u16 = 0x10;
/// `__BOOT_DS`.
pub const BOOT_DS: u16 = 0x18;

/// Oldest protocol with the 64-bit entry and `xloadflags` (2.12).
const MIN_PROTOCOL: u16 = 0x020c;
/// `xloadflags` bit: the kernel has the 64-bit entry at `code32_start + 0x200`.
const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` bit: the protected-mode kernel is loaded at 1 MiB.
const LOADED_HIGH: u8 = 1 << 0;
/// E820 types.
pub const E820_RAM: u32 = 1;
/// Reserved.
pub const E820_RESERVED: u32 = 2;
/// Largest number of e820 entries the zero page holds.
const E820_MAX: usize = 128;

/// An e820 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Why an image cannot be booted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootError(pub String);

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BootError {}

fn err<T>(s: impl Into<String>) -> Result<T, BootError> {
    Err(BootError(s.into()))
}

/// The fields of the setup header a loader reads (offsets from the start of the image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Size of the real-mode setup in 512-byte sectors (0 means 4).
    pub setup_sects: u8,
    /// Boot protocol version (0x020f = 2.15).
    pub version: u16,
    /// `loadflags`.
    pub loadflags: u8,
    /// Highest address the initrd may end at, inclusive.
    pub initrd_addr_max: u32,
    /// Physical alignment the kernel needs.
    pub kernel_alignment: u32,
    /// Whether the kernel is relocatable.
    pub relocatable: bool,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// Largest command line, not counting the NUL.
    pub cmdline_size: u32,
    /// Memory the kernel needs from its load address until it has set itself up.
    pub init_size: u32,
    /// Length of the header as found in the image (0x1F1 up to the end of the header).
    pub header_end: usize,
    /// `syssize`: the protected-mode code's size in 16-byte paragraphs (0: not stated).
    pub syssize: u32,
    /// `payload_offset` and `payload_length`: the compressed kernel, relative to the protected-mode code.
    pub payload: (u32, u32),
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl SetupHeader {
    /// Parses and checks the header of `image`.
    pub fn parse(image: &[u8]) -> Result<SetupHeader, BootError> {
        if image.len() < 0x270 {
            return err(format!("kernel image is {} bytes: too short for a bzImage", image.len()));
        }
        if u16_at(image, 0x1fe) != 0xaa55 || &image[0x202..0x206] != b"HdrS" {
            return err("kernel image is not a bzImage (no 0xAA55 boot flag or \"HdrS\" setup header)");
        }
        let version = u16_at(image, 0x206);
        if version < MIN_PROTOCOL {
            return err(format!(
                "kernel uses boot protocol {}.{:02}; the 64-bit entry needs 2.12 or later",
                version >> 8,
                version & 0xff
            ));
        }
        // The header runs from 0x1F1 to 0x202 plus the jump offset at 0x201.
        let header_end = 0x202 + usize::from(image[0x201]);
        let h = SetupHeader {
            setup_sects: image[0x1f1],
            version,
            loadflags: image[0x211],
            initrd_addr_max: u32_at(image, 0x22c),
            kernel_alignment: u32_at(image, 0x230),
            relocatable: image[0x234] != 0,
            xloadflags: u16_at(image, 0x236),
            cmdline_size: u32_at(image, 0x238),
            init_size: u32_at(image, 0x260),
            header_end,
            syssize: u32_at(image, 0x1f4),
            payload: (u32_at(image, 0x248), u32_at(image, 0x24c)),
        };
        if h.loadflags & LOADED_HIGH == 0 {
            return err("kernel is a zImage (not loaded high): only bzImages are supported");
        }
        if h.xloadflags & XLF_KERNEL_64 == 0 {
            return err("kernel has no 64-bit entry point (xloadflags.XLF_KERNEL_64 is clear)");
        }
        if h.header_end > image.len() || h.header_end > 0x290 {
            return err(format!("kernel setup header claims to end at {:#x}, past its limit", h.header_end));
        }
        if h.setup_offset() >= image.len() {
            return err(format!(
                "kernel has {} setup sectors but is only {} bytes",
                h.setup_sects,
                image.len()
            ));
        }
        // A truncated file (a cut-off download, say) must not be run: the decompressor would read past
        // the end of what was loaded and the guest would die in a triple fault.
        let code = (image.len() - h.setup_offset()) as u64;
        let promised = u64::from(h.syssize) * 16;
        if promised > code {
            return err(format!(
                "kernel image is truncated: its setup header promises {promised} bytes of protected-mode code, the file holds {code}"
            ));
        }
        let payload_end = u64::from(h.payload.0) + u64::from(h.payload.1);
        if payload_end > code {
            return err(format!(
                "kernel image is truncated: its compressed payload ends at byte {payload_end} of the protected-mode code, the file holds {code}"
            ));
        }
        Ok(h)
    }

    /// Offset of the protected-mode kernel in the image.
    pub fn setup_offset(&self) -> usize {
        let sects = if self.setup_sects == 0 { 4 } else { usize::from(self.setup_sects) };
        (sects + 1) * 512
    }
}

/// The machine's memory map, as the board lays it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// RAM bytes from address 0 (excluding the 640K-1M window): low RAM ends here.
    pub below_4g: u64,
    /// RAM bytes from 4 GiB.
    pub above_4g: u64,
    /// Where the reserved EBDA (ACPI tables) starts; RAM below it is usable.
    pub ebda_start: u64,
    /// Size of the firmware ROM that ends at 4 GiB.
    pub rom_size: u64,
}

impl MemoryLayout {
    /// The e820 map for this layout: usable RAM below the EBDA, the EBDA and the BIOS area 0xE0000-0xFFFFF
    /// reserved, RAM from 1 MiB to the PCI hole, the firmware ROM below 4 GiB reserved, RAM above 4 GiB.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut v = Vec::new();
        let low_end = self.below_4g.min(0xa_0000);
        let ebda = self.ebda_start.min(low_end);
        if ebda > 0 {
            v.push(E820Entry { addr: 0, size: ebda, kind: E820_RAM });
        }
        if low_end > ebda {
            v.push(E820Entry { addr: ebda, size: low_end - ebda, kind: E820_RESERVED });
        }
        v.push(E820Entry { addr: 0xe_0000, size: 0x2_0000, kind: E820_RESERVED });
        if self.below_4g > 0x10_0000 {
            v.push(E820Entry { addr: 0x10_0000, size: self.below_4g - 0x10_0000, kind: E820_RAM });
        }
        if self.rom_size > 0 {
            v.push(E820Entry { addr: (1 << 32) - self.rom_size, size: self.rom_size, kind: E820_RESERVED });
        }
        if self.above_4g > 0 {
            v.push(E820Entry { addr: 1 << 32, size: self.above_4g, kind: E820_RAM });
        }
        v
    }
}

/// The CPU state at the 64-bit entry (the machine turns it into its CPU's registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// RIP: the 64-bit entry point.
    pub rip: u64,
    /// RSI: the zero page.
    pub rsi: u64,
    /// RSP.
    pub rsp: u64,
    /// CR3: the identity-mapping PML4.
    pub cr3: u64,
    /// GDTR base.
    pub gdt_base: u64,
    /// GDTR limit.
    pub gdt_limit: u16,
    /// CS selector (a flat 64-bit code segment).
    pub cs: u16,
    /// DS/ES/SS (and FS/GS) selector (a flat writable data segment).
    pub ds: u16,
}

/// Everything the boot loader leaves in memory and registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPlan {
    /// (guest physical address, bytes) to copy into RAM, in order.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Registers at the entry.
    pub entry: EntryState,
    /// Where the initrd was placed (address, size), if any.
    pub initrd: Option<(u64, u64)>,
    /// The e820 map given to the kernel.
    pub e820: Vec<E820Entry>,
    /// The parsed header.
    pub header: SetupHeader,
}

/// Builds the boot for `kernel` (a bzImage) with `initrd` and `cmdline` on a machine laid out as `mem`;
/// `rsdp` is the ACPI RSDP address for `boot_params.acpi_rsdp_addr` (protocol 2.14+), if any.
pub fn plan(
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    mem: &MemoryLayout,
    rsdp: Option<u64>,
) -> Result<BootPlan, BootError> {
    let h = SetupHeader::parse(kernel)?;
    let payload = &kernel[h.setup_offset()..];
    // The kernel needs init_size bytes from its load address (at least the payload itself).
    let need = u64::from(h.init_size).max(payload.len() as u64);
    let kernel_end = KERNEL_ADDR + need;
    if kernel_end > mem.below_4g {
        return err(format!(
            "kernel needs {} MiB from 1 MiB but the machine has {} MiB of low RAM",
            need >> 20,
            mem.below_4g >> 20
        ));
    }
    if cmdline.contains('\0') {
        return err("kernel command line contains a NUL byte");
    }
    let max_cmdline = if h.cmdline_size == 0 { 255 } else { h.cmdline_size as usize };
    let max_cmdline = max_cmdline.min((KERNEL_ADDR - CMDLINE_ADDR) as usize - 1);
    if cmdline.len() > max_cmdline {
        return err(format!(
            "kernel command line is {} bytes; this kernel takes at most {max_cmdline}",
            cmdline.len()
        ));
    }
    let e820 = mem.e820();
    if e820.len() > E820_MAX {
        return err("too many e820 entries");
    }

    let mut zp = vec![0u8; 4096];
    // The setup header, copied as it is in the image; then the loader's fields.
    zp[0x1f1..h.header_end].copy_from_slice(&kernel[0x1f1..h.header_end]);
    let put32 = |zp: &mut [u8], off: usize, v: u32| zp[off..off + 4].copy_from_slice(&v.to_le_bytes());
    zp[0x210] = 0xff; // type_of_loader: undefined.
    zp[0x211] = h.loadflags & !(1 << 5); // loadflags: keep LOADED_HIGH; QUIET_FLAG off.
    put32(&mut zp, 0x214, KERNEL_ADDR as u32); // code32_start
    put32(&mut zp, 0x228, CMDLINE_ADDR as u32); // cmd_line_ptr
    zp[0xc8..0xcc].fill(0); // ext_cmd_line_ptr

    let mut initrd_at = None;
    if let Some(rd) = initrd.filter(|r| !r.is_empty()) {
        let size = rd.len() as u64;
        // Highest page-aligned address below initrd_addr_max and the end of low RAM.
        let limit = (u64::from(h.initrd_addr_max) + 1).min(mem.below_4g);
        let Some(start) = limit.checked_sub(size).map(|s| s & !0xfff) else {
            return err(format!("initrd is {size} bytes: larger than the RAM it may be placed in"));
        };
        if start < kernel_end {
            return err(format!(
                "initrd ({} MiB) does not fit between the kernel and {:#x}; give the machine more memory",
                size >> 20,
                limit
            ));
        }
        put32(&mut zp, 0x218, start as u32); // ramdisk_image
        put32(&mut zp, 0x21c, size as u32); // ramdisk_size
        put32(&mut zp, 0xc0, (start >> 32) as u32); // ext_ramdisk_image
        put32(&mut zp, 0xc4, (size >> 32) as u32); // ext_ramdisk_size
        initrd_at = Some((start, size));
    }
    if let Some(r) = rsdp
        && h.version >= 0x020e
    {
        zp[0x70..0x78].copy_from_slice(&r.to_le_bytes()); // acpi_rsdp_addr
    }
    // alt_mem_k: memory above 1 MiB in KiB (legacy field, kept for completeness).
    let ext_k = (mem.below_4g.saturating_sub(0x10_0000) + mem.above_4g) >> 10;
    put32(&mut zp, 0x1e0, ext_k.min(u64::from(u32::MAX)) as u32);
    zp[0x1e8] = e820.len() as u8;
    for (i, e) in e820.iter().enumerate() {
        let o = 0x2d0 + i * 20;
        zp[o..o + 8].copy_from_slice(&e.addr.to_le_bytes());
        zp[o + 8..o + 16].copy_from_slice(&e.size.to_le_bytes());
        zp[o + 16..o + 20].copy_from_slice(&e.kind.to_le_bytes());
    }

    // GDT: null, null, __BOOT_CS (64-bit code), __BOOT_DS (flat data).
    let gdt: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();

    // Identity map of the low 4 GiB: PML4 -> PDPT -> 4 page directories of 2 MiB pages.
    let pdpt = PML4_ADDR + 0x1000;
    let pd = PML4_ADDR + 0x2000;
    let mut tables = vec![0u8; 6 * 4096];
    tables[0..8].copy_from_slice(&(pdpt | 3).to_le_bytes());
    for i in 0..4u64 {
        let o = 4096 + i as usize * 8;
        tables[o..o + 8].copy_from_slice(&((pd + i * 4096) | 3).to_le_bytes());
    }
    for i in 0..2048u64 {
        let o = 2 * 4096 + i as usize * 8;
        tables[o..o + 8].copy_from_slice(&((i << 21) | 0x83).to_le_bytes());
    }

    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.push(0);

    let mut writes = vec![
        (GDT_ADDR, gdt_bytes),
        (ZERO_PAGE, zp),
        (PML4_ADDR, tables),
        (CMDLINE_ADDR, cmd),
        (KERNEL_ADDR, payload.to_vec()),
    ];
    if let (Some((start, _)), Some(rd)) = (initrd_at, initrd) {
        writes.push((start, rd.to_vec()));
    }
    Ok(BootPlan {
        writes,
        entry: EntryState {
            rip: KERNEL_ADDR + 0x200,
            rsi: ZERO_PAGE,
            rsp: STACK_TOP,
            cr3: PML4_ADDR,
            gdt_base: GDT_ADDR,
            gdt_limit: (gdt.len() * 8 - 1) as u16,
            cs: BOOT_CS,
            ds: BOOT_DS,
        },
        initrd: initrd_at,
        e820,
        header: h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic bzImage: 4 setup sectors + `payload` bytes of protected-mode kernel.
    fn bzimage(version: u16, xloadflags: u16, payload: usize) -> Vec<u8> {
        let mut b = vec![0u8; 5 * 512 + payload];
        b[0x1f1] = 4;
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x201] = 0x6a; // jump offset: header ends at 0x26C
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        b[0x211] = LOADED_HIGH;
        b[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        b[0x234] = 1;
        b[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        b[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        b[0x260..0x264].copy_from_slice(&0x100_0000u32.to_le_bytes()); // init_size 16 MiB
        for (i, x) in b[5 * 512..].iter_mut().enumerate() {
            *x = i as u8;
        }
        b
    }

    fn mem(size: u64) -> MemoryLayout {
        let below = size.min(0xe000_0000);
        MemoryLayout { below_4g: below, above_4g: size - below, ebda_start: 0x9_e000, rom_size: 0x1_0000 }
    }

    fn find(p: &BootPlan, addr: u64) -> &[u8] {
        &p.writes.iter().find(|(a, _)| *a == addr).expect("write at addr").1
    }

    #[test]
    fn header_is_parsed() {
        let h = SetupHeader::parse(&bzimage(0x020f, 3, 4096)).unwrap();
        assert_eq!(h.version, 0x020f);
        assert_eq!(h.setup_offset(), 5 * 512);
        assert_eq!(h.header_end, 0x26c);
        assert_eq!(h.cmdline_size, 2047);
        assert_eq!(h.init_size, 0x100_0000);
        assert!(h.relocatable);
    }

    #[test]
    fn bad_images_are_errors() {
        assert!(SetupHeader::parse(&[0u8; 100]).unwrap_err().0.contains("too short"));
        assert!(SetupHeader::parse(&[0u8; 4096]).unwrap_err().0.contains("not a bzImage"));
        assert!(SetupHeader::parse(&bzimage(0x0206, 1, 64)).unwrap_err().0.contains("2.12"));
        assert!(SetupHeader::parse(&bzimage(0x020f, 0, 64)).unwrap_err().0.contains("64-bit entry"));
        let mut b = bzimage(0x020f, 1, 64);
        b[0x1f1] = 200;
        assert!(SetupHeader::parse(&b).unwrap_err().0.contains("setup sectors"));
        let mut b = bzimage(0x020f, 1, 64);
        b[0x211] = 0;
        assert!(SetupHeader::parse(&b).unwrap_err().0.contains("zImage"));
        // Every truncation of a valid image is an error or a valid parse, never a panic.
        let b = bzimage(0x020f, 1, 64);
        for n in 0..b.len() {
            let _ = SetupHeader::parse(&b[..n]);
        }
    }

    /// A file shorter than its setup header says (syssize, or the payload's offset and length) is
    /// refused at load, whatever the cut; the whole file loads.
    #[test]
    fn truncated_images_are_refused() {
        let mut b = bzimage(0x020f, 1, 4096);
        b[0x1f4..0x1f8].copy_from_slice(&(4096u32 / 16).to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&0x100u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&0xe00u32.to_le_bytes());
        assert!(SetupHeader::parse(&b).is_ok());
        assert!(plan(&b, None, "", &mem(64 << 20), None).is_ok());
        for cut in [1, 16, 512, 4096 - 0xf00 + 1, 4095] {
            let t = &b[..b.len() - cut];
            let e = plan(t, None, "", &mem(64 << 20), None).unwrap_err().0;
            assert!(e.contains("truncated") && e.contains("4096 bytes"), "cut {cut}: {e}");
            assert!(!e.contains('\n'));
        }
        // syssize satisfied but the payload runs past the end.
        let mut p = b.clone();
        p[0x1f4..0x1f8].copy_from_slice(&0u32.to_le_bytes());
        p[0x24c..0x250].copy_from_slice(&0xf01u32.to_le_bytes());
        let e = SetupHeader::parse(&p).unwrap_err().0;
        assert!(e.contains("compressed payload ends at byte 4097"), "{e}");
        // Header fields near u32::MAX do not overflow.
        p[0x248..0x250].fill(0xff);
        p[0x1f4..0x1f8].fill(0xff);
        assert!(SetupHeader::parse(&p).unwrap_err().0.contains("truncated"));
    }

    #[test]
    fn e820_matches_the_board() {
        let e = mem(512 << 20).e820();
        assert_eq!(
            e,
            vec![
                E820Entry { addr: 0, size: 0x9_e000, kind: E820_RAM },
                E820Entry { addr: 0x9_e000, size: 0x2000, kind: E820_RESERVED },
                E820Entry { addr: 0xe_0000, size: 0x2_0000, kind: E820_RESERVED },
                E820Entry { addr: 0x10_0000, size: (512 << 20) - 0x10_0000, kind: E820_RAM },
                E820Entry { addr: 0xffff_0000, size: 0x1_0000, kind: E820_RESERVED },
            ]
        );
        let big = MemoryLayout { below_4g: 0xc000_0000, above_4g: 1 << 30, ..mem(1 << 20) }.e820();
        assert_eq!(big[3], E820Entry { addr: 0x10_0000, size: 0xc000_0000 - 0x10_0000, kind: E820_RAM });
        assert_eq!(*big.last().unwrap(), E820Entry { addr: 1 << 32, size: 1 << 30, kind: E820_RAM });
    }

    #[test]
    fn zero_page_and_entry() {
        let k = bzimage(0x020f, 3, 8192);
        let rd = vec![0x5a; 10_000];
        let p = plan(&k, Some(&rd), "console=ttyS0 quiet", &mem(512 << 20), Some(0x9_e000)).unwrap();
        let zp = find(&p, ZERO_PAGE);
        assert_eq!(&zp[0x202..0x206], b"HdrS");
        assert_eq!(u32_at(zp, 0x228), CMDLINE_ADDR as u32);
        assert_eq!(u32_at(zp, 0x214), KERNEL_ADDR as u32);
        assert_eq!(zp[0x210], 0xff);
        assert_eq!(u64::from_le_bytes(zp[0x70..0x78].try_into().unwrap()), 0x9_e000);
        assert_eq!(zp[0x1e8], 5);
        assert_eq!(u32_at(zp, 0x2d0 + 20 + 16), E820_RESERVED);
        // initrd: page aligned, ending at or below the end of RAM, above the kernel's init_size.
        let (start, size) = p.initrd.unwrap();
        assert_eq!(start % 4096, 0);
        assert_eq!(size, 10_000);
        assert!(start + size <= 512 << 20 && start + size > (512 << 20) - 8192);
        assert_eq!(u32_at(zp, 0x218), start as u32);
        assert_eq!(u32_at(zp, 0x21c), 10_000);
        assert_eq!(find(&p, start), &rd[..]);
        // The payload at 1 MiB, without the setup sectors.
        assert_eq!(find(&p, KERNEL_ADDR), &k[5 * 512..]);
        assert_eq!(find(&p, CMDLINE_ADDR), b"console=ttyS0 quiet\0");
        assert_eq!(p.entry.rip, 0x10_0200);
        assert_eq!(p.entry.rsi, ZERO_PAGE);
        assert_eq!((p.entry.cs, p.entry.ds), (0x10, 0x18));
        // Page tables identity-map 4 GiB with 2 MiB pages.
        let t = find(&p, PML4_ADDR);
        let e = |i: usize| u64::from_le_bytes(t[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(e(0), (PML4_ADDR + 0x1000) | 3);
        assert_eq!(e(512 + 3), (PML4_ADDR + 0x5000) | 3);
        assert_eq!(e(1024 + 2047), (2047 << 21) | 0x83);
        // The GDT's code descriptor is 64-bit (L set, D clear).
        let g = find(&p, GDT_ADDR);
        assert_eq!(u64::from_le_bytes(g[16..24].try_into().unwrap()) >> 53 & 3, 1);
    }

    #[test]
    fn limits_are_enforced() {
        let k = bzimage(0x020f, 1, 4096);
        let long = "x".repeat(3000);
        assert!(plan(&k, None, &long, &mem(512 << 20), None).unwrap_err().0.contains("command line"));
        assert!(plan(&k, None, "a\0b", &mem(512 << 20), None).is_err());
        // 16 MiB init_size does not fit in 8 MiB.
        assert!(plan(&k, None, "", &mem(8 << 20), None).unwrap_err().0.contains("low RAM"));
        // An initrd that only fits over the kernel.
        let rd = vec![0u8; 20 << 20];
        assert!(plan(&k, Some(&rd), "", &mem(32 << 20), None).unwrap_err().0.contains("initrd"));
        // Protocol 2.12 has no acpi_rsdp_addr field: it stays zero.
        let k = bzimage(0x020c, 1, 4096);
        let p = plan(&k, None, "", &mem(64 << 20), Some(0x9_e000)).unwrap();
        assert_eq!(&find(&p, ZERO_PAGE)[0x70..0x78], &[0; 8]);
        assert_eq!(p.initrd, None);
    }
}
