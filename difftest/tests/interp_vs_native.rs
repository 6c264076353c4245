//! The bounded CI run of the differential tester: random integer sequences on this host's CPU and on
//! the reference interpreter, in 64-bit and compatibility mode. Any divergence fails the test with the
//! tester's reproducer; instructions the interpreter stops on as unimplemented fail it too (the integer
//! families are complete, so an `Unsupported` result is a regression).

use difftest::{Config, InterpEngine, NativeEngine, run_difftest};

#[test]
fn interpreter_matches_host_cpu() {
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(160_000);
    let families = Config::parse_families(
        "alu,shift,muldiv,bcd,bitops,bitcount,bmi1,bmi2,adx,movbe,condmove,exchange,movext,lea,string,stack,\
         convert,bswap,flagops,legacy",
    )
    .expect("integer families");
    let cfg = Config { seed: 0x5eed_2026, cases, max_reports: 3, families, ..Config::default() };
    let mut native = NativeEngine::new();
    let mut interp = InterpEngine::new();
    let report = run_difftest(&cfg, &mut [&mut native, &mut interp]);
    println!("{report}");
    let t = report.totals();
    assert!(report.is_clean(), "divergences between the host CPU and the interpreter:\n{report}");
    assert_eq!(t.unsupported, 0, "the interpreter stopped on unimplemented instructions:\n{report}");
    assert!(t.passed > cases / 2, "too few comparable cases:\n{report}");
}

/// The far-pointer loads (every operand size, 64-bit and compatibility mode, Linux's user selectors,
/// null, kernel, system and out-of-limit ones) and the user-reachable system instructions (RDPMC,
/// MONITOR/MWAIT, SERIALIZE, INVPCID: their CPL 3 faults, or #UD where the host lacks them, which the
/// interpreter's `host-compatible` model must match; RDPKRU/WRPKRU where the host kernel enabled
/// PKU: their values and #GP cases), alone and mixed with the integer families.
#[test]
fn far_pointer_and_system_instructions_match_host_cpu() {
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(160_000) / 8;
    let families = Config::parse_families("farptr,sys,alu,string,stack").expect("families");
    let cfg = Config { seed: 0x1d5_2026, cases, max_reports: 3, families, ..Config::default() };
    let mut native = NativeEngine::new();
    let mut interp = InterpEngine::new();
    let report = run_difftest(&cfg, &mut [&mut native, &mut interp]);
    println!("{report}");
    let t = report.totals();
    assert!(report.is_clean(), "divergences between the host CPU and the interpreter:\n{report}");
    assert_eq!(t.unsupported, 0, "{report}");
    for fam in ["farptr", "sys"] {
        assert!(report.groups.keys().any(|(f, _)| f == fam), "no {fam} cases:\n{report}");
    }
    // Loads succeed and fault in good numbers (a generator that only faulted would prove little).
    assert!(t.ref_exceptions > cases / 10 && t.ref_exceptions < cases * 9 / 10, "{report}");
}
