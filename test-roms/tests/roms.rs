//! One test per ROM, under the interpreter. A ROM that cannot pass yet is `#[ignore = "reason"]`,
//! never deleted.

mod harness;
use harness::{assert_rom_passes, run_rom, run_rom_with};
use machine::RunOutcome;

macro_rules! rom_tests {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        $(
            #[test]
            $(#[$m])*
            fn $name() {
                assert_rom_passes(stringify!($name));
            }
        )*
        /// Every ROM in the suite has a test here (or is the harness self-test).
        #[test]
        fn every_rom_has_a_test() {
            let listed = [$(stringify!($name)),*];
            for (n, _) in test_roms::ROMS {
                assert!(
                    listed.contains(n) || *n == "selftest_wrong" || *n == "demo",
                    "ROM {n} has no test in tests/roms.rs"
                );
            }
        }
    };
}

rom_tests!(
    smoke,
    real_arith,
    real_farptr,
    real_string,
    pm_segments,
    pm_strict,
    pm_interrupts,
    pm_privilege,
    pm_paging,
    pm_task,
    debugregs,
    pm_shadows,
    pm_nmi,
    pm_escalate,
    v86,
    v86_vme,
    post,
    lm_entry,
    lm_arith,
    lm_interrupts,
    lm_syscall,
    lm_paging,
    lm_ext,
    lm_msr,
    bench_int,
    sse,
    fpu_x87,
    chip_pit_pic,
    chip_reset_state,
    chip_ioapic,
    chip_lapic_timer,
    chip_rtc,
    chip_pci,
    chip_uart,
    chip_msi,
);

/// The MSI ROM can fail: without the edu device it finds nothing on the bus and says so.
#[test]
fn chip_msi_fails_without_edu() {
    let r = run_rom_with("chip_msi", 200_000_000, &[]);
    assert_eq!(r.outcome, RunOutcome::Exited(3), "output:\n{}", r.output);
    assert!(r.output.contains("FAIL: edu 1234:11e8 on bus 0"), "output:\n{}", r.output);
}

/// The built-in demo goes from reset to long mode, prints each step, and exits with status 1.
#[test]
fn demo_reaches_long_mode() {
    let r = run_rom("demo", 100_000_000);
    assert_eq!(r.outcome, RunOutcome::Exited(1), "output:\n{}", r.output);
    assert!(r.output.contains("long mode"), "output:\n{}", r.output);
}

/// Every ROM source assembles.
#[test]
fn every_rom_assembles() {
    assert!(test_roms::BROKEN.is_empty(), "nasm failed: {:#?}", test_roms::BROKEN);
}

/// The harness must be able to fail: a ROM with a wrong expectation is reported as failing.
#[test]
fn harness_reports_a_wrong_expectation() {
    let r = run_rom("selftest_wrong", 10_000_000);
    assert_eq!(r.outcome, RunOutcome::Exited(3), "output:\n{}", r.output);
    assert!(r.output.contains("FAIL: 2+2 is deliberately expected to be 5"), "output:\n{}", r.output);
}
