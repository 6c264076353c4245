//! The VEX families (AVX, AVX2, FMA, F16C) against the host CPU: the YMM upper halves travel through the
//! native runner and the interpreter's state mapping, and the interpreter (and the JIT, which calls the
//! interpreter's handlers for these) matches the host over random sequences in both modes.
//!
//! Longer runs: `FERRITE_DIFFTEST_VEX_CASES=300000 FERRITE_DIFFTEST_VEX_SEED=0x1234`, or `ferrite difftest --families vex --seed S --cases N`.

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

/// `FERRITE_DIFFTEST_VEX_SEED` (decimal or 0x-hex) replaces a test's seed, for longer runs over other seeds.
fn seed_from_env(default: u64) -> u64 {
    std::env::var("FERRITE_DIFFTEST_VEX_SEED")
        .ok()
        .and_then(|s| match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        })
        .unwrap_or(default)
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
    let report =
        run_difftest(&vex_config(seed_from_env(0x0a5c_2026), cases), &mut [&mut native, &mut interp]);
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
    let report = run_difftest(&vex_config(seed_from_env(0x0a5c_2027), cases), &mut [&mut native, &mut jit]);
    println!("{report}");
    assert!(report.is_clean(), "divergences between the host CPU and the JIT:\n{report}");
    assert_eq!(report.totals().unsupported, 0, "{report}");
}

fn f32x4(v: [u32; 4]) -> u128 {
    v.iter().enumerate().fold(0, |acc, (k, &x)| acc | (u128::from(x) << (32 * k)))
}

/// `vdpps ymm0, ymm1, ymm2, 0xff` with exceptions unmasked: the host runs each stage (products, first
/// sums, final sum) of both 128-bit lanes before the next, so a stage that faults in one lane reports
/// the flags of that stage in both lanes, and an earlier-stage fault in the upper lane wins over a
/// later-stage fault in the lower one. Each scenario fails if Ferrite handles the lanes one after the
/// other.
#[test]
fn vdpps_ymm_stages_span_both_lanes() {
    if !host_has_avx2() {
        println!("skipped: the host CPU has no AVX2/FMA/F16C");
        return;
    }
    const P100: u32 = 0x7180_0000; // 2^100: its square overflows exactly
    const TENTH: u32 = 0x3dcc_cccd; // 0.1: its square is inexact
    const ONE: u32 = 0x3f80_0000;
    const INF: u32 = 0x7f80_0000;
    const NINF: u32 = 0xff80_0000;
    const BIG: u32 = 0x7f40_0000; // 1.5 * 2^127: the sum of two overflows
    const DEN: u32 = 0x0000_0001;
    // (name, mxcsr, lane 0 a, lane 0 b, lane 1 a, lane 1 b)
    type Scenario = (&'static str, u32, [u32; 4], [u32; 4], [u32; 4], [u32; 4]);
    let scenarios: [Scenario; 6] = [
        (
            "overflow in lane 0, inexact in lane 1",
            0x1b80,
            [P100, 0, 0, 0],
            [P100, 0, 0, 0],
            [TENTH; 4],
            [TENTH; 4],
        ),
        (
            "inexact in lane 0, overflow in lane 1",
            0x1b80,
            [TENTH; 4],
            [TENTH; 4],
            [P100, 0, 0, 0],
            [P100, 0, 0, 0],
        ),
        (
            "invalid sum in lane 0, overflowing product in lane 1",
            0x1b00,
            [INF, NINF, 0, 0],
            [ONE, ONE, 0, 0],
            [P100, 0, 0, 0],
            [P100, 0, 0, 0],
        ),
        (
            "overflowing sum in lane 0, inexact products in lane 1",
            0x1b80,
            [BIG, BIG, 0, 0],
            [ONE, ONE, 0, 0],
            [TENTH; 4],
            [TENTH; 4],
        ),
        (
            "denormal operand in lane 1, overflow in lane 0",
            0x1b80,
            [P100, 0, 0, 0],
            [P100, 0, 0, 0],
            [DEN, 0, 0, 0],
            [ONE; 4],
        ),
        (
            "overflowing sum in lane 1, no flags in lane 0",
            0x1b80,
            [ONE; 4],
            [ONE; 4],
            [BIG, BIG, 0, 0],
            [ONE, ONE, 0, 0],
        ),
    ];
    let code = [0xc4, 0xe3, 0x75, 0x40, 0xc2, 0xff];
    let mut failures = Vec::new();
    for (name, mxcsr, a0, b0, a1, b1) in scenarios {
        let mut fp = FpState { mxcsr, ..FpState::default() };
        fp.xmm[1] = f32x4(a0);
        fp.xmm[2] = f32x4(b0);
        fp.ymm_hi[1] = f32x4(a1);
        fp.ymm_hi[2] = f32x4(b1);
        let c = vex_case(&code, fp);
        let n = NativeEngine::new().run(&c);
        let i = InterpEngine::new().run(&c);
        let (ns, is) = (n.state().expect("native ran"), i.state().expect("interp ran"));
        println!(
            "{name}: native mxcsr {:#x} {:?}, interp mxcsr {:#x} {:?}",
            ns.fp.as_ref().unwrap().mxcsr,
            ns.exception,
            is.fp.as_ref().unwrap().mxcsr,
            is.exception
        );
        if n != i {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "host and interpreter differ: {failures:?}");
}

fn is_gather(m: iced_x86::Mnemonic) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(
        m,
        M::Vgatherdps
            | M::Vgatherdpd
            | M::Vgatherqps
            | M::Vgatherqpd
            | M::Vpgatherdd
            | M::Vpgatherdq
            | M::Vpgatherqd
            | M::Vpgatherqq
    )
}

/// Whether a case's code holds an instruction `pick` selects.
fn holds(c: &Case, pick: fn(iced_x86::Mnemonic) -> bool) -> bool {
    let mut d =
        iced_x86::Decoder::with_ip(c.mode.bitness(), &c.code, c.code_addr, iced_x86::DecoderOptions::NONE);
    d.iter().any(|i| pick(i.mnemonic()))
}

/// Generated `family` cases (up to 3 instructions) that hold an instruction `pick` selects, `want` of them,
/// run natively, under the interpreter and under the JIT; panics with the first differences. Returns how
/// many of them ended in #PF and in #UD on the host.
fn selected_vs_native(
    family: Family,
    pick: fn(iced_x86::Mnemonic) -> bool,
    want: usize,
    seed: u64,
) -> (u32, u32) {
    let config = GenConfig { max_insns: 3, families: vec![family], mixed_percent: 0, ..GenConfig::default() };
    let generator = Generator::new(config);
    let mut native = NativeEngine::new();
    let mut engines: [Box<dyn Engine>; 2] = [Box::new(InterpEngine::new()), Box::new(InterpEngine::jit())];
    let (mut found, mut faults, mut uds, mut index) = (0, 0, 0, 0u64);
    let mut failures = Vec::new();
    while found < want && index < want as u64 * 400 {
        let g = generator.generate(seed, index);
        index += 1;
        if !holds(&g.case, pick) {
            continue;
        }
        found += 1;
        let Outcome::Ran(reference) = native.run(&g.case) else {
            panic!("native run of case {index} failed")
        };
        match reference.exception.as_ref().map(|e| e.vector) {
            Some(14) => faults += 1,
            Some(6) => uds += 1,
            _ => {}
        }
        for e in engines.iter_mut() {
            let Outcome::Ran(actual) = e.run(&g.case) else {
                panic!("{} did not run case {index}", e.name())
            };
            let d = compare(g.case.mode, &reference, &actual);
            if !d.is_empty() && failures.len() < 5 {
                let (i, r, a) = (
                    g.case.fp.as_ref().unwrap(),
                    reference.fp.as_ref().unwrap(),
                    actual.fp.as_ref().unwrap(),
                );
                let regs: Vec<String> = (0..16)
                    .filter(|&k| r.xmm[k] != a.xmm[k] || r.ymm_hi[k] != a.ymm_hi[k])
                    .map(|k| {
                        format!(
                            "ymm{k}: initial {:032x}{:032x}\n  native {:032x}{:032x}\n  {:6} {:032x}{:032x}",
                            i.ymm_hi[k],
                            i.xmm[k],
                            r.ymm_hi[k],
                            r.xmm[k],
                            e.name(),
                            a.ymm_hi[k],
                            a.xmm[k]
                        )
                    })
                    .collect();
                failures.push(format!(
                    "{} case {}: {d:?}, code {:02x?}\n  native {:?}\n  {} {:?}\n{}",
                    e.name(),
                    index - 1,
                    g.case.code,
                    reference.exception,
                    e.name(),
                    actual.exception,
                    regs.join("\n")
                ));
            }
        }
    }
    println!("{found} selected {family} cases ({faults} with #PF, {uds} with #UD) out of {index} generated");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(found, want, "too few selected cases generated");
    (faults, uds)
}

fn cases_from_env(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The gathers against the host: generated AVX2 cases that contain one (VSIB index pinned to address
/// the data region, an element now and then faulting past its end, masks with most elements enabled,
/// now and then two of destination, index and mask the same register for #UD), interpreter and JIT.
/// More: `FERRITE_DIFFTEST_GATHER_CASES`.
#[test]
fn gathers_vs_native() {
    if !host_has_avx2() {
        println!("skipped: the host CPU has no AVX2/FMA/F16C");
        return;
    }
    let (faults, uds) = selected_vs_native(
        Family::Avx2,
        is_gather,
        cases_from_env("FERRITE_DIFFTEST_GATHER_CASES", 2_000),
        0x6a7e_2026,
    );
    assert!(faults > 0 && uds > 0, "the faulting and #UD forms were not generated");
}

/// VMASKMOVDQU against the host (its implicit DS:rDI destination aimed at the data region, now and then
/// across a page boundary or the region's end), interpreter and JIT.
#[test]
fn vmaskmovdqu_vs_native() {
    if !host_has_avx2() {
        println!("skipped: the host CPU has no AVX2/FMA/F16C");
        return;
    }
    let (faults, _) = selected_vs_native(
        Family::Avx,
        |m| m == iced_x86::Mnemonic::Vmaskmovdqu,
        cases_from_env("FERRITE_DIFFTEST_MASKMOV_CASES", 500),
        0x3a5c_2026,
    );
    assert!(faults > 0, "no faulting VMASKMOVDQU was generated");
}

/// VMASKMOVDQU next to an unmapped page, for several masks (all-zero included) and offsets: the host
/// checks the destination as two 8-byte halves, upper half first, whatever the mask (measured: rDI =
/// end - 3 faults at end + 5 for every mask). The interpreter and the JIT must report the same fault
/// address and store nothing.
#[test]
fn vmaskmovdqu_fault_address() {
    if !host_has_avx2() {
        println!("skipped: the host CPU has no AVX2/FMA/F16C");
        return;
    }
    let end = DATA_ADDR + DATA_SIZE;
    let mut failures = Vec::new();
    for off in [3u64, 8, 12, 16, 17] {
        for mask in [0xffffu32, 0x0001, 0x0100, 0x0200, 0x8000, 0x8100, 0x1010, 0x0000] {
            let mut fp = FpState::default();
            fp.xmm[2] = (0..16).filter(|k| mask >> k & 1 != 0).fold(0u128, |m, k| m | 0x80 << (8 * k));
            fp.xmm[1] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
            let mut c = vex_case(&[0xc5, 0xf9, 0xf7, 0xca], fp); // vmaskmovdqu xmm1, xmm2
            c.regs.gprs[gpr::RDI] = end - off;
            let n = NativeEngine::new().run(&c);
            let fault = |o: &Outcome| o.state().and_then(|s| s.exception.as_ref()).and_then(|e| e.fault_addr);
            for mut e in [Box::new(InterpEngine::new()) as Box<dyn Engine>, Box::new(InterpEngine::jit())] {
                let a = e.run(&c);
                if a != n {
                    failures.push(format!(
                        "rdi = end - {off}, mask {mask:#06x}: native fault {:?}, {} {:?}",
                        fault(&n).map(|x| x.wrapping_sub(end) as i64),
                        e.name(),
                        fault(&a).map(|x| x.wrapping_sub(end) as i64)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// FMA with FTZ set, UE masked and OE unmasked: an element whose exact result is a denormal is flushed
/// to zero, which raises PE (seed 0x5eed0001 case 97743 found Ferrite judging PE without FTZ there).
#[test]
fn fma_flush_to_zero_with_overflow_unmasked() {
    if !host_has_avx2() {
        println!("skipped: the host CPU has no AVX2/FMA/F16C");
        return;
    }
    let tiny = 0x0c80_0000u128; // 2^-70: its square 2^-140 is an exact single denormal
    for mxcsr in [0x9b80u32, 0x8b80, 0x1b80, 0x9f80] {
        let mut fp = FpState { mxcsr, ..FpState::default() };
        fp.xmm[1] = tiny | tiny << 64;
        fp.xmm[2] = tiny | 0x3f80_0000 << 64;
        // vfmadd231ps xmm0, xmm1, xmm2
        let c = vex_case(&[0xc4, 0xe2, 0x71, 0xb8, 0xc2], fp);
        let n = NativeEngine::new().run(&c);
        for mut e in [Box::new(InterpEngine::new()) as Box<dyn Engine>, Box::new(InterpEngine::jit())] {
            let a = e.run(&c);
            let m = |o: &Outcome| o.state().and_then(|s| s.fp.as_ref()).map(|f| f.mxcsr);
            assert_eq!(a, n, "mxcsr {mxcsr:#x}: native {:x?}, {} {:x?}", m(&n), e.name(), m(&a));
        }
    }
}
