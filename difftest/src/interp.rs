//! The reference interpreter as an [`Engine`]: builds the user-mode machine a [`Case`] describes
//! (4-level paging with exactly the case's pages, CPL 3 flat segments, 64-bit or compatibility mode) and
//! runs the interpreter with exceptions trapped instead of delivered.

use crate::Engine;
use crate::case::{Case, ExceptionInfo, FinalState, FpState, MemRegion, Mode, Outcome, PAGE_SIZE};
use cpu::state::FpuState;
use cpu::state::{attr, cr0, cr4, efer, flags};
use cpu::{CpuBus, CpuState, Exit, Fault, Interpreter, Seg, Segment, Stop};
use std::collections::HashMap;
use std::ptr::NonNull;

/// Sparse physical memory: 4 KiB frames allocated on demand.
#[derive(Default)]
struct SparseBus {
    frames: HashMap<u64, Box<[u8; 4096]>>,
    next: u64,
}

impl SparseBus {
    fn alloc(&mut self) -> u64 {
        let p = 0x10_0000 + self.next * PAGE_SIZE;
        self.next += 1;
        self.frames.insert(p, Box::new([0u8; 4096]));
        p
    }
    fn frame(&mut self, phys: u64) -> &mut [u8; 4096] {
        self.frames.entry(phys & !0xfff).or_insert_with(|| Box::new([0u8; 4096]))
    }
    fn write_u64(&mut self, phys: u64, v: u64) {
        let o = (phys & 0xfff) as usize;
        self.frame(phys)[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn read_u64(&mut self, phys: u64) -> u64 {
        let o = (phys & 0xfff) as usize;
        u64::from_le_bytes(self.frame(phys)[o..o + 8].try_into().expect("8 bytes"))
    }
}

impl CpuBus for SparseBus {
    fn ram_page(&mut self, page: u64, _write: bool) -> Option<NonNull<u8>> {
        self.frames.get_mut(&page).map(|f| NonNull::from(&mut f[0]))
    }
    fn read_phys(&mut self, addr: u64, data: &mut [u8]) {
        match self.frames.get(&(addr & !0xfff)) {
            Some(f) => {
                let o = (addr & 0xfff) as usize;
                data.copy_from_slice(&f[o..o + data.len()]);
            }
            None => data.fill(0xff),
        }
    }
    fn write_phys(&mut self, addr: u64, data: &[u8]) {
        if let Some(f) = self.frames.get_mut(&(addr & !0xfff)) {
            let o = (addr & 0xfff) as usize;
            f[o..o + data.len()].copy_from_slice(data);
        }
    }
    fn io_in(&mut self, _port: u16, _size: u8) -> u32 {
        u32::MAX
    }
    fn io_out(&mut self, _port: u16, _size: u8, _value: u32) {}
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn tsc(&mut self, icount: u64) -> u64 {
        icount
    }
}

const PTE_P: u64 = 1;
const PTE_W: u64 = 2;
const PTE_U: u64 = 4;
const PTE_NX: u64 = 1 << 63;

/// Maps linear page `lin` to a fresh frame with `flags`; returns the frame.
fn map_page(bus: &mut SparseBus, pml4: u64, lin: u64, leaf_flags: u64) -> u64 {
    let mut table = pml4;
    for shift in [39u32, 30, 21] {
        let e_addr = table + ((lin >> shift) & 0x1ff) * 8;
        let e = bus.read_u64(e_addr);
        table = if e & PTE_P != 0 {
            e & 0x000f_ffff_ffff_f000
        } else {
            let t = bus.alloc();
            bus.write_u64(e_addr, t | PTE_P | PTE_W | PTE_U);
            t
        };
    }
    let e_addr = table + ((lin >> 12) & 0x1ff) * 8;
    let e = bus.read_u64(e_addr);
    if e & PTE_P != 0 {
        return e & 0x000f_ffff_ffff_f000;
    }
    let f = bus.alloc();
    bus.write_u64(e_addr, f | leaf_flags);
    f
}

/// The interpreter under test.
#[derive(Default)]
pub struct InterpEngine {
    /// Instruction limit per case (a guard; generated code never loops).
    pub max_instructions: u64,
    /// Run with the Cranelift JIT as block backend, translating every block on first entry (the
    /// `jit` engine).
    pub jit: bool,
}

impl InterpEngine {
    /// A new engine with a generous per-case instruction limit.
    pub fn new() -> Self {
        InterpEngine { max_instructions: 1_000_000, jit: false }
    }

    /// The JIT engine: the interpreter with every block translated by `jit::Jit` before it runs.
    pub fn jit() -> Self {
        InterpEngine { jit: true, ..Self::new() }
    }
}

fn data_seg(sel: u16) -> Segment {
    Segment {
        selector: sel,
        attr: attr::P | attr::S | attr::RW | attr::ACCESSED | attr::DB | attr::G | (3 << attr::DPL_SHIFT),
        limit: 0xffff_ffff,
        base: 0,
    }
}

/// Where the interpreter's copy of Linux's GDT lives (a supervisor page: descriptor reads are implicit
/// supervisor accesses).
const GDT_LIN: u64 = 0xffff_ffff_fe00_0000;

/// Linux's x86-64 GDT as a user process sees its effects (arch/x86/kernel/cpu/common.c): 1 KERNEL32_CS,
/// 2 KERNEL_CS, 3 KERNEL_DS, 4 USER32_CS (0x23), 5 USER_DS (0x2b), 6 USER_CS (0x33), 8-9 the TSS, TLS
/// entries 12-14 empty, 15 CPUNODE (DPL 3 read-only expand-down data whose limit is the CPU and node
/// number: 0 here; only accesses at offsets up to that number could tell the difference, and the
/// generator's data regions lie far above). So far-pointer loads fault or succeed as natively, even
/// with a selector from random data.
pub const LINUX_GDT: [u64; 16] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_fb00_0000_ffff,
    0x00cf_f300_0000_ffff,
    0x00af_fb00_0000_ffff,
    0,
    0x0000_8b00_0000_0067,
    0,
    0,
    0,
    0,
    0,
    0,
    0x0040_f500_0000_0000,
];

/// Builds the machine for `case`: returns the bus, the CPU state, and the data regions' frames.
fn build(case: &Case) -> (SparseBus, CpuState, Vec<Vec<u64>>) {
    let mut bus = SparseBus::default();
    let pml4 = bus.alloc();
    // Code pages: user, read-only, executable; filled with int3 outside the code.
    // `code_pages` is the half-open range [first, end).
    let (first, end) = case.code_pages();
    let mut page = first;
    while page < end {
        let f = map_page(&mut bus, pml4, page, PTE_P | PTE_U);
        bus.frame(f).fill(0xcc);
        for i in 0..PAGE_SIZE {
            let a = page + i;
            if a >= case.code_addr && a < case.code_addr + case.code.len() as u64 {
                bus.frame(f)[i as usize] = case.code[(a - case.code_addr) as usize];
            }
        }
        page += PAGE_SIZE;
    }
    let mut regions = Vec::new();
    for r in &case.data {
        let mut frames = Vec::new();
        for (k, chunk) in r.bytes.chunks(PAGE_SIZE as usize).enumerate() {
            let f = map_page(&mut bus, pml4, r.addr + k as u64 * PAGE_SIZE, PTE_P | PTE_W | PTE_U | PTE_NX);
            bus.frame(f)[..chunk.len()].copy_from_slice(chunk);
            frames.push(f);
        }
        regions.push(frames);
    }
    let gdt = map_page(&mut bus, pml4, GDT_LIN, PTE_P | PTE_W | PTE_NX);
    for (i, d) in LINUX_GDT.iter().enumerate() {
        bus.write_u64(gdt + 8 * i as u64, *d);
    }
    let mut st = CpuState {
        gdtr: cpu::state::DescTable { base: GDT_LIN, limit: 16 * 8 - 1, _pad: 0 },
        // What this host's CPU and Ferrite both have: an instruction the generator picks exists on
        // both sides.
        model: cpu::CpuModel::host_compatible(),
        cr0: cr0::PE | cr0::PG | cr0::ET | cr0::WP | cr0::NE | cr0::MP,
        // OSFXSR and OSXMMEXCPT as Linux sets them (SSE enabled, unmasked SIMD FP exceptions are #XM).
        cr4: cr4::PAE | cr4::PGE | cr4::OSFXSR | cr4::OSXMMEXCPT,
        efer: efer::LME | efer::LMA | efer::NXE | efer::SCE,
        cr3: pml4,
        cpl: 3,
        // The reference is this host's CPU: follow its vendor where results are undefined.
        quirks: cpu::Quirks::host(),
        ..CpuState::default()
    };
    let mut cs = data_seg(0x33);
    cs.attr |= attr::CODE;
    if case.mode == Mode::Long64 {
        cs.attr = (cs.attr & !attr::DB) | attr::L;
    } else {
        cs.selector = 0x23;
    }
    for s in [Seg::Es, Seg::Ss, Seg::Ds] {
        *st.sreg_mut(s) = data_seg(0x2b);
    }
    *st.sreg_mut(Seg::Fs) = Segment::default();
    *st.sreg_mut(Seg::Gs) = Segment::default();
    *st.sreg_mut(Seg::Cs) = cs;
    st.gpr = case.regs.gprs;
    st.rip = case.regs.rip;
    st.rflags = (case.regs.rflags | flags::FIXED1) & !flags::RF;
    st.fpu = fp_to_fpu(&case.fp.unwrap_or_default());
    st.vec.ymm_hi = case.fp.unwrap_or_default().ymm_hi;
    if let Some(pkru) = crate::hostcpu::host_pkru() {
        // As Linux runs processes on a PKU host: CR4.PKE, and the process's PKRU.
        st.cr4 |= cr4::PKE;
        st.pkru = pkru;
    }
    if crate::native::host_avx() {
        // As Linux runs processes on an AVX host: XSAVE enabled with the x87, SSE and AVX components.
        st.cr4 |= cr4::OSXSAVE;
        st.xcr0 = 7;
    }
    (bus, st, regions)
}

impl Engine for InterpEngine {
    fn name(&self) -> &str {
        if self.jit { "jit" } else { "interp" }
    }

    fn run(&mut self, case: &Case) -> Outcome {
        let (mut bus, mut st, frames) = build(case);
        let mut it = Interpreter::new();
        if self.jit {
            match jit::Jit::new() {
                Ok(j) => it.set_backend(Box::new(j), 1),
                Err(e) => return Outcome::HarnessError(format!("jit: {e}")),
            }
        }
        it.trap_faults = true;
        // An instruction Ferrite lacks is reported (Unsupported), not compared as #UD against a host
        // that runs it.
        it.strict = true;
        it.stop_at = Some(case.code_end());
        let exit = it.run(&mut st, &mut bus, self.max_instructions);
        let exception = match exit {
            Exit::ReachedStop => None,
            Exit::Trapped(Fault::Exc { vector, error }) => Some(ExceptionInfo {
                vector,
                error_code: error.map(u64::from),
                rip: st.rip,
                fault_addr: (vector == 14).then_some(st.cr2),
            }),
            Exit::Trapped(Fault::Soft { vector, .. }) => {
                Some(ExceptionInfo { vector, error_code: None, rip: st.rip, fault_addr: None })
            }
            Exit::Trapped(Fault::Stop(Stop::Unimplemented(s))) | Exit::Stopped(Stop::Unimplemented(s)) => {
                // Group by instruction code (the text after it names the operands).
                return Outcome::Unsupported(s.split(" (").next().unwrap_or(&s).to_string());
            }
            other => return Outcome::HarnessError(format!("interpreter stopped: {other:?}")),
        };
        let data = case
            .data
            .iter()
            .zip(frames)
            .map(|(r, fr)| {
                let mut bytes = Vec::with_capacity(r.bytes.len());
                for (k, f) in fr.iter().enumerate() {
                    let n = (r.bytes.len() - k * PAGE_SIZE as usize).min(PAGE_SIZE as usize);
                    bytes.extend_from_slice(&bus.frame(*f)[..n]);
                }
                MemRegion { addr: r.addr, bytes }
            })
            .collect();
        let rip = if case.mode == Mode::Compat32 { st.rip & 0xffff_ffff } else { st.rip };
        let fp = case.fp.map(|_| FpState { ymm_hi: st.vec.ymm_hi, ..fpu_to_fp(&st.fpu) });
        Outcome::Ran(FinalState { gprs: st.gpr, rip, rflags: st.rflags & !flags::RF, data, exception, fp })
    }
}

/// Full 2-bit tag of a non-empty x87 register, recomputed from its contents the way FXRSTOR does it (SDM
/// vol. 1 §10.5.1.1, table 10-3 "Recreating FTW from the abridged FTW"): exponent all ones → special (10);
/// exponent zero → zero (01) when the J bit and the fraction are zero, else special (denormal or
/// pseudo-denormal); otherwise valid (00) when J = 1, special (unnormal) when J = 0.
pub fn tag_of(r: &[u8; 10]) -> u16 {
    let sig = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
    let exp = u16::from_le_bytes([r[8], r[9]]) & 0x7FFF;
    let j = sig >> 63 == 1;
    let frac = sig & !(1u64 << 63);
    match exp {
        0x7FFF => 0b10,
        0 if !j && frac == 0 => 0b01,
        0 => 0b10,
        _ if j => 0b00,
        _ => 0b10,
    }
}

/// Loads an [`FpState`] (FXSAVE terms) into the interpreter's [`FpuState`] as FXRSTOR would: ST(i) goes to
/// physical register (TOP + i) & 7, and the full tag word is recreated from the abridged one and the
/// register contents ([`tag_of`]). FOP, FIP, FDP, FCS and FDS are zero.
pub fn fp_to_fpu(fp: &FpState) -> FpuState {
    let mut f = FpuState { fcw: fp.fcw, fsw: fp.fsw, mxcsr: fp.mxcsr, xmm: fp.xmm, ..FpuState::default() };
    let mut ftw = 0u16;
    for i in 0..8 {
        let p = fp.phys(i);
        let mut v = [0u8; 16];
        v[..10].copy_from_slice(&fp.st[i]);
        f.st[p] = u128::from_le_bytes(v);
        let tag = if fp.ftw >> p & 1 == 1 { tag_of(&fp.st[i]) } else { 0b11 };
        ftw |= tag << (2 * p);
    }
    f.ftw = ftw;
    f.fop = 0;
    f.fip = 0;
    f.fdp = 0;
    f
}

/// Stores the interpreter's [`FpuState`] as FXSAVE would: registers in stack order, abridged tag bit `p` set
/// unless the full tag of R`p` is 11 (empty).
pub fn fpu_to_fp(f: &FpuState) -> FpState {
    let top = ((f.fsw >> 11) & 7) as usize;
    let mut st = [[0u8; 10]; 8];
    for (i, r) in st.iter_mut().enumerate() {
        r.copy_from_slice(&f.st[(top + i) & 7].to_le_bytes()[..10]);
    }
    let mut ftw = 0u8;
    for p in 0..8 {
        if (f.ftw >> (2 * p)) & 3 != 3 {
            ftw |= 1 << p;
        }
    }
    FpState { fcw: f.fcw, fsw: f.fsw, ftw, st, mxcsr: f.mxcsr, xmm: f.xmm, ymm_hi: [0; 16] }
}
