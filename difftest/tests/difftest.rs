//! End-to-end: native vs native is clean; a deliberately wrong engine is caught and shrunk.

use difftest::disasm::decode_all;
use difftest::*;
use iced_x86::Mnemonic;

/// Native execution with a bug: CF is flipped at the end whenever the executed code contains an ADC.
struct FlipCfAfterAdc(NativeEngine);

impl Engine for FlipCfAfterAdc {
    fn name(&self) -> &str {
        "buggy"
    }
    fn run(&mut self, case: &Case) -> Outcome {
        let mut o = self.0.run(case);
        let has_adc = decode_all(&case.code, case.code_addr, case.mode.bitness())
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Adc);
        if let Outcome::Ran(s) = &mut o
            && has_adc
        {
            s.rflags ^= 1;
        }
        o
    }
}

/// An engine that "implements" nothing but the native result, and reports SHL as unsupported.
struct NoShl(NativeEngine);

impl Engine for NoShl {
    fn name(&self) -> &str {
        "noshl"
    }
    fn run(&mut self, case: &Case) -> Outcome {
        let insns = decode_all(&case.code, case.code_addr, case.mode.bitness());
        if insns.iter().any(|i| i.mnemonic() == Mnemonic::Shl) {
            return Outcome::Unsupported("shl".into());
        }
        self.0.run(case)
    }
}

#[test]
fn native_vs_native_is_clean() {
    let mut a = NativeEngine::new();
    let mut b = NativeEngine::new();
    let config = Config { seed: 2024, cases: 4000, ..Config::default() };
    let report = run_difftest(&config, &mut [&mut a, &mut b]);
    println!("{report}");
    let t = report.totals();
    assert_eq!(t.cases, 4000);
    assert!(report.is_clean(), "{report}");
    assert_eq!(t.passed, 4000);
    // A healthy mix: most cases run to the end, a fair share raise exceptions.
    assert!(t.ref_exceptions > 100 && t.ref_exceptions < 2000, "{}", t.ref_exceptions);
    // Every (integer, the default set) family and both modes were exercised.
    for fam in Family::INTEGER {
        if report.skipped_families.iter().any(|(f, _)| *f == fam) {
            continue;
        }
        assert!(report.groups.keys().any(|(f, _)| f == fam.name()), "no cases for {fam}");
    }
    assert!(report.groups.keys().any(|(_, m)| *m == Mode::Compat32));
    assert!(report.groups.keys().any(|(_, m)| *m == Mode::Long64));
}

#[test]
fn wrong_engine_is_caught_and_shrunk() {
    let mut native = NativeEngine::new();
    let mut buggy = FlipCfAfterAdc(NativeEngine::new());
    let config =
        Config { seed: 99, cases: 300, families: vec![Family::Alu], max_reports: 5, ..Config::default() };
    let report = run_difftest(&config, &mut [&mut native, &mut buggy]);
    let t = report.totals();
    assert!(t.diverged > 0, "{report}");
    assert!(!report.is_clean());
    assert_eq!(report.divergences.len(), 5);
    for d in &report.divergences {
        assert!(d.fields.contains(&"rflags".to_string()), "{}", d.text);
        let k = d.first_bad_insn.expect("shrunk");
        let insns = decode_all(&d.case.code, d.case.code_addr, d.case.mode.bitness());
        // Shrunk to the prefix ending at the first ADC.
        assert_eq!(insns.len(), k + 1);
        assert_eq!(insns[k].mnemonic(), Mnemonic::Adc, "{}", d.text);
        assert!(insns[..k].iter().all(|i| i.mnemonic() != Mnemonic::Adc));
        assert_eq!(d.reference.rflags ^ d.actual.rflags, 1);
        assert!(d.text.contains("DIVERGENCE"));
        assert!(d.text.contains(">> #"));
        assert!(d.text.contains(&format!("seed 99 case {}", d.index)));
    }
    let text = report.to_string();
    assert!(text.contains("rflags"));
    println!("{}", report.divergences[0].text);
}

#[test]
fn unsupported_is_counted_not_diverged() {
    let mut native = NativeEngine::new();
    let mut noshl = NoShl(NativeEngine::new());
    let config = Config { seed: 5, cases: 200, families: vec![Family::Shift], ..Config::default() };
    let report = run_difftest(&config, &mut [&mut native, &mut noshl]);
    let t = report.totals();
    assert!(t.unsupported > 0);
    assert_eq!(t.diverged, 0);
    assert_eq!(t.passed + t.unsupported, 200);
    assert!(report.unsupported.contains_key(&("noshl".to_string(), "shl".to_string())));
    assert!(report.is_clean());
}

#[test]
fn config_parsing() {
    assert_eq!(Config::parse_families("alu, shift").unwrap(), vec![Family::Alu, Family::Shift]);
    assert_eq!(Config::parse_families("all").unwrap(), Family::ALL.to_vec());
    assert!(Config::parse_families("").unwrap().is_empty());
    assert_eq!(Config::parse_families("int").unwrap(), Family::INTEGER.to_vec());
    assert_eq!(Config::parse_families("alu,fp,alu").unwrap().len(), 1 + Family::FP_SIMD.len());
    assert!(Config::parse_families("nope").is_err());
    assert_eq!(Config::parse_modes("compat32").unwrap(), vec![Mode::Compat32]);
    assert_eq!(Config::parse_modes("all").unwrap(), Mode::ALL.to_vec());
}

/// Long native-vs-native soak: `DIFFTEST_CASES=1000000 DIFFTEST_SEED=7 cargo test -p difftest --test difftest
/// -- --ignored soak --nocapture`.
#[test]
#[ignore = "soak: 300,000 native-vs-native cases; run with --ignored"]
fn soak_native_vs_native() {
    let cases = std::env::var("DIFFTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let seed = std::env::var("DIFFTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let mut a = NativeEngine::new();
    let mut b = NativeEngine::new();
    let report = run_difftest(&Config { seed, cases, ..Config::default() }, &mut [&mut a, &mut b]);
    println!("{report}");
    assert!(report.is_clean());
}

#[test]
fn native_throughput_alone() {
    let mut a = NativeEngine::new();
    let report = run_difftest(&Config { seed: 11, cases: 3000, ..Config::default() }, &mut [&mut a]);
    assert_eq!(report.totals().cases, 3000);
    assert_eq!(report.totals().harness_errors, 0, "{report}");
    println!("native alone: {:.0} cases/s", report.reference_cases_per_sec());
}
