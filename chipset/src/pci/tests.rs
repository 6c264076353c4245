//! Register-level tests of the PCI bus and functions.

use super::*;
use crate::msi::MsiCapability;
use crate::testutil::{Bus, hammer, roundtrip};
use vmcore::Snapshot;

fn pc_bus() -> PciBus {
    let mut b = PciBus::new();
    b.add(DEVFN_HOST, Box::new(I440fx::new()));
    b.add(DEVFN_ISA, Box::new(Piix3Isa::new()));
    b.add(DEVFN_IDE, Box::new(Piix3Ide::new()));
    b.add(DEVFN_PM, Box::new(Piix4Pm::new()));
    b
}

fn addr(devfn: u8, reg: u8) -> u32 {
    0x8000_0000 | (u32::from(devfn) << 8) | u32::from(reg)
}

fn rd(bus: &mut Bus, p: &mut PciBus, devfn: u8, reg: u8, size: usize) -> u32 {
    p.pio_write(&mut bus.ctx(0), 0, &addr(devfn, reg & 0xFC).to_le_bytes());
    let mut d = [0u8; 4];
    p.pio_read(&mut bus.ctx(0), 4 + u16::from(reg & 3), &mut d[..size]);
    u32::from_le_bytes(d)
}

fn wr(bus: &mut Bus, p: &mut PciBus, devfn: u8, reg: u8, size: usize, v: u32) {
    p.pio_write(&mut bus.ctx(0), 0, &addr(devfn, reg & 0xFC).to_le_bytes());
    p.pio_write(&mut bus.ctx(0), 4 + u16::from(reg & 3), &v.to_le_bytes()[..size]);
}

#[test]
fn mechanism_1_address_register() {
    let mut b = Bus::new();
    let mut p = pc_bus();
    p.pio_write(&mut b.ctx(0), 0, &0xFFFF_FFFFu32.to_le_bytes());
    let mut d = [0u8; 4];
    p.pio_read(&mut b.ctx(0), 0, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x80FF_FFFC, "reserved bits read zero");
    // Byte and word accesses do not reach CONFIG_ADDRESS.
    p.pio_write(&mut b.ctx(0), 0, &[0]);
    p.pio_write(&mut b.ctx(0), 2, &[0, 0]);
    p.pio_read(&mut b.ctx(0), 0, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x80FF_FFFC);
    // Enable bit clear: data reads all ones.
    p.pio_write(&mut b.ctx(0), 0, &0u32.to_le_bytes());
    p.pio_read(&mut b.ctx(0), 4, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0xFFFF_FFFF);
}

#[test]
fn enumerates_the_pc_functions() {
    let mut b = Bus::new();
    let mut p = pc_bus();
    assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 0, 4), 0x1237_8086);
    assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 0x08, 4), 0x0600_0002);
    assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0, 4), 0x7000_8086);
    assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0x0A, 2), 0x0601);
    assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0x0E, 1), 0x80, "multi-function");
    assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0, 4), 0x7010_8086);
    assert_eq!(rd(&mut b, &mut p, DEVFN_PM, 0, 4), 0x7113_8086);
    // Byte and word reads at every lane.
    assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 1, 1), 0x80);
    assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 2, 2), 0x1237);
    assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 3, 1), 0x12);
    // Absent device, other bus.
    assert_eq!(rd(&mut b, &mut p, 0x10, 0, 4), 0xFFFF_FFFF);
    p.pio_write(&mut b.ctx(0), 0, &0x8001_0000u32.to_le_bytes());
    let mut d = [0u8; 4];
    p.pio_read(&mut b.ctx(0), 4, &mut d);
    assert_eq!(d, [0xFF; 4]);
}

#[test]
fn read_only_and_write_masked_registers() {
    let mut b = Bus::new();
    let mut p = pc_bus();
    wr(&mut b, &mut p, DEVFN_HOST, 0, 4, 0);
    assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 0, 4), 0x1237_8086, "IDs are read-only");
    wr(&mut b, &mut p, DEVFN_HOST, 0x59, 1, 0x33);
    wr(&mut b, &mut p, DEVFN_HOST, 0x5A, 2, 0x1133);
    assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 0x58, 4) >> 8, 0x11_3333, "PAM registers read back");
    wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 0xFFFF);
    assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x04, 2), 0x0547, "command register mask");
    // Status: write one to clear the error bits, others read-only.
    p.function_mut(DEVFN_IDE).unwrap().config_mut().set_u16(reg::STATUS, 0xF290);
    wr(&mut b, &mut p, DEVFN_IDE, 0x06, 2, 0x8000);
    assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x06, 2), 0x7290);
    wr(&mut b, &mut p, DEVFN_IDE, 0x3C, 1, 11);
    assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x3C, 1), 11);
}

#[test]
fn io_bar_sizing_and_mapping_events() {
    let mut b = Bus::new();
    let mut p = pc_bus();
    assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x20, 4), 1, "BAR4: I/O, unassigned");
    wr(&mut b, &mut p, DEVFN_IDE, 0x20, 4, 0xFFFF_FFFF);
    assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x20, 4), 0xFFFF_FFF1, "16-byte I/O BAR");
    assert!(p.take_events().is_empty(), "decode is off");
    wr(&mut b, &mut p, DEVFN_IDE, 0x20, 4, 0xC000);
    wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 1);
    let ev = p.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].devfn, DEVFN_IDE);
    assert_eq!(
        ev[0].change,
        BarChange { window: 4, kind: BarKind::Io, size: 16, old: None, new: Some(0xC000) }
    );
    wr(&mut b, &mut p, DEVFN_IDE, 0x20, 4, 0xC041);
    let ev = p.take_events();
    assert_eq!((ev[0].change.old, ev[0].change.new), (Some(0xC000), Some(0xC040)));
    wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 0);
    let ev = p.take_events();
    assert_eq!((ev[0].change.old, ev[0].change.new), (Some(0xC040), None));
    // Reset unmaps.
    wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 1);
    p.take_events();
    p.reset();
    let ev = p.take_events();
    assert_eq!((ev[0].change.old, ev[0].change.new), (Some(0xC040), None));
    assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x20, 4), 1);
}

struct TestDev {
    cfg: ConfigSpace,
}
impl PciFunction for TestDev {
    fn name(&self) -> &str {
        "test"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
}

impl Snapshot for TestDev {
    type Restored = Vec<BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        self.config().save(w);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag(self.name())?;
        self.config_mut().restore(r)
    }
}

#[test]
fn memory_bar_sizing_32_and_64_bit() {
    let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xFF_00_00, 0, 0);
    cfg.add_bar(0, BarDef { kind: BarKind::Mem32, size: 0x1000, prefetchable: false });
    cfg.add_bar(2, BarDef { kind: BarKind::Mem64, size: 0x2_0000_0000, prefetchable: true });
    cfg.add_bar(5, BarDef { kind: BarKind::Mem64, size: 0x1000, prefetchable: false }); // no room: ignored
    let msi = MsiCapability::add(&mut cfg, 2, true, false).unwrap();
    let mut p = PciBus::new();
    p.add(0x18, Box::new(TestDev { cfg }));
    let mut b = Bus::new();
    wr(&mut b, &mut p, 0x18, 0x10, 4, 0xFFFF_FFFF);
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x10, 4), 0xFFFF_F000);
    wr(&mut b, &mut p, 0x18, 0x18, 4, 0xFFFF_FFFF);
    wr(&mut b, &mut p, 0x18, 0x1C, 4, 0xFFFF_FFFF);
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x18, 4), 0x0000_000C, "64-bit prefetchable, 8 GiB");
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x1C, 4), 0xFFFF_FFFE);
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x24, 4), 0, "BAR5 not implemented");
    wr(&mut b, &mut p, 0x18, 0x10, 4, 0xFEB0_0000);
    wr(&mut b, &mut p, 0x18, 0x18, 4, 0);
    wr(&mut b, &mut p, 0x18, 0x1C, 4, 0x4);
    p.take_events();
    wr(&mut b, &mut p, 0x18, 0x04, 2, u32::from(CMD_MEM));
    let ev = p.take_events();
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].change.window, ev[0].change.new), (0, Some(0xFEB0_0000)));
    assert_eq!(
        (ev[1].change.window, ev[1].change.kind, ev[1].change.new),
        (2, BarKind::Mem64, Some(0x4_0000_0000))
    );
    // Capability list: status bit, pointer, MSI structure.
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x06, 2) & 0x10, 0x10);
    let cap = rd(&mut b, &mut p, 0x18, 0x34, 1) as u8;
    assert_eq!(usize::from(cap), msi.offset);
    assert_eq!(rd(&mut b, &mut p, 0x18, cap, 4) & 0xFFFF_00FF, 0x0084_0005, "MSI, 64-bit, 4 vectors");
    assert_eq!(p.function(0x18).unwrap().config().find_capability(5), Some(msi.offset));
    wr(&mut b, &mut p, 0x18, cap + 4, 4, 0xFEE0_0003);
    wr(&mut b, &mut p, 0x18, cap + 12, 2, 0x4041);
    assert_eq!(msi.message(p.function(0x18).unwrap().config(), 0), None, "disabled");
    wr(&mut b, &mut p, 0x18, cap + 2, 2, 0x0021);
    assert_eq!(rd(&mut b, &mut p, 0x18, cap + 2, 2), 0x00A5, "MME=2, enable; MMC and 64-bit bits read-only");
    assert_eq!(
        msi.message(p.function(0x18).unwrap().config(), 3),
        Some(MsiMessage { address: 0xFEE0_0000, data: 0x4043 })
    );
}

#[test]
fn pirq_routing_registers() {
    let mut b = Bus::new();
    let mut p = pc_bus();
    assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0x60, 4), 0x8080_8080);
    wr(&mut b, &mut p, DEVFN_ISA, 0x60, 4, 0x800B_0A0B);
    assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0x60, 4), 0x800B_0A0B);
    assert_eq!(Piix3Isa::decode_route(0x0B), Some(11));
    assert_eq!(Piix3Isa::decode_route(0x80 | 0x0B), None);
    assert_eq!(Piix3Isa::decode_route(0x08), None, "IRQ 8 is reserved");
    assert_eq!(Piix3Isa::decode_route(0x02), None);
    assert_eq!(pirq_of(1, 1), 0, "slot 1 INTA# -> PIRQA");
    assert_eq!(pirq_of(2, 1), 1);
    assert_eq!(pirq_of(3, 2), 3);
    assert_eq!(pirq_of(0, 1), 3);
}

#[test]
fn piix4_pm_base_window() {
    let mut b = Bus::new();
    let mut p = pc_bus();
    assert_eq!(rd(&mut b, &mut p, DEVFN_PM, 0x40, 4), 1);
    wr(&mut b, &mut p, DEVFN_PM, 0x40, 4, 0x0601);
    assert_eq!(rd(&mut b, &mut p, DEVFN_PM, 0x40, 4), 0x0601);
    assert!(p.take_events().is_empty());
    wr(&mut b, &mut p, DEVFN_PM, 0x80, 1, 1);
    let ev = p.take_events();
    assert_eq!(
        ev[0].change,
        BarChange { window: PM_WINDOW, kind: BarKind::Io, size: 64, old: None, new: Some(0x600) }
    );
    wr(&mut b, &mut p, DEVFN_PM, 0x40, 4, 0xB001);
    let ev = p.take_events();
    assert_eq!((ev[0].change.old, ev[0].change.new), (Some(0x600), Some(0xB000)));
    wr(&mut b, &mut p, DEVFN_PM, 0x90, 4, 0xB101);
    wr(&mut b, &mut p, DEVFN_PM, 0xD2, 1, 1);
    assert!(p.take_events().is_empty(), "SMBus also needs the I/O enable");
    wr(&mut b, &mut p, DEVFN_PM, 0x04, 2, 1);
    let ev = p.take_events();
    assert_eq!((ev[0].change.window, ev[0].change.new), (SMB_WINDOW, Some(0xB100)));
}

#[test]
fn snapshot_restore_and_hostile_input() {
    let mut b = Bus::new();
    let mut p = pc_bus();
    wr(&mut b, &mut p, DEVFN_IDE, 0x20, 4, 0xC000);
    wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 1);
    wr(&mut b, &mut p, DEVFN_ISA, 0x60, 1, 0x0A);
    p.take_events();
    let mut fresh = pc_bus();
    roundtrip(&p, &mut fresh);
    assert_eq!(rd(&mut b, &mut fresh, DEVFN_ISA, 0x60, 1), 0x0A);
    assert!(fresh.take_events().iter().any(|e| e.change.new == Some(0xC000)), "restore re-maps windows");
    hammer(&mut p, &[0, 4, 5, 6, 7], false, 3);
}

/// A bus with one test function at 00:03.0 with a 4 KiB memory BAR0 and, if `rom` is given, that
/// expansion ROM.
fn rom_bus(rom: Option<Vec<u8>>) -> PciBus {
    let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xFF_00_00, 0, 0);
    cfg.add_bar(0, BarDef { kind: BarKind::Mem32, size: 0x1000, prefetchable: false });
    assert!(cfg.set_rom(rom.and_then(ExpansionRom::new)).is_empty());
    let mut p = PciBus::new();
    p.add(0x18, Box::new(TestDev { cfg }));
    p
}

/// The ROM's changes among `ev`.
fn rom_changes(ev: Vec<PciBarEvent>) -> Vec<(Option<u64>, Option<u64>)> {
    ev.iter().filter(|e| e.change.window == ROM_WINDOW).map(|e| (e.change.old, e.change.new)).collect()
}

#[test]
fn rom_bar_sizes_like_a_memory_bar_with_an_enable_bit() {
    let mut b = Bus::new();
    // 5000 bytes: an 8 KiB window.
    let mut p = rom_bus(Some(vec![0x55; 5000]));
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x30, 4), 0, "unassigned, disabled");
    wr(&mut b, &mut p, 0x18, 0x30, 4, 0xFFFF_FFFF);
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x30, 4), 0xFFFF_E001, "8 KiB; bits 10:1 reserved zero; enable");
    // SeaBIOS's probe writes all ones but the enable bit.
    wr(&mut b, &mut p, 0x18, 0x30, 4, !ROM_ENABLE);
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x30, 4), 0xFFFF_E000);
    // Tiny ROMs still take the 2 KiB the register's address field implies.
    let mut small = rom_bus(Some(vec![1; 3]));
    wr(&mut b, &mut small, 0x18, 0x30, 4, 0xFFFF_FFFF);
    assert_eq!(rd(&mut b, &mut small, 0x18, 0x30, 4), 0xFFFF_F801);
    assert_eq!(small.function(0x18).unwrap().config().rom().unwrap().size(), 0x800);
    // Byte writes reach the register too.
    wr(&mut b, &mut small, 0x18, 0x33, 1, 0x12);
    assert_eq!(rd(&mut b, &mut small, 0x18, 0x30, 4), 0x12FF_F801);
}

#[test]
fn without_a_rom_the_rom_bar_reads_zero_and_ignores_writes() {
    let mut b = Bus::new();
    for rom in [None, Some(Vec::new())] {
        let empty = rom.is_some();
        let mut p = rom_bus(rom);
        wr(&mut b, &mut p, 0x18, 0x30, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut b, &mut p, 0x18, 0x30, 4), 0, "no ROM (empty image: {empty})");
        wr(&mut b, &mut p, 0x18, 0x04, 2, u32::from(CMD_MEM));
        assert!(rom_changes(p.take_events()).is_empty());
    }
    assert!(ExpansionRom::new(vec![0; MAX_ROM_SIZE as usize + 1]).is_none(), "too large");
}

#[test]
fn rom_decodes_only_while_enabled_with_memory_space_on() {
    let mut b = Bus::new();
    let mut image = vec![0u8; 0x1800];
    image[0] = 0x55;
    image[1] = 0xAA;
    image[0x17FF] = 0x42;
    let mut p = rom_bus(Some(image));
    // An address with the enable bit clear: not decoded, memory enable or not.
    wr(&mut b, &mut p, 0x18, 0x30, 4, 0xFEB0_0000);
    wr(&mut b, &mut p, 0x18, 0x04, 2, u32::from(CMD_MEM));
    assert!(rom_changes(p.take_events()).is_empty());
    assert_eq!(p.function(0x18).unwrap().config().rom_window(), None);
    // Enable: decoded at the address.
    wr(&mut b, &mut p, 0x18, 0x30, 4, 0xFEB0_0001);
    assert_eq!(rom_changes(p.take_events()), [(None, Some(0xFEB0_0000))]);
    let ev_size = {
        wr(&mut b, &mut p, 0x18, 0x04, 2, 0);
        let ev = p.take_events();
        let rom: Vec<_> = ev.iter().filter(|e| e.change.window == ROM_WINDOW).collect();
        assert_eq!((rom[0].change.old, rom[0].change.new), (Some(0xFEB0_0000), None), "memory space off");
        (rom[0].change.kind, rom[0].change.size)
    };
    assert_eq!(ev_size, (BarKind::Mem32, 0x2000));
    wr(&mut b, &mut p, 0x18, 0x04, 2, u32::from(CMD_MEM));
    assert_eq!(rom_changes(p.take_events()), [(None, Some(0xFEB0_0000))]);
    // The contents: the image, zeros to the end of the window, nothing beyond it.
    let cfg = p.function(0x18).unwrap().config();
    let mut d = [0u8; 4];
    cfg.rom_read(0, &mut d);
    assert_eq!(d, [0x55, 0xAA, 0, 0]);
    cfg.rom_read(0x17FE, &mut d);
    assert_eq!(d, [0, 0x42, 0, 0]);
    cfg.rom_read(0x1FFE, &mut d);
    assert_eq!(d, [0, 0, 0xFF, 0xFF]);
    cfg.rom_read(u64::MAX, &mut d);
    assert_eq!(d, [0xFF; 4]);
    // Disabling the ROM alone unmaps it; address zero is not decoded.
    wr(&mut b, &mut p, 0x18, 0x30, 1, 0);
    assert_eq!(rom_changes(p.take_events()), [(Some(0xFEB0_0000), None)]);
    wr(&mut b, &mut p, 0x18, 0x30, 4, 1);
    assert!(rom_changes(p.take_events()).is_empty(), "base 0");
    // A window running past 4 GiB cannot be, so is not decoded (the address is aligned to the size,
    // so only a ROM at the very top comes close: FFFFE000 + 8 KiB ends exactly at 4 GiB and is fine).
    wr(&mut b, &mut p, 0x18, 0x30, 4, 0xFFFF_E001);
    assert_eq!(rom_changes(p.take_events()), [(None, Some(0xFFFF_E000))]);
}

#[test]
fn rom_relocates_and_reset_unmaps_it() {
    let mut b = Bus::new();
    let mut p = rom_bus(Some(vec![0xAB; 0x800]));
    wr(&mut b, &mut p, 0x18, 0x04, 2, u32::from(CMD_MEM));
    wr(&mut b, &mut p, 0x18, 0x30, 4, 0xE000_0001);
    assert_eq!(rom_changes(p.take_events()), [(None, Some(0xE000_0000))]);
    // Low address bits below the size are read-only zeros.
    wr(&mut b, &mut p, 0x18, 0x30, 4, 0xE010_07FF);
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x30, 4), 0xE010_0001);
    assert_eq!(rom_changes(p.take_events()), [(Some(0xE000_0000), Some(0xE010_0000))]);
    // Moving the BARs leaves the ROM alone.
    wr(&mut b, &mut p, 0x18, 0x10, 4, 0xE020_0000);
    assert!(rom_changes(p.take_events()).is_empty());
    p.reset();
    assert_eq!(rom_changes(p.take_events()), [(Some(0xE010_0000), None)]);
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x30, 4), 0);
    // Taking the ROM away while it is decoded unmaps it too.
    wr(&mut b, &mut p, 0x18, 0x04, 2, u32::from(CMD_MEM));
    wr(&mut b, &mut p, 0x18, 0x30, 4, 0xE000_0001);
    p.take_events();
    let ch = p.function_mut(0x18).unwrap().config_mut().set_rom(None);
    assert_eq!(
        ch.iter().map(|c| (c.window, c.old, c.new)).collect::<Vec<_>>(),
        [(ROM_WINDOW, Some(0xE000_0000), None)]
    );
    assert_eq!(rd(&mut b, &mut p, 0x18, 0x30, 4), 0);
}

#[test]
fn rom_bar_snapshot_restores_the_mapping() {
    let mut b = Bus::new();
    let mut p = rom_bus(Some(vec![0xCD; 0x900]));
    wr(&mut b, &mut p, 0x18, 0x04, 2, u32::from(CMD_MEM));
    wr(&mut b, &mut p, 0x18, 0x30, 4, 0xE000_1001);
    p.take_events();
    let mut fresh = rom_bus(Some(vec![0xCD; 0x900]));
    roundtrip(&p, &mut fresh);
    assert_eq!(rd(&mut b, &mut fresh, 0x18, 0x30, 4), 0xE000_1001);
    assert_eq!(rom_changes(fresh.take_events()), [(None, Some(0xE000_1000))], "restore re-maps the ROM");
    // Restoring the power-on state unmaps it again.
    let off = rom_bus(Some(vec![0xCD; 0x900]));
    roundtrip(&off, &mut fresh);
    assert_eq!(rom_changes(fresh.take_events()), [(Some(0xE000_1000), None)]);
    hammer(&mut p, &[0, 4, 5, 6, 7], false, 3);
}
