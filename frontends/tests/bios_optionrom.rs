//! PCI option ROMs: a function's expansion ROM behind its ROM BAR, from `--device NAME,romfile=FILE`.
//!
//! Our own ROM (`test-roms/src/optionroms/pcimarker.asm`, for the educational device 1234:11E8) is
//! attached to `--device edu` with `romfile=`; Debian's SeaBIOS finds it by scanning PCI, copies it and
//! runs its init entry, which prints a marker with the bus/device/function SeaBIOS passed on the BIOS
//! debug console (port 0x402). The board-level test maps, moves and unmaps the ROM window through
//! configuration writes and restores the mapping from a snapshot; the CLI tests check the errors.

use cpu::CpuBus;
use machine::{Accel, Machine, MachineConfig};
use std::path::PathBuf;
use std::process::Command;
use vmcore::{SnapshotReader, SnapshotWriter};

const EDU: u8 = machine::EDU_DEVFN;

/// SeaBIOS's bios.bin, or why it cannot be had.
fn seabios() -> Result<PathBuf, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["images", "--seabios"])
        .output()
        .map_err(|e| format!("cannot run ferrite images: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("bios="))
        .map(PathBuf::from)
        .ok_or_else(|| "no bios= line".into())
}

/// A fresh temporary directory for test `tag`.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-optionrom-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `ferrite run` with `args`: (exit code, stdout, stderr).
fn ferrite(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite")).arg("run").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn seabios_runs_an_option_rom_from_romfile_under_jit_and_interp() {
    let bios = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return;
        }
    };
    let dir = temp_dir("marker");
    let rom = dir.join("pcimarker.bin");
    std::fs::write(&rom, firmware::optionrom::pcimarker()).unwrap();
    let device = format!("edu,romfile={}", rom.display().to_string().replace(',', ",,"));
    for accel in ["jit", "interp"] {
        // SeaBIOS scans for option ROMs within 3 million instructions of power-on.
        let (code, out, err) = ferrite(&[
            "--bios",
            bios.to_str().unwrap(),
            "--device",
            &device,
            "--bios-log",
            "stdout",
            "--accel",
            accel,
            "--max-instructions",
            "5000000",
        ]);
        assert_eq!(code, Some(124), "{accel}: stopped at the instruction limit; stderr: {err}");
        // edu is 00:02.0: bus 0, device 2, function 0 = 0x0010.
        assert!(out.contains("pcimarker: init bdf=0010\n"), "{accel}: no marker; BIOS log:\n{out}");
        assert_eq!(out.matches("Scan for option roms").count(), 1, "{accel}: {out}");
        assert_eq!(out.matches("pcimarker:").count(), 1, "{accel}: the ROM ran once; BIOS log:\n{out}");
        // The VGA BIOS came through the VGA's ROM BAR (the CLI hands SeaBIOS no fw_cfg copy).
        assert!(out.contains("Start SeaVGABIOS"), "{accel}: {out}");
        // Without the ROM (romfile= empty, or no romfile at all) nothing runs.
        for device in ["edu,romfile=", "edu"] {
            let (code, out, err) = ferrite(&[
                "--bios",
                bios.to_str().unwrap(),
                "--device",
                device,
                "--bios-log",
                "stdout",
                "--accel",
                accel,
                "--max-instructions",
                "5000000",
            ]);
            assert_eq!(code, Some(124), "{accel} {device}: {err}");
            assert!(out.contains("Scan for option roms"), "{accel} {device}: {out}");
            assert!(!out.contains("pcimarker"), "{accel} {device}: {out}");
        }
    }
    // `romfile=` with no file takes the VGA's ROM away: SeaBIOS finds no VGA BIOS.
    let (code, out, err) = ferrite(&[
        "--bios",
        bios.to_str().unwrap(),
        "--device",
        "vga,romfile=",
        "--bios-log",
        "stdout",
        "--accel",
        "jit",
        "--max-instructions",
        "5000000",
    ]);
    assert_eq!(code, Some(124), "{err}");
    assert!(out.contains("Scan for VGA option rom") && !out.contains("SeaVGABIOS"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A machine with the educational device and `rom` behind its ROM BAR (no firmware runs).
fn edu_machine(rom: &[u8]) -> Machine {
    let mut cfg = MachineConfig::new(32 << 20, test_roms::rom("demo").unwrap().to_vec());
    cfg.accel = Accel::Interp;
    cfg.devices.push(machine::DeviceSpec::named("edu").unwrap());
    cfg.devices.push(machine::DeviceSpec::OptionRom { devfn: EDU, image: rom.to_vec() });
    Machine::new(cfg).unwrap()
}

fn read(m: &mut Machine, addr: u64) -> [u8; 4] {
    let mut b = [0u8; 4];
    m.board.read_phys(addr, &mut b);
    b
}

#[test]
fn the_board_maps_moves_and_restores_the_rom_window() {
    let rom = firmware::optionrom::pcimarker();
    let mut m = edu_machine(&rom);
    let cfg = |m: &mut Machine, off: usize, v: u32| m.board.pci_config_write(EDU, off, &v.to_le_bytes());
    // Probe: 512 bytes take the smallest window, 2 KiB.
    cfg(&mut m, 0x30, !1);
    let mut b = [0u8; 4];
    m.board.pci.read_config(EDU, 0x30, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0xFFFF_F800);
    // Placed and enabled, but memory space off: nothing there.
    cfg(&mut m, 0x30, 0xE100_0001);
    assert_eq!(read(&mut m, 0xE100_0000), [0xFF; 4]);
    cfg(&mut m, 0x04, 2);
    assert_eq!(read(&mut m, 0xE100_0000), rom[..4]);
    assert_eq!(read(&mut m, 0xE100_01FC), rom[0x1FC..0x200]);
    assert_eq!(read(&mut m, 0xE100_0200), [0; 4], "zeros to the end of the window");
    // Writes do not change it.
    m.board.write_phys(0xE100_0000, &[1, 2, 3, 4]);
    assert_eq!(read(&mut m, 0xE100_0000), rom[..4]);
    // Moved: the old place is empty.
    cfg(&mut m, 0x30, 0xE200_0801);
    assert_eq!(read(&mut m, 0xE100_0000), [0xFF; 4]);
    assert_eq!(read(&mut m, 0xE200_0800), rom[..4]);
    // A snapshot taken now maps the ROM again where it was when restored into a fresh machine.
    let mut w = SnapshotWriter::new();
    m.board.save(&mut w);
    let snap = w.finish();
    let mut fresh = edu_machine(&rom);
    assert_eq!(read(&mut fresh, 0xE200_0800), [0xFF; 4]);
    fresh.board.restore(&mut SnapshotReader::new(&snap)).unwrap();
    assert_eq!(read(&mut fresh, 0xE200_0800), rom[..4]);
    // Disabled: gone.
    cfg(&mut m, 0x30, 0xE200_0800);
    assert_eq!(read(&mut m, 0xE200_0800), [0xFF; 4]);
    // Restoring the earlier snapshot over it maps it back.
    m.board.restore(&mut SnapshotReader::new(&snap)).unwrap();
    assert_eq!(read(&mut m, 0xE200_0800), rom[..4]);
}

#[test]
fn romfile_errors_are_one_line_with_a_non_zero_exit() {
    let dir = temp_dir("errors");
    let flat = dir.join("demo.rom");
    std::fs::write(&flat, test_roms::rom("demo").unwrap()).unwrap();
    let missing = dir.join("missing.bin");
    let cases: [(String, &str); 6] = [
        (format!("edu,romfile={}", missing.display()), "cannot read the option ROM of edu"),
        (format!("edu,romfile={}", dir.display()), "cannot read the option ROM of edu"),
        ("testdev,romfile=x.bin".into(), "not on PCI"),
        ("edu,rom=x.bin".into(), "unknown option 'rom=x.bin'"),
        ("ahci,romfile=x.bin".into(), "no AHCI controller"),
        ("ide".into(), "only takes romfile="),
    ];
    for (device, want) in cases {
        let (code, _, err) =
            ferrite(&["--rom", flat.to_str().unwrap(), "--device", &device, "--max-instructions", "1000"]);
        assert_eq!(code, Some(2), "{device}: {err}");
        assert!(err.contains(want), "{device}: {err}");
        assert_eq!(
            err.trim_end().lines().filter(|l| !l.is_empty() && !l.contains("--help")).count(),
            1,
            "{err}"
        );
    }
    // An empty romfile= is no ROM, not an error; a ROM on the always-present IDE function is accepted.
    let rom = dir.join("pcimarker.bin");
    std::fs::write(&rom, firmware::optionrom::pcimarker()).unwrap();
    for device in ["edu,romfile=".to_string(), format!("ide,romfile={}", rom.display())] {
        let (code, _, err) =
            ferrite(&["--rom", flat.to_str().unwrap(), "--device", &device, "--max-instructions", "1000"]);
        assert_eq!(code, Some(124), "{device}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
