//! PCI option ROMs: the header a BIOS looks for behind a function's ROM BAR (PCI Firmware Specification
//! 3.0, 5.1), and `pcimarker`, our own ROM for the educational device (`test-roms/src/optionroms`).
//!
//! An image starts with 55 AA, its length in 512-byte units at offset 2 and the init entry at 3; the
//! word at 0x18 points at the PCI data structure ("PCIR", vendor ID, device ID, ..., code type at 0x14,
//! indicator at 0x15 with bit 7 set on the last image). Its bytes sum to zero over that length.

/// What a BIOS reads of an option ROM image's first header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciRomHeader {
    /// Vendor ID of the PCI data structure.
    pub vendor: u16,
    /// Device ID of the PCI data structure.
    pub device: u16,
    /// Code type (0: x86).
    pub code_type: u8,
    /// Length of the image in bytes (from the header at offset 2).
    pub len: usize,
    /// Whether its bytes sum to zero over that length.
    pub checksum_ok: bool,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// Parses the first image of `rom`: `None` when it lacks the 55 AA signature, the PCI data structure
/// or has a length of zero or past the end of `rom`.
pub fn parse(rom: &[u8]) -> Option<PciRomHeader> {
    if rom.get(..2)? != [0x55, 0xAA] {
        return None;
    }
    let len = usize::from(*rom.get(2)?) * 512;
    if len == 0 || len > rom.len() {
        return None;
    }
    let p = usize::from(u16_at(rom, 0x18)?);
    if rom.get(p..p + 4)? != b"PCIR" {
        return None;
    }
    Some(PciRomHeader {
        vendor: u16_at(rom, p + 4)?,
        device: u16_at(rom, p + 6)?,
        code_type: *rom.get(p + 0x14)?,
        len,
        checksum_ok: rom[..len].iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0,
    })
}

/// Sets the last byte of the image's declared length so its bytes sum to zero. Does nothing for an
/// image without a valid 55 AA header and length.
pub fn set_checksum(rom: &mut [u8]) {
    if rom.len() < 3 || rom[..2] != [0x55, 0xAA] {
        return;
    }
    let len = usize::from(rom[2]) * 512;
    if len == 0 || len > rom.len() {
        return;
    }
    rom[len - 1] = 0;
    let sum = rom[..len].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    rom[len - 1] = sum.wrapping_neg();
}

/// The `pcimarker` option ROM (for 1234:11E8, the educational device) with its checksums set (the PnP
/// header's and the image's): its init entry prints `pcimarker: init bdf=XXXX` on the BIOS debug
/// console, port 0x402.
pub fn pcimarker() -> Vec<u8> {
    let mut rom = test_roms::option_rom("pcimarker").expect("the pcimarker option ROM assembles").to_vec();
    // The PnP expansion header's 32 bytes sum to zero (checksum byte at 9), then the whole image.
    let pnp = usize::from(u16_at(&rom, 0x1A).expect("a PnP header pointer"));
    rom[pnp + 9] = 0;
    let sum = rom[pnp..pnp + 32].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    rom[pnp + 9] = sum.wrapping_neg();
    set_checksum(&mut rom);
    rom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcimarker_is_a_valid_pci_rom_for_the_edu_device() {
        let rom = pcimarker();
        let h = parse(&rom).expect("a PCI ROM header");
        assert_eq!((h.vendor, h.device, h.code_type, h.len), (0x1234, 0x11E8, 0, 512));
        assert!(h.checksum_ok);
        assert_eq!(rom.len(), 512);
        // The structure's own length and the image length in it agree with the header.
        let p = usize::from(u16_at(&rom, 0x18).unwrap());
        assert_eq!(u16_at(&rom, p + 0x0A), Some(0x18));
        assert_eq!(u16_at(&rom, p + 0x10), Some(1));
        assert_eq!(rom[p + 0x15] & 0x80, 0x80, "last image");
        // The PnP header SeaBIOS needs to call the init entry, with its own checksum and no boot vectors.
        let pnp = usize::from(u16_at(&rom, 0x1A).unwrap());
        assert_eq!(&rom[pnp..pnp + 4], b"$PnP");
        assert_eq!(rom[pnp..pnp + 32].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(
            (u16_at(&rom, pnp + 0x16), u16_at(&rom, pnp + 0x1A)),
            (Some(0), Some(0)),
            "no BCV, no BEV"
        );
    }

    #[test]
    fn checksum_and_hostile_headers() {
        let mut rom = vec![0u8; 1024];
        rom[..3].copy_from_slice(&[0x55, 0xAA, 2]);
        rom[0x18] = 0x20;
        rom[0x20..0x24].copy_from_slice(b"PCIR");
        rom[0x24..0x28].copy_from_slice(&[0x86, 0x80, 0x34, 0x12]);
        rom[100] = 0x77;
        assert!(!parse(&rom).unwrap().checksum_ok);
        set_checksum(&mut rom);
        let h = parse(&rom).unwrap();
        assert!(h.checksum_ok);
        assert_eq!((h.vendor, h.device, h.len), (0x8086, 0x1234, 1024));
        // Truncated, unsigned, zero-length, pointer out of range: no header, and no panic.
        assert_eq!(parse(&rom[..512]), None, "declared length past the end");
        assert_eq!(parse(&rom[..2]), None);
        let mut bad = rom.clone();
        bad[0x18] = 0xFF;
        bad[0x19] = 0xFF;
        assert_eq!(parse(&bad), None);
        bad = rom.clone();
        bad[2] = 0;
        assert_eq!(parse(&bad), None);
        set_checksum(&mut bad);
        assert_eq!(
            bad,
            {
                let mut b = rom.clone();
                b[2] = 0;
                b
            },
            "left alone"
        );
        bad[0] = 0;
        assert_eq!(parse(&bad), None);
        set_checksum(&mut []);
    }
}
