//! MSI and INTx from a PCI device (QEMU's `edu`) through the board to the local APIC, driven through the
//! CPU's view of the board (ports and physical memory).

use cpu::CpuBus;
use machine::{EDU_DEVFN, Machine, MachineConfig};

const BAR: u64 = 0xFEB0_0000;

fn machine() -> Machine {
    let mut cfg = MachineConfig::new(32 << 20, vec![0xF4; 0x1_0000]);
    cfg.devices.push(machine::DeviceSpec::named("edu").unwrap());
    Machine::new(cfg).expect("machine")
}

fn cfg_rd(b: &mut dyn CpuBus, reg: u8) -> u32 {
    b.io_out(0xCF8, 4, 0x8000_0000 | (u32::from(EDU_DEVFN) << 8) | u32::from(reg & 0xFC));
    b.io_in(0xCFC, 4)
}

fn cfg_wr(b: &mut dyn CpuBus, reg: u8, size: u8, v: u32) {
    b.io_out(0xCF8, 4, 0x8000_0000 | (u32::from(EDU_DEVFN) << 8) | u32::from(reg & 0xFC));
    b.io_out(0xCFC + u16::from(reg & 3), size, v);
}

fn rd32(b: &mut dyn CpuBus, off: u64) -> u32 {
    let mut d = [0u8; 4];
    b.read_phys(BAR + off, &mut d);
    u32::from_le_bytes(d)
}

fn wr32(b: &mut dyn CpuBus, off: u64, v: u32) {
    b.write_phys(BAR + off, &v.to_le_bytes());
}

fn wr64(b: &mut dyn CpuBus, off: u64, v: u64) {
    b.write_phys(BAR + off, &v.to_le_bytes());
}

/// Finds the MSI capability by walking the list.
fn msi_cap(b: &mut dyn CpuBus) -> u8 {
    let mut p = cfg_rd(b, 0x34) as u8;
    while p != 0 {
        let h = cfg_rd(b, p);
        if h as u8 == 5 {
            return p;
        }
        p = (h >> 8) as u8;
    }
    panic!("no MSI capability");
}

/// BAR0 at [`BAR`], memory and bus-master decode on.
fn setup(m: &mut Machine) {
    let b = &mut m.board;
    assert_eq!(cfg_rd(b, 0), 0x11E8_1234);
    cfg_wr(b, 0x10, 4, BAR as u32);
    cfg_wr(b, 0x04, 2, 0x0006);
    assert_eq!(rd32(b, 0), 0x0100_00ED);
}

#[test]
fn edu_is_absent_without_the_option() {
    let mut m = Machine::new(MachineConfig::new(32 << 20, vec![0xF4; 0x1_0000])).unwrap();
    assert_eq!(cfg_rd(&mut m.board, 0), 0xFFFF_FFFF);
}

#[test]
fn intx_reaches_pirq_b_and_honours_interrupt_disable() {
    let mut m = machine();
    setup(&mut m);
    let b = &mut m.board;
    assert_eq!(cfg_rd(b, 0x3C) >> 8 & 0xFF, 1, "INTA#");
    wr32(b, 0x60, 0x5);
    assert!(b.irqchip.lines.is_high(17), "slot 2 INTA# = PIRQB = GSI 17");
    cfg_wr(b, 0x04, 2, 0x0406);
    assert!(!b.irqchip.lines.is_high(17), "interrupt disable");
    assert_eq!(cfg_rd(b, 0x04) >> 16 & 0x8, 0x8, "status: interrupt pending");
    cfg_wr(b, 0x04, 2, 0x0006);
    assert!(b.irqchip.lines.is_high(17));
    wr32(b, 0x64, 0x5);
    assert!(!b.irqchip.lines.is_high(17), "acknowledged");
    assert_eq!(b.msi_delivered(), 0);
}

#[test]
fn msi_to_the_local_apic_by_destination_and_mode() {
    let mut m = machine();
    setup(&mut m);
    let b = &mut m.board;
    let cap = msi_cap(b);
    assert_eq!(cfg_rd(b, cap) >> 16 & 0x80, 0x80, "64-bit address capable");
    cfg_wr(b, cap + 4, 4, 0xFEE0_0000); // destination 0 = our APIC ID, physical
    cfg_wr(b, cap + 8, 4, 0);
    cfg_wr(b, cap + 12, 2, 0x0061);
    cfg_wr(b, cap + 2, 2, 1);
    wr32(b, 0x60, 0x1);
    assert!(!b.irqchip.lines.is_high(17), "no INTx with MSI on");
    assert_eq!(b.msi_delivered(), 1);
    assert_eq!(b.irqchip.lapic.has_interrupt(), Some(0x61));
    assert!(b.interrupt_pending());
    assert_eq!(b.acknowledge_interrupt(), Some(0x61));
    b.write_phys(0xFEE0_00B0, &0u32.to_le_bytes()); // EOI
    wr32(b, 0x64, 0x1);
    // Another destination ID: dropped.
    cfg_wr(b, cap + 4, 4, 0xFEE0_3000);
    wr32(b, 0x60, 0x1);
    wr32(b, 0x64, 0x1);
    assert_eq!(b.msi_delivered(), 1);
    assert_eq!(b.irqchip.lapic.has_interrupt(), None);
    // Logical broadcast 0xFF, with the redirection hint.
    cfg_wr(b, cap + 4, 4, 0xFEEF_F00C);
    cfg_wr(b, cap + 12, 2, 0x0072);
    wr32(b, 0x60, 0x1);
    wr32(b, 0x64, 0x1);
    assert_eq!(b.irqchip.lapic.has_interrupt(), Some(0x72));
    assert_eq!(b.acknowledge_interrupt(), Some(0x72));
    // NMI delivery mode.
    cfg_wr(b, cap + 4, 4, 0xFEE0_0000);
    cfg_wr(b, cap + 12, 2, 0x0400);
    wr32(b, 0x60, 0x1);
    wr32(b, 0x64, 0x1);
    assert!(b.nmi_pending());
    b.take_nmi();
    // SMI and INIT are dropped.
    let before = b.msi_delivered();
    for data in [0x0200, 0x0500, 0x0700] {
        cfg_wr(b, cap + 12, 2, data);
        wr32(b, 0x60, 0x1);
        wr32(b, 0x64, 0x1);
    }
    assert_eq!(b.msi_delivered(), before);
    assert!(!b.nmi_pending());
    // A message address outside the window is an ordinary memory write.
    cfg_wr(b, cap + 4, 4, 0x8000);
    cfg_wr(b, cap + 12, 2, 0xBEEF);
    wr32(b, 0x60, 0x1);
    let mut d = [0u8; 4];
    b.read_phys(0x8000, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0xBEEF);
    // Bus mastering off: no message at all.
    wr32(b, 0x64, 0x1);
    b.write_phys(0x8000, &[0; 4]);
    cfg_wr(b, 0x04, 2, 0x0002);
    wr32(b, 0x60, 0x1);
    b.read_phys(0x8000, &mut d);
    assert_eq!(d, [0; 4]);
}

#[test]
fn dma_round_trip_through_guest_ram_with_a_completion_msi() {
    let mut m = machine();
    setup(&mut m);
    let b = &mut m.board;
    let cap = msi_cap(b);
    cfg_wr(b, cap + 4, 4, 0xFEE0_0000);
    cfg_wr(b, cap + 12, 2, 0x0065);
    cfg_wr(b, cap + 2, 2, 1);
    let pattern: Vec<u8> = (0..200u32).map(|i| (i * 13 + 1) as u8).collect();
    for (i, c) in pattern.chunks(8).enumerate() {
        b.write_phys(0x10_0000 + 8 * i as u64, c);
    }
    wr64(b, 0x80, 0x10_0000);
    wr64(b, 0x88, 0x40000);
    wr64(b, 0x90, 200);
    wr64(b, 0x98, 1 | 4);
    assert_eq!(rd32(b, 0x98) & 1, 0, "done before the next instruction");
    assert_eq!(rd32(b, 0x24), 0x100);
    assert_eq!(b.irqchip.lapic.has_interrupt(), Some(0x65));
    wr32(b, 0x64, 0x100);
    wr64(b, 0x80, 0x40000);
    wr64(b, 0x88, 0x20_0000);
    wr64(b, 0x98, 1 | 2);
    let mut back = vec![0u8; 200];
    for (i, c) in back.chunks_mut(8).enumerate() {
        b.read_phys(0x20_0000 + 8 * i as u64, c);
    }
    assert_eq!(back, pattern);
}

/// A bus-master transfer reports the guest-physical range it wrote (and only writes report one), so
/// that the machine drops decoded code on those pages alone; an MSI aimed at RAM is a write like any.
#[test]
fn edu_dma_reports_the_range_it_wrote() {
    let mut m = machine();
    setup(&mut m);
    let b = &mut m.board;
    b.requests = Default::default();
    wr64(b, 0x80, 0x10_0F80);
    wr64(b, 0x88, 0x40000);
    wr64(b, 0x90, 0x100);
    wr64(b, 0x98, 1);
    assert!(b.requests.dma_written.is_empty(), "RAM to device writes no guest memory");
    wr64(b, 0x80, 0x40000);
    wr64(b, 0x88, 0x20_0F80);
    wr64(b, 0x98, 1 | 2);
    assert_eq!(b.requests.dma_written, vec![0x20_0F80..0x20_1080], "device to RAM, across a page boundary");
    assert!(b.stop_requested(), "the engine stops to drop code on those pages");
    b.requests = Default::default();
    let cap = msi_cap(b);
    cfg_wr(b, cap + 4, 4, 0x7000);
    cfg_wr(b, cap + 12, 2, 0x1234);
    cfg_wr(b, cap + 2, 2, 1);
    wr32(b, 0x60, 1);
    assert_eq!(b.requests.dma_written, vec![0x7000..0x7004], "an MSI into RAM is a dword write");
}
