//! The bounded CI run of the differential tester for the JIT: random integer sequences on this host's
//! CPU and on the `jit` engine (the interpreter with every block translated by Cranelift before it
//! runs), in 64-bit and compatibility mode. Any divergence fails the test with the tester's reproducer.
//! (The interpreter's own run is `interp_vs_native.rs`; `jit/tests/differential.rs` compares the two
//! engines directly, memory forms included.)

use difftest::{Config, InterpEngine, NativeEngine, run_difftest};

#[test]
fn jit_matches_host_cpu() {
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_JIT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000);
    let families = Config::parse_families(
        "alu,shift,muldiv,bcd,bitops,bitcount,bmi1,bmi2,adx,movbe,condmove,exchange,movext,lea,string,stack,\
         convert,bswap,flagops,legacy",
    )
    .expect("integer families");
    let cfg = Config { seed: 0x0f1e_2026, cases, max_reports: 3, families, ..Config::default() };
    let mut native = NativeEngine::new();
    let mut jit = InterpEngine::jit();
    let report = run_difftest(&cfg, &mut [&mut native, &mut jit]);
    println!("{report}");
    let t = report.totals();
    assert!(report.is_clean(), "divergences between the host CPU and the JIT:\n{report}");
    assert_eq!(t.unsupported, 0, "the JIT engine stopped on unimplemented instructions:\n{report}");
    assert!(t.passed > cases / 2, "too few comparable cases:\n{report}");
}

/// The far-pointer loads and user-reachable system instructions under the JIT engine (see
/// `interp_vs_native.rs`).
#[test]
fn jit_far_pointer_and_system_instructions_match_host_cpu() {
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_JIT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000) / 4;
    let families = Config::parse_families("farptr,sys,alu").expect("families");
    let cfg = Config { seed: 0x1d5_0f1e, cases, max_reports: 3, families, ..Config::default() };
    let mut native = NativeEngine::new();
    let mut jit = InterpEngine::jit();
    let report = run_difftest(&cfg, &mut [&mut native, &mut jit]);
    println!("{report}");
    assert!(report.is_clean(), "divergences between the host CPU and the JIT:\n{report}");
    assert_eq!(report.totals().unsupported, 0, "{report}");
}

/// ADC/SBB (lazy flag kinds of their own in the JIT, their carry in read from whatever operation is
/// pending before them) and PUSHF/POPF (inline in 64-bit code), mixed with the ALU operations that
/// leave CF pending, on this host's CPU and the JIT.
#[test]
fn jit_adc_sbb_and_flag_pushes_match_host_cpu() {
    use iced_x86::Mnemonic as M;
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_JIT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000) / 4;
    let families = Config::parse_families("alu,stack").expect("families");
    let mnemonics = vec![
        M::Adc,
        M::Sbb,
        M::Add,
        M::Sub,
        M::Cmp,
        M::Xor,
        M::Inc,
        M::Dec,
        M::Pushf,
        M::Pushfd,
        M::Pushfq,
        M::Popf,
        M::Popfd,
        M::Popfq,
    ];
    let cfg = Config {
        seed: 0xadc5_bb00,
        cases,
        max_reports: 3,
        families,
        mixed_percent: 100,
        mnemonics,
        ..Config::default()
    };
    let mut native = NativeEngine::new();
    let mut jit = InterpEngine::jit();
    let report = run_difftest(&cfg, &mut [&mut native, &mut jit]);
    println!("{report}");
    let t = report.totals();
    assert!(report.is_clean(), "divergences between the host CPU and the JIT:\n{report}");
    assert_eq!(t.unsupported, 0, "{report}");
    assert!(t.passed > cases / 2, "too few comparable cases:\n{report}");
}
