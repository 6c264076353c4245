//! BIOS boots: Debian's SeaBIOS (fetched like the guest images, `ferrite images --seabios`) boots a
//! disk image holding our own boot sector (`test-roms/src/boot/int10_hello.asm`) from IDE under the
//! interpreter and the JIT; the boot sector prints through INT 10h, and the test reads the text cells
//! back through the guest-visible VGA text buffer at 0xB8000 and checks characters, attributes and
//! where they are. The screen at a fixed instruction count must render to the same bytes under both
//! engines, and the CLI's `--screenshot FILE@COUNT` must write the same PNG in two runs. The VGA BIOS
//! reaches SeaBIOS through the VGA's ROM BAR (as from the CLI), except in the 60-second wait test, which
//! hands it over as the fw_cfg file `pci1234,1111.rom`.

use cpu::CpuBus;
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

/// A 1 MiB raw disk image with `mbr` in sector 0, in a fresh temporary directory.
fn disk_image(mbr: &[u8], tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-bios-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    let mut img = mbr.to_vec();
    img.resize(1 << 20, 0);
    std::fs::write(&path, img).unwrap();
    path
}

/// An El Torito CD image (ISO 9660, 2048-byte sectors) whose no-emulation boot image is `boot`
/// (loaded at 0000:7C00): primary volume descriptor at sector 16, the boot record at 17 pointing at the
/// catalog in sector 19, the terminator at 18, the image at 20.
fn iso_image(boot: &[u8], tag: &str) -> PathBuf {
    const S: usize = 2048;
    let sectors = 32;
    let mut iso = vec![0u8; sectors * S];
    let both32 = |v: u32| [v.to_le_bytes(), v.to_be_bytes()].concat();
    let both16 = |v: u16| [v.to_le_bytes(), v.to_be_bytes()].concat();
    // Primary volume descriptor.
    let pvd = &mut iso[16 * S..17 * S];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[40..48].copy_from_slice(b"FERRITE ");
    pvd[80..88].copy_from_slice(&both32(sectors as u32));
    pvd[120..124].copy_from_slice(&both16(1));
    pvd[124..128].copy_from_slice(&both16(1));
    pvd[128..132].copy_from_slice(&both16(S as u16));
    // Root directory record: one empty directory sector (21).
    let root = &mut pvd[156..190];
    root[0] = 34;
    root[2..10].copy_from_slice(&both32(21));
    root[10..18].copy_from_slice(&both32(S as u32));
    root[25] = 2;
    root[28..32].copy_from_slice(&both16(1));
    root[32] = 1;
    pvd[881] = 1;
    // Boot record volume descriptor (El Torito 1.0, 2.0): catalog LBA at 0x47.
    let br = &mut iso[17 * S..18 * S];
    br[1..6].copy_from_slice(b"CD001");
    br[6] = 1;
    br[7..30].copy_from_slice(b"EL TORITO SPECIFICATION");
    br[0x47..0x4B].copy_from_slice(&19u32.to_le_bytes());
    // Terminator.
    let term = &mut iso[18 * S..19 * S];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;
    // Boot catalog: validation entry (platform 0 = x86, words summing to zero, 55 AA), then the
    // default entry: bootable, no emulation, load segment 0 (= 07C0h), 4 virtual sectors, LBA 20.
    let cat = &mut iso[19 * S..19 * S + 64];
    cat[0] = 1;
    cat[4..12].copy_from_slice(b"FERRITE ");
    cat[0x1E] = 0x55;
    cat[0x1F] = 0xAA;
    let sum = cat[..32].chunks(2).fold(0u16, |a, w| a.wrapping_add(u16::from_le_bytes([w[0], w[1]])));
    cat[0x1C..0x1E].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    cat[0x20] = 0x88;
    cat[0x26..0x28].copy_from_slice(&4u16.to_le_bytes());
    cat[0x28..0x2C].copy_from_slice(&20u32.to_le_bytes());
    iso[20 * S..20 * S + boot.len()].copy_from_slice(boot);
    let dir = std::env::temp_dir().join(format!("ferrite-bios-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cd.iso");
    std::fs::write(&path, iso).unwrap();
    path
}

/// A machine booting the disks of `specs` through SeaBIOS on `accel` in boot order `order`; the 0xE9
/// console goes to `con`.
fn machine_with(
    bios: &[u8],
    vgabios: &[u8],
    specs: &[storage::config::DiskSpec],
    order: [u8; 3],
    accel: Accel,
    con: Arc<Mutex<Vec<u8>>>,
) -> Machine {
    let mut cfg = MachineConfig::new(64 << 20, bios.to_vec());
    cfg.accel = accel;
    cfg.bios = Some(BiosConfig { boot_order: order, ..Default::default() });
    // The VGA BIOS behind the VGA's ROM BAR, as the CLI puts it (SeaBIOS finds it scanning PCI; the
    // 60-second wait test below hands it over as an fw_cfg file instead).
    cfg.devices.push(machine::DeviceSpec::named("vga").unwrap());
    cfg.devices.push(machine::DeviceSpec::OptionRom { devfn: machine::VGA_DEVFN, image: vgabios.to_vec() });
    let disks = storage::config::build(specs).unwrap();
    cfg.ide = Some(disks.ide);
    if let Some(ahci) = disks.ahci {
        cfg.devices
            .push(machine::DeviceSpec::Pci { devfn: storage::config::AHCI_DEVFN, function: Box::new(ahci) });
    }
    cfg.debugcon = Box::new(move |b| con.lock().unwrap().push(b));
    Machine::new(cfg).unwrap()
}

/// A machine booting `disk` (IDE primary master) through SeaBIOS on `accel`.
fn machine(bios: &[u8], vgabios: &[u8], disk: &PathBuf, accel: Accel, con: Arc<Mutex<Vec<u8>>>) -> Machine {
    let specs = [storage::config::DiskSpec::shorthand(disk, 0)];
    machine_with(bios, vgabios, &specs, [2, 3, 1], accel, con)
}

/// Boots `specs` under the JIT and returns the screen rows once the boot sector reported DONE.
fn boot_rows(specs: &[storage::config::DiskSpec], order: [u8; 3]) -> Option<Vec<String>> {
    let (bios_path, vga_path) = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return None;
        }
    };
    let (bios, vgabios) = (std::fs::read(bios_path).unwrap(), std::fs::read(vga_path).unwrap());
    let con = Arc::new(Mutex::new(Vec::new()));
    let mut m = machine_with(&bios, &vgabios, specs, order, Accel::Jit, con.clone());
    let log = run_to_done(&mut m, &con, 3_000_000_000);
    assert!(log.ends_with("DONE 14 0A\n"), "{log:?}");
    let cells = text_buffer(&mut m);
    Some((0..25).map(|r| row_text(&cells, r)).collect())
}

#[test]
fn seabios_boots_an_el_torito_cd_on_atapi() {
    let boot = test_roms::boot_sector("int10_hello").unwrap();
    let iso = iso_image(boot, "cd");
    let spec = storage::config::DiskSpec::shorthand(&iso, 2);
    let Some(rows) = boot_rows(&[spec], [3, 2, 1]) else { return };
    assert!(rows.iter().any(|r| r.contains("Booting from DVD/CD")), "{rows:#?}");
    assert!(rows.iter().any(|r| r.starts_with("FERRITE MBR: hello through INT 10h")), "{rows:#?}");
    let _ = std::fs::remove_dir_all(iso.parent().unwrap());
}

#[test]
fn seabios_boots_an_mbr_disk_on_ahci() {
    let disk = disk_image(test_roms::boot_sector("int10_hello").unwrap(), "ahci");
    let spec = storage::config::DiskSpec::parse(&format!("{},if=ahci", disk.display())).unwrap();
    let Some(rows) = boot_rows(&[spec], [2, 3, 1]) else { return };
    assert!(rows.iter().any(|r| r.contains("Booting from Hard Disk")), "{rows:#?}");
    assert!(rows.iter().any(|r| r.starts_with("FERRITE MBR: hello through INT 10h")), "{rows:#?}");
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

#[test]
fn boot_order_d_prefers_the_cd_over_the_disk() {
    // The disk's boot sector would print the same line: a blank disk (no 55 AA) shows the CD booted.
    let disk = disk_image(&[0u8; 512], "order");
    let iso = iso_image(test_roms::boot_sector("int10_hello").unwrap(), "order-cd");
    let specs =
        [storage::config::DiskSpec::shorthand(&disk, 0), storage::config::DiskSpec::shorthand(&iso, 2)];
    let Some(rows) = boot_rows(&specs, machine::parse_boot_order("order=dc").unwrap()) else { return };
    assert!(rows.iter().any(|r| r.contains("Booting from DVD/CD")), "{rows:#?}");
    assert!(!rows.iter().any(|r| r.contains("Booting from Hard Disk")), "{rows:#?}");
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
    let _ = std::fs::remove_dir_all(iso.parent().unwrap());
}

/// Runs until the debug console shows a full `DONE r c` line, in slices; panics after `limit`
/// instructions.
fn run_to_done(m: &mut Machine, con: &Arc<Mutex<Vec<u8>>>, limit: u64) -> String {
    loop {
        let text = String::from_utf8_lossy(&con.lock().unwrap()).into_owned();
        if text.contains("DONE") && text.ends_with('\n') {
            return text;
        }
        assert!(m.cpu.icount < limit, "no DONE after {} instructions; console: {text:?}", m.cpu.icount);
        let next = m.cpu.icount + 20_000_000;
        match m.run(Some(next)) {
            RunOutcome::InstructionLimit => {}
            other => panic!("the machine stopped: {other:?}"),
        }
    }
}

/// The 80x25 text screen as the guest sees it at 0xB8000: (character, attribute) pairs.
fn text_buffer(m: &mut Machine) -> Vec<(u8, u8)> {
    let mut cells = Vec::new();
    for row in 0..25u64 {
        let mut line = [0u8; 160];
        for (i, chunk) in line.chunks_mut(8).enumerate() {
            m.board.read_phys(0xB8000 + row * 160 + 8 * i as u64, chunk);
        }
        cells.extend(line.chunks(2).map(|c| (c[0], c[1])));
    }
    cells
}

/// The ACPI and SMBIOS tables SeaBIOS published are the machine's, handed over through fw_cfg: the
/// RSDP in the F segment leads to an RSDT listing our FADT and MADT (OEM ID "FERRIT"), with checksums
/// SeaBIOS fixed after placing them; the SMBIOS entry point's table names Ferrite.
fn firmware_tables_are_ours(m: &mut Machine, tag: &str) {
    let mut f = vec![0u8; 0x1_0000];
    for (i, chunk) in f.chunks_mut(8).enumerate() {
        m.board.read_phys(0xF_0000 + 8 * i as u64, chunk);
    }
    let find = |sig: &[u8]| (0..f.len()).step_by(16).find(|&o| f[o..].starts_with(sig));
    let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
    let rsdp = find(b"RSD PTR ").unwrap_or_else(|| panic!("{tag}: no RSDP in the F segment"));
    assert_eq!(sum(&f[rsdp..rsdp + 20]), 0, "{tag}: RSDP checksum");
    assert_eq!(sum(&f[rsdp..rsdp + 36]), 0, "{tag}: RSDP extended checksum");
    let read = |m: &mut Machine, a: u64, n: usize| {
        let mut v = vec![0u8; n];
        for (i, chunk) in v.chunks_mut(8).enumerate() {
            m.board.read_phys(a + 8 * i as u64, chunk);
        }
        v
    };
    let rsdt = u64::from(u32::from_le_bytes(f[rsdp + 16..rsdp + 20].try_into().unwrap()));
    let head = read(m, rsdt, 36);
    assert_eq!(&head[..4], b"RSDT", "{tag}");
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let body = read(m, rsdt, len);
    assert_eq!(sum(&body), 0, "{tag}: RSDT checksum");
    let mut sigs = Vec::new();
    for e in body[36..].chunks(4) {
        let t = read(m, u64::from(u32::from_le_bytes(e.try_into().unwrap())), 36);
        let tl = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
        let whole = read(m, u64::from(u32::from_le_bytes(e.try_into().unwrap())), tl);
        assert_eq!(sum(&whole), 0, "{tag}: {} checksum", String::from_utf8_lossy(&t[..4]));
        sigs.push(String::from_utf8_lossy(&t[..4]).into_owned());
        assert_eq!(&t[10..16], b"FERRIT", "{tag}: OEM ID");
    }
    assert_eq!(sigs, ["FACP", "APIC"], "{tag}");
    let sm = find(b"_SM_").unwrap_or_else(|| panic!("{tag}: no SMBIOS entry point"));
    let table = u64::from(u32::from_le_bytes(f[sm + 0x18..sm + 0x1C].try_into().unwrap()));
    let tlen = usize::from(u16::from_le_bytes([f[sm + 0x16], f[sm + 0x17]]));
    let t = read(m, table, tlen);
    assert!(t.windows(7).any(|w| w == b"Ferrite"), "{tag}: the SMBIOS structures are the machine's");
}

fn row_text(cells: &[(u8, u8)], row: usize) -> String {
    cells[row * 80..(row + 1) * 80].iter().map(|c| c.0 as char).collect()
}

#[test]
fn seabios_boots_our_mbr_from_ide_and_it_prints_through_int10() {
    let (bios_path, vga_path) = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return;
        }
    };
    let bios = std::fs::read(&bios_path).unwrap();
    let vgabios = std::fs::read(&vga_path).unwrap();
    let mbr = test_roms::boot_sector("int10_hello").expect("the boot sector assembles");
    assert_eq!(mbr.len(), 512);
    let mut frames = Vec::new();
    for (accel, tag) in [(Accel::Interp, "interp"), (Accel::Jit, "jit")] {
        let disk = disk_image(mbr, tag);
        let con = Arc::new(Mutex::new(Vec::new()));
        let mut m = machine(&bios, &vgabios, &disk, accel, con.clone());
        let log = run_to_done(&mut m, &con, 3_000_000_000);
        assert!(log.ends_with("DONE 14 0A\n"), "{tag}: the cursor stays at row 20, column 10: {log:?}");
        let cells = text_buffer(&mut m);
        let rows: Vec<String> = (0..25).map(|r| row_text(&cells, r)).collect();
        // SeaBIOS's banner, then its boot message, then our line.
        assert!(rows[0].starts_with("SeaBIOS (version"), "{tag}: {rows:#?}");
        let ours = rows
            .iter()
            .position(|r| r.starts_with("FERRITE MBR: hello through INT 10h"))
            .unwrap_or_else(|| panic!("{tag}: our line is not on the screen: {rows:#?}"));
        assert!(rows[..ours].iter().any(|r| r.contains("Booting from Hard Disk")), "{tag}: {rows:#?}");
        // Teletype output uses the attribute already in the cell: SeaVGABIOS clears to 07.
        assert!(cells[ours * 80..ours * 80 + 34].iter().all(|c| c.1 == 0x07), "{tag}");
        // AH=09h: three cells at (20, 10) with attribute 1Eh, and nothing after them.
        assert_eq!(
            &cells[20 * 80 + 10..20 * 80 + 14],
            &[(b'X', 0x1E), (b'X', 0x1E), (b'X', 0x1E), (b' ', 0x07)]
        );
        // The device's own view agrees with the guest's.
        let t = m.vga().unwrap().text_screen().expect("text mode");
        assert_eq!((t.cols, t.rows), (80, 25));
        assert_eq!(t.row_text(ours).trim_end(), rows[ours].trim_end());
        assert_eq!(t.cursor, Some((10, 20)));
        firmware_tables_are_ours(&mut m, tag);
        frames.push((m.cpu.icount, m.vga().unwrap().render()));
        let _ = std::fs::remove_dir_all(disk.parent().unwrap());
    }
    let (f0, f1) = (&frames[0].1, &frames[1].1);
    assert_eq!((f0.width, f0.height), (720, 400), "80x25 cells of 9x16");
    if frames[0].0 == frames[1].0 {
        assert!(f0 == f1, "the same screen at the same instruction count under interp and jit");
    }
}

#[test]
fn mode_13h_screen_matches_the_expected_image() {
    let (bios_path, vga_path) = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return;
        }
    };
    let (bios, vgabios) = (std::fs::read(bios_path).unwrap(), std::fs::read(vga_path).unwrap());
    let disk = disk_image(test_roms::boot_sector("mode13h").unwrap(), "m13");
    let con = Arc::new(Mutex::new(Vec::new()));
    let mut m = machine(&bios, &vgabios, &disk, Accel::Jit, con.clone());
    assert_eq!(run_to_done(&mut m, &con, 3_000_000_000), "DONE\n");
    let f = m.vga().unwrap().render();
    assert_eq!((f.width, f.height), (320, 200));
    // The standard VGA palette SeaVGABIOS loads for mode 13h: colour 1 is (0, 0, 2Ah), 4 is (2Ah, 0, 0),
    // 15 is (3Fh, 3Fh, 3Fh), 0 black; 6-bit DAC values widen to 8 bits as v << 2 | v >> 4.
    let mut expect = vec![0u8; 320 * 200 * 3];
    let mut put =
        |x: usize, y: usize, c: [u8; 3]| expect[(y * 320 + x) * 3..(y * 320 + x) * 3 + 3].copy_from_slice(&c);
    put(10, 20, [0xAA, 0, 0]);
    for x in 150..166 {
        put(x, 100, [0xFF, 0xFF, 0xFF]);
    }
    put(319, 199, [0, 0, 0xAA]);
    if f.rgb != expect {
        let diff: Vec<usize> =
            (0..320 * 200).filter(|i| f.rgb[i * 3..i * 3 + 3] != expect[i * 3..i * 3 + 3]).take(10).collect();
        panic!("the mode 13h screen differs from the expected image at pixels {diff:?}");
    }
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

#[test]
fn screenshot_at_an_instruction_count_is_byte_identical_across_runs() {
    let (bios_path, _) = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return;
        }
    };
    let mbr = test_roms::boot_sector("int10_hello").unwrap();
    let disk = disk_image(mbr, "shot");
    let dir = disk.parent().unwrap().to_path_buf();
    let mut pngs = Vec::new();
    for n in 0..2 {
        let png = dir.join(format!("s{n}.png"));
        let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .arg("run")
            .arg("--bios")
            .arg(&bios_path)
            .arg("--hda")
            .arg(&disk)
            .args(["--accel", "jit", "--memory", "64M", "--max-instructions", "12000000"])
            .arg("--screenshot")
            .arg(format!("{}@10000000", png.display()))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(124), "{}", String::from_utf8_lossy(&out.stderr));
        pngs.push(std::fs::read(&png).unwrap());
    }
    assert_eq!(&pngs[0][..8], b"\x89PNG\r\n\x1a\n");
    assert!(pngs[0] == pngs[1], "two runs give different screenshots");
    let _ = std::fs::remove_dir_all(dir);
}

/// A guest halted with interrupts enabled under SeaBIOS idles to the next device deadline in virtual
/// time instead of spinning through it: with nothing bootable, SeaBIOS prints "No bootable device.
/// Retrying in 60 seconds." and waits in HLT for 60 seconds of timer ticks before it reboots. At 1e9
/// instructions per virtual second, a guest that ran through the wait would need 60e9 instructions; the
/// machine reboots within 50 million, and the virtual clock shows the minute passed.
#[test]
fn seabios_waits_sixty_virtual_seconds_in_hlt_in_few_instructions() {
    let (bios_path, vga_path) = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return;
        }
    };
    let (bios, vgabios) = (std::fs::read(bios_path).unwrap(), std::fs::read(vga_path).unwrap());
    let disk = disk_image(&[0u8; 512], "hlt");
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let mut cfg = MachineConfig::new(64 << 20, bios);
    cfg.accel = Accel::Jit;
    cfg.bios = Some(BiosConfig {
        files: vec![(machine::VGA_ROM_FILE.to_string(), vgabios)],
        log: Box::new(move |b| l2.lock().unwrap().push(b)),
        ..Default::default()
    });
    cfg.devices.push(machine::DeviceSpec::named("vga").unwrap());
    cfg.ide = Some(storage::config::build(&[storage::config::DiskSpec::shorthand(&disk, 0)]).unwrap().ide);
    let mut m = Machine::new(cfg).unwrap();
    let text = |log: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    // From power-on to the banner of the reboot that ends the wait (one slice of instructions may idle
    // through many seconds, so virtual time is read at whole boots, not inside the wait).
    let limit = 50_000_000;
    let step = |m: &mut Machine, what: &str| {
        assert!(m.cpu.icount < limit, "{what} within {limit} instructions; BIOS log:\n{}", text(&log));
        assert!(matches!(m.run(Some(m.cpu.icount + 1_000_000)), RunOutcome::InstructionLimit));
    };
    while !text(&log).contains("No bootable device.  Retrying in 60 seconds.") {
        step(&mut m, "no boot failure");
    }
    // The banner is logged more than once per boot: the reboot shows as one more than now.
    let banners = text(&log).matches("SeaBIOS (version").count();
    while text(&log).matches("SeaBIOS (version").count() == banners {
        step(&mut m, "no reboot after the wait");
    }
    let waited_ns = m.board.clock.now(m.cpu.icount).0;
    println!(
        "SeaBIOS: power-on, boot failure, 60 s wait, reboot: {:.1} virtual s in {} instructions",
        waited_ns as f64 / 1e9,
        m.cpu.icount
    );
    assert!(waited_ns >= 60_000_000_000, "only {waited_ns} ns of virtual time passed");
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

/// `--snapshot-at` in the middle of a SeaBIOS boot (SeaBIOS in RAM behind the PAM registers, the VGA,
/// fw_cfg, the IDE disk), then `--restore` of that snapshot under the other engine: the run finishes
/// with the same instruction count, the same machine state hash and the same screen, byte for byte.
#[test]
fn a_seabios_boot_restored_from_a_snapshot_finishes_identically() {
    let (bios_path, _) = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return;
        }
    };
    let disk = disk_image(test_roms::boot_sector("int10_hello").unwrap(), "snap");
    let dir = disk.parent().unwrap().to_path_buf();
    let snap = dir.join("mid.snap");
    let run = |accel: &str, extra: &[&std::ffi::OsStr], png: &PathBuf| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .arg("run")
            .arg("--bios")
            .arg(&bios_path)
            .arg("--hda")
            .arg(&disk)
            .args(["--accel", accel, "--memory", "64M", "--max-instructions", "30000000", "--stats"])
            .arg("--screenshot")
            .arg(png)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(124), "{err}");
        let hash = err.lines().find_map(|l| l.strip_prefix("ferrite: state hash ")).unwrap_or_default();
        assert!(!hash.is_empty(), "{err}");
        (hash.to_string(), std::fs::read(png).unwrap())
    };
    let whole =
        run("jit", &["--snapshot-at".as_ref(), "8000000".as_ref(), snap.as_os_str()], &dir.join("a.png"));
    assert!(snap.exists(), "no snapshot written");
    let restored = run("interp", &["--restore".as_ref(), snap.as_os_str()], &dir.join("b.png"));
    assert_eq!(whole.0, restored.0, "the state hash after the restored run");
    assert!(whole.1 == restored.1, "the screen after the restored run differs");
    let _ = std::fs::remove_dir_all(dir);
}

/// SeaBIOS boots our MBR under KVM, where /dev/kvm runs guests on hardware (shadowed BIOS, PAM changes
/// as memory-slot changes, the VGA BIOS, the IDE disk). An emulating KVM (PVM) runs about 1 MIPS, far too
/// slow for a firmware boot in CI: the test says so and skips.
#[test]
fn seabios_boots_our_mbr_under_kvm() {
    match machine::kvm::probe() {
        Ok(p) if p.hardware() => {}
        Ok(p) => {
            println!(
                "skipped: /dev/kvm emulates guests in software ({}), too slow for a SeaBIOS boot",
                p.emulated.unwrap_or_default()
            );
            return;
        }
        Err(e) => {
            println!("skipped: /dev/kvm not usable ({e})");
            return;
        }
    }
    let (bios_path, vga_path) = match seabios() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: SeaBIOS unavailable ({why})");
            return;
        }
    };
    let (bios, vgabios) = (std::fs::read(bios_path).unwrap(), std::fs::read(vga_path).unwrap());
    let disk = disk_image(test_roms::boot_sector("int10_hello").unwrap(), "kvm");
    let con = Arc::new(Mutex::new(Vec::new()));
    let mut m = machine(&bios, &vgabios, &disk, Accel::Kvm, con.clone());
    // KVM runs in host time: bound the wait by the host clock.
    let start = std::time::Instant::now();
    loop {
        let text = String::from_utf8_lossy(&con.lock().unwrap()).into_owned();
        if text.contains("DONE") && text.ends_with('\n') {
            assert!(text.ends_with("DONE 14 0A\n"), "{text:?}");
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "no DONE under KVM: {text:?}");
        match m.run(Some(m.cpu.icount + 20_000_000)) {
            RunOutcome::InstructionLimit => {}
            other => panic!("the machine stopped: {other:?}"),
        }
    }
    let rows: Vec<String> = {
        let cells = text_buffer(&mut m);
        (0..25).map(|r| row_text(&cells, r)).collect()
    };
    assert!(rows[0].starts_with("SeaBIOS (version"), "{rows:#?}");
    assert!(rows.iter().any(|r| r.starts_with("FERRITE MBR: hello through INT 10h")), "{rows:#?}");
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}
