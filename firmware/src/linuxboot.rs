//! `--kernel` with a BIOS, as QEMU's `-kernel` does with firmware: the machine lays the bzImage out in
//! fw_cfg's kernel items the way a boot loader would load it (the 16-bit setup code at
//! [`SETUP_ADDR`] with its header filled in, the protected-mode kernel at [`KERNEL_ADDR`], the command
//! line at [`CMDLINE_ADDR`], the initrd high in RAM), and hands the BIOS an option ROM of our own
//! (`test-roms/src/optionroms/linuxboot.asm`, the fw_cfg file [`ROM_FILE`]) whose boot entry copies
//! them into place with fw_cfg DMA and enters the setup code in real mode. The `bootorder` line
//! [`BOOTORDER`] makes SeaBIOS boot it first.
//!
//! The layout is QEMU's for a protocol 2.02+ kernel loaded high (`x86_load_linux`): real-mode code at
//! 0x10000, its heap up to 0xFE00 above that, the command line at 0x20000, the kernel at 1 MiB, the
//! initrd page-aligned below the lower of the kernel's `initrd_addr_max` and the top of RAM below 4 GiB
//! less [`HIGH_RESERVE`] (where SeaBIOS keeps its own tables).

/// Where the real-mode setup code goes (segment 0x1000).
pub const SETUP_ADDR: u32 = 0x1_0000;
/// Where the command line goes.
pub const CMDLINE_ADDR: u32 = 0x2_0000;
/// Where the protected-mode kernel goes.
pub const KERNEL_ADDR: u32 = 0x10_0000;
/// RAM kept free of the initrd at the top of memory below 4 GiB: SeaBIOS's high tables (256 KiB) and
/// room to spare.
pub const HIGH_RESERVE: u64 = 1 << 20;
/// The option ROM's fw_cfg file name (SeaBIOS runs every `genroms/*` file as an option ROM).
pub const ROM_FILE: &str = "genroms/linuxboot.bin";
/// The `bootorder` fw_cfg file that boots the option ROM first (SeaBIOS's name for a `genroms` ROM).
pub const BOOTORDER: &str = "/rom@genroms/linuxboot.bin\n";

/// The boot loader's `type_of_loader` (QEMU's, 0xB0: "Qemu", version 0).
const LOADER_TYPE: u8 = 0xB0;
/// `loadflags` bits.
const LOADED_HIGH: u8 = 0x01;
const CAN_USE_HEAP: u8 = 0x80;

/// A bzImage laid out for the BIOS's option ROM: what goes into fw_cfg's kernel items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BiosLinux {
    /// The setup sectors (boot sector and real-mode code), header filled in; loaded at [`SETUP_ADDR`].
    pub setup: Vec<u8>,
    /// The protected-mode kernel; loaded at [`KERNEL_ADDR`].
    pub kernel: Vec<u8>,
    /// The initrd and its address.
    pub initrd: Option<(u32, Vec<u8>)>,
    /// The command line (without the NUL, which fw_cfg's item adds); loaded at [`CMDLINE_ADDR`].
    pub cmdline: String,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Lays `image` (a bzImage) out for a BIOS boot with RAM of `below_4g` bytes under 4 GiB; refuses, in
/// one line, what a boot loader could not load.
pub fn prepare(
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    below_4g: u64,
) -> Result<BiosLinux, String> {
    if image.len() < 0x400 || u16_at(image, 0x1fe) != 0xAA55 || &image[0x202..0x206] != b"HdrS" {
        return Err("kernel is not a bzImage (no 0xAA55 boot flag or \"HdrS\" setup header); with a BIOS, \
                    --kernel takes Linux bzImages only"
            .into());
    }
    let version = u16_at(image, 0x206);
    if version < 0x202 {
        return Err(format!(
            "kernel uses boot protocol {}.{:02}; loading it through the BIOS needs 2.02 or later",
            version >> 8,
            version & 0xff
        ));
    }
    if image[0x211] & LOADED_HIGH == 0 {
        return Err("kernel is a zImage (not loaded high): only bzImages are supported".into());
    }
    let sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let setup_len = (sects + 1) * 512;
    // The setup code, its heap and its stack share the 64 KiB below the command line.
    let heap_end = CMDLINE_ADDR - SETUP_ADDR - 0x200;
    if setup_len >= image.len() || setup_len > heap_end as usize - 0x1000 {
        return Err(format!(
            "kernel has {sects} setup sectors, which do not fit the image or the setup segment"
        ));
    }
    let max_cmdline = if version >= 0x206 { u32_at(image, 0x238) as usize } else { 255 };
    if cmdline.len() > max_cmdline || cmdline.contains('\0') {
        return Err(format!(
            "kernel command line is {} bytes; this kernel takes at most {max_cmdline}, without NUL",
            cmdline.len()
        ));
    }
    let kernel = image[setup_len..].to_vec();
    let mut setup = image[..setup_len].to_vec();
    setup[0x210] = LOADER_TYPE;
    setup[0x211] |= CAN_USE_HEAP;
    setup[0x224..0x226].copy_from_slice(&(heap_end as u16).to_le_bytes());
    setup[0x228..0x22c].copy_from_slice(&CMDLINE_ADDR.to_le_bytes());
    let initrd = match initrd {
        None => None,
        Some(rd) => {
            let addr_max = if version >= 0x203 { u64::from(u32_at(image, 0x22c)) } else { 0x37ff_ffff };
            let top = (addr_max + 1).min(below_4g.saturating_sub(HIGH_RESERVE));
            // The kernel decompresses in place up to init_size (protocol 2.10+) past 1 MiB.
            let init_size = if version >= 0x20a { u64::from(u32_at(image, 0x260)) } else { 0 };
            let kernel_end = u64::from(KERNEL_ADDR) + (kernel.len() as u64).max(init_size);
            let addr = top.checked_sub(rd.len() as u64).map(|a| a & !0xfff);
            match addr {
                Some(a) if a >= kernel_end => {
                    setup[0x218..0x21c].copy_from_slice(&(a as u32).to_le_bytes());
                    setup[0x21c..0x220].copy_from_slice(&(rd.len() as u32).to_le_bytes());
                    Some((a as u32, rd.to_vec()))
                }
                _ => {
                    return Err(format!(
                        "the initrd ({} bytes) does not fit between the kernel (ending at {kernel_end:#x}) and \
                         {top:#x}: give the machine more memory",
                        rd.len()
                    ));
                }
            }
        }
    };
    Ok(BiosLinux { setup, kernel, initrd, cmdline: cmdline.to_string() })
}

/// The linuxboot option ROM with its checksums set (the PnP header's 32 bytes and the whole image each
/// sum to zero).
pub fn rom() -> Vec<u8> {
    let mut rom = test_roms::option_rom("linuxboot").expect("the linuxboot option ROM assembles").to_vec();
    let pnp = usize::from(u16_at(&rom, 0x1a));
    rom[pnp + 9] = 0;
    let sum = rom[pnp..pnp + 32].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    rom[pnp + 9] = sum.wrapping_neg();
    let last = rom.len() - 1;
    rom[last] = 0;
    let sum = rom.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    rom[last] = sum.wrapping_neg();
    rom
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: 4 setup sectors after the boot sector, then `body` bytes of kernel.
    fn bzimage(version: u16, body: usize) -> Vec<u8> {
        let mut k = vec![0u8; 5 * 512 + body];
        k[0x1f1] = 4;
        k[0x1fe..0x200].copy_from_slice(&[0x55, 0xAA]);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        k[0x211] = LOADED_HIGH;
        k[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        k[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        k[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes());
        k
    }

    #[test]
    fn the_header_says_where_everything_is() {
        let k = bzimage(0x20f, 0x1000);
        let rd = vec![7u8; 0x1_2345];
        let b = prepare(&k, Some(&rd), "console=ttyS0", 64 << 20).unwrap();
        assert_eq!(b.setup.len(), 5 * 512);
        assert_eq!(b.kernel.len(), 0x1000);
        assert_eq!(b.setup[0x210], LOADER_TYPE);
        assert_eq!(b.setup[0x211], LOADED_HIGH | CAN_USE_HEAP);
        assert_eq!(u16_at(&b.setup, 0x224), 0xfe00);
        assert_eq!(u32_at(&b.setup, 0x228), CMDLINE_ADDR);
        let (addr, data) = b.initrd.unwrap();
        assert_eq!(addr, ((64 << 20) - HIGH_RESERVE as u32 - 0x1_2345) & !0xfff);
        assert_eq!(u32_at(&b.setup, 0x218), addr);
        assert_eq!(u32_at(&b.setup, 0x21c), 0x1_2345);
        assert_eq!(data, rd);
        // Only the header fields a loader writes changed.
        let mut orig = k[..5 * 512].to_vec();
        for o in [0x210..0x212, 0x218..0x220, 0x224..0x226, 0x228..0x22c].into_iter().flatten() {
            orig[o] = b.setup[o];
        }
        assert!(orig == b.setup, "a header byte a loader does not write changed");
    }

    #[test]
    fn the_initrd_stays_under_initrd_addr_max() {
        let mut k = bzimage(0x20f, 0x1000);
        k[0x22c..0x230].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        let b = prepare(&k, Some(&[1u8; 0x800]), "", 512 << 20).unwrap();
        assert_eq!(b.initrd.unwrap().0, 0x100_0000 - 0x1000);
    }

    /// A kernel image, its initrd, its command line and what the refusal must say.
    type Case = (Vec<u8>, Option<Vec<u8>>, String, &'static str);

    #[test]
    fn what_cannot_be_loaded_is_refused_in_one_line() {
        let cases: Vec<Case> = vec![
            (vec![0u8; 8192], None, String::new(), "not a bzImage"),
            (bzimage(0x201, 16), None, String::new(), "2.02"),
            (
                {
                    let mut k = bzimage(0x20f, 16);
                    k[0x211] = 0;
                    k
                },
                None,
                String::new(),
                "zImage",
            ),
            (bzimage(0x20f, 16), None, "x".repeat(2049), "at most 2048"),
            // The initrd would overlap the decompressed kernel (init_size 4 MiB) in 6 MiB of RAM.
            (bzimage(0x20f, 16), Some(vec![0u8; 1 << 20]), String::new(), "does not fit"),
        ];
        for (k, rd, cmd, want) in cases {
            let e = prepare(&k, rd.as_deref(), &cmd, 6 << 20).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_rom_has_valid_checksums_and_a_boot_entry() {
        let r = rom();
        assert_eq!(&r[..2], &[0x55, 0xAA]);
        assert_eq!(usize::from(r[2]) * 512, r.len());
        assert_eq!(r.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let pnp = usize::from(u16_at(&r, 0x1a));
        assert_eq!(&r[pnp..pnp + 4], b"$PnP");
        assert_eq!(r[pnp..pnp + 32].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let bev = usize::from(u16_at(&r, pnp + 0x1a));
        assert!(bev > pnp + 32 && bev < r.len(), "BEV at {bev:#x}");
        assert_eq!(r[bev], 0xFA, "the boot entry starts with CLI");
    }
}
