//! The VEX families (AVX, AVX2, FMA, F16C) against the host CPU: the YMM upper halves travel through the
//! native runner and the interpreter's state mapping, and the interpreter (and the JIT, which calls the
//! interpreter's handlers for these) matches the host over random sequences in both modes.
//!
//! Longer runs: `FERRITE_DIFFTEST_VEX_CASES=200000`, or `ferrite difftest --families vex --seed S --cases N`.

use difftest::*;

fn host_has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

fn vex_case(code: &[u8], fp: FpState) -> Case {
    let mut gprs = [0u64; 16];
    gprs[gpr::RSP] = DATA_ADDR + 0x2000;
    gprs[gpr::RBX] = DATA_ADDR + 0x100;
    Case {
        mode: Mode::Long64,
        code_addr: CODE_ADDR,
        code: code.to_vec(),
        regs: RegState { gprs, rip: CODE_ADDR, rflags: 0x202 },
        data: vec![MemRegion { addr: DATA_ADDR, bytes: vec![0; DATA_SIZE as usize] }],
        fp: Some(fp),
    }
}

fn final_fp(e: &mut dyn Engine, c: &Case) -> FpState {
    match e.run(c) {
        Outcome::Ran(s) => s.fp.expect("fp state"),
        o => panic!("unexpected outcome {o:?}"),
    }
}

/// The upper halves go in and come out unchanged through both engines, and a VEX.128 write zeroes the
/// upper half of its destination only (so the test fails if either side drops or invents upper bits).
#[test]
fn ymm_upper_halves_round_trip_and_vex128_zeroing() {
    if !host_has_avx2() {
        println!("skipped: the host CPU has no AVX2/FMA/F16C");
        return;
    }
    let mut fp = FpState::default();
    for i in 0..16 {
        fp.xmm[i] = 0x0101_0101_0101_0101_0101_0101_0101_0101u128.wrapping_mul(i as u128 + 1);
        fp.ymm_hi[i] = 0x1111_2222_3333_4444_5555_6666_7777_8888u128.wrapping_add(i as u128);
    }
    // nop
    let c = vex_case(&[0x90], fp);
    for e in [&mut NativeEngine::new() as &mut dyn Engine, &mut InterpEngine::new()] {
        let out = final_fp(e, &c);
        assert_eq!(out.ymm_hi, fp.ymm_hi, "{}", e.name());
        assert_eq!(out.xmm, fp.xmm, "{}", e.name());
    }
    // vpaddd xmm3, xmm1, xmm2 (VEX.128: ymm3[255:128] = 0); vpaddd ymm5, ymm1, ymm2 (both lanes)
    let code = [0xc5, 0xf1, 0xfe, 0xda, 0xc5, 0xf5, 0xfe, 0xea];
    let c = vex_case(&code, fp);
    let n = final_fp(&mut NativeEngine::new(), &c);
    let i = final_fp(&mut InterpEngine::new(), &c);
    assert_eq!(n, i, "native vs interp: {:?}", n.diff(&i));
    assert_eq!(n.ymm_hi[3], 0);
    assert_ne!(n.ymm_hi[5], fp.ymm_hi[5]);
    assert_eq!(n.ymm_hi[4], fp.ymm_hi[4]);
}

fn vex_config(seed: u64, cases: u64) -> Config {
    Config {
        seed,
        cases,
        families: Config::parse_families("vex").unwrap(),
        max_reports: 3,
        ..Config::default()
    }
}

/// The bounded CI run: interpreter against the host over AVX, AVX2, FMA and F16C, both modes.
#[test]
fn interp_vs_native_vex_families() {
    if !host_has_avx2() {
        println!("skipped: the host CPU has no AVX2/FMA/F16C");
        return;
    }
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_VEX_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(30_000);
    let mut native = NativeEngine::new();
    let mut interp = InterpEngine::new();
    let report = run_difftest(&vex_config(0x0a5c_2026, cases), &mut [&mut native, &mut interp]);
    println!("{report}");
    let t = report.totals();
    assert!(report.is_clean(), "divergences between the host CPU and the interpreter:\n{report}");
    assert_eq!(t.unsupported, 0, "the interpreter stopped on unimplemented instructions:\n{report}");
    assert!(t.passed > cases / 2, "too few comparable cases:\n{report}");
    for fam in Family::VEX {
        assert!(report.groups.keys().any(|(f, _)| f == fam.name()), "no cases for {fam}");
    }
}

/// The same against the JIT engine (VEX instructions run as calls of the interpreter's handlers inside
/// translated blocks).
#[test]
fn jit_vs_native_vex_families() {
    if !host_has_avx2() {
        println!("skipped: the host CPU has no AVX2/FMA/F16C");
        return;
    }
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_VEX_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(30_000) / 3;
    let mut native = NativeEngine::new();
    let mut jit = InterpEngine::jit();
    let report = run_difftest(&vex_config(0x0a5c_2027, cases), &mut [&mut native, &mut jit]);
    println!("{report}");
    assert!(report.is_clean(), "divergences between the host CPU and the JIT:\n{report}");
    assert_eq!(report.totals().unsupported, 0, "{report}");
}
