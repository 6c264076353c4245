//! A PCI function can schedule work: a test function that completes a request N instructions after the
//! guest starts it raises INTA# at exactly that instruction count (virtual time is instructions at
//! 1e9 instructions per second, so N ns = N instructions), under the interpreter and the JIT. The
//! function is added through the machine builder like any device.

use chipset::pci::{BarChange, BarDef, BarKind, ConfigSpace, PciFunction, reg};
use iced_x86::code_asm::*;
use machine::{Accel, DeviceSpec, MachineBuilder, RunOutcome};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use vmcore::Snapshot;
use vmcore::{DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

/// Device 3, function 0.
const DEVFN: u8 = 3 << 3;
/// Where the test programs BAR0 (16 ports).
const IO_BASE: u16 = 0xC100;
/// ISA IRQ the PIIX3 routes the function's PIRQ line to (slave 8259 input 3).
const ISA_IRQ: u8 = 11;
/// The 8259 vector of that IRQ with the slave at 0x70.
const VECTOR: u8 = 0x70 + (ISA_IRQ - 8);
const PROG: u64 = 0x1000;
const HANDLER: u64 = 0x1800;
/// Where the handler stores the TSC it read on entry.
const TSC_AT: u64 = 0x500;

/// Port 0 (dword write): start a request that completes after the written number of nanoseconds.
/// Port 4: read = 1 when a completion is pending; any write acknowledges it (INTA# drops).
struct DelayedCompleter {
    cfg: ConfigSpace,
    due: Option<VirtTime>,
    done: bool,
    /// Virtual time of the last start, for the test to read.
    started_at: Rc<Cell<u64>>,
}

impl DelayedCompleter {
    fn new(started_at: Rc<Cell<u64>>) -> Self {
        let mut cfg = ConfigSpace::new(0x1234, 0xDE1A, 0xFF_00_00, 0, 0);
        cfg.set_bytes(reg::INTERRUPT_PIN, &[1]);
        cfg.add_bar(0, BarDef { kind: BarKind::Io, size: 16, prefetchable: false });
        DelayedCompleter { cfg, due: None, done: false, started_at }
    }
}

impl PciFunction for DelayedCompleter {
    fn name(&self) -> &str {
        "delayed-completer"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
    fn bar_read(&mut self, _ctx: &mut DeviceCtx<'_>, _window: u8, off: u64, data: &mut [u8]) {
        data.fill(0);
        if off == 4 {
            data[0] = u8::from(self.done);
        }
    }
    fn bar_write(&mut self, ctx: &mut DeviceCtx<'_>, _window: u8, off: u64, data: &[u8]) {
        match off {
            0 if data.len() == 4 => {
                let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.started_at.set(ctx.now.0);
                self.due = Some(VirtTime(ctx.now.0 + u64::from(n)));
                ctx.requests.reschedule = true;
            }
            4 => self.done = false,
            _ => {}
        }
    }
    fn intx(&self) -> bool {
        self.done
    }
    fn next_deadline(&self) -> Option<VirtTime> {
        self.due
    }
    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        if self.due.is_some_and(|t| t <= ctx.now) {
            self.due = None;
            self.done = true;
        }
    }
}

impl Snapshot for DelayedCompleter {
    type Restored = Vec<BarChange>;

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        self.config().save(w);
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag(self.name())?;
        self.config_mut().restore(r)
    }
}

/// Runs the guest that starts a request of `n` ns and spins until the interrupt: (outcome, the
/// acknowledged interrupts with their instruction counts, the virtual time the request started, the
/// TSC the handler read first).
fn run(accel: Accel, n: u32) -> (RunOutcome, Vec<(u8, u64)>, u64, u64) {
    let started = Rc::new(Cell::new(u64::MAX));
    let mut rom = vec![0xF4u8; 0x1_0000];
    rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, PROG as u8, (PROG >> 8) as u8, 0, 0]);
    let mut m = MachineBuilder::new(16 << 20, rom)
        .device(DeviceSpec::Pci { devfn: DEVFN, function: Box::new(DelayedCompleter::new(started.clone())) })
        .configure(|c| {
            c.accel = accel;
            c.jit_threshold = 1;
        })
        .build()
        .expect("machine");
    // What firmware would do: BAR0, I/O decode, the PIRQ line to IRQ 11, the 8259s at 0x08/0x70 with
    // IRQ 11 unmasked, the vector's IVT entry.
    let b = &mut m.board;
    b.pci_config_write(DEVFN, 0x10, &u32::from(IO_BASE).to_le_bytes());
    b.pci_config_write(DEVFN, 0x04, &[0x01, 0x00]);
    let pirq = chipset::pci::pirq_of(DEVFN >> 3, 1);
    b.pci_config_write(chipset::pci::DEVFN_ISA, chipset::pci::PIRQRC + usize::from(pirq), &[ISA_IRQ]);
    b.irqchip.pic.program_like_bios(0x08, 0x70);
    cpu::CpuBus::io_out(b, 0xA1, 1, 0xFF & !(1 << (ISA_IRQ - 8)));
    b.ram.write(u64::from(VECTOR) * 4, &[HANDLER as u8, (HANDLER >> 8) as u8, 0, 0]);

    let mut a = CodeAssembler::new(16).unwrap();
    let mut spin = a.create_label();
    a.sti().unwrap();
    a.mov(dx, u32::from(IO_BASE)).unwrap();
    a.mov(eax, n).unwrap();
    a.out(dx, eax).unwrap();
    a.set_label(&mut spin).unwrap();
    a.jmp(spin).unwrap();
    b.ram.write(PROG, &a.assemble(PROG).unwrap());
    // The handler's first instruction reads the TSC (1 GHz virtual time = the retired count here): the
    // instruction count at which the interrupt was taken, as the guest sees it.
    let mut h = CodeAssembler::new(16).unwrap();
    h.rdtsc().unwrap();
    h.mov(dword_ptr(TSC_AT as u32), eax).unwrap();
    h.mov(dword_ptr(TSC_AT as u32 + 4), edx).unwrap();
    h.mov(dx, u32::from(IO_BASE) + 4).unwrap();
    h.out(dx, al).unwrap();
    h.mov(al, 0x10u32).unwrap();
    h.out(0xF4i32, al).unwrap();
    b.ram.write(HANDLER, &h.assemble(HANDLER).unwrap());

    let irqs = Rc::new(RefCell::new(Vec::new()));
    let i2 = irqs.clone();
    b.irq_trace = Some(Box::new(move |v, icount| i2.borrow_mut().push((v, icount))));
    let outcome = m.run(Some(100_000_000));
    let irqs = irqs.borrow().clone();
    let mut tsc = [0u8; 8];
    m.board.ram.read(TSC_AT, &mut tsc);
    (outcome, irqs, started.get(), u64::from_le_bytes(tsc))
}

#[test]
fn a_pci_function_completes_exactly_n_instructions_later() {
    // The request starts at the OUT, after four instructions: the ROM's far jump, STI, two MOVs.
    const START: u64 = 4;
    for accel in [Accel::Interp, Accel::Jit] {
        for n in [1u32, 2, 1000, 123_457, 5_000_000] {
            let (outcome, irqs, started, tsc) = run(accel, n);
            assert_eq!(outcome, RunOutcome::Exited(0x21), "{accel:?} n={n}");
            assert_eq!(started, START, "{accel:?} n={n}: virtual ns at the start = instructions before it");
            assert_eq!(
                irqs,
                vec![(VECTOR, START + u64::from(n))],
                "{accel:?} n={n}: the interrupt is taken at exactly the completion's instruction"
            );
            assert_eq!(tsc, START + u64::from(n), "{accel:?} n={n}: the guest's own view of when");
        }
    }
}
