//! Whole-machine save/restore and the state hash: every test ROM saved halfway through and restored
//! into a fresh machine finishes with the same console output, exit and instruction count as an
//! uninterrupted run, and ends in the same state (hash); and the state hash at the end of every ROM is
//! the same under the interpreter and the JIT.

use machine::{Accel, DeviceSpec, Machine, MachineConfig, RunOutcome};
use std::sync::{Arc, Mutex};

const LIMIT: u64 = 200_000_000;

/// A machine for ROM `name` under `accel`, and its debug-console output.
fn machine(name: &str, image: &[u8], accel: Accel) -> (Machine, Arc<Mutex<Vec<u8>>>) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(32 << 20, image.to_vec());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.accel = accel;
    cfg.jit_threshold = 3;
    // The ROMs' `; ferrite-devices:` lines (the harness in test-roms reads them from the sources).
    if name == "chip_msi" {
        cfg.devices.push(DeviceSpec::named("edu").unwrap());
    }
    (Machine::new(cfg).expect("machine"), out)
}

fn text(out: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&out.lock().unwrap()).into_owned()
}

#[test]
fn every_rom_restored_halfway_finishes_like_an_uninterrupted_run() {
    let mut failures = Vec::new();
    for (name, image) in test_roms::ROMS {
        let (mut whole, out) = machine(name, image, Accel::Interp);
        let outcome = whole.run(Some(LIMIT));
        let (count, output, hash) = (whole.cpu.icount, text(&out), whole.state_hash());

        let half = count / 2;
        let (mut first, out1) = machine(name, image, Accel::Interp);
        let mid = first.run(Some(half));
        if mid != RunOutcome::InstructionLimit {
            failures.push(format!("{name}: stopped before the middle: {mid:?}"));
            continue;
        }
        let snap = first.save_state();
        let mid_hash = first.state_hash();
        let (mut second, out2) = machine(name, image, Accel::Interp);
        second.restore_state(&snap).expect("restore");
        if second.state_hash() != mid_hash {
            failures.push(format!("{name}: restored state hashes differently from the saved one"));
        }
        let outcome2 = second.run(Some(LIMIT));
        let output2 = text(&out1) + &text(&out2);
        if (&outcome2, second.cpu.icount, &output2) != (&outcome, count, &output) {
            failures.push(format!(
                "{name}: saved at {half}: {outcome2:?} after {} instructions, uninterrupted {outcome:?} after {count}\n--- restored ---\n{output2}\n--- uninterrupted ---\n{output}",
                second.cpu.icount
            ));
        } else if second.state_hash() != hash {
            failures.push(format!("{name}: same output and count, but the final state differs"));
        }
        // The restored machine also continues: the first one, run on, ends the same way.
        let outcome1 = first.run(Some(LIMIT));
        if (outcome1, first.cpu.icount, first.state_hash()) != (outcome, count, hash) {
            failures.push(format!("{name}: saving disturbed the machine that was saved"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_state_hash_is_the_same_under_interp_and_jit() {
    let mut hashes = Vec::new();
    for (name, image) in test_roms::ROMS {
        let run = |accel| {
            let (mut m, out) = machine(name, image, accel);
            let o = m.run(Some(LIMIT));
            (o, m.cpu.icount, text(&out), m.state_hash())
        };
        let interp = run(Accel::Interp);
        let jit = run(Accel::Jit);
        assert_eq!(interp, jit, "{name}");
        hashes.push(interp.3);
    }
    // The hash tells the ROMs' end states apart.
    let mut unique = hashes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), hashes.len(), "distinct ROMs end in distinct states");
}

#[test]
fn a_snapshot_from_another_configuration_is_refused() {
    let (a, _) = machine("smoke", test_roms::rom("smoke").unwrap(), Accel::Interp);
    let snap = a.save_state();
    let mut cfg = MachineConfig::new(64 << 20, test_roms::rom("smoke").unwrap().to_vec());
    cfg.devices.push(DeviceSpec::named("edu").unwrap());
    let mut b = Machine::new(cfg).unwrap();
    assert!(b.restore_state(&snap).is_err(), "different devices and memory");
    let (mut c, _) = machine("smoke", test_roms::rom("smoke").unwrap(), Accel::Interp);
    for cut in [0, 10, snap.len() / 2, snap.len() - 1] {
        assert!(c.restore_state(&snap[..cut]).is_err(), "truncated at {cut}");
    }
    let mut bad = snap.clone();
    bad[3] ^= 0xFF;
    assert!(c.restore_state(&bad).is_err(), "bad magic");
}
