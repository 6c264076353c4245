//! FP/SIMD state: FXSAVE round trip through the native runner and the interpreter's state mapping,
//! native vs native over the x87/MMX/SSE families, and a wrong engine (one flipped XMM bit) is caught.

use difftest::interp::{fp_to_fpu, fpu_to_fp, tag_of};
use difftest::*;

fn fp_case(code: &[u8], fp: FpState) -> Case {
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

fn run(e: &mut dyn Engine, c: &Case) -> FinalState {
    match e.run(c) {
        Outcome::Ran(s) => s,
        o => panic!("unexpected outcome {o:?}"),
    }
}

fn sample_state(seed: u64) -> FpState {
    let mut r = difftest::rng::Rng::new(seed);
    difftest::fpvalues::initial_state(&mut r, Mode::Long64)
}

#[test]
fn fxsave_image_round_trip() {
    for seed in 0..200 {
        let fp = sample_state(seed);
        assert_eq!(FpState::from_fxsave(&fp.to_fxsave()), fp);
    }
}

#[test]
fn native_loads_and_saves_fp_state_unchanged() {
    let mut native = NativeEngine::new();
    for seed in 0..50 {
        let fp = sample_state(seed);
        // Empty sequence: FXRSTOR then FXSAVE (through the signal frame) must give the same state back.
        let s = run(&mut native, &fp_case(&[], fp));
        assert_eq!(s.exception, None);
        assert_eq!(s.fp, Some(fp), "seed {seed}");
    }
    // GPR-only cases report no FP state.
    let mut c = fp_case(&[], FpState::default());
    c.fp = None;
    assert_eq!(run(&mut native, &c).fp, None);
}

#[test]
fn native_fp_results() {
    let mut native = NativeEngine::new();
    // fld1; fldpi; faddp st(1), st: 1 + pi on an empty stack at TOP 0.
    let s = run(&mut native, &fp_case(&[0xD9, 0xE8, 0xD9, 0xEB, 0xDE, 0xC1], FpState::default()));
    let fp = s.fp.unwrap();
    assert_eq!(fp.top(), 7);
    assert_eq!(fp.ftw, 0x80);
    // 1 + pi = 4.14159... = 2^2 * 1.0353...: exponent 0x4001, significand (pi + 1) * 2^61 = 0x8487ED51...
    assert_eq!(u16::from_le_bytes([fp.st[0][8], fp.st[0][9]]), 0x4001);
    assert_eq!(u64::from_le_bytes(fp.st[0][..8].try_into().unwrap()) >> 32, 0x8487_ED51);
    // addps xmm0, xmm1 with an unmasked invalid exception (SNaN operand): #XM, state unchanged, IE set.
    let mut st = FpState { mxcsr: 0x1F80 & !0x80, ..FpState::default() }; // IM clear
    st.xmm[0] = 0x7FA0_0000;
    st.xmm[1] = 0x3F80_0000;
    let s = run(&mut native, &fp_case(&[0x0F, 0x58, 0xC1], st));
    let e = s.exception.expect("#XM");
    assert_eq!((e.vector, e.error_code, e.rip), (19, None, CODE_ADDR));
    let fp = s.fp.unwrap();
    assert_eq!(fp.xmm[0], 0x7FA0_0000);
    assert_eq!(fp.mxcsr & 1, 1, "IE set on the unmasked exception");
}

#[test]
fn interpreter_mapping_follows_fxrstor() {
    // Tags recreated from contents (SDM vol. 1 table 10-3).
    let f80 = |exp: u16, sig: u64| {
        let mut r = [0u8; 10];
        r[..8].copy_from_slice(&sig.to_le_bytes());
        r[8..].copy_from_slice(&exp.to_le_bytes());
        r
    };
    assert_eq!(tag_of(&f80(0x3FFF, 1 << 63)), 0b00); // valid
    assert_eq!(tag_of(&f80(0x8000, 0)), 0b01); // -0
    assert_eq!(tag_of(&f80(0, 1)), 0b10); // denormal
    assert_eq!(tag_of(&f80(0, 1 << 63)), 0b10); // pseudo-denormal
    assert_eq!(tag_of(&f80(0x3FFF, 1)), 0b10); // unnormal
    assert_eq!(tag_of(&f80(0x7FFF, 1 << 63)), 0b10); // infinity
    for seed in 0..200 {
        let fp = sample_state(seed);
        let f = fp_to_fpu(&fp);
        // Stack order vs physical order.
        for i in 0..8 {
            assert_eq!(f.st[fp.phys(i)].to_le_bytes()[..10], fp.st[i]);
            let tag = (f.ftw >> (2 * fp.phys(i))) & 3;
            assert_eq!(tag == 3, !fp.st_valid(i));
        }
        assert_eq!(fpu_to_fp(&f), fp);
    }
}

/// Native execution with a bug: bit 77 of XMM3 is flipped whenever the case has FP state.
struct FlipXmmBit(NativeEngine);

impl Engine for FlipXmmBit {
    fn name(&self) -> &str {
        "flipxmm"
    }
    fn run(&mut self, case: &Case) -> Outcome {
        let mut o = self.0.run(case);
        if let Outcome::Ran(s) = &mut o
            && let Some(fp) = &mut s.fp
        {
            fp.xmm[3] ^= 1 << 77;
        }
        o
    }
}

#[test]
fn wrong_xmm_bit_is_caught() {
    let mut native = NativeEngine::new();
    let mut buggy = FlipXmmBit(NativeEngine::new());
    let config =
        Config { seed: 3, cases: 40, families: vec![Family::Sse], max_reports: 2, ..Config::default() };
    let report = run_difftest(&config, &mut [&mut native, &mut buggy]);
    let t = report.totals();
    assert_eq!(t.diverged, 40, "{report}");
    for d in &report.divergences {
        assert_eq!(d.fields, vec!["xmm3".to_string()], "{}", d.text);
        assert!(d.text.contains("xmm3"), "{}", d.text);
        // Every prefix diverges, so shrinking stops at the first instruction.
        assert_eq!(d.first_bad_insn, Some(0));
    }
}

#[test]
fn native_vs_native_fp_families_are_clean() {
    let mut a = NativeEngine::new();
    let mut b = NativeEngine::new();
    let cases = 3000;
    let config = Config { seed: 77, cases, families: Family::FP_SIMD.to_vec(), ..Config::default() };
    let report = run_difftest(&config, &mut [&mut a, &mut b]);
    println!("{report}");
    let t = report.totals();
    assert!(report.is_clean(), "{report}");
    assert_eq!(t.passed, cases);
    for fam in Family::FP_SIMD {
        if report.skipped_families.iter().any(|(f, _)| *f == fam) {
            continue;
        }
        assert!(report.groups.keys().any(|(f, _)| f == fam.name()), "no cases for {fam}");
    }
}

#[test]
fn fp_families_parse_and_have_encodings() {
    assert_eq!(Config::parse_families("x87,sse").unwrap(), vec![Family::X87, Family::Sse]);
    assert_eq!(Config::parse_families("fp").unwrap(), Family::FP_SIMD.to_vec());
    assert_eq!(Config::parse_families("all").unwrap(), Family::ALL.to_vec());
    let g = Generator::new(GenConfig { families: Family::FP_SIMD.to_vec(), ..GenConfig::default() });
    for fam in Family::FP_SIMD {
        let n = g.codes(fam, Mode::Long64).len() + g.codes(fam, Mode::Compat32).len();
        let skipped = g.skipped().iter().any(|(f, _)| *f == fam);
        println!("{fam}: {n} encodings{}", if skipped { " (skipped)" } else { "" });
        assert_eq!(n > 0, !skipped, "{fam}");
    }
    assert!(!g.codes(Family::X87, Mode::Long64).is_empty());
    assert!(!g.codes(Family::Sse, Mode::Long64).is_empty());
    // A generated FP case carries FP state; an integer one does not.
    let gc = g.generate(1, 0);
    assert!(gc.case.fp.is_some());
    let gi = Generator::new(GenConfig::default()).generate(1, 0);
    assert!(gi.case.fp.is_none());
}

/// The interpreter against the host over the FP/SIMD families (x87, MMX, SSE..SSE4.2, AES, PCLMUL), in
/// both modes: the bounded CI run of issue #3. Longer runs: `FERRITE_DIFFTEST_FP_CASES=200000`, or
/// `ferrite difftest --families fp --seed S --cases N`.
#[test]
fn interp_vs_native_fp_families() {
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_FP_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(60_000);
    let mut native = NativeEngine::new();
    let mut interp = InterpEngine::new();
    let config = Config {
        seed: 0xf10a_2026,
        cases,
        families: Config::parse_families("fp").unwrap(),
        max_reports: 3,
        ..Config::default()
    };
    let report = run_difftest(&config, &mut [&mut native, &mut interp]);
    println!("{report}");
    let t = report.totals();
    assert!(report.is_clean(), "divergences between the host CPU and the interpreter:\n{report}");
    assert_eq!(t.unsupported, 0, "the interpreter stopped on unimplemented instructions:\n{report}");
    assert!(t.passed > cases / 2, "too few comparable cases:\n{report}");
}
