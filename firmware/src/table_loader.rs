//! QEMU's ACPI "linker/loader" (`etc/table-loader`), as SeaBIOS and OVMF read it: the machine's ACPI
//! tables as two relocatable fw_cfg files plus the commands that place and link them.
//!
//! [`build`] takes the tables [`crate::acpi::build_tables`] laid out at absolute EBDA addresses and turns
//! them into
//!
//! - `etc/acpi/rsdp`: the RSDP alone (allocated in the F segment, 16-byte aligned, where an OS searches);
//! - `etc/acpi/tables`: every table the RSDP reaches (FACS first, for its 64-byte alignment; then RSDT,
//!   XSDT, the tables they list, the DSDT), each pointer field holding the offset of its target inside
//!   this file;
//! - `etc/table-loader`: 128-byte commands (QEMU `hw/acpi/bios-linker-loader.c`): ALLOCATE both files,
//!   ADD_POINTER for every pointer field (the firmware adds the address where it put the target file),
//!   then ADD_CHECKSUM for every table and for the RSDP's two checksums, run after the pointers changed
//!   the bytes. The checksum bytes are zero in the files, as QEMU leaves them.
//!
//! The MP table is not carried: SeaBIOS writes its own.

use crate::acpi::AcpiTables;

/// fw_cfg name of the RSDP file.
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
/// fw_cfg name of the tables file.
pub const TABLES_FILE: &str = "etc/acpi/tables";
/// fw_cfg name of the command file.
pub const LOADER_FILE: &str = "etc/table-loader";

const CMD_ALLOCATE: u32 = 1;
const CMD_ADD_POINTER: u32 = 2;
const CMD_ADD_CHECKSUM: u32 = 3;
const ZONE_HIGH: u8 = 1;
const ZONE_FSEG: u8 = 2;
/// Bytes of a file name field (`BIOS_LINKER_LOADER_FILESZ`).
const NAME_LEN: usize = 56;
/// Bytes of one command.
pub const COMMAND_SIZE: usize = 128;

/// The three fw_cfg files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderFiles {
    /// `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    /// `etc/acpi/tables`.
    pub tables: Vec<u8>,
    /// `etc/table-loader`.
    pub loader: Vec<u8>,
}

fn name_field(out: &mut Vec<u8>, name: &str) {
    let mut f = [0u8; NAME_LEN];
    let n = name.len().min(NAME_LEN - 1);
    f[..n].copy_from_slice(&name.as_bytes()[..n]);
    out.extend_from_slice(&f);
}

fn command(kind: u32, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut c = kind.to_le_bytes().to_vec();
    body(&mut c);
    c.resize(COMMAND_SIZE, 0);
    c
}

/// Guest memory as the absolute tables describe it (reads outside give zeros).
struct Image<'a>(&'a AcpiTables);

impl Image<'_> {
    fn bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        for (a, b) in &self.0.writes {
            if addr >= *a && addr + len as u64 <= a + b.len() as u64 {
                let o = (addr - a) as usize;
                return Some(b[o..o + len].to_vec());
            }
        }
        None
    }
    fn u32(&self, addr: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(addr, 4)?.try_into().ok()?))
    }
    fn u64(&self, addr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(addr, 8)?.try_into().ok()?))
    }
    /// A whole table (its length from offset 4).
    fn table(&self, addr: u64) -> Option<Vec<u8>> {
        let len = self.u32(addr + 4)? as usize;
        if !(36..=1 << 20).contains(&len) && len != 64 {
            return None;
        }
        self.bytes(addr, len)
    }
}

/// Builds the linker/loader files from `t` (tables at absolute addresses). The error names what in the
/// tables could not be followed.
pub fn build(t: &AcpiTables) -> Result<LoaderFiles, String> {
    let img = Image(t);
    let mut rsdp = img.bytes(t.rsdp, 36).ok_or("no RSDP at the recorded address")?;
    let rsdt_at = u64::from(img.u32(t.rsdp + 16).ok_or("RSDP")?);
    let xsdt_at = img.u64(t.rsdp + 24).ok_or("RSDP")?;
    let rsdt = img.table(rsdt_at).ok_or("RSDT unreadable")?;
    let xsdt = img.table(xsdt_at).ok_or("XSDT unreadable")?;
    let mut listed: Vec<u64> =
        rsdt[36..].chunks_exact(4).map(|c| u64::from(u32::from_le_bytes(c.try_into().unwrap()))).collect();
    for c in xsdt[36..].chunks_exact(8) {
        let a = u64::from_le_bytes(c.try_into().unwrap());
        if !listed.contains(&a) {
            listed.push(a);
        }
    }
    // FACS and DSDT hang off the FADT.
    let mut facs_at = None;
    let mut dsdt_at = None;
    for &a in &listed {
        if img.bytes(a, 4).as_deref() == Some(b"FACP") {
            facs_at = img.u32(a + 36).map(u64::from).filter(|v| *v != 0);
            dsdt_at = img.u32(a + 40).map(u64::from).filter(|v| *v != 0);
        }
    }
    // Layout of the tables file: FACS first (64-byte aligned), then the rest 8-byte aligned.
    let mut order: Vec<u64> = Vec::new();
    order.extend(facs_at);
    order.push(rsdt_at);
    order.push(xsdt_at);
    order.extend(listed.iter().copied());
    order.extend(dsdt_at);
    order.dedup();
    let mut blob = Vec::new();
    let mut placed: Vec<(u64, usize, usize)> = Vec::new(); // (old address, offset, length)
    for a in order {
        if placed.iter().any(|p| p.0 == a) {
            continue;
        }
        let tb = img.table(a).ok_or_else(|| format!("table at {a:#x} unreadable"))?;
        blob.resize(blob.len().next_multiple_of(8), 0);
        placed.push((a, blob.len(), tb.len()));
        blob.extend_from_slice(&tb);
    }
    let offset_of = |a: u64| placed.iter().find(|p| p.0 == a).map(|p| p.1 as u64);
    let mut pointers: Vec<(&str, usize, u8)> = Vec::new(); // (file, field offset, size)
    let patch = |file: &mut Vec<u8>,
                 name: &'static str,
                 at: usize,
                 size: u8,
                 pointers: &mut Vec<(&str, usize, u8)>|
     -> Result<(), String> {
        let n = usize::from(size);
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&file[at..at + n]);
        let old = u64::from_le_bytes(v);
        let new = offset_of(old)
            .ok_or_else(|| format!("pointer at {name}+{at:#x} to {old:#x} leads to no table"))?;
        file[at..at + n].copy_from_slice(&new.to_le_bytes()[..n]);
        pointers.push((name, at, size));
        Ok(())
    };
    patch(&mut rsdp, RSDP_FILE, 16, 4, &mut pointers)?;
    patch(&mut rsdp, RSDP_FILE, 24, 8, &mut pointers)?;
    let mut checksums: Vec<(usize, usize)> = Vec::new(); // (table offset, length) in the tables file
    for &(a, off, len) in &placed {
        let sig = &blob[off..off + 4];
        if sig == b"FACS" {
            continue;
        }
        let entries: Vec<(usize, u8)> = if a == rsdt_at {
            (36..len).step_by(4).map(|o| (o, 4)).collect()
        } else if a == xsdt_at {
            (36..len).step_by(8).map(|o| (o, 8)).collect()
        } else if sig == b"FACP" {
            let mut v = vec![(36, 4), (40, 4)];
            for (o, _) in [(132usize, ()), (140, ())] {
                if len >= o + 8 && blob[off + o..off + o + 8].iter().any(|b| *b != 0) {
                    v.push((o, 8));
                }
            }
            v.retain(|(o, s)| blob[off + o..off + o + usize::from(*s)].iter().any(|b| *b != 0));
            v
        } else {
            Vec::new()
        };
        for (o, s) in entries {
            patch(&mut blob, TABLES_FILE, off + o, s, &mut pointers)?;
        }
        blob[off + 9] = 0;
        checksums.push((off, len));
    }
    rsdp[8] = 0;
    rsdp[32] = 0;

    let mut loader = Vec::new();
    loader.extend(command(CMD_ALLOCATE, |c| {
        name_field(c, RSDP_FILE);
        c.extend_from_slice(&16u32.to_le_bytes());
        c.push(ZONE_FSEG);
    }));
    loader.extend(command(CMD_ALLOCATE, |c| {
        name_field(c, TABLES_FILE);
        c.extend_from_slice(&64u32.to_le_bytes());
        c.push(ZONE_HIGH);
    }));
    for (file, at, size) in pointers {
        loader.extend(command(CMD_ADD_POINTER, |c| {
            name_field(c, file);
            name_field(c, TABLES_FILE);
            c.extend_from_slice(&(at as u32).to_le_bytes());
            c.push(size);
        }));
    }
    let cksum = |file: &str, at: usize, start: usize, len: usize| {
        command(CMD_ADD_CHECKSUM, |c| {
            name_field(c, file);
            for v in [at, start, len] {
                c.extend_from_slice(&(v as u32).to_le_bytes());
            }
        })
    };
    for (off, len) in checksums {
        loader.extend(cksum(TABLES_FILE, off + 9, off, len));
    }
    loader.extend(cksum(RSDP_FILE, 8, 0, 20));
    loader.extend(cksum(RSDP_FILE, 32, 0, 36));
    Ok(LoaderFiles { rsdp, tables: blob, loader })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::{PlatformConfig, build_tables, checksum};

    /// Runs the commands as SeaBIOS's `romfile_loader_execute` does, placing the RSDP at `rsdp_at` and
    /// the tables at `tables_at`, and returns the two patched files.
    fn execute(f: &LoaderFiles, rsdp_at: u64, tables_at: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rsdp = f.rsdp.clone();
        let mut tables = f.tables.clone();
        assert_eq!(f.loader.len() % COMMAND_SIZE, 0);
        let name =
            |b: &[u8]| String::from_utf8(b.iter().take_while(|c| **c != 0).copied().collect()).unwrap();
        for c in f.loader.chunks(COMMAND_SIZE) {
            let kind = u32::from_le_bytes(c[0..4].try_into().unwrap());
            match kind {
                CMD_ALLOCATE => {
                    let n = name(&c[4..60]);
                    assert!(n == RSDP_FILE || n == TABLES_FILE, "{n}");
                }
                CMD_ADD_POINTER => {
                    let dest = name(&c[4..60]);
                    assert_eq!(name(&c[60..116]), TABLES_FILE);
                    let at = u32::from_le_bytes(c[116..120].try_into().unwrap()) as usize;
                    let size = usize::from(c[120]);
                    let file = if dest == RSDP_FILE { &mut rsdp } else { &mut tables };
                    let mut v = [0u8; 8];
                    v[..size].copy_from_slice(&file[at..at + size]);
                    let val = u64::from_le_bytes(v) + tables_at;
                    file[at..at + size].copy_from_slice(&val.to_le_bytes()[..size]);
                }
                CMD_ADD_CHECKSUM => {
                    let file = if name(&c[4..60]) == RSDP_FILE { &mut rsdp } else { &mut tables };
                    let w = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap()) as usize;
                    let (at, start, len) = (w(60), w(64), w(68));
                    let sum = file[start..start + len].iter().fold(0u8, |a, b| a.wrapping_add(*b));
                    file[at] = file[at].wrapping_sub(sum);
                }
                k => panic!("unknown command {k}"),
            }
        }
        let _ = rsdp_at;
        (rsdp, tables)
    }

    #[test]
    fn linked_tables_form_a_valid_acpi_tree_wherever_placed() {
        let t = build_tables(&PlatformConfig::default());
        let f = build(&t).unwrap();
        assert_eq!(&f.rsdp[..8], b"RSD PTR ");
        assert_eq!(&f.tables[..4], b"FACS", "FACS first, for its alignment");
        for base in [0x7ffe_0000u64, 0x100_0000] {
            let (rsdp, tables) = execute(&f, 0xf5a30, base);
            assert_eq!(checksum(&rsdp[..20]), 0);
            assert_eq!(checksum(&rsdp[..36]), 0);
            let at = |a: u64| (a - base) as usize;
            let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            let rsdt = u64::from(u32_at(&rsdp, 16));
            let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
            for (t_at, sig) in [(rsdt, b"RSDT"), (xsdt, b"XSDT")] {
                let o = at(t_at);
                assert_eq!(&tables[o..o + 4], sig);
                let len = u32_at(&tables, o + 4) as usize;
                assert_eq!(checksum(&tables[o..o + len]), 0);
            }
            // Every RSDT entry is a checksummed table inside the file; the FADT's FACS and DSDT too.
            let rl = u32_at(&tables, at(rsdt) + 4) as usize;
            let mut sigs = Vec::new();
            for e in (at(rsdt) + 36..at(rsdt) + rl).step_by(4) {
                let o = at(u64::from(u32_at(&tables, e)));
                let len = u32_at(&tables, o + 4) as usize;
                assert_eq!(checksum(&tables[o..o + len]), 0);
                sigs.push(tables[o..o + 4].to_vec());
                if &tables[o..o + 4] == b"FACP" {
                    let facs = at(u64::from(u32_at(&tables, o + 36)));
                    assert_eq!(&tables[facs..facs + 4], b"FACS");
                    assert_eq!((base + facs as u64) % 64, 0);
                    let dsdt = at(u64::from(u32_at(&tables, o + 40)));
                    assert_eq!(&tables[dsdt..dsdt + 4], b"DSDT");
                    let dl = u32_at(&tables, dsdt + 4) as usize;
                    assert_eq!(checksum(&tables[dsdt..dsdt + dl]), 0);
                }
            }
            assert_eq!(sigs, [b"FACP".to_vec(), b"APIC".to_vec()]);
        }
    }

    #[test]
    fn a_dangling_pointer_is_an_error() {
        let mut t = build_tables(&PlatformConfig::default());
        let rsdp = t.rsdp;
        let entry = t.writes.iter_mut().find(|(a, _)| *a == rsdp).unwrap();
        entry.1[16..20].copy_from_slice(&0x1234u32.to_le_bytes());
        assert!(build(&t).is_err());
    }
}
