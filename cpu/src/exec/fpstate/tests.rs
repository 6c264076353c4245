//! FXSAVE/FXRSTOR, XSAVE family, XGETBV/XSETBV and EMMS tests.

use super::*;
use crate::fault::Fault;
use crate::interp::{Exit, Interpreter};
use crate::state::{CpuState, cr0, cr4};
use crate::testutil::*;

fn exec(
    mode: TestMode,
    code: &[u8],
    setup: impl FnOnce(&mut CpuState, &mut TestBus),
) -> (CpuState, TestBus, Exit) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    bus.ram[CODE as usize + code.len()] = 0xf4;
    setup(&mut st, &mut bus);
    let mut it = Interpreter::new();
    it.trap_faults = true;
    let exit = it.run(&mut st, &mut bus, 10_000);
    (st, bus, exit)
}

fn gp() -> Exit {
    Exit::Trapped(Fault::gp0())
}

fn ud() -> Exit {
    Exit::Trapped(Fault::ud())
}

/// A recognisable state: two x87 values, FCW/FOP/pointers, XMM registers, MXCSR.
fn fill(st: &mut CpuState) {
    let f = &mut st.fpu;
    f.fcw = 0x027f;
    f.push(0x3fff_8000_0000_0000_0000);
    f.push(0x4000_c000_0000_0000_0000);
    f.fop = 0x1e8;
    f.fip = 0x1234_5678_9abc;
    f.fdp = 0x2345;
    f.fcs = 0x08;
    f.fds = 0x10;
    for (i, x) in f.xmm.iter_mut().enumerate() {
        *x = 0x1111_1111_1111_1111_1111_1111_1111_1111u128.wrapping_mul(i as u128 + 1);
    }
    f.mxcsr = 0x1fa0;
}

// fxsave [rsi] / fxsave64 [rsi] / fxrstor [rsi] / fxrstor64 [rsi]
const FXSAVE: [u8; 3] = [0x0f, 0xae, 0x06];
const FXSAVE64: [u8; 4] = [0x48, 0x0f, 0xae, 0x06];
const FXRSTOR: [u8; 3] = [0x0f, 0xae, 0x0e];
const FXRSTOR64: [u8; 4] = [0x48, 0x0f, 0xae, 0x0e];

#[test]
fn fxsave_layouts_and_round_trip() {
    for (save, rstor, wide) in [(&FXSAVE[..], &FXRSTOR[..], false), (&FXSAVE64[..], &FXRSTOR64[..], true)] {
        let (st, bus, exit) = exec(TestMode::Long64, save, |st, _| {
            fill(st);
            st.gpr[6] = DATA;
        });
        assert_eq!(exit, Exit::Halted);
        let img = &bus.ram[DATA as usize..DATA as usize + 512];
        let r16 = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let r32 = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap_or([0; 4]));
        assert_eq!(r16(0), 0x027f);
        assert_eq!(r16(2), st.fpu.fsw);
        assert_eq!(img[4], 0xc0, "abridged tags: R6, R7");
        assert_eq!(r16(6), 0x1e8);
        if wide {
            assert_eq!(u64::from_le_bytes(img[8..16].try_into().unwrap_or([0; 8])), 0x1234_5678_9abc);
            assert_eq!(u64::from_le_bytes(img[16..24].try_into().unwrap_or([0; 8])), 0x2345);
        } else {
            assert_eq!(r32(8), 0x5678_9abc);
            assert_eq!(r16(12), 0x08);
            assert_eq!(r32(16), 0x2345);
            assert_eq!(r16(20), 0x10);
        }
        assert_eq!(r32(24), 0x1fa0);
        assert_eq!(r32(28), MXCSR_MASK);
        assert_eq!(&img[32..42], &0x4000_c000_0000_0000_0000u128.to_le_bytes()[..10]);
        assert_eq!(&img[400..416], &st.fpu.xmm[15].to_le_bytes());
        // Restore into a cleared CPU.
        let saved: Vec<u8> = img.to_vec();
        let (st2, _, exit) = exec(TestMode::Long64, rstor, |st, bus| {
            bus.ram[DATA as usize..DATA as usize + 512].copy_from_slice(&saved);
            st.gpr[6] = DATA;
        });
        assert_eq!(exit, Exit::Halted);
        let mut want = st.fpu;
        if wide {
            want.fcs = 0;
            want.fds = 0;
        } else {
            want.fip &= 0xffff_ffff;
        }
        assert_eq!(st2.fpu, want);
    }
}

#[test]
fn fxsave_faults() {
    // Misaligned: #GP. TS or EM: #NM. Reserved MXCSR bits on FXRSTOR: #GP.
    let (_, _, exit) = exec(TestMode::Long64, &FXSAVE, |st, _| st.gpr[6] = DATA + 8);
    assert_eq!(exit, gp());
    for b in [cr0::TS, cr0::EM] {
        let (_, _, exit) = exec(TestMode::Long64, &FXSAVE, |st, _| {
            st.gpr[6] = DATA;
            st.cr0 |= b;
        });
        assert_eq!(exit, Exit::Trapped(Fault::nm()));
    }
    let (_, _, exit) = exec(TestMode::Long64, &FXRSTOR, |st, bus| {
        st.gpr[6] = DATA;
        bus.ram[DATA as usize + 24..DATA as usize + 28].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    });
    assert_eq!(exit, gp());
    // Outside 64-bit mode only XMM0-7 are written.
    let (_, bus, exit) = exec(TestMode::Prot32, &FXSAVE, |st, bus| {
        fill(st);
        st.gpr[6] = DATA;
        bus.ram[DATA as usize + 288..DATA as usize + 512].fill(0xaa);
    });
    assert_eq!(exit, Exit::Halted);
    assert!(bus.ram[DATA as usize + 288..DATA as usize + 512].iter().all(|&b| b == 0xaa));
}

// xsetbv; xgetbv; xsave [rsi]; xsaveopt [rsi]; xsavec [rsi]; xrstor [rsi]
const XSETBV: [u8; 3] = [0x0f, 0x01, 0xd1];
const XGETBV: [u8; 3] = [0x0f, 0x01, 0xd0];
const XSAVE: [u8; 3] = [0x0f, 0xae, 0x26];
const XSAVEOPT: [u8; 3] = [0x0f, 0xae, 0x36];
const XSAVEC: [u8; 3] = [0x0f, 0xc7, 0x26];
const XRSTOR: [u8; 3] = [0x0f, 0xae, 0x2e];

fn osxsave(st: &mut CpuState) {
    st.cr4 |= cr4::OSXSAVE | cr4::OSFXSR;
    st.xcr0 = 3;
    st.gpr[0] = 3;
    st.gpr[2] = 0;
    st.gpr[6] = DATA;
}

#[test]
fn xgetbv_xsetbv_rules() {
    // #UD without CR4.OSXSAVE.
    let (_, _, exit) = exec(TestMode::Long64, &XGETBV, |_, _| {});
    assert_eq!(exit, ud());
    let (_, _, exit) = exec(TestMode::Long64, &XSETBV, |_, _| {});
    assert_eq!(exit, ud());
    // XCR0 = 3 is accepted; bit 0 clear, AVX (bit 2) without SSE (bit 1), an unsupported bit (3: MPX
    // BNDREGS) or ECX != 0 are #GP.
    let (st, _, exit) = exec(TestMode::Long64, &[&XSETBV[..], &XGETBV[..]].concat(), |st, _| {
        osxsave(st);
        st.xcr0 = 1;
        st.gpr[1] = 0;
    });
    assert_eq!(exit, Exit::Halted);
    assert_eq!((st.xcr0, st.gpr[0], st.gpr[2]), (3, 3, 0));
    for (eax, ecx) in [(2u64, 0u64), (5, 0), (0xf, 0), (3, 1)] {
        let (_, _, exit) = exec(TestMode::Long64, &XSETBV, |st, _| {
            osxsave(st);
            st.gpr[0] = eax;
            st.gpr[1] = ecx;
        });
        assert_eq!(exit, gp(), "eax {eax} ecx {ecx}");
    }
    // XGETBV(1) = XINUSE & XCR0: after FLD1 the x87 component is in use, SSE (all zero) is not.
    let (st, _, _) = exec(TestMode::Long64, &[&[0xd9, 0xe8][..], &XGETBV[..]].concat(), |st, _| {
        osxsave(st);
        st.gpr[1] = 1;
    });
    assert_eq!(st.gpr[0], 1);
    // CPUID.1:ECX.OSXSAVE follows CR4.
    let (st, _, _) = exec(TestMode::Long64, &[0x0f, 0xa2], |st, _| {
        osxsave(st);
        st.gpr[0] = 1;
    });
    assert_ne!(st.gpr[1] & (1 << 27), 0);
}

#[test]
fn xsave_xrstor_standard_and_compacted() {
    for (save, compact) in [(&XSAVE, false), (&XSAVEOPT, false), (&XSAVEC, true)] {
        let (st, bus, exit) = exec(TestMode::Long64, save, |st, bus| {
            osxsave(st);
            fill(st);
            bus.ram[DATA as usize + 512..DATA as usize + 576].fill(0);
        });
        assert_eq!(exit, Exit::Halted, "{save:x?}");
        let area: Vec<u8> = bus.ram[DATA as usize..DATA as usize + 576].to_vec();
        let bv = u64::from_le_bytes(area[512..520].try_into().unwrap_or([0; 8]));
        let comp = u64::from_le_bytes(area[520..528].try_into().unwrap_or([0; 8]));
        assert_eq!(bv, 3);
        assert_eq!(comp, if compact { 3 | 1 << 63 } else { 0 });
        assert_eq!(u16::from_le_bytes([area[0], area[1]]), 0x027f);
        assert_eq!(&area[160..176], &st.fpu.xmm[0].to_le_bytes());
        // XRSTOR into a fresh CPU restores both components.
        let (st2, _, exit) = exec(TestMode::Long64, &XRSTOR, |st, bus| {
            osxsave(st);
            bus.ram[DATA as usize..DATA as usize + 576].copy_from_slice(&area);
        });
        assert_eq!(exit, Exit::Halted);
        let mut want = st.fpu;
        want.fip &= 0xffff_ffff;
        assert_eq!(st2.fpu, want);
    }
    // XSTATE_BV = 0 initialises the components; a reserved header byte or an XSTATE_BV bit outside
    // XCR0 is #GP; misalignment is #GP; CR0.TS is #NM.
    let (st, _, exit) = exec(TestMode::Long64, &XRSTOR, |st, bus| {
        osxsave(st);
        fill(st);
        bus.ram[DATA as usize..DATA as usize + 576].fill(0);
        bus.ram[DATA as usize + 24..DATA as usize + 28].copy_from_slice(&0x1f80u32.to_le_bytes());
    });
    assert_eq!(exit, Exit::Halted);
    assert!(x87_is_init(&st.fpu) && sse_is_init(&st.fpu));
    for (off, v) in [(512usize, 4u8), (530, 1)] {
        let (_, _, exit) = exec(TestMode::Long64, &XRSTOR, |st, bus| {
            osxsave(st);
            bus.ram[DATA as usize..DATA as usize + 576].fill(0);
            bus.ram[DATA as usize + off] = v;
        });
        assert_eq!(exit, gp(), "byte {off}");
    }
    let (_, _, exit) = exec(TestMode::Long64, &XSAVE, |st, _| {
        osxsave(st);
        st.gpr[6] = DATA + 16;
    });
    assert_eq!(exit, gp());
    let (_, _, exit) = exec(TestMode::Long64, &XSAVE, |st, _| {
        osxsave(st);
        st.cr0 |= cr0::TS;
    });
    assert_eq!(exit, Exit::Trapped(Fault::nm()));
    let (_, _, exit) = exec(TestMode::Long64, &XSAVE, |st, _| st.gpr[6] = DATA);
    assert_eq!(exit, ud());
}

#[test]
fn emms_empties_the_tags() {
    let (st, _, exit) = exec(TestMode::Long64, &[0xd9, 0xe8, 0x0f, 0x77], |_, _| {});
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.fpu.ftw, 0xffff);
    // fld1 left TOP = 7: EMMS resets it to 0 (SDM vol. 1 table 9-3; difftest seed 9 case 3569).
    assert_eq!(st.fpu.fsw & (7 << 11), 0);
    let (st, _, exit) = exec(TestMode::Long64, &[0x0f, 0x77], |st, _| st.fpu.fsw = 5 << 11 | 0x3c);
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.fpu.fsw, 0x3c, "only TOP changes");
    let (_, _, exit) = exec(TestMode::Long64, &[0x0f, 0x77], |st, _| st.cr0 |= cr0::EM);
    assert_eq!(exit, ud());
    let (_, _, exit) = exec(TestMode::Long64, &[0x0f, 0x77], |st, _| st.cr0 |= cr0::TS);
    assert_eq!(exit, Exit::Trapped(Fault::nm()));
}

/// The AVX component (XCR0 bit 2): XSETBV accepts 7, XGETBV(1) reports it in use once an upper half is
/// non-zero, XSAVE/XSAVEOPT/XSAVEC write bits 255:128 of YMM0-15 at offset 576 (standard and compacted
/// forms alike) and XRSTOR loads them back or initialises them (XSTATE_BV[2] = 0); outside 64-bit mode
/// only YMM0-7 are touched.
#[test]
fn xsave_avx_component() {
    let avx = |st: &mut CpuState| {
        osxsave(st);
        st.xcr0 = 7;
        st.gpr[0] = 7;
        for (i, y) in st.vec.ymm_hi.iter_mut().enumerate() {
            *y = 0xabcd_0000_0000_0000_0000_0000_0000_0000u128 | i as u128;
        }
    };
    let (st, _, exit) = exec(TestMode::Long64, &[&XSETBV[..], &XGETBV[..]].concat(), |st, _| {
        osxsave(st);
        st.gpr[0] = 7;
        st.gpr[1] = 0;
    });
    assert_eq!(exit, Exit::Halted);
    assert_eq!((st.xcr0, st.gpr[0]), (7, 7));
    let (st, _, _) = exec(TestMode::Long64, &XGETBV, |st, _| {
        avx(st);
        st.gpr[1] = 1;
    });
    assert_eq!(st.gpr[0] & 6, 4, "the AVX component is in use, SSE (all zero) is not");
    let (st, _, _) = exec(TestMode::Long64, &XGETBV, |st, _| {
        osxsave(st);
        st.xcr0 = 7;
        st.gpr[1] = 1;
    });
    assert_eq!(st.gpr[0] & 4, 0, "zero upper halves: the AVX component is initial");
    for (save, compact) in [(&XSAVE, false), (&XSAVEOPT, false), (&XSAVEC, true)] {
        let (st, bus, exit) = exec(TestMode::Long64, save, |st, bus| {
            avx(st);
            fill(st);
            bus.ram[DATA as usize..DATA as usize + 1024].fill(0xee);
            bus.ram[DATA as usize + 512..DATA as usize + 576].fill(0);
        });
        assert_eq!(exit, Exit::Halted, "{save:x?}");
        let area: Vec<u8> = bus.ram[DATA as usize..DATA as usize + 832].to_vec();
        let bv = u64::from_le_bytes(area[512..520].try_into().unwrap_or([0; 8]));
        assert_eq!(bv, 7);
        if compact {
            assert_eq!(u64::from_le_bytes(area[520..528].try_into().unwrap_or([0; 8])), 7 | 1 << 63);
        }
        for i in 0..16 {
            assert_eq!(&area[576 + 16 * i..592 + 16 * i], &st.vec.ymm_hi[i].to_le_bytes(), "ymm{i}");
        }
        // Nothing past the component is written.
        assert_eq!(bus.ram[DATA as usize + 832], 0xee);
        let (st2, _, exit) = exec(TestMode::Long64, &XRSTOR, |st, bus| {
            osxsave(st);
            st.xcr0 = 7;
            st.gpr[0] = 7;
            bus.ram[DATA as usize..DATA as usize + 832].copy_from_slice(&area);
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(st2.vec.ymm_hi, st.vec.ymm_hi);
    }
    // XSTATE_BV[2] = 0 initialises the upper halves; RFBM without bit 2 leaves them alone.
    for (eax, want_zero) in [(7u64, true), (3, false)] {
        let (st, _, exit) = exec(TestMode::Long64, &XRSTOR, |st, bus| {
            avx(st);
            st.gpr[0] = eax;
            bus.ram[DATA as usize..DATA as usize + 832].fill(0);
            bus.ram[DATA as usize + 24..DATA as usize + 28].copy_from_slice(&0x1f80u32.to_le_bytes());
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(st.vec.ymm_hi.iter().all(|&y| y == 0), want_zero, "rfbm {eax}");
    }
    // An XSTATE_BV with bit 2 while XCR0 = 3 is #GP.
    let (_, _, exit) = exec(TestMode::Long64, &XRSTOR, |st, bus| {
        osxsave(st);
        bus.ram[DATA as usize..DATA as usize + 832].fill(0);
        bus.ram[DATA as usize + 512] = 4;
    });
    assert_eq!(exit, gp());
    // 32-bit protected mode: YMM0-7 only.
    let (st, bus, exit) = exec(TestMode::Prot32, &XSAVE, |st, bus| {
        avx(st);
        bus.ram[DATA as usize..DATA as usize + 1024].fill(0xee);
        bus.ram[DATA as usize + 512..DATA as usize + 576].fill(0);
    });
    assert_eq!(exit, Exit::Halted);
    assert_eq!(&bus.ram[DATA as usize + 576..DATA as usize + 592], &st.vec.ymm_hi[0].to_le_bytes());
    assert_eq!(bus.ram[DATA as usize + 576 + 16 * 8], 0xee, "ymm8 is not saved outside 64-bit mode");
}
