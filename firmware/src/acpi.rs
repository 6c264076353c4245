//! ACPI tables for Ferrite's i440FX/PIIX board, built by the machine instead of a BIOS.
//!
//! The tables describe exactly the hardware `machine` wires up: one CPU with its local APIC at
//! 0xFEE00000, the 82093AA I/O APIC at 0xFEC00000 (ID 0, GSI base 0, 24 pins), the PIIX4 PM block at
//! [`PlatformConfig::pm_base`] (PM1a event 4 bytes, PM1a control 2 bytes, 24-bit PM timer, GPE0 4
//! bytes), SCI on ISA IRQ 9 and the PIIX reset control register at port 0xCF9 (value 0x06).
//!
//! # Tables
//!
//! RSDP (revision 2) → XSDT and RSDT → FADT (revision 6.0; the DSDT through both the 32- and 64-bit
//! fields, the FACS through the 32-bit one only, as ACPI allows one), MADT. The MADT has one local APIC, the I/O APIC, interrupt source overrides ISA IRQ 0 → GSI 2
//! (edge, high: conforming) and ISA IRQ 9 → GSI 9 (level, active high, as PC firmware declares the SCI),
//! and a local APIC NMI on LINT1. The DSDT holds `\_S5` = {0, 0} (the PIIX4's soft-off SUS_TYP) and
//! `\_SB.PCI0` (PNP0A03) with `_CRS` (bus 0-255, ports 0xCF8-0xCFF consumed, the two port windows around
//! them, the VGA window and the PCI hole below the I/O APIC) and a `_PRT` mapping every slot's INTA#-INTD#
//! straight to GSIs 16-19 (`16 + pirq_of(slot, pin)`, the PIIX's swizzle). Those GSIs are level-triggered,
//! active low, as `_PRT` entries without a link device are by definition; the board wires PCI INTx to
//! I/O APIC pins 16-19 active low. `\_SB.PCI0.ISA` (the PIIX3, 00:01.0) lists the legacy devices for PnP
//! enumeration: RTC (PNP0B00), keyboard controller (PNP0303) and mouse port (PNP0F13), COM1 and COM2
//! (PNP0501). There are no PCI interrupt link devices, so a guest that runs in
//! PIC mode (`_PIC(0)`, Linux `noapic`) has to program the PIIX3 PIRQRC registers itself. No HPET.
//!
//! The tables are written by hand rather than with the `acpi_tables` crate: the board needs seven
//! small fixed tables and a DSDT of a few named objects, and building them here keeps every offset
//! next to the ACPI 6.x section it comes from without pulling a dependency (and its zerocopy layout
//! types) into the firmware crate. The unit tests parse everything back.
//!
//! # Where they go
//!
//! Everything lives in an EBDA at [`EBDA_BASE`]..0xA0000 (RAM just below the VGA window): the RSDP in
//! the EBDA's first KiB, where OSes search for it, then the MP floating pointer ([`crate::mptable`]),
//! then the tables. [`build_tables`] also returns the BIOS data area words an OS uses to find the EBDA
//! (0x40E: EBDA segment, 0x413: base memory in KiB). A boot protocol that passes the RSDP address
//! (Linux `boot_params.acpi_rsdp_addr`) can use [`AcpiTables::rsdp`]; the e820 map must report
//! [`EBDA_BASE`]..0xA0000 as reserved.

use crate::mptable;

/// Start of the extended BIOS data area holding the tables.
pub const EBDA_BASE: u64 = 0x9_E000;
/// End of the EBDA (the VGA window).
pub const EBDA_END: u64 = 0xA_0000;

const OEM_ID: &[u8; 6] = b"FERRIT";
const OEM_TABLE_ID: &[u8; 8] = b"FERRITE ";
const CREATOR_ID: &[u8; 4] = b"FRRT";

/// What the tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformConfig {
    /// Number of CPUs (APIC IDs 0..n).
    pub cpus: u8,
    /// Local APIC MMIO base.
    pub lapic_base: u32,
    /// I/O APIC MMIO base.
    pub ioapic_base: u32,
    /// I/O APIC ID.
    pub ioapic_id: u8,
    /// PIIX4 PM I/O base (PMBA).
    pub pm_base: u16,
    /// SCI ISA IRQ.
    pub sci_irq: u8,
    /// Reset register port (PIIX reset control) and value.
    pub reset_port: u16,
    /// Value written to the reset register.
    pub reset_value: u8,
    /// First address of the 32-bit PCI memory hole (end of low RAM).
    pub pci_hole_start: u32,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            cpus: 1,
            lapic_base: 0xFEE0_0000,
            ioapic_base: 0xFEC0_0000,
            ioapic_id: 0,
            pm_base: 0x600,
            sci_irq: 9,
            reset_port: 0xCF9,
            reset_value: 0x06,
            pci_hole_start: 0xE000_0000,
        }
    }
}

/// The built tables: blobs to copy into guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// (guest physical address, bytes), non-overlapping, all inside the EBDA or the BDA.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Address of the RSDP.
    pub rsdp: u64,
    /// Address of the MP floating pointer structure.
    pub mp_floating: u64,
}

/// Sum of bytes modulo 256.
pub fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

/// Makes the bytes sum to zero by setting the byte at `at`.
fn fix_checksum(b: &mut [u8], at: usize) {
    b[at] = 0;
    b[at] = 0u8.wrapping_sub(checksum(b));
}

/// A system description table: header + `body`, length and checksum filled in.
fn sdt(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(sig);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    fix_checksum(&mut t, 9);
    t
}

/// Generic address structure (ACPI 6.x 5.2.3.2) for a system I/O register.
fn gas_io(port: u16, bits: u8, access_size: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    if port != 0 {
        g[0] = 1; // system I/O
        g[1] = bits;
        g[3] = access_size;
        g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    }
    g
}

/// RSDP (ACPI 6.x 5.2.5.3), revision 2, 36 bytes.
fn rsdp(rsdt: u64, xsdt: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0);
    r.extend_from_slice(OEM_ID);
    r.push(2);
    r.extend_from_slice(&(rsdt as u32).to_le_bytes());
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt.to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    fix_checksum(&mut r[..20], 8);
    fix_checksum(&mut r, 32);
    r
}

/// FACS (ACPI 6.x 5.2.10), 64 bytes, version 2. Not checksummed.
fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f[32] = 2;
    f
}

/// FADT flags (ACPI 6.x Table 5.10).
mod fadt_flags {
    pub const WBINVD: u32 = 1 << 0;
    pub const PROC_C1: u32 = 1 << 2;
    pub const SLP_BUTTON: u32 = 1 << 5;
    pub const FIX_RTC: u32 = 1 << 6;
    pub const RESET_REG_SUP: u32 = 1 << 10;
}

/// FADT (ACPI 6.0, 5.2.9), revision 6, 276 bytes.
fn fadt(cfg: &PlatformConfig, facs: u64, dsdt: u64) -> Vec<u8> {
    let pm = cfg.pm_base;
    let mut b = vec![0u8; 276 - 36];
    let mut put = |off: usize, v: &[u8]| b[off - 36..off - 36 + v.len()].copy_from_slice(v);
    put(36, &(facs as u32).to_le_bytes());
    put(40, &(dsdt as u32).to_le_bytes());
    put(45, &[0]); // preferred PM profile: unspecified
    put(46, &u16::from(cfg.sci_irq).to_le_bytes());
    // SMI_CMD = 0: no ACPI mode transition; the hardware starts with SCI_EN set.
    put(56, &u32::from(pm).to_le_bytes()); // PM1a_EVT_BLK
    put(64, &u32::from(pm + 4).to_le_bytes()); // PM1a_CNT_BLK
    put(76, &u32::from(pm + 8).to_le_bytes()); // PM_TMR_BLK
    put(80, &u32::from(pm + 0x0C).to_le_bytes()); // GPE0_BLK
    put(88, &[4, 2, 0, 4, 4, 0, 0, 0]); // PM1_EVT_LEN, PM1_CNT_LEN, PM2, PM_TMR_LEN, GPE0, GPE1, GPE1_BASE, CST_CNT
    put(96, &0x65u16.to_le_bytes()); // P_LVL2_LAT > 100: C2 not supported
    put(98, &0x3E9u16.to_le_bytes()); // P_LVL3_LAT > 1000: C3 not supported
    put(108, &[0x32]); // CENTURY: CMOS register 0x32
    put(109, &0x0003u16.to_le_bytes()); // IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042
    let flags = fadt_flags::WBINVD
        | fadt_flags::PROC_C1
        | fadt_flags::SLP_BUTTON
        | fadt_flags::FIX_RTC
        | fadt_flags::RESET_REG_SUP;
    put(112, &flags.to_le_bytes());
    put(116, &gas_io(cfg.reset_port, 8, 1));
    put(128, &[cfg.reset_value]);
    put(131, &[0]); // FADT minor version: 6.0
    // X_FIRMWARE_CTRL stays zero: the FACS is below 4 GiB, and with both fields set ACPICA installs (and
    // Linux lists) the FACS twice. ACPI 6.x 5.2.9: at most one of them is used.
    put(140, &dsdt.to_le_bytes());
    put(148, &gas_io(pm, 32, 2)); // X_PM1a_EVT_BLK
    put(172, &gas_io(pm + 4, 16, 2)); // X_PM1a_CNT_BLK
    put(208, &gas_io(pm + 8, 32, 3)); // X_PM_TMR_BLK
    put(220, &gas_io(pm + 0x0C, 32, 1)); // X_GPE0_BLK
    sdt(b"FACP", 6, &b)
}

/// MADT (ACPI 6.x 5.2.12), revision 3.
fn madt(cfg: &PlatformConfig) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&cfg.lapic_base.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: dual 8259s present
    for cpu in 0..cfg.cpus {
        b.extend_from_slice(&[0, 8, cpu, cpu]);
        b.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    b.extend_from_slice(&[1, 12, cfg.ioapic_id, 0]);
    b.extend_from_slice(&cfg.ioapic_base.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    let iso = |b: &mut Vec<u8>, irq: u8, gsi: u32, flags: u16| {
        b.extend_from_slice(&[2, 10, 0, irq]);
        b.extend_from_slice(&gsi.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
    };
    iso(&mut b, 0, 2, 0);
    // SCI: level-triggered (trigger 11b), active high (polarity 01b).
    iso(&mut b, cfg.sci_irq, u32::from(cfg.sci_irq), 0x000D);
    // Local APIC NMI: all processors, conforming, LINT1.
    b.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]);
    sdt(b"APIC", 3, &b)
}

/// A minimal AML encoder (ACPI 6.x chapter 20).
pub mod aml {
    /// PkgLength encoding for a body of `n` bytes (the length counts its own bytes).
    pub fn pkg_length(n: usize) -> Vec<u8> {
        if n + 1 < 0x40 {
            return vec![(n + 1) as u8];
        }
        for extra in 1..=3usize {
            let total = n + 1 + extra;
            if total < 1 << (4 + 8 * extra) {
                let mut v = vec![((extra as u8) << 6) | (total & 0xF) as u8];
                for i in 0..extra {
                    v.push((total >> (4 + 8 * i)) as u8);
                }
                return v;
            }
        }
        panic!("AML object too large")
    }

    /// A NameSeg from up to four characters, padded with '_'.
    fn seg(s: &str) -> [u8; 4] {
        let mut n = [b'_'; 4];
        for (d, c) in n.iter_mut().zip(s.bytes()) {
            *d = c;
        }
        n
    }

    /// A NameString: optional leading '\', segments separated by '.'.
    pub fn name_string(path: &str) -> Vec<u8> {
        let mut v = Vec::new();
        let rest = match path.strip_prefix('\\') {
            Some(r) => {
                v.push(b'\\');
                r
            }
            None => path,
        };
        let segs: Vec<&str> = rest.split('.').filter(|s| !s.is_empty()).collect();
        match segs.len() {
            0 => v.push(0),
            1 => {}
            2 => v.push(0x2E),
            n => {
                v.push(0x2F);
                v.push(n as u8);
            }
        }
        for s in segs {
            v.extend_from_slice(&seg(s));
        }
        v
    }

    /// An integer constant in its shortest encoding.
    pub fn int(v: u64) -> Vec<u8> {
        match v {
            0 => vec![0x00],
            1 => vec![0x01],
            2..=0xFF => vec![0x0A, v as u8],
            0x100..=0xFFFF => {
                let mut r = vec![0x0B];
                r.extend_from_slice(&(v as u16).to_le_bytes());
                r
            }
            0x1_0000..=0xFFFF_FFFF => {
                let mut r = vec![0x0C];
                r.extend_from_slice(&(v as u32).to_le_bytes());
                r
            }
            _ => {
                let mut r = vec![0x0E];
                r.extend_from_slice(&v.to_le_bytes());
                r
            }
        }
    }

    /// A DWordConst, always 32-bit.
    pub fn dword(v: u32) -> Vec<u8> {
        let mut r = vec![0x0C];
        r.extend_from_slice(&v.to_le_bytes());
        r
    }

    /// `Name(path, value)`.
    pub fn name(path: &str, value: &[u8]) -> Vec<u8> {
        let mut v = vec![0x08];
        v.extend(name_string(path));
        v.extend_from_slice(value);
        v
    }

    /// `Package(n) { elements }`.
    pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![elements.len() as u8];
        for e in elements {
            body.extend_from_slice(e);
        }
        let mut v = vec![0x12];
        v.extend(pkg_length(body.len()));
        v.extend(body);
        v
    }

    /// `Buffer() { bytes }`.
    pub fn buffer(bytes: &[u8]) -> Vec<u8> {
        let mut body = int(bytes.len() as u64);
        body.extend_from_slice(bytes);
        let mut v = vec![0x11];
        v.extend(pkg_length(body.len()));
        v.extend(body);
        v
    }

    fn named_block(op: &[u8], path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
        let mut body = name_string(path);
        for t in terms {
            body.extend_from_slice(t);
        }
        let mut v = op.to_vec();
        v.extend(pkg_length(body.len()));
        v.extend(body);
        v
    }

    /// `Scope(path) { terms }`.
    pub fn scope(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
        named_block(&[0x10], path, terms)
    }

    /// `Device(path) { terms }`.
    pub fn device(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
        named_block(&[0x5B, 0x82], path, terms)
    }

    /// `EisaId("PNP0A03")` as its 32-bit value.
    pub fn eisa_id(id: &str) -> u32 {
        let b = id.as_bytes();
        let c = |i: usize| u32::from(b.get(i).copied().unwrap_or(b'@') & 0x1F);
        let hex = |i: usize| (b.get(i).copied().unwrap_or(b'0') as char).to_digit(16).unwrap_or(0);
        let b0 = (c(0) << 2) | (c(1) >> 3);
        let b1 = ((c(1) & 7) << 5) | c(2);
        let b2 = (hex(3) << 4) | hex(4);
        let b3 = (hex(5) << 4) | hex(6);
        b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)
    }
}

/// Resource descriptors for `_CRS` (ACPI 6.x 6.4).
fn pci0_crs(cfg: &PlatformConfig) -> Vec<u8> {
    let mut r = Vec::new();
    // Word address space descriptor: type, general flags (MinFixed|MaxFixed, producer), type flags.
    let word = |r: &mut Vec<u8>, ty: u8, tflags: u8, min: u16, max: u16| {
        r.extend_from_slice(&[0x88, 0x0D, 0x00, ty, 0x0C, tflags]);
        for v in [0u16, min, max, 0, max - min + 1] {
            r.extend_from_slice(&v.to_le_bytes());
        }
    };
    let dword_mem = |r: &mut Vec<u8>, min: u32, max: u32| {
        r.extend_from_slice(&[0x87, 0x17, 0x00, 0x00, 0x0C, 0x03]);
        for v in [0u32, min, max, 0, max - min + 1] {
            r.extend_from_slice(&v.to_le_bytes());
        }
    };
    word(&mut r, 2, 0x00, 0x00, 0xFF); // bus numbers 0-255
    // IO(Decode16, 0xCF8, 0xCF8, 1, 8): the configuration ports, consumed.
    r.extend_from_slice(&[0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08]);
    word(&mut r, 1, 0x03, 0x0000, 0x0CF7);
    word(&mut r, 1, 0x03, 0x0D00, 0xFFFF);
    dword_mem(&mut r, 0x000A_0000, 0x000B_FFFF);
    if cfg.pci_hole_start < cfg.ioapic_base {
        dword_mem(&mut r, cfg.pci_hole_start, cfg.ioapic_base - 1);
    }
    r.extend_from_slice(&[0x79, 0x00]);
    r
}

/// `_PRT` entries: (slot, pin 0-3, GSI) for slots 1-31.
pub fn prt_entries() -> Vec<(u8, u8, u32)> {
    let mut v = Vec::new();
    for slot in 1..32u8 {
        for pin in 0..4u8 {
            // The PIIX swizzle: INTA# of slot s drives PIRQ (s - 1) mod 4 (chipset::pci::pirq_of).
            let pirq = (slot + pin).wrapping_sub(1) & 3;
            v.push((slot, pin, 16 + u32::from(pirq)));
        }
    }
    v
}

/// `_CRS` of a legacy ISA device: 16-bit-decoded I/O ranges (base, length) and one IRQ (ACPI 6.x 6.4.2).
fn isa_crs(io: &[(u16, u8)], irq: Option<u8>) -> Vec<u8> {
    let mut r = Vec::new();
    for &(base, len) in io {
        let [lo, hi] = base.to_le_bytes();
        r.extend_from_slice(&[0x47, 0x01, lo, hi, lo, hi, 0x01, len]);
    }
    if let Some(irq) = irq {
        r.extend_from_slice(&[0x22]);
        r.extend_from_slice(&(1u16 << irq).to_le_bytes());
    }
    r.extend_from_slice(&[0x79, 0x00]);
    r
}

/// The legacy devices on the PIIX3's ISA bus, for the OS's PnP enumeration (as QEMU's DSDT describes
/// them): RTC, keyboard controller and its mouse port, COM1 and COM2.
fn isa_devices() -> Vec<Vec<u8>> {
    use aml::*;
    let dev = |path: &str, hid: &str, uid: Option<u64>, crs: Vec<u8>| {
        let mut terms = vec![name("_HID", &dword(eisa_id(hid)))];
        if let Some(u) = uid {
            terms.push(name("_UID", &int(u)));
        }
        terms.push(name("_CRS", &buffer(&crs)));
        device(path, &terms)
    };
    vec![
        dev("RTC", "PNP0B00", None, isa_crs(&[(0x70, 2)], Some(8))),
        dev("KBD", "PNP0303", None, isa_crs(&[(0x60, 1), (0x64, 1)], Some(1))),
        dev("MOU", "PNP0F13", None, isa_crs(&[], Some(12))),
        dev("COM1", "PNP0501", Some(1), isa_crs(&[(0x3F8, 8)], Some(4))),
        dev("COM2", "PNP0501", Some(2), isa_crs(&[(0x2F8, 8)], Some(3))),
    ]
}

/// The DSDT (AML).
fn dsdt(cfg: &PlatformConfig) -> Vec<u8> {
    use aml::*;
    let zero = int(0);
    let s5 = name("\\_S5", &package(&[zero.clone(), zero.clone(), zero.clone(), zero.clone()]));
    let prt: Vec<Vec<u8>> = prt_entries()
        .into_iter()
        .map(|(slot, pin, gsi)| {
            package(&[
                dword((u32::from(slot) << 16) | 0xFFFF),
                int(u64::from(pin)),
                int(0),
                int(u64::from(gsi)),
            ])
        })
        .collect();
    let pci0 = device(
        "PCI0",
        &[
            name("_HID", &dword(eisa_id("PNP0A03"))),
            name("_ADR", &int(0)),
            name("_UID", &int(0)),
            name("_BBN", &int(0)),
            name("_CRS", &buffer(&pci0_crs(cfg))),
            name("_PRT", &package(&prt)),
            device(
                "ISA",
                &[name("_ADR", &int(0x0001_0000))].into_iter().chain(isa_devices()).collect::<Vec<_>>(),
            ),
        ],
    );
    let sb = scope("\\_SB", &[pci0]);
    let mut body = s5;
    body.extend(sb);
    sdt(b"DSDT", 2, &body)
}

/// Places blobs one after another in the EBDA.
struct Placer {
    next: u64,
}

impl Placer {
    fn place(&mut self, len: usize, align: u64) -> u64 {
        let at = self.next.next_multiple_of(align);
        self.next = at + len as u64;
        at
    }
}

/// Builds the ACPI tables and the MP table for `cfg`.
///
/// # Panics
///
/// If the tables do not fit in the EBDA (they take about 4 KiB of its 8).
pub fn build_tables(cfg: &PlatformConfig) -> AcpiTables {
    let dsdt = dsdt(cfg);
    let facs = facs();
    let madt = madt(cfg);
    let mpc = mptable::config_table(cfg);

    let mut p = Placer { next: EBDA_BASE };
    let rsdp_at = p.place(36, 16);
    let mpf_at = p.place(16, 16);
    let facs_at = p.place(facs.len(), 64);
    let rsdt_at = p.place(36 + 4 * 2, 16);
    let xsdt_at = p.place(36 + 8 * 2, 16);
    let fadt_at = p.place(276, 16);
    let madt_at = p.place(madt.len(), 16);
    let mpc_at = p.place(mpc.len(), 16);
    let dsdt_at = p.place(dsdt.len(), 16);
    assert!(p.next <= EBDA_END, "ACPI tables overflow the EBDA");

    let fadt = fadt(cfg, facs_at, dsdt_at);
    let mut rb = Vec::new();
    let mut xb = Vec::new();
    for a in [fadt_at, madt_at] {
        rb.extend_from_slice(&(a as u32).to_le_bytes());
        xb.extend_from_slice(&a.to_le_bytes());
    }
    let rsdt = sdt(b"RSDT", 1, &rb);
    let xsdt = sdt(b"XSDT", 1, &xb);
    let mpf = mptable::floating_pointer(mpc_at as u32);

    let ebda_kib = (EBDA_BASE / 1024) as u16;
    let writes = vec![
        (0x40E, ((EBDA_BASE >> 4) as u16).to_le_bytes().to_vec()),
        (0x413, ebda_kib.to_le_bytes().to_vec()),
        (rsdp_at, rsdp(rsdt_at, xsdt_at)),
        (mpf_at, mpf),
        (facs_at, facs),
        (rsdt_at, rsdt),
        (xsdt_at, xsdt),
        (fadt_at, fadt),
        (madt_at, madt),
        (mpc_at, mpc),
        (dsdt_at, dsdt),
    ];
    AcpiTables { writes, rsdp: rsdp_at, mp_floating: mpf_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory as the tables would see it.
    struct Mem(Vec<u8>);

    impl Mem {
        fn new(t: &AcpiTables) -> Mem {
            let mut m = vec![0u8; 0x10_0000];
            let mut spans: Vec<(u64, u64)> = Vec::new();
            for (a, b) in &t.writes {
                let (s, e) = (*a, *a + b.len() as u64);
                assert!(spans.iter().all(|(s2, e2)| e <= *s2 || s >= *e2), "blobs overlap at {a:#x}");
                assert!((0x400..0x500).contains(&s) || (EBDA_BASE..=EBDA_END).contains(&e) && s >= EBDA_BASE);
                spans.push((s, e));
                m[*a as usize..e as usize].copy_from_slice(b);
            }
            Mem(m)
        }
        fn u8(&self, a: u64) -> u8 {
            self.0[a as usize]
        }
        fn u16(&self, a: u64) -> u16 {
            u16::from_le_bytes(self.0[a as usize..a as usize + 2].try_into().unwrap())
        }
        fn u32(&self, a: u64) -> u32 {
            u32::from_le_bytes(self.0[a as usize..a as usize + 4].try_into().unwrap())
        }
        fn u64(&self, a: u64) -> u64 {
            u64::from_le_bytes(self.0[a as usize..a as usize + 8].try_into().unwrap())
        }
        fn bytes(&self, a: u64, n: usize) -> &[u8] {
            &self.0[a as usize..a as usize + n]
        }
        /// Checks an SDT's signature, length and checksum; returns its length.
        fn sdt(&self, a: u64, sig: &[u8; 4]) -> usize {
            assert_eq!(self.bytes(a, 4), sig, "signature at {a:#x}");
            let len = self.u32(a + 4) as usize;
            assert!(len >= 36);
            assert_eq!(checksum(self.bytes(a, len)), 0, "{} checksum", String::from_utf8_lossy(sig));
            assert_eq!(self.bytes(a + 10, 6), OEM_ID);
            len
        }
    }

    /// Finds the RSDP the way an OS does: EBDA segment from 0x40E, first KiB, 16-byte steps.
    fn find_rsdp(m: &Mem) -> u64 {
        let ebda = u64::from(m.u16(0x40E)) << 4;
        (ebda..ebda + 1024).step_by(16).find(|a| m.bytes(*a, 8) == b"RSD PTR ").expect("RSDP in the EBDA")
    }

    #[test]
    fn rsdp_xsdt_rsdt_chain() {
        let t = build_tables(&PlatformConfig::default());
        let m = Mem::new(&t);
        let r = find_rsdp(&m);
        assert_eq!(r, t.rsdp);
        assert_eq!(checksum(m.bytes(r, 20)), 0, "RSDP v1 checksum");
        assert_eq!(checksum(m.bytes(r, 36)), 0, "RSDP extended checksum");
        assert_eq!(m.u8(r + 15), 2, "revision 2");
        assert_eq!(m.u32(r + 20), 36);
        assert_eq!(m.u16(0x413), 632);
        let xsdt = m.u64(r + 24);
        let rsdt = u64::from(m.u32(r + 16));
        let xl = m.sdt(xsdt, b"XSDT");
        let rl = m.sdt(rsdt, b"RSDT");
        assert_eq!((xl - 36) / 8, (rl - 36) / 4);
        let mut sigs = Vec::new();
        for i in 0..(xl - 36) / 8 {
            let a = m.u64(xsdt + 36 + 8 * i as u64);
            assert_eq!(u64::from(m.u32(rsdt + 36 + 4 * i as u64)), a, "RSDT and XSDT agree");
            let sig: [u8; 4] = m.bytes(a, 4).try_into().unwrap();
            m.sdt(a, &sig);
            sigs.push(sig);
        }
        assert_eq!(sigs, [*b"FACP", *b"APIC"]);
    }

    #[test]
    fn fadt_fields() {
        let cfg = PlatformConfig::default();
        let t = build_tables(&cfg);
        let m = Mem::new(&t);
        let x = m.u64(t.rsdp + 24);
        let f = m.u64(x + 36);
        assert_eq!(m.sdt(f, b"FACP"), 276);
        assert_eq!(m.u8(f + 8), 6, "FADT revision");
        assert_eq!(m.u16(f + 46), 9, "SCI_INT");
        assert_eq!(m.u32(f + 48), 0, "no SMI_CMD");
        assert_eq!(m.u32(f + 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(m.u32(f + 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(m.u32(f + 76), 0x608, "PM_TMR_BLK");
        assert_eq!(m.u32(f + 80), 0x60C, "GPE0_BLK");
        assert_eq!(m.bytes(f + 88, 5), [4, 2, 0, 4, 4]);
        let flags = m.u32(f + 112);
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(flags & (1 << 8), 0, "24-bit PM timer");
        assert_eq!(m.u16(f + 109) & 3, 3, "legacy devices and 8042");
        // Reset register: system I/O 0xCF9, byte, value 6.
        assert_eq!(m.bytes(f + 116, 4), [1, 8, 0, 1]);
        assert_eq!(m.u64(f + 120), 0xCF9);
        assert_eq!(m.u8(f + 128), 6);
        // X_ fields agree with the 32-bit ones.
        assert_eq!(m.u64(f + 132), 0, "X_FIRMWARE_CTRL: FIRMWARE_CTRL alone names the FACS");
        assert_eq!(m.u64(f + 140), u64::from(m.u32(f + 40)));
        assert_eq!(m.u64(f + 148 + 4), 0x600);
        assert_eq!(m.u8(f + 148 + 1), 32);
        assert_eq!(m.u64(f + 172 + 4), 0x604);
        assert_eq!(m.u64(f + 208 + 4), 0x608);
        assert_eq!(m.u8(f + 208 + 1), 32);
        // FACS.
        let facs = u64::from(m.u32(f + 36));
        assert_eq!(facs % 64, 0);
        assert_eq!(m.bytes(facs, 4), b"FACS");
        assert_eq!(m.u32(facs + 4), 64);
        // DSDT.
        let d = m.u64(f + 140);
        m.sdt(d, b"DSDT");
    }

    #[test]
    fn madt_entries() {
        let t = build_tables(&PlatformConfig::default());
        let m = Mem::new(&t);
        let x = m.u64(t.rsdp + 24);
        let a = m.u64(x + 44);
        let len = m.sdt(a, b"APIC") as u64;
        assert_eq!(m.u32(a + 36), 0xFEE0_0000);
        assert_eq!(m.u32(a + 40) & 1, 1, "PCAT_COMPAT");
        let mut p = a + 44;
        let (mut lapics, mut ioapics, mut isos, mut nmis) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        while p < a + len {
            let (ty, l) = (m.u8(p), u64::from(m.u8(p + 1)));
            assert!(l >= 2 && p + l <= a + len, "entry length");
            match ty {
                0 => lapics.push((m.u8(p + 2), m.u8(p + 3), m.u32(p + 4))),
                1 => ioapics.push((m.u8(p + 2), m.u32(p + 4), m.u32(p + 8))),
                2 => isos.push((m.u8(p + 2), m.u8(p + 3), m.u32(p + 4), m.u16(p + 8))),
                4 => nmis.push((m.u8(p + 2), m.u16(p + 3), m.u8(p + 5))),
                _ => panic!("unexpected MADT entry {ty}"),
            }
            p += l;
        }
        assert_eq!(p, a + len);
        assert_eq!(lapics, [(0, 0, 1)]);
        assert_eq!(ioapics, [(0, 0xFEC0_0000, 0)]);
        assert_eq!(isos, [(0, 0, 2, 0), (0, 9, 9, 0x0D)]);
        assert_eq!(nmis, [(0xFF, 0, 1)]);
    }

    /// Reads a PkgLength at `b[0..]`: (value, bytes used).
    fn read_pkg_length(b: &[u8]) -> (usize, usize) {
        let extra = usize::from(b[0] >> 6);
        if extra == 0 {
            return (usize::from(b[0] & 0x3F), 1);
        }
        let mut v = usize::from(b[0] & 0xF);
        for i in 0..extra {
            v |= usize::from(b[1 + i]) << (4 + 8 * i);
        }
        (v, 1 + extra)
    }

    #[test]
    fn pkg_length_encodings() {
        for n in [0usize, 10, 61, 62, 63, 100, 4000, 4093, 4094, 70_000, 2_000_000] {
            let e = aml::pkg_length(n);
            let (v, used) = read_pkg_length(&e);
            assert_eq!(used, e.len());
            assert_eq!(v, n + e.len(), "PkgLength for {n}");
        }
        assert_eq!(aml::eisa_id("PNP0A03"), 0x030A_D041);
        assert_eq!(aml::eisa_id("PNP0501"), 0x0105_D041);
        assert_eq!(aml::name_string("\\_SB.PCI0"), b"\\\x2E_SB_PCI0");
        assert_eq!(aml::int(0x1234), [0x0B, 0x34, 0x12]);
    }

    /// A tiny AML walker: enough of the grammar for what `dsdt` emits.
    struct Walker<'a> {
        b: &'a [u8],
        p: usize,
        names: Vec<String>,
    }

    impl Walker<'_> {
        fn name_string(&mut self) -> String {
            let mut s = String::new();
            if self.b[self.p] == b'\\' {
                s.push('\\');
                self.p += 1;
            }
            let n = match self.b[self.p] {
                0x2E => {
                    self.p += 1;
                    2
                }
                0x2F => {
                    self.p += 2;
                    usize::from(self.b[self.p - 1])
                }
                0 => {
                    self.p += 1;
                    0
                }
                _ => 1,
            };
            for i in 0..n {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(std::str::from_utf8(&self.b[self.p..self.p + 4]).unwrap());
                self.p += 4;
            }
            s
        }
        /// A data object; returns the integer value for integers.
        fn data(&mut self) -> Option<u64> {
            let op = self.b[self.p];
            self.p += 1;
            let le = |b: &[u8]| b.iter().rev().fold(0u64, |a, x| (a << 8) | u64::from(*x));
            match op {
                0x00 => Some(0),
                0x01 => Some(1),
                0xFF => Some(u64::MAX),
                0x0A | 0x0B | 0x0C | 0x0E => {
                    let n = match op {
                        0x0A => 1,
                        0x0B => 2,
                        0x0C => 4,
                        _ => 8,
                    };
                    let v = le(&self.b[self.p..self.p + n]);
                    self.p += n;
                    Some(v)
                }
                0x11 | 0x12 => {
                    let start = self.p;
                    let (len, _) = read_pkg_length(&self.b[self.p..]);
                    let end = start + len;
                    if op == 0x12 {
                        let (_, used) = read_pkg_length(&self.b[self.p..]);
                        self.p += used;
                        let count = self.b[self.p];
                        self.p += 1;
                        for _ in 0..count {
                            self.data();
                        }
                        assert_eq!(self.p, end, "package length");
                    }
                    self.p = end;
                    None
                }
                _ => panic!("unexpected data op {op:#x} at {}", self.p - 1),
            }
        }
        fn terms(&mut self, end: usize, scope: &str) {
            while self.p < end {
                let op = self.b[self.p];
                match op {
                    0x08 => {
                        self.p += 1;
                        let n = self.name_string();
                        self.names.push(format!("{scope}{n}"));
                        self.data();
                    }
                    0x10 | 0x5B => {
                        self.p += if op == 0x5B { 2 } else { 1 };
                        let start = self.p;
                        let (len, used) = read_pkg_length(&self.b[self.p..]);
                        self.p += used;
                        let n = self.name_string();
                        let inner = format!("{scope}{n}.");
                        self.terms(start + len, &inner);
                        assert_eq!(self.p, start + len);
                    }
                    _ => panic!("unexpected term op {op:#x}"),
                }
            }
        }
    }

    #[test]
    fn dsdt_parses_back() {
        let cfg = PlatformConfig::default();
        let d = dsdt(&cfg);
        assert_eq!(checksum(&d), 0);
        assert_eq!(u32::from_le_bytes(d[4..8].try_into().unwrap()) as usize, d.len());
        let mut w = Walker { b: &d, p: 36, names: Vec::new() };
        w.terms(d.len(), "");
        for n in ["\\_S5_", "\\_SB_.PCI0._HID", "\\_SB_.PCI0._CRS", "\\_SB_.PCI0._PRT", "\\_SB_.PCI0._UID"] {
            assert!(w.names.iter().any(|x| x == n), "{n} missing from {:?}", w.names);
        }
        for n in ["RTC_", "KBD_", "MOU_", "COM1", "COM2"] {
            let crs = format!("\\_SB_.PCI0.ISA_.{n}._CRS");
            assert!(w.names.contains(&crs), "{crs} missing from {:?}", w.names);
        }
        // COM1: I/O 0x3F8-0x3FF, IRQ 4.
        assert_eq!(
            isa_crs(&[(0x3F8, 8)], Some(4)),
            [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00]
        );
        // _S5 is {0, 0, 0, 0}.
        let i = d.windows(4).position(|x| x == b"_S5_").unwrap();
        assert_eq!(&d[i + 4..i + 4 + 7], [0x12, 0x06, 0x04, 0, 0, 0, 0]);
        // _CRS resource template ends with an end tag and its descriptors chain to it.
        let crs = pci0_crs(&cfg);
        let mut p = 0;
        loop {
            let t = crs[p];
            if t & 0x80 != 0 {
                p += 3 + usize::from(u16::from_le_bytes([crs[p + 1], crs[p + 2]]));
            } else if t == 0x79 {
                assert_eq!(p + 2, crs.len());
                break;
            } else {
                p += 1 + usize::from(t & 7);
            }
        }
        // _PRT: slot 1 INTA# -> GSI 16, slot 2 INTA# -> 17, slot 4 INTD# -> 18.
        let prt = prt_entries();
        assert_eq!(prt.len(), 124);
        assert!(prt.contains(&(1, 0, 16)) && prt.contains(&(2, 0, 17)) && prt.contains(&(4, 3, 18)));
    }

    #[test]
    fn tables_fit_and_track_the_config() {
        let cfg =
            PlatformConfig { pm_base: 0xB000, pci_hole_start: 0xC000_0000, ..PlatformConfig::default() };
        let t = build_tables(&cfg);
        let m = Mem::new(&t);
        let f = m.u64(m.u64(t.rsdp + 24) + 36);
        assert_eq!(m.u32(f + 56), 0xB000);
        let end = t.writes.iter().map(|(a, b)| a + b.len() as u64).max().unwrap();
        assert!(end <= EBDA_END);
    }
}
