//! The board: guest RAM, the physical address map, the port I/O space, the devices and the interrupt
//! wiring. It implements [`cpu::CpuBus`], so the CPU reaches devices only through it.

use crate::clock::Clock;
use chipset::msi::{MSI_WINDOW_BASE, MSI_WINDOW_SIZE, MsiMessage, X86Interrupt, delivery};
use chipset::pci::{PciBarEvent, PciFunction, Piix3Isa, pirq_of};
use chipset::{DmaMemory, DualPic, FwCfg, IoApic, LocalApic, PciBus};
use cpu::CpuBus;
use mmu::{
    AddressMap, Device, DeviceCtx, DeviceId, GuestRam, IrqLevels, MachineRequests, RegionKind, VirtTime,
};
use std::ptr::NonNull;

/// Device id standing for the I/O APIC in the address map.
pub const IOAPIC_DEV: DeviceId = DeviceId(u32::MAX - 1);
/// Device id standing for the local APIC in the address map.
pub const LAPIC_DEV: DeviceId = DeviceId(u32::MAX - 2);
/// Device ids from here up to `PCI_FN_DEV + 0x800` stand for a decode window of a PCI function that serves
/// its own BARs: `PCI_FN_DEV + devfn * 8 + window` (see [`Board::add_pci_device`]).
const PCI_FN_DEV: u32 = u32::MAX - 0x1000;

fn pci_fn_id(devfn: u8, window: u8) -> DeviceId {
    DeviceId(PCI_FN_DEV + u32::from(devfn) * 8 + u32::from(window & 7))
}

/// The (devfn, window) a [`pci_fn_id`] stands for.
fn pci_fn_of(id: DeviceId) -> Option<(u8, u8)> {
    let n = id.0.checked_sub(PCI_FN_DEV).filter(|n| *n < 0x800)?;
    Some(((n / 8) as u8, (n % 8) as u8))
}

/// Most interrupt messages one DMA transfer may carry (a 4 KiB burst into the MSI window is 1024).
const MAX_DMA_MSI: usize = 4096;

/// The local APIC's TSC and timer input clock: 1 GHz, the TSC's rate (one tick per virtual ns).
const APIC_HZ: u64 = 1_000_000_000;

fn new_lapic() -> LocalApic {
    let mut l = LocalApic::new(0, APIC_HZ, APIC_HZ);
    // The BSP's LINT0 starts in ExtINT mode (virtual-wire), as QEMU does, so that a guest that never
    // touches the APIC gets the 8259's interrupts.
    l.set_virtual_wire();
    l
}

/// Who answers a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortOwner {
    /// Nobody: reads all ones, writes dropped.
    None,
    /// The PIC pair (a typed device, since the CPU also acknowledges interrupts through it).
    Pic,
    /// A device in the table.
    Dev(u32),
    /// The PCI configuration ports (a typed device, since the board applies its BAR changes).
    Pci,
    /// Port 0xF0: the PC's coprocessor-error latch (a write clears FERR#/IRQ13 and asserts IGNNE#).
    FpuErr,
    /// QEMU's fw_cfg at 0x510-0x51B (a typed device, since its DMA engine reaches guest RAM).
    FwCfg,
}

/// PCI INTx lines PIRQA-D: GSIs 16-19 in [`IrqLevels`] (asserted = high there; wired active low to the
/// I/O APIC).
const PCI_LINES: u32 = 0xF << 16;

/// A hook called on every interrupt the CPU acknowledges: (vector, instruction count at the board's last
/// sync with the CPU). For determinism checks and tracing; `None` costs one branch.
pub type IrqTraceHook = Box<dyn FnMut(u8, u64)>;

#[derive(Clone, Copy, Debug)]
struct PortRange {
    owner: PortOwner,
    start: u16,
    offset_base: u16,
}

/// The board.
pub struct Board {
    /// Guest RAM.
    pub ram: GuestRam,
    /// Physical address map.
    pub map: AddressMap,
    /// Devices on the ISA/PCI buses (indexed by `DeviceId`).
    pub devices: Vec<Box<dyn Device>>,
    /// The 8259A pair.
    pub pic: DualPic,
    /// The I/O APIC (MMIO at 0xFEC00000).
    pub ioapic: IoApic,
    /// CPU 0's local APIC (MMIO at 0xFEE00000, x2APIC MSRs).
    pub lapic: LocalApic,
    /// Interrupt line levels.
    pub irq: IrqLevels,
    /// Requests from devices (reset, exit, A20...).
    pub requests: MachineRequests,
    /// The virtual clock.
    pub clock: Clock,
    /// The CPU's instruction count at the last sync (for device time).
    pub icount: u64,
    /// An NMI taken from the local APIC, waiting for the CPU.
    nmi_latched: bool,
    /// IGNNE# to the CPU (asserted by a write to port 0xF0 while FERR# is active).
    ignne: bool,
    ports: Box<[u16]>,
    port_ranges: Vec<PortRange>,
    /// PCI bus 0 behind ports 0xCF8-0xCFF (empty until functions are added).
    pub pci: PciBus,
    /// Which device serves each PCI decode window: (devfn, window index, device).
    pci_windows: Vec<(u8, u8, DeviceId)>,
    /// PCI functions that serve their own BARs, DMA and interrupts ([`Board::add_pci_device`]).
    pci_devices: Vec<u8>,
    /// Interrupt messages delivered to the local APIC (MSI and DMA writes into the MSI window).
    pub msi_delivered: u64,
    /// ISA IRQ each PIRQ line is routed to for the 8259s (PIIX3 PIRQRC), cached from config space.
    pirq_route: [Option<u8>; 4],
    /// Called on every acknowledged interrupt (see [`IrqTraceHook`]).
    pub irq_trace: Option<IrqTraceHook>,
    /// Set-up a BIOS would redo after every reset: PIIX4 PM base to program and enable.
    pub pm_base_preset: Option<u16>,
    /// QEMU's fw_cfg device (ports 0x510-0x51B, always present as on QEMU's `pc`); the machine adds its
    /// files and direct-boot items.
    pub fw_cfg: FwCfg,
}

impl Board {
    /// A board with `ram` and an empty map.
    pub fn new(ram: GuestRam, map: AddressMap, clock: Clock) -> Board {
        let fw_cfg = FwCfg::new(ram.len(), 1);
        let mut b = Board {
            ram,
            map,
            devices: Vec::new(),
            pic: DualPic::new(),
            ioapic: IoApic::new(0),
            lapic: new_lapic(),
            irq: IrqLevels::default(),
            requests: MachineRequests::default(),
            clock,
            icount: 0,
            nmi_latched: false,
            ignne: false,
            ports: vec![0u16; 65536].into_boxed_slice(),
            port_ranges: vec![PortRange { owner: PortOwner::None, start: 0, offset_base: 0 }],
            pci: PciBus::new(),
            pci_windows: Vec::new(),
            pci_devices: Vec::new(),
            msi_delivered: 0,
            pirq_route: [None; 4],
            irq_trace: None,
            pm_base_preset: None,
            fw_cfg,
        };
        b.claim_ports(0x510, 12, PortOwner::FwCfg, 0);
        b
    }

    /// Routes the PCI configuration ports to [`Board::pci`]: CONFIG_ADDRESS at 0xCF8 (and 0xCFA-0xCFB),
    /// CONFIG_DATA at 0xCFC-0xCFF. Port 0xCF9 is left for the reset control register.
    pub fn map_pci_ports(&mut self) {
        self.claim_ports(0xcf8, 1, PortOwner::Pci, 0);
        self.claim_ports(0xcfa, 6, PortOwner::Pci, 2);
        // The idle level of the active-low PCI lines reaches the I/O APIC on the first propagation.
        self.irq.changed |= PCI_LINES;
        self.propagate_irqs();
    }

    /// Puts PCI function `f` at `devfn` on bus 0; `windows` says which device serves each of its decode
    /// windows (BAR n = window n; chipset windows from [`chipset::pci::FIRST_CHIPSET_WINDOW`]). Port
    /// windows are routed with offsets from 0; a window that would overlap RAM, ROM or another device is
    /// left unmapped.
    pub fn add_pci_function(&mut self, devfn: u8, f: Box<dyn PciFunction>, windows: &[(u8, DeviceId)]) {
        self.pci.add(devfn, f);
        for &(w, id) in windows {
            self.pci_windows.push((devfn, w, id));
        }
    }

    /// Puts PCI device `f` at `devfn`: a function that serves its own BARs (through
    /// [`PciFunction::bar_read`]/[`PciFunction::bar_write`]), drives INTx# (the board ORs the functions on
    /// each PIRQ line, GSIs 16-19), runs bus-master transfers over guest memory when it has one waiting
    /// and sends message-signalled interrupts; the board services it after every access.
    pub fn add_pci_device(&mut self, devfn: u8, f: Box<dyn PciFunction>) {
        let bars: Vec<u8> = (0..6u8).filter(|i| f.config().bar(usize::from(*i)).is_some()).collect();
        self.pci.add(devfn, f);
        self.pci_windows.retain(|(d, _, _)| *d != devfn);
        for w in bars {
            self.pci_windows.push((devfn, w, pci_fn_id(devfn, w)));
        }
        if !self.pci_devices.contains(&devfn) {
            self.pci_devices.push(devfn);
        }
        self.service_pci_devices();
    }

    /// After any access to a PCI device: runs waiting transfers, delivers the interrupt messages and
    /// refreshes the INTx# lines.
    fn service_pci_devices(&mut self) {
        let mut lines = 0u32;
        let mut msgs = Vec::new();
        for i in 0..self.pci_devices.len() {
            let devfn = self.pci_devices[i];
            let Board { pci, ram, map, requests, .. } = self;
            let Some(f) = pci.function_mut(devfn) else { continue };
            if f.dma_pending() {
                let mut mem = RamDma { ram, map, msi: Vec::new() };
                f.run_dma(&mut mem);
                msgs.append(&mut mem.msi);
                // The data may land on pages holding decoded code.
                requests.flush_tlb = true;
            }
            msgs.extend(f.take_msi());
            let pin = f.config().u8(chipset::pci::reg::INTERRUPT_PIN);
            if f.intx() && (1..=4).contains(&pin) {
                lines |= 1 << (16 + u32::from(pirq_of(devfn >> 3, pin)));
            }
        }
        for m in msgs {
            self.bus_master_dword(m);
        }
        if !self.pci_devices.is_empty() {
            for p in 16..20 {
                self.irq.set(p, lines & (1 << p) != 0);
            }
        }
        self.propagate_irqs();
    }

    /// A dword memory write by a bus master (an MSI): into the MSI window it is an interrupt message to
    /// the local APIC; elsewhere an ordinary write, dropped where there is no RAM (a master abort).
    fn bus_master_dword(&mut self, m: MsiMessage) {
        match m.x86() {
            Some(irq) => self.deliver_interrupt_message(irq),
            None => {
                let Board { ram, map, .. } = self;
                let mut mem = RamDma { ram, map, msi: Vec::new() };
                if mem.write(m.address, &m.data.to_le_bytes()) {
                    self.requests.flush_tlb = true;
                }
            }
        }
    }

    /// An interrupt message (MSI format, SDM vol. 3A 11.11) to the one local APIC: dropped unless the
    /// destination names it (APIC ID, logical destination or broadcast 0xFF). Fixed and lowest-priority
    /// messages set IRR (TMR too for level-triggered ones, whose EOI then goes to the I/O APIC like any
    /// level EOI; a level de-assert message does nothing), NMI raises an NMI. SMI (the CPU has no SMM),
    /// INIT (no INIT-without-reset path exists) and ExtINT (only meaningful from an 8259 on LINT0) are
    /// dropped, as are the reserved modes 3 and 6.
    fn deliver_interrupt_message(&mut self, m: X86Interrupt) {
        if !self.lapic.matches_destination(m.dest_logical, m.dest) {
            return;
        }
        match m.delivery_mode {
            delivery::FIXED | delivery::LOWEST_PRIORITY => {
                if m.trigger_level && !m.level_assert {
                    return;
                }
                self.lapic.accept(m.vector, m.trigger_level);
            }
            delivery::NMI => self.lapic.accept_nmi(),
            _ => return,
        }
        self.msi_delivered += 1;
        self.propagate_irqs();
    }

    /// A guest access to decode window `window` of PCI device `devfn`.
    fn pci_bar_access(&mut self, devfn: u8, window: u8, off: u64, data: &mut [u8], write: bool) {
        let now = self.now();
        let Board { pci, irq, requests, .. } = self;
        let Some(f) = pci.function_mut(devfn) else {
            if !write {
                data.fill(0xff);
            }
            return;
        };
        let mut ctx = DeviceCtx { now, irq, requests };
        if write {
            f.bar_write(&mut ctx, window, off, data);
        } else {
            f.bar_read(&mut ctx, window, off, data);
        }
        self.service_pci_devices();
    }

    /// Programs the PIIX4 PM base to `base` and enables its decode, as a BIOS does; remembered in
    /// [`Board::pm_base_preset`] and redone after every reset.
    pub fn preset_pm_base(&mut self, base: u16) {
        self.pm_base_preset = Some(base);
        self.pci_config_write(chipset::pci::DEVFN_PM, 0x40, &u32::from(base | 1).to_le_bytes());
        self.pci_config_write(chipset::pci::DEVFN_PM, 0x80, &[1]);
    }

    /// Host-side configuration write (firmware set-up done by the machine), with its window changes
    /// applied.
    pub fn pci_config_write(&mut self, devfn: u8, offset: usize, data: &[u8]) {
        self.pci.write_config(devfn, offset, data);
        self.apply_pci_changes();
    }

    /// Maps and unmaps the windows the PCI bus reported, and refreshes the PIRQ routing.
    fn apply_pci_changes(&mut self) {
        let mut routes = [None; 4];
        for (n, r) in routes.iter_mut().enumerate() {
            let mut b = [0u8];
            self.pci.read_config(chipset::pci::DEVFN_ISA, chipset::pci::PIRQRC + n, &mut b);
            *r = Piix3Isa::decode_route(b[0]);
        }
        if routes != self.pirq_route {
            self.pirq_route = routes;
            // The 8259 inputs the PCI lines feed changed.
            self.irq.changed |= PCI_LINES;
            self.propagate_irqs();
        }
        for ev in self.pci.take_events() {
            self.apply_pci_event(ev);
        }
        // A configuration write may enable MSI, bus mastering or interrupt disable.
        if !self.pci_devices.is_empty() {
            self.service_pci_devices();
        }
    }

    fn apply_pci_event(&mut self, ev: PciBarEvent) {
        let Some(&(_, _, id)) =
            self.pci_windows.iter().find(|(d, w, _)| *d == ev.devfn && *w == ev.change.window)
        else {
            return;
        };
        let c = ev.change;
        if c.kind.is_io() {
            if let Some(old) = c.old {
                for p in old..(old + c.size).min(0x10000) {
                    let r = self.port_ranges[self.ports[p as usize] as usize];
                    if r.owner == PortOwner::Dev(id.0) && u64::from(r.start) == old {
                        self.ports[p as usize] = 0;
                    }
                }
            }
            if let Some(new) = c.new {
                let free = (new..(new + c.size).min(0x10000)).all(|p| self.ports[p as usize] == 0);
                if free {
                    self.claim_ports(new as u16, c.size as u16, PortOwner::Dev(id.0), 0);
                }
            }
        } else {
            if let Some(old) = c.old
                && self
                    .map
                    .lookup(old)
                    .is_some_and(|r| r.start == old && r.kind == RegionKind::Mmio { device: id })
            {
                self.map.remove(old);
            }
            if let Some(new) = c.new {
                // An overlapping BAR stays unmapped, as the address would decode elsewhere first.
                let _ = self.map.add(new, c.size, RegionKind::Mmio { device: id });
            }
            self.requests.flush_tlb = true;
        }
    }

    /// Adds a device and returns its id.
    pub fn add_device(&mut self, d: Box<dyn Device>) -> DeviceId {
        self.devices.push(d);
        DeviceId(self.devices.len() as u32 - 1)
    }

    fn claim_ports(&mut self, start: u16, len: u16, owner: PortOwner, offset_base: u16) {
        // Reuse an identical range (PCI windows move back and forth) so the table stays small.
        let idx = match self
            .port_ranges
            .iter()
            .position(|r| r.owner == owner && r.start == start && r.offset_base == offset_base)
        {
            Some(i) => i as u16,
            None => {
                self.port_ranges.push(PortRange { owner, start, offset_base });
                (self.port_ranges.len() - 1) as u16
            }
        };
        for p in start as usize..(start as usize + len as usize).min(65536) {
            self.ports[p] = idx;
        }
    }

    /// Routes ports `start..start+len` to device `id`, which sees `port - start + offset_base`.
    pub fn map_ports(&mut self, id: DeviceId, start: u16, len: u16, offset_base: u16) {
        self.claim_ports(start, len, PortOwner::Dev(id.0), offset_base);
    }

    /// Routes the PIC's ports (0x20-0x21, 0xA0-0xA1, ELCR 0x4D0-0x4D1) to the PIC pair.
    pub fn map_pic_ports(&mut self) {
        // Offsets are `port - 0x20` (see the PIC's module docs).
        for (start, len) in [(0x20u16, 2u16), (0xa0, 2), (0x4d0, 2)] {
            self.claim_ports(start, len, PortOwner::Pic, start - 0x20);
        }
        self.claim_ports(0xf0, 1, PortOwner::FpuErr, 0);
    }

    /// Maps MMIO `start..start+size` to device `id`.
    pub fn map_mmio(&mut self, id: DeviceId, start: u64, size: u64) -> Result<(), mmu::map::OverlapError> {
        self.map.add(start, size, RegionKind::Mmio { device: id })
    }

    /// Current virtual time.
    pub fn now(&self) -> VirtTime {
        self.clock.now(self.icount)
    }

    /// Propagates changed interrupt lines to the interrupt controllers.
    fn propagate_irqs(&mut self) {
        if self.irq.changed != 0 || self.irq.rising != 0 {
            // PIRQA-D also reach the 8259 inputs the PIIX3 routes them to (level, merged with the ISA line).
            let mut isa = self.irq;
            for (n, route) in self.pirq_route.iter().enumerate() {
                if let Some(irq) = route {
                    let (from, to) = (1u32 << (16 + n), 1u32 << irq);
                    if self.irq.level & from != 0 {
                        isa.level |= to;
                    }
                    if self.irq.rising & from != 0 {
                        isa.rising |= to;
                    }
                    if self.irq.changed & from != 0 {
                        isa.changed |= to;
                    }
                }
            }
            self.pic.set_irq_levels(&isa);
            // ISA IRQ0 (the PIT) is wired to I/O APIC pin 2, as on every PC with an I/O APIC (and as the
            // MADT's interrupt source override says); the other ISA lines map 1:1.
            let mut io = self.irq;
            for f in [&mut io.level, &mut io.rising, &mut io.changed] {
                let irq0 = *f & 1;
                *f = (*f & !0b101) | (irq0 << 2);
            }
            // PCI INTx# is active low at the I/O APIC pins (the tables declare pins 16-19 level, low).
            io.level ^= PCI_LINES;
            io.rising &= !PCI_LINES;
            self.ioapic.set_irq_levels(&io);
            self.irq.changed = 0;
            self.irq.rising = 0;
        }
        // I/O APIC messages to the local APIC, and level-triggered EOIs back (which may re-deliver).
        for _ in 0..4 {
            let msgs = self.ioapic.take_messages();
            for m in &msgs {
                match m.delivery_mode {
                    0 | 1 => self.lapic.accept(m.vector, m.trigger_level),
                    4 => self.lapic.accept_nmi(),
                    // ExtINT through the I/O APIC, SMI, INIT: not used by this board's guests.
                    _ => {}
                }
            }
            let eois = self.lapic.take_eois();
            for v in &eois {
                self.ioapic.eoi(*v);
            }
            if eois.is_empty() && !self.ioapic.has_messages() {
                break;
            }
        }
        // IPIs the one processor sends to itself (self-IPIs, NMIs to its own ID, broadcasts).
        self.lapic.deliver_own_ipis();
        let intr = self.pic.has_interrupt();
        self.lapic.set_lint(0, intr);
    }

    fn apic_mmio(&mut self, dev: DeviceId, off: u64, data: &mut [u8], write: bool) {
        let now = self.now();
        let Board { ioapic, lapic, irq, requests, .. } = self;
        let mut ctx = DeviceCtx { now, irq, requests };
        let d: &mut dyn Device = if dev == IOAPIC_DEV { ioapic } else { lapic };
        if write {
            d.mmio_write(&mut ctx, off, data);
        } else {
            d.mmio_read(&mut ctx, off, data);
        }
        self.propagate_irqs();
    }

    fn with_device<R>(
        &mut self,
        idx: u32,
        f: impl FnOnce(&mut dyn Device, &mut DeviceCtx<'_>) -> R,
    ) -> Option<R> {
        let now = self.now();
        let Board { devices, irq, requests, .. } = self;
        let dev = devices.get_mut(idx as usize)?;
        let mut ctx = DeviceCtx { now, irq, requests };
        let r = f(dev.as_mut(), &mut ctx);
        self.propagate_irqs();
        Some(r)
    }

    /// Calls `advance` on every device whose deadline has passed, and propagates interrupts.
    pub fn advance_devices(&mut self) {
        let now = self.now();
        let Board { devices, irq, requests, pic, .. } = self;
        for d in devices.iter_mut() {
            if d.next_deadline().is_some_and(|t| t <= now) {
                let mut ctx = DeviceCtx { now, irq, requests };
                d.advance(&mut ctx);
            }
        }
        let mut ctx = DeviceCtx { now, irq, requests };
        if pic.next_deadline().is_some_and(|t| t <= now) {
            pic.advance(&mut ctx);
        }
        if self.lapic.next_deadline().is_some_and(|t| t <= now) {
            let Board { lapic, irq, requests, .. } = self;
            let mut ctx = DeviceCtx { now, irq, requests };
            lapic.advance(&mut ctx);
        }
        self.propagate_irqs();
    }

    /// The earliest device deadline.
    pub fn next_deadline(&self) -> VirtTime {
        self.devices
            .iter()
            .filter_map(|d| d.next_deadline())
            .chain(self.lapic.next_deadline())
            .min()
            .unwrap_or(VirtTime::NEVER)
    }

    /// Host input for device `id` (console bytes), through the machine's one input port.
    pub fn host_input(&mut self, id: DeviceId, data: &[u8]) {
        self.with_device(id.0, |d, ctx| d.host_input(ctx, data));
    }

    /// Resets every device.
    pub fn reset_devices(&mut self) {
        for d in self.devices.iter_mut() {
            d.reset();
        }
        self.pic.reset();
        self.fw_cfg.reset();
        self.ioapic.reset();
        self.lapic = new_lapic();
        self.irq = IrqLevels::default();
        self.pci.reset();
        self.apply_pci_changes();
        if let Some(base) = self.pm_base_preset {
            self.preset_pm_base(base);
        }
        self.irq.changed |= PCI_LINES;
        self.propagate_irqs();
    }

    fn port_io(&mut self, port: u16, data: &mut [u8], write: bool) {
        let r = self.port_ranges[self.ports[port as usize] as usize];
        let off = port.wrapping_sub(r.start).wrapping_add(r.offset_base);
        match r.owner {
            PortOwner::None => {
                if !write {
                    data.fill(0xff);
                }
            }
            PortOwner::FpuErr => {
                if write {
                    // The PC's x87 error logic: a write to 0xF0 drops IRQ13 and asserts IGNNE# until
                    // FERR# goes inactive (the CPU clears the error).
                    self.irq.set(13, false);
                    self.ignne = true;
                    self.propagate_irqs();
                } else {
                    data.fill(0xff);
                }
            }
            PortOwner::FwCfg => {
                let now = self.now();
                let Board { fw_cfg, irq, requests, ram, map, .. } = self;
                let mut ctx = DeviceCtx { now, irq, requests };
                if write {
                    fw_cfg.pio_write(&mut ctx, off, data);
                } else {
                    fw_cfg.pio_read(&mut ctx, off, data);
                }
                if let Some(desc) = fw_cfg.take_dma_request() {
                    // The transfer completes before the guest's next instruction, as in QEMU; the data may
                    // land on pages holding decoded code.
                    let mut mem = RamDma { ram, map, msi: Vec::new() };
                    fw_cfg.run_dma(desc, &mut mem);
                    requests.flush_tlb = true;
                    for m in std::mem::take(&mut mem.msi) {
                        self.bus_master_dword(m);
                    }
                }
            }
            PortOwner::Pci => {
                let now = self.now();
                let Board { pci, irq, requests, .. } = self;
                let mut ctx = DeviceCtx { now, irq, requests };
                if write {
                    pci.pio_write(&mut ctx, off, data);
                    self.apply_pci_changes();
                } else {
                    pci.pio_read(&mut ctx, off, data);
                }
            }
            PortOwner::Pic => {
                let now = self.now();
                let Board { pic, irq, requests, .. } = self;
                let mut ctx = DeviceCtx { now, irq, requests };
                // The PIC decodes bytes: split wider accesses.
                for (i, b) in data.iter_mut().enumerate() {
                    let o = off.wrapping_add(i as u16);
                    if write {
                        pic.pio_write(&mut ctx, o, std::slice::from_ref(b));
                    } else {
                        pic.pio_read(&mut ctx, o, std::slice::from_mut(b));
                    }
                }
                self.propagate_irqs();
            }
            PortOwner::Dev(i) if let Some((devfn, w)) = pci_fn_of(DeviceId(i)) => {
                self.pci_bar_access(devfn, w, u64::from(off), data, write);
            }
            PortOwner::Dev(i) => {
                self.with_device(i, |d, ctx| {
                    let w = d.pio_access_width().max(1);
                    for (k, chunk) in data.chunks_mut(w).enumerate() {
                        let o = off.wrapping_add((k * w) as u16);
                        if write {
                            d.pio_write(ctx, o, chunk);
                        } else {
                            d.pio_read(ctx, o, chunk);
                        }
                    }
                });
            }
        }
    }

    fn phys_access(&mut self, addr: u64, data: &mut [u8], write: bool) {
        let Some(region) = self.map.lookup(addr).copied() else {
            if !write {
                data.fill(0xff);
            }
            return;
        };
        let off = addr - region.start;
        // Accesses never cross a page, but may cross a region end: clip to the region.
        let avail = (region.size - off).min(data.len() as u64) as usize;
        let (head, tail) = data.split_at_mut(avail);
        match region.kind {
            RegionKind::Ram { offset } => {
                if write {
                    self.ram.write(offset + off, head);
                } else {
                    self.ram.read(offset + off, head);
                }
            }
            RegionKind::Rom { rom, offset } => {
                if !write {
                    match self.map.rom_image(rom) {
                        Some(img) => {
                            let s = (offset + off) as usize;
                            for (i, b) in head.iter_mut().enumerate() {
                                *b = *img.get(s + i).unwrap_or(&0xff);
                            }
                        }
                        None => head.fill(0xff),
                    }
                }
            }
            RegionKind::Mmio { device } if device == IOAPIC_DEV || device == LAPIC_DEV => {
                self.apic_mmio(device, off, head, write);
            }
            RegionKind::Mmio { device } if let Some((devfn, w)) = pci_fn_of(device) => {
                self.pci_bar_access(devfn, w, off, head, write);
            }
            RegionKind::Mmio { device } => {
                self.with_device(device.0, |d, ctx| {
                    if write {
                        d.mmio_write(ctx, off, head);
                    } else {
                        d.mmio_read(ctx, off, head);
                    }
                });
            }
        }
        if !tail.is_empty() {
            self.phys_access(addr + avail as u64, tail, write);
        }
    }
}

/// Guest memory as a bus master (fw_cfg's DMA engine, PCI devices) sees it: the RAM regions of the
/// address map, and the MSI window 0xFEE00000-0xFEEFFFFF, where each aligned dword written is an interrupt
/// message (collected in `msi`, at most [`MAX_DMA_MSI`] per transfer; the bytes of a partial dword are
/// dropped). A read of anything but RAM, or a write touching ROM, MMIO or unassigned space, fails and
/// moves nothing (fw_cfg then sets its error bit).
struct RamDma<'a> {
    ram: &'a mut GuestRam,
    map: &'a AddressMap,
    msi: Vec<MsiMessage>,
}

/// The part of `addr..addr+len` that lies in the MSI window from `addr` on (0 if `addr` is outside).
fn msi_window_run(addr: u64, len: usize) -> usize {
    if (MSI_WINDOW_BASE..MSI_WINDOW_BASE + MSI_WINDOW_SIZE).contains(&addr) {
        ((MSI_WINDOW_BASE + MSI_WINDOW_SIZE - addr) as usize).min(len)
    } else {
        0
    }
}

impl RamDma<'_> {
    /// Calls `f(ram offset, range within the buffer)` for each RAM piece of `addr..addr+len`; false if
    /// any byte is not RAM.
    fn walk(&self, addr: u64, len: usize, mut f: impl FnMut(u64, std::ops::Range<usize>) -> bool) -> bool {
        let mut done = 0usize;
        while done < len {
            let Some(a) = addr.checked_add(done as u64) else { return false };
            let Some(r) = self.map.lookup(a) else { return false };
            let RegionKind::Ram { offset } = r.kind else { return false };
            let n = ((r.end() - a) as usize).min(len - done);
            if n == 0 || !f(offset + (a - r.start), done..done + n) {
                return false;
            }
            done += n;
        }
        true
    }
}

impl DmaMemory for RamDma<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        let ram = &*self.ram;
        let len = buf.len();
        let mut pieces = Vec::new();
        let ok = self.walk(addr, len, |o, r| {
            pieces.push((o, r));
            true
        });
        ok && pieces.into_iter().all(|(o, r)| ram.read(o, &mut buf[r]))
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        // Split into RAM pieces and MSI-window pieces; check all before writing any.
        let mut ram_pieces = Vec::new();
        let mut msi_pieces = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let Some(a) = addr.checked_add(done as u64) else { return false };
            let left = data.len() - done;
            let n = msi_window_run(a, left);
            if n > 0 {
                msi_pieces.push((a, done..done + n));
                done += n;
                continue;
            }
            // RAM up to the next MSI window byte, if the window lies ahead.
            let until = if a < MSI_WINDOW_BASE { ((MSI_WINDOW_BASE - a) as usize).min(left) } else { left };
            let base = done;
            if !self.walk(a, until, |o, r| {
                ram_pieces.push((o, base + r.start..base + r.end));
                true
            }) {
                return false;
            }
            done += until;
        }
        if !ram_pieces.into_iter().all(|(o, r)| self.ram.write(o, &data[r])) {
            return false;
        }
        for (a, r) in msi_pieces {
            let bytes = &data[r];
            let skip = ((4 - (a & 3)) & 3) as usize;
            for (k, dw) in bytes.get(skip..).unwrap_or_default().chunks_exact(4).enumerate() {
                if self.msi.len() >= MAX_DMA_MSI {
                    break;
                }
                let address = a + (skip + 4 * k) as u64;
                self.msi.push(MsiMessage { address, data: u32::from_le_bytes([dw[0], dw[1], dw[2], dw[3]]) });
            }
        }
        true
    }
}

impl CpuBus for Board {
    fn ram_page(&mut self, page: u64, write: bool) -> Option<NonNull<u8>> {
        let r = self.map.lookup(page)?;
        if page + 0x1000 > r.end() && r.end() != u64::MAX {
            return None;
        }
        match r.kind {
            RegionKind::Ram { offset } => {
                let o = offset + (page - r.start);
                if o + 0x1000 > self.ram.len() {
                    return None;
                }
                // SAFETY: `o + 4096 <= ram.len()` was just checked, so the pointer stays inside the
                // mapping, which lives as long as the board.
                NonNull::new(unsafe { self.ram.as_ptr().add(o as usize) })
            }
            RegionKind::Rom { rom, offset } if !write => {
                let img = self.map.rom_image(rom)?;
                let o = (offset + (page - r.start)) as usize;
                if o + 0x1000 > img.len() {
                    return None;
                }
                // The CPU only reads through read-TLB entries; ROM pages never get write entries.
                NonNull::new(img[o..].as_ptr() as *mut u8)
            }
            _ => None,
        }
    }

    fn read_phys(&mut self, addr: u64, data: &mut [u8]) {
        self.phys_access(addr, data, false);
    }

    fn write_phys(&mut self, addr: u64, data: &[u8]) {
        let mut buf = [0u8; 16];
        let n = data.len().min(16);
        buf[..n].copy_from_slice(&data[..n]);
        self.phys_access(addr, &mut buf[..n], true);
    }

    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let mut b = [0u8; 4];
        let n = (size as usize).clamp(1, 4);
        self.port_io(port, &mut b[..n], false);
        u32::from_le_bytes(b)
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        let mut b = value.to_le_bytes();
        let n = (size as usize).clamp(1, 4);
        self.port_io(port, &mut b[..n], true);
    }

    fn interrupt_pending(&mut self) -> bool {
        (self.lapic.accepts_pic_interrupts() && self.pic.has_interrupt())
            || self.lapic.has_interrupt().is_some()
    }

    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        let v = if self.lapic.accepts_pic_interrupts() && self.pic.has_interrupt() {
            self.pic.acknowledge()
        } else if self.lapic.has_interrupt().is_some() {
            self.lapic.acknowledge()
        } else {
            return None;
        };
        self.propagate_irqs();
        if let Some(hook) = self.irq_trace.as_mut() {
            hook(v, self.icount);
        }
        Some(v)
    }

    fn nmi_pending(&mut self) -> bool {
        if self.lapic.take_nmi() {
            self.nmi_latched = true;
        }
        self.nmi_latched
    }

    fn take_nmi(&mut self) {
        self.nmi_latched = false;
    }

    fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let now = self.now();
        match msr {
            0x6e0 => Some(self.lapic.tsc_deadline()),
            0x800..=0x8ff => self.lapic.read_reg(now, msr - 0x800),
            _ => None,
        }
    }

    fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        let now = self.now();
        let ok = match msr {
            0x1b => {
                self.lapic.set_hw_enabled(value & (1 << 11) != 0);
                self.lapic.set_x2apic_mode(value & (1 << 10) != 0);
                true
            }
            0x6e0 => {
                self.lapic.set_tsc_deadline(value);
                self.requests.reschedule = true;
                true
            }
            0x800..=0x8ff => self.lapic.write_reg(now, msr - 0x800, value),
            _ => false,
        };
        self.propagate_irqs();
        ok
    }

    fn tsc(&mut self, icount: u64) -> u64 {
        self.clock.tsc(icount)
    }

    fn sync(&mut self, icount: u64) {
        self.icount = icount;
    }

    fn ferr(&mut self, asserted: bool) {
        // FERR# drives IRQ13 on a PC; deasserting it also ends IGNNE#.
        self.irq.set(13, asserted);
        if !asserted {
            self.ignne = false;
        }
        self.propagate_irqs();
    }

    fn ignne(&mut self) -> bool {
        self.ignne
    }

    fn stop_requested(&self) -> bool {
        self.requests.reset
            || self.requests.exit.is_some()
            || self.requests.reschedule
            || self.requests.a20.is_some()
            || self.requests.flush_tlb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 KiB of RAM at 0, the local APIC page in the MSI window, RAM again right after the window.
    fn ram_and_map() -> (GuestRam, AddressMap) {
        let ram = GuestRam::new(0x2_0000).unwrap();
        let mut map = AddressMap::new();
        map.add(0, 0x1_0000, RegionKind::Ram { offset: 0 }).unwrap();
        map.add(MSI_WINDOW_BASE, 0x1000, RegionKind::Mmio { device: LAPIC_DEV }).unwrap();
        map.add(MSI_WINDOW_BASE + MSI_WINDOW_SIZE, 0x1_0000, RegionKind::Ram { offset: 0x1_0000 }).unwrap();
        (ram, map)
    }

    #[test]
    fn dma_writes_into_the_msi_window_are_interrupt_messages() {
        let (mut ram, map) = ram_and_map();
        let mut mem = RamDma { ram: &mut ram, map: &map, msi: Vec::new() };
        let data: Vec<u8> = [0x61u32, 0x4062, 0x0000_0400].iter().flat_map(|d| d.to_le_bytes()).collect();
        assert!(mem.write(MSI_WINDOW_BASE + 0x1000, &data));
        assert_eq!(
            mem.msi,
            vec![
                MsiMessage { address: 0xFEE0_1000, data: 0x61 },
                MsiMessage { address: 0xFEE0_1004, data: 0x4062 },
                MsiMessage { address: 0xFEE0_1008, data: 0x400 },
            ]
        );
        // A write that straddles the end of the window: one whole dword in it, the rest to RAM.
        mem.msi.clear();
        assert!(mem.write(MSI_WINDOW_BASE + MSI_WINDOW_SIZE - 6, &[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(
            mem.msi,
            vec![MsiMessage { address: 0xFEEF_FFFC, data: 0x0605_0403 }],
            "partial dword dropped"
        );
        let mut back = [0u8; 2];
        assert!(mem.read(MSI_WINDOW_BASE + MSI_WINDOW_SIZE, &mut back));
        assert_eq!(back, [7, 8]);
        // Reads of the window and writes that touch unassigned space fail and move nothing.
        mem.msi.clear();
        assert!(!mem.read(MSI_WINDOW_BASE, &mut [0u8; 4]));
        assert!(!mem.write(0xFFFC, &[9; 8]), "runs past RAM into unassigned space");
        let mut b = [0u8; 4];
        assert!(mem.read(0xFFFC, &mut b));
        assert_eq!(b, [0; 4]);
        assert!(!mem.write(MSI_WINDOW_BASE - 4, &[9; 8]), "unassigned space before the window");
        assert!(mem.msi.is_empty());
        assert!(!mem.write(u64::MAX - 1, &[0; 4]), "address wrap");
        // A long burst is bounded.
        let burst = vec![0x30u8; 64 * 1024];
        assert!(mem.write(MSI_WINDOW_BASE, &burst));
        assert_eq!(mem.msi.len(), MAX_DMA_MSI.min(burst.len() / 4));
    }

    #[test]
    fn pci_function_window_ids_round_trip() {
        for devfn in [0u8, 0x10, 0xFF] {
            for w in 0..6 {
                assert_eq!(pci_fn_of(pci_fn_id(devfn, w)), Some((devfn, w)));
            }
        }
        assert_eq!(pci_fn_of(IOAPIC_DEV), None);
        assert_eq!(pci_fn_of(LAPIC_DEV), None);
        assert_eq!(pci_fn_of(DeviceId(3)), None);
    }
}
