use super::*;
use crate::ata::cmd;
use crate::backend::MemBackend;
use crate::dma::TestMemory;
use vmcore::{IrqLevels, MachineRequests};

const P0: u64 = 0x100;
const P1: u64 = 0x180;
const CLB: u64 = 0x10000;
const FB: u64 = 0x20000;
const CT: u64 = 0x30000;

struct Bench {
    hba: Ahci,
    mem: TestMemory,
    now: u64,
    irq: IrqLevels,
    req: MachineRequests,
}

fn disk_image(sectors: usize) -> Vec<u8> {
    let mut v = vec![0u8; sectors * 512];
    for (i, s) in v.chunks_mut(512).enumerate() {
        s[..4].copy_from_slice(&(i as u32).to_le_bytes());
    }
    v
}

fn iso_image(blocks: usize) -> Vec<u8> {
    let mut v = vec![0u8; blocks * 2048];
    for (i, s) in v.chunks_mut(2048).enumerate() {
        s[..4].copy_from_slice(&(i as u32).to_le_bytes());
    }
    v
}

fn h2d(command: u8, lba: u64, count: u16, features: u16) -> [u8; 20] {
    let mut f = [0u8; 20];
    f[0] = 0x27;
    f[1] = 0x80;
    f[2] = command;
    f[3] = features as u8;
    f[4] = lba as u8;
    f[5] = (lba >> 8) as u8;
    f[6] = (lba >> 16) as u8;
    f[7] = 0x40;
    f[8] = (lba >> 24) as u8;
    f[9] = (lba >> 32) as u8;
    f[10] = (lba >> 40) as u8;
    f[11] = (features >> 8) as u8;
    f[12] = count as u8;
    f[13] = (count >> 8) as u8;
    f
}

impl Bench {
    fn new() -> Bench {
        let disk = Drive::disk(Box::new(MemBackend::from_bytes(disk_image(2048), false)), "S0");
        let cd = Drive::cdrom(Some(Box::new(MemBackend::from_bytes(iso_image(20), true))), "C1");
        let mut hba = Ahci::new(vec![Some(disk), Some(cd)]);
        // Memory space and bus mastering on.
        hba.config_write(reg::COMMAND, &[0x06, 0x00]);
        Bench {
            hba,
            mem: TestMemory::new(4 << 20),
            now: 0,
            irq: IrqLevels::default(),
            req: MachineRequests::default(),
        }
    }

    fn rd(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        let mut ctx = DeviceCtx { now: VirtTime(self.now), irq: &mut self.irq, requests: &mut self.req };
        self.hba.bar_read(&mut ctx, 5, off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(&mut self, off: u64, v: u32) {
        let mut ctx = DeviceCtx { now: VirtTime(self.now), irq: &mut self.irq, requests: &mut self.req };
        self.hba.bar_write(&mut ctx, 5, off, &v.to_le_bytes());
    }

    /// What the board does after an access: run DMA.
    fn dma(&mut self) {
        if self.hba.dma_pending() {
            self.hba.run_dma(&mut self.mem);
        }
    }

    fn settle(&mut self) {
        self.dma();
        for _ in 0..1000 {
            match self.hba.next_deadline() {
                Some(t) => {
                    self.now = self.now.max(t.0);
                    self.hba.advance(VirtTime(self.now));
                    self.dma();
                }
                None => return,
            }
        }
        panic!("never settles");
    }

    fn start(&mut self, p: u64, n: u64) {
        self.wr(p + port::CLB, (CLB + n * 0x1000) as u32);
        self.wr(p + port::FB, (FB + n * 0x100) as u32);
        self.wr(p + port::CMD, port::CMD_FRE);
        self.dma();
        self.wr(p + port::CMD, port::CMD_FRE | port::CMD_ST);
    }

    /// Builds slot `slot` of port `n` and returns the command table address.
    fn build(
        &mut self,
        n: u64,
        slot: u64,
        fis: &[u8; 20],
        acmd: &[u8],
        prdt: &[(u64, u32, bool)],
        write: bool,
    ) -> u64 {
        let hdr = CLB + n * 0x1000 + 32 * slot;
        let ct = CT + (n * 32 + slot) * 0x1000;
        let dw0 =
            5 | (u32::from(write) << 6) | (u32::from(!acmd.is_empty()) << 5) | ((prdt.len() as u32) << 16);
        self.mem.put_u32(hdr, dw0);
        self.mem.put_u32(hdr + 4, 0xDEAD);
        self.mem.put_u32(hdr + 8, ct as u32);
        self.mem.put_u32(hdr + 12, (ct >> 32) as u32);
        self.mem.ram[ct as usize..ct as usize + 20].copy_from_slice(fis);
        self.mem.ram[ct as usize + 0x40..ct as usize + 0x40 + acmd.len()].copy_from_slice(acmd);
        for (i, &(addr, len, irq)) in prdt.iter().enumerate() {
            let e = ct + 0x80 + 16 * i as u64;
            self.mem.put_u32(e, addr as u32);
            self.mem.put_u32(e + 4, (addr >> 32) as u32);
            self.mem.put_u32(e + 12, (len - 1) | if irq { 1 << 31 } else { 0 });
        }
        ct
    }

    fn prdbc(&self, n: u64, slot: u64) -> u32 {
        self.mem.get_u32(CLB + n * 0x1000 + 32 * slot + 4)
    }
}

#[test]
fn host_and_port_registers() {
    let mut b = Bench::new();
    let cap = b.rd(hba::CAP);
    assert_eq!(cap & 0x1F, 5, "six ports");
    assert_eq!(cap >> 8 & 0x1F, 31, "32 slots");
    assert_ne!(cap & (1 << 30), 0, "NCQ");
    assert_ne!(cap & (1 << 31), 0, "64-bit");
    assert_eq!(b.rd(hba::PI), 0x3F);
    assert_eq!(b.rd(hba::GHC), hba::GHC_AE);
    b.wr(hba::GHC, 0);
    assert_eq!(b.rd(hba::GHC), hba::GHC_AE, "AE stays set on an AHCI-only HBA");
    assert_eq!(b.rd(P0 + port::SSTS), 0x113);
    assert_eq!(b.rd(0x200 + port::SSTS), 0, "port 2 has no device");
    assert_eq!(b.rd(P0 + port::SIG), 0x0000_0101);
    assert_eq!(b.rd(P1 + port::SIG), 0xEB14_0101);
    assert_eq!(b.rd(P0 + port::TFD), 0x150);
    b.wr(P0 + port::CLB, 0x1234_5FFF);
    assert_eq!(b.rd(P0 + port::CLB), 0x1234_5C00, "1 KiB aligned");
    b.wr(P0 + port::FB, 0x1234_5FFF);
    assert_eq!(b.rd(P0 + port::FB), 0x1234_5F00, "256-byte aligned");
    // CI writes are ignored while the port is stopped.
    b.wr(P0 + port::CI, 1);
    assert_eq!(b.rd(P0 + port::CI), 0);
    // FRE posts the signature FIS.
    b.wr(P0 + port::FB, FB as u32);
    b.wr(P0 + port::CMD, port::CMD_FRE);
    assert!(b.hba.dma_pending());
    b.dma();
    assert_eq!(b.rd(P0 + port::CMD) & (port::CMD_FR | port::CMD_FRE), port::CMD_FR | port::CMD_FRE);
    assert_eq!(b.mem.ram[(FB + 0x40) as usize], 0x34);
    assert_eq!(b.mem.ram[(FB + 0x40 + 12) as usize], 1, "signature count");
    assert_eq!(b.rd(P0 + port::IS) & port::IS_DHRS, port::IS_DHRS);
    b.wr(P0 + port::IS, port::IS_DHRS);
    assert_eq!(b.rd(P0 + port::IS), 0, "write one to clear");
    b.wr(P0 + port::CMD, port::CMD_FRE | port::CMD_ST);
    assert_ne!(b.rd(P0 + port::CMD) & port::CMD_CR, 0);
}

#[test]
fn identify_through_the_command_list_with_intx() {
    let mut b = Bench::new();
    b.start(P0, 0);
    b.wr(P0 + port::IS, !0);
    b.wr(P0 + port::IE, !0);
    b.wr(hba::GHC, hba::GHC_IE);
    b.build(0, 3, &h2d(cmd::IDENTIFY, 0, 0, 0), &[], &[(0x50000, 512, false)], false);
    b.now = 7000;
    b.wr(P0 + port::CI, 1 << 3);
    b.dma();
    assert_eq!(b.mem.ram[0x50000..0x50002], [0x40, 0x00], "data moved when fetched");
    assert_eq!(b.prdbc(0, 3), 512);
    assert_eq!(b.rd(P0 + port::CI), 1 << 3, "still issued before the deadline");
    assert!(!b.hba.intx());
    assert_eq!(b.hba.next_deadline(), Some(VirtTime(7000 + latency_ns(512))));
    b.settle();
    assert_eq!(b.rd(P0 + port::CI), 0);
    assert_eq!(b.rd(P0 + port::IS), port::IS_DHRS | port::IS_PSS);
    assert_eq!(b.rd(P0 + port::TFD), 0x50);
    assert_eq!(b.mem.ram[(FB + 0x20 + 15) as usize], 0x50, "PIO setup ending status");
    assert!(b.hba.intx());
    assert_eq!(b.rd(hba::IS), 1);
    b.wr(hba::IS, 1);
    assert_eq!(b.rd(hba::IS), 1, "re-latched while the port is pending");
    b.wr(P0 + port::IS, !0);
    b.wr(hba::IS, 1);
    assert_eq!(b.rd(hba::IS), 0);
    assert!(!b.hba.intx());
    // INTx follows the command register's interrupt-disable bit.
    b.build(0, 0, &h2d(cmd::FLUSH_CACHE_EXT, 0, 0, 0), &[], &[], false);
    b.wr(P0 + port::CI, 1);
    b.settle();
    assert!(b.hba.intx());
    b.hba.config_write(reg::COMMAND, &[0x06, 0x04]);
    assert!(!b.hba.intx());
}

#[test]
fn dma_read_write_ext_with_scattered_prdt() {
    let mut b = Bench::new();
    b.start(P0, 0);
    let data: Vec<u8> = (0..3 * 512).map(|i| (i * 7) as u8).collect();
    b.mem.ram[0x60000..0x60000 + 1000].copy_from_slice(&data[..1000]);
    b.mem.ram[0x70000..0x70000 + 536].copy_from_slice(&data[1000..]);
    b.build(
        0,
        0,
        &h2d(cmd::WRITE_DMA_EXT, 0x400, 3, 0),
        &[],
        &[(0x60000, 1000, false), (0x70000, 536, true)],
        true,
    );
    b.wr(P0 + port::CI, 1);
    b.settle();
    assert_eq!(b.rd(P0 + port::TFD), 0x50);
    assert_eq!(b.rd(P0 + port::IS), port::IS_DHRS | port::IS_DPS);
    assert_eq!(b.prdbc(0, 0), 1536);
    let mut back = vec![0u8; 1536];
    b.hba.drive_mut(0).unwrap().read_sectors(0x400, &mut back).unwrap();
    assert_eq!(back, data);
    b.build(0, 1, &h2d(cmd::READ_DMA_EXT, 0x400, 3, 0), &[], &[(0x80000, 2048, false)], false);
    b.wr(P0 + port::CI, 2);
    b.settle();
    assert_eq!(&b.mem.ram[0x80000..0x80000 + 1536], &data[..]);
    // LBA48 beyond the disk: IDNF.
    b.build(0, 2, &h2d(cmd::READ_DMA_EXT, 1 << 40, 1, 0), &[], &[(0x80000, 512, false)], false);
    b.wr(P0 + port::CI, 4);
    b.settle();
    assert_eq!(b.rd(P0 + port::TFD), u32::from(error::IDNF | error::ABRT) << 8 | 0x51);
    assert_ne!(b.rd(P0 + port::IS) & port::IS_TFES, 0);
    assert_eq!(b.rd(P0 + port::CI), 0);
}

#[test]
fn ncq_with_sactive_and_msi() {
    let mut b = Bench::new();
    let cap = b.hba.msi().offset;
    b.hba.config_write(cap + 4, &0xFEE0_0000u32.to_le_bytes());
    b.hba.config_write(cap + 12, &0x0041u16.to_le_bytes());
    b.hba.config_write(cap + 2, &[1, 0]);
    b.start(P0, 0);
    b.wr(P0 + port::IS, !0);
    b.wr(P0 + port::IE, !0);
    b.wr(hba::GHC, hba::GHC_IE);
    assert!(b.hba.take_msi().is_empty());
    // Two queued reads: tag 0 (8 sectors) and tag 5 (1 sector); tags equal slots.
    b.build(0, 0, &h2d(cmd::READ_FPDMA_QUEUED, 100, 0, 8), &[], &[(0x90000, 4096, false)], false);
    b.build(0, 5, &h2d(cmd::READ_FPDMA_QUEUED, 200, 5 << 3, 1), &[], &[(0xA0000, 512, false)], false);
    b.wr(P0 + port::SACT, 1 | 1 << 5);
    b.wr(P0 + port::CI, 1 | 1 << 5);
    b.dma();
    assert_eq!(b.rd(P0 + port::CI), 0, "queued commands are accepted at once");
    assert_eq!(b.rd(P0 + port::SACT), 1 | 1 << 5);
    assert_eq!(b.mem.get_u32(0x90000 + 512 * 7), 107);
    assert_eq!(b.mem.get_u32(0xA0000), 200);
    // The shorter one completes first.
    let t = b.hba.next_deadline().unwrap();
    b.now = t.0;
    b.hba.advance(t);
    assert_eq!(b.rd(P0 + port::SACT), 1, "tag 5 done");
    assert_eq!(b.rd(P0 + port::IS) & port::IS_SDBS, port::IS_SDBS);
    let msi = b.hba.take_msi();
    assert_eq!(msi.len(), 1);
    assert_eq!((msi[0].address, msi[0].data), (0xFEE0_0000, 0x41));
    assert!(!b.hba.intx(), "no INTx with MSI on");
    b.settle();
    assert_eq!(b.rd(P0 + port::SACT), 0);
    b.wr(P0 + port::IS, !0);
    b.wr(hba::IS, !0);
    assert!(!b.hba.intx());
    assert_eq!(b.mem.ram[(FB + 0x58) as usize], 0xA1, "set device bits FIS");
}

#[test]
fn hostile_command_lists() {
    struct Case {
        what: &'static str,
        is: u32,
    }
    let cases = [
        Case { what: "bad FIS type", is: port::IS_IFS },
        Case { what: "table outside RAM", is: port::IS_HBFS },
    ];
    for c in cases {
        let mut b = Bench::new();
        b.start(P0, 0);
        b.wr(P0 + port::IS, !0);
        let ct = b.build(0, 0, &h2d(cmd::IDENTIFY, 0, 0, 0), &[], &[(0x50000, 512, false)], false);
        if c.is == port::IS_IFS {
            b.mem.ram[ct as usize] = 0x34;
        } else {
            b.mem.put_u32(CLB + 8, 0xFFF0_0000);
        }
        b.wr(P0 + port::CI, 1);
        b.settle();
        assert_eq!(b.rd(P0 + port::IS), c.is | port::IS_TFES, "{}", c.what);
        assert_eq!(b.rd(P0 + port::TFD) & 1, 1, "{}", c.what);
        assert_eq!(b.rd(P0 + port::CI), 0, "{}", c.what);
    }
    let mut b = Bench::new();
    b.start(P0, 0);
    b.wr(P0 + port::IS, !0);
    // PRDT too short for the transfer: overflow.
    b.build(0, 0, &h2d(cmd::READ_DMA, 0, 4, 0), &[], &[(0x50000, 512, false)], false);
    b.wr(P0 + port::CI, 1);
    b.settle();
    assert_eq!(b.rd(P0 + port::IS), port::IS_OFS | port::IS_TFES);
    // Data outside RAM: host bus data error.
    b.wr(P0 + port::IS, !0);
    b.build(0, 1, &h2d(cmd::READ_DMA, 0, 1, 0), &[], &[(0x1_0000_0000, 512, false)], false);
    b.wr(P0 + port::CI, 2);
    b.settle();
    assert_eq!(b.rd(P0 + port::IS), port::IS_HBDS | port::IS_TFES);
    // Unknown command: ABRT through the D2H FIS.
    b.wr(P0 + port::IS, !0);
    b.build(0, 2, &h2d(0xB0, 0, 1, 0), &[], &[], false);
    b.wr(P0 + port::CI, 4);
    b.settle();
    assert_eq!(b.rd(P0 + port::TFD), u32::from(error::ABRT) << 8 | 0x51);
    assert_eq!(b.mem.ram[(FB + 0x40 + 3) as usize], error::ABRT);
    // A PRDT claiming 65535 entries of 4 MiB for a one-sector read: only what is needed is read.
    b.wr(P0 + port::IS, !0);
    let ct = b.build(0, 3, &h2d(cmd::READ_DMA, 0, 1, 0), &[], &[(0x50000, 512, false)], false);
    b.mem.put_u32(CLB + 32 * 3, 5 | 0xFFFF << 16);
    let _ = ct;
    b.wr(P0 + port::CI, 8);
    b.settle();
    assert_eq!(b.rd(P0 + port::IS), port::IS_DHRS);
    // All 32 slots at once, all garbage (zeroed headers point at address 0: FIS type 0).
    b.wr(P0 + port::IS, !0);
    for s in 0..32 {
        b.mem.put_u32(CLB + 32 * s, 0);
        b.mem.put_u32(CLB + 32 * s + 8, 0);
    }
    b.wr(P0 + port::CI, !0);
    b.settle();
    assert_eq!(b.rd(P0 + port::CI), 0);
    assert_eq!(b.rd(P0 + port::IS), port::IS_IFS | port::IS_TFES);
}

#[test]
fn comreset_stop_and_hba_reset() {
    let mut b = Bench::new();
    b.start(P0, 0);
    b.build(0, 0, &h2d(cmd::READ_DMA, 0, 1, 0), &[], &[(0x50000, 512, false)], false);
    b.wr(P0 + port::CI, 1);
    b.dma();
    // Clearing ST drops the running command.
    b.wr(P0 + port::CMD, port::CMD_FRE);
    assert_eq!(b.rd(P0 + port::CI), 0);
    assert_eq!(b.rd(P0 + port::CMD) & port::CMD_CR, 0);
    assert_eq!(b.hba.next_deadline(), None);
    // COMRESET.
    b.wr(P0 + port::SCTL, 1);
    assert_eq!(b.rd(P0 + port::SSTS), 0, "link down during COMRESET");
    assert_eq!(b.rd(P0 + port::TFD) & 0x80, 0x80);
    b.wr(P0 + port::SCTL, 0);
    assert_eq!(b.rd(P0 + port::SSTS), 0x113);
    assert_eq!(b.rd(P0 + port::TFD), 0x150);
    assert_ne!(b.rd(P0 + port::SERR) & (1 << 26), 0, "DIAG.X");
    b.dma();
    assert_eq!(b.rd(P0 + port::IS) & (port::IS_PCS | port::IS_DHRS), port::IS_PCS | port::IS_DHRS);
    // HBA reset: everything back to defaults.
    b.wr(P0 + port::IE, !0);
    b.wr(hba::GHC, hba::GHC_HR);
    assert_eq!(b.rd(hba::GHC), hba::GHC_AE);
    assert_eq!(b.rd(P0 + port::IE), 0);
    assert_eq!(b.rd(P0 + port::CMD) & (port::CMD_ST | port::CMD_FRE), 0);
    assert_eq!(b.rd(P0 + port::CLB), 0);
}

#[test]
fn software_reset_by_control_fis() {
    let mut b = Bench::new();
    b.start(P1, 1);
    let mut ctl = [0u8; 20];
    ctl[0] = 0x27;
    ctl[15] = 0x04; // SRST
    b.build(1, 0, &ctl, &[], &[], false);
    b.wr(P1 + port::CI, 1);
    b.settle();
    assert_eq!(b.rd(P1 + port::CI), 0);
    assert_eq!(b.rd(P1 + port::TFD) & 0x80, 0x80, "busy while SRST is held");
    ctl[15] = 0;
    b.build(1, 1, &ctl, &[], &[], false);
    b.wr(P1 + port::CI, 2);
    b.settle();
    assert_eq!(b.rd(P1 + port::SIG), 0xEB14_0101);
    assert_eq!(b.rd(P1 + port::TFD) & 0x80, 0);
}

#[test]
fn atapi_packets_through_acmd() {
    let mut b = Bench::new();
    b.start(P1, 1);
    let mut fis = h2d(cmd::PACKET, 0, 0, 1);
    fis[7] = 0;
    b.build(1, 0, &fis, &[0x12, 0, 0, 0, 36], &[(0x50000, 64, false)], false);
    b.wr(P1 + port::CI, 1);
    b.settle();
    assert_eq!(&b.mem.ram[0x50008..0x5000F], b"FERRITE");
    assert_eq!(b.prdbc(1, 0), 36);
    b.build(1, 1, &fis, &[0x28, 0, 0, 0, 0, 2, 0, 0, 3], &[(0x60000, 6144, false)], false);
    b.wr(P1 + port::CI, 2);
    b.settle();
    assert_eq!(b.mem.get_u32(0x60000), 2);
    assert_eq!(b.mem.get_u32(0x60000 + 4096), 4);
    assert_eq!(b.prdbc(1, 1), 6144);
    b.build(1, 2, &fis, &[0x28, 0, 0, 0, 0, 19, 0, 0, 3], &[(0x60000, 6144, false)], false);
    b.wr(P1 + port::CI, 4);
    b.settle();
    assert_eq!(b.rd(P1 + port::TFD) >> 8, 0x54, "ILLEGAL REQUEST in the error register");
    assert_ne!(b.rd(P1 + port::IS) & port::IS_TFES, 0);
}

#[test]
fn commands_on_one_port_complete_in_order_at_request_determined_times() {
    let mut b = Bench::new();
    b.start(P0, 0);
    b.build(0, 0, &h2d(cmd::READ_DMA, 0, 8, 0), &[], &[(0x50000, 4096, false)], false);
    b.build(0, 1, &h2d(cmd::READ_DMA, 0, 1, 0), &[], &[(0x60000, 512, false)], false);
    b.now = 100;
    b.wr(P0 + port::CI, 3);
    b.dma();
    let first = 100 + latency_ns(4096);
    assert_eq!(b.hba.next_deadline(), Some(VirtTime(first)));
    b.now = first;
    b.hba.advance(VirtTime(first));
    assert_eq!(b.rd(P0 + port::CI), 2);
    assert_eq!(b.hba.next_deadline(), Some(VirtTime(first + latency_ns(512))));
}

fn save(hba: &Ahci) -> Vec<u8> {
    let mut w = vmcore::SnapshotWriter::new();
    hba.save(&mut w);
    w.finish()
}

/// Saved with two commands in flight (a READ DMA EXT fetched and its data moved, its completion due; an
/// NCQ read queued in another slot), restored into a fresh controller over the same media: both go on
/// to the same completions, registers, received FISes and interrupt state as the original.
#[test]
fn snapshot_with_commands_in_flight_continues_the_same() {
    let mut b = Bench::new();
    b.start(P0, 0);
    b.settle();
    b.wr(P0 + port::IS, u32::MAX);
    b.wr(P0 + port::IE, u32::MAX);
    b.wr(hba::GHC, hba::GHC_AE | hba::GHC_IE);
    b.build(0, 0, &h2d(cmd::READ_DMA_EXT, 9, 2, 0), &[], &[(0x80000, 1024, false)], false);
    b.build(0, 4, &h2d(cmd::READ_FPDMA_QUEUED, 20, 4 << 3, 1), &[], &[(0x90000, 512, false)], false);
    b.wr(P0 + port::CI, 1);
    b.dma();
    b.wr(P0 + port::SACT, 1 << 4);
    b.wr(P0 + port::CI, 1 << 4);
    b.dma();
    assert!(b.hba.next_deadline().is_some(), "completions pending at the save");
    let snap = save(&b.hba);

    let mut fresh = Bench::new();
    let mut r = vmcore::SnapshotReader::new(&snap);
    fresh.hba.restore(&mut r).expect("restore");
    assert_eq!(r.remaining(), 0);
    assert_eq!(save(&fresh.hba), snap, "a restored controller saves the same bytes");
    fresh.now = b.now;
    fresh.mem = b.mem.clone();
    for bench in [&mut b, &mut fresh] {
        bench.settle();
        assert_eq!(bench.rd(P0 + port::CI), 0);
        assert_eq!(bench.rd(P0 + port::SACT), 0);
        assert_eq!(bench.mem.get_u32(0x80000), 9);
        assert_eq!(bench.mem.get_u32(0x90000), 20);
    }
    assert_eq!(save(&b.hba), save(&fresh.hba));
    assert_eq!(b.hba.intx(), fresh.hba.intx());
    assert_eq!(b.mem.ram, fresh.mem.ram, "received FISes and data");
}

/// Corrupted or truncated snapshots: an error or a state the controller keeps running from, never a
/// panic; a refused one changes nothing; a snapshot of a controller with other drives is refused.
#[test]
fn snapshot_restore_refuses_bad_input() {
    let mut b = Bench::new();
    b.start(P0, 0);
    b.build(0, 0, &h2d(cmd::READ_DMA_EXT, 3, 1, 0), &[], &[(0x80000, 512, false)], false);
    b.wr(P0 + port::CI, 1);
    b.dma();
    let snap = save(&b.hba);
    let mut other = Ahci::new(vec![None]);
    assert!(other.restore(&mut vmcore::SnapshotReader::new(&snap)).is_err());
    let before = save(&Bench::new().hba);
    for cut in 0..snap.len() {
        let mut t = Bench::new();
        if t.hba.restore(&mut vmcore::SnapshotReader::new(&snap[..cut])).is_err() {
            assert!(save(&t.hba) == before, "a refused restore (cut at {cut}) changed the state");
        }
    }
    for i in (0..snap.len()).step_by(3) {
        let mut bad = snap.clone();
        bad[i] ^= 0xA5;
        let mut t = Bench::new();
        let _ = t.hba.restore(&mut vmcore::SnapshotReader::new(&bad));
        t.wr(P0 + port::CI, 1);
        t.settle();
        let _ = t.rd(P0 + port::TFD);
    }
}
