//! Intel MultiProcessor Specification 1.4 tables, for guests booted with ACPI off (Linux `acpi=off`).
//!
//! The floating pointer structure sits in the EBDA next to the RSDP (see [`crate::acpi`]); the
//! configuration table lists the CPUs, bus 0 (PCI) and bus 1 (ISA), the I/O APIC, and the interrupt
//! assignments of this board: ISA IRQ 0 as ExtINT on pin 0 and as INT on pin 2, ISA IRQs 1 and 3-15 on
//! their own pins (conforming: edge, active high), every PCI slot's INTA#-INTD# on pins 16-19 (conforming
//! for PCI: level, active low; the same swizzle as the ACPI `_PRT`), and the local APIC's LINT0 as ExtINT
//! and LINT1 as NMI. MP spec 1.4 chapter 4 and appendix D (default configurations are not used).

use crate::acpi::{PlatformConfig, checksum, prt_entries};

/// The 16-byte floating pointer structure (MP 1.4, 4.1) pointing at the configuration table at `table`.
pub fn floating_pointer(table: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(16);
    f.extend_from_slice(b"_MP_");
    f.extend_from_slice(&table.to_le_bytes());
    f.push(1); // length in 16-byte units
    f.push(4); // spec revision 1.4
    f.push(0); // checksum
    f.extend_from_slice(&[0, 0, 0, 0, 0]); // feature bytes: configuration table present, no IMCR
    f[10] = 0u8.wrapping_sub(checksum(&f));
    f
}

/// An interrupt assignment entry (types 3 and 4): kind, flags, source bus and IRQ, destination and pin.
fn int_entry(ty: u8, kind: u8, flags: u16, bus: u8, irq: u8, dst: u8, pin: u8) -> [u8; 8] {
    let f = flags.to_le_bytes();
    [ty, kind, f[0], f[1], bus, irq, dst, pin]
}

/// The configuration table (MP 1.4, 4.2-4.3). Its position does not matter (no pointers inside).
pub fn config_table(cfg: &PlatformConfig) -> Vec<u8> {
    const BUS_PCI: u8 = 0;
    const BUS_ISA: u8 = 1;
    let mut e: Vec<u8> = Vec::new();
    let mut count = 0u16;
    for cpu in 0..cfg.cpus {
        e.extend_from_slice(&[0, cpu, 0x14, if cpu == 0 { 3 } else { 1 }]);
        e.extend_from_slice(&0x0000_0600u32.to_le_bytes()); // family 6 signature
        e.extend_from_slice(&0x0000_0201u32.to_le_bytes()); // FPU | APIC
        e.extend_from_slice(&[0; 8]);
        count += 1;
    }
    e.extend_from_slice(&[1, BUS_PCI]);
    e.extend_from_slice(b"PCI   ");
    e.extend_from_slice(&[1, BUS_ISA]);
    e.extend_from_slice(b"ISA   ");
    count += 2;
    e.extend_from_slice(&[2, cfg.ioapic_id, 0x20, 1]);
    e.extend_from_slice(&cfg.ioapic_base.to_le_bytes());
    count += 1;
    e.extend_from_slice(&int_entry(3, 3, 0, BUS_ISA, 0, cfg.ioapic_id, 0));
    count += 1;
    for irq in (0..16u8).filter(|i| *i != 2) {
        let pin = if irq == 0 { 2 } else { irq };
        e.extend_from_slice(&int_entry(3, 0, 0, BUS_ISA, irq, cfg.ioapic_id, pin));
        count += 1;
    }
    for (slot, pin, gsi) in prt_entries() {
        e.extend_from_slice(&int_entry(3, 0, 0, BUS_PCI, (slot << 2) | pin, cfg.ioapic_id, gsi as u8));
        count += 1;
    }
    e.extend_from_slice(&int_entry(4, 3, 0, BUS_ISA, 0, 0xFF, 0));
    e.extend_from_slice(&int_entry(4, 1, 0, BUS_ISA, 0, 0xFF, 1));
    count += 2;

    let mut t = Vec::with_capacity(44 + e.len());
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&((44 + e.len()) as u16).to_le_bytes());
    t.push(4);
    t.push(0);
    t.extend_from_slice(b"FERRITE ");
    t.extend_from_slice(b"i440FX-PIIX ");
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes());
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&cfg.lapic_base.to_le_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(&e);
    t[7] = 0u8.wrapping_sub(checksum(&t));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::build_tables;

    #[test]
    fn floating_pointer_and_table_parse_back() {
        let cfg = PlatformConfig::default();
        let t = build_tables(&cfg);
        let mpf = &t.writes.iter().find(|(a, _)| *a == t.mp_floating).unwrap().1;
        assert_eq!(&mpf[0..4], b"_MP_");
        assert_eq!(mpf.len(), 16);
        assert_eq!(checksum(mpf), 0);
        assert_eq!(t.mp_floating % 16, 0);
        let at = u64::from(u32::from_le_bytes(mpf[4..8].try_into().unwrap()));
        let tab = &t.writes.iter().find(|(a, _)| *a == at).expect("table at the pointer").1;
        assert_eq!(&tab[0..4], b"PCMP");
        assert_eq!(usize::from(u16::from_le_bytes([tab[4], tab[5]])), tab.len());
        assert_eq!(checksum(tab), 0);
        assert_eq!(u32::from_le_bytes(tab[36..40].try_into().unwrap()), 0xFEE0_0000);
        let n = u16::from_le_bytes([tab[34], tab[35]]);
        // Walk the entries by type: processors 20 bytes, others 8.
        let (mut p, mut seen, mut last_ty) = (44usize, 0u16, 0u8);
        let mut ints = Vec::new();
        while p < tab.len() {
            let ty = tab[p];
            assert!(ty >= last_ty, "entries sorted by type");
            last_ty = ty;
            if ty == 3 {
                ints.push((tab[p + 1], tab[p + 4], tab[p + 5], tab[p + 7]));
            }
            p += if ty == 0 { 20 } else { 8 };
            seen += 1;
        }
        assert_eq!(p, tab.len());
        assert_eq!(seen, n);
        assert!(ints.contains(&(0, 1, 0, 2)), "ISA IRQ0 -> pin 2");
        assert!(ints.contains(&(3, 1, 0, 0)), "ExtINT on pin 0");
        assert!(ints.contains(&(0, 1, 9, 9)));
        assert!(ints.contains(&(0, 0, 1 << 2, 16)), "slot 1 INTA# -> pin 16");
        assert!(ints.contains(&(0, 0, (2 << 2) | 1, 18)), "slot 2 INTB# -> pin 18");
    }
}
