//! End-to-end interrupt paths through the public API, wired the way the machine is expected to.

use chipset::{DualPic, IoApic, LocalApic, Pit8254, Rtc, Uart16550};
use vmcore::{Device, DeviceCtx, IrqLevels, MachineRequests, VirtTime};

struct Board {
    irq: IrqLevels,
    req: MachineRequests,
}

impl Board {
    fn ctx(&mut self, ns: u64) -> DeviceCtx<'_> {
        DeviceCtx { now: VirtTime(ns), irq: &mut self.irq, requests: &mut self.req }
    }
    /// What the machine does after device calls: propagate lines, then forget the edges.
    fn propagate(&mut self, pic: &mut DualPic, ioapic: &mut IoApic) {
        pic.set_irq_levels(&self.irq);
        ioapic.set_irq_levels(&self.irq);
        self.irq.rising = 0;
        self.irq.changed = 0;
    }
}

#[test]
fn pit_to_pic_to_cpu() {
    let mut b = Board { irq: IrqLevels::default(), req: MachineRequests::default() };
    let mut pit = Pit8254::new();
    let mut pic = DualPic::new();
    let mut ioapic = IoApic::new(0);
    pic.program_like_bios(0x08, 0x70);
    pic.pio_write(&mut b.ctx(0), 0x01, &[0xfe]); // unmask IRQ0 only
    // PIT channel 0, mode 2, 1000 Hz-ish.
    pit.pio_write(&mut b.ctx(0), 3, &[0x34]);
    pit.pio_write(&mut b.ctx(0), 0, &[0xa9]);
    pit.pio_write(&mut b.ctx(0), 0, &[0x04]);
    b.propagate(&mut pic, &mut ioapic);
    let mut taken = 0;
    let mut now = 0;
    for _ in 0..5 {
        now = pit.next_deadline().expect("periodic").as_nanos();
        pit.advance(&mut b.ctx(now));
        b.propagate(&mut pic, &mut ioapic);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x08);
        pic.pio_write(&mut b.ctx(now), 0x00, &[0x20]); // EOI
        taken += 1;
    }
    assert_eq!(taken, 5);
    // 5 periods of 1193 ticks.
    assert_eq!(now, VirtTime::from_ticks(1 + 5 * 1193, 1_193_182).as_nanos());
}

#[test]
fn level_interrupt_through_ioapic_and_lapic_with_eoi() {
    let mut b = Board { irq: IrqLevels::default(), req: MachineRequests::default() };
    let mut pic = DualPic::new();
    let mut ioapic = IoApic::new(0);
    let mut lapic = LocalApic::new(0, 1_000_000_000, 1_000_000_000);
    lapic.mmio_write(&mut b.ctx(0), 0xf0, &0x1ffu32.to_le_bytes());
    // RTC on GSI 8, level triggered for the sake of the test, vector 0x38.
    ioapic.mmio_write(&mut b.ctx(0), 0, &[0x20]);
    ioapic.mmio_write(&mut b.ctx(0), 0x10, &0x0000_8038u32.to_le_bytes());
    let mut rtc = Rtc::new(0);
    rtc.pio_write(&mut b.ctx(0), 0, &[0x0b]);
    rtc.pio_write(&mut b.ctx(0), 1, &[0x12]); // UIE, 24h
    let t = rtc.next_deadline().unwrap();
    rtc.advance(&mut b.ctx(t.as_nanos()));
    b.propagate(&mut pic, &mut ioapic);
    for m in ioapic.take_messages() {
        lapic.accept(m.vector, m.trigger_level);
    }
    assert_eq!(lapic.acknowledge(), 0x38);
    // The handler EOIs before reading register C: the line is still high, so the I/O APIC re-sends.
    lapic.mmio_write(&mut b.ctx(t.as_nanos()), 0xb0, &[0; 4]);
    for v in lapic.take_eois() {
        ioapic.eoi(v);
    }
    assert_eq!(ioapic.take_messages().len(), 1);
    // Reading register C lowers IRQ 8.
    rtc.pio_write(&mut b.ctx(t.as_nanos()), 0, &[0x0c]);
    let mut c = [0u8];
    rtc.pio_read(&mut b.ctx(t.as_nanos()), 1, &mut c);
    assert_eq!(c[0] & 0x90, 0x90);
    b.propagate(&mut pic, &mut ioapic);
    assert!(!b.irq.is_high(8));
}

#[test]
fn uart_irq_reaches_pic_through_extint() {
    let mut b = Board { irq: IrqLevels::default(), req: MachineRequests::default() };
    let mut pic = DualPic::new();
    let mut ioapic = IoApic::new(0);
    let mut lapic = LocalApic::new(0, 1_000_000_000, 1_000_000_000);
    lapic.mmio_write(&mut b.ctx(0), 0xf0, &0x1ffu32.to_le_bytes());
    lapic.mmio_write(&mut b.ctx(0), 0x350, &0x700u32.to_le_bytes()); // LINT0 ExtINT
    pic.program_like_bios(0x20, 0x28);
    pic.pio_write(&mut b.ctx(0), 0x01, &[0xeb]); // unmask IRQ4 and cascade
    let mut uart = Uart16550::new("uart-com1", 4, Box::new(|_| {}));
    uart.pio_write(&mut b.ctx(0), 4, &[0x08]); // OUT2
    uart.pio_write(&mut b.ctx(0), 1, &[0x01]); // RX interrupt
    uart.host_input(&mut b.ctx(0), b"k");
    b.propagate(&mut pic, &mut ioapic);
    lapic.set_lint(0, pic.has_interrupt());
    assert!(lapic.extint_pending());
    assert_eq!(pic.acknowledge(), 0x24);
    let mut d = [0u8];
    uart.pio_read(&mut b.ctx(0), 0, &mut d);
    assert_eq!(d[0], b'k');
    b.propagate(&mut pic, &mut ioapic);
    pic.pio_write(&mut b.ctx(0), 0x00, &[0x20]);
    lapic.set_lint(0, pic.has_interrupt());
    assert!(!lapic.extint_pending());
}
