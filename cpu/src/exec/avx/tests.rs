//! VEX prologue rules, the VEX.128/VEX.256 destination rules and every handled code (semantics are
//! checked against the host CPU by `difftest/tests/vex.rs`).

use super::*;
use crate::fault::Fault;
use crate::interp::{Exit, Interpreter};
use crate::state::CpuState;
use crate::testutil::*;

fn exec(mode: TestMode, code: &[u8], setup: impl FnOnce(&mut CpuState)) -> (CpuState, Exit) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    bus.ram[CODE as usize + code.len()] = 0xf4;
    st.cr4 |= cr4::OSXSAVE;
    st.xcr0 = 7;
    setup(&mut st);
    let mut it = Interpreter::new();
    it.trap_faults = true;
    let exit = it.run(&mut st, &mut bus, 10_000);
    (st, exit)
}

// vpaddd ymm5, ymm1, ymm2
const VPADDD_Y: [u8; 4] = [0xc5, 0xf5, 0xfe, 0xea];
// vpaddd xmm3, xmm1, xmm2
const VPADDD_X: [u8; 4] = [0xc5, 0xf1, 0xfe, 0xda];

#[test]
fn vex_needs_osxsave_xcr0_and_clear_ts() {
    let (_, exit) = exec(TestMode::Long64, &VPADDD_Y, |_| {});
    assert_eq!(exit, Exit::Halted);
    let (_, exit) = exec(TestMode::Long64, &VPADDD_Y, |st| st.cr4 &= !cr4::OSXSAVE);
    assert_eq!(exit, Exit::Trapped(Fault::ud()));
    for xcr0 in [1u64, 3] {
        let (_, exit) = exec(TestMode::Long64, &VPADDD_Y, |st| st.xcr0 = xcr0);
        assert_eq!(exit, Exit::Trapped(Fault::ud()), "xcr0 {xcr0}");
    }
    // #UD is checked before #NM.
    let (_, exit) = exec(TestMode::Long64, &VPADDD_Y, |st| {
        st.cr0 |= cr0::TS;
        st.xcr0 = 3;
    });
    assert_eq!(exit, Exit::Trapped(Fault::ud()));
    let (_, exit) = exec(TestMode::Long64, &VPADDD_Y, |st| st.cr0 |= cr0::TS);
    assert_eq!(exit, Exit::Trapped(Fault::nm()));
    // CR0.EM and CR4.OSFXSR do not matter to VEX instructions.
    let (_, exit) = exec(TestMode::Long64, &VPADDD_Y, |st| {
        st.cr0 |= cr0::EM;
        st.cr4 &= !cr4::OSFXSR;
    });
    assert_eq!(exit, Exit::Halted);
    // 32-bit protected mode runs them (C5 with a register ModRM is VEX there).
    let (_, exit) = exec(TestMode::Prot32, &VPADDD_X, |_| {});
    assert_eq!(exit, Exit::Halted);
}

#[test]
fn vex_in_real_mode_is_ud() {
    // In real mode C5 with a register ModRM cannot be LDS: #UD (SDM vol. 2 §2.8: VEX is #UD in
    // real-address and virtual-8086 mode).
    let (_, exit) = exec(TestMode::Real, &VPADDD_X, |_| {});
    assert_eq!(exit, Exit::Trapped(Fault::ud()));
}

#[test]
fn destination_zeroing_rules() {
    let fill = |st: &mut CpuState| {
        for i in 0..16 {
            st.fpu.xmm[i] = 0x0000_0001_0000_0002_0000_0003_0000_0004u128 * (i as u128 + 1);
            st.vec.ymm_hi[i] = 0x0000_0010_0000_0020_0000_0030_0000_0040u128 * (i as u128 + 1);
            st.vec.zmm_hi256[i] = [u128::MAX; 2];
        }
    };
    let (st, exit) = exec(TestMode::Long64, &[&VPADDD_X[..], &VPADDD_Y[..]].concat(), fill);
    assert_eq!(exit, Exit::Halted);
    // VEX.128: bits 255:128 and 511:256 of the destination zeroed, other registers untouched.
    assert_eq!(st.fpu.xmm[3], 0x0000_0005_0000_000a_0000_000f_0000_0014);
    assert_eq!(st.vec.ymm_hi[3], 0);
    assert_eq!(st.vec.zmm_hi256[3], [0; 2]);
    assert_eq!(st.vec.zmm_hi256[4], [u128::MAX; 2]);
    // VEX.256: both lanes written, bits 511:256 zeroed.
    assert_eq!(st.vec.ymm_hi[5], 0x0000_0050_0000_00a0_0000_00f0_0000_0140);
    assert_eq!(st.vec.zmm_hi256[5], [0; 2]);
    // vzeroupper: every upper half; vzeroall: everything (registers 0-7 outside 64-bit mode).
    let (st, _) = exec(TestMode::Long64, &[0xc5, 0xf8, 0x77], fill);
    assert!(st.vec.ymm_hi.iter().all(|&y| y == 0) && st.fpu.xmm.iter().all(|&x| x != 0));
    let (st, _) = exec(TestMode::Prot32, &[0xc5, 0xfc, 0x77], fill);
    assert!(st.fpu.xmm[..8].iter().all(|&x| x == 0) && st.fpu.xmm[8..].iter().all(|&x| x != 0));
    assert!(st.vec.ymm_hi[..8].iter().all(|&y| y == 0) && st.vec.ymm_hi[8] != 0);
}

#[test]
fn gather_rules() {
    // vpgatherdd xmm0, [rsi+xmm1*4], xmm2 with mask lanes 0 and 2 set: loads those, clears the mask.
    let code = [0xc4, 0xe2, 0x69, 0x90, 0x04, 0x8e];
    let (st, exit) = exec(TestMode::Long64, &code, |st| {
        st.gpr[6] = DATA;
        st.fpu.xmm[0] = u128::MAX;
        st.fpu.xmm[1] = (3u128 << 64) | 1;
        st.fpu.xmm[2] = (1u128 << 95) | (1u128 << 31);
    });
    assert_eq!(exit, Exit::Halted);
    let x0 = st.fpu.xmm[0];
    assert_eq!(x0 as u32, 0, "element 0 loaded from DATA+4 (zero RAM)");
    assert_eq!((x0 >> 32) as u32, u32::MAX, "element 1 not selected");
    assert_eq!(st.fpu.xmm[2], 0);
    // The same register as destination and mask is #UD.
    let code = [0xc4, 0xe2, 0x79, 0x90, 0x04, 0x8e]; // vpgatherdd xmm0, [rsi+xmm1*4], xmm0
    let (_, exit) = exec(TestMode::Long64, &code, |st| st.gpr[6] = DATA);
    assert_eq!(exit, Exit::Trapped(Fault::ud()));
}

/// Every VEX code of AVX, AVX2, FMA and F16C (and the VEX.128 AES/PCLMULQDQ forms) has a handler of
/// this family.
#[test]
fn every_avx_code_has_a_handler() {
    let mut n = 0;
    let mut missing = Vec::new();
    for code in Code::values() {
        if !is_avx_code(code) {
            continue;
        }
        n += 1;
        if lookup(code).is_none() {
            missing.push(format!("{code:?}"));
        }
    }
    assert!(missing.is_empty(), "no handler: {missing:?}");
    assert_eq!(n, 669, "iced's AVX/AVX2/FMA/F16C code count changed");
}

#[test]
fn legacy_mnemonic_mapping() {
    assert_eq!(legacy(M::Vpaddb), M::Paddb);
    assert_eq!(legacy(M::Vfmadd132ps), M::Vfmadd132ps);
    assert_eq!(legacy(M::Vcvtps2pd), M::Cvtps2pd);
}
