//! Reverse execution with host input: a guest that waits for a console byte sent by the "host" (in
//! answer to what the guest prints) is taken back before and after the byte arrived and run forward
//! again: the logged byte is delivered at the same slot, the host sees no output twice (the sinks are
//! muted while re-executing), and the end state is the same, under interp and jit.

use iced_x86::code_asm::*;
use machine::reverse::History;
use machine::{Accel, HostEvent, Machine, MachineConfig, RunOutcome};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;

const PROG: u64 = 0x1000;
const SEEN_AT: u64 = 0x500;

/// Prints `A` on COM1, waits for a received byte, stores the TSC and the byte, exits with 0x21.
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

fn seen(m: &Machine) -> [u8; 9] {
    let mut s = [0u8; 9];
    m.board.ram.read(SEEN_AT, &mut s);
    s
}

fn check(accel: Accel) {
    let (tx, rx) = mpsc::channel();
    let mute = Arc::new(AtomicBool::new(false));
    let printed = Arc::new(AtomicU32::new(0));
    let mut rom = vec![0xF4u8; 0x1_0000];
    rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, PROG as u8, (PROG >> 8) as u8, 0, 0]);
    let mut cfg = MachineConfig::new(16 << 20, rom);
    cfg.accel = accel;
    let (m2, p2) = (mute.clone(), printed.clone());
    cfg.com1 = Box::new(move |_| {
        if !m2.load(Ordering::Relaxed) {
            p2.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(HostEvent::Input(b'x'));
        }
    });
    let mut m = Machine::new(cfg).unwrap();
    m.board.ram.write(PROG, &program());
    m.attach_input(rx);
    let mut h = History::attach(&mut m, Some(mute.clone()));
    assert_eq!(h.run_forward(&mut m, 10_000_000), RunOutcome::Exited(0x21), "{accel:?}");
    let end = m.cpu.icount;
    let hash = m.state_hash();
    let s = seen(&m);
    assert_eq!(s[8], b'x');
    assert_eq!(h.inputs_logged(), 1);
    let at = u32::from_le_bytes(s[..4].try_into().unwrap()) as u64;
    // Back to after the byte arrived, and to before: forward again gives the same run.
    for target in [end - 3, at / 2, 0] {
        assert_eq!(h.goto(&mut m, target), Ok(target), "{accel:?}");
        assert_eq!(m.cpu.icount, target);
        assert_eq!(h.run_forward(&mut m, 10_000_000), RunOutcome::Exited(0x21), "{accel:?} from {target}");
        assert_eq!((m.cpu.icount, m.state_hash(), seen(&m)), (end, hash, s), "{accel:?} from {target}");
    }
    // The host saw the guest's output once, so it answered once.
    assert_eq!(printed.load(Ordering::Relaxed), 1);
    assert_eq!(h.inputs_logged(), 1);
}

#[test]
fn going_back_and_forward_again_replays_the_logged_input() {
    check(Accel::Interp);
    check(Accel::Jit);
}
