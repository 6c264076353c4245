//! The JIT's integer SIMD forms in Cranelift vector IR (`jit/src/lower_vec.rs`) against this host's CPU:
//! random sequences of only those mnemonics (legacy SSE2/SSSE3/SSE4.1/SSE4.2 encodings, and their VEX.128
//! and VEX.256 encodings), every encoding of each (register and memory operands, imm8 forms, the
//! encodings that keep the helper or the handler too), on the `jit` engine and natively, in 64-bit and
//! compatibility mode (where the JIT calls the handlers: the same check of the interpreter). Any
//! divergence fails with the tester's reproducer.
//!
//! Longer runs: `FERRITE_DIFFTEST_JIT_VEC_CASES=200000`.

use difftest::{Config, InterpEngine, NativeEngine, run_difftest};
use iced_x86::Mnemonic as M;

/// The mnemonics `lower_vec` lowers (legacy names; the VEX names are these with a V).
const LEGACY: &[M] = &[
    M::Paddb,
    M::Paddw,
    M::Paddd,
    M::Paddq,
    M::Psubb,
    M::Psubw,
    M::Psubd,
    M::Psubq,
    M::Paddsb,
    M::Paddsw,
    M::Psubsb,
    M::Psubsw,
    M::Paddusb,
    M::Paddusw,
    M::Psubusb,
    M::Psubusw,
    M::Pcmpeqb,
    M::Pcmpeqw,
    M::Pcmpeqd,
    M::Pcmpeqq,
    M::Pcmpgtb,
    M::Pcmpgtw,
    M::Pcmpgtd,
    M::Pcmpgtq,
    M::Pminub,
    M::Pminuw,
    M::Pminud,
    M::Pmaxub,
    M::Pmaxuw,
    M::Pmaxud,
    M::Pminsb,
    M::Pminsw,
    M::Pminsd,
    M::Pmaxsb,
    M::Pmaxsw,
    M::Pmaxsd,
    M::Pavgb,
    M::Pavgw,
    M::Pmullw,
    M::Pmulld,
    M::Pand,
    M::Pandn,
    M::Por,
    M::Pxor,
    M::Andps,
    M::Andnpd,
    M::Orps,
    M::Xorpd,
    M::Punpcklbw,
    M::Punpcklwd,
    M::Punpckldq,
    M::Punpcklqdq,
    M::Punpckhbw,
    M::Punpckhwd,
    M::Punpckhdq,
    M::Punpckhqdq,
    M::Unpcklps,
    M::Unpckhps,
    M::Pshufd,
    M::Pshuflw,
    M::Pshufhw,
    M::Pshufb,
    M::Pslldq,
    M::Psrldq,
    M::Psllw,
    M::Pslld,
    M::Psllq,
    M::Psrlw,
    M::Psrld,
    M::Psrlq,
    M::Psraw,
    M::Psrad,
    M::Pmovmskb,
];

fn mnemonics() -> Vec<M> {
    let by_name: std::collections::HashMap<String, M> = M::values().map(|m| (format!("{m:?}"), m)).collect();
    let mut v = LEGACY.to_vec();
    for m in LEGACY {
        let name = format!("{m:?}");
        let vex = format!("V{}", name.to_ascii_lowercase());
        v.extend(by_name.get(&vex).copied());
    }
    v.push(M::Vzeroupper);
    v
}

#[test]
fn jit_vector_ir_forms_match_host_cpu() {
    if !std::arch::is_x86_feature_detected!("avx2") || !std::arch::is_x86_feature_detected!("sse4.2") {
        println!("skipped: the host CPU has no AVX2/SSE4.2");
        return;
    }
    let cases: u64 =
        std::env::var("FERRITE_DIFFTEST_JIT_VEC_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let m = mnemonics();
    assert!(m.contains(&M::Vpcmpeqb) && m.contains(&M::Vpshufb) && m.len() > 2 * LEGACY.len() - 4);
    let cfg = Config {
        seed: 0x7ec_0f1e,
        cases,
        max_reports: 3,
        families: Config::parse_families("sse,ssse3,sse41,sse42,avx,avx2").expect("families"),
        mnemonics: m,
        ..Config::default()
    };
    let mut native = NativeEngine::new();
    let mut jit = InterpEngine::jit();
    let report = run_difftest(&cfg, &mut [&mut native, &mut jit]);
    println!("{report}");
    let t = report.totals();
    assert!(report.is_clean(), "divergences between the host CPU and the JIT:\n{report}");
    assert_eq!(t.unsupported, 0, "the JIT engine stopped on unimplemented instructions:\n{report}");
    assert!(t.passed > cases / 2, "too few comparable cases:\n{report}");
    for fam in ["sse", "ssse3", "sse41", "sse42", "avx", "avx2"] {
        assert!(report.groups.keys().any(|(f, _)| f == fam), "no cases for {fam}:\n{report}");
    }
}
