//! Self-modifying code must not make the JIT pay a translation for every rewrite: a loop that writes
//! into its own code page each iteration, run with every block translated on first entry, is
//! translated a bounded number of times (the interpreter's per-page back-off), and still ends in
//! exactly the interpreter's state.

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::testutil::{CODE, TestBus, TestMode, asm, cpu_in};
use iced_x86::code_asm::*;

const ITERATIONS: u32 = 2000;

fn program() -> Vec<u8> {
    asm(64, |a| {
        let mut top = a.create_label();
        let mut data = a.create_label();
        a.mov(ecx, ITERATIONS).unwrap();
        a.set_label(&mut top).unwrap();
        // A data byte on the same page as the loop: every store invalidates the loop's block.
        a.mov(byte_ptr(data), cl).unwrap();
        a.add(eax, ecx).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut data).unwrap();
        a.db(&[0]).unwrap();
    })
}

fn run(it: &mut Interpreter) -> (cpu::CpuState, Exit, Vec<u8>) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus);
    let code = program();
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    let exit = it.run(&mut st, &mut bus, 1_000_000);
    (st, exit, bus.ram)
}

#[test]
fn a_loop_rewriting_its_own_page_is_translated_a_bounded_number_of_times() {
    let mut interp = Interpreter::new();
    let (a, ea, ma) = run(&mut interp);
    assert_eq!(ea, Exit::Halted);
    assert_eq!(a.gpr[0] as u32, (1..=ITERATIONS).sum::<u32>());

    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    let (b, eb, mb) = run(&mut jit);
    assert_eq!((b.gpr, b.rip, b.rflags, b.icount), (a.gpr, a.rip, a.rflags, a.icount));
    assert_eq!(eb, ea);
    assert!(ma == mb, "memory differs");
    // Without the back-off every iteration's rewrite costs a translation (about 2000 here).
    let compiled = jit.compiled_blocks();
    assert!(compiled <= 20, "{compiled} translations for {ITERATIONS} rewrites of the loop's page");
}
