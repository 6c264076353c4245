use super::*;
use crate::ata::{cmd, latency_ns};
use crate::backend::MemBackend;
use crate::dma::TestMemory;
use vmcore::MachineRequests;

// Primary channel registers; secondary ones are `S + reg`.
const DATA: u16 = PRIMARY;
const ERR: u16 = PRIMARY + 1;
const COUNT: u16 = PRIMARY + 2;
const LBAL: u16 = PRIMARY + 3;
const LBAM: u16 = PRIMARY + 4;
const LBAH: u16 = PRIMARY + 5;
const DEV: u16 = PRIMARY + 6;
const CMD: u16 = PRIMARY + 7;
const CTL: u16 = PRIMARY + CONTROL;
const S: u16 = SECONDARY - PRIMARY;
const BM: u16 = BUS_MASTER;

struct Bench {
    ide: IdeController,
    irq: IrqLevels,
    req: MachineRequests,
    now: u64,
    mem: TestMemory,
}

fn disk_image(sectors: usize) -> Vec<u8> {
    let mut v = vec![0u8; sectors * 512];
    for (i, s) in v.chunks_mut(512).enumerate() {
        s[..4].copy_from_slice(&(i as u32).to_le_bytes());
        s[4] = 0xD5;
    }
    v
}

fn iso_image(blocks: usize) -> Vec<u8> {
    let mut v = vec![0u8; blocks * 2048];
    for (i, s) in v.chunks_mut(2048).enumerate() {
        s[..4].copy_from_slice(&(i as u32).to_le_bytes());
        s[2047] = 0xCD;
    }
    v
}

impl Bench {
    fn new() -> Bench {
        let mut ide = IdeController::new();
        ide.attach(0, 0, Drive::disk(Box::new(MemBackend::from_bytes(disk_image(1000), false)), "D0"));
        ide.attach(1, 0, Drive::cdrom(Some(Box::new(MemBackend::from_bytes(iso_image(50), true))), "CD0"));
        Bench {
            ide,
            irq: IrqLevels::default(),
            req: MachineRequests::default(),
            now: 0,
            mem: TestMemory::new(1 << 20),
        }
    }

    fn ctx(&mut self) -> DeviceCtx<'_> {
        DeviceCtx { now: VirtTime(self.now), irq: &mut self.irq, requests: &mut self.req }
    }

    fn inb(&mut self, off: u16) -> u8 {
        let mut b = [0u8];
        let mut ide = std::mem::take(&mut self.ide);
        ide.pio_read(&mut self.ctx(), off, &mut b);
        self.ide = ide;
        b[0]
    }

    fn inw(&mut self, off: u16) -> u16 {
        let mut b = [0u8; 2];
        let mut ide = std::mem::take(&mut self.ide);
        ide.pio_read(&mut self.ctx(), off, &mut b);
        self.ide = ide;
        u16::from_le_bytes(b)
    }

    fn out(&mut self, off: u16, data: &[u8]) {
        let mut ide = std::mem::take(&mut self.ide);
        ide.pio_write(&mut self.ctx(), off, data);
        self.ide = ide;
    }

    fn outb(&mut self, off: u16, v: u8) {
        self.out(off, &[v]);
    }

    /// Runs waiting DMA and every due event until the controller is quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if self.ide.dma_pending() {
                self.ide.run_dma(&mut self.mem);
            }
            match self.ide.next_deadline() {
                Some(t) => {
                    self.now = self.now.max(t.0);
                    let mut ide = std::mem::take(&mut self.ide);
                    ide.advance(&mut self.ctx());
                    self.ide = ide;
                }
                None => return,
            }
        }
        panic!("controller never settles");
    }

    fn irq(&self, line: u32) -> bool {
        self.irq.is_high(line)
    }

    fn lba28(&mut self, base: u16, lba: u32, count: u8, op: u8) {
        self.outb(base + COUNT, count);
        self.outb(base + LBAL, lba as u8);
        self.outb(base + LBAM, (lba >> 8) as u8);
        self.outb(base + LBAH, (lba >> 16) as u8);
        self.outb(base + DEV, 0xE0 | (lba >> 24) as u8 & 0xF);
        self.outb(base + CMD, op);
    }

    fn read_block(&mut self, base: u16, bytes: usize) -> Vec<u8> {
        (0..bytes / 2).flat_map(|_| self.inw(base + DATA).to_le_bytes()).collect()
    }

    fn prd(&mut self, table: u64, entries: &[(u32, u16, bool)]) {
        for (i, &(addr, count, eot)) in entries.iter().enumerate() {
            let a = table + 8 * i as u64;
            self.mem.put_u32(a, addr);
            self.mem.put_u32(a + 4, u32::from(count) | if eot { 0x8000_0000 } else { 0 });
        }
    }
}

#[test]
fn signatures_absent_devices_and_empty_channel() {
    let mut b = Bench::new();
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    assert_eq!([b.inb(COUNT), b.inb(LBAL), b.inb(LBAM), b.inb(LBAH)], [1, 1, 0, 0]);
    assert_eq!(b.inb(ERR), 0x01, "diagnostic passed");
    b.outb(DEV, 0xB0); // slave: absent
    assert_eq!(b.inb(CMD), 0, "absent device beside a present one reads 0");
    b.outb(CMD, cmd::IDENTIFY);
    b.settle();
    assert!(!b.irq(14), "commands to an absent device are ignored");
    let s = S;
    assert_eq!(b.inb(s + CMD), 0, "ATAPI devices post status 0 after reset");
    assert_eq!([b.inb(s + LBAM), b.inb(s + LBAH)], [0x14, 0xEB]);
    let mut empty = IdeController::new();
    let mut irq = IrqLevels::default();
    let mut req = MachineRequests::default();
    let mut v = [0u8];
    empty.pio_read(&mut DeviceCtx { now: VirtTime(0), irq: &mut irq, requests: &mut req }, CMD, &mut v);
    assert_eq!(v[0], 0xFF, "no drives: floating bus");
}

#[test]
fn identify_pio_timing_and_interrupt() {
    let mut b = Bench::new();
    b.now = 1000;
    b.outb(CMD, cmd::IDENTIFY);
    assert_eq!(b.inb(CTL), status::BSY);
    assert_eq!(b.ide.next_deadline(), Some(VirtTime(1000 + latency_ns(512))), "deadline from the request");
    b.now += latency_ns(512) - 1;
    assert_eq!(b.inb(CTL), status::BSY, "not before the deadline");
    b.settle();
    assert!(b.irq(14));
    assert_eq!(b.inb(CTL) & status::DRQ, status::DRQ);
    assert!(b.irq(14), "alternate status leaves the interrupt");
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC | status::DRQ);
    assert!(!b.irq(14), "status read clears it");
    let id = b.read_block(0, 512);
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x0040);
    assert_eq!(u32::from_le_bytes(id[120..124].try_into().unwrap()), 1000, "LBA28 capacity");
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC, "DRQ ends with the block");
    assert_eq!(b.inw(DATA), 0xFFFF, "data port without DRQ");
}

#[test]
fn pio_read_sectors_interrupts_per_block() {
    let mut b = Bench::new();
    b.lba28(0, 998, 2, cmd::READ_SECTORS);
    for lba in [998u32, 999] {
        b.settle();
        assert!(b.irq(14));
        assert_eq!(b.inb(CMD) & (status::DRQ | status::BSY), status::DRQ);
        let s = b.read_block(0, 512);
        assert_eq!(u32::from_le_bytes(s[..4].try_into().unwrap()), lba);
    }
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    // Past the end: IDNF | ABRT with an interrupt.
    b.lba28(0, 999, 2, cmd::READ_SECTORS);
    b.settle();
    assert!(b.irq(14));
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC | status::ERR);
    assert_eq!(b.inb(ERR), error::IDNF | error::ABRT);
}

#[test]
fn lba48_registers_and_hob() {
    let mut b = Bench::new();
    // Previous bytes first, as a host writes them.
    for (reg, hi, lo) in [(COUNT, 0, 3), (LBAL, 0, 0x10), (LBAM, 0, 0), (LBAH, 0, 0)] {
        b.outb(reg, hi);
        b.outb(reg, lo);
    }
    b.outb(LBAL, 0x22);
    assert_eq!(b.inb(LBAL), 0x22);
    b.outb(CTL, HOB);
    assert_eq!(b.inb(LBAL), 0x10, "HOB reads the previous byte");
    b.outb(CTL, 0);
    b.outb(LBAL, 0);
    b.outb(LBAL, 0x10);
    b.outb(DEV, 0x40);
    b.outb(CMD, cmd::READ_SECTORS_EXT);
    let mut got = vec![];
    for _ in 0..3 {
        b.settle();
        b.inb(CMD);
        let s = b.read_block(0, 512);
        got.push(u32::from_le_bytes(s[..4].try_into().unwrap()));
    }
    assert_eq!(got, vec![0x10, 0x11, 0x12]);
    b.outb(COUNT, 0);
    b.outb(COUNT, 1);
    b.outb(LBAH, 1); // previous LBA high = 0 ... LBA = 0x01_00_00_10 beyond the disk
    b.outb(LBAH, 0);
    b.outb(LBAL, 0);
    b.outb(LBAL, 0);
    b.outb(DEV, 0x40);
    b.outb(CMD, cmd::READ_DMA_EXT);
    b.settle();
    assert_eq!(b.inb(ERR), error::IDNF | error::ABRT);
}

#[test]
fn pio_write_and_multiple() {
    let mut b = Bench::new();
    b.lba28(0, 5, 2, cmd::WRITE_SECTORS);
    assert_eq!(b.inb(CTL), status::DRDY | status::DSC | status::DRQ, "first block requested at once");
    assert!(!b.irq(14), "without an interrupt");
    b.out(DATA, &[0x11; 2]); // one word
    for _ in 1..256 {
        b.out(DATA, &[0x11, 0x11]);
    }
    assert_eq!(b.inb(CTL), status::BSY);
    b.settle();
    assert!(b.irq(14));
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC | status::DRQ);
    for _ in 0..128 {
        b.out(DATA, &[0x22, 0x22, 0x22, 0x22]); // 32-bit accesses
    }
    b.settle();
    assert!(b.irq(14));
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    let mut s = [0u8; 1024];
    b.ide.drive_mut(0, 0).unwrap().read_sectors(5, &mut s).unwrap();
    assert!(s[..512].iter().all(|&x| x == 0x11) && s[512..].iter().all(|&x| x == 0x22));

    // WRITE MULTIPLE without SET MULTIPLE aborts; then blocks of 4: 10 sectors = 3 interrupts.
    b.lba28(0, 0, 10, cmd::WRITE_MULTIPLE);
    b.settle();
    assert_eq!(b.inb(ERR), error::ABRT);
    b.outb(COUNT, 4);
    b.outb(CMD, cmd::SET_MULTIPLE);
    b.settle();
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    b.lba28(0, 100, 10, cmd::WRITE_MULTIPLE);
    let mut irqs = 0;
    for block in [4usize, 4, 2] {
        assert_eq!(b.inb(CTL) & status::DRQ, status::DRQ);
        for _ in 0..block * 256 {
            b.out(DATA, &[0x33, 0x33]);
        }
        b.settle();
        if b.irq(14) {
            irqs += 1;
        }
        b.inb(CMD);
    }
    assert_eq!(irqs, 3);
    b.lba28(0, 100, 10, cmd::READ_MULTIPLE);
    let mut irqs = 0;
    for block in [4usize, 4, 2] {
        b.settle();
        irqs += usize::from(b.irq(14));
        b.inb(CMD);
        let d = b.read_block(0, block * 512);
        assert!(d.iter().all(|&x| x == 0x33));
    }
    assert_eq!(irqs, 3);
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
}

#[test]
fn nien_and_srst() {
    let mut b = Bench::new();
    b.outb(CTL, NIEN);
    b.outb(CMD, cmd::IDENTIFY);
    b.settle();
    assert!(!b.irq(14), "nIEN masks INTRQ");
    assert_eq!(b.inb(CTL) & status::DRQ, status::DRQ);
    b.outb(CTL, 0);
    assert!(b.irq(14), "the pending interrupt shows once enabled");
    b.outb(COUNT, 4);
    b.outb(CMD, cmd::SET_MULTIPLE);
    b.settle();
    b.outb(CTL, SRST);
    assert_eq!(b.inb(CTL), status::BSY);
    b.outb(LBAL, 0x55);
    b.outb(CTL, 0);
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    assert_eq!([b.inb(COUNT), b.inb(LBAL), b.inb(ERR)], [1, 1, 1], "signature and diagnostic");
    b.lba28(0, 0, 4, cmd::READ_MULTIPLE);
    b.settle();
    assert_eq!(b.inb(ERR), error::ABRT, "SRST cleared multiple mode");
    // Unknown commands abort with an interrupt.
    for op in [0x01u8, 0xFF, cmd::PACKET, 0xB0] {
        b.outb(CMD, op);
        b.settle();
        assert!(b.irq(14));
        assert_eq!(
            (b.inb(CMD), b.inb(ERR)),
            (status::DRDY | status::DSC | status::ERR, error::ABRT),
            "{op:#x}"
        );
    }
}

#[test]
fn flush_verify_diagnostic_power() {
    let mut b = Bench::new();
    b.outb(CMD, cmd::FLUSH_CACHE_EXT);
    b.settle();
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    b.lba28(0, 10, 5, cmd::READ_VERIFY);
    b.settle();
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    b.outb(CMD, cmd::CHECK_POWER_MODE);
    b.settle();
    assert_eq!(b.inb(COUNT), 0xFF);
    b.outb(LBAL, 9);
    b.outb(CMD, cmd::EXECUTE_DIAGNOSTIC);
    b.settle();
    assert!(b.irq(14));
    assert_eq!([b.inb(COUNT), b.inb(LBAL), b.inb(ERR)], [1, 1, 1]);
}

#[test]
fn dma_read_and_write_with_prd_tables() {
    let mut b = Bench::new();
    b.prd(0x1000, &[(0x2000, 512, false), (0x3000, 1024, true)]);
    b.out(BM + 4, &0x1000u32.to_le_bytes());
    b.lba28(0, 20, 3, cmd::READ_DMA);
    assert_eq!(b.inb(CTL), status::DRDY | status::DSC | status::DRQ);
    assert!(!b.ide.dma_pending(), "waits for the bus master");
    b.now = 5000;
    b.outb(BM, BM_START | BM_WRITE_MEM);
    assert!(b.ide.dma_pending());
    assert_eq!(b.inb(BM + 2) & BM_ACTIVE, BM_ACTIVE);
    b.ide.run_dma(&mut b.mem);
    assert_eq!(b.ide.next_deadline(), Some(VirtTime(5000 + latency_ns(1536))));
    assert!(!b.irq(14), "completion only at the deadline");
    b.settle();
    assert!(b.irq(14));
    assert_eq!(b.inb(BM + 2) & (BM_ACTIVE | BM_INT | BM_ERROR), BM_INT);
    assert_eq!(b.mem.get_u32(0x2000), 20);
    assert_eq!(b.mem.get_u32(0x3000), 21);
    assert_eq!(b.mem.get_u32(0x3200), 22);
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    b.outb(BM + 2, BM_INT);
    assert_eq!(b.inb(BM + 2) & BM_INT, 0, "write one to clear");
    b.outb(BM, 0);

    // Write: memory to disk, bus master started before the command.
    b.mem.ram[0x4000..0x4400].fill(0x6B);
    b.prd(0x1000, &[(0x4000, 1024, true)]);
    b.outb(BM, BM_START);
    b.lba28(0, 30, 2, cmd::WRITE_DMA);
    b.settle();
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
    let mut s = [0u8; 1024];
    b.ide.drive_mut(0, 0).unwrap().read_sectors(30, &mut s).unwrap();
    assert!(s.iter().all(|&x| x == 0x6B));
    // A PRD table longer than the transfer leaves the bus master active.
    b.outb(BM, 0);
    b.prd(0x1000, &[(0x4000, 0, true)]); // 64 KiB
    b.outb(BM, BM_START | BM_WRITE_MEM);
    b.lba28(0, 0, 1, cmd::READ_DMA);
    b.settle();
    assert_eq!(b.inb(BM + 2) & (BM_ACTIVE | BM_INT), BM_ACTIVE | BM_INT);
    assert_eq!(b.inb(CMD), status::DRDY | status::DSC);
}

#[test]
fn hostile_prd_tables() {
    type Case = (&'static str, Vec<(u32, u16, bool)>, u32, u8);
    let cases: [Case; 4] = [
        ("table outside RAM", vec![], 0xFFF0_0000, BM_START | BM_WRITE_MEM),
        ("too short", vec![(0x2000, 512, true)], 0x1000, BM_START | BM_WRITE_MEM),
        ("buffer outside RAM", vec![(0xFFFF_0000, 1024, true)], 0x1000, BM_START | BM_WRITE_MEM),
        ("wrong direction", vec![(0x2000, 1024, true)], 0x1000, BM_START),
    ];
    for (what, prd, table, bmcmd) in cases {
        let mut b = Bench::new();
        b.prd(0x1000, &prd);
        b.out(BM + 4, &table.to_le_bytes());
        b.lba28(0, 0, 2, cmd::READ_DMA);
        b.outb(BM, bmcmd);
        b.settle();
        assert!(b.irq(14), "{what}");
        assert_eq!(b.inb(BM + 2) & (BM_ERROR | BM_ACTIVE), BM_ERROR, "{what}");
        assert_eq!(b.inb(CMD) & status::ERR, status::ERR, "{what}");
        assert_eq!(b.inb(ERR), error::ABRT, "{what}");
        // The channel still works afterwards.
        b.outb(BM, 0);
        b.outb(BM + 2, BM_ERROR | BM_INT);
        b.outb(CMD, cmd::IDENTIFY);
        b.settle();
        assert_eq!(b.inb(CMD) & status::DRQ, status::DRQ, "{what}");
    }
    // A table with no EOT anywhere is walked at most MAX_PRD entries.
    let mut b = Bench::new();
    for i in 0..MAX_PRD as u64 + 10 {
        b.mem.put_u32(0x10000 + 8 * i, 0x2000);
        b.mem.put_u32(0x10000 + 8 * i + 4, 2);
    }
    b.out(BM + 4, &0x10000u32.to_le_bytes());
    b.lba28(0, 0, 0, cmd::READ_DMA); // 256 sectors = 128 KiB > 8192 * 2 bytes
    b.outb(BM, BM_START | BM_WRITE_MEM);
    b.settle();
    assert_eq!(b.inb(BM + 2) & BM_ERROR, BM_ERROR);
}

fn packet(b: &mut Bench, cdb: &[u8], limit: u16, dma: bool) {
    let s = S;
    b.outb(s + ERR, u8::from(dma));
    b.outb(s + LBAM, limit as u8);
    b.outb(s + LBAH, (limit >> 8) as u8);
    b.outb(s + CMD, cmd::PACKET);
    assert_eq!(b.inb(s + CTL) & status::DRQ, status::DRQ);
    assert_eq!(b.inb(s + COUNT), IREASON_COD);
    let mut c = [0u8; 12];
    c[..cdb.len()].copy_from_slice(cdb);
    for w in c.chunks(2) {
        b.out(s + DATA, w);
    }
}

#[test]
fn atapi_pio_packets() {
    let mut b = Bench::new();
    let s = S;
    b.outb(s + CMD, cmd::IDENTIFY);
    b.settle();
    assert_eq!(b.inb(s + ERR), error::ABRT, "ATAPI aborts IDENTIFY");
    assert_eq!([b.inb(s + LBAM), b.inb(s + LBAH)], [0x14, 0xEB], "and keeps its signature");
    b.outb(s + CMD, cmd::IDENTIFY_PACKET);
    b.settle();
    b.inb(s + CMD);
    let id = b.read_block(s, 512);
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x85C0);

    packet(&mut b, &[0x12, 0, 0, 0, 36], 0x1000, false);
    b.settle();
    assert!(b.irq(15));
    assert_eq!(b.inb(s + CMD) & status::DRQ, status::DRQ);
    assert_eq!(b.inb(s + COUNT), IREASON_IO);
    assert_eq!([b.inb(s + LBAM), b.inb(s + LBAH)], [36, 0], "byte count");
    let inq = b.read_block(s, 36);
    assert_eq!(&inq[8..15], b"FERRITE");
    b.settle();
    assert!(b.irq(15), "completion interrupt");
    assert_eq!(b.inb(s + CMD), status::DRDY | status::DSC);
    assert_eq!(b.inb(s + COUNT), IREASON_IO | IREASON_COD);

    // READ(10) of 2 blocks with a 2048-byte limit: two DRQ blocks.
    packet(&mut b, &[0x28, 0, 0, 0, 0, 7, 0, 0, 2], 2048, false);
    for lba in [7u32, 8] {
        b.settle();
        assert!(b.irq(15));
        b.inb(s + CMD);
        assert_eq!([b.inb(s + LBAM), b.inb(s + LBAH)], [0, 8]);
        let blk = b.read_block(s, 2048);
        assert_eq!(u32::from_le_bytes(blk[..4].try_into().unwrap()), lba);
        assert_eq!(blk[2047], 0xCD);
    }
    b.settle();
    assert_eq!(b.inb(s + CMD), status::DRDY | status::DSC);
    // Out of range: CHECK CONDITION with the sense key in the error register.
    packet(&mut b, &[0x28, 0, 0, 0, 0, 49, 0, 0, 2], 2048, false);
    b.settle();
    assert!(b.irq(15));
    assert_eq!(b.inb(s + CMD) & status::ERR, status::ERR);
    assert_eq!(b.inb(s + ERR), 0x54);
    packet(&mut b, &[0x03, 0, 0, 0, 18], 18, false);
    b.settle();
    b.inb(s + CMD);
    let sense = b.read_block(s, 18);
    assert_eq!((sense[2], sense[12]), (5, 0x21));
}

#[test]
fn atapi_dma_read() {
    let mut b = Bench::new();
    let s = S;
    b.prd(0x1000, &[(0x8000, 4096, true)]);
    b.out(BM + 8 + 4, &0x1000u32.to_le_bytes());
    packet(&mut b, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2], 0, true);
    b.settle();
    assert!(!b.irq(15), "waits for the bus master");
    b.outb(BM + 8, BM_START | BM_WRITE_MEM);
    b.settle();
    assert!(b.irq(15));
    assert_eq!(b.inb(BM + 8 + 2) & (BM_INT | BM_ACTIVE | BM_ERROR), BM_INT);
    assert_eq!(b.mem.get_u32(0x8000), 3);
    assert_eq!(b.mem.get_u32(0x8800), 4);
    assert_eq!(b.inb(s + CMD), status::DRDY | status::DSC);
    assert_eq!(b.inb(s + COUNT), IREASON_IO | IREASON_COD);
}

#[test]
fn bus_master_register_semantics() {
    let mut b = Bench::new();
    b.out(BM + 4, &0x1234_5677u32.to_le_bytes());
    let prd: Vec<u8> = (4..8).map(|i| b.inb(BM + i)).collect();
    assert_eq!(prd, 0x1234_5674u32.to_le_bytes(), "PRD address: bits 31:2, read back bytewise");
    // The secondary channel's block (+8) is separate: its command keeps only bits 0 and 3, its PRD
    // address its own value.
    b.outb(BM + 8, 0xFE);
    assert_eq!(b.inb(BM + 8), BM_WRITE_MEM);
    b.outb(BM + 8, 0);
    b.out(BM + 8 + 4, &0xABCD_0003u32.to_le_bytes());
    assert_eq!(b.inb(BM + 8 + 4), 0x00);
    assert_eq!(b.inb(BM + 8 + 7), 0xAB);
    assert_eq!(b.inb(BM + 4), 0x74, "the primary's PRD address is untouched");
    assert_eq!(b.inb(BM + 1), 0, "reserved offsets read 0");
    b.outb(BM + 2, 0x60 | BM_ACTIVE);
    assert_eq!(b.inb(BM + 2), 0x60, "capable bits are read/write, active is read-only");
    b.outb(BM, 0xFF);
    assert_eq!(b.inb(BM), BM_START | BM_WRITE_MEM);
    assert_eq!(b.inb(BM + 2) & BM_ACTIVE, BM_ACTIVE);
    b.outb(BM, 0);
    assert_eq!(b.inb(BM + 2) & BM_ACTIVE, 0);
    b.ide.set_bus_master_enabled(false);
    b.outb(BM, BM_START | BM_WRITE_MEM);
    b.lba28(0, 0, 1, cmd::READ_DMA);
    assert!(!b.ide.dma_pending(), "no DMA without PCI bus mastering");
}

fn save(ide: &IdeController) -> Vec<u8> {
    let mut w = vmcore::SnapshotWriter::new();
    ide.save_state(&mut w);
    w.finish()
}

/// A controller saved halfway through a PIO read (block presented, half of it read), with a DMA command
/// waiting on the secondary channel (CD-ROM) and SET MULTIPLE in force, restored into a fresh controller
/// over the same media, goes on exactly as the original: the rest of the block, the next block, the
/// DMA transfer, the interrupt lines, the same saved state afterwards.
#[test]
fn snapshot_mid_transfer_continues_the_same() {
    let mut b = Bench::new();
    b.lba28(0, 0, 4, cmd::SET_MULTIPLE);
    b.settle();
    b.lba28(0, 7, 8, cmd::READ_MULTIPLE);
    b.settle();
    let first = b.read_block(0, 512);
    assert_eq!(&first[..4], &7u32.to_le_bytes());
    // The CD: a READ(10) by DMA waiting for the bus master.
    b.prd(0x1000, &[(0x8000, 2048, true)]);
    b.out(BM + 8 + 4, &0x1000u32.to_le_bytes());
    packet(&mut b, &[0x28, 0, 0, 0, 0, 5, 0, 0, 1], 0, true);
    let snap = save(&b.ide);

    let mut fresh = Bench::new();
    let mut r = vmcore::SnapshotReader::new(&snap);
    fresh.ide.restore_state(&mut r).expect("restore");
    assert_eq!(r.remaining(), 0);
    fresh.now = b.now;
    fresh.mem = b.mem.clone();
    assert_eq!(save(&fresh.ide), snap, "a restored controller saves the same bytes");
    for bench in [&mut b, &mut fresh] {
        let rest = bench.read_block(0, 3 * 512);
        assert_eq!(&rest[..4], &8u32.to_le_bytes());
        assert_eq!(&rest[1024..1028], &10u32.to_le_bytes());
        bench.settle();
        let next = bench.read_block(0, 4 * 512);
        assert_eq!(&next[..4], &11u32.to_le_bytes());
        bench.settle();
        bench.outb(BM + 8, BM_START | BM_WRITE_MEM);
        bench.settle();
        assert_eq!(bench.mem.get_u32(0x8000), 5, "the CD's block 5 by DMA");
    }
    assert_eq!(save(&b.ide), save(&fresh.ide));
    assert_eq!((b.irq(14), b.irq(15)), (fresh.irq(14), fresh.irq(15)));
}

/// Snapshots from another configuration or corrupted ones are refused with an error, never a panic,
/// and a refused restore leaves the registers as they were.
#[test]
fn snapshot_restore_refuses_bad_input() {
    let mut b = Bench::new();
    b.lba28(0, 3, 2, cmd::READ_SECTORS);
    b.settle();
    let snap = save(&b.ide);
    // No drives: the snapshot's drives are not this machine's.
    let mut empty = IdeController::new();
    assert!(empty.restore_state(&mut vmcore::SnapshotReader::new(&snap)).is_err());
    // Every truncation and many single-byte corruptions: Ok or Err, never a panic; a later read works.
    let before = save(&Bench::new().ide);
    for cut in 0..snap.len() {
        let mut t = Bench::new();
        if t.ide.restore_state(&mut vmcore::SnapshotReader::new(&snap[..cut])).is_err() {
            assert_eq!(save(&t.ide)[..], before[..], "a refused restore (cut at {cut}) changed the state");
        }
    }
    for i in 0..snap.len() {
        for v in [0x00, 0x01, 0x7F, 0xFF] {
            let mut bad = snap.clone();
            bad[i] = v;
            let mut t = Bench::new();
            let _ = t.ide.restore_state(&mut vmcore::SnapshotReader::new(&bad));
            let _ = t.read_block(0, 1024);
            t.outb(BM, BM_START);
            t.settle();
        }
    }
}
