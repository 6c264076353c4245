//! Every iced-x86 `Code` either has a handler or raises the model's exception (#UD), on every model,
//! with the reason for each #UD written down.

use super::*;
use crate::interp::{Exit, Interpreter};
use crate::state::CpuState;
use crate::testutil::*;
use iced_x86::{Code, CpuidFeature, Instruction};

fn features(code: Code) -> Vec<CpuidFeature> {
    let mut i = Instruction::default();
    i.set_code(code);
    i.cpuid_features().to_vec()
}

/// Why Ferrite implements no instruction that needs `f` (so no model advertises it and every such
/// instruction raises #UD). `None`: no reason written, which fails the walk below.
fn not_implemented_reason(f: CpuidFeature) -> Option<&'static str> {
    use CpuidFeature as F;
    Some(match f {
        F::AVX
        | F::AVX2
        | F::FMA
        | F::F16C
        | F::VAES
        | F::VPCLMULQDQ
        | F::AVX_VNNI
        | F::AVX_IFMA
        | F::AVX_NE_CONVERT
        | F::AVX_VNNI_INT8
        | F::AVX_VNNI_INT16
        | F::CMPCCXADD => "VEX-encoded (AVX family): no YMM state yet (issue #17's AVX part)",
        F::AVX512F
        | F::AVX512VL
        | F::AVX512BW
        | F::AVX512DQ
        | F::AVX512CD
        | F::AVX512ER
        | F::AVX512PF
        | F::AVX512_4FMAPS
        | F::AVX512_4VNNIW
        | F::AVX512_BF16
        | F::AVX512_BITALG
        | F::AVX512_FP16
        | F::AVX512_IFMA
        | F::AVX512_VBMI
        | F::AVX512_VBMI2
        | F::AVX512_VNNI
        | F::AVX512_VP2INTERSECT
        | F::AVX512_VPOPCNTDQ
        | F::KNC => "EVEX/MVEX-encoded (AVX-512, Knights Corner): no ZMM/mask state",
        F::AMX_BF16 | F::AMX_TILE | F::AMX_INT8 | F::AMX_FP16 | F::AMX_COMPLEX => "AMX: no tile state",
        F::VMX
        | F::INVEPT
        | F::INVVPID
        | F::SVM
        | F::SKINIT
        | F::SMX
        | F::SEV_ES
        | F::SEV_SNP
        | F::RMPQUERY
        | F::TDX
        | F::PCONFIG
        | F::INVLPGB
        | F::TSE
        | F::SKINIT_or_SVM => {
            "virtualization and trusted-execution extensions (VMX, SVM, SMX, SEV, TDX): not modelled"
        }
        F::SGX1
        | F::KL
        | F::AESKLE
        | F::WIDE_KL
        | F::ENQCMD
        | F::UINTR
        | F::FRED
        | F::LKGS
        | F::HRESET
        | F::MSRLIST
        | F::WRMSRNS
        | F::PTWRITE
        | F::CET_SS
        | F::MPX
        | F::HLE
        | F::RTM
        | F::HLE_or_RTM
        | F::TSXLDTRK
        | F::WAITPKG
        | F::MONITORX
        | F::MCOMMIT
        | F::CLZERO
        | F::RDPRU
        | F::XSAVES
        | F::CLDEMOTE
        | F::MOVDIRI
        | F::MOVDIR64B
        | F::RAO_INT
        | F::PREFETCHITI
        | F::PREFETCHWT1
        | F::CL1INVMB
        | F::PCOMMIT
        | F::SMM
        | F::OSS => {
            "later system/ISA extension not implemented yet (each needs state or semantics of its own)"
        }
        F::SHA | F::SHA512 | F::SM3 | F::SM4 | F::GFNI => "crypto/GF extensions: not implemented yet",
        F::SSE4A | F::XOP | F::FMA4 | F::TBM | F::LWP | F::D3NOW | F::D3NOWEXT => {
            "AMD-only extensions that current AMD parts dropped too (SSE4A aside): not implemented"
        }
        F::INTEL8086_ONLY
        | F::INTEL286_ONLY
        | F::INTEL386_ONLY
        | F::INTEL386_A0_ONLY
        | F::INTEL486_A_ONLY
        | F::FPU287XL_ONLY
        | F::FPU387SL_ONLY
        | F::UMOV
        | F::MOV_TR
        | F::IA64
        | F::UDBG => "exists only on obsolete parts (or IA-64): #UD on every x86-64 CPU",
        F::CYRIX_D3NOW
        | F::CYRIX_FPU
        | F::CYRIX_SMM
        | F::CYRIX_SMINT
        | F::CYRIX_SMINT_0F7E
        | F::CYRIX_SHR
        | F::CYRIX_DDI
        | F::CYRIX_EMMI
        | F::CYRIX_DMI
        | F::CENTAUR_AIS
        | F::PADLOCK_ACE
        | F::PADLOCK_PHE
        | F::PADLOCK_PMM
        | F::PADLOCK_RNG
        | F::PADLOCK_GMI
        | F::PADLOCK_UNDOC => "other vendors' (Cyrix, Centaur/VIA) extensions: #UD on Intel and AMD",
        _ => return None,
    })
}

/// iced's pseudo-codes (assembler directives), which its decoder never produces.
const PSEUDO: [Code; 5] =
    [Code::DeclareByte, Code::DeclareWord, Code::DeclareDword, Code::DeclareQword, Code::Zero_bytes];

/// Codes with a handler that the default model turns into #UD, each for the reason given: the
/// default model is the CPUID Ferrite always presented, and these are what a CPU with that CPUID does.
const DEFAULT_UD: &[(Code, &str)] = &[
    (Code::Frstpm, "287XL only (the handler is #UD too)"),
    (Code::Femms, "3DNow!, not on an Intel part (the handler is #UD too)"),
    (Code::Cmpxchg486_rm8_r8, "486 A-step only (the handler is #UD too)"),
    (Code::Cmpxchg486_rm16_r16, "486 A-step only (the handler is #UD too)"),
    (Code::Cmpxchg486_rm32_r32, "486 A-step only (the handler is #UD too)"),
    (Code::Xsaves_mem, "XSAVES not enumerated (the handler is #UD too)"),
    (Code::Xsaves64_mem, "XSAVES not enumerated (the handler is #UD too)"),
    (Code::Xrstors_mem, "XSAVES not enumerated (the handler is #UD too)"),
    (Code::Xrstors64_mem, "XSAVES not enumerated (the handler is #UD too)"),
    (Code::Monitorw, "MONITOR not advertised (Linux then uses HLT); `max` has it"),
    (Code::Monitord, "MONITOR not advertised; `max` has it"),
    (Code::Monitorq, "MONITOR not advertised; `max` has it"),
    (Code::Mwait, "MONITOR not advertised; `max` has it"),
    (Code::Rdpid_r32, "RDPID not advertised (an Ivy Bridge has none); `max` has it"),
    (Code::Rdpid_r64, "RDPID not advertised; `max` has it"),
    (Code::Invpcid_r32_m128, "INVPCID not advertised (Ivy Bridge has PCID, not INVPCID); `max` has it"),
    (Code::Invpcid_r64_m128, "INVPCID not advertised; `max` has it"),
    (Code::Serialize, "SERIALIZE not advertised; `max` has it"),
    (Code::Clwb_m8, "CLWB not advertised (Skylake-SP and later); `max` has it"),
    (Code::Clflushopt_m8, "CLFLUSHOPT not advertised (Skylake and later); `max` has it"),
    (Code::Rdpkru, "PKU not advertised (Skylake-SP and later); `max` has it"),
    (Code::Wrpkru, "PKU not advertised; `max` has it"),
];

fn models() -> [(&'static str, CpuModel); 4] {
    [
        ("ferrite", CpuModel::ferrite()),
        ("qemu64", CpuModel::qemu64()),
        ("max", CpuModel::max()),
        ("host-compatible", CpuModel::host_compatible()),
    ]
}

/// The walk: for every model and every `Code`, the instruction runs (a handler, and the model
/// advertises its features) or raises #UD because the model lacks a feature, and every lacking
/// feature is either one Ferrite implements and the model leaves out (so `max` has it) or one with a
/// written reason above.
#[test]
fn every_code_is_handled_or_raises_the_models_exception() {
    let max = CpuModel::max();
    let mut unreasoned = Vec::new();
    for (name, m) in models() {
        for code in Code::values() {
            if code == Code::INVALID || PSEUDO.contains(&code) {
                continue;
            }
            let allowed = m.allows(code);
            let has = implemented(code);
            if allowed {
                assert!(has, "{name}: {code:?} is advertised but has no handler");
                continue;
            }
            for f in features(code) {
                if m.feature_available(f) || max.feature_available(f) {
                    continue;
                }
                if not_implemented_reason(f).is_none() {
                    unreasoned.push(format!("{code:?} needs {f:?}"));
                }
            }
        }
    }
    unreasoned.sort();
    unreasoned.dedup();
    assert!(unreasoned.is_empty(), "#UD without a written reason: {unreasoned:?}");
}

/// `max` is everything Ferrite implements: every implemented code runs on it, except those whose
/// handler is itself #UD (instructions of obsolete parts and XSAVES), and nothing unimplemented does.
#[test]
fn max_runs_everything_implemented() {
    let max = CpuModel::max();
    for code in Code::values() {
        if code == Code::INVALID || PSEUDO.contains(&code) {
            continue;
        }
        let ud_handler = DEFAULT_UD.iter().any(|(c, why)| *c == code && why.contains("handler is #UD"));
        assert_eq!(max.allows(code), implemented(code) && !ud_handler, "{code:?}");
    }
}

/// Whether `code` needs only AVX-family features (AVX, AVX2, FMA, F16C; the VEX forms of AES and
/// PCLMULQDQ need AVX besides their own bit).
fn avx_family(code: Code) -> bool {
    use CpuidFeature as F;
    let f = features(code);
    f.iter().any(|f| matches!(f, F::AVX | F::AVX2 | F::FMA | F::F16C))
        && f.iter().all(|f| matches!(f, F::AVX | F::AVX2 | F::FMA | F::F16C | F::AES | F::PCLMULQDQ))
}

/// The default model gates only the reasoned list. The AVX family is implemented and advertised by it
/// (x86-64-v3 userspace runs: the Linux boot test's `v3check`), as by `max`.
#[test]
fn default_model_gates_only_the_listed_codes() {
    let m = CpuModel::ferrite();
    let avx: Vec<Code> = Code::values().filter(|&c| implemented(c) && avx_family(c)).collect();
    assert!(avx.len() > 300, "the AVX family is implemented: {}", avx.len());
    assert!(avx.iter().all(|c| c.encoding() == iced_x86::EncodingKind::VEX));
    assert!(avx.iter().all(|&c| CpuModel::max().allows(c)), "max advertises the AVX family");
    assert!(avx.iter().all(|&c| m.allows(c)), "the default model advertises the AVX family");
    let mut gated: Vec<Code> = Code::values().filter(|&c| implemented(c) && !m.allows(c)).collect();
    gated.sort_by_key(|c| *c as u32);
    let mut listed: Vec<Code> = DEFAULT_UD.iter().map(|e| e.0).collect();
    listed.sort_by_key(|c| *c as u32);
    assert_eq!(gated, listed);
}

/// Runs `code` (bits 16/64) from reset-like test state with `model`, exceptions trapped.
fn trap(bits: u32, code: &[u8], model: CpuModel, strict: bool) -> (Exit, CpuState) {
    let mode = if bits == 64 { TestMode::Long64 } else { TestMode::Real };
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    st.model = model;
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    bus.ram[CODE as usize + code.len()] = 0xf4;
    let mut it = Interpreter::new();
    it.trap_faults = true;
    it.strict = strict;
    let exit = it.run(&mut st, &mut bus, 1000);
    (exit, st)
}

/// Encodings the issue names (INVPCID, RDPRU, VMX/SVM, MONITOR/MWAIT, RDPID, RDPMC, SERIALIZE,
/// XTEST, SHA, GFNI, PKU, VEX), with whether the default model runs them.
const SAMPLES: &[(&str, u32, &[u8])] = &[
    ("invpcid rax,[rcx]", 64, &[0x66, 0x0f, 0x38, 0x82, 0x01]),
    ("rdpru", 64, &[0x0f, 0x01, 0xfd]),
    ("vmcall", 64, &[0x0f, 0x01, 0xc1]),
    ("vmrun", 64, &[0x0f, 0x01, 0xd8]),
    ("monitor", 64, &[0x0f, 0x01, 0xc8]),
    ("mwait", 64, &[0x0f, 0x01, 0xc9]),
    ("rdpid rax", 64, &[0xf3, 0x0f, 0xc7, 0xf8]),
    ("serialize", 64, &[0x0f, 0x01, 0xe8]),
    ("xtest", 64, &[0x0f, 0x01, 0xd6]),
    ("sha1nexte xmm0,xmm1", 64, &[0x0f, 0x38, 0xc8, 0xc1]),
    ("gf2p8mulb xmm0,xmm1", 64, &[0x66, 0x0f, 0x38, 0xcf, 0xc1]),
    ("rdpkru", 64, &[0x0f, 0x01, 0xee]),
    ("wrpkru", 64, &[0x0f, 0x01, 0xef]),
    ("vzeroupper", 64, &[0xc5, 0xf8, 0x77]),
    ("vpaddd ymm0,ymm1,ymm2", 64, &[0xc5, 0xf5, 0xfe, 0xc2]),
    ("getsec", 64, &[0x0f, 0x37]),
    ("clzero", 64, &[0x0f, 0x01, 0xfc]),
    ("rdpid eax (real mode)", 16, &[0xf3, 0x0f, 0xc7, 0xf8]),
];

/// Each sample raises #UD on the default model (a fault the guest sees, never a stop), and the run
/// goes on to the next instruction once the handler skips it.
#[test]
fn unadvertised_instructions_raise_ud_and_the_run_goes_on() {
    for (name, bits, code) in SAMPLES {
        let (exit, st) = trap(*bits, code, CpuModel::ferrite(), false);
        assert_eq!(exit, Exit::Trapped(crate::fault::Fault::ud()), "{name}");
        assert_eq!(st.rip, CODE, "{name}: #UD is a fault, RIP on the instruction");
    }
    // End to end in real mode: the #UD handler (IVT vector 6) records the faulting IP and skips the
    // 4-byte RDPID; execution then reaches the HLT after it.
    let code = [0xf3, 0x0f, 0xc7, 0xf8, 0xbb, 0x34, 0x12, 0xf4]; // rdpid eax; mov bx, 0x1234; hlt
    let (st, _, exit) = run(TestMode::Real, &code, |st, bus| {
        st.model = CpuModel::ferrite();
        bus.ram[6 * 4..6 * 4 + 4].copy_from_slice(&[0x00, 0x20, 0x00, 0x00]);
        // pop ax; add ax, 4; push ax; mov cx, ax; iret
        bus.ram[0x2000..0x200a]
            .copy_from_slice(&[0x58, 0x83, 0xc0, 0x04, 0x50, 0x89, 0xc1, 0xcf, 0x90, 0x90]);
    });
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.gpr[1] & 0xffff, CODE + 4, "the handler saw the faulting IP");
    assert_eq!(st.gpr[3] & 0xffff, 0x1234, "the run went on after the #UD");
}

/// vaddps zmm0, zmm1, zmm2 (AVX-512, EVEX): not implemented.
const EVEX_VADDPS: [u8; 6] = [0x62, 0xf1, 0x74, 0x48, 0x58, 0xc2];

/// Under `strict` an instruction Ferrite does not implement stops the machine with a report naming
/// it; one it implements but the model lacks (RDPID, VZEROUPPER on the default model) is still the
/// model's #UD.
#[test]
fn strict_stops_on_unimplemented_only() {
    let (exit, _) = trap(64, &EVEX_VADDPS, CpuModel::max(), true);
    match exit {
        Exit::Trapped(crate::fault::Fault::Stop(crate::fault::Stop::Unimplemented(s))) => {
            assert!(s.contains("Vaddps"), "{s}")
        }
        e => panic!("unexpected {e:?}"),
    }
    let (exit, _) = trap(64, &EVEX_VADDPS, CpuModel::max(), false);
    assert_eq!(exit, Exit::Trapped(crate::fault::Fault::ud()), "not strict: #UD");
    for code in [&[0xf3, 0x0f, 0xc7, 0xf8][..], &[0xc5, 0xf8, 0x77]] {
        let (exit, _) = trap(64, code, CpuModel::ferrite(), true);
        assert_eq!(exit, Exit::Trapped(crate::fault::Fault::ud()), "{code:x?}");
    }
    // Delivered (not trapped): the machine stops only under strict.
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus);
    bus.ram[CODE as usize..CODE as usize + 6].copy_from_slice(&EVEX_VADDPS);
    let mut it = Interpreter::new();
    it.strict = true;
    assert!(matches!(it.run(&mut st, &mut bus, 100), Exit::Stopped(crate::fault::Stop::Unimplemented(_))));
}

/// `max` runs what the default model refuses (RDPID reads IA32_TSC_AUX).
#[test]
fn max_model_runs_rdpid() {
    let (exit, st) = trap(64, &[0xf3, 0x0f, 0xc7, 0xf8], CpuModel::max(), false);
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.gpr[0], st.msr.tsc_aux);
}
