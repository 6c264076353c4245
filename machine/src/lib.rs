//! Ferrite's machine: an i440FX/PIIX-class PC board (guest RAM with the PC's holes, firmware ROM
//! mapping, legacy devices on their ports, the 8259A pair on the CPU's INTR line), the virtual clock,
//! and the run loop that drives an execution engine and the devices' deadlines.
//!
//! The engines (the reference interpreter, the interpreter with the Cranelift JIT as its block
//! backend, and KVM) plug into [`Machine::run`] behind the same `CpuBus` and `CpuState`.
#![deny(missing_docs)]

pub mod board;
mod boot;
pub mod clock;
pub mod devices;
mod dma;
pub mod engine;
pub mod gdb;
pub mod input;
pub mod irqchip;
pub mod kvm;
pub mod lockstep;
pub mod monitor;
pub mod png;
pub mod record;
pub mod replay;
pub mod reverse;
pub mod snapfile;
pub mod snapshot;

use board::{Board, IrqChipPart};
pub use chipset::vga::{Frame, TextScreen};
use chipset::{
    ByteSink, DebugConsole, DebugExit, I8042, Pit8254, PmDevice, Port92, ResetControl, Rtc, Uart16550,
};
use clock::Clock;
use cpu::{CpuState, Exit, Interpreter, Stop};
pub use devices::{DeviceSpec, PortWindow, VGA_DEVFN, VGA_ROM_FILE};
pub use engine::{Engine, InterpEngine};
pub use firmware::multiboot::Module as MultibootModule;
pub use input::{GuestInput, InputRecorder, StampedInput};
/// The JIT's options ([`MachineConfig::jit`]) and its compile-delay test knob.
pub use jit::{CompileDelay, Options as JitOptions};
use std::fmt;
use vmcore::layout::{self, RamLayout};
use vmcore::{AddressMap, DeviceId, GuestRam, RegionKind};

/// Which execution engine runs the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Accel {
    /// The reference interpreter.
    #[default]
    Interp,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// The Cranelift JIT (the `jit` crate): the interpreter with hot blocks translated to host code.
    Jit,
}

/// Entries after which the JIT translates a block, by default (see docs/PERF.md for the measurement).
pub const JIT_THRESHOLD: u32 = 1000;

/// What to do on a triple fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TripleFaultAction {
    /// Stop the emulator with a diagnostic (the default: tests want to see it).
    #[default]
    Stop,
    /// Reset the machine, as a PC does.
    Reset,
}

/// Machine configuration.
pub struct MachineConfig {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// The firmware image, mapped like QEMU's `-bios`: ending at 4 GiB, its last 128 KiB also ending at
    /// 1 MiB.
    pub firmware: Vec<u8>,
    /// Virtual instructions per second (virtual CPU speed; sets how time relates to instructions).
    pub ips: u64,
    /// Where COM1's transmitter writes.
    pub com1: ByteSink,
    /// Where COM2's transmitter writes (discarded by default).
    pub com2: ByteSink,
    /// Where the 0xE9 debug console writes.
    pub debugcon: ByteSink,
    /// Triple-fault behaviour.
    pub on_triple_fault: TripleFaultAction,
    /// RTC start time (UNIX seconds).
    pub rtc_start: i64,
    /// Execution engine.
    pub accel: Accel,
    /// Under [`Accel::Jit`]: entries after which a block is translated (1 translates every block
    /// on its first entry, as the tests do).
    pub jit_threshold: u32,
    /// Under [`Accel::Jit`]: the compile thread, the persistent translation cache (`--jit-cache`) and
    /// the bound on translated code (`jit::Options`; its `threshold` is `jit_threshold`).
    pub jit: jit::Options,
    /// Act as the firmware for ACPI: program the PIIX4 PM base (0x600) with SCI_EN set and write the ACPI
    /// and MP tables into the EBDA (0x9E000-0x9FFFF, see `firmware::acpi`). Off by default: bare test
    /// ROMs own all of RAM.
    pub acpi: bool,
    /// Direct Linux boot (like QEMU's `-kernel/-initrd/-append`): the machine acts as the boot loader and
    /// as the BIOS before it (see [`LinuxBoot`]). Implies `acpi`.
    pub linux: Option<LinuxBoot>,
    /// Optional devices, registered in this order after the board's own (`--device NAME` adds
    /// [`DeviceSpec::named`]; see [`devices::DEVICES`]).
    pub devices: Vec<DeviceSpec>,
    /// The IDE controller behind the PIIX3 IDE function (00:01.1) with its drives attached; `None`
    /// gives the board one without drives (the function is always there, as on a PC).
    pub ide: Option<storage::IdeController>,
    /// Whose CPUs the interpreter copies where results are architecturally undefined (`--quirks`).
    /// Intel by default, as the CPUID vendor string says; the KVM engine runs on the host's CPU.
    pub quirks: cpu::Quirks,
    /// The CPU model (`--cpu`): CPUID, which instructions exist, the vendor's differences. Kept in the
    /// CPU state, so reset keeps it.
    pub model: cpu::CpuModel,
    /// Stop on an instruction Ferrite does not implement instead of raising #UD (`--strict`).
    pub strict: bool,
    /// The seed of RDRAND/RDSEED (`--seed`): the CPU's random numbers are a pure function of it, so a
    /// run never depends on host entropy. [`DEFAULT_SEED`] unless set.
    pub seed: u64,

    /// `firmware` is a PC BIOS (SeaBIOS, `--bios`): the host bridge's PAM registers shadow
    /// 0xC0000-0xFFFFF, and fw_cfg and CMOS carry what SeaBIOS reads (see [`BiosConfig`]).
    pub bios: Option<BiosConfig>,
}

/// What a BIOS boot adds to the machine (see [`MachineConfig::bios`]).
///
/// The image is mapped ending at 4 GiB, its last 128 KiB also at 0xE0000-0xFFFFF as the PCI side of the
/// PAM-controlled area: at power-on (PAM registers zero) reads of 0xE0000-0xFFFFF come from the ROM and
/// 0xC0000-0xDFFFF is empty; the BIOS then copies itself into RAM and write-protects it through the PAM
/// registers, as on an i440FX. fw_cfg gets QEMU's `etc/e820` (RAM only: the BIOS reserves its own
/// areas), the ACPI tables through `etc/table-loader` (`firmware::table_loader`), and `files`; CMOS the
/// memory sizes, equipment byte and the boot order (0x3D/0x38, as QEMU's `-boot`).
pub struct BiosConfig {
    /// Boot devices in order, SeaBIOS's CMOS codes: 1 floppy, 2 hard disk, 3 CD-ROM, 4 network; 0 none.
    pub boot_order: [u8; 3],
    /// Extra fw_cfg files (name, contents): the VGA BIOS as `pci1234,1111.rom`, `bootorder`, ...
    pub files: Vec<(String, Vec<u8>)>,
    /// Where the BIOS's debug log (port 0x402, QEMU's `isa-debugcon` as SeaBIOS uses it) goes.
    pub log: ByteSink,
}

impl Default for BiosConfig {
    fn default() -> Self {
        BiosConfig { boot_order: [2, 3, 1], files: Vec::new(), log: Box::new(|_| {}) }
    }
}

/// Parses a boot order as QEMU's `-boot` takes it: `c`, `d`, `cd`, `order=dc`, `order=cdn` (a floppy,
/// c hard disk, d CD-ROM, n network). Returns the CMOS codes of [`BiosConfig::boot_order`].
pub fn parse_boot_order(s: &str) -> Result<[u8; 3], String> {
    let list = s.strip_prefix("order=").unwrap_or(s);
    let list = list.split(',').next().unwrap_or_default();
    if list.is_empty() || list.len() > 3 {
        return Err(format!("boot order '{s}': give one to three of a, c, d, n (e.g. c, d, order=dc)"));
    }
    let mut out = [0u8; 3];
    for (i, c) in list.chars().enumerate() {
        let code = match c {
            'a' => 1,
            'c' => 2,
            'd' => 3,
            'n' => 4,
            other => return Err(format!("boot order '{s}': unknown device '{other}' (a, c, d or n)")),
        };
        if out.contains(&code) {
            return Err(format!("boot order '{s}': '{c}' given twice"));
        }
        out[i] = code;
    }
    Ok(out)
}

/// The RDRAND/RDSEED seed of a configuration that does not set one (the CPU's power-on generator state).
pub const DEFAULT_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// A Linux kernel booted directly through the x86 boot protocol's 64-bit entry
/// (`firmware::linux`). The machine then starts in the state a PC BIOS leaves: the 8259s at vectors
/// 0x08/0x70, PIT channel 0 in mode 3 at 18.2 Hz, the PIIX3 IDE bus-master BAR assigned, the ACPI tables in
/// the EBDA. A reset (keyboard controller, 0xCF9, ACPI reset register, triple fault with `Reset`) repeats
/// the whole boot: there is no BIOS at the reset vector to do it.
#[derive(Clone, Debug, Default)]
pub struct LinuxBoot {
    /// The bzImage.
    pub kernel: Vec<u8>,
    /// The initial RAM disk.
    pub initrd: Option<Vec<u8>>,
    /// The kernel command line.
    pub cmdline: String,
    /// Modules of a multiboot kernel (`--initrd a,b` with a multiboot `--kernel`; the kernel is a
    /// multiboot one when it is not a bzImage and has a multiboot header, see `firmware::multiboot`).
    pub modules: Vec<firmware::multiboot::Module>,
}

impl MachineConfig {
    /// A configuration with `memory` bytes, `firmware`, output discarded.
    pub fn new(memory: u64, firmware: Vec<u8>) -> MachineConfig {
        MachineConfig {
            memory,
            firmware,
            ips: DEFAULT_IPS,
            com1: Box::new(|_| {}),
            com2: Box::new(|_| {}),
            debugcon: Box::new(|_| {}),
            on_triple_fault: TripleFaultAction::Stop,
            rtc_start: 1_767_225_600, // 2026-01-01T00:00:00Z
            accel: Accel::Interp,
            jit_threshold: JIT_THRESHOLD,
            jit: jit::Options::default(),
            acpi: false,
            linux: None,
            devices: Vec::new(),
            ide: None,
            quirks: cpu::Quirks::Intel,
            model: cpu::CpuModel::ferrite().executable_here(),
            strict: false,
            seed: DEFAULT_SEED,

            bios: None,
        }
    }
}

/// Builds a [`Machine`]: a configuration plus the list of optional devices.
///
/// ```no_run
/// # use machine::{MachineBuilder, DeviceSpec};
/// let m = MachineBuilder::new(32 << 20, vec![0xF4; 0x1_0000])
///     .device(DeviceSpec::named("edu").unwrap())
///     .configure(|c| c.ips = 500_000_000)
///     .build()
///     .unwrap();
/// ```
pub struct MachineBuilder {
    cfg: MachineConfig,
}

impl MachineBuilder {
    /// A builder for a machine with `memory` bytes of RAM and `firmware` (see [`MachineConfig::new`]).
    pub fn new(memory: u64, firmware: Vec<u8>) -> MachineBuilder {
        MachineBuilder { cfg: MachineConfig::new(memory, firmware) }
    }

    /// A builder starting from `cfg`.
    pub fn from_config(cfg: MachineConfig) -> MachineBuilder {
        MachineBuilder { cfg }
    }

    /// Adds a device (registered after the ones added before it).
    pub fn device(mut self, spec: DeviceSpec) -> MachineBuilder {
        self.cfg.devices.push(spec);
        self
    }

    /// Adds devices in order.
    pub fn devices(mut self, specs: impl IntoIterator<Item = DeviceSpec>) -> MachineBuilder {
        self.cfg.devices.extend(specs);
        self
    }

    /// Changes the rest of the configuration.
    pub fn configure(mut self, f: impl FnOnce(&mut MachineConfig)) -> MachineBuilder {
        f(&mut self.cfg);
        self
    }

    /// Builds the machine: the board's own devices, then the listed ones, then the engine.
    pub fn build(self) -> Result<Machine, MachineError> {
        Machine::build(self.cfg)
    }
}

/// Where `--device edu` goes: device 2, function 0, the first free slot (where QEMU puts it with
/// `-nodefaults`): BAR0 1 MiB MMIO, INTA# (PIRQB, GSI 17) or MSI, DMA (see `chipset::edu`).
pub const EDU_DEVFN: u8 = 2 << 3;

/// Default virtual speed: 1e9 instructions per virtual second (1 instruction = 1 ns).
pub const DEFAULT_IPS: u64 = 1_000_000_000;

/// Errors building a machine.
#[derive(Debug)]
pub enum MachineError {
    /// Memory size unusable.
    Memory(String),
    /// Firmware image unusable.
    Firmware(String),
    /// The requested engine cannot run here.
    Engine(String),
    /// A device cannot be added (its address is taken).
    Device(String),
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineError::Memory(s) => write!(f, "memory: {s}"),
            MachineError::Firmware(s) => write!(f, "firmware: {s}"),
            MachineError::Engine(s) => write!(f, "engine: {s}"),
            MachineError::Device(s) => write!(f, "device: {s}"),
        }
    }
}

impl std::error::Error for MachineError {}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The guest asked to exit (debug-exit device, ACPI power-off) with this status.
    Exited(i32),
    /// The instruction limit was reached.
    InstructionLimit,
    /// The user quit from the console (Ctrl-A x).
    Quit,
    /// The machine stopped: triple fault, unimplemented instruction, halted forever.
    Stopped {
        /// One-line reason.
        reason: String,
        /// Register dump at the stop.
        dump: String,
    },
    /// A debugger's breakpoint (`Interpreter::stops`) or watchpoint was reached (only when a debugger
    /// set one; see [`gdb`]).
    DebugStop,
}

/// Something from the host side of the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// A byte typed on the console, for COM1's receiver.
    Input(u8),
    /// A byte of PS/2 scan code set 2 from a host keyboard (a display window), for the i8042's keyboard.
    Key(u8),
    /// Host mouse motion and buttons (a display window), for the i8042's PS/2 mouse: `dx` right, `dy`
    /// up, `dz` wheel, `buttons` bit 0 left, 1 right, 2 middle.
    Mouse {
        /// Motion to the right.
        dx: i16,
        /// Motion up.
        dy: i16,
        /// Wheel steps.
        dz: i8,
        /// Buttons held.
        buttons: u8,
    },
    /// The user asked to quit (Ctrl-A x, or closing the display window).
    Quit,
    /// The host side wants the run loop back (a monitor command typed on the console): the next input
    /// point ends [`Machine::run`] early with [`RunOutcome::InstructionLimit`] before its limit. Not
    /// an input: the guest sees nothing, and nothing is recorded.
    Attention,
}

/// Longest slice the engine runs before the loop looks at its state again.
const MAX_SLICE: u64 = 20_000_000;

/// The whole machine.
pub struct Machine {
    /// CPU 0's state.
    pub cpu: CpuState,
    /// The execution engine (the interpreter with or without the JIT, or KVM).
    engine: Box<dyn Engine>,
    /// The board.
    pub board: Board,
    /// COM1's device id (console input goes here).
    pub com1: DeviceId,
    /// The i8042's device id (keyboard and mouse input go here).
    pub i8042: DeviceId,
    on_triple_fault: TripleFaultAction,
    input: Option<InputSource>,
    /// The slot at which host input is taken next while a channel is attached.
    next_input: u64,
    /// Called with every delivered input.
    recorder: Option<InputRecorder>,
    /// Inputs delivered through [`Machine::inject`] so far.
    pub inputs_delivered: u64,
    /// The RTC's start time (UNIX seconds): an input taken at slot 0.
    rtc_start: i64,
    /// The direct Linux boot, redone after every reset.
    direct_boot: Option<DirectBoot>,
    /// A test hook that perturbs the state once the retired count reaches a value (divergence tests).
    fault: Option<FaultHook>,
    /// Logged inputs to deliver again at their slots (re-execution for reverse debugging), in order.
    script: std::collections::VecDeque<StampedInput>,
    /// [`HostEvent::Attention`] arrived: [`Machine::run`] returns at this input point.
    attention: bool,
    /// What [`Machine::run`]'s loop did so far (`--stats`; host-side diagnostics, not machine state).
    pub loop_stats: LoopStats,
    /// A host event taken from the channel to see whether input waits ([`Machine::idle_freely`]),
    /// delivered first at the next input point.
    peeked: Option<HostEvent>,
}

/// Turns of [`Machine::run`]'s loop and why the engine handed control back: where the host time that
/// is not guest code goes. Diagnostics only: not saved, not hashed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Engine runs (turns of the loop).
    pub turns: u64,
    /// The engine stopped at the slice's end because a device deadline was due then.
    pub at_deadline: u64,
    /// The slice's end was another bound: the instruction limit, an input point, [`MAX_SLICE`].
    pub at_other_bound: u64,
    /// The engine returned before the slice's end without a reason the loop sees (its own budget).
    pub early: u64,
    /// The engine stopped early because a device asked for the machine (a reschedule, a reset, DMA
    /// into code...).
    pub device_requests: u64,
    /// The CPU halted (HLT).
    pub halts: u64,
    /// Of those, halts idled forward to the next deadline.
    pub idles: u64,
    /// Other stops (faults, debug stops, triple faults).
    pub other: u64,
}

impl std::fmt::Display for LoopStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} loop turns: {} at a device deadline, {} at another bound, {} returned early, {} device requests, {} halts ({} idled), {} other",
            self.turns,
            self.at_deadline,
            self.at_other_bound,
            self.early,
            self.device_requests,
            self.halts,
            self.idles,
            self.other
        )
    }
}

/// Where host input comes from.
enum InputSource {
    /// The console: live host events.
    Channel(std::sync::mpsc::Receiver<HostEvent>),
    /// A recording (or the other side of a lockstep pair): each input is delivered at exactly its
    /// slot (the run loop ends a slice there), wherever the live run's slices ended.
    Replay(std::collections::VecDeque<StampedInput>),
}

/// A deliberately injected divergence: `apply` runs when the retired count reaches `at` (again after a
/// restore to an earlier state).
struct FaultHook {
    at: u64,
    fired: bool,
    apply: FaultFn,
}

/// What [`Machine::inject_fault_at`] does to the state.
pub type FaultFn = Box<dyn FnMut(&mut CpuState, &mut Board)>;

/// What the machine redoes as boot loader and BIOS for a direct Linux boot.
struct DirectBoot {
    plan: boot::Loader,
    acpi_writes: Vec<(u64, Vec<u8>)>,
}

impl Machine {
    /// Connects the console: host bytes arrive on `rx` and go to COM1 through the input port
    /// ([`Machine::inject`]) at the next input point (see [`input`]).
    pub fn attach_input(&mut self, rx: std::sync::mpsc::Receiver<HostEvent>) {
        self.input = Some(InputSource::Channel(rx));
        self.next_input = self.slot();
    }

    /// Replaces the console with recorded inputs (replay, the second machine of a lockstep pair): the run
    /// loop delivers each input at exactly the slot it is stamped with (a live run takes input at the
    /// start of every [`Machine::run`] too, so a stamp need not be an input point), however the replay's
    /// runs are sliced. [`GuestInput::Quit`] ends the run as the user's quit did;
    /// [`GuestInput::EndOfInput`] detaches the source as the channel's end did. More inputs can be added
    /// later with [`Machine::feed_inputs`].
    pub fn replay_inputs(&mut self, inputs: impl IntoIterator<Item = StampedInput>) {
        let q = inputs.into_iter().filter(|s| !matches!(s.input, GuestInput::RtcStart(_))).collect();
        self.input = Some(InputSource::Replay(q));
        self.next_input = self.slot();
    }

    /// Appends recorded inputs to the source set by [`Machine::replay_inputs`] (or starts one).
    pub fn feed_inputs(&mut self, inputs: impl IntoIterator<Item = StampedInput>) {
        let new = inputs.into_iter().filter(|s| !matches!(s.input, GuestInput::RtcStart(_)));
        match &mut self.input {
            Some(InputSource::Replay(q)) => q.extend(new),
            _ => self.replay_inputs(new),
        }
    }

    /// The slot of the next recorded input, if a recording is the input source.
    fn replay_due(&self) -> Option<u64> {
        match &self.input {
            Some(InputSource::Replay(q)) => q.front().map(|s| s.slot),
            _ => None,
        }
    }

    /// Recorded inputs not delivered yet (0 without a replay source).
    pub fn pending_inputs(&self) -> usize {
        match &self.input {
            Some(InputSource::Replay(q)) => q.len(),
            _ => 0,
        }
    }

    /// Detaches the input source (console or recording).
    pub fn detach_input(&mut self) {
        self.input = None;
    }

    /// Test hook for divergence detection: when the retired count reaches `at` (exactly: the run loop
    /// stops there), `apply` changes the state, as an engine bug would. It fires again whenever the
    /// machine passes `at` after being restored to an earlier state. Only tests use it.
    #[doc(hidden)]
    pub fn inject_fault_at(&mut self, at: u64, apply: FaultFn) {
        self.fault = Some(FaultHook { at, fired: self.cpu.icount >= at, apply });
    }

    /// Installs `recorder`, called with every input from now on (record/replay). It is first given the
    /// RTC's start time, the input the machine took when it was built (stamped at slot 0).
    pub fn record_inputs(&mut self, mut recorder: InputRecorder) {
        recorder(&StampedInput { slot: 0, input: GuestInput::RtcStart(self.rtc_start) });
        self.recorder = Some(recorder);
    }

    /// The current instruction slot: retired instructions plus idle slots (the clock's time base).
    pub fn slot(&self) -> u64 {
        self.cpu.icount.saturating_add(self.board.clock.idle)
    }

    /// The input port: stamps `input` with the current slot, records it, and delivers it to the guest.
    pub fn inject(&mut self, input: GuestInput) {
        let stamped = StampedInput { slot: self.slot(), input };
        if let Some(r) = self.recorder.as_mut() {
            r(&stamped);
        }
        self.inputs_delivered += 1;
        match stamped.input {
            GuestInput::Serial { device, bytes } => {
                self.board.icount = self.cpu.icount;
                self.board.host_input(device, &bytes);
            }
            GuestInput::Keyboard(codes) => {
                self.board.icount = self.cpu.icount;
                self.board.host_input(self.i8042, &codes);
            }
            GuestInput::Mouse { dx, dy, dz, buttons } => {
                self.board.icount = self.cpu.icount;
                self.board.host_input(self.i8042, &chipset::I8042::mouse_input(dx, dy, dz, buttons));
            }
            // Applied when the RTC was built, and host-side events: nothing to deliver.
            GuestInput::RtcStart(_) | GuestInput::Quit | GuestInput::EndOfInput => {}
        }
    }

    /// Takes pending host input and delivers it through [`Machine::inject`]. Returns false when the
    /// user asked to quit. With `block`, waits for at least one event (the guest is idle and only input
    /// can wake it).
    fn poll_input(&mut self, block: bool) -> bool {
        match &mut self.input {
            None => true,
            Some(InputSource::Replay(_)) => self.poll_replay(block),
            Some(InputSource::Channel(rx)) => {
                let mut bytes = Vec::new();
                let mut keys = Vec::new();
                let mut mouse: Vec<GuestInput> = Vec::new();
                let mut quit = false;
                let mut first = match self.peeked.take() {
                    Some(e) => Some(e),
                    None if block => rx.recv().ok(),
                    None => None,
                };
                if block && first.is_none() {
                    // The input side closed (EOF): nothing can wake the guest any more.
                    self.input = None;
                    self.inject(GuestInput::EndOfInput);
                    return true;
                }
                loop {
                    let ev = match first.take() {
                        Some(e) => e,
                        None => match rx.try_recv() {
                            Ok(e) => e,
                            Err(_) => break,
                        },
                    };
                    match ev {
                        HostEvent::Input(b) => bytes.push(b),
                        HostEvent::Key(b) => keys.push(b),
                        HostEvent::Mouse { dx, dy, dz, buttons } => {
                            // Motion with the same buttons merges into one event, as a mouse's own
                            // counters would between two reports.
                            if let Some(GuestInput::Mouse { dx: x, dy: y, dz: z, buttons: b }) =
                                mouse.last_mut()
                                && *b == buttons
                            {
                                *x = x.saturating_add(dx);
                                *y = y.saturating_add(dy);
                                *z = z.saturating_add(dz);
                            } else {
                                mouse.push(GuestInput::Mouse { dx, dy, dz, buttons });
                            }
                        }
                        HostEvent::Quit => quit = true,
                        HostEvent::Attention => self.attention = true,
                    }
                }
                if !bytes.is_empty() {
                    let device = self.com1;
                    self.inject(GuestInput::Serial { device, bytes });
                }
                if !keys.is_empty() {
                    self.inject(GuestInput::Keyboard(keys));
                }
                for ev in mouse {
                    self.inject(ev);
                }
                if quit {
                    self.inject(GuestInput::Quit);
                }
                !quit
            }
        }
    }

    /// [`Machine::poll_input`] from a recording: delivers the inputs stamped with the current slot (or
    /// an earlier one, which only a recording of another machine has). A blocking poll with nothing
    /// left at this slot ends the run as a quit: the recording stopped here.
    /// Whether a halted CPU may idle past input points with nothing waiting at them, straight to the
    /// next deadline: with instruction time, when the console channel holds no event (one it holds is
    /// kept for the next input point, which then bounds the idle) or when replaying (the run loop bounds
    /// the idle by the next recorded input's slot). Input points where nothing is taken give the guest
    /// nothing, so skipping them changes nothing it sees; a live input arriving meanwhile is taken at
    /// the first input point after the idle, as if it had come a little later.
    fn idle_freely(&mut self) -> bool {
        if self.board.clock.is_host() {
            return false;
        }
        match &mut self.input {
            None | Some(InputSource::Replay(_)) => true,
            Some(InputSource::Channel(rx)) => {
                if self.peeked.is_some() {
                    return false;
                }
                match rx.try_recv() {
                    Ok(ev) => {
                        self.peeked = Some(ev);
                        false
                    }
                    Err(_) => true,
                }
            }
        }
    }

    fn poll_replay(&mut self, block: bool) -> bool {
        let now = self.slot();
        let mut delivered = false;
        loop {
            let Some(InputSource::Replay(q)) = &mut self.input else { return true };
            if q.front().is_none_or(|s| s.slot > now) {
                break;
            }
            let Some(next) = q.pop_front() else { break };
            delivered = true;
            match next.input {
                GuestInput::Quit => {
                    self.inject(GuestInput::Quit);
                    return false;
                }
                GuestInput::EndOfInput => {
                    self.input = None;
                    self.inject(GuestInput::EndOfInput);
                    return true;
                }
                input => self.inject(input),
            }
        }
        !block || delivered
    }

    /// Builds a machine from `cfg` (the same as [`MachineBuilder::from_config`]`(cfg).build()`).
    pub fn new(cfg: MachineConfig) -> Result<Machine, MachineError> {
        Machine::build(cfg)
    }

    fn build(cfg: MachineConfig) -> Result<Machine, MachineError> {
        if cfg.memory < 1 << 20 {
            return Err(MachineError::Memory(format!("{} bytes is less than the 1 MiB minimum", cfg.memory)));
        }
        if cfg.memory > 1 << 40 {
            return Err(MachineError::Memory(format!("{} bytes is more than the 1 TiB maximum", cfg.memory)));
        }
        let mut cfg = cfg;
        // With a BIOS, the kernel goes to fw_cfg for the BIOS's linuxboot option ROM (QEMU's -kernel with
        // firmware) instead of being booted directly.
        let bios_kernel = if cfg.bios.is_some() { cfg.linux.take() } else { None };
        if cfg.linux.is_some() {
            cfg.acpi = true;
            if cfg.firmware.is_empty() {
                cfg.firmware = no_bios_rom(&RamLayout::for_size(cfg.memory));
            }
        }
        let fw_len = cfg.firmware.len() as u64;
        if fw_len == 0 || !fw_len.is_multiple_of(4096) || fw_len > layout::MAX_BIOS_SIZE {
            return Err(MachineError::Firmware(format!(
                "image is {fw_len} bytes; it must be a non-zero multiple of 4 KiB and at most 16 MiB"
            )));
        }
        let ram = GuestRam::new(cfg.memory).map_err(|e| MachineError::Memory(e.to_string()))?;
        let mut map = AddressMap::new();
        let lay = RamLayout::for_size(cfg.memory);
        let low_bios = fw_len.min(layout::BIOS_LOW_WINDOW_SIZE);
        let low_bios_start = layout::HIGH_MEMORY - low_bios;
        let shadow = cfg.bios.is_some();
        for (start, size, offset) in lay.ram_ranges() {
            let mut size = size;
            if start == layout::OPTION_ROM_AREA && shadow {
                // The PAM registers route 0xC0000-0xFFFFF (Board::apply_pam).
                continue;
            }
            if start == layout::OPTION_ROM_AREA {
                // RAM continues up to where the BIOS window starts.
                size = (lay.below_4g.min(low_bios_start)).saturating_sub(start);
            }
            map.add(start, size, RegionKind::Ram { offset })
                .map_err(|e| MachineError::Memory(e.to_string()))?;
        }
        let rom = map.add_rom_image(cfg.firmware);
        map.add(layout::FOUR_GIB - fw_len, fw_len, RegionKind::Rom { rom, offset: 0 })
            .map_err(|e| MachineError::Firmware(e.to_string()))?;
        if !shadow {
            map.add(low_bios_start, low_bios, RegionKind::Rom { rom, offset: fw_len - low_bios })
                .map_err(|e| MachineError::Firmware(e.to_string()))?;
        }

        // KVM has no instruction counter: under it the clock is host time.
        let clock = if cfg.accel == Accel::Kvm { Clock::host(cfg.ips) } else { Clock::new(cfg.ips) };
        let mut board = Board::new(ram, map, clock);
        if shadow {
            board.shadow = Some(board::Shadow::new(rom, fw_len));
        }
        for (part, base) in
            [(IrqChipPart::IoApic, layout::IOAPIC_BASE), (IrqChipPart::LocalApic, layout::LAPIC_BASE)]
        {
            let id = board.irqchip_id(part);
            board.map_mmio(id, base, 0x1000).map_err(|e| MachineError::Memory(e.to_string()))?;
        }
        board.map_pic_ports();
        let id = board.add_device(Box::new(DebugConsole::new(cfg.debugcon)));
        board.map_ports(id, 0xe9, 1, 0);
        let id = board.add_device(Box::new(DebugExit::new()));
        board.map_ports(id, 0xf4, 4, 0);
        let com1 = board.add_device(Box::new(Uart16550::new("uart-com1", 4, cfg.com1)));
        board.map_ports(com1, 0x3f8, 8, 0);
        let id = board.add_device(Box::new(Uart16550::new("uart-com2", 3, cfg.com2)));
        board.map_ports(id, 0x2f8, 8, 0);
        let id = board.add_device(Box::new(Pit8254::new()));
        board.map_ports(id, 0x40, 4, 0);
        board.map_ports(id, 0x61, 1, 0x21);
        let mut rtc = Rtc::new(cfg.rtc_start);
        if let Some(b) = &cfg.bios {
            rtc.fill_bios_fields(&chipset::CmosConfig {
                ram_below_4g: lay.below_4g,
                ram_above_4g: lay.above_4g,
                boot_order: b.boot_order,
                ..Default::default()
            });
        }
        let id = board.add_device(Box::new(rtc));
        board.map_ports(id, 0x70, 2, 0);
        let i8042 = board.add_device(Box::new(I8042::new()));
        board.map_ports(i8042, 0x60, 1, 0);
        board.map_ports(i8042, 0x64, 1, 4);
        let id = board.add_device(Box::new(Port92::new()));
        board.map_ports(id, 0x92, 1, 0);
        let ide = cfg.ide.take().unwrap_or_default();
        let acpi = add_pci_and_acpi(&mut board, cfg.acpi, shadow, lay.below_4g, ide);
        board.apply_pam();
        let mem = firmware::linux::MemoryLayout {
            below_4g: lay.below_4g,
            above_4g: lay.above_4g,
            ebda_start: if acpi.is_some() { firmware::acpi::EBDA_BASE } else { layout::LOW_RAM_END },
            rom_size: fw_len,
        };
        let direct_boot = match (&cfg.linux, acpi) {
            (Some(l), Some(tables)) => {
                let plan = boot::plan(l, &mem, Some(tables.rsdp))
                    .map_err(|e| MachineError::Firmware(format!("kernel: {e}")))?;
                boot::fill_fw_cfg(&mut board.fw_cfg, &mem, Some(&tables), Some((l, &plan)))
                    .map_err(MachineError::Firmware)?;
                Some(DirectBoot { plan, acpi_writes: tables.writes })
            }
            (_, _) if cfg.bios.is_some() => {
                let mut bios = cfg.bios.take().unwrap_or_default();
                boot::fill_fw_cfg_for_bios(&mut board.fw_cfg, &lay, &mut bios.files)
                    .map_err(MachineError::Firmware)?;
                if let Some(l) = &bios_kernel {
                    boot::fill_fw_cfg_for_bios_kernel(&mut board.fw_cfg, &lay, l)
                        .map_err(|e| MachineError::Firmware(format!("kernel: {e}")))?;
                }
                let id = board.add_device(Box::new(DebugConsole::new(bios.log)));
                board.map_ports(id, 0x402, 1, 0);
                None
            }
            (_, tables) => {
                boot::fill_fw_cfg(&mut board.fw_cfg, &mem, tables.as_ref(), None)
                    .map_err(MachineError::Firmware)?;
                None
            }
        };
        boot::add_shutdown_port(&mut board);
        for spec in std::mem::take(&mut cfg.devices) {
            spec.add_to(&mut board)?;
        }

        let engine: Box<dyn Engine> = match cfg.accel {
            Accel::Interp | Accel::Jit => {
                let mut e = if cfg.accel == Accel::Jit {
                    InterpEngine::with_jit(cfg.jit_threshold, cfg.jit.clone())
                        .map_err(MachineError::Engine)?
                } else {
                    InterpEngine::new()
                };
                e.interp.strict = cfg.strict;
                Box::new(e)
            }
            Accel::Kvm => Box::new(kvm::KvmEngine::new(&board).map_err(MachineError::Engine)?),
        };
        Ok(Machine {
            cpu: CpuState { quirks: cfg.quirks, rng_state: cfg.seed, ..CpuState::with_model(cfg.model) },
            engine,
            board,
            com1,
            i8042,
            on_triple_fault: cfg.on_triple_fault,
            input: None,
            next_input: 0,
            recorder: None,
            inputs_delivered: 0,
            rtc_start: cfg.rtc_start,
            direct_boot,
            fault: None,
            script: Default::default(),
            attention: false,
            loop_stats: LoopStats::default(),
            peeked: None,
        })
        .map(|mut m| {
            m.redo_direct_boot();
            m
        })
    }

    /// For a direct Linux boot: does what the BIOS and the boot loader would have done before the kernel's
    /// 64-bit entry (memory contents, chipset state, CPU registers). Nothing without one.
    fn redo_direct_boot(&mut self) {
        use cpu::state::{Segment, attr, cr0, cr4, efer};
        let Some(db) = &self.direct_boot else { return };
        let board = &mut self.board;
        // Low RAM is identity-mapped into guest RAM (offset = address) below the PCI hole, where every
        // write of the plan and the tables lies.
        for (addr, bytes) in db.acpi_writes.iter().chain(db.plan.writes()) {
            board.ram.write(*addr, bytes);
        }
        for &(addr, len) in db.plan.zero() {
            for a in (addr..addr + len).step_by(4096) {
                board.ram.write(a, &[0u8; 4096][..(addr + len - a).min(4096) as usize]);
            }
        }
        // BIOS state: 8259s at 0x08/0x70 (only the cascade unmasked), PIT channel 0 in mode 3 with the
        // full 65536 count (18.2 Hz), IDE bus-master BAR at 0xC000 with I/O decode and bus mastering on.
        board.irqchip.pic.program_like_bios(0x08, 0x70);
        for (port, v) in [(0x43u16, 0x36u32), (0x40, 0), (0x40, 0)] {
            cpu::CpuBus::io_out(board, port, 1, v);
        }
        board.pci_config_write(chipset::pci::DEVFN_IDE, 0x20, &0xc001u32.to_le_bytes());
        board.pci_config_write(chipset::pci::DEVFN_IDE, 0x04, &[0x05, 0x00]);
        // IDETIM of both channels with the decode-enable bit (15), as SeaBIOS leaves them: Linux's
        // ata_piix treats a channel without it as disabled.
        board.pci_config_write(chipset::pci::DEVFN_IDE, 0x40, &[0x00, 0x80, 0x00, 0x80]);
        // The local APIC in virtual-wire mode, as SeaBIOS leaves it: software-enabled (SVR 0x1FF), LINT0
        // ExtINT and LINT1 NMI, both level (the 8259's INTR reaches the CPU through LINT0).
        let now = board.now();
        for (reg, v) in [(0x0fu32, 0x1ffu64), (0x35, 0x8700), (0x36, 0x8400)] {
            board.irqchip.lapic.write_reg(now, reg, v);
        }
        board.requests = Default::default();

        let e = match &db.plan {
            boot::Loader::Linux(p) => p.entry,
            boot::Loader::Multiboot(s) => {
                boot::enter_multiboot(&mut self.cpu, &s.entry);
                self.engine.flush_all();
                return;
            }
        };
        let cpu = &mut self.cpu;
        cpu.reset();
        let data = Segment {
            selector: e.ds,
            attr: attr::P | attr::S | attr::RW | attr::ACCESSED | attr::DB | attr::G,
            limit: 0xffff_ffff,
            base: 0,
        };
        cpu.seg = [data; 6];
        cpu.seg[cpu::state::Seg::Cs as usize] = Segment {
            selector: e.cs,
            attr: attr::P | attr::S | attr::CODE | attr::RW | attr::ACCESSED | attr::L | attr::G,
            limit: 0xffff_ffff,
            base: 0,
        };
        cpu.tr = Segment { selector: 0, attr: attr::P | 0xb, limit: 0xffff, base: 0 };
        cpu.gdtr.base = e.gdt_base;
        cpu.gdtr.limit = u32::from(e.gdt_limit);
        cpu.idtr.base = 0;
        cpu.idtr.limit = 0;
        cpu.cr0 = cr0::PE | cr0::ET | cr0::NE | cr0::PG;
        cpu.cr3 = e.cr3;
        cpu.cr4 = cr4::PAE;
        cpu.efer = efer::LME | efer::LMA;
        cpu.rip = e.rip;
        cpu.gpr = [0; 16];
        cpu.gpr[4] = e.rsp;
        cpu.gpr[6] = e.rsi;
        cpu.rflags = cpu::state::flags::FIXED1;
        bios_mtrrs(&mut cpu.msr, RamLayout::for_size(self.board.ram.len()).below_4g);
        self.engine.flush_all();
    }

    /// The standard VGA, when the machine has one (`--device vga`, or a BIOS boot): its screen is
    /// [`chipset::vga::Vga::render`] and, in text modes, [`chipset::vga::Vga::text_screen`].
    pub fn vga(&self) -> Option<&chipset::vga::Vga> {
        self.board.pci.function(VGA_DEVFN)?.as_any()?.downcast_ref()
    }

    /// The VGA's screen as a PNG file ([`png::encode_rgb`] of [`chipset::vga::Vga::render`]), for
    /// `--screenshot` and the monitor's `screendump`.
    pub fn screenshot_png(&self) -> Option<Vec<u8>> {
        let f = self.vga()?.render();
        Some(png::encode_rgb(f.width, f.height, &f.rgb))
    }

    /// The execution engine.
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// The interpreter, when the engine is built on it (interp and jit; `None` under KVM).
    pub fn interp(&self) -> Option<&Interpreter> {
        self.engine.interpreter()
    }

    /// The interpreter, mutable (debugger breakpoints), when the engine is built on it.
    pub fn interp_mut(&mut self) -> Option<&mut Interpreter> {
        self.engine.interpreter_mut()
    }

    /// The KVM engine, when it runs the machine (`--accel kvm`): its debugger facilities
    /// (single-step and DR0-DR3, see [`kvm::GuestDebugRequest`]).
    pub fn kvm_mut(&mut self) -> Option<&mut kvm::KvmEngine> {
        self.engine.kvm_mut()
    }

    /// Drops decoded code on the guest-physical `ranges` (the host wrote them: a debugger, a monitor).
    pub fn invalidate_code(&mut self, ranges: &[std::ops::Range<u64>]) {
        self.engine.invalidate_code(ranges);
    }

    /// Resets the CPU and every device (machine reset: keyboard controller, port 0x92, triple fault).
    pub fn reset(&mut self) {
        self.cpu.reset();
        self.board.reset_devices();
        self.engine.flush_all();
        self.board.requests = Default::default();
        self.redo_direct_boot();
        // The direct boot programs the interrupt controllers through the board's public fields.
        self.board.devices_changed();
    }

    fn stopped(&self, reason: String) -> RunOutcome {
        RunOutcome::Stopped { reason, dump: self.cpu.dump() }
    }

    /// Runs until the guest exits, the machine stops, or `max_instructions` retire in total.
    pub fn run(&mut self, max_instructions: Option<u64>) -> RunOutcome {
        let limit = max_instructions.unwrap_or(u64::MAX);
        // Between runs, device state may have changed behind the board's back (the monitor, a
        // debugger, the public fields): the earliest deadline is recomputed.
        self.board.devices_changed();
        // An input point: the start of every run.
        if !self.poll_input(false) {
            return RunOutcome::Quit;
        }
        if self.input.is_some() {
            self.next_input = input::next_input_point(self.slot());
        }
        if std::mem::take(&mut self.attention) {
            return RunOutcome::InstructionLimit;
        }
        loop {
            // Carry out device requests.
            let req = std::mem::take(&mut self.board.requests);
            if let Some(code) = req.exit {
                return RunOutcome::Exited(code);
            }
            if req.reset {
                self.reset();
                continue;
            }
            if let Some(on) = req.a20 {
                self.cpu.a20_mask = if on { !0 } else { !(1u64 << 20) };
                self.engine.flush_all();
            }
            if req.flush_tlb {
                self.engine.flush_all();
            } else if !req.dma_written.is_empty() {
                self.engine.invalidate_code(&req.dma_written);
            }
            let mut until_fault = u64::MAX;
            if let Some(f) = &mut self.fault {
                if self.cpu.icount < f.at {
                    f.fired = false;
                    until_fault = f.at;
                } else if !f.fired {
                    f.fired = true;
                    (f.apply)(&mut self.cpu, &mut self.board);
                    self.board.devices_changed();
                }
            }
            // Logged inputs due now (re-execution): delivered at the slot they were seen at.
            while self.script.front().is_some_and(|i| i.slot <= self.slot()) {
                if let Some(i) = self.script.pop_front() {
                    self.inject(i.input);
                }
            }
            if self.cpu.icount >= limit {
                return RunOutcome::InstructionLimit;
            }
            // Input points: every INPUT_QUANTUM slots while a channel is attached.
            let mut until_input = u64::MAX;
            if self.input.is_some() {
                // A recorded input is due at its own slot, which the live run may have reached at the
                // start of a `run` call rather than at an input point.
                let due = self.replay_due().is_some_and(|s| s <= self.slot());
                if self.slot() >= self.next_input || due {
                    if !self.poll_input(false) {
                        return RunOutcome::Quit;
                    }
                    self.next_input = input::next_input_point(self.slot());
                    if std::mem::take(&mut self.attention) {
                        return RunOutcome::InstructionLimit;
                    }
                }
                until_input = self.next_input.saturating_sub(self.board.clock.idle);
                if let Some(s) = self.replay_due() {
                    until_input = until_input.min(s.saturating_sub(self.board.clock.idle));
                }
            }
            if let Some(i) = self.script.front() {
                until_input = until_input.min(i.slot.saturating_sub(self.board.clock.idle));
            }
            let deadline = self.board.next_deadline();
            let at_deadline = self.board.clock.icount_at(deadline);
            let until = at_deadline
                .min(limit)
                .min(until_input)
                .min(until_fault)
                .min(self.cpu.icount.saturating_add(MAX_SLICE))
                .max(self.cpu.icount + 1);
            let exit = self.engine.run(&mut self.cpu, &mut self.board, until);
            self.board.icount = self.cpu.icount;
            self.board.advance_devices();
            let st = &mut self.loop_stats;
            st.turns += 1;
            match &exit {
                Exit::BudgetSpent if self.cpu.icount < until => st.early += 1,
                Exit::BudgetSpent if until == at_deadline => st.at_deadline += 1,
                Exit::BudgetSpent => st.at_other_bound += 1,
                Exit::DeviceRequest => st.device_requests += 1,
                Exit::Halted => st.halts += 1,
                _ => st.other += 1,
            }
            match exit {
                Exit::BudgetSpent | Exit::DeviceRequest => {}
                Exit::Halted => {
                    if self.board.requests != Default::default() {
                        continue;
                    }
                    if self.cpu.rflags & cpu::state::flags::IF == 0 {
                        return self
                            .stopped("the CPU halted with interrupts disabled (HLT with IF=0)".into());
                    }
                    // Idle until the next device deadline: time moves on, instructions do not.
                    let d = self.board.next_deadline();
                    if d == vmcore::VirtTime::NEVER {
                        if self.board.interrupt_pending_now() {
                            continue;
                        }
                        if let Some(i) = self.script.front() {
                            // The logged input woke the guest: idle up to its slot.
                            let target = i.slot.saturating_sub(self.board.clock.idle);
                            self.board.clock.idle_until(self.cpu.icount, target);
                            if let Some(i) = self.script.pop_front() {
                                self.inject(i.input);
                            }
                            continue;
                        }
                        if let Some(s) = self.replay_due().filter(|&s| s > self.slot()) {
                            // The recorded input woke the guest: idle up to its slot.
                            let target = s.saturating_sub(self.board.clock.idle);
                            self.board.clock.idle_until(self.cpu.icount, target);
                            continue;
                        }
                        if self.input.is_some() {
                            // Only console input can wake the guest: wait for it.
                            if !self.poll_input(true) {
                                return RunOutcome::Quit;
                            }
                            if std::mem::take(&mut self.attention) {
                                return RunOutcome::InstructionLimit;
                            }
                            continue;
                        }
                        return self.stopped("the CPU halted and no device will ever interrupt it".into());
                    }
                    let mut target = self.board.clock.icount_at(d);
                    if self.input.is_some() {
                        let idle = self.board.clock.idle;
                        // Past input points with nothing waiting (a replay's next input bounds the idle
                        // below), else only up to the next input point.
                        let point = if self.idle_freely() { u64::MAX } else { self.next_input };
                        target = target.min(point.saturating_sub(idle).max(self.cpu.icount));
                    }
                    if let Some(i) = self.script.front() {
                        target =
                            target.min(i.slot.saturating_sub(self.board.clock.idle).max(self.cpu.icount));
                    }
                    if let Some(s) = self.replay_due() {
                        target = target.min(s.saturating_sub(self.board.clock.idle).max(self.cpu.icount));
                    }
                    // Skips the idle slots (instruction time) or sleeps towards the deadline (host time).
                    self.loop_stats.idles += 1;
                    self.board.clock.idle_until(self.cpu.icount, target);
                    if self.input.is_some() && self.slot() > self.next_input {
                        // Input points idled past took nothing: the next is the first at or after now
                        // (live input is taken only at multiples of the quantum).
                        self.next_input = input::input_point_at_or_after(self.slot());
                    }
                    self.board.advance_devices();
                }
                Exit::Stopped(Stop::TripleFault) => {
                    if self.on_triple_fault == TripleFaultAction::Reset {
                        self.reset();
                        continue;
                    }
                    return self.stopped("triple fault".into());
                }
                Exit::Stopped(Stop::Unimplemented(what)) => {
                    return self.stopped(format!("unimplemented instruction: {what}"));
                }
                Exit::Stopped(Stop::Shutdown(why)) => return self.stopped(format!("shutdown: {why}")),
                // A debugger's breakpoint or watchpoint: hand control back.
                Exit::ReachedStop => return RunOutcome::DebugStop,
                Exit::Trapped(f) => return self.stopped(format!("exception trapped for inspection: {f:?}")),
            }
        }
    }
}

/// PIIX4 PM I/O base the machine programs when it acts as the ACPI firmware (QEMU's SeaBIOS uses the same).
pub const PM_BASE: u16 = 0x600;

/// The PCI side of the board: configuration ports, the reset control register at 0xCF9, the i440FX host
/// bridge (00:00.0), PIIX3 ISA bridge (00:01.0), PIIX3 IDE (00:01.1, BAR4 = bus-master block, the
/// channels at 0x1F0/0x3F6 and 0x170/0x376 on IRQ 14/15, `storage`'s controller behind it) and PIIX4 PM
/// function (00:01.3) with its PM I/O block (SCI on IRQ 9). With `acpi`, also what the firmware would do:
/// PM base at [`PM_BASE`] with decode on, and the ACPI and MP tables in the EBDA.
/// Returns the tables written, if any.
fn add_pci_and_acpi(
    board: &mut Board,
    acpi: bool,
    bios: bool,
    below_4g: u64,
    ide: storage::IdeController,
) -> Option<firmware::acpi::AcpiTables> {
    use chipset::pci::{self, I440fx, Piix3Isa, Piix4Pm};
    board.map_pci_ports();
    let id = board.add_device(Box::new(ResetControl::new()));
    board.map_ports(id, 0xcf9, 1, 0);
    // SCI_EN starts set wherever the tables say ACPI is always on (no SMI_CMD): ours, and the same
    // tables a BIOS loads through fw_cfg.
    let pm = board.add_device(Box::new(PmDevice::new(acpi || bios)));
    board.add_pci_function(pci::DEVFN_HOST, Box::new(I440fx::new()), &[]);
    board.add_pci_function(pci::DEVFN_ISA, Box::new(Piix3Isa::new()), &[]);
    // PIIX3 IDE serves its own windows: BAR4 (bus master) and the compatibility-mode channel ports,
    // which are fixed, so they are mapped here once; IRQ 14/15 come from the controller.
    board.add_pci_device(pci::DEVFN_IDE, Box::new(storage::Piix3IdeFunction::new(ide)));
    for (window, start, len, _) in storage::piix3::LEGACY_WINDOWS {
        let id = board.register(crate::board::Slot::PciWindow { devfn: pci::DEVFN_IDE, window });
        board.map_ports(id, start, len, 0);
    }
    board.add_pci_function(pci::DEVFN_PM, Box::new(Piix4Pm::new()), &[(pci::PM_WINDOW, pm)]);
    if acpi {
        board.preset_pm_base(PM_BASE);
        let cfg = firmware::acpi::PlatformConfig {
            pm_base: PM_BASE,
            pci_hole_start: below_4g.min(layout::IOAPIC_BASE) as u32,
            ..Default::default()
        };
        let tables = firmware::acpi::build_tables(&cfg);
        for (addr, bytes) in &tables.writes {
            // Low RAM is identity-mapped into guest RAM (offset = address).
            board.ram.write(*addr, bytes);
        }
        return Some(tables);
    }
    None
}

/// The MTRRs as SeaBIOS leaves them (src/fw/mtrr.c), so the kernel finds them enabled and sets up PAT:
/// default write-back; fixed ranges WB below 640K, UC for the VGA window, write-protected for the ROM
/// area 0xC0000-0xFFFFF; one variable range making the PCI hole (from the end of low RAM, at 3 or 3.5 GiB)
/// up to 4 GiB uncacheable.
fn bios_mtrrs(msr: &mut cpu::state::Msrs, below_4g: u64) {
    const WB: u64 = 0x0606_0606_0606_0606;
    const WP: u64 = 0x0505_0505_0505_0505;
    msr.mtrr_fixed = [WB, WB, 0, WP, WP, WP, WP, WP, WP, WP, WP];
    // SeaBIOS's hole starts at 0xE0000000; when low RAM ends at 3 GiB (RamLayout for large memory), at
    // 0xC0000000. Both are power-of-two sized, naturally aligned ranges ending at 4 GiB.
    let hole = if below_4g == layout::PCI_HOLE_START_LARGE {
        layout::PCI_HOLE_START_LARGE
    } else {
        layout::PCI_HOLE_THRESHOLD
    };
    let size = layout::FOUR_GIB - hole;
    let phys_mask = (1u64 << cpu::cpuid::PHYS_ADDR_BITS) - 1;
    msr.mtrr_var = [0; 16];
    msr.mtrr_var[0] = hole; // type 0: uncacheable
    msr.mtrr_var[1] = (!(size - 1) & phys_mask) | 0x800;
    msr.mtrr_def_type = 0xc06;
}

/// The ROM at the reset vector when Linux is booted directly: `cli; hlt` (a reset re-runs the direct boot
/// instead of jumping here), padded to 64 KiB with 0xFF like an erased flash, with the SMBIOS entry point
/// and tables (`firmware::smbios`) at its first byte, 0xF0000 in the low window, where an OS without
/// EFI looks for them.
fn no_bios_rom(lay: &RamLayout) -> Vec<u8> {
    const SIZE: usize = 0x1_0000;
    let mut rom = vec![0xffu8; SIZE];
    let [cpuid_eax, _, _, cpuid_edx] = cpu::cpuid::cpuid(1, 0, 0);
    let smbios = firmware::smbios::build(&firmware::smbios::SmbiosConfig {
        address: (layout::HIGH_MEMORY - SIZE as u64) as u32,
        below_4g: lay.below_4g,
        above_4g: lay.above_4g,
        cpuid_eax,
        cpuid_edx,
        // The TSC's rate: virtual time runs at 1 GHz.
        cpu_mhz: 1000,
        rom_size: SIZE as u64,
    });
    rom[..smbios.len()].copy_from_slice(&smbios);
    let rv = rom.len() - 16;
    rom[rv..rv + 3].copy_from_slice(&[0xfa, 0xf4, 0xeb]);
    rom[rv + 3] = 0xfd; // jmp back to the hlt
    rom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pam_registers_route_the_bios_area() {
        use cpu::CpuBus;
        // A 128 KiB "BIOS": byte i of the image is (i >> 12) ^ 0xA5, so each 4 KiB page is tellable.
        let rom: Vec<u8> = (0..0x2_0000usize).map(|i| ((i >> 12) as u8) ^ 0xA5).collect();
        let mut cfg = MachineConfig::new(16 << 20, rom.clone());
        cfg.bios = Some(BiosConfig::default());
        let mut m = Machine::new(cfg).unwrap();
        let b = &mut m.board;
        let rd = |b: &mut Board, a: u64| {
            let mut x = [0u8];
            b.read_phys(a, &mut x);
            x[0]
        };
        let pam = |b: &mut Board, reg: usize, v: u8| b.pci_config_write(chipset::pci::DEVFN_HOST, reg, &[v]);
        // Power-on: the ROM at 0xE0000-0xFFFFF and at 4 GiB, nothing at 0xC0000.
        assert_eq!(rd(b, 0xF_0000), rom[0x1_0000]);
        assert_eq!(rd(b, 0xE_0000), rom[0]);
        assert_eq!(rd(b, 0xFFFF_FFF0), rom[0x1_FFF0]);
        assert_eq!(rd(b, 0xC_0000), 0xFF);
        b.write_phys(0xF_0000, &[0x11]);
        assert_eq!(rd(b, 0xF_0000), rom[0x1_0000], "ROM ignores writes");
        // Write-only (WE, no RE): reads still the ROM, writes reach shadow RAM.
        pam(b, 0x59, 0x20);
        b.write_phys(0xF_0000, &[0x22]);
        assert_eq!(rd(b, 0xF_0000), rom[0x1_0000]);
        // Read/write: the RAM holds what was written through the write-only setting.
        pam(b, 0x59, 0x30);
        assert_eq!(rd(b, 0xF_0000), 0x22);
        assert!(b.ram_page(0xF_0000, true).is_some(), "RW shadow RAM gets write TLB entries");
        b.write_phys(0xF_0001, &[0x33]);
        assert_eq!(rd(b, 0xF_0001), 0x33);
        // Read-only: reads RAM, writes dropped, no write pointer.
        pam(b, 0x59, 0x10);
        b.write_phys(0xF_0001, &[0x44]);
        assert_eq!(rd(b, 0xF_0001), 0x33);
        assert!(b.ram_page(0xF_0000, true).is_none() && b.ram_page(0xF_0000, false).is_some());
        // Each nibble is its own segment: PAM1's low nibble opens 0xC0000-0xC3FFF only.
        pam(b, 0x5A, 0x03);
        b.write_phys(0xC_0000, &[0x55]);
        assert_eq!(rd(b, 0xC_0000), 0x55);
        assert_eq!(rd(b, 0xC_4000), 0xFF);
        assert!(b.requests.flush_tlb, "remapping drops translations");
        // The 4 GiB alias stays ROM whatever the PAM registers say.
        assert_eq!(rd(b, 0xFFFF_0000), rom[0x1_0000]);
        // Reset puts the ROM back.
        m.reset();
        assert_eq!(rd(&mut m.board, 0xF_0000), rom[0x1_0000]);
        assert_eq!(rd(&mut m.board, 0xC_0000), 0xFF);
    }

    #[test]
    fn boot_orders_parse_as_qemu_spells_them() {
        assert_eq!(parse_boot_order("c"), Ok([2, 0, 0]));
        assert_eq!(parse_boot_order("d"), Ok([3, 0, 0]));
        assert_eq!(parse_boot_order("order=dca"), Ok([3, 2, 1]));
        assert_eq!(parse_boot_order("order=nc,menu=on"), Ok([4, 2, 0]));
        assert!(parse_boot_order("cc").is_err());
        assert!(parse_boot_order("x").is_err());
        assert!(parse_boot_order("").is_err());
    }

    #[test]
    fn a_bios_with_a_kernel_that_is_no_bzimage_is_refused_in_one_line() {
        let mut cfg = MachineConfig::new(16 << 20, vec![0xF4; 0x2_0000]);
        cfg.bios = Some(BiosConfig::default());
        cfg.linux = Some(LinuxBoot { kernel: vec![0; 8192], ..Default::default() });
        let e = Machine::new(cfg).err().expect("refused").to_string();
        assert!(e.contains("not a bzImage") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn a_bios_with_a_kernel_gets_the_linuxboot_rom_and_the_kernel_items() {
        let mut k = vec![0u8; 5 * 512 + 4096];
        k[0x1f1] = 4;
        k[0x1fe..0x200].copy_from_slice(&[0x55, 0xAA]);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        k[0x211] = 1;
        k[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        k[0x238..0x23c].copy_from_slice(&255u32.to_le_bytes());
        let mut cfg = MachineConfig::new(64 << 20, vec![0xF4; 0x2_0000]);
        cfg.bios = Some(BiosConfig::default());
        cfg.linux = Some(LinuxBoot {
            kernel: k.clone(),
            initrd: Some(vec![9; 5000]),
            cmdline: "quiet".into(),
            ..Default::default()
        });
        let m = Machine::new(cfg).unwrap();
        let fw = &m.board.fw_cfg;
        use chipset::fw_cfg as f;
        assert!(fw.file_key(firmware::linuxboot::ROM_FILE).is_some());
        assert!(fw.file_key("bootorder").is_some());
        assert_eq!(fw.item(f::SETUP_ADDR).unwrap(), &firmware::linuxboot::SETUP_ADDR.to_le_bytes());
        assert_eq!(fw.item(f::SETUP_DATA).unwrap().len(), 5 * 512);
        assert_eq!(fw.item(f::KERNEL_ADDR).unwrap(), &firmware::linuxboot::KERNEL_ADDR.to_le_bytes());
        assert_eq!(fw.item(f::KERNEL_DATA).unwrap(), &k[5 * 512..]);
        assert_eq!(fw.item(f::INITRD_SIZE).unwrap(), &5000u32.to_le_bytes());
        assert_eq!(fw.item(f::CMDLINE_DATA).unwrap(), b"quiet\0");
        // No direct boot: the CPU starts at the reset vector.
        assert!(m.direct_boot.is_none(), "the BIOS boots it, not the machine");
    }

    #[test]
    fn direct_boot_rom_carries_smbios_and_the_reset_vector() {
        let rom = no_bios_rom(&RamLayout::for_size(512 << 20));
        assert_eq!(rom.len(), 0x1_0000);
        // Mapped ending at 1 MiB: the entry point is at 0xF0000, 16-byte aligned, checksummed.
        assert_eq!(&rom[0..4], b"_SM_");
        assert_eq!(rom[..0x1f].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(&rom[0x10..0x15], b"_DMI_");
        let table = u32::from_le_bytes(rom[0x18..0x1c].try_into().unwrap());
        let len = u16::from_le_bytes([rom[0x16], rom[0x17]]) as u32;
        assert!((0xf0000..0xfff00).contains(&table) && table + len < 0xffff0);
        // The system structure's strings say what Linux prints on its "DMI:" line.
        let t = &rom[(table - 0xf0000) as usize..(table - 0xf0000 + len) as usize];
        let text = String::from_utf8_lossy(t);
        assert!(text.contains(firmware::smbios::PRODUCT), "{text}");
        // The processor structure carries this CPU's signature.
        let sig = cpu::cpuid::SIGNATURE.to_le_bytes();
        assert!(t.windows(4).any(|w| w == sig));
        assert_eq!(&rom[0xfff0..0xfff4], &[0xfa, 0xf4, 0xeb, 0xfd]);
    }
}
