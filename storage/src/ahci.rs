//! An ICH9-class AHCI SATA controller (AHCI 1.3.1), as QEMU's `ich9-ahci`: PCI 8086:2922, class
//! 01:06:01, the ABAR in BAR5, six ports, 32 command slots, NCQ, 64-bit addressing, MSI and INTx.
//!
//! # Registers (BAR5, 4 KiB, dword accesses; narrower reads see the bytes of the dword)
//!
//! Generic host control at 0x00: CAP, GHC (HR, IE; AE reads 1 since the HBA is AHCI-only), IS (write
//! one to clear), PI (0x3F), VS (1.0). Port n at 0x100 + 0x80 n: CLB/CLBU, FB/FBU, IS, IE, CMD (ST, SUD,
//! POD, CLO, FRE and the read-only CR, FR, CCS), TFD, SIG, SSTS, SCTL (DET = 1 holds the port in
//! COMRESET; back to 0 the device posts its signature), SERR, SACT, CI, SNTF.
//!
//! # Commands
//!
//! Writing PxCI (with PxCMD.ST set) leaves work for the board, which calls
//! [`PciFunction::run_dma`] before the guest's next instruction: each newly issued slot's command
//! header, command FIS and PRDT are fetched, the ATA/ATAPI command ([`crate::ata`], [`crate::atapi`])
//! runs, its data moves through the PRDT, and the received FISes (D2H register, PIO setup, set device
//! bits) are written. These memory effects happen then; the register effects (PxCI and PxSACT bits
//! clearing, PxTFD, PxIS and the interrupt) happen at the command's completion deadline, which
//! depends only on the request ([`crate::ata::latency_ns`] after the previous command of the port
//! finished, or after the PxCI write). [`Ahci::next_deadline`] and [`Ahci::advance`] are that clock
//! interface.
//!
//! READ/WRITE FPDMA QUEUED: PxCI clears when the command is accepted; completion clears the tag's
//! PxSACT bit and raises SDBS with a set-device-bits FIS.
//!
//! # Errors
//!
//! A command FIS that is not a register H2D FIS, a command list, table or PRDT outside RAM (host bus
//! fatal, HBFS), a PRDT shorter than the transfer (overflow, OFS), data outside RAM (host bus data,
//! HBDS) and an ATA error all complete the slot with PxTFD.ERR and PxIS.TFES (the ATA error register
//! gets ABRT, or the drive's own error), never a host panic; PxCI is cleared as QEMU does.

use chipset::msi::{MsiCapability, MsiMessage, Signal, intx_output};
use chipset::pci::{BarChange, BarDef, BarKind, ConfigSpace, PciFunction, reg};
use vmcore::Snapshot;
use vmcore::{DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::ata::{Action, CD_BLOCK, Drive, DriveKind, TaskFile, Xfer, error, latency_ns, status};
use crate::atapi::PacketResult;
use crate::dma::{DmaError, DmaMemory, Region, from_memory, to_memory};

/// Vendor ID (Intel).
pub const VENDOR: u16 = 0x8086;
/// Device ID (82801IR/IO/IH ICH9R SATA AHCI).
pub const DEVICE: u16 = 0x2922;
/// Class code: mass storage, SATA, AHCI 1.0.
pub const CLASS: u32 = 0x01_06_01;
/// ABAR size.
pub const ABAR_SIZE: u64 = 0x1000;
/// Ports.
pub const PORTS: usize = 6;
/// Command slots per port.
pub const SLOTS: usize = 32;

/// Generic host control registers.
pub mod hba {
    /// Capabilities.
    pub const CAP: u64 = 0x00;
    /// Global host control.
    pub const GHC: u64 = 0x04;
    /// Interrupt status.
    pub const IS: u64 = 0x08;
    /// Ports implemented.
    pub const PI: u64 = 0x0C;
    /// Version.
    pub const VS: u64 = 0x10;
    /// GHC: HBA reset.
    pub const GHC_HR: u32 = 1 << 0;
    /// GHC: interrupt enable.
    pub const GHC_IE: u32 = 1 << 1;
    /// GHC: AHCI enable.
    pub const GHC_AE: u32 = 1 << 31;
}

/// Port registers (offsets within a port's 0x80 bytes) and bits.
pub mod port {
    /// Command list base.
    pub const CLB: u64 = 0x00;
    /// Command list base, upper.
    pub const CLBU: u64 = 0x04;
    /// FIS base.
    pub const FB: u64 = 0x08;
    /// FIS base, upper.
    pub const FBU: u64 = 0x0C;
    /// Interrupt status.
    pub const IS: u64 = 0x10;
    /// Interrupt enable.
    pub const IE: u64 = 0x14;
    /// Command and status.
    pub const CMD: u64 = 0x18;
    /// Task file data.
    pub const TFD: u64 = 0x20;
    /// Signature.
    pub const SIG: u64 = 0x24;
    /// SATA status.
    pub const SSTS: u64 = 0x28;
    /// SATA control.
    pub const SCTL: u64 = 0x2C;
    /// SATA error.
    pub const SERR: u64 = 0x30;
    /// SATA active (NCQ tags outstanding).
    pub const SACT: u64 = 0x34;
    /// Command issue.
    pub const CI: u64 = 0x38;
    /// SATA notification.
    pub const SNTF: u64 = 0x3C;

    /// CMD: start.
    pub const CMD_ST: u32 = 1 << 0;
    /// CMD: spin-up device.
    pub const CMD_SUD: u32 = 1 << 1;
    /// CMD: power on device.
    pub const CMD_POD: u32 = 1 << 2;
    /// CMD: command list override.
    pub const CMD_CLO: u32 = 1 << 3;
    /// CMD: FIS receive enable.
    pub const CMD_FRE: u32 = 1 << 4;
    /// CMD: FIS receive running.
    pub const CMD_FR: u32 = 1 << 14;
    /// CMD: command list running.
    pub const CMD_CR: u32 = 1 << 15;
    /// CMD: device is ATAPI.
    pub const CMD_ATAPI: u32 = 1 << 24;

    /// IS: D2H register FIS received.
    pub const IS_DHRS: u32 = 1 << 0;
    /// IS: PIO setup FIS received.
    pub const IS_PSS: u32 = 1 << 1;
    /// IS: set device bits FIS received.
    pub const IS_SDBS: u32 = 1 << 3;
    /// IS: descriptor processed (a PRD with I set).
    pub const IS_DPS: u32 = 1 << 5;
    /// IS: port connect change.
    pub const IS_PCS: u32 = 1 << 6;
    /// IS: overflow.
    pub const IS_OFS: u32 = 1 << 24;
    /// IS: interface fatal error.
    pub const IS_IFS: u32 = 1 << 27;
    /// IS: host bus data error.
    pub const IS_HBDS: u32 = 1 << 28;
    /// IS: host bus fatal error.
    pub const IS_HBFS: u32 = 1 << 29;
    /// IS: task file error.
    pub const IS_TFES: u32 = 1 << 30;
}

/// Received-FIS area offsets.
mod rfis {
    pub const PIO_SETUP: u64 = 0x20;
    pub const D2H: u64 = 0x40;
    pub const SDB: u64 = 0x58;
}

/// Most MSI messages kept between two drains.
const MAX_MSI_QUEUE: usize = 64;

/// What a completion does to the port's registers at its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Completion {
    at: VirtTime,
    /// The PxCI bit to clear (None: it was cleared when an NCQ command was accepted).
    slot: Option<u8>,
    /// The PxSACT bit to clear.
    tag: Option<u8>,
    status: u8,
    error: u8,
    /// PxIS bits to set.
    is: u32,
    /// A new signature (reset).
    sig: Option<u32>,
}

#[derive(Debug)]
struct Port {
    drive: Option<Drive>,
    clb: u64,
    fb: u64,
    is: u32,
    ie: u32,
    cmd: u32,
    tfd: u32,
    sig: u32,
    sctl: u32,
    serr: u32,
    sact: u32,
    ci: u32,
    /// PxCI bits fetched and running (their completion is queued).
    running: u32,
    /// PxSACT tags outstanding in the device.
    queued: u32,
    /// Completions waiting for their deadline, in time order.
    done: Vec<Completion>,
    /// When the previous command of this port completes.
    busy_until: VirtTime,
    /// The signature D2H FIS is waiting to be written (needs FRE).
    sig_fis: bool,
}

impl Port {
    fn new(drive: Option<Drive>) -> Port {
        let mut p = Port {
            drive,
            clb: 0,
            fb: 0,
            is: 0,
            ie: 0,
            cmd: 0,
            tfd: 0x7F,
            sig: 0xFFFF_FFFF,
            sctl: 0,
            serr: 0,
            sact: 0,
            ci: 0,
            running: 0,
            queued: 0,
            done: Vec::new(),
            busy_until: VirtTime::ZERO,
            sig_fis: false,
        };
        p.link_up();
        p
    }

    fn present(&self) -> bool {
        self.drive.is_some()
    }

    /// The device finished its reset: signature, ready status, D2H FIS to post.
    fn link_up(&mut self) {
        let Some(d) = self.drive.as_mut() else {
            self.tfd = 0x7F;
            return;
        };
        d.reset();
        let [count, low, mid, high] = d.signature();
        self.sig = u32::from_le_bytes([count, low, mid, high]);
        let st = if d.kind() == DriveKind::Disk { status::DRDY | status::DSC } else { 0 };
        self.tfd = 0x100 | u32::from(st);
        self.sig_fis = true;
        if d.kind() == DriveKind::Cdrom {
            self.cmd |= port::CMD_ATAPI;
        }
    }

    fn ssts(&self) -> u32 {
        if self.present() && self.sctl & 0xF != 1 { 0x113 } else { 0 }
    }

    /// Stops the command engine: outstanding commands are dropped (PxCMD.ST cleared, COMRESET, HBA
    /// reset).
    fn stop(&mut self) {
        self.ci = 0;
        self.sact = 0;
        self.running = 0;
        self.queued = 0;
        self.done.clear();
        self.cmd &= !port::CMD_CR;
    }

    fn pending_irq(&self) -> bool {
        self.is & self.ie != 0
    }
}

/// The AHCI controller.
pub struct Ahci {
    cfg: ConfigSpace,
    msi: MsiCapability,
    ports: Vec<Port>,
    ghc: u32,
    is: u32,
    now: VirtTime,
    intx: bool,
    msi_out: Vec<MsiMessage>,
    /// Whether the interrupt condition held after the last update (MSI sends on new events).
    condition: bool,
}

impl std::fmt::Debug for Ahci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ahci").field("ghc", &self.ghc).field("is", &self.is).finish()
    }
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}

/// Why fetching or running a command failed, as the PxIS bit it raises.
struct Fault(u32);

impl Ahci {
    /// A controller whose ports hold `drives` (index = port; at most [`PORTS`]).
    pub fn new(drives: Vec<Option<Drive>>) -> Ahci {
        let mut cfg = ConfigSpace::new(VENDOR, DEVICE, CLASS, 0x02, 0x00);
        cfg.set_bytes(reg::INTERRUPT_PIN, &[1]);
        cfg.add_bar(5, BarDef { kind: BarKind::Mem32, size: ABAR_SIZE, prefetchable: false });
        let msi =
            MsiCapability::add(&mut cfg, 0, true, false).expect("an empty configuration space has room");
        let mut drives = drives;
        drives.resize_with(PORTS, || None);
        drives.truncate(PORTS);
        let ports = drives
            .into_iter()
            .map(|mut d| {
                if let Some(d) = d.as_mut() {
                    d.set_sata(true);
                }
                Port::new(d)
            })
            .collect();
        Ahci {
            cfg,
            msi,
            ports,
            ghc: hba::GHC_AE,
            is: 0,
            now: VirtTime::ZERO,
            intx: false,
            msi_out: Vec::new(),
            condition: false,
        }
    }

    /// The MSI capability.
    pub fn msi(&self) -> MsiCapability {
        self.msi
    }

    /// The drive on port `n`.
    pub fn drive_mut(&mut self, n: usize) -> Option<&mut Drive> {
        self.ports.get_mut(n)?.drive.as_mut()
    }

    /// Flushes every drive (clean exit).
    pub fn flush_all(&mut self) -> std::io::Result<()> {
        for p in &mut self.ports {
            if let Some(d) = p.drive.as_mut() {
                d.flush().map_err(|e| std::io::Error::other(format!("ATA error {e:#x}")))?;
            }
        }
        Ok(())
    }

    fn cap(&self) -> u32 {
        (PORTS as u32 - 1)
            | ((SLOTS as u32 - 1) << 8)
            | (1 << 18) // AHCI only
            | (1 << 20) // 1.5 Gb/s
            | (1 << 30) // NCQ
            | (1 << 31) // 64-bit addressing
    }

    /// Recomputes IS, INTx and MSI after any change. `new_event`: a port interrupt bit was just set
    /// (an MSI goes out even if the condition already held).
    fn update_irq(&mut self, new_event: bool) {
        for (i, p) in self.ports.iter().enumerate() {
            if p.pending_irq() {
                self.is |= 1 << i;
            }
        }
        let cond = self.ghc & hba::GHC_IE != 0 && self.is != 0;
        let msi_on = self.msi.enabled(&self.cfg);
        if cond
            && (new_event || !self.condition)
            && let Signal::Msi(m) = self.msi.signal(&mut self.cfg, 0)
            && self.msi_out.len() < MAX_MSI_QUEUE
        {
            self.msi_out.push(m);
        }
        self.condition = cond;
        self.intx = intx_output(&mut self.cfg, cond, msi_on);
    }

    fn hba_reset(&mut self) {
        self.ghc = hba::GHC_AE;
        self.is = 0;
        for p in &mut self.ports {
            p.stop();
            p.cmd &= port::CMD_ATAPI;
            p.is = 0;
            p.ie = 0;
            p.serr = 0;
            p.sctl = 0;
            p.clb = 0;
            p.fb = 0;
            p.busy_until = VirtTime::ZERO;
            p.link_up();
        }
    }

    fn read_reg(&self, off: u64) -> u32 {
        if off < 0x100 {
            return match off {
                hba::CAP => self.cap(),
                hba::GHC => self.ghc,
                hba::IS => self.is,
                hba::PI => (1 << PORTS) - 1,
                hba::VS => 0x0001_0000,
                _ => 0,
            };
        }
        let n = ((off - 0x100) / 0x80) as usize;
        let Some(p) = self.ports.get(n) else { return 0 };
        match (off - 0x100) % 0x80 {
            port::CLB => p.clb as u32,
            port::CLBU => (p.clb >> 32) as u32,
            port::FB => p.fb as u32,
            port::FBU => (p.fb >> 32) as u32,
            port::IS => p.is,
            port::IE => p.ie,
            port::CMD => {
                let ccs = if p.cmd & port::CMD_ST != 0 { (p.running.trailing_zeros() & 31) << 8 } else { 0 };
                p.cmd | ccs
            }
            port::TFD => p.tfd,
            port::SIG => p.sig,
            port::SSTS => p.ssts(),
            port::SCTL => p.sctl,
            port::SERR => p.serr,
            port::SACT => p.sact,
            port::CI => p.ci,
            _ => 0,
        }
    }

    fn write_reg(&mut self, off: u64, v: u32) {
        if off < 0x100 {
            match off {
                hba::GHC => {
                    if v & hba::GHC_HR != 0 {
                        self.hba_reset();
                    } else {
                        self.ghc = hba::GHC_AE | (v & hba::GHC_IE);
                    }
                }
                hba::IS => {
                    self.is &= !v;
                    // A port still pending re-latches its bit: with MSI that is a new message, or the
                    // host would never hear of an event that arrived while it was clearing.
                    self.update_irq(true);
                    return;
                }
                _ => {}
            }
            self.update_irq(false);
            return;
        }
        let n = ((off - 0x100) / 0x80) as usize;
        let Some(p) = self.ports.get_mut(n) else { return };
        let mut event = false;
        match (off - 0x100) % 0x80 {
            port::CLB => p.clb = (p.clb & !0xFFFF_FFFF) | u64::from(v & !0x3FF),
            port::CLBU => p.clb = (p.clb & 0xFFFF_FFFF) | u64::from(v) << 32,
            port::FB => p.fb = (p.fb & !0xFFFF_FFFF) | u64::from(v & !0xFF),
            port::FBU => p.fb = (p.fb & 0xFFFF_FFFF) | u64::from(v) << 32,
            port::IS => p.is &= !v,
            port::IE => {
                p.ie = v & 0xFDC0_00FF;
                event = p.pending_irq();
            }
            port::CMD => {
                let old = p.cmd;
                let mut c =
                    v & (port::CMD_ST | port::CMD_SUD | port::CMD_POD | port::CMD_FRE | port::CMD_ATAPI);
                if v & port::CMD_CLO != 0 {
                    p.tfd &= !u32::from(status::BSY | status::DRQ);
                }
                if c & port::CMD_ST != 0 {
                    c |= port::CMD_CR;
                } else if old & port::CMD_ST != 0 {
                    p.stop();
                }
                if c & port::CMD_FRE != 0 {
                    c |= port::CMD_FR;
                }
                p.cmd = c;
            }
            port::SCTL => {
                let was_reset = p.sctl & 0xF == 1;
                p.sctl = v & 0xFFF;
                if v & 0xF == 1 {
                    // COMRESET asserted: the link drops, outstanding work is lost.
                    p.stop();
                    p.tfd = 0x80 | 0x7F;
                } else if was_reset {
                    p.link_up();
                    p.serr |= 1 << 26; // DIAG.X: the device exchanged its status
                    if p.present() {
                        p.is |= port::IS_PCS;
                        event = true;
                    }
                }
            }
            port::SERR => p.serr &= !v,
            port::SACT if p.cmd & port::CMD_ST != 0 => p.sact |= v,
            port::CI if p.cmd & port::CMD_ST != 0 && p.present() => p.ci |= v,
            _ => {}
        }
        self.update_irq(event);
    }

    /// The next virtual time a command completes, if any.
    pub fn next_deadline(&self) -> Option<VirtTime> {
        self.ports.iter().filter_map(|p| p.done.first().map(|c| c.at)).min()
    }

    /// Applies every completion due at `now`: PxCI/PxSACT bits clear, PxTFD and PxIS change, the
    /// interrupt follows. The board reads [`PciFunction::intx`] and [`PciFunction::take_msi`] after.
    pub fn advance(&mut self, now: VirtTime) {
        self.now = self.now.max(now);
        let mut event = false;
        for p in &mut self.ports {
            while p.done.first().is_some_and(|c| c.at <= now) {
                let c = p.done.remove(0);
                if let Some(s) = c.slot {
                    p.ci &= !(1 << s);
                    p.running &= !(1 << s);
                }
                if let Some(t) = c.tag {
                    p.sact &= !(1 << t);
                    p.queued &= !(1 << t);
                }
                p.tfd = u32::from(c.error) << 8 | u32::from(c.status);
                if let Some(sig) = c.sig {
                    p.sig = sig;
                }
                p.is |= c.is;
                event |= c.is & p.ie != 0;
            }
        }
        self.update_irq(event);
    }

    /// Fetches and runs every newly issued slot of port `n`, and posts a waiting signature FIS.
    fn process_port(&mut self, n: usize, mem: &mut dyn DmaMemory) {
        let now = self.now;
        let p = &mut self.ports[n];
        if p.sig_fis && p.cmd & port::CMD_FRE != 0 {
            p.sig_fis = false;
            let [count, low, mid, high] = p.sig.to_le_bytes();
            let mut fis = [0u8; 20];
            fis[0] = 0x34;
            fis[2] = p.tfd as u8;
            fis[3] = (p.tfd >> 8) as u8;
            fis[4] = low;
            fis[5] = mid;
            fis[6] = high;
            fis[12] = count;
            if mem.write(p.fb + rfis::D2H, &fis) {
                p.is |= port::IS_DHRS;
            }
        }
        if p.cmd & port::CMD_ST == 0 {
            return;
        }
        let new = p.ci & !p.running;
        for slot in 0..SLOTS as u8 {
            if new & (1 << slot) == 0 {
                continue;
            }
            self.ports[n].running |= 1 << slot;
            let c = match self.run_slot(n, slot, mem) {
                Ok(c) => c,
                Err(Fault(bits)) => Completion {
                    at: VirtTime(latency_ns(0)),
                    slot: Some(slot),
                    // An NCQ command that failed to run drops its tag too (tags equal slots, as the
                    // host set them in PxSACT).
                    tag: (self.ports[n].sact & (1 << slot) != 0).then_some(slot),
                    status: status::DRDY | status::ERR,
                    error: error::ABRT,
                    is: bits | port::IS_TFES,
                    sig: None,
                },
            };
            let p = &mut self.ports[n];
            let start = if c.tag.is_some() { now } else { p.busy_until.max(now) };
            let at = start.add_nanos(c.at.0);
            if c.tag.is_none() {
                p.busy_until = at;
            }
            let c = Completion { at, ..c };
            let pos = p.done.partition_point(|d| d.at <= at);
            p.done.insert(pos, c);
        }
    }

    /// Runs one slot's command. The returned completion's `at` is its duration.
    fn run_slot(&mut self, n: usize, slot: u8, mem: &mut dyn DmaMemory) -> Result<Completion, Fault> {
        let p = &mut self.ports[n];
        let hdr_addr = p.clb + 32 * u64::from(slot);
        let mut hdr = [0u8; 16];
        if !mem.read(hdr_addr, &mut hdr) {
            return Err(Fault(port::IS_HBFS));
        }
        let dw0 = u32_at(&hdr, 0);
        let cfl = dw0 & 0x1F;
        let prdtl = (dw0 >> 16) as usize;
        let ctba = (u64::from(u32_at(&hdr, 8)) & !0x7F) | u64::from(u32_at(&hdr, 12)) << 32;
        let mut table = [0u8; 0x80];
        if !mem.read(ctba, &mut table) {
            return Err(Fault(port::IS_HBFS));
        }
        let cfis = &table[..0x40];
        if !(5..=16).contains(&cfl) || cfis[0] != 0x27 {
            return Err(Fault(port::IS_IFS));
        }
        let prdt = Prdt { base: ctba + 0x80, entries: prdtl };
        let fb = p.fb;
        let fre = p.cmd & port::CMD_FRE != 0;
        let Some(drive) = p.drive.as_mut() else { return Err(Fault(port::IS_IFS)) };
        if cfis[1] & 0x80 == 0 {
            // Device control FIS: SRST set resets the device; cleared, it posts its signature.
            let srst = cfis[15] & 0x04 != 0;
            if srst {
                drive.reset();
                return Ok(Completion {
                    at: VirtTime(latency_ns(0)),
                    slot: Some(slot),
                    tag: None,
                    status: status::BSY,
                    error: 0,
                    is: 0,
                    sig: None,
                });
            }
            let [count, low, mid, high] = drive.signature();
            let st = if drive.kind() == DriveKind::Disk { status::DRDY | status::DSC } else { 0 };
            if fre {
                write_d2h(
                    mem,
                    fb,
                    st,
                    0x01,
                    &TaskFile { count, lba_low: low, lba_mid: mid, lba_high: high, ..Default::default() },
                );
            }
            return Ok(Completion {
                at: VirtTime(latency_ns(0)),
                slot: Some(slot),
                tag: None,
                status: st,
                error: 0x01,
                is: port::IS_DHRS,
                sig: Some(u32::from_le_bytes([count, low, mid, high])),
            });
        }
        let tf = TaskFile {
            command: cfis[2],
            features: cfis[3],
            lba_low: cfis[4],
            lba_mid: cfis[5],
            lba_high: cfis[6],
            device: cfis[7],
            hob_lba_low: cfis[8],
            hob_lba_mid: cfis[9],
            hob_lba_high: cfis[10],
            hob_features: cfis[11],
            count: cfis[12],
            hob_count: cfis[13],
        };
        let ok_status = status::DRDY | status::DSC;
        let finish = |mem: &mut dyn DmaMemory, err: u8, bytes: u64, pio: bool, extra_is: u32| {
            let st = if err != 0 { ok_status | status::ERR } else { ok_status };
            let mut is = port::IS_DHRS | extra_is;
            if err != 0 {
                is |= port::IS_TFES;
            }
            if fre {
                if pio && err == 0 {
                    write_pio_setup(mem, fb, st);
                    is |= port::IS_PSS;
                }
                write_d2h(mem, fb, st, err, &tf);
            }
            // PRDBC: bytes transferred.
            mem.write(hdr_addr + 4, &(bytes as u32).to_le_bytes());
            Completion {
                at: VirtTime(latency_ns(bytes)),
                slot: Some(slot),
                tag: None,
                status: st,
                error: err,
                is,
                sig: None,
            }
        };
        let action = drive.decode(&tf, true);
        Ok(match action {
            Action::Done => finish(mem, 0, 0, false, 0),
            Action::Error(e) => finish(mem, e, 0, false, 0),
            Action::Flush => {
                let e = drive.flush().err().unwrap_or(0);
                finish(mem, e, 0, false, 0)
            }
            Action::Signature { diag } => {
                let [count, low, mid, high] = drive.signature();
                let st = if drive.kind() == DriveKind::Disk { ok_status } else { 0 };
                if fre {
                    let sig =
                        TaskFile { count, lba_low: low, lba_mid: mid, lba_high: high, ..Default::default() };
                    write_d2h(mem, fb, st, diag.unwrap_or(1), &sig);
                }
                Completion {
                    at: VirtTime(latency_ns(0)),
                    slot: Some(slot),
                    tag: None,
                    status: st,
                    error: diag.unwrap_or(1),
                    is: port::IS_DHRS,
                    sig: Some(u32::from_le_bytes([count, low, mid, high])),
                }
            }
            Action::DataIn { data, .. } => {
                let (r, dps) = prdt.scatter(mem, data.len() as u64, |piece, pos| {
                    piece.copy_from_slice(&data[pos as usize..pos as usize + piece.len()]);
                    Ok(())
                })?;
                match r {
                    Ok(()) => finish(mem, 0, data.len() as u64, true, dps),
                    Err(bits) => return Err(Fault(bits)),
                }
            }
            Action::Read { lba, count, xfer } | Action::Write { lba, count, xfer } => {
                let write = matches!(action, Action::Write { .. });
                let len = u64::from(count) * 512;
                let off = lba * 512;
                let (r, dps) = if write {
                    prdt.gather(mem, len, |piece, pos| drive.write_at(off + pos, piece))?
                } else {
                    prdt.scatter(mem, len, |piece, pos| drive.read_at(off + pos, piece))?
                };
                let err = match r {
                    Ok(()) => 0,
                    Err(bits) if bits > 0xFF => return Err(Fault(bits)),
                    Err(ata) => ata as u8,
                };
                match xfer {
                    Xfer::Queued { tag } => {
                        // Accepted: PxCI clears now; the SDB FIS reports completion.
                        let p = &mut self.ports[n];
                        p.ci &= !(1 << slot);
                        p.running &= !(1 << slot);
                        p.queued |= 1 << tag;
                        let st = if err != 0 { ok_status | status::ERR } else { ok_status };
                        if fre {
                            let mut sdb = [0u8; 8];
                            sdb[0] = 0xA1;
                            sdb[1] = 0x40; // interrupt
                            sdb[2] = st & 0x77;
                            sdb[3] = err;
                            put_u32(&mut sdb, 4, 1 << tag);
                            mem.write(fb + rfis::SDB, &sdb);
                        }
                        let mut is = port::IS_SDBS | dps;
                        if err != 0 {
                            is |= port::IS_TFES;
                        }
                        Completion {
                            at: VirtTime(latency_ns(len)),
                            slot: None,
                            tag: Some(tag),
                            status: st,
                            error: err,
                            is,
                            sig: None,
                        }
                    }
                    Xfer::Pio { .. } => finish(mem, err, len, !write, dps),
                    Xfer::Dma => finish(mem, err, len, false, dps),
                }
            }
            Action::Packet { .. } => {
                let mut cdb = [0u8; 12];
                cdb.copy_from_slice(&table[0x40..0x4C]);
                match drive.packet(&cdb) {
                    PacketResult::Done => finish(mem, 0, 0, false, 0),
                    PacketResult::Check(e) => finish(mem, e, 0, false, 0),
                    PacketResult::Data(v) => {
                        let (r, dps) = prdt.scatter(mem, v.len() as u64, |piece, pos| {
                            piece.copy_from_slice(&v[pos as usize..pos as usize + piece.len()]);
                            Ok(())
                        })?;
                        r.map_err(Fault)?;
                        finish(mem, 0, v.len() as u64, true, dps)
                    }
                    PacketResult::Read { lba, blocks } => {
                        let len = u64::from(blocks) * CD_BLOCK;
                        let off = lba * CD_BLOCK;
                        let (r, dps) =
                            prdt.scatter(mem, len, |piece, pos| drive.read_at(off + pos, piece))?;
                        match r {
                            Ok(()) => finish(mem, 0, len, true, dps),
                            Err(bits) if bits > 0xFF => return Err(Fault(bits)),
                            Err(_) => {
                                drive.atapi.sense =
                                    [crate::atapi::sense::MEDIUM_ERROR, crate::atapi::asc::READ_ERROR, 0];
                                finish(mem, crate::atapi::sense::MEDIUM_ERROR << 4 | error::ABRT, 0, false, 0)
                            }
                        }
                    }
                }
            }
        })
    }
}

/// Writes a D2H register FIS into the received-FIS area.
fn write_d2h(mem: &mut dyn DmaMemory, fb: u64, st: u8, err: u8, tf: &TaskFile) {
    let mut fis = [0u8; 20];
    fis[0] = 0x34;
    fis[1] = 0x40; // interrupt
    fis[2] = st;
    fis[3] = err;
    fis[4] = tf.lba_low;
    fis[5] = tf.lba_mid;
    fis[6] = tf.lba_high;
    fis[7] = tf.device;
    fis[8] = tf.hob_lba_low;
    fis[9] = tf.hob_lba_mid;
    fis[10] = tf.hob_lba_high;
    fis[12] = tf.count;
    fis[13] = tf.hob_count;
    mem.write(fb + rfis::D2H, &fis);
}

/// Writes a PIO setup FIS (data-in) whose ending status Linux reads.
fn write_pio_setup(mem: &mut dyn DmaMemory, fb: u64, end_status: u8) {
    let mut fis = [0u8; 20];
    fis[0] = 0x5F;
    fis[1] = 0x20 | 0x40; // device to host, interrupt
    fis[2] = status::DRDY | status::DSC | status::DRQ;
    fis[15] = end_status;
    mem.write(fb + rfis::PIO_SETUP, &fis);
}

/// A command's physical region descriptor table.
struct Prdt {
    base: u64,
    entries: usize,
}

/// Most bytes one PRDT entry describes (DBC is 22 bits).
const MAX_PRD_BYTES: u32 = 1 << 22;

impl Prdt {
    /// The regions covering at least `len` bytes (fewer if the table is shorter), and whether an
    /// entry with the interrupt bit was used.
    fn regions(&self, mem: &mut dyn DmaMemory, len: u64) -> Result<(Vec<Region>, bool), Fault> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut irq = false;
        for i in 0..self.entries {
            if total >= len {
                break;
            }
            let mut e = [0u8; 16];
            if !mem.read(self.base + 16 * i as u64, &mut e) {
                return Err(Fault(port::IS_HBFS));
            }
            let addr = (u64::from(u32_at(&e, 0)) & !1) | u64::from(u32_at(&e, 4)) << 32;
            let dw3 = u32_at(&e, 12);
            let count = ((dw3 & (MAX_PRD_BYTES - 1)) | 1) + 1;
            irq |= dw3 & (1 << 31) != 0;
            out.push(Region { addr, len: count });
            total += u64::from(count);
        }
        Ok((out, irq))
    }

    /// Moves `len` bytes produced by `fill(piece, offset)` into memory. The outer error is a fetch
    /// fault; the inner one a PxIS bit (overflow, host bus data error) or an ATA error.
    #[allow(clippy::type_complexity)]
    fn scatter(
        &self,
        mem: &mut dyn DmaMemory,
        len: u64,
        mut fill: impl FnMut(&mut [u8], u64) -> Result<(), u8>,
    ) -> Result<(Result<(), u32>, u32), Fault> {
        let (regions, irq) = self.regions(mem, len)?;
        let mut pos = 0u64;
        let r = to_memory(mem, &regions, len, |piece| {
            let at = pos;
            pos += piece.len() as u64;
            fill(piece, at)
        });
        Ok((map_dma(r), if irq { port::IS_DPS } else { 0 }))
    }

    /// Moves `len` bytes from memory to `drain(piece, offset)`.
    #[allow(clippy::type_complexity)]
    fn gather(
        &self,
        mem: &mut dyn DmaMemory,
        len: u64,
        mut drain: impl FnMut(&[u8], u64) -> Result<(), u8>,
    ) -> Result<(Result<(), u32>, u32), Fault> {
        let (regions, irq) = self.regions(mem, len)?;
        let mut pos = 0u64;
        let r = from_memory(mem, &regions, len, |piece| {
            let at = pos;
            pos += piece.len() as u64;
            drain(piece, at)
        });
        Ok((map_dma(r), if irq { port::IS_DPS } else { 0 }))
    }
}

/// A transfer's result: PxIS bits for controller errors (all above bit 23), or the ATA error value.
fn map_dma(r: Result<u64, DmaError>) -> Result<(), u32> {
    match r {
        Ok(_) => Ok(()),
        Err(DmaError::Short) => Err(port::IS_OFS),
        Err(DmaError::Memory) => Err(port::IS_HBDS),
        Err(DmaError::Device(e)) => Err(u32::from(e)),
    }
}

impl PciFunction for Ahci {
    fn name(&self) -> &str {
        "ich9-ahci"
    }

    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn config_write(&mut self, off: usize, data: &[u8]) -> Vec<BarChange> {
        let ch = self.cfg.write(off, data);
        self.update_irq(false);
        ch
    }

    fn reset(&mut self) -> Vec<BarChange> {
        let ch = self.cfg.reset();
        self.hba_reset();
        self.msi_out.clear();
        self.condition = false;
        self.update_irq(false);
        ch
    }

    fn bar_read(&mut self, ctx: &mut DeviceCtx<'_>, window: u8, off: u64, data: &mut [u8]) {
        self.advance(ctx.now);
        if window != 5 {
            data.fill(0xFF);
            return;
        }
        for (i, b) in data.iter_mut().enumerate() {
            let o = off + i as u64;
            *b = self.read_reg(o & !3).to_le_bytes()[(o & 3) as usize];
        }
    }

    fn bar_write(&mut self, ctx: &mut DeviceCtx<'_>, window: u8, off: u64, data: &[u8]) {
        self.advance(ctx.now);
        if window != 5 || off & 3 != 0 {
            return;
        }
        // Dword writes (a qword write is two); narrower writes are ignored.
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            self.write_reg(off + 4 * i as u64, v);
        }
        if self.dma_pending() || self.next_deadline().is_some() {
            ctx.requests.reschedule = true;
        }
    }

    fn intx(&self) -> bool {
        self.intx
    }

    fn dma_pending(&self) -> bool {
        self.cfg.u16(reg::COMMAND) & chipset::pci::CMD_MASTER != 0
            && self.ports.iter().any(|p| {
                (p.sig_fis && p.cmd & port::CMD_FRE != 0)
                    || (p.cmd & port::CMD_ST != 0 && p.ci & !p.running != 0)
            })
    }

    fn run_dma(&mut self, mem: &mut dyn DmaMemory) {
        if !self.dma_pending() {
            return;
        }
        let before: Vec<u32> = self.ports.iter().map(|p| p.is & p.ie).collect();
        for n in 0..self.ports.len() {
            self.process_port(n, mem);
        }
        let event = self.ports.iter().zip(before).any(|(p, b)| p.is & p.ie & !b != 0);
        self.update_irq(event);
    }

    fn take_msi(&mut self) -> Vec<MsiMessage> {
        std::mem::take(&mut self.msi_out)
    }

    // The board asks the function, not the inherent methods: without these two the board's deadline
    // loop would never complete a command.
    fn next_deadline(&self) -> Option<VirtTime> {
        Ahci::next_deadline(self)
    }

    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        Ahci::advance(self, ctx.now);
    }
}

impl Snapshot for Ahci {
    type Restored = Vec<BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        self.cfg.save(w);
        w.u32(self.ghc);
        w.u32(self.is);
        w.u64(self.now.0);
        w.bool(self.intx);
        w.bool(self.condition);
        w.u32(self.msi_out.len() as u32);
        for m in &self.msi_out {
            w.u64(m.address);
            w.u32(m.data);
        }
        w.u32(self.ports.len() as u32);
        for p in &self.ports {
            p.save(w);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        let mut w = SnapshotWriter::new();
        self.save(&mut w);
        let before = w.finish();
        let res = self.load(r);
        if res.is_err() {
            // A snapshot that does not read back whole changes nothing: what this controller itself
            // wrote reads back.
            let _ = self.load(&mut SnapshotReader::new(&before));
        }
        res
    }
}

impl Ahci {
    fn load(&mut self, r: &mut SnapshotReader<'_>) -> Result<Vec<BarChange>, SnapshotError> {
        r.tag(self.name())?;
        let mut cfg = self.cfg.clone();
        let ch = cfg.restore(r)?;
        let (ghc, is, now, intx, condition) = (r.u32()?, r.u32()?, VirtTime(r.u64()?), r.bool()?, r.bool()?);
        let n = r.u32()? as usize;
        if n > MAX_MSI_QUEUE {
            return Err(SnapshotError::Invalid(format!("AHCI: {n} queued MSI messages")));
        }
        let mut msi_out = Vec::with_capacity(n);
        for _ in 0..n {
            msi_out.push(MsiMessage { address: r.u64()?, data: r.u32()? });
        }
        if r.u32()? as usize != self.ports.len() {
            return Err(SnapshotError::Invalid("AHCI: port count".into()));
        }
        let mut loaded = Vec::with_capacity(self.ports.len());
        for p in &mut self.ports {
            loaded.push(p.load(r)?);
        }
        for (p, l) in self.ports.iter_mut().zip(loaded) {
            p.apply(l);
        }
        self.cfg = cfg;
        (self.ghc, self.is, self.now, self.intx, self.condition) = (ghc, is, now, intx, condition);
        self.msi_out = msi_out;
        Ok(ch)
    }
}

// ---------------------------------------------------------------- snapshots

/// Most completions a restored port may have queued (one per slot and one reset).
const MAX_COMPLETIONS: usize = 33;

/// A port's registers and queue as read from a snapshot, applied only once everything has read back.
struct PortState {
    regs: [u32; 11],
    clb: u64,
    fb: u64,
    done: Vec<Completion>,
    busy_until: VirtTime,
    sig_fis: bool,
}

fn opt_u8(w: &mut SnapshotWriter, v: Option<u8>) {
    w.bool(v.is_some());
    w.u8(v.unwrap_or(0));
}

fn load_opt_u8(r: &mut SnapshotReader<'_>, max: u8) -> Result<Option<u8>, SnapshotError> {
    let (some, v) = (r.bool()?, r.u8()?);
    if v > max {
        return Err(SnapshotError::Invalid(format!("AHCI: slot or tag {v}")));
    }
    Ok(some.then_some(v))
}

impl Port {
    fn save(&self, w: &mut SnapshotWriter) {
        w.tag("ahci-port");
        w.bool(self.drive.is_some());
        if let Some(d) = &self.drive {
            d.save_state(w);
        }
        w.u64(self.clb);
        w.u64(self.fb);
        let regs = [
            self.is,
            self.ie,
            self.cmd,
            self.tfd,
            self.sig,
            self.sctl,
            self.serr,
            self.sact,
            self.ci,
            self.running,
            self.queued,
        ];
        for v in regs {
            w.u32(v);
        }
        w.u32(self.done.len() as u32);
        for c in &self.done {
            w.u64(c.at.0);
            opt_u8(w, c.slot);
            opt_u8(w, c.tag);
            w.u8(c.status);
            w.u8(c.error);
            w.u32(c.is);
            w.bool(c.sig.is_some());
            w.u32(c.sig.unwrap_or(0));
        }
        w.u64(self.busy_until.0);
        w.bool(self.sig_fis);
    }

    /// Reads [`Port::save`]; the drive state is restored at once (the drive must be where the snapshot
    /// had it), the registers are returned for [`Port::apply`].
    fn load(&mut self, r: &mut SnapshotReader<'_>) -> Result<PortState, SnapshotError> {
        r.tag("ahci-port")?;
        match (r.bool()?, self.drive.as_mut()) {
            (false, None) => {}
            (true, Some(d)) => d.restore_state(r)?,
            _ => {
                return Err(SnapshotError::Invalid(
                    "AHCI: the snapshot's drives are not the machine's".into(),
                ));
            }
        }
        let (clb, fb) = (r.u64()?, r.u64()?);
        let mut regs = [0u32; 11];
        for v in &mut regs {
            *v = r.u32()?;
        }
        let n = r.u32()? as usize;
        if n > MAX_COMPLETIONS {
            return Err(SnapshotError::Invalid(format!("AHCI: {n} queued completions")));
        }
        let mut done = Vec::with_capacity(n);
        for _ in 0..n {
            let at = VirtTime(r.u64()?);
            let slot = load_opt_u8(r, 31)?;
            let tag = load_opt_u8(r, 31)?;
            let (status, error, is) = (r.u8()?, r.u8()?, r.u32()?);
            let (has_sig, sig) = (r.bool()?, r.u32()?);
            done.push(Completion { at, slot, tag, status, error, is, sig: has_sig.then_some(sig) });
        }
        Ok(PortState { regs, clb, fb, done, busy_until: VirtTime(r.u64()?), sig_fis: r.bool()? })
    }

    fn apply(&mut self, s: PortState) {
        [
            self.is,
            self.ie,
            self.cmd,
            self.tfd,
            self.sig,
            self.sctl,
            self.serr,
            self.sact,
            self.ci,
            self.running,
            self.queued,
        ] = s.regs;
        (self.clb, self.fb, self.done, self.busy_until, self.sig_fis) =
            (s.clb, s.fb, s.done, s.busy_until, s.sig_fis);
    }
}

#[cfg(test)]
mod tests;
