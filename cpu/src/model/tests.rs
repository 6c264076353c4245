use super::*;
use crate::cpuid::{cpuid_model, feat};

fn vendor_string(m: &CpuModel) -> Vec<u8> {
    let r = cpuid_model(m, 0, 0, 0);
    let mut s = Vec::new();
    for x in [r[1], r[3], r[2]] {
        s.extend_from_slice(&x.to_le_bytes());
    }
    s
}

#[test]
fn default_model_is_the_old_cpuid() {
    let m = CpuModel::default();
    assert_eq!(m, CpuModel::ferrite());
    assert_eq!(m.signature, crate::cpuid::SIGNATURE);
    assert_eq!(vendor_string(&m), b"GenuineIntel");
    assert_eq!(cpuid_model(&m, 1, 0, 0)[2], feat::LEAF1_ECX);
    assert_eq!(cpuid_model(&m, 1, 0, 0)[3], feat::LEAF1_EDX);
    assert_eq!(cpuid_model(&m, 7, 0, 0), [0, feat::LEAF7_EBX, 0, feat::LEAF7_EDX]);
    assert_eq!(cpuid_model(&m, 0x8000_0001, 0, 0), [0, 0, feat::EXT1_ECX, feat::EXT1_EDX]);
    // And the CR4 bits it accepts are the ones MOV CR4 always accepted, plus VME and PVI now that
    // virtual-8086 mode extensions are implemented and advertised.
    let base = crate::exec::system::CR4_VALID;
    use crate::state::cr4;
    assert_eq!(m.cr4_valid(base), base | cr4::VME | cr4::PVI);
    assert_eq!(CpuModel::qemu64().cr4_valid(base) & cr4::VME, 0, "qemu64 has no VME");
    // A reset CPU reports its model's signature in EDX.
    let st = crate::CpuState::with_model(CpuModel::qemu64());
    assert_eq!(st.gpr[2], 0x0006_0fb1);
    assert_eq!(st.quirks, Quirks::Amd);
}

#[test]
fn qemu64_is_an_amd_part_with_the_baseline_features() {
    let m = CpuModel::parse("qemu64").unwrap();
    assert_eq!(vendor_string(&m), b"AuthenticAMD");
    assert_eq!(m.vendor.quirks(), Quirks::Amd);
    // Family 15 (base), model 107 = 0x6b (extended model 6, model 0xb), stepping 1.
    assert_eq!(cpuid_model(&m, 1, 0, 0)[0], 0x0006_0fb1);
    for f in ["sse2", "pni", "cx16", "lm", "nx", "syscall", "lahf-lm", "hypervisor"] {
        assert!(m.has_named(f), "{f}");
    }
    for f in ["ssse3", "sse4.1", "sse4.2", "popcnt", "aes", "xsave", "fsgsbase", "smep", "pcid"] {
        assert!(!m.has_named(f), "{f}");
    }
    // No XSAVE: leaf 0xD is empty. AMD aliases leaf 1 EDX bits in 0x80000001 EDX (FPU, TSC, CMOV...).
    assert_eq!(cpuid_model(&m, 0xd, 0, 0), [0; 4]);
    let e1 = cpuid_model(&m, 0x8000_0001, 0, 0)[3];
    assert_eq!(e1 & 1, 1, "FPU alias");
    assert_ne!(e1 & (1 << 15), 0, "CMOV alias");
    assert_ne!(e1 & (1 << 29), 0, "LM");
    // Its instructions follow: SSSE3's PSHUFB is #UD, SSE3's ADDSUBPD is not.
    assert!(!m.allows(iced_x86::Code::Pshufb_xmm_xmmm128));
    assert!(m.allows(iced_x86::Code::Addsubpd_xmm_xmmm128));
}

#[test]
fn parse_features_and_vendor() {
    let m = CpuModel::parse("qemu64,+pcid,-x2apic,+ssse3,vendor=intel").unwrap();
    assert!(m.has_named("pcid") && m.has_named("ssse3") && !m.has_named("x2apic"));
    assert_eq!(m.vendor, Vendor::Intel);
    assert_eq!(vendor_string(&m), b"GenuineIntel");
    let m = CpuModel::parse("max,-sse4.2,rdpid=off,sse4_1=on").unwrap();
    assert!(!m.has_named("sse4_2") && !m.has_named("rdpid") && m.has_named("sse4.1"));
    assert!(!m.allows(iced_x86::Code::Crc32_r32_rm32));
    let m = CpuModel::parse("ferrite,vendor=amd").unwrap();
    assert_eq!(vendor_string(&m), b"AuthenticAMD");
    assert!(CpuModel::parse("default").is_ok());
    // Errors: one line each, naming what is wrong.
    for (spec, want) in [
        ("pentium", "unknown CPU model"),
        ("max,+sha-ni", "does not implement"),
        ("max,+x2apic", "does not implement"),
        ("max,+nosuch", "unknown CPU feature"),
        ("max,vendor=via", "unknown vendor"),
        ("max,sse=maybe", "bad value"),
        ("max,sse", "bad CPU option"),
    ] {
        let e = CpuModel::parse(spec).unwrap_err();
        assert!(e.contains(want), "{spec}: {e}");
        assert!(!e.contains('\n'));
    }
}

#[test]
fn max_has_every_implemented_feature_and_host_compatible_is_a_subset() {
    let max = CpuModel::max();
    for f in FEATURES {
        assert_eq!(max.has(f.reg, f.bit), f.implemented, "{}", f.names[0]);
    }
    // max is a superset of the default model.
    let d = CpuModel::ferrite();
    for i in 0..7 {
        assert_eq!(d.regs[i] & !max.regs[i], 0, "register {i}");
    }
    let h = CpuModel::host_compatible();
    for i in 0..7 {
        assert_eq!(h.regs[i] & !max.regs[i], 0, "register {i}");
    }
    assert_eq!(h.vendor.quirks(), Quirks::host());
    // This host (x86-64) has at least SSE2 and long mode.
    assert!(h.has_named("sse2") && h.has_named("lm"));
}

#[test]
fn feature_names_are_unique_and_bits_distinct() {
    let mut seen = std::collections::HashSet::new();
    let mut bits = std::collections::HashSet::new();
    for f in FEATURES {
        for n in f.names {
            assert!(seen.insert(*n), "duplicate name {n}");
        }
        assert!(bits.insert((f.reg as usize, f.bit)), "duplicate bit {}", f.names[0]);
    }
}

#[test]
fn host_executed_features_follow_the_host() {
    let m = CpuModel::ferrite();
    // A host with everything: nothing dropped.
    assert_eq!(m.executable_with(|_| true), (m, vec![]));
    // Without FMA and F16C: those two go, AVX and AVX2 stay.
    let (n, dropped) = m.executable_with(|f| f == "avx");
    assert_eq!(dropped, vec!["fma", "f16c"]);
    assert!(n.has_named("avx") && n.has_named("avx2") && !n.has_named("fma") && !n.has_named("f16c"));
    // Without AVX: the whole VEX set goes; nothing else changes.
    let (n, dropped) = m.executable_with(|_| false);
    assert_eq!(dropped, vec!["avx", "avx2", "fma", "f16c"]);
    let mut back = n;
    for f in dropped {
        let f = feature(f).unwrap();
        back.regs[f.reg as usize] |= 1 << f.bit;
    }
    assert_eq!(back, m);
    // qemu64 has none of them: unchanged on any host.
    assert_eq!(CpuModel::qemu64().executable_with(|_| false).1, Vec::<&str>::new());
    // On this host, parse() keeps what the host can run and refuses an explicit +fma it cannot.
    let here = CpuModel::ferrite().executable_here();
    assert_eq!(CpuModel::parse("ferrite").unwrap(), here);
    if here.has_named("fma") {
        assert!(CpuModel::parse("qemu64,+fma").is_ok());
    } else {
        println!("this host lacks FMA: checking that +fma is refused");
        assert!(CpuModel::parse("qemu64,+fma").unwrap_err().contains("fma"));
    }
}
