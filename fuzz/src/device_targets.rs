//! The device targets: a random sequence of register accesses, time steps, resets and snapshot round
//! trips against one device, with the device's own side channels (interrupt acknowledge, DMA, MSI)
//! exercised in between.
//!
//! Input layout: byte 0 picks the device; the rest is a stream of operations, each one opcode byte
//! followed by its operands (missing bytes read as zero). Properties checked besides "no panic":
//! - after `advance` at time `now`, the device's next deadline is later than `now` (a deadline that
//!   stays in the past would make the machine's run loop spin without running the guest);
//! - a snapshot restored into a fresh device saves to the same bytes;
//! - the DMA a device performs stays within the bounded fake memory (it cannot allocate without bound).

use chipset::pci::PciFunction;
use chipset::{
    DebugConsole, DmaMemory, DualPic, Edu, FwCfg, I8042, IoApic, LocalApic, Pit8254, PmDevice, Port92,
    ResetControl, Rtc, TestDev, Uart16550,
};
use vmcore::snapshot::{SnapshotReader, SnapshotWriter};
use vmcore::{Device, DeviceCtx, IrqLevels, MachineRequests, VirtTime};

use crate::rng::Rng;

/// Reads operands from the input; past its end every read is zero.
struct Ops<'a> {
    d: &'a [u8],
    i: usize,
}

impl Ops<'_> {
    fn done(&self) -> bool {
        self.i >= self.d.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes([
            self.u8(),
            self.u8(),
            self.u8(),
            self.u8(),
            self.u8(),
            self.u8(),
            self.u8(),
            self.u8(),
        ])
    }
}

/// A fake guest memory of 64 KiB at physical 0 for devices that do DMA; accesses outside fail.
struct FakeMem(Vec<u8>);

impl DmaMemory for FakeMem {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        match usize::try_from(addr).ok().and_then(|a| self.0.get(a..a.checked_add(buf.len())?)) {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => {
                buf.fill(0xff);
                false
            }
        }
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        match usize::try_from(addr).ok().and_then(|a| self.0.get_mut(a..a.checked_add(data.len())?)) {
            Some(s) => {
                s.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

/// One fuzzable device: the `Device` trait plus what the board does with it between accesses.
enum Dut {
    Plain(Box<dyn Device>, fn() -> Box<dyn Device>),
    Pic(DualPic),
    Lapic(LocalApic),
    IoApic(IoApic),
    FwCfg(FwCfg),
    /// A PCI function serving its own BARs (edu, AHCI), with its constructor.
    Pci(Box<dyn PciFunction>, fn() -> Box<dyn PciFunction>),
    /// The PIIX3 IDE controller (a port device with a bus-master engine), with its constructor.
    Ide(Box<storage::IdeController>),
}

/// Names of the devices, by the index byte 0 selects (modulo the count).
pub const DEVICES: &[&str] = &[
    "uart", "pic", "pit", "rtc", "i8042", "port92", "ioapic", "lapic", "pm", "reset", "fw_cfg", "testdev",
    "debugcon", "edu", "ide", "ahci",
];

/// A 1 MiB RAM disk.
fn disk() -> storage::Drive {
    storage::Drive::disk(Box::new(storage::MemBackend::new(1 << 20)), "FUZZ")
}

/// The IDE controller with a disk as primary master and a CD-ROM (with media) as secondary master.
fn ide() -> storage::IdeController {
    let mut c = storage::IdeController::new();
    c.attach(0, 0, disk());
    let iso = storage::MemBackend::new(1 << 20);
    c.attach(1, 0, storage::Drive::cdrom(Some(Box::new(iso)), "FUZZCD"));
    c.set_bus_master_enabled(true);
    c
}

fn make(index: usize) -> Dut {
    fn b<D: Device + 'static>(d: D) -> Box<dyn Device> {
        Box::new(d)
    }
    let plain = |f: fn() -> Box<dyn Device>| Dut::Plain(f(), f);
    match index % DEVICES.len() {
        0 => plain(|| b(Uart16550::new("uart-com1", 4, Box::new(|_| {})))),
        1 => Dut::Pic(DualPic::new()),
        2 => plain(|| b(Pit8254::new())),
        3 => plain(|| b(Rtc::new(1_767_225_600))),
        4 => plain(|| b(I8042::new())),
        5 => plain(|| b(Port92::new())),
        6 => Dut::IoApic(IoApic::new(0)),
        7 => Dut::Lapic(LocalApic::new(0, 1_000_000_000, 1_000_000_000)),
        8 => plain(|| b(PmDevice::new(true))),
        9 => plain(|| b(ResetControl::new())),
        10 => Dut::FwCfg(FwCfg::new(64 << 10, 1)),
        11 => plain(|| b(TestDev::new())),
        12 => plain(|| b(DebugConsole::new(Box::new(|_| {})))),
        13 => Dut::Pci(Box::new(Edu::new()), || Box::new(Edu::new())),
        14 => Dut::Ide(Box::new(ide())),
        _ => Dut::Pci(Box::new(storage::Ahci::new(vec![Some(disk()), None])), || {
            Box::new(storage::Ahci::new(vec![Some(disk()), None]))
        }),
    }
}

impl Dut {
    fn dev(&mut self) -> &mut dyn Device {
        match self {
            Dut::Plain(d, _) => d.as_mut(),
            Dut::Pic(d) => d,
            Dut::Lapic(d) => d,
            Dut::IoApic(d) => d,
            Dut::FwCfg(d) => d,
            Dut::Ide(d) => d.as_mut(),
            // A PCI function is not a `Device`: its accesses go through `config_*`/`bar_*` below.
            Dut::Pci(..) => unreachable!("PCI functions are handled apart"),
        }
    }

    fn fresh(&self) -> Dut {
        match self {
            Dut::Plain(_, f) => Dut::Plain(f(), *f),
            Dut::Pic(_) => Dut::Pic(DualPic::new()),
            Dut::Lapic(_) => Dut::Lapic(LocalApic::new(0, 1_000_000_000, 1_000_000_000)),
            Dut::IoApic(_) => Dut::IoApic(IoApic::new(0)),
            Dut::FwCfg(_) => Dut::FwCfg(FwCfg::new(64 << 10, 1)),
            Dut::Pci(_, f) => Dut::Pci(f(), *f),
            Dut::Ide(_) => Dut::Ide(Box::new(ide())),
        }
    }

    fn save(&mut self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        match self {
            Dut::Pci(e, _) => e.save(&mut w),
            _ => self.dev().save(&mut w),
        }
        w.finish()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut r = SnapshotReader::new(bytes);
        match self {
            Dut::Pci(e, _) => e.restore(&mut r).map(|_| ()),
            _ => self.dev().restore(&mut r),
        }
        .map_err(|e| format!("{e:?}"))
    }

    fn deadline(&mut self) -> Option<VirtTime> {
        match self {
            Dut::Pci(e, _) => e.next_deadline(),
            _ => self.dev().next_deadline(),
        }
    }
}

/// Runs one operation stream against the device `input[0]` selects.
pub fn device(input: &[u8]) -> Result<u64, String> {
    let Some((&which, rest)) = input.split_first() else { return Ok(0) };
    let mut dut = make(which as usize);
    let mut ops = Ops { d: rest, i: 0 };
    let mut irq = IrqLevels::default();
    let mut requests = MachineRequests::default();
    let mut now = VirtTime(0);
    let mut mem = FakeMem(vec![0; 64 << 10]);
    let mut sig: u64 = which as u64 % DEVICES.len() as u64;
    let mut steps = 0;
    while !ops.done() && steps < 512 {
        steps += 1;
        let op = ops.u8();
        let size = 1usize << ((op >> 4) & 3);
        let mut ctx = DeviceCtx { now, irq: &mut irq, requests: &mut requests };
        match op & 0xf {
            // Port read / write at an offset within a window of 0x1000 ports.
            0 | 1 => {
                let off = ops.u16() & 0xfff;
                let mut data = ops.u64().to_le_bytes();
                match &mut dut {
                    Dut::Pci(e, _) => {
                        // Configuration space for a PCI function.
                        let off = usize::from(off & 0xff);
                        let len = size.min(256 - off);
                        if op & 1 == 0 {
                            e.config_read(off, &mut data[..len]);
                        } else {
                            let _ = e.config_write(off, &data[..len]);
                        }
                    }
                    d => {
                        if op & 1 == 0 {
                            d.dev().pio_read(&mut ctx, off, &mut data[..size]);
                        } else {
                            d.dev().pio_write(&mut ctx, off, &data[..size]);
                        }
                    }
                }
                sig = sig.rotate_left(5) ^ u64::from(data[0]);
            }
            // MMIO read / write within a 1 MiB window.
            2 | 3 => {
                let off = (u64::from(ops.u16()) << 4 | u64::from(ops.u8() & 0xf)) & 0xf_ffff;
                let mut data = ops.u64().to_le_bytes();
                match &mut dut {
                    Dut::Pci(e, _) => {
                        // BAR0 for edu; AHCI serves its registers in BAR5.
                        let window = if off & 0x8_0000 != 0 { 5 } else { 0 };
                        let off = off & 0x7_ffff;
                        if op & 1 == 0 {
                            e.bar_read(&mut ctx, window, off, &mut data[..size]);
                        } else {
                            e.bar_write(&mut ctx, window, off, &data[..size]);
                        }
                    }
                    d => {
                        if op & 1 == 0 {
                            d.dev().mmio_read(&mut ctx, off, &mut data[..size]);
                        } else {
                            d.dev().mmio_write(&mut ctx, off, &data[..size]);
                        }
                    }
                }
                sig = sig.rotate_left(5) ^ u64::from(data[0]);
            }
            // Time passes; the device is advanced as the board would.
            4 => {
                now = now.add_nanos(u64::from(ops.u16()) << (ops.u8() & 15));
                if let Some(d) = dut.deadline()
                    && d <= now
                {
                    let mut ctx = DeviceCtx { now, irq: &mut irq, requests: &mut requests };
                    match &mut dut {
                        Dut::Pci(e, _) => e.advance(&mut ctx),
                        d => d.dev().advance(&mut ctx),
                    }
                    if let Some(after) = dut.deadline()
                        && after <= now
                    {
                        return Err(format!(
                            "{}: after advance at {} ns the next deadline is {} ns: the run loop would spin",
                            DEVICES[which as usize % DEVICES.len()],
                            now.as_nanos(),
                            after.as_nanos()
                        ));
                    }
                }
            }
            // The board's side channels.
            5 => match &mut dut {
                Dut::Pic(p) => {
                    p.set_line(u32::from(ops.u8() & 15), ops.u8() & 1 != 0);
                    if p.has_interrupt() {
                        sig ^= u64::from(p.acknowledge());
                    }
                }
                Dut::Lapic(l) => {
                    match ops.u8() & 3 {
                        0 => l.accept(ops.u8(), ops.u8() & 1 != 0),
                        1 => {
                            let _ = l.write_reg(now, u32::from(ops.u8()), ops.u64());
                        }
                        2 => {
                            let _ = l.read_reg(now, u32::from(ops.u8()));
                        }
                        _ => l.set_x2apic_mode(ops.u8() & 1 != 0),
                    }
                    if l.has_interrupt().is_some() {
                        sig ^= u64::from(l.acknowledge());
                    }
                    let _ = (l.take_eois(), l.take_ipis(), l.take_nmi());
                }
                Dut::IoApic(io) => {
                    io.set_line(u32::from(ops.u8()), ops.u8() & 1 != 0);
                    io.eoi(ops.u8());
                    sig ^= io.take_messages().len() as u64;
                }
                Dut::FwCfg(f) => {
                    if let Some(desc) = f.take_dma_request() {
                        f.run_dma(desc, &mut mem);
                    }
                }
                Dut::Ide(c) => {
                    if c.dma_pending() {
                        c.run_dma(&mut mem);
                    }
                }
                Dut::Pci(e, _) => {
                    if e.dma_pending() {
                        e.run_dma(&mut mem);
                    }
                    sig ^= e.take_msi().len() as u64 ^ u64::from(e.intx());
                }
                Dut::Plain(d, _) => {
                    let n = usize::from(ops.u8() & 7);
                    let bytes: Vec<u8> = (0..n).map(|_| ops.u8()).collect();
                    d.host_input(&mut ctx, &bytes);
                }
            },
            // Snapshot round trip: restore into a fresh device, which must save the same bytes, and
            // go on with the restored one.
            6 => {
                let a = dut.save();
                let mut fresh = dut.fresh();
                fresh.restore(&a).map_err(|e| format!("restoring a fresh snapshot failed: {e}"))?;
                let b = fresh.save();
                if a != b {
                    return Err(format!(
                        "{}: snapshot round trip differs ({} vs {} bytes)",
                        DEVICES[which as usize % DEVICES.len()],
                        a.len(),
                        b.len()
                    ));
                }
                dut = fresh;
            }
            // Reset.
            7 => match &mut dut {
                Dut::Pci(e, _) => {
                    let _ = e.reset();
                }
                d => d.dev().reset(),
            },
            // A corrupt snapshot must be refused or give some state, never a panic.
            8 => {
                let mut a = dut.save();
                if !a.is_empty() {
                    let at = usize::from(ops.u16()) % a.len();
                    a[at] ^= ops.u8() | 1;
                    if ops.u8() & 1 == 0 {
                        a.truncate(at);
                    }
                }
                let mut fresh = dut.fresh();
                if fresh.restore(&a).is_ok() {
                    dut = fresh;
                }
            }
            _ => {}
        }
        sig = sig.wrapping_mul(31) ^ u64::from(irq.level);
        requests = MachineRequests::default();
        irq.rising = 0;
        irq.changed = 0;
    }
    Ok(sig)
}

/// A seed: a device and a stream of plausible operations (small offsets, common sizes).
pub fn seed_device(r: &mut Rng) -> Vec<u8> {
    let mut v = vec![r.byte()];
    for _ in 0..(8 + r.below(64)) {
        let op = (r.below(9) as u8) | ((r.below(3) as u8) << 4);
        v.push(op);
        match op & 0xf {
            0 | 1 => {
                v.extend((r.below(16) as u16).to_le_bytes());
                v.extend(r.bytes(8));
            }
            2 | 3 => {
                v.extend(((r.below(0x100) as u16) & 0xfffc).to_le_bytes());
                v.push(0);
                v.extend(r.bytes(8));
            }
            _ => v.extend(r.bytes(4)),
        }
    }
    v
}
