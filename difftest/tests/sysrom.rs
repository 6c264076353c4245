//! System-level oracle: generated privileged programs run as ROMs under QEMU TCG and Ferrite.

use difftest::sysrom::{self, SysConfig, SysOutcome};
use machine::{Machine, MachineConfig};
use std::sync::{Arc, Mutex};

/// Runs a ROM on Ferrite's machine (32 MiB, interpreter) and returns the debug-console output.
fn ferrite(rom: &[u8]) -> String {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(32 << 20, rom.to_vec());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    let mut m = Machine::new(cfg).expect("machine");
    let _ = m.run(Some(20_000_000));
    String::from_utf8_lossy(&out.lock().unwrap()).into_owned()
}

#[test]
fn generation_is_deterministic_and_assembles() {
    let a = sysrom::generate(5, 3);
    let b = sysrom::generate(5, 3);
    assert_eq!(a.source, b.source);
    assert_ne!(sysrom::generate(5, 4).source, a.source);
    if let Err(why) = sysrom::tools_available() {
        println!("skipped: {why}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sysrom-asm-{}", std::process::id()));
    for i in 0..12 {
        let p = sysrom::generate(11, i);
        let rom = sysrom::assemble(&p, &sysrom::default_include_dir(), &dir).unwrap();
        assert_eq!(rom.len(), 65536);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quirk_filter_rules() {
    // A data segment with limit 0xFFF, accessed at 0x1000: QEMU completes it, the SDM says #GP(0).
    let mut p = sysrom::generate(1, 0);
    p.descs[0] = sysrom::Desc {
        kind: sysrom::DescKind::Data,
        base: 0x100000,
        limit: 0xFFF,
        access: 0x93,
        flags: 4,
        gate_sel: 0,
        params: 0,
    };
    p.action = sysrom::Action::SegAccess { sreg: "ds", sel: 0x40, off: 0x1000, size: 4, write: false };
    let dump = |v: u64, e: u64| {
        let mut m = std::collections::BTreeMap::new();
        m.insert("vec".to_string(), v);
        m.insert("err".to_string(), e);
        m.insert("ebx".to_string(), 1);
        m
    };
    let c = sysrom::compare_dumps(&p, &dump(0xFFFF_FFFF, 0xFFFF_FFFF), &dump(13, 0));
    assert!(c.is_clean(), "{c:?}");
    assert_eq!(c.filtered[0].0, "qemu-no-data-limit-check");
    // Same access inside the limit: a real divergence.
    p.action = sysrom::Action::SegAccess { sreg: "ds", sel: 0x40, off: 0x10, size: 4, write: false };
    assert!(!sysrom::compare_dumps(&p, &dump(0xFFFF_FFFF, 0xFFFF_FFFF), &dump(13, 0)).is_clean());
    // EXT bit only on Ferrite's side.
    let c = sysrom::compare_dumps(&p, &dump(11, 0x40), &dump(11, 0x41));
    assert!(c.is_clean());
    assert_eq!(c.filtered[0].0, "qemu-no-ext-bit");
    // RSVD #PF with P on Ferrite's side only.
    let c = sysrom::compare_dumps(&p, &dump(14, 0x08), &dump(14, 0x09));
    assert_eq!(c.filtered[0].0, "qemu-rsvd-without-p");
    // The other way round is not a quirk.
    assert!(!sysrom::compare_dumps(&p, &dump(14, 0x09), &dump(14, 0x08)).is_clean());
    // RF in a fault frame (Ferrite, as the SDM says) vs clear (QEMU); not for a software interrupt.
    let with_efl = |v: u64, efl: u64| {
        let mut m = dump(v, 0);
        m.insert("efl".to_string(), efl);
        m
    };
    let c = sysrom::compare_dumps(&p, &with_efl(13, 0x46), &with_efl(13, 0x10046));
    assert_eq!(c.filtered[0].0, "qemu-no-rf-in-fault-frame");
    assert!(!sysrom::compare_dumps(&p, &with_efl(0x30, 0x46), &with_efl(0x30, 0x10046)).is_clean());
    // IA-32e IDT error code: vector*16+2 (QEMU) vs vector*8+2 (SDM).
    p.action = sysrom::Action::LmIntGate { vector: 0x41, attr: 0x8C, sel: 8, ist: 0 };
    let c = sysrom::compare_dumps(&p, &dump(13, 0x41 * 16 + 2), &dump(13, 0x41 * 8 + 2));
    assert!(c.is_clean(), "{c:?}");
    assert_eq!(c.filtered[0].0, "qemu-ia32e-idt-gp-code");
    // Every rule names its SDM section.
    for q in sysrom::QUIRKS {
        assert!(q.why.contains("SDM"), "{}", q.name);
    }
}

#[test]
fn both_modes_and_all_actions_are_generated() {
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let p = sysrom::generate(9, i);
        let kind = format!("{:?}", p.action).split([' ', '{']).next().unwrap().to_string();
        seen.insert((p.long_mode, kind));
    }
    for want in [
        (false, "SegAccess"),
        (false, "FarTransfer"),
        (false, "IntGate"),
        (false, "PageAccess"),
        (true, "SegAccess"),
        (true, "LmIntGate"),
        (true, "LmPage"),
    ] {
        assert!(seen.contains(&(want.0, want.1.to_string())), "{want:?} never generated: {seen:?}");
    }
}

/// A bounded number of programs under QEMU and Ferrite (skipped with a reason when QEMU or nasm is
/// missing). Divergences are printed with their reproducer (the ROM source stays in the work directory);
/// the test fails only on harness problems, since triaging against the SDM is a human's job.
#[test]
fn qemu_vs_ferrite_programs() {
    if let Err(why) = sysrom::tools_available() {
        println!("skipped: {why}");
        return;
    }
    let programs = std::env::var("SYSROM_PROGRAMS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let seed = std::env::var("SYSROM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let first = std::env::var("SYSROM_FIRST").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let config = SysConfig { seed, programs, first, ..SysConfig::default() };
    let report = sysrom::run_sys_difftest(&config, &mut ferrite).expect("harness");
    println!("{report}");
    println!("sources and images in {}", config.work_dir.display());
    assert_eq!(report.results.len() as u64, programs);
    // Most programs must produce a dump on both sides (the harness itself works).
    let dumped = report
        .results
        .iter()
        .filter(|(_, o)| matches!(o, SysOutcome::Agree(_) | SysOutcome::Diverge(_)))
        .count();
    assert!(dumped * 2 >= programs as usize, "{report}");
    // Keep the sources and images only when there is something to look at.
    if report.divergences() == 0 {
        let _ = std::fs::remove_dir_all(&config.work_dir);
    }
}
