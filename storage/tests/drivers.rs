//! The register sequences Linux's drivers use to find and drive disks (ata_piix through libata-sff's
//! device check, soft reset and classification; ahci through libahci's controller reset, port start,
//! COMRESET and classification), run against the controllers with a fake guest memory and virtual
//! clock, as the board will drive them.

use chipset::pci::PciFunction;
use storage::ahci::{Ahci, hba, port};
use storage::ata::{cmd, status};
use storage::dma::{DmaMemory, TestMemory};
use storage::ide::{BM_INT, BM_START, BM_WRITE_MEM, BUS_MASTER, CONTROL, IdeController, PRIMARY, SECONDARY};
use storage::{Drive, MemBackend};
use vmcore::{Device, DeviceCtx, IrqLevels, MachineRequests, VirtTime};

fn disk(sectors: usize) -> Drive {
    let mut v = vec![0u8; sectors * 512];
    for (i, s) in v.chunks_mut(512).enumerate() {
        s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    Drive::disk(Box::new(MemBackend::from_bytes(v, false)), "LNX")
}

fn cdrom() -> Drive {
    Drive::cdrom(Some(Box::new(MemBackend::from_bytes(vec![0u8; 2048 * 32], true))), "LNXCD")
}

struct Pc {
    ide: IdeController,
    mem: TestMemory,
    irq: IrqLevels,
    req: MachineRequests,
    now: u64,
}

impl Pc {
    fn io(&mut self, port: u16, data: &mut [u8], write: bool) {
        let mut ctx = DeviceCtx { now: VirtTime(self.now), irq: &mut self.irq, requests: &mut self.req };
        if write {
            self.ide.pio_write(&mut ctx, port, data);
        } else {
            self.ide.pio_read(&mut ctx, port, data);
        }
        // The board: run waiting bus-master transfers after the access.
        if self.ide.dma_pending() {
            self.ide.run_dma(&mut self.mem);
        }
        self.now += 100; // time passes between accesses, as instructions retire
    }
    fn inb(&mut self, port: u16) -> u8 {
        let mut b = [0u8];
        self.io(port, &mut b, false);
        b[0]
    }
    fn inw(&mut self, port: u16) -> u16 {
        let mut b = [0u8; 2];
        self.io(port, &mut b, false);
        u16::from_le_bytes(b)
    }
    fn outb(&mut self, port: u16, v: u8) {
        self.io(port, &mut [v], true);
    }
    fn outl(&mut self, port: u16, v: u32) {
        self.io(port, &mut v.to_le_bytes(), true);
    }
    /// Polls alternate status until BSY clears, advancing the clock to the device's deadlines.
    fn wait_not_busy(&mut self, base: u16) -> u8 {
        for _ in 0..1000 {
            let st = self.inb(base + CONTROL);
            if st & status::BSY == 0 {
                return st;
            }
            if let Some(t) = self.ide.next_deadline() {
                self.now = self.now.max(t.0);
                let mut ctx =
                    DeviceCtx { now: VirtTime(self.now), irq: &mut self.irq, requests: &mut self.req };
                self.ide.advance(&mut ctx);
            }
        }
        panic!("device stays busy");
    }
    fn wait_irq(&mut self, line: u32) {
        for _ in 0..1000 {
            if self.irq.is_high(line) {
                return;
            }
            let Some(t) = self.ide.next_deadline() else { panic!("no interrupt and nothing pending") };
            self.now = self.now.max(t.0);
            let mut ctx = DeviceCtx { now: VirtTime(self.now), irq: &mut self.irq, requests: &mut self.req };
            self.ide.advance(&mut ctx);
        }
        panic!("no interrupt");
    }
}

/// libata-sff `ata_devchk`.
fn devchk(pc: &mut Pc, base: u16, dev: u8) -> bool {
    pc.outb(base + 6, 0xA0 | dev << 4);
    for (n, l) in [(0x55, 0xAA), (0xAA, 0x55), (0x55, 0xAA)] {
        pc.outb(base + 2, n);
        pc.outb(base + 3, l);
    }
    pc.inb(base + 2) == 0x55 && pc.inb(base + 3) == 0xAA
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    Ata,
    Atapi,
    None,
}

/// libata-sff `ata_sff_dev_classify` after a reset.
fn classify(pc: &mut Pc, base: u16, dev: u8) -> Class {
    pc.outb(base + 6, 0xA0 | dev << 4);
    let err = pc.inb(base + 1);
    if !(err == 1 || (dev == 0 && err == 0x81)) {
        return Class::None;
    }
    let (n, l, m, h) = (pc.inb(base + 2), pc.inb(base + 3), pc.inb(base + 4), pc.inb(base + 5));
    let st = pc.inb(base + 7);
    match (n, l, m, h) {
        (_, _, 0x14, 0xEB) => Class::Atapi,
        (_, _, 0, 0) if st != 0 => Class::Ata,
        _ => Class::None,
    }
}

#[test]
fn ata_piix_probe_identify_and_dma() {
    let mut ide = IdeController::new();
    ide.attach(0, 0, disk(4096));
    ide.attach(1, 0, cdrom());
    let mut pc =
        Pc { ide, mem: TestMemory::new(1 << 20), irq: IrqLevels::default(), req: Default::default(), now: 0 };
    let (p, s) = (PRIMARY, SECONDARY);
    assert!(devchk(&mut pc, p, 0));
    assert!(devchk(&mut pc, s, 0));
    for base in [p, s] {
        pc.outb(base + CONTROL, 0x02); // nIEN
        pc.outb(base + CONTROL, 0x06); // nIEN | SRST
        pc.outb(base + CONTROL, 0x02);
        pc.wait_not_busy(base);
    }
    assert_eq!(classify(&mut pc, p, 0), Class::Ata);
    assert_eq!(classify(&mut pc, p, 1), Class::None, "no slave on the primary channel");
    assert_eq!(classify(&mut pc, s, 0), Class::Atapi);
    assert_eq!(classify(&mut pc, s, 1), Class::None);

    // IDENTIFY with interrupts on.
    pc.outb(p + CONTROL, 0);
    pc.outb(p + 6, 0xA0);
    pc.outb(p + 7, cmd::IDENTIFY);
    pc.wait_irq(14);
    assert_eq!(pc.inb(p + 7) & (status::BSY | status::DRQ), status::DRQ);
    let id: Vec<u16> = (0..256).map(|_| pc.inw(p)).collect();
    assert_eq!(u32::from(id[60]) | u32::from(id[61]) << 16, 4096);
    assert!(!pc.irq.is_high(14));
    // SET FEATURES: UDMA 5.
    pc.outb(p + 1, 0x03);
    pc.outb(p + 2, 0x45);
    pc.outb(p + 7, cmd::SET_FEATURES);
    pc.wait_irq(14);
    assert_eq!(pc.inb(p + 7) & status::ERR, 0);
    // READ DMA of 16 sectors at LBA 100 into two PRD entries.
    pc.mem.put_u32(0x8000, 0x10000);
    pc.mem.put_u32(0x8004, 4096);
    pc.mem.put_u32(0x8008, 0x20000);
    pc.mem.put_u32(0x800C, 4096 | 0x8000_0000);
    pc.outl(BUS_MASTER + 4, 0x8000);
    pc.outb(BUS_MASTER + 2, 0x06); // clear INT and ERR
    pc.outb(p + 2, 16);
    pc.outb(p + 3, 100);
    pc.outb(p + 4, 0);
    pc.outb(p + 5, 0);
    pc.outb(p + 6, 0xE0);
    pc.outb(p + 7, cmd::READ_DMA);
    pc.outb(BUS_MASTER, BM_START | BM_WRITE_MEM);
    pc.wait_irq(14);
    let bm = pc.inb(BUS_MASTER + 2);
    assert_eq!(bm & BM_INT, BM_INT, "ata_bmdma_port_intr checks the bus master's interrupt bit");
    pc.outb(BUS_MASTER, 0); // ata_bmdma_stop
    assert_eq!(pc.inb(p + 7) & (status::ERR | status::DRQ | status::BSY), 0);
    pc.outb(BUS_MASTER + 2, bm);
    let mut b = [0u8; 8];
    assert!(pc.mem.read(0x10000, &mut b));
    assert_eq!(u64::from_le_bytes(b), 100);
    assert!(pc.mem.read(0x20000 + 3584, &mut b));
    assert_eq!(u64::from_le_bytes(b), 115);
}

struct Host {
    hba: Ahci,
    mem: TestMemory,
    irq: IrqLevels,
    req: MachineRequests,
    now: u64,
}

impl Host {
    fn rd(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        let mut ctx = DeviceCtx { now: VirtTime(self.now), irq: &mut self.irq, requests: &mut self.req };
        self.hba.bar_read(&mut ctx, 5, off, &mut b);
        self.now += 100;
        u32::from_le_bytes(b)
    }
    fn wr(&mut self, off: u64, v: u32) {
        let mut ctx = DeviceCtx { now: VirtTime(self.now), irq: &mut self.irq, requests: &mut self.req };
        self.hba.bar_write(&mut ctx, 5, off, &v.to_le_bytes());
        if self.hba.dma_pending() {
            self.hba.run_dma(&mut self.mem);
        }
        self.now += 100;
    }
    /// Polls `off` until `f` holds, letting virtual time reach the controller's deadlines.
    fn poll(&mut self, off: u64, f: impl Fn(u32) -> bool) -> u32 {
        for _ in 0..1000 {
            let v = self.rd(off);
            if f(v) {
                return v;
            }
            if let Some(t) = self.hba.next_deadline() {
                self.now = self.now.max(t.0);
                self.hba.advance(VirtTime(self.now));
            }
        }
        panic!("register {off:#x} never reached the state");
    }
}

#[test]
fn libahci_init_reset_classify_and_ncq() {
    let mut hba = Ahci::new(vec![Some(disk(8192)), None, Some(cdrom())]);
    hba.config_write(0x04, &[0x06, 0x00]);
    let mut h = Host {
        hba,
        mem: TestMemory::new(4 << 20),
        irq: IrqLevels::default(),
        req: Default::default(),
        now: 0,
    };
    // ahci_reset_controller.
    let ghc = h.rd(hba::GHC);
    h.wr(hba::GHC, ghc | hba::GHC_AE);
    h.wr(hba::GHC, ghc | hba::GHC_AE | hba::GHC_HR);
    h.poll(hba::GHC, |v| v & hba::GHC_HR == 0);
    let cap = h.rd(hba::CAP);
    let pi = h.rd(hba::PI);
    assert_eq!(pi, 0x3F);
    assert_ne!(cap & (1 << 30), 0);
    let mut classes = Vec::new();
    for n in 0..6u64 {
        let pb = 0x100 + 0x80 * n;
        // ahci_port_init: stop engine and FIS receive, clear SERR and IS.
        let c = h.rd(pb + port::CMD);
        h.wr(pb + port::CMD, c & !port::CMD_ST);
        h.poll(pb + port::CMD, |v| v & port::CMD_CR == 0);
        h.wr(pb + port::CMD, c & !(port::CMD_ST | port::CMD_FRE));
        h.poll(pb + port::CMD, |v| v & port::CMD_FR == 0);
        h.wr(pb + port::SERR, !0);
        h.wr(pb + port::IS, !0);
        h.wr(hba::IS, 1 << n);
        // ahci_port_start: command list and FIS area, FIS receive on, spin up.
        h.wr(pb + port::CLB, (0x100000 + 0x1000 * n) as u32);
        h.wr(pb + port::CLBU, 0);
        h.wr(pb + port::FB, (0x200000 + 0x100 * n) as u32);
        h.wr(pb + port::FBU, 0);
        h.wr(pb + port::CMD, port::CMD_FRE | port::CMD_SUD | port::CMD_POD);
        // ahci_do_hardreset: engine off, D2H area marked busy, COMRESET, engine on, wait ready.
        h.mem.write(0x200000 + 0x100 * n + 0x40 + 2, &[0x80]);
        h.wr(pb + port::SCTL, 0x301);
        h.now += 1_000_000;
        h.wr(pb + port::SCTL, 0x300);
        let ssts = h.rd(pb + port::SSTS);
        if ssts & 0xF != 3 {
            classes.push(None);
            continue;
        }
        h.wr(pb + port::CMD, port::CMD_FRE | port::CMD_SUD | port::CMD_POD | port::CMD_ST);
        h.poll(pb + port::TFD, |v| v & 0x88 == 0);
        classes.push(Some(h.rd(pb + port::SIG)));
        h.wr(pb + port::SERR, !0);
        h.wr(pb + port::IS, !0);
        h.wr(pb + port::IE, 0x7DC0_007F);
    }
    assert_eq!(classes, vec![Some(0x101), None, Some(0xEB14_0101), None, None, None]);
    h.wr(hba::IS, !0);
    h.wr(hba::GHC, hba::GHC_AE | hba::GHC_IE);
    assert!(!h.hba.intx());

    // IDENTIFY (PIO data-in) in slot 0 of port 0.
    let ct = 0x300000u64;
    let hdr = 0x100000u64;
    let fis = [0x27u8, 0x80, cmd::IDENTIFY, 0, 0, 0, 0, 0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    h.mem.write(ct, &fis);
    h.mem.put_u32(ct + 0x80, 0x50000);
    h.mem.put_u32(ct + 0x8C, 511);
    h.mem.put_u32(hdr, 5 | 1 << 16);
    h.mem.put_u32(hdr + 8, ct as u32);
    h.wr(0x100 + port::CI, 1);
    h.poll(0x100 + port::CI, |v| v == 0);
    assert!(h.hba.intx());
    let is = h.rd(0x100 + port::IS);
    assert_eq!(is & (port::IS_DHRS | port::IS_PSS), port::IS_DHRS | port::IS_PSS);
    h.wr(0x100 + port::IS, is);
    h.wr(hba::IS, 1);
    assert!(!h.hba.intx());
    let mut w = [0u8; 4];
    assert!(h.mem.read(0x50000 + 2 * 100, &mut w));
    assert_eq!(u32::from_le_bytes(w), 8192, "LBA48 capacity");
    assert!(h.mem.read(0x50000 + 2 * 76, &mut w));
    assert_ne!(u16::from_le_bytes([w[0], w[1]]) & (1 << 8), 0, "NCQ advertised");

    // Eight queued reads in slots 0-7 (tag = slot), issued at once as libata does.
    for t in 0..8u64 {
        let ct = 0x300000 + 0x1000 * t;
        let lba = 1000 + 16 * t;
        let fis = [
            0x27u8,
            0x80,
            0x60,
            16,
            lba as u8,
            (lba >> 8) as u8,
            0,
            0x40,
            0,
            0,
            0,
            0,
            (t as u8) << 3,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        h.mem.write(ct, &fis);
        h.mem.put_u32(ct + 0x80, (0x400000 - 0x80000 + 0x2000 * t) as u32);
        h.mem.put_u32(ct + 0x8C, 8191);
        h.mem.put_u32(hdr + 32 * t, 5 | 1 << 16);
        h.mem.put_u32(hdr + 32 * t + 8, ct as u32);
    }
    h.wr(0x100 + port::SACT, 0xFF);
    h.wr(0x100 + port::CI, 0xFF);
    let mut seen = 0u32;
    while seen != 0xFF {
        h.poll(0x100 + port::IS, |v| v & port::IS_SDBS != 0);
        let is = h.rd(0x100 + port::IS);
        h.wr(0x100 + port::IS, is);
        let active = h.rd(0x100 + port::SACT) | h.rd(0x100 + port::CI);
        seen |= !active & 0xFF;
        h.wr(hba::IS, 1);
    }
    for t in 0..8u64 {
        let mut b = [0u8; 8];
        assert!(h.mem.read(0x400000 - 0x80000 + 0x2000 * t + 512 * 15, &mut b));
        assert_eq!(u64::from_le_bytes(b), 1000 + 16 * t + 15);
    }
}
