//! The input port: host input reaches the guest only at deterministic points (the start of a run, and
//! every `INPUT_QUANTUM` instruction slots), stamped with the slot, recorded, and the same in every run.

use iced_x86::code_asm::*;
use machine::input::INPUT_QUANTUM;
use machine::{Accel, GuestInput, HostEvent, Machine, MachineConfig, RunOutcome, StampedInput};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;

const PROG: u64 = 0x1000;
/// Where the guest stores the TSC at which it saw the byte, and the byte.
const SEEN_AT: u64 = 0x500;

/// A guest that writes `A` to COM1, waits for a received byte (LSR.DR), stores the TSC (= slots: 1 GHz
/// virtual time at 1e9 instructions per second) and the byte, and exits.
fn program() -> Vec<u8> {
    let mut a = CodeAssembler::new(16).unwrap();
    let mut wait = a.create_label();
    a.mov(dx, 0x3F8u32).unwrap();
    a.mov(al, u32::from(b'A')).unwrap();
    a.out(dx, al).unwrap();
    a.mov(dx, 0x3FDu32).unwrap();
    a.set_label(&mut wait).unwrap();
    a.in_(al, dx).unwrap();
    a.test(al, 1).unwrap();
    a.jz(wait).unwrap();
    a.rdtsc().unwrap();
    a.mov(dword_ptr(SEEN_AT as u32), eax).unwrap();
    a.mov(dx, 0x3F8u32).unwrap();
    a.in_(al, dx).unwrap();
    a.mov(byte_ptr(SEEN_AT as u32 + 8), al).unwrap();
    a.mov(al, 0x10u32).unwrap();
    a.out(0xF4i32, al).unwrap();
    a.assemble(PROG).unwrap()
}

/// Runs the guest; whatever it prints on COM1 is answered at once by the "host" with `x` on the input
/// channel. Returns the recorded inputs, the slot at which the guest saw the byte and the byte.
fn run(accel: Accel) -> (Vec<StampedInput>, u64, u8) {
    let (tx, rx) = mpsc::channel();
    let mut rom = vec![0xF4u8; 0x1_0000];
    rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, PROG as u8, (PROG >> 8) as u8, 0, 0]);
    let mut cfg = MachineConfig::new(16 << 20, rom);
    cfg.accel = accel;
    cfg.rtc_start = 1234;
    cfg.com1 = Box::new(move |_| {
        let _ = tx.send(HostEvent::Input(b'x'));
    });
    let mut m = Machine::new(cfg).unwrap();
    m.board.ram.write(PROG, &program());
    m.attach_input(rx);
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    m.record_inputs(Box::new(move |s| l2.borrow_mut().push(s.clone())));
    assert_eq!(m.run(Some(10_000_000)), RunOutcome::Exited(0x21), "{accel:?}");
    let mut seen = [0u8; 9];
    m.board.ram.read(SEEN_AT, &mut seen);
    let log = log.borrow().clone();
    (log, u64::from(u32::from_le_bytes(seen[..4].try_into().unwrap())), seen[8])
}

#[test]
fn host_input_is_taken_at_input_points_stamped_and_recorded() {
    let (log, seen_at, byte) = run(Accel::Interp);
    assert_eq!(byte, b'x');
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], StampedInput { slot: 0, input: GuestInput::RtcStart(1234) });
    let GuestInput::Serial { bytes, .. } = &log[1].input else { panic!("{log:?}") };
    assert_eq!(bytes, b"x");
    // The host answered within the first few instructions, but the guest sees it at the first input
    // point after that: slot INPUT_QUANTUM, not at an arbitrary slice boundary.
    assert_eq!(log[1].slot, INPUT_QUANTUM, "{log:?}");
    assert!(seen_at >= INPUT_QUANTUM, "the guest saw the byte at {seen_at}, before it was delivered");
    // The same in every run and under the JIT.
    for accel in [Accel::Interp, Accel::Jit] {
        assert_eq!(run(accel), (log.clone(), seen_at, byte), "{accel:?}");
    }
}

#[test]
fn input_sent_before_a_run_is_taken_at_its_start() {
    let (tx, rx) = mpsc::channel();
    let mut m = Machine::new(MachineConfig::new(16 << 20, vec![0xF4; 0x1_0000])).unwrap();
    m.attach_input(rx);
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    m.record_inputs(Box::new(move |s| l2.borrow_mut().push(s.clone())));
    // The firmware is all HLT with IF=0: the run stops at once, after the input point.
    tx.send(HostEvent::Input(b'q')).unwrap();
    let _ = m.run(Some(1000));
    let log = log.borrow();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        log[1],
        StampedInput { slot: 0, input: GuestInput::Serial { device: m.com1, bytes: b"q".to_vec() } }
    );
    assert_eq!(m.inputs_delivered, 1);
}

/// Where a replay's runs end: given the count, the length of the next run.
type Cut<'a> = &'a dyn Fn(u64) -> u64;

/// Runs `program()` under `accel` with `inputs` replayed, in runs that end where `cut` says (given the
/// count, the length of the next run), until the guest exits. Returns the slot at which the guest saw
/// the byte, the byte, the final count and the state hash.
fn replayed(accel: Accel, inputs: &[StampedInput], cut: Cut) -> (u64, u8, u64, u64) {
    let mut rom = vec![0xF4u8; 0x1_0000];
    rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, PROG as u8, (PROG >> 8) as u8, 0, 0]);
    let mut cfg = MachineConfig::new(16 << 20, rom);
    cfg.accel = accel;
    cfg.rtc_start = 1234;
    let mut m = Machine::new(cfg).unwrap();
    m.board.ram.write(PROG, &program());
    m.replay_inputs(inputs.iter().cloned());
    loop {
        match m.run(Some(m.cpu.icount + cut(m.cpu.icount))) {
            RunOutcome::InstructionLimit => assert!(m.cpu.icount < 10_000_000, "{accel:?}: no exit"),
            RunOutcome::Exited(0x21) => break,
            other => panic!("{accel:?}: {other:?}"),
        }
    }
    let mut seen = [0u8; 9];
    m.board.ram.read(SEEN_AT, &mut seen);
    (u64::from(u32::from_le_bytes(seen[..4].try_into().unwrap())), seen[8], m.cpu.icount, m.state_hash())
}

/// A recorded input stamped between input points (a live run takes input at the start of every `run`
/// call) is delivered at exactly its slot when replayed, however the replay's runs are cut: in one
/// run, in runs of 1,000 or 7 instructions, or ending just before, at and after the stamp, under
/// either engine. (Replay used to deliver it at the next input point when no run started there.)
#[test]
fn a_replayed_input_lands_on_its_slot_however_the_runs_are_cut() {
    const STAMP: u64 = 123_457;
    let (log, _, _) = run(Accel::Interp);
    let input = StampedInput { slot: STAMP, input: log[1].input.clone() };
    let inputs = [log[0].clone(), input];
    let want = replayed(Accel::Interp, &inputs, &|_| u64::MAX / 2);
    assert_eq!(want.1, b'x');
    assert!((STAMP..STAMP + 8).contains(&want.0), "the guest saw the byte at {}, stamped {STAMP}", want.0);
    let ending_at = |t: u64| move |n: u64| if n < t { t - n } else { 1_000_003 };
    let (a, b, c) = (ending_at(STAMP - 1), ending_at(STAMP), ending_at(STAMP + 1));
    let cuts: [(&str, Cut); 6] = [
        ("one run", &|_| u64::MAX / 2),
        ("runs of 1,000", &|_| 1000),
        ("runs of 7", &|_| 7),
        ("a run ending just before the stamp", &a),
        ("a run ending at the stamp", &b),
        ("a run ending just after the stamp", &c),
    ];
    for accel in [Accel::Interp, Accel::Jit] {
        for (what, cut) in cuts {
            assert_eq!(replayed(accel, &inputs, cut), want, "{accel:?}, {what}");
        }
    }
}
