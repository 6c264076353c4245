//! Keys through the machine's input port to a BIOS program: SeaBIOS boots our boot sector `kbd_echo`
//! from an IDE disk; set 2 scan codes injected as `GuestInput::Keyboard` (what the SDL window sends)
//! pass the i8042's translation to set 1, SeaBIOS's IRQ 1 handler and INT 16h, and the boot sector
//! echoes them through INT 10h. The screen must show them, and a replay of the recorded inputs on a
//! second machine must reach the same screen and the same machine state at the same instruction count
//! (the inputs are stamped, so the run is deterministic), whether the replay runs in the live run's
//! slices, in one run or in odd-sized slices, under the JIT or the interpreter.

use machine::input::{GuestInput, StampedInput};

use machine::{Accel, BiosConfig, Machine, MachineConfig, RunOutcome};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// SeaBIOS's bios.bin and vgabios-stdvga.bin, or why they cannot be had.
fn seabios() -> Result<(PathBuf, PathBuf), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["images", "--seabios"])
        .output()
        .map_err(|e| format!("cannot run ferrite images: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(PathBuf::from);
    Ok((get("bios=").ok_or("no bios= line")?, get("vgabios=").ok_or("no vgabios= line")?))
}

fn machine(bios: &[u8], vgabios: &[u8], disk: &PathBuf, con: Arc<Mutex<Vec<u8>>>) -> Machine {
    machine_with(bios, vgabios, disk, con, Accel::Jit)
}

fn machine_with(
    bios: &[u8],
    vgabios: &[u8],
    disk: &PathBuf,
    con: Arc<Mutex<Vec<u8>>>,
    accel: Accel,
) -> Machine {
    let mut cfg = MachineConfig::new(64 << 20, bios.to_vec());
    cfg.accel = accel;
    cfg.bios = Some(BiosConfig {
        files: vec![(machine::VGA_ROM_FILE.to_string(), vgabios.to_vec())],
        boot_order: [2, 3, 1],
        ..Default::default()
    });
    cfg.devices.push(machine::DeviceSpec::named("vga").unwrap());
    let disks = storage::config::build(&[storage::config::DiskSpec::shorthand(disk, 0)]).unwrap();
    cfg.ide = Some(disks.ide);
    cfg.debugcon = Box::new(move |b| con.lock().unwrap().push(b));
    Machine::new(cfg).unwrap()
}

/// Runs in slices until the debug console holds `want`; panics after `limit` instructions. Every
/// slice's end goes to `stops`.
fn run_until(m: &mut Machine, con: &Arc<Mutex<Vec<u8>>>, want: &[u8], limit: u64, stops: &mut Vec<u64>) {
    loop {
        if con.lock().unwrap().windows(want.len()).any(|w| w == want) {
            return;
        }
        let text = String::from_utf8_lossy(&con.lock().unwrap()).into_owned();
        assert!(m.cpu.icount < limit, "no {want:?} after {} instructions; console: {text:?}", m.cpu.icount);
        let stop = m.cpu.icount + 2_000_000;
        stops.push(stop);
        match m.run(Some(stop)) {
            RunOutcome::InstructionLimit => {}
            other => panic!("the machine stopped: {other:?}"),
        }
    }
}

/// Set 2 make and break codes of the keys typed: a, b, 1, Up (no character: the program skips it),
/// Enter, c.
const TYPED: &[&[u8]] = &[
    &[0x1C, 0xF0, 0x1C],
    &[0x32, 0xF0, 0x32],
    &[0x16, 0xF0, 0x16],
    &[0xE0, 0x75, 0xE0, 0xF0, 0x75],
    &[0x5A, 0xF0, 0x5A],
    &[0x21, 0xF0, 0x21],
];

#[test]
fn keys_reach_int_16h_and_replay_exactly() {
    let (bios_path, vga_path) = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return;
        }
    };
    let bios = std::fs::read(&bios_path).unwrap();
    let vgabios = std::fs::read(&vga_path).unwrap();
    let dir = std::env::temp_dir().join(format!("ferrite-kbd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    let mut img = test_roms::boot_sector("kbd_echo").expect("kbd_echo assembled").to_vec();
    img.resize(1 << 20, 0);
    std::fs::write(&disk, img).unwrap();

    let con = Arc::new(Mutex::new(Vec::new()));
    let mut m = machine(&bios, &vgabios, &disk, con.clone());
    let log = Arc::new(Mutex::new(Vec::<StampedInput>::new()));
    let l = log.clone();
    m.record_inputs(Box::new(move |s| l.lock().unwrap().push(s.clone())));
    // Host keys come as a display window sends them: on the input channel, taken at input points.
    let (tx, rx) = std::sync::mpsc::channel();
    m.attach_input(rx);
    let mut stops = Vec::new();
    run_until(&mut m, &con, b"READY\n", 400_000_000, &mut stops);
    for k in TYPED {
        for b in *k {
            tx.send(machine::HostEvent::Key(*b)).unwrap();
        }
        let n = m.cpu.icount + 3_000_000;
        stops.push(n);
        assert_eq!(m.run(Some(n)), RunOutcome::InstructionLimit);
    }
    run_until(&mut m, &con, b"ab1\rc", 800_000_000, &mut stops);
    let end = m.cpu.icount + 1_000_000;
    stops.push(end);
    assert_eq!(m.run(Some(end)), RunOutcome::InstructionLimit);
    let screen = m.vga().unwrap().text_screen().expect("a text mode");
    let row = (0..screen.rows)
        .find(|r| screen.row_text(*r).starts_with("FERRITE: type here> "))
        .expect("the prompt");
    assert!(screen.row_text(row).starts_with("FERRITE: type here> ab1 "), "{:?}", screen.row_text(row));
    assert!(screen.row_text(row + 1).starts_with("c "), "{:?}", screen.row_text(row + 1));
    let frame = m.vga().unwrap().render();
    let hash = m.state_hash();
    let parts = machine::record::state_hashes(&m);
    // The disk image is locked while a machine has it open.
    drop(m);

    // The replay: the same inputs at the same slots give the same machine, whatever the slices the
    // run is cut into (the live run's, one run, short odd slices) and under either engine.
    let inputs = log.lock().unwrap().clone();
    assert_eq!(inputs.iter().filter(|s| matches!(s.input, GuestInput::Keyboard(_))).count(), TYPED.len());
    let odd =
        |len: u64| (1..).map(move |i| i * len).take_while(|&s| s < end).chain([end]).collect::<Vec<_>>();
    let runs: [(&str, Accel, Vec<u64>); 4] = [
        ("the live run's slices, jit", Accel::Jit, stops),
        ("one run, jit", Accel::Jit, vec![end]),
        ("slices of 1,000,003, jit", Accel::Jit, odd(1_000_003)),
        ("one run, interp", Accel::Interp, vec![end]),
    ];
    for (what, accel, slices) in runs {
        let con2 = Arc::new(Mutex::new(Vec::new()));
        let mut r = machine_with(&bios, &vgabios, &disk, con2.clone(), accel);
        r.replay_inputs(inputs.clone());
        for stop in slices {
            match r.run(Some(stop)) {
                RunOutcome::InstructionLimit => {}
                other => panic!("{what}: the replay stopped: {other:?}"),
            }
        }
        assert_eq!(r.cpu.icount, end, "{what}");
        assert_eq!(*con2.lock().unwrap(), *con.lock().unwrap(), "{what}: debug console");
        assert!(r.vga().unwrap().render() == frame, "{what}: the replayed screen differs");
        let rparts = machine::record::state_hashes(&r);
        assert_eq!(
            (rparts.cpu, rparts.machine, rparts.ram),
            (parts.cpu, parts.machine, parts.ram),
            "{what}: CPU, devices, RAM"
        );
        assert_eq!(r.state_hash(), hash, "{what}: the replayed machine differs");
    }
    let _ = std::fs::remove_dir_all(dir);
}
