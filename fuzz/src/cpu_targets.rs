//! The CPU targets: random code run by the interpreter in each mode, and the same code under the
//! JIT (every block translated on first entry) against the interpreter.
//!
//! Input layout: bytes 0..8 seed the registers, the rest is code placed at [`CODE`] (at most
//! [`MAX_CODE`] bytes) and also copied into the data pages, so that loads see guest-controlled values
//! and stores can overwrite the code (self-modifying code). Exceptions are not delivered (there is no
//! IDT): the run stops at each one, the faulting instruction is skipped, and the run goes on, so a
//! single input exercises many instructions after its first fault.

use crate::rng::Rng;
use cpu::interp::Exit;
use cpu::testutil::{CODE, DATA, RAM, STACK, TestBus, TestMode, cpu_in};
use cpu::{CpuState, Fault, Interpreter, Stop};
use iced_x86::{Decoder, DecoderOptions};
use std::cell::RefCell;
use std::fmt::Write as _;

/// Most code bytes taken from an input.
pub const MAX_CODE: usize = 2048;
/// Instructions one input may retire in all.
const BUDGET: u64 = 4000;
/// The JIT targets' limits: translation at threshold 1 costs about a millisecond per block (Cranelift),
/// and random code ends most blocks within a few instructions (faults, self-modification), so their
/// inputs are kept short to test many programs rather than a few long ones.
const JIT_MAX_CODE: usize = 160;
/// The JIT targets' instruction budget.
const JIT_BUDGET: u64 = 600;
/// Most engine runs (one per skipped fault) for one input.
const MAX_ROUNDS: usize = 48;

fn bits_of(mode: TestMode) -> u32 {
    match mode {
        TestMode::Real => 16,
        TestMode::Prot32 => 32,
        TestMode::Long64 => 64,
    }
}

/// A machine set up for `input` in `mode`: code, data and registers.
fn setup(mode: TestMode, input: &[u8], max_code: usize) -> (CpuState, TestBus) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    let (seed, code) = if input.len() >= 8 {
        (u64::from_le_bytes(input[..8].try_into().expect("8 bytes")), &input[8..])
    } else {
        (0, input)
    };
    let code = &code[..code.len().min(max_code)];
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    // HLT after the code, so that straight-line inputs end.
    bus.ram[CODE as usize + code.len()] = 0xf4;
    let mut r = Rng::new(seed);
    for (i, b) in bus.ram[DATA as usize..DATA as usize + 0x4000].iter_mut().enumerate() {
        *b = if code.is_empty() { r.byte() } else { code[i % code.len()] ^ (i as u8) };
    }
    for (i, g) in st.gpr.iter_mut().enumerate() {
        // Base registers point into the data pages; the rest are random or boundary values.
        *g = match (i, r.below(4)) {
            (3 | 5 | 6 | 7, 0..=1) => DATA + r.below(0x4000) as u64,
            // Some point at the code itself, so stores there are self-modifying code.
            (3 | 5 | 6 | 7, 2) => CODE + r.below(MAX_CODE) as u64,
            (_, 0) => [0, 1, 0x7f, 0x80, 0xffff, 0x8000_0000, u64::MAX][r.below(7)],
            _ => r.next_u64(),
        };
    }
    st.gpr[4] = STACK - (r.below(64) as u64) * 8;
    st.rflags = 0x2 | (r.next_u64() & cpu::state::flags::ARITH);
    (st, bus)
}

/// The length of the instruction at RIP (1 when it cannot be decoded), read from RAM as the CPU
/// would fetch it with paging off or identity-mapped (the test setups), for skipping a fault.
fn insn_len(st: &CpuState, bus: &TestBus, bits: u32) -> u64 {
    let lin = st.seg[1].base.wrapping_add(st.rip) as usize;
    let Some(bytes) = bus.ram.get(lin % RAM..(lin % RAM + 15).min(RAM)) else { return 1 };
    let mut d = Decoder::with_ip(bits, bytes, st.rip, DecoderOptions::NONE);
    let i = d.decode();
    if i.is_invalid() { 1 } else { i.len() as u64 }
}

/// What one run did, in order: for the signature and for comparing engines.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Fault(String),
    Halted,
    Budget,
    Stopped(String),
    Other(String),
}

/// Runs the machine to the end of `input`'s budget on `it`, skipping faults.
fn run_on(
    it: &mut Interpreter,
    mode: TestMode,
    input: &[u8],
    (max_code, budget): (usize, u64),
) -> (CpuState, TestBus, Vec<Event>) {
    let bits = bits_of(mode);
    let (mut st, mut bus) = setup(mode, input, max_code);
    it.flush_all();
    it.trap_faults = true;
    let mut events = Vec::new();
    for _ in 0..MAX_ROUNDS {
        if st.icount >= budget {
            break;
        }
        match it.run(&mut st, &mut bus, budget) {
            Exit::Trapped(f) => {
                events.push(Event::Fault(format!("{f:?}")));
                if !matches!(f, Fault::Soft { .. }) {
                    // Skip the faulting instruction (it did not retire); the count stays exact.
                    let len = insn_len(&st, &bus, bits);
                    st.rip = st.rip.wrapping_add(len);
                    if bits < 64 {
                        st.rip &= 0xffff_ffff;
                    }
                }
                // Whatever the instruction left pending (a single-step trap, a shadow) is dropped
                // with the exception, as a handler that returns elsewhere would.
                st.halted = false;
            }
            Exit::Halted => {
                events.push(Event::Halted);
                break;
            }
            Exit::BudgetSpent => {
                events.push(Event::Budget);
                break;
            }
            Exit::Stopped(s) => {
                events.push(Event::Stopped(match s {
                    Stop::TripleFault => "triple fault".into(),
                    other => format!("{other:?}"),
                }));
                break;
            }
            other => {
                events.push(Event::Other(format!("{other:?}")));
                break;
            }
        }
    }
    (st, bus, events)
}

/// A summary of the behaviour (fault kinds, how the run ended, final mode bits) for the driver's
/// corpus: an input that shows a new summary is kept.
fn signature(st: &CpuState, events: &[Event]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x100_0000_01b3);
    for e in events.iter().take(8) {
        let s = format!("{e:?}");
        // The kind of event and its vector, not the addresses in it.
        for b in s.bytes().take(24) {
            mix(u64::from(b));
        }
    }
    mix(st.cr0 & 0x8000_0001);
    mix(st.efer & 0x500);
    mix(u64::from(st.cpl));
    mix(st.icount.min(BUDGET) / 100);
    h
}

thread_local! {
    static INTERP: RefCell<Interpreter> = RefCell::new(Interpreter::new());
    static JIT: RefCell<Option<Interpreter>> = const { RefCell::new(None) };
}

/// Runs `input` under the interpreter in `mode`. Any panic is a finding (caught by the driver).
pub fn interp(mode: TestMode, input: &[u8]) -> Result<u64, String> {
    INTERP.with(|it| {
        let (st, _, events) = run_on(&mut it.borrow_mut(), mode, input, (MAX_CODE, BUDGET));
        if st.icount > BUDGET {
            return Err(format!("retired {} instructions with a budget of {BUDGET}", st.icount));
        }
        Ok(signature(&st, &events))
    })
}

/// The state the two engines must agree on, as text (every field of `CpuState`).
fn state_text(st: &CpuState) -> String {
    format!("{st:#?}")
}

/// Runs `input` under the interpreter and under the JIT (threshold 1) in `mode`; the final state,
/// RAM and the sequence of exits must be identical.
pub fn jit_vs_interp(mode: TestMode, input: &[u8]) -> Result<u64, String> {
    let limits = (JIT_MAX_CODE, JIT_BUDGET);
    let (a, ma, ea) = INTERP.with(|it| run_on(&mut it.borrow_mut(), mode, input, limits));
    let (b, mb, eb) = JIT.with(|j| {
        let mut j = j.borrow_mut();
        let it = j.get_or_insert_with(|| {
            let mut it = Interpreter::new();
            it.set_backend(Box::new(jit::Jit::new().expect("Cranelift supports this host")), 1);
            it
        });
        let r = run_on(it, mode, input, limits);
        if std::env::var_os("FERRITE_FUZZ_JIT_STATS").is_some() {
            eprintln!("jit: {}", it.backend_stats().unwrap_or_default());
        }
        r
    });
    let (sa, sb) = (state_text(&a), state_text(&b));
    if sa != sb || ea != eb || ma.ram != mb.ram {
        let mut msg = format!("{mode:?}: the JIT and the interpreter differ\n");
        if ea != eb {
            let _ = writeln!(msg, "exits: interp {ea:?}\n       jit    {eb:?}");
        }
        for (x, y) in sa.lines().zip(sb.lines()) {
            if x != y {
                let _ = writeln!(msg, "interp: {}\njit:    {}", x.trim(), y.trim());
            }
        }
        if let Some(p) = ma.ram.iter().zip(&mb.ram).position(|(x, y)| x != y) {
            let _ = writeln!(
                msg,
                "RAM differs first at {p:#x}: interp {:#04x}, jit {:#04x}",
                ma.ram[p], mb.ram[p]
            );
        }
        return Err(msg);
    }
    Ok(signature(&a, &ea))
}

/// A seed input for `bits`-bit code: random bytes salted with common opcodes and prefixes, so the
/// decoder sees plausible instructions as well as garbage.
pub fn seed_code(r: &mut Rng, bits: u32) -> Vec<u8> {
    const COMMON: &[u8] = &[
        0x01, 0x03, 0x29, 0x31, 0x39, 0x85, 0x89, 0x8b, 0x8d, 0xc1, 0xd1, 0xd3, 0xf7, 0xff, 0x0f, 0x66, 0x67,
        0xf3, 0xf2, 0x50, 0x58, 0xe8, 0xc3, 0x74, 0x75, 0xeb, 0xa4, 0xab, 0x9c, 0x9d,
    ];
    let mut v = r.next_u64().to_le_bytes().to_vec();
    let n = 16 + r.below(240);
    for _ in 0..n {
        match r.below(4) {
            0 => v.push(COMMON[r.below(COMMON.len())]),
            1 if bits == 64 => v.push(0x40 | (r.byte() & 0xf)),
            _ => v.push(r.byte()),
        }
    }
    v
}
