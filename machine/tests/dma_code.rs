//! Per-page code invalidation for DMA: a bus-master write (here fw_cfg's DMA engine, which runs through
//! the same guest-memory path as PCI bus masters) drops only the decoded blocks and JIT translations on
//! the pages it wrote. DMA to a data page keeps every block; DMA over code makes the CPU run the new
//! code, under the interpreter and under the JIT.

use iced_x86::code_asm::*;
use machine::{Accel, Machine, MachineConfig, RunOutcome};

/// Where the test program is loaded (real mode, CS = DS = SS = 0).
const PROG: u64 = 0x1000;
/// The called function (its own page).
const FUNC: u64 = 0x2000;
/// The fw_cfg DMA descriptor (a data page).
const DESC: u64 = 0x3000;
/// The DMA target of the data-page test.
const DATA: u64 = 0x5000;

/// A 64 KiB ROM whose reset vector jumps to [`PROG`].
fn rom() -> Vec<u8> {
    let mut r = vec![0xF4u8; 0x1_0000];
    r[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, PROG as u8, (PROG >> 8) as u8, 0, 0]);
    r
}

fn machine(accel: Accel) -> Machine {
    let mut cfg = MachineConfig::new(16 << 20, rom());
    cfg.accel = accel;
    // Every block is translated on its first entry, so a kept block is a kept translation.
    cfg.jit_threshold = 1;
    Machine::new(cfg).expect("machine")
}

/// Emits one fw_cfg DMA read of item `key` (`len` bytes) to `dst`: the descriptor is rewritten each time
/// (the device clears its control word when done), then its address goes to ports 0x514/0x518
/// (big-endian; the low half starts the transfer).
fn dma_read(a: &mut CodeAssembler, key: u16, len: u32, dst: u32) {
    use chipset::fw_cfg::{DMA_CTL_READ, DMA_CTL_SELECT};
    let control = (u32::from(key) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
    for (off, v) in [(0u32, control), (4, len), (8, 0), (12, dst)] {
        a.mov(dword_ptr(DESC as u32 + off), v.swap_bytes()).unwrap();
    }
    a.xor(eax, eax).unwrap();
    a.mov(dx, 0x514u32).unwrap();
    a.out(dx, eax).unwrap();
    a.mov(eax, (DESC as u32).swap_bytes()).unwrap();
    a.mov(dx, 0x518u32).unwrap();
    a.out(dx, eax).unwrap();
}

/// Ends the run with exit status `(v << 1) | 1` through the debug-exit port.
fn exit(a: &mut CodeAssembler, v: u8) {
    a.mov(al, u32::from(v)).unwrap();
    a.out(0xF4i32, al).unwrap();
    a.hlt().unwrap();
}

/// A program that DMAs a 256-byte item to the data page `iterations` times and exits.
fn data_page_program(key: u16, iterations: u16) -> Vec<u8> {
    let mut a = CodeAssembler::new(16).unwrap();
    let mut top = a.create_label();
    a.mov(cx, u32::from(iterations)).unwrap();
    a.set_label(&mut top).unwrap();
    dma_read(&mut a, key, 256, DATA as u32);
    a.dec(cx).unwrap();
    a.jnz(top).unwrap();
    exit(&mut a, 0x10);
    a.assemble(PROG).unwrap()
}

/// Runs [`data_page_program`]: (decoded blocks, translated blocks).
fn run_data_page(accel: Accel, iterations: u16) -> (u64, u64) {
    let mut m = machine(accel);
    let payload: Vec<u8> = (0..=255u8).collect();
    m.board.fw_cfg.add_file("test/payload", payload.clone(), false).unwrap();
    let key = m.board.fw_cfg.file_key("test/payload").unwrap();
    m.board.ram.write(PROG, &data_page_program(key, iterations));
    assert_eq!(m.run(Some(1_000_000)), RunOutcome::Exited(0x21));
    let mut got = vec![0u8; 256];
    m.board.ram.read(DATA, &mut got);
    assert_eq!(got, payload, "the DMA landed");
    let i = m.interp().expect("an interpreter engine");
    (i.decoded_blocks, i.compiled_blocks())
}

#[test]
fn dma_to_a_data_page_keeps_decoded_and_translated_code() {
    for accel in [Accel::Interp, Accel::Jit] {
        let (decoded_2, compiled_2) = run_data_page(accel, 2);
        let (decoded_200, compiled_200) = run_data_page(accel, 200);
        println!(
            "{accel:?}: 2 transfers {decoded_2}/{compiled_2}, 200 transfers {decoded_200}/{compiled_200}"
        );
        // Flushing on every transfer would decode (and translate) the loop again each time.
        assert_eq!(decoded_200, decoded_2, "{accel:?}: blocks decoded again after DMA to a data page");
        assert_eq!(compiled_200, compiled_2, "{accel:?}: blocks translated again after DMA to a data page");
        assert!(decoded_2 < 10, "{accel:?}: {decoded_2} blocks for a five-block program");
        if accel == Accel::Jit {
            assert_eq!(compiled_2, decoded_2, "threshold 1 translates every block");
        } else {
            assert_eq!(compiled_2, 0);
        }
    }
}

#[test]
fn dma_over_code_runs_the_new_code() {
    for accel in [Accel::Interp, Accel::Jit] {
        let mut m = machine(accel);
        // The function returns 1; the DMA replaces it with one returning 2.
        let func = |v: u32| {
            let mut a = CodeAssembler::new(16).unwrap();
            a.mov(ax, v).unwrap();
            a.ret().unwrap();
            a.assemble(FUNC).unwrap()
        };
        let new_code = func(2);
        m.board.fw_cfg.add_file("test/code", new_code.clone(), false).unwrap();
        let key = m.board.fw_cfg.file_key("test/code").unwrap();
        let mut a = CodeAssembler::new(16).unwrap();
        let mut again = a.create_label();
        a.mov(sp, 0x8000u32).unwrap();
        a.mov(cx, 3u32).unwrap();
        a.set_label(&mut again).unwrap();
        // Called (so decoded and translated) a few times before the transfer.
        a.call(FUNC).unwrap();
        a.dec(cx).unwrap();
        a.jnz(again).unwrap();
        a.mov(bx, ax).unwrap();
        dma_read(&mut a, key, new_code.len() as u32, FUNC as u32);
        a.call(FUNC).unwrap();
        a.mov(si, ax).unwrap();
        exit(&mut a, 0x10);
        m.board.ram.write(PROG, &a.assemble(PROG).unwrap());
        m.board.ram.write(FUNC, &func(1));
        assert_eq!(m.run(Some(1_000_000)), RunOutcome::Exited(0x21), "{accel:?}");
        assert_eq!(m.cpu.gpr[3] & 0xFFFF, 1, "{accel:?}: the old function ran before the transfer");
        assert_eq!(m.cpu.gpr[6] & 0xFFFF, 2, "{accel:?}: the new function ran after it");
    }
}
