//! Record/replay, snapshot files and lockstep on the test ROMs: every ROM runs to the same count and
//! state hash twice under each engine; a snapshot file taken mid-run under one engine finishes under
//! the other like an uninterrupted run; a session with host input typed at host-timed pauses replays
//! under both engines to the same output, count and hash; every ROM runs in lockstep without a
//! difference; and a divergence injected at a known count is found at exactly that count, by lockstep
//! and by a replay's bisection.

use iced_x86::code_asm::*;
use machine::lockstep::{Lockstep, LockstepOutcome};
use machine::record::{RecordConfig, Recorder, Recording};
use machine::{Accel, DeviceSpec, HostEvent, Machine, MachineConfig, RunOutcome, snapfile};
use std::sync::{Arc, Mutex};

const LIMIT: u64 = 200_000_000;

type Output = Arc<Mutex<Vec<u8>>>;

/// A machine for ROM `name` under `accel`, and its debug-console output.
fn machine(name: &str, image: &[u8], accel: Accel) -> (Machine, Output) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(32 << 20, image.to_vec());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.accel = accel;
    cfg.jit_threshold = 3;
    if name == "chip_msi" {
        cfg.devices.push(DeviceSpec::named("edu").unwrap());
    }
    (Machine::new(cfg).expect("machine"), out)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.lock().unwrap()).into_owned()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ferrite-rr-{}-{name}", std::process::id()))
}

#[test]
fn every_rom_runs_to_the_same_count_and_hash_twice_under_each_engine() {
    let mut failures = Vec::new();
    for (name, image) in test_roms::ROMS {
        let run = |accel| {
            let (mut m, out) = machine(name, image, accel);
            let o = m.run(Some(LIMIT));
            (o, m.cpu.icount, text(&out), m.state_hash())
        };
        let first = run(Accel::Interp);
        for (n, accel) in [(2, Accel::Interp), (1, Accel::Jit), (2, Accel::Jit)] {
            let again = run(accel);
            if again != first {
                failures.push(format!(
                    "{name}: {accel:?} run {n}: {:?} after {} (hash {:x}), first interp run {:?} after {} (hash {:x})",
                    again.0, again.1, again.3, first.0, first.1, first.3
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_snapshot_file_taken_under_one_engine_finishes_under_the_other() {
    let mut failures = Vec::new();
    for (name, image) in test_roms::ROMS {
        let (mut whole, out) = machine(name, image, Accel::Interp);
        let outcome = whole.run(Some(LIMIT));
        let (count, output, hash) = (whole.cpu.icount, text(&out), whole.state_hash());
        let half = count / 2;
        for (from, to) in [(Accel::Jit, Accel::Interp), (Accel::Interp, Accel::Jit)] {
            let (mut first, out1) = machine(name, image, from);
            if first.run(Some(half)) != RunOutcome::InstructionLimit {
                failures.push(format!("{name}: stopped before the middle"));
                continue;
            }
            let path = temp(&format!("{name}.snap"));
            let stats = snapfile::save_file(&first, &path).expect("save");
            assert!(stats.pages < stats.total_pages / 4, "{name}: {stats:?}: zero pages are skipped");
            // Stored pages are never larger than raw (a run that does not compress is stored raw).
            assert!(stats.bytes < stats.pages * 4096 + (1 << 20), "{name}: {stats:?}: the file is compact");
            let (mut second, out2) = machine(name, image, to);
            snapfile::restore_file(&mut second, &path).expect("restore");
            let _ = std::fs::remove_file(&path);
            let outcome2 = second.run(Some(LIMIT));
            let got = (outcome2, second.cpu.icount, text(&out1) + &text(&out2), second.state_hash());
            if got != (outcome.clone(), count, output.clone(), hash) {
                failures.push(format!(
                    "{name}: saved under {from:?} at {half}, finished under {to:?}: {:?} after {}, uninterrupted {outcome:?} after {count}",
                    got.0, got.1
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_corrupt_truncated_or_other_version_snapshot_file_is_refused() {
    let image = test_roms::rom("smoke").unwrap();
    let (mut m, _) = machine("smoke", image, Accel::Interp);
    m.run(Some(1000));
    let mut file = Vec::new();
    snapfile::save(&m, &mut file).unwrap();
    let (mut good, _) = machine("smoke", image, Accel::Interp);
    snapfile::restore(&mut good, &file).expect("the file restores");
    assert_eq!(good.state_hash(), m.state_hash());
    for cut in (0..file.len()).step_by(97).chain([file.len() - 1]) {
        let (mut t, _) = machine("smoke", image, Accel::Interp);
        assert!(snapfile::restore(&mut t, &file[..cut]).is_err(), "cut at {cut}");
    }
    for i in (0..file.len()).step_by(89) {
        let mut bad = file.clone();
        bad[i] ^= 0x21;
        let (mut t, _) = machine("smoke", image, Accel::Interp);
        assert!(snapfile::restore(&mut t, &bad).is_err(), "flipped byte {i}");
    }
    let mut v2 = file.clone();
    v2[8] = 2;
    let (mut t, _) = machine("smoke", image, Accel::Interp);
    let e = snapfile::restore(&mut t, &v2).unwrap_err();
    assert!(e.to_string().contains("version 2"), "{e}");
    let mut other = Machine::new(MachineConfig::new(64 << 20, image.to_vec())).unwrap();
    let e = snapfile::restore(&mut other, &file).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
}

const PROG: u64 = 0x1000;

/// A guest that echoes every byte COM1 receives to the debug console (polling LSR.DR, so how long it
/// spins depends on when the host typed) and exits on `q`.
fn echo_program() -> Vec<u8> {
    let mut a = CodeAssembler::new(16).unwrap();
    let mut wait = a.create_label();
    a.set_label(&mut wait).unwrap();
    a.mov(dx, 0x3FDu32).unwrap();
    a.in_(al, dx).unwrap();
    a.test(al, 1).unwrap();
    a.jz(wait).unwrap();
    a.mov(dx, 0x3F8u32).unwrap();
    a.in_(al, dx).unwrap();
    a.out(0xE9i32, al).unwrap();
    a.cmp(al, u32::from(b'q')).unwrap();
    a.jne(wait).unwrap();
    a.mov(al, 0x10u32).unwrap();
    a.out(0xF4i32, al).unwrap();
    a.assemble(PROG).unwrap()
}

fn echo_machine(accel: Accel) -> (Machine, Output) {
    let mut rom = vec![0xF4u8; 0x1_0000];
    rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, PROG as u8, (PROG >> 8) as u8, 0, 0]);
    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(16 << 20, rom);
    cfg.accel = accel;
    cfg.jit_threshold = 3;
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    let mut m = Machine::new(cfg).unwrap();
    m.board.ram.write(PROG, &echo_program());
    (m, out)
}

/// Records the echo guest under `accel` with "hello" typed from a host thread in pauses; returns the
/// recording's path, the output, the count and the hash.
fn record_echo(accel: Accel, interval: u64) -> (std::path::PathBuf, String, u64, u64) {
    let (mut m, out) = echo_machine(accel);
    let path = temp(&format!("echo-{accel:?}.rec"));
    let cfg = RecordConfig { accel: "test".into(), interval, ..Default::default() };
    let mut rec = Recorder::create(&path, &cfg).unwrap();
    m.record_inputs(rec.input_hook());
    let (tx, rx) = std::sync::mpsc::channel();
    m.attach_input(rx);
    let typist = std::thread::spawn(move || {
        for b in b"hello q".iter() {
            std::thread::sleep(std::time::Duration::from_millis(3));
            let _ = tx.send(HostEvent::Input(*b));
        }
    });
    let mut next = interval;
    let outcome = loop {
        let o = m.run(Some(next.min(2_000_000_000)));
        if o != RunOutcome::InstructionLimit || m.cpu.icount >= 2_000_000_000 {
            break o;
        }
        rec.checkpoint(&m).unwrap();
        next += interval;
    };
    typist.join().unwrap();
    assert_eq!(outcome, RunOutcome::Exited(0x21));
    assert!(rec.inputs() >= 2, "the bytes came in more than one input");
    rec.finish(&m, &outcome).unwrap();
    (path, text(&out), m.cpu.icount, m.state_hash())
}

#[test]
fn a_session_with_typed_input_replays_under_both_engines() {
    let (path, output, count, hash) = record_echo(Accel::Jit, 200_000);
    assert_eq!(output, "hello q");
    let rec = Recording::read_file(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!rec.checkpoints.is_empty());
    for accel in [Accel::Interp, Accel::Jit] {
        let (mut m, out) = echo_machine(accel);
        let done = machine::replay::replay(&mut m, &rec).unwrap_or_else(|e| panic!("{accel:?}: {e:?}"));
        assert_eq!(done.outcome, RunOutcome::Exited(0x21));
        assert_eq!((text(&out), m.cpu.icount, m.state_hash()), (output.clone(), count, hash), "{accel:?}");
    }
    // Replaying from a snapshot taken mid-way gives the rest of the session.
    let mid = rec.checkpoints[rec.checkpoints.len() / 2].icount;
    let (mut first, out1) = echo_machine(Accel::Interp);
    first.replay_inputs(rec.inputs.clone());
    assert_eq!(first.run(Some(mid)), RunOutcome::InstructionLimit);
    let snap = first.save_state();
    let (mut second, out2) = echo_machine(Accel::Jit);
    second.restore_state(&snap).unwrap();
    machine::replay::replay(&mut second, &rec).expect("replay from the middle");
    assert_eq!(text(&out1) + &text(&out2), output);
    assert_eq!((second.cpu.icount, second.state_hash()), (count, hash));
}

#[test]
fn a_replay_that_diverges_stops_at_the_check_and_bisects_to_the_instruction() {
    let (path, _, count, _) = record_echo(Accel::Interp, 100_000);
    let rec = Recording::read_file(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let at = count / 3 + 7;
    let flip = || -> machine::FaultFn { Box::new(|_, b| b.ram.as_mut_slice()[0x7000] ^= 1) };
    let (mut m, _) = echo_machine(Accel::Jit);
    m.inject_fault_at(at, flip());
    let mm = machine::replay::replay(&mut m, &rec).expect_err("the fault is seen");
    assert!(mm.recorded.icount >= at && mm.good < at, "{mm:?}");
    assert!(mm.summary.contains("RAM"), "{}", mm.summary);
    // Bisect between the faulty engine and a clean interpreter from the last good check.
    let (mut x, _) = echo_machine(Accel::Jit);
    let (mut y, _) = echo_machine(Accel::Interp);
    x.inject_fault_at(at, flip());
    x.replay_inputs(rec.inputs.clone());
    x.run(Some(mm.good));
    let snap = machine::snapfile::MemSnapshot::take(&x, None);
    let from = x.slot();
    let inputs: Vec<_> = rec.inputs.iter().filter(|s| s.slot >= from).cloned().collect();
    let d = machine::lockstep::bisect(&mut x, &mut y, &snap, &inputs, mm.good, mm.recorded.icount).unwrap();
    assert_eq!(d.icount, at, "{}", d.report);
    assert!(d.report.contains("RAM differs on 1 page(s), first at 0x7000"), "{}", d.report);
}

#[test]
fn every_rom_runs_in_lockstep_without_a_difference() {
    let mut failures = Vec::new();
    for (name, image) in test_roms::ROMS {
        let (mut plain, _) = machine(name, image, Accel::Interp);
        let want = plain.run(Some(LIMIT));
        let (a, _) = machine(name, image, Accel::Jit);
        let (b, _) = machine(name, image, Accel::Interp);
        let mut ls = Lockstep::new(a, b, 1_000_000, true);
        match ls.run(Some(LIMIT)) {
            LockstepOutcome::Finished(o) if o == want && ls.a.cpu.icount == plain.cpu.icount => {}
            other => failures.push(format!("{name}: {other:?}, plain run {want:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lockstep_finds_an_injected_divergence_at_its_count() {
    let image = test_roms::rom("chip_pit_pic").unwrap();
    let (mut plain, _) = machine("chip_pit_pic", image, Accel::Interp);
    plain.run(Some(LIMIT));
    for at in [plain.cpu.icount / 3 + 12_345, 1_000_000, 1] {
        let (a, _) = machine("chip_pit_pic", image, Accel::Jit);
        let (mut b, _) = machine("chip_pit_pic", image, Accel::Interp);
        // What an engine bug would do: one byte of RAM the ROM does not use changes.
        b.inject_fault_at(at, Box::new(|_, board| board.ram.as_mut_slice()[(32 << 20) - 1] ^= 0x5a));
        let mut ls = Lockstep::new(a, b, 1_000_000, true);
        let LockstepOutcome::Diverged { good, bad, summary } = ls.run(Some(LIMIT)) else {
            panic!("at {at}: not found")
        };
        assert!(good < at && at <= bad, "{good} {at} {bad}: {summary}");
        let d = ls.bisect(good, bad).unwrap();
        assert_eq!(d.icount, at, "{}", d.report);
        assert!(d.report.contains("--- jit ---") && d.report.contains("--- interp ---"), "{}", d.report);
    }
}
