//! The direct Linux boot on synthetic bzImages: the 64-bit entry state the boot protocol promises, and
//! chipset behaviour the kernel's early boot code depends on, run as guest code at that entry.

use iced_x86::code_asm::*;
use machine::{LinuxBoot, Machine, MachineConfig, RunOutcome};

/// A bzImage with protocol 2.15 whose protected-mode kernel is `code64` at offset 0x200 (the 64-bit
/// entry), preceded by 0x200 bytes of filler (where the 32-bit entry would be).
fn bzimage(code64: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 5 * 512];
    b[0x1f1] = 4;
    b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    b[0x201] = 0x6a;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x211] = 1; // LOADED_HIGH
    b[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    b[0x236..0x238].copy_from_slice(&3u16.to_le_bytes()); // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    b[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    b[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes());
    b.extend_from_slice(&[0xf4; 0x200]);
    b.extend_from_slice(code64);
    b
}

fn assemble(f: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a);
    a.assemble(0x10_0200).unwrap()
}

fn boot(code64: &[u8], initrd: Option<Vec<u8>>) -> Machine {
    let mut cfg = MachineConfig::new(64 << 20, Vec::new());
    cfg.linux = Some(LinuxBoot {
        kernel: bzimage(code64),
        initrd,
        cmdline: "console=ttyS0".into(),
        ..Default::default()
    });
    Machine::new(cfg).expect("machine")
}

fn read_u64(m: &Machine, addr: u64) -> u64 {
    let mut b = [0u8; 8];
    m.board.ram.read(addr, &mut b);
    u64::from_le_bytes(b)
}

#[test]
fn entry_state_follows_the_64bit_boot_protocol() {
    // Store RSI, CS, DS, ES, SS, CR0, CR3, CR4, EFER and RFLAGS at 0x200000, then halt with IF=0.
    let code = assemble(|a| {
        a.mov(edi, 0x20_0000u32).unwrap();
        a.mov(qword_ptr(rdi), rsi).unwrap();
        for (i, s) in [cs, ds, es, ss].into_iter().enumerate() {
            a.mov(ax, s).unwrap();
            a.mov(word_ptr(rdi + 8 + 2 * i as i32), ax).unwrap();
        }
        a.mov(rax, cr0).unwrap();
        a.mov(qword_ptr(rdi + 16), rax).unwrap();
        a.mov(rax, cr3).unwrap();
        a.mov(qword_ptr(rdi + 24), rax).unwrap();
        a.mov(rax, cr4).unwrap();
        a.mov(qword_ptr(rdi + 32), rax).unwrap();
        a.mov(ecx, 0xc000_0080u32).unwrap();
        a.rdmsr().unwrap();
        a.mov(dword_ptr(rdi + 40), eax).unwrap();
        a.pushfq().unwrap();
        a.pop(rax).unwrap();
        a.mov(qword_ptr(rdi + 48), rax).unwrap();
        // The identity map covers the top of low RAM, where the initrd is.
        a.mov(eax, 0x3ff_fff8u32).unwrap();
        a.mov(rax, qword_ptr(rax)).unwrap();
        a.mov(qword_ptr(rdi + 56), rax).unwrap();
        a.hlt().unwrap();
    });
    let mut m = boot(&code, Some(vec![0xab; 8192]));
    let out = m.run(Some(1_000_000));
    assert!(
        matches!(&out, RunOutcome::Stopped { reason, .. } if reason.contains("HLT with IF=0")),
        "{out:?}"
    );
    let zero_page = read_u64(&m, 0x20_0000);
    let sel = read_u64(&m, 0x20_0008);
    assert_eq!(sel, 0x0018_0018_0018_0010, "CS = __BOOT_CS, DS = ES = SS = __BOOT_DS");
    assert_eq!(read_u64(&m, 0x20_0010) & 0x8000_0001, 0x8000_0001, "CR0.PE and PG");
    assert_ne!(read_u64(&m, 0x20_0020) & (1 << 5), 0, "CR4.PAE");
    assert_eq!(read_u64(&m, 0x20_0028) & 0x500, 0x500, "EFER.LME and LMA");
    assert_eq!(read_u64(&m, 0x20_0030) & (1 << 9), 0, "interrupts off");
    assert_eq!(read_u64(&m, 0x20_0038), 0xabab_abab_abab_abab, "initrd at the top of RAM, mapped");
    // The zero page: header copied, e820 map, command line, initrd.
    let mut zp = vec![0u8; 4096];
    m.board.ram.read(zero_page, &mut zp);
    assert_eq!(&zp[0x202..0x206], b"HdrS");
    let cmd = u64::from(u32::from_le_bytes(zp[0x228..0x22c].try_into().unwrap()));
    let mut c = [0u8; 14];
    m.board.ram.read(cmd, &mut c);
    assert_eq!(&c, b"console=ttyS0\0");
    assert_eq!(zp[0x1e8], 5, "e820 entries");
    let rd = u32::from_le_bytes(zp[0x218..0x21c].try_into().unwrap());
    assert_eq!(u64::from(rd) + 8192, 64 << 20);
    let rsdp = u64::from_le_bytes(zp[0x70..0x78].try_into().unwrap());
    let mut sig = [0u8; 8];
    m.board.ram.read(rsdp, &mut sig);
    assert_eq!(&sig, b"RSD PTR ");
    // BIOS state: the 8259s at 0x08/0x70 with only the cascade unmasked; MTRRs enabled.
    assert_eq!(m.board.irqchip.pic.imr(0), 0xfb);
    assert_eq!(m.board.irqchip.pic.imr(1), 0xff);
    assert_eq!(m.cpu.msr.mtrr_def_type, 0xc06);
}

#[test]
fn reset_repeats_the_direct_boot() {
    // Count entries at 0x300000 (RAM survives a reset); the first entry resets through 0xCF9, the second
    // exits through the debug-exit port with the count.
    let code = assemble(|a| {
        a.mov(edi, 0x30_0000u32).unwrap();
        a.inc(dword_ptr(rdi)).unwrap();
        a.cmp(dword_ptr(rdi), 2).unwrap();
        let mut second = a.create_label();
        a.je(second).unwrap();
        a.mov(dx, 0xcf9u32).unwrap();
        a.mov(al, 0x06u32).unwrap();
        a.out(dx, al).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut second).unwrap();
        a.mov(eax, dword_ptr(rdi)).unwrap();
        a.out(0xf4, al).unwrap();
        a.hlt().unwrap();
    });
    let mut m = boot(&code, None);
    assert_eq!(m.run(Some(1_000_000)), RunOutcome::Exited(5), "entered twice: (2 << 1) | 1");
}

#[test]
fn pit_channel2_msb_steps_like_hardware() {
    // Linux's quick_pit_calibrate: gate on, channel 2 mode 0 from 0xFFFF, read LSB/MSB at once, then time
    // the MSB steps with the TSC. Stores the first MSB and the TSC at the 0xFF->0xFE and 0xFE->0xFD steps.
    let code = assemble(|a| {
        a.in_(al, 0x61).unwrap();
        a.and(al, !2i32).unwrap();
        a.or(al, 1).unwrap();
        a.out(0x61, al).unwrap();
        a.mov(al, 0xb0u32).unwrap();
        a.out(0x43, al).unwrap();
        a.mov(al, 0xffu32).unwrap();
        a.out(0x42, al).unwrap();
        a.out(0x42, al).unwrap();
        a.mov(edi, 0x20_0000u32).unwrap();
        a.in_(al, 0x42).unwrap();
        a.in_(al, 0x42).unwrap();
        a.mov(byte_ptr(rdi), al).unwrap();
        for (msb, off) in [(0xffu32, 8), (0xfe, 16)] {
            let mut wait = a.create_label();
            a.set_label(&mut wait).unwrap();
            a.in_(al, 0x42).unwrap();
            a.in_(al, 0x42).unwrap();
            a.cmp(al, msb as i32).unwrap();
            a.je(wait).unwrap();
            a.rdtsc().unwrap();
            a.mov(dword_ptr(rdi + off), eax).unwrap();
        }
        a.hlt().unwrap();
    });
    let mut m = boot(&code, None);
    let out = m.run(Some(10_000_000));
    assert!(matches!(out, RunOutcome::Stopped { .. }), "{out:?}");
    let first = read_u64(&m, 0x20_0000) as u8;
    assert_eq!(first, 0xff, "the count reads back at once after it is written");
    let step = read_u64(&m, 0x20_0010).wrapping_sub(read_u64(&m, 0x20_0008)) as u32;
    // 256 PIT clocks = 214.55 us of TSC (1 GHz), within a loop iteration.
    assert!((214_500..214_620).contains(&step), "MSB step took {step} TSC ticks");
}
