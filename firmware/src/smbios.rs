//! SMBIOS 2.8 tables (DMTF DSP0134) for guests booted without a BIOS: what an OS reads to name the
//! machine (Linux's `DMI: ...` line, /sys/class/dmi) and to see its processor and memory.
//!
//! [`build`] returns a blob meant for the ROM's low window: the 32-bit entry point (`_SM_`, with the
//! legacy `_DMI_` intermediate anchor) at its first byte, which must be 16-byte aligned inside
//! 0xF0000-0xFFFFF where an OS without EFI searches for it, followed by the structure table. The
//! structures are the ones QEMU's firmware provides, filled with this machine's values: BIOS (type 0),
//! system (1), chassis (3), processor (4), physical memory array (16), memory device (17), memory array
//! mapped addresses (19, one per RAM range), system boot information (32) and end of table (127).

/// What the tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbiosConfig {
    /// Guest physical address where the blob will be mapped (16-byte aligned, in 0xF0000-0xFFFFF).
    pub address: u32,
    /// Bytes of RAM from address 0 (below the PCI hole).
    pub below_4g: u64,
    /// Bytes of RAM from 4 GiB.
    pub above_4g: u64,
    /// CPUID.1:EAX (the processor signature).
    pub cpuid_eax: u32,
    /// CPUID.1:EDX.
    pub cpuid_edx: u32,
    /// The processor's nominal speed in MHz (the TSC rate).
    pub cpu_mhz: u16,
    /// Size of the ROM the BIOS structure names, in bytes.
    pub rom_size: u64,
}

/// Manufacturer of everything described.
pub const VENDOR: &str = "Ferrite";
/// The system's product name.
pub const PRODUCT: &str = "Ferrite PC (i440FX + PIIX3, direct boot)";
/// The "BIOS" release date (mm/dd/yyyy). OSes key quirks on the year (Linux: no ACPI before 2001, no
/// PCI _CRS before 2008, no E820 clipping of host bridge windows from 2023), so this is the date of
/// QEMU's SeaBIOS build: a guest makes the same choices as on QEMU's i440FX machine.
pub const BIOS_DATE: &str = "04/01/2014";

/// Size of the 32-bit entry point structure.
const ENTRY_LEN: usize = 0x1f;
/// Where the structure table starts in the blob (after the entry point, aligned).
const TABLE_OFFSET: usize = 0x20;

/// One structure: the formatted area (after the 4-byte header) and its strings.
struct Structure {
    kind: u8,
    handle: u16,
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Structure {
    fn new(kind: u8, handle: u16) -> Structure {
        Structure { kind, handle, formatted: Vec::new(), strings: Vec::new() }
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.formatted.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A string field: its 1-based number, or 0 for "none" when `s` is empty.
    fn str(&mut self, s: &str) -> &mut Self {
        if s.is_empty() {
            return self.u8(0);
        }
        self.strings.push(s.to_string());
        let n = self.strings.len() as u8;
        self.u8(n)
    }
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.kind, (4 + self.formatted.len()) as u8];
        v.extend_from_slice(&self.handle.to_le_bytes());
        v.extend_from_slice(&self.formatted);
        for s in &self.strings {
            v.extend_from_slice(s.as_bytes());
            v.push(0);
        }
        if self.strings.is_empty() {
            v.push(0);
        }
        v.push(0);
        v
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The RAM ranges as (start, size) in bytes.
fn ram_ranges(cfg: &SmbiosConfig) -> Vec<(u64, u64)> {
    let mut r = vec![(0, cfg.below_4g)];
    if cfg.above_4g != 0 {
        r.push((1 << 32, cfg.above_4g));
    }
    r
}

fn structures(cfg: &SmbiosConfig) -> Vec<Structure> {
    let version = concat!("ferrite-", env!("CARGO_PKG_VERSION"));
    let total = cfg.below_4g + cfg.above_4g;
    let mut out = Vec::new();

    let mut s = Structure::new(0, 0x0000);
    let rom_blocks = cfg.rom_size.div_ceil(64 << 10).clamp(1, 256) as u8;
    // The BIOS's start segment: where its ROM's low window begins below 1 MiB (at most 128 KiB).
    let segment = ((0x10_0000 - cfg.rom_size.clamp(16, 128 << 10)) >> 4) as u16;
    s.str(VENDOR).str(version).u16(segment).str(BIOS_DATE);
    // ROM size in 64 KiB blocks minus one; characteristics: bit 3 "not supported"; extension byte 2
    // bit 4: the tables describe a virtual machine; release 0.0; no embedded controller firmware.
    s.u8(rom_blocks - 1).u64(1 << 3).u8(0).u8(1 << 4).u8(0).u8(0).u8(0xff).u8(0xff);
    out.push(s);

    let mut s = Structure::new(1, 0x0100);
    s.str(VENDOR).str(PRODUCT).str(version).str("");
    // UUID all zero: "not present"; wake-up by power switch; no SKU; family.
    s.formatted.extend_from_slice(&[0; 16]);
    s.u8(6).str("").str(VENDOR);
    out.push(s);

    let mut s = Structure::new(3, 0x0300);
    // Type "other"; boot-up, power supply and thermal state "safe"; security "unknown"; no OEM value,
    // height, cords or contained elements; no SKU.
    s.str(VENDOR).u8(1).str("").str("").str("").u8(3).u8(3).u8(3).u8(2).u32(0).u8(0).u8(0).u8(0).u8(0);
    s.str("");
    out.push(s);

    let mut s = Structure::new(4, 0x0400);
    s.str("CPU 0").u8(3).u8(1).str("Intel").u32(cfg.cpuid_eax).u32(cfg.cpuid_edx).str("Ferrite Virtual CPU");
    // No voltage or external clock given; max and current speed; socket populated, CPU enabled; upgrade
    // "other"; no cache structures; no serial, asset tag or part; one core, one thread; characteristics
    // "64-bit capable"; family 2 "other".
    s.u8(0).u16(0).u16(cfg.cpu_mhz).u16(cfg.cpu_mhz).u8(0x41).u8(1).u16(0xffff).u16(0xffff).u16(0xffff);
    s.str("").str("").str("").u8(1).u8(1).u8(1).u16(1 << 2).u16(1);
    out.push(s);

    let kib = total / 1024;
    let mut s = Structure::new(16, 0x1000);
    // Location "system board", use "system memory", no error correction; capacity in KiB (or in the
    // extended field in bytes when it does not fit); no error information; one device.
    s.u8(3).u8(3).u8(3);
    if kib < 0x8000_0000 {
        s.u32(kib as u32).u16(0xfffe).u16(1).u64(0);
    } else {
        s.u32(0x8000_0000).u16(0xfffe).u16(1).u64(total);
    }
    out.push(s);

    let mib = total >> 20;
    let mut s = Structure::new(17, 0x1100);
    s.u16(0x1000).u16(0xfffe).u16(0xffff).u16(0xffff);
    // Size in MiB below 32 GiB - 1 MiB, else 0x7FFF and the extended size.
    let (size, ext) = if mib < 0x7fff { (mib as u16, 0) } else { (0x7fff, mib as u32) };
    // Form factor DIMM, not in a set, locator, no bank, type RAM, detail "other", speed unknown.
    s.u16(size).u8(9).u8(0).str("DIMM 0").str("").u8(7).u16(1 << 1).u16(0);
    s.str(VENDOR).str("").str("").str("").u8(0).u32(ext).u16(0).u16(0).u16(0).u16(0);
    out.push(s);

    for (i, (start, size)) in ram_ranges(cfg).into_iter().enumerate() {
        let end = start + size - 1;
        let mut s = Structure::new(19, 0x1300 + i as u16);
        if end / 1024 < 0xffff_ffff {
            s.u32((start / 1024) as u32).u32((end / 1024) as u32).u16(0x1000).u8(1).u64(0).u64(0);
        } else {
            s.u32(0xffff_ffff).u32(0xffff_ffff).u16(0x1000).u8(1).u64(start).u64(end);
        }
        out.push(s);
    }

    let mut s = Structure::new(32, 0x2000);
    s.formatted.extend_from_slice(&[0; 6]);
    s.u8(0); // no errors detected
    out.push(s);

    out.push(Structure::new(127, 0x7f00));
    out
}

/// The entry point followed by the structure table, for mapping at `cfg.address`.
pub fn build(cfg: &SmbiosConfig) -> Vec<u8> {
    let structs = structures(cfg);
    let encoded: Vec<Vec<u8>> = structs.iter().map(Structure::encode).collect();
    let table: Vec<u8> = encoded.concat();
    let max = encoded.iter().map(Vec::len).max().unwrap_or(0) as u16;
    let mut ep = vec![0u8; ENTRY_LEN];
    ep[0..4].copy_from_slice(b"_SM_");
    ep[5] = ENTRY_LEN as u8;
    ep[6] = 2;
    ep[7] = 8;
    ep[8..10].copy_from_slice(&max.to_le_bytes());
    ep[0x10..0x15].copy_from_slice(b"_DMI_");
    ep[0x16..0x18].copy_from_slice(&(table.len() as u16).to_le_bytes());
    ep[0x18..0x1c].copy_from_slice(&(cfg.address + TABLE_OFFSET as u32).to_le_bytes());
    ep[0x1c..0x1e].copy_from_slice(&(structs.len() as u16).to_le_bytes());
    ep[0x1e] = 0x28;
    ep[0x15] = checksum(&ep[0x10..ENTRY_LEN]);
    ep[4] = checksum(&ep);
    let mut blob = ep;
    blob.resize(TABLE_OFFSET, 0);
    blob.extend_from_slice(&table);
    blob
}

/// The same structures as QEMU hands them to SeaBIOS through fw_cfg: (`etc/smbios/smbios-anchor`, the
/// 31-byte 2.8 entry point; `etc/smbios/smbios-tables`, the structure table). The firmware places the
/// table and fixes the entry point's address and checksum; `cfg.address` does not matter here.
pub fn fw_cfg_files(cfg: &SmbiosConfig) -> (Vec<u8>, Vec<u8>) {
    let blob = build(cfg);
    (blob[..ENTRY_LEN].to_vec(), blob[TABLE_OFFSET..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fw_cfg_files_are_the_anchor_and_the_whole_table() {
        let (anchor, tables) = fw_cfg_files(&cfg(64 << 20, 0));
        assert_eq!(anchor.len(), 31);
        assert_eq!(&anchor[..4], b"_SM_");
        assert_eq!(u16::from_le_bytes([anchor[0x16], anchor[0x17]]) as usize, tables.len());
        assert_eq!(tables[0], 0, "the table starts with the BIOS structure");
        assert!(tables.ends_with(&[127, 4, 0, 0x7f, 0, 0]), "and ends with the end-of-table structure");
    }

    fn cfg(below: u64, above: u64) -> SmbiosConfig {
        SmbiosConfig {
            address: 0xf0000,
            below_4g: below,
            above_4g: above,
            cpuid_eax: 0x306a9,
            cpuid_edx: 0x0789_fbfd,
            cpu_mhz: 1000,
            rom_size: 64 << 10,
        }
    }

    /// Walks the structure table as an OS does: (type, formatted area, strings) per structure.
    fn parse(blob: &[u8], base: u32) -> Vec<(u8, Vec<u8>, Vec<String>)> {
        let ep = &blob[..ENTRY_LEN];
        assert_eq!(&ep[0..4], b"_SM_");
        assert_eq!(ep.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "entry point checksum");
        assert_eq!(&ep[0x10..0x15], b"_DMI_");
        assert_eq!(
            ep[0x10..ENTRY_LEN].iter().fold(0u8, |a, b| a.wrapping_add(*b)),
            0,
            "intermediate checksum"
        );
        assert_eq!((ep[6], ep[7], ep[0x1e]), (2, 8, 0x28));
        let len = u16::from_le_bytes([ep[0x16], ep[0x17]]) as usize;
        let addr = u32::from_le_bytes(ep[0x18..0x1c].try_into().unwrap());
        let count = u16::from_le_bytes([ep[0x1c], ep[0x1d]]) as usize;
        let max = u16::from_le_bytes([ep[8], ep[9]]) as usize;
        let start = (addr - base) as usize;
        let table = &blob[start..start + len];
        assert_eq!(start + len, blob.len());
        let mut out = Vec::new();
        let mut i = 0;
        while i < table.len() {
            let (kind, flen) = (table[i], table[i + 1] as usize);
            let formatted = table[i + 4..i + flen].to_vec();
            let mut j = i + flen;
            let mut strings = Vec::new();
            while table[j] != 0 {
                let e = j + table[j..].iter().position(|&b| b == 0).unwrap();
                strings.push(String::from_utf8(table[j..e].to_vec()).unwrap());
                j = e + 1;
            }
            j += if strings.is_empty() { 2 } else { 1 };
            assert!(j - i <= max, "structure larger than the entry point's maximum");
            out.push((kind, formatted, strings));
            i = j;
        }
        assert_eq!(out.len(), count);
        out
    }

    #[test]
    fn entry_point_and_structures_parse() {
        let c = cfg(512 << 20, 0);
        let blob = build(&c);
        assert_eq!(c.address % 16, 0);
        let s = parse(&blob, c.address);
        let kinds: Vec<u8> = s.iter().map(|x| x.0).collect();
        assert_eq!(kinds, [0, 1, 3, 4, 16, 17, 19, 32, 127]);
        // Formatted-area lengths of SMBIOS 2.8 (minus the 4-byte header).
        let lens: Vec<usize> = s.iter().map(|x| x.1.len() + 4).collect();
        assert_eq!(lens, [0x18, 0x1b, 0x16, 0x2a, 0x17, 0x28, 0x1f, 0x0b, 4]);
        let string = |k: u8, off: usize| {
            let (_, f, strs) = s.iter().find(|x| x.0 == k).unwrap();
            let n = f[off - 4] as usize;
            strs[n - 1].clone()
        };
        // What Linux prints: "DMI: <system vendor> <product>, BIOS <version> <date>".
        assert_eq!(string(1, 4), VENDOR);
        assert_eq!(string(1, 5), PRODUCT);
        assert!(string(0, 5).starts_with("ferrite-"));
        assert_eq!(string(0, 8), BIOS_DATE);
        let (_, bios, _) = &s[0];
        assert_eq!(u16::from_le_bytes([bios[2], bios[3]]), 0xf000, "BIOS start segment");
        let (_, cpu, _) = &s[3];
        assert_eq!(u32::from_le_bytes(cpu[4..8].try_into().unwrap()), 0x306a9);
        assert_eq!(u16::from_le_bytes([cpu[0x16 - 4], cpu[0x17 - 4]]), 1000);
        let (_, mem, _) = &s[5];
        assert_eq!(u16::from_le_bytes([mem[0x0c - 4], mem[0x0d - 4]]), 512, "MiB");
        let (_, map, _) = &s[6];
        assert_eq!(u32::from_le_bytes(map[4..8].try_into().unwrap()), (512 << 10) - 1, "end KiB");
    }

    #[test]
    fn large_memory_uses_the_extended_fields() {
        // 1 TiB (the machine's maximum): 3 GiB low, the rest from 4 GiB; the KiB fields still fit.
        let c = cfg(3 << 30, (1 << 40) - (3 << 30));
        let s = parse(&build(&c), c.address);
        let maps: Vec<&Vec<u8>> = s.iter().filter(|x| x.0 == 19).map(|x| &x.1).collect();
        assert_eq!(maps.len(), 2);
        assert_eq!(u32::from_le_bytes(maps[0][0..4].try_into().unwrap()), 0);
        assert_eq!(u32::from_le_bytes(maps[0][4..8].try_into().unwrap()), (3 << 20) - 1);
        assert_eq!(u32::from_le_bytes(maps[1][0..4].try_into().unwrap()), 4 << 20);
        assert_eq!(u32::from_le_bytes(maps[1][4..8].try_into().unwrap()), (1 << 30) + (1 << 20) - 1);
        // The memory device's size no longer fits the 15-bit MiB field.
        let dev = &s.iter().find(|x| x.0 == 17).unwrap().1;
        assert_eq!(u16::from_le_bytes([dev[0x0c - 4], dev[0x0d - 4]]), 0x7fff);
        assert_eq!(u32::from_le_bytes(dev[0x1c - 4..0x20 - 4].try_into().unwrap()), 1 << 20, "MiB");
        // Beyond 4 TiB the mapped-address range moves to the 64-bit byte fields.
        let c = cfg(3 << 30, 8 << 40);
        let s = parse(&build(&c), c.address);
        let map = &s.iter().filter(|x| x.0 == 19).nth(1).unwrap().1;
        assert_eq!(u32::from_le_bytes(map[0..4].try_into().unwrap()), 0xffff_ffff);
        assert_eq!(u64::from_le_bytes(map[0x0f - 4..0x17 - 4].try_into().unwrap()), 1 << 32);
        assert_eq!(
            u64::from_le_bytes(map[0x17 - 4..0x1f - 4].try_into().unwrap()),
            (1 << 32) + (8 << 40) - 1
        );
        let arr = &s.iter().find(|x| x.0 == 16).unwrap().1;
        assert_eq!(u32::from_le_bytes(arr[3..7].try_into().unwrap()), 0x8000_0000);
        assert_eq!(u64::from_le_bytes(arr[0x0f - 4..0x17 - 4].try_into().unwrap()), (3 << 30) + (8 << 40));
    }
}
