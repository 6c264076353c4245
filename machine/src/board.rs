//! The board: guest RAM, the physical address map, the port I/O space, the device registry and the
//! interrupt controllers ([`IrqChip`]). It implements [`cpu::CpuBus`], so the CPU reaches devices only
//! through it.
//!
//! # The device registry
//!
//! Every device gets a [`DeviceId`] when it is registered, and the port map and the address map name
//! devices only by that id. An entry ([`Slot`]) is an ordinary [`Device`], a decode window (BAR) of a
//! PCI function that serves its own BARs, one of the interrupt controllers, or one of the three board
//! functions that need the board itself (PCI configuration ports, fw_cfg with its DMA, the FPU error
//! port). Every guest access and every timer event goes through one dispatch path
//! (`Board::call`), which builds the device's [`DeviceCtx`] (time, interrupt lines, requests), calls
//! it, then carries out what the device left: interrupt propagation, bus-master transfers, MSIs, INTx,
//! BAR moves. Deadlines are collected from every entry, PCI functions included
//! ([`Board::next_deadline`]).

use crate::clock::Clock;
use crate::dma::RamDma;
pub use crate::irqchip::{IrqChip, IrqChipPart};
use chipset::msi::MsiMessage;
use chipset::pci::{PciBarEvent, PciFunction, Piix3Isa, pirq_of};
use chipset::{FwCfg, PciBus};
use cpu::CpuBus;
use std::ptr::NonNull;
use vmcore::Snapshot;
use vmcore::layout;
use vmcore::{
    AddressMap, Device, DeviceCtx, DeviceId, GuestRam, MachineRequests, RegionKind, SnapshotError,
    SnapshotReader, SnapshotWriter, VirtTime,
};

/// A hook called on every interrupt the CPU acknowledges: (vector, instruction count at the board's last
/// sync with the CPU). For determinism checks and tracing; `None` costs one branch.
pub type IrqTraceHook = Box<dyn FnMut(u8, u64)>;

/// One entry of the device registry.
pub enum Slot {
    /// An ordinary device: ports, MMIO, deadlines, host input.
    Device(Box<dyn Device>),
    /// Decode window `window` (BAR n = window n) of the PCI function at `devfn`, which serves it itself.
    PciWindow {
        /// Device and function number on bus 0.
        devfn: u8,
        /// The window.
        window: u8,
    },
    /// The PCI function at `devfn` itself (not one of its windows): reached for its timed events.
    PciFunction {
        /// Device and function number on bus 0.
        devfn: u8,
    },
    /// One of the interrupt controllers in [`Board::irqchip`].
    IrqChip(IrqChipPart),
    /// The PCI configuration ports (the board applies the BAR moves a write causes).
    PciConfig,
    /// QEMU's fw_cfg (its DMA engine reaches guest memory through the board).
    FwCfg,
    /// Port 0xF0: the PC's coprocessor-error latch (a write clears FERR#/IRQ13 and asserts IGNNE#).
    FpuError,
}

/// What follows a device call: the board-side effects of the kind of entry that was called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Interrupt propagation only.
    Irqs,
    /// A PCI function ran: its transfers, MSIs and INTx# (and propagation).
    PciFunctions,
    /// A configuration write: BAR moves, PIRQ routing, then the functions.
    PciConfig,
    /// fw_cfg: a DMA request it may have left.
    FwCfgDma,
    /// Nothing (reads of configuration space).
    Nothing,
}

/// A guest access as the dispatch path carries it.
enum Access<'a> {
    PioRead(u16, &'a mut [u8]),
    PioWrite(u16, &'a [u8]),
    MmioRead(u64, &'a mut [u8]),
    MmioWrite(u64, &'a [u8]),
    HostInput(&'a [u8]),
    /// A timed event: the entry advances if its deadline has passed (sets the flag when it did).
    Advance(&'a mut bool),
    /// RDMSR of a register the entry owns (the local APIC's).
    MsrRead(u32, &'a mut Option<u64>),
    /// WRMSR of a register the entry owns; the flag says whether the value was accepted.
    MsrWrite(u32, u64, &'a mut bool),
}

impl Access<'_> {
    /// Carries the access out on `d`. Port accesses wider than the device decodes are split.
    fn on(self, d: &mut dyn Device, ctx: &mut DeviceCtx<'_>) {
        match self {
            Access::PioRead(off, data) => {
                let w = d.pio_access_width().max(1);
                for (k, chunk) in data.chunks_mut(w).enumerate() {
                    d.pio_read(ctx, off.wrapping_add((k * w) as u16), chunk);
                }
            }
            Access::PioWrite(off, data) => {
                let w = d.pio_access_width().max(1);
                for (k, chunk) in data.chunks(w).enumerate() {
                    d.pio_write(ctx, off.wrapping_add((k * w) as u16), chunk);
                }
            }
            Access::MmioRead(off, data) => d.mmio_read(ctx, off, data),
            Access::MmioWrite(off, data) => d.mmio_write(ctx, off, data),
            Access::HostInput(data) => d.host_input(ctx, data),
            Access::Advance(ran) => {
                advance_if_due(d, ctx, ran);
            }
            Access::MsrRead(..) | Access::MsrWrite(..) => {}
        }
    }

    /// Carries the access out on a PCI function's BAR `window` (ports and MMIO alike).
    fn on_bar(self, f: &mut dyn PciFunction, window: u8, ctx: &mut DeviceCtx<'_>) {
        if window == chipset::pci::ROM_WINDOW {
            // The expansion ROM, the same for every function: reads from its image, writes dropped.
            match self {
                Access::MmioRead(off, data) => f.config().rom_read(off, data),
                other => other.open_bus(),
            }
            return;
        }
        match self {
            Access::PioRead(off, data) => f.bar_read(ctx, window, u64::from(off), data),
            Access::MmioRead(off, data) => f.bar_read(ctx, window, off, data),
            Access::PioWrite(off, data) => f.bar_write(ctx, window, u64::from(off), data),
            Access::MmioWrite(off, data) => f.bar_write(ctx, window, off, data),
            Access::HostInput(_) | Access::Advance(_) | Access::MsrRead(..) | Access::MsrWrite(..) => {}
        }
    }

    /// The access as seen where nothing answers: reads are all ones.
    fn open_bus(self) {
        if let Access::PioRead(_, data) | Access::MmioRead(_, data) = self {
            data.fill(0xff);
        }
    }
}

/// Advances `d` if its deadline has passed: then its interrupts must be propagated.
fn advance_if_due(d: &mut dyn Device, ctx: &mut DeviceCtx<'_>, ran: &mut bool) -> After {
    if d.next_deadline().is_some_and(|t| t <= ctx.now) {
        d.advance(ctx);
        *ran = true;
        After::Irqs
    } else {
        After::Nothing
    }
}

/// A range of ports routed to a device.
#[derive(Clone, Copy, Debug)]
struct PortRange {
    owner: Option<DeviceId>,
    start: u16,
    offset_base: u16,
}

/// The board.
pub struct Board {
    /// Guest RAM.
    pub ram: GuestRam,
    /// Physical address map.
    pub map: AddressMap,
    /// The device registry (indexed by [`DeviceId`]).
    slots: Vec<Slot>,
    /// The interrupt controllers and lines.
    pub irqchip: IrqChip,
    /// Requests from devices (reset, exit, A20...).
    pub requests: MachineRequests,
    /// The virtual clock.
    pub clock: Clock,
    /// The CPU's instruction count at the last sync (for device time).
    pub icount: u64,
    /// IGNNE# to the CPU (asserted by a write to port 0xF0 while FERR# is active).
    ignne: bool,
    ports: Box<[u16]>,
    port_ranges: Vec<PortRange>,
    /// PCI bus 0 behind ports 0xCF8-0xCFF (empty until functions are added).
    pub pci: PciBus,
    /// Which registry entry serves each PCI decode window: (devfn, window index, device).
    pci_windows: Vec<(u8, u8, DeviceId)>,
    /// PCI functions that serve their own BARs, DMA and interrupts ([`Board::add_pci_device`]).
    pci_devices: Vec<u8>,
    /// The registry entry of each PCI function ([`Slot::PciFunction`]), by devfn.
    pci_function_ids: Vec<(u8, DeviceId)>,
    /// Called on every acknowledged interrupt (see [`IrqTraceHook`]).
    pub irq_trace: Option<IrqTraceHook>,
    /// Set-up a BIOS would redo after every reset: PIIX4 PM base to program and enable.
    pub pm_base_preset: Option<u16>,
    /// QEMU's fw_cfg device (ports 0x510-0x51B, always present as on QEMU's `pc`); the machine adds its
    /// files and direct-boot items.
    pub fw_cfg: FwCfg,
    /// The registry entries of the PIC pair, the I/O APIC and the local APIC.
    irqchip_ids: [DeviceId; 3],
    /// BIOS shadowing of 0xC0000-0xFFFFF by the host bridge's PAM registers (with a BIOS; `None` keeps
    /// the fixed map of `--rom` and the direct boots).
    pub shadow: Option<Shadow>,
    /// The earliest deadline of every entry, as [`Board::next_deadline`] last computed it, or `None` when
    /// it must be recomputed. Derived state, never saved: a deadline is a function of a device's state,
    /// which changes only when the device is called (an access, host input, an MSR, an advance that
    /// ran), when the interrupt controllers act (propagation, acknowledge, NMI, FERR#), or through the
    /// board's set-up, reset and restore paths; each of those drops the cache
    /// ([`Board::devices_changed`]).
    deadline: std::cell::Cell<Option<VirtTime>>,
    /// Counters of the dispatch path, for `--stats` ([`Board::counters`]).
    counters: BoardCounters,
    /// Recomputations of the earliest deadline (a `Cell`: counted under a shared borrow).
    deadline_scans: std::cell::Cell<u64>,
}

/// How often the board's dispatch path ran: what the run loop costs (`--stats`). Host-side diagnostics
/// only: not saved, not hashed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoardCounters {
    /// Calls of the dispatch path (`Board::call`): guest accesses, host input, MSRs, device advances.
    pub calls: u64,
    /// [`Board::advance_devices`] calls.
    pub advance_checks: u64,
    /// Of those, how many found a deadline due and walked the registry.
    pub advance_walks: u64,
    /// Recomputations of the earliest deadline over the registry.
    pub deadline_scans: u64,
}

/// What the board needs to route 0xC0000-0xFFFFF by the i440FX PAM registers: the BIOS image whose last
/// 128 KiB the PCI side shows at 0xE0000-0xFFFFF, and the PAM values last applied.
#[derive(Clone, Debug)]
pub struct Shadow {
    rom: usize,
    rom_len: u64,
    applied: Option<[u8; 7]>,
    /// Segments (bit n = `pam_segments()[n]`) whose reads go to the PCI side but writes to RAM.
    write_only: u16,
}

impl Shadow {
    /// Shadowing for ROM image `rom` of the map, `rom_len` bytes long.
    pub fn new(rom: usize, rom_len: u64) -> Shadow {
        Shadow { rom, rom_len, applied: None, write_only: 0 }
    }
}

/// Start of the area the PAM registers control.
const PAM_START: u64 = 0xC_0000;
/// Its size (up to 1 MiB).
const PAM_SIZE: u64 = 0x4_0000;

impl Board {
    /// A board with `ram` and `map`, the interrupt controllers registered (the PIC on its ports, the
    /// I/O APIC and local APIC at their MMIO windows) and fw_cfg at 0x510-0x51B.
    pub fn new(ram: GuestRam, map: AddressMap, clock: Clock) -> Board {
        let fw_cfg = FwCfg::new(ram.len(), 1);
        let mut b = Board {
            ram,
            map,
            slots: Vec::new(),
            irqchip: IrqChip::new(),
            requests: MachineRequests::default(),
            clock,
            icount: 0,
            ignne: false,
            ports: vec![0u16; 65536].into_boxed_slice(),
            port_ranges: vec![PortRange { owner: None, start: 0, offset_base: 0 }],
            pci: PciBus::new(),
            pci_windows: Vec::new(),
            pci_devices: Vec::new(),
            pci_function_ids: Vec::new(),
            irq_trace: None,
            pm_base_preset: None,
            fw_cfg,
            irqchip_ids: [DeviceId(0); 3],
            shadow: None,
            deadline: std::cell::Cell::new(None),
            counters: BoardCounters::default(),
            deadline_scans: std::cell::Cell::new(0),
        };
        let fw = b.register(Slot::FwCfg);
        b.map_ports(fw, 0x510, 12, 0);
        b.irqchip_ids = [
            b.register(Slot::IrqChip(IrqChipPart::Pic)),
            b.register(Slot::IrqChip(IrqChipPart::IoApic)),
            b.register(Slot::IrqChip(IrqChipPart::LocalApic)),
        ];
        b
    }

    /// Adds an entry to the registry and returns its id.
    pub fn register(&mut self, slot: Slot) -> DeviceId {
        self.devices_changed();
        self.slots.push(slot);
        DeviceId(self.slots.len() as u32 - 1)
    }

    /// Adds a device and returns its id (route its ports and MMIO with [`Board::map_ports`] and
    /// [`Board::map_mmio`]).
    ///
    /// Replayability by construction: a [`Device`] must implement [`vmcore::Snapshot`] (its
    /// supertrait, which has no default methods) and sees time only as [`DeviceCtx::now`], so a
    /// device whose state would escape snapshots, recordings and the state hash cannot be put on the
    /// board. This does not compile:
    ///
    /// ```compile_fail,E0277
    /// use vmcore::{Device, DeviceCtx};
    /// /// A latch whose state is in no snapshot.
    /// struct Latch(u8);
    /// impl Device for Latch {
    ///     fn name(&self) -> &str { "latch" }
    ///     fn pio_write(&mut self, _: &mut DeviceCtx<'_>, _: u16, data: &[u8]) { self.0 = data[0]; }
    /// }
    /// fn plug(board: &mut machine::board::Board) {
    ///     board.add_device(Box::new(Latch(0)));
    /// }
    /// ```
    ///
    /// and the same device with its state in the snapshot does:
    ///
    /// ```
    /// use vmcore::{Device, DeviceCtx, Snapshot, SnapshotError, SnapshotReader, SnapshotWriter};
    /// /// A latch whose state is saved and restored.
    /// struct Latch(u8);
    /// impl Device for Latch {
    ///     fn name(&self) -> &str { "latch" }
    ///     fn pio_write(&mut self, _: &mut DeviceCtx<'_>, _: u16, data: &[u8]) { self.0 = data[0]; }
    /// }
    /// impl Snapshot for Latch {
    ///     type Restored = ();
    ///     fn save(&self, w: &mut SnapshotWriter) { w.tag("latch"); w.u8(self.0); }
    ///     fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
    ///         r.tag("latch")?;
    ///         self.0 = r.u8()?;
    ///         Ok(())
    ///     }
    /// }
    /// fn plug(board: &mut machine::board::Board) {
    ///     board.add_device(Box::new(Latch(0)));
    /// }
    /// ```
    pub fn add_device(&mut self, d: Box<dyn Device>) -> DeviceId {
        self.register(Slot::Device(d))
    }

    /// The registry id of interrupt controller `part` (for mapping its windows).
    pub fn irqchip_id(&self, part: IrqChipPart) -> DeviceId {
        match part {
            IrqChipPart::Pic => self.irqchip_ids[0],
            IrqChipPart::IoApic => self.irqchip_ids[1],
            IrqChipPart::LocalApic => self.irqchip_ids[2],
        }
    }

    /// Routes the PCI configuration ports to [`Board::pci`]: CONFIG_ADDRESS at 0xCF8 (and 0xCFA-0xCFB),
    /// CONFIG_DATA at 0xCFC-0xCFF. Port 0xCF9 is left for the reset control register.
    pub fn map_pci_ports(&mut self) {
        let id = self.register(Slot::PciConfig);
        self.map_ports(id, 0xcf8, 1, 0);
        self.map_ports(id, 0xcfa, 6, 2);
        // The idle level of the active-low PCI lines reaches the I/O APIC on the first propagation.
        self.irqchip.mark_pci_lines_changed();
        self.irqchip.propagate();
        self.devices_changed();
    }

    /// Puts PCI function `f` at `devfn` on bus 0; `windows` says which device serves each of its decode
    /// windows (BAR n = window n; chipset windows from [`chipset::pci::FIRST_CHIPSET_WINDOW`]). Port
    /// windows are routed with offsets from 0; a window that would overlap RAM, ROM or another device is
    /// left unmapped.
    pub fn add_pci_function(&mut self, devfn: u8, f: Box<dyn PciFunction>, windows: &[(u8, DeviceId)]) {
        self.devices_changed();
        self.pci.add(devfn, f);
        self.register_pci_function(devfn);
        for &(w, id) in windows {
            self.pci_windows.push((devfn, w, id));
        }
    }

    /// Puts PCI device `f` at `devfn`: a function that serves its own BARs (through
    /// [`PciFunction::bar_read`]/[`PciFunction::bar_write`]; each BAR becomes a registry entry), drives
    /// INTx# (the board ORs the functions on each PIRQ line, GSIs 16-19), runs bus-master transfers over
    /// guest memory when it has one waiting, sends message-signalled interrupts, and may ask for
    /// [`PciFunction::advance`] at a deadline; the board services it after every access and event.
    pub fn add_pci_device(&mut self, devfn: u8, f: Box<dyn PciFunction>) {
        let mut bars: Vec<u8> = (0..6u8).filter(|i| f.config().bar(usize::from(*i)).is_some()).collect();
        if f.config().rom().is_some() {
            bars.push(chipset::pci::ROM_WINDOW);
        }
        self.pci.add(devfn, f);
        self.register_pci_function(devfn);
        self.pci_windows.retain(|(d, _, _)| *d != devfn);
        for window in bars {
            let id = self.register(Slot::PciWindow { devfn, window });
            self.pci_windows.push((devfn, window, id));
        }
        if !self.pci_devices.contains(&devfn) {
            self.pci_devices.push(devfn);
        }
        self.service_pci_devices();
        self.devices_changed();
    }

    /// Gives the PCI function at `devfn` the expansion ROM `image` behind its ROM BAR (QEMU's
    /// `romfile=`), or takes its ROM away for an empty `image`; the board serves the ROM's window
    /// itself. An error if there is no function at `devfn` or the image is too large.
    pub fn set_pci_rom(&mut self, devfn: u8, image: Vec<u8>) -> Result<(), String> {
        let len = image.len();
        let rom = chipset::pci::ExpansionRom::new(image);
        if rom.is_none() && len != 0 {
            return Err(format!(
                "an option ROM of {len} bytes is larger than the {} MiB a function takes",
                chipset::pci::MAX_ROM_SIZE >> 20
            ));
        }
        let f = self.pci.function_mut(devfn).ok_or_else(|| {
            format!("no PCI function at {:02x}.{} for the option ROM", devfn >> 3, devfn & 7)
        })?;
        let window = chipset::pci::ROM_WINDOW;
        for change in f.config_mut().set_rom(rom) {
            self.apply_pci_event(PciBarEvent { devfn, change });
        }
        if !self.pci_windows.iter().any(|(d, w, _)| *d == devfn && *w == window) {
            let id = self.register(Slot::PciWindow { devfn, window });
            self.pci_windows.push((devfn, window, id));
        }
        Ok(())
    }

    /// Gives the PCI function at `devfn` its registry entry (once per devfn), through which the board
    /// advances it at its deadlines.
    fn register_pci_function(&mut self, devfn: u8) {
        if !self.pci_function_ids.iter().any(|(d, _)| *d == devfn) {
            let id = self.register(Slot::PciFunction { devfn });
            self.pci_function_ids.push((devfn, id));
            // Advanced in bus order, whatever the order they were added in.
            self.pci_function_ids.sort_unstable_by_key(|(d, _)| *d);
        }
    }

    /// Routes ports `start..start+len` to device `id`, which sees `port - start + offset_base`.
    pub fn map_ports(&mut self, id: DeviceId, start: u16, len: u16, offset_base: u16) {
        // Reuse an identical range (PCI windows move back and forth) so the table stays small.
        let owner = Some(id);
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

    /// Routes the PIC's ports (0x20-0x21, 0xA0-0xA1, ELCR 0x4D0-0x4D1) to the PIC pair, and port 0xF0 to
    /// the FPU error latch.
    pub fn map_pic_ports(&mut self) {
        let pic = self.irqchip_id(IrqChipPart::Pic);
        // Offsets are `port - 0x20` (see the PIC's module docs).
        for (start, len) in [(0x20u16, 2u16), (0xa0, 2), (0x4d0, 2)] {
            self.map_ports(pic, start, len, start - 0x20);
        }
        let fpu = self.register(Slot::FpuError);
        self.map_ports(fpu, 0xf0, 1, 0);
    }

    /// Maps MMIO `start..start+size` to device `id`.
    pub fn map_mmio(&mut self, id: DeviceId, start: u64, size: u64) -> Result<(), vmcore::map::OverlapError> {
        self.map.add(start, size, RegionKind::Mmio { device: id })
    }

    /// Current virtual time.
    pub fn now(&self) -> VirtTime {
        self.clock.now(self.icount)
    }

    /// Whether the CPU's INTR has an interrupt for it right now.
    pub fn interrupt_pending_now(&self) -> bool {
        self.irqchip.interrupt_pending()
    }

    /// The one dispatch path: calls entry `id` with a context built here, then carries out what the call
    /// left (interrupts, transfers, BAR moves).
    fn call(&mut self, id: DeviceId, access: Access<'_>) {
        self.counters.calls += 1;
        // Any access may change the entry's deadline (and, through its interrupts, the controllers');
        // an advance that did not run leaves everything as it was.
        let changes = !matches!(access, Access::Advance(_));
        let now = self.now();
        let Board { slots, irqchip, requests, pci, fw_cfg, ignne, .. } = self;
        let Some(slot) = slots.get_mut(id.0 as usize) else {
            access.open_bus();
            return;
        };
        let after = match slot {
            Slot::Device(d) => {
                let ctx = &mut DeviceCtx { now, irq: &mut irqchip.lines, requests };
                match access {
                    Access::Advance(ran) => advance_if_due(d.as_mut(), ctx, ran),
                    access => {
                        access.on(d.as_mut(), ctx);
                        After::Irqs
                    }
                }
            }
            Slot::IrqChip(part) => match access {
                Access::MsrRead(msr, out) => {
                    *out = irqchip.read_msr(now, msr);
                    After::Nothing
                }
                Access::MsrWrite(msr, value, ok) => {
                    *ok = irqchip.write_msr(now, msr, value, requests);
                    After::Irqs
                }
                access => {
                    let (d, irq) = irqchip.part(*part);
                    let ctx = &mut DeviceCtx { now, irq, requests };
                    match access {
                        Access::Advance(ran) => advance_if_due(d, ctx, ran),
                        access => {
                            access.on(d, ctx);
                            After::Irqs
                        }
                    }
                }
            },
            Slot::PciFunction { devfn } => match (access, pci.function_mut(*devfn)) {
                (Access::Advance(ran), Some(f)) => {
                    let ctx = &mut DeviceCtx { now, irq: &mut irqchip.lines, requests };
                    if f.next_deadline().is_some_and(|t| t <= now) {
                        f.advance(ctx);
                        *ran = true;
                        After::PciFunctions
                    } else {
                        After::Nothing
                    }
                }
                (access, _) => {
                    access.open_bus();
                    After::Nothing
                }
            },
            Slot::PciWindow { devfn, window } => {
                match pci.function_mut(*devfn) {
                    Some(f) => {
                        access.on_bar(f, *window, &mut DeviceCtx { now, irq: &mut irqchip.lines, requests })
                    }
                    None => access.open_bus(),
                }
                After::PciFunctions
            }
            Slot::PciConfig => {
                let write = matches!(access, Access::PioWrite(..));
                access.on(pci, &mut DeviceCtx { now, irq: &mut irqchip.lines, requests });
                if write { After::PciConfig } else { After::Nothing }
            }
            Slot::FwCfg => {
                access.on(fw_cfg, &mut DeviceCtx { now, irq: &mut irqchip.lines, requests });
                After::FwCfgDma
            }
            Slot::FpuError => match access {
                Access::PioWrite(..) => {
                    // The PC's x87 error logic: a write to 0xF0 drops IRQ13 and asserts IGNNE# until
                    // FERR# goes inactive (the CPU clears the error).
                    irqchip.lines.set(13, false);
                    *ignne = true;
                    After::Irqs
                }
                other => {
                    other.open_bus();
                    After::Nothing
                }
            },
        };
        match after {
            After::Irqs => self.irqchip.propagate(),
            After::PciFunctions => self.service_pci_devices(),
            After::PciConfig => self.apply_pci_changes(),
            After::FwCfgDma => self.run_fw_cfg_dma(),
            After::Nothing => {}
        }
        // `After::Nothing` after an advance means the entry was not due: nothing changed.
        if changes || after != After::Nothing {
            self.devices_changed();
        }
    }

    /// Drops the cached earliest deadline ([`Board::next_deadline`]). The board's own paths call it;
    /// code that changes a device's or interrupt controller's state directly, through the public
    /// `irqchip` or `pci` fields, must call it too (`Machine::run` calls it on entry and after a reset).
    pub fn devices_changed(&self) {
        self.deadline.set(None);
    }

    /// The dispatch path's counters so far (`--stats`).
    pub fn counters(&self) -> BoardCounters {
        BoardCounters { deadline_scans: self.deadline_scans.get(), ..self.counters }
    }

    /// Runs a DMA request fw_cfg left: the transfer completes before the guest's next instruction, as in
    /// QEMU.
    fn run_fw_cfg_dma(&mut self) {
        let Board { fw_cfg, ram, map, requests, .. } = self;
        let Some(desc) = fw_cfg.take_dma_request() else { return };
        let mut mem = RamDma::new(ram, map);
        fw_cfg.run_dma(desc, &mut mem);
        // The data may land on pages holding decoded code: the machine drops what is on them.
        for r in std::mem::take(&mut mem.written) {
            requests.note_dma_write(r);
        }
        for m in std::mem::take(&mut mem.msi) {
            self.bus_master_dword(m);
        }
    }

    /// After any access to or event of a PCI device: runs waiting transfers, delivers the interrupt
    /// messages and refreshes the INTx# lines.
    fn service_pci_devices(&mut self) {
        let mut lines = 0u32;
        let mut msgs = Vec::new();
        for i in 0..self.pci_devices.len() {
            let devfn = self.pci_devices[i];
            let Board { pci, ram, map, requests, .. } = self;
            let Some(f) = pci.function_mut(devfn) else { continue };
            if f.dma_pending() {
                let mut mem = RamDma::new(ram, map);
                f.run_dma(&mut mem);
                msgs.append(&mut mem.msi);
                // The data may land on pages holding decoded code: the machine drops what is on them.
                for r in mem.written {
                    requests.note_dma_write(r);
                }
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
                self.irqchip.lines.set(p, lines & (1 << p) != 0);
            }
        }
        self.irqchip.propagate();
    }

    /// A dword memory write by a bus master (an MSI): into the MSI window it is an interrupt message to
    /// the local APIC; elsewhere an ordinary write, dropped where there is no RAM (a master abort).
    fn bus_master_dword(&mut self, m: MsiMessage) {
        match m.x86() {
            Some(irq) => self.irqchip.deliver_message(irq),
            None => {
                let Board { ram, map, requests, .. } = self;
                let mut mem = RamDma::new(ram, map);
                if chipset::DmaMemory::write(&mut mem, m.address, &m.data.to_le_bytes()) {
                    for r in mem.written {
                        requests.note_dma_write(r);
                    }
                }
            }
        }
    }

    /// Interrupt messages delivered to the local APIC so far (MSIs and DMA into the MSI window).
    pub fn msi_delivered(&self) -> u64 {
        self.irqchip.msi_delivered
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
        self.devices_changed();
    }

    /// Maps and unmaps the windows the PCI bus reported, and refreshes the PIRQ routing.
    fn apply_pci_changes(&mut self) {
        let mut routes = [None; 4];
        for (n, r) in routes.iter_mut().enumerate() {
            let mut b = [0u8];
            self.pci.read_config(chipset::pci::DEVFN_ISA, chipset::pci::PIRQRC + n, &mut b);
            *r = Piix3Isa::decode_route(b[0]);
        }
        self.irqchip.set_pirq_routes(routes);
        self.apply_pam();
        for ev in self.pci.take_events() {
            self.apply_pci_event(ev);
        }
        // A configuration write may enable MSI, bus mastering or interrupt disable.
        if !self.pci_devices.is_empty() {
            self.service_pci_devices();
        }
    }

    /// With BIOS shadowing: maps 0xC0000-0xFFFFF as the host bridge's PAM registers say (RAM, RAM
    /// that ignores writes, the BIOS ROM in 0xE0000-0xFFFFF, or nothing), when they changed. Code and
    /// translations go with the old map (a few times per boot).
    pub fn apply_pam(&mut self) {
        let Some(sh) = self.shadow.as_mut() else { return };
        let mut pam = [0u8; 7];
        self.pci.read_config(chipset::pci::DEVFN_HOST, chipset::pci::PAM0, &mut pam);
        if sh.applied == Some(pam) {
            return;
        }
        sh.applied = Some(pam);
        sh.write_only = 0;
        self.map.remove_within(PAM_START, PAM_SIZE);
        for (n, (start, size, a)) in chipset::pci::pam_segments(&pam).into_iter().enumerate() {
            let from_top = layout::HIGH_MEMORY - start;
            let kind = match (a.read_ram, a.write_ram) {
                (true, true) => Some(RegionKind::Ram { offset: start }),
                (true, false) => Some(RegionKind::RamReadOnly { offset: start }),
                (false, w) => {
                    if w {
                        sh.write_only |= 1 << n;
                    }
                    (start >= layout::BIOS_LOW_WINDOW && from_top <= sh.rom_len)
                        .then(|| RegionKind::Rom { rom: sh.rom, offset: sh.rom_len - from_top })
                }
            };
            if let Some(kind) = kind {
                // The range was just cleared and segments do not overlap.
                let _ = self.map.add(start, size, kind);
            }
        }
        self.requests.flush_tlb = true;
    }

    /// Whether a write to `addr` goes to shadow RAM although reads there come from the PCI side (a PAM
    /// segment with WE set and RE clear).
    fn shadow_write_only(&self, addr: u64) -> bool {
        let Some(sh) = &self.shadow else { return false };
        if sh.write_only == 0 || !(PAM_START..PAM_START + PAM_SIZE).contains(&addr) {
            return false;
        }
        let n = if addr >= 0xF_0000 { 0 } else { 1 + ((addr - PAM_START) / 0x4000) as u32 };
        sh.write_only & (1 << n) != 0
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
                    if r.owner == Some(id) && u64::from(r.start) == old {
                        self.ports[p as usize] = 0;
                    }
                }
            }
            if let Some(new) = c.new {
                let free = (new..(new + c.size).min(0x10000)).all(|p| self.ports[p as usize] == 0);
                if free {
                    self.map_ports(id, new as u16, c.size as u16, 0);
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
            // Code decoded from the window's old place must go; a BAR move is rare (firmware set-up).
            self.requests.flush_tlb = true;
        }
    }

    /// Advances, through the dispatch path, every entry whose deadline has passed: devices (in
    /// registry order), then PCI functions (in bus order), then the interrupt controllers (PIC pair,
    /// I/O APIC, local APIC); each call is followed by what that entry's calls need (propagation; a
    /// PCI function's transfers, MSIs and INTx#). Returns whether any entry advanced.
    pub fn advance_devices(&mut self) -> bool {
        self.counters.advance_checks += 1;
        // Before the earliest deadline no entry is due: every call below would find nothing to do.
        if self.now() < self.next_deadline() {
            if self.irqchip.lines.changed != 0 || self.irqchip.lines.rising != 0 {
                self.irqchip.propagate();
                self.devices_changed();
            }
            return false;
        }
        self.counters.advance_walks += 1;
        let mut ran = false;
        for i in 0..self.slots.len() {
            if matches!(self.slots[i], Slot::Device(_)) {
                self.call(DeviceId(i as u32), Access::Advance(&mut ran));
            }
        }
        for i in 0..self.pci_function_ids.len() {
            let id = self.pci_function_ids[i].1;
            self.call(id, Access::Advance(&mut ran));
        }
        for part in [IrqChipPart::Pic, IrqChipPart::IoApic, IrqChipPart::LocalApic] {
            self.call(self.irqchip_id(part), Access::Advance(&mut ran));
        }
        self.irqchip.propagate();
        self.devices_changed();
        ran
    }

    /// The earliest deadline of any entry: devices, PCI functions and the interrupt controllers. Cached
    /// until a device's state changes ([`Board::devices_changed`]).
    pub fn next_deadline(&self) -> VirtTime {
        if let Some(t) = self.deadline.get() {
            return t;
        }
        let t = self.scan_deadlines();
        self.deadline.set(Some(t));
        t
    }

    /// [`Board::next_deadline`] computed over the registry.
    fn scan_deadlines(&self) -> VirtTime {
        self.deadline_scans.set(self.deadline_scans.get() + 1);
        let mut t = self.irqchip.next_deadline();
        for slot in &self.slots {
            if let Slot::Device(d) = slot
                && let Some(d) = d.next_deadline()
            {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        }
        self.pci.for_each_function_ref(|_, f| {
            if let Some(d) = f.next_deadline() {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        });
        t.unwrap_or(VirtTime::NEVER)
    }

    /// Host input for device `id` (console bytes), through the machine's one input port.
    pub fn host_input(&mut self, id: DeviceId, data: &[u8]) {
        self.call(id, Access::HostInput(data));
    }

    /// Resets every device.
    pub fn reset_devices(&mut self) {
        self.devices_changed();
        for slot in self.slots.iter_mut() {
            if let Slot::Device(d) = slot {
                d.reset();
            }
        }
        self.fw_cfg.reset();
        self.irqchip.reset();
        self.pci.reset();
        self.apply_pci_changes();
        if let Some(base) = self.pm_base_preset {
            self.preset_pm_base(base);
        }
        self.irqchip.mark_pci_lines_changed();
        self.irqchip.propagate();
        self.devices_changed();
    }

    /// Writes the board's state: clock, requests, interrupt controllers, every registered device,
    /// fw_cfg and the PCI bus (RAM is the machine's to write).
    pub fn save(&self, w: &mut SnapshotWriter) {
        w.tag("board");
        w.u64(self.clock.ips);
        w.u64(self.clock.idle);
        w.u64(self.icount);
        w.bool(self.ignne);
        let MachineRequests { reset, exit, a20, reschedule, flush_tlb, dma_written } = &self.requests;
        w.bool(*reset);
        w.bool(exit.is_some());
        w.u32(exit.unwrap_or(0) as u32);
        w.u8(a20.map_or(2, u8::from));
        w.bool(*reschedule);
        w.bool(*flush_tlb);
        w.u64(dma_written.len() as u64);
        for r in dma_written {
            w.u64(r.start);
            w.u64(r.end);
        }
        self.irqchip.save(w);
        w.u64(self.slots.len() as u64);
        for slot in &self.slots {
            if let Slot::Device(d) = slot {
                d.save(w);
            }
        }
        self.fw_cfg.save(w);
        self.pci.save(w);
    }

    /// Restores [`Board::save`] into a board built the same way, and remaps the BAR windows.
    pub fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        // The cached deadline is derived state: recomputed from the restored devices (also when the
        // restore fails half-way).
        self.devices_changed();
        r.tag("board")?;
        let ips = r.u64()?;
        if ips != self.clock.ips {
            return Err(SnapshotError::Invalid(format!(
                "snapshot at {ips} instructions/s, machine at {}",
                self.clock.ips
            )));
        }
        self.clock.idle = r.u64()?;
        self.icount = r.u64()?;
        self.ignne = r.bool()?;
        let reset = r.bool()?;
        let has_exit = r.bool()?;
        let code = r.u32()? as i32;
        let a20 = match r.u8()? {
            0 => Some(false),
            1 => Some(true),
            2 => None,
            v => return Err(SnapshotError::Invalid(format!("A20 request {v}"))),
        };
        let reschedule = r.bool()?;
        let flush_tlb = r.bool()?;
        let n = r.u64()?;
        if n > MachineRequests::MAX_DMA_RANGES as u64 + 1 {
            return Err(SnapshotError::Invalid(format!("{n} DMA ranges")));
        }
        let mut dma_written = Vec::new();
        for _ in 0..n {
            dma_written.push(r.u64()?..r.u64()?);
        }
        let requests = MachineRequests {
            reset,
            exit: has_exit.then_some(code),
            a20,
            reschedule,
            flush_tlb,
            dma_written,
        };
        self.irqchip.restore(r)?;
        let slots = r.u64()?;
        if slots != self.slots.len() as u64 {
            return Err(SnapshotError::Invalid(format!(
                "snapshot has {slots} device entries, this machine {}",
                self.slots.len()
            )));
        }
        for slot in self.slots.iter_mut() {
            if let Slot::Device(d) = slot {
                d.restore(r)?;
            }
        }
        self.fw_cfg.restore(r)?;
        self.pci.restore(r)?;
        if let Some(sh) = self.shadow.as_mut() {
            sh.applied = None;
        }
        self.apply_pam();
        for ev in self.pci.take_events() {
            self.apply_pci_event(ev);
        }
        // Remapping asked for a flush, which the machine does on any restore: the requests are the saved
        // ones.
        self.requests = requests;
        Ok(())
    }

    fn port_io(&mut self, port: u16, data: &mut [u8], write: bool) {
        let r = self.port_ranges[self.ports[port as usize] as usize];
        let off = port.wrapping_sub(r.start).wrapping_add(r.offset_base);
        let Some(id) = r.owner else {
            if !write {
                data.fill(0xff);
            }
            return;
        };
        let access = if write { Access::PioWrite(off, data) } else { Access::PioRead(off, data) };
        self.call(id, access);
    }

    fn phys_access(&mut self, addr: u64, data: &mut [u8], write: bool) {
        if write && self.shadow_write_only(addr) {
            // Accesses never cross a page, and PAM segments are whole pages.
            self.ram.write(addr, data);
            return;
        }
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
            RegionKind::RamReadOnly { offset } => {
                if !write {
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
            RegionKind::Mmio { device } => {
                let access = if write { Access::MmioWrite(off, head) } else { Access::MmioRead(off, head) };
                self.call(device, access);
            }
        }
        if !tail.is_empty() {
            self.phys_access(addr + avail as u64, tail, write);
        }
    }
}

impl CpuBus for Board {
    fn ram_page(&mut self, page: u64, write: bool) -> Option<NonNull<u8>> {
        let r = self.map.lookup(page)?;
        if page + 0x1000 > r.end() && r.end() != u64::MAX {
            return None;
        }
        match r.kind {
            RegionKind::Ram { offset } | RegionKind::RamReadOnly { offset }
                if !write || matches!(r.kind, RegionKind::Ram { .. }) =>
            {
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
        self.irqchip.interrupt_pending()
    }

    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        self.devices_changed();
        let v = self.irqchip.acknowledge()?;
        if let Some(hook) = self.irq_trace.as_mut() {
            hook(v, self.icount);
        }
        Some(v)
    }

    fn nmi_pending(&mut self) -> bool {
        self.irqchip.nmi_pending()
    }

    fn take_nmi(&mut self) {
        self.devices_changed();
        self.irqchip.take_nmi();
    }

    fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let mut v = None;
        self.call(self.irqchip_id(IrqChipPart::LocalApic), Access::MsrRead(msr, &mut v));
        v
    }

    fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        let mut ok = false;
        self.call(self.irqchip_id(IrqChipPart::LocalApic), Access::MsrWrite(msr, value, &mut ok));
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
        self.irqchip.lines.set(13, asserted);
        if !asserted {
            self.ignne = false;
        }
        self.irqchip.propagate();
        self.devices_changed();
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
            || !self.requests.dma_written.is_empty()
    }
}
